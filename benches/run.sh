#!/usr/bin/env bash
# Tern, FlashMQ and Mosquitto side by side, in two tables, each from one run:
#   (a) every broker with its defaults: Tern's built-in ones, Mosquitto's (Debian's package,
#       `set_tcp_nodelay true` as Tern sets TCP_NODELAY), FlashMQ as benches/flashmq/run.sh
#       runs it (`tcp_nodelay true` likewise; otherwise its defaults: a client's Receive
#       Maximum governs its outbound window);
#   (b) equal windows: Tern with limits.max_inflight_messages = 65535 and
#       limits.receive_maximum = 65535, Mosquitto with max_inflight_messages 0 (unlimited),
#       FlashMQ as in (a).
# Every broker in both tables holds up to 65,535 queued messages per client (FlashMQ's maximum,
# set by its run.sh), so the 10,000-message offline drain fits in every queue.
# In the QoS 1/2 throughput scenarios the subscribers acknowledge each burst of deliveries in
# one write (--batch-acks), as client libraries that batch acknowledgements do: with one write
# per PUBACK the load tool itself took more than half of the 2 cores (tern-bench 0.73 CPU-s
# against the broker's 0.59 for 400,000 QoS 1 messages), and the table measured the tool.
# Each measurement is a fresh broker process (its peak resident memory, VmHWM, is that
# scenario's), brokers alternate within a round, and the table prints medians of the rounds
# (3; 2 with --quick, which also sends fewer messages), ratios Tern/FlashMQ and Tern/Mosquitto
# (>= 1.0: Tern better; for latency and memory the inverse ratio) and every loss. A figure that
# cannot be found stops the run naming it. Exits non-zero if Tern lost or duplicated a message.
# Writes benches/results/latest.txt, and for a complete run (all scenarios, both tables)
# benches/results/three-brokers-DATE[-quick].txt. FLASHMQ_BUILD_DIR: where FlashMQ is built.
#   benches/run.sh [--quick] [--rounds N] [--table defaults|equal|both] [scenario ...]
# Scenarios (default: all): fan-in-4 fan-out-100 pairs-qos0 pairs-qos1 pairs-qos1-v5 fan-in-4-qos2
# drain-10k latency-qos0 latency-qos1 idle. (When the brokers are built it takes ~12 minutes;
# --quick ~6.)
# The earlier Tern vs Mosquitto comparison (more scenarios: shared subscriptions, queues, TLS,
# subscriptions; --baseline BINARY for a before/after of two Tern builds) is
# benches/vs-mosquitto.sh; `benches/run.sh --classic [...]`, `--baseline`, or a scenario name
# only it has (fan-in fan-out shared-qos1 queue-drain latency subs tls-connects tls-pairs-qos0)
# runs it (`--classic pairs-qos0` for its pairs-qos0, pairs-qos1 or idle alone).
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
# shellcheck source=benches/lib.sh
. benches/lib.sh

# Scenario: metric|tern-bench arguments|messages (per publisher; fan-out: published)|quick.
declare -A SCEN=(
  [fan-in-4]="msgs/s|--scenario fan-in --publishers 4 --qos 0|50000|10000"
  [fan-out-100]="deliveries/s|--scenario fan-out --subscribers 100 --qos 0|5000|1000"
  [pairs-qos0]="msgs/s|--scenario pairs-qos0|4000|1000"
  [pairs-qos1]="msgs/s|--scenario pairs-qos1 --batch-acks|4000|1000"
  [pairs-qos1-v5]="msgs/s|--scenario pairs-qos1 --mqtt 5 --batch-acks|4000|1000"
  [fan-in-4-qos2]="msgs/s|--scenario fan-in --publishers 4 --qos 2 --batch-acks|20000|5000"
  [drain-10k]="msgs/s|--scenario offline-drain --qos 1|10000|10000"
  [latency-qos0]="p99 us|--scenario latency --rate 1000 --qos 0|0|0"
  [latency-qos1]="p99 us|--scenario latency --rate 1000 --qos 1|0|0"
  [idle]="connects/s|--scenario idle|10000|10000"
)
ORDER=(fan-in-4 fan-out-100 pairs-qos0 pairs-qos1 pairs-qos1-v5 fan-in-4-qos2 drain-10k latency-qos0 latency-qos1 idle)
# The classic comparison: --classic, --baseline, or a scenario name only it has.
CLASSIC_ONLY=" fan-in fan-out shared-qos1 queue-drain latency subs tls-connects tls-pairs-qos0 "
for a in "$@"; do
  if [ "$a" = --classic ] || [ "$a" = --baseline ] || [[ "$CLASSIC_ONLY" == *" $a "* ]]; then
    args=()
    for x in "$@"; do [ "$x" = --classic ] || args+=("$x"); done
    exec benches/vs-mosquitto.sh "${args[@]}"
  fi
