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
//! HTTP(S) probes speak HTTP/1.1 through hyper's connection API over our own
//! socket (and tokio-rustls): no pool, connector, URL or task per probe. A
//! successful probe's connection is kept for the next probe of the same
//! endpoint unless the check says `reuse-connection = false`; most of a
//! fresh-connection probe's cost is the kernel's TCP handshake and teardown
//! on both sides (bench/probe-scale.sh, BENCHMARKS.md).
//!
//! Uses only the model ([`Check`]) and the outcome classes of [`super::state`].

use std::error::Error as StdError;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::{Body, Bytes, Incoming};
use hyper::client::conn::http1;
use hyper::header::{ACCEPT, CONNECTION, HOST, HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

use super::ProbeOutcome;
use crate::model::{Check, CheckKind, StatusRange};

/// At most this much of a body is read when looking for `expect_body`, as
/// Route 53 does: a health page that hides its marker deeper is a
/// misconfiguration, and a huge or endless body must not hold the prober.
const BODY_LIMIT: usize = 5120;

/// Sent on every HTTP probe so backends can tell probes from users in their
/// logs; a `User-Agent` in the check's headers replaces it.
const USER_AGENT_VALUE: &str = concat!("gslb-health-check/", env!("CARGO_PKG_VERSION"));

/// Result of one probe.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeResult {
    /// How the probe ended.
    pub outcome: ProbeOutcome,
    /// Why, for operators: `"ok (200)"`, `"status 503"`, `"timeout after 2s"`.
    pub reason: String,
    /// Wall time of the whole probe.
    pub latency: Duration,
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
    /// The `ca_file` could not be read.
    #[error("check {check}: cannot read ca-file {}: {source}", path.display())]
    CaFileRead {
        /// Check name.
        check: String,
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The `ca_file` is not valid PEM.
    #[error("check {check}: ca-file {}: {source}", path.display())]
    CaFilePem {
        /// Check name.
        check: String,
        /// The file.
        path: PathBuf,
        /// Why.
        source: rustls_pki_types::pem::Error,
    },
    /// The `ca_file` holds no certificate: every probe would fail, which is
    /// surely not what was meant.
    #[error("check {check}: ca-file {} holds no PEM certificate", path.display())]
    CaFileEmpty {
        /// Check name.
        check: String,
        /// The file.
        path: PathBuf,
    },
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
    /// `path` is not a request target (`/health`, `/status?full=1`).
    #[error("check {check}: path {path:?} is not a request path")]
    Path {
        /// Check name.
        check: String,
        /// The value.
        path: String,
    },
}

/// A connection is reused for at most this long, then replaced by a new one
/// (for HTTPS, a new handshake that verifies the certificate again): an
/// expired or replaced certificate, or a listener that stopped accepting, is
/// seen within a minute even while the server keeps the old connection open.
const MAX_CONNECTION_AGE: Duration = Duration::from_secs(60);

/// The server closed the connection before a whole response head arrived
/// (a close during the body is "connection closed mid-response").
const CLOSED_BEFORE_RESPONSE: &str = "connection closed before the response";

/// At most this many TLS connections are set up at once, process-wide.
///
/// A full HTTPS probe costs about 0.4 ms of CPU, nearly all of it the
/// handshake (bench/probe-scale.sh, KIND=https-fresh). When more set-ups are
/// due than the CPU can do (10,000 HTTPS endpoints starting within a 1 s
/// interval), handshakes that all progress together all finish late and
/// time out, and the next probe starts them again: the work never completes
/// and every endpoint goes down. Admitted a slot at a time, they complete
/// at the CPU's rate. 128 at once finish well inside [`TLS_SETUP_SLOT_HOLD`]
/// even when the CPU is the limit (128 x 0.4 ms on two cores is 26 ms; 51
/// with the backend's side on the same cores, as in the benchmark). Over a
/// real network the slots turn over at least every 100 ms, so at least
/// 1,280 set-ups a second are admitted whatever the round trip.
static TLS_SETUPS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(128);

/// A set-up gives its slot back after this long even if it has not ended, so
/// endpoints that hang in the handshake (a frozen or black-holed region)
/// hold slots for 100 ms, not for a whole timeout: every slot turns over at
/// least every 100 ms, and a healthy endpoint is never queued behind them
/// for long.
const TLS_SETUP_SLOT_HOLD: Duration = Duration::from_millis(100);

/// The I/O under an HTTP probe: plain TCP or TLS over TCP.
type Io = TokioIo<Either<TcpStream, TlsStream<TcpStream>>>;

/// What every endpoint of a check shares.
#[derive(Debug)]
struct Shared {
    check: Arc<Check>,
    method: Method,
    /// Request target in origin form (`/health?full=1`).
    path: Uri,
    /// Sent with every request after `Host`: `User-Agent`, `Accept`,
    /// `Connection: close` when connections are not reused, then the check's
    /// extra headers (which may replace any of them, `Host` included).
    headers: HeaderMap,
    /// `Host` is among the check's extra headers: no derived one is sent.
    host_configured: bool,
    /// HTTPS: the check's TLS configuration.
    tls: Option<Arc<ClientConfig>>,
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
    /// HTTP(S) only.
    http: Option<HttpTarget>,
    /// Local address to connect from (`probe-source`), when of the same
    /// family as `addr`.
    source: Option<IpAddr>,
}

#[derive(Debug)]
struct HttpTarget {
    /// `Host` header, as a browser would derive it from the URL.
    host: HeaderValue,
    /// TLS SNI and the name the certificate must match: the check's `host`,
    /// else the address connected to.
    server_name: ServerName<'static>,
    /// The connection of the last successful probe, idle (reuse only).
    /// Boxed: a TLS stream is over a kilobyte inline, which every endpoint
    /// prober (TCP checks included) would carry, idle connection or not.
    idle: Mutex<Option<Box<Idle>>>,
}

/// The open connection of the last successful probe. Only the socket (and
/// TLS session) is kept: each probe runs hyper's HTTP/1.1 state machine on
/// it afresh, so an idle endpoint holds no HTTP buffers.
struct Idle {
    io: Io,
    /// Tokio's clock, so that tests can age a connection.
    opened: tokio::time::Instant,
}

impl std::fmt::Debug for Idle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idle")
            .field("opened", &self.opened)
            .finish()
    }
}

