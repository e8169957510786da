//! One probe of one endpoint: TCP connect, or an HTTP(S) request judged by
//! status and body.
//!
//! A [`CheckProber`] is built once per check and holds what every endpoint of
//! the check shares (parsed method, path and headers, the rustls
//! configuration); an [`EndpointProber`] is built from it once per endpoint
//! and reused for every probe of that endpoint. A probe never fails with an
//! error: every way a backend can misbehave becomes a [`ProbeResult`] with an
//! outcome class and a reason for operators.
//!
//! A check kind is a variant of [`KindShared`] and [`KindTarget`] and a
//! module with its probe; the deadline, the outcome and the scheduler
//! around it are the same for every kind.
//!
//! - this file: set-up, the deadline, TCP connect (the `tcp` kind, and the
//!   transport of `https`, `grpc` and DNS over TCP);
//! - [`sock`]: the socket an endpoint keeps between its `tcp` and plain
//!   `http` connections, on an epoll set of the prober's own;
//! - [`http`]: the HTTP/1.1 exchange ([`h1`]: httparse and body framing) on our own
//!   socket (no pool, connector, URL or task per probe), and the kept
//!   connection of the last successful probe;
//! - [`tls`]: the rustls configuration and TLS set-up;
//! - [`classify`]: errors to outcome classes and reasons.
//!
//! Uses only the model ([`Check`]) and the outcome classes of [`super::state`].

mod classify;
mod dns;
mod exec;
mod grpc;
mod h1;
mod http;
mod icmp;
mod sock;
mod tls;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::net::TcpStream;

use super::ProbeOutcome;
use crate::model::{Check, CheckKind};
use classify::classify;
use sock::Connector;

/// Result of one probe.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeResult {
    /// How the probe ended.
    pub outcome: ProbeOutcome,
    /// Why, for operators: `"ok (200)"`, `"status 503"`, `"timeout after 2s"`.
    pub reason: String,
    /// Wall time of the whole probe.
    pub latency: Duration,
    /// When the leaf certificate the endpoint last presented expires (checks
    /// over TLS, once a handshake got that far).
    pub certificate_expiry: Option<SystemTime>,
}

impl ProbeResult {
    /// Whether the endpoint passed.
    pub fn ok(&self) -> bool {
        self.outcome == ProbeOutcome::Success
    }
}

/// Why a prober could not be built: the check cannot be turned into
/// requests (each names the check).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// A certificate of the `ca_file` is not usable as a trust anchor.
    #[error("check {check}: ca-file {}: certificate #{index}: {source}", path.display())]
    CaCert {
        /// Check name.
        check: String,
        /// The file.
        path: PathBuf,
        /// 1-based position of the certificate in the file.
        index: usize,
        /// Why.
        source: rustls::Error,
    },
    /// rustls refused the client configuration.
    #[error("check {check}: TLS setup: {source}")]
    Tls {
        /// Check name.
        check: String,
        /// Why.
        source: rustls::Error,
    },
    /// `host` is neither a DNS name nor an IP address.
    #[error("check {check}: host {host:?} is not a DNS name or an IP address")]
    Host {
        /// Check name.
        check: String,
        /// The value.
        host: String,
    },
    /// `method` is not an HTTP method.
    #[error("check {check}: {method:?} is not an HTTP method")]
    Method {
        /// Check name.
        check: String,
        /// The value.
        method: String,
    },
    /// A header name or value cannot be sent.
    #[error("check {check}: header {name:?}: {msg}")]
    Header {
        /// Check name.
        check: String,
        /// Header name.
        name: String,
        /// Why.
        msg: String,
    },
    /// An exec check cannot be run as it says.
    #[error("check {check}: {msg}")]
    Exec {
        /// Check name.
        check: String,
        /// Why.
        msg: String,
    },
    /// `path` is not a request target (`/health`, `/status?full=1`).
    #[error("check {check}: path {path:?} is not a request path")]
    Path {
        /// Check name.
        check: String,
        /// The value.
        path: String,
    },
}

/// What every endpoint of a check shares.
#[derive(Debug)]
struct Shared {
    check: Arc<Check>,
    kind: KindShared,
}

