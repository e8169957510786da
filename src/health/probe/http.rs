//! The HTTP/1.1 exchange of an HTTP(S) probe, with the connection of the
//! last successful probe kept for the next one.
//!
//! A successful probe's connection is kept for the next probe of the same
//! endpoint unless the check says `reuse-connection = false`; most of a
//! fresh-connection probe's cost is the kernel's TCP handshake and teardown
//! on both sides (bench/probe-scale.sh, BENCHMARKS.md).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hyper::header::{ACCEPT, CONNECTION, HOST, HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use hyper::{Method, Uri};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

use super::classify::classify;
use super::h1::{self, BodyError, Framing, HeadError, Step};
use super::sock::{Connector, ProbeSocket};
use super::{EndpointProber, ProbeError, ProbeOutcome};
use crate::model::{BODY_LIMIT, HttpCheck, StatusRange};

/// Sent on every HTTP probe so backends can tell probes from users in their
/// logs; a `User-Agent` in the check's headers replaces it.
const USER_AGENT_VALUE: &str = concat!("gslb-health-check/", env!("CARGO_PKG_VERSION"));

/// The request of a check, parsed once for all its endpoints.
#[derive(Debug)]
pub(super) struct RequestParts {
    /// The check's HTTP settings.
    pub(super) spec: HttpCheck,
    method: Method,
    /// Request target in origin form (`/health?full=1`).
    path: Uri,
    /// Sent with every request after `Host`: `User-Agent`, `Accept`,
    /// `Connection: close` when connections are not reused, then the check's
    /// extra headers (which may replace any of them, `Host` included).
    headers: HeaderMap,
    /// `Host` is among the check's extra headers: no derived one is sent.
    host_configured: bool,
    /// The request says `Connection: close` (the check's own header): the
    /// connection is not kept whatever the server answers.
    asks_close: bool,
    /// HTTPS: the check's TLS configuration.
    tls: Option<Arc<ClientConfig>>,
}

impl RequestParts {
    /// Parses the method, path, host and headers and builds the TLS
    /// configuration. The zone loader has validated all of them the same
    /// way, so these errors are for checks built by other means.
    pub(super) fn new(check: &str, spec: &HttpCheck) -> Result<RequestParts, ProbeError> {
        let name = || check.to_string();
        let method =
            Method::from_bytes(spec.method.as_bytes()).map_err(|_| ProbeError::Method {
                check: name(),
                method: spec.method.clone(),
            })?;
        let path = Uri::try_from(spec.path.as_str())
            .ok()
            .filter(|u| u.scheme().is_none() && u.authority().is_none())
            .ok_or_else(|| ProbeError::Path {
                check: name(),
                path: spec.path.clone(),
            })?;
        if let Some(host) = &spec.host
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
        if !spec.reuse_connection {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        for (k, v) in &spec.headers {
            let header_err = |msg: String| ProbeError::Header {
                check: name(),
                name: k.clone(),
                msg,
            };
            let hname =
                HeaderName::from_bytes(k.as_bytes()).map_err(|e| header_err(e.to_string()))?;
            let hvalue = HeaderValue::from_str(v).map_err(|e| header_err(e.to_string()))?;
            // insert, not append: a configured header replaces a default one.
            headers.insert(hname, hvalue);
        }
        let host_configured = headers.contains_key(HOST);
        let asks_close = headers.get_all(CONNECTION).iter().any(|v| {
            v.as_bytes()
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
        });
        let tls = match &spec.tls {
            Some(tls) => Some(Arc::new(super::tls::config(check, tls)?)),
            None => None,
        };
        Ok(RequestParts {
            spec: spec.clone(),
            method,
            path,
            headers,
            host_configured,
            asks_close,
            tls,
        })
    }
}

/// A connection is reused for at most this long, then replaced by a new one
/// (for HTTPS, a new handshake that verifies the certificate again): an
/// expired or replaced certificate, or a listener that stopped accepting, is
/// seen within a minute even while the server keeps the old connection open.
const MAX_CONNECTION_AGE: Duration = Duration::from_secs(60);

/// The server closed the connection before a whole response head arrived
/// (a close during the body is "connection closed mid-response").
pub(super) const CLOSED_BEFORE_RESPONSE: &str = "connection closed before the response";

/// The I/O under an HTTP probe: plain TCP (on the endpoint's kept socket,
/// see [`super::sock`]) or TLS over TCP. The TLS stream is boxed: it is over
/// a kilobyte, which every plain probe would otherwise carry and move.
pub(super) type Io = Either<ProbeSocket, Box<TlsStream<TcpStream>>>;

/// One endpoint's side of an HTTP(S) check.
#[derive(Debug)]
pub(super) struct Target {
    /// The request, encoded once: its `Host` is the endpoint's.
    request: Box<[u8]>,
    /// TLS SNI and the name the certificate must match: the check's `host`,
    /// else the address connected to.
    server_name: ServerName<'static>,
    /// The connection of the last successful probe, idle (reuse only).
    idle: Mutex<Option<Idle>>,
    /// The leaf certificate of the last TLS handshake.
    pub(super) certificate: super::CertSeen,
    /// Plain HTTP's connections, on the socket the last one left.
    connector: Connector,
}

impl Target {
    pub(super) fn new(
        check: &str,
        parts: &RequestParts,
        connect: SocketAddr,
        source: Option<IpAddr>,
    ) -> Result<Target, ProbeError> {
        let name = parts
            .spec
            .host
            .clone()
            .unwrap_or_else(|| connect.ip().to_string());
        let host_err = || ProbeError::Host {
            check: check.to_string(),
            host: name.clone(),
        };
        let https = parts.tls.is_some();
        let host = HeaderValue::from_str(&host_header(&name, connect.port(), https))
            .map_err(|_| host_err())?;
        let request = parts.encode(&host);
        let server_name = ServerName::try_from(name.clone()).map_err(|_| host_err())?;
        Ok(Target {
            request,
            server_name,
            idle: Mutex::new(None),
            certificate: super::CertSeen::default(),
            connector: Connector::new(connect, source, true),
        })
    }

