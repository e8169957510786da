//! DNSSEC key pairs in BIND's two files, as `dnssec-keygen` writes them and
//! as Knot, PowerDNS and OpenDNSSEC import them:
//!
//! - `K<zone>.+<alg>+<tag>.key`: comments, then the DNSKEY record;
//! - `K<zone>.+<alg>+<tag>.private`: `Private-key-format: v1.3`, the
//!   algorithm, the private key (ECDSA: the scalar; Ed25519: the seed) and
//!   the timing metadata (`Created`, `Publish`, `Activate`, `Inactive`,
//!   `Delete`, as `YYYYMMDDHHMMSS` in UTC).
//!
//! The private file must not be readable by group or others: one that is
//! is refused, as ssh refuses such a key. Private keys are never logged and
//! never in an error message.

use std::fmt;
use std::path::{Path, PathBuf};

use hickory_proto::dnssec::rdata::DNSKEY;
use hickory_proto::dnssec::{Algorithm, DigestType, PublicKeyBuf};
use hickory_proto::rr::Name;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
};

/// DNSKEY flags: zone key (256), plus SEP (1) for a key-signing or combined key.
pub const ZSK_FLAGS: u16 = 256;
/// Flags of a KSK or CSK: zone key and secure entry point.
pub const KSK_FLAGS: u16 = 257;

/// A problem with a key file: where, and what (never the key's bytes).
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {msg}", file.display(), line.map(|l| format!(":{l}:1")).unwrap_or_default())]
pub struct KeyError {
    /// The file.
    pub file: PathBuf,
    /// The line, when one line is at fault.
    pub line: Option<usize>,
    /// What is wrong.
    pub msg: String,
}

fn err(file: &Path, line: Option<usize>, msg: impl Into<String>) -> KeyError {
    KeyError {
        file: file.to_path_buf(),
        line,
        msg: msg.into(),
    }
}

/// When a key enters each state, unix seconds (BIND's timing metadata).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timing {
    /// Made.
    pub created: Option<u64>,
    /// In the DNSKEY set from then.
    pub publish: Option<u64>,
    /// Signs from then.
    pub activate: Option<u64>,
    /// Signs no more from then.
    pub inactive: Option<u64>,
    /// Out of the DNSKEY set from then.
    pub delete: Option<u64>,
}

/// The private half. Its Debug says nothing of it.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// One key pair.
#[derive(Clone, Debug)]
pub struct KeyPair {
    /// The zone's apex.
    pub zone: Name,
    /// DNSKEY flags ([`ZSK_FLAGS`] or [`KSK_FLAGS`]).
    pub flags: u16,
    /// ECDSAP256SHA256 (13) or ED25519 (15).
    pub algorithm: Algorithm,
    /// The public key as in the DNSKEY RDATA.
    pub public: Vec<u8>,
    secret: Secret,
    /// Timing metadata.
    pub timing: Timing,
}

/// The algorithms gslb makes and loads.
pub fn parse_algorithm(s: &str) -> Option<Algorithm> {
    match s.to_ascii_lowercase().as_str() {
        "13" | "ecdsap256sha256" | "ecdsa256" => Some(Algorithm::ECDSAP256SHA256),
        "15" | "ed25519" => Some(Algorithm::ED25519),
        _ => None,
    }
}

fn algorithm_number(a: Algorithm) -> u8 {
    u8::from(a)
}

