#!/usr/bin/env bash
# Runs the same scenarios against Tern and Mosquitto (Debian's package) in one run and prints
# medians and Tern/Mosquitto ratios; ratio >= 1.0 always means Tern did better. (The two-table
# comparison with FlashMQ is benches/run.sh; `benches/run.sh --classic`, `--baseline` or any of
# the scenario names below runs this script.)
#   benches/vs-mosquitto.sh [--quick] [--baseline TERN_BINARY] [scenario ...]
# --baseline: the other broker is that Tern binary (e.g. one built from an earlier commit) with
# the same settings, instead of Mosquitto: a before/after comparison in one run.
# Scenarios: fan-in fan-out pairs-qos0 pairs-qos1 shared-qos1 queue-drain latency idle subs
# tls-connects tls-pairs-qos0. `shared-qos1`: 100 QoS 1 publishers, one $share group of 5 QoS 1
# workers. `queue-drain`: 100,000 QoS 1 jobs wait (Tern: in a declared queue; Mosquitto: in a
# $share group of 5 offline persistent sessions), then 5 QoS 1 workers connect and drain them.
# (default: all). `subs`: one client subscribes to 50,000 topics; subscriptions/s and resident
# bytes per subscription. The TLS ones use one certificate and key (from `tern gen-certs`) for both
# brokers, TLS 1.3 as both negotiate it, and full handshakes (the client never resumes).
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
# shellcheck source=benches/lib.sh
. benches/lib.sh
ARGS="$*"

QUICK=0
BASELINE=
SCENARIOS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --baseline) BASELINE=$(realpath "$2"); shift ;;
    *) SCENARIOS+=("$1") ;;
  esac
  shift
done
OTHER=${BASELINE:+baseline}; OTHER=${OTHER:-mosquitto}
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(fan-in fan-out pairs-qos0 pairs-qos1 shared-qos1 queue-drain latency idle subs tls-connects tls-pairs-qos0)
REPS=3
[ "$QUICK" = 1 ] && REPS=1

if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
fi
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
cargo build --release --bins --quiet
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT


MPORT=$(free_port)
cat >"$WORK/mosquitto.conf" <<CONF
listener $MPORT 127.0.0.1
allow_anonymous true
max_connections -1
max_queued_messages 1000
persistence false
log_dest none
# Tern sets TCP_NODELAY on every connection; give Mosquitto the same. Neither logs per
# connection (log_dest none; Tern --log warn).
set_tcp_nodelay true
CONF
# Both brokers also listen for MQTT over TLS with the same certificate and key.
target/release/tern gen-certs "$WORK/certs" >/dev/null
# Mosquitto started as root runs as user mosquitto: it must be able to read the (throwaway) key.
chmod 755 "$WORK" "$WORK/certs"; chmod 644 "$WORK/certs/server.key"
MTLS=$(free_port)
TTLS=$(free_port)
cat "$WORK/mosquitto.conf" - >"$WORK/mosquitto-tls.conf" <<CONF
listener $MTLS 127.0.0.1
certfile $WORK/certs/server.pem
keyfile $WORK/certs/server.key
CONF
cat >"$WORK/tern.toml" <<CONF
[[listeners]]
kind = "tls"
bind = "127.0.0.1"
port = $TTLS
cert = "$WORK/certs/server.pem"
key = "$WORK/certs/server.key"
CONF
# queue-drain: Tern holds the jobs in a declared queue (its other limits are the defaults: 20 in
# flight per client); Mosquitto in its members' sessions, so each may queue the whole backlog
# (max_inflight_messages 20 is its default, written out: the same window as Tern's).
cat >"$WORK/queue.toml" <<CONF
[[queues]]
name = "jobs"
filter = "bench/jobs/#"
max_messages = 200000
CONF
sed 's/^max_queued_messages .*/max_queued_messages 200000\nmax_inflight_messages 20/' \
  "$WORK/mosquitto.conf" >"$WORK/mosquitto-queue.conf"