/// What every endpoint of a check shares, by kind.
#[derive(Debug)]
enum KindShared {
    Tcp,
    /// The request, parsed once; the TLS configuration.
    Http(Box<http::RequestParts>),
    /// The question, encoded once.
    Dns(Box<dns::Query>),
    /// The program, the user it runs as, the runs under way.
    Exec(Box<exec::Program>),
    /// The check's ICMP sockets.
    Icmp(Box<icmp::Pinger>),
    /// The service asked about, the TLS configuration.
    Grpc(Box<grpc::Parts>),
}

/// What the prober of one endpoint keeps, by kind.
#[derive(Debug)]
enum KindTarget {
    /// The address, and the socket the last probe left (see [`sock`]).
    Tcp(Connector),
    /// The `Host`, the TLS server name, the kept connection.
    Http(http::Target),
    Dns,
    Exec,
    Icmp,
    /// The endpoint's channel (and connection).
    Grpc(grpc::Target),
}

/// Probes endpoints for one check; build once per check (and per reload) and
/// share: it holds the parsed request parts and the rustls configuration.
#[derive(Clone, Debug)]
pub struct CheckProber {
    shared: Arc<Shared>,
}

/// Probes one endpoint; build once per endpoint and reuse for every probe.
///
/// It holds an `Arc` of the check's shared state, the address it connects
/// to and, for HTTP(S), the `Host` value, the TLS server name and the open
/// connection of the last successful probe (when connections are reused).
/// Probes of one endpoint may overlap (fast confirmation of a frozen
/// backend): each takes the idle connection or opens its own.
#[derive(Debug)]
pub struct EndpointProber {
    shared: Arc<Shared>,
    /// Where to connect: the endpoint on the check's port, or the `target`.
    addr: SocketAddr,
    kind: KindTarget,
    /// Local address to connect from (`probe-source`), when of the same
    /// family as `addr`.
    source: Option<IpAddr>,
    /// The endpoint's zone and region (an exec check's environment).
    zone: String,
    region: String,
}

impl CheckProber {
    /// Prepares the probes of `check`: parses the method, path, host and
    /// headers and builds the TLS configuration.
    pub fn new(check: Arc<Check>) -> Result<CheckProber, ProbeError> {
        let kind = match &check.kind {
            CheckKind::Tcp => KindShared::Tcp,
            CheckKind::Http(spec) => {
                KindShared::Http(Box::new(http::RequestParts::new(&check.name, spec)?))
            }
            CheckKind::Dns(spec) => KindShared::Dns(Box::new(dns::Query::new(spec))),
            CheckKind::Exec(spec) => {
                KindShared::Exec(Box::new(exec::Program::new(&check.name, spec)?))
            }
            CheckKind::Icmp => KindShared::Icmp(Box::default()),
            CheckKind::Grpc(spec) => {
                KindShared::Grpc(Box::new(grpc::Parts::new(&check.name, spec)?))
            }
        };
        Ok(CheckProber {
            shared: Arc::new(Shared { check, kind }),
        })
    }

    /// The prober of one endpoint: connects to `addr` on the check's port, or
    /// to the check's `target` when set.
    pub fn for_endpoint(&self, addr: IpAddr) -> Result<EndpointProber, ProbeError> {
        self.for_endpoint_from(addr, None)
    }

    /// Like [`CheckProber::for_endpoint`], connecting from `source` (the
    /// `probe-source` setting) when it is of the endpoint's address family.
    pub fn for_endpoint_from(
        &self,
        addr: IpAddr,
        source: Option<IpAddr>,
    ) -> Result<EndpointProber, ProbeError> {
        let shared = &self.shared;
        let check = &shared.check;
        let connect = check.target.unwrap_or(SocketAddr::new(addr, check.port));
        let source = source.filter(|s| s.is_ipv4() == connect.is_ipv4());
        let kind = match &shared.kind {
            KindShared::Tcp => KindTarget::Tcp(Connector::new(connect, source, false)),
            KindShared::Dns(_) => KindTarget::Dns,
            KindShared::Exec(_) => KindTarget::Exec,
            KindShared::Icmp(_) => KindTarget::Icmp,
            KindShared::Grpc(_) => KindTarget::Grpc(grpc::Target::default()),
            KindShared::Http(parts) => {
                KindTarget::Http(http::Target::new(&check.name, parts, connect, source)?)
            }
        };
        Ok(EndpointProber {
            shared: shared.clone(),
            addr: connect,
            kind,
            source,
            zone: String::new(),
            region: String::new(),
        })
    }
}

