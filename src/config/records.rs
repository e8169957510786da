//! Record values in zone-file presentation form (`"10 mail"`, `"0 issue \"ca.example\""`)
//! to hickory `RData`. TXT values are the raw text, split into 255-byte strings.

use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, NS, PTR, SRV, TXT};
use hickory_proto::rr::{Name, RData, RecordType};
use hickory_proto::serialize::binary::{BinDecoder, Restrict};

use super::names::parse_name;

/// The record types a zone file may contain.
pub(crate) const SUPPORTED: &str = "A, AAAA, CNAME, MX, NS, PTR, SRV, TXT, CAA, DS";

/// Which field of the record is wrong.
pub(crate) enum RDataError {
    /// The type.
    Type(String),
    /// The value.
    Value(String),
}

fn value_err(msg: impl Into<String>) -> RDataError {
    RDataError::Value(msg.into())
}

fn int<T: std::str::FromStr>(field: &str, what: &str, rtype: &str) -> Result<T, RDataError> {
    field
        .parse()
        .map_err(|_| value_err(format!("{rtype} {what} {field:?} is not a valid number")))
}

fn fields<'a>(
    value: &'a str,
    n: usize,
    rtype: &str,
    form: &str,
) -> Result<Vec<&'a str>, RDataError> {
    let f: Vec<&str> = value.split_whitespace().collect();
    if f.len() != n {
        return Err(value_err(format!(
            "{rtype} value {value:?} must be {form:?}"
        )));
    }
    Ok(f)
}

fn name(value: &str, apex: &Name, rtype: &str) -> Result<Name, RDataError> {
    parse_name(value, apex).map_err(|e| value_err(format!("{rtype} target: {e}")))
}

/// Parse the value of a `[[record]]` of type `rtype` (upper case).
pub(crate) fn parse_rdata(rtype: &str, value: &str, apex: &Name) -> Result<RData, RDataError> {
    let v = value.trim();
    Ok(match rtype {
        "A" => RData::A(A(v.parse::<Ipv4Addr>().map_err(|_| {
            value_err(format!("A value {value:?} is not an IPv4 address"))
        })?)),
        "AAAA" => RData::AAAA(AAAA(v.parse::<Ipv6Addr>().map_err(|_| {
            value_err(format!("AAAA value {value:?} is not an IPv6 address"))
        })?)),
        "CNAME" => RData::CNAME(CNAME(name(v, apex, rtype)?)),
        "NS" => RData::NS(NS(name(v, apex, rtype)?)),
        "PTR" => RData::PTR(PTR(name(v, apex, rtype)?)),
        "MX" => {
            let f = fields(v, 2, rtype, "PREFERENCE EXCHANGE, e.g. 10 mail")?;
            RData::MX(MX::new(
                int(f[0], "preference", rtype)?,
                name(f[1], apex, rtype)?,
            ))
        }
        "SRV" => {
            let f = fields(
                v,
                4,
                rtype,
                "PRIORITY WEIGHT PORT TARGET, e.g. 10 5 5060 sip",
            )?;
            RData::SRV(SRV::new(
                int(f[0], "priority", rtype)?,
                int(f[1], "weight", rtype)?,
                int(f[2], "port", rtype)?,
                name(f[3], apex, rtype)?,
            ))
        }
        "TXT" => {
            let bytes = value.as_bytes();
            let chunks: Vec<&[u8]> = if bytes.is_empty() {
                vec![&[][..]]
            } else {
                bytes.chunks(255).collect()
            };
            if bytes.len() > 65_000 {
                return Err(value_err("TXT value is longer than a record can hold"));
            }
            RData::TXT(TXT::from_bytes(chunks))
        }
        "CAA" => caa(v)?,
        "DS" => ds(v)?,
        "SOA" => {
            return Err(RDataError::Type(
                "SOA is generated from the [zone] table (hostmaster, serial, refresh, retry, expire, negative-ttl)".into(),
            ));
        }
        other => {
            let known = other.parse::<RecordType>().is_ok();
            return Err(RDataError::Type(format!(
                "{} record type {other:?} (supported: {SUPPORTED})",
                if known { "unsupported" } else { "unknown" }
            )));
        }
    })
}

/// `KEYTAG ALGORITHM DIGESTTYPE DIGEST` (RFC 4034 §5.3), the digest in hex
/// and possibly in several pieces, as `dnssec-dsfromkey` and `gslb dnssec
/// ds` print it after `IN DS`.
fn ds(v: &str) -> Result<RData, RDataError> {
    use hickory_proto::dnssec::rdata::{DNSSECRData, DS};
    use hickory_proto::dnssec::{Algorithm, DigestType};
    let form = "DS value must be KEYTAG ALGORITHM DIGESTTYPE DIGEST, e.g. 12345 13 2 5F1B...E4 (what `gslb dnssec ds` prints after IN DS)";
    let f: Vec<&str> = v.split_whitespace().collect();
    if f.len() < 4 {
        return Err(value_err(form));
    }
    let tag: u16 = int(f[0], "key tag", "DS")?;
    let alg: u8 = int(f[1], "algorithm", "DS")?;
    let digest_type: u8 = int(f[2], "digest type", "DS")?;
    let hex: String = f[3..].concat();
    let digest = data_encoding::HEXUPPER_PERMISSIVE
        .decode(hex.as_bytes())
        .map_err(|_| value_err(format!("DS digest {hex:?} is not hexadecimal. {form}")))?;
    let want = match digest_type {
        1 => 20,
        2 => 32,
        4 => 48,
        other => {
            return Err(value_err(format!(
                "DS digest type {other}: 2 (SHA-256), 4 (SHA-384) or 1 (SHA-1)"
            )));
        }
    };
    if digest.len() != want {
        return Err(value_err(format!(
            "DS digest is {} bytes; digest type {digest_type} has {want}",
            digest.len()
        )));
    }
    Ok(RData::DNSSEC(DNSSECRData::DS(DS::new(
        tag,
        Algorithm::from_u8(alg),
        DigestType::from(digest_type),
        digest,
    ))))
}

/// `FLAGS TAG VALUE`, the value optionally in double quotes (RFC 8659 §4.1.1).
fn caa(v: &str) -> Result<RData, RDataError> {
    let form = "CAA value must be FLAGS TAG VALUE, e.g. 0 issue \"letsencrypt.org\"";
    let mut it = v.splitn(3, char::is_whitespace);
    let (Some(flags), Some(tag), Some(val)) = (it.next(), it.next(), it.next()) else {
        return Err(value_err(form));
    };
    let flags: u8 = int(flags, "flags", "CAA")?;
    if tag.is_empty() || tag.len() > 15 || !tag.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(value_err(format!(
            "CAA tag {tag:?} must be 1 to 15 letters or digits"
        )));
    }
    let val = val.trim();
    let val = val
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(val);
    // Build the wire form and let hickory decode it, so the RData is exactly
    // what a CAA record of these bytes is (hickory's CAA has no public constructor
    // for arbitrary tags).
    let mut wire = vec![flags, tag.len() as u8];
    wire.extend_from_slice(tag.as_bytes());
    wire.extend_from_slice(val.as_bytes());
    let len = u16::try_from(wire.len()).map_err(|_| value_err("CAA value too long"))?;
    let mut dec = BinDecoder::new(&wire);
    RData::read(&mut dec, RecordType::CAA, Restrict::new(len))
        .map_err(|e| value_err(format!("CAA value {v:?} is invalid: {e}")))
}
