//! `gslb::fuzz::zone`: see src/fuzz.rs. The test suite replays
//! fuzz/corpus/zone and fuzz/artifacts/zone through the same function.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    gslb::fuzz::zone(data);
});
