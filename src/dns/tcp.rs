//! DNS over TCP (RFC 7766): length-prefixed messages, answered in order,
//! with every connection accounted for in one table so that no client can
//! take every slot:
//!
//! - at most `max` connections at once, sized from the file descriptor
//!   limit (`app`), and at most `per_prefix` from one /24 (IPv4) or /56
//!   (IPv6), as one host or one small network;
//! - near the limit (three quarters of `max` in use) a connection waiting
//!   for its next query gets a short idle timeout ([`PRESSURE_IDLE`]), as
//!   NSD and Knot shorten theirs;
//! - at the limit, a new connection takes the slot of the connection that
//!   has been idle longest, rather than being refused: a client holding
//!   idle connections loses them to clients that ask something. Only when
//!   none is idle is the new one closed.
//!
//! The table is a std mutex held for a few map operations, never across an
//! `.await`; queries are answered outside it.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::prefix::client_prefix;
use super::{Engine, Transport};
use crate::metrics::ConnMetrics;
use crate::throttle::{LogThrottle, suppressed_note};

/// Idle timeout of a connection waiting for its next query while three
/// quarters of the slots are in use.
pub const PRESSURE_IDLE: Duration = Duration::from_millis(500);

/// Limits of the DNS-over-TCP listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpLimits {
    /// Connections open at once.
    pub max: usize,
    /// Connections open at once from one /24 or /56.
    pub per_prefix: usize,
    /// Idle timeout between queries (and for a stalled query or answer).
    pub idle: Duration,
}

#[derive(Debug)]
struct Conn {
    prefix: u128,
    /// Waiting for a query since then; `None` while one is being answered.
    idle_since: Option<Instant>,
    close: CancellationToken,
}

/// Every open connection of the listeners.
#[derive(Debug)]
pub(super) struct Table {
    limits: TcpLimits,
    conns: Mutex<Inner>,
    metrics: ConnMetrics,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    conns: HashMap<u64, Conn>,
    per_prefix: HashMap<u128, usize>,
}

/// Why a new connection was not admitted.
#[derive(Debug, PartialEq, Eq)]
enum Refused {
    PerPrefix,
    Full,
}

impl Table {
    pub(super) fn new(limits: TcpLimits, metrics: ConnMetrics) -> Table {
        metrics.limit.set(limits.max as i64);
        Table {
            limits,
            conns: Mutex::default(),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a connection from `ip`: its id and the token that closes
    /// it. At the limit, the longest-idle connection is closed for it.
    fn admit(&self, ip: IpAddr) -> Result<(u64, CancellationToken), Refused> {
        let p = client_prefix(ip);
        let mut inner = self.lock();
        if inner.per_prefix.get(&p).copied().unwrap_or(0) >= self.limits.per_prefix {
            self.metrics.shed_per_prefix.inc();
            return Err(Refused::PerPrefix);
        }
        if inner.conns.len() >= self.limits.max {
            let oldest = inner
                .conns
                .iter()
                .filter_map(|(id, c)| c.idle_since.map(|t| (t, *id)))
                .min();
            let Some((_, id)) = oldest else {
                self.metrics.shed_full.inc();
                return Err(Refused::Full);
            };
            Self::remove_locked(&mut inner, id);
            self.metrics.shed_idle.inc();
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let close = CancellationToken::new();
        inner.conns.insert(
            id,
            Conn {
                prefix: p,
                idle_since: Some(Instant::now()),
                close: close.clone(),
            },
        );
        *inner.per_prefix.entry(p).or_default() += 1;
        self.metrics.open.set(inner.conns.len() as i64);
        Ok((id, close))
    }

    /// Takes a connection out (closing it if it still runs); a second call
    /// for the same id does nothing.
    fn remove_locked(inner: &mut Inner, id: u64) {
        if let Some(c) = inner.conns.remove(&id) {
            c.close.cancel();
            if let Some(n) = inner.per_prefix.get_mut(&c.prefix) {
                *n -= 1;
                if *n == 0 {
                    inner.per_prefix.remove(&c.prefix);
                }
            }
        }
    }

    fn release(&self, id: u64) {
        let mut inner = self.lock();
        Self::remove_locked(&mut inner, id);
        self.metrics.open.set(inner.conns.len() as i64);
    }

    /// Marks the connection idle (waiting for a query) or busy; returns the
    /// idle timeout in force now.
    fn set_idle(&self, id: u64, idle: bool) -> Duration {
        let mut inner = self.lock();
        if let Some(c) = inner.conns.get_mut(&id) {
            c.idle_since = idle.then(Instant::now);
        }
        self.idle_timeout(&inner)
    }

    /// The idle timeout in force: short when three quarters of the slots
    /// are in use.
    fn idle_timeout(&self, inner: &Inner) -> Duration {
        if inner.conns.len() * 4 >= self.limits.max * 3 {
            self.limits.idle.min(PRESSURE_IDLE)
        } else {
            self.limits.idle
        }
    }

    fn current_idle_timeout(&self) -> Duration {
        self.idle_timeout(&self.lock())
    }
}

/// Accept on `l` until `shutdown`, serving each connection in a task.
pub(super) async fn accept_loop(
    l: TcpListener,
    engine: Arc<Engine>,
    table: Arc<Table>,
    shutdown: CancellationToken,
) {
    static ACCEPT_ERRORS: LogThrottle = LogThrottle::new(Duration::from_secs(10));
    let mut conns = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            r = l.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    // Out of file descriptors and the like: an error of
                    // this process, not of any client. Back off, and log
                    // it once per period, not 20 times a second.
                    table.metrics.accept_errors.inc();
                    if let Some(n) = ACCEPT_ERRORS.allow() {
                        tracing::error!(error = %e, "DNS-over-TCP accept failed (a local resource problem of gslb){}", suppressed_note(n));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let Ok((id, close)) = table.admit(peer.ip()) else {
            // Closed at once: a reset-free close, the client may retry.
            drop(stream);
            continue;
        };
        let (engine, table, shutdown) = (engine.clone(), table.clone(), shutdown.clone());
        conns.spawn(async move {
            // Released however the task ends, a panic included.
            struct Slot(Arc<Table>, u64);
            impl Drop for Slot {
                fn drop(&mut self) {
                    self.0.release(self.1);
                }
            }
            let slot = Slot(table, id);
            tokio::select! {
                r = serve_conn(stream, peer.ip(), &engine, &slot.0, id) => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "TCP connection ended");
                    }
                }
                () = close.cancelled() => {}
                () = shutdown.cancelled() => {}
            }
        });
        // Reap finished connections so the set does not grow.
        while conns.try_join_next().is_some() {}
    }
    // Every connection ends at shutdown by itself.
    while conns.join_next().await.is_some() {}
}

