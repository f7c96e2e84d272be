#!/bin/sh
# Runs a libFuzzer target for a fixed number of runs from the seed corpus:
#   run-fuzz.sh TARGET SEED_DIR RUNS
# New inputs go to a scratch directory (listed first), never into the seeds.
target=$1 seeds=$2 runs=$3
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"$target" -runs="$runs" -max_len=65536 -timeout=60 -rss_limit_mb=2048 \
  "$scratch" "$seeds"
