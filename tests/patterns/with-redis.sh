#!/bin/sh
# Runs a program against a private redis-server: starts one on a free
# 127.0.0.1 port with persistence off, replaces @REDIS@ in the arguments by
# its redis://127.0.0.1:PORT URL, and stops it afterwards.
#   with-redis.sh PROGRAM [ARG...]
set -u
command -v redis-server >/dev/null || { echo "with-redis: redis-server not found" >&2; exit 1; }
command -v redis-cli >/dev/null || { echo "with-redis: redis-cli not found" >&2; exit 1; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/evbus-redis.XXXXXX") || exit 1
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM
tries=0
while :; do
  port=$(( 20000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 40000 ))
  redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
    --dir "$dir" --logfile "$dir/redis.log" &
  pid=$!
  up=0
  for _ in $(seq 50); do
    if redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; then up=1; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  [ "$up" = 1 ] && break
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; pid=
  tries=$((tries + 1))
  [ "$tries" -ge 5 ] && { echo "with-redis: could not start redis-server" >&2; cat "$dir/redis.log" >&2; exit 1; }
done
prog=$1
shift
for a in "$@"; do
  shift
  case $a in
    *@REDIS@*) a=$(printf '%s' "$a" | sed "s|@REDIS@|redis://127.0.0.1:$port|g") ;;
  esac
  set -- "$@" "$a"
done
"$prog" "$@"