    /// The descriptor of the socket kept between connections, for tests.
    #[cfg(test)]
    pub(super) fn spare_fd(&self) -> Option<i32> {
        self.connector.spare_fd()
    }

    /// Whether a connection is kept idle, for tests.
    #[cfg(test)]
    pub(super) fn has_idle(&self) -> bool {
        self.idle().is_some()
    }

    /// A connection that will not serve another probe: a plain one is
    /// reset and its socket kept for the next connection, unless a
    /// connection is kept idle; a TLS one is closed (with a reset). An
    /// endpoint holds one descriptor between probes, as the budget counts
    /// (`limits::probe_fds`): an idle connection or a spare socket.
    fn close(&self, io: Io) {
        if let Either::Left(socket) = io
            && self.idle().is_none()
        {
            self.connector.done(socket);
        }
    }

    /// Keeps `conn` idle for the next probe, in place of any spare socket.
    fn keep(&self, conn: Idle) {
        *self.idle() = Some(conn);
        self.connector.forget_spare();
    }

    fn idle(&self) -> MutexGuard<'_, Option<Idle>> {
        self.idle.lock().expect("idle connection lock poisoned")
    }
}

/// The open connection of the last successful probe. Only the socket (and
/// TLS session) is kept: a probe's buffer lives as long as the probe, so an
/// idle endpoint holds no HTTP buffers.
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
    /// The connection is idle, open and may serve the next probe.
    keep: bool,
}

impl EndpointProber {
    /// Resolves when the backend closes the connection kept from the last
    /// probe (a killed backend closes every connection it holds, a whole
    /// interval before the next probe would notice), so the scheduler can
    /// probe at once. Pending while no connection is kept. Cancel-safe:
    /// dropped, it puts the connection back.
    /// Whether probes keep a connection between them (HTTP(S) with
    /// `reuse-connection`, probed more often than connections are replaced):
    /// only then is there one for `idle_closed` to watch.
    pub fn keeps_connections(&self) -> bool {
        match (&self.shared.kind, &self.kind) {
            (super::KindShared::Http(parts), super::KindTarget::Http(_)) => {
                parts.spec.reuse_connection && self.shared.check.interval < MAX_CONNECTION_AGE
            }
            _ => false,
        }
    }

