//! Response rate limiting (RRL) for UDP, as NSD, Knot and BIND do it: a
//! spoofed-source flood cannot turn gslb into an amplifier aimed at a
//! victim, while real clients behind a limited prefix still get through
//! over TCP.
//!
//! - Responses are counted per second, per client prefix (/24 for IPv4,
//!   /56 for IPv6) and per class of response: answers, NXDOMAIN, and
//!   errors (REFUSED, FORMERR, SERVFAIL, ...) are counted apart, so a flood
//!   of random names does not use up the budget of real answers.
//! - Past `rate` responses a second, a response is dropped, except every
//!   `slip`-th, which is sent truncated (TC, question only): a real
//!   resolver retries over TCP, which a spoofed source cannot. `slip = 0`
//!   drops all; `slip = 1` truncates all.
//! - Prefixes in the whitelist are never limited. TCP is never limited.
//! - The table has a fixed number of buckets, hashed by (prefix, class),
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

    /// Count one response of `class` to `client`; what to do with it.
    pub fn check(&self, client: IpAddr, class: Class) -> Verdict {
        let now = self.start.elapsed().as_secs() as u32;
        self.check_at(client, class, now)
    }

    fn check_at(&self, client: IpAddr, class: Class, now: u32) -> Verdict {
        if !self.settings.whitelist.is_empty() && self.whitelisted(client) {
            return Verdict::Send;
        }
        let bucket = &self.buckets[slot(client_prefix(client), class)];
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

fn slot(prefix: u128, class: Class) -> usize {
    // FNV-1a over the prefix and class: cheap and well spread.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in prefix.to_le_bytes().into_iter().chain([class as u8]) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h as usize) & (BUCKETS - 1)
}

/// Apply the limiter to the response in `out` to `client`: false when it
/// must not be sent; `out` truncated when it slips.
pub fn apply(rrl: &Rrl, client: IpAddr, out: &mut Vec<u8>) -> bool {
    match rrl.check(client, Class::of(out)) {
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
            .map(|_| r.check_at(ip("192.0.2.1"), Class::Answer, 5))
            .collect();
        use Verdict::*;
        assert_eq!(got, [Send, Send, Send, Drop, Slip, Drop, Slip, Drop]);
        assert_eq!(r.metrics.slipped[0].get(), 2);
        assert_eq!(r.metrics.dropped[0].get(), 3);
        // The next second starts afresh.
        assert_eq!(r.check_at(ip("192.0.2.1"), Class::Answer, 6), Send);
    }

    /// Each (client, class, verdict) in turn, all in second 1.
    fn expect(r: &Rrl, steps: &[(&str, Class, Verdict)]) {
        for (i, (client, class, want)) in steps.iter().enumerate() {
            assert_eq!(
                r.check_at(ip(client), *class, 1),
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
