#!/usr/bin/env bash
# Connect storm: does a fleet reconnecting at once starve the clients already connected?
# `tern-bench --scenario connect-storm`: a QoS 1 publisher/subscriber pair exchanges 500 msgs/s;
# its end-to-end latency is measured idle (5 s), then while CLIENTS clients connect (2,000
# attempts at once; refused ones retry after 200 ms-1 s). Each variant runs on a fresh Tern
# process per round, alternating: without a connect rate limit, and with
# `[limits] max_connect_rate = RATE`. Prints every round and the medians; the target is a storm
# p99 within 5x of the idle p99. --auth: a password file (PBKDF2, `tern passwd` defaults), the
# storm's clients log in with a user name and password (the pair stays anonymous).
# --control adds a third variant: the storm goes to a second Tern process (no limit) while the
# pair stays on its own idle one: what the storm costs the pair through the machine alone (CPU,
# the kernel's TCP work), the floor for any broker sharing these cores with it.
# Usage: benches/connect-storm.sh [--quick] [--clients N] [--rate R] [--hold] [--auth] [--control]
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
# shellcheck source=benches/lib.sh
. benches/lib.sh

ROUNDS=3
CLIENTS=20000
RATE=2000
HOLD=
AUTH=
CONTROL=
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) ROUNDS=1 ;;
    --clients) CLIENTS=$2; shift ;;
    --rate) RATE=$2; shift ;;
    --hold) HOLD=--hold ;;
    --auth) AUTH=1 ;;
    --control) CONTROL=1 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
cargo build --release --bins --quiet
# Both processes raise their own soft limit to the hard one; 20,000 clients need that many.
ulimit -n "$(ulimit -Hn)"

WORK=$(mktemp -d)
PID=
PID2=
cleanup() {
  for p in $PID $PID2; do kill "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

LOGIN=()
AUTH_TOML=
if [ -n "$AUTH" ]; then
  target/release/tern passwd -c -b "$WORK/passwd" dev secret >/dev/null
  AUTH_TOML=$(printf '[auth]\npassword_file = "%s"\nallow_anonymous = true\n' "$WORK/passwd")
  LOGIN=(--username dev --password secret)
fi


# start_broker NAME PORT EXTRA_TOML: a fresh Tern in the background; its pid on stdout
start_broker() {
  printf '[listener]\nbind = "127.0.0.1"\nport = %s\n[http]\nenabled = false\n[sys]\ninterval_secs = 0\n%s\n[limits]\nmax_connections = 100000\n%s\n' \
    "$2" "$AUTH_TOML" "$3" >"$WORK/$1.toml"
  # stdout too: the caller reads this function's output until every writer is gone.
  target/release/tern --config "$WORK/$1.toml" --log warn >>"$WORK/$1.log" 2>&1 &
  echo $!
}

# run_round NAME EXTRA_TOML [control]: one fresh broker, one storm (with `control`, at a second
# fresh broker); appends the STORM line to NAME.out
run_round() {
  local port; port=$(free_port)
  PID=$(start_broker "$1" "$port" "$2")
  wait_port "$port"
  local storm=()
  if [ "${3:-}" = control ]; then
    local port2; port2=$(free_port)
    PID2=$(start_broker "$1-storm" "$port2" "")
    wait_port "$port2"
    storm=(--storm-port "$port2")
  fi
  local line out f
  out=$("$TERN_BENCH" --port "$port" --scenario connect-storm --connections "$CLIENTS" $HOLD "${LOGIN[@]}" "${storm[@]}" 2>&1 || true)
  for p in $PID $PID2; do kill "$p"; wait "$p" 2>/dev/null || true; done
  PID= PID2=
  line=$(echo "$out" | grep '^STORM' | tail -1 || true)
  [ -n "$line" ] || die "$1: the storm failed, no STORM line; tern-bench's output ended: $(echo "$out" | tail -3 | tr '\n' ' ')"
  # Every figure the table prints, checked here (the table's medians come from these lines).
  for f in storm_s connected idle_p99_us storm_p99_us p99_ratio refused failed; do
    must_number "$f in round $1" "$(echo "$line" | must_field "$f" "$1")" >/dev/null
  done
  echo "$1 $line"
  echo "$line" >>"$WORK/$1.out"
}

echo "connect storm: $CLIENTS clients${HOLD:+ (held)}${AUTH:+ (password logins)}, $ROUNDS rounds, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
for _ in $(seq 1 "$ROUNDS"); do
  run_round unlimited ""
  run_round "rate-$RATE" "max_connect_rate = $RATE"
  if [ -n "$CONTROL" ]; then run_round control "" control; fi
done
echo
printf '%-12s %10s %10s %10s %10s %8s %9s %9s\n' variant idle_p99us storm_p99us ratio storm_s conn/s refused failed
for v in unlimited "rate-$RATE" ${CONTROL:+control}; do
  f="$WORK/$v.out"
  med() { field "$1" <"$f" | must_median "$v $1"; }
  secs=$(med storm_s); conn=$(med connected)
  printf '%-12s %10s %10s %10s %10s %8.0f %9s %9s\n' "$v" "$(med idle_p99_us)" "$(med storm_p99_us)" \
    "$(med p99_ratio)" "$secs" "$(echo "$conn / $secs" | bc -l)" "$(med refused)" "$(med failed)"
done
