#!/usr/bin/env bash
# The chaos suite (tests/it/chaos.rs) as a table: three gslb nodes in
# network namespaces, a three-member etcd, faults by nftables and signals.
# Per scenario: how long the nodes disagreed, when each node gave the new
# answer after the fault (and the bound the test holds it to), wrong
# answers, queries a stopped or paused node did not answer, and webhooks
# per region transition. Needs root (ip netns, nft); runs from a plain
# clone. Usage: bench/chaos.sh [RUNS]   (default 3, each a table)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"
[ "$(id -u)" = 0 ] || { echo "bench/chaos.sh needs root (network namespaces)" >&2; exit 1; }
cargo build --release --tests --quiet
for run in $(seq 1 "$runs"); do
  echo "== run $run of $runs"
  out="$(cargo test --release --quiet --test it chaos:: -- --nocapture 2>&1)" || { echo "$out" | grep -E "^CHAOS |panicked" -A3 >&2; exit 1; }
  # The table is printed last, after its header.
  echo "$out" | grep '^CHAOS ' | sed -n '/^CHAOS | scenario/,$p' | sed 's/^CHAOS //' \
    | awk 'NR == 1 { print; print "|---|---|---|---|---|---|---|"; next } { print }'
done