if [ -n "$BASELINE" ]; then
  sed "s/^port = $TTLS/port = $MTLS/" "$WORK/tern.toml" >"$WORK/baseline.toml"
  "$BASELINE" --config "$WORK/baseline.toml" --bind 127.0.0.1 --port "$MPORT" --http-port 0 --log warn 2>/dev/null &
else
  "$MOSQUITTO" -c "$WORK/mosquitto-tls.conf" &
fi
MPID=$!; PIDS+=("$MPID")
TPORT=$(free_port)
target/release/tern --config "$WORK/tern.toml" --bind 127.0.0.1 --port "$TPORT" --http-port 0 --log warn 2>"$WORK/tern.log" &
TPID=$!; PIDS+=("$TPID")
wait_port "$MPORT"; wait_port "$TPORT"; wait_port "$MTLS"; wait_port "$TTLS"

rss() { status_kb "$1" VmRSS; }
# The other broker (Mosquitto, or the baseline Tern), fresh, on port $1, in the background.
start_other_fresh() {
  if [ -n "$BASELINE" ]; then
    "$BASELINE" --bind 127.0.0.1 --port "$1" --http-port 0 --log warn 2>/dev/null &
  else
    sed "s/^listener .*/listener $1 127.0.0.1/" "$WORK/mosquitto.conf" >"$WORK/fresh.conf"
    "$MOSQUITTO" -c "$WORK/fresh.conf" &
  fi
}
messages() {
  case "$1" in
    fan-in) echo $((QUICK ? 5000 : 20000)) ;;   # per publisher (8)
    fan-out) echo $((QUICK ? 500 : 2000)) ;;    # published, x200 deliveries
    pairs-* | tls-pairs-*) echo $((QUICK ? 1000 : 4000)) ;;   # per pair (100)
    shared-*) echo $((QUICK ? 500 : 2000)) ;;   # per publisher (100), to one group of 5
    queue-drain) echo $((QUICK ? 20000 : 100000)) ;;   # jobs, in all
    *) echo 0 ;;
  esac
}

# fresh_memory PORT SCENARIO SETTLE_SECS BENCH_ARGS...: runs tern-bench SCENARIO against a fresh
# broker of PORT's kind (memory freed by earlier runs would otherwise be reused) and prints its
# RESULT line, then the bytes of resident memory the broker grew by, read SETTLE_SECS after the
# RESULT while the bench holds what it made.
fresh_memory() {
  local port=$1 scenario=$2 settle=$3 fresh fport before after bench result
  shift 3
  fport=$(free_port)
  if [ "$port" = "$TPORT" ]; then
    target/release/tern --bind 127.0.0.1 --port "$fport" --http-port 0 --log warn 2>/dev/null &
  else
    start_other_fresh "$fport"
  fi
  fresh=$!
  wait_port "$fport"
  before=$(rss "$fresh")
  "$TERN_BENCH" --port "$fport" --scenario "$scenario" "$@" >"$WORK/$scenario.out" &
  bench=$!
  for _ in $(seq 1 600); do grep -q RESULT "$WORK/$scenario.out" && break; sleep 0.1; done
  result=$(must_result "$scenario (memory)" "$(cat "$WORK/$scenario.out")")
  sleep "$settle"
  after=$(rss "$fresh")
  wait "$bench" || die "tern-bench $scenario failed: $(tail -3 "$WORK/$scenario.out")"
  kill "$fresh"; wait "$fresh" 2>/dev/null || true
  echo "$result $(( (after - before) * 1024 ))"
}

