#!/usr/bin/env bash
# gslb's peer benchmark: gdnsd, PowerDNS (bind backend + Lua records), Knot and
# NSD on loopback, beside an already running gslb (--ours), on the same zone
# (templates/, the records of bench/zones/) with the same queries
# (queries.txt) and the same dnsperf load, interleaved (A B C A B C ...).
# Prints an answer check, medians of closed-loop and fixed-rate dnsperf runs,
# and health-check failover times. Missing Debian packages are installed;
# everything started is stopped by PID on exit; traffic stays on 127.0.0.0/8.
# bench/peers.sh and bench/failover.sh start gslb and call this script.
#
#   bench/peers/run.sh [options] --ours gslb=127.0.0.1:5310
#
# Options:
#   --ours NAME=HOST:PORT  a running server to add (loopback; repeatable)
#   --servers "LIST"       peers to start, default "gdnsd pdns pdns-shared knot nsd"
#                          (pdns: a fresh Lua state per query, PowerDNS's default;
#                          pdns-shared: enable-lua-records=shared), or "none"
#   --mode pinned|shared   pinned (default): 1 worker per server, every server
#                          on CPU 1, dnsperf on CPU 0; shared: 2 workers, no pinning
#   --reps N               interleaved repetitions (default 3)
#   --duration S           seconds per dnsperf run (default 15)
#   --no-failover          no failover trials
#   --failover-only        failover trials only (no dnsperf)
#   --failover-reps N      failover trials (default 3)
#   --failover-ours        poll the --ours servers in the failover trials too
#   --failover-hang        freeze the primary backend (SIGSTOP, probes time out)
#                          instead of killing it (connection refused)
#   --dnssec               signed answers: every query with DO set (dnsperf -D),
#                          peers "knot-signed pdns-signed" by default (Knot's
#                          mod-onlinesign, PowerDNS live signing with its Lua
#                          records), CPU ratios against the first --ours, and a
#                          random-name flood (each name a fresh denial to sign)
#                          with each server's memory after it; no failover trials
#   --flood-names N        names in the flood's query file (default 1000000)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TPL="$HERE/templates"
QUERIES="$HERE/queries.txt"

# Fixed by the zone (templates/ and bench/zones/): HTTP GET /health on port
# 18080 of the primary and the secondary, TTL 30, check interval 1 s.
PRIMARY=127.0.0.2
SECONDARY=127.0.0.3
BACKEND_PORT=18080
declare -A PORT_OF=([gdnsd]=5301 [pdns]=5302 [knot]=5303 [nsd]=5304 [pdns-shared]=5305
                   [knot-signed]=5306 [pdns-signed]=5307)
CLIENTS=4        # dnsperf -c
OUTSTANDING=200  # dnsperf -q of the closed-loop run
LAT_QPS=20000    # dnsperf -Q of the fixed-rate run

SERVERS="gdnsd pdns pdns-shared knot nsd"
SERVERS_SET=0
DNSSEC=0
FLOOD_NAMES=1000000
MODE=pinned
REPS=3
DURATION=15
BENCH=1
FAILOVER=1
FAILOVER_REPS=3
FAILOVER_OURS=0
FAILOVER_HANG=0
OURS=()

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --ours) OURS+=("$2"); shift 2;;
    --servers) SERVERS="$2"; SERVERS_SET=1; [ "$SERVERS" = none ] && SERVERS=""; shift 2;;
    --dnssec) DNSSEC=1; shift;;
    --flood-names) FLOOD_NAMES="$2"; shift 2;;
    --mode) MODE="$2"; shift 2;;
    --reps) REPS="$2"; shift 2;;
    --duration) DURATION="$2"; shift 2;;
    --no-failover) FAILOVER=0; shift;;
    --failover-only) BENCH=0; shift;;
    --failover-reps) FAILOVER_REPS="$2"; shift 2;;
    --failover-ours) FAILOVER_OURS=1; shift;;
    --failover-hang) FAILOVER_HANG=1; shift;;
    -h|--help) usage; exit 0;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2;;
  esac
done
# Signed answers: the peers that sign online, every query with DO, ratios
# against the first --ours (gslb unsigned, from bench/peers.sh --dnssec).
DO=(); DIG_DO=(); REF=gdnsd
if [ "$DNSSEC" = 1 ]; then
  [ "$SERVERS_SET" = 1 ] || SERVERS="knot-signed pdns-signed"
  DO=(-D); DIG_DO=(+dnssec); FAILOVER=0
  REF="${OURS[0]%%=*}"; [ -n "$REF" ] || REF=knot-signed
