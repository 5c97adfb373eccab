#!/usr/bin/env bash
# Cluster bench: the same load against one Tern node and against a cluster of three Tern nodes
# on three NATS servers (tests/cluster/nats.sh: nats-server 2.15.1, JetStream, R3), all on this
# machine, in one run. In the cluster, publishers connect to node 1 and subscribers to node 2,
# so every message crosses nodes (QoS 0 over core NATS, QoS 1 through the replicated stream).
#   pairs-qos0 / pairs-qos1: 100 publisher-subscriber pairs (tern-bench); msgs/s and latency
#   fan-out: one QoS 0 publisher, 100 subscribers; deliveries/s
#   connects: 2,000 connections opened (in the cluster each CONNECT claims its client id in the
#   KV bucket by compare-and-set); connections/s
#   failover (cluster only): 50 persistent QoS 1 subscribers on a fourth node that is killed
#   (kill -9) halfway through a stream; ms from the kill until their sessions are resumed on
#   node 2 (median, slowest), and acknowledged messages lost (must be 0) / duplicated
# Prints medians of 3 (1 with --quick) and cluster/single ratios (< 1.0: the cluster is slower,
# which is expected on 2 shared cores: the point of a cluster is what it survives), and messages
# lost or duplicated (must be 0 for QoS 1). Writes benches/results/cluster-latest.txt.
#   benches/cluster.sh [--quick]
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
# shellcheck source=benches/lib.sh
. benches/lib.sh
ARGS="$*"
QUICK=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
REPS=3; [ "$QUICK" = 1 ] && REPS=1
MESSAGES=$((QUICK ? 2000 : 10000))

cargo build --release --bins --quiet
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  tests/cluster/nats.sh stop "$WORK/nats" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
# A node reads the cluster's state from NATS before it listens: up to 60 s.
wait_port() {
  for _ in $(seq 1 600); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done
  die "nothing listens on $1"
}

NATS_PORT_BASE=auto tests/cluster/nats.sh start "$WORK/nats" >"$WORK/urls" 2>/dev/null
IFS=, read -r -a URLS <"$WORK/urls"

# start_node NAME PORT [CLUSTER_INDEX]: a Tern node (with CLUSTER_INDEX: cluster node on that
# NATS server; without: a single node), with room for the load (as benches/run.sh gives both).
start_node() {
  local name=$1 port=$2 idx=${3:-}
  {
    printf '[listener]\nbind = "127.0.0.1"\nport = %s\n[http]\nenabled = false\n[log]\nlevel = "warn"\n' "$port"
    printf '[limits]\nmax_queued_messages = 100000\n'
    if [ -n "$idx" ]; then
      printf '[cluster]\nenabled = true\nname = "bench"\nnode_id = "%s"\nnats_urls = ["%s"]\n' "$name" "${URLS[$idx]}"
    fi
  } >"$WORK/$name.toml"
  target/release/tern --config "$WORK/$name.toml" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
}
SINGLE=$(free_port); N1=$(free_port); N2=$(free_port); N3=$(free_port)
start_node single "$SINGLE"
start_node b1 "$N1" 0
start_node b2 "$N2" 1
start_node b3 "$N3" 2
for p in "$SINGLE" "$N1" "$N2" "$N3"; do wait_port "$p"; done

# run KIND SCENARIO: one RESULT line's fields "msgs conn p50 p99 lost dup".
run() {
  local kind=$1 scenario=$2 ports line out f v fields=""
  if [ "$kind" = single ]; then ports=(--port "$SINGLE"); else ports=(--port "$N1" --sub-port "$N2"); fi
  case "$scenario" in
    connects) out=$("$TERN_BENCH" "${ports[@]:0:2}" --scenario idle --connections 2000 --hold-secs 0 2>&1 || true) ;;
    *) out=$("$TERN_BENCH" "${ports[@]}" --scenario "$scenario" --messages "$MESSAGES" 2>&1 || true) ;;
  esac
  line=$(must_result "$scenario ($kind)" "$out")
  for f in msgs_per_s conn_per_s p50_us p99_us lost dup; do
    v=$(echo "$line" | must_field "$f" "$scenario ($kind)")
    fields="$fields $v"
  done
  echo "${fields# }"
}

