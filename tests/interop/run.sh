#!/usr/bin/env bash
# Interop: drives the broker with Mosquitto's command-line clients (v3.1.1 and v5, crossed) and
# a paho-mqtt script, and (Tern only) Prometheus, SIGHUP, HAProxy (PROXY protocol) and the status page in headless
# Chromium. Every wait is bounded (-W/-C on clients, bounded polling loops); the only fixed
# waits are the negative checks ("no will", "no $SYS before the reload"), where nothing is
# expected to happen.
# Prints "PASS name" / "FAIL name: why" per case and, last, "N passed, M failed" alone on a line.
#   TERN_BIN=path        broker binary (default: target/release/tern, built with cargo)
#   INTEROP_PORT=N       port to use (default: a free one)
#   INTEROP_EXTERNAL=1   a broker already listens on INTEROP_PORT (e.g. `mosquitto -p N`):
#                        don't start one; the Tern-only SIGTERM case is skipped
set -euo pipefail
cd "$(dirname "$0")/../.."

for tool in mosquitto_pub mosquitto_sub python3 stdbuf curl node; do
  command -v "$tool" >/dev/null || { echo "interop: $tool is not installed (see .ci/run)"; exit 2; }
done

if [ -n "${INTEROP_EXTERNAL:-}" ] && [ -z "${INTEROP_PORT:-}" ]; then
  echo "interop: INTEROP_EXTERNAL=1 needs INTEROP_PORT"; exit 2
