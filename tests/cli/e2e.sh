#!/bin/bash
# End-to-end test of the evbus CLI on one persistent bus:
#   e2e.sh EVBUS CLI_DROPPER URL
# publish then tail (data and attributes come back), consumer groups,
# --count in a named group, DROP -> dlq list -> dlq replay (--id, --all,
# undecodable raw bytes). CLI_IDLE (seconds, default 2) is the idle time
# tail and dlq wait for; kafka needs longer for group joins.
set -u
evbus=$1 dropper=$2 url=$3
idle=${CLI_IDLE:-2}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/evbus-cli-e2e.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
topic=cli.$$.$RANDOM
. "$(dirname "$0")/lib.sh"
not_contains() {
    ! grep -qF -- "$2" "$1" || { fail "$3: '$2' unexpectedly in output:"; sed 's/^/  | /' "$1" >&2; }
}
count_of() { grep -cF -- "$2" "$1"; }

echo "== health"
expect_rc 0 "health" "$evbus" health "$url" && contains "$tmp/out" ok "health"

echo "== publish then tail: data and attributes come back"
expect_rc 0 "publish" "$evbus" publish "$url" "$topic" --type shop.order.created \
    --source /shop --subject order-7 --ext partitionkey=k7 --ext tenant=acme \
    --data '{"sku":"ab-1","qty":3}'
id1=$(head -n1 "$tmp/out")
[ -n "$id1" ] || fail "publish printed no id"
expect_rc 0 "tail --count 1" "$evbus" tail "$url" "$topic" --count 1 --timeout "$idle"
cp "$tmp/out" "$tmp/tail1"
contains "$tmp/tail1" "\"id\":\"$id1\"" "tail shows the id"
contains "$tmp/tail1" '"type":"shop.order.created"' "tail shows the type"
contains "$tmp/tail1" '"source":"/shop"' "tail shows the source"
contains "$tmp/tail1" '"subject":"order-7"' "tail shows the subject"
contains "$tmp/tail1" '"partitionkey":"k7"' "tail shows extension partitionkey"
contains "$tmp/tail1" '"tenant":"acme"' "tail shows extension tenant"
contains "$tmp/tail1" '"data":{"sku":"ab-1","qty":3}' "tail shows the data"
[ "$(wc -l <"$tmp/tail1")" = 1 ] || fail "tail --count 1 printed more than one line"

echo "== data from a file, from stdin, raw text; pretty format"
printf '{"from":"file"}\n' >"$tmp/data.json"
expect_rc 0 "publish --data @file" "$evbus" publish "$url" "$topic" \
    --type shop.order.noted --source /shop --data "@$tmp/data.json" --ext partitionkey=k7
id2=$(cat "$tmp/out")
printf 'plain words' | "$evbus" publish "$url" "$topic" --type shop.order.noted \
    --source /shop --data - --content-type text/plain --ext partitionkey=k7 >"$tmp/out" 2>"$tmp/err" ||
    fail "publish --data - failed: $(cat "$tmp/err")"
id3=$(cat "$tmp/out")
expect_rc 0 "tail pretty" "$evbus" tail "$url" "$topic" --format pretty --count 3 --timeout "$idle"
contains "$tmp/out" "id=$id1 source=/shop" "pretty header of event 1"
contains "$tmp/out" "subject=order-7" "pretty shows the subject"
contains "$tmp/out" '{"from":"file"}' "pretty shows file data"
contains "$tmp/out" "id=$id3" "pretty shows event 3"
contains "$tmp/out" "(text/plain)" "pretty shows a non-JSON content type"
contains "$tmp/out" "plain words" "pretty shows text data"
not_contains "$tmp/out" $'\033[' "no colour when stdout is not a terminal"

echo "== --count N publishes N events"
t2=$topic.many
expect_rc 0 "publish --count 5" "$evbus" publish "$url" "$t2" --type a.b.c --source /s --count 5
[ "$(sort -u "$tmp/out" | wc -l)" = 5 ] || fail "publish --count 5 printed $(wc -l <"$tmp/out") ids, wanted 5 distinct"
sort "$tmp/out" >"$tmp/many_ids"

echo "== named group: --count takes only what it prints, the rest stays"
: >"$tmp/got"
for _ in 1 2 3 4 5; do
    expect_rc 0 "tail --group g --count 1" "$evbus" tail "$url" "$t2" --group clitest --count 1 --timeout "$idle" &&
        sed -n 's/.*"id":"\([^"]*\)".*/\1/p' "$tmp/out" >>"$tmp/got"
done
sort "$tmp/got" >"$tmp/got_sorted"
cmp -s "$tmp/got_sorted" "$tmp/many_ids" ||
    { fail "5 runs of tail --count 1 in one group did not see each event once"; diff "$tmp/many_ids" "$tmp/got_sorted" >&2; }
expect_rc 0 "tail of a drained group" "$evbus" tail "$url" "$t2" --group clitest --timeout "$idle"
[ -s "$tmp/out" ] && fail "a drained group printed events again: $(cat "$tmp/out")"
expect_rc 1 "tail --count unmet" "$evbus" tail "$url" "$t2" --group clitest --count 1 --timeout 1
contains "$tmp/err" "timed out" "tail --count with --timeout says it timed out"

