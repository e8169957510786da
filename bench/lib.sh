# Shared by the bench scripts: build release, start and stop gslb.
# GSLB=path runs that binary; NO_BUILD=1 skips the cargo build.
# shellcheck shell=bash
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC2034 # PEERS and PEER_QUERIES are for the scripts that source this
PEERS="$ROOT/bench/peers/run.sh"       # gdnsd, PowerDNS, Knot, NSD beside gslb
# shellcheck disable=SC2034
PEER_QUERIES="$ROOT/bench/peers/queries.txt"
GSLB="${GSLB:-$ROOT/target/release/gslb}"

build_release() {
  if [ "${NO_BUILD:-0}" = 1 ]; then echo "== NO_BUILD=1: using $GSLB"; return 0; fi
  echo "== cargo build --release"
  (cd "$ROOT" && cargo build --release --locked --bin gslb 2>&1 | tail -1)
}

# The loopback backend the probe benches probe (examples/bench_backend.rs);
# BACKEND_BIN is its path. NO_BUILD=1 uses the one already built, so that a
# batch of runs does not rebuild (or fail to) while the tree is edited.
BACKEND_BIN="$ROOT/target/release/examples/bench_backend"
build_backend() {
  if [ "${NO_BUILD:-0}" = 1 ] && [ -x "$BACKEND_BIN" ]; then return 0; fi
  (cd "$ROOT" && cargo build --release --locked --example bench_backend 2>&1 | tail -1)
}

# start_gslb ZONES LISTEN ADMIN WORKERS [extra args...] -> sets GSLB_PID
start_gslb() {
  local zones="$1" listen="$2" admin="$3" workers="$4"; shift 4
  "$GSLB" serve --zones "$zones" --listen "$listen" --admin "$admin" --state-file off \
    --udp-workers "$workers" --log-level warn "$@" > "${GSLB_LOG:-/tmp/gslb-bench.log}" 2>&1 &
  GSLB_PID=$!
  local _
  for _ in $(seq 1 600); do
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
