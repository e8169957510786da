//! `gslb::fuzz::key_file`: see src/fuzz.rs. The test suite replays
//! fuzz/corpus/key_file and fuzz/artifacts/key_file through the same function.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    gslb::fuzz::key_file(data);
});
