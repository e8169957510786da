//! Response rate limiting (RRL) for UDP, as NSD, Knot and BIND do it: a
//! spoofed-source flood cannot turn gslb into an amplifier aimed at a
//! victim, while real clients behind a limited prefix still get through
//! over TCP.
//!
//! - Responses are counted per second, per client prefix (/24 for IPv4,
//!   /56 for IPv6) and per what they answer (NSD's, Knot's and BIND's
//!   "imputed name"): an answer by its name and type, NODATA by its zone
//!   and type, NXDOMAIN by its zone (the owner of the SOA it carries: a
//!   flood of random names below a zone counts as one), and errors
//!   (REFUSED, FORMERR, SERVFAIL, ...) by class alone. So a spoofer
//!   flooding one name at a resolver's prefix limits that name only, never
//!   the resolver's other answers.
//! - Past `rate` responses a second, a response is dropped, except every
//!   `slip`-th, which is sent truncated (TC, question only): a real
//!   resolver retries over TCP, which a spoofed source cannot. `slip = 0`
//!   drops all; `slip = 1` truncates all.
//! - Prefixes in the whitelist are never limited. TCP is never limited.
//! - The table has a fixed number of buckets, hashed by (prefix, class,
//!   name, type),
//!   shared by every UDP worker with one atomic per bucket: memory is fixed
//!   whatever the number of clients, and a check is one hash and one
//!   compare-and-swap. Two prefixes that share a bucket share its budget,
//!   which only ever limits sooner, never later.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use ipnet::IpNet;

use super::prefix::client_prefix;
use prometheus::IntCounter;

/// Buckets in the table (a power of two): 64 K x 8 bytes = 512 KiB.
const BUCKETS: usize = 1 << 16;

/// The settings of RRL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RrlSettings {
    /// Responses per second per prefix and class.
    pub rate: u32,
    /// Every `slip`-th limited response is sent truncated (0: none).
    pub slip: u32,
    /// Never limited.
    pub whitelist: Vec<IpNet>,
}

/// What to do with one response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send it.
    Send,
    /// Send it truncated: header and question, TC set.
    Slip,
    /// Send nothing.
    Drop,
}

/// The class a response is counted in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// NOERROR (answers and NODATA).
    Answer,
    /// NXDOMAIN.
    NxDomain,
    /// Any other RCODE.
    Error,
}

