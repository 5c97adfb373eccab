#!/usr/bin/env bash
# Bridge bench: an edge broker bridged to a cloud broker on loopback, Tern's bridge against
# Mosquitto's (Debian's package) in the same setup, in one run. The cloud is a Tern in both
# cases (so the edge's bridge is what differs); edge and cloud are fresh processes per run.
#   (a) throughput: 8 publishers send QoS 1 messages to the edge (at most 32 unacknowledged
#       each), one QoS 1 subscriber on the cloud receives them through the bridge; msgs/s from
#       first publish to last delivery, with loss and duplicates counted per publisher.
#   (b) backlog drain: the cloud frozen (SIGSTOP), 100,000 QoS 1 messages published to the
#       edge and acknowledged by it, the cloud thawed (SIGCONT); time until the cloud has
#       received them all (its tern_messages_received_total, scraped every 2 ms); a persistent
#       subscriber session on the cloud, offline meanwhile, then collects them: missing ones are
#       counted, and duplicates (QoS 1 allows them).
#   (c) the other way: 8 publishers send QoS 1 messages to the cloud, one QoS 1 subscriber on
#       the edge, with a persistent session (so with --persistence the edge stores each message
#       before acknowledging it to the cloud), receives them through the bridge's `in` rule
#       (bench/#); msgs/s, loss counted.
# Prints medians of 3 and Tern/Mosquitto ratios (>= 1.0: Tern better); exits non-zero if Tern
# lost a message. Writes benches/results/bridge-latest.txt.
#   benches/bridge.sh [--quick] [--persistence] [--baseline TERN_BINARY]
# --persistence: both edges keep their state on disk (Tern: [persistence], durability fsync, so
# every message is on disk before the edge acknowledges it; Mosquitto: persistence true, which
# saves snapshots, not every message). --baseline: the other edge is a Tern edge running that
# binary (e.g. one built from an earlier commit), not Mosquitto: before/after in one run.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
# shellcheck source=benches/lib.sh
. benches/lib.sh
ARGS="$*"
QUICK=0; PERSIST=0; BASELINE=
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --persistence) PERSIST=1 ;;
    --baseline) BASELINE=$(realpath "$2"); shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
OTHER=${BASELINE:+baseline}; OTHER=${OTHER:-mosquitto}
REPS=3; [ "$QUICK" = 1 ] && REPS=1
BACKLOG=$((QUICK ? 20000 : 100000))
PER_PUB=$((QUICK ? 2000 : 10000))

