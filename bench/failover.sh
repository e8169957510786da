#!/usr/bin/env bash
# Failover timing: bench/peers/run.sh's failover trials with gslb polled beside
# gdnsd and PowerDNS. Twenty trials with the primary backend killed
# (connection refused), then twenty with it frozen (SIGSTOP: probes time out).
# gslb's check (bench/zones): interval 1 s, timeout 500 ms, fall 3, rise 2,
# recheck 200 ms.
#
#   bench/failover.sh [--failover-reps N] [--servers "gdnsd pdns"]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need dig bind9-dnsutils
build_release
PORT=${GSLB_PORT:-5310}
trap stop_gslb EXIT
start_gslb "$ROOT/bench/zones" "127.0.0.1:$PORT" 127.0.0.1:9310 1
echo "== killed backend"
"$PEERS" --servers "gdnsd pdns" --failover-only --failover-ours --failover-reps 20 --ours "gslb=127.0.0.1:$PORT" "$@"
echo "== frozen backend"
"$PEERS" --servers "gdnsd pdns" --failover-only --failover-ours --failover-hang --failover-reps 20 --ours "gslb=127.0.0.1:$PORT" "$@"
