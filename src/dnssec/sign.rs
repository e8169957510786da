//! Signing answers online (RFC 4034, 4035): each RRset an answer carries
//! gets its RRSIGs here, made once and then served from a cache.
//!
//! Signatures are made for a validity window aligned to a fixed grid (a
//! week, or half the validity when that is shorter), as PowerDNS aligns
//! its to the week: an RRset that comes back (a primary after a failover)
//! finds its signature still in the cache, and every node of a cluster
//! with the same keys makes byte-identical signatures' inputs. Inception
//! is an hour before the window starts (clock skew); expiration is the
//! window's start plus `signature-validity`, so a served signature always
//! has at least half of its validity left.
//!
//! The DNSKEY set is signed by the key-signing keys (or combined keys);
//! everything else by the zone-signing keys, or by the combined keys when
//! there are no separate ones.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hickory_proto::dnssec::rdata::sig::SigInput;
use hickory_proto::dnssec::rdata::{CDNSKEY, CDS, DNSSECRData, RRSIG};
use hickory_proto::dnssec::{Algorithm, DigestType, TBS};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, SerialNumber};
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair};

use super::keyfile::KeyPair;

/// A private key, ready to sign.
pub enum RingKey {
    /// ECDSA P-256 with SHA-256 (algorithm 13), and the randomness it needs.
    Ecdsa(Box<EcdsaKeyPair>, ring::rand::SystemRandom),
    /// Ed25519 (algorithm 15).
    Ed25519(Box<Ed25519KeyPair>),
}

impl RingKey {
    fn sign(&self, data: &[u8]) -> Result<Vec<u8>, String> {
        match self {
            RingKey::Ecdsa(k, rng) => k
                .sign(rng, data)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| "ECDSA signing failed".to_string()),
            RingKey::Ed25519(k) => Ok(k.sign(data).as_ref().to_vec()),
        }
    }
}

/// One key a zone signs with.
struct SigningKey {
    key: RingKey,
    tag: u16,
    algorithm: Algorithm,
    sep: bool,
    /// Its public key: two keys with one tag are still two keys.
    public: Vec<u8>,
}

/// Most RRsets whose signatures are kept. A full cache keeps the current
/// window's entries and drops the older ones, or starts over when the
/// current window's fill it (a flood of random names, each with its own
/// denial, must not grow it).
pub const CACHE_ENTRIES: usize = 100_000;
/// The longest grid step of validity windows.
const MAX_WINDOW: u32 = 7 * 86_400;
/// Inception this long before the window starts: validators whose clock
/// is behind still accept.
const SKEW: u32 = 3600;

/// Signatures made on the query path, process-wide
/// (`gslb_dnssec_signatures_total`).
pub static SIGNATURES_MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Signatures made ahead of the queries that need them (at load, at key
/// events, before a validity window begins).
pub static SIGNATURES_AHEAD: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// RRsets whose signatures came from the cache.
pub static SIGNATURES_CACHED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// What the status shows of one key of a zone: never its private half.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    /// Key tag.
    pub tag: u16,
    /// Algorithm number (13, 15).
    pub algorithm: u8,
    /// "CSK" (the only kind, signing everything), "KSK" or "ZSK".
    pub role: &'static str,
    /// Its timing metadata.
    pub timing: super::keyfile::Timing,
}

impl KeyInfo {
    /// Where the key is at `now` (unix seconds): "future" (not yet
    /// published), "published" (in the DNSKEY set, not signing), "active"
    /// (signing), "retired" (no longer signing, still published) or
    /// "removed".
    pub fn state(&self, now: u64) -> &'static str {
        let t = &self.timing;
        let passed = |x: Option<u64>| x.is_some_and(|x| x <= now);
        if passed(t.delete) {
            "removed"
        } else if t.publish.is_some_and(|x| x > now) {
            "future"
        } else if passed(t.inactive) {
            "retired"
        } else if t.activate.is_none_or(|x| x <= now) {
            "active"
        } else {
            "published"
        }
    }
}

