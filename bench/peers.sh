#!/usr/bin/env bash
# gslb side by side with gdnsd, PowerDNS (Lua records), Knot and NSD, in one
# run of bench/peers/run.sh: same zone, same query mix, same dnsperf load,
# interleaved. gslb serves bench/zones/ (api: health-checked failover, www:
# weighted 3:1, checked against the script's own HTTP backends).
#
#   bench/peers.sh                         # the default comparison (pinned mode)
#   bench/peers.sh --reps 5 --duration 20  # any bench/peers/run.sh option passes through
#   bench/peers.sh --mode shared           # gslb gets 2 UDP workers, like the peers
#   GSLB=path/to/gslb NO_BUILD=1 bench/peers.sh   # a given binary, no cargo build
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need dig bind9-dnsutils
build_release

PORT=${GSLB_PORT:-5310}
workers=1
for a in "$@"; do [ "$a" = shared ] && workers=2; done
trap stop_gslb EXIT
start_gslb "$ROOT/bench/zones" "127.0.0.1:$PORT" 127.0.0.1:9310 "$workers"
echo "== gslb pid $GSLB_PID on 127.0.0.1:$PORT ($workers UDP worker(s))"
"$PEERS" --ours "gslb=127.0.0.1:$PORT" "$@"