# queue-drain PORT: one run against a fresh broker of PORT's kind (nothing left from an earlier
# run: no jobs, no group members) and prints its RESULT line. Tern (and a baseline) get the
# declared queue "jobs" (filter bench/jobs/#): the jobs are published, then the 5 workers
# connect with clean sessions and subscribe to $queue/jobs. Mosquitto, which has no declared
# queues, gets a $share/jobs/bench/jobs/# group of 5 persistent sessions (clean session 0)
# that subscribe and leave before the jobs are published; Mosquitto 2.0.11 deals the jobs out
# round robin to the offline members at publish time (20,000 queued in each session), and the
# workers come back with the same client ids and drain their own sessions. msgs/s: jobs
# received and acknowledged per second, from the moment the workers start connecting to the
# last PUBACK sent; latency: from the start of the receiving worker's connect to the job's
# PUBACK (time waited once a worker exists; the wait while the backlog was published is left
# out). Every job is checked off by number across all workers: lost and duplicated count jobs
# never received, received twice, or received by two workers.
queue_drain() {
  local port=$1 fport fresh out queue=()
  fport=$(free_port)
  if [ "$port" = "$TPORT" ] || [ -n "$BASELINE" ]; then
    local bin=target/release/tern
    [ "$port" = "$TPORT" ] || bin=$BASELINE
    "$bin" --config "$WORK/queue.toml" --bind 127.0.0.1 --port "$fport" --http-port 0 --log warn 2>/dev/null &
    queue=(--queue jobs)
  else
    sed "s/^listener .*/listener $fport 127.0.0.1/" "$WORK/mosquitto-queue.conf" >"$WORK/fresh-queue.conf"
    "$MOSQUITTO" -c "$WORK/fresh-queue.conf" &
  fi
  fresh=$!
  wait_port "$fport"
  out=$("$TERN_BENCH" --port "$fport" --scenario queue-drain --messages "$(messages queue-drain)" "${queue[@]}" 2>&1 || true)
  kill "$fresh"; wait "$fresh" 2>/dev/null || true
  must_result queue-drain "$out"
}

