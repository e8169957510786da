//! `gslb::fuzz::request`: see src/fuzz.rs. The test suite replays
//! fuzz/corpus/request and fuzz/artifacts/request through the same function.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    gslb::fuzz::request(data);
});
