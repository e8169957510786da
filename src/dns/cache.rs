//! Pre-encoded answers, per worker: the hot path parses the header and the
//! question without allocating, finds the answer bytes of (name, type,
//! class, EDNS, DO, transport), copies them and patches the ID, the RD/CD
//! bits and the question (which carries the client's case; answer owners
//! point at it). Everything else goes through the engine, which also fills
//! the cache.
//!
//! Correctness: an entry is valid for one generation, the pair (snapshot,
//! health epoch); any reload or verdict/override change empties the cache
//! on its next use. Service answers are stored per pick, and the pick is
//! drawn per query with the same policy code as the engine, so weighted
//! splits keep their distribution. Answers that depend on anything else
//! (shuffled multi-value answers, truncation, chains through services) are
//! never stored. Each worker owns its cache: no lock, no shared cache line.

use std::collections::HashMap;
use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use rand::rngs::SmallRng;

use super::ecs::{self, ClientSubnet};
use super::snapshot::ServedZone;
use crate::policy;

/// The answer cache of the whole process, by default: 32 MiB, shared out
/// between the UDP workers. A full cache stops admitting: a flood of
/// random names neither evicts the working set nor grows memory.
pub const DEFAULT_CACHE_BYTES: usize = 32 << 20;
/// Pick variants kept per service entry.
const MAX_VARIANTS: usize = 16;
/// What an entry costs beyond its name and answer bytes: the key and entry
/// structs, the boxes' headers and the hash table's slot, rounded up
/// (measured with bench/cache-memory.sh, BENCHMARKS.md).
const ENTRY_OVERHEAD: usize = 160;
/// What a further pick variant costs beyond its bytes.
const VARIANT_OVERHEAD: usize = 64;

/// The parts of a request the fast path understands.
#[derive(Debug)]
pub(crate) struct FastQuery<'a> {
    /// The whole request.
    pub req: &'a [u8],
    /// Lower-cased question name, wire form (length-prefixed labels).
    pub key_name: [u8; 256],
    /// Its length.
    pub key_len: usize,
    /// The question section as sent (name, type, class).
    pub question: &'a [u8],
    /// Query type.
    pub qtype: u16,
    /// Query class.
    pub qclass: u16,
    /// `None` without EDNS; `Some(do_bit)` with an EDNS version 0 OPT.
    pub edns: Option<bool>,
    /// The client's UDP payload size (512 without EDNS).
    pub payload: u16,
    /// The query's client subnet (a well-formed one: the engine answers
    /// a malformed one with FORMERR).
    pub ecs: Option<ClientSubnet>,
}

/// Parse a plain query: one question, no answer or authority records, at
/// most an EDNS(0) OPT, no name compression, nothing trailing. `None` sends
/// the request to the engine, which handles every other case.
pub(crate) fn parse(req: &[u8]) -> Option<FastQuery<'_>> {
    if req.len() < 17 || req[2] & 0x80 != 0 || req[2] & 0x78 != 0 {
        return None; // short, a response, or an opcode other than QUERY
    }
    let count = |i: usize| u16::from_be_bytes([req[i], req[i + 1]]);
    if count(4) != 1 || count(6) != 0 || count(8) != 0 || count(10) > 1 {
        return None;
    }
    let mut key_name = [0u8; 256];
    let mut i = 12;
    loop {
        let len = usize::from(*req.get(i)?);
        if len > 63 || i - 12 + len + 1 > 255 {
            return None; // compression pointer, extended label, or too long
        }
        key_name[i - 12] = len as u8;
        if len == 0 {
            i += 1;
            break;
        }
        let label = req.get(i + 1..i + 1 + len)?;
        for (k, b) in label.iter().enumerate() {
            key_name[i - 12 + 1 + k] = b.to_ascii_lowercase();
        }
        i += 1 + len;
    }
    let key_len = i - 12;
    let qtype = u16::from_be_bytes([*req.get(i)?, *req.get(i + 1)?]);
    let qclass = u16::from_be_bytes([*req.get(i + 2)?, *req.get(i + 3)?]);
    let qend = i + 4;
    let question = &req[12..qend];
    let (edns, payload, ecs) = if count(10) == 1 {
        // OPT: root name, type 41, class = payload, TTL = rcode/version/flags, rdlen, rdata.
        let opt = req.get(qend..qend + 11)?;
        if opt[0] != 0 || u16::from_be_bytes([opt[1], opt[2]]) != 41 || opt[6] != 0 {
            return None; // not an OPT, or EDNS version > 0 (BADVERS: engine)
        }
        if opt[7] & 0x40 != 0 {
            return None; // Compact Answers OK (RFC 9824): rare, the engine's
        }
        let rdlen = usize::from(u16::from_be_bytes([opt[9], opt[10]]));
        if qend + 11 + rdlen != req.len() {
            return None;
        }
        // The answer bytes are stored without ECS; the echo is appended
        // per query. A malformed option is the engine's to refuse.
        let ecs = super::ecs::from_options(&req[qend + 11..]).ok()?;
        let payload = u16::from_be_bytes([opt[3], opt[4]]).max(512);
        (Some(opt[7] & 0x80 != 0), payload, ecs)
    } else {
        if qend != req.len() {
            return None;
        }
        (None, 512, None)
    };
    Some(FastQuery {
        req,
        key_name,
        key_len,
        question,
        qtype,
        qclass,
        edns,
        payload,
        ecs,
    })
}

