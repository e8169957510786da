#!/usr/bin/env bash
# Cluster benchmark: three gslb nodes and one etcd (Debian's etcd-server) on
# loopback.
#   1. Answer spread: the time between the first and the last of 3 nodes
#      changing their answer, over TRIALS failovers and recoveries
#      (bench/cluster-spread.py).
#   2. CPU per query of a cluster node against a single node (no
#      [cluster]) with the same zone, in the same run: both pinned to CPU 1,
#      dnsperf on CPU 0, REPS interleaved runs.
#   3. etcd requests per second in steady state with N endpoints (default
#      10,000) on 3 nodes: every gRPC message etcd receives (unary calls and
#      stream messages such as lease keep-alives), from etcd's own metrics.
#   4. Time for a fourth node to join: load the cluster state for N
#      endpoints (its "loaded the cluster state" log line), and from process
#      start to its first DNS answer.
#
#   bench/cluster.sh            TRIALS=20 N=10000 SECS=30 REPS=3 bench/cluster.sh
#   ONLY="2 4" bench/cluster.sh   (parts 1 and 2 share nodes: part 2 runs part 1 too)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
TRIALS=${TRIALS:-20}; N=${N:-10000}; SECS=${SECS:-30}; REPS=${REPS:-3}; ONLY=" ${ONLY:-1 2 3 4} "
part() { [[ "$ONLY" == *" $1 "* ]]; }
need etcd etcd-server
need etcdctl etcd-client
need dnsperf dnsperf
need dig bind9-dnsutils
need curl curl
build_release
build_backend
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  stop_gslb
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
hz=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

EPORT=${EPORT:-23791}; PPORT=${PPORT:-23801}; ETCD="http://127.0.0.1:$EPORT"
etcd --name bench --data-dir "$WORK/etcd" \
  --listen-client-urls "$ETCD" --advertise-client-urls "$ETCD" \
  --listen-peer-urls "http://127.0.0.1:$PPORT" --initial-advertise-peer-urls "http://127.0.0.1:$PPORT" \
  --initial-cluster "bench=http://127.0.0.1:$PPORT" --logger zap --log-level warn > "$WORK/etcd.log" 2>&1 &
ETCD_PID=$!; PIDS+=("$ETCD_PID")
for i in $(seq 1 200); do curl -sf "$ETCD/health" >/dev/null && break; sleep 0.05; done
echo "== etcd $(etcd --version | head -1 | awk '{print $3}') on $ETCD"

if part 1 || part 2; then
echo "== 1. answer spread, $TRIALS failovers and $TRIALS recoveries (check: interval 1s, fall 3, rise 2, recheck 200ms)"
python3 "$ROOT/bench/cluster-spread.py" "$GSLB" "$ETCD" "$WORK/spread" "$TRIALS" --keep > "$WORK/spread.out" 2>&1 &
SPREAD=$!; PIDS+=("$SPREAD")
for i in $(seq 1 6000); do grep -q '^NODES' "$WORK/spread.out" && break
  kill -0 "$SPREAD" 2>/dev/null || { cat "$WORK/spread.out"; exit 1; }; sleep 0.1; done
grep -v '^NODES' "$WORK/spread.out"
read -r -a nodes <<< "$(awk '/^NODES/ {print $2, $3, $4, $6, $7, $8}' "$WORK/spread.out")"
NODE_PORT=${nodes[0]}; NODE_PID=${nodes[3]}
PIDS+=("${nodes[3]}" "${nodes[4]}" "${nodes[5]}")

fi
if part 2; then
echo "== 2. CPU per query: cluster node ns1 against a single node, same zone, ${REPS}x10s interleaved"
start_gslb "$WORK/spread/zones" 127.0.0.1:5341 127.0.0.1:9341 1
printf '%s\n' "api.gslb.example.com A" "static.gslb.example.com A" "gslb.example.com SOA" \
  "nothing.gslb.example.com A" "api.gslb.example.com AAAA" > "$WORK/queries.txt"
taskset -a -cp 1 "$GSLB_PID" >/dev/null; taskset -a -cp 1 "$NODE_PID" >/dev/null
for i in $(seq 1 100); do dig +short +time=1 +tries=1 @127.0.0.1 -p 5341 api.gslb.example.com | grep -q 127.0.0.2 && break; sleep 0.1; done
for r in $(seq 1 "$REPS"); do
  for s in "cluster:$NODE_PORT:$NODE_PID" "single:5341:$GSLB_PID"; do
    IFS=: read -r name port pid <<< "$s"
    t0=$(ticks "$pid")
    out=$(taskset -c 0 dnsperf -s 127.0.0.1 -p "$port" -d "$WORK/queries.txt" -l 10 -c 4 -q 200 2>&1)
    t1=$(ticks "$pid")
    q=$(echo "$out" | awk '/Queries completed/ {print $3}')
    echo "$name $r $q $(( t1 - t0 ))" >> "$WORK/cpu.txt"
  done
