#!/usr/bin/env bash
# PROXY protocol through a real load balancer: Debian's HAProxy in front of Tern, with
# `send-proxy` (v1) and `send-proxy-v2`, and TLS terminated at HAProxy with the client
# certificate's CN passed on (`send-proxy-v2-ssl-cn`). Clients are Mosquitto's, bound to their
# own loopback addresses (-A 127.0.0.x), so Tern's "client connected" log line shows whether it
# saw the client (127.0.0.x) or HAProxy (127.0.0.1). Every wait is bounded.
# Prints "PASS name" / "FAIL name: why" per check and, last, "N passed, M failed".
#   TERN_BIN=path     Tern binary (default: target/release/tern, built with cargo)
#   HAPROXY=path      HAProxy (default: haproxy on PATH; every check is skipped when absent)
set -euo pipefail
cd "$(dirname "$0")/../.."

for tool in mosquitto_pub mosquitto_sub python3; do
  command -v "$tool" >/dev/null || { echo "haproxy: $tool is not installed"; exit 2; }
done
HAPROXY=${HAPROXY:-$(command -v haproxy || true)}
if [ -z "$HAPROXY" ]; then
  echo "SKIP PROXY protocol through HAProxy: haproxy is not installed (see .ci/run)"
  echo "0 passed, 0 failed"
  exit 0
fi
BIN=${TERN_BIN:-}
if [ -z "$BIN" ]; then
  BIN=target/release/tern
  cargo build --release --bin tern
fi
W=$(mktemp -d)
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT

