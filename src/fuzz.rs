//! Entry points for the fuzz targets in `fuzz/`, and for the test suite,
//! which replays every saved corpus input and crash through these same
//! functions (tests/it/fuzz_replay.rs), so CI checks them without a fuzzer.
//!
//! Each takes arbitrary bytes and must return without panicking, hanging
//! or allocating without bound.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use crate::config::{LoadOptions, load_sources};
use crate::dns::{Engine, EngineOptions, Transport, Worker};
use crate::health::{HealthTable, RealProbes};
use crate::metrics::Metrics;

/// A zone with every kind of data the engine answers from, and no health
/// checks (no probes run): static records of each type, a delegation with
/// glue, wildcards, CNAME chains and a loop, and failover, weighted,
/// all-healthy, geo and nearest services, one with a cname region.
pub const ZONE: &str = r#"
[zone]
name = "fuzz.example."
nameservers = ["ns1.fuzz.example."]
hostmaster = "hostmaster@fuzz.example"

[[record]]
name = "ns1"
type = "A"
value = "192.0.2.53"

[[record]]
name = "@"
type = "MX"
value = "10 mail"

[[record]]
name = "mail"
type = "AAAA"
value = "2001:db8::25"

[[record]]
name = "@"
type = "TXT"
value = "v=spf1 -all"

[[record]]
name = "@"
type = "CAA"
value = "0 issue \"ca.example\""

[[record]]
name = "_sip._tcp"
type = "SRV"
value = "10 5 5060 mail"

[[record]]
name = "sub"
type = "NS"
value = "ns.sub"

[[record]]
name = "ns.sub"
type = "A"
value = "192.0.2.54"

[[record]]
name = "*.wild"
type = "A"
value = "192.0.2.80"

[[record]]
name = "*"
type = "TXT"
value = "apex wildcard"

[[record]]
name = "c1"
type = "CNAME"
value = "c2"

[[record]]
name = "c2"
type = "CNAME"
value = "api"

[[record]]
name = "loop1"
type = "CNAME"
value = "loop2"

[[record]]
name = "loop2"
type = "CNAME"
value = "loop1"

[region.a]
endpoints = ["192.0.2.1", "2001:db8::1"]
location = [50.1, 8.7]

[region.b]
endpoints = ["192.0.2.2", "192.0.2.3"]
location = [39.0, -77.5]

[geo.world]
nets = { "198.51.100.0/24" = "office", "198.51.100.128/25" = "a", "2001:db8::/32" = "b", "127.0.0.0/8" = "b" }

[region.lb]
cname = "lb.cloud.example."

[service.api]
regions = ["a", "b"]

[service.www]
policy = "weighted"
weights = { a = 3, b = 1 }

[service.all]
policy = "all-healthy"
regions = ["a", "b"]

[service."*.svc"]
regions = ["b", "a"]

[service.edge]
regions = ["lb", "a"]

[service.geo]
policy = "geo"
geo = "world"
map = { office = ["b", "a"], a = ["a"], "*" = ["a", "b"] }

[service.near]
policy = "nearest"
geo = "world"
regions = ["a", "b"]
answers = 2
"#;

/// The source address of fuzzed queries (their ECS options vary).
const CLIENT: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

struct Fixture {
    engine: Engine,
    _health: Arc<HealthTable>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| make_fixture(ZONE.to_string(), Arc::default(), |_| {}))
}

/// An engine serving `zone`, with `transfers`; `prepare` sees the snapshot
/// before it is served.
fn make_fixture(
    zone: String,
    transfers: Arc<crate::dns::Transfers>,
    prepare: impl FnOnce(&crate::dns::Snapshot),
) -> Fixture {
    let config = load_sources(
        &[(PathBuf::from("fuzz.toml"), zone)],
        LoadOptions { auto_serial: 1 },
    )
    .expect("the fuzz zone loads");
    let metrics = Metrics::new();
    let health = Arc::new(HealthTable::new(
        metrics.clone(),
        Arc::new(RealProbes::default()),
        None,
        tokio_util::sync::CancellationToken::new(),
    ));
    let snapshot = crate::reload::build_snapshot(&config, &health, &metrics, &transfers);
    prepare(&snapshot);
    let engine = Engine::new(
        snapshot,
        EngineOptions {
            rng_seed: Some(1),
            ..EngineOptions::default()
        },
        metrics.dns.clone(),
        health.epoch.clone(),
    )
    .with_transfers(transfers);
    Fixture {
        engine,
        _health: health,
    }
}