#[derive(Clone, PartialEq, Eq)]
struct Key {
    name: Box<[u8]>,
    qtype: u16,
    qclass: u16,
    edns: Option<bool>,
    tcp: bool,
}

/// What to count for a cached answer, as the engine would.
pub(super) struct Counted {
    zone: Option<Arc<ServedZone>>,
    rcode: ResponseCode,
}

enum Body {
    /// The same bytes for every query.
    Fixed(Box<[u8]>),
    /// A service answer: bytes per pick of service `svc` of `zone`.
    Picks { svc: usize, variants: Vec<Variant> },
}

/// One pick's answer, with what the engine counted for it.
struct Variant {
    picks: Vec<usize>,
    /// Served with the degraded TTL: with geo and nearest services the same
    /// picks are the preferred answer of one location and a failover of
    /// another.
    degraded: bool,
    bytes: Box<[u8]>,
    rcode: ResponseCode,
    /// Records were answered from the picked regions (not NODATA).
    counted: bool,
}

struct Entry {
    counted: Counted,
    body: Body,
}

/// One worker's cache and RNG.
pub struct Worker {
    /// RNG for weighted picks and shuffles.
    pub rng: SmallRng,
    /// Decoded geo database records.
    pub geo: policy::geo::Memo,
    entries: HashMap<Key, Entry>,
    generation: (u64, u64),
    /// What the entries cost, by the estimate of [`ENTRY_OVERHEAD`].
    bytes: usize,
    /// Most bytes kept (0: no cache).
    max_bytes: usize,
    /// Told of every change of `bytes` (`gslb_answer_cache_bytes`).
    gauge: Option<crate::metrics::DnsMetrics>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.account(-(self.bytes as i64));
    }
}

/// What the engine tells the cache about an answer it built.
#[derive(Default)]
pub(super) enum Fill {
    /// Not storable.
    No,
    /// The same for every query.
    #[default]
    Fixed,
    /// Depends only on this service's pick; `counted`: records were
    /// answered from the picks (the answer counters count it).
    Picks {
        svc: usize,
        picks: Vec<usize>,
        degraded: bool,
        counted: bool,
    },
}

impl Worker {
    /// A worker with this RNG and an empty cache of the default size.
    pub fn new(rng: SmallRng) -> Self {
        Self::with_cache(rng, DEFAULT_CACHE_BYTES)
    }

    /// A worker whose cache holds at most `max_bytes` (its share of the
    /// process's `answer-cache-mib`).
    pub fn with_cache(rng: SmallRng, max_bytes: usize) -> Self {
        Worker {
            rng,
            geo: Default::default(),
            entries: HashMap::new(),
            generation: (0, 0),
            bytes: 0,
            max_bytes,
            gauge: None,
        }
    }

    /// Report the cache's size to `metrics`.
    pub(super) fn reporting_to(mut self, metrics: crate::metrics::DnsMetrics) -> Self {
        self.gauge = Some(metrics);
        self
    }

    fn account(&self, delta: i64) {
        if let Some(g) = &self.gauge
            && delta != 0
        {
            g.cache_bytes(delta);
        }
    }

    /// Store an entry if it fits the cache's bytes; an entry it replaces
    /// gives its bytes back.
    fn put(&mut self, key: Key, entry: Entry) {
        let name = key.name.len();
        if !self.admit(entry_cost(name, &entry.body)) {
            return;
        }
        if let Some(old) = self.entries.insert(key, entry) {
            let cost = entry_cost(name, &old.body);
            self.bytes -= cost.min(self.bytes);
            self.account(-(cost as i64));
        }
    }

    /// Whether `cost` more bytes fit; if so they are counted.
    fn admit(&mut self, cost: usize) -> bool {
        if self.bytes + cost > self.max_bytes {
            return false;
        }
        self.bytes += cost;
        self.account(cost as i64);
        true
    }

