#!/bin/bash
# The evbus CLI as a new user meets it: --help everywhere, --version, usage
# errors (exit 2), clear messages for a bad URL, an unreachable broker and
# invalid JSON (with its position), health ok / failing, signals, bench.
#   basics.sh EVBUS
# CLI_BACKENDS (space-separated built-in backends) enables the redis checks;
# CLI_BENCH=1 when evbus-bench was built.
set -u
evbus=$1
tmp=$(mktemp -d "${TMPDIR:-/tmp}/evbus-cli-basics.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/lib.sh"
one_line() {
    [ "$(wc -l <"$1")" = 1 ] || { fail "$2: wanted exactly one line:"; sed 's/^/  | /' "$1" >&2; }
}
db="sqlite://$tmp/bus.db"

echo "== --help and --version"
expect_rc 0 "evbus --help" "$evbus" --help && contains "$tmp/out" "usage: evbus" "evbus --help"
expect_rc 0 "evbus help" "$evbus" help && contains "$tmp/out" "dlq replay" "evbus help"
for cmd in publish tail health bench; do
    expect_rc 0 "evbus $cmd --help" "$evbus" "$cmd" --help &&
        contains "$tmp/out" "usage: evbus $cmd" "evbus $cmd --help"
    expect_rc 0 "evbus $cmd -h" "$evbus" "$cmd" -h
done
expect_rc 0 "evbus dlq --help" "$evbus" dlq --help && contains "$tmp/out" "usage: evbus dlq list" "dlq --help"
expect_rc 0 "evbus dlq list --help" "$evbus" dlq list --help && contains "$tmp/out" "dlqreason" "dlq list --help"
expect_rc 0 "evbus dlq replay --help" "$evbus" dlq replay --help && contains "$tmp/out" "--all" "dlq replay --help"
expect_rc 0 "evbus --version" "$evbus" --version
grep -Eq '^evbus [0-9]+\.[0-9]+\.[0-9]+ \(libevbus [0-9]+\.[0-9]+\.[0-9]+\)$' "$tmp/out" ||
    fail "--version output: $(cat "$tmp/out")"

echo "== usage errors exit 2 with a hint"
expect_rc 2 "no command" "$evbus"
expect_rc 2 "unknown command" "$evbus" frobnicate && contains "$tmp/err" "unknown command 'frobnicate'" "unknown command"
expect_rc 2 "unknown global option" "$evbus" --frob && contains "$tmp/err" "unknown option '--frob'" "unknown option"
expect_rc 2 "unknown publish option" "$evbus" publish memory://x t --type a --source b --frob &&
    contains "$tmp/err" "unrecognized option '--frob'" "getopt names the option" &&
    contains "$tmp/err" "evbus publish --help" "hint to --help"
expect_rc 2 "publish without --type" "$evbus" publish memory://x t --source /s &&
    contains "$tmp/err" "--type is required" "missing --type"
expect_rc 2 "publish without --source" "$evbus" publish memory://x t --type a.b.c &&
    contains "$tmp/err" "--source is required" "missing --source"
expect_rc 2 "publish without TOPIC" "$evbus" publish memory://x --type a --source b &&
    contains "$tmp/err" "expected URL and TOPIC" "missing TOPIC"
expect_rc 2 "publish --count 0" "$evbus" publish memory://x t --type a --source b --count 0 &&
    contains "$tmp/err" "--count wants a whole number" "bad --count"
expect_rc 2 "publish --id with --count" "$evbus" publish memory://x t --type a --source b --id x --count 2
expect_rc 2 "publish bad --ext" "$evbus" publish memory://x t --type a --source b --ext novalue &&
    contains "$tmp/err" "invalid --ext 'novalue'" "bad --ext"
expect_rc 2 "publish bad --ext name" "$evbus" publish memory://x t --type a --source b --ext Bad=1 &&
    contains "$tmp/err" "invalid --ext 'Bad=1'" "bad --ext name"
expect_rc 2 "tail --format" "$evbus" tail memory://x t --format xml && contains "$tmp/err" "json or pretty" "bad --format"
expect_rc 2 "tail --timeout" "$evbus" tail memory://x t --timeout soon && contains "$tmp/err" "--timeout wants" "bad --timeout"
expect_rc 2 "tail --group --from-beginning" "$evbus" tail "$db" t --group g --from-beginning &&
    contains "$tmp/err" "cannot rewind" "from-beginning with a group"
expect_rc 2 "tail --from-beginning on memory" "$evbus" tail memory://x t --from-beginning &&
    contains "$tmp/err" "keeps no history" "from-beginning on memory"
expect_rc 2 "publish to a topic with a space" "$evbus" publish "$db" "a b" --type a.b.c --source /s &&
    contains "$tmp/err" "invalid TOPIC 'a b': topic or group name has byte 0x20 at offset 1" "bad topic named"
expect_rc 2 "tail of an empty topic name" "$evbus" tail "$db" "" && contains "$tmp/err" "invalid TOPIC ''" "empty topic"
expect_rc 2 "dlq list --dlq-topic with a tab" "$evbus" dlq list "$db" t --dlq-topic "$(printf 'x\ty')" &&
    contains "$tmp/err" "invalid --dlq-topic 'x?y'" "control character shown as ?"
expect_rc 2 "dlq without list/replay" "$evbus" dlq
expect_rc 2 "dlq bogus" "$evbus" dlq purge "$db" t && contains "$tmp/err" "unknown dlq command 'purge'" "dlq purge"
expect_rc 2 "dlq replay without --id/--all" "$evbus" dlq replay "$db" t && contains "$tmp/err" "--id ID or --all" "replay needs a choice"
expect_rc 2 "dlq replay with both" "$evbus" dlq replay "$db" t --all --id x
expect_rc 2 "dlq list --all" "$evbus" dlq list "$db" t --all
expect_rc 2 "health without URL" "$evbus" health
expect_rc 2 "bench without URL" "$evbus" bench

echo "== invalid JSON is refused with its position, before the bus is opened"
expect_rc 2 "invalid JSON" "$evbus" publish "sqlite://$tmp/never.db" t --type a.b.c --source /s --data '{"a":1} x' &&
    contains "$tmp/err" "evbus: --data is not valid JSON: error at byte 8 (line 1, column 9) near 'x'" "position of trailing garbage"
one_line "$tmp/err" "invalid JSON message"
[ -e "$tmp/never.db" ] && fail "invalid JSON still opened the bus"
expect_rc 2 "truncated JSON" "$evbus" publish memory://x t --type a.b.c --source /s --data '[1, 2' &&
    contains "$tmp/err" "unexpected end at byte 5" "position of a truncated value"
printf '{\n  "a": 1,\n  "b": nope\n}\n' >"$tmp/bad.json"
expect_rc 2 "invalid JSON file" "$evbus" publish memory://x t --type a.b.c --source /s --data "@$tmp/bad.json" &&
    contains "$tmp/err" "--data $tmp/bad.json is not valid JSON: error at byte 19 (line 3, column 8) near 'nope'" "line and column in a file"
expect_rc 1 "missing data file" "$evbus" publish memory://x t --type a.b.c --source /s --data "@$tmp/missing.json" &&
    contains "$tmp/err" "cannot read --data $tmp/missing.json: No such file or directory" "missing file"
expect_rc 0 "non-JSON content type sends bytes" "$evbus" publish memory://x t --type a.b.c --source /s \
    --data 'not json' --content-type text/plain
grep -Eq '^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$' "$tmp/out" ||
    fail "publish did not print a UUIDv4 id: $(cat "$tmp/out")"
expect_rc 0 "publish -q" "$evbus" publish memory://x t --type a.b.c --source /s -q
[ -s "$tmp/out" ] && fail "publish -q printed: $(cat "$tmp/out")"
expect_rc 0 "publish --id" "$evbus" publish memory://x t --type a.b.c --source /s --id my-id-1 &&
    [ "$(cat "$tmp/out")" = my-id-1 ] || fail "publish --id printed $(cat "$tmp/out")"

echo "== bad URLs and unreachable brokers: one clear line, exit 1"
expect_rc 1 "unknown scheme" "$evbus" health bogus://x &&
    contains "$tmp/err" "evbus: cannot open bogus://x: no backend for URL scheme 'bogus'" "unknown scheme"
one_line "$tmp/err" "unknown scheme message"
expect_rc 1 "not a URL" "$evbus" publish not-a-url t --type a.b.c --source /s &&
    contains "$tmp/err" "evbus: cannot open not-a-url:" "not a URL"
expect_rc 1 "missing sqlite directory" "$evbus" health "sqlite://$tmp/no/such/dir/bus.db" &&
    contains "$tmp/err" "does not exist" "missing directory"
expect_rc 1 "unknown option in URL" "$evbus" health "sqlite://$tmp/bus.db?bogus_option=1" &&
    contains "$tmp/err" "bogus_option" "unknown URL option is named"
case " ${CLI_BACKENDS:-} " in
*" redis "*)
    # Port 1 on loopback: nothing listens there.
    expect_rc 1 "unreachable redis" "$evbus" health redis://127.0.0.1:1 &&
        contains "$tmp/err" "evbus: cannot open redis://127.0.0.1:1: cannot connect to redis at 127.0.0.1:1" "unreachable redis"
    one_line "$tmp/err" "unreachable redis message"
    expect_rc 1 "publish to unreachable redis" "$evbus" publish redis://127.0.0.1:1 t --type a.b.c --source /s
    ;;