/// One datagram, answered as over UDP (with the answer cache), then the
/// same bytes read as a TCP stream: length-prefixed messages until the
/// bytes run out.
pub fn request(data: &[u8]) {
    let f = fixture();
    let mut worker = f.engine.worker(f.engine.rng(0));
    let mut out = Vec::new();
    // Twice: the second may come from the cache the first filled.
    for _ in 0..2 {
        if f.engine
            .respond(data, CLIENT, Transport::Udp, &mut out, &mut worker)
        {
            check_response(data, &out);
        }
    }
    let mut tcp = Worker::without_cache(f.engine.rng(1));
    let mut rest = data;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let Some(msg) = rest.get(2..2 + len) else {
            break;
        };
        if f.engine
            .respond(msg, CLIENT, Transport::Tcp, &mut out, &mut tcp)
        {
            check_response(msg, &out);
        }
        rest = &rest[2 + len..];
    }
}

/// What every response must be: a response to the request's ID, within
/// the size a message can have.
fn check_response(req: &[u8], out: &[u8]) {
    assert!(out.len() >= 12, "a response has a header");
    assert!(out.len() <= 65_535, "a response fits a message");
    assert_eq!(&out[..2], &req[..2], "the request's ID");
    assert_eq!(out[2] & 0x80, 0x80, "QR set");
}

/// A zone file's text through the loader: errors or a zone, never a panic.
/// Bytes that are not UTF-8 are replaced, so every input reaches the parser
/// (the loader's own UTF-8 check is the file reader's, tested apart).
pub fn zone(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Err(e) = load_sources(
        &[(PathBuf::from("fuzz.toml"), text.into_owned())],
        LoadOptions { auto_serial: 1 },
    ) {
        for err in &e.0 {
            assert!(!err.msg.is_empty(), "every error says what is wrong");
        }
    }
}

/// A state file's bytes through its parser.
pub fn state_file(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = crate::health::persist::StateFile::parse(&text);
    // What a start reads of a damaged file.
    let _ = crate::health::persist::StateFile::salvage(&text);
}

/// A DNSSEC key file's text (public, then private, split at the first
/// NUL) through both parsers: errors or keys, never a panic, and every
/// error says what is wrong (tests/it/dnssec.rs checks that none shows a
/// private key).
pub fn key_file(data: &[u8]) {
    use crate::dnssec::keyfile::{parse_key_text, parse_private_text};
    let cut = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let public = String::from_utf8_lossy(&data[..cut]);
    let private = String::from_utf8_lossy(data.get(cut + 1..).unwrap_or_default());
    let p = std::path::Path::new("K.key");
    if let Err(e) = parse_key_text(p, &public) {
        assert!(!e.msg.is_empty(), "every error says what is wrong");
    }
    for text in [&public, &private] {
        if let Err(e) = parse_private_text(p, text) {
            assert!(!e.msg.is_empty(), "every error says what is wrong");
        }
    }
}

/// The fuzz zone served to secondaries: 127.0.0.0/8 may transfer it,
/// unsigned (so that what the fuzzer makes of a request reaches the
/// transfer, which a broken MAC would not) or signed with the settings'
/// key [`TRANSFER_KEY`] (then verified, and every message signed).
const TRANSFER: &str = r#"
[transfer]
allow = ["127.0.0.0/8"]
"#;

/// When the transfer seeds are signed, and the time the fixture checks
/// TSIG at.
const SEED_TIME: u64 = 1_800_000_000;

/// The secret of the transfer fuzz fixture's key `fuzz-key.`
/// (HMAC-SHA256).
pub const TRANSFER_KEY: &[u8] = b"fuzz-secret-fuzz-secret-fuzz-sec";

fn transfer_fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let mut keys = std::collections::BTreeMap::new();
        keys.insert(
            "fuzz-key".to_string(),
            crate::model::TsigKey {
                name: hickory_proto::rr::Name::from_ascii("fuzz-key.").expect("name"),
                algorithm: hickory_proto::rr::rdata::tsig::TsigAlgorithm::HmacSha256,
                secret: TRANSFER_KEY.to_vec(),
            },
        );
        // TSIG is checked at the seeds' signing time, so that signed seeds
        // (and what the fuzzer makes of them) reach the transfer itself,
        // not a BADTIME refusal.
        let transfers = Arc::new(
            crate::dns::Transfers::new(keys, crate::metrics::TransferMetrics::disabled())
                .at_fixed_time(SEED_TIME),
        );
        make_fixture(format!("{ZONE}{TRANSFER}"), transfers, |snapshot| {
            // Two versions, so IXFR has a change to send.
            for served in snapshot.zones() {
                let journal = served.journal.as_ref().expect("transferred");
                let mut records =
                    crate::dns::transfer::zone_as_transferred(&served.zone, served.health.as_ref());
                journal.commit(records.clone(), None, 1000);
                records.retain(|r| r.record_type() != hickory_proto::rr::RecordType::MX);
                journal.commit(records, None, 2000);
            }
        })
    })
}