    /// What the cached answers cost now (estimated, in bytes).
    pub fn cache_bytes(&self) -> usize {
        self.bytes
    }

    /// A worker that caches nothing: for TCP connections, which are many,
    /// long-lived and carry answers up to 64 KiB, so per-connection caches
    /// could be driven to gigabytes; TCP is not the hot path.
    pub fn without_cache(rng: SmallRng) -> Self {
        Self::with_cache(rng, 0)
    }

    /// Forget everything when the generation moved.
    pub(super) fn sync(&mut self, generation: (u64, u64)) {
        if self.generation != generation {
            if self.generation.0 != generation.0 {
                // A reload may have read the databases again.
                self.geo.clear();
            }
            self.entries.clear();
            self.account(-(self.bytes as i64));
            self.bytes = 0;
            self.generation = generation;
        }
    }

    fn key(q: &FastQuery<'_>, tcp: bool) -> Key {
        Key {
            name: q.key_name[..q.key_len].into(),
            qtype: q.qtype,
            qclass: q.qclass,
            edns: q.edns,
            tcp,
        }
    }

    /// Answer from the cache into `out`, or return false.
    pub(super) fn answer(
        &mut self,
        q: &FastQuery<'_>,
        from: std::net::IpAddr,
        tcp: bool,
        limit: usize,
        out: &mut Vec<u8>,
        metrics: &crate::metrics::DnsMetrics,
    ) -> bool {
        // Looked up by a borrowed key: no allocation per query.
        let key = KeyRef {
            name: &q.key_name[..q.key_len],
            qtype: q.qtype,
            qclass: q.qclass,
            edns: q.edns,
            tcp,
        };
        let Some(entry) = self.entries.get(&key as &dyn AsKey) else {
            return false;
        };
        // The echo of the client subnet, when the zone honours it, is
        // appended to the stored bytes: it must fit too.
        let echo = q
            .ecs
            .filter(|_| entry.counted.zone.as_ref().is_some_and(|z| z.zone.ecs));
        let room = limit - echo.as_ref().map_or(0, ecs::echo_len);
        let mut scope = 0;
        let (bytes, rcode): (&[u8], ResponseCode) = match &entry.body {
            Body::Fixed(b) => {
                if b.len() > room {
                    return false;
                }
                (b, entry.counted.rcode)
            }
            Body::Picks { svc, variants } => {
                let Some(zone) = &entry.counted.zone else {
                    return false;
                };
                let service = &zone.zone.services[*svc];
                let addr = ecs::locating_addr(from, echo.as_ref());
                let place = policy::geo::locate(service, addr, &mut self.geo);
                let (order, loc) = match &place {
                    Some(p) => (&p.order[..], p.loc),
                    None => (&[][..], 0),
                };
                let sel = policy::select_at(service, zone.health.as_ref(), order, &mut self.rng);
                // A pick not seen yet, or too big for this client: the engine
                // builds it (and counts it).
                let Some(v) = variants.iter().find(|v| {
                    v.picks == sel.picks && v.degraded == sel.degraded && v.bytes.len() <= room
                }) else {
                    return false;
                };
                if v.counted {
                    zone.count_answer(*svc, loc, &v.picks);
                }
                scope = place.map_or(0, |p| p.scope);
                (&v.bytes, v.rcode)
            }
        };
        out.clear();
        out.extend_from_slice(bytes);
        // ID; RD and CD from the request; the question exactly as asked.
        let req = q.req;
        out[0] = req[0];
        out[1] = req[1];
        out[2] = (out[2] & !0x01) | (req[2] & 0x01);
        out[3] = (out[3] & !0x10) | (req[3] & 0x10);
        out[12..12 + q.question.len()].copy_from_slice(q.question);
        if let Some(cs) = &echo {
            ecs::append(out, cs, ecs::echo_scope(cs, scope));
        }
        let qtype = RecordType::from(q.qtype);
        let transport = if tcp {
            super::Transport::Tcp
        } else {
            super::Transport::Udp
        };
        match &entry.counted.zone {
            Some(z) => z.counters.query(qtype, rcode, transport),
            None => metrics.query_no_zone(qtype, rcode, transport),
        }
        true
    }