impl EndpointProber {
    /// The endpoint's zone and region, for the programs of exec checks.
    pub fn in_region(mut self, zone: &str, region: &str) -> EndpointProber {
        self.zone = zone.to_string();
        self.region = region.to_string();
        self
    }

    /// Probes once. Never takes longer than the check's timeout (plus
    /// scheduling jitter): connect, TLS, request, response and body read are
    /// all under one deadline.
    pub async fn probe(&self) -> ProbeResult {
        // tokio's clock (the same as std's unless paused in a test), so the
        // deadline is counted from `start` without reading it again.
        let start = tokio::time::Instant::now();
        let timeout = self.shared.check.timeout;
        let (mut outcome, mut reason) =
            match tokio::time::timeout_at(start + timeout, self.run()).await {
                Ok(verdict) => verdict,
                Err(_) => (ProbeOutcome::Timeout, timeout_reason(timeout)),
            };
        let certificate_expiry = self.certificate().and_then(CertSeen::get);
        if outcome == ProbeOutcome::Success
            && let Some(fail) = self.shared.check.kind.tls().and_then(|t| t.fail_expiry)
            && let Some(why) = expiry_failure(certificate_expiry, fail, SystemTime::now())
        {
            (outcome, reason) = (ProbeOutcome::Tls, why);
        }
        ProbeResult {
            outcome,
            reason,
            latency: start.elapsed(),
            certificate_expiry,
        }
    }

    /// Where the endpoint's last leaf certificate is kept, for kinds over TLS.
    fn certificate(&self) -> Option<&CertSeen> {
        match &self.kind {
            KindTarget::Http(t) => Some(&t.certificate),
            KindTarget::Grpc(t) => Some(&t.certificate),
            _ => None,
        }
    }

    /// One probe of the endpoint's kind. Each kind's future is boxed on its
    /// own: inline, every probe (a TCP connect too) would carry the largest
    /// kind's state, 18 KB, allocated and freed per probe.
    async fn run(&self) -> (ProbeOutcome, String) {
        match (&self.shared.kind, &self.kind) {
            (KindShared::Http(parts), KindTarget::Http(target)) => {
                Box::pin(self.http(parts, target)).await
            }
            (KindShared::Dns(q), KindTarget::Dns) => Box::pin(self.dns(q)).await,
            (KindShared::Exec(p), KindTarget::Exec) => {
                Box::pin(self.exec(p, &self.zone, &self.region)).await
            }
            (KindShared::Icmp(p), KindTarget::Icmp) => Box::pin(self.icmp(p)).await,
            (KindShared::Grpc(p), KindTarget::Grpc(t)) => Box::pin(self.grpc(p, t)).await,
            (KindShared::Tcp, KindTarget::Tcp(t)) => self.tcp_connect(t).await,
            // Both are built from one check together: never apart. Were
            // they, the probe would say nothing about the backend.
            _ => (ProbeOutcome::Local, "prober kinds disagree".to_string()),
        }
    }

    /// A connect-only probe, on the socket the endpoint's last probe left
    /// when there is one. The handshake is the test; the connection is then
    /// reset (an RST as HAProxy closes its checks: no TIME_WAIT left behind,
    /// no FIN handshake for the backend) and the socket kept for the next
    /// probe. A refused socket is kept too; one cut short by the timeout is
    /// closed, and the next probe makes a new one.
    async fn tcp_connect(&self, connector: &Connector) -> (ProbeOutcome, String) {
        match connector.connect().await {
            Ok(socket) => {
                connector.done(socket);
                (ProbeOutcome::Success, "ok".to_string())
            }
            Err(e) => self.connect_failed(e),
        }
    }

