#!/bin/bash
# Runs a command against a fresh, private bus and appends its URL:
#   with-backend.sh sqlite -         CMD [ARG...]   temp dir, sqlite://DIR/bus.db
#   with-backend.sh redis  -         CMD [ARG...]   redis-server on a free
#                                                   127.0.0.1 port, no persistence
#   with-backend.sh kafka  MOCK_BIN  CMD [ARG...]   evbus-kafka-mock (1 broker),
#                                                   kafka://BROKERS?... URL
# Everything started here is stopped and removed on exit. Exits with the
# command's status, or 1 when the backend cannot be started (loudly).
set -u
kind=$1 mock=$2
shift 2
dir=$(mktemp -d "${TMPDIR:-/tmp}/evbus-cli.XXXXXX") || exit 1
pid=
cleanup() {
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    fi
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

case $kind in
sqlite)
    url="sqlite://$dir/bus.db"
    ;;
redis)
    command -v redis-server >/dev/null ||
        { echo "with-backend: redis-server not found" >&2; exit 1; }
    command -v redis-cli >/dev/null ||
        { echo "with-backend: redis-cli not found" >&2; exit 1; }
    up=0
    for _ in 1 2 3 4 5; do
        port=$((20000 + RANDOM % 40000))
        redis-server --bind 127.0.0.1 --port "$port" --save '' \
            --appendonly no --dir "$dir" --logfile "$dir/redis.log" &
        pid=$!
        for _ in $(seq 50); do
            if redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; then
                up=1
                break
            fi
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        [ "$up" = 1 ] && break
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        pid=
    done
    if [ "$up" != 1 ]; then
        echo "with-backend: could not start redis-server" >&2
        cat "$dir/redis.log" >&2 2>/dev/null
        exit 1
    fi
    url="redis://127.0.0.1:$port"
    ;;
kafka)
    # The mock runs until its stdin closes; a fifo held open on fd 3 is its
    # stdin. Its stdout goes to a file we poll for the BROKERS= line.
    mkfifo "$dir/in" || exit 1
    "$mock" --brokers 1 <"$dir/in" >"$dir/out" 2>"$dir/mock.log" &
    pid=$!
    exec 3>"$dir/in"
    brokers=
    for _ in $(seq 200); do
        line=$(grep -m1 '^BROKERS=' "$dir/out" 2>/dev/null)
        if [ -n "$line" ]; then
            brokers=${line#BROKERS=}
            break
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$brokers" ]; then
        echo "with-backend: $mock printed no BROKERS line" >&2
        cat "$dir/out" "$dir/mock.log" >&2
        exit 1
    fi
    # A short session lets a group whose member left be reused quickly.
    url="kafka://$brokers?kafka.consumer.session.timeout.ms=6000"
    ;;
*)
    echo "with-backend: unknown backend '$kind'" >&2
    exit 1
    ;;
esac
echo "with-backend: $url" >&2
"$@" "$url"
