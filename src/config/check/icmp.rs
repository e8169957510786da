//! `type = "icmp"`: an echo request, for devices with nothing else to ask.
//!
//! The prober's sockets are opened here too ([`open_socket`]), so a zone is
//! refused when this host lets gslb send no echo request at all: a clear
//! error when it is loaded, not a region that never comes up.

use std::io;

use socket2::{Domain, Protocol, Socket, Type};
use toml::Spanned;

use super::super::source::Ctx;
use super::super::spec::CheckSpec;
use crate::model::CheckKind;

pub(super) fn build(cx: &mut Ctx<'_, '_>, check: &Spanned<String>, s: &CheckSpec) -> CheckKind {
    if let Err(e) = open_socket(false) {
        cx.err(
            &s.kind,
            format!(
                "check {}: cannot send ICMP echo requests: {e}",
                check.get_ref()
            ),
        );
    }
    CheckKind::Icmp
}

/// An ICMP socket of this family: an unprivileged ping socket, else a raw
/// one; `true` with a raw one.
pub(crate) fn open_socket(v6: bool) -> io::Result<(Socket, bool)> {
    let (domain, proto) = if v6 {
        (Domain::IPV6, Protocol::ICMPV6)
    } else {
        (Domain::IPV4, Protocol::ICMPV4)
    };
    match Socket::new(domain, Type::DGRAM, Some(proto)) {
        Ok(s) => Ok((s, false)),
        Err(dgram) => Socket::new(domain, Type::RAW, Some(proto))
            .map(|s| (s, true))
            .map_err(|raw| {
                io::Error::new(
                    raw.kind(),
                    format!(
                        "neither an unprivileged ICMP socket ({dgram}; allowed by sysctl net.ipv4.ping_group_range) nor a raw one ({raw}; needs CAP_NET_RAW)"
                    ),
                )
            }),
    }
}
