#!/usr/bin/env bash
# Probe scale: N endpoints (default 10,000) on 127.1.x.y, every one probed once
# a second (KIND=http, the default: connections reused; KIND=http-fresh: a
# new connection per probe; KIND=https: reused TLS connections, certificate
# verified against a CA the backend makes; KIND=https-fresh: a TLS handshake
# per probe; KIND=tcp: connect only; KIND=dns: a query, answered by a
# second gslb on 0.0.0.0; KIND=icmp: echo, answered by the kernel;
# KIND=exec: /bin/true per probe, try N=1000; KIND=grpc: the health
# protocol over h2c, kept connections),
# answered by one small backend
# process (examples/bench_backend.rs). Reports gslb's CPU (share of one core,
# per probe, and per probe split into user space and the kernel: on
# loopback most of a probe is the kernel's, the same for gslb and gdnsd,
# so the user share is where their costs part) and memory per endpoint
# (RSS with N endpoints minus RSS with the same zone and no checks), plus
# probes/s and failures from gslb's own metrics.
#
#   bench/probe-scale.sh [N] [SECONDS]      KIND=tcp bench/probe-scale.sh
#   TIMEOUT=1s WARMUP=20 KIND=https bench/probe-scale.sh   (probe timeout, seconds before measuring)
#   INTERVAL=2s KIND=http-fresh bench/probe-scale.sh      (probe interval, default 1s)
#
# gdnsd beside it (Debian's gdnsd 3): KIND=gdnsd-http (its http_status
# plugin: GET /health on a new connection per probe, as gdnsd always does)
# or KIND=gdnsd-tcp (tcp_connect), probing the same N addresses of the same
# backend every INTERVAL (2s, gdnsd's least, unless set), measured the same
# way: CPU of the gdnsd process per probe made (and with the backend's: on
# loopback each side's kernel work on the packets it sends is charged to it,
# so how a prober closes moves work between the two), memory per endpoint against
# gdnsd with no monitored addresses. gdnsd counts no probes: probes/s is
# N / interval, and the failures are the addresses its log marks DOWN.
# Compare runs of one batch (interleave kinds: the machine drifts).
#
# PIN=1 puts the prober (gslb or gdnsd, every thread) on CPU 0 and the
# backend on CPU 1, so the backend, woken by every connection, cannot
# preempt the prober on its own CPU (unpinned, it did so on about every
# gslb probe and every second gdnsd probe here). Needs 2 CPUs.
#
# On loopback the kernel runs much of the backend's half of every TCP
# exchange (its SYN, ACK and RST handling) in the sender's softirq, so it is
# charged to gslb: the figures are an upper bound for gslb's own cost.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
N=${1:-10000}; SECS=${2:-30}; KIND=${KIND:-http}; BPORT=${BPORT:-18090}
case "$KIND" in gdnsd-*) INTERVAL=${INTERVAL:-2s};; esac
export INTERVAL=${INTERVAL:-1s}
need dig bind9-dnsutils
case "$KIND" in gdnsd-*) need gdnsd gdnsd;; *) build_release;; esac
build_backend
WORK=$(mktemp -d); trap 'stop_gslb; kill $BACKEND 2>/dev/null || true; rm -rf "$WORK"' EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
TLS=(); case "$KIND" in https*) TLS=(--tls "$WORK/ca.pem");; esac
if [ "$KIND" = dns ]; then
  # gslb itself answers the checks' queries (every endpoint's check asks
  # 127.0.0.1, its `target`).
  "$GSLB" serve --zones "$ROOT/bench/zones" --listen "127.0.0.1:$BPORT" --admin off --state-file off --log-level warn 2>/dev/null & BACKEND=$!
else
  GRPC=(); [ "$KIND" = grpc ] && GRPC=(--grpc)
  "$BACKEND_BIN" "$BPORT" "${TLS[@]}" "${GRPC[@]}" 2>/dev/null & BACKEND=$!
