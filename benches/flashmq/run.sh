#!/usr/bin/env bash
# Runs FlashMQ in the foreground on 127.0.0.1:PORT (exec, so the PID is the broker's), anonymous
# access, one thread per core, queue limits at FlashMQ's maximum (65535 messages) so
# offline-queue scenarios compare like for like, and TCP_NODELAY on (`tcp_nodelay true` on the
# listener, off by default), as Tern sets it and benches/run.sh sets Mosquitto's
# `set_tcp_nodelay`. Its other settings are its defaults: it lets each client's Receive Maximum
# govern its outbound window (65,535 for a 3.1.1 client).
#   benches/flashmq/run.sh PORT [FLASHMQ_BINARY] [DIR]
# DIR holds the config and log (default: a new temporary directory).
set -euo pipefail
port=$1
bin=${2:-$("$(dirname "$0")/build.sh")}
d=${3:-$(mktemp -d /tmp/flashmq-run.XXXXXX)}
mkdir -p "$d"
cat > "$d/flashmq.conf" <<C
allow_anonymous true
thread_count $(nproc)
max_qos_msg_pending_per_client 65535
max_qos_bytes_pending_per_client 1000000000
log_file $d/flashmq.log
log_level warning
listen {
  protocol mqtt
  inet4_bind_address 127.0.0.1
  port $port
  tcp_nodelay true
}
C
exec "$bin" -c "$d/flashmq.conf"
