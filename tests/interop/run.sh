#!/usr/bin/env bash
# Interop: drives the release binary with Mosquitto's command-line clients (v3.1.1 and v5) and
# a paho-mqtt script. Every wait is bounded. Prints PASS/FAIL per case and "N passed, M failed".
#   TERN_BIN=path        broker binary (default: target/release/tern, built if missing)
#   INTEROP_PORT=N       port to use (default: a free one)
#   INTEROP_EXTERNAL=1   a broker already listens on INTEROP_PORT: don't start one
set -euo pipefail
cd "$(dirname "$0")/../.."

for tool in mosquitto_pub mosquitto_sub python3; do
  command -v "$tool" >/dev/null || { echo "interop: $tool is not installed (see .ci/run)"; exit 2; }
done

PORT=${INTEROP_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
WORK=$(mktemp -d)
BROKER_PID=""
cleanup() {
  [ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null && wait "$BROKER_PID" 2>/dev/null || true
  jobs -p | xargs -r kill 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ -z "${INTEROP_EXTERNAL:-}" ]; then
  BIN=${TERN_BIN:-target/release/tern}
  [ -x "$BIN" ] || cargo build --release --bin tern
  "$BIN" --bind 127.0.0.1 --port "$PORT" 2>"$WORK/broker.log" &
  BROKER_PID=$!
fi
for _ in $(seq 1 100); do
  (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break
  sleep 0.1
done

PASSED=0
FAILED=0
pass() { echo "PASS $1"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL $1: $2"; FAILED=$((FAILED + 1)); }
P=(-h 127.0.0.1 -p "$PORT")

# Starts a background subscriber writing to $WORK/$name.out; returns once its SUBACK arrived
# (seen in -d debug output), so a publish after it cannot be missed.
start_sub() {
  local name=$1; shift
  stdbuf -oL mosquitto_sub "${P[@]}" -d "$@" >"$WORK/$name.out" 2>&1 &
  echo $! >"$WORK/$name.pid"
  for _ in $(seq 1 100); do
    grep -q "SUBACK" "$WORK/$name.out" 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}
# Waits for a background subscriber to exit (it has -C/-W), bounded.
wait_sub() {
  local pid; pid=$(cat "$WORK/$1.pid")
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
# Payload lines of a -d subscriber's output (debug lines start with "Client ").
payloads() { grep -v -E '^(Client |Subscribed|Timed out|\s*$)' "$WORK/$1.out" || true; }

for SV in mqttv311 mqttv5; do
  for PV in mqttv311 mqttv5; do
    for Q in 0 1 2; do
      n="qos$Q sub=$SV pub=$PV"
      t="interop/$SV/$PV/$Q"
      if start_sub s -V "$SV" -t "interop/$SV/$PV/#" -q 2 -C 1 -W 10 -v; then
        mosquitto_pub "${P[@]}" -V "$PV" -t "$t" -q "$Q" -m "hello $Q"
        wait_sub s
        got=$(payloads s)
        [ "$got" = "$t hello $Q" ] && pass "$n" || fail "$n" "got '$got'"
      else
        fail "$n" "no SUBACK"
      fi
    done
  done
done

for V in mqttv311 mqttv5; do
  t="retain/$V"
  mosquitto_pub "${P[@]}" -V "$V" -t "$t" -r -q 1 -m kept
  got=$(mosquitto_sub "${P[@]}" -V "$V" -t "retain/$V/#" -t "$t" -C 1 -W 5 -v -F '%t %p %r' || true)
  [ "$got" = "$t kept 1" ] && pass "retained delivered with retain flag ($V)" || fail "retained ($V)" "got '$got'"
  mosquitto_pub "${P[@]}" -V "$V" -t "$t" -r -q 1 -n
  got=$(mosquitto_sub "${P[@]}" -V "$V" -t "$t" -C 1 -W 2 2>/dev/null || true)
  [ -z "$got" ] && pass "retained cleared by empty payload ($V)" || fail "retained cleared ($V)" "got '$got'"

  # Will: a client killed without DISCONNECT triggers it; a normal disconnect does not.
  if start_sub w -V "$V" -t "will/$V" -q 1 -C 1 -W 10; then
    if start_sub victim -V "$V" -t "idle/$V" -k 60 --will-topic "will/$V" --will-payload gone --will-qos 1; then
      victim=$(cat "$WORK/victim.pid")
      kill -9 "$victim"
      wait "$victim" 2>/dev/null || true
    fi
    wait_sub w
    [ "$(payloads w)" = "gone" ] && pass "will on abnormal close ($V)" || fail "will ($V)" "got '$(payloads w)'"
  else
    fail "will ($V)" "no SUBACK"
  fi
  if start_sub nw -V "$V" -t "nowill/$V" -q 1 -C 1 -W 2; then
    mosquitto_pub "${P[@]}" -V "$V" -t "other/$V" -m x --will-topic "nowill/$V" --will-payload bad --will-qos 1
    wait_sub nw
    [ -z "$(payloads nw)" ] && pass "no will on normal DISCONNECT ($V)" || fail "no will ($V)" "got '$(payloads nw)'"
  else
    fail "no will ($V)" "no SUBACK"
  fi

  # Persistent session: offline QoS 1 messages are delivered on reconnect.
  id="persist-$V"
  extra=(); [ "$V" = mqttv5 ] && extra=(-x 3600)
  mosquitto_sub "${P[@]}" -V "$V" -i "$id" -c "${extra[@]}" -t "persist/$V" -q 1 -C 1 -W 1 >/dev/null 2>&1 || true
  for i in 1 2 3; do mosquitto_pub "${P[@]}" -V "$V" -t "persist/$V" -q 1 -m "m$i"; done
  got=$(mosquitto_sub "${P[@]}" -V "$V" -i "$id" -c "${extra[@]}" -t "persist/$V" -q 1 -C 3 -W 5 | tr '\n' ' ' || true)
  [ "$got" = "m1 m2 m3 " ] && pass "persistent session queues offline QoS 1 ($V)" || fail "persistent session ($V)" "got '$got'"

  # $-topics are not matched by '#'.
  if start_sub d -V "$V" -t '#' -C 1 -W 3 -v; then
    mosquitto_pub "${P[@]}" -V "$V" -t "\$test/$V" -m dollar
    mosquitto_pub "${P[@]}" -V "$V" -t "plain/$V" -m plain
    wait_sub d
    [ "$(payloads d)" = "plain/$V plain" ] && pass "'#' does not match \$-topics ($V)" || fail "\$-topics ($V)" "got '$(payloads d)'"
  else
    fail "\$-topics ($V)" "no SUBACK"
  fi
done

if python3 -c 'import paho.mqtt' 2>/dev/null; then
  set +e
  python3 tests/interop/paho_check.py 127.0.0.1 "$PORT" >"$WORK/paho.out" 2>&1
  set -e
  cat "$WORK/paho.out"
  PASSED=$((PASSED + $(grep -c '^PASS' "$WORK/paho.out" || true)))
  FAILED=$((FAILED + $(grep -c '^FAIL' "$WORK/paho.out" || true)))
  grep -q -E '^(PASS|FAIL)' "$WORK/paho.out" || { echo "FAIL paho: script produced no result"; FAILED=$((FAILED + 1)); }
else
  echo "FAIL paho: paho-mqtt is not installed (pip install 'paho-mqtt>=2,<3')"
  FAILED=$((FAILED + 1))
fi

if [ -n "$BROKER_PID" ]; then
  if ! kill -0 "$BROKER_PID" 2>/dev/null; then
    echo "FAIL broker: the broker died during the run"; FAILED=$((FAILED + 1))
    tail -20 "$WORK/broker.log"
  elif start_sub bye -V mqttv5 -t bye -q 1; then
    # SIGTERM: v5 clients get DISCONNECT 0x8B (139) and the broker exits 0.
    kill -TERM "$BROKER_PID"
    status=0
    for _ in $(seq 1 100); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
    wait "$BROKER_PID" || status=$?
    BROKER_PID=""
    wait_sub bye
    if [ "$status" = 0 ] && grep -q "Received DISCONNECT (139)" "$WORK/bye.out"; then
      pass "SIGTERM: DISCONNECT 0x8B to v5 clients, exit 0"
    else
      fail "SIGTERM shutdown" "exit $status, subscriber saw: $(grep DISCONNECT "$WORK/bye.out" || echo nothing)"
    fi
  else
    fail "SIGTERM shutdown" "no SUBACK"
  fi
fi
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
