//! Batched UDP on Linux: one OS thread per socket receives up to [`BATCH`]
//! datagrams with one `recvmmsg` and sends the answers with one `sendmmsg`.
//!
//! Why (measured, see BENCHMARKS.md): on loopback 61% of the server's CPU
//! per query was `sendto`, most of it waking the client once per packet;
//! sending a batch wakes it once per batch, and the syscall entry and fd
//! lookup are paid once per batch too. gdnsd and Knot do the same.
//!
//! The engine never blocks, so a plain thread per socket suits it better than
//! an async task: no readiness polling, no waker, no scheduler between the
//! kernel and the answer. Shutdown is noticed within the receive timeout.
//!
//! A socket bound to a wildcard address (`0.0.0.0:53`, `[::]:53`) answers
//! from the address each query was sent to, as NSD, Knot and Unbound do:
//! the kernel says it with every datagram (`IP_PKTINFO`,
//! `IPV6_RECVPKTINFO`) and the answer names it as its source. Left to the
//! kernel, a host with several addresses (an anycast address on `lo`, a
//! second address on the interface) would answer from whichever address
//! routes back to the client, and resolvers drop an answer from an address
//! they did not ask.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use tokio_util::sync::CancellationToken;

use super::{Engine, Transport};

/// Datagrams per `recvmmsg`/`sendmmsg`.
pub(crate) const BATCH: usize = 32;
/// Largest request read; DNS queries are far smaller (a bigger datagram is
/// cut, and answered FORMERR however its first part reads).
const REQ_MAX: usize = 4096;
/// How often a worker blocked in `recvmmsg` checks for shutdown.
const POLL: Duration = Duration::from_millis(200);
/// Room for one packet-info control message (`in6_pktinfo`, the larger,
/// takes 40 bytes with its header), as `u64`s for the header's alignment.
const CONTROL: usize = 8;

