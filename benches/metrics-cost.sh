#!/usr/bin/env bash
# What metrics cost: the QoS 0 scenarios (fan-in, fan-out, pairs-qos0) against Tern with its
# metrics on (the default: Prometheus recorder installed, HTTP listener up, $SYS every 10 s) and
# off (`[http] enabled = false`, `[sys] interval_secs = 0`: no recorder, no counting),
# alternately, in one run.
# Prints medians and on/off ratios; issue 4's target is within 5% (ratio >= 0.95).
# Usage: benches/metrics-cost.sh [--quick]
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
# shellcheck source=benches/lib.sh
. benches/lib.sh

REPS=5
[ "${1:-}" = --quick ] && REPS=1
cargo build --release --bins --quiet

WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT


ON=$(free_port)
target/release/tern --bind 127.0.0.1 --port "$ON" --http-port 0 --log warn 2>/dev/null &
PIDS+=($!)
OFF=$(free_port)
printf '[listener]\nbind = "127.0.0.1"\nport = %s\n[http]\nenabled = false\n[sys]\ninterval_secs = 0\n' "$OFF" >"$WORK/off.toml"
target/release/tern --config "$WORK/off.toml" --log warn 2>/dev/null &
PIDS+=($!)
wait_port "$ON"; wait_port "$OFF"

messages() { case "$1" in fan-in) echo 20000 ;; fan-out) echo 2000 ;; *) echo 4000 ;; esac; }
# run_one PORT SCENARIO: msgs/s of one run (stops the bench if there is no such figure, or if
# messages were lost: a lossy run's rate is not comparable).
run_one() {
  local line lost dup
  line=$(must_result "$2 on port $1" "$("$TERN_BENCH" --port "$1" --scenario "$2" --messages "$(messages "$2")" 2>&1 || true)")
  lost=$(echo "$line" | must_field lost "$2")
  dup=$(echo "$line" | must_field dup "$2")
  [ "$lost" = 0 ] && [ "$dup" = 0 ] || die "$2 on port $1 lost $lost and duplicated $dup messages"
  echo "$line" | must_field msgs_per_s "$2"
}

{
  echo "Tern metrics on vs off, $(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -srm), $(nproc) cores; medians of $REPS"
  printf '%-11s %14s %14s %7s\n' scenario "on msgs/s" "off msgs/s" "on/off"
} >"$WORK/table.txt"
for s in fan-in fan-out pairs-qos0; do
  : >"$WORK/on"; : >"$WORK/off"
  for _ in $(seq 1 "$REPS"); do
    run_one "$ON" "$s" >>"$WORK/on"
    run_one "$OFF" "$s" >>"$WORK/off"
  done
  on=$(must_median "$s metrics on" <"$WORK/on"); off=$(must_median "$s metrics off" <"$WORK/off")
  printf '%-11s %14s %14s %7s\n' "$s" "$on" "$off" "$(awk -v a="$on" -v b="$off" 'BEGIN { printf "%.3f", a / b }')" >>"$WORK/table.txt"
done
cat "$WORK/table.txt"
mkdir -p benches/results
cp "$WORK/table.txt" benches/results/metrics-cost-latest.txt