/// How one request on one connection went.
struct Exchange {
    verdict: (ProbeOutcome, String),
    /// It failed before any response arrived: on a reused connection the
    /// server may just have closed it while idle, so a fresh connection
    /// decides instead.
    before_response: bool,
}

impl CheckProber {
    /// Prepares the probes of `check`: parses the method, path, host and
    /// headers and builds the TLS configuration (reading `ca_file`, a small
    /// blocking read done once per check and reload).
    pub fn new(check: Arc<Check>) -> Result<CheckProber, ProbeError> {
        let name = || check.name.clone();
        let method =
            Method::from_bytes(check.method.as_bytes()).map_err(|_| ProbeError::Method {
                check: name(),
                method: check.method.clone(),
            })?;
        let path = Uri::try_from(check.path.as_str())
            .ok()
            .filter(|u| u.scheme().is_none() && u.authority().is_none())
            .ok_or_else(|| ProbeError::Path {
                check: name(),
                path: check.path.clone(),
            })?;
        if let Some(host) = &check.host
            && (ServerName::try_from(host.as_str()).is_err()
                || HeaderValue::from_str(host).is_err())
        {
            return Err(ProbeError::Host {
                check: name(),
                host: host.clone(),
            });
        }
        let mut headers = HeaderMap::new();
        headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
        if !check.reuse_connection {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        for (k, v) in &check.headers {
            let hname = HeaderName::from_bytes(k.as_bytes()).map_err(|e| ProbeError::Header {
                check: name(),
                name: k.clone(),
                msg: e.to_string(),
            })?;
            let hvalue = HeaderValue::from_str(v).map_err(|e| ProbeError::Header {
                check: name(),
                name: k.clone(),
                msg: e.to_string(),
            })?;
            // insert, not append: a configured header replaces a default one.
            headers.insert(hname, hvalue);
        }
        let host_configured = headers.contains_key(HOST);
        let tls = match check.kind {
            CheckKind::Https => Some(Arc::new(tls_config(&check)?)),
            CheckKind::Http | CheckKind::Tcp => None,
        };
        Ok(CheckProber {
            shared: Arc::new(Shared {
                check,
                method,
                path,
                headers,
                host_configured,
                tls,
            }),
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
        let http = match check.kind {
            CheckKind::Tcp => None,
            CheckKind::Http | CheckKind::Https => {
                let https = check.kind == CheckKind::Https;
                let name = check
                    .host
                    .clone()
                    .unwrap_or_else(|| connect.ip().to_string());
                let host = HeaderValue::from_str(&host_header(&name, connect.port(), https))
                    .map_err(|_| ProbeError::Host {
                        check: check.name.clone(),
                        host: name.clone(),
                    })?;
                let server_name =
                    ServerName::try_from(name.clone()).map_err(|_| ProbeError::Host {
                        check: check.name.clone(),
                        host: name,
                    })?;
                Some(HttpTarget {
                    host,
                    server_name,
                    idle: Mutex::new(None),
                })
            }
        };
        Ok(EndpointProber {
            shared: shared.clone(),
            addr: connect,
            http,
            source: source.filter(|s| s.is_ipv4() == connect.is_ipv4()),
        })
    }
}

impl EndpointProber {
    /// Probes once. Never takes longer than the check's timeout (plus
    /// scheduling jitter): connect, TLS, request, response and body read are
    /// all under one deadline.
    pub async fn probe(&self) -> ProbeResult {
        let start = Instant::now();
        let timeout = self.shared.check.timeout;
        let (outcome, reason) = match tokio::time::timeout(timeout, self.run()).await {
            Ok(verdict) => verdict,
            Err(_) => (ProbeOutcome::Timeout, timeout_reason(timeout)),
        };
        ProbeResult {
            outcome,
            reason,
            latency: start.elapsed(),
        }
    }

    async fn run(&self) -> (ProbeOutcome, String) {
        match &self.http {
            None => match self.connect_tcp().await {
                // Dropping the stream closes it (with a reset, see
                // `connect_tcp`): the handshake was the test.
                Ok(_stream) => (ProbeOutcome::Success, "ok".to_string()),
                Err(verdict) => verdict,
            },
            Some(target) => self.http(target).await,
        }
    }

    /// Connects to the endpoint. The socket is set to close with a reset
    /// (SO_LINGER 0), as HAProxy closes its checks: a probe leaves no
    /// TIME_WAIT behind and costs the backend no FIN handshake.
    async fn connect_tcp(&self) -> Result<TcpStream, (ProbeOutcome, String)> {
        let stream = match self.source {
            None => TcpStream::connect(self.addr).await,
            Some(source) => {
                let socket = if source.is_ipv4() {
                    tokio::net::TcpSocket::new_v4()
                } else {
                    tokio::net::TcpSocket::new_v6()
                };
                match socket.and_then(|s| s.bind(SocketAddr::new(source, 0)).map(|()| s)) {
                    Ok(s) => s.connect(self.addr).await,
                    Err(e) => Err(e),
                }
            }
        }
        .map_err(|e| classify(&e, &self.server_name()))?;
        // Cannot fail on a connected TCP socket; if it did, the probe would
        // merely close politely.
        let _ = stream.set_zero_linger();
        Ok(stream)
    }

    /// Resolves when the backend closes the connection kept from the last
    /// probe (a killed backend closes every connection it holds, a whole
    /// interval before the next probe would notice), so the scheduler can
    /// probe at once. Pending while no connection is kept. Cancel-safe:
    /// dropped, it puts the connection back.
    pub async fn idle_closed(&self) {
        let Some(target) = &self.http else {
            return std::future::pending().await;
        };
        let taken = target
            .idle
            .lock()
            .expect("idle connection lock poisoned")
            .take();
        let Some(conn) = taken else {
            return std::future::pending().await;
        };
        struct PutBack<'a> {
            slot: &'a Mutex<Option<Box<Idle>>>,
            conn: Option<Box<Idle>>,
        }
        impl Drop for PutBack<'_> {
            fn drop(&mut self) {
                if let Some(c) = self.conn.take() {
                    let mut slot = self.slot.lock().expect("idle connection lock poisoned");
                    // A probe that ran meanwhile keeps its own connection.
                    if slot.is_none() {
                        *slot = Some(c);
                    }
                }
            }
        }
        let mut guard = PutBack {
            slot: &target.idle,
            conn: Some(conn),
        };
        loop {
            let tcp: &TcpStream = match guard.conn.as_ref().map(|c| c.io.inner()) {
                Some(Either::Left(t)) => t,
                Some(Either::Right(tls)) => tls.get_ref().0,
                None => return,
            };
            if tcp.readable().await.is_err() {
                guard.conn = None;
                return;
            }
            // End of stream, an error, or bytes nobody asked for (a 408, a
            // TLS alert): either way it will not serve the next probe.
            let mut byte = 0u8;
            // SAFETY: a valid one-byte buffer and an open socket.
            let n = unsafe {
                libc::recv(
                    std::os::fd::AsRawFd::as_raw_fd(tcp),
                    (&raw mut byte).cast(),
                    1,
                    libc::MSG_PEEK | libc::MSG_DONTWAIT,
                )
            };
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock {
                continue; // spurious readiness
            }
            guard.conn = None;
            return;
        }
    }

    async fn http(&self, target: &HttpTarget) -> (ProbeOutcome, String) {
        let check = &self.shared.check;
        // With an interval of a minute or more a kept connection would be
        // too old to use by the next probe: it would only hold a socket.
        let reuse = check.reuse_connection && check.interval < MAX_CONNECTION_AGE;
        let idle = || target.idle.lock().expect("idle connection lock poisoned");
        if reuse {
            let reused = idle().take();
            if let Some(conn) = reused.filter(|c| c.opened.elapsed() < MAX_CONNECTION_AGE) {
                let (done, io) = self.exchange(conn.io, target, true).await;
                if !done.before_response {
                    if let Some(io) = io {
                        *idle() = Some(Box::new(Idle { io, ..*conn }));
                    }
                    return done.verdict;
                }
                // Closed while idle (or failing before it answered): a new
                // connection decides, within the same deadline.
            }
        }
        let opened = tokio::time::Instant::now();
        let io = match self.connect_http(target).await {
            Ok(io) => io,
            Err(verdict) => return verdict,
        };
        let (done, io) = self.exchange(io, target, false).await;
        if let Some(io) = io.filter(|_| reuse) {
            *idle() = Some(Box::new(Idle { io, opened }));
        }
        done.verdict
    }

    async fn connect_http(&self, target: &HttpTarget) -> Result<Io, (ProbeOutcome, String)> {
        // A kept connection's next request must not wait for Nagle.
        let connect = async {
            let tcp = self.connect_tcp().await?;
            let _ = tcp.set_nodelay(true);
            Ok(tcp)
        };
        let Some(tls) = &self.shared.tls else {
            return Ok(TokioIo::new(Either::Left(connect.await?)));
        };
        let setup = async {
            let tcp = connect.await?;
            TlsConnector::from(tls.clone())
                .connect(target.server_name.clone(), tcp)
                .await
                .map_err(|e| classify(&e, &self.server_name()))
        };
        tokio::pin!(setup);
        // A slot is taken before connecting, so that no backend holds a
        // connection whose handshake waits in our queue, and given back
        // when the set-up ends or after TLS_SETUP_SLOT_HOLD, whichever
        // comes first.
        let mut slot = Some(
            TLS_SETUPS
                .acquire()
                .await
                .expect("the TLS set-up semaphore is never closed"),
        );
        let stream = tokio::select! {
            done = &mut setup => done,
            () = tokio::time::sleep(TLS_SETUP_SLOT_HOLD) => {
                slot.take();
                setup.await
            }
        };
        Ok(TokioIo::new(Either::Right(stream?)))
    }

    /// One request on `io` and its verdict, with the connection driven
    /// alongside; gives `io` back when it is idle, open and may serve the
    /// next probe. `reused`: `io` served an earlier probe.
    async fn exchange(&self, io: Io, target: &HttpTarget, reused: bool) -> (Exchange, Option<Io>) {
        let (mut sender, mut conn) = match http1::handshake(io).await {
            Ok(pair) => pair,
            Err(e) => {
                let verdict = classify(&e, &self.server_name());
                let failed = Exchange {
                    verdict,
                    before_response: true,
                };
                return (failed, None);
            }
        };
        let sender = &mut sender;
        let check = &self.shared.check;
        let request = self.request(target);
        let work = async {
            sender.ready().await.map_err(|e| (Some(e), true))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| (Some(e), true))?;
            let status = response.status().as_u16();
            if reused && status == 408 {
                // A server closing an idle connection may say so with a
                // 408 that crosses our request (Go's client knows this
                // too): not an answer to it.
                return Err((None, true));
            }
            let mut body = response.into_body();
            if !status_matches(&check.expect_status, status) {
                return Ok(((ProbeOutcome::Status, format!("status {status}")), None));
            }
            if let Some(needle) = &check.expect_body {
                let mut scan = BodyScan::new(needle.as_bytes());
                loop {
                    match body.frame().await {
                        Some(Ok(frame)) => match frame.data_ref().map(|d| scan.push(d)) {
                            Some(Scan::Found) => break,
                            Some(Scan::Exhausted) => {
                                return Ok(((ProbeOutcome::Body, body_reason(needle)), None));
                            }
                            Some(Scan::More) | None => {}
                        },
                        None => return Ok(((ProbeOutcome::Body, body_reason(needle)), None)),
                        Some(Err(e)) => return Err((Some(e), false)),
                    }
                }
            }
            Ok((
                (ProbeOutcome::Success, format!("ok ({status})")),
                Some(body),
            ))
        };
        tokio::pin!(work);
        let mut conn_ended = false;
        let mut conn_error = None;
        let outcome = tokio::select! {
            biased;
            out = &mut work => Some(out),
            ended = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => {
                conn_ended = true;
                conn_error = ended.err();
                // The connection is over: the request has been handed its
                // response or error by now, or never will be (an idle
                // connection the server closed).
                match std::future::poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx))).await {
                    Poll::Ready(out) => Some(out),
                    Poll::Pending => None,
                }
            }
        };
        let failed = |err: Option<&hyper::Error>, before_response| {
            // When the connection failed, its error is the telling one (a
            // body only hears "connection error").
            let verdict = match conn_error.as_ref().or(err) {
                Some(err) => classify(err, &self.server_name()),
                None => (ProbeOutcome::Reset, CLOSED_BEFORE_RESPONSE.into()),
            };
            Exchange {
                verdict,
                before_response,
            }
        };
        match outcome {
            Some(Ok((verdict, body))) => {
                let keep = match body {
                    Some(body) if !conn_ended => drain_ready(&mut conn, body).await,
                    _ => false,
                };
                // Bytes beyond the response would belong to no request.
                let io = keep
                    .then(|| conn.into_parts())
                    .filter(|parts| parts.read_buf.is_empty())
                    .map(|parts| parts.io);
                let done = Exchange {
                    verdict,
                    before_response: false,
                };
                (done, io)
            }
            Some(Err((err, before_response))) => (failed(err.as_ref(), before_response), None),
            None => (failed(None, true), None),
        }
    }

    fn request(&self, target: &HttpTarget) -> Request<Empty<Bytes>> {
        let shared = &self.shared;
        let mut request = Request::new(Empty::new());
        *request.method_mut() = shared.method.clone();
        *request.uri_mut() = shared.path.clone();
        let headers = request.headers_mut();
        headers.reserve(shared.headers.len() + 1);
        if !shared.host_configured {
            headers.insert(HOST, target.host.clone());
        }
        headers.extend(shared.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
        request
    }

    /// The name the certificate must match, for messages.
    fn server_name(&self) -> String {
        match &self.shared.check.host {
            Some(host) => host.clone(),
            None => self.addr.ip().to_string(),
        }
    }
}

