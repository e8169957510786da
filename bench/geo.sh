#!/usr/bin/env bash
# CPU per query of geo services against a plain failover service, in one
# run: the same binary, one UDP worker pinned to CPU 1, the load on CPU 0,
# modes interleaved (plain geo nearest plain geo nearest ...). The database
# is a real GeoLite2 City (the 2018 copy PyPI's maxminddb-geolite2 ships,
# downloaded into bench/.cache, never committed; CC BY-SA 4.0, MaxMind),
# and every query carries another of 10,000 client /24s drawn from the
# public IPv4 space (bench/ecs-load.py): the database walk and the record
# decode happen at real-traffic rates, not on one cached subnet.
#   plain     failover service, ECS queries (echoed, scope 0)
#   geo       policy = "geo": nets, then country / continent keys
#   nearest   policy = "nearest", 5 regions by distance
#   geo-src   the geo service without ECS: located by the source address
#   bench/geo.sh [SECONDS] [REPS]
#   bench/geo.sh --callgrind [QUERIES]: user-space instructions per query
#     of each mode under valgrind (repeatable where CPU time is not), over
#     QUERIES (default 20000) after as many of warm-up.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
CALLGRIND=0
if [ "${1:-}" = --callgrind ]; then CALLGRIND=1; shift; fi
SECS=${1:-8}; REPS=${2:-5}
need dig bind9-dnsutils
build_release
CACHE="$ROOT/bench/.cache"; mkdir -p "$CACHE"
DB="$CACHE/GeoLite2-City.mmdb"
if [ ! -s "$DB" ]; then
  echo "== downloading GeoLite2 City (PyPI maxminddb-geolite2 2018.703)"
  python3 -m pip download --quiet --no-deps maxminddb-geolite2==2018.703 -d "$CACHE"
  tar -xzf "$CACHE/maxminddb-geolite2-2018.703.tar.gz" -C "$CACHE" \
    maxminddb-geolite2-2018.703/_maxminddb_geolite2/GeoLite2-City.mmdb
  mv "$CACHE/maxminddb-geolite2-2018.703/_maxminddb_geolite2/GeoLite2-City.mmdb" "$DB"
fi
WORK=$(mktemp -d); trap 'stop_gslb; rm -rf "$WORK"' EXIT
ln -s "$DB" "$WORK/GeoLite2-City.mmdb"
cat > "$WORK/geo.toml" <<'ZONE'
[zone]
name = "gslb.example.com."
nameservers = ["ns1.gslb.example.com."]
hostmaster = "hostmaster.example.com."

[[record]]
name = "ns1"
type = "A"
value = "127.0.0.1"

[region.us-east]
endpoints = ["192.0.2.10", "192.0.2.11"]
location = [39.0, -77.5]
[region.us-west]
endpoints = ["192.0.2.20", "192.0.2.21"]
location = [45.6, -121.2]
[region.eu-west]
endpoints = ["192.0.2.30", "192.0.2.31"]
location = [53.3, -6.3]
[region.ap-south]
endpoints = ["192.0.2.40", "192.0.2.41"]
location = [19.1, 72.9]
[region.sa-east]
endpoints = ["192.0.2.50", "192.0.2.51"]
location = [-23.5, -46.6]

[geo.world]
database = "GeoLite2-City.mmdb"
nets = { "198.51.100.0/24" = "office", "203.0.113.0/24" = "office" }

[service.plain]
regions = ["us-east", "eu-west"]

[service.geo]
policy = "geo"
geo = "world"
map = { office = ["eu-west", "us-east"], "country:IN" = ["ap-south", "eu-west"], "country:BR" = ["sa-east", "us-east"],
        "continent:EU" = ["eu-west", "us-east"], "continent:AS" = ["ap-south", "eu-west"], "continent:SA" = ["sa-east", "us-east"],
        "continent:NA" = ["us-east", "us-west"], "*" = ["us-east", "eu-west"] }

[service.nearest]
policy = "nearest"
geo = "world"
regions = ["us-east", "us-west", "eu-west", "ap-south", "sa-east"]
ZONE
hz=$(getconf CLK_TCK)
run() { # MODE REP
  local name="$1.gslb.example.com" extra=()
  case "$1" in geo-src) name=geo.gslb.example.com; extra=(--no-ecs) ;; esac
  start_gslb "$WORK" 127.0.0.1:5323 127.0.0.1:9323 1
  taskset -a -cp 1 "$GSLB_PID" >/dev/null
  # Warm up (first answers fill the cache), then measure.
  taskset -c 0 python3 "$ROOT/bench/ecs-load.py" 5323 "$name" 1 "${extra[@]}" >/dev/null
  local t0 t1 out sent
  t0=$(awk '{print $14+$15}' "/proc/$GSLB_PID/stat")
  out=$(taskset -c 0 python3 "$ROOT/bench/ecs-load.py" 5323 "$name" "$SECS" "${extra[@]}")
  t1=$(awk '{print $14+$15}' "/proc/$GSLB_PID/stat")
  sent=$(echo "$out" | awk '{print $2}')
  awk -v m="$1" -v r="$2" -v s="$sent" -v a="$(echo "$out" | awk '{print $4}')" -v c="$((t1 - t0))" \
    -v hz="$hz" -v secs="$SECS" \
    'BEGIN { printf "%-8s rep %s: sent %d  answered/s %.0f  srv us/query %.2f\n", m, r, s, a / secs, c / hz / s * 1e6 }'
  stop_gslb
}
callgrind() { # MODE QUERIES
  local name="$1.gslb.example.com" extra=() n="$2"
  case "$1" in geo-src) name=geo.gslb.example.com; extra=(--no-ecs) ;; esac
  rm -f "$WORK"/cg.out.*
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/cg.out.%p" \
    "$GSLB" serve --zones "$WORK" --listen 127.0.0.1:5324 --admin off --state-file off \
    --udp-workers 1 --log-level warn > "$WORK/cg.log" 2>&1 &
  local vp=$! _
  for _ in $(seq 1 240); do
    dig +time=1 +tries=1 @127.0.0.1 -p 5324 . SOA >/dev/null 2>&1 && break; sleep 0.5
  done
  python3 "$ROOT/bench/ecs-load.py" 5324 "$name" 300 --count "$n" --window 16 "${extra[@]}" >/dev/null
  callgrind_control -i on "$vp" >/dev/null 2>&1
  python3 "$ROOT/bench/ecs-load.py" 5324 "$name" 300 --count "$n" --window 16 "${extra[@]}" >/dev/null
  callgrind_control -i off "$vp" >/dev/null 2>&1
  callgrind_control -d "$vp" >/dev/null 2>&1
  kill "$vp"; wait "$vp" 2>/dev/null || true
  local total
  total=$(awk '/^totals:/ {print $2}' "$WORK"/cg.out.*.1)
  echo "$1: $((total / n)) instructions per query ($total over $n)"
}
if [ "$CALLGRIND" = 1 ]; then
  need valgrind valgrind
  for mode in plain geo nearest geo-src; do callgrind "$mode" "${1:-20000}"; done
  exit 0
fi
for r in $(seq 1 "$REPS"); do
  for mode in plain geo nearest geo-src; do run "$mode" "$r"; done
done
