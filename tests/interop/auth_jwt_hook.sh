#!/usr/bin/env bash
# Interop for JWT authentication and the HTTP hook, with independent tools: tokens minted by
# OpenSSL (tests/interop/jwt_token.sh, HS256) and by PyJWT (RS256, ES256 from OpenSSL keys),
# the Python hook of tests/interop/hook.py, and Mosquitto's clients. Runs the README examples.
# Prints "PASS name" / "FAIL name: why" per case, then "N passed, M failed".
#   TERN_BIN=path   broker binary (default: target/release/tern, built with cargo)
set -euo pipefail
cd "$(dirname "$0")/../.."
for tool in mosquitto_pub mosquitto_sub python3 openssl stdbuf; do
  command -v "$tool" >/dev/null || { echo "interop: $tool is not installed"; exit 2; }
done
python3 -c 'import jwt' 2>/dev/null || { echo "interop: PyJWT is not installed (pip install pyjwt)"; exit 2; }
TERN=${TERN_BIN:-target/release/tern}
[ -x "$TERN" ] || cargo build --release --bin tern
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
passed=0 failed=0
check() { # name, then a command that must succeed
  local name=$1; shift
  if "$@" >"$WORK/out" 2>&1; then echo "PASS $name"; passed=$((passed+1));
  else echo "FAIL $name: $(tr '\n' ' ' <"$WORK/out")"; failed=$((failed+1)); fi
}
refused() { ! "$@"; }
# A v5 PUBLISH refused by its PUBACK (mosquitto_pub reports it and still exits 0).
denied() { "$@" 2>&1 | grep -q "Not authorized"; }
wait_port() { for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
start_tern() { # config file; sets PORT
  "$TERN" --config "$1" >"$WORK/tern.log" 2>&1 & PIDS+=($!)
  wait_port "$PORT"
}
pub() { mosquitto_pub -p "$PORT" -q 1 "$@"; }
# A subscriber that must get exactly one message within 10 s; returns once it is subscribed.
sub_one() {
  stdbuf -oL mosquitto_sub -d -p "$PORT" -C 1 -W 10 "$@" >"$WORK/got" & S=$!
  for _ in $(seq 100); do grep -q "received SUBACK" "$WORK/got" && return 0; sleep 0.05; done
  return 1
}
# The subscriber started by sub_one got the message $1.
received() { wait "$S"; grep -qx "$1" "$WORK/got"; }

# 1. HS256 from a secret file; tokens from OpenSSL and from PyJWT; claim ACLs.
head -c 64 /dev/urandom >"$WORK/jwt.secret"
head -c 64 /dev/urandom >"$WORK/other.secret"
PORT=$(free_port) HOOK_PORT=$(free_port)
cat >"$WORK/hs.toml" <<TOML
[listener]
port = $PORT
[http]
enabled = false
[auth.jwt]
secret_file = "$WORK/jwt.secret"
TOML
start_tern "$WORK/hs.toml"
T1=$(tests/interop/jwt_token.sh "$WORK/jwt.secret" sensor-1 3600 '"publish":["sensors/%c/#"],"subscribe":["sensors/#"]')
TPY=$(python3 -c 'import jwt,sys,time; print(jwt.encode({"sub":"dash","exp":int(time.time())+3600,"subscribe":["sensors/#"],"publish":[]}, open(sys.argv[1],"rb").read(), algorithm="HS512"))' "$WORK/jwt.secret")
sub_one -i dash -u dash -P "$TPY" -t 'sensors/#'
check "openssl HS256 token publishes in its subtree" pub -i sensor-1 -u x -P "$T1" -t sensors/sensor-1/temp -m 21.5
check "PyJWT HS512 token receives it" received 21.5
check "outside its subtree: refused (v5 PUBACK 0x87)" denied pub -V mqttv5 -i sensor-1 -u x -P "$T1" -t sensors/sensor-2/temp -m 99
check "another secret: refused" refused pub -u x -P "$(tests/interop/jwt_token.sh "$WORK/other.secret" sensor-1 60)" -t x -m x
check "expired token refused" refused pub -u x -P "$(tests/interop/jwt_token.sh "$WORK/jwt.secret" sensor-1 -3600)" -t sensors/sensor-1/t -m x

# 2. RS256 and ES256 public keys, PyJWT tokens.
for alg in RS256 ES256; do
  kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true
  case $alg in
    RS256) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$WORK/k.pem" 2>/dev/null ;;
    ES256) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/k.pem" ;;
  esac
  openssl pkey -in "$WORK/k.pem" -pubout -out "$WORK/k.pub"
  PORT=$(free_port)
  printf '[listener]\nport = %s\n[http]\nenabled = false\n[auth.jwt]\npublic_key_file = "%s"\nissuer = "fleet"\n' \
    "$PORT" "$WORK/k.pub" >"$WORK/pk.toml"
  start_tern "$WORK/pk.toml"
  mint() { python3 -c 'import jwt,sys,time; print(jwt.encode({"sub":"d","iss":sys.argv[3],"exp":int(time.time())+60}, open(sys.argv[1]).read(), algorithm=sys.argv[2]))' "$WORK/k.pem" "$alg" "$1"; }
  check "PyJWT $alg token accepted" pub -i d -u d -P "$(mint fleet)" -t t -m x
  check "PyJWT $alg token from another issuer refused" refused pub -i d -u d -P "$(mint other)" -t t -m x
done

# 3. The HTTP hook (tests/interop/hook.py) with an ACL URL, after the password file.
kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true
python3 tests/interop/hook.py "$HOOK_PORT" & PIDS+=($!)
wait_port "$HOOK_PORT"
PORT=$(free_port)
cat >"$WORK/hook.toml" <<TOML
[listener]
port = $PORT
[http]
enabled = false
[auth.http]
url = "http://127.0.0.1:$HOOK_PORT/mqtt/auth"
acl_url = "http://127.0.0.1:$HOOK_PORT/mqtt/acl"
TOML
start_tern "$WORK/hook.toml"
sub_one -i dash -u dashboard -P d4shb0ard -t 'sensors/#'
check "hook: sensor-9 publishes in its subtree" pub -i s9 -u sensor-9 -P s3cret -t sensors/sensor-9/temp -m 7
check "hook: dashboard receives it" received 7
check "hook: wrong password refused" refused pub -u sensor-9 -P nope -t sensors/sensor-9/temp -m 7
check "hook: outside the ACL hook's topics refused (v5)" denied pub -V mqttv5 -u sensor-9 -P s3cret -t other/x -m 7
kill "${PIDS[-2]}" # the hook goes down
check "hook down: refused" refused pub -u sensor-9 -P s3cret -t sensors/sensor-9/temp -m 7

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
