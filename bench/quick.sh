#!/usr/bin/env bash
# Quick A/B while optimising: gslb alone, pinned like the peers script
# (server on CPU 1, dnsperf on CPU 0), the peers' query mix, server CPU per
# answered query from /proc. The full comparison is bench/peers.sh.
#   bench/quick.sh [SECONDS] [REPS]
#   LISTEN=0.0.0.0 bench/quick.sh   (a wildcard listener: each answer sent
#                                   from the address asked, IP_PKTINFO)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
SECS=${1:-10}; REPS=${2:-3}
need dnsperf dnsperf
trap stop_gslb EXIT
start_gslb "$ROOT/bench/zones" "${LISTEN:-127.0.0.1}:5321" 127.0.0.1:9321 1
taskset -a -cp 1 "$GSLB_PID" >/dev/null
sleep 2
hz=$(getconf CLK_TCK)
for r in $(seq 1 "$REPS"); do
  t0=$(awk '{print $14+$15}' "/proc/$GSLB_PID/stat")
  out=$(taskset -c 0 dnsperf -s 127.0.0.1 -p 5321 -d "$PEER_QUERIES" -l "$SECS" -c 4 -q 200 2>&1)
  t1=$(awk '{print $14+$15}' "/proc/$GSLB_PID/stat")
  q=$(echo "$out" | awk '/Queries completed/ {print $3}')
  qps=$(echo "$out" | awk '/Queries per second/ {print $4}')
  lost=$(echo "$out" | awk '/Queries lost/ {print $3}')
  python3 -c "print(f'rep $r: qps {float($qps):.0f}  lost $lost  srv us/q {($t1-$t0)/$hz/$q*1e6:.2f}')"
done
