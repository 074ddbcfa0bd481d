#!/usr/bin/env bash
# W3 latency (and W1/W4 throughput) of two broker builds, alternating, with
# one load generator: for each round and each build, start that build's
# broker with --fsync always on a fresh data dir, run the workloads with
# the CLI given, stop the broker. W3 runs with the fsync probe in the data
# dir's parent (same filesystem) and reads the broker's stage histograms
# from /metrics (a broker without them shows none). Prints one line per run
# and the medians of each build.
#
#   benches/ab_latency.sh CLI A_BIN_DIR B_BIN_DIR [ROUNDS] [W3_SECONDS] [WORKLOADS]
#
# CLI is a `pigeon` binary with `--fsync-probe-dir` (this tree's), or `own`:
# each build's `pigeon` (to compare client changes too); each BIN_DIR holds
# a `pigeon-broker` (and, with `own`, a `pigeon` with `--fsync-probe-dir`). WORKLOADS is a comma list of w3, w1, w4
# (default all). PIGEON_AB_A_FLAGS and PIGEON_AB_B_FLAGS add broker flags
# to each build's broker (e.g. PIGEON_AB_B_FLAGS="--preallocate true" with
# one build as both A and B). Needs jq. Ports 7630/7631 must be free.
# Opt-in: not run by CI.
set -euo pipefail
cli=${1:?usage: ab_latency.sh CLI A_BIN_DIR B_BIN_DIR [ROUNDS] [W3_SECONDS] [WORKLOADS]}
a=${2:?usage: ab_latency.sh CLI A_BIN_DIR B_BIN_DIR [ROUNDS] [W3_SECONDS] [WORKLOADS]}
b=${3:?usage: ab_latency.sh CLI A_BIN_DIR B_BIN_DIR [ROUNDS] [W3_SECONDS] [WORKLOADS]}
rounds=${4:-3}
seconds=${5:-20}
workloads=${6:-w3,w1,w4}
addr=127.0.0.1:7630
http=127.0.0.1:7631
results=$(mktemp)
trap 'rm -f "$results"' EXIT

run_build() {
  local label=$1 bin=$2 dir pid line cli=$cli
  [[ $cli == own ]] && cli=$bin/pigeon
  dir=$(mktemp -d -p "${PIGEON_BENCH_DIR:-/tmp}")
  local flags_var="PIGEON_AB_${label}_FLAGS"
  # shellcheck disable=SC2086 # the flags are words
  "$bin/pigeon-broker" --data-dir "$dir/data" --listen "$addr" --http "$http" --resp off --fsync always \
    ${!flags_var:-} >"$dir/broker.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    "$cli" --broker "$addr" topic list >/dev/null 2>&1 && break
    sleep 0.1
  done
  if [[ $workloads == *w3* ]]; then
    line=$("$cli" --broker "$addr" bench e2e --rate 10000 --value-size 1024 \
      --duration-secs "$seconds" --fsync-probe-dir "$dir" --metrics-addr "$http" \
      --server-pid "$pid" --json | jq -r '[.fsync_floor.p50_us, .fsync_floor.p99_us,
        .fsync_floor.p999_us, .ack_p50_us, .ack_p99_us, .ack_p999_us, .p50_us, .p99_us,
        .p999_us, .schedule_lag_p99_us, (.server_cpu_us_per_message // "-"),
        (.stages // {} | to_entries | map("\(.key)=\(.value.mean_us)/\(.value.p99_us)")
          | join(" "))] | map(tostring) | join("|")')
    echo "$label|w3|$line" | tee -a "$results"
  fi
  if [[ $workloads == *w1* ]]; then
    line=$("$cli" --broker "$addr" bench produce --value-size 100 --messages 1000000 \
      --no-fsync-probe --json | jq .msgs_per_sec)
    echo "$label|w1|$line" | tee -a "$results"
  fi
  if [[ $workloads == *w4* ]]; then
    line=$("$cli" --broker "$addr" bench consume --value-size 100 --messages 1000000 \
      --no-fsync-probe --json | jq .msgs_per_sec)
    echo "$label|w4|$line" | tee -a "$results"
  fi
  kill -TERM "$pid"
  wait "$pid" || true
  rm -rf "$dir"
}

median() {
  sort -g | awk '{v[NR]=$1} END {if (NR == 0) print "-"; else print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'
}

echo "w3 columns: fsync p50|p99|p99.9|ack p50|p99|p99.9|deliver p50|p99|p99.9|harness lag p99|server CPU µs/msg|stages mean/p99" >&2
for round in $(seq "$rounds"); do
  echo "round $round, load $(cut -d' ' -f1 /proc/loadavg)" >&2
  run_build A "$a"
  run_build B "$b"
done

echo
echo "medians over $rounds rounds:"
for label in A B; do
  if [[ $workloads == *w3* ]]; then
    out="$label w3:"
    for col in 3:fsync_p50 4:fsync_p99 5:fsync_p999 6:ack_p50 7:ack_p99 8:ack_p999 9:deliver_p50 10:deliver_p99 11:deliver_p999 12:lag_p99; do
      n=${col%%:*}
      out+=" ${col#*:}=$(grep "^$label|w3|" "$results" | cut -d'|' -f"$n" | median)"
    done
    gap=$(grep "^$label|w3|" "$results" | awk -F'|' '{print $7 - $4}' | median)
    dgap=$(grep "^$label|w3|" "$results" | awk -F'|' '{print $10 - $7}' | median)
    echo "$out ack_p99-fsync_p99=$gap deliver_p99-ack_p99=$dgap"
  fi
  for w in w1 w4; do
    if [[ $workloads == *$w* ]]; then
      echo "$label $w: $(grep "^$label|$w|" "$results" | cut -d'|' -f3 | median) msgs/s"
    fi
  done
done
