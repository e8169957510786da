#!/usr/bin/env bash
# Probe scale: N endpoints (default 10,000) on 127.1.x.y, every one probed once
# a second (KIND=http, the default: connections reused; KIND=http-fresh: a
# new connection per probe; KIND=https: reused TLS connections, certificate
# verified against a CA the backend makes; KIND=https-fresh: a TLS handshake
# per probe; KIND=tcp: connect only; KIND=dns: a query, answered by a
# second gslb on 0.0.0.0; KIND=icmp: echo, answered by the kernel;
# KIND=exec: /bin/true per probe, try N=1000),
# answered by one small backend
# process (examples/bench_backend.rs). Reports gslb's CPU (share of one core)
# and memory per endpoint (RSS with N endpoints minus RSS with the same zone
# and no checks), plus probes/s and failures from gslb's own metrics.
#
#   bench/probe-scale.sh [N] [SECONDS]      KIND=tcp bench/probe-scale.sh
#   TIMEOUT=1s WARMUP=20 KIND=https bench/probe-scale.sh   (probe timeout, seconds before measuring)
#
# On loopback the kernel runs much of the backend's half of every TCP
# exchange (its SYN, ACK and RST handling) in the sender's softirq, so it is
# charged to gslb: the figures are an upper bound for gslb's own cost.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
N=${1:-10000}; SECS=${2:-30}; KIND=${KIND:-http}; BPORT=${BPORT:-18090}
need dig bind9-dnsutils
build_release
(cd "$ROOT" && cargo build --release --locked --example bench_backend 2>&1 | tail -1)
WORK=$(mktemp -d); trap 'stop_gslb; kill $BACKEND 2>/dev/null || true; rm -rf "$WORK"' EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
TLS=(); case "$KIND" in https*) TLS=(--tls "$WORK/ca.pem");; esac
if [ "$KIND" = dns ]; then
  # gslb itself answers the checks' queries (every endpoint's check asks
  # 127.0.0.1, its `target`).
  "$GSLB" serve --zones "$ROOT/bench/zones" --listen "127.0.0.1:$BPORT" --admin off --state-file off --log-level warn 2>/dev/null & BACKEND=$!
else
  "$ROOT/target/release/examples/bench_backend" "$BPORT" "${TLS[@]}" 2>/dev/null & BACKEND=$!
fi
for i in $(seq 1 100); do [ ${#TLS[@]} = 0 ] || [ -s "$WORK/ca.pem" ] && break; sleep 0.05; done
mkdir -p "$WORK/z" "$WORK/nocheck"
python3 "$ROOT/bench/gen-zone.py" endpoints "$N" "$KIND" "$BPORT" "$WORK/ca.pem" > "$WORK/z/scale.toml"
sed 's/^check = "c"$//' "$WORK/z/scale.toml" > "$WORK/nocheck/scale.toml"

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
metric() { curl -s http://127.0.0.1:9311/metrics | awk -v m="$1" '$0 ~ "^"m {s += $NF} END {printf "%.0f", s}'; }

start_gslb "$WORK/nocheck" 127.0.0.1:5311 127.0.0.1:9311 1
sleep 2; base=$(rss_kb "$GSLB_PID"); stop_gslb

start_gslb "$WORK/z" 127.0.0.1:5311 127.0.0.1:9311 1
WARMUP=${WARMUP:-5}
echo "== $N $KIND endpoints, 1 s interval, timeout ${TIMEOUT:-500ms}; warming up $WARMUP s (first probes spread over the interval)"
sleep "$WARMUP"
t0=$(ticks "$GSLB_PID"); p0=$(metric gslb_probe_results_total); f0=$(metric 'gslb_probe_results_total{.*result="(timeout|refused|reset|connect|status|body|tls|protocol)"'); s0=$(date +%s.%N)
sleep "$SECS"
t1=$(ticks "$GSLB_PID"); p1=$(metric gslb_probe_results_total); f1=$(metric 'gslb_probe_results_total{.*result="(timeout|refused|reset|connect|status|body|tls|protocol)"'); s1=$(date +%s.%N)
rss=$(rss_kb "$GSLB_PID")
# Failed probes since start, by result (timeouts here mean the machine, not a backend, is short of CPU).
fails=$(curl -s http://127.0.0.1:9311/metrics | awk '/^gslb_probe_results_total/ && !/result="success"/ && $NF > 0 {
  match($0, /result="[a-z_]+"/); r = substr($0, RSTART + 8, RLENGTH - 9); n[r] += $NF }
  END { for (r in n) printf "%s%s %d", (s++ ? ", " : ""), r, n[r] }')
hz=$(getconf CLK_TCK)
python3 - "$N" "$KIND" "$t0" "$t1" "$s0" "$s1" "$hz" "$p0" "$p1" "$f0" "$f1" "$base" "$rss" "$fails" <<'PY'
import sys
n, kind, t0, t1, s0, s1, hz, p0, p1, f0, f1, base, rss, fails = sys.argv[1:]
n = int(n); wall = float(s1) - float(s0); cpu = (int(t1) - int(t0)) / int(hz)
probes = (int(p1) - int(p0)) / wall
print(f"endpoints {n} ({kind}), measured {wall:.1f} s")
print(f"  gslb CPU          {cpu / wall * 100:.1f} % of one core ({cpu / wall:.3f} cores)")
print(f"  probes/s          {probes:.0f} (expected {n})")
print(f"  failed probes/s   {(int(f1) - int(f0)) / wall:.1f}  (since start: {fails or 'none'})")
print(f"  CPU per probe     {cpu / max(1, int(p1) - int(p0)) * 1e6:.1f} us")
print(f"  RSS               {int(rss) / 1024:.1f} MiB (same zone without checks: {int(base) / 1024:.1f} MiB)")
print(f"  memory/endpoint   {(int(rss) - int(base)) * 1024 / n / 1024:.1f} KiB")
PY