impl Class {
    /// The class of a response by its RCODE (the low bits of byte 3).
    pub fn of(response: &[u8]) -> Class {
        match response.get(3).map(|b| b & 0x0f) {
            Some(0) => Class::Answer,
            Some(3) => Class::NxDomain,
            _ => Class::Error,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What was limited, by class: dropped and slipped responses.
#[derive(Clone, Debug)]
pub struct RrlMetrics {
    /// Per class (answer, nxdomain, error): responses dropped.
    pub dropped: [IntCounter; 3],
    /// Per class: responses sent truncated.
    pub slipped: [IntCounter; 3],
}

/// The shared rate table.
#[derive(Debug)]
pub struct Rrl {
    settings: RrlSettings,
    /// Each: (second since start) << 32 | responses in that second.
    buckets: Box<[AtomicU64]>,
    start: Instant,
    metrics: RrlMetrics,
}

impl Rrl {
    /// A table for `settings`.
    pub fn new(settings: RrlSettings, metrics: RrlMetrics) -> Rrl {
        Rrl {
            settings,
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            start: Instant::now(),
            metrics,
        }
    }

    /// Count one response of `class` to `client`, about what `name` (a
    /// hash of the imputed name and type, see [`imputed`]) says; what to
    /// do with it.
    pub fn check(&self, client: IpAddr, class: Class, name: u64) -> Verdict {
        let now = self.start.elapsed().as_secs() as u32;
        self.check_at(client, class, name, now)
    }

    fn check_at(&self, client: IpAddr, class: Class, name: u64, now: u32) -> Verdict {
        if !self.settings.whitelist.is_empty() && self.whitelisted(client) {
            return Verdict::Send;
        }
        let bucket = &self.buckets[slot(client_prefix(client), class, name)];
        let mut cur = bucket.load(Ordering::Relaxed);
        let count = loop {
            let (sec, n) = ((cur >> 32) as u32, cur as u32);
            let n = if sec == now { n.saturating_add(1) } else { 1 };
            let new = (u64::from(now) << 32) | u64::from(n);
            match bucket.compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => break n,
                Err(seen) => cur = seen,
            }
        };
        if count <= self.settings.rate {
            return Verdict::Send;
        }
        let over = count - self.settings.rate;
        if self.settings.slip > 0 && over.is_multiple_of(self.settings.slip) {
            self.metrics.slipped[class.index()].inc();
            Verdict::Slip
        } else {
            self.metrics.dropped[class.index()].inc();
            Verdict::Drop
        }
    }

    fn whitelisted(&self, client: IpAddr) -> bool {
        let client = match client {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client, IpAddr::V4),
            v4 => v4,
        };
        self.settings.whitelist.iter().any(|n| n.contains(&client))
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv(mut h: u64, bytes: impl IntoIterator<Item = u8>) -> u64 {
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

fn slot(prefix: u128, class: Class, name: u64) -> usize {
    // FNV-1a over the prefix, class and name: cheap and well spread.
    let h = fnv(
        FNV_OFFSET,
        prefix
            .to_le_bytes()
            .into_iter()
            .chain([class as u8])
            .chain(name.to_le_bytes()),
    );
    (h as usize) & (BUCKETS - 1)
}

/// The name at `i` of message `m`, hashed case-blind into `h` (following
/// compression pointers, at most 16). `None` when it runs off the message.
fn hash_name(m: &[u8], mut i: usize, mut h: u64) -> Option<u64> {
    let mut hops = 0;
    loop {
        let len = *m.get(i)?;
        match len {
            0 => return Some(fnv(h, [0])),
            l if l & 0xc0 == 0xc0 => {
                hops += 1;
                if hops > 16 {
                    return None;
                }
                i = usize::from(u16::from_be_bytes([l, *m.get(i + 1)?]) & 0x3fff);
            }
            l => {
                let label = m.get(i + 1..i + 1 + usize::from(l))?;
                h = fnv(h, [l]);
                h = fnv(h, label.iter().map(u8::to_ascii_lowercase));
                i += 1 + usize::from(l);
            }
        }
    }
}

/// What a response is about, for counting it: a hash of its imputed name
/// and type. An answer: the question's name and type. NODATA: the zone
/// (the owner of the first authority record, its SOA) and the type.
/// NXDOMAIN: the zone alone, so random names below it count as one. An
/// error, or a response that cannot be walked: nothing (0), counted by
/// client and class alone.
pub fn imputed(m: &[u8]) -> u64 {
    imputed_name(m).unwrap_or(0)
}

fn imputed_name(m: &[u8]) -> Option<u64> {
    let count = |i: usize| {
        Some(usize::from(u16::from_be_bytes([
            *m.get(i)?,
            *m.get(i + 1)?,
        ])))
    };
    if count(4)? != 1 {
        return None;
    }
    let qend = super::wire::skip_name(m, 12)?;
    let qtype = m.get(qend..qend + 2)?;
    let (an, ns) = (count(6)?, count(8)?);
    match Class::of(m) {
        Class::Error => None,
        Class::Answer if an > 0 => hash_name(m, 12, fnv(FNV_OFFSET, qtype.iter().copied())),
        class => {
            // The first authority record, past the question and answers.
            if ns == 0 {
                return hash_name(m, 12, FNV_OFFSET);
            }
            let mut i = qend + 4;
            for _ in 0..an {
                i = super::wire::skip_name(m, i)?;
                i += 10 + usize::from(u16::from_be_bytes([*m.get(i + 8)?, *m.get(i + 9)?]));
            }
            let seed = if class == Class::Answer {
                fnv(FNV_OFFSET, qtype.iter().copied())
            } else {
                FNV_OFFSET
            };
            hash_name(m, i, seed)
        }
    }
}

/// Apply the limiter to the response in `out` to `client`: false when it
/// must not be sent; `out` truncated when it slips.
pub fn apply(rrl: &Rrl, client: IpAddr, out: &mut Vec<u8>) -> bool {
    match rrl.check(client, Class::of(out), imputed(out)) {
        Verdict::Send => true,
        Verdict::Slip => truncate(out),
        Verdict::Drop => false,
    }
}

/// Turn a response into its truncated form: the header, the question and
/// the OPT record when there is one (RFC 6891: a response to an EDNS query
/// carries one), TC set, no other records. False when it has no whole
/// question to keep (then it is dropped instead).
pub fn truncate(out: &mut Vec<u8>) -> bool {
    if out.len() < 12 || u16::from_be_bytes([out[4], out[5]]) != 1 {
        return false;
    }
    let opt: Option<Vec<u8>> = super::wire::opt_record(out).map(|r| out[r].to_vec());
    let Some(i) = super::wire::skip_name(out, 12) else {
        return false;
    };
    let end = i + 4;
    if out.len() < end {
        return false;
    }
    out.truncate(end);
    out[2] |= 0x02; // TC
    out[6..12].fill(0);
    if let Some(opt) = opt {
        out.extend_from_slice(&opt);
        out[11] = 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rrl(rate: u32, slip: u32, whitelist: &[&str]) -> Rrl {
        let c = || IntCounter::new("x", "x").unwrap();
        Rrl::new(
            RrlSettings {
                rate,
                slip,
                whitelist: whitelist.iter().map(|n| n.parse().unwrap()).collect(),
            },
            RrlMetrics {
                dropped: [c(), c(), c()],
                slipped: [c(), c(), c()],
            },
        )
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn past_the_rate_every_slip_th_is_truncated_and_the_rest_dropped() {
        let r = rrl(3, 2, &[]);
        let got: Vec<Verdict> = (0..8)
            .map(|_| r.check_at(ip("192.0.2.1"), Class::Answer, 7, 5))
            .collect();
        use Verdict::*;
        assert_eq!(got, [Send, Send, Send, Drop, Slip, Drop, Slip, Drop]);
        assert_eq!(r.metrics.slipped[0].get(), 2);
        assert_eq!(r.metrics.dropped[0].get(), 3);
        // The next second starts afresh.
        assert_eq!(r.check_at(ip("192.0.2.1"), Class::Answer, 7, 6), Send);
    }

    /// Each (client, class, verdict) in turn, all in second 1.
    fn expect(r: &Rrl, steps: &[(&str, Class, Verdict)]) {
        for (i, (client, class, want)) in steps.iter().enumerate() {
            assert_eq!(
                r.check_at(ip(client), *class, 7, 1),
                *want,
                "step {i}: {client}"
            );
        }
    }

    #[test]
    fn prefixes_and_classes_are_counted_apart() {
        use Class::*;
        use Verdict::*;
        expect(
            &rrl(1, 0, &[]),
            &[
                ("192.0.2.1", Answer, Send),
                // Same /24: same budget.
                ("192.0.2.200", Answer, Drop),
                // NXDOMAIN and errors have their own.
                ("192.0.2.1", NxDomain, Send),
                ("192.0.2.1", Error, Send),
                // Another /24, another /56.
                ("192.0.3.1", Answer, Send),
                ("2001:db8:0:1::1", Answer, Send),
                ("2001:db8:0:2::1", Answer, Drop),
                ("2001:db8:0:100::1", Answer, Send),
            ],
        );
    }

    #[test]
    fn whitelisted_prefixes_are_never_limited() {
        use Class::*;
        use Verdict::*;
        let r = rrl(1, 0, &["192.0.2.0/25", "2001:db8::/32"]);
        for _ in 0..10 {
            expect(
                &r,
                &[
                    ("192.0.2.7", Answer, Send),
                    ("::ffff:192.0.2.7", Answer, Send),
                    ("2001:db8::1", Answer, Send),
                ],
            );
        }
        // 192.0.2.200 is in the /24 but not whitelisted: limited, and the
        // whitelisted traffic used none of its budget.
        expect(
            &r,
            &[("192.0.2.200", Answer, Send), ("192.0.2.200", Answer, Drop)],
        );
    }

    // Issue 19 item 4. Fails on the code before it, which counted by
    // prefix and class only: a spoofer flooding one name at a resolver's
    // /24 took every answer of that resolver (0 of 10 for another name).
    #[test]
    fn a_flooded_name_limits_that_name_only() {
        let r = rrl(5, 0, &[]);
        let (flooded, victim) = (name_key("flood.example.", 1), name_key("api.example.", 1));
        for _ in 0..100 {
            r.check_at(ip("192.0.2.1"), Class::Answer, flooded, 1);
        }
        assert_eq!(
            r.check_at(ip("192.0.2.9"), Class::Answer, flooded, 1),
            Verdict::Drop
        );
        for _ in 0..5 {
            assert_eq!(
                r.check_at(ip("192.0.2.9"), Class::Answer, victim, 1),
                Verdict::Send
            );
        }
        // The same name, another type: counted apart too.
        assert_eq!(
            r.check_at(
                ip("192.0.2.9"),
                Class::Answer,
                name_key("flood.example.", 28),
                1
            ),
            Verdict::Send
        );
    }

    /// A response as gslb writes it: question `qname`/`qtype`, `answers`
    /// A records (owner a pointer to the question), and for a negative one
    /// an SOA of `zone` in authority.
    fn response(qname: &str, qtype: u16, rcode: u8, answers: usize, zone: Option<&str>) -> Vec<u8> {
        use hickory_proto::rr::Name;
        let wire = |n: &str| {
            let mut b = Vec::new();
            let mut enc = hickory_proto::serialize::binary::BinEncoder::new(&mut b);
            hickory_proto::serialize::binary::BinEncodable::emit(
                &Name::from_ascii(n).unwrap(),
                &mut enc,
            )
            .unwrap();
            b
        };
        let mut m = vec![
            0,
            1,
            0x84,
            rcode,
            0,
            1,
            0,
            answers as u8,
            0,
            u8::from(zone.is_some()),
            0,
            0,
        ];
        m.extend(wire(qname));
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        for _ in 0..answers {
            m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
        }
        if let Some(z) = zone {
            m.extend(wire(z));
            m.extend_from_slice(&[0, 6, 0, 1, 0, 0, 0, 60, 0, 2, 0, 0]);
        }
        m
    }

    fn name_key(name: &str, qtype: u16) -> u64 {
        imputed(&response(name, qtype, 0, 1, None))
    }

    #[test]
    fn the_imputed_name_is_the_answers_name_or_the_negative_answers_zone() {
        let ans = |q: &str, t| imputed(&response(q, t, 0, 1, None));
        assert_eq!(ans("API.example.", 1), ans("api.example.", 1), "case-blind");
        assert_ne!(ans("api.example.", 1), ans("www.example.", 1));
        assert_ne!(ans("api.example.", 1), ans("api.example.", 28));
        // NXDOMAIN: every random name below a zone counts as the zone.
        let nx = |q: &str| imputed(&response(q, 1, 3, 0, Some("example.")));
        assert_eq!(nx("x1.example."), nx("x2.example."));
        assert_ne!(
            nx("x1.example."),
            imputed(&response("x1.other.", 1, 3, 0, Some("other.")))
        );
        // NODATA: the zone and type.
        let nodata = |q: &str, t| imputed(&response(q, t, 0, 0, Some("example.")));
        assert_eq!(nodata("a.example.", 16), nodata("b.example.", 16));
        assert_ne!(nodata("a.example.", 16), nodata("a.example.", 99));
        // Errors: by class alone.
        assert_eq!(imputed(&response("a.example.", 1, 5, 0, None)), 0);
        // Garbage never panics.
        for n in 0..40 {
            let mut m = response("api.example.", 1, 0, 1, None);
            m.truncate(n);
            let _ = imputed(&m);
        }
        let mut looped = response("api.example.", 1, 3, 0, Some("example."));
        let at = looped.len() - 12 - 9;
        looped[at] = 0xc0;
        looped[at + 1] = at as u8;
        let _ = imputed(&looped);
    }

    #[test]
    fn classes_follow_the_rcode() {
        let mut h = [0u8; 12];
        assert_eq!(Class::of(&h), Class::Answer);
        h[3] = 3;
        assert_eq!(Class::of(&h), Class::NxDomain);
        h[3] = 5;
        assert_eq!(Class::of(&h), Class::Error);
    }

    #[test]
    fn truncation_keeps_header_and_question() {
        // ID 1, QR AA, 1 question, 1 answer; question "a." A IN; then junk.
        let mut m = vec![
            0, 1, 0x84, 0, 0, 1, 0, 1, 0, 0, 0, 1, 1, b'a', 0, 0, 1, 0, 1,
        ];
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
        assert!(truncate(&mut m));
        assert_eq!(m.len(), 19);
        assert_eq!(m[2] & 0x02, 0x02, "TC");
        assert_eq!(&m[6..12], &[0; 6]);
        let mut short = vec![0u8; 5];
        assert!(!truncate(&mut short));
        // With an OPT after the answer: kept, ARCOUNT 1.
        let mut m = vec![
            0, 1, 0x84, 0, 0, 1, 0, 1, 0, 0, 0, 1, 1, b'a', 0, 0, 1, 0, 1,
        ];
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
        let opt = [0, 0, 41, 4, 0xd0, 0, 0, 0x80, 0, 0, 0];
        m.extend_from_slice(&opt);
        assert!(truncate(&mut m));
        assert_eq!(&m[19..], &opt);
        assert_eq!(&m[6..12], &[0, 0, 0, 0, 0, 1]);
    }
}
