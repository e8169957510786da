//! What a loaded zone costs, counted by the allocator (issue 19, item 6).
//!
//! A test binary of its own: the counting allocator sees every allocation
//! of the process, so nothing else may run in it. RSS, which also counts
//! what the allocator keeps, is measured by `bench/zone-scale.sh`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed to the system allocator as it is; only the
// byte count is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Names under 10,000 (larger loads free their parse data on a thread of
/// their own, after `load_sources` returns); records over 8,192 (read in
/// pieces).
const NAMES: usize = 9_000;
const RECORDS: usize = NAMES * 4;

/// A zone as `bench/gen-zone.py records` writes it: A, AAAA, TXT and MX at
/// each name.
fn zone_text() -> String {
    let mut t = String::from(
        "[zone]\nname = \"scale.example.\"\nnameservers = [\"ns1.scale.example.\"]\nhostmaster = \"hostmaster.scale.example.\"\n\n[[record]]\nname = \"ns1\"\ntype = \"A\"\nvalue = \"127.0.0.1\"\n",
    );
    for i in 0..RECORDS {
        let h = i / 4;
        let (rtype, value) = match i % 4 {
            0 => (
                "A",
                format!("10.{}.{}.{}", h >> 16 & 255, h >> 8 & 255, h & 255),
            ),
            1 => ("AAAA", format!("2001:db8::{:x}:{:x}", h >> 16, h & 0xffff)),
            2 => ("TXT", format!("v=spf1 ip4:10.0.0.{} -all", h % 256)),
            _ => ("MX", format!("10 mail{}.scale.example.", h % 100)),
        };
        t.push_str(&format!(
            "\n[[record]]\nname = \"host{h}\"\ntype = \"{rtype}\"\nvalue = \"{value}\"\n"
        ));
    }
    t
}

fn load(text: &str) -> gslb::model::Config {
    gslb::config::load_sources(
        &[(PathBuf::from("scale.toml"), text.to_string())],
        gslb::config::LoadOptions::default(),
    )
    .expect("the zone loads")
}

#[test]
fn a_static_record_costs_little_and_reloading_it_costs_nothing_more() {
    let text = zone_text();
    let before = LIVE.load(Ordering::Relaxed);
    let first = load(&text);
    assert_eq!(first.zones[0].record_count, RECORDS + 3, "SOA, NS, ns1 A");
    let live = LIVE.load(Ordering::Relaxed) - before;
    let per_record = live / RECORDS;
    eprintln!("{per_record} bytes per static record");
    // 1.4 KB before the record store (a Record of 272 bytes with its own
    // owner, in a Vec four wide); NSD needs 100-200 bytes.
    assert!(
        per_record < 250,
        "{per_record} bytes per static record ({live} for {RECORDS})"
    );

    // Reloads of the unchanged file: each new zone replaces the last, and
    // what stays is what the first load left.
    let mut served = first;
    for _ in 0..3 {
        let next = load(&text);
        drop(std::mem::replace(&mut served, next));
        let now = LIVE.load(Ordering::Relaxed) - before;
        // Within a kilobyte: the runtime's own bits (a thread's handle, a
        // lazily made buffer) may come and go between loads.
        assert!(
            now.abs_diff(live) < 1024,
            "a reload of the same file holds {now} bytes, the first {live}"
        );
    }
}
