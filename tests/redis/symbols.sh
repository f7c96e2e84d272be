#!/bin/sh
# The redis backend's objects in the static archive define no global symbol
# outside the evbus_ prefix (internal ones are evbus__redis_*), so a program
# linking libevbus.a statically cannot collide with them.
#   symbols.sh NM LIBEVBUS.A
set -eu
nm=$1
lib=$2
out=$("$nm" -A -g --defined-only "$lib" | grep '_redis_[a-z_]*\.c\.o:' || true)
[ -n "$out" ] || { echo "no redis objects found in $lib" >&2; exit 1; }
# AddressSanitizer adds __odr_asan.<name> beside each global: not ours.
bad=$(printf '%s\n' "$out" |
  awk '{ if ($3 !~ /^evbus_/ && $3 !~ /^__odr_asan[.]evbus_/) print }')
if [ -n "$bad" ]; then
  echo "global symbols of the redis backend outside evbus_:" >&2
  printf '%s\n' "$bad" >&2
  exit 1
fi
echo "$(printf '%s\n' "$out" | wc -l) global symbols of the redis backend, all evbus_*"