/// Reads the rest of a successful response's body as far as it has already
/// arrived, without waiting: true when it ended there (at most
/// [`BODY_LIMIT`] more bytes) and the connection is left idle and open, so
/// it can serve the next probe. A body still streaming, a large one, or a
/// server that announced `Connection: close` leaves it false.
async fn drain_ready(conn: &mut http1::Connection<Io, Empty<Bytes>>, mut body: Incoming) -> bool {
    std::future::poll_fn(|cx| {
        let mut read = 0;
        let mut polled_conn = false;
        loop {
            match Pin::new(&mut body).poll_frame(cx) {
                Poll::Ready(None) => break,
                Poll::Ready(Some(Ok(frame))) => {
                    read += frame.data_ref().map_or(0, Bytes::len);
                    if read > BODY_LIMIT {
                        return Poll::Ready(false);
                    }
                    polled_conn = false;
                }
                Poll::Ready(Some(Err(_))) => return Poll::Ready(false),
                // Nothing more has arrived since the connection last read.
                Poll::Pending if polled_conn => return Poll::Ready(false),
                // Let the connection read what the socket holds.
                Poll::Pending => {
                    if conn.poll_without_shutdown(cx).is_ready() {
                        return Poll::Ready(false);
                    }
                    polled_conn = true;
                }
            }
        }
        // The response is complete; the connection settles to idle, or ends
        // here if either side asked to close.
        Poll::Ready(conn.poll_without_shutdown(cx).is_pending())
    })
    .await
}