echo "== DROP -> dlq list -> dlq replay"
t3=$topic.pay
expect_rc 0 "publish pay-1" "$evbus" publish "$url" "$t3" --type shop.pay.made --source /pay \
    --id "pay-1-$$" --data '{"amount":10}' --ext partitionkey=p
expect_rc 0 "publish pay-2" "$evbus" publish "$url" "$t3" --type shop.pay.made --source /pay \
    --id "pay-2-$$" --data '{"amount":20}' --ext partitionkey=p
# The dropper answers DROP to both and also publishes bytes that are not a
# CloudEvent, which the core dead-letters as undecodable.
"$dropper" "$url" "$t3" 3 'this is { not an event' || fail "dropper did not dead-letter 3 events"
for run in 1 2; do
    expect_rc 0 "dlq list (run $run)" "$evbus" dlq list "$url" "$t3" --timeout "$idle"
    contains "$tmp/out" "pay-1-$$" "dlq list run $run shows pay-1"
    contains "$tmp/out" "pay-2-$$" "dlq list run $run shows pay-2"
    contains "$tmp/out" "handler answered DROP" "dlq list shows the reason"
    contains "$tmp/out" "evbus.deadletter.undecodable" "dlq list shows the undecodable payload"
    contains "$tmp/out" "undecodable: " "dlq list shows the decode reason"
    grep -q "^pay-1-$$ .* 1  $t3 .*handler answered DROP" "$tmp/out" ||
        fail "dlq list row of pay-1 lacks attempts 1 / topic $t3: $(grep "pay-1" "$tmp/out")"
    contains "$tmp/err" "3 dead letters in $t3.dlq" "dlq list summary (run $run: listing consumes nothing)"
done
# RETRY until the attempts run out: the dead letter says how many.
t4=$topic.retry
expect_rc 0 "publish retry-1" "$evbus" publish "$url" "$t4" --type shop.pay.made --source /pay --id "retry-1-$$"
CLI_DROPPER_RETRY=3 "$dropper" "$url" "$t4" 1 || fail "retrying dropper did not dead-letter the event"
expect_rc 0 "dlq list after RETRY" "$evbus" dlq list "$url" "$t4" --timeout "$idle"
grep -q "^retry-1-$$ .* 3  $t4 .*handler answered RETRY 3 times (max attempts 3)" "$tmp/out" ||
    fail "dlq list of an exhausted retry: $(cat "$tmp/out")"

expect_rc 0 "dlq list --format json" "$evbus" dlq list "$url" "$t3" --format json --timeout "$idle"
contains "$tmp/out" '"dlqreason":"handler answered DROP"' "dlq list json has dlqreason"
contains "$tmp/out" '"dlqattempts":"1"' "dlq list json has dlqattempts"

expect_rc 0 "dlq replay --id" "$evbus" dlq replay "$url" "$t3" --id "pay-2-$$" --timeout "$idle"
contains "$tmp/out" "replayed pay-2-$$ to $t3" "replay --id says what it replayed"
[ "$(wc -l <"$tmp/out")" = 1 ] || fail "replay --id replayed more than one event"
expect_rc 0 "tail after replay --id" "$evbus" tail "$url" "$t3" --timeout "$idle"
[ "$(count_of "$tmp/out" "\"id\":\"pay-2-$$\"")" = 2 ] ||
    fail "pay-2 should be on $t3 twice (original + replay)"
not_contains "$tmp/out" dlqreason "replayed event has dlqreason stripped"
not_contains "$tmp/out" dlqtopic "replayed event has dlqtopic stripped"
not_contains "$tmp/out" dlqattempts "replayed event has dlqattempts stripped"
grep "pay-2-$$" "$tmp/out" | tail -n1 | grep -qF '"data":{"amount":20}' ||
    fail "replayed pay-2 lost its data"
contains "$tmp/err" "1 payload on $t3 could not be read (not a CloudEvent, or over max_event_bytes" "tail reports the undecodable bytes"

expect_rc 1 "dlq replay --id unknown" "$evbus" dlq replay "$url" "$t3" --id nope --timeout "$idle"
contains "$tmp/err" "no dead letter with id nope in $t3.dlq" "replay of an unknown id"

case " ${CLI_BACKENDS:-} " in
*" faulty "*)
    echo "== dlq replay --all while every publish fails"
    # Every republish fails: replay --all stops with exit 1, twice, and the
    # dead letters stay for the next run (none is moved on to a DLQ.dlq).
    case $url in *\?*) furl="faulty+$url&fail_publish=1" ;; *) furl="faulty+$url?fail_publish=1" ;; esac
    for run in 1 2; do
        expect_rc 1 "dlq replay --all while publishing fails (run $run)" \
            "$evbus" dlq replay "$furl" "$t3" --all --timeout "$idle"
        contains "$tmp/err" "failed: temporary failure, try again" "failed replay names the error"
        [ -s "$tmp/out" ] && fail "a failed replay printed: $(cat "$tmp/out")"
    done
    ;;
