#!/usr/bin/env bash
# CPU per query with response rate limiting on against off: the same
# binary, zone and query mix (bench/peers/queries.txt), gslb pinned to CPU 1
# and dnsperf to CPU 0, runs interleaved (off on off on ...). "on" sets a
# rate no client reaches (every response is counted, none limited): the
# cost of the check itself. "limiting" sets rate 100, so nearly every
# response is dropped or slipped: the cost when under attack (offered at
# 50,000 q/s open loop, since dropped queries never return).
#   bench/rrl.sh [SECONDS] [REPS]
#   BASELINE=path/to/older/gslb bench/rrl.sh 10 3   # that binary's off/on too,
#                                                   # interleaved, for A/B
set -euo pipefail
. "$(dirname "$0")/lib.sh"
SECS=${1:-10}; REPS=${2:-3}
need dnsperf dnsperf
need dig bind9-dnsutils
build_release
WORK=$(mktemp -d); trap 'stop_gslb; rm -rf "$WORK"' EXIT
printf 'rate-limit = 0\n' > "$WORK/off.toml"
printf 'rate-limit = 1000000\n' > "$WORK/on.toml"
printf 'rate-limit = 100\nrate-limit-slip = 2\n' > "$WORK/limiting.toml"
hz=$(getconf CLK_TCK)
run() { # MODE REP [LABEL]
  start_gslb "$ROOT/bench/zones" 127.0.0.1:5322 127.0.0.1:9322 1 --config "$WORK/$1.toml"
  taskset -a -cp 1 "$GSLB_PID" >/dev/null
  sleep 1
  local t0 t1 out q qps
  t0=$(awk '{print $14+$15}' "/proc/$GSLB_PID/stat")
  # Limited responses never come back: offer a fixed rate (open loop) so
  # lost queries do not slow the sender; the others run closed loop.
  local load=(-c 4 -q 200 -t 1)
  [ "$1" = limiting ] && load=(-c 4 -q 60000 -t 1 -Q 50000)
  out=$(taskset -c 0 dnsperf -s 127.0.0.1 -p 5322 -d "$PEER_QUERIES" -l "$SECS" "${load[@]}" 2>&1)
  t1=$(awk '{print $14+$15}' "/proc/$GSLB_PID/stat")
  q=$(echo "$out" | awk '/Queries sent/ {print $3}')
  qps=$(echo "$out" | awk '/Queries per second/ {print $4}')
  python3 -c "print(f'${3:-}$1 rep $2: sent {int($q)}  answered/s {float($qps):.0f}  srv us per query received {($t1-$t0)/$hz/$q*1e6:.2f}')"
  stop_gslb
}
ours="$GSLB"
for r in $(seq 1 "$REPS"); do
  for mode in off on limiting; do
    GSLB="$ours" run "$mode" "$r"
    if [ -n "${BASELINE:-}" ] && [ "$mode" != limiting ]; then
      GSLB="$BASELINE" run "$mode" "$r" "baseline "
    fi
  done
done
