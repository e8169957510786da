//! Every input the fuzzers kept (fuzz/corpus/TARGET) and every crash they
//! found (fuzz/artifacts/TARGET, kept after the fix) replayed through the
//! functions the fuzz targets call (src/fuzz.rs): CI checks them all
//! without a fuzzer.

use std::path::Path;

fn replay(target: &str, f: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in ["corpus", "artifacts"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        let mut files: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for file in files {
            let data = std::fs::read(&file).expect("read a fuzz input");
            // A panic names the input that caused it.
            let r = std::panic::catch_unwind(|| f(&data));
            assert!(r.is_ok(), "{} fails", file.display());
            n += 1;
        }
    }
    n
}

#[test]
fn request_inputs_replay() {
    assert!(
        replay("request", gslb::fuzz::request) > 100,
        "the corpus is committed"
    );
}

#[test]
fn zone_inputs_replay() {
    assert!(
        replay("zone", gslb::fuzz::zone) > 100,
        "the corpus is committed"
    );
}

#[test]
fn state_file_inputs_replay() {
    assert!(
        replay("state_file", gslb::fuzz::state_file) > 10,
        "the corpus is committed"
    );
}

#[test]
fn key_file_inputs_replay() {
    assert!(
        replay("key_file", gslb::fuzz::key_file) > 10,
        "the corpus is committed"
    );
}

#[test]
fn transfer_inputs_replay() {
    // The seeds themselves, then what the fuzzer kept. The unsigned seeds
    // and those signed with the server's key (AXFR, IXFR from 1000, 2000
    // and 7, each) get their transfer, so the fuzzer starts from inputs
    // that reach the stream and its signing, not only the refusals.
    let streamed = gslb::fuzz::transfer_seeds()
        .iter()
        .filter(|seed| gslb::fuzz::transfer_messages(seed) > 0)
        .count();
    assert_eq!(
        streamed, 8,
        "unsigned and signed transfer seeds that were streamed"
    );
    assert!(
        replay("transfer", gslb::fuzz::transfer) > 10,
        "the corpus is committed"
    );
}

/// Write the transfer fuzzer's seeds into `$GSLB_SEEDS` (fuzz/run.sh).
#[test]
#[ignore = "run by fuzz/run.sh to seed the transfer corpus"]
fn write_transfer_seeds() {
    let dir = std::path::PathBuf::from(std::env::var("GSLB_SEEDS").expect("GSLB_SEEDS"));
    for (i, seed) in gslb::fuzz::transfer_seeds().iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:02}")), seed).expect("write a seed");
    }
}
