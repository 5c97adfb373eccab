#!/usr/bin/env bash
# Bridge bench: an edge broker bridged to a cloud broker on loopback, Tern's bridge against
# Mosquitto's (Debian's package) in the same setup, in one run. The cloud is a Tern in both
# cases (so the edge's bridge is what differs); edge and cloud are fresh processes per run.
#   (a) throughput: 8 publishers send QoS 1 messages to the edge (at most 32 unacknowledged
#       each), one QoS 1 subscriber on the cloud receives them through the bridge; msgs/s from
#       first publish to last delivery, with loss and duplicates counted per publisher.
#   (b) backlog drain: the cloud is frozen (SIGSTOP), 100,000 QoS 1 messages are published to
#       the edge and acknowledged by it, the cloud is thawed (SIGCONT); time until the cloud's
#       subscriber has them all; missing ones are counted.
# Prints medians of 3 and Tern/Mosquitto ratios (>= 1.0: Tern better); exits non-zero if Tern
# lost a message. Writes benches/results/bridge-latest.txt.
#   benches/bridge.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=0; [ "${1:-}" = --quick ] && QUICK=1
REPS=3; [ "$QUICK" = 1 ] && REPS=1
BACKLOG=$((QUICK ? 20000 : 100000))
PER_PUB=$((QUICK ? 2000 : 10000))

if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients >/dev/null
fi
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
cargo build --release --bins --quiet
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "nothing listens on $1" >&2; exit 1
}
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }
stop() { kill -CONT "$1" 2>/dev/null || true; kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# start_cloud PORT: a Tern cloud whose subscriber queue holds the whole backlog (the bench
# measures the edge's bridge, not the cloud's limits); sets CLOUD to its pid.
start_cloud() {
  cat >"$WORK/cloud.toml" <<TOML
[http]
enabled = false
[log]
level = "warn"
[limits]
max_queued_messages = 200000
TOML
  target/release/tern --config "$WORK/cloud.toml" --bind 127.0.0.1 --port "$1" >/dev/null 2>&1 &
  CLOUD=$!
  PIDS+=("$CLOUD")
}
# start_edge KIND EDGE_PORT CLOUD_PORT: the edge broker with a bridge forwarding everything at
# QoS 1, queue large enough for the backlog; sets EDGE to its pid.
start_edge() {
  local kind=$1 port=$2 cloud=$3
  if [ "$kind" = tern ]; then
    cat >"$WORK/edge.toml" <<TOML
[http]
enabled = false
[log]
level = "warn"
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
TOML
    target/release/tern --config "$WORK/edge.toml" --bind 127.0.0.1 --port "$port" >/dev/null 2>&1 &
  else
    cat >"$WORK/edge.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
persistence false
log_dest none
set_tcp_nodelay true
max_queued_messages 200000
connection cloud
address 127.0.0.1:$cloud
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

# one_run KIND: prints "msgs_per_s lost_a drain_ms lost_b".
one_run() {
  local kind=$1 cport eport cloud edge line
  cport=$(free_port); eport=$(free_port)
  start_cloud "$cport"; cloud=$CLOUD; wait_port "$cport"
  start_edge "$kind" "$eport" "$cport"; edge=$EDGE; wait_port "$eport"
  wait_bridged "$eport"
  line=$(target/release/tern-bench --port "$eport" --sub-port "$cport" --scenario fan-in-qos1 --messages "$PER_PUB" 2>&1 | grep RESULT || true)
  local rate lost_a
  if [ -n "$line" ]; then
    rate=$(echo "$line" | field msgs_per_s); lost_a=$(( $(echo "$line" | field lost) + 0 ))
  else
    rate=0; lost_a=$((PER_PUB * 8))
  fi
  # (b) backlog: subscriber on the cloud first, then freeze the cloud and fill the edge.
  # The subscriber prints each payload in hex (tern-bench's carry the publisher and a sequence
  # number, so duplicates show); it is ready once a marker published on the cloud reaches it.
  stdbuf -oL mosquitto_sub -p "$cport" -t 'bench/#' -t ready -q 1 -F '%t %x' >"$WORK/drain.out" 2>/dev/null &
  local sub=$! n=0
  PIDS+=("$sub")
  until grep -q '^ready' "$WORK/drain.out"; do
    mosquitto_pub -p "$cport" -t ready -m ready -q 1
    n=$((n + 1)); [ "$n" -lt 100 ] || { echo "cloud subscriber not ready" >&2; exit 1; }
    sleep 0.1
  done
  kill -STOP "$cloud"
  # Every message acknowledged by the edge before the cloud is thawed.
  target/release/tern-bench --port "$eport" --scenario publish --prefix "drain-$kind" --messages "$BACKLOG" >/dev/null
  local t0 t1 got=0 deadline
  t0=$(date +%s%N); deadline=$((t0 + 300000000000))
  kill -CONT "$cloud"
  # Poll every 10 ms until every backlog message arrived or 5 minutes passed.
  while :; do
    got=$(grep -c '^bench/' "$WORK/drain.out" || true)
    t1=$(date +%s%N)
    [ "$got" -ge "$BACKLOG" ] || [ "$t1" -ge "$deadline" ] && break
    sleep 0.01
  done
  stop "$sub"
  got=$(grep '^bench/' "$WORK/drain.out" | sort -u | wc -l)
  stop "$edge"; stop "$cloud"
  echo "$rate $lost_a $(( (t1 - t0) / 1000000 )) $((BACKLOG - got))"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%.2f", a / b }'; }

: >"$WORK/t"; : >"$WORK/m"
for _ in $(seq 1 "$REPS"); do
  one_run tern >>"$WORK/t"
  one_run mosquitto >>"$WORK/m"
done
col() { awk -v c="$2" '{print $c}' "$WORK/$1" | median; }
sum() { awk -v c="$2" '{s+=$c} END {print s+0}' "$WORK/$1"; }
OUT="$WORK/table.txt"
{
  echo "Bridge: Tern edge vs Mosquitto edge (both bridged to a Tern cloud), $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores"
  echo "command: benches/bridge.sh $*; medians of $REPS runs; ratio >= 1.0 means Tern is better"
  printf '%-28s %12s %12s %7s\n' metric tern mosquitto ratio
  printf '%-28s %12s %12s %7s\n' "QoS 1 edge->cloud msgs/s" "$(col t 1)" "$(col m 1)" "$(ratio "$(col t 1)" "$(col m 1)")"
  printf '%-28s %12s %12s %7s\n' "drain $BACKLOG queued (ms)" "$(col t 3)" "$(col m 3)" "$(ratio "$(col m 3)" "$(col t 3)")"
  printf '%-28s %12s %12s\n' "lost, all runs (a + b)" "$(( $(sum t 2) + $(sum t 4) ))" "$(( $(sum m 2) + $(sum m 4) ))"
} >"$OUT"
cat "$OUT"
mkdir -p benches/results
cp "$OUT" benches/results/bridge-latest.txt
[ "$(( $(sum t 2) + $(sum t 4) ))" = 0 ]
