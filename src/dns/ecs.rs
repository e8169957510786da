//! EDNS Client Subnet (RFC 7871): the option of a query, checked on the
//! wire, and what a response echoes.
//!
//! hickory parses the option leniently (it keeps address bits beyond the
//! prefix and ignores an ADDRESS longer than the prefix needs), so the
//! option is checked here on the request's bytes, after hickory has parsed
//! the message as a whole. RFC 7871 §7.1.1 rejects with FORMERR: a FAMILY
//! other than 1 (IPv4) or 2 (IPv6), a SOURCE PREFIX-LENGTH longer than the
//! family allows, an ADDRESS longer than the prefix needs, and address
//! bits set beyond the prefix.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// EDNS option code of ECS.
pub const OPTION_CODE: u16 = 8;

/// A query's client subnet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientSubnet {
    /// The network's address (bits beyond the prefix are zero).
    pub addr: IpAddr,
    /// SOURCE PREFIX-LENGTH.
    pub source: u8,
}

/// The ECS option of a request, if any: `Ok(None)` without one,
/// `Err(why)` when it is malformed (the request gets FORMERR). `req` must be
/// a message hickory parsed whole.
pub fn from_request(req: &[u8]) -> Result<Option<ClientSubnet>, &'static str> {
    match opt_rdata(req) {
        Some(rdata) => from_options(rdata),
        None => Ok(None),
    }
}

/// The ECS option among an OPT record's options (its RDATA), if any.
pub fn from_options(rdata: &[u8]) -> Result<Option<ClientSubnet>, &'static str> {
    let mut i = 0;
    let mut found = None;
    while i + 4 <= rdata.len() {
        let code = u16::from_be_bytes([rdata[i], rdata[i + 1]]);
        let len = usize::from(u16::from_be_bytes([rdata[i + 2], rdata[i + 3]]));
        let data = rdata.get(i + 4..i + 4 + len).ok_or("option overruns OPT")?;
        if code == OPTION_CODE {
            if found.is_some() {
                return Err("two ECS options");
            }
            found = Some(parse(data)?);
        }
        i += 4 + len;
    }
    Ok(found)
}

/// One ECS option's data (FAMILY, SOURCE, SCOPE, ADDRESS).
pub fn parse(data: &[u8]) -> Result<ClientSubnet, &'static str> {
    if data.len() < 4 {
        return Err("ECS option shorter than its fixed part");
    }
    let family = u16::from_be_bytes([data[0], data[1]]);
    let source = data[2];
    let addr = &data[4..];
    let max = match family {
        1 => 32,
        2 => 128,
        _ => return Err("ECS family is neither IPv4 nor IPv6"),
    };
    if source > max {
        return Err("ECS source prefix longer than the family allows");
    }
    if addr.len() != usize::from(source).div_ceil(8) {
        return Err("ECS address not as long as its prefix needs");
    }
    if let Some(last) = addr.last()
        && !source.is_multiple_of(8)
        && last & (0xff >> (source % 8)) != 0
    {
        return Err("ECS address has bits set beyond its prefix");
    }
    let addr = if family == 1 {
        let mut o = [0u8; 4];
        o[..addr.len()].copy_from_slice(addr);
        IpAddr::V4(Ipv4Addr::from(o))
    } else {
        let mut o = [0u8; 16];
        o[..addr.len()].copy_from_slice(addr);
        IpAddr::V6(Ipv6Addr::from(o))
    };
    Ok(ClientSubnet { addr, source })
}

/// The RDATA of the request's OPT record, if it has one.
fn opt_rdata(req: &[u8]) -> Option<&[u8]> {
    let rr = super::wire::opt_record(req)?;
    req.get(rr.start + 11..rr.end)
}

/// The address a client is located by: the subnet's (when the zone
/// honours ECS, `echo`) unless its SOURCE PREFIX-LENGTH is 0, which asks
/// for an answer that does not depend on the client (RFC 7871 §7.1.2):
/// then the query's own source, as without ECS.
pub fn locating_addr(from: IpAddr, echo: Option<&ClientSubnet>) -> IpAddr {
    match echo {
        Some(cs) if cs.source > 0 => cs.addr,
        _ => from,
    }
}