/// Signatures by [`cache_key`]: the inception they were made for, and the
/// RRSIG records.
type SigCache = HashMap<u64, (u32, Arc<[Record]>)>;

/// The signing side of one zone: its keys, its DNSKEY records, its cache.
pub struct ZoneSigner {
    apex: Name,
    keys: Vec<SigningKey>,
    /// The DNSKEY records of every published key, at the apex.
    pub dnskeys: Vec<Record>,
    /// The CDS and CDNSKEY records of the key-signing keys in use.
    pub cds: Vec<Record>,
    validity: u32,
    window: u32,
    /// Signatures by [`cache_key`]: the inception they were made for, and
    /// the RRSIG records.
    cache: Mutex<SigCache>,
    /// Most entries of `cache` ([`CACHE_ENTRIES`]; less in tests).
    capacity: usize,
    /// The next time a key of the zone changes state (unix seconds).
    next_event: Option<u64>,
    /// Every key of the zone found, for the status.
    pub key_info: Vec<KeyInfo>,
    /// This signer's counts (signatures made for queries, made ahead,
    /// RRsets served from the cache), for the zone's status.
    pub counts: [std::sync::atomic::AtomicU64; 3],
}

impl std::fmt::Debug for ZoneSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZoneSigner")
            .field("apex", &self.apex)
            .field("keys", &self.keys.iter().map(|k| k.tag).collect::<Vec<_>>())
            .field("validity", &self.validity)
            .finish()
    }
}

impl ZoneSigner {
    /// Sign for `apex` with the keys of `pairs` that are active at `now`
    /// (unix seconds), publishing those published then; signatures valid
    /// for `validity` seconds. `Err` says why the zone cannot be signed.
    pub fn new(
        apex: Name,
        pairs: &[KeyPair],
        now: u64,
        validity: u32,
        ttl: u32,
    ) -> Result<Self, String> {
        let published = |k: &KeyPair| {
            k.timing.publish.is_none_or(|t| t <= now) && k.timing.delete.is_none_or(|t| now < t)
        };
        let active = |k: &KeyPair| {
            published(k)
                && k.timing.activate.is_none_or(|t| t <= now)
                && k.timing.inactive.is_none_or(|t| now < t)
        };
        let mut keys = Vec::new();
        for k in pairs.iter().filter(|k| active(k)) {
            keys.push(SigningKey {
                key: k.ring_key()?,
                tag: k.tag(),
                algorithm: k.algorithm,
                sep: k.is_sep(),
                public: k.public.clone(),
            });
        }
        if keys.is_empty() {
            return Err(format!(
                "no key of {apex} is active now ({} key files; see their Activate and Inactive times)",
                pairs.len()
            ));
        }
        let dnskeys = pairs
            .iter()
            .filter(|k| published(k))
            .map(|k| {
                Record::from_rdata(
                    apex.clone(),
                    ttl,
                    RData::DNSSEC(DNSSECRData::DNSKEY(k.dnskey())),
                )
            })
            .collect();
        // CDS and CDNSKEY (RFC 7344, 8078): the key-signing keys that sign
        // the DNSKEY set now, so a parent that polls for them (or a
        // registrar's script) keeps its DS set to exactly these.
        let mut cds = Vec::new();
        for k in pairs.iter().filter(|k| k.is_sep() && active(k)) {
            let dnskey = k.dnskey();
            let digest = dnskey
                .to_digest(&apex, DigestType::SHA256)
                .map_err(|e| format!("the DS digest of key {}: {e}", k.tag()))?;
            cds.push(Record::from_rdata(
                apex.clone(),
                ttl,
                RData::DNSSEC(DNSSECRData::CDS(CDS::new(
                    k.tag(),
                    Some(k.algorithm),
                    DigestType::SHA256,
                    digest.as_ref().to_vec(),
                ))),
            ));
            cds.push(Record::from_rdata(
                apex.clone(),
                ttl,
                RData::DNSSEC(DNSSECRData::CDNSKEY(CDNSKEY::with_flags(
                    dnskey.flags(),
                    Some(k.algorithm),
                    k.public.clone(),
                ))),
            ));
        }
        let next_event = pairs
            .iter()
            .flat_map(|k| {
                let t = k.timing;
                [t.publish, t.activate, t.inactive, t.delete]
            })
            .flatten()
            .filter(|&t| t > now)
            .min();
        let split = pairs.iter().any(|k| k.is_sep()) && pairs.iter().any(|k| !k.is_sep());
        let key_info = pairs
            .iter()
            .map(|k| KeyInfo {
                tag: k.tag(),
                algorithm: u8::from(k.algorithm),
                role: match (split, k.is_sep()) {
                    (false, _) => "CSK",
                    (true, true) => "KSK",
                    (true, false) => "ZSK",
                },
                timing: k.timing,
            })
            .collect();
        Ok(ZoneSigner {
            counts: Default::default(),
            key_info,
            apex,
            keys,
            next_event,
            dnskeys,
            cds,
            validity,
            window: (validity / 2).clamp(1, MAX_WINDOW),
            cache: Mutex::new(HashMap::new()),
            capacity: CACHE_ENTRIES,
        })
    }

