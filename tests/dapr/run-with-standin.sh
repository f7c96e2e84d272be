#!/bin/sh
# Runs a command against a fresh Dapr sidecar stand-in on free ports:
#   run-with-standin.sh STANDIN "STANDIN ARGS" "&URL=QUERY" CMD [ARGS...]
# CMD gets dapr://127.0.0.1:PORT?pubsub=pubsub&app_port=APP<query> as its
# last argument. The stand-in is stopped when CMD ends.
standin=$1; standin_args=$2; query=$3; shift 3
out=$(mktemp)
# shellcheck disable=SC2086
"$standin" --port 0 $standin_args >"$out" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -f "$out"' EXIT INT TERM
i=0
while ! grep -q '^APP_PORT' "$out" && [ $i -lt 100 ]; do
  sleep 0.05; i=$((i + 1))
done
port=$(sed -n 's/^PORT //p' "$out")
app=$(sed -n 's/^APP_PORT //p' "$out")
if [ -z "$port" ] || [ -z "$app" ]; then
  echo "run-with-standin: $standin did not start" >&2
  exit 1
fi
"$@" "dapr://127.0.0.1:$port?pubsub=pubsub&app_port=$app$query"
