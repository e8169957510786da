#!/usr/bin/env bash
# gslb side by side with gdnsd, PowerDNS (Lua records), Knot and NSD, in one
# run of bench/peers/run.sh: same zone, same query mix, same dnsperf load,
# interleaved. gslb serves bench/zones/ (api: health-checked failover, www:
# weighted 3:1, checked against the script's own HTTP backends).
#
#   bench/peers.sh                         # the default comparison (pinned mode)
#   bench/peers.sh --reps 5 --duration 20  # any bench/peers/run.sh option passes through
#   bench/peers.sh --mode shared           # gslb gets 2 UDP workers, like the peers
#   bench/peers.sh --dnssec                # signed answers (DO set on every query):
#                                          # gslb unsigned, gslb signed, Knot's online
#                                          # signing and PowerDNS live signing, then a
#                                          # random-name flood
#   GSLB=path/to/gslb NO_BUILD=1 bench/peers.sh   # a given binary, no cargo build
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need dig bind9-dnsutils
build_release

PORT=${GSLB_PORT:-5310}
workers=1
dnssec=0
for a in "$@"; do
  [ "$a" = shared ] && workers=2
  [ "$a" = --dnssec ] && dnssec=1
done
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
  [ -n "${signed_dir:-}" ] && rm -rf "$signed_dir"
  return 0
}
trap cleanup EXIT
start_gslb "$ROOT/bench/zones" "127.0.0.1:$PORT" 127.0.0.1:9310 "$workers"
pids+=("$GSLB_PID")
echo "== gslb pid $GSLB_PID on 127.0.0.1:$PORT ($workers UDP worker(s))"
ours=(--ours "gslb=127.0.0.1:$PORT")
if [ "$dnssec" = 1 ]; then
  # The same zone signed: a combined ECDSA P-256 key made by gslb, as Knot
  # and PowerDNS make theirs.
  signed_dir="$(mktemp -d "${TMPDIR:-/tmp}/gslb-signed.XXXXXX")"
  cp "$ROOT"/bench/zones/*.toml "$signed_dir/"
  "$GSLB" dnssec keygen gslb.example.com --keys "$signed_dir/keys" >/dev/null
  printf '\n[dnssec]\nkeys = "keys"\n' >> "$signed_dir/gslb.example.com.toml"
  GSLB_LOG=/tmp/gslb-bench-signed.log start_gslb "$signed_dir" "127.0.0.1:$((PORT + 1))" 127.0.0.1:9311 "$workers"
  pids+=("$GSLB_PID")
  echo "== gslb (signed) pid $GSLB_PID on 127.0.0.1:$((PORT + 1))"
  ours+=(--ours "gslb-signed=127.0.0.1:$((PORT + 1))")
fi
"$PEERS" "${ours[@]}" "$@"