/// A request to a server whose zone is served to secondaries: answered
/// as over UDP (IXFR's SOA, a signed query's signed answer, the
/// refusals), and, when it asks for a transfer, every message of the
/// transfer as TCP would send it: each a whole response of at most 64 KiB
/// to the request's ID, the first with the question.
pub fn transfer(data: &[u8]) {
    transfer_messages(data);
}

/// [`transfer`], saying how many transfer messages the request got (0: it
/// was answered, or refused, in one reply).
pub fn transfer_messages(data: &[u8]) -> usize {
    let f = transfer_fixture();
    let mut worker = f.engine.worker(f.engine.rng(0));
    let mut out = Vec::new();
    if f.engine
        .respond(data, CLIENT, Transport::Udp, &mut out, &mut worker)
    {
        check_response(data, &out);
    }
    if !crate::dns::xfr::is_transfer(data) {
        return 0;
    }
    match crate::dns::xfr::plan(&f.engine, data, CLIENT) {
        crate::dns::xfr::Plan::Reply(bytes) => {
            if !bytes.is_empty() {
                check_response(data, &bytes);
            }
            0
        }
        crate::dns::xfr::Plan::Stream(mut t) => {
            let mut n = 0;
            while let Some(m) = t.next_message() {
                let m = m.expect("a transfer message encodes");
                check_response(data, &m);
                hickory_proto::op::Message::from_vec(&m).expect("a transfer message parses");
                n += 1;
                assert!(n < 1000, "a transfer of the fuzz zone ends");
            }
            n
        }
    }
}

/// Requests the transfer fuzzer starts from: AXFR and IXFR, unsigned,
/// signed with the fixture's key and with another, a signed SOA query, a
/// NOTIFY, over the fuzz zone.
pub fn transfer_seeds() -> Vec<Vec<u8>> {
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::rdata::SOA;
    use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
    use hickory_proto::rr::{Name, RData, Record, RecordType, TSigner};
    let apex = Name::from_ascii("fuzz.example.").expect("name");
    let key = |name: &str, secret: &[u8]| {
        TSigner::new(
            secret.to_vec(),
            TsigAlgorithm::HmacSha256,
            Name::from_ascii(name).expect("name"),
            300,
        )
        .expect("signer")
    };
    let signers = [
        None,
        Some(key("fuzz-key.", TRANSFER_KEY)),
        Some(key("other-key.", TRANSFER_KEY)),
        Some(key("fuzz-key.", b"not-the-secret-not-the-secret!!!")),
    ];
    let mut out = Vec::new();
    for (op, rtype, since) in [
        (OpCode::Query, RecordType::AXFR, None),
        (OpCode::Query, RecordType::IXFR, Some(1000)),
        (OpCode::Query, RecordType::IXFR, Some(2000)),
        (OpCode::Query, RecordType::IXFR, Some(7)),
        (OpCode::Query, RecordType::SOA, None),
        (OpCode::Notify, RecordType::SOA, None),
    ] {
        for signer in &signers {
            let mut m = Message::new(0x2121, MessageType::Query, op);
            m.add_query(Query::query(apex.clone(), rtype));
            if let Some(serial) = since {
                m.add_authority(Record::from_rdata(
                    apex.clone(),
                    0,
                    RData::SOA(SOA::new(apex.clone(), apex.clone(), serial, 0, 0, 0, 0)),
                ));
            }
            if let Some(s) = signer {
                let (tsig, _) = s.sign_message(&m, SEED_TIME).expect("signs");
                m.set_signature(tsig);
            }
            out.push(m.to_vec().expect("encodes"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_fixture_answers() {
        let q = [
            0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'a', b'p', b'i', 4, b'f', b'u', b'z',
            b'z', 7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 0, 0, 1, 0, 1,
        ];
        super::request(&q);
        super::zone(super::ZONE.as_bytes());
        super::state_file(b"{}");
        super::key_file(b"z. IN DNSKEY 257 3 13 AAAA\0Algorithm: 13\n");
    }
}