fi
for s in $SERVERS; do
  [ -n "${PORT_OF[$s]:-}" ] || { echo "unknown server: $s" >&2; exit 2; }
done
case "$MODE" in
  pinned) SRV_CPU=1; GEN_CPU=0; THREADS=1
          [ "$(nproc)" -ge 2 ] || { echo "pinned mode needs 2 CPUs" >&2; exit 2; };;
  shared) SRV_CPU=""; GEN_CPU=""; THREADS=2;;
  *) echo "--mode must be pinned or shared" >&2; exit 2;;
esac

# ------------------------------------------------------------------ packages
missing=()
command -v dnsperf >/dev/null || missing+=(dnsperf)
command -v dig >/dev/null || missing+=(bind9-dnsutils)
command -v python3 >/dev/null || missing+=(python3)
command -v ss >/dev/null || missing+=(iproute2)
command -v pgrep >/dev/null || missing+=(procps)
for s in $SERVERS; do
  case "$s" in
    gdnsd) command -v gdnsd >/dev/null || missing+=(gdnsd);;
    pdns|pdns-shared|pdns-signed)
      command -v pdns_server >/dev/null || missing+=(pdns-server)
      compgen -G '/usr/lib/*/pdns/libbindbackend.so' >/dev/null || missing+=(pdns-backend-bind);;
    knot|knot-signed) command -v knotd >/dev/null || missing+=(knot);;
    nsd) command -v nsd >/dev/null || missing+=(nsd);;
  esac
done
if [ "${#missing[@]}" -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  echo "== installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  # A policy-rc.d that says no keeps the packages from starting daemons on port 53.
  policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d; policy=1
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ "$policy" = 0 ] || $SUDO rm -f /usr/sbin/policy-rc.d
  for unit in gdnsd pdns knot nsd; do $SUDO systemctl disable "$unit" >/dev/null 2>&1 || true; done
fi

# ------------------------------------------------------------------ processes
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gslb-peers.XXXXXX")"
PIDS=()                 # everything started, in order
declare -A SPID=()      # server -> pid (CPU accounting)
declare -A SHOST=() SPORT=()
declare -A BACKEND_PID=()

descendants() { # PID -> PID and all its descendants
  local c
  echo "$1"
  for c in $(pgrep -P "$1" || true); do descendants "$c"; done
}
stop_pid() {
  local pid="$1" all p i
  kill -0 "$pid" 2>/dev/null || return 0
  all="$(descendants "$pid")"
  kill -TERM "$pid" 2>/dev/null || true
  kill -CONT "$pid" 2>/dev/null || true
  for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  for p in $all; do kill -KILL "$p" 2>/dev/null || true; done
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[$i]}"; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_busy() { # ADDR PORT: a TCP or UDP socket is bound there
  ss -Hlntu "( sport = :$2 )" | awk '{print $5}' | grep -Eq "^($1|0\.0\.0\.0|\*|\[::\]):$2\$"
}
dig1() { # HOST PORT NAME TYPE -> the +short answer
  dig +short +norec +time=1 +tries=1 @"$1" -p "$2" "$3" "$4" 2>/dev/null || true
}
wait_answer() { # HOST PORT NAME TYPE REGEX TIMEOUT_S
  local t0=$SECONDS
  while [ $((SECONDS - t0)) -lt "$6" ]; do
    dig1 "$1" "$2" "$3" "$4" | grep -Eq "$5" && return 0
    sleep 0.2
  done
  return 1
}
now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $((t / 1000)); }

# ------------------------------------------------------------------ health backends
start_backend() { # ADDR: python http.server (HTTP/1.1 keep-alive) answering /health with 200
  if port_busy "$1" "$BACKEND_PORT"; then
    echo "!! $1:$BACKEND_PORT is taken (not by this run)" >&2; exit 1
  fi
  mkdir -p "$WORK/www"; echo OK > "$WORK/www/health"
  # HTTP/1.1: connections stay open between checks (for the checkers that keep
  # them), as a real backend's would; a killed backend closes them all.
  python3 -m http.server --protocol HTTP/1.1 --bind "$1" "$BACKEND_PORT" --directory "$WORK/www" >"$WORK/backend-$1.log" 2>&1 &
  PIDS+=("$!"); BACKEND_PID[$1]=$!
  local i
  for i in $(seq 1 50); do
    python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
      "http://$1:$BACKEND_PORT/health" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "!! backend $1 did not come up:" >&2; tail -3 "$WORK/backend-$1.log" >&2; exit 1
}