PASSED=0
FAILED=0
pass() { echo "PASS $1"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL $1: $2"; FAILED=$((FAILED + 1)); }
oneline() { tr '\n' ' ' | cut -c1-300; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Waits (at most 10 s) for a TCP port to accept connections.
wait_port() {
  local i
  for i in $(seq 100); do
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $1), 0.2)" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
# The first "client connected" line of client id $1 in Tern's log (waits at most 5 s).
connected_line() {
  local i
  for i in $(seq 50); do
    if grep -a "client connected" "$W/tern.log" | grep -a "client_id=$1 " | head -1 | grep -q .; then
      grep -a "client connected" "$W/tern.log" | grep -a "client_id=$1 " | head -1
      return 0
    fi
    sleep 0.1
  done
  return 1
}

"$BIN" gen-certs "$W/certs" >/dev/null
cat "$W/certs/server.pem" "$W/certs/server.key" >"$W/haproxy.pem"
TERN_PORT=$(free_port)   # proxy_protocol: HAProxy's send-proxy and send-proxy-v2 both land here
CN_PORT=$(free_port)     # proxy_protocol + proxy_trust_tls_identity (TLS offloaded at HAProxy)
V1_PORT=$(free_port)
V2_PORT=$(free_port)
TLS_PORT=$(free_port)
cat >"$W/tern.toml" <<EOF
[listener]
bind = "127.0.0.1"
port = $TERN_PORT
proxy_protocol = true

[[listeners]]
kind = "tcp"
bind = "127.0.0.1"
port = $CN_PORT
proxy_protocol = true
proxy_trust_tls_identity = true
identity_as_username = "cn"

[auth]
allow_anonymous = true

[http]
enabled = false
EOF
cat >"$W/haproxy.cfg" <<EOF
global
  log stderr format raw local0 notice

defaults
  mode tcp
  log global
  timeout connect 5s
  timeout client 60s
  timeout server 60s

frontend mqtt_v1
  bind 127.0.0.1:$V1_PORT
  default_backend tern_v1
backend tern_v1
  server tern 127.0.0.1:$TERN_PORT send-proxy

frontend mqtt_v2
  bind 127.0.0.1:$V2_PORT
  default_backend tern_v2
backend tern_v2
  server tern 127.0.0.1:$TERN_PORT send-proxy-v2

frontend mqtts
  bind 127.0.0.1:$TLS_PORT ssl crt $W/haproxy.pem ca-file $W/certs/ca.pem verify required
  default_backend tern_cn
backend tern_cn
  server tern 127.0.0.1:$CN_PORT send-proxy-v2-ssl-cn
EOF

RUST_LOG=info "$BIN" --config "$W/tern.toml" >"$W/tern.log" 2>&1 &
PIDS+=($!)
"$HAPROXY" -db -f "$W/haproxy.cfg" >"$W/haproxy.log" 2>&1 &
PIDS+=($!)
if ! wait_port "$TERN_PORT" || ! wait_port "$CN_PORT"; then
  fail "PROXY protocol: Tern starts" "$(tail -5 "$W/tern.log" | oneline)"
  echo "$PASSED passed, $FAILED failed"; exit 1
fi
if ! wait_port "$V1_PORT" || ! wait_port "$V2_PORT" || ! wait_port "$TLS_PORT"; then
  fail "PROXY protocol: HAProxy starts" "$(tail -5 "$W/haproxy.log" | oneline)"
  echo "$PASSED passed, $FAILED failed"; exit 1
fi
echo "HAProxy $("$HAPROXY" -v | head -1 | awk '{print $3}')"

# A plain client straight to the proxy_protocol port: no header, closed, no CONNACK.
if mosquitto_pub -p "$TERN_PORT" -i pp-direct -t pp/x -m x 2>"$W/direct.err"; then
  fail "PROXY protocol: a client without a header is closed" "mosquitto_pub succeeded"
else
  pass "PROXY protocol: a client without a header is closed ($(head -1 "$W/direct.err" | oneline))"
fi

# v1 and v2: a subscriber through send-proxy, a publisher through send-proxy-v2.
for v in 311 5; do
  mosquitto_sub -V "$v" -A 127.0.0.5 -p "$V1_PORT" -i "pp-sub-$v" -t "pp/$v" -C 1 -W 10 >"$W/sub-$v.out" 2>&1 &
  SUB=$!
  if ! connected_line "pp-sub-$v" >/dev/null; then
    fail "PROXY v1 (send-proxy): subscriber connects (v$v)" "$(tail -3 "$W/tern.log" | oneline)"
    kill "$SUB" 2>/dev/null || true
    continue
  fi
  line=$(connected_line "pp-sub-$v")
  case "$line" in
    *peer=127.0.0.5:*) pass "PROXY v1 (send-proxy): Tern logs the client's address, not HAProxy's (v$v)" ;;
    *) fail "PROXY v1 (send-proxy): client address (v$v)" "$line" ;;
  esac
  # A QoS 1 subscription may still be on its way: publish until it arrives (bounded).
  for i in $(seq 20); do
    mosquitto_pub -V "$v" -A 127.0.0.6 -p "$V2_PORT" -i "pp-pub-$v-$i" -q 1 -t "pp/$v" -m "via haproxy" 2>>"$W/pub.err" || true
    [ -s "$W/sub-$v.out" ] && break
    sleep 0.1
  done
  wait "$SUB" 2>/dev/null || true
  got=$(cat "$W/sub-$v.out")
  [ "$got" = "via haproxy" ] && pass "PROXY v2 (send-proxy-v2) to v1: message delivered (v$v)" \
    || fail "PROXY v2 to v1: message (v$v)" "got '$got' $(oneline <"$W/pub.err")"
  line=$(connected_line "pp-pub-$v-1" || true)
  case "$line" in
    *peer=127.0.0.6:*) pass "PROXY v2 (send-proxy-v2): Tern logs the client's address, not HAProxy's (v$v)" ;;
    *) fail "PROXY v2 (send-proxy-v2): client address (v$v)" "${line:-no connected line}" ;;
  esac
done

# TLS offloaded at HAProxy, which verifies the client certificate and passes its CN on.
mosquitto_pub -A 127.0.0.7 -p "$TLS_PORT" -h localhost --cafile "$W/certs/ca.pem" \
  --cert "$W/certs/client.pem" --key "$W/certs/client.key" -i pp-cert -u someone-else -t pp/cert -m x 2>"$W/cert.err" || true
line=$(connected_line pp-cert || true)
case "$line" in
  *'username="tern-client"'*peer=127.0.0.7:*) pass "PROXY v2 (send-proxy-v2-ssl-cn): the certificate CN from HAProxy is the user name, the client's address the peer" ;;
  *) fail "PROXY v2 SSL CN: user name and address" "${line:-no connected line} $(oneline <"$W/cert.err")" ;;
esac

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
