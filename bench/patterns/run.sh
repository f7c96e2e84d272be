#!/bin/sh
# Runs outbox-bench on memory:// and, when a redis-server is available, on a
# private one (persistence off) started by tests/patterns/with-redis.sh.
#   bench/patterns/run.sh BUILD_DIR [extra outbox-bench args]
set -eu
build=${1:?usage: run.sh BUILD_DIR}
shift
here=$(cd "$(dirname "$0")" && pwd)
bench="$build/bench/patterns/outbox-bench"
if command -v redis-server >/dev/null && "$build/tools/evbus/evbus" --help 2>/dev/null | grep -q . ; then :; fi
if command -v redis-server >/dev/null; then
  exec "$here/../../tests/patterns/with-redis.sh" "$bench" "$@" @REDIS@
else
  echo "run.sh: redis-server not found; memory:// only" >&2
  exec "$bench" "$@"
fi