/// The rustls configuration of a check: ring, TLS 1.2 and 1.3, web roots or
/// the check's CA file (or no verification), no session resumption.
fn tls_config(check: &Check) -> Result<ClientConfig, ProbeError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ProbeError::Tls {
            check: check.name.clone(),
            source: e,
        })?;
    let mut config = match (check.kind, check.tls_verify, &check.ca_file) {
        // Plain HTTP never uses it; an empty store costs nothing.
        (CheckKind::Http | CheckKind::Tcp, _, _) => builder
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth(),
        (CheckKind::Https, false, _) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert { algorithms }))
            .with_no_client_auth(),
        (CheckKind::Https, true, Some(path)) => builder
            .with_root_certificates(load_ca_file(check, path)?)
            .with_no_client_auth(),
        (CheckKind::Https, true, None) => {
            let roots = RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    // A resumed session skips certificate verification: a certificate that
    // expired or was replaced since the last probe must be seen by this one.
    config.resumption = Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn load_ca_file(check: &Check, path: &Path) -> Result<RootCertStore, ProbeError> {
    let pem = std::fs::read(path).map_err(|e| ProbeError::CaFileRead {
        check: check.name.clone(),
        path: path.to_owned(),
        source: e,
    })?;
    let mut roots = RootCertStore::empty();
    for (i, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let cert = cert.map_err(|e| ProbeError::CaFilePem {
            check: check.name.clone(),
            path: path.to_owned(),
            source: e,
        })?;
        roots.add(cert).map_err(|e| ProbeError::CaCert {
            check: check.name.clone(),
            path: path.to_owned(),
            index: i + 1,
            source: e,
        })?;
    }
    if roots.is_empty() {
        return Err(ProbeError::CaFileEmpty {
            check: check.name.clone(),
            path: path.to_owned(),
        });
    }
    Ok(roots)
}

/// `tls_verify = false`: any certificate for any name is accepted, but the
/// handshake signatures are still checked (they cost nothing and keep the
/// handshake itself honest).
#[derive(Debug)]
struct AcceptAnyCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The Host header hyper would derive from a URL with this host and port.
fn host_header(host: &str, port: u16, https: bool) -> String {
    let default_port = if https { 443 } else { 80 };
    let host = match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => host.to_string(),
    };
    if port == default_port {
        host
    } else {
        format!("{host}:{port}")
    }
}