done
python3 - "$WORK/cpu.txt" "$hz" <<'PY'
import sys, statistics as st
hz = int(sys.argv[2]); runs = {}
for line in open(sys.argv[1]):
    name, r, q, t = line.split()
    runs.setdefault(name, []).append((int(t) / hz / int(q) * 1e6, int(q) / 10))
for name, v in runs.items():
    us = sorted(x for x, _ in v); qps = sorted(y for _, y in v)
    print(f"  {name:8} CPU per query {st.median(us):.2f} us [{us[0]:.2f}-{us[-1]:.2f}]   qps {st.median(qps):.0f} [{qps[0]:.0f}-{qps[-1]:.0f}]")
c = st.median(x for x, _ in runs["cluster"]); s = st.median(x for x, _ in runs["single"])
print(f"  cluster / single: {c / s:.2f}")
PY
stop_gslb
fi
if part 1 || part 2; then kill "$SPREAD" "${nodes[3]}" "${nodes[4]}" "${nodes[5]}" 2>/dev/null || true; fi
if part 3 || part 4; then

echo "== 3. $N endpoints on 3 nodes (check interval 5s): etcd requests in steady state over ${SECS}s"
"$BACKEND_BIN" 18090 2>/dev/null & PIDS+=($!)
mkdir -p "$WORK/scale/zones"
python3 "$ROOT/bench/gen-zone.py" endpoints "$N" http 18090 | sed 's/^interval = "1s"$/interval = "5s"/' > "$WORK/scale/zones/scale.toml"
node_cfg() { # node_cfg I DNS_PORT LOG_LEVEL
  printf 'zones = "%s"\nlisten = ["127.0.0.1:%s"]\nadmin = "127.0.0.1:%s"\nstate-file = "off"\nlog-level = "%s"\nprobe-source = "127.0.1.%s"\n\n[cluster]\nname = "scale"\nnode = "ns%s"\netcd = ["%s"]\n' \
    "$WORK/scale/zones" "$2" "$((9350 + $1))" "$3" "$1" "$1" "$ETCD" > "$WORK/scale/ns$1.toml"
}
for i in 1 2 3; do
  node_cfg "$i" "$((5350 + i))" warn
  "$GSLB" serve --config "$WORK/scale/ns$i.toml" --udp-workers 1 > "$WORK/scale/ns$i.log" 2>&1 & PIDS+=($!)
done
count() { ETCDCTL_API=3 etcdctl --endpoints "$ETCD" get "$1" --prefix --keys-only --limit 1 -w json | python3 -c 'import json,sys; print(json.load(sys.stdin).get("count", 0))'; }
for i in $(seq 1 600); do [ "$(count /gslb/scale/obs/)" -ge $((3 * N)) ] && break; sleep 0.5; done
echo "  observations in etcd: $(count /gslb/scale/obs/) (3 nodes x $N endpoints)"
sleep 5
etcd_metric() { curl -s "$ETCD/metrics" | awk -v m="$1" '$1 ~ "^"m {s += $NF} END {printf "%.0f", s}'; }
gslb_reqs() { for i in 1 2 3; do curl -s "http://127.0.0.1:$((9350 + i))/metrics"; done | awk '/^gslb_cluster_etcd_requests_total/ {s += $NF} END {printf "%.0f", s}'; }
m0=$(etcd_metric grpc_server_msg_received_total); w0=$(etcd_metric etcd_mvcc_put_total); g0=$(gslb_reqs); s0=$(date +%s.%N)
sleep "$SECS"
m1=$(etcd_metric grpc_server_msg_received_total); w1=$(etcd_metric etcd_mvcc_put_total); g1=$(gslb_reqs); s1=$(date +%s.%N)
if part 3; then
python3 -c "
w = $s1 - $s0
print(f'  etcd gRPC messages received: {($m1 - $m0) / w:.2f}/s   puts: {($w1 - $w0) / w:.2f}/s   gslb requests (3 nodes): {($g1 - $g0) / w:.2f}/s')"
fi

fi
if part 4; then
echo "== 4. a fourth node joins a cluster of 3 x $N observations, ${REPS} times"
node_cfg 4 5354 info
for r in $(seq 1 "$REPS"); do
  t0=$(date +%s.%N)
  "$GSLB" serve --config "$WORK/scale/ns4.toml" --udp-workers 1 --log-format json > "$WORK/scale/ns4.log" 2>&1 &
  P4=$!; PIDS+=("$P4")
  for i in $(seq 1 2000); do dig +time=1 +tries=1 @127.0.0.1 -p 5354 static.scale.example A >/dev/null 2>&1 && break; sleep 0.01; done
  t1=$(date +%s.%N)
  load=$(grep -o '"load_ms":[0-9.]*' "$WORK/scale/ns4.log" | head -1 | cut -d: -f2 || true)
  python3 -c "print(f'  run $r: cluster state loaded in {float(\"${load:-nan}\"):.0f} ms; process start to first answer {($t1 - $t0) * 1000:.0f} ms')"
  kill "$P4"; wait "$P4" 2>/dev/null || true
done
fi
