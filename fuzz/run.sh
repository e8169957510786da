#!/usr/bin/env bash
# Run the fuzz targets: each for SECONDS (default 300) or until RUNS inputs,
# keeping the corpus in fuzz/corpus/TARGET (committed: the test suite
# replays it) and any crash in fuzz/artifacts/TARGET (commit it, fixed, as a
# regression input). Installs cargo-fuzz when missing. cargo-fuzz needs
# nightly flags; on the stable toolchain RUSTC_BOOTSTRAP=1 allows them.
#   fuzz/run.sh [SECONDS] [TARGET...]        e.g. fuzz/run.sh 600 request
#   RUNS=10000000 fuzz/run.sh 0 zone         a number of inputs instead
#   SANITIZER=address fuzz/run.sh 600         with AddressSanitizer
# No sanitizer by default: the code under test is safe Rust (the parsers
# and engine hold no `unsafe`), so what a fuzzer can find is a panic, a
# hang or unbounded memory, which libFuzzer catches by itself; without
# ASan it runs several times as many inputs in the same time.
set -euo pipefail
cd "$(dirname "$0")"
SECS=${1:-300}; shift || true
TARGETS=("$@"); [ ${#TARGETS[@]} -gt 0 ] || TARGETS=(request zone state_file key_file transfer)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
SAN=${SANITIZER:-none}
seed_keys() {
  local k; k="$(mktemp -d)"
  cargo run -q --manifest-path ../Cargo.toml -- dnssec keygen seed.example --keys "$k" >/dev/null
  cargo run -q --manifest-path ../Cargo.toml -- dnssec keygen seed.example --algorithm 15 --zsk --keys "$k" >/dev/null
  for f in "$k"/*.key; do
    { cat "$f"; printf '\0'; cat "${f%.key}.private"; } > "$1/$(basename "$f" .key)"
  done
  rm -rf "$k"
}
for t in "${TARGETS[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  args=(-max_len=4096 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
  if [ -n "${RUNS:-}" ]; then args+=(-runs="$RUNS"); else args+=(-max_total_time="$SECS"); fi
  # Seeds: the shipped zones for the loader.
  if [ "$t" = zone ]; then cp ../zones/*.toml ../bench/zones/*.toml "corpus/$t/" 2>/dev/null || true; fi
  # Seeds: key pairs as gslb and BIND write them (public, NUL, private).
  if [ "$t" = key_file ] && [ -z "$(ls -A "corpus/$t")" ]; then seed_keys "corpus/$t"; fi
  # Seeds: transfer requests, signed and not (gslb::fuzz::transfer_seeds).
  if [ "$t" = transfer ] && [ -z "$(ls -A "corpus/$t")" ]; then
    GSLB_SEEDS="$PWD/corpus/$t" cargo test -q --manifest-path ../Cargo.toml --test it fuzz_replay::write_transfer_seeds -- --ignored >/dev/null
  fi
  echo "== $t"
  cargo fuzz run --release --sanitizer "$SAN" "$t" "corpus/$t" -- "${args[@]}" \
    -artifact_prefix="artifacts/$t/" 2>&1 | tee "artifacts/$t.log" | grep -E '^(Done|#[0-9]+ +DONE|stat::|==[0-9]+==ERROR|SUMMARY)' || true
  # Keep the corpus small enough to commit: libFuzzer's merge keeps the
  # inputs that add coverage.
  mkdir -p "corpus/$t.min"
  cargo fuzz run --release --sanitizer "$SAN" "$t" "corpus/$t.min" "corpus/$t" -- -merge=1 >/dev/null 2>&1
  rm -rf "corpus/$t"; mv "corpus/$t.min" "corpus/$t"
  echo "   corpus: $(ls "corpus/$t" | wc -l) inputs; crashes: $(ls "artifacts/$t" | wc -l)"
done
