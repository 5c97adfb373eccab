#!/usr/bin/env bash
# Drop-in migration: one mosquitto.conf (TLS with client certificates as user names, a
# password file, an ACL file, a WebSocket listener, a bridge) runs unchanged under Mosquitto
# (/usr/sbin/mosquitto -c FILE) and under Tern (tern --config FILE), each on its own ports (the
# file is generated twice from one template, only the port numbers differ), and the same
# checks with Mosquitto's clients (and paho-mqtt over WebSockets) pass against both. Every wait
# is bounded; the whole case takes a few seconds per broker.
# Prints "PASS name" / "FAIL name: why" per check and, last, "N passed, M failed".
#   TERN_BIN=path     Tern binary (default: target/release/tern, built with cargo)
#   MOSQUITTO=path    Mosquitto broker (default: /usr/sbin/mosquitto; skipped when absent)
set -euo pipefail
cd "$(dirname "$0")/../.."

for tool in mosquitto_pub mosquitto_sub python3 stdbuf; do
  command -v "$tool" >/dev/null || { echo "mosquitto_conf: $tool is not installed"; exit 2; }
done
BIN=${TERN_BIN:-}
if [ -z "$BIN" ]; then
  BIN=target/release/tern
  cargo build --release --bin tern
fi
MOSQUITTO=${MOSQUITTO:-/usr/sbin/mosquitto}
W=$(mktemp -d)
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PASSED=0
FAILED=0
pass() { echo "PASS $1"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL $1: $2"; FAILED=$((FAILED + 1)); }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
oneline() { tr '\n' '|' | sed 's/|$//'; }
# wait_port PORT PID: until something accepts on 127.0.0.1:PORT (10 s at most, or PID exits).
wait_port() {
  local _
  for _ in $(seq 1 100); do
    (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
# wait_suback FILE: until a -d subscriber writing FILE has its SUBACK (5 s at most).
wait_suback() {
  local _
  for _ in $(seq 1 100); do
    grep -q 'received SUBACK' "$1" 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}
# Message lines of a -d subscriber's output.
messages() { grep -v -E '^(Client |Subscribed|Timed out|\s*$)' "$1" || true; }

"$BIN" gen-certs "$W/certs" >/dev/null
"$BIN" passwd -c -b "$W/passwd" alice secret
cat >"$W/acl" <<'ACL'
# Anonymous clients: nothing.
user alice
topic readwrite mig/#
topic read ro/#
user tern-client
topic readwrite mig/#
ACL
# Mosquitto started as root reads its files as the user mosquitto.
chmod 755 "$W" "$W/certs"
chmod 644 "$W"/passwd "$W"/acl "$W"/certs/*
# The upstream the bridges forward to: a plain Mosquitto (or Tern) on its own port.
UP=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$UP" >"$W/upstream.conf"
if [ -x "$MOSQUITTO" ]; then
  "$MOSQUITTO" -c "$W/upstream.conf" >"$W/upstream.log" 2>&1 &
else
  "$BIN" --config "$W/upstream.conf" --http-port 0 >"$W/upstream.log" 2>&1 &
fi
PIDS+=($!)
wait_port "$UP" "${PIDS[-1]}" || { fail "upstream broker" "$(tail -3 "$W/upstream.log" | oneline)"; }

# The one configuration, ports left as @TCP@, @TLS@, @WS@, @UP@.
cat >"$W/template.conf" <<CONF
# A Mosquitto 2.0 configuration, as an installation would have it.
per_listener_settings false
allow_anonymous false
password_file $W/passwd
acl_file $W/acl
persistence false
log_dest stderr
log_type error
log_type warning
log_type notice
max_queued_messages 1000

listener @TCP@ 127.0.0.1

listener @TLS@ 127.0.0.1
cafile $W/certs/ca.pem
certfile $W/certs/server.pem
keyfile $W/certs/server.key
require_certificate true
use_identity_as_username true

listener @WS@ 127.0.0.1
protocol websockets

connection upstream
address 127.0.0.1:@UP@
remote_clientid @NAME@-edge
cleansession true
restart_timeout 1
topic mig/# out 1 "" site/
CONF

# checks NAME TCP TLS WS: the same checks against a broker running the file.
checks() {
  local name=$1 tcp=$2 tls=$3 ws=$4 got out
  local P=(-h 127.0.0.1 -p "$tcp")
  local A=(-u alice -P secret)
  local T=(-h localhost -p "$tls" --cafile "$W/certs/ca.pem")
  # Anonymous and wrong passwords are refused (allow_anonymous false, password_file).
  if mosquitto_pub "${P[@]}" -t mig/x -m x 2>/dev/null; then
    fail "$name: anonymous refused" "published without credentials"
  else pass "$name: anonymous refused"; fi
  if mosquitto_pub "${P[@]}" -u alice -P wrong -t mig/x -m x 2>/dev/null; then
    fail "$name: wrong password refused" "published with a wrong password"
  else pass "$name: wrong password refused"; fi
  # A password login publishes and subscribes where the ACL lets it; ro/# is read-only.
  out="$W/$name-sub.out"
  stdbuf -oL mosquitto_sub "${P[@]}" "${A[@]}" -d -v -q 1 -t 'mig/#' -t 'ro/#' -C 2 -W 5 >"$out" 2>&1 &
  local sub=$!
  if wait_suback "$out"; then
    mosquitto_pub "${P[@]}" "${A[@]}" -q 1 -t ro/x -m denied || true
    mosquitto_pub "${P[@]}" "${A[@]}" -q 1 -t mig/tcp -m hello || true
    # The TLS listener: the client certificate names the user (tern-client), no password.
    mosquitto_pub "${T[@]}" --cert "$W/certs/client.pem" --key "$W/certs/client.key" -q 1 -t mig/tls -m cert || true
    wait "$sub" || true
    got=$(messages "$out" | oneline)
    [ "$got" = "mig/tcp hello|mig/tls cert" ] && pass "$name: password and certificate logins, ACL (ro/# not writable)" \
      || fail "$name: logins and ACL" "got '$got', want 'mig/tcp hello|mig/tls cert'"
  else
    fail "$name: logins and ACL" "no SUBACK: $(oneline <"$out")"; kill "$sub" 2>/dev/null || true
  fi
  if mosquitto_pub "${T[@]}" -q 1 -t mig/x -m x 2>/dev/null; then
    fail "$name: TLS without a client certificate refused" "published"
  else pass "$name: TLS without a client certificate refused"; fi
  # WebSockets (paho-mqtt), as alice, on /mqtt and on another path (Mosquitto serves every
  # path); a TCP subscriber gets both.
  out="$W/$name-ws.out"
  stdbuf -oL mosquitto_sub "${P[@]}" "${A[@]}" -d -v -q 1 -t 'mig/ws' -C 2 -W 5 >"$out" 2>&1 &
  sub=$!
  if wait_suback "$out"; then
    python3 - "$ws" <<'PY' || true
import sys, paho.mqtt.client as mqtt
for path in ["/mqtt", "/any/path"]:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ws-pub", transport="websockets")
    c.ws_set_options(path=path)
    c.username_pw_set("alice", "secret")
    c.connect("127.0.0.1", int(sys.argv[1]), 30)
    c.loop_start()
    c.publish("mig/ws", path.encode(), qos=1).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()
PY
    wait "$sub" || true
    got=$(messages "$out" | oneline)
    [ "$got" = "mig/ws /mqtt|mig/ws /any/path" ] && pass "$name: WebSocket listener, any path" \
      || fail "$name: WebSocket listener" "got '$got'"
  else
    fail "$name: WebSocket listener" "no SUBACK"; kill "$sub" 2>/dev/null || true
  fi
  # The bridge: mig/# goes out to the upstream under site/.
  out="$W/$name-up.out"
  stdbuf -oL mosquitto_sub -h 127.0.0.1 -p "$UP" -d -v -q 1 -t "site/mig/bridged-$name" -C 1 -W 8 >"$out" 2>&1 &
  sub=$!
  if wait_suback "$out"; then
    # Until the link is up the message may wait in the bridge's queue: sent once, it arrives.
    mosquitto_pub "${P[@]}" "${A[@]}" -q 1 -t "mig/bridged-$name" -m up || true
    wait "$sub" || true
    got=$(messages "$out" | oneline)
    [ "$got" = "site/mig/bridged-$name up" ] && pass "$name: bridge forwards out under the remote prefix" \
      || fail "$name: bridge" "got '$got'"
  else
    fail "$name: bridge" "no SUBACK on the upstream"; kill "$sub" 2>/dev/null || true
  fi
}

# run NAME COMMAND...: generates NAME's file, starts COMMAND FILE, runs the checks, stops it.
run() {
  local name=$1; shift
  local tcp tls ws pid
  tcp=$(free_port); tls=$(free_port); ws=$(free_port)
  sed -e "s/@TCP@/$tcp/; s/@TLS@/$tls/; s/@WS@/$ws/; s/@UP@/$UP/; s/@NAME@/$name/" \
    "$W/template.conf" >"$W/$name.conf"
  "$@" "$W/$name.conf" >"$W/$name.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  if wait_port "$tcp" "$pid" && wait_port "$tls" "$pid" && wait_port "$ws" "$pid"; then
    checks "$name" "$tcp" "$tls" "$ws"
  else
    fail "$name: broker started from the file" "$(tail -5 "$W/$name.log" | oneline)"
  fi
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

if [ -x "$MOSQUITTO" ]; then
  run mosquitto "$MOSQUITTO" -c
else
  echo "SKIP mosquitto: $MOSQUITTO is not installed (the same checks run against Tern only)"
fi
run tern "$BIN" --http-port 0 --config
# Tern said on stderr what it does differently, naming the file and line: here only the
# bridge's state topic; nothing is unsupported or invalid.
if grep -q -E 'tern: .*: (error|invalid):' "$W/tern.log"; then
  fail "tern: nothing in this file is unsupported" "$(grep -E 'tern: ' "$W/tern.log" | head -3 | oneline)"
elif grep -q -E "tern: $W/tern.conf line [0-9]+: warning: \`connection upstream\`" "$W/tern.log"; then
  pass "tern: nothing in this file is unsupported; the warning names the file and line"
else
  fail "tern: warnings" "$(grep -E 'tern: ' "$W/tern.log" | head -3 | oneline)"
fi
# import-mosquitto prints TOML that Tern runs as it is.
if "$BIN" import-mosquitto "$W/tern.conf" >"$W/imported.toml" 2>"$W/import.err" \
  && "$BIN" --config "$W/imported.toml" check-config >/dev/null 2>&1; then
  pass "import-mosquitto: the printed TOML is a valid Tern configuration"
else
  fail "import-mosquitto" "$(head -3 "$W/import.err" | oneline)"
fi

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
