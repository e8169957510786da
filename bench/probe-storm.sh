#!/usr/bin/env bash
# Failure storm: N tcp endpoints (default 10,000, 100 a region, as
# probe-scale's zone) probed every INTERVAL (2s) against one backend, which
# is then killed, so every endpoint goes down within fall x recheck. Reports
# the prober thread's CPU (`gslb-probes`; scrapes run on other threads) over
# the storm, until the last endpoint is down, against the same thread's CPU
# per second of steady probing before it, and how long the storm took.
# Beyond steady probing, that is the storm's rechecks and each
# transition's own cost (logs at warn, as bench/lib.sh starts gslb; the
# journal, regions, gauges).
#
#   bench/probe-storm.sh [N] [ROUNDS]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
N=${1:-10000}; ROUNDS=${2:-1}; BPORT=${BPORT:-18090}
export INTERVAL=${INTERVAL:-2s}
build_release
build_backend
WORK=$(mktemp -d); BACKEND=""
trap 'stop_gslb; [ -n "$BACKEND" ] && kill $BACKEND 2>/dev/null; rm -rf "$WORK"' EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
mkdir -p "$WORK/z"
python3 "$ROOT/bench/gen-zone.py" endpoints "$N" tcp "$BPORT" > "$WORK/z/scale.toml"
hz=$(getconf CLK_TCK)
thread_ticks() { awk '{print $14 + $15}' "$1/stat"; }
down_count() { curl -s http://127.0.0.1:9311/metrics | awk '/^gslb_endpoint_up/ && $NF == 0 {n++} END {print n + 0}'; }
for r in $(seq 1 "$ROUNDS"); do
  "$BACKEND_BIN" "$BPORT" 2>/dev/null & BACKEND=$!
  start_gslb "$WORK/z" 127.0.0.1:5311 127.0.0.1:9311 1
  T=$(dirname "$(grep -l '^gslb-probes$' /proc/"$GSLB_PID"/task/*/comm | head -1)")
  sleep 8   # every endpoint probed and up
  a=$(thread_ticks "$T"); sleep 4; b=$(thread_ticks "$T")
  steady=$(python3 -c "print(($b - $a) / 4)")
  s0=$(date +%s.%N); a=$(thread_ticks "$T")
  kill "$BACKEND"; wait "$BACKEND" 2>/dev/null || true; BACKEND=""
  for _ in $(seq 1 600); do [ "$(down_count)" -ge "$N" ] && break; sleep 0.25; done
  b=$(thread_ticks "$T"); s1=$(date +%s.%N)
  python3 - "$r" "$N" "$a" "$b" "$s0" "$s1" "$steady" "$hz" "$(down_count)" <<'PY'
import sys
r, n, a, b, s0, s1, steady, hz, down = sys.argv[1:]
wall = float(s1) - float(s0); storm = (int(b) - int(a)) / int(hz); base = float(steady) / int(hz) * wall
# The storm's probes are not the steady ones (each endpoint fails fall
# times, recheck apart), so the difference is not the transitions' alone.
print(f"round {r}: {down} of {n} endpoints down after {wall:.2f} s; prober thread {storm * 1000:.0f} ms of CPU "
      f"over the storm (steady probing: {float(steady) / int(hz) * 1000:.0f} ms a second, {base * 1000:.0f} ms in as long)")
PY
  stop_gslb
done
