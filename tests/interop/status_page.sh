#!/usr/bin/env bash
# The status page (GET / of the HTTP listener) in a real headless Chromium: Debian's
# /usr/bin/chromium driven by playwright-core (tests/interop/js/status_page.js), against two
# release brokers of its own: one with the admin API on (a token file, a TLS listener, the queue
# `jobs`) and MQTT.js clients connected, then one with the API off. Called by run.sh; runs alone
# too. Every wait is bounded. Prints "PASS ..." / "FAIL ...: why" per step and, last,
# "N passed, M failed" alone on a line.
#   TERN_BIN=path                      broker binary (default: target/release/tern, built first)
#   SCREENSHOT=docs/status-page.png    also writes a screenshot of the whole page, 1000 px wide,
#                                      with a few clients (the README's picture)
set -euo pipefail
cd "$(dirname "$0")/../.."

PASSED=0
FAILED=0
finish() {
  echo "$PASSED passed, $FAILED failed"
  if [ "$FAILED" -eq 0 ]; then exit 0; fi
  exit 1
}
missing() { echo "FAIL status page: $1"; FAILED=$((FAILED + 1)); finish; }
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
[ -x "$CHROMIUM" ] || missing "$CHROMIUM is not installed (apt-get install chromium; see .ci/run)"
for tool in node curl python3; do
  command -v "$tool" >/dev/null || missing "$tool is not installed (see .ci/run)"
done
if [ ! -d tests/interop/js/node_modules/playwright-core ] || [ ! -d tests/interop/js/node_modules/mqtt ]; then
  missing "playwright-core or MQTT.js is not installed: npm ci --prefix tests/interop/js (see .ci/run)"
fi

BIN=${TERN_BIN:-}
if [ -z "$BIN" ]; then
  BIN=target/release/tern
  cargo build --release --bin tern # a no-op when the binary is up to date
fi
[ -x "$BIN" ] || missing "$BIN is not an executable"
SHOT=""
if [ -n "${SCREENSHOT:-}" ]; then
  mkdir -p "$(dirname "$SCREENSHOT")"
  SHOT=$(cd "$(dirname "$SCREENSHOT")" && pwd)/$(basename "$SCREENSHOT")
fi

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start NAME CONFIG MQTT_PORT HTTP_PORT: a broker; returns 0 once it accepts MQTT connections
# and its HTTP listener answers /health (20 s at most).
start() {
  local name=$1 config=$2 port=$3 http=$4 _
  "$BIN" --config "$config" 2>"$WORK/$name.log" &
  PIDS+=($!)
  for _ in $(seq 1 200); do
    if (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null \
      && curl -sf -o /dev/null "http://127.0.0.1:$http/health"; then
      return 0
    fi
    kill -0 "${PIDS[-1]}" 2>/dev/null || break
    sleep 0.1
  done
  echo "FAIL status page: broker $name did not start: $(tail -3 "$WORK/$name.log" | tr '\n' ' ')"
  FAILED=$((FAILED + 1))
  return 1
}
# page ARGS...: tests/interop/js/status_page.js, its PASS/FAIL lines shown and counted.
page() {
  local status=0
  TMPDIR="$WORK" CHROMIUM="$CHROMIUM" node tests/interop/js/status_page.js "$@" >"$WORK/page.out" 2>&1 || status=$?
  cat "$WORK/page.out"
  PASSED=$((PASSED + $(grep -c '^PASS' "$WORK/page.out" || true)))
  FAILED=$((FAILED + $(grep -c '^FAIL' "$WORK/page.out" || true)))
  if [ "$status" != 0 ] && ! grep -q '^FAIL' "$WORK/page.out"; then
    echo "FAIL status page: status_page.js $1 exited $status without a FAIL line"
    FAILED=$((FAILED + 1))
  fi
}

# The admin API on: the token in a file (with a trailing newline, which the broker trims).
PORT=$(free_port)
HTTP_PORT=$(free_port)
TLS_PORT=$(free_port)
"$BIN" gen-certs "$WORK/certs" >/dev/null
TOKEN=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
printf '%s\n' "$TOKEN" >"$WORK/admin-token"
chmod 600 "$WORK/admin-token"
cat >"$WORK/on.toml" <<TOML
[listener]
bind = "127.0.0.1"
port = $PORT

[[listeners]]
kind = "tls"
bind = "127.0.0.1"
port = $TLS_PORT
cert = "$WORK/certs/server.pem"
key = "$WORK/certs/server.key"

[http]
bind = "127.0.0.1"
port = $HTTP_PORT
admin_token_file = "$WORK/admin-token"

[[queues]]
name = "jobs"
filter = "jobs/#"
TOML
if start on "$WORK/on.toml" "$PORT" "$HTTP_PORT"; then
  page live "http://127.0.0.1:$HTTP_PORT/" "mqtt://127.0.0.1:$PORT" "$WORK/admin-token" "page-$$" ${SHOT:+"$SHOT"}
  if [ "$FAILED" -gt 0 ]; then echo "  broker log:"; tail -5 "$WORK/on.log" | sed 's/^/    /'; fi
fi

# The admin API off: no token configured.
PORT=$(free_port)
HTTP_PORT=$(free_port)
printf '[listener]\nbind = "127.0.0.1"\nport = %s\n[http]\nport = %s\n' "$PORT" "$HTTP_PORT" >"$WORK/off.toml"
if start off "$WORK/off.toml" "$PORT" "$HTTP_PORT"; then
  page disabled "http://127.0.0.1:$HTTP_PORT/"
fi
finish
