#!/bin/bash
# The man page states the version of the library it was built with and
# documents every command and option the tool has.
#   man.sh EVBUS MANPAGE
set -u
evbus=$1 man=$2
tmp=$(mktemp -d "${TMPDIR:-/tmp}/evbus-cli-man.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/lib.sh"

expect_rc 0 "evbus --version" "$evbus" --version
lib=$(sed -n 's/^evbus [0-9.]* (libevbus \([0-9.]*\))$/\1/p' "$tmp/out")
[ -n "$lib" ] || fail "no library version in: $(cat "$tmp/out")"
head -n1 "$man" >"$tmp/th"
contains "$tmp/th" ".TH EVBUS 1 \"2026\" \"libevbus $lib\"" "man page header names the library version"
grep -q '@[A-Z]*@' "$man" && fail "unsubstituted placeholder in $man"
# Every long option of every command appears in the man page.
for cmd in publish tail "dlq" health; do
    # shellcheck disable=SC2086
    "$evbus" $cmd --help >"$tmp/help" 2>&1
    for opt in $(grep -oE -- '--[a-z][a-z-]+' "$tmp/help" | sort -u); do
        [ "$opt" = --help ] && continue
        esc=$(printf '%s' "$opt" | sed 's/-/\\-/g')
        grep -qF -- "$esc" "$man" || fail "evbus $cmd option $opt is not in the man page"
    done
done
for sub in "dlq show" "dlq list" "dlq replay"; do
    grep -qF ".SS $sub" "$man" || fail "no section for $sub"
done
if command -v groff >/dev/null; then
    groff -man -Tutf8 -ww -z "$man" 2>"$tmp/groff"
    [ -s "$tmp/groff" ] && fail "groff warns: $(cat "$tmp/groff")"
else
    echo "(groff not installed: man page syntax not checked)"
fi
if [ "$fails" -ne 0 ]; then
    echo "$fails check(s) failed" >&2
    exit 1
fi
echo "man page checks passed"
