#!/bin/sh
# The order-saga example copied out of the source tree, as a user copies it:
# alone, make names what is missing (the todo demo's helpers) instead of
# failing on a path; with TODO_DEMO pointing at the todo demo it builds.
#   example-copy.sh EXAMPLES_DIR   (PKG_CONFIG_PATH and EVBUS_PKG set)
set -u
src=$1
dir=$(mktemp -d "${TMPDIR:-/tmp}/evbus-order-saga-copy.XXXXXX") || exit 1
trap 'rm -rf "$dir"' EXIT
cp -r "$src/order-saga" "$dir/" || exit 1
rm -rf "$dir/order-saga/build"
fails=0
check() { # check WHAT CONDITION...
  what=$1; shift
  if "$@"; then echo "ok   $what"; else echo "FAIL $what"; fails=$((fails + 1)); fi
}

make -s -C "$dir/order-saga" OUT="$dir/bin" >"$dir/alone.log" 2>&1; rc=$?
check "alone: make fails" [ "$rc" != 0 ]
check "alone: make says to copy the todo demo or set TODO_DEMO" \
  grep -q "TODO_DEMO=" "$dir/alone.log"

make -s -C "$dir/order-saga" OUT="$dir/bin" TODO_DEMO="$src/todo-demo" \
  >"$dir/with.log" 2>&1; rc=$?
check "TODO_DEMO=...: make exits 0" [ "$rc" = 0 ]
for s in order-service payment-service shipping-service; do
  check "TODO_DEMO=...: $s built" [ -x "$dir/bin/$s" ]
done
check "the copy has its README" [ -f "$dir/order-saga/README.md" ]
if [ "$fails" != 0 ]; then
  echo "--- make alone:"; cat "$dir/alone.log"
  echo "--- make TODO_DEMO=:"; cat "$dir/with.log"
fi
[ "$fails" = 0 ]
