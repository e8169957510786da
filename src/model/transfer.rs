//! Zone transfers out (issue 21): who may transfer a zone, who is told of
//! its changes, and the TSIG keys that sign both.

use std::net::{IpAddr, SocketAddr};

use hickory_proto::rr::Name;
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use ipnet::IpNet;

use super::Origin;

/// A zone's `[transfer]` table.
#[derive(Clone, Debug, PartialEq)]
pub struct Transfer {
    /// Who may transfer the zone (AXFR, IXFR).
    pub allow: Vec<IpNet>,
    /// Told of every change of the zone as transferred (NOTIFY).
    pub notify: Vec<SocketAddr>,
    /// Transfers and NOTIFYs must be signed with this key (its name in the
    /// settings file's `[tsig.NAME]`).
    pub tsig_key: Option<String>,
    /// Where `tsig-key` is written, for the message when the settings file
    /// does not define it.
    pub tsig_origin: Origin,
}

impl Transfer {
    /// Whether `ip` may transfer the zone.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.allow.iter().any(|n| n.contains(&ip))
    }
}

/// A TSIG key (RFC 8945) of the settings file.
#[derive(Clone, PartialEq)]
pub struct TsigKey {
    /// The key's name, as both ends know it (`xfr-key.`).
    pub name: Name,
    /// Its HMAC.
    pub algorithm: TsigAlgorithm,
    /// The shared secret (never logged or shown).
    pub secret: Vec<u8>,
}

// By hand: the secret must never reach a log line or a panic message.
impl std::fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("secret", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_never_printed() {
        let k = TsigKey {
            name: Name::from_ascii("k.").unwrap(),
            algorithm: TsigAlgorithm::HmacSha256,
            secret: b"hunter2-very-secret".to_vec(),
        };
        assert!(!format!("{k:?}").contains("hunter2"));
    }

    #[test]
    fn mapped_addresses_match_their_ipv4_prefix() {
        let t = Transfer {
            allow: vec!["192.0.2.0/24".parse().unwrap()],
            notify: vec![],
            tsig_key: None,
            tsig_origin: Origin::default(),
        };
        assert!(t.allows("192.0.2.9".parse().unwrap()));
        assert!(t.allows("::ffff:192.0.2.9".parse().unwrap()));
        assert!(!t.allows("192.0.3.9".parse().unwrap()));
    }
}
