#!/bin/bash
# Runs the raw librdkafka baseline and evbus-bench on kafka:// against the
# same mock cluster in the same run, and prints the ratios.
#
#   bench/kafka/compare.sh [BUILD_DIR] [EVENTS] [SIZE] [BROKERS] [PARTITIONS]
#
# Each run gets its own pre-created topic (PARTITIONS, default 8) so topic
# creation is not timed, and both clients spread records evenly
# (sticky.partitioning.linger.ms=0): the mock keeps only a few MB per
# partition, so keep EVENTS x (SIZE + ~200 B envelope) / PARTITIONS < ~4 MB.
# Targets (issue 5): publish >= 0.85x raw producev, consume >= 0.85x raw.
set -eu
build=${1:-build}
events=${2:-30000}
size=${3:-100}
nbrokers=${4:-3}
parts=${5:-8}
mock=$build/tools/kafka-mock/evbus-kafka-mock
raw=$build/bench/kafka/kafka-raw-bench
bench=$build/bench/evbus-bench
steady_bin=$build/bench/kafka/kafka-bus-steady
for p in "$mock" "$raw" "$bench"; do
  [ -x "$p" ] || { echo "missing $p (build first: ninja -C $build)" >&2; exit 1; }
done
runs=${RUNS:-3}
topics=()
for i in $(seq 1 "$runs"); do
  topics+=(--topic "raw.pub.$i" --topic "bus.pub.$i")
done
coproc MOCK { exec "$mock" --brokers "$nbrokers" --partitions "$parts" \
                 "${topics[@]}" --topic raw.con --topic raw.dec --topic bus.con --topic bus.steady; }
mock_pid=$MOCK_PID
trap 'kill "$mock_pid" 2>/dev/null; wait "$mock_pid" 2>/dev/null || true' EXIT
read -r line <&"${MOCK[0]}"
brokers=${line#BROKERS=}
spread=sticky.partitioning.linger.ms=0
url="kafka://$brokers?kafka.$spread"
# the raw record carries as many bytes as evbus-bench's JSON event (222 B envelope)
bytes=$((size + 222))

rate() { sed -n 's/.*"events_per_s":\([0-9.]*\).*/\1/p'; }
steady() { sed -n 's/.*"steady_events_per_s":\([0-9.]*\).*/\1/p'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }

echo "# $(date -u +%FT%TZ) kafka mock ($nbrokers brokers) $brokers events=$events size=$size (raw bytes=$bytes)"
# publish: alternate raw and evbus RUNS times (the machine is shared, so
# single runs are noisy) and compare the best run of each
raw_best=0 bus_best=0 pairs=""
for i in $(seq 1 "$runs"); do
  r=$("$raw" --brokers "$brokers" --mode publish --events "$events" --bytes "$bytes" --topic "raw.pub.$i" -X "$spread")
  echo "$r"
  b=$("$bench" --url "$url" --mode publish --events "$events" --size "$size" --topic "bus.pub.$i")
  echo "$b"
  raw_best=$(awk -v a="$raw_best" -v b="$(echo "$r" | rate)" 'BEGIN { print (b > a ? b : a) }')
  bus_best=$(awk -v a="$bus_best" -v b="$(echo "$b" | rate)" 'BEGIN { print (b > a ? b : a) }')
  pairs="$pairs $(ratio "$(echo "$b" | rate)" "$(echo "$r" | rate)")"
done
# each evbus run against the raw run just before it: the median of those
# ratios is less sensitive to one lucky or unlucky run than best vs best
median=$(printf '%s\n' $pairs | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
raw_con=$("$raw" --brokers "$brokers" --mode consume --events "$events" --bytes "$bytes" --topic raw.con -X "$spread")
echo "$raw_con"
bus_con=$("$bench" --url "$url" --mode consume --events "$events" --size "$size" --topic bus.con)
echo "$bus_con"

echo "publish (best of $runs): evbus ${bus_best}/s vs raw ${raw_best}/s" \
     "= $(ratio "$bus_best" "$raw_best")x (target >= 0.85)"
echo "publish, run by run:$pairs; median ${median}x"
echo "consume (incl. group join): evbus $(echo "$bus_con" | rate)/s vs raw $(echo "$raw_con" | rate)/s" \
     "= $(ratio "$(echo "$bus_con" | rate)" "$(echo "$raw_con" | rate)")x (target >= 0.85)"
bus_steady=$("$steady_bin" --url "$url" --events "$events" --size "$size" --topic bus.steady)
echo "$bus_steady"
# the same raw loop doing what any program that handles the events must:
# check the binding's content-type header, parse the CloudEvent with cJSON
raw_dec=$("$raw" --brokers "$brokers" --mode consume --decode --events "$events" --bytes "$bytes" --topic raw.dec -X "$spread")
echo "$raw_dec"
echo "consume after the join: evbus $(echo "$bus_steady" | steady)/s vs raw $(echo "$raw_con" | steady)/s" \
     "= $(ratio "$(echo "$bus_steady" | steady)" "$(echo "$raw_con" | steady)")x (records not read)"
echo "consume after the join: evbus $(echo "$bus_steady" | steady)/s vs raw+cJSON $(echo "$raw_dec" | steady)/s" \
     "= $(ratio "$(echo "$bus_steady" | steady)" "$(echo "$raw_dec" | steady)")x (each event parsed)"
