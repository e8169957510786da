#!/usr/bin/env bash
# Zone scale: a zone of N service names (KIND=services, the default) or N
# static records (KIND=records: A, AAAA, TXT and MX in turn): time to check,
# to start serving and to reload it; the server's memory with it (and per
# record, against the same server with a small zone only), after one reload
# and after RELOADS reloads of the unchanged file (default 13), and once the
# zone is removed.
#
#   bench/zone-scale.sh [N]                     KIND=records bench/zone-scale.sh 1000000
#   RELOADS=13 KIND=records bench/zone-scale.sh 100000
set -euo pipefail
. "$(dirname "$0")/lib.sh"
N=${1:-100000}
KIND=${KIND:-services}
RELOADS=${RELOADS:-13}
need dig bind9-dnsutils
build_release
WORK=$(mktemp -d); trap 'stop_gslb; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/z"
# A small zone that stays: removing the big one must leave something served.
python3 "$ROOT/bench/gen-zone.py" records 4 | sed 's/scale.example/small.example/g' > "$WORK/z/small.toml"
rss() { echo $(( $(awk '/^VmRSS/ {print $2}' "/proc/$GSLB_PID/status") / 1024 )); }
peak() { echo $(( $(awk '/^VmHWM/ {print $2}' "/proc/$GSLB_PID/status") / 1024 )); }
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.2f} s')"; }
# Baseline: the small zone alone.
start_gslb "$WORK/z" 127.0.0.1:5312 127.0.0.1:9312 1
sleep 2
base=$(rss); stop_gslb
python3 "$ROOT/bench/gen-zone.py" "$KIND" "$N" > "$WORK/z/scale.toml"
echo "== $N $KIND, $(du -h "$WORK/z/scale.toml" | cut -f1) of TOML"
t0=$(now); "$GSLB" check "$WORK/z" > /dev/null; t1=$(now)
echo "  gslb check              $(secs "$t0" "$t1")"
/usr/bin/time -f '%M' -o "$WORK/check.rss" "$GSLB" check "$WORK/z" > /dev/null
echo "  gslb check max RSS      $(( $(cat "$WORK/check.rss") / 1024 )) MiB"
t0=$(now); start_gslb "$WORK/z" 127.0.0.1:5312 127.0.0.1:9312 1; t1=$(now)
echo "  serve until answering   $(secs "$t0" "$t1")"
if [ "$KIND" = records ]; then
  last=$(( (N - 1) / 4 ))
  dig +short @127.0.0.1 -p 5312 "host$last.scale.example" A | head -1 | sed 's/^/  last name answers      /'
else
  dig +short @127.0.0.1 -p 5312 "svc$((N - 1)).scale.example" A | head -1 | sed 's/^/  last service answers   /'
fi
echo "  serve peak RSS          $(peak) MiB"
sleep 2 # what parsing left goes back a second after start
with=$(rss)
echo "  server RSS              $with MiB (small zone alone: $base MiB)"
python3 -c "print(f'  per $KIND entry          {($with - $base) * 1048576 / $N:.0f} bytes')"
first=""
for i in $(seq 1 "$RELOADS"); do
  t0=$(now); "$GSLB" reload --admin 127.0.0.1:9312 > /dev/null; t1=$(now)
  sleep 2 # freed pages go back a second after a reload
  if [ "$i" = 1 ]; then first=$(rss); echo "  reload                  $(secs "$t0" "$t1")"; echo "  RSS after 1 reload      $first MiB"; fi
done
after=$(rss)
python3 -c "print(f'  RSS after $RELOADS reloads     $after MiB ({($after - $first) * 100 / $first:+.1f}% against after 1)')"
rm "$WORK/z/scale.toml"
"$GSLB" reload --admin 127.0.0.1:9312 --allow-removal > /dev/null
sleep 2
echo "  RSS after removing it   $(rss) MiB"