# ------------------------------------------------------------------ peers
render() { # TEMPLATE DIR PORT [PDNS_LUA] -> stdout
  sed -e "s|@DIR@|$2|g" -e "s|@PORT@|$3|g" -e "s|@THREADS@|$THREADS|g" \
      -e "s|@PDNS_LUA@|${4:-yes}|g" "$TPL/$1"
}
zone() { cat "$TPL/zone-common.zone" "$TPL/zone-$1-tail.zone"; }

start_server() { # NAME
  local s="$1" port="${PORT_OF[$1]}" d="$WORK/$1" p
  if port_busy 127.0.0.1 "$port"; then
    echo "!! 127.0.0.1:$port is taken (not by this run): $(ss -Hlnup "( sport = :$port )" | head -1)" >&2; exit 1
  fi
  mkdir -p "$d"
  local cmd=()
  case "$s" in
    gdnsd)
      mkdir -p "$d/zones" "$d/run" "$d/state"
      render gdnsd.config "$d" "$port" > "$d/config"
      zone gdnsd > "$d/zones/gslb.example.com"
      cmd=(gdnsd -c "$d" start);;
    pdns|pdns-shared|pdns-signed)
      local lua=yes; [ "$s" = pdns-shared ] && lua=shared
      render pdns.conf "$d" "$port" "$lua" > "$d/pdns.conf"
      render pdns-named.conf "$d" "$port" > "$d/named.conf"
      zone pdns > "$d/gslb.example.com.zone"
      if [ "$s" = pdns-signed ]; then
        # Live signing: keys in the bind backend's DNSSEC database, one
        # combined ECDSA P-256 key (PowerDNS's default for secure-zone).
        echo "bind-dnssec-db=$d/dnssec.db" >> "$d/pdns.conf"
        pdnsutil --config-dir="$d" create-bind-db "$d/dnssec.db" >"$d/pdnsutil.log" 2>&1
        pdnsutil --config-dir="$d" secure-zone gslb.example.com >>"$d/pdnsutil.log" 2>&1 \
          || { echo "!! pdnsutil secure-zone failed:" >&2; cat "$d/pdnsutil.log" >&2; exit 1; }
      fi
      cmd=(pdns_server --config-dir="$d");;
    knot|knot-signed)
      mkdir -p "$d/db"
      render "$s.conf" "$d" "$port" > "$d/knot.conf"
      zone static > "$d/gslb.example.com.zone"
      cmd=(knotd -c "$d/knot.conf");;
    nsd)
      render nsd.conf "$d" "$port" > "$d/nsd.conf"
      zone static > "$d/gslb.example.com.zone"
      cmd=(nsd -d -c "$d/nsd.conf");;
  esac
  if [ -n "$SRV_CPU" ]; then cmd=(taskset -c "$SRV_CPU" "${cmd[@]}"); fi
  "${cmd[@]}" >"$d/log" 2>&1 &
  PIDS+=("$!"); SPID[$s]=$!; SHOST[$s]=127.0.0.1; SPORT[$s]=$port
  if ! wait_answer 127.0.0.1 "$port" static.gslb.example.com A '^192\.0\.2\.10$' 30; then
    echo "!! $s did not answer on 127.0.0.1:$port; log:" >&2; tail -20 "$d/log" >&2; exit 1
  fi
  # Pin every thread again: knotd pins its UDP workers itself (worker 0 to CPU 0,
  # the load generator's).
  if [ -n "$SRV_CPU" ]; then
    for p in $(descendants "${SPID[$s]}"); do taskset -a -cp "$SRV_CPU" "$p" >/dev/null 2>&1 || true; done
  fi
}

