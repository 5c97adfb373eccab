# Helpers shared by the bench scripts (sourced, not run). Each figure a script prints comes
# from a parsed line; when the line or the field is missing, the script stops with a non-zero
# exit naming what it could not find, instead of printing an empty or made-up value. Scripts
# that source this set `set -euo pipefail; shopt -s inherit_errexit` so that a failure inside
# `$(...)` stops them too. BENCH names the script in messages.
BENCH=${BENCH:-$(basename "$0")}
# The load tool. Another binary with its interface may stand in (e.g. a wrapper that drops a
# field from its output, to check that a missing figure stops the script).
TERN_BENCH=${TERN_BENCH:-target/release/tern-bench}

# die MESSAGE...: stops the bench with MESSAGE on stderr.
die() { echo "$BENCH: $*" >&2; exit 1; }
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }
# must_field NAME [WHAT] < LINE: the value of NAME=... in LINE, or stop naming NAME and WHAT.
must_field() {
  local line v
  line=$(cat)
  v=$(echo "$line" | field "$1")
  [ -n "$v" ] || die "no $1= ${2:+for $2 }in: ${line:-<nothing>}"
  echo "$v"
}
# must_result WHAT OUTPUT: the RESULT line of a tern-bench OUTPUT, or stop naming WHAT and the
# output's last lines. (tern-bench exits non-zero after printing RESULT when it counted a loss:
# callers keep its output whatever its exit status and check the loss fields.)
must_result() {
  local line
  line=$(echo "$2" | grep '^RESULT' | tail -1 || true)
  [ -n "$line" ] || die "no RESULT line from tern-bench for $1; its output ended: $(echo "$2" | tail -3 | tr '\n' ' ')"
  echo "$line"
}
# must_number WHAT VALUE: VALUE if it is a number, else stop naming WHAT.
must_number() {
  [[ "$2" =~ ^-?[0-9]+(\.[0-9]+)?$ ]] || die "$1 is not a number: '${2}'"
  echo "$2"
}
# status_kb PID KEY: KEY (VmRSS, VmHWM) of process PID in kB, or stop.
status_kb() {
  local v
  v=$(awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status" 2>/dev/null || true)
  [ -n "$v" ] || die "no $2 for pid $1 (not running?)"
  echo "$v"
}
median() { sort -n | awk '{a[NR]=$1} END { if (NR == 0) exit 1; print a[int((NR+1)/2)] }'; }
# must_median WHAT < NUMBERS: their median, or stop when there are none.
must_median() {
  local m
  m=$(median) || die "no figures for $1"
  echo "$m"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0 || a == "-" || b == "-") print "-"; else printf "%.2f", a / b }'; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done
  die "broker on port $1 did not start"
}