    /// Store an answer the engine built (not truncated, fast-parsed request).
    pub(super) fn fill(
        &mut self,
        q: &FastQuery<'_>,
        tcp: bool,
        zone: Option<Arc<ServedZone>>,
        rcode: ResponseCode,
        fill: Fill,
        bytes: &[u8],
    ) {
        let key = Self::key(q, tcp);
        match fill {
            Fill::No => {}
            Fill::Fixed => self.put(
                key,
                Entry {
                    counted: Counted { zone, rcode },
                    body: Body::Fixed(bytes.into()),
                },
            ),
            Fill::Picks {
                svc,
                picks,
                degraded,
                counted,
            } => {
                let variant = Variant {
                    picks,
                    degraded,
                    bytes: bytes.into(),
                    rcode,
                    counted,
                };
                let cost = VARIANT_OVERHEAD + variant.bytes.len();
                let room = self.bytes + cost <= self.max_bytes;
                if let Some(Entry {
                    body: Body::Picks { variants, .. },
                    ..
                }) = self.entries.get_mut(&key)
                {
                    if room
                        && variants.len() < MAX_VARIANTS
                        && !variants
                            .iter()
                            .any(|v| v.picks == variant.picks && v.degraded == variant.degraded)
                    {
                        variants.push(variant);
                        self.admit(cost);
                    }
                } else if zone.is_some() {
                    self.put(
                        key,
                        Entry {
                            counted: Counted { zone, rcode },
                            body: Body::Picks {
                                svc,
                                variants: vec![variant],
                            },
                        },
                    );
                }
            }
        }
    }
}

/// What an entry costs the cache: its name and answer bytes and a fixed
/// overhead, and for each further pick variant its bytes and overhead.
fn entry_cost(name_len: usize, body: &Body) -> usize {
    ENTRY_OVERHEAD
        + name_len
        + match body {
            Body::Fixed(b) => b.len(),
            Body::Picks { variants, .. } => variants
                .iter()
                .enumerate()
                .map(|(i, v)| v.bytes.len() + if i > 0 { VARIANT_OVERHEAD } else { 0 })
                .sum(),
        }
}

/// Borrowed key lookups without allocating a `Key` per query.
trait AsKey {
    fn parts(&self) -> (&[u8], u16, u16, Option<bool>, bool);
}

impl AsKey for Key {
    fn parts(&self) -> (&[u8], u16, u16, Option<bool>, bool) {
        (&self.name, self.qtype, self.qclass, self.edns, self.tcp)
    }
}

struct KeyRef<'a> {
    name: &'a [u8],
    qtype: u16,
    qclass: u16,
    edns: Option<bool>,
    tcp: bool,
}

impl AsKey for KeyRef<'_> {
    fn parts(&self) -> (&[u8], u16, u16, Option<bool>, bool) {
        (self.name, self.qtype, self.qclass, self.edns, self.tcp)
    }
}

impl<'a> std::borrow::Borrow<dyn AsKey + 'a> for Key {
    fn borrow(&self) -> &(dyn AsKey + 'a) {
        self
    }
}

impl PartialEq for dyn AsKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn AsKey + '_ {}

impl std::hash::Hash for dyn AsKey + '_ {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.parts().hash(state);
    }
}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.parts().hash(state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &[&str], qtype: u16, opt: Option<u8>) -> Vec<u8> {
        let mut q = vec![
            0xab,
            0xcd,
            0x01,
            0x00,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            u8::from(opt.is_some()),
        ];
        for l in name {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&1u16.to_be_bytes());
        if let Some(flags) = opt {
            q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, flags, 0, 0, 0]);
        }
        q
    }

    #[test]
    fn parses_plain_queries_and_lowercases_the_key() {
        let q = query(&["WwW", "Example"], 1, Some(0x80));
        let p = parse(&q).expect("plain query");
        assert_eq!(&p.key_name[..p.key_len], b"\x03www\x07example\x00");
        assert_eq!(p.question, &q[12..q.len() - 11]);
        assert_eq!(
            (p.qtype, p.qclass, p.edns, p.payload),
            (1, 1, Some(true), 1232)
        );
        let plain = query(&["a"], 28, None);
        let p = parse(&plain).unwrap();
        assert_eq!((p.edns, p.payload), (None, 512));
    }

    #[test]
    fn leaves_everything_unusual_to_the_engine() {
        let mut q = query(&["a"], 1, None);
        q.push(0); // trailing byte
        assert!(parse(&q).is_none());
        let mut q = query(&["a"], 1, None);
        q[2] |= 0x80; // a response
        assert!(parse(&q).is_none());
        let mut q = query(&["a"], 1, None);
        q[2] |= 0x28; // opcode 5
        assert!(parse(&q).is_none());
        let mut q = query(&["a"], 1, Some(0));
        let n = q.len();
        q[n - 5] = 1; // EDNS version 1
        assert!(parse(&q).is_none());
        let mut q = query(&["a"], 1, None);
        q[12] = 0xc0; // compression pointer
        assert!(parse(&q).is_none());
        assert!(parse(&query(&["a"], 1, None)[..14]).is_none());
    }
}