esac
expect_rc 0 "dlq replay --all" "$evbus" dlq replay "$url" "$t3" --all --timeout "$idle"
contains "$tmp/out" "replayed pay-1-$$ to $t3" "replay --all replays pay-1"
contains "$tmp/out" "replayed pay-2-$$ to $t3" "replay --all replays pay-2"
contains "$tmp/out" "(22 raw bytes) to $t3" "replay --all republishes the raw bytes"
contains "$tmp/err" "3 dead letters replayed" "replay --all summary"
expect_rc 0 "dlq replay --all again" "$evbus" dlq replay "$url" "$t3" --all --timeout "$idle"
[ -s "$tmp/out" ] && fail "a second replay --all replayed again: $(cat "$tmp/out")"
contains "$tmp/err" "0 dead letters replayed" "second replay --all replays nothing"
# The raw bytes are back on the topic exactly: the dropper group (which
# consumed the first three) now meets the replayed pay-2, pay-1, pay-2 and
# the raw bytes, and dead-letters the bytes as undecodable again.
"$dropper" "$url" "$t3" 4 || fail "dropper did not see the replayed raw bytes"
expect_rc 0 "dlq list after raw replay" "$evbus" dlq list "$url" "$t3" --timeout "$idle"
[ "$(count_of "$tmp/out" "evbus.deadletter.undecodable")" -ge 2 ] ||
    fail "replayed raw bytes were not dead-lettered again as undecodable"

echo "== truncated dead letters: listed, shown, never replayed, reading bounded"
# url with one more query option
with_opt() { case $1 in *\?*) echo "$1&$2" ;; *) echo "$1?$2" ;; esac; }
t5=$topic.big
printf '"%0150000d"' 0 >"$tmp/big.json"
expect_rc 0 "publish a 150 kB event" "$evbus" publish "$(with_opt "$url" max_event_bytes=200000)" "$t5" \
    --type a.b.c --source /s --id "big-$$" --data "@$tmp/big.json"
# A consumer limited to 64 kB dead-letters it as undecodable; base64 makes
# the dead letter larger still, so its data is cut to fit (dlqtruncated).
"$dropper" "$(with_opt "$url" max_event_bytes=65536)" "$t5" 1 || fail "dropper did not dead-letter the big event"
expect_rc 0 "dlq list of a truncated dead letter" "$evbus" dlq list "$url" "$t5" --timeout "$idle" &&
    contains "$tmp/out" "over max_event_bytes 65536" "reason of the oversized event" &&
    contains "$tmp/out" "[data truncated to fit max_event_bytes: " "truncation shown in the list" &&
    contains "$tmp/out" " of 1501" "original size shown"
dl=$(awk 'NR == 2 { print $1 }' "$tmp/out")
# tail under the 64 kB limit says the event is over it, with the limit.
expect_rc 0 "tail of the big event under a 64 kB limit" "$evbus" tail "$(with_opt "$url" max_event_bytes=65536)" "$t5" --timeout "$idle" &&
    contains "$tmp/err" "1 payload on $t5 could not be read (not a CloudEvent, or over max_event_bytes 65536 of this URL)" "tail names the limit"
[ -s "$tmp/out" ] && fail "tail printed an event over its limit"
expect_rc 0 "dlq show" "$evbus" dlq show "$url" "$t5" --id "$dl" --timeout "$idle" &&
    contains "$tmp/out" "truncated    yes: the data was 1501" "dlq show says why" &&
    contains "$tmp/out" "It cannot be replayed" "dlq show says it cannot be replayed"
expect_rc 1 "dlq show of an unknown id" "$evbus" dlq show "$url" "$t5" --id nope --timeout "$idle"
expect_rc 1 "dlq replay --id of a truncated dead letter" "$evbus" dlq replay "$url" "$t5" --id "$dl" --timeout "$idle" &&
    contains "$tmp/err" "not replaying $dl: its data was truncated" "replay refused and named"
[ -s "$tmp/out" ] && fail "a truncated dead letter was replayed: $(cat "$tmp/out")"
# A reader whose own limit is smaller does not read the dead letter at all,
# says so, and leaves no copy on the dead-letter topic's own DLQ.
expect_rc 0 "dlq list under a 4 kB limit" "$evbus" dlq list "$(with_opt "$url" max_event_bytes=4096)" "$t5" --timeout "$idle" &&
    contains "$tmp/err" "1 entry of $t5.dlq could not be read" "unreadable dead letter counted" &&
    contains "$tmp/err" "0 dead letters in $t5.dlq" "nothing listed under the small limit"
expect_rc 0 "dlq list of the DLQ's DLQ" "$evbus" dlq list "$url" "$t5.dlq" --timeout "$idle" &&
    contains "$tmp/err" "0 dead letters in $t5.dlq.dlq" "listing added nothing to $t5.dlq.dlq"

if [ "$fails" -ne 0 ]; then
    echo "$fails check(s) failed on $url" >&2
    exit 1
fi
echo "all end-to-end checks passed on $url"