    /// Why a connection could not be made, as a verdict.
    fn connect_failed(&self, e: Connect) -> (ProbeOutcome, String) {
        match e {
            Connect::Bind(source, e) => (
                ProbeOutcome::Connect,
                format!("cannot bind probe-source {source}: {e}"),
            ),
            Connect::Io(e) => classify(&e, &self.server_name()),
        }
    }

    /// Connects to the endpoint on tokio's socket (https and DNS over TCP).
    /// The socket is set to close with a reset
    /// (SO_LINGER 0), as HAProxy closes its checks: a probe leaves no
    /// TIME_WAIT behind and costs the backend no FIN handshake.
    async fn connect_tcp(&self) -> Result<TcpStream, (ProbeOutcome, String)> {
        let stream = connect_from(self.addr, self.source)
            .await
            .map_err(|e| self.connect_failed(e))?;
        // Cannot fail on a connected TCP socket; if it did, the probe would
        // merely close politely.
        let _ = stream.set_zero_linger();
        Ok(stream)
    }

    /// The name the certificate must match, for messages.
    fn server_name(&self) -> String {
        let host = match &self.shared.kind {
            KindShared::Http(h) => h.spec.host.as_ref(),
            _ => None,
        };
        match host {
            Some(host) => host.clone(),
            None => self.addr.ip().to_string(),
        }
    }
}

/// The notAfter of the leaf certificate an endpoint presented at its last
/// handshake: a kept connection keeps its certificate, a new one replaces
/// it. Shared with a gRPC channel's connector, which makes connections on
/// its own.
#[derive(Debug, Default)]
pub(super) struct CertSeen(AtomicU64);

impl CertSeen {
    /// Unix seconds; 0: none seen (no certificate expires in 1970).
    fn set(&self, not_after: Option<SystemTime>) {
        let secs = not_after
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        self.0.store(secs, Ordering::Relaxed);
    }

    fn get(&self) -> Option<SystemTime> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            secs => Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs)),
        }
    }
}

/// Why a probe that passed fails all the same: its certificate expires
/// within `fail-expiry` (or has expired, when it is not verified).
fn expiry_failure(
    not_after: Option<SystemTime>,
    fail: Duration,
    now: SystemTime,
) -> Option<String> {
    let not_after = not_after?;
    let limit = humantime::format_duration(fail);
    match not_after.duration_since(now) {
        Ok(left) if left >= fail => None,
        Ok(left) => Some(format!(
            "certificate expires in {} (fail-expiry {limit})",
            rough(left)
        )),
        Err(e) => Some(format!(
            "certificate expired {} ago (fail-expiry {limit})",
            rough(e.duration())
        )),
    }
}

/// A duration to the unit that matters: "2days 23h", "5h 12m", "40s".
pub fn rough(d: Duration) -> String {
    let secs = d.as_secs();
    let unit = match secs {
        86_400.. => 3_600,
        3_600.. => 60,
        _ => 1,
    };
    humantime::format_duration(Duration::from_secs(secs / unit * unit)).to_string()
}

/// Why a probe's TCP connection could not be made.
#[derive(Debug)]
pub(super) enum Connect {
    /// `probe-source` cannot be bound: a lasting reason (not an address of
    /// this host: a typo, a VIP now on another node), never a passing
    /// shortage, so a failure and not a local error that would freeze the
    /// verdict.
    Bind(IpAddr, std::io::Error),
    /// Making the socket, or connecting.
    Io(std::io::Error),
}

impl From<Connect> for std::io::Error {
    fn from(c: Connect) -> Self {
        match c {
            Connect::Bind(source, e) => {
                std::io::Error::new(e.kind(), format!("cannot bind probe-source {source}: {e}"))
            }
            Connect::Io(e) => e,
        }
    }
}

/// A TCP connection to `addr` on tokio's socket, from `source` when given
/// (https, grpc and DNS over TCP; tcp and plain http connect on the
/// endpoint's kept socket, [`sock`]).
pub(super) async fn connect_from(
    addr: SocketAddr,
    source: Option<IpAddr>,
) -> Result<TcpStream, Connect> {
    let Some(source) = source else {
        return TcpStream::connect(addr).await.map_err(Connect::Io);
    };
    let socket = if source.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(Connect::Io)?;
    socket
        .bind(SocketAddr::new(source, 0))
        .map_err(|e| Connect::Bind(source, e))?;
    socket.connect(addr).await.map_err(Connect::Io)
}

