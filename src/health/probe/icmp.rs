//! The `icmp` kind: an echo request, passing on the echo reply.
//!
//! One ICMP socket per address family for all the endpoints of a check,
//! opened at its first probe: an unprivileged "ping" socket where the
//! system allows them (`net.ipv4.ping_group_range`), else a raw one
//! (CAP_NET_RAW). There is no receive task: a waiting probe reads what
//! arrives and hands each reply to the probe it answers (by source address
//! and sequence number, and in raw mode by our identifier), so nothing
//! outlives the probes. Whether a socket can be had at all is checked when
//! the zone is loaded (config's `open_icmp_socket`).

use std::collections::HashMap;
use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU16, Ordering};

use socket2::{SockAddr, Socket};
use tokio::io::unix::AsyncFd;
use tokio::sync::{OnceCell, oneshot};

use super::{EndpointProber, ProbeOutcome};

/// The sockets of one check, opened at its first probe.
#[derive(Debug, Default)]
pub(super) struct Pinger {
    v4: OnceCell<Family>,
    v6: OnceCell<Family>,
}

#[derive(Debug)]
struct Family {
    sock: AsyncFd<Socket>,
    /// A raw socket sees every ICMP message of the host: ours carry this
    /// identifier. (A ping socket's identifier is its port, set by the
    /// kernel, and it receives only its own replies.)
    raw: bool,
    ident: u16,
    waiting: Mutex<HashMap<(IpAddr, u16), oneshot::Sender<()>>>,
}

/// Sequence numbers, shared by every check.
static SEQ: AtomicU16 = AtomicU16::new(1);

impl Family {
    fn new(v6: bool) -> io::Result<Family> {
        let (sock, raw) = crate::config::open_icmp_socket(v6)?;
        sock.set_nonblocking(true)?;
        tracing::info!(
            family = if v6 { "ipv6" } else { "ipv4" },
            socket = if raw { "raw" } else { "ping" },
            "ICMP socket open for echo checks"
        );
        Ok(Family {
            // SAFETY: the socket2 Socket owns its descriptor, which stays
            // open and the same until the AsyncFd (which owns the Socket)
            // is dropped.
            sock: unsafe { AsyncFd::register_with_interest(sock, tokio::io::Interest::READABLE) }
                .map_err(io::Error::from)?,
            raw,
            ident: rand::random(),
            waiting: Mutex::default(),
        })
    }

    fn echo_request(&self, v6: bool, seq: u16) -> Vec<u8> {
        let mut p = vec![if v6 { 128 } else { 8 }, 0, 0, 0];
        p.extend(self.ident.to_be_bytes());
        p.extend(seq.to_be_bytes());
        p.extend_from_slice(b"gslb-icmp-check!");
        if !v6 {
            // ICMPv6's checksum is the kernel's (it covers the IP header).
            let sum = checksum(&p);
            p[2..4].copy_from_slice(&sum.to_be_bytes());
        }
        p
    }

    /// Read what has arrived and hand each echo reply to its probe.
    fn dispatch(&self, v6: bool) -> io::Result<()> {
        let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
        loop {
            let (n, from) = match self.sock.get_ref().recv_from(&mut buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            };
            // SAFETY: recv_from initialised the first n bytes.
            let bytes: &[u8] = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast(), n) };
            let Some(from) = from.as_socket().map(|a| a.ip()) else {
                continue;
            };
            // A raw IPv4 socket gets the IP header too.
            let icmp = if self.raw && !v6 {
                let ihl = usize::from(bytes.first().map_or(0, |b| b & 0x0f)) * 4;
                bytes.get(ihl..).unwrap_or_default()
            } else {
                bytes
            };
            let reply_type = if v6 { 129 } else { 0 };
            if icmp.len() < 8 || icmp[0] != reply_type || icmp[1] != 0 {
                continue;
            }
            let ident = u16::from_be_bytes([icmp[4], icmp[5]]);
            if self.raw && ident != self.ident {
                continue; // another program's ping
            }
            let seq = u16::from_be_bytes([icmp[6], icmp[7]]);
            let from = match from {
                IpAddr::V6(a) => a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4),
                a => a,
            };
            let waiter = self
                .waiting
                .lock()
                .expect("icmp lock poisoned")
                .remove(&(from, seq));
            if let Some(tx) = waiter {
                let _ = tx.send(());
            }
        }
    }
}

/// Takes a probe's entry out of the map when it ends, answered or not.
struct Waiting<'a>(&'a Family, (IpAddr, u16));

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0
            .waiting
            .lock()
            .expect("icmp lock poisoned")
            .remove(&self.1);
    }
}

impl EndpointProber {
    /// One echo request and its reply.
    pub(super) async fn icmp(&self, pinger: &Pinger) -> (ProbeOutcome, String) {
        let addr = self.addr.ip();
        let v6 = addr.is_ipv6();
        let cell = if v6 { &pinger.v6 } else { &pinger.v4 };
        let fam = match cell.get_or_try_init(|| async { Family::new(v6) }).await {
            Ok(f) => f,
            // The host's rules, not the endpoint: says nothing about it.
            Err(e) => return (ProbeOutcome::Local, format!("no ICMP socket: {e}")),
        };
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = oneshot::channel();
        fam.waiting
            .lock()
            .expect("icmp lock poisoned")
            .insert((addr, seq), tx);
        let _entry = Waiting(fam, (addr, seq));
        let packet = fam.echo_request(v6, seq);
        let to = SockAddr::from(SocketAddr::new(addr, 0));
        if let Err(e) = fam.sock.get_ref().send_to(&packet, &to) {
            return super::classify::classify(&e, &addr.to_string());
        }
        let start = std::time::Instant::now();
        loop {
            tokio::select! {
                _ = &mut rx => {
                    let ms = start.elapsed().as_secs_f64() * 1000.0;
                    return (ProbeOutcome::Success, format!("ok ({ms:.2} ms)"));
                }
                ready = fam.sock.readable() => {
                    let mut guard = match ready {
                        Ok(g) => g,
                        Err(e) => return (ProbeOutcome::Local, format!("ICMP socket: {e}")),
                    };
                    match fam.dispatch(v6) {
                        Ok(()) => guard.clear_ready(),
                        Err(e) => return (ProbeOutcome::Local, format!("ICMP socket: {e}")),
                    }
                }
            }
        }
    }
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_rfc1071_example() {
        // RFC 1071 §3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2; the checksum is its complement.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
    }
}
