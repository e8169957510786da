//! DNS over TCP (RFC 7766): length-prefixed messages, answered in order,
//! with every connection accounted for in one table ([`crate::conns`]) so
//! that no client can take every slot: budgets per /24, /56 and IPv6 /48,
//! and at the limit the connection idle longest, or else the one whose
//! current message has taken longest, makes room for a new one.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub(super) use crate::conns::Table;
pub use crate::conns::{Limits as TcpLimits, PRESSURE_IDLE};

use super::{Engine, Transport};
use crate::throttle::{LogThrottle, suppressed_note};

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
                    table.accept_error();
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
        if super::xfr::is_transfer(&buf) {
            // AXFR/IXFR: several messages, written as they are made.
            super::xfr::serve_tcp(engine, &buf, client, &mut stream).await?;
            continue;
        }
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