impl KeyPair {
    /// A new key pair for `zone`, published and active from `now`.
    pub fn generate(
        zone: Name,
        algorithm: Algorithm,
        flags: u16,
        now: u64,
    ) -> Result<Self, String> {
        let rng = SystemRandom::new();
        let (public, secret) = match algorithm {
            Algorithm::ECDSAP256SHA256 => {
                let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| "cannot generate an ECDSA key".to_string())?;
                let pair = EcdsaKeyPair::from_pkcs8(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    pkcs8.as_ref(),
                    &rng,
                )
                .map_err(|e| format!("generated key rejected: {e}"))?;
                // DNSKEY holds x || y, without SEC1's 0x04 prefix (RFC 6605 §4).
                let public = pair.public_key().as_ref()[1..].to_vec();
                (public, pkcs8_private_octets(pkcs8.as_ref(), true)?)
            }
            Algorithm::ED25519 => {
                let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
                    .map_err(|_| "cannot generate an Ed25519 key".to_string())?;
                let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
                    .map_err(|e| format!("generated key rejected: {e}"))?;
                let public = pair.public_key().as_ref().to_vec();
                (public, pkcs8_private_octets(pkcs8.as_ref(), false)?)
            }
            other => return Err(format!("algorithm {other} is not supported (13 or 15)")),
        };
        let key = KeyPair {
            zone,
            flags,
            algorithm,
            public,
            secret: Secret(secret),
            timing: Timing {
                created: Some(now),
                publish: Some(now),
                activate: Some(now),
                inactive: None,
                delete: None,
            },
        };
        key.check_pair()
            .map_err(|e| format!("generated key: {e}"))?;
        Ok(key)
    }

    /// The DNSKEY record data.
    pub fn dnskey(&self) -> DNSKEY {
        DNSKEY::with_flags(
            self.flags,
            PublicKeyBuf::new(self.public.clone(), self.algorithm),
        )
    }

    /// The key tag (RFC 4034 Appendix B).
    pub fn tag(&self) -> u16 {
        self.dnskey().calculate_key_tag().unwrap_or(0)
    }

    /// A key-signing or combined key: its DS goes to the parent.
    pub fn is_sep(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The DS record for the parent, as a zone-file line (SHA-256, digest
    /// type 2, as `dnssec-dsfromkey -2` prints it).
    pub fn ds_line(&self) -> Result<String, String> {
        let digest = self
            .dnskey()
            .to_digest(&self.zone, DigestType::SHA256)
            .map_err(|e| e.to_string())?;
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
        Ok(format!(
            "{} IN DS {} {} 2 {hex}",
            self.zone,
            self.tag(),
            algorithm_number(self.algorithm)
        ))
    }

    /// BIND's base name, `K<zone>.+<alg>+<tag>` (zone in lower case, with
    /// its final dot).
    pub fn base_name(&self) -> String {
        format!(
            "K{}+{:03}+{:05}",
            self.zone.to_lowercase().to_ascii(),
            algorithm_number(self.algorithm),
            self.tag()
        )
    }

    /// The key, ready to sign (`dnssec::sign`); `Err` when the private key
    /// is not the public key's.
    pub(crate) fn ring_key(&self) -> Result<super::sign::RingKey, String> {
        let rng = SystemRandom::new();
        match self.algorithm {
            Algorithm::ECDSAP256SHA256 => {
                let mut public = Vec::with_capacity(65);
                public.push(4);
                public.extend_from_slice(&self.public);
                EcdsaKeyPair::from_private_key_and_public_key(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    &self.secret.0,
                    &public,
                    &rng,
                )
                .map(|k| super::sign::RingKey::Ecdsa(Box::new(k), rng))
                .map_err(|e| format!("the private key does not match the public key ({e})"))
            }
            Algorithm::ED25519 => {
                Ed25519KeyPair::from_seed_and_public_key(&self.secret.0, &self.public)
                    .map(|k| super::sign::RingKey::Ed25519(Box::new(k)))
                    .map_err(|e| format!("the private key does not match the public key ({e})"))
            }
            other => Err(format!("algorithm {other} is not supported (13 or 15)")),
        }
    }

    /// Check that the private key is the public key's.
    fn check_pair(&self) -> Result<(), String> {
        self.ring_key().map(|_| ())
    }

    /// A new key to take over from this one: the same zone, algorithm and
    /// flags, published `prepublish` before this key's Inactive time (or
    /// at `now`, when that is later). A zone-signing successor signs from
    /// that Inactive time, as BIND's `dnssec-keygen -S` makes it (its
    /// DNSKEY is in caches by then: pre-publication). A key-signing or
    /// combined successor signs from its Publish time, beside this key
    /// (the double-KSK roll of RFC 6781 §4.1.2): both sign the DNSKEY set
    /// and both are in the CDS set until this key's Inactive time, so the
    /// parent can add the new DS before the old key stops, and a validator
    /// with either DS finds a signature it can follow. `Err` when this
    /// key has no Inactive time (there is nothing to succeed yet) or it
    /// has passed.
    pub fn successor(&self, now: u64, prepublish: u64) -> Result<Self, String> {
        let Some(inactive) = self.timing.inactive else {
            return Err(format!(
                "key {} has no Inactive time, so nothing to take over from: set one first (dnssec-settime -I +30d -K DIR {}), then make its successor",
                self.tag(),
                self.base_name()
            ));
        };
        if inactive <= now {
            return Err(format!(
                "key {} went inactive at {}: its successor would leave a gap with no key signing; make a key active now (gslb dnssec keygen)",
                self.tag(),
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(inactive)
                )
            ));
        }
        let mut key = KeyPair::generate(self.zone.clone(), self.algorithm, self.flags, now)?;
        let publish = inactive.saturating_sub(prepublish).max(now);
        key.timing.publish = Some(publish);
        key.timing.activate = Some(if self.is_sep() { publish } else { inactive });
        Ok(key)
    }

    /// Write both files into `dir`: the private one with mode 0600 and
    /// never over an existing file. Returns the two paths.
    pub fn write(&self, dir: &Path) -> std::io::Result<(PathBuf, PathBuf)> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        // Appended, not `with_extension`, which would cut at the zone's dots.
        let key_path = dir.join(format!("{}.key", self.base_name()));
        let private_path = dir.join(format!("{}.private", self.base_name()));
        let kind = if self.is_sep() {
            "key-signing"
        } else {
            "zone-signing"
        };
        let mut key_text = format!(
            "; This is a {kind} key, keyid {}, for {}\n",
            self.tag(),
            self.zone
        );
        let mut private_text = format!(
            "Private-key-format: v1.3\nAlgorithm: {} ({})\nPrivateKey: {}\n",
            algorithm_number(self.algorithm),
            match self.algorithm {
                Algorithm::ED25519 => "ED25519",
                _ => "ECDSAP256SHA256",
            },
            data_encoding::BASE64.encode(&self.secret.0)
        );
        for (label, t) in [
            ("Created", self.timing.created),
            ("Publish", self.timing.publish),
            ("Activate", self.timing.activate),
            ("Inactive", self.timing.inactive),
            ("Delete", self.timing.delete),
        ] {
            if let Some(t) = t {
                let stamp = timestamp(t);
                key_text.push_str(&format!(
                    "; {label}: {stamp} ({})\n",
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + std::time::Duration::from_secs(t)
                    )
                ));
                private_text.push_str(&format!("{label}: {stamp}\n"));
            }
        }
        key_text.push_str(&format!(
            "{} IN DNSKEY {} 3 {} {}\n",
            self.zone,
            self.flags,
            algorithm_number(self.algorithm),
            data_encoding::BASE64.encode(&self.public)
        ));
        // Neither file may exist (a key tag already taken: the caller makes
        // another key); a failure half-way leaves no half pair behind.
        if key_path.exists() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists", key_path.display()),
            ));
        }
        let write = |path: &Path, mode: u32, text: &str| -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(path)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()
        };
        write(&private_path, 0o600, &private_text)?;
        if let Err(e) = write(&key_path, 0o644, &key_text) {
            let _ = std::fs::remove_file(&private_path);
            return Err(e);
        }
        Ok((key_path, private_path))
    }

    /// Load a pair from its `.key` or `.private` path (the other one is
    /// found beside it).
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = path.to_string_lossy();
        let base = text
            .strip_suffix(".key")
            .or_else(|| text.strip_suffix(".private"))
            .ok_or_else(|| err(path, None, "a key file ends in .key or .private"))?;
        let key_path = PathBuf::from(format!("{base}.key"));
        let private_path = PathBuf::from(format!("{base}.private"));
        let (zone, flags, algorithm, public) = read_key_file(&key_path)?;
        let (palg, secret, timing) = read_private_file(&private_path)?;
        if palg != algorithm {
            return Err(err(
                &private_path,
                None,
                format!(
                    "algorithm {} here, {} in {}",
                    algorithm_number(palg),
                    algorithm_number(algorithm),
                    key_path.display()
                ),
            ));
        }
        let key = KeyPair {
            zone,
            flags,
            algorithm,
            public,
            secret,
            timing,
        };
        key.check_pair().map_err(|m| err(&private_path, None, m))?;
        Ok(key)
    }

    /// The key pairs of `zone` in `dir` (each `.private` with its `.key`),
    /// sorted by file name, and a warning for each of its keys whose
    /// algorithm gslb does not use. Another zone's keys are passed over: a
    /// folder may be shared with BIND. A broken key of `zone` stops the load.
    pub fn load_zone(dir: &Path, zone: &Name) -> Result<(Vec<Self>, Vec<String>), KeyError> {
        let rd = std::fs::read_dir(dir).map_err(|e| err(dir, None, format!("cannot read: {e}")))?;
        let mut paths: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "private"))
            .collect();
        paths.sort();
        let (mut keys, mut warnings) = (Vec::new(), Vec::new());
        for p in paths {
            let text = p.to_string_lossy();
            let key_path = PathBuf::from(format!("{}.key", text.trim_end_matches(".private")));
            // Owner and algorithm, read loosely: only to choose.
            let public = std::fs::read_to_string(&key_path).unwrap_or_default();
            let dnskey = public
                .lines()
                .map(|l| l.split(';').next().unwrap_or("").trim())
                .find(|l| !l.is_empty())
                .unwrap_or("");
            let fields: Vec<&str> = dnskey.split_whitespace().collect();
            if let Some(owner) = fields.first()
                && Name::from_ascii(owner).is_ok_and(|n| n != *zone)
            {
                continue;
            }
            if let Some(i) = fields.iter().position(|f| f.eq_ignore_ascii_case("DNSKEY"))
                && let Some(alg) = fields.get(i + 3)
                && parse_algorithm(alg).is_none()
            {
                warnings.push(format!(
                    "{}: algorithm {alg} is not one gslb uses (13, 15): skipped",
                    key_path.display()
                ));
                continue;
            }
            keys.push(KeyPair::load(&p)?);
        }
        Ok((keys, warnings))
    }
}

