#!/bin/sh
# Runs the redis:// benchmarks beside their raw hiredis baselines against one
# private redis-server (127.0.0.1, unused port, no persistence), in the same
# run, and prints each pair and the ratio evbus/raw with its target.
#
#   [ROUNDS=3] bench/redis/run-redis-bench.sh [BUILD_DIR] [EVENTS] [SIZE]
#
# BUILD_DIR defaults to build; EVENTS to 100000; SIZE (data bytes) to 256.
set -eu
build=${1:-build}
events=${2:-100000}
size=${3:-256}
bench=$build/bench/evbus-bench
raw=$build/bench/redis/redis-raw-bench
paced=$build/bench/redis/evbus-paced-latency
for b in "$bench" "$raw" "$paced"; do
  [ -x "$b" ] || { echo "run-redis-bench: $b not built" >&2; exit 1; }
done
command -v redis-server >/dev/null || { echo "run-redis-bench: no redis-server" >&2; exit 1; }

dir=$(mktemp -d /tmp/evbus-redis-bench-XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$dir" --daemonize no --logfile "$dir/redis.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT INT TERM
i=0
until redis-cli -p "$port" ping >/dev/null 2>&1; do
  i=$((i+1)); [ $i -lt 200 ] || { echo "redis-server did not start" >&2; exit 1; }
  sleep 0.05
done
url="redis://127.0.0.1:$port"
echo "# redis-server $(redis-server --version | awk '{print $3}') on $url, $events events, $size data bytes"

out=$dir/results
: > "$out"
run() { # label command...
  label=$1; shift
  line=$("$@")
  echo "$label $line" | tee -a "$out"
  redis-cli -p "$port" flushall >/dev/null
}
# Each pair runs back to back, ROUNDS times (default 3), so both sides see
# the same machine load; the summary gives the median of the per-round ratios.
rounds=${ROUNDS:-3}
r=0
while [ $r -lt "$rounds" ]; do
  r=$((r+1))
  run raw_pipelined   "$raw" --host 127.0.0.1 --port "$port" --events "$events" --size "$size" --mode xadd-pipelined
  run evbus_publish   "$bench" --url "$url" --events "$events" --size "$size" --mode publish
  run raw_sync        "$raw" --host 127.0.0.1 --port "$port" --events $((events/4)) --size "$size" --mode xadd-sync
  run evbus_sync      "$bench" --url "$url" --events $((events/4)) --size "$size" --mode publish-sync
  run raw_consume     "$raw" --host 127.0.0.1 --port "$port" --events "$events" --size "$size" --mode consume
  run evbus_consume   "$bench" --url "$url" --events "$events" --size "$size" --mode consume
done
run evbus_roundtrip "$bench" --url "$url" --events "$events" --size "$size" --mode roundtrip
run raw_latency     "$raw" --host 127.0.0.1 --port "$port" --events 10000 --size "$size" --mode latency --rate 1000
run evbus_latency   "$paced" --url "$url" --events 10000 --size "$size" --rate 1000

echo "# load average while running: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
python3 - "$out" <<'PY'
import json, sys, statistics
r = {}
for line in open(sys.argv[1]):
    label, js = line.split(" ", 1)
    r.setdefault(label, []).append(json.loads(js))
def ratio(a, b, target):
    xs = [x["events_per_s"] / y["events_per_s"] for x, y in zip(r[a], r[b])]
    m = statistics.median(xs)
    ea = statistics.median(x["events_per_s"] for x in r[a])
    eb = statistics.median(y["events_per_s"] for y in r[b])
    print(f"{a:16s} {ea:>9.0f}/s vs {b:14s} {eb:>9.0f}/s  median ratio {m:.2f} "
          f"(rounds: {' '.join(f'{x:.2f}' for x in xs)}; target >= {target}) "
          f"{'OK' if m >= target else 'BELOW TARGET'}")
print("# throughput (events/s, medians), evbus vs raw hiredis, same server, same run")
ratio("evbus_publish", "raw_pipelined", 0.85)
ratio("evbus_sync", "raw_sync", 0.9)
ratio("evbus_consume", "raw_consume", 0.85)
rt = r["evbus_roundtrip"][0]
print(f"evbus_roundtrip  {rt['events_per_s']:>9.0f}/s  p50 {rt['p50_us']} us  p99 {rt['p99_us']} us")
lat, raw = r["evbus_latency"][0], r["raw_latency"][0]
print(f"# end-to-end latency at 1000 events/s: evbus p50 {lat['p50_us']} us, p99 {lat['p99_us']} us, "
      f"max {lat['max_us']} us (target p99 <= 2000 us) {'OK' if lat['p99_us'] <= 2000 else 'ABOVE TARGET'}; "
      f"raw p50 {raw['p50_us']} us, p99 {raw['p99_us']} us")
PY
