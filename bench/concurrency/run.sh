#!/bin/bash
# Handler workers against their no-broker baseline, in the same run:
#   1. a handler that sleeps 1 ms, concurrency 32, 100 partition keys, on
#      sqlite, redis (a private redis-server) and kafka (the mock cluster):
#      events/s beside the baseline (32 plain threads running the same
#      handler) and the target 0.8 x 32 x 1,000 = 25,600/s; per-key order
#      checked on every call;
#      for sqlite and redis also the same run with attempts=memory: what
#      recording each batch's attempts durably (one commit, one round trip,
#      between a worker's handlers) costs;
#   2. a CPU-bound handler (--cpu-us) on memory:// with 1 and 2 workers:
#      the speed-up on this machine's cores.
# Several rounds (ROUNDS, default 3); the median ratio per backend.
#
#   [ROUNDS=3] bench/concurrency/run.sh [BUILD_DIR] [EVENTS]
set -eu
build=${1:-build}
events=${2:-40000}
rounds=${ROUNDS:-3}
bench=$build/bench/concurrency/evbus-concurrency-bench
mock=$build/tools/kafka-mock/evbus-kafka-mock
[ -x "$bench" ] || { echo "missing $bench (ninja -C $build)" >&2; exit 1; }
dir=$(mktemp -d /tmp/evbus-conc-bench-XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$dir"; }
trap cleanup EXIT INT TERM

urls=("sqlite://$dir/bus.db")
if command -v redis-server >/dev/null; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$dir" --logfile "$dir/redis.log" --daemonize no & pids+=($!)
  until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.05; done
  urls+=("redis://127.0.0.1:$port")
else
  echo "# redis: skipped (no redis-server)"
fi
if [ -x "$mock" ]; then
  coproc MOCK { exec "$mock" --brokers 1 --partitions 8; }
  pids+=("$MOCK_PID")
  read -r line <&"${MOCK[0]}"
  urls+=("kafka://${line#BROKERS=}")
else
  echo "# kafka: skipped (no mock tool built)"
fi

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "# 1 ms handler, concurrency 32, 100 keys, $events events, $rounds rounds"
for url in "${urls[@]}"; do
  ratios=()
  for r in $(seq 1 "$rounds"); do
    b=$("$bench" --baseline --concurrency 32 --handler-us 1000 --events "$events")
    e=$("$bench" --url "$url" --concurrency 32 --handler-us 1000 --keys 100 --events "$events")
    br=$(echo "$b" | field rate); er=$(echo "$e" | field rate)
    ratio=$(awk -v e="$er" -v b="$br" 'BEGIN{printf "%.2f", e/b}')
    ratios+=("$ratio")
    mem=
    case $url in sqlite:* | redis:*)
      [ "${url#sqlite://}" != "$url" ] && rm -f "$dir"/bus.db*
      m=$("$bench" --url "$url?attempts=memory" --concurrency 32 \
            --handler-us 1000 --keys 100 --events "$events")
      mem=", with attempts=memory $(echo "$m" | field rate)/s" ;;
    esac
    echo "$url round $r: evbus $er/s, baseline $br/s, ratio $ratio," \
         "order violations $(echo "$e" | field order_violations)," \
         "max running $(echo "$e" | field max_running)$mem"
  done
  echo "$url: median ratio $(printf '%s\n' "${ratios[@]}" | median)" \
       "(target: >= 25600/s, i.e. 0.8 x 32 x 1000)"
done

echo "# CPU-bound handler (200 us of CPU), memory://, 1 vs 2 workers"
ups=()
for r in $(seq 1 "$rounds"); do
  one=$("$bench" --url memory://cpu --concurrency 1 --cpu-us 200 --handler-us 0 --keys 1000 --events 20000 | field rate)
  two=$("$bench" --url memory://cpu --concurrency 2 --cpu-us 200 --handler-us 0 --keys 1000 --events 20000 | field rate)
  up=$(awk -v a="$one" -v b="$two" 'BEGIN{printf "%.2f", b/a}')
  ups+=("$up")
  echo "round $r: 1 worker $one/s, 2 workers $two/s, speed-up $up"
done
echo "CPU-bound speed-up 1 -> 2 workers: median $(printf '%s\n' "${ups[@]}" | median) on $(nproc) cores"
echo "# load average: $(cut -d' ' -f1-3 /proc/loadavg)"