/// Most time a query, once its length has arrived, may take to arrive whole
/// (and its answer to be written): a stalled message holds a busy slot,
/// which eviction cannot take.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(2);

/// Serve one connection: length-prefixed messages (RFC 1035 §4.2.2), answered
/// in order, until the client closes or stays idle too long.
async fn serve_conn(
    mut stream: TcpStream,
    client: std::net::IpAddr,
    engine: &Engine,
    table: &Table,
    id: u64,
) -> io::Result<()> {
    // Each connection is a worker with its own RNG, without an answer cache
    // (see `Worker::without_cache`).
    let mut worker = super::Worker::without_cache(
        engine.rng(u64::from(u32::MAX) + u64::from(rand::random::<u32>())),
    );
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(512);
    let mut out = Vec::with_capacity(4096);
    loop {
        let idle = table.set_idle(id, true);
        // Wait for the next query, looking again at least every
        // PRESSURE_IDLE: a connection that went idle before the server
        // came near its limit gets the short timeout too.
        let since = Instant::now();
        let mut idle = idle;
        loop {
            let Some(left) = idle.checked_sub(since.elapsed()).filter(|d| !d.is_zero()) else {
                return Ok(()); // idle: close
            };
            // Peek, not readable(): readiness can be stale after a read
            // that took exactly what had arrived; a peek is cancel-safe.
            let mut first = [0u8; 1];
            match tokio::time::timeout(left.min(PRESSURE_IDLE), stream.peek(&mut first)).await {
                Ok(Ok(0)) => return Ok(()), // the client closed
                Ok(r) => {
                    r?;
                    break;
                }
                Err(_) => idle = table.current_idle_timeout(),
            }
        }
        let mut len = [0u8; 2];
        match tokio::time::timeout(idle, stream.read_exact(&mut len)).await {
            Err(_) => return Ok(()),
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(r) => r?,
        };
        let idle = table.set_idle(id, false).min(MESSAGE_TIMEOUT);
        let n = usize::from(u16::from_be_bytes(len));
        buf.resize(n, 0);
        // A client that sends a length and then stalls is closed too.
        match tokio::time::timeout(idle, stream.read_exact(&mut buf)).await {
            Err(_) => return Ok(()),
            Ok(r) => r?,
        };
        if !engine.respond(&buf, client, Transport::Tcp, &mut out, &mut worker) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    fn table(max: usize, per_prefix: usize) -> Table {
        Table::new(
            TcpLimits {
                max,
                per_prefix,
                idle: Duration::from_secs(10),
            },
            ConnMetrics::disabled(),
        )
    }

    #[test]
    fn one_prefix_gets_its_share_and_no_more() {
        let t = table(10, 2);
        let a = t.admit(ip("192.0.2.1")).unwrap();
        t.admit(ip("192.0.2.2")).unwrap();
        assert_eq!(t.admit(ip("192.0.2.3")), Err(Refused::PerPrefix));
        assert!(t.admit(ip("198.51.100.1")).is_ok(), "another net is served");
        t.release(a.0);
        assert!(t.admit(ip("192.0.2.3")).is_ok(), "a slot freed is reused");
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_limit_the_longest_idle_connection_makes_room() {
        let t = table(2, 10);
        let (old, old_close) = t.admit(ip("192.0.2.1")).unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        let (busy, busy_close) = t.admit(ip("198.51.100.1")).unwrap();
        t.set_idle(busy, false);
        let (_new, _) = t.admit(ip("203.0.113.1")).expect("room made");
        assert!(old_close.is_cancelled(), "the idle one is closed");
        assert!(!busy_close.is_cancelled(), "a busy one is not");
        // Now the busy one and the new one (idle): the new one goes next.
        t.release(old);
        assert_eq!(t.lock().conns.len(), 2);
        t.set_idle(busy, false);
        let newest_idle_before = t.admit(ip("203.0.113.2"));
        assert!(newest_idle_before.is_ok());
        assert!(!busy_close.is_cancelled());
        // Every slot busy: a new one is refused.
        let ids: Vec<u64> = t.lock().conns.keys().copied().collect();
        for id in ids {
            t.set_idle(id, false);
        }
        assert_eq!(t.admit(ip("203.0.113.3")), Err(Refused::Full));
    }

    #[test]
    fn the_idle_timeout_shortens_near_the_limit() {
        let t = table(4, 10);
        let (a, _) = t.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(t.set_idle(a, true), Duration::from_secs(10));
        t.admit(ip("198.51.100.1")).unwrap();
        t.admit(ip("203.0.113.1")).unwrap();
        assert_eq!(t.set_idle(a, true), PRESSURE_IDLE);
    }
}