fn timeout_reason(timeout: Duration) -> String {
    format!("timeout after {}", humantime::format_duration(timeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_fails_inside_the_window_only() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let day = Duration::from_secs(86_400);
        let fail = 3 * day;
        assert_eq!(expiry_failure(None, fail, now), None);
        assert_eq!(expiry_failure(Some(now + 3 * day), fail, now), None);
        assert_eq!(
            expiry_failure(Some(now + day + Duration::from_secs(125)), fail, now).as_deref(),
            Some("certificate expires in 1day (fail-expiry 3days)")
        );
        assert_eq!(
            expiry_failure(Some(now + Duration::from_secs(3 * 3600 + 125)), fail, now).as_deref(),
            Some("certificate expires in 3h 2m (fail-expiry 3days)")
        );
        assert_eq!(
            expiry_failure(Some(now - Duration::from_secs(90)), fail, now).as_deref(),
            Some("certificate expired 1m 30s ago (fail-expiry 3days)")
        );
    }

    #[test]
    fn cert_seen_keeps_the_last_handshake() {
        let seen = CertSeen::default();
        assert_eq!(seen.get(), None);
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        seen.set(Some(t));
        assert_eq!(seen.get(), Some(t));
        seen.set(None);
        assert_eq!(seen.get(), None);
    }

    #[test]
    fn timeout_reason_uses_humantime() {
        assert_eq!(timeout_reason(Duration::from_secs(2)), "timeout after 2s");
        assert_eq!(
            timeout_reason(Duration::from_millis(300)),
            "timeout after 300ms"
        );
        assert_eq!(
            timeout_reason(Duration::from_millis(1500)),
            "timeout after 1s 500ms"
        );
    }
}

/// A check of `kind` on `port` for the tests: probed every second, a 2 s
/// timeout, fall and rise 1.
#[cfg(test)]
fn test_check(kind: CheckKind, port: u16) -> Arc<Check> {
    Arc::new(Check {
        name: "test".into(),
        kind,
        port,
        target: None,
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(2),
        recheck: None,
        fall: 1,
        rise: 1,
        probers: None,
    })
}

#[cfg(test)]
mod socket_tests {
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use super::*;

    fn tcp_prober(addr: SocketAddr, source: Option<IpAddr>) -> EndpointProber {
        let check = test_check(CheckKind::Tcp, addr.port());
        CheckProber::new(check)
            .unwrap()
            .for_endpoint_from(addr.ip(), source)
            .unwrap()
    }

    /// The descriptor of the socket the endpoint keeps, if any.
    fn kept_fd(p: &EndpointProber) -> Option<i32> {
        let KindTarget::Tcp(c) = &p.kind else {
            panic!("not a tcp prober")
        };
        c.spare_fd()
    }

    /// Accepts `n` connections on `listener`: each one's peer and what its
    /// first read said.
    async fn accept(listener: &TcpListener, n: usize) -> Vec<(SocketAddr, std::io::ErrorKind)> {
        let mut seen = Vec::new();
        for _ in 0..n {
            let (mut s, peer) = listener.accept().await.unwrap();
            let mut byte = [0u8; 1];
            let read = match s.read(&mut byte).await {
                Ok(0) => std::io::ErrorKind::UnexpectedEof,
                Ok(_) => std::io::ErrorKind::InvalidData,
                Err(e) => e.kind(),
            };
            seen.push((peer, read));
        }
        seen
    }

    fn assert_ok(r: &ProbeResult) {
        assert_eq!(
            (r.outcome, r.reason.as_str()),
            (ProbeOutcome::Success, "ok")
        );
    }

    /// One socket serves every probe of an endpoint, each probe a new
    /// connection (from `source` when given) that ends with a reset; a
    /// refused probe is a refusal on a socket that connected before (no
    /// error of its last connection is left to be taken for this one's),
    /// and the same socket connects again once the backend is back.
    async fn one_socket_per_endpoint(listen: &str, source: Option<IpAddr>) {
        let listener = TcpListener::bind(listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let p = tcp_prober(addr, source);
        assert_eq!(kept_fd(&p), None);
        let mut fds = Vec::new();
        for _ in 0..3 {
            assert_ok(&p.probe().await);
            fds.push(kept_fd(&p).expect("a socket is kept"));
        }
        assert!(fds.iter().all(|fd| *fd == fds[0]), "one socket: {fds:?}");
        let seen = accept(&listener, 3).await;
        let mut ports: Vec<u16> = seen.iter().map(|(peer, _)| peer.port()).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 3, "three connections: {seen:?}");
        for (peer, read) in &seen {
            assert_eq!(*read, std::io::ErrorKind::ConnectionReset, "{seen:?}");
            if let Some(source) = source {
                assert_eq!(peer.ip(), source, "{seen:?}");
            }
        }

        drop(listener);
        let r = p.probe().await;
        assert_eq!(
            (r.outcome, r.reason.as_str()),
            (ProbeOutcome::Refused, "connection refused")
        );
        assert_eq!(kept_fd(&p), Some(fds[0]), "a refused socket is kept");

        let listener = TcpListener::bind(addr).await.unwrap();
        assert_ok(&p.probe().await);
        assert_eq!(kept_fd(&p), Some(fds[0]));
        let (peer, read) = accept(&listener, 1).await[0];
        assert_eq!(read, std::io::ErrorKind::ConnectionReset);
        if let Some(source) = source {
            assert_eq!(peer.ip(), source);
        }
    }

    #[tokio::test]
    async fn tcp_probes_keep_one_socket_and_reset_each_connection() {
        one_socket_per_endpoint("127.0.0.1:0", None).await;
        one_socket_per_endpoint("[::1]:0", None).await;
    }

    /// A kept socket keeps its `probe-source` from connection to connection.
    #[tokio::test]
    async fn a_kept_socket_connects_from_the_probe_source() {
        one_socket_per_endpoint("127.0.0.1:0", Some("127.0.0.2".parse().unwrap())).await;
    }

    /// HTTP with a new connection per probe also keeps its socket: each
    /// probe a new connection, ended with a reset after the answer.
    #[tokio::test]
    async fn http_without_reuse_keeps_its_socket_between_connections() {
        use tokio::io::AsyncWriteExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut spec = crate::model::HttpCheck::new(None);
        spec.reuse_connection = false;
        let check = test_check(CheckKind::Http(spec), addr.port());
        let p = CheckProber::new(check)
            .unwrap()
            .for_endpoint(addr.ip())
            .unwrap();
        let spare = |p: &EndpointProber| match &p.kind {
            KindTarget::Http(t) => t.spare_fd(),
            _ => panic!("not an http prober"),
        };
        let server = tokio::spawn(async move {
            let mut peers = Vec::new();
            for _ in 0..3 {
                let (mut s, peer) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.unwrap();
                assert!(buf[..n].ends_with(b"\r\n\r\n"), "one request");
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await
                    .unwrap();
                let after = s.read(&mut buf).await.map_err(|e| e.kind());
                peers.push((peer.port(), after));
            }
            peers
        });
        let mut fds = Vec::new();
        for _ in 0..3 {
            let r = p.probe().await;
            assert_eq!(
                (r.outcome, r.reason.as_str()),
                (ProbeOutcome::Success, "ok (200)")
            );
            fds.push(spare(&p).expect("the socket is kept"));
        }
        assert!(fds.iter().all(|fd| *fd == fds[0]), "one socket: {fds:?}");
        let peers = server.await.unwrap();
        let mut ports: Vec<u16> = peers.iter().map(|(port, _)| *port).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 3, "three connections: {peers:?}");
        assert!(
            peers
                .iter()
                .all(|(_, after)| *after == Err(std::io::ErrorKind::ConnectionReset)),
            "each ended with a reset: {peers:?}"
        );
    }

    /// On a multi-threaded runtime the task draining the set runs beside
    /// the probes: 2,000 probes of 50 endpoints at once, none may miss its
    /// wake-up (which would be a timeout).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_probe_misses_its_event_on_a_multi_threaded_runtime() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepting = tokio::spawn(async move {
            loop {
                let _ = listener.accept().await;
            }
        });
        let mut probers = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let p = tcp_prober(addr, None);
            probers.spawn(async move {
                let mut failed = Vec::new();
                for _ in 0..40 {
                    let r = p.probe().await;
                    if !r.ok() {
                        failed.push(r.reason);
                    }
                }
                failed
            });
        }
        while let Some(failed) = probers.join_next().await {
            assert_eq!(failed.unwrap(), Vec::<String>::new());
        }
        accepting.abort();
    }

    /// Overlapping HTTP probes with connections kept, some answered with
    /// `Connection: close`, leave the endpoint one descriptor at most, as
    /// the budget counts: an idle connection or a spare socket, never both.
    #[tokio::test]
    async fn overlapping_http_probes_leave_one_descriptor() {
        use tokio::io::AsyncWriteExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answered = Arc::new(AtomicU64::new(0));
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let answered = answered.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        // Every other answer ends its connection.
                        let close = answered.fetch_add(1, Ordering::Relaxed) % 2 == 1;
                        let answer: &[u8] = if close {
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                        } else {
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                        };
                        if s.write_all(answer).await.is_err() || close {
                            return;
                        }
                    }
                });
            }
        });
        let p = CheckProber::new(test_check(
            CheckKind::Http(crate::model::HttpCheck::new(None)),
            addr.port(),
        ))
        .unwrap()
        .for_endpoint(addr.ip())
        .unwrap();
        let KindTarget::Http(target) = &p.kind else {
            panic!("not an http prober")
        };
        for _ in 0..10 {
            let (a, b, c) = tokio::join!(p.probe(), p.probe(), p.probe());
            for r in [a, b, c] {
                assert_eq!(
                    (r.outcome, r.reason.as_str()),
                    (ProbeOutcome::Success, "ok (200)")
                );
            }
            assert!(
                !(target.has_idle() && target.spare_fd().is_some()),
                "an idle connection and a spare socket"
            );
        }
    }

    /// Probes of one endpoint that overlap (rechecks confirming a
    /// transition) each get a socket, and one socket is kept.
    #[tokio::test]
    async fn overlapping_probes_each_get_a_socket_and_one_is_kept() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let p = tcp_prober(addr, None);
        let (a, b, c) = tokio::join!(p.probe(), p.probe(), p.probe());
        for r in [a, b, c] {
            assert_ok(&r);
        }
        assert!(kept_fd(&p).is_some());
        assert_eq!(accept(&listener, 3).await.len(), 3);
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    /// A probe's future is allocated for every probe: a TCP check's must
    /// stay small enough for the allocator's per-thread cache (1,032
    /// bytes), not carry the largest kind's state (it was 18 KB).
    #[test]
    fn a_tcp_probe_carries_no_other_kinds_state() {
        let check = test_check(CheckKind::Tcp, 1);
        let p = CheckProber::new(check).unwrap();
        let ep = p.for_endpoint("127.0.0.1".parse().unwrap()).unwrap();
        let size = std::mem::size_of_val(&ep.probe());
        assert!(size <= 1024, "a tcp probe's future is {size} bytes");
    }

    /// The same for a plain HTTP probe's own future, boxed per probe: it
    /// must not carry the TLS handshake's (3 KB).
    #[test]
    fn an_http_probe_carries_no_tls_handshake() {
        let check = test_check(CheckKind::Http(crate::model::HttpCheck::new(None)), 1);
        let p = CheckProber::new(check).unwrap();
        let ep = p.for_endpoint("127.0.0.1".parse().unwrap()).unwrap();
        let (KindShared::Http(parts), KindTarget::Http(target)) = (&ep.shared.kind, &ep.kind)
        else {
            panic!("not an http prober")
        };
        let size = std::mem::size_of_val(&ep.http(parts, target));
        assert!(size <= 1024, "an http probe's future is {size} bytes");
    }
}
