#!/usr/bin/env bash
# Does a large outbound window cost anything per message? One persistent session drains 10,000
# and then 60,000 queued QoS 1 messages (tern-bench `drain-one`, acknowledging each at once),
# through a Tern with max_inflight_messages = 20 and one with 65535 (the client is v3.1.1, so
# that key is its window). Medians of 3 rounds; msgs/s and the ratio 65535 / 20 (>= 1.0: the
# large window is at least as fast). Fails naming the figure it could not read.
#   benches/window.sh [--tern TERN_BINARY] [--rounds N] [--messages "10000 60000"]
#                     [--windows "20 65535"]
# --windows: the windows compared (one Tern each); the ratio is the last's rate over the first's.
#   benches/window.sh --slow-link "50 100 200" [--read-rate BYTES_PER_S] [--windows "..."]
# --slow-link: instead, a QoS 1 subscriber behind a slow link (tern-bench `slow-link`): each
# PUBACK leaves that many milliseconds after its PUBLISH arrived (the round trip), and with
# --read-rate it reads at most that many bytes per second (64-byte payloads); messages/s per
# window and round trip, and the most messages the subscriber held at once (received, its
# PUBACK not yet sent: what a constrained device must keep).
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
. benches/lib.sh

TERN=target/release/tern
ROUNDS=3
COUNTS="10000 60000"
WINDOWS="20 65535"
SLOW=
READ_RATE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --tern) TERN=$(realpath "$2"); shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --messages) COUNTS=$2; shift ;;
    --windows) WINDOWS=$2; shift ;;
    --slow-link) SLOW=$2; shift ;;
    --read-rate) READ_RATE=$2; shift ;;
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
for w in $WINDOWS; do
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
read -r -a WS <<<"$WINDOWS"
if [ -n "$SLOW" ]; then
  printf '%-10s' "window"
  for rtt in $SLOW; do printf ' %24s' "rtt ${rtt} ms: msgs/s, held"; done
  printf '   (read rate: %s B/s; 0 = no cap)\n' "$READ_RATE"
  for w in "${WS[@]}"; do
    printf '%-10s' "$w"
    for rtt in $SLOW; do
      # About 3 s of traffic at the rate the window or the link allows, 100 to 5,000 messages.
      n=$(awk -v w="$w" -v r="$rtt" -v b="$READ_RATE" 'BEGIN {
        rate = w * 1000 / r; if (b > 0 && b / 96 < rate) rate = b / 96;
        n = int(3 * rate); if (n < 100) n = 100; if (n > 5000) n = 5000; print n }')
      rates=""
      helds=""
      for r in $(seq 1 "$ROUNDS"); do
        what="slow link, window $w, rtt $rtt ms, round $r"
        all=$("$BENCH" --port "${PORT[$w]}" --scenario slow-link --messages "$n" \
          --ack-delay-ms "$rtt" --read-bytes-per-s "$READ_RATE" 2>&1 || true)
        out=$(grep '^RESULT' <<<"$all" || true)
        rates="$rates $(field "$out" msgs_per_s "$what")"
        helds="$helds $(field "$(grep '^SLOW' <<<"$all" || true)" held_max "$what")"
        lost=$(field "$out" lost "$what")
        if [ "$lost" != 0 ]; then echo "window.sh: $what: $lost lost" >&2; exit 1; fi
      done
      rate=$(median <<<"${rates# }")
      held=$(median <<<"${helds# }")
      printf ' %24s' "$rate, $held"
    done
    printf '\n'
  done
  exit 0
fi
FIRST=${WS[0]}
LAST=${WS[${#WS[@]}-1]}
printf '%-28s' "drain, QoS 1, one session"
for w in "${WS[@]}"; do printf ' %14s' "window $w"; done
printf ' %8s\n' "ratio"
for n in $COUNTS; do
  declare -A RATES=()
  for r in $(seq 1 "$ROUNDS"); do
    for w in "${WS[@]}"; do
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
  printf '%-28s' "$n messages (msgs/s)"
  declare -A MED=()
  for w in "${WS[@]}"; do
    MED[$w]=$(median <<<"${RATES[$w]# }")
    printf ' %14s' "${MED[$w]}"
  done
  ratio=$(awk -v a="${MED[$LAST]}" -v b="${MED[$FIRST]}" 'BEGIN {printf "%.2f", a / b}')
  printf ' %8s\n' "$ratio"
done