version_of() {
  case "$1" in
    gdnsd) dpkg-query -W -f='${Version}' gdnsd;;
    pdns|pdns-shared|pdns-signed) dpkg-query -W -f='${Version}' pdns-server;;
    knot|knot-signed) dpkg-query -W -f='${Version}' knot;;
    nsd) dpkg-query -W -f='${Version}' nsd;;
    *) dig +short +time=1 +tries=1 @"${SHOST[$1]}" -p "${SPORT[$1]}" version.bind CH TXT | head -1;;
  esac 2>/dev/null || true
}

echo "== mode $MODE: $THREADS worker(s) per server, server CPU ${SRV_CPU:-any}, dnsperf CPU ${GEN_CPU:-any}"
start_backend "$PRIMARY"
start_backend "$SECONDARY"

TARGETS=()
for s in $SERVERS; do start_server "$s"; TARGETS+=("$s"); done
for o in "${OURS[@]}"; do
  name="${o%%=*}"; hp="${o#*=}"; host="${hp%:*}"; port="${hp##*:}"
  [ "$name" != "$o" ] || { echo "--ours wants NAME=HOST:PORT, got $o" >&2; exit 2; }
  case "$host" in 127.*) ;; *) echo "--ours must be on 127.0.0.0/8, got $host" >&2; exit 2;; esac
  SHOST[$name]=$host; SPORT[$name]=$port
  # Its PID, for CPU accounting and pinning, from the listening socket.
  pid="$(ss -Hlnup "( sport = :$port )" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2 || true)"
  SPID[$name]="$pid"
  if [ -z "$pid" ]; then
    echo "note: no pid found for $name on port $port: no CPU figures, not pinned" >&2
  elif [ -n "$SRV_CPU" ]; then
    taskset -a -cp "$SRV_CPU" "$pid" >/dev/null && echo "== pinned $name (pid $pid, all threads) to CPU $SRV_CPU"
  fi
  if ! wait_answer "$host" "$port" static.gslb.example.com A '^192\.0\.2\.10$' 10; then
    echo "!! $name at $hp does not answer static.gslb.example.com A with 192.0.2.10" >&2; exit 1
  fi
  TARGETS+=("$name")
done
[ "${#TARGETS[@]}" -gt 0 ] || { echo "nothing to measure" >&2; exit 2; }

# Health-checked names must be on the primary before anything is measured.
for s in "${TARGETS[@]}"; do
  wait_answer "${SHOST[$s]}" "${SPORT[$s]}" api.gslb.example.com A "^${PRIMARY//./\\.}\$" 40 \
    || echo "note: $s does not answer api with $PRIMARY yet" >&2
done

# ------------------------------------------------------------------ same answers
echo
echo "== versions"
for s in "${TARGETS[@]}"; do echo "  $s: $(version_of "$s")"; done
echo "  dnsperf $(dnsperf -h 2>&1 | sed -n 's/^Version //p'), kernel $(uname -r), $(nproc) CPUs"
echo
echo "== answer check: rcode/answers/aa per line of queries.txt${DIG_DO[*]:+ (DO set: answers count RRSIGs)}"
printf '%-36s' query; printf ' %-13s' "${TARGETS[@]}"; echo
while read -r qn qt; do
  printf '%-36s' "$qn $qt"
  for s in "${TARGETS[@]}"; do
    out="$(dig +norec "${DIG_DO[@]}" +time=1 +tries=1 @"${SHOST[$s]}" -p "${SPORT[$s]}" "$qn" "$qt" 2>/dev/null || true)"
    st="$(sed -n 's/.*status: \([A-Z]*\),.*/\1/p' <<<"$out" | head -1)"
    an="$(sed -n 's/.*ANSWER: \([0-9]*\),.*/\1/p' <<<"$out" | head -1)"
    aa=--; grep -q 'flags:[^;]* aa' <<<"$out" && aa=aa
    printf ' %-13s' "${st:-TIMEOUT}/${an:-?}/$aa"
  done
  echo