*) echo "(redis backend not built: unreachable-broker check runs on sqlite only)" ;;
esac

case " ${CLI_BACKENDS:-} " in
*" faulty "*)
    echo "== failed publishes are reported and fail the command"
    furl="faulty+sqlite://$tmp/faulty.db?fail_publish=0.5&seed=3"
    expect_rc 1 "publish --count with failures" "$evbus" publish "$furl" t --type a.b.c --source /s --count 10
    nok=$(wc -l <"$tmp/out")
    nfail=$(grep -c "failed: temporary failure, try again" "$tmp/err")
    [ "$((nok + nfail))" = 10 ] || fail "ids printed ($nok) + failures named ($nfail) != 10"
    [ "$nfail" -ge 1 ] || fail "fail_publish=0.5 produced no reported failure"
    contains "$tmp/err" "$nok of 10 events published to t" "summary of a partly failed publish"
    expect_rc 1 "publish always failing" "$evbus" publish "faulty+sqlite://$tmp/faulty.db?fail_publish=1" t --type a.b.c --source /s --wait 0.3 &&
        contains "$tmp/err" "evbus: publish to t failed after waiting 0.3 s for room (--wait): temporary failure, try again" "failed single publish"
    [ -s "$tmp/out" ] && fail "a failed publish printed an id"
    ;;
