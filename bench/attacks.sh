#!/usr/bin/env bash
# Issue 19's attacks beside the legitimate traffic they aim at, against the
# release build (bench/attacks.py has the details):
#   admin  half-head connections that reconnect at once, and unread
#          pipelines, from one address; /metrics scrapes and drains from
#          another (the admin API's per-address budget and eviction);
#   rrl    one name flooded at a resolver's address with rate-limit 20;
#          another name asked from that address (RRL by name);
#   loris  80 TCP connections from ten /24s sending queries a byte at a
#          time into 64 slots; new clients from other /24s (shedding the
#          slowest).
#   bench/attacks.sh [SECONDS]                      (default 10 per attack)
#   BASELINE=path/to/older/gslb bench/attacks.sh    the same against that binary
set -euo pipefail
. "$(dirname "$0")/lib.sh"
SECS=${1:-10}
need dig bind9-dnsutils
build_release
WORK=$(mktemp -d); trap 'stop_gslb; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/z"
cat > "$WORK/z/z.toml" <<'ZONE'
[zone]
name = "gslb.example.com."
nameservers = ["ns1.gslb.example.com."]
hostmaster = "hostmaster.gslb.example.com."

[[record]]
name = "ns1"
type = "A"
value = "127.0.0.1"

[[record]]
name = "mail"
type = "A"
value = "192.0.2.25"

[[record]]
name = "static"
type = "A"
value = "192.0.2.10"

[region.primary]
endpoints = ["192.0.2.1"]

[region.fallback]
endpoints = ["192.0.2.2"]

[service.api]
regions = ["primary", "fallback"]
ZONE
printf 'log-level = "error"\n' > "$WORK/admin.toml"
printf 'log-level = "error"\nrate-limit = 20\nrate-limit-slip = 2\n' > "$WORK/rrl.toml"
printf 'log-level = "error"\ntcp-connections = 64\ntcp-connections-per-prefix = 8\n' > "$WORK/loris.toml"
ulimit -n 65536 2>/dev/null || true
run() { # BINARY LABEL
  GSLB="$1"
  for attack in admin rrl loris; do
    start_gslb "$WORK/z" 127.0.0.1:5331 127.0.0.1:9331 1 --config "$WORK/$attack.toml"
    echo "-- $2, $attack ($SECS s)"
    case $attack in
      admin) python3 "$ROOT/bench/attacks.py" admin 127.0.0.1 9331 "$SECS" ;;
      rrl) python3 "$ROOT/bench/attacks.py" rrl 5331 "$SECS" ;;
      loris) python3 "$ROOT/bench/attacks.py" loris 5331 "$SECS" ;;
    esac
    stop_gslb
  done
}
run "$GSLB" "gslb ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo this build))"
if [ -n "${BASELINE:-}" ]; then run "$BASELINE" "baseline $BASELINE"; fi
