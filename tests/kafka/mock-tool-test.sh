#!/bin/bash
# evbus-kafka-mock: prints BROKERS= with N entries, stops when stdin closes
# and on SIGTERM, refuses bad usage.
set -u
mock=$1
fail() { echo "mock-tool-test: $*" >&2; exit 1; }

# 1. BROKERS line, then exit when stdin closes
coproc M { exec "$mock" --brokers 2 --topic orders:3; }
pid=$M_PID
read -r -t 20 line <&"${M[0]}" || fail "no output"
case $line in BROKERS=127.0.0.1:*,127.0.0.1:*) ;; *) fail "bad line: $line" ;; esac
n=$(echo "${line#BROKERS=}" | tr ',' '\n' | wc -l)
[ "$n" -eq 2 ] || fail "expected 2 brokers, got $n: $line"
exec {M[1]}>&-   # close its stdin
for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && { kill "$pid"; fail "still running after stdin closed"; }
wait "$pid"; rc=$?
[ "$rc" -eq 0 ] || fail "exit status $rc after stdin closed"

# 2. SIGTERM with --no-stdin
coproc M2 { exec "$mock" --brokers 1 --no-stdin; }
pid=$M2_PID
read -r -t 20 line <&"${M2[0]}" || fail "no output (--no-stdin)"
case $line in BROKERS=127.0.0.1:*) ;; *) fail "bad line: $line" ;; esac
kill -TERM "$pid"
for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && { kill -9 "$pid"; fail "SIGTERM did not stop it"; }
wait "$pid"; rc=$?
[ "$rc" -eq 0 ] || fail "exit status $rc after SIGTERM"

# 3. bad usage
"$mock" --brokers 0 </dev/null >/dev/null 2>&1
[ $? -eq 2 ] || fail "--brokers 0 accepted"
echo "mock-tool-test: ok"