/// Whether `status` is accepted; an empty list means the config default,
/// 200-399.
fn status_matches(expect: &[StatusRange], status: u16) -> bool {
    if expect.is_empty() {
        return (200..=399).contains(&status);
    }
    expect.iter().any(|r| (r.lo..=r.hi).contains(&status))
}

fn timeout_reason(timeout: Duration) -> String {
    format!("timeout after {}", humantime::format_duration(timeout))
}

fn body_reason(needle: &str) -> String {
    format!("body did not contain {needle:?}")
}

/// What a body chunk told the scan.
#[derive(Debug, PartialEq, Eq)]
enum Scan {
    /// The needle is in the first [`BODY_LIMIT`] bytes: stop reading.
    Found,
    /// [`BODY_LIMIT`] bytes read without it: stop reading.
    Exhausted,
    /// Not yet: read on.
    More,
}

/// Looks for a byte string in the first [`BODY_LIMIT`] bytes of a body
/// delivered in chunks (bodies need not be UTF-8; a match may span chunks).
struct BodyScan<'a> {
    needle: &'a [u8],
    seen: Vec<u8>,
}

impl<'a> BodyScan<'a> {
    fn new(needle: &'a [u8]) -> Self {
        BodyScan {
            needle,
            seen: Vec::new(),
        }
    }

