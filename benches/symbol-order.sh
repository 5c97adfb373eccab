#!/usr/bin/env bash
# Writes src/symbol-order.txt: the functions a release `tern` runs, hottest first, as the linker
# should lay them out (build.rs hands the file to lld for release builds of the binary).
#
# Why: the kernel maps a binary's code 64 KB around each page it faults in, and with code
# start-up and the message path use spread over the 12 MB of machine code, about 7 MB of it was
# resident before the first client connected and 10 MB under load, most of Tern's resident
# memory. The functions it actually runs add up to about 1.6 MB; laid out together they are all
# the code that becomes resident.
#
# How: the broker runs under valgrind's callgrind (which counts every function executed, not a
# sample), once with built-in defaults plus a TLS and a WebSocket listener, a declared queue and
# the HTTP endpoint, and once with persistence on; tern-bench drives the usual scenarios at small
# counts (pairs QoS 0/1/2 and MQTT 5, fan-in, fan-out, shared subscriptions, a queue, offline
# drain, latency, idle clients going dormant, TLS, retained, persistent subscribers) and the
# metrics are scraped. The functions that ran 99% of the instructions (both runs added) come
# first, then the others that ran; each tier in name order, so a new profile changes few lines.
#
# Run it again after a toolchain or dependency change (symbol names carry hashes of their crate's
# version and build settings) and after new code on the message path (a function the file does
# not name lands among the code that never runs, and its page with it): a function the file
# names but the binary lacks is skipped by the linker, so a stale file costs memory, never
# correctness. `--check` prints how much of the
# current binary's executed code the file still names, without profiling.
#   benches/symbol-order.sh [--check]
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
# shellcheck source=benches/lib.sh
. benches/lib.sh
ORDER=src/symbol-order.txt
BIN=target/release/tern

cargo build --release --bins --quiet