/// Serve `sock` until `shutdown` is cancelled.
pub(crate) fn run(
    sock: UdpSocket,
    engine: Arc<Engine>,
    rng: SmallRng,
    shutdown: CancellationToken,
) {
    let mut worker = engine.worker(rng);
    if let Err(e) = sock
        .set_nonblocking(false)
        .and_then(|()| sock.set_read_timeout(Some(POLL)))
    {
        tracing::error!(error = %e, "cannot configure the UDP socket; this worker stops");
        return;
    }
    let fd = sock.as_raw_fd();
    let pktinfo = match want_pktinfo(&sock) {
        Ok(p) => p,
        Err(e) => {
            // Never serve a wildcard address with answers from the wrong one.
            tracing::error!(error = %e, "cannot ask for the destination of UDP queries on a wildcard address; this worker stops");
            return;
        }
    };
    let mut ctl_in = vec![[0u64; CONTROL]; BATCH];
    let mut ctl_out = vec![[0u64; CONTROL]; BATCH];
    let mut reqs = vec![[0u8; REQ_MAX]; BATCH];
    let mut outs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(1232)).collect();
    // SAFETY: all-zero is a valid value for these plain C structs.
    let mut peers: Vec<libc::sockaddr_storage> = vec![unsafe { zeroed() }; BATCH];
    let mut iov_in: Vec<libc::iovec> = vec![unsafe { zeroed() }; BATCH];
    let mut hdr_in: Vec<libc::mmsghdr> = vec![unsafe { zeroed() }; BATCH];
    let mut iov_out: Vec<libc::iovec> = vec![unsafe { zeroed() }; BATCH];
    let mut hdr_out: Vec<libc::mmsghdr> = vec![unsafe { zeroed() }; BATCH];
    let mut dests: Vec<libc::sockaddr_storage> = vec![unsafe { zeroed() }; BATCH];
    while !shutdown.is_cancelled() {
        for i in 0..BATCH {
            iov_in[i] = libc::iovec {
                iov_base: reqs[i].as_mut_ptr().cast(),
                iov_len: REQ_MAX,
            };
            point(
                &mut hdr_in[i],
                &mut peers[i],
                size_of::<libc::sockaddr_storage>() as libc::socklen_t,
                &mut iov_in[i],
            );
            if pktinfo {
                control(&mut hdr_in[i], &mut ctl_in[i], size_of::<[u64; CONTROL]>());
            }
        }
        // SAFETY: every header points at live buffers of the stated lengths,
        // owned by this function and not moved while the call runs.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdr_in.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock
                | io::ErrorKind::TimedOut
                | io::ErrorKind::Interrupted => {
                    // Idle: let go of an older snapshot's zones (a reload's
                    // memory comes back without waiting for a query).
                    engine.refresh(&mut worker);
                    continue;
                }
                // ICMP errors from earlier sends surface here; keep serving,
                // but never spin on an error that does not go away.
                _ => {
                    tracing::debug!(error = %e, "recvmmsg failed");
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            }
        }
        let mut count = 0;
        for i in 0..n as usize {
            let len = (hdr_in[i].msg_len as usize).min(REQ_MAX);
            let out = &mut outs[count];
            // MSG_TRUNC: the datagram was longer than the buffer.
            let from = peer_ip(&peers[i]);
            let answered = if hdr_in[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                engine.respond_cut(&reqs[i][..len], Transport::Udp, out)
            } else {
                let client = from.unwrap_or(std::net::Ipv6Addr::UNSPECIFIED.into());
                engine.respond(&reqs[i][..len], client, Transport::Udp, out, &mut worker)
            };
            if !answered {
                continue;
            }
            if let Some(rrl) = engine.rrl()
                && let Some(ip) = from
                && !super::rrl::apply(rrl, ip, out)
            {
                continue;
            }
            dests[count] = peers[i];
            iov_out[count] = libc::iovec {
                iov_base: out.as_mut_ptr().cast(),
                iov_len: out.len(),
            };
            let namelen = hdr_in[i].msg_hdr.msg_namelen;
            point(
                &mut hdr_out[count],
                &mut dests[count],
                namelen,
                &mut iov_out[count],
            );
            if pktinfo {
                // SAFETY: the kernel filled `msg_controllen` bytes of this
                // message's control buffer, which the header points at.
                let len = unsafe { answer_from(&hdr_in[i].msg_hdr, &mut ctl_out[count]) };
                control(&mut hdr_out[count], &mut ctl_out[count], len);
            }
            count += 1;
        }
        let mut sent = 0;
        while sent < count {
            // SAFETY: as above; `sent..count` are initialised headers.
            let r = unsafe {
                libc::sendmmsg(fd, hdr_out[sent..].as_mut_ptr(), (count - sent) as u32, 0)
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // This datagram cannot go (unreachable peer...): skip it, not the batch.
                tracing::debug!(error = %e, "sendmmsg failed");
                sent += 1;
            } else {
                sent += r as usize;
            }
        }
    }
}

/// Asks for the destination of each datagram on a socket bound to a
/// wildcard address (true); a socket bound to one address answers from it
/// anyway (false).
fn want_pktinfo(sock: &UdpSocket) -> io::Result<bool> {
    let local = sock.local_addr()?;
    if !local.ip().is_unspecified() {
        return Ok(false);
    }
    let (level, name) = if local.is_ipv4() {
        (libc::IPPROTO_IP, libc::IP_PKTINFO)
    } else {
        (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)
    };
    let on: libc::c_int = 1;
    // SAFETY: a valid descriptor and a c_int option of the stated size.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&raw const on).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(true)
}