done

ARGS="$*"
QUICK=0
ROUNDS=
TABLES=both
SCENARIOS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --rounds) ROUNDS=$2; shift ;;
    --table) TABLES=$2; shift ;;
    *) [ -n "${SCEN[$1]:-}" ] || die "unknown scenario $1 (one of: ${ORDER[*]})"; SCENARIOS+=("$1") ;;
  esac
  shift
done
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=("${ORDER[@]}")
ROUNDS=${ROUNDS:-$((QUICK ? 2 : 3))}
[ "$ROUNDS" -ge 1 ] || die "--rounds must be at least 1"
case "$TABLES" in
  both) TABLES=(defaults equal) ;;
  defaults | equal) TABLES=("$TABLES") ;;
  *) die "--table defaults, equal or both" ;;
esac
LAT_SECS=$((QUICK ? 2 : 5))
IDLE_CONNS=$((QUICK ? 5000 : 10000))

if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
fi
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
cargo build --release --bins --quiet
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

WORK=$(mktemp -d)
chmod 755 "$WORK"
BROKER_PID=
cleanup() { [ -z "$BROKER_PID" ] || kill "$BROKER_PID" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

BROKERS=(tern flashmq mosquitto)
FLASHMQ_NOTE=
# FLASHMQ_BUILD_DIR: where FlashMQ is built (default /tmp/flashmq-build; reused once built).
if FLASHMQ=$(benches/flashmq/build.sh ${FLASHMQ_BUILD_DIR:+"$FLASHMQ_BUILD_DIR"} 2>"$WORK/flashmq-build.log") && [ -x "$FLASHMQ" ]; then
  FLASHMQ_NOTE="FlashMQ $(basename "$(ls benches/flashmq/flashmq-*.tar.gz)" .tar.gz | sed 's/^flashmq-//') ($FLASHMQ)"
else
  echo "FlashMQ: could not be built, skipped (benches/flashmq/build.sh said: $(tail -3 "$WORK/flashmq-build.log" | tr '\n' ' '))" >&2
  FLASHMQ_NOTE="FlashMQ skipped: it could not be built"
  BROKERS=(tern mosquitto)
fi

# Tern's configs. A v5 ceiling key for the outbound window, if this Tern has one, is set too.
V5KEY=$(sed -n 's/^#\? *\(max_inflight_messages_v5\) *=.*/\1/p' config/tern.toml | head -1)
printf '[limits]\nmax_queued_messages = 65535\n' >"$WORK/tern-defaults.toml"
{
  printf '[limits]\nmax_queued_messages = 65535\nmax_inflight_messages = 65535\nreceive_maximum = 65535\n'
  [ -z "$V5KEY" ] || printf '%s = 65535\n' "$V5KEY"
} >"$WORK/tern-equal.toml"
mosquitto_conf() { # PORT TABLE
  cat <<CONF
listener $1 127.0.0.1
allow_anonymous true
max_connections -1
max_queued_messages 65535
persistence false
log_dest none
set_tcp_nodelay true
CONF
  [ "$2" = defaults ] || echo "max_inflight_messages 0"
}

# start BROKER TABLE PORT: a fresh broker in the background; sets BROKER_PID.
start() {
  case "$1" in
    tern)
      target/release/tern --config "$WORK/tern-$2.toml" --bind 127.0.0.1 --port "$3" --http-port 0 --log warn >>"$WORK/tern.log" 2>&1 &
      ;;
    flashmq) benches/flashmq/run.sh "$3" "$FLASHMQ" "$WORK/flashmq-$3" >>"$WORK/flashmq.log" 2>&1 &
      ;;
    mosquitto)
      mosquitto_conf "$3" "$2" >"$WORK/mosquitto-$3.conf"
      "$MOSQUITTO" -c "$WORK/mosquitto-$3.conf" >>"$WORK/mosquitto.log" 2>&1 &
      ;;
  esac
  BROKER_PID=$!
  wait_port "$3"
}
stop() { kill "$BROKER_PID" 2>/dev/null || true; wait "$BROKER_PID" 2>/dev/null || true; BROKER_PID=; }