# order check | order write PROFILE...: the Python side. Both read the binary's function sizes;
# `check` says how much of them the file names, `write` ranks the profiled functions into it.
order() {
  python3 - "$1" "$BIN" "$ORDER" "${@:2}" <<'PY'
import collections, re, subprocess, sys
mode, binary, order, *profiles = sys.argv[1:]
sizes = {}
for line in subprocess.run(["nm", "-S", "--defined-only", binary], capture_output=True, text=True, check=True).stdout.splitlines():
    p = line.split()
    if len(p) == 4 and p[2] in "tTwW":
        sizes[p[3]] = int(p[1], 16)
if mode == "check":
    names = [l.strip() for l in open(order) if l.strip()]
    found = [n for n in names if n in sizes]
    print(f"{order}: {len(found)} of {len(names)} functions found in {binary}, "
          f"{sum(sizes[n] for n in found) / 1e6:.2f} MB of {sum(sizes.values()) / 1e6:.2f} MB of code")
    if len(found) < len(names) * 0.9:
        sys.exit("fewer than 90% found: run benches/symbol-order.sh to write it again")
    sys.exit(0)
cost = collections.Counter()
for path in profiles:
    names, objects, obj_of = {}, {}, {}
    fn, ob, skip = None, None, False
    for line in open(path, errors="replace"):
        m = re.match(r"(c?)(fn|ob)=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
        if m:
            table = names if m.group(2) == "fn" else objects
            if m.group(4):
                table[m.group(3)] = m.group(4)
            if not m.group(1):
                if m.group(2) == "fn":
                    fn = names[m.group(3)]
                    obj_of[fn] = ob
                else:
                    ob = objects[m.group(3)]
            continue
        if line.startswith("calls="):
            skip = True  # the next cost line is the call's inclusive cost
            continue
        if line[:1].isdigit() or line[:1] in "+-*":
            if skip:
                skip = False
                continue
            parts = line.split()
            if fn is not None and len(parts) >= 2 and obj_of.get(fn, "").endswith("/tern"):
                cost[fn.split("'")[0]] += int(parts[1])
ranked = [f for f, c in cost.most_common() if c > 0 and f in sizes]
if len(ranked) < 500:
    sys.exit(f"only {len(ranked)} functions profiled: callgrind's output was not read right")
# Two tiers, each in name order so that a new profile changes few lines: the functions that
# run 99% of the instructions first (the message path, packed tight), then the rest run.
total, running, hot = sum(cost[f] for f in ranked), 0, set()
for f in ranked:
    if running >= 0.99 * total:
        break
    hot.add(f)
    running += cost[f]
ranked = sorted(hot) + sorted(f for f in ranked if f not in hot)
with open(order, "w") as out:
    out.write("\n".join(ranked) + "\n")
print(f"{order}: {len(ranked)} functions, {sum(sizes[f] for f in ranked) / 1e6:.2f} MB "
      f"of {sum(sizes.values()) / 1e6:.2f} MB of code")
PY
}

if [ "${1:-}" = --check ]; then
  order check
  exit 0
fi

command -v valgrind >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
}
WORK=$(mktemp -d)
BROKER_PID=
cleanup() { [ -z "$BROKER_PID" ] || kill "$BROKER_PID" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
"$BIN" gen-certs "$WORK/certs" >/dev/null

# under_callgrind NAME CONFIG: starts the broker under callgrind on $PORT; sets BROKER_PID.
under_callgrind() {
  valgrind --tool=callgrind --demangle=no --callgrind-out-file="$WORK/$1.cg" \
    "$BIN" --config "$2" --bind 127.0.0.1 --port "$PORT" --log warn >"$WORK/$1.log" 2>&1 &
  BROKER_PID=$!
  for _ in $(seq 1 600); do
    (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && return 0
    sleep 0.1
  done
  die "tern under callgrind did not start: $(tail -3 "$WORK/$1.log")"
}
finish() {
  kill "$BROKER_PID"
  wait "$BROKER_PID" 2>/dev/null || true
  BROKER_PID=
}
bench() { must_result "$*" "$("$TERN_BENCH" --port "$PORT" "$@" 2>&1 || true)" >/dev/null; }
scrape() { python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$1/metrics').read()"; }

# Run 1: defaults, with the other listener kinds, a declared queue and the HTTP endpoint.
PORT=$(free_port) TLS=$(free_port) WS=$(free_port) HTTP=$(free_port)
cat >"$WORK/defaults.toml" <<CONF
[http]
port = $HTTP
[[listeners]]
kind = "tls"
port = $TLS
cert = "$WORK/certs/server.pem"
key = "$WORK/certs/server.key"
[[listeners]]
kind = "ws"
port = $WS
[[queues]]
name = "jobs"
filter = "bench/jobs/#"
CONF
under_callgrind defaults "$WORK/defaults.toml"
bench --scenario pairs-qos0 --messages 200 --seconds 2
bench --scenario pairs-qos1 --messages 200 --seconds 2
bench --scenario pairs-qos1 --mqtt 5 --messages 200 --seconds 2
bench --scenario fan-in --publishers 4 --qos 0 --messages 1000 --seconds 2
bench --scenario fan-in --publishers 4 --qos 2 --messages 500 --seconds 2
bench --scenario fan-out --subscribers 20 --qos 0 --messages 200 --seconds 2
bench --scenario shared-qos1 --messages 50 --seconds 2
bench --scenario queue-drain --queue jobs --messages 500 --seconds 2
bench --scenario offline-drain --qos 1 --messages 2000 --seconds 2
bench --scenario latency --rate 500 --qos 0 --seconds 1
bench --scenario latency --rate 500 --qos 1 --seconds 1
bench --scenario fill --connections 20 --retained 100 --messages 10 --seconds 2
bench --scenario idle --connections 300 --hold-secs 2
"$TERN_BENCH" --port "$TLS" --cafile "$WORK/certs/ca.pem" --scenario pairs-qos0 --messages 100 --seconds 2 >/dev/null 2>&1 ||
  die "tern-bench over TLS failed"
scrape "$HTTP"
finish

# Run 2: persistence on, persistent subscribers (their messages are stored).
PORT=$(free_port)
printf '[http]\nenabled = false\n[persistence]\nenabled = true\npath = "%s"\n' "$WORK/data" >"$WORK/persistent.toml"
under_callgrind persistent "$WORK/persistent.toml"
bench --scenario pairs-qos1 --persistent-subscribers --messages 200 --seconds 2
bench --scenario fan-in --publishers 4 --qos 2 --persistent-subscribers --messages 300 --seconds 2
bench --scenario offline-drain --qos 1 --messages 1000 --seconds 2
bench --scenario fill --connections 20 --retained 100 --messages 10 --seconds 2
finish

order write "$WORK/defaults.cg" "$WORK/persistent.cg"