done < "$QUERIES"
echo
echo "== www split over 400 queries (3:1 $PRIMARY:$SECONDARY where weighted)"
www=(); for _ in $(seq 1 400); do www+=(www.gslb.example.com A); done
for s in "${TARGETS[@]}"; do
  res="$(dig +short +norec +time=1 +tries=1 @"${SHOST[$s]}" -p "${SPORT[$s]}" "${www[@]}" 2>/dev/null || true)"
  echo "  $s: $PRIMARY=$(grep -cx "${PRIMARY//./\\.}" <<<"$res" || true) $SECONDARY=$(grep -cx "${SECONDARY//./\\.}" <<<"$res" || true)"
done

# ------------------------------------------------------------------ dnsperf
cpu_ticks() { # PID -> utime+stime of it and its descendants, in clock ticks
  local total=0 p f
  for p in $(descendants "$1"); do
    f="$(cat "/proc/$p/stat" 2>/dev/null)" || continue
    f="${f##*) }"   # fields from "state" on: utime and stime are the 12th and 13th
    read -r -a f <<<"$f"
    total=$((total + f[11] + f[12]))
  done
  echo "$total"
}
HZ=$(getconf CLK_TCK)
RES="$WORK/results.tsv"
printf 'phase\tserver\tqps\tsent\tcompleted\tlost\tavg_s\tmax_s\tsrv_ticks\tsecs\tgen_pct\tresp_b\trss_kb\n' > "$RES"
rss_kb() { # PID -> resident memory of it and its descendants, kB
  local total=0 p v
  for p in $(descendants "$1"); do
    v="$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null)" || continue
    total=$((total + ${v:-0}))
  done
  echo "$total"
}

run_dnsperf() { # PHASE SERVER DNSPERF-ARGS...
  local phase="$1" s="$2"; shift 2
  local raw="$WORK/dnsperf.txt" pin=() c0="" c1="" gen
  [ -n "$GEN_CPU" ] && pin=(taskset -c "$GEN_CPU")
  [ -n "${SPID[$s]}" ] && c0=$(cpu_ticks "${SPID[$s]}")
  # dnsperf's own CPU share (user+sys over wall time), from bash's time keyword
  gen=$( { TIMEFORMAT='%R %U %S'; time "${pin[@]}" dnsperf -s "${SHOST[$s]}" -p "${SPORT[$s]}" \
           -d "${QFILE:-$QUERIES}" -l "$DURATION" -c "$CLIENTS" "${DO[@]}" "$@" >"$raw" 2>&1 || true; } 2>&1 |
         awk '{printf "%.0f", ($2 + $3) / $1 * 100}')
  local rss=""
  [ -n "${SPID[$s]}" ] && c1=$(cpu_ticks "${SPID[$s]}") && rss=$(rss_kb "${SPID[$s]}")
  # Server CPU% is taken over dnsperf's run time: after it, dnsperf waits up to
  # 5 s for lost queries while the server idles.
  awk -v phase="$phase" -v s="$s" -v ticks="$([ -n "$c0" ] && echo $((c1 - c0)))" -v gen="$gen" -v rss="$rss" '
    /Queries sent:/ {sent = $3}
    /Queries completed:/ {done_ = $3}
    /Queries lost:/ {lost = $3}
    /Queries per second:/ {qps = $4}
    /Average Latency/ {avg = $4; mx = $8; gsub(/[),]/, "", mx)}
    /Average packet size/ {rb = $NF}
    /Run time/ {secs = $NF}
    END {printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", phase, s, qps, sent, done_, lost, avg, mx, ticks, secs, gen, rb, rss}
  ' "$raw" >> "$RES"
  tail -1 "$RES" | awk -F'\t' -v hz="$HZ" '{
    usq = ($9 != "" && $5 > 0) ? sprintf("%.2f", $9 / hz / $5 * 1e6) : "-"
    printf "   %-4s %-12s qps %-8.0f lost %-6s avg %.3f ms  srv us/q %s\n", $1, $2, $3, $6, $7 * 1000, usq}'
}

if [ "$BENCH" = 1 ]; then
  echo
  echo "== dnsperf closed loop (-c $CLIENTS -q $OUTSTANDING, ${DURATION}s), then fixed rate (-Q $LAT_QPS), interleaved x$REPS"
  for rep in $(seq 1 "$REPS"); do
    for s in "${TARGETS[@]}"; do run_dnsperf max "$s" -q "$OUTSTANDING"; done
  done
  for rep in $(seq 1 "$REPS"); do
    for s in "${TARGETS[@]}"; do run_dnsperf lat "$s" -Q "$LAT_QPS" -q 1000; done
  done
  if [ "$DNSSEC" = 1 ]; then
    # Random names that do not exist: each answer needs a denial (an NSEC)
    # signed for that name; the file is long enough that a run never
    # repeats one. Memory is read after each run.
    echo
    echo "== random-name flood, DO set: $FLOOD_NAMES names, closed loop, interleaved x$REPS"
    FLOOD="$WORK/flood.txt"
    python3 - "$FLOOD" "$FLOOD_NAMES" <<'PY'