# measure TABLE SCENARIO BROKER: one run against a fresh broker; prints
# "value p50_us lost dup peak_kb bytes_per_connection".
measure() {
  local table=$1 s=$2 b=$3 spec metric bargs msgs port out result value p50 lost dup peak \
    before after per_conn=0 bench
  spec=${SCEN[$s]}
  IFS='|' read -r metric bargs msgs quick_msgs <<<"$spec"
  [ "$QUICK" = 0 ] || msgs=$quick_msgs
  port=$(free_port)
  start "$b" "$table" "$port"
  # shellcheck disable=SC2086
  if [ "$s" = idle ]; then
    before=$(status_kb "$BROKER_PID" VmRSS)
    "$TERN_BENCH" --port "$port" $bargs --connections "$IDLE_CONNS" --hold-secs 6 >"$WORK/idle.out" 2>&1 &
    bench=$!
    for _ in $(seq 1 600); do grep -q '^RESULT' "$WORK/idle.out" && break; kill -0 "$bench" 2>/dev/null || break; sleep 0.1; done
    result=$(must_result "$s against $b" "$(cat "$WORK/idle.out")")
    # Steady state, 3 s after the last connect (Tern puts connections quiet for 1 s to sleep).
    sleep 3
    after=$(status_kb "$BROKER_PID" VmRSS)
    wait "$bench" || die "tern-bench idle against $b failed: $(tail -3 "$WORK/idle.out")"
    per_conn=$(( (after - before) * 1024 / IDLE_CONNS ))
    value=$(echo "$result" | must_field conn_per_s "$s against $b")
  else
    out=$("$TERN_BENCH" --port "$port" $bargs --messages "$msgs" --seconds "$LAT_SECS" 2>&1 || true)
    result=$(must_result "$s against $b ($table)" "$out")
    if [[ "$s" == latency-* ]]; then
      value=$(echo "$result" | must_field p99_us "$s against $b")
    else
      value=$(echo "$result" | must_field msgs_per_s "$s against $b")
    fi
  fi
  p50=$(echo "$result" | must_field p50_us "$s against $b")
  lost=$(echo "$result" | must_field lost "$s against $b")
  dup=$(echo "$result" | must_field dup "$s against $b")
  peak=$(status_kb "$BROKER_PID" VmHWM)
  stop
  must_number "$s against $b: $metric" "$value" >/dev/null
  echo "$value $p50 $lost $dup $peak $per_conn"
}