    /// When a key of the zone next changes state (its Publish, Activate,
    /// Inactive or Delete time), unix seconds: the zone is loaded again
    /// then, so every node with the same key files changes at once.
    pub fn next_key_event(&self) -> Option<u64> {
        self.next_event
    }

    /// How long a signature is valid (seconds).
    pub fn validity(&self) -> u32 {
        self.validity
    }

    /// The validity window `now` falls in: (inception, expiration).
    pub fn window(&self, now: u64) -> (u32, u32) {
        let now = now as u32;
        let start = now - now % self.window;
        (start.wrapping_sub(SKEW), start.wrapping_add(self.validity))
    }

    /// The earliest expiration of a signature that may be served at
    /// `now`: the current window's, or within the hour after a window
    /// began (answers cached before it are made again hourly), the
    /// previous window's.
    pub fn earliest_expiry(&self, now: u64) -> u32 {
        let (_, expiration) = self.window(now);
        let into = now as u32 % self.window;
        if into < SKEW {
            expiration.wrapping_sub(self.window)
        } else {
            expiration
        }
    }

    /// The index of the window `now` falls in: answers cached with
    /// signatures must be dropped when it changes.
    pub fn window_index(&self, now: u64) -> u64 {
        now / u64::from(self.window)
    }

    /// When the validity window after the one `now` falls in begins.
    pub fn next_window_start(&self, now: u64) -> u64 {
        (self.window_index(now) + 1) * u64::from(self.window)
    }

    /// Whether `other` signs with the same keys, the same way: its
    /// signatures are as good as this one's.
    pub fn same_keys(&self, other: &ZoneSigner) -> bool {
        let keys = |s: &ZoneSigner| {
            let mut k: Vec<(u16, u8, bool, Vec<u8>)> = s
                .keys
                .iter()
                .map(|k| (k.tag, u8::from(k.algorithm), k.sep, k.public.clone()))
                .collect();
            k.sort_unstable();
            k
        };
        self.apex == other.apex
            && self.validity == other.validity
            && self.window == other.window
            && keys(self) == keys(other)
    }

    /// Take the signatures `old` made for the window `now` falls in and
    /// later ones, when it signs with the same keys (a reload that changed
    /// no key): they need not be made again.
    pub fn adopt(&self, old: &ZoneSigner, now: u64) {
        if std::ptr::eq(self, old) || !self.same_keys(old) {
            return;
        }
        let (current, _) = self.window(now);
        let taken: SigCache = old
            .lock()
            .iter()
            .filter(|(_, (inception, _))| *inception >= current)
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        let mut cache = self.lock();
        if cache.is_empty() {
            *cache = taken;
        }
    }