if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients >/dev/null
fi
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
cargo build --release --bins --quiet
WORK=$(mktemp -d)
# Mosquitto started as root runs as user mosquitto: its persistence directory must be its to write.
mkdir -p "$WORK/mosquitto-data"; chmod 755 "$WORK"; chmod 777 "$WORK/mosquitto-data"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
stop() { kill -CONT "$1" 2>/dev/null || true; kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# start_cloud PORT: a Tern cloud with room for what the bench sends through it, so that the
# edge's bridge is what is measured: its subscriber queue holds the whole backlog, 1000 messages
# in flight to the subscriber (not 20), and a Receive Maximum of 1000 (not 100) for a v5 bridge's
# window (Mosquitto's 3.1.1 bridge has none to respect; it keeps its own max_inflight_messages,
# 20 by default); sets CLOUD to its pid, CLOUD_HTTP to its metrics port.
start_cloud() {
  CLOUD_HTTP=$(free_port)
  cat >"$WORK/cloud.toml" <<TOML
[http]
port = $CLOUD_HTTP
[log]
level = "warn"
[limits]
max_queued_messages = 200000
max_inflight_messages = 1000
receive_maximum = 1000
TOML
  target/release/tern --config "$WORK/cloud.toml" --bind 127.0.0.1 --port "$1" >/dev/null 2>&1 &
  CLOUD=$!
  PIDS+=("$CLOUD")
}
# start_edge KIND EDGE_PORT CLOUD_PORT: the edge broker with a bridge forwarding everything at
# QoS 1, queue large enough for the backlog; sets EDGE to its pid.
start_edge() {
  local kind=$1 port=$2 cloud=$3
  if [ "$kind" != mosquitto ]; then
    cat >"$WORK/edge.toml" <<TOML
[http]
enabled = false
[log]
level = "warn"
[persistence]
enabled = $([ "$PERSIST" = 1 ] && echo true || echo false)
path = "$WORK/edge-data-$port"
durability = "fsync"
[[bridge]]
name = "cloud"
addresses = ["127.0.0.1:$cloud"]
max_queued_messages = 200000
reconnect_min_ms = 100
reconnect_max_ms = 1000
[[bridge.topics]]
pattern = "#"
direction = "out"
qos = 1
[[bridge.topics]]
pattern = "bench/#"
direction = "in"
qos = 1
TOML
    local bin=target/release/tern
    [ "$kind" = baseline ] && bin=$BASELINE
    "$bin" --config "$WORK/edge.toml" --bind 127.0.0.1 --port "$port" >/dev/null 2>&1 &
  else
    cat >"$WORK/edge.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
persistence $([ "$PERSIST" = 1 ] && echo true || echo false)
persistence_location $WORK/mosquitto-data/
log_dest none
set_tcp_nodelay true
max_queued_messages 200000
connection cloud
address 127.0.0.1:$cloud
topic bench/# in 1
topic # out 1
cleansession false
restart_timeout 1
CONF
    "$MOSQUITTO" -c "$WORK/edge.conf" >/dev/null 2>&1 &
  fi
  EDGE=$!
  PIDS+=("$EDGE")
}
# wait_bridged EDGE_PORT: until the edge reports its bridge connected ($SYS state 1).
wait_bridged() {
  for _ in $(seq 1 100); do
    [ "$(mosquitto_sub -p "$1" -t '$SYS/broker/connection/+/state' -C 1 -W 1 2>/dev/null || true)" = 1 ] && return 0
    sleep 0.1
  done
  echo "bridge on $1 not connected" >&2; return 1
}

# one_run KIND: prints "msgs_per_s lost_a drain_ms lost_b dup_b in_msgs_per_s lost_c".
one_run() {
  local kind=$1 cport eport cloud edge line
  cport=$(free_port); eport=$(free_port)
  start_cloud "$cport"; cloud=$CLOUD; wait_port "$cport"
  start_edge "$kind" "$eport" "$cport"; edge=$EDGE; wait_port "$eport"
  wait_bridged "$eport"
  line=$(must_result "(a) edge->cloud, $kind edge" "$("$TERN_BENCH" --port "$eport" --sub-port "$cport" --scenario fan-in-qos1 --messages "$PER_PUB" 2>&1 || true)")
  local rate lost_a
  rate=$(echo "$line" | must_field msgs_per_s "(a) edge->cloud, $kind edge")
  lost_a=$(echo "$line" | must_field lost "(a) edge->cloud, $kind edge")
  # (c) the other way: 8 publishers on the cloud, one persistent subscriber on the edge,
  # through the bridge's `in` rule (the edge acknowledges each message to the cloud once it is
  # stored for that subscriber).
  line=$(must_result "(c) cloud->edge, $kind edge" "$("$TERN_BENCH" --port "$cport" --sub-port "$eport" --scenario fan-in-qos1 --persistent-subscribers --messages "$PER_PUB" 2>&1 || true)")
  local in_rate lost_c
  in_rate=$(echo "$line" | must_field msgs_per_s "(c) cloud->edge, $kind edge")
  lost_c=$(echo "$line" | must_field lost "(c) cloud->edge, $kind edge")
  # (b) backlog: a persistent subscriber session on the cloud, offline (what arrives queues for
  # it there); the cloud frozen; the backlog published to the edge; the cloud thawed and timed
  # until its received count grew by the backlog; then the subscriber collects and checks it.
  "$TERN_BENCH" --port "$cport" --scenario collect --prefix "drain-$kind" --subscribe-only >/dev/null
  "$TERN_BENCH" --port "$cport" --scenario await-received --http-port "$CLOUD_HTTP" --messages "$BACKLOG" >"$WORK/await.out" 2>&1 &
  local waiter=$! n=0
  PIDS+=("$waiter")
  until grep -q '^READY' "$WORK/await.out"; do
    kill -0 "$waiter" 2>/dev/null || die "await-received failed: $(cat "$WORK/await.out")"
    n=$((n + 1)); [ "$n" -lt 3000 ] || die "await-received not ready"
    sleep 0.01
  done
  kill -STOP "$cloud"
  # Every message acknowledged by the edge before the cloud is thawed.
  "$TERN_BENCH" --port "$eport" --scenario publish --prefix "drain-$kind" --messages "$BACKLOG" >/dev/null
  local t0 t1 lost_b dup
  t0=$(date +%s%N)
  kill -CONT "$cloud"
  # The drain time is only what it says if the cloud's count reached the backlog.
  wait "$waiter" || die "(b) drain, $kind edge: the cloud never counted $BACKLOG received: $(tail -3 "$WORK/await.out" | tr '\n' ' ')"
  t1=$(date +%s%N)
  line=$(must_result "(b) drain, $kind edge" "$("$TERN_BENCH" --port "$cport" --scenario collect --prefix "drain-$kind" --messages "$BACKLOG" 2>&1 || true)")
  lost_b=$(echo "$line" | must_field lost "(b) drain, $kind edge")
  dup=$(echo "$line" | must_field dup "(b) drain, $kind edge")
  stop "$edge"; stop "$cloud"
  echo "$rate $lost_a $(( (t1 - t0) / 1000000 )) $lost_b $dup $in_rate $lost_c"
}

: >"$WORK/t"; : >"$WORK/m"
for _ in $(seq 1 "$REPS"); do
  one_run tern >>"$WORK/t"
  one_run "$OTHER" >>"$WORK/m"
done
col() { awk -v c="$2" '{print $c}' "$WORK/$1" | median; }
sum() { awk -v c="$2" '{s+=$c} END {print s+0}' "$WORK/$1"; }
OUT="$WORK/table.txt"
{
  echo "Bridge: Tern edge vs ${BASELINE:-Mosquitto} edge (both bridged to a Tern cloud), $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores"
  echo "command: benches/bridge.sh $ARGS; medians of $REPS runs; edges' persistence: $([ "$PERSIST" = 1 ] && echo on || echo off); ratio >= 1.0 means Tern is better"
  printf '%-28s %12s %12s %7s\n' metric tern "$OTHER" ratio
  printf '%-28s %12s %12s %7s\n' "QoS 1 edge->cloud msgs/s" "$(col t 1)" "$(col m 1)" "$(ratio "$(col t 1)" "$(col m 1)")"
  printf '%-28s %12s %12s %7s\n' "QoS 1 cloud->edge msgs/s" "$(col t 6)" "$(col m 6)" "$(ratio "$(col t 6)" "$(col m 6)")"
  printf '%-28s %12s %12s %7s\n' "drain $BACKLOG queued (ms)" "$(col t 3)" "$(col m 3)" "$(ratio "$(col m 3)" "$(col t 3)")"
  printf '%-28s %12s %12s\n' "lost, all runs (a + b + c)" "$(( $(sum t 2) + $(sum t 4) + $(sum t 7) ))" "$(( $(sum m 2) + $(sum m 4) + $(sum m 7) ))"
  printf '%-28s %12s %12s\n' "drain duplicates, all runs" "$(sum t 5)" "$(sum m 5)"
  echo "per run (msgs/s lost_a drain_ms lost_b dup_b in_msgs/s lost_c):"
  paste -d'|' "$WORK/t" "$WORK/m" | awk -F'|' -v other="$OTHER" '{printf "  tern %-34s %s %s\n", $1, other, $2}'
} >"$OUT"
cat "$OUT"
mkdir -p benches/results
cp "$OUT" benches/results/bridge-latest.txt
[ "$(( $(sum t 2) + $(sum t 4) + $(sum t 7) ))" = 0 ]