/// Writes into `out` the control message that makes an answer leave from
/// the address its query was sent to, read from the query's header; returns
/// its length (0: the query said nothing, the kernel picks).
///
/// # Safety
/// `query`'s control pointer and length must describe the control data the
/// kernel wrote for it.
unsafe fn answer_from(query: &libc::msghdr, out: &mut [u64; CONTROL]) -> usize {
    // SAFETY (whole function): the CMSG_* walk stays inside the buffer the
    // kernel filled, and each payload is read only after its level, type
    // and length say it is the struct read.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(query);
        while !c.is_null() {
            let h = &*c;
            if h.cmsg_level == libc::IPPROTO_IP
                && h.cmsg_type == libc::IP_PKTINFO
                && h.cmsg_len as usize
                    >= libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as usize
            {
                let got = libc::CMSG_DATA(c)
                    .cast::<libc::in_pktinfo>()
                    .read_unaligned();
                // The interface is left to routing; only the source is set.
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: got.ipi_addr,
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                return put(out, libc::IPPROTO_IP, libc::IP_PKTINFO, info);
            }
            if h.cmsg_level == libc::IPPROTO_IPV6
                && h.cmsg_type == libc::IPV6_PKTINFO
                && h.cmsg_len as usize
                    >= libc::CMSG_LEN(size_of::<libc::in6_pktinfo>() as u32) as usize
            {
                let got = libc::CMSG_DATA(c)
                    .cast::<libc::in6_pktinfo>()
                    .read_unaligned();
                let addr = std::net::Ipv6Addr::from(got.ipi6_addr.s6_addr);
                // A link-local address means something only on its link.
                let info = libc::in6_pktinfo {
                    ipi6_addr: got.ipi6_addr,
                    ipi6_ifindex: if addr.is_unicast_link_local() {
                        got.ipi6_ifindex
                    } else {
                        0
                    },
                };
                return put(out, libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, info);
            }
            c = libc::CMSG_NXTHDR(query, c);
        }
    }
    0
}

/// One control message of `level`/`kind` carrying `data`, at the start of
/// `out`; returns its space.
fn put<T>(out: &mut [u64; CONTROL], level: libc::c_int, kind: libc::c_int, data: T) -> usize {
    // SAFETY: `out` is aligned for a cmsghdr and CONTROL * 8 bytes long,
    // more than CMSG_SPACE of either pktinfo struct (checked below); the
    // header and the payload are written where CMSG_DATA says.
    unsafe {
        let space = libc::CMSG_SPACE(size_of::<T>() as u32) as usize;
        assert!(space <= size_of::<[u64; CONTROL]>());
        let mut hdr: libc::msghdr = zeroed();
        hdr.msg_control = out.as_mut_ptr().cast();
        hdr.msg_controllen = space as _;
        let c = libc::CMSG_FIRSTHDR(&hdr);
        (*c).cmsg_level = level;
        (*c).cmsg_type = kind;
        (*c).cmsg_len = libc::CMSG_LEN(size_of::<T>() as u32) as _;
        libc::CMSG_DATA(c).cast::<T>().write_unaligned(data);
        space
    }
}

/// Point a message header at a control buffer of `len` bytes (none: 0).
fn control(hdr: &mut libc::mmsghdr, buf: &mut [u64; CONTROL], len: usize) {
    let h = &mut hdr.msg_hdr;
    if len == 0 {
        h.msg_control = std::ptr::null_mut();
        h.msg_controllen = 0;
    } else {
        h.msg_control = buf.as_mut_ptr().cast();
        h.msg_controllen = len as _;
    }
}

/// The address of a datagram's sender.
fn peer_ip(sa: &libc::sockaddr_storage) -> Option<std::net::IpAddr> {
    match i32::from(sa.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says it is a sockaddr_in, which fits.
            let sin =
                unsafe { &*(sa as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)).into())
        }
        libc::AF_INET6 => {
            // SAFETY: the family says it is a sockaddr_in6, which fits.
            let sin6 =
                unsafe { &*(sa as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr).into())
        }
        _ => None,
    }
}

/// Point one message header at its address and its single buffer.
fn point(
    hdr: &mut libc::mmsghdr,
    addr: &mut libc::sockaddr_storage,
    namelen: libc::socklen_t,
    iov: &mut libc::iovec,
) {
    let h = &mut hdr.msg_hdr;
    h.msg_name = (addr as *mut libc::sockaddr_storage).cast();
    h.msg_namelen = namelen;
    h.msg_iov = iov;
    h.msg_iovlen = 1;
    h.msg_control = std::ptr::null_mut();
    h.msg_controllen = 0;
    h.msg_flags = 0;
    hdr.msg_len = 0;
}
