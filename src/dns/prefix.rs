//! The unit a client is counted in by every per-client limit (the
//! DNS-over-TCP connection cap and response rate limiting): its /24 for
//! IPv4, its /56 for IPv6, as one host or one small network, so a client
//! cannot dodge a limit by rotating addresses within its own net.

use std::net::IpAddr;

/// `ip`'s /24 or /56, as one number; an IPv4-mapped IPv6 address is its
/// IPv4 address, and no IPv4 prefix equals an IPv6 one.
pub(crate) fn client_prefix(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4) & 0xffff_ff00),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(u32::from(v4) & 0xffff_ff00),
            // The low bit, never set in an IPv4 prefix, tells them apart.
            None => (u128::from(v6) & !((1u128 << 72) - 1)) | 1,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::client_prefix as prefix;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn prefixes_are_slash_24_and_slash_56() {
        assert_eq!(prefix(ip("192.0.2.1")), prefix(ip("192.0.2.254")));
        assert_ne!(prefix(ip("192.0.2.1")), prefix(ip("192.0.3.1")));
        assert_eq!(
            prefix(ip("2001:db8:0:ff::1")),
            prefix(ip("2001:db8:0:1::2"))
        );
        assert_ne!(
            prefix(ip("2001:db8:0:100::1")),
            prefix(ip("2001:db8:0:1::2"))
        );
        assert_eq!(prefix(ip("::ffff:192.0.2.1")), prefix(ip("192.0.2.9")));
        assert_ne!(prefix(ip("::")), prefix(ip("0.0.0.0")));
    }
}