    pub async fn idle_closed(&self) {
        let super::KindTarget::Http(target) = &self.kind else {
            return std::future::pending().await;
        };
        let taken = target.idle().take();
        let Some(conn) = taken else {
            return std::future::pending().await;
        };
        struct PutBack<'a> {
            target: &'a Target,
            conn: Option<Idle>,
        }
        impl Drop for PutBack<'_> {
            fn drop(&mut self) {
                if let Some(c) = self.conn.take() {
                    // A probe that ran meanwhile keeps its own connection.
                    if self.target.idle().is_none() {
                        self.target.keep(c);
                    }
                }
            }
        }
        let mut guard = PutBack {
            target,
            conn: Some(conn),
        };
        loop {
            let tcp: &TcpStream = match guard.conn.as_ref().map(|c| &c.io) {
                Some(Either::Left(socket)) => {
                    socket.closed().await;
                    guard.conn = None;
                    return;
                }
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

    /// One HTTP(S) probe, on the kept connection when there is one.
    pub(super) async fn http(
        &self,
        parts: &RequestParts,
        target: &Target,
    ) -> (ProbeOutcome, String) {
        // With an interval of a minute or more a kept connection would be
        // too old to use by the next probe: it would only hold a socket.
        let reuse = self.keeps_connections();
        if reuse {
            let reused = target.idle().take();
            if let Some(mut conn) = reused.filter(|c| c.opened.elapsed() < MAX_CONNECTION_AGE) {
                let done = self.exchange(parts, &mut conn.io, target, true).await;
                if !done.before_response {
                    if done.keep {
                        target.keep(conn);
                    } else {
                        target.close(conn.io);
                    }
                    return done.verdict;
                }
                target.close(conn.io);
                // Closed while idle (or failing before it answered): a new
                // connection decides, within the same deadline.
            }
        }
        let opened = tokio::time::Instant::now();
        let io = match self.connect_http(parts, target).await {
            Ok(io) => io,
            Err(verdict) => return verdict,
        };
        let mut conn = Idle { io, opened };
        let done = self.exchange(parts, &mut conn.io, target, false).await;
        if done.keep && reuse {
            target.keep(conn);
        } else {
            target.close(conn.io);
        }
        done.verdict
    }

    async fn connect_http(
        &self,
        parts: &RequestParts,
        target: &Target,
    ) -> Result<Io, (ProbeOutcome, String)> {
        let Some(tls) = &parts.tls else {
            return match target.connector.connect().await {
                Ok(socket) => Ok(Either::Left(socket)),
                Err(e) => Err(self.connect_failed(e)),
            };
        };
        // A kept connection's next request must not wait for Nagle.
        let connect = async {
            let tcp = self.connect_tcp().await?;
            let _ = tcp.set_nodelay(true);
            Ok(tcp)
        };
        // Boxed: the handshake's future is 3 KB, which every plain probe's
        // future (allocated per probe) would otherwise carry.
        let stream = Box::pin(super::tls::connect(tls, &target.server_name, connect)).await?;
        target
            .certificate
            .set(super::tls::leaf_not_after(stream.get_ref().1));
        Ok(Either::Right(Box::new(stream)))
    }

    /// One request on `io` and its verdict, and whether `io` is left idle,
    /// open and fit for the next probe. `reused`: `io` served an earlier
    /// probe.
    async fn exchange(
        &self,
        parts: &RequestParts,
        io: &mut Io,
        target: &Target,
        reused: bool,
    ) -> Exchange {
        // Anything before a whole response head: on a reused connection the
        // server may just have closed it while idle.
        let early = |verdict| Exchange {
            verdict,
            before_response: true,
            keep: false,
        };
        let written = async {
            io.write_all(&target.request).await?;
            io.flush().await
        };
        if let Err(e) = written.await {
            return early(classify(&e, &self.server_name()));
        }
        let mut buf = h1::Buf::new();
        let head = match h1::read_head(io, &mut buf, parts.method == Method::HEAD).await {
            Ok(head) => head,
            Err(e) => return early(head_error(e, &self.server_name())),
        };
        if reused && head.status == 408 {
            // A server closing an idle connection may say so with a 408
            // that crosses our request (Go's client knows this too): not an
            // answer to it.
            return early((ProbeOutcome::Reset, CLOSED_BEFORE_RESPONSE.into()));
        }
        let done = |verdict| Exchange {
            verdict,
            before_response: false,
            keep: false,
        };
        let spec = &parts.spec;
        if !status_matches(&spec.expect_status, head.status) {
            return done((ProbeOutcome::Status, format!("status {}", head.status)));
        }
        let mut body = h1::Body::new(head.framing);
        if let Some(needle) = &spec.expect_body {
            let mut scan = BodyScan::new(needle.as_bytes());
            loop {
                match body.step(io, &mut buf, true).await {
                    Ok(Some(Step::Data(n))) => {
                        let seen = scan.push(&buf.bytes()[..n]);
                        buf.consume(n);
                        match seen {
                            Scan::Found => break,
                            Scan::Exhausted => {
                                return done((ProbeOutcome::Body, body_reason(needle)));
                            }
                            Scan::More => {}
                        }
                    }
                    Ok(_) => return done((ProbeOutcome::Body, body_reason(needle))),
                    Err(e) => return done(body_error(e, &self.server_name())),
                }
            }
        }
        let verdict = (ProbeOutcome::Success, format!("ok ({})", head.status));
        let keep = !head.close
            && !parts.asks_close
            && head.framing != Framing::Eof
            && drain_ready(&mut body, io, &mut buf).await
            // Bytes beyond the response would belong to no request.
            && buf.is_empty();
        Exchange {
            verdict,
            before_response: false,
            keep,
        }
    }
}

/// A response head that could not be had, as an outcome and a reason.
fn head_error(e: HeadError, server_name: &str) -> (ProbeOutcome, String) {
    match e {
        HeadError::Closed => (ProbeOutcome::Reset, CLOSED_BEFORE_RESPONSE.into()),
        HeadError::Io(e) => classify(&e, server_name),
        // Say what was wrong: "invalid HTTP response" alone sent operators
        // looking at the wrong thing.
        HeadError::TooLarge => (
            ProbeOutcome::Protocol,
            "invalid HTTP response: its head is too large (more than 100 header fields, or more than 400 KiB)".into(),
        ),
        HeadError::Status => (
            ProbeOutcome::Protocol,
            "invalid HTTP response: its status code is not a number from 100 to 999".into(),
        ),
        HeadError::Invalid(what) => (
            ProbeOutcome::Protocol,
            format!("invalid HTTP response: {what}"),
        ),
    }
}

/// A body that could not be read, as an outcome and a reason.
fn body_error(e: BodyError, server_name: &str) -> (ProbeOutcome, String) {
    match e {
        BodyError::Closed => (ProbeOutcome::Reset, "connection closed mid-response".into()),
        BodyError::Io(e) => classify(&e, server_name),
        BodyError::Invalid(what) => (
            ProbeOutcome::Protocol,
            format!("invalid HTTP response: {what}"),
        ),
    }
}

impl RequestParts {
    /// The request with this `Host` (unless the check's headers have one),
    /// as hyper wrote it: the request line, `host`, then the other headers
    /// in order, names in lower case.
    fn encode(&self, host: &HeaderValue) -> Box<[u8]> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(self.method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.path.to_string().as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        let mut field = |name: &[u8], value: &[u8]| {
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        };
        if !self.host_configured {
            field(HOST.as_str().as_bytes(), host.as_bytes());
        }
        for (name, value) in &self.headers {
            field(name.as_str().as_bytes(), value.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.into_boxed_slice()
    }
}

/// Reads the rest of a successful response's body as far as it has already
/// arrived, without waiting: true when it ended there (at most
/// [`BODY_LIMIT`] more bytes), so the connection can serve the next probe.
/// A body still streaming or a large one leaves it false.
async fn drain_ready(body: &mut h1::Body, io: &mut Io, buf: &mut h1::Buf) -> bool {
    let mut read = 0;
    loop {
        match body.step(io, buf, false).await {
            Ok(Some(Step::Data(n))) => {
                buf.consume(n);
                read += n;
                if read > BODY_LIMIT {
                    return false;
                }
            }
            Ok(Some(Step::End)) => return true,
            Ok(None) | Err(_) => return false,
        }
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
}
