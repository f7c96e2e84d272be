#!/bin/bash
# Runs a command against a fresh mock Kafka cluster:
#   with-kafka-mock.sh MOCK_BIN BROKERS URL_SUFFIX CMD [ARGS...]
# Starts MOCK_BIN --brokers BROKERS on a pipe, reads its BROKERS= line and
# runs CMD ARGS... "kafka://<bootstraps><URL_SUFFIX>". The mock stops when
# this script exits (its stdin pipe closes) or is killed by the trap.
set -u
mock=$1 nbrokers=$2 suffix=$3
shift 3
coproc MOCK { exec "$mock" --brokers "$nbrokers"; }
mock_pid=$MOCK_PID
trap 'kill "$mock_pid" 2>/dev/null; wait "$mock_pid" 2>/dev/null' EXIT
line=
if ! read -r -t 20 line <&"${MOCK[0]}"; then
    echo "with-kafka-mock: $mock printed no BROKERS line" >&2
    exit 1
fi
case $line in
BROKERS=*) brokers=${line#BROKERS=} ;;
*) echo "with-kafka-mock: unexpected output from mock: $line" >&2; exit 1 ;;
esac
echo "with-kafka-mock: cluster at $brokers" >&2
"$@" "kafka://${brokers}${suffix}"
