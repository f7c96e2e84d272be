#!/bin/sh
# Runs the raw SQLite baseline and evbus-bench on sqlite:// back to back
# (same machine, same minute, fresh files in the same directory) and prints
# both, one JSON line each.
#
#   bench/sqlite/compare.sh [BUILD_DIR] [EVENTS] [SIZE]
#
# BUILD_DIR defaults to build. Files go to $BENCH_DIR (default: a new
# temporary directory under /tmp, removed at the end).
set -eu
build=${1:-build}
events=${2:-100000}
size=${3:-256}
raw=$build/bench/sqlite/sqlite-raw-bench
bench=$build/bench/evbus-bench
wake=$build/bench/sqlite/sqlite-idle-wake
for p in "$raw" "$bench"; do
  [ -x "$p" ] || { echo "missing $p (build first: ninja -C $build)" >&2; exit 1; }
done
dir=${BENCH_DIR:-$(mktemp -d /tmp/evbus-sqlite-bench.XXXXXX)}
trap 'rm -rf "$dir"' EXIT INT TERM

echo "# $(date -u +%FT%TZ) events=$events size=$size dir=$dir"
echo "# raw SQLite (WAL, synchronous=NORMAL, same table layout)"
"$raw" --db "$dir/raw.db" --events "$events" --size "$size"
echo "# evbus sqlite://"
for mode in publish-sync publish consume roundtrip; do
  rm -f "$dir"/bus.db*
  "$bench" --url "sqlite://$dir/bus.db" --events "$events" --size "$size" --mode "$mode"
done
if [ -x "$wake" ]; then
  echo "# idle subscriber: wake-up latency across processes and idle CPU"
  rm -f "$dir"/bus.db*
  "$wake" --url "sqlite://$dir/bus.db" --events 20 --idle-s 10
fi
