#!/usr/bin/env bash
# Does a large outbound window cost anything per message? One persistent session drains 10,000
# and then 60,000 queued QoS 1 messages (tern-bench `drain-one`, acknowledging each at once),
# through a Tern with max_inflight_messages = 20 and one with 65535 (the client is v3.1.1, so
# that key is its window). Medians of 3 rounds; msgs/s and the ratio 65535 / 20 (>= 1.0: the
# large window is at least as fast). Fails naming the figure it could not read.
#   benches/window.sh [--tern TERN_BINARY] [--rounds N] [--messages "10000 60000"]
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."

TERN=target/release/tern
ROUNDS=3
COUNTS="10000 60000"
while [ $# -gt 0 ]; do
  case "$1" in
    --tern) TERN=$(realpath "$2"); shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --messages) COUNTS=$2; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
cargo build --release --bins --quiet
BENCH=target/release/tern-bench

WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "tern on port $1 did not start" >&2; exit 1
}
# The value of KEY=... in a RESULT line; stops the bench if it is not there.
field() {
  local v
  v=$(sed -n "s/.*\b$2=\([0-9.]*\).*/\1/p" <<<"$1")
  if [ -z "$v" ]; then
    echo "window.sh: no $2 in tern-bench's output for $3: '$1'" >&2
    exit 1
  fi
  echo "$v"
}
median() { tr ' ' '\n' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

declare -A PORT
for w in 20 65535; do
  port=$(free_port)
  PORT[$w]=$port
  cat >"$WORK/tern-$w.toml" <<CONF
[limits]
max_inflight_messages = $w
max_queued_messages = 1000000
CONF
  "$TERN" --config "$WORK/tern-$w.toml" --bind 127.0.0.1 --port "$port" --http-port 0 --log warn 2>"$WORK/tern-$w.log" &
  PIDS+=($!)
  wait_port "$port"
done

echo "# benches/window.sh $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, tern: $TERN, medians of $ROUNDS"
printf '%-28s %14s %14s %8s\n' "drain, QoS 1, one session" "window 20" "window 65535" "ratio"
for n in $COUNTS; do
  declare -A RATES=()
  for r in $(seq 1 "$ROUNDS"); do
    for w in 20 65535; do
      what="window $w, $n messages, round $r"
      out=$("$BENCH" --port "${PORT[$w]}" --scenario drain-one --messages "$n" 2>&1 | grep '^RESULT' || true)
      rate=$(field "$out" msgs_per_s "$what")
      lost=$(field "$out" lost "$what")
      dup=$(field "$out" dup "$what")
      if [ "$lost" != 0 ] || [ "$dup" != 0 ]; then
        echo "window.sh: $what: $lost lost, $dup duplicated" >&2
        exit 1
      fi
      RATES[$w]="${RATES[$w]:-} $rate"
    done
  done
  small=$(median <<<"${RATES[20]# }")
  large=$(median <<<"${RATES[65535]# }")
  ratio=$(awk -v a="$large" -v b="$small" 'BEGIN {printf "%.2f", a / b}')
  printf '%-28s %14s %14s %8s\n' "$n messages (msgs/s)" "$small" "$large" "$ratio"
done
