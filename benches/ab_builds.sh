#!/usr/bin/env bash
# Throughput of two builds of Pigeon, side by side and alternating, on this
# machine: for each round and each build, start that build's broker on a
# fresh data dir, run `pigeon bench produce` (100 B and 1 KiB values) and
# `pigeon bench consume` with that build's CLI, stop the broker. Prints one
# line per run and the median msgs/s of each build and workload.
#
#   benches/ab_builds.sh BEFORE_BIN_DIR AFTER_BIN_DIR [ROUNDS]
#
# Each BIN_DIR holds `pigeon-broker` and `pigeon` (e.g. target/release of two
# checkouts). Needs jq. Ports 7620/7621 must be free. Opt-in: not run by CI.
set -euo pipefail
before=${1:?usage: ab_builds.sh BEFORE_BIN_DIR AFTER_BIN_DIR [ROUNDS]}
after=${2:?usage: ab_builds.sh BEFORE_BIN_DIR AFTER_BIN_DIR [ROUNDS]}
rounds=${3:-3}
addr=127.0.0.1:7620
results=$(mktemp)
trap 'rm -f "$results"' EXIT

run_build() {
  local label=$1 bin=$2 dir
  dir=$(mktemp -d)
  "$bin/pigeon-broker" --data-dir "$dir" --listen "$addr" --http 127.0.0.1:7621 \
    >"$dir.log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do
    "$bin/pigeon" --broker "$addr" topic list >/dev/null 2>&1 && break
    sleep 0.1
  done
  for workload in "produce --value-size 100" "produce --value-size 1024" "consume --value-size 100"; do
    # shellcheck disable=SC2086
    rate=$("$bin/pigeon" --broker "$addr" bench $workload --messages 1000000 --json | jq .msgs_per_sec)
    echo "$label|$workload|$rate" | tee -a "$results"
  done
  kill -TERM "$pid"
  wait "$pid" || true
  rm -rf "$dir" "$dir.log"
}

for round in $(seq "$rounds"); do
  echo "round $round" >&2
  run_build before "$before"
  run_build after "$after"
done

echo
echo "medians (msgs/s):"
for label in before after; do
  for workload in "produce --value-size 100" "produce --value-size 1024" "consume --value-size 100"; do
    median=$(grep -F "$label|$workload|" "$results" | cut -d'|' -f3 | sort -g |
      awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}')
    printf '%-7s %-26s %12.0f\n' "$label" "$workload" "$median"
  done
done
