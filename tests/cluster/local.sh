#!/usr/bin/env bash
# A whole Tern cluster on one machine, for trying cluster mode: three NATS servers with
# JetStream (tests/cluster/nats.sh: pinned nats-server 2.15.1 on ports 4222-4224) and three
# Tern nodes n1..n3 from the release binary, node i on NATS server i (all three named, so a node
# reconnects to another if its server goes away).
#
#   tests/cluster/local.sh start [DIR]   MQTT on 1883, 1884, 1885; /metrics and /ready on
#                                        127.0.0.1:9883, 9884, 9885; waits until all are ready
#   tests/cluster/local.sh stop [DIR]    stops the nodes, then the NATS servers
#
# DIR (default target/cluster) holds each node's config (nX.toml) and log (nX.log), and the NATS
# servers' files (DIR/nats). Builds target/release/tern first (cargo build --release).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cmd=${1:-}
DIR=${2:-$ROOT/target/cluster}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
URLS='"nats://127.0.0.1:4222", "nats://127.0.0.1:4223", "nats://127.0.0.1:4224"'

start() {
  (cd "$ROOT" && cargo build --release --bin tern)
  "$ROOT/tests/cluster/nats.sh" start "$DIR/nats" >/dev/null
  for i in 1 2 3; do
    # This node's own server first: async-nats tries them in random order otherwise.
    first="\"nats://127.0.0.1:$((4221 + i))\""
    cat >"$DIR/n$i.toml" <<TOML
[listener]
port = $((1882 + i))

[http]
port = $((9882 + i))

[cluster]
enabled = true
name = "tern"
node_id = "n$i"
nats_urls = [$first, $URLS]
replicas = 3
TOML
    if [ -f "$DIR/n$i.pid" ] && kill -0 "$(cat "$DIR/n$i.pid")" 2>/dev/null; then
      continue
    fi
    "$ROOT/target/release/tern" --config "$DIR/n$i.toml" >"$DIR/n$i.log" 2>&1 &
    echo $! >"$DIR/n$i.pid"
  done
  for i in 1 2 3; do
    for _ in $(seq 1 300); do
      if curl -fs -o /dev/null "http://127.0.0.1:$((9882 + i))/ready"; then
        echo "n$i ready: mqtt://127.0.0.1:$((1882 + i)), http://127.0.0.1:$((9882 + i))/metrics" >&2
        continue 2
      fi
      kill -0 "$(cat "$DIR/n$i.pid")" 2>/dev/null || { tail -n 20 "$DIR/n$i.log" >&2; exit 1; }
      sleep 0.1
    done
    echo "n$i not ready after 30 s; see $DIR/n$i.log" >&2
    exit 1
  done
}

stop() {
  for i in 1 2 3; do
    if [ -f "$DIR/n$i.pid" ]; then
      kill "$(cat "$DIR/n$i.pid")" 2>/dev/null || true
      rm -f "$DIR/n$i.pid"
    fi
  done
  "$ROOT/tests/cluster/nats.sh" stop "$DIR/nats"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