/// `YYYYMMDDHHMMSS` in UTC, BIND's timing format.
fn timestamp(unix: u64) -> String {
    let t = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix),
    )
    .to_string();
    // 2026-12-07T01:02:03Z
    t.chars().filter(char::is_ascii_digit).collect()
}

fn parse_timestamp(s: &str) -> Option<u64> {
    if s.len() != 14 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let text = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &s[0..4],
        &s[4..6],
        &s[6..8],
        &s[8..10],
        &s[10..12],
        &s[12..14]
    );
    humantime::parse_rfc3339(&text)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
}

/// The private key inside a PKCS#8 document as ring writes it: the
/// ECPrivateKey's scalar (RFC 5915) or Ed25519's seed (RFC 8410).
fn pkcs8_private_octets(pkcs8: &[u8], ec: bool) -> Result<Vec<u8>, String> {
    use x509_parser::der_parser::ber::BerObjectContent as C;
    use x509_parser::der_parser::parse_der;
    let bad = || "unexpected PKCS#8 layout".to_string();
    let (_, info) = parse_der(pkcs8).map_err(|_| bad())?;
    let C::Sequence(items) = &info.content else {
        return Err(bad());
    };
    let Some(C::OctetString(inner)) = items.get(2).map(|o| &o.content) else {
        return Err(bad());
    };
    let (_, inner) = parse_der(inner).map_err(|_| bad())?;
    let octets = match (&inner.content, ec) {
        (C::Sequence(ec_items), true) => match ec_items.get(1).map(|o| &o.content) {
            Some(C::OctetString(k)) => k.to_vec(),
            _ => return Err(bad()),
        },
        (C::OctetString(seed), false) => seed.to_vec(),
        _ => return Err(bad()),
    };
    if octets.len() != 32 {
        return Err(bad());
    }
    Ok(octets)
}

