#!/bin/bash
# tail stops where it is told to, and takes no more than it shows (issue 15
# item 2, issue 16 item 7), on one persistent bus:
#   stop.sh EVBUS URL
# 1. SIGTERM / SIGINT while tail works through a backlog in a named group
#    exits 0 after the running handler; everything it did not print is still
#    there for the group (printed before + after = all, no duplicates).
# 2. `tail --group G --count 1` run again and again takes the events one
#    at a time, each once, and dead-letters nothing it never showed.
# Verdicts come from counts; waits are bounded by CLI_IDLE idle seconds.
set -u
evbus=$1 url=$2
idle=${CLI_IDLE:-2}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/evbus-cli-stop.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/lib.sh"
run=$$.$RANDOM

backlog=3000
for sig in TERM INT; do
    topic=stop.$sig.$run
    echo "== SIG$sig with $backlog events backlogged"
    expect_rc 0 "publish the backlog" "$evbus" publish "$url" "$topic" --type a.b.c --source /s --count "$backlog" -q
    # The reader takes one line, lets tail fill the pipe (it then waits in
    # write(2), where a signal used to fail it with EINTR), signals it and
    # drains the pipe: tail is stopped while it still has most of the
    # backlog ahead of it (the pipe holds a few hundred events at most).
    {
        "$evbus" tail "$url" "$topic" --group G --timeout 60 2>"$tmp/err" &
        echo $! >"$tmp/pid"
        wait $!
        echo $? >"$tmp/rc"
    } | {
        read -r first && echo "$first" >"$tmp/before"
        sleep 1
        kill -"$sig" "$(cat "$tmp/pid")"
        cat >>"$tmp/before"
    }
    rc=$(cat "$tmp/rc")
    [ "$rc" = 0 ] || fail "tail after SIG$sig exited $rc: $(cat "$tmp/err")"
    [ -s "$tmp/err" ] && fail "tail after SIG$sig wrote to stderr: $(cat "$tmp/err")"
    n1=$(wc -l <"$tmp/before")
    [ "$n1" -ge 1 ] && [ "$n1" -lt "$backlog" ] ||
        fail "tail printed $n1 of $backlog events before stopping on SIG$sig"
    "$evbus" tail "$url" "$topic" --group G --timeout "$idle" >"$tmp/after" 2>"$tmp/err2" ||
        fail "second tail failed: $(cat "$tmp/err2")"
    n2=$(wc -l <"$tmp/after")
    cat "$tmp/before" "$tmp/after" | grep -o '"id":"[^"]*"' | sort >"$tmp/ids"
    total=$(wc -l <"$tmp/ids")
    unique=$(sort -u "$tmp/ids" | wc -l)
    [ "$total" = "$backlog" ] && [ "$unique" = "$backlog" ] ||
        fail "SIG$sig: printed $n1 then $n2 ($unique distinct), wanted $backlog once each"
done

echo "== tail --group G --count 1, again and again"
topic=count.$run
for i in $(seq 8); do
    "$evbus" publish "$url" "$topic" --type a.b.c --source /s --id "ev-$i" -q ||
        fail "publish ev-$i"
done
: >"$tmp/seen"
for i in $(seq 8); do
    expect_rc 0 "tail --count 1 #$i" "$evbus" tail "$url" "$topic" --group G --count 1 --timeout "$idle" &&
        grep -o '"id":"[^"]*"' "$tmp/out" >>"$tmp/seen"
done
want=$(for i in $(seq 8); do echo "\"id\":\"ev-$i\""; done)
[ "$(cat "$tmp/seen")" = "$want" ] ||
    fail "--count 1 eight times showed $(tr '\n' ' ' <"$tmp/seen"), wanted ev-1..ev-8 in order"
expect_rc 1 "a ninth --count 1 finds nothing" "$evbus" tail "$url" "$topic" --group G --count 1 --timeout "$idle"
expect_rc 0 "dlq list" "$evbus" dlq list "$url" "$topic" --timeout "$idle" &&
    contains "$tmp/err" "0 dead letters in $topic.dlq" "--count dead-lettered events it never showed"

if [ "$fails" -ne 0 ]; then
    echo "$fails check(s) failed" >&2
    exit 1
fi
echo "all stop checks passed"