    fn push(&mut self, chunk: &[u8]) -> Scan {
        let take = chunk.len().min(BODY_LIMIT - self.seen.len());
        // Only the new bytes and the tail a match could start in are searched.
        let from = self
            .seen
            .len()
            .saturating_sub(self.needle.len().saturating_sub(1));
        self.seen.extend_from_slice(&chunk[..take]);
        if self.needle.is_empty()
            || self.seen[from..]
                .windows(self.needle.len())
                .any(|w| w == self.needle)
        {
            Scan::Found
        } else if self.seen.len() >= BODY_LIMIT {
            Scan::Exhausted
        } else {
            Scan::More
        }
    }
}

/// Turns a failed connect, handshake, request or body read into an outcome
/// and a reason, from the most telling error in the chain: an I/O error kind,
/// a rustls error, or hyper's message for a malformed or truncated response
/// (some kinds have no public predicate, so all are known by their text,
/// which the real-socket tests in tests/it/probes.rs pin).
/// `server_name` is the name the certificate was checked against.
fn classify(err: &(dyn StdError + 'static), server_name: &str) -> (ProbeOutcome, String) {
    let mut innermost = err;
    let mut connect_error: Option<String> = None;
    let mut cur = Some(err);
    while let Some(e) = cur {
        innermost = e;
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return (ProbeOutcome::Tls, tls_reason(tls, server_name));
        }
        if let Some(io_err) = e.downcast_ref::<io::Error>() {
            if let Some(verdict) = classify_io(io_err) {
                return verdict;
            }
            if matches!(
                io_err.kind(),
                io::ErrorKind::NetworkUnreachable
                    | io::ErrorKind::HostUnreachable
                    | io::ErrorKind::AddrNotAvailable
            ) {
                connect_error.get_or_insert_with(|| strip_os_error(io_err));
            }
            // An io::Error's own source() skips the error it wraps (a rustls
            // error from tokio-rustls, say): step into that one instead.
            if let Some(inner) = io_err.get_ref() {
                cur = Some(inner);
                continue;
            }
        }
        // hyper's own predicates, not its messages (which may change).
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() {
                return (ProbeOutcome::Reset, CLOSED_BEFORE_RESPONSE.into());
            }
            if h.is_parse() || h.is_parse_too_large() || h.is_parse_status() {
                return (ProbeOutcome::Protocol, "invalid HTTP response".into());
            }
        }
        cur = e.source();
    }
    if let Some(reason) = connect_error {
        return (ProbeOutcome::Connect, reason);
    }
    let is_connect = err.downcast_ref::<io::Error>().is_some();
    let reason = innermost.to_string();
    if is_connect {
        (ProbeOutcome::Connect, format!("connect: {reason}"))
    } else {
        (ProbeOutcome::Protocol, reason)
    }
}

