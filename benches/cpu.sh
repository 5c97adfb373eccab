#!/usr/bin/env bash
# CPU per message: the guide for engine work, steadier than throughput on a shared machine (a
# broker's CPU time per message hardly moves when the load generator or a neighbour takes cores
# away; its msgs/s does). Runs each scenario against Tern (equal windows: 65,535 each way),
# FlashMQ (benches/flashmq, skipped with a message if it cannot be built) and Mosquitto, reads
# each broker's user+system CPU time from /proc/PID/stat around each run, and prints the median
# microseconds of broker CPU per message delivered and the ratio to Tern's.
#   benches/cpu.sh [--rounds N] [--perf] [scenario ...]     (default: pairs-qos0 pairs-qos1 fan-in fan-out)
# --perf: also records Tern under `perf` during the last round of each scenario and prints its
# ten hottest functions (self time), the top frames of a flame graph.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
. benches/lib.sh

ROUNDS=3
PERF=0
SCENARIOS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift ;;
    --perf) PERF=1 ;;
    *) SCENARIOS+=("$1") ;;
  esac
  shift
done
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(pairs-qos0 pairs-qos1 fan-in fan-out)

if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
fi
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
cargo build --release --bins --quiet
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
FLASHMQ=
if [ -x benches/flashmq/build.sh ]; then
  FLASHMQ=$(benches/flashmq/build.sh 2>/dev/null | tail -1) || FLASHMQ=
fi
[ -n "$FLASHMQ" ] || echo "cpu.sh: FlashMQ could not be built (benches/flashmq/build.sh): compared with Mosquitto only" >&2

WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
# Clock ticks of user+system CPU the process has used; stops the bench when it is gone.
ticks() {
  local t
  t=$(awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null) || true
  [ -n "$t" ] || { echo "cpu.sh: cannot read the CPU time of process $1 (it has exited)" >&2; return 1; }
  echo "$t"
}
HZ=$(getconf CLK_TCK)

cat >"$WORK/tern.toml" <<CONF
[limits]
max_inflight_messages = 65535
receive_maximum = 65535
max_queued_messages = 100000
CONF
printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 0\nmax_queued_messages 100000\nlog_dest none\nset_tcp_nodelay true\n' \
  "$(free_port)" >"$WORK/mosquitto.conf"

BROKERS=(tern mosquitto)
declare -A PORT PID
PORT[tern]=$(free_port)
target/release/tern --config "$WORK/tern.toml" --bind 127.0.0.1 --port "${PORT[tern]}" --http-port 0 --log warn &
PID[tern]=$!
PORT[mosquitto]=$(awk '/^listener/ {print $2}' "$WORK/mosquitto.conf")
"$MOSQUITTO" -c "$WORK/mosquitto.conf" &
PID[mosquitto]=$!
if [ -n "$FLASHMQ" ]; then
  BROKERS=(tern flashmq mosquitto)
  PORT[flashmq]=$(free_port)
  benches/flashmq/run.sh "${PORT[flashmq]}" "$FLASHMQ" "$WORK/flashmq" >/dev/null 2>&1 &
  PID[flashmq]=$!
fi
for b in "${BROKERS[@]}"; do PIDS+=("${PID[$b]}"); wait_port "${PORT[$b]}"; done

# Deliveries each scenario makes per --messages unit (tern-bench's shapes).
deliveries() {
  case "$1" in
    fan-in | fan-in-qos1) echo $((8 * $2)) ;;
    fan-out) echo $((200 * $2)) ;;
    pairs-*) echo $((100 * $2)) ;;
    *) echo "cpu.sh: no delivery count known for scenario $1" >&2; return 1 ;;
  esac
}
messages() { case "$1" in fan-out) echo 2000 ;; pairs-*) echo 4000 ;; *) echo 20000 ;; esac; }

printf '%-14s' scenario
for b in "${BROKERS[@]}"; do printf ' %14s' "$b us/msg"; done
for b in "${BROKERS[@]:1}"; do printf ' %14s' "$b/tern"; done
echo
for s in "${SCENARIOS[@]}"; do
  n=$(messages "$s")
  total=$(deliveries "$s" "$n")
  declare -A US=()
  for b in "${BROKERS[@]}"; do
    : >"$WORK/$b.us"
    for r in $(seq 1 "$ROUNDS"); do
      if [ "$PERF" = 1 ] && [ "$b" = tern ] && [ "$r" = "$ROUNDS" ]; then
        perf record -q -F 999 -p "${PID[tern]}" -o "$WORK/perf.data" 2>/dev/null &
        perfpid=$!
      fi
      before=$(ticks "${PID[$b]}")
      line=$("$TERN_BENCH" --port "${PORT[$b]}" --scenario "$s" --messages "$n" 2>&1 | grep RESULT) \
        || { echo "cpu.sh: $s against $b printed no RESULT line" >&2; exit 1; }
      after=$(ticks "${PID[$b]}")
      if [ -n "${perfpid:-}" ]; then kill -INT "$perfpid"; wait "$perfpid" || true; perfpid=; fi
      case "$line" in *" lost=0 dup=0"*) ;; *) echo "cpu.sh: $s against $b lost or duplicated: $line" >&2 ;; esac
      awk -v t=$((after - before)) -v hz="$HZ" -v n="$total" 'BEGIN { printf "%.3f\n", t / hz * 1e6 / n }' >>"$WORK/$b.us"
    done
    US[$b]=$(median <"$WORK/$b.us")
  done
  printf '%-14s' "$s"
  for b in "${BROKERS[@]}"; do printf ' %14s' "${US[$b]}"; done
  for b in "${BROKERS[@]:1}"; do printf ' %14s' "$(awk -v a="${US[$b]}" -v t="${US[tern]}" 'BEGIN { printf "%.2f", a / t }')"; done
  echo
  if [ "$PERF" = 1 ]; then
    echo "  Tern's hottest functions (self time, last round of $s):"
    perf report -i "$WORK/perf.data" --no-children --sort dso,symbol --stdio 2>/dev/null \
      | awk '/^ +[0-9.]+%/ && n++ < 10 { print "  " substr($0, 1, 108) }'
  fi
done