fn read_key_file(path: &Path) -> Result<(Name, u16, Algorithm, Vec<u8>), KeyError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| err(path, None, format!("cannot read: {e}")))?;
    parse_key_text(path, &text)
}

/// A public key file's text (`path` names it in errors).
pub fn parse_key_text(
    path: &Path,
    text: &str,
) -> Result<(Name, u16, Algorithm, Vec<u8>), KeyError> {
    for (i, line) in text.lines().enumerate() {
        let line = line.split(';').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let at = Some(i + 1);
        let mut f = line.split_whitespace();
        let owner = f.next().unwrap_or_default();
        let zone =
            Name::from_ascii(owner).map_err(|e| err(path, at, format!("owner {owner:?}: {e}")))?;
        // [TTL] [class] DNSKEY, in either order, both optional.
        let mut rest: Vec<&str> = f.collect();
        while let Some(first) = rest.first() {
            if first.eq_ignore_ascii_case("DNSKEY") {
                break;
            }
            if first.eq_ignore_ascii_case("IN") || first.bytes().all(|b| b.is_ascii_digit()) {
                rest.remove(0);
            } else {
                return Err(err(path, at, format!("expected DNSKEY, found {first:?}")));
            }
        }
        if rest.len() < 5 {
            return Err(err(
                path,
                at,
                "expected: NAME [TTL] IN DNSKEY FLAGS 3 ALGORITHM KEY",
            ));
        }
        let flags: u16 = rest[1]
            .parse()
            .map_err(|_| err(path, at, format!("flags {:?} is not a number", rest[1])))?;
        if flags != ZSK_FLAGS && flags != KSK_FLAGS {
            return Err(err(
                path,
                at,
                format!("flags {flags}: 256 (ZSK) or 257 (KSK, CSK)"),
            ));
        }
        if rest[2] != "3" {
            return Err(err(path, at, format!("protocol {:?}: must be 3", rest[2])));
        }
        let algorithm = parse_algorithm(rest[3])
            .ok_or_else(|| err(path, at, format!("algorithm {:?}: 13 or 15", rest[3])))?;
        let public = data_encoding::BASE64
            .decode(rest[4..].concat().as_bytes())
            .map_err(|_| err(path, at, "the public key is not base64"))?;
        let want = if algorithm == Algorithm::ED25519 {
            32
        } else {
            64
        };
        if public.len() != want {
            return Err(err(
                path,
                at,
                format!(
                    "a {}-byte public key; algorithm {} has {want}",
                    public.len(),
                    algorithm_number(algorithm)
                ),
            ));
        }
        return Ok((zone, flags, algorithm, public));
    }
    Err(err(path, None, "no DNSKEY record"))
}