fi
pin() { [ "${PIN:-0}" = 1 ] && taskset -a -p -c "$1" "$2" >/dev/null; return 0; }
# Every run starts from the same kernel state: without the earlier runs'
# connections to the backend's port in the connection-tracking table (the
# container tests' Docker loads it) and in TIME_WAIT. gdnsd closes with a
# FIN, so a run of it leaves 120 s conntrack entries behind, 5,000 a
# second: the table (262,144 here) filled, dropped packets, and the next
# runs failed probes and cost more ("nf_conntrack: table full" in dmesg).
# Only this bench's port is touched.
clean_net() {
  if [ -e /proc/sys/net/netfilter/nf_conntrack_count ]; then
    need conntrack conntrack
    conntrack -D -p tcp --dport "$BPORT" >/dev/null 2>&1 || true
  fi
  ss -K state time-wait "( dport = :$BPORT )" >/dev/null 2>&1 || true
}
pin 1 "$BACKEND"
for i in $(seq 1 100); do [ ${#TLS[@]} = 0 ] || [ -s "$WORK/ca.pem" ] && break; sleep 0.05; done
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# User ticks alone: the split between user space and the kernel is where a
# prober's cost differs from gdnsd's (the kernel's share of a tcp probe is
# the same for both; stime is the total less this).
uticks() { awk '{print $14}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

if [[ "$KIND" == gdnsd-* ]]; then
  secs_of() { python3 -c "import sys; from datetime import timedelta; s=sys.argv[1]; print(int(s[:-1]) * (60 if s.endswith('m') else 1))" "$1"; }
  ival=$(secs_of "$INTERVAL")
  # gdnsd_run DIR CONFIG -> GD_PID (gdnsd 3 stays in the foreground with `start`)
  gdnsd_run() {
    mkdir -p "$1/zones" "$1/run" "$1/state"
    printf '@ SOA ns1 h 1 7200 1800 259200 900\n@ NS ns1\nns1 A 192.0.2.1\n' > "$1/zones/bench.example"
    sed -e "s|@DIR@|$1|g" -e "s|@PORT@|5398|g" "$2" > "$1/config"
    gdnsd -c "$1" start > "$1/log" 2>&1 & GD_PID=$!
    for _ in $(seq 1 600); do dig +time=1 +tries=1 @127.0.0.1 -p 5398 . SOA >/dev/null 2>&1 && return 0; sleep 0.05; done
    echo "gdnsd did not start:"; cat "$1/log"; return 1
  }
  printf 'options => {\n  listen => [ 127.0.0.1:@PORT@ ]\n  run_dir => @DIR@/run\n  state_dir => @DIR@/state\n}\n' > "$WORK/base.config"
  gdnsd_run "$WORK/gbase" "$WORK/base.config"; sleep 2; base=$(rss_kb "$GD_PID"); kill "$GD_PID"; wait "$GD_PID" 2>/dev/null || true
  python3 "$ROOT/bench/gen-zone.py" gdnsd "$N" "${KIND#gdnsd-}" "$BPORT" "$ival" > "$WORK/gdnsd.config"
  clean_net
  gdnsd_run "$WORK/g" "$WORK/gdnsd.config"
  pin 0 "$GD_PID"
  trap 'kill $GD_PID 2>/dev/null || true; kill $BACKEND 2>/dev/null || true; rm -rf "$WORK"' EXIT
  WARMUP=${WARMUP:-5}
  echo "== gdnsd $(gdnsd -h 2>&1 | awk '/version/ {print $NF; exit}'): $N ${KIND#gdnsd-} addresses, interval $INTERVAL, timeout 1s; warming up $WARMUP s"
  sleep "$WARMUP"
  t0=$(ticks "$GD_PID"); u0=$(uticks "$GD_PID"); b0=$(ticks "$BACKEND"); s0=$(date +%s.%N); sleep "$SECS"; t1=$(ticks "$GD_PID"); u1=$(uticks "$GD_PID"); b1=$(ticks "$BACKEND"); s1=$(date +%s.%N)
  rss=$(rss_kb "$GD_PID")
  down=$(grep -c "DOWN" "$WORK/g/log" || true)
  python3 - "$N" "$KIND" "$t0" "$t1" "$s0" "$s1" "$hz" "$ival" "$base" "$rss" "$down" "$b0" "$b1" "$u0" "$u1" <<'PY'
import sys
n, kind, t0, t1, s0, s1, hz, ival, base, rss, down, b0, b1, u0, u1 = sys.argv[1:]
n = int(n); wall = float(s1) - float(s0); cpu = (int(t1) - int(t0)) / int(hz)
probes = n / int(ival)
print(f"endpoints {n} ({kind}), measured {wall:.1f} s")
print(f"  gdnsd CPU         {cpu / wall * 100:.1f} % of one core ({cpu / wall:.3f} cores)")
print(f"  probes/s          {probes:.0f} (N / interval: gdnsd counts none)")
print(f"  marked DOWN       {down} (log lines since start)")
print(f"  CPU per probe     {cpu / (probes * wall) * 1e6:.1f} us")
ucpu = (int(u1) - int(u0)) / int(hz)
print(f"  user / system     {ucpu / (probes * wall) * 1e6:.1f} / {(cpu - ucpu) / (probes * wall) * 1e6:.1f} us")
bcpu = (int(b1) - int(b0)) / int(hz)
print(f"  with the backend  {(cpu + bcpu) / (probes * wall) * 1e6:.1f} us (the backend process: {bcpu / (probes * wall) * 1e6:.1f})")
print(f"  RSS               {int(rss) / 1024:.1f} MiB (no monitored addresses: {int(base) / 1024:.1f} MiB)")
print(f"  memory/endpoint   {(int(rss) - int(base)) * 1024 / n / 1024:.2f} KiB")
PY
  exit 0
fi
mkdir -p "$WORK/z" "$WORK/nocheck"
python3 "$ROOT/bench/gen-zone.py" endpoints "$N" "$KIND" "$BPORT" "$WORK/ca.pem" > "$WORK/z/scale.toml"
sed 's/^check = "c"$//' "$WORK/z/scale.toml" > "$WORK/nocheck/scale.toml"

metric() { curl -s http://127.0.0.1:9311/metrics | awk -v m="$1" '$0 ~ "^"m {s += $NF} END {printf "%.0f", s}'; }

start_gslb "$WORK/nocheck" 127.0.0.1:5311 127.0.0.1:9311 1
sleep 2; base=$(rss_kb "$GSLB_PID"); stop_gslb

clean_net
start_gslb "$WORK/z" 127.0.0.1:5311 127.0.0.1:9311 1
pin 0 "$GSLB_PID"
WARMUP=${WARMUP:-5}
echo "== $N $KIND endpoints, interval $INTERVAL, timeout ${TIMEOUT:-500ms}; warming up $WARMUP s (first probes spread over the interval)"
sleep "$WARMUP"
# The probe counts are scraped outside the CPU window: a scrape of 10,000
# endpoints' series costs gslb about 70 ms of CPU, which is not probing
# (and gdnsd is not scraped). The rate comes from the scrapes' own times.
p0=$(metric gslb_probe_results_total); f0=$(metric 'gslb_probe_results_total{.*result="(timeout|refused|reset|connect|status|body|tls|protocol)"'); q0=$(date +%s.%N)
sleep 1
b0=$(ticks "$BACKEND"); t0=$(ticks "$GSLB_PID"); u0=$(uticks "$GSLB_PID"); s0=$(date +%s.%N)
sleep "$SECS"
b1=$(ticks "$BACKEND"); t1=$(ticks "$GSLB_PID"); u1=$(uticks "$GSLB_PID"); s1=$(date +%s.%N)
p1=$(metric gslb_probe_results_total); f1=$(metric 'gslb_probe_results_total{.*result="(timeout|refused|reset|connect|status|body|tls|protocol)"'); q1=$(date +%s.%N)
rss=$(rss_kb "$GSLB_PID")
# Failed probes since start, by result (timeouts here mean the machine, not a backend, is short of CPU).
fails=$(curl -s http://127.0.0.1:9311/metrics | awk '/^gslb_probe_results_total/ && !/result="success"/ && $NF > 0 {
  match($0, /result="[a-z_]+"/); r = substr($0, RSTART + 8, RLENGTH - 9); n[r] += $NF }
  END { for (r in n) printf "%s%s %d", (s++ ? ", " : ""), r, n[r] }')
python3 - "$N" "$KIND" "$t0" "$t1" "$s0" "$s1" "$hz" "$p0" "$p1" "$f0" "$f1" "$base" "$rss" "$fails" "$b0" "$b1" "$u0" "$u1" "$q0" "$q1" <<'PY'
import sys
n, kind, t0, t1, s0, s1, hz, p0, p1, f0, f1, base, rss, fails, b0, b1, u0, u1, q0, q1 = sys.argv[1:]
n = int(n); wall = float(s1) - float(s0); cpu = (int(t1) - int(t0)) / int(hz)
# Probes/s between the two scrapes; probes made in the CPU window at that rate.
probes = (int(p1) - int(p0)) / (float(q1) - float(q0))
made = probes * wall
print(f"endpoints {n} ({kind}), measured {wall:.1f} s")
print(f"  gslb CPU          {cpu / wall * 100:.1f} % of one core ({cpu / wall:.3f} cores)")
import os
ival = os.environ.get("INTERVAL", "1s")
ival_s = float(ival[:-2]) / 1000 if ival.endswith("ms") else float(ival[:-1])
print(f"  probes/s          {probes:.0f} (expected {n / ival_s:.0f})")
print(f"  failed probes/s   {(int(f1) - int(f0)) / (float(q1) - float(q0)):.1f}  (since start: {fails or 'none'})")
print(f"  CPU per probe     {cpu / max(1, made) * 1e6:.1f} us")
ucpu = (int(u1) - int(u0)) / int(hz)
print(f"  user / system     {ucpu / max(1, made) * 1e6:.1f} / {(cpu - ucpu) / max(1, made) * 1e6:.1f} us")
bcpu = (int(b1) - int(b0)) / int(hz)
print(f"  with the backend  {(cpu + bcpu) / max(1, made) * 1e6:.1f} us (the backend process: {bcpu / max(1, made) * 1e6:.1f})")
print(f"  RSS               {int(rss) / 1024:.1f} MiB (same zone without checks: {int(base) / 1024:.1f} MiB)")
print(f"  memory/endpoint   {(int(rss) - int(base)) * 1024 / n / 1024:.1f} KiB")
PY
