//! `gslb::fuzz::state_file`: see src/fuzz.rs. The test suite replays
//! fuzz/corpus/state_file and fuzz/artifacts/state_file through the same function.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    gslb::fuzz::state_file(data);
});