fn read_private_file(path: &Path) -> Result<(Algorithm, Secret, Timing), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| err(path, None, format!("cannot read: {e}")))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(err(
            path,
            None,
            format!(
                "mode {mode:04o}: a private key must not be readable by group or others (chmod 600)"
            ),
        ));
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| err(path, None, format!("cannot read: {e}")))?;
    parse_private_text(path, &text)
}

/// A private key file's text (`path` names it in errors); the private key
/// as parsed, which nothing may print.
pub fn parse_private_text(
    path: &Path,
    text: &str,
) -> Result<(Algorithm, Secret, Timing), KeyError> {
    let (mut algorithm, mut secret, mut timing) = (None, None, Timing::default());
    for (i, line) in text.lines().enumerate() {
        let at = Some(i + 1);
        let Some((k, v)) = line.split_once(':') else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(err(path, at, "expected `Name: value`"));
        };
        let v = v.trim();
        match k.trim() {
            "Private-key-format" if !v.starts_with("v1.") => {
                return Err(err(path, at, format!("format {v:?}: v1.x expected")));
            }
            "Algorithm" => {
                let n = v.split_whitespace().next().unwrap_or("");
                algorithm = Some(
                    parse_algorithm(n)
                        .ok_or_else(|| err(path, at, format!("algorithm {n:?}: 13 or 15")))?,
                );
            }
            "PrivateKey" => {
                let bytes = data_encoding::BASE64
                    .decode(v.replace(' ', "").as_bytes())
                    .map_err(|_| err(path, at, "the private key is not base64"))?;
                secret = Some((bytes, at));
            }
            label @ ("Created" | "Publish" | "Activate" | "Inactive" | "Delete") => {
                let t = parse_timestamp(v)
                    .ok_or_else(|| err(path, at, format!("{label}: YYYYMMDDHHMMSS expected")))?;
                match label {
                    "Created" => timing.created = Some(t),
                    "Publish" => timing.publish = Some(t),
                    "Activate" => timing.activate = Some(t),
                    "Inactive" => timing.inactive = Some(t),
                    _ => timing.delete = Some(t),
                }
            }
            // BIND writes more (SyncPublish, Revoke, ...): not used yet.
            _ => {}
        }
    }
    let algorithm = algorithm.ok_or_else(|| err(path, None, "no Algorithm line"))?;
    let (mut secret, at) = secret.ok_or_else(|| err(path, None, "no PrivateKey line"))?;
    // Older BIND versions write an ECDSA scalar without its leading zero
    // bytes (one key in 256 has 31): it is a number, pad it back.
    if algorithm == Algorithm::ECDSAP256SHA256 && (1..32).contains(&secret.len()) {
        let mut padded = vec![0; 32 - secret.len()];
        padded.extend_from_slice(&secret);
        secret = padded;
    }
    if secret.len() != 32 {
        return Err(err(path, at, "the private key is not 32 bytes"));
    }
    Ok((algorithm, Secret(secret), timing))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_successor_signs_when_its_predecessor_stops() {
        let zone = Name::from_ascii("z.example.").unwrap();
        let now = 1_796_605_534;
        let mut old =
            KeyPair::generate(zone.clone(), Algorithm::ED25519, ZSK_FLAGS, now - 99).unwrap();
        assert!(
            old.successor(now, 3600)
                .unwrap_err()
                .contains("no Inactive")
        );
        old.timing.inactive = Some(now);
        assert!(
            old.successor(now, 3600)
                .unwrap_err()
                .contains("went inactive")
        );
        old.timing.inactive = Some(now + 86_400);
        let new = old.successor(now, 3600).unwrap();
        assert_eq!(
            (new.zone.clone(), new.algorithm, new.flags),
            (zone.clone(), Algorithm::ED25519, ZSK_FLAGS)
        );
        assert_eq!(new.timing.activate, Some(now + 86_400));
        assert_eq!(new.timing.publish, Some(now + 86_400 - 3600));
        assert_eq!(new.timing.created, Some(now));
        // Published now when the prepublication reaches back before now.
        let new = old.successor(now, 30 * 86_400).unwrap();
        assert_eq!(new.timing.publish, Some(now));
        assert_ne!(new.public, old.public);
        // A key-signing key's successor signs from its publication, beside
        // its predecessor, until the predecessor's Inactive time.
        let mut ksk =
            KeyPair::generate(zone.clone(), Algorithm::ED25519, KSK_FLAGS, now - 99).unwrap();
        ksk.timing.inactive = Some(now + 86_400);
        let next = ksk.successor(now, 3600).unwrap();
        assert_eq!(next.flags, KSK_FLAGS);
        assert_eq!(next.timing.publish, Some(now + 86_400 - 3600));
        assert_eq!(next.timing.activate, next.timing.publish);
    }

    #[test]
    fn timestamps_are_bind_s_and_round_trip() {
        assert_eq!(timestamp(1_796_605_534), "20261207010534");
        assert_eq!(parse_timestamp("20261207010534"), Some(1_796_605_534));
        for bad in ["2026120701053", "2026120701053x", "20261307010534", ""] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn key_file_errors_name_the_line() {
        let p = Path::new("K.key");
        let e = parse_key_text(p, "; comment\nz. IN DNSKEY 257 3 8 AAAA\n").unwrap_err();
        assert_eq!(e.to_string(), "K.key:2:1: algorithm \"8\": 13 or 15");
        let e = parse_key_text(p, "z. IN DNSKEY 257 3 13 AAAA\n").unwrap_err();
        assert!(
            e.to_string().starts_with("K.key:1:1: a 3-byte public key"),
            "{e}"
        );
        let e = parse_key_text(p, "z. 3600 IN DNSKEY 258 3 13 AAAA\n").unwrap_err();
        assert!(e.to_string().contains("flags 258"), "{e}");
        let e = parse_key_text(p, "; only comments\n").unwrap_err();
        assert_eq!(e.to_string(), "K.key: no DNSKEY record");
        let e = parse_private_text(
            Path::new("K.private"),
            "Private-key-format: v1.3\nAlgorithm: 13 (ECDSAP256SHA256)\nPrivateKey: !!\n",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "K.private:3:1: the private key is not base64"
        );
    }

    #[test]
    fn a_secret_is_never_printed() {
        let (_, secret, _) = parse_private_text(
            Path::new("K.private"),
            "Algorithm: 15\nPrivateKey: AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
        )
        .unwrap();
        assert_eq!(format!("{secret:?}"), "Secret(..)");
    }
}
