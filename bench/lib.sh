# Shared by the bench scripts: build release, start and stop gslb.
# shellcheck shell=bash
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEERS="$ROOT/../shared/bench/peers/run-peers.sh"
GSLB="${GSLB:-$ROOT/target/release/gslb}"

build_release() {
  echo "== cargo build --release"
  (cd "$ROOT" && cargo build --release --locked --bin gslb 2>&1 | tail -1)
}

# start_gslb ZONES LISTEN ADMIN WORKERS [extra args...] -> sets GSLB_PID
start_gslb() {
  local zones="$1" listen="$2" admin="$3" workers="$4"; shift 4
  "$GSLB" serve --zones "$zones" --listen "$listen" --admin "$admin" --state-file off \
    --udp-workers "$workers" --log-level warn "$@" > "${GSLB_LOG:-/tmp/gslb-bench.log}" 2>&1 &
  GSLB_PID=$!
  local i
  for i in $(seq 1 600); do
    # dig exits 0 on any reply (even REFUSED): the server is up.
    if dig +time=1 +tries=1 @"${listen%:*}" -p "${listen##*:}" . SOA >/dev/null 2>&1; then return 0; fi
    kill -0 "$GSLB_PID" 2>/dev/null || { echo "gslb exited:"; cat "${GSLB_LOG:-/tmp/gslb-bench.log}"; return 1; }
    sleep 0.05
  done
  echo "gslb did not answer on $listen" >&2; return 1
}

stop_gslb() {
  [ -n "${GSLB_PID:-}" ] && kill "$GSLB_PID" 2>/dev/null && wait "$GSLB_PID" 2>/dev/null || true
  GSLB_PID=""
}

need() { # need CMD PACKAGE
  command -v "$1" >/dev/null || { echo "== installing $2"; apt-get install -y -qq --no-install-recommends "$2" >/dev/null; }
}
