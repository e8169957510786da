//! UDP and TCP listeners. Sockets are bound before serving starts, so callers
//! (and tests binding port 0) learn the real addresses first.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Engine, Transport};

/// Most TCP connections served at once; more wait in the accept queue.
const MAX_TCP_CONNECTIONS: usize = 1024;

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

/// Serve until `shutdown` is cancelled.
pub async fn serve(listeners: Listeners, engine: Arc<Engine>, shutdown: CancellationToken) {
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
    let limit = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    for l in listeners.tcp {
        tasks.spawn(tcp_accept(
            l,
            engine.clone(),
            listeners.tcp_idle,
            limit.clone(),
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
    let mut worker = super::Worker::new(rng);
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
        if engine.respond(&buf[..len], Transport::Udp, &mut out, &mut worker)
            && let Err(e) = sock.send_to(&out, peer).await
        {
            tracing::debug!(%peer, error = %e, "UDP send failed");
        }
    }
}

async fn tcp_accept(
    l: TcpListener,
    engine: Arc<Engine>,
    idle: Duration,
    limit: Arc<Semaphore>,
    shutdown: CancellationToken,
) {
    let mut conns = JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => p.expect("semaphore never closed"),
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            r = l.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "TCP accept failed");
                    // Out of file descriptors and the like: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let engine = engine.clone();
        let shutdown = shutdown.clone();
        conns.spawn(async move {
            let _permit = permit;
            tokio::select! {
                r = tcp_conn(stream, &engine, idle) => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "TCP connection ended");
                    }
                }
                () = shutdown.cancelled() => {}
            }
        });
        // Reap finished connections so the set does not grow.
        while conns.try_join_next().is_some() {}
    }
    conns.shutdown().await;
}

/// Serve one connection: length-prefixed messages (RFC 1035 §4.2.2), answered
/// in order, until the client closes or stays idle for `idle`.
async fn tcp_conn(mut stream: TcpStream, engine: &Engine, idle: Duration) -> io::Result<()> {
    // Each connection is a worker with its own RNG, without an answer cache
    // (see `Worker::without_cache`).
    let mut worker = super::Worker::without_cache(
        engine.rng(u64::from(u32::MAX) + u64::from(rand::random::<u32>())),
    );
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(512);
    let mut out = Vec::with_capacity(4096);
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(idle, stream.read_exact(&mut len)).await {
            Err(_) => return Ok(()), // idle: close
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(r) => r?,
        };
        let n = usize::from(u16::from_be_bytes(len));
        buf.resize(n, 0);
        // A client that sends a length and then stalls is closed too.
        match tokio::time::timeout(idle, stream.read_exact(&mut buf)).await {
            Err(_) => return Ok(()),
            Ok(r) => r?,
        };
        if !engine.respond(&buf, Transport::Tcp, &mut out, &mut worker) {
            return Ok(());
        }
        let mut framed = Vec::with_capacity(out.len() + 2);
        framed.extend_from_slice(&(out.len() as u16).to_be_bytes());
        framed.extend_from_slice(&out);
        tokio::time::timeout(idle, stream.write_all(&framed))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "write timed out"))??;
    }
}