# One run of a scenario against one broker: prints "msgs p50 p99 lost dup extra".
run_one() {
  local scenario=$1 port=$2 pid=$3
  if [ "$scenario" = subs ]; then
    # Memory read while the subscriptions are held.
    local n=$((QUICK ? 10000 : 50000)) line bytes rate
    line=$(fresh_memory "$port" subs 1 --subscriptions "$n" --hold-secs 3)
    bytes=${line##* }; line=${line% *}
    # Subscriptions per second; bytes of resident memory per subscription.
    rate=$(echo "$line" | must_field msgs_per_s subs)
    echo "$rate $(( bytes / n )) 0 0 0"
    return
  fi
  if [ "$scenario" = idle ]; then
    # Steady state: 3 s after the last connect. Tern puts a connection quiet for 1 s to sleep
    # (connection/dormant.rs) and its allocator returns freed pages within about 1 s.
    local line bytes rate
    line=$(fresh_memory "$port" idle 3 --connections 10000 --hold-secs 6)
    bytes=${line##* }; line=${line% *}
    # Connections per second; bytes of resident memory per connection.
    rate=$(echo "$line" | must_field conn_per_s idle)
    echo "$rate $(( bytes / 10000 )) 0 0 0"
    return
  fi
  local line rate tls=()
  if [[ "$scenario" == tls-* ]]; then
    tls=(--cafile "$WORK/certs/ca.pem")
    if [ "$port" = "$TPORT" ]; then port=$TTLS; else port=$MTLS; fi
  fi
  if [ "$scenario" = tls-connects ]; then
    # Full TLS handshakes then CONNECT/CONNACK, 64 at a time; connections per second.
    line=$(must_result tls-connects "$("$TERN_BENCH" --port "$port" --scenario idle --connections $((QUICK ? 500 : 2000)) --hold-secs 0 "${tls[@]}" 2>&1 || true)")
    rate=$(echo "$line" | must_field conn_per_s tls-connects)
    echo "$rate 0 0 0 0"
    return
  fi
  if [ "$scenario" = queue-drain ]; then
    line=$(queue_drain "$port")
  else
    line=$(must_result "$scenario" "$("$TERN_BENCH" --port "$port" --scenario "${scenario#tls-}" --messages "$(messages "$scenario")" "${tls[@]}" 2>&1 || true)")
  fi
  local f v out=""
  for f in msgs_per_s p50_us p99_us lost dup; do
    v=$(echo "$line" | must_field "$f" "$scenario")
    out="$out $v"
  done
  echo "${out# }"
}

OUT="$WORK/table.txt"
{
  echo "Tern vs ${BASELINE:-Mosquitto}, $(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -srm), $(nproc) cores"
  echo "command: benches/run.sh $ARGS; medians of $REPS runs ($((REPS + 2)) for latency, idle, subs and tls-connects, the noisiest); ratio >= 1.0 means Tern is better"
  printf '%-15s %-18s %12s %12s %7s\n' scenario metric tern "$OTHER" ratio
} >"$OUT"
LOSS=0
TERN_LOSS=0
for s in "${SCENARIOS[@]}"; do
  : >"$WORK/t"; : >"$WORK/m"
  reps=$REPS
  # Latency at a low rate and the connect rate are mostly the kernel's and the scheduler's
  # (both brokers make the same system calls per message and per connection): more runs,
  # steadier medians.
  case "$s" in latency | idle | subs | tls-connects) reps=$((REPS + 2)) ;; esac
  for _ in $(seq 1 "$reps"); do
    run_one "$s" "$TPORT" "$TPID" >>"$WORK/t"
    run_one "$s" "$MPORT" "$MPID" >>"$WORK/m"
  done
  col() { awk -v c="$2" '{print $c}' "$WORK/$1" | must_median "$s column $2 of $1"; }
  lost_t=$(awk '{s+=$4+$5} END {print s+0}' "$WORK/t")
  lost_m=$(awk '{s+=$4+$5} END {print s+0}' "$WORK/m")
  lost=$((lost_t + lost_m))
  LOSS=$((LOSS + lost))
  TERN_LOSS=$((TERN_LOSS + lost_t))
  if [ "$s" = tls-connects ]; then
    printf '%-15s %-18s %12s %12s %7s\n' "$s" "handshakes/s" "$(col t 1)" "$(col m 1)" "$(ratio "$(col t 1)" "$(col m 1)")" >>"$OUT"
  elif [ "$s" = subs ]; then
    printf '%-15s %-18s %12s %12s %7s\n' "$s" "subscriptions/s" "$(col t 1)" "$(col m 1)" "$(ratio "$(col t 1)" "$(col m 1)")" >>"$OUT"
    printf '%-15s %-18s %12s %12s %7s\n' "$s" "bytes/subscription" "$(col t 2)" "$(col m 2)" "$(ratio "$(col m 2)" "$(col t 2)")" >>"$OUT"
  elif [ "$s" = idle ]; then
    printf '%-15s %-18s %12s %12s %7s\n' "$s" "connects/s" "$(col t 1)" "$(col m 1)" "$(ratio "$(col t 1)" "$(col m 1)")" >>"$OUT"
    printf '%-15s %-18s %12s %12s %7s\n' "$s" "bytes/connection" "$(col t 2)" "$(col m 2)" "$(ratio "$(col m 2)" "$(col t 2)")" >>"$OUT"
  else
    printf '%-15s %-18s %12s %12s %7s\n' "$s" "msgs/s" "$(col t 1)" "$(col m 1)" "$(ratio "$(col t 1)" "$(col m 1)")" >>"$OUT"
    printf '%-15s %-18s %12s %12s %7s\n' "$s" "p50 latency (us)" "$(col t 2)" "$(col m 2)" "$(ratio "$(col m 2)" "$(col t 2)")" >>"$OUT"
    printf '%-15s %-18s %12s %12s %7s\n' "$s" "p99 latency (us)" "$(col t 3)" "$(col m 3)" "$(ratio "$(col m 3)" "$(col t 3)")" >>"$OUT"
  fi
  [ "$lost" = 0 ] || echo "$s: messages lost or duplicated: tern $lost_t, $OTHER $lost_m" >>"$OUT"
done
echo "messages lost or duplicated, all scenarios: $LOSS (tern: $TERN_LOSS)" >>"$OUT"
cat "$OUT"
mkdir -p benches/results
cp "$OUT" benches/results/latest.txt
# A loss by the other broker is reported above; only Tern's fails the run.
[ "$TERN_LOSS" = 0 ]
