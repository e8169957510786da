#!/usr/bin/env bash
# Latency percentiles at a fixed rate (default 20,000 qps), gslb beside
# gdnsd: the peers script reports avg/sd/max; this reports p50/p99/p99.9
# from dnsperf -v (one latency per query). gdnsd is rendered from
# bench/peers/templates (same zone, same health-checked failover and weighted
# names, same backends); both servers pinned to CPU 1, dnsperf on CPU 0, runs
# interleaved.
#   bench/latency.sh [QPS] [SECONDS] [REPS]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
QPS=${1:-20000}; SECS=${2:-10}; REPS=${3:-3}
TPL="$ROOT/bench/peers/templates"
need dnsperf dnsperf
need gdnsd gdnsd
build_release
WORK=$(mktemp -d)
PIDS=()
cleanup() { stop_gslb; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
# The peers' HTTP health backends.
mkdir -p "$WORK/www"; echo OK > "$WORK/www/health"
for ip in 127.0.0.2 127.0.0.3; do
  python3 -m http.server --bind "$ip" 18080 --directory "$WORK/www" >/dev/null 2>&1 & PIDS+=($!)
done
# gdnsd from the peers' templates (fastest timing, 1 UDP thread).
mkdir -p "$WORK/gdnsd/zones" "$WORK/gdnsd/run" "$WORK/gdnsd/state"
sed -e "s|@DIR@|$WORK/gdnsd|g" -e "s|@PORT@|5331|g" -e "s|@THREADS@|1|g" "$TPL/gdnsd.config" > "$WORK/gdnsd/config"
cat "$TPL/zone-common.zone" "$TPL/zone-gdnsd-tail.zone" > "$WORK/gdnsd/zones/gslb.example.com"
taskset -c 1 gdnsd -c "$WORK/gdnsd" start > "$WORK/gdnsd.log" 2>&1 & PIDS+=($!)
start_gslb "$ROOT/bench/zones" 127.0.0.1:5332 127.0.0.1:9332 1
taskset -a -cp 1 "$GSLB_PID" >/dev/null
for _ in $(seq 1 100); do dig +short +time=1 +tries=1 @127.0.0.1 -p 5331 api.gslb.example.com | grep -q 127.0.0.2 && break; sleep 0.2; done
for _ in $(seq 1 100); do dig +short +time=1 +tries=1 @127.0.0.1 -p 5332 api.gslb.example.com | grep -q 127.0.0.2 && break; sleep 0.2; done
echo "== fixed rate $QPS qps, ${SECS}s x $REPS, interleaved; latency per query from dnsperf -v"
for r in $(seq 1 "$REPS"); do
  for s in gdnsd:5331 gslb:5332; do
    taskset -c 0 dnsperf -s 127.0.0.1 -p "${s#*:}" -d "$PEER_QUERIES" -l "$SECS" -Q "$QPS" -q 1000 -v 2>/dev/null \
      | awk '/^> T / {print "lost"; next} /^> / {print $NF}' > "$WORK/lat-${s%:*}-$r.txt"
  done
done
python3 - "$WORK" "$REPS" <<'PY'
import sys, statistics as st
work, reps = sys.argv[1], int(sys.argv[2])
def pct(v, p): return v[min(len(v) - 1, int(p / 100 * len(v)))]
print(f"{'server':8} {'answered':>8} {'lost':>6} {'p50 us':>8} {'p99 us':>8} {'p99.9 us':>9} {'max us':>8}   (median over {reps} runs)")
rows = {}
for s in ("gdnsd", "gslb"):
    runs = []
    for r in range(1, reps + 1):
        lines = [x.strip() for x in open(f"{work}/lat-{s}-{r}.txt") if x.strip()]
        v = sorted(float(x) * 1e6 for x in lines if x != "lost")  # answered queries only
        runs.append((len(v), len(lines) - len(v), pct(v, 50), pct(v, 99), pct(v, 99.9), v[-1]))
    med = [st.median(c) for c in zip(*runs)]
    rows[s] = med
    print(f"{s:8} {med[0]:8.0f} {med[1]:6.0f} {med[2]:8.1f} {med[3]:8.1f} {med[4]:9.1f} {med[5]:8.1f}")
print(f"gslb/gdnsd p99: {rows['gslb'][3] / rows['gdnsd'][3]:.2f}x (percentiles of answered queries; lost = dnsperf timeouts)")
PY
