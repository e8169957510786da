#!/usr/bin/env bash
# Zone scale: a zone with N service names (default 100,000): time to check,
# to start serving, and to reload it, and the server's memory.
#
#   bench/zone-scale.sh [N]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
N=${1:-100000}
need dig bind9-dnsutils
build_release
WORK=$(mktemp -d); trap 'stop_gslb; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/z"
python3 "$ROOT/bench/gen-zone.py" services "$N" > "$WORK/z/scale.toml"
echo "== $N services, $(du -h "$WORK/z/scale.toml" | cut -f1) of TOML"
now() { date +%s.%N; }
t0=$(now); "$GSLB" check "$WORK/z" > /dev/null; t1=$(now)
echo "  gslb check            $(python3 -c "print(f'{$t1 - $t0:.2f} s')")"
/usr/bin/time -f '%M' -o "$WORK/check.rss" "$GSLB" check "$WORK/z" > /dev/null
echo "  gslb check max RSS    $(( $(cat "$WORK/check.rss") / 1024 )) MiB"
t0=$(now); start_gslb "$WORK/z" 127.0.0.1:5312 127.0.0.1:9312 1; t1=$(now)
echo "  serve until answering $(python3 -c "print(f'{$t1 - $t0:.2f} s')")"
dig +short @127.0.0.1 -p 5312 "svc$((N - 1)).scale.example" A | head -1 | sed 's/^/  last service answers  /'
echo "  server RSS            $(( $(awk '/^VmRSS/ {print $2}' /proc/$GSLB_PID/status) / 1024 )) MiB"
echo "# changed" >> "$WORK/z/scale.toml"
t0=$(now); "$GSLB" reload --admin 127.0.0.1:9312 > /dev/null; t1=$(now)
echo "  reload                $(python3 -c "print(f'{$t1 - $t0:.2f} s')")"
echo "  server RSS after      $(( $(awk '/^VmRSS/ {print $2}' /proc/$GSLB_PID/status) / 1024 )) MiB"
