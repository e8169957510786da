#!/usr/bin/env bash
# Zone transfers (issue 21): NSD 4 and Knot 3 as secondaries of gslb on
# loopback; how long after gslb's own answer each answers a failover
# (RUNS drain/undrain cycles, median and range), and a 100,000-record
# zone's AXFR from gslb beside the same zone's AXFR from NSD, with gslb's
# memory. Needs root (or sudo) to install nsd and knot when missing.
#   bench/transfer.sh [RUNS]            default 20
#   RECORDS=1000000 bench/transfer.sh   a larger zone
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
RUNS=${1:-20}
[ -x /usr/sbin/nsd ] || need nsd nsd
[ -x /usr/sbin/knotd ] || need knotd knot
build_release
python3 "$ROOT/bench/transfer.py" "$GSLB" "$RUNS"
