#!/usr/bin/env bash
# Overload: gslb's maximum rate is measured first (dnsperf, closed loop),
# then twice that rate is offered for SECONDS over UDP while TCP clients
# query at the same time. Checks, and exits 1 if one fails:
#   - the process is alive afterwards;
#   - its RSS (sampled every 0.5 s) stays under RSS_LIMIT_MIB (100, the bound README documents for the defaults);
#   - the first query after the load is answered within 1 s;
#   - no health verdict changed during the load (both backends stay up).
# Backends: python http.server (HTTP/1.1) on 127.0.0.2 and 127.0.0.3:18080,
# as bench/zones expects. Traffic only to 127.0.0.0/8.
#   bench/overload.sh [SECONDS]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
SECS=${1:-20}; RSS_LIMIT_MIB=${RSS_LIMIT_MIB:-100}
need dnsperf dnsperf
need dig bind9-dnsutils
need curl curl
build_release
WORK=$(mktemp -d); BACKENDS=()
cleanup() { stop_gslb; for p in "${BACKENDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
mkdir "$WORK/www"; echo OK > "$WORK/www/health"
for ip in 127.0.0.2 127.0.0.3; do
  python3 -m http.server --protocol HTTP/1.1 --bind "$ip" 18080 --directory "$WORK/www" >/dev/null 2>&1 &
  BACKENDS+=("$!")
done
start_gslb "$ROOT/bench/zones" 127.0.0.1:5324 127.0.0.1:9324 2
metric_sum() { curl -s http://127.0.0.1:9324/metrics | awk -v m="$1" 'index($0, m)==1 {s+=$NF} END {print s+0}'; }
until [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:9324/readyz)" = 200 ]; do sleep 0.2; done
sleep 2
max=$(dnsperf -s 127.0.0.1 -p 5324 -d "$PEER_QUERIES" -l 5 -c 4 -q 200 2>&1 | awk '/Queries per second/ {printf "%d", $4}')
offer=$((max * 2))
echo "== maximum rate ${max} q/s; offering ${offer} q/s over UDP for ${SECS} s, with 32 TCP clients"
transitions_before=$(metric_sum 'gslb_state_transitions_total')
dnsperf -s 127.0.0.1 -p 5324 -d "$PEER_QUERIES" -l "$SECS" -c 8 -q 2000 -Q "$offer" >"$WORK/udp.txt" 2>&1 &
udp=$!
dnsperf -m tcp -s 127.0.0.1 -p 5324 -d "$PEER_QUERIES" -l "$SECS" -c 32 -q 64 >"$WORK/tcp.txt" 2>&1 &
tcp=$!
peak=0
while kill -0 "$udp" 2>/dev/null; do
  r=$(awk '/VmRSS/ {print $2}' "/proc/$GSLB_PID/status" 2>/dev/null || echo 0)
  [ "$r" -gt "$peak" ] && peak=$r
  sleep 0.5
done
wait "$udp" || true; wait "$tcp" || true
t0=$(date +%s%N)
answered=no
for _ in $(seq 1 20); do
  if dig +time=1 +tries=1 @127.0.0.1 -p 5324 api.gslb.example.com A +short | grep -q .; then answered=yes; break; fi
done
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
transitions_after=$(metric_sum 'gslb_state_transitions_total')
alive=no; kill -0 "$GSLB_PID" 2>/dev/null && alive=yes
echo "UDP: $(awk '/Queries sent/ {s=$3} /Queries completed/ {c=$3} /Queries per second/ {q=$4} END {print s" sent, "c" answered, "q" q/s"}' "$WORK/udp.txt")"
echo "TCP: $(awk '/Queries sent/ {s=$3} /Queries completed/ {c=$3} /Queries per second/ {q=$4} END {print s" sent, "c" answered, "q" q/s"}' "$WORK/tcp.txt")"
echo "alive: $alive; peak RSS $((peak / 1024)) MiB (limit ${RSS_LIMIT_MIB}); first answer after the load in ${ms} ms ($answered); transitions during the load: $((transitions_after - transitions_before))"
fail=0
[ "$alive" = yes ] || { echo "FAIL: gslb died"; fail=1; }
[ "$((peak / 1024))" -lt "$RSS_LIMIT_MIB" ] || { echo "FAIL: RSS over ${RSS_LIMIT_MIB} MiB"; fail=1; }
[ "$answered" = yes ] && [ "$ms" -lt 1000 ] || { echo "FAIL: no answer within 1 s after the load"; fail=1; }
[ "$transitions_after" = "$transitions_before" ] || { echo "FAIL: verdicts changed under load"; fail=1; }
exit "$fail"