OUT=$WORK/out
{
  echo "One Tern node vs a 3-node Tern cluster on 3 NATS servers (R3), $(date -u '+%Y-%m-%d %H:%M') UTC, $(uname -srm), $(nproc) cores"
  echo "command: benches/cluster.sh $ARGS; medians of $REPS; cluster: publishers on node 1, subscribers on node 2; ratio = cluster / single"
  printf '%-12s %-22s %12s %12s %7s\n' scenario metric single cluster ratio
} >"$OUT"
problems=0
for scenario in pairs-qos0 pairs-qos1 fan-out connects; do
  for kind in single cluster; do
    : >"$WORK/$kind.r"
    for _ in $(seq 1 "$REPS"); do run "$kind" "$scenario" >>"$WORK/$kind.r"; done
  done
  col() { awk -v c="$2" '{print $c}' "$WORK/$1.r" | must_median "$scenario column $2 ($1)"; }
  if [ "$scenario" = connects ]; then
    printf '%-12s %-22s %12s %12s %7s\n' "$scenario" "connections/s" "$(col single 2)" "$(col cluster 2)" "$(ratio "$(col cluster 2)" "$(col single 2)")" >>"$OUT"
    continue
  fi
  printf '%-12s %-22s %12s %12s %7s\n' "$scenario" "msgs/s" "$(col single 1)" "$(col cluster 1)" "$(ratio "$(col cluster 1)" "$(col single 1)")" >>"$OUT"
  printf '%-12s %-22s %12s %12s %7s\n' "$scenario" "p50 latency (us)" "$(col single 3)" "$(col cluster 3)" "$(ratio "$(col single 3)" "$(col cluster 3)")" >>"$OUT"
  printf '%-12s %-22s %12s %12s %7s\n' "$scenario" "p99 latency (us)" "$(col single 4)" "$(col cluster 4)" "$(ratio "$(col single 4)" "$(col cluster 4)")" >>"$OUT"
  lost=$(awk '{s += $5} END {print s}' "$WORK/cluster.r"); dup=$(awk '{s += $6} END {print s}' "$WORK/cluster.r")
  printf '%-12s %-22s %12s %12s\n' "$scenario" "cluster lost / dup" "" "$lost / $dup" >>"$OUT"
  if [ "$scenario" = pairs-qos1 ] && [ "$lost" != 0 ]; then problems=1; fi
done
# failover: 50 persistent subscribers (QoS 1) on a fourth node, a publisher on node 1; halfway
# through the stream the fourth node is killed (kill -9) and the subscribers resume their
# sessions on node 2. A single node has no such thing: the cluster's figures only.
: >"$WORK/failover.r"
for rep in $(seq 1 "$REPS"); do
  P4=$(free_port)
  start_node "b4r$rep" "$P4" 2
  wait_port "$P4"
  out=$("$TERN_BENCH" --port "$N1" --sub-port "$P4" --failover-port "$N2" \
    --kill-pid "${PIDS[-1]}" --scenario failover --connections 50 --messages "$MESSAGES" 2>&1 || true)
  line=$(echo "$out" | grep '^FAILOVER' | tail -1 || true)
  [ -n "$line" ] || die "no FAILOVER line from tern-bench (round $rep); its output ended: $(echo "$out" | tail -3 | tr '\n' ' ')"
  fields=""
  for f in resumed_p50_ms resumed_max_ms lost duplicates; do
    v=$(echo "$line" | must_field "$f" "failover round $rep")
    fields="$fields $v"
  done
  echo "${fields# }" >>"$WORK/failover.r"
done
fcol() { awk -v c="$1" '{print $c}' "$WORK/failover.r" | must_median "failover column $1"; }
printf '%-12s %-22s %12s %12s\n' failover "resumed p50 (ms)" "" "$(fcol 1)" >>"$OUT"
printf '%-12s %-22s %12s %12s\n' failover "resumed slowest (ms)" "" "$(fcol 2)" >>"$OUT"
flost=$(awk '{s += $3} END {print s}' "$WORK/failover.r"); fdup=$(awk '{s += $4} END {print s}' "$WORK/failover.r")
printf '%-12s %-22s %12s %12s\n' failover "acked lost / dup" "" "$flost / $fdup" >>"$OUT"
[ "$flost" = 0 ] || problems=1
echo "(latency ratios are single / cluster, so < 1.0 also means the cluster is slower)" >>"$OUT"
mkdir -p benches/results
cp "$OUT" benches/results/cluster-latest.txt
cat "$OUT"
exit "$problems"