fn classify_io(e: &io::Error) -> Option<(ProbeOutcome, String)> {
    use io::ErrorKind as K;
    Some(match e.kind() {
        K::ConnectionRefused => (ProbeOutcome::Refused, "connection refused".into()),
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => {
            (ProbeOutcome::Reset, "connection reset".into())
        }
        // tokio-rustls reports a close during the handshake as this.
        K::UnexpectedEof if e.to_string().contains("tls handshake") => (
            ProbeOutcome::Reset,
            "connection closed during TLS handshake".into(),
        ),
        K::UnexpectedEof => (ProbeOutcome::Reset, "connection closed mid-response".into()),
        K::TimedOut => (ProbeOutcome::Timeout, "connection timed out".into()),
        _ => return None,
    })
}

/// `"Network is unreachable (os error 101)"` -> `"network is unreachable"`.
fn strip_os_error(e: &io::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" (os error") {
        Some(i) => &text[..i],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text.to_string(),
    }
}

fn tls_reason(e: &rustls::Error, server_name: &str) -> String {
    use CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(cert) => match cert {
            C::Expired | C::ExpiredContext { .. } => "TLS: certificate expired".into(),
            C::NotValidYet | C::NotValidYetContext { .. } => {
                "TLS: certificate not valid yet".into()
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                format!("TLS: certificate not valid for name {server_name:?}")
            }
            C::UnknownIssuer => "TLS: unknown issuer".into(),
            C::Revoked => "TLS: certificate revoked".into(),
            C::BadSignature => "TLS: bad certificate signature".into(),
            other => format!("TLS: {other}"),
        },
        other => format!("TLS: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(lo: u16, hi: u16) -> StatusRange {
        StatusRange { lo, hi }
    }

    #[test]
    fn status_matches_any_listed_range() {
        let expect = [r(200, 299), r(404, 404)];
        assert!(status_matches(&expect, 200));
        assert!(status_matches(&expect, 299));
        assert!(status_matches(&expect, 404));
        assert!(!status_matches(&expect, 300));
        assert!(!status_matches(&expect, 403));
        assert!(!status_matches(&expect, 503));
    }

    #[test]
    fn empty_status_list_means_2xx_and_3xx() {
        assert!(status_matches(&[], 200));
        assert!(status_matches(&[], 399));
        assert!(!status_matches(&[], 199));
        assert!(!status_matches(&[], 400));
    }

    #[test]
    fn body_scan_finds_a_needle_split_across_chunks() {
        let mut scan = BodyScan::new(b"healthy");
        assert_eq!(scan.push(b"status: heal"), Scan::More);
        assert_eq!(scan.push(b"thy\n"), Scan::Found);
    }

    #[test]
    fn body_scan_stops_at_the_limit() {
        let mut scan = BodyScan::new(b"ok");
        assert_eq!(scan.push(&[b'x'; BODY_LIMIT - 1]), Scan::More);
        // "ok" would start at byte 5119 and end past the limit.
        assert_eq!(scan.push(b"ok"), Scan::Exhausted);
        assert_eq!(scan.seen.len(), BODY_LIMIT);
    }

    #[test]
    fn body_scan_finds_a_needle_ending_exactly_at_the_limit() {
        let mut scan = BodyScan::new(b"ok");
        let mut body = vec![b'x'; BODY_LIMIT - 2];
        body.extend_from_slice(b"ok and more");
        assert_eq!(scan.push(&body), Scan::Found);
    }

    #[test]
    fn body_scan_handles_binary_bodies() {
        let mut scan = BodyScan::new(b"ok");
        assert_eq!(scan.push(&[0xff, 0xfe, 0x00]), Scan::More);
        assert_eq!(scan.push(&[b'o', b'k', 0xff]), Scan::Found);
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

    #[test]
    fn body_reason_quotes_the_needle() {
        assert_eq!(body_reason("ok"), "body did not contain \"ok\"");
    }

    #[test]
    fn host_header_adds_non_default_ports() {
        assert_eq!(host_header("api.test", 80, false), "api.test");
        assert_eq!(host_header("api.test", 8080, false), "api.test:8080");
        assert_eq!(host_header("api.test", 443, true), "api.test");
        assert_eq!(host_header("api.test", 80, true), "api.test:80");
        assert_eq!(
            host_header("2001:db8::1", 8080, false),
            "[2001:db8::1]:8080"
        );
    }

    /// An error with a message and a cause, as hyper builds them.
    #[derive(Debug)]
    struct Wrap(&'static str, Option<Box<dyn StdError + Send + Sync>>);

    impl std::fmt::Display for Wrap {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl StdError for Wrap {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            self.1.as_deref().map(|e| e as &(dyn StdError + 'static))
        }
    }

    fn wrap(msg: &'static str, inner: impl StdError + Send + Sync + 'static) -> Wrap {
        Wrap(msg, Some(Box::new(inner)))
    }

    fn io(kind: io::ErrorKind) -> io::Error {
        io::Error::from(kind)
    }

    #[test]
    fn classifies_io_errors_deep_in_the_chain() {
        let e = wrap(
            "client error (Connect)",
            wrap("tcp connect error", io(io::ErrorKind::ConnectionRefused)),
        );
        assert_eq!(
            classify(&e, "x"),
            (ProbeOutcome::Refused, "connection refused".into())
        );
        let e = wrap("connection error", io(io::ErrorKind::ConnectionReset));
        assert_eq!(
            classify(&e, "x"),
            (ProbeOutcome::Reset, "connection reset".into())
        );
        let e = wrap(
            "error reading a body from connection",
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "end of file before message length reached",
            ),
        );
        assert_eq!(
            classify(&e, "x"),
            (ProbeOutcome::Reset, "connection closed mid-response".into())
        );
    }

    #[test]
    fn classifies_rustls_errors_wrapped_in_io_errors() {
        let tls = |c: CertificateError| {
            wrap(
                "client error (Connect)",
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    rustls::Error::InvalidCertificate(c),
                ),
            )
        };
        assert_eq!(
            classify(&tls(CertificateError::Expired), "api.test"),
            (ProbeOutcome::Tls, "TLS: certificate expired".into())
        );
        assert_eq!(
            classify(&tls(CertificateError::NotValidForName), "api.test"),
            (
                ProbeOutcome::Tls,
                "TLS: certificate not valid for name \"api.test\"".into()
            )
        );
        assert_eq!(
            classify(&tls(CertificateError::UnknownIssuer), "api.test"),
            (ProbeOutcome::Tls, "TLS: unknown issuer".into())
        );
        let e = io::Error::new(io::ErrorKind::InvalidData, rustls::Error::DecryptError);
        assert_eq!(
            classify(&e, "x"),
            (
                ProbeOutcome::Tls,
                "TLS: cannot decrypt peer's message".into()
            )
        );
    }

    #[test]
    fn unreachable_networks_are_connect_failures() {
        let e = wrap("tcp connect error", io(io::ErrorKind::NetworkUnreachable));
        let (outcome, reason) = classify(&e, "x");
        assert_eq!(outcome, ProbeOutcome::Connect);
        assert_eq!(reason, "network unreachable");
    }

    #[test]
    fn unknown_errors_keep_the_innermost_message() {
        let e = Wrap(
            "error sending request",
            Some(Box::new(Wrap("operation was canceled", None))),
        );
        assert_eq!(
            classify(&e, "x"),
            (ProbeOutcome::Protocol, "operation was canceled".into())
        );
    }

    #[test]
    fn strip_os_error_keeps_the_message() {
        let e = io::Error::from_raw_os_error(101);
        let s = strip_os_error(&e);
        assert!(!s.contains("os error"), "{s}");
        assert!(s.starts_with(|c: char| c.is_lowercase()), "{s}");
    }
}