    /// Make the RRSIGs of `records` for the window `at` falls in, unless
    /// they are cached: signing ahead of the queries (counted apart).
    /// Returns whether a signature was made.
    pub fn sign_ahead(&self, records: &[Record], at: u64) -> bool {
        if records.is_empty() {
            return false;
        }
        let (inception, _) = self.window(at);
        let key = cache_key(records, inception);
        if self.lock().contains_key(&key) {
            return false;
        }
        // Signing ahead for the next window must not push out the current
        // window's signatures, which queries use until it ends.
        let (keep_from, _) = self.window(at.saturating_sub(u64::from(self.window)));
        let sigs = self.make(records, at, key, keep_from);
        SIGNATURES_AHEAD.fetch_add(sigs.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.counts[1].fetch_add(sigs.len() as u64, std::sync::atomic::Ordering::Relaxed);
        true
    }

    /// The RRSIGs of the RRset `records` (one owner, one type, one TTL) at
    /// `now`: from the cache, or made now.
    pub fn rrsigs(&self, records: &[Record], now: u64) -> Arc<[Record]> {
        if records.is_empty() {
            return Arc::from(Vec::new());
        }
        let (inception, _) = self.window(now);
        let key = cache_key(records, inception);
        if let Some((_, hit)) = self.lock().get(&key) {
            SIGNATURES_CACHED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.counts[2].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return hit.clone();
        }
        let sigs = self.make(records, now, key, inception);
        SIGNATURES_MADE.fetch_add(sigs.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.counts[0].fetch_add(sigs.len() as u64, std::sync::atomic::Ordering::Relaxed);
        sigs
    }

    /// Sign `records` for the window `now` falls in and cache the result
    /// under `key` (their [`cache_key`] for that window). A full cache
    /// keeps the signatures whose inception is `keep_from` or later.
    fn make(&self, records: &[Record], now: u64, key: u64, keep_from: u32) -> Arc<[Record]> {
        let first = &records[0];
        let (inception, expiration) = self.window(now);
        let rtype = first.record_type();
        // DNSKEY, CDS and CDNSKEY by the SEP keys (RFC 7344 §4.1: a key
        // the parent's DS names), the rest by the others; with only one
        // kind, that kind signs everything.
        let dnskey = matches!(
            rtype,
            RecordType::DNSKEY | RecordType::CDS | RecordType::CDNSKEY
        );
        let wanted: Vec<&SigningKey> = {
            let by: Vec<&SigningKey> = self.keys.iter().filter(|k| k.sep == dnskey).collect();
            if by.is_empty() {
                self.keys.iter().collect()
            } else {
                by
            }
        };
        let mut sigs = Vec::with_capacity(wanted.len());
        for k in wanted {
            let input = SigInput {
                type_covered: rtype,
                algorithm: k.algorithm,
                num_labels: first.name.num_labels(),
                original_ttl: first.ttl,
                sig_expiration: SerialNumber::new(expiration),
                sig_inception: SerialNumber::new(inception),
                key_tag: k.tag,
                signer_name: self.apex.clone(),
            };
            let Ok(tbs) = TBS::from_input(&first.name, DNSClass::IN, &input, records.iter()) else {
                continue;
            };
            let Ok(sig) = k.key.sign(tbs.as_ref()) else {
                continue;
            };
            sigs.push(Record::from_rdata(
                first.name.clone(),
                first.ttl,
                RData::DNSSEC(DNSSECRData::RRSIG(RRSIG::from_sig(input, sig))),
            ));
        }
        let sigs: Arc<[Record]> = Arc::from(sigs);
        let mut cache = self.lock();
        if cache.len() >= self.capacity {
            // Older windows' signatures go first; if the current window's
            // alone nearly fill it, it starts over.
            cache.retain(|_, (i, _)| *i >= keep_from);
            if cache.len() >= self.capacity * 9 / 10 {
                cache.clear();
            }
        }
        cache.insert(key, (inception, sigs.clone()));
        sigs
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SigCache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a signature depends on: owner (lower case), type, TTL, the data
/// of every record, the window, hashed with SipHash under a key random to
/// this process (std's `RandomState`): clients choose the names of
/// denials, so they must not be able to make a key that collides with
/// another RRset's and get it served a wrong signature.
fn cache_key(records: &[Record], inception: u32) -> u64 {
    use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
    let mut buf = Vec::with_capacity(64 * records.len());
    {
        let mut enc = BinEncoder::new(&mut buf);
        enc.set_canonical_form(true);
        let _ = records[0].name.to_lowercase().emit(&mut enc);
        let _ = enc.emit_u16(u16::from(records[0].record_type()));
        let _ = enc.emit_u32(records[0].ttl);
        let _ = enc.emit_u32(inception);
        let mut datas: Vec<Vec<u8>> = records
            .iter()
            .map(|r| {
                let mut b = Vec::new();
                let mut e = BinEncoder::new(&mut b);
                e.set_canonical_form(true);
                let _ = r.data.emit(&mut e);
                b
            })
            .collect();
        // The same set in another order is the same RRset.
        datas.sort();
        for d in datas {
            let _ = enc.emit_u16(d.len() as u16);
            let _ = enc.emit_vec(&d);
        }
    }
    static KEY: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    use std::hash::BuildHasher;
    KEY.get_or_init(std::collections::hash_map::RandomState::new)
        .hash_one(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::A;

    fn signer(pairs: &[KeyPair]) -> ZoneSigner {
        let apex = Name::from_ascii("z.example.").unwrap();
        ZoneSigner::new(apex, pairs, 1_796_605_534, 14 * 86_400, 300).unwrap()
    }

    #[test]
    fn a_full_cache_keeps_the_current_windows_signatures_when_signing_ahead() {
        let apex = Name::from_ascii("z.example.").unwrap();
        let now = 1_796_605_534;
        let key = KeyPair::generate(apex, Algorithm::ED25519, 257, now - 10).unwrap();
        let mut s = signer(std::slice::from_ref(&key));
        s.capacity = 20;
        let set = |i: u8| {
            [Record::from_rdata(
                Name::from_ascii("www.z.example.").unwrap(),
                60,
                RData::A(A::new(192, 0, 2, i)),
            )]
        };
        let (previous, next) = (now - u64::from(s.window), s.next_window_start(now));
        for i in 0..5 {
            assert!(s.sign_ahead(&set(i), previous));
        }
        for i in 10..20 {
            s.rrsigs(&set(i), now);
        }
        for i in 30..35 {
            assert!(s.sign_ahead(&set(i), next));
        }
        // Full: signing one more ahead drops the past window's, not the
        // current one's, which queries still use.
        assert!(s.sign_ahead(&set(40), next));
        for i in 10..20 {
            assert!(!s.sign_ahead(&set(i), now), "{i} kept");
        }
        for i in 0..5 {
            assert!(s.sign_ahead(&set(i), previous), "{i} dropped");
        }
    }

    #[test]
    fn a_reload_with_the_same_keys_keeps_the_signatures() {
        let apex = Name::from_ascii("z.example.").unwrap();
        let now = 1_796_605_534;
        let key = KeyPair::generate(apex.clone(), Algorithm::ED25519, 257, now - 10).unwrap();
        let set = [Record::from_rdata(
            Name::from_ascii("www.z.example.").unwrap(),
            60,
            RData::A(A::new(192, 0, 2, 1)),
        )];
        let old = signer(std::slice::from_ref(&key));
        assert!(old.sign_ahead(&set, now), "made");
        assert!(!old.sign_ahead(&set, now), "cached");
        // The same key: taken over, nothing to make.
        let new = signer(std::slice::from_ref(&key));
        assert!(new.same_keys(&old));
        new.adopt(&old, now);
        assert!(!new.sign_ahead(&set, now));
        assert_eq!(new.rrsigs(&set, now), old.rrsigs(&set, now));
        // Another key: nothing taken.
        let other = KeyPair::generate(apex, Algorithm::ED25519, 257, now - 10).unwrap();
        let third = signer(&[other]);
        assert!(!third.same_keys(&old));
        third.adopt(&old, now);
        assert!(third.sign_ahead(&set, now));
        // The next window starts on the grid, after now.
        let next = old.next_window_start(now);
        assert!(next > now && next.is_multiple_of(u64::from(old.window)));
        assert_ne!(old.window(next), old.window(now));
    }
}
