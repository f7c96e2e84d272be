#!/bin/sh
# evbus saga list | show | resume against a database with one saga in each
# state (written by saga-fixture).
#   cli.sh EVBUS SAGA_FIXTURE
set -u
evbus=$1
fixture=$2
dir=$(mktemp -d "${TMPDIR:-/tmp}/evbus-saga-cli.XXXXXX") || exit 1
trap 'rm -rf "$dir"' EXIT
db=$dir/orders.db
"$fixture" "$db" || { echo "saga-fixture failed"; exit 1; }
fails=0
check() { # check WHAT CONDITION...
  what=$1; shift
  if "$@"; then echo "ok   $what"; else echo "FAIL $what"; fails=$((fails + 1)); fi
}
has() { printf '%s\n' "$out" | grep -q -- "$1"; }
line_has() { printf '%s\n' "$out" | grep -- "^$1 " | grep -q -- "$2"; }

out=$("$evbus" saga list --db "$db" 2>"$dir/err"); rc=$?
check "list exits 0" [ "$rc" = 0 ]
check "list: done-1 COMPLETED" line_has done-1 "COMPLETED"
check "list: comp-1 COMPENSATED with its reason" line_has comp-1 "COMPENSATED .*step ship failed: no courier"
check "list: failed-1 FAILED with its reason" line_has failed-1 "FAILED .*compensation of step pay failed after 3 attempts: bank offline"
check "list: run-1 RUNNING at step 0 pay" line_has run-1 "RUNNING *0 pay"
check "list: newest first" [ "$(printf '%s\n' "$out" | sed -n 2p | cut -d' ' -f1)" = run-1 ]
check "list: counts on stderr" grep -q "4 shown of 4: .*COMPLETED 1" "$dir/err"

out=$("$evbus" saga list --db "$db" --state FAILED -q); rc=$?
check "list --state FAILED: only failed-1" [ "$rc" = 0 ] && [ "$(printf '%s\n' "$out" | wc -l)" = 2 ] && line_has failed-1 FAILED
"$evbus" saga list --db "$db" --state failed >/dev/null 2>&1; rc=$?
check "list --state with a bad name: usage error" [ "$rc" = 2 ]
out=$(EVBUS_SAGA_DB=$db "$evbus" saga list -q --limit 1); rc=$?
check "EVBUS_SAGA_DB and --limit" [ "$rc" = 0 ] && [ "$(printf '%s\n' "$out" | wc -l)" = 2 ]
"$evbus" saga list >/dev/null 2>&1; rc=$?
check "no database named: usage error" [ "$rc" = 2 ]

out=$("$evbus" saga show failed-1 --db "$db"); rc=$?
check "show exits 0" [ "$rc" = 0 ]
check "show: state and reason" has "state     FAILED"
check "show: data" has '^data      {"total":99}'
check "show: the pay step failed to compensate 3 times" has "^0    pay  *comp_failed  3 .*bank offline"
check "show: the ship step failed" has "^1    ship *failed .*no courier"
check "show: history with times" has "^2023-11-14 22:1.* compensation failed .*attempt 2: bank offline; next attempt in 2000 ms"
check "show: parked" has " failed .*COMPENSATING -> FAILED"
out=$("$evbus" saga show done-1 --db "$db" --json); rc=$?
check "show --json is the library's JSON" [ "$rc" = 0 ] && has '"id":"done-1"' && has '"paymentId":"p-1"'
out=$("$evbus" saga show nope --db "$db" 2>&1); rc=$?
check "show of an unknown id: exit 1 with the reason" [ "$rc" = 1 ] && has "no saga instance 'nope'"
sqlite3_empty=$dir/empty.db
: >"$sqlite3_empty"
out=$("$evbus" saga list --db "$sqlite3_empty" 2>&1); rc=$?
check "a database without saga tables: exit 1" [ "$rc" = 1 ] && has "no saga tables"

out=$("$evbus" saga resume failed-1 --db "$db"); rc=$?
check "resume exits 0" [ "$rc" = 0 ] && has "resumed failed-1"
out=$("$evbus" saga list --db "$db" --state COMPENSATING -q)
check "resumed instance is COMPENSATING again" line_has failed-1 COMPENSATING
out=$("$evbus" saga resume failed-1 --db "$db" 2>&1); rc=$?
check "resume of an instance that is not FAILED: exit 1" [ "$rc" = 1 ] && has "not FAILED"
out=$("$evbus" saga show failed-1 --db "$db")
check "resume is in the history" has " resumed .*FAILED -> COMPENSATING"

out=$("$evbus" saga purge --days 1 --db "$db"); rc=$?
check "purge deletes the two that ended long ago" [ "$rc" = 0 ] && has "purged 2 instances"
out=$("$evbus" saga list --db "$db" -q)
check "purge kept the running and the resumed one" [ "$(printf '%s\n' "$out" | wc -l)" = 3 ] && line_has run-1 RUNNING && line_has failed-1 COMPENSATING
"$evbus" saga purge --db "$db" >/dev/null 2>&1; rc=$?
check "purge without --days: usage error" [ "$rc" = 2 ]

[ "$fails" = 0 ] || { echo "$fails check(s) failed"; exit 1; }
echo "all checks passed"