import random, sys
r = random.Random(20)
with open(sys.argv[1], "w") as f:
    for _ in range(int(sys.argv[2])):
        f.write(f"r{r.getrandbits(48):012x}.gslb.example.com A\n")
PY
    for rep in $(seq 1 "$REPS"); do
      for s in "${TARGETS[@]}"; do QFILE="$FLOOD" run_dnsperf flood "$s" -q "$OUTSTANDING"; done
    done
  fi
  python3 - "$RES" "$HZ" "$REF" <<'PY'
import csv, statistics as st, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
hz = float(sys.argv[2])
ref_name = sys.argv[3]
def num(x):
    try: return float(x)
    except (TypeError, ValueError): return None
def med(v):
    v = [x for x in v if x is not None]
    return st.median(v) if v else None
def fmt(x, p=0, k=1.0):
    return "-" if x is None else f"{x * k:,.{p}f}"
def usq(r):  # server CPU time per answered query, in microseconds
    t, n = num(r["srv_ticks"]), num(r["completed"])
    return t / hz / n * 1e6 if t is not None and n else None
def cpu(r):  # server CPU, % of one core
    t, s = num(r["srv_ticks"]), num(r["secs"])
    return t / hz / s * 100 if t is not None and s else None
order = list(dict.fromkeys(r["server"] for r in rows))
cols = (("server", 13), ("srv us/q", 9), ("[min-max]", 17), (f"vs {ref_name}"[:11], 12), ("qps", 9),
        ("[min-max]", 19), ("lost%", 7), ("avg ms", 8), ("max ms", 8), ("srv cpu%", 9),
        ("dnsperf%", 9), ("resp B", 7), ("RSS MB", 7))
phases = (("max", "CLOSED LOOP (throughput, CPU per query)"), ("lat", "FIXED RATE (latency)"),
          ("flood", "RANDOM-NAME FLOOD (a fresh denial per query)"))
for phase, title in phases:
    pr = [r for r in rows if r["phase"] == phase]
    if not pr:
        continue
    print(f"\n{title}: median of {len(pr) // len(order)} run(s) [min-max]")
    print("".join(h.ljust(w) for h, w in cols))
    ref = med([usq(r) for r in pr if r["server"] == ref_name])
    for s in order:
        sr = [r for r in pr if r["server"] == s]
        q = [num(r["qps"]) for r in sr if num(r["qps"]) is not None]
        us = [usq(r) for r in sr if usq(r) is not None]
        u = med(us)
        vals = (s, fmt(u, 2), f"[{min(us):.2f}-{max(us):.2f}]" if us else "-",
                f"{u / ref:.2f}x" if u and ref else "-", fmt(med(q)),
                f"[{min(q):,.0f}-{max(q):,.0f}]" if q else "-",
                fmt(med([100 * num(r["lost"]) / num(r["sent"]) if num(r["sent"]) else None for r in sr]), 3),
                fmt(med([num(r["avg_s"]) for r in sr]), 3, 1000),
                fmt(med([num(r["max_s"]) for r in sr]), 1, 1000),
                fmt(med([cpu(r) for r in sr])),
                fmt(med([num(r["gen_pct"]) for r in sr])),
                fmt(med([num(r["resp_b"]) for r in sr])),
                fmt(med([num(r["rss_kb"]) for r in sr]), 0, 1 / 1024))
        print("".join(v.ljust(w) for v, (_, w) in zip(vals, cols)))
print("\nsrv us/q: the server's CPU time (all threads and children) per answered query;"
      f"\nvs {ref_name}: its ratio to {ref_name}'s; RSS: resident memory after the run. dnsperf saturates one core near 170k qps, so"
      "\nqps often measures the load generator and srv us/q is what ranks servers.")
PY
fi