OUT="$WORK/tables.txt"
{
  echo "Tern vs FlashMQ vs Mosquitto, $(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -srm), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
  echo "command: benches/run.sh $ARGS; medians of $ROUNDS rounds, a fresh broker per measurement; $FLASHMQ_NOTE; $({ "$MOSQUITTO" -h 2>/dev/null || true; } | head -1)"
  echo "ratios >= 1.0 mean Tern is better (throughput: Tern/other; latency and memory: other/Tern); peak MB: VmHWM of each broker in that scenario (median)"
  [ -n "$V5KEY" ] || echo "equal windows: this Tern has no limits.max_inflight_messages_v5; max_inflight_messages = 65535 and receive_maximum = 65535 are set"
} >"$OUT"
TERN_LOSS=0
for table in "${TABLES[@]}"; do
  {
    echo
    if [ "$table" = defaults ]; then
      echo "(a) every broker with its defaults (queues: 65,535 messages per client for all)"
    else
      echo "(b) equal windows: Tern max_inflight_messages = receive_maximum = 65535${V5KEY:+, $V5KEY = 65535}; Mosquitto max_inflight_messages 0; FlashMQ as in (a)"
    fi
    printf '%-14s %-17s %11s %11s %11s %8s %8s  %-17s %s\n' scenario metric tern flashmq mosquitto "T/FMQ" "T/Mosq" "peak MB t/f/m" loss
  } >>"$OUT"
  for s in "${SCENARIOS[@]}"; do
    for b in tern flashmq mosquitto; do : >"$WORK/$b"; done
    for r in $(seq 1 "$ROUNDS"); do
      for b in "${BROKERS[@]}"; do
        echo "[$table] $s round $r: $b" >&2
        # Not in a subshell: a figure missing stops the run, and the trap stops the broker.
        measure "$table" "$s" "$b" >>"$WORK/$b"
      done
    done
    IFS='|' read -r metric _ <<<"${SCEN[$s]}"
    declare -A V=() P=() L=() M=()
    for b in tern flashmq mosquitto; do
      # Each run's line: six numbers, nothing else (a stray line would shift every median).
      bad=$(awk 'NF != 6 { print NR ": " $0; exit } { for (i = 1; i <= NF; i++) if ($i !~ /^[0-9.]+$/) { print NR ": " $0; exit } }' "$WORK/$b")
      [ -z "$bad" ] || die "$s: a run of $b left a line that is not its six figures: $bad"
      if [ -s "$WORK/$b" ]; then
        V[$b]=$(awk '{print $1}' "$WORK/$b" | must_median "$s $metric of $b")
        P[$b]=$(awk '{printf "%.1f\n", $5 / 1024}' "$WORK/$b" | must_median "$s peak memory of $b")
        L[$b]=$(awk '{s += $3 + $4} END {print s + 0}' "$WORK/$b")
        M[$b]=$(awk '{print $6}' "$WORK/$b" | must_median "$s bytes per connection of $b")
      else
        V[$b]=-; P[$b]=-; L[$b]=0; M[$b]=-
      fi
    done
    TERN_LOSS=$((TERN_LOSS + L[tern]))
    loss=none
    if [ "${L[tern]}" != 0 ] || [ "${L[flashmq]}" != 0 ] || [ "${L[mosquitto]}" != 0 ]; then
      loss="LOSS: tern ${L[tern]}, flashmq ${L[flashmq]}, mosquitto ${L[mosquitto]} (lost+dup, all rounds)"
    fi
    if [[ "$s" == latency-* ]]; then
      rf=$(ratio "${V[flashmq]}" "${V[tern]}"); rm_=$(ratio "${V[mosquitto]}" "${V[tern]}")
    else
      rf=$(ratio "${V[tern]}" "${V[flashmq]}"); rm_=$(ratio "${V[tern]}" "${V[mosquitto]}")
    fi
    printf '%-14s %-17s %11s %11s %11s %8s %8s  %-17s %s\n' "$s" "$metric" "${V[tern]}" "${V[flashmq]}" "${V[mosquitto]}" \
      "$rf" "$rm_" "${P[tern]}/${P[flashmq]}/${P[mosquitto]}" "$loss" >>"$OUT"
    if [ "$s" = idle ]; then
      printf '%-14s %-17s %11s %11s %11s %8s %8s\n' "$s" "bytes/connection" "${M[tern]}" "${M[flashmq]}" "${M[mosquitto]}" \
        "$(ratio "${M[flashmq]}" "${M[tern]}")" "$(ratio "${M[mosquitto]}" "${M[tern]}")" >>"$OUT"
    fi
  done
done
echo "messages lost or duplicated by Tern, all scenarios: $TERN_LOSS" >>"$OUT"
cat "$OUT"
mkdir -p benches/results
cp "$OUT" benches/results/latest.txt
# A dated copy of each complete run (every scenario, both tables) to keep.
if [ ${#SCENARIOS[@]} = ${#ORDER[@]} ] && [ ${#TABLES[@]} = 2 ]; then
  cp "$OUT" "benches/results/three-brokers-$(date -u +%Y-%m-%d-%H%M)$([ "$QUICK" = 1 ] && echo -quick).txt"
fi
# Another broker's loss is reported above; only Tern's fails the run.
[ "$TERN_LOSS" = 0 ]
