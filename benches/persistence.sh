#!/usr/bin/env bash
# Persistence benchmark (issue 3: a, b, loss after kill -9, c, d): 100 persistent sessions (clean session 0)
# subscribe at QoS 1 and go offline; one publisher sends QoS 1 messages (32 unacknowledged at
# most), each queued for all 100; then the sessions come back and drain their queues.
# Brokers, each a fresh process on a fresh store: Tern with durability "fsync", "process" and
# persistence off; Mosquitto (Debian) with `persistence true` (which writes a snapshot only
# every 30 minutes and at exit: not durable). Medians of 3; ratio >= 1.0 means Tern is better.
# Usage: benches/persistence.sh [--quick]
set -euo pipefail
# A failure inside a command substitution stops the bench too (a missing figure is an error).
shopt -s inherit_errexit
cd "$(dirname "$0")/.."

REPS=3
MESSAGES=1000
[ "${1:-}" = --quick ] && REPS=1
if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
fi
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
cargo build --release --bins --quiet

WORK=$(mktemp -d)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "broker on port $1 did not start" >&2; exit 1
}
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }
# The value of `NAME=` in the line on stdin; stops the bench, saying what is missing, when it
# is not there (a changed log line must not shift figures into the wrong columns).
must_field() {
  local line v
  line=$(cat)
  v=$(echo "$line" | field "$1")
  [ -n "$v" ] || { echo "persistence.sh: no $1= in: ${line:-<nothing>}" >&2; return 1; }
  echo "$v"
}
# Resident memory of PID in MB; stops the bench when it cannot be read (the process is gone).
must_rss() {
  local mb
  mb=$(rss_mb "$1" 2>/dev/null || true)
  [ -n "$mb" ] || { echo "persistence.sh: no resident memory for pid $1 (not running?)" >&2; return 1; }
  echo "$mb"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%.2f", a / b }'; }

# Starts broker `kind` (fsync | process | off | mosquitto) on `port` with its state in `dir`
# (kept, so a restart on the same `dir` reads it back); `extra` is appended to Tern's config or,
# for Mosquitto, its max_queued_messages. Sets PID.
start_broker() {
  local kind=$1 port=$2 dir=$3 queued=${4:-1000}
  case "$kind" in
    mosquitto)
      printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages %s\npersistence true\npersistence_location %s/\nset_tcp_nodelay true\nlog_dest none\n' \
        "$port" "$queued" "$dir" >"$dir/m.conf"
      "$MOSQUITTO" -c "$dir/m.conf" &
      ;;
    off)
      printf '[listener]\nbind = "127.0.0.1"\nport = %s\n[limits]\nmax_queued_messages = %s\n' \
        "$port" "$queued" >"$dir/t.toml"
      target/release/tern --config "$dir/t.toml" --http-port 0 --log warn 2>/dev/null &
      ;;
    *)
      printf '[listener]\nbind = "127.0.0.1"\nport = %s\n[limits]\nmax_queued_messages = %s\n[persistence]\nenabled = true\npath = "%s/data"\ndurability = "%s"\n' \
        "$port" "$queued" "$dir" "$kind" >"$dir/t.toml"
      target/release/tern --config "$dir/t.toml" --http-port 0 --log warn 2>"$dir/log" &
      ;;
  esac
  PID=$!
  wait_port "$port"
}
stop_broker() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=; }
rss_mb() { awk '/VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }

# One run against a fresh broker: prints "msgs_per_s drain_ms lost+dup".
run_one() {
  local kind=$1 port dir
  port=$(free_port)
  dir=$(mktemp -d -p "$WORK")
  start_broker "$kind" "$port" "$dir"
  local line
  line=$(target/release/tern-bench --port "$port" --scenario offline --messages "$MESSAGES" 2>&1 | grep RESULT || true)
  stop_broker
  [ -n "$line" ] || { echo "0 0 1"; return; }
  local rate drain lost dup
  rate=$(echo "$line" | must_field msgs_per_s)
  drain=$(echo "$line" | must_field drain_ms)
  lost=$(echo "$line" | must_field lost)
  dup=$(echo "$line" | must_field dup)
  echo "$rate $drain $((lost + dup))"
}

# Loss after kill -9: the 100 offline sessions get $MESSAGES QoS 1 messages each, every one
# acknowledged to the publisher; the broker is killed with SIGKILL and started again on the
# same store (Mosquitto: the same persistence_location); the sessions come back. Prints
# "lost duplicated".
kill9_loss() {
  local kind=$1 dir line port
  dir=$(mktemp -d -p "$WORK")
  port=$(free_port)
  start_broker "$kind" "$port" "$dir"
  target/release/tern-bench --port "$port" --scenario queue --prefix k9 --messages "$MESSAGES" >/dev/null 2>&1 || true
  kill -9 "$PID"; wait "$PID" 2>/dev/null || true; PID=
  port=$(free_port)
  start_broker "$kind" "$port" "$dir"
  line=$(target/release/tern-bench --port "$port" --scenario drain --prefix k9 --messages "$MESSAGES" 2>&1 | grep RESULT || true)
  stop_broker
  [ -n "$line" ] || { echo "$((MESSAGES * 100)) 0"; return; }
  local lost dup
  lost=$(echo "$line" | must_field lost)
  dup=$(echo "$line" | must_field dup)
  echo "$lost $dup"
}

declare -A PUB DRAIN
LOSS=0
for kind in fsync process off mosquitto; do
  : >"$WORK/$kind"
  for _ in $(seq 1 "$REPS"); do run_one "$kind" >>"$WORK/$kind"; done
  PUB[$kind]=$(awk '{print $1}' "$WORK/$kind" | median)
  DRAIN[$kind]=$(awk '{print $2}' "$WORK/$kind" | median)
  LOSS=$((LOSS + $(awk '{s+=$3} END {print s+0}' "$WORK/$kind")))
done

declare -A K9
for kind in fsync process mosquitto; do K9[$kind]=$(kill9_loss "$kind"); done
LOSS=$((LOSS + $(echo "${K9[fsync]}" | awk '{print $1 + $2}') + $(echo "${K9[process]}" | awk '{print $1 + $2}')))

# (d) Memory: one offline persistent session with 1,000,000 distinct QoS 1 messages queued
# (max_queued_messages raised to allow it; 64-byte payloads); resident memory once they are all
# acknowledged to the publisher, for Tern durable (the queue lives in the store), Tern without
# persistence and Mosquitto (both keep it in memory).
memory_mb() {
  local kind=$1 port dir mb
  port=$(free_port)
  dir=$(mktemp -d -p "$WORK")
  start_broker "$kind" "$port" "$dir" 1000000
  target/release/tern-bench --port "$port" --scenario fill --connections 1 --messages 1000000 >/dev/null 2>&1 || true
  sleep 2
  mb=$(must_rss "$PID")
  stop_broker
  echo "$mb"
}
declare -A MEM
for kind in fsync off mosquitto; do MEM[$kind]=$(memory_mb "$kind"); done

# (c) Restart: 1,000 persistent sessions with 1,000 queued QoS 1 messages each (1,000,000 in
# all) and 100,000 retained messages; Tern killed with SIGKILL and started again on the store.
# Measured: from exec to the "MQTT listener ready" log line (the store read back).
restart_ms() {
  local port dir pid start line
  port=$(free_port)
  dir=$(mktemp -d -p "$WORK")
  printf '[listener]\nbind = "127.0.0.1"\nport = %s\n[persistence]\nenabled = true\npath = "%s/data"\ndurability = "fsync"\n' \
    "$port" "$dir" >"$dir/t.toml"
  target/release/tern --config "$dir/t.toml" --http-port 0 2>/dev/null &
  pid=$!
  wait_port "$port"
  target/release/tern-bench --port "$port" --scenario fill --connections 1000 --messages 1000 --retained 100000 >/dev/null
  local before
  before=$(must_rss "$pid")
  kill -9 "$pid"; wait "$pid" 2>/dev/null || true
  start=$(date +%s%N)
  target/release/tern --config "$dir/t.toml" --http-port 0 2>"$dir/log" &
  PID=$!
  for _ in $(seq 1 3000); do grep -q "MQTT listener ready" "$dir/log" && break; sleep 0.01; done
  local ms opened retained sessions after ready
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  ready=$(grep -c "MQTT listener ready" "$dir/log" || true)
  opened=$(grep "store opened" "$dir/log" || true)
  after=$(rss_mb "$PID" 2>/dev/null || true)
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
  [ "$ready" != 0 ] || { echo "persistence.sh: no \"MQTT listener ready\" within 30 s of the restart" >&2; return 1; }
  [ -n "$after" ] || { echo "persistence.sh: no resident memory after the restart" >&2; return 1; }
  retained=$(echo "$opened" | must_field retained)
  sessions=$(echo "$opened" | must_field sessions)
  echo "$ms $retained $sessions $before $after"
}
RESTART=$(restart_ms)

{
  echo "Tern persistence vs Mosquitto (persistence true), $(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -srm), $(nproc) cores"
  echo "100 offline persistent sessions, $MESSAGES QoS 1 messages each; medians of $REPS; ratio >= 1.0 means Tern is better"
  printf '%-22s %14s %14s %9s %9s\n' broker "publishes/s" "drain ms" "pub ratio" "drain ratio"
  for kind in fsync process off; do
    printf '%-22s %14s %14s %9s %9s\n' "tern $kind" "${PUB[$kind]}" "${DRAIN[$kind]}" \
      "$(ratio "${PUB[$kind]}" "${PUB[mosquitto]}")" "$(ratio "${DRAIN[mosquitto]}" "${DRAIN[$kind]}")"
  done
  printf '%-22s %14s %14s\n' "mosquitto (not durable)" "${PUB[mosquitto]}" "${DRAIN[mosquitto]}"
  echo "kill -9 with 100 x $MESSAGES acknowledged QoS 1 messages queued, then restart (lost / duplicated):"
  for kind in fsync process mosquitto; do
    read -r lost dup <<<"${K9[$kind]}"
    printf '  %-20s %8s lost %8s duplicated of %s\n' "$kind" "$lost" "$dup" "$((MESSAGES * 100))"
  done
  echo "messages lost or duplicated by Tern: $LOSS"
  echo "resident memory with 1,000,000 distinct messages queued for one offline session: tern fsync ${MEM[fsync]} MB, tern persistence off ${MEM[off]} MB, mosquitto ${MEM[mosquitto]} MB"
  read -r ms retained sessions before after <<<"$RESTART"
  echo "restart after kill -9 with 1,000,000 queued and 100,000 retained messages: ${ms} ms (read back: ${retained} retained, ${sessions} sessions; target < 10000 ms); resident memory ${before} MB before the kill, ${after} MB after the restart"
} | tee "$WORK/table.txt"
mkdir -p benches/results
cp "$WORK/table.txt" benches/results/persistence-latest.txt
[ "$LOSS" = 0 ]