*) echo "(faulty backend not built: publish failure checks not run)" ;;
esac

echo "== health ok"
expect_rc 0 "health sqlite" "$evbus" health "$db" && [ "$(cat "$tmp/out")" = ok ] || fail "health printed $(cat "$tmp/out")"
expect_rc 0 "health memory" "$evbus" health memory://h
expect_rc 0 "health -q" "$evbus" health -q "$db" && [ ! -s "$tmp/out" ] || fail "health -q printed output"

echo "== -v installs the library log on stderr"
expect_rc 0 "health -v" "$evbus" -v health "$db" && contains "$tmp/err" "evbus info core: opened sqlite:// bus" "log line with -v"
expect_rc 0 "health quiet log" "$evbus" health "$db" && [ ! -s "$tmp/err" ] || fail "library logged without -v: $(cat "$tmp/err")"

echo "== tail stops cleanly on SIGINT and SIGTERM"
for sig in INT TERM; do
    "$evbus" tail "$db" sig.topic >"$tmp/out" 2>"$tmp/err" &
    pid=$!
    sleep 1
    kill -"$sig" "$pid"
    wait "$pid"
    rc=$?
    [ "$rc" = 0 ] || fail "tail after SIG$sig exited $rc: $(cat "$tmp/err")"
done
expect_rc 0 "tail --timeout with nothing" "$evbus" tail "$db" empty.topic --timeout 0.3
[ -s "$tmp/out" ] && fail "tail of an empty topic printed $(cat "$tmp/out")"
expect_rc 0 "dlq list of nothing" "$evbus" dlq list "$db" empty.topic --timeout 0.3 &&
    contains "$tmp/err" "0 dead letters in empty.topic.dlq" "empty dlq"

echo "== colour only on a terminal, and not with NO_COLOR"
"$evbus" publish "$db" colour.topic --type a.b.c --source /s -q --data '{"x":1}' || fail "publish for colour"
if command -v script >/dev/null; then
    # TERM is the caller's (CI systems often set TERM=dumb, which rightly
    # turns colour off): name a colour terminal for the positive check.
    TERM=xterm script -qec "'$evbus' tail '$db' colour.topic --format pretty --count 1" /dev/null >"$tmp/tty" 2>&1 </dev/null ||
        fail "tail on a pseudo-terminal failed: $(cat "$tmp/tty")"
    contains "$tmp/tty" $'\033[1;32ma.b.c\033[0m' "pretty colours the type on a terminal"
    TERM=xterm NO_COLOR=1 script -qec "'$evbus' tail '$db' colour.topic --format pretty --count 1" /dev/null >"$tmp/tty" 2>&1 </dev/null
    contains "$tmp/tty" "a.b.c id=" "pretty on a terminal with NO_COLOR"
    grep -q $'\033\[' "$tmp/tty" && fail "NO_COLOR still wrote colour"
    TERM=dumb script -qec "'$evbus' tail '$db' colour.topic --format pretty --count 1" /dev/null >"$tmp/tty" 2>&1 </dev/null
    contains "$tmp/tty" "a.b.c id=" "pretty on a TERM=dumb terminal"
    grep -q $'\033\[' "$tmp/tty" && fail "TERM=dumb still got colour"
else
    echo "(script(1) not installed: terminal colour check not run)"
fi

if [ "${CLI_BENCH:-0}" = 1 ]; then
    echo "== bench runs evbus-bench"
    expect_rc 0 "bench" "$evbus" bench memory://bench --events 2000 --mode publish &&
        contains "$tmp/out" '"events_per_s"' "bench prints the harness result" &&
        contains "$tmp/out" '"mode":"publish"' "bench passes options through"
    expect_rc 2 "bench --url" "$evbus" bench memory://b --url memory://c
fi

if [ "$fails" -ne 0 ]; then
    echo "$fails check(s) failed" >&2
    exit 1
fi
echo "all basic checks passed"
