#!/usr/bin/env bash
# `pigeon consume --json` against `pigeon bench consume` on the same broker,
# in one run: prints both rates and their ratio (issue 13 wants >= 0.5).
#
#   benches/cli_consume.sh BIN_DIR [MESSAGES]
#
# BIN_DIR holds `pigeon-broker` and `pigeon` (e.g. target/release). Needs jq
# and bc; port 7640/7641 must be free. Opt-in: not run by CI.
set -euo pipefail
bin=${1:?usage: cli_consume.sh BIN_DIR [MESSAGES]}; n=${2:-500000}; dir=$(mktemp -d); addr=127.0.0.1:7640
"$bin/pigeon-broker" --data-dir "$dir" --listen $addr --http 127.0.0.1:7641 >/dev/null 2>&1 &
pid=$!
for _ in $(seq 100); do "$bin/pigeon" --broker $addr topic list >/dev/null 2>&1 && break; sleep 0.1; done
bench=$("$bin/pigeon" --broker $addr bench consume --messages $n --json | jq .msgs_per_sec)
"$bin/pigeon" --broker $addr topic create t >/dev/null
seq $n | "$bin/pigeon" --broker $addr produce t >/dev/null
"$bin/pigeon" --broker $addr group create g --topic t >/dev/null
start=$(date +%s.%N)
"$bin/pigeon" --broker $addr consume t --group g --json --max $n >/dev/null
end=$(date +%s.%N)
cli=$(echo "$n / ($end - $start)" | bc -l)
printf 'bench consume %.0f msgs/s; pigeon consume --json %.0f msgs/s; ratio %.2f\n' "$bench" "$cli" "$(echo "$cli / $bench" | bc -l)"
kill -TERM $pid; wait $pid || true; rm -rf "$dir"