/// The SCOPE PREFIX-LENGTH echoed for an answer that holds over the
/// client's network of length `scope` (0: the answer does not depend on
/// the location): 0 when the query's SOURCE is 0.
pub fn echo_scope(cs: &ClientSubnet, scope: u8) -> u8 {
    if cs.source == 0 { 0 } else { scope }
}

/// How many bytes the echo of `cs` adds to a response's OPT record.
pub fn echo_len(cs: &ClientSubnet) -> usize {
    8 + usize::from(cs.source).div_ceil(8)
}

/// Append the echo of `cs` with this SCOPE PREFIX-LENGTH to a response
/// whose last record is an OPT without options (as the engine encodes
/// them; the answer cache stores them so). Returns false, changing
/// nothing, when `out` does not end so.
pub fn append(out: &mut Vec<u8>, cs: &ClientSubnet, scope: u8) -> bool {
    let n = out.len();
    if n < 12 + 11 || out[n - 11] != 0 || out[n - 10..n - 8] != [0, 41] || out[n - 2..] != [0, 0] {
        return false;
    }
    let len = usize::from(cs.source).div_ceil(8);
    let (family, octets): (u16, [u8; 16]) = match cs.addr {
        IpAddr::V4(a) => {
            let mut o = [0; 16];
            o[..4].copy_from_slice(&a.octets());
            (1, o)
        }
        IpAddr::V6(a) => (2, a.octets()),
    };
    let rdlen = (echo_len(cs) as u16).to_be_bytes();
    out[n - 2..].copy_from_slice(&rdlen);
    out.extend_from_slice(&OPTION_CODE.to_be_bytes());
    out.extend_from_slice(&((4 + len) as u16).to_be_bytes());
    out.extend_from_slice(&family.to_be_bytes());
    out.extend_from_slice(&[cs.source, scope.min(if family == 1 { 32 } else { 128 })]);
    out.extend_from_slice(&octets[..len]);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opt(family: u16, source: u8, scope: u8, addr: &[u8]) -> Vec<u8> {
        let mut d = family.to_be_bytes().to_vec();
        d.extend_from_slice(&[source, scope]);
        d.extend_from_slice(addr);
        d
    }

    #[test]
    fn valid_options_parse() {
        let s = parse(&opt(1, 24, 0, &[198, 51, 100])).unwrap();
        assert_eq!(s.addr, "198.51.100.0".parse::<IpAddr>().unwrap());
        assert_eq!(s.source, 24);
        let s = parse(&opt(2, 56, 0, &[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0x01])).unwrap();
        assert_eq!(s.addr, "2001:db8:0:100::".parse::<IpAddr>().unwrap());
        let s = parse(&opt(1, 0, 0, &[])).unwrap();
        assert_eq!(s.source, 0);
        let s = parse(&opt(1, 20, 0, &[198, 51, 0x60])).unwrap();
        assert_eq!(s.addr, "198.51.96.0".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn malformed_options_are_refused() {
        assert!(parse(&opt(3, 24, 0, &[1, 2, 3])).is_err(), "family");
        assert!(
            parse(&opt(1, 33, 0, &[1, 2, 3, 4, 5])).is_err(),
            "too long a prefix"
        );
        assert!(parse(&opt(2, 129, 0, &[0; 17])).is_err());
        assert!(
            parse(&opt(1, 24, 0, &[198, 51, 100, 7])).is_err(),
            "address too long"
        );
        assert!(
            parse(&opt(1, 24, 0, &[198, 51])).is_err(),
            "address too short"
        );
        assert!(
            parse(&opt(1, 20, 0, &[198, 51, 0x61])).is_err(),
            "bits past the prefix"
        );
        assert!(parse(&[0, 1, 24]).is_err());
    }
}
