#!/usr/bin/env bash
# Memory under hostile query mixes: gslb's RSS before and after dnsperf
# sends SECONDS of (1) unique random names (NXDOMAIN, each cacheable on its
# own) and (2) unique names below a wildcard, with the default
# answer-cache-mib (32) and 2 UDP workers. Prints RSS, the cache gauge, and
# the growth.
#   bench/cache-memory.sh [SECONDS] [NAMES]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
SECS=${1:-20}; NAMES=${2:-1000000}
need dnsperf dnsperf
need dig bind9-dnsutils
build_release
WORK=$(mktemp -d); trap 'stop_gslb; rm -rf "$WORK"' EXIT
mkdir "$WORK/zones"
cp "$ROOT/bench/zones/"*.toml "$WORK/zones/"
cat >> "$WORK/zones/gslb.example.com.toml" <<'ZONE'

[[record]]
name = "*.wild"
type = "A"
value = "192.0.2.99"
ZONE
python3 - "$WORK" "$NAMES" <<'PY'
import random, string, sys
work, n = sys.argv[1], int(sys.argv[2])
rnd = lambda: ''.join(random.choices(string.ascii_lowercase + string.digits, k=24))
with open(f"{work}/random.txt", "w") as f:
    for i in range(n): f.write(f"{rnd()}-{i}.gslb.example.com A\n")
with open(f"{work}/wild.txt", "w") as f:
    for i in range(n): f.write(f"{rnd()}-{i}.wild.gslb.example.com A\n")
PY
rss() { awk '/VmRSS/ {print $2}' "/proc/$GSLB_PID/status"; }
gauge() { curl -s "http://127.0.0.1:9323/metrics" | awk '/^gslb_answer_cache_bytes / {print $2}'; }
for mix in random wild; do
  start_gslb "$WORK/zones" 127.0.0.1:5323 127.0.0.1:9323 2
  sleep 1
  before=$(rss)
  dnsperf -s 127.0.0.1 -p 5323 -d "$WORK/$mix.txt" -l "$SECS" -c 4 -q 200 -t 1 >"$WORK/dnsperf.txt" 2>&1
  after=$(rss)
  sent=$(awk '/Queries sent/ {print $3}' "$WORK/dnsperf.txt")
  echo "$mix: $sent queries; RSS ${before} KiB -> ${after} KiB (+$((after - before)) KiB); gslb_answer_cache_bytes $(gauge)"
  stop_gslb
done