fi
PORT=${INTEROP_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
[ -d tests/interop/js/node_modules/mqtt ] || {
  echo "interop: MQTT.js is not installed: npm ci --prefix tests/interop/js (see .ci/run)"; exit 2; }
# Tern's HTTP listener (/metrics, /health, /ready).
HTTP_PORT=${INTEROP_HTTP_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
WORK=$(mktemp -d)
RUN=$$ # makes topics and client ids unique to this run (matters with a reused external broker)
BROKER_PID=""
cleanup() {
  # The cluster case's NATS servers run in sessions of their own: stopped by their pid files.
  if [ -d "$WORK/nats" ]; then tests/cluster/nats.sh stop "$WORK/nats" >/dev/null 2>&1 || true; fi
  if [ -n "$BROKER_PID" ]; then
    kill "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
  fi
  local pid
  for pid in $(jobs -p); do kill "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PASSED=0
FAILED=0
pass() { echo "PASS $1"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL $1: $2"; FAILED=$((FAILED + 1)); }
finish() {
  echo "$PASSED passed, $FAILED failed"
  if [ "$FAILED" -eq 0 ]; then exit 0; fi
  exit 1
}

if [ -z "${INTEROP_EXTERNAL:-}" ]; then
  BIN=${TERN_BIN:-}
  if [ -z "$BIN" ]; then
    BIN=target/release/tern
    cargo build --release --bin tern # a no-op when the binary is up to date
  fi
  [ -x "$BIN" ] || { echo "interop: $BIN is not an executable"; exit 2; }
  # A TLS listener too, with development certificates from `tern gen-certs`.
  TLS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$BIN" gen-certs "$WORK/certs" >/dev/null
  MTLS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  printf '[[listeners]]\nkind = "tls"\nbind = "127.0.0.1"\nport = %s\ncert = "%s"\nkey = "%s"\n' \
    "$TLS_PORT" "$WORK/certs/server.pem" "$WORK/certs/server.key" >"$WORK/tern.toml"
  # Mutual TLS: client certificates from the same development CA, required.
  printf '[[listeners]]\nkind = "tls"\nbind = "127.0.0.1"\nport = %s\ncert = "%s"\nkey = "%s"\nclient_ca = "%s"\n' \
    "$MTLS_PORT" "$WORK/certs/server.pem" "$WORK/certs/server.key" "$WORK/certs/ca.pem" >>"$WORK/tern.toml"
  # WebSockets, plain and over TLS, on the default path /mqtt.
  WS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  WSS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  printf '[[listeners]]\nkind = "ws"\nbind = "127.0.0.1"\nport = %s\n' "$WS_PORT" >>"$WORK/tern.toml"
  printf '[[listeners]]\nkind = "wss"\nbind = "127.0.0.1"\nport = %s\ncert = "%s"\nkey = "%s"\n' \
    "$WSS_PORT" "$WORK/certs/server.pem" "$WORK/certs/server.key" >>"$WORK/tern.toml"
  # A declared queue, for the queue case.
  printf '[[queues]]\nname = "jobs"\nfilter = "interop-jobs/#"\n' >>"$WORK/tern.toml"
  "$BIN" --config "$WORK/tern.toml" --bind 127.0.0.1 --port "$PORT" --http-port "$HTTP_PORT" 2>"$WORK/broker.log" &
  BROKER_PID=$!
fi
up=0
for _ in $(seq 1 200); do # 20 s at most
  if (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null; then up=1; break; fi
  if [ -n "$BROKER_PID" ] && ! kill -0 "$BROKER_PID" 2>/dev/null; then break; fi
  sleep 0.1
done
if [ "$up" != 1 ]; then
  fail "broker listening on 127.0.0.1:$PORT" "nothing accepts connections"
  [ -n "$BROKER_PID" ] && tail -20 "$WORK/broker.log"
  finish
fi

P=(-h 127.0.0.1 -p "$PORT")

# start_sub NAME ARGS...: a background mosquitto_sub (-d) writing to $WORK/NAME.out; returns 0
# once its SUBACK arrived, so nothing published afterwards can be missed.
start_sub() {
  local name=$1; shift
  stdbuf -oL mosquitto_sub "${P[@]}" -d "$@" >"$WORK/$name.out" 2>&1 &
  echo $! >"$WORK/$name.pid"
  wait_line "$name" '^Client .* received SUBACK'
}
# wait_line NAME REGEX: waits (10 s at most) until the subscriber's output has a matching line.
wait_line() {
  local _
  for _ in $(seq 1 200); do
    grep -q -E "$2" "$WORK/$1.out" 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}
# stop_sub NAME: waits (10 s at most) for a subscriber with -C/-W to exit, then makes sure it did.
stop_sub() {
  local pid _; pid=$(cat "$WORK/$1.pid")
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
# pub ARGS...: mosquitto_pub that never aborts the script: a failure is noted, and the case's
# own check then fails on what was (not) received.
pub() {
  local rc=0
  mosquitto_pub "${P[@]}" "$@" 2>"$WORK/pub.err" || rc=$?
  [ "$rc" = 0 ] || echo "  note: mosquitto_pub $* exited $rc: $(head -c 300 "$WORK/pub.err" | tr '\n' ' ')"
}
# Message lines of a -d subscriber's output (libmosquitto's debug lines start with "Client ").
payloads() { grep -v -E '^(Client |Subscribed|Timed out|\s*$)' "$WORK/$1.out" || true; }
oneline() { tr '\n' '|' | sed 's/|$//'; }
# no_echo LABEL EDGE_PORT EDGE_FILTER CLOUD_PORT CLOUD_FILTER TOPIC REMOTE_TOPIC REMOTE_FENCE
#         LOCAL_FENCE: a broker bridged both ways. A message published on the edge at TOPIC
# reaches the cloud as REMOTE_TOPIC and does not come back: a fence published on the cloud at
# REMOTE_FENCE, behind any echo on the same link, is the edge subscriber's next and last
# message (as LOCAL_FENCE).
no_echo() {
  local label=$1 eport=$2 efilter=$3 cport=$4 cfilter=$5 topic=$6 rtopic=$7 rfence=$8 lfence=$9 got
  stdbuf -oL mosquitto_sub -h 127.0.0.1 -p "$eport" -d -t "$efilter" -q 1 -v >"$WORK/echo_edge.out" 2>&1 &
  echo $! >"$WORK/echo_edge.pid"
  stdbuf -oL mosquitto_sub -h 127.0.0.1 -p "$cport" -d -t "$cfilter" -q 1 -v -C 1 -W 10 >"$WORK/echo_cloud.out" 2>&1 &
  echo $! >"$WORK/echo_cloud.pid"
  if wait_line echo_edge '^Client .* received SUBACK' && wait_line echo_cloud '^Client .* received SUBACK'; then
    mosquitto_pub -h 127.0.0.1 -p "$eport" -t "$topic" -m hi -q 1 || true
    stop_sub echo_cloud
    mosquitto_pub -h 127.0.0.1 -p "$cport" -t "$rfence" -m end -q 1 || true
    wait_line echo_edge "^$lfence end" || true
    got=$(payloads echo_edge | oneline)
    if grep -q "^$rtopic hi" "$WORK/echo_cloud.out" && [ "$got" = "$topic hi|$lfence end" ]; then
      pass "$label"
    else
      fail "$label" "on the cloud: $(payloads echo_cloud | oneline); on the edge: $got"
    fi
  else
    fail "$label" "no SUBACK"
  fi
  stop_sub echo_cloud
  kill "$(cat "$WORK/echo_edge.pid")" 2>/dev/null || true
  wait "$(cat "$WORK/echo_edge.pid")" 2>/dev/null || true
}

# --- QoS 0/1/2, subscriber and publisher of either version. A marker published after the
# message bounds the wait and checks the count: exactly the message and the marker arrive.
for SV in mqttv311 mqttv5; do
  for PV in mqttv311 mqttv5; do
    for Q in 0 1 2; do
      n="qos$Q sub=$SV pub=$PV"
      base="interop-$RUN/$SV/$PV/$Q"
      if start_sub s -V "$SV" -t "$base/#" -q 2 -C 2 -W 10 -F '%t %q %p'; then
        pub -V "$PV" -t "$base/msg" -q "$Q" -m "hi $Q"
        pub -V "$PV" -t "$base/end" -q 1 -m end
        stop_sub s
        got=$(payloads s | sort | oneline)
        want=$(printf '%s\n' "$base/end 1 end" "$base/msg $Q hi $Q" | sort | oneline)
        [ "$got" = "$want" ] && pass "$n" || fail "$n" "got '$got', want '$want'"
      else
        fail "$n" "no SUBACK"; stop_sub s
      fi
    done
  done
done

for V in mqttv311 mqttv5; do
  # --- Retained: a new subscriber gets it (topic, payload, retain flag); an empty retained
  # payload clears it, so a later subscriber gets only the live marker published after SUBACK.
  t="retain-$RUN/$V"
  pub -V "$V" -t "$t" -r -q 1 -m kept
  got=$(mosquitto_sub "${P[@]}" -V "$V" -t "$t" -q 1 -C 1 -W 5 -v 2>&1 || true)
  [ "$got" = "$t kept" ] && pass "retained delivered to new subscriber, -v topic ($V)" \
    || fail "retained delivered ($V)" "got '$got'"
  got=$(mosquitto_sub "${P[@]}" -V "$V" -t "$t" -q 1 -C 1 -W 5 -F '%r %q %p' 2>&1 || true)
  [ "$got" = "1 1 kept" ] && pass "retained message has the retain flag ($V)" \
    || fail "retain flag ($V)" "got '$got', want '1 1 kept'"
  pub -V "$V" -t "$t" -r -q 1 -n
  if start_sub r -V "$V" -t "$t" -q 1 -C 1 -W 5 -F '%r %p'; then
    pub -V "$V" -t "$t" -q 1 -m live
    stop_sub r
    got=$(payloads r | oneline)
    [ "$got" = "0 live" ] && pass "retained cleared by empty retained payload ($V)" \
      || fail "retained cleared ($V)" "got '$got', want only '0 live'"
  else
    fail "retained cleared ($V)" "no SUBACK"; stop_sub r
  fi

  # --- Will: a client killed with SIGKILL (no DISCONNECT) triggers it.
  wt="will-$RUN/$V"
  if start_sub w -V "$V" -t "$wt" -q 1 -C 1 -W 10 -v; then
    if start_sub victim -V "$V" -i "victim-$RUN-$V" -t "idle-$RUN/$V" -k 60 \
        --will-topic "$wt" --will-payload gone --will-qos 1; then
      victim=$(cat "$WORK/victim.pid")
      kill -KILL "$victim"
      wait "$victim" 2>/dev/null || true
      stop_sub w
      got=$(payloads w | oneline)
      [ "$got" = "$wt gone" ] && pass "will published when client is killed ($V)" \
        || fail "will on abnormal close ($V)" "got '$got'"
    else
      fail "will on abnormal close ($V)" "client with will got no SUBACK"; stop_sub victim; stop_sub w
    fi
  else
    fail "will on abnormal close ($V)" "no SUBACK"; stop_sub w
  fi

  # --- No will after a normal DISCONNECT (libmosquitto's v5 DISCONNECT is the short E0 00).
  # Nothing is expected, so this is the one case that waits a fixed (short) time: -W 2.
  nt="nowill-$RUN/$V"
  if start_sub nw -V "$V" -t "$nt" -q 1 -C 1 -W 2 -v; then
    pub -V "$V" -t "other-$RUN/$V" -q 1 -m x \
      --will-topic "$nt" --will-payload bad --will-qos 1
    stop_sub nw
    got=$(payloads nw | oneline)
    [ -z "$got" ] && pass "no will after normal DISCONNECT ($V)" || fail "no will ($V)" "got '$got'"
  else
    fail "no will ($V)" "no SUBACK"; stop_sub nw
  fi

  # --- Persistent session: QoS 1 messages published while the client is offline are all
  # delivered, in order, when it reconnects with the same client id.
  id="persist-$RUN-$V"
  pt="persist-$RUN/$V"
  keep=(-c); [ "$V" = mqttv5 ] && keep=(-c -x 3600)
  if mosquitto_sub "${P[@]}" -V "$V" -i "$id" "${keep[@]}" -t "$pt" -q 1 -E -W 5 >/dev/null 2>&1; then
    for i in 1 2 3; do pub -V "$V" -t "$pt" -q 1 -m "m$i"; done
    got=$(mosquitto_sub "${P[@]}" -V "$V" -i "$id" "${keep[@]}" -t "$pt" -q 1 -C 3 -W 5 2>&1 | oneline || true)
    [ "$got" = "m1|m2|m3" ] && pass "persistent session gets offline QoS 1 messages ($V)" \
      || fail "persistent session ($V)" "got '$got', want 'm1|m2|m3'"
  else
    fail "persistent session ($V)" "first connection got no SUBACK"
  fi
  # Leave no session behind: a clean connection with the same id discards it.
  mosquitto_sub "${P[@]}" -V "$V" -i "$id" -t "$pt" -E -W 5 >/dev/null 2>&1 || true

  # --- '$SYS/#' does not match ordinary topics. The marker (subscribed separately, published
  # after the ordinary message by the same kind of client) bounds the wait.
  if start_sub sys -V "$V" -t "\$SYS/#" -t "sysmark-$RUN/$V" -q 1 -W 10 -v; then
    pub -V "$V" -t "plain-$RUN/$V" -q 1 -m plain
    pub -V "$V" -t "sysmark-$RUN/$V" -q 1 -m mark
    wait_line sys "^sysmark-$RUN/$V mark\$" || true
    kill "$(cat "$WORK/sys.pid")" 2>/dev/null || true
    stop_sub sys
    stray=$(payloads sys | grep -v -E "^(\\\$SYS/|sysmark-$RUN/$V mark\$)" | oneline || true)
    if ! grep -q -E "^sysmark-$RUN/$V mark\$" "$WORK/sys.out"; then
      fail "'\$SYS/#' matches only \$SYS topics ($V)" "marker never arrived"
    elif [ -n "$stray" ]; then
      fail "'\$SYS/#' matches only \$SYS topics ($V)" "got '$stray'"
    else
      pass "'\$SYS/#' does not receive ordinary topics ($V)"
    fi
  else
    fail "'\$SYS/#' matches only \$SYS topics ($V)" "no SUBACK"; stop_sub sys
  fi

  # --- '#' does not match $-topics: the $-topic is published first, so if it were delivered
  # it would be the one message counted. -R skips retained messages left by other clients.
  if start_sub d -V "$V" -t '#' -q 1 -R -C 1 -W 10 -v; then
    pub -V "$V" -t "\$test-$RUN/$V" -q 1 -m dollar
    pub -V "$V" -t "plain-$RUN/$V/x" -q 1 -m plain
    stop_sub d
    got=$(payloads d | oneline)
    [ "$got" = "plain-$RUN/$V/x plain" ] && pass "'#' does not receive \$-topics ($V)" \
      || fail "'#' and \$-topics ($V)" "got '$got'"
  else
    fail "'#' and \$-topics ($V)" "no SUBACK"; stop_sub d
  fi
done

# --- paho-mqtt: MQTT 5 features (and QoS 2 on both versions); its PASS/FAIL lines are counted.
if python3 -c 'import paho.mqtt.client as m; m.CallbackAPIVersion' 2>/dev/null; then
  status=0
  timeout 120 python3 tests/interop/paho_check.py 127.0.0.1 "$PORT" >"$WORK/paho.out" 2>&1 || status=$?
  cat "$WORK/paho.out"
  PASSED=$((PASSED + $(grep -c '^PASS' "$WORK/paho.out" || true)))
  FAILED=$((FAILED + $(grep -c '^FAIL' "$WORK/paho.out" || true)))
  if ! grep -q -E '^(PASS|FAIL)' "$WORK/paho.out"; then
    fail "paho" "script produced no result (exit $status)"
  elif [ "$status" != 0 ] && ! grep -q '^FAIL' "$WORK/paho.out"; then
    fail "paho" "script exited $status without a FAIL line"
  fi
else
  fail "paho" "paho-mqtt 2.x is not installed (pip install 'paho-mqtt>=2,<3')"
fi

# TLS (Tern only): mosquitto clients with --cafile, both ways between the TLS and TCP listeners.
if [ -n "$BROKER_PID" ]; then
  T=(-h localhost -p "$TLS_PORT" --cafile "$WORK/certs/ca.pem")
  if start_sub tls_sub "${T[@]}" -t "tls-$RUN/#" -q 1 -C 1 -W 10 -v; then
    mosquitto_pub "${P[@]}" -t "tls-$RUN/in" -q 1 -m "tcp to tls" || true
    stop_sub tls_sub
    if grep -q "tls-$RUN/in tcp to tls" "$WORK/tls_sub.out"; then
      pass "TLS: mosquitto_sub --cafile gets a message published over TCP"
    else
      fail "TLS subscriber" "$(tail -3 "$WORK/tls_sub.out")"
    fi
  else
    fail "TLS subscriber" "no SUBACK over TLS: $(tail -3 "$WORK/tls_sub.out")"
  fi
  if start_sub tcp_sub -t "tls-$RUN/out" -q 1 -C 1 -W 10 -v; then
    mosquitto_pub "${T[@]}" -t "tls-$RUN/out" -q 1 -m "tls to tcp" || true
    stop_sub tcp_sub
    if grep -q "tls-$RUN/out tls to tcp" "$WORK/tcp_sub.out"; then
      pass "TLS: mosquitto_pub --cafile reaches a TCP subscriber"
    else
      fail "TLS publisher" "$(tail -3 "$WORK/tcp_sub.out")"
    fi
  else
    fail "TLS publisher" "no SUBACK on TCP"
  fi
fi

# Mutual TLS (Tern only): with the client certificate it works; without one it is refused.
if [ -n "$BROKER_PID" ]; then
  M=(-h localhost -p "$MTLS_PORT" --cafile "$WORK/certs/ca.pem")
  C=(--cert "$WORK/certs/client.pem" --key "$WORK/certs/client.key")
  if start_sub mtls_sub "${M[@]}" "${C[@]}" -t "mtls-$RUN" -q 1 -C 1 -W 10 -v; then
    mosquitto_pub "${M[@]}" "${C[@]}" -t "mtls-$RUN" -q 1 -m "with certificate" || true
    stop_sub mtls_sub
    if grep -q "mtls-$RUN with certificate" "$WORK/mtls_sub.out"; then
      pass "mutual TLS: mosquitto_pub/sub with --cert/--key"
    else
      fail "mutual TLS" "$(tail -3 "$WORK/mtls_sub.out")"
    fi
  else
    fail "mutual TLS" "no SUBACK: $(tail -3 "$WORK/mtls_sub.out")"
  fi
  if mosquitto_pub "${M[@]}" -t "mtls-$RUN" -q 1 -m "no certificate" >"$WORK/nocert.out" 2>&1; then
    fail "mutual TLS without a client certificate" "accepted"
  else
    pass "mutual TLS: a client without a certificate is refused"
  fi
fi

# WebSockets (Tern only): MQTT.js, the browser client, under node, over ws:// and wss://, talking
# to mosquitto clients on TCP both ways.
# start_js NAME ARGS...: a background MQTT.js subscriber writing to $WORK/NAME.out; returns 0 once
# its SUBACK arrived.
start_js() {
  local name=$1; shift
  node tests/interop/js/mqttjs.js sub "$@" >"$WORK/$name.out" 2>&1 &
  echo $! >"$WORK/$name.pid"
  wait_line "$name" '^SUBSCRIBED'
}
if [ -n "$BROKER_PID" ]; then
  WS_URL="ws://127.0.0.1:$WS_PORT/mqtt"
  if start_sub ws_in -t "ws-$RUN/up" -q 1 -C 1 -W 10 -v; then
    node tests/interop/js/mqttjs.js pub "$WS_URL" "ws-$RUN/up" "from mqtt.js" >"$WORK/js_pub.out" 2>&1 || true
    stop_sub ws_in
    if grep -q "ws-$RUN/up from mqtt.js" "$WORK/ws_in.out"; then
      pass "WebSocket: MQTT.js publishes over ws:// to mosquitto_sub on TCP"
    else
      fail "MQTT.js publisher over ws://" "$(tail -3 "$WORK/js_pub.out" "$WORK/ws_in.out" | oneline)"
    fi
  else
    fail "MQTT.js publisher over ws://" "no SUBACK on TCP"
  fi
  for v in "" --v5; do
    if start_js "ws_out$v" "$WS_URL" "ws-$RUN/down$v" 1 $v; then
      pub -t "ws-$RUN/down$v" -q 1 -m "to mqtt.js"
      stop_sub "ws_out$v"
      if grep -q "ws-$RUN/down$v to mqtt.js" "$WORK/ws_out$v.out"; then
        pass "WebSocket: mosquitto_pub on TCP reaches an MQTT.js subscriber over ws:// (${v:-v3.1.1})"
      else
        fail "MQTT.js subscriber over ws:// ${v:-v3.1.1}" "$(tail -3 "$WORK/ws_out$v.out" | oneline)"
      fi
    else
      fail "MQTT.js subscriber over ws:// ${v:-v3.1.1}" "no SUBACK: $(tail -3 "$WORK/ws_out$v.out" | oneline)"
    fi
  done
  WSS_URL="wss://localhost:$WSS_PORT/mqtt"
  if start_js wss_out "$WSS_URL" "wss-$RUN" 1 --ca "$WORK/certs/ca.pem"; then
    pub -t "wss-$RUN" -q 1 -m "over wss"
    stop_sub wss_out
    if grep -q "wss-$RUN over wss" "$WORK/wss_out.out"; then
      pass "WebSocket over TLS: MQTT.js subscriber over wss:// (--ca) gets a TCP publish"
    else
      fail "MQTT.js over wss://" "$(tail -3 "$WORK/wss_out.out" | oneline)"
    fi
  else
    fail "MQTT.js over wss://" "no SUBACK: $(tail -3 "$WORK/wss_out.out" | oneline)"
  fi
fi

# Queues (Tern only): jobs published before any consumer wait in the declared queue `jobs` and
# reach the first mosquitto_sub on $queue/jobs in order; with a v5 and a v3.1.1 consumer, each
# later job reaches one of them, once; /metrics shows the queue's backlog identity.
if [ -n "$BROKER_PID" ]; then
  for i in 1 2 3 4 5 6; do pub -t "interop-jobs/$i" -m "job-$i" -q 1; done
  want=$(for i in 1 2 3 4 5 6; do echo "interop-jobs/$i job-$i"; done | oneline)
  if start_sub qa -t '$queue/jobs' -q 1 -V mqttv5 -v; then
    wait_line qa '^interop-jobs/6 job-6' || true
    got=$(payloads qa | oneline)
    if [ "$got" = "$want" ]; then
      pass "queue: 6 jobs waited for a consumer, then reached it in order"
    else
      fail "queue: jobs waiting for a consumer" "got '$got'"
    fi
    if start_sub qb -t '$queue/jobs' -q 1 -V mqttv311 -v; then
      for i in $(seq 7 26); do pub -t "interop-jobs/$i" -m "job-$i" -q 1; done
      for _ in $(seq 1 200); do
        [ $(($(payloads qa | wc -l) + $(payloads qb | wc -l))) -ge 26 ] && break
        sleep 0.05
      done
      a=$(($(payloads qa | wc -l) - 6)); b=$(payloads qb | wc -l)
      distinct=$( (payloads qa; payloads qb) | sort -u | wc -l)
      if [ $((a + b)) = 20 ] && [ "$distinct" = 26 ] && [ "$a" -gt 0 ] && [ "$b" -gt 0 ]; then
        pass "queue: 20 jobs shared by a v5 and a v3.1.1 consumer ($a and $b), each once"
      else
        fail "queue: jobs shared by two consumers" "v5 got $a, v3.1.1 got $b, $distinct distinct of 26"
      fi
    else
      fail "queue: second consumer" "no SUBACK"
    fi
    kill "$(cat "$WORK/qa.pid")" "$(cat "$WORK/qb.pid")" 2>/dev/null || true
    m() { grep "^$1{queue=\"jobs\"" "$WORK/qm.txt" | awk '{s+=$2} END {print s+0}'; }
    ok=""
    for _ in $(seq 1 100); do
      curl -sf "http://127.0.0.1:$HTTP_PORT/metrics" >"$WORK/qm.txt" || true
      produced=$(m tern_queue_produced_total); consumed=$(m tern_queue_consumed_total)
      rest=$(($(m tern_queue_dropped_total) + $(m tern_queue_messages) + $(m tern_queue_inflight)))
      if [ "$produced" = 26 ] && [ "$consumed" = 26 ] && [ "$rest" = 0 ]; then ok=1; break; fi
      sleep 0.05
    done
    if [ -n "$ok" ]; then
      pass "queue: /metrics produced 26 = consumed 26 + dropped + waiting + in flight 0"
    else
      fail "queue: /metrics backlog" "produced $produced, consumed $consumed, rest $rest"
    fi
  else
    fail "queue: consumer" "no SUBACK for \$queue/jobs"
  fi
fi

# Prometheus (Tern only): the exposition passes promtool's checks, and a real Prometheus server
# scrapes it and answers a query for a Tern series.
if [ -n "$BROKER_PID" ]; then
  if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
    fail "prometheus" "promtool/prometheus not installed (apt-get install prometheus; see .ci/run)"
  else
    if curl -sf "http://127.0.0.1:$HTTP_PORT/metrics" >"$WORK/metrics.txt" \
      && promtool check metrics <"$WORK/metrics.txt" >"$WORK/promtool.out" 2>&1; then
      pass "promtool check metrics: $(grep -c '^# TYPE tern_' "$WORK/metrics.txt") Tern metrics, no problems"
    else
      fail "promtool check metrics" "$(head -5 "$WORK/promtool.out" 2>/dev/null || echo 'no /metrics')"
    fi
    PROM_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    cat >"$WORK/prometheus.yml" <<YML
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: tern
    static_configs:
      - targets: ["127.0.0.1:$HTTP_PORT"]
YML
    prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/prom" \
      --web.listen-address="127.0.0.1:$PROM_PORT" >"$WORK/prometheus.log" 2>&1 &
    PROM_PID=$!
    found=""
    for _ in $(seq 1 300); do # 30 s at most
      if curl -sf "http://127.0.0.1:$PROM_PORT/api/v1/query?query=tern_uptime_seconds" >"$WORK/query.json" 2>/dev/null \
        && grep -q '"__name__":"tern_uptime_seconds"' "$WORK/query.json"; then
        found=1; break
      fi
      sleep 0.1
    done
    kill "$PROM_PID" 2>/dev/null || true
    wait "$PROM_PID" 2>/dev/null || true
    if [ -n "$found" ]; then
      pass "Prometheus $(prometheus --version 2>&1 | head -1 | awk '{print $3}') scrapes Tern: tern_uptime_seconds queryable"
    else
      fail "Prometheus scrape" "no tern_uptime_seconds after 30 s: $(tail -3 "$WORK/prometheus.log")"
    fi
  fi
  if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HTTP_PORT/ready")" = 200 ]; then
    pass "GET /ready: 200"
  else
    fail "GET /ready" "not 200"
  fi
fi

# SIGHUP on a second release broker started from a file with $SYS off: after the file turns
# $SYS on and the broker gets SIGHUP, $SYS/broker/uptime is published.
if [ -n "$BROKER_PID" ]; then
  HUP_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  printf '[listener]\nbind = "127.0.0.1"\nport = %s\n[http]\nenabled = false\n[sys]\ninterval_secs = 0\n' "$HUP_PORT" >"$WORK/hup.toml"
  "$BIN" --config "$WORK/hup.toml" 2>"$WORK/hup.log" &
  HUP_PID=$!
  for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$HUP_PORT") 2>/dev/null && break; sleep 0.1; done
  before=$(mosquitto_sub -h 127.0.0.1 -p "$HUP_PORT" -t '$SYS/broker/uptime' -C 1 -W 2 2>/dev/null || true)
  sed -i 's/^interval_secs = 0$/interval_secs = 1/' "$WORK/hup.toml"
  kill -HUP "$HUP_PID"
  after=$(mosquitto_sub -h 127.0.0.1 -p "$HUP_PORT" -t '$SYS/broker/uptime' -C 1 -W 10 2>/dev/null || true)
  if [ -z "$before" ] && [ -n "$after" ] && grep -q "configuration reloaded" "$WORK/hup.log"; then
    pass "SIGHUP reload: \$SYS turned on in the file is published ($after)"
  else
    fail "SIGHUP reload" "before: '$before', after: '$after', log: $(tail -2 "$WORK/hup.log")"
  fi
  kill "$HUP_PID" 2>/dev/null || true
  wait "$HUP_PID" 2>/dev/null || true
fi

# Authentication (Tern only): a password file made by mosquitto_passwd logs users into Tern, an
# ACL keeps a '#' subscriber to what it may read, and a file written by `tern passwd` logs users
# into Mosquitto 2.0.
if [ -n "$BROKER_PID" ]; then
  MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
  if ! command -v mosquitto_passwd >/dev/null || [ ! -x "$MOSQUITTO" ]; then
    fail "authentication" "mosquitto and mosquitto_passwd not installed (apt-get install mosquitto; see .ci/run)"
  else
    AUTH_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    mosquitto_passwd -c -b "$WORK/passwd" alice alice-pw
    mosquitto_passwd -b "$WORK/passwd" bob bob-pw
    printf 'user alice\ntopic readwrite alice/#\ntopic read public/#\nuser bob\ntopic write #\n' >"$WORK/acl"
    printf '[listener]\nbind = "127.0.0.1"\nport = %s\n[http]\nenabled = false\n[auth]\npassword_file = "%s"\nacl_file = "%s"\n' \
      "$AUTH_PORT" "$WORK/passwd" "$WORK/acl" >"$WORK/auth.toml"
    "$BIN" --config "$WORK/auth.toml" 2>"$WORK/auth.log" &
    AUTH_PID=$!
    for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$AUTH_PORT") 2>/dev/null && break; sleep 0.1; done
    A=(-h 127.0.0.1 -p "$AUTH_PORT")
    if mosquitto_pub "${A[@]}" -u alice -P alice-pw -t alice/x -m ok -q 1 2>"$WORK/auth1.err" \
      && ! mosquitto_pub "${A[@]}" -u alice -P wrong -t alice/x -m no 2>"$WORK/auth2.err" \
      && ! mosquitto_pub "${A[@]}" -t alice/x -m anonymous 2>"$WORK/auth3.err"; then
      pass "auth: a mosquitto_passwd file logs alice in; a wrong password and anonymous are refused ($(head -1 "$WORK/auth2.err" | tr -d '\n'); $(head -1 "$WORK/auth3.err" | tr -d '\n'))"
    else
      fail "auth: mosquitto_passwd file" "$(cat "$WORK/auth1.err" "$WORK/auth2.err" "$WORK/auth3.err" | oneline)"
    fi
    stdbuf -oL mosquitto_sub "${A[@]}" -u alice -P alice-pw -d -t '#' -q 1 -v -C 2 -W 10 >"$WORK/acl_sub.out" 2>&1 &
    echo $! >"$WORK/acl_sub.pid"
    if wait_line acl_sub '^Client .* received SUBACK'; then
      for t in private/y alice/x other/z public/z; do
        mosquitto_pub "${A[@]}" -u bob -P bob-pw -t "$t" -m "to $t" -q 1 || true
      done
      stop_sub acl_sub
      got=$(payloads acl_sub | oneline)
      if [ "$got" = "alice/x to alice/x|public/z to public/z" ]; then
        pass "auth: ACL: alice's '#' subscription gets only alice/x and public/z"
      else
        fail "auth: ACL filtering" "got '$got'"
      fi
    else
      fail "auth: ACL filtering" "no SUBACK: $(tail -3 "$WORK/acl_sub.out" | oneline)"
    fi
    kill "$AUTH_PID" 2>/dev/null || true
    wait "$AUTH_PID" 2>/dev/null || true
    # The other way round: `tern passwd` writes, Mosquitto reads.
    "$BIN" passwd -c -b "$WORK/tern-passwd" carol carol-pw
    MQ_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    printf 'listener %s 127.0.0.1\nallow_anonymous false\npassword_file %s\nuser root\n' "$MQ_PORT" "$WORK/tern-passwd" >"$WORK/mosquitto-auth.conf"
    "$MOSQUITTO" -c "$WORK/mosquitto-auth.conf" >"$WORK/mosquitto-auth.log" 2>&1 &
    MQ_PID=$!
    for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$MQ_PORT") 2>/dev/null && break; sleep 0.1; done
    if mosquitto_pub -h 127.0.0.1 -p "$MQ_PORT" -u carol -P carol-pw -t t -m ok 2>"$WORK/mq1.err" \
      && ! mosquitto_pub -h 127.0.0.1 -p "$MQ_PORT" -u carol -P wrong -t t -m no 2>/dev/null; then
      pass "auth: a tern passwd file logs carol into Mosquitto $("$MOSQUITTO" -h 2>/dev/null | head -1 | awk '{print $3}'); a wrong password is refused"
    else
      fail "auth: tern passwd file in Mosquitto" "$(cat "$WORK/mq1.err" | oneline); $(tail -3 "$WORK/mosquitto-auth.log" | oneline)"
    fi
    kill "$MQ_PID" 2>/dev/null || true
    wait "$MQ_PID" 2>/dev/null || true
  fi
fi

# Bridge (Tern only): a Tern edge bridged over TLS with a client certificate to a real
# Mosquitto that requires one, forwarding both ways with prefixes.
if [ -n "$BROKER_PID" ]; then
  MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
  if [ ! -x "$MOSQUITTO" ]; then
    fail "bridge to Mosquitto" "mosquitto not installed (apt-get install mosquitto; see .ci/run)"
  else
    CLOUD_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    CLOUD_TLS=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    EDGE_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    chmod 755 "$WORK" "$WORK/certs"; chmod 644 "$WORK/certs/server.key"
    cat >"$WORK/mosquitto-cloud.conf" <<CONF
user root
allow_anonymous true
listener $CLOUD_PORT 127.0.0.1
listener $CLOUD_TLS 127.0.0.1
cafile $WORK/certs/ca.pem
certfile $WORK/certs/server.pem
keyfile $WORK/certs/server.key
require_certificate true
CONF
    "$MOSQUITTO" -c "$WORK/mosquitto-cloud.conf" >"$WORK/mosquitto-cloud.log" 2>&1 &
    CLOUD_PID=$!
    # MQTT 5 (No Local on the remote subscription), then 3.1.1 (the bridge bit, which
    # Mosquitto answers with No Local for the bridge's subscriptions).
    for proto in 5 3.1.1; do
    site="site-v$proto"
    cat >"$WORK/edge.toml" <<TOML
[listener]
bind = "127.0.0.1"
port = $EDGE_PORT
[http]
enabled = false

[[bridge]]
name = "cloud"
protocol = "$proto"
client_id = "edge-v$proto"
addresses = ["127.0.0.1:$CLOUD_TLS"]
cafile = "$WORK/certs/ca.pem"
certfile = "$WORK/certs/client.pem"
keyfile = "$WORK/certs/client.key"
server_name = "localhost"
reconnect_min_ms = 100
reconnect_max_ms = 1000

[[bridge.topics]]
pattern = "telemetry/#"
direction = "out"
qos = 1
remote_prefix = "$site/"

[[bridge.topics]]
pattern = "cmd/#"
direction = "in"
qos = 1
remote_prefix = "$site/"

[[bridge.topics]]
pattern = "chat/#"
direction = "both"
qos = 1
remote_prefix = "$site/"
TOML
    "$BIN" --config "$WORK/edge.toml" 2>"$WORK/edge.log" &
    EDGE_PID=$!
    up=""
    for _ in $(seq 1 50); do
      up=$(mosquitto_sub -h 127.0.0.1 -p "$EDGE_PORT" -t '$SYS/broker/connection/cloud/state' -C 1 -W 1 2>/dev/null || true)
      [ "$up" = 1 ] && break
      sleep 0.2
    done
    if [ "$up" != 1 ]; then
      fail "bridge to Mosquitto over TLS (v$proto)" "not connected: $(grep -i bridge "$WORK/edge.log" | tail -2 | oneline); $(tail -2 "$WORK/mosquitto-cloud.log" | oneline)"
    else
      stdbuf -oL mosquitto_sub -h 127.0.0.1 -p "$CLOUD_PORT" -d -t "$site/telemetry/#" -q 1 -v -C 1 -W 10 >"$WORK/cloud_sub.out" 2>&1 &
      echo $! >"$WORK/cloud_sub.pid"
      if wait_line cloud_sub '^Client .* received SUBACK'; then
        mosquitto_pub -h 127.0.0.1 -p "$EDGE_PORT" -t telemetry/temp -m 21.5 -q 1 || true
        stop_sub cloud_sub
        if grep -q "$site/telemetry/temp 21.5" "$WORK/cloud_sub.out"; then
          pass "bridge (v$proto): edge telemetry/temp reaches Mosquitto as $site/telemetry/temp (TLS, client certificate)"
        else
          fail "bridge out to Mosquitto (v$proto)" "$(payloads cloud_sub | oneline)"
        fi
      else
        fail "bridge out to Mosquitto (v$proto)" "no SUBACK from Mosquitto"
      fi
      stdbuf -oL mosquitto_sub -h 127.0.0.1 -p "$EDGE_PORT" -d -t 'cmd/#' -q 1 -v -C 1 -W 10 >"$WORK/edge_sub.out" 2>&1 &
      echo $! >"$WORK/edge_sub.pid"
      if wait_line edge_sub '^Client .* received SUBACK'; then
        mosquitto_pub -h 127.0.0.1 -p "$CLOUD_PORT" -t "$site/cmd/reboot" -m now -q 1 || true
        stop_sub edge_sub
        if grep -q "cmd/reboot now" "$WORK/edge_sub.out"; then
          pass "bridge (v$proto): Mosquitto $site/cmd/reboot reaches the edge as cmd/reboot"
        else
          fail "bridge in from Mosquitto (v$proto)" "$(payloads edge_sub | oneline)"
        fi
      else
        fail "bridge in from Mosquitto (v$proto)" "no SUBACK from the edge"
      fi
      no_echo "bridge (v$proto): both ways with Mosquitto, nothing echoed back" \
        "$EDGE_PORT" 'chat/#' "$CLOUD_PORT" "$site/chat/#" chat/x "$site/chat/x" "$site/chat/fence" chat/fence
    fi
    kill "$EDGE_PID" 2>/dev/null || true
    wait "$EDGE_PID" 2>/dev/null || true
    done
    kill "$EDGE_PID" "$CLOUD_PID" 2>/dev/null || true
    wait "$EDGE_PID" "$CLOUD_PID" 2>/dev/null || true
  fi
fi

# Bridge (Tern only): a Mosquitto edge bridged `both` ways to Tern with Mosquitto's defaults,
# so it announces itself as a bridge (protocol level 0x84): accepted at once, and what it
# publishes does not come back to it (No Local for bridges, as Mosquitto gives them).
if [ -n "$BROKER_PID" ] && [ -x "${MOSQUITTO:-/nonexistent}" ]; then
  MEDGE_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat >"$WORK/mosquitto-edge.conf" <<CONF
user root
allow_anonymous true
listener $MEDGE_PORT 127.0.0.1
connection tern
address 127.0.0.1:$PORT
topic sensors/# both 1 "" gw2/
restart_timeout 1
CONF
  "$MOSQUITTO" -c "$WORK/mosquitto-edge.conf" >"$WORK/mosquitto-edge.log" 2>&1 &
  MEDGE_PID=$!
  up=""
  # Within the first attempt: a refused bridge bit would cost Mosquitto a retry.
  for _ in $(seq 1 20); do
    up=$(mosquitto_sub -h 127.0.0.1 -p "$MEDGE_PORT" -t '$SYS/broker/connection/+/state' -C 1 -W 1 2>/dev/null || true)
    [ "$up" = 1 ] && break
    sleep 0.1
  done
  if [ "$up" != 1 ]; then
    fail "Mosquitto bridge to Tern" "not connected: $(tail -3 "$WORK/mosquitto-edge.log" | oneline)"
  else
    no_echo "Mosquitto bridge (bridge bit) to Tern: both ways, nothing echoed back" \
      "$MEDGE_PORT" 'sensors/#' "$PORT" 'gw2/sensors/#' sensors/t gw2/sensors/t gw2/sensors/fence sensors/fence
  fi
  kill "$MEDGE_PID" 2>/dev/null || true
  wait "$MEDGE_PID" 2>/dev/null || true
fi

# --- Drop-in migration (Tern only): one mosquitto.conf (TLS, WebSockets, password and ACL
# files, a bridge) run unchanged by Mosquitto and by Tern, the same checks against both
# (tests/interop/mosquitto_conf.sh); its PASS/FAIL lines are counted.
if [ -z "${INTEROP_EXTERNAL:-}" ]; then
  status=0
  timeout 120 env TERN_BIN="$BIN" tests/interop/mosquitto_conf.sh >"$WORK/mosquitto_conf.out" 2>&1 || status=$?
  grep -E '^(PASS|FAIL|SKIP)' "$WORK/mosquitto_conf.out" | sed 's/^\(PASS\|FAIL\|SKIP\) /\1 mosquitto.conf: /' || true
  PASSED=$((PASSED + $(grep -c '^PASS' "$WORK/mosquitto_conf.out" || true)))
  FAILED=$((FAILED + $(grep -c '^FAIL' "$WORK/mosquitto_conf.out" || true)))
  if [ "$status" != 0 ] && ! grep -q '^FAIL' "$WORK/mosquitto_conf.out"; then
    fail "mosquitto.conf" "script exited $status: $(tail -3 "$WORK/mosquitto_conf.out" | oneline)"
  fi
fi

# --- PROXY protocol (Tern only): HAProxy in front (send-proxy, send-proxy-v2, TLS offloaded
# with send-proxy-v2-ssl-cn), Mosquitto's clients through it (tests/interop/haproxy.sh); its
# PASS/FAIL lines are counted.
if [ -z "${INTEROP_EXTERNAL:-}" ]; then
  status=0
  timeout 120 env TERN_BIN="$BIN" tests/interop/haproxy.sh >"$WORK/haproxy.out" 2>&1 || status=$?
  grep -E '^(PASS|FAIL|SKIP)' "$WORK/haproxy.out" || true
  PASSED=$((PASSED + $(grep -c '^PASS' "$WORK/haproxy.out" || true)))
  FAILED=$((FAILED + $(grep -c '^FAIL' "$WORK/haproxy.out" || true)))
  if [ "$status" != 0 ] && ! grep -q '^FAIL' "$WORK/haproxy.out"; then
    fail "PROXY protocol through HAProxy" "script exited $status: $(tail -3 "$WORK/haproxy.out" | oneline)"
  fi
fi

# --- Cluster (Tern only): three NATS servers (tests/cluster/nats.sh, pinned nats-server 2.15.1)
# and three nodes of this binary; Mosquitto clients on different nodes.
if [ -z "${INTEROP_EXTERNAL:-}" ]; then
  free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
  if NATS_PORT_BASE=auto tests/cluster/nats.sh start "$WORK/nats" >"$WORK/nats.urls" 2>"$WORK/nats.log"; then
    IFS=, read -r -a NATS_URLS <"$WORK/nats.urls"
    CPORT=()
    CPID=()
    for i in 0 1 2; do
      CPORT[$i]=$(free_port)
      printf '[listener]\nbind = "127.0.0.1"\nport = %s\n[http]\nport = %s\n[cluster]\nenabled = true\nname = "interop%s"\nnode_id = "i%s"\nnats_urls = ["%s"]\n' \
        "${CPORT[$i]}" "$(free_port)" "$RUN" "$i" "${NATS_URLS[$i]}" >"$WORK/node$i.toml"
      "$BIN" --config "$WORK/node$i.toml" 2>"$WORK/node$i.log" &
      CPID[$i]=$!
    done
    nodes_up=1
    for i in 0 1 2; do
      up=0
      for _ in $(seq 1 300); do # 30 s at most: a node listens once it has joined
        if (exec 3<>/dev/tcp/127.0.0.1/"${CPORT[$i]}") 2>/dev/null; then up=1; break; fi
        kill -0 "${CPID[$i]}" 2>/dev/null || break
        sleep 0.1
      done
      [ "$up" = 1 ] || { nodes_up=0; fail "cluster: node $i joined" "$(tail -3 "$WORK/node$i.log" | oneline)"; }
    done
    if [ "$nodes_up" = 1 ]; then
      P_SINGLE=("${P[@]}")
      # QoS 0, 1 and 2 from a 3.1.1 publisher on node 0 to a v5 subscriber on node 2: each once.
      P=(-h 127.0.0.1 -p "${CPORT[2]}")
      if start_sub cl-sub -V mqttv5 -t "cl-$RUN/#" -q 2 -C 4 -W 20 -v; then
        P=(-h 127.0.0.1 -p "${CPORT[0]}")
        for q in 0 1 2; do pub -V mqttv311 -t "cl-$RUN/q$q" -m "m$q" -q "$q"; done
        pub -V mqttv311 -t "cl-$RUN/end" -m end -q 1
        stop_sub cl-sub
        got=$(payloads cl-sub | sort | oneline)
        want="cl-$RUN/end end|cl-$RUN/q0 m0|cl-$RUN/q1 m1|cl-$RUN/q2 m2"
        if [ "$got" = "$want" ]; then
          pass "cluster: QoS 0/1/2 from a 3.1.1 client on one node to a v5 client on another, once each"
        else
          fail "cluster: delivery across nodes" "got '$got', want '$want'"
        fi
      else
        fail "cluster: delivery across nodes" "no SUBACK"; stop_sub cl-sub
      fi
      # A retained message set on node 1 is there for a new subscriber on node 0, then deleted
      # on node 2 is gone from node 0.
      P=(-h 127.0.0.1 -p "${CPORT[1]}")
      pub -V mqttv5 -t "cl-ret-$RUN" -m kept -r -q 1
      P=(-h 127.0.0.1 -p "${CPORT[0]}")
      got=$(mosquitto_sub "${P[@]}" -t "cl-ret-$RUN" -C 1 -W 10 -F '%r %p' 2>&1 || true)
      P=(-h 127.0.0.1 -p "${CPORT[2]}")
      pub -V mqttv311 -t "cl-ret-$RUN" -n -r -q 1
      P=(-h 127.0.0.1 -p "${CPORT[0]}")
      # Nothing is expected: a bounded negative wait.
      gone=$(mosquitto_sub "${P[@]}" -t "cl-ret-$RUN" -C 1 -W 2 -F '%r %p' 2>&1 || true)
      if [ "$got" = "1 kept" ] && [ "$gone" = "Timed out" ]; then
        pass "cluster: retained message set, seen and deleted from different nodes"
      else
        fail "cluster: retained across nodes" "after set: '$got', after delete: '$gone'"
      fi
      # The same client id on another node takes the client over: v5 DISCONNECT 0x8E (142).
      P=(-h 127.0.0.1 -p "${CPORT[0]}")
      if start_sub cl-tk1 -V mqttv5 -i "cltk-$RUN" -t "cl-tk-$RUN" -W 20; then
        P=(-h 127.0.0.1 -p "${CPORT[1]}")
        mosquitto_sub "${P[@]}" -V mqttv5 -i "cltk-$RUN" -t "cl-tk-$RUN" -W 3 >/dev/null 2>&1 &
        if wait_line cl-tk1 'Received DISCONNECT \(142\)'; then
          pass "cluster: a CONNECT on another node takes the client over (DISCONNECT 0x8E)"
        else
          fail "cluster: takeover across nodes" "$(tail -3 "$WORK/cl-tk1.out" | oneline)"
        fi
      else
        fail "cluster: takeover across nodes" "no SUBACK"
      fi
      kill "$(cat "$WORK/cl-tk1.pid")" 2>/dev/null || true
      # A persistent session made on node 0 (3.1.1 clean session 0), a QoS 1 message published
      # on node 1 while its client is away, the client back on node 2: the message is there.
      P=(-h 127.0.0.1 -p "${CPORT[0]}")
      mosquitto_sub "${P[@]}" -V mqttv311 -i "clps-$RUN" -c -q 1 -t "cl-ps-$RUN" -E -W 10 >/dev/null 2>&1 || true
      P=(-h 127.0.0.1 -p "${CPORT[1]}")
      pub -V mqttv5 -t "cl-ps-$RUN" -m queued -q 1
      P=(-h 127.0.0.1 -p "${CPORT[2]}")
      got=$(mosquitto_sub "${P[@]}" -V mqttv311 -i "clps-$RUN" -c -q 1 -t "cl-ps-$RUN" -C 1 -W 10 2>&1 || true)
      if [ "$got" = "queued" ]; then
        pass "cluster: a persistent session made on one node resumed on another, with its queued message"
      else
        fail "cluster: session resumed across nodes" "got '$got', want 'queued'"
      fi
      P=("${P_SINGLE[@]}")
    fi
    for pid in "${CPID[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    tests/cluster/nats.sh stop "$WORK/nats" >/dev/null 2>&1 || true
  else
    fail "cluster: NATS servers started" "$(tail -3 "$WORK/nats.log" | oneline)"
  fi
fi

# Status page (Tern only): tests/interop/status_page.sh starts brokers of its own (admin API on,
# then off) and drives GET / in Debian's headless Chromium with playwright-core; its PASS/FAIL
# lines are counted here.
if [ -z "${INTEROP_EXTERNAL:-}" ]; then
  status=0
  TERN_BIN="$BIN" timeout 300 tests/interop/status_page.sh >"$WORK/page.out" 2>&1 || status=$?
  grep -v -E '^[0-9]+ passed, [0-9]+ failed$' "$WORK/page.out" || true
  PASSED=$((PASSED + $(grep -c '^PASS' "$WORK/page.out" || true)))
  FAILED=$((FAILED + $(grep -c '^FAIL' "$WORK/page.out" || true)))
  if [ "$status" != 0 ] && ! grep -q '^FAIL' "$WORK/page.out"; then
    fail "status page" "status_page.sh exited $status without a FAIL line"
  fi
fi

if [ -n "$BROKER_PID" ]; then
  if ! kill -0 "$BROKER_PID" 2>/dev/null; then
    fail "broker alive after all cases" "the broker died during the run"
    tail -20 "$WORK/broker.log"
  elif start_sub bye -V mqttv5 -t "bye-$RUN" -q 1 -W 20; then
    # SIGTERM: v5 clients get DISCONNECT 0x8B (139, server shutting down) and the broker exits 0.
    kill -TERM "$BROKER_PID"
    status=0
    for _ in $(seq 1 100); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$BROKER_PID" 2>/dev/null; then
      status="still running 10 s after SIGTERM"
    else
      wait "$BROKER_PID" || status=$?
      BROKER_PID=""
    fi
    stop_sub bye
    if [ "$status" = 0 ] && grep -q "Received DISCONNECT (139)" "$WORK/bye.out"; then
      pass "SIGTERM: DISCONNECT 0x8B to v5 clients, exit 0"
    else
      fail "SIGTERM shutdown" "exit $status, subscriber saw: $(grep DISCONNECT "$WORK/bye.out" || echo nothing)"
    fi
  else
    fail "SIGTERM shutdown" "no SUBACK"; stop_sub bye
  fi
fi
finish