# ------------------------------------------------------------------ failover
# poll_until down|up T0_MS NAME...: polls api every 50 ms until each server
# answers without the primary (down) or with it (up); prints "NAME SECONDS".
poll_until() {
  local mode="$1" t0="$2"; shift 2
  local limit=30000 s ans hit left
  [ "$mode" = down ] && limit=20000
  local -A took=()
  while :; do
    left=0
    for s in "$@"; do
      [ -n "${took[$s]:-}" ] && continue
      left=1
      ans=" $(dig1 "${SHOST[$s]}" "${SPORT[$s]}" api.gslb.example.com A | tr '\n' ' ')"
      hit=0
      case "$mode:$ans" in
        down:*" $PRIMARY "*|down:" ") ;;
        down:*) hit=1;;
        up:*" $PRIMARY "*) hit=1;;
      esac
      [ "$hit" = 1 ] && took[$s]=$(( $(now_ms) - t0 ))
    done
    [ "$left" = 0 ] && break
    [ $(( $(now_ms) - t0 )) -gt "$limit" ] && break
    sleep 0.05
  done
  for s in "$@"; do
    if [ -n "${took[$s]:-}" ]; then printf '%s %d.%03d\n' "$s" $((took[$s] / 1000)) $((took[$s] % 1000))
    else echo "$s >$((limit / 1000))"; fi
  done
}

if [ "$FAILOVER" = 1 ]; then
  FO=()
  for s in "${TARGETS[@]}"; do case "$s" in gdnsd|pdns|pdns-shared) FO+=("$s");; esac; done
  if [ "$FAILOVER_OURS" = 1 ]; then for o in "${OURS[@]}"; do FO+=("${o%%=*}"); done; fi
  [ "${#FO[@]}" -gt 0 ] || { echo "note: no health-checked server, no failover trials" >&2; FAILOVER=0; }
fi
if [ "$FAILOVER" = 1 ]; then
  if [ "$FAILOVER_HANG" = 1 ]; then how="frozen (SIGSTOP, probes time out)"; else how="killed (connection refused)"; fi
  echo
  echo "== failover x$FAILOVER_REPS: primary backend $PRIMARY:$BACKEND_PORT $how -> first api answer"
  echo "   without it (polled every 50 ms); restored -> first answer with it again"
  echo "   gdnsd: interval 2 s, timeout 1 s, down after 1, up after 2; PowerDNS: Lua checks every 1 s, cache-ttl 20"
  FOR="$WORK/failover.tsv"; : > "$FOR"
  for rep in $(seq 1 "$FAILOVER_REPS"); do
    for s in "${FO[@]}"; do
      wait_answer "${SHOST[$s]}" "${SPORT[$s]}" api.gslb.example.com A "^${PRIMARY//./\\.}\$" 60 \
        || echo "note: $s is not on $PRIMARY before trial $rep" >&2
    done
    sleep "1.$((RANDOM % 10))"   # de-phase the failure from the check timers
    t0=$(now_ms)
    if [ "$FAILOVER_HANG" = 1 ]; then kill -STOP "${BACKEND_PID[$PRIMARY]}"; else stop_pid "${BACKEND_PID[$PRIMARY]}"; fi
    poll_until down "$t0" "${FO[@]}" | while read -r s t; do printf 'down\t%s\t%s\t%s\n' "$rep" "$s" "$t"; done >> "$FOR"
    t0=$(now_ms)
    if [ "$FAILOVER_HANG" = 1 ]; then kill -CONT "${BACKEND_PID[$PRIMARY]}"; else start_backend "$PRIMARY"; fi
    poll_until up "$t0" "${FO[@]}" | while read -r s t; do printf 'up\t%s\t%s\t%s\n' "$rep" "$s" "$t"; done >> "$FOR"
    awk -F'\t' -v r="$rep" '$2 == r {printf "   trial %s %-4s %-12s %s s\n", $2, $1, $3, $4}' "$FOR"
  done
  python3 - "$FOR" <<'PY'
import statistics as st, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
print(f"\n{'failover':<14}{'to secondary: median [min-max] (s)':>38}{'back to primary (s)':>30}")
for n in dict.fromkeys(r[2] for r in rows):
    out = []
    for ph in ("down", "up"):
        v = [r[3] for r in rows if r[0] == ph and r[2] == n]
        t = sorted(float(x) for x in v if not x.startswith(">"))
        miss = len(v) - len(t)
        out.append((f"{st.median(t):.2f} [{t[0]:.2f}-{t[-1]:.2f}]" if t else "-")
                   + (f" ({miss} over limit)" if miss else ""))
    print(f"{n:<14}{out[0]:>38}{out[1]:>30}")
PY
fi
echo "== done"
