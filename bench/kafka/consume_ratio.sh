#!/bin/bash
# Consume rate after the group join, evbus against a raw librdkafka loop,
# several alternating rounds against one mock cluster, median of the
# per-round ratios (issue 18):
#   binary mode      evbus (content_mode=binary) vs the bare raw loop
#                    (records not read)          target >= 0.80
#   structured mode  evbus vs a raw loop that checks the content-type and
#                    cJSON-parses each value     target >= 0.85
# and, to read the binary figure by: a raw loop that reads the binary-mode
# headers of records shaped like the bus's (librdkafka parses the header
# list, what any binary-mode consumer pays; the bare loop reads none), and
# the core's own rate for the same events on memory:// (no broker).
#
#   bench/kafka/consume_ratio.sh [BUILD_DIR] [EVENTS] [SIZE] [RUNS]
#
# Keep EVENTS x (SIZE + ~200 B) / 8 partitions under ~4 MB (the mock's
# per-partition limit). 80000 events make rounds of 100-200 ms: with
# 30000 (40-70 ms) one preemption on the shared machine moved a round's
# ratio by half (0.75-1.23x in one run). The load average before and after
# says how much the figures are worth. Timing belongs here, never in tests.
set -eu
build=${1:-build}
events=${2:-80000}
size=${3:-100}
runs=${4:-5}
mock=$build/tools/kafka-mock/evbus-kafka-mock
raw=$build/bench/kafka/kafka-raw-bench
steady_bin=$build/bench/kafka/kafka-bus-steady
for p in "$mock" "$raw" "$steady_bin"; do
  [ -x "$p" ] || { echo "missing $p (build first: ninja -C $build)" >&2; exit 1; }
done
topics=()
for i in $(seq 1 "$runs"); do
  topics+=(--topic "r.bare.$i" --topic "r.dec.$i" --topic "r.hdr.$i")
  topics+=(--topic "b.bin.$i" --topic "b.str.$i")
done
coproc MOCK { exec "$mock" --brokers 3 --partitions 8 "${topics[@]}"; }
mock_pid=$MOCK_PID
trap 'kill "$mock_pid" 2>/dev/null; wait "$mock_pid" 2>/dev/null || true' EXIT
read -r line <&"${MOCK[0]}"
brokers=${line#BROKERS=}
spread=sticky.partitioning.linger.ms=0
url="kafka://$brokers?kafka.$spread"
bytes=$((size + 222)) # as many bytes as the bus's JSON event

steady() { sed -n 's/.*"steady_events_per_s":\([0-9.]*\).*/\1/p'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

load() { cut -d' ' -f1-3 /proc/loadavg; }
echo "# $(date -u +%FT%TZ) events=$events size=$size runs=$runs mock $brokers load $(load)"
bin_pairs=() str_pairs=() hdr_pairs=() binhdr_pairs=() mem_pairs=()
for i in $(seq 1 "$runs"); do
  r=$("$raw" --brokers "$brokers" --mode consume --events "$events" --bytes "$bytes" --topic "r.bare.$i" -X "$spread")
  b=$("$steady_bin" --url "$url&content_mode=binary" --events "$events" --size "$size" --topic "b.bin.$i")
  echo "raw bare:        $r"
  echo "evbus binary:    $b"
  h=$("$raw" --brokers "$brokers" --mode consume --binary --events "$events" --bytes "$size" --topic "r.hdr.$i" -X "$spread")
  m=$("$steady_bin" --url "memory://floor$i" --events "$events" --size "$size")
  echo "raw + headers:   $h"
  echo "core, memory://: $m"
  bin_pairs+=("$(ratio "$(echo "$b" | steady)" "$(echo "$r" | steady)")")
  hdr_pairs+=("$(ratio "$(echo "$h" | steady)" "$(echo "$r" | steady)")")
  binhdr_pairs+=("$(ratio "$(echo "$b" | steady)" "$(echo "$h" | steady)")")
  mem_pairs+=("$(ratio "$(echo "$m" | steady)" "$(echo "$r" | steady)")")
  r=$("$raw" --brokers "$brokers" --mode consume --decode --events "$events" --bytes "$bytes" --topic "r.dec.$i" -X "$spread")
  b=$("$steady_bin" --url "$url" --events "$events" --size "$size" --topic "b.str.$i")
  echo "raw + cJSON:     $r"
  echo "evbus structured: $b"
  str_pairs+=("$(ratio "$(echo "$b" | steady)" "$(echo "$r" | steady)")")
done
echo "binary vs bare raw loop, round by round: ${bin_pairs[*]}; median $(median "${bin_pairs[@]}")x (target >= 0.80)"
echo "raw + headers vs bare raw loop (any binary consumer's ceiling): ${hdr_pairs[*]}; median $(median "${hdr_pairs[@]}")x"
echo "binary vs raw + headers loop: ${binhdr_pairs[*]}; median $(median "${binhdr_pairs[@]}")x"
echo "core on memory:// vs bare raw loop: ${mem_pairs[*]}; median $(median "${mem_pairs[@]}")x"
echo "structured vs raw + cJSON, round by round: ${str_pairs[*]}; median $(median "${str_pairs[@]}")x (target >= 0.85)"
echo "# load average after: $(load)"
