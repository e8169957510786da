//! UDP and TCP listeners. Sockets are bound before serving starts, so callers
//! (and tests binding port 0) learn the real addresses first.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::tcp::TcpLimits;
use super::{Engine, Transport};
use crate::metrics::ConnMetrics;

/// Bound DNS sockets.
pub struct Listeners {
    /// UDP sockets: `udp_workers` per address, sharing the port with SO_REUSEPORT.
    pub udp: Vec<UdpSocket>,
    /// TCP listeners, one per address.
    pub tcp: Vec<TcpListener>,
    /// Settings for TCP connections.
    pub tcp_idle: Duration,
}

impl Listeners {
    /// The addresses actually bound (port 0 resolved), one per `--listen`.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.tcp
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }
}

fn udp_socket(addr: SocketAddr, reuse: bool) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    if reuse {
        s.set_reuse_port(true)?;
    }
    // Room for bursts while a worker is busy.
    let _ = s.set_recv_buffer_size(4 << 20);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

fn tcp_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    TcpListener::from_std(s.into())
}

/// Bind UDP and TCP on every address. Port 0 is resolved once (by the first
/// socket), and UDP and TCP then share that port, as DNS requires.
pub fn bind(addrs: &[SocketAddr], udp_workers: usize, tcp_idle: Duration) -> io::Result<Listeners> {
    let mut udp = Vec::new();
    let mut tcp = Vec::new();
    for &want in addrs {
        // With port 0, retry a few times: the port the TCP listener got may
        // be taken for UDP by someone else.
        let mut last_err = None;
        for _ in 0..16 {
            let t = match tcp_listener(want) {
                Ok(t) => t,
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot listen on {want} (TCP): {e}"),
                    ));
                }
            };
            let addr = t.local_addr()?;
            let mut socks = Vec::new();
            let mut failed = None;
            for _ in 0..udp_workers.max(1) {
                match udp_socket(addr, udp_workers > 1) {
                    Ok(s) => socks.push(s),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            match failed {
                None => {
                    tracing::info!(%addr, "listening for DNS over TCP on {addr}");
                    tracing::info!(%addr, workers = socks.len(), "listening for DNS over UDP on {addr}");
                    udp.extend(socks);
                    tcp.push(t);
                    last_err = None;
                    break;
                }
                Some(e) if want.port() == 0 => last_err = Some(e),
                Some(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot listen on {want} (UDP): {e}"),
                    ));
                }
            }
        }
        if let Some(e) = last_err {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot listen on {want} (UDP): {e}"),
            ));
        }
    }
    Ok(Listeners { udp, tcp, tcp_idle })
}

/// The sockets systemd passed this process (socket activation:
/// `LISTEN_PID` is this process, `LISTEN_FDS` sockets from fd 3 on), or
/// `None` when it passed none. A `gslb.socket` unit holds the DNS ports
/// across restarts: queries that arrive while gslb restarts wait in the
/// sockets' queues instead of finding the port closed. UDP sockets are
/// shared by `udp_workers` threads (each reads the same socket); `--listen`
/// is not used then.
#[cfg(unix)]
pub fn from_systemd(udp_workers: usize, tcp_idle: Duration) -> io::Result<Option<Listeners>> {
    use std::os::fd::FromRawFd;
    const SD_LISTEN_FDS_START: i32 = 3;
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|p| p == std::process::id());
    let n: i32 = match std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        Some(n) if ours && n > 0 => n,
        _ => return Ok(None),
    };
    let mut udp = Vec::new();
    let mut tcp = Vec::new();
    for fd in SD_LISTEN_FDS_START..SD_LISTEN_FDS_START + n {
        // SAFETY: systemd's protocol hands these descriptors to this process
        // (LISTEN_PID checked above); nothing else in gslb owns them.
        let s = unsafe { Socket::from_raw_fd(fd) };
        s.set_cloexec(true)?;
        s.set_nonblocking(true)?;
        let addr = s
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other(format!("systemd socket {fd} is not an IP socket")))?;
        match s.r#type()? {
            Type::DGRAM => {
                let _ = s.set_recv_buffer_size(4 << 20);
                tracing::info!(%addr, workers = udp_workers.max(1), "listening for DNS over UDP on {addr} (socket from systemd)");
                for _ in 1..udp_workers.max(1) {
                    udp.push(UdpSocket::from_std(s.try_clone()?.into())?);
                }
                udp.push(UdpSocket::from_std(s.into())?);
            }
            Type::STREAM => {
                tracing::info!(%addr, "listening for DNS over TCP on {addr} (socket from systemd)");
                tcp.push(TcpListener::from_std(s.into())?);
            }
            other => {
                return Err(io::Error::other(format!(
                    "systemd socket {fd} is of type {other:?}, neither UDP nor TCP"
                )));
            }
        }
    }
    Ok(Some(Listeners { udp, tcp, tcp_idle }))
}

/// Serve until `shutdown` is cancelled; DNS over TCP within `tcp` limits.
pub async fn serve(
    listeners: Listeners,
    engine: Arc<Engine>,
    tcp: TcpLimits,
    tcp_metrics: ConnMetrics,
    shutdown: CancellationToken,
) {
    let mut tasks = JoinSet::new();
    for (i, sock) in listeners.udp.into_iter().enumerate() {
        let rng = engine.rng(i as u64);
        #[cfg(target_os = "linux")]
        {
            // Batched syscalls on a thread of its own (see mmsg.rs).
            let (engine, shutdown) = (engine.clone(), shutdown.clone());
            let sock = sock.into_std().expect("a bound tokio socket converts");
            let handle = std::thread::Builder::new()
                .name(format!("gslb-udp-{i}"))
                .spawn(move || super::mmsg::run(sock, engine, rng, shutdown))
                .expect("spawn UDP worker thread");
            tasks.spawn(async move {
                let _ = tokio::task::spawn_blocking(move || handle.join()).await;
            });
        }
        #[cfg(not(target_os = "linux"))]
        tasks.spawn(udp_loop(sock, engine.clone(), rng, shutdown.clone()));
    }
    let table = Arc::new(super::tcp::Table::new(tcp, tcp_metrics));
    for l in listeners.tcp {
        tasks.spawn(super::tcp::accept_loop(
            l,
            engine.clone(),
            table.clone(),
            shutdown.clone(),
        ));
    }
    while tasks.join_next().await.is_some() {}
}

#[cfg_attr(target_os = "linux", allow(dead_code))]
async fn udp_loop(
    sock: UdpSocket,
    engine: Arc<Engine>,
    rng: SmallRng,
    shutdown: CancellationToken,
) {
    let mut worker = engine.worker(rng);
    let mut buf = vec![0u8; 65535];
    let mut out = Vec::with_capacity(4096);
    loop {
        let (len, peer) = tokio::select! {
            r = sock.recv_from(&mut buf) => match r {
                Ok(v) => v,
                Err(e) => {
                    // ICMP errors surface here on some systems; keep serving.
                    tracing::debug!(error = %e, "UDP receive error");
                    continue;
                }
            },
            () = shutdown.cancelled() => return,
        };
        if engine.respond(
            &buf[..len],
            peer.ip(),
            Transport::Udp,
            &mut out,
            &mut worker,
        ) && engine
            .rrl()
            .is_none_or(|rrl| super::rrl::apply(rrl, peer.ip(), &mut out))
            && let Err(e) = sock.send_to(&out, peer).await
        {
            tracing::debug!(%peer, error = %e, "UDP send failed");
        }
    }
}
