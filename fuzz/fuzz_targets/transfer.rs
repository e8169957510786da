//! `gslb::fuzz::transfer`: see src/fuzz.rs. The test suite replays
//! fuzz/corpus/transfer and fuzz/artifacts/transfer through the same
//! function.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    gslb::fuzz::transfer(data);
});
