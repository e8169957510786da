//! One probe of one endpoint: TCP connect, or an HTTP(S) request judged by
//! status and body.
//!
//! A [`CheckProber`] is built once per check and holds what every endpoint of
//! the check shares (parsed method and headers, the rustls configuration, and
//! usually the reqwest `Client`); an [`EndpointProber`] is built from it once
//! per endpoint and reused for every probe of that endpoint. A probe never
//! fails with an error: every way a backend can misbehave becomes a
//! [`ProbeResult`] with an outcome class and a reason for operators.
//!
//! Uses only the model ([`Check`]) and the outcome classes of [`super::state`].

use std::error::Error as StdError;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HOST, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Client, Method, Url};
use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;

use super::ProbeOutcome;
use crate::model::{Check, CheckKind, StatusRange};

/// At most this much of a body is read when looking for `expect_body`, as
/// Route 53 does: a health page that hides its marker deeper is a
/// misconfiguration, and a huge or endless body must not hold the prober.
const BODY_LIMIT: usize = 5120;

/// Sent on every HTTP probe so backends can tell probes from users in their
/// logs; a `User-Agent` in the check's headers replaces it.
const USER_AGENT: &str = concat!("gslb-health-check/", env!("CARGO_PKG_VERSION"));

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
    /// The request URL does not parse (path, or a scoped IPv6 address).
    #[error("check {check}: URL {url:?}: {msg}")]
    Url {
        /// Check name.
        check: String,
        /// The URL.
        url: String,
        /// Why.
        msg: String,
    },
    /// reqwest could not build a client.
    #[error("check {check}: cannot build the HTTP client: {source}")]
    Client {
        /// Check name.
        check: String,
        /// Why.
        source: reqwest::Error,
    },
}

/// What every endpoint of a check shares.
#[derive(Debug)]
struct Shared {
    check: Arc<Check>,
    /// `http` or `https`.
    scheme: &'static str,
    method: Method,
    /// Sent with every request: `Host` when it cannot come from the URL, then
    /// the check's extra headers (which may override it).
    headers: HeaderMap,
    /// `host` when it is a DNS name and the check is HTTPS: it must then be
    /// the URL host, so that it is the SNI and the name verified.
    tls_name: Option<String>,
    clients: Clients,
}

/// Where an endpoint's HTTP client comes from.
#[derive(Debug)]
enum Clients {
    /// TCP check: none.
    None,
    /// One client serves every endpoint: URLs carry the address (or the
    /// `target` is pinned).
    Shared(Client),
    /// HTTPS with a host name and no `target`: each endpoint builds its own
    /// client from this configuration, pinning the name to its address.
    PerEndpoint(Box<ClientConfig>),
}

/// Probes endpoints for one check; build once per check (and per reload) and
/// share: it holds the rustls configuration and the HTTP client.
#[derive(Clone, Debug)]
pub struct CheckProber {
    shared: Arc<Shared>,
}

/// Probes one endpoint; build once per endpoint and reuse for every probe.
///
/// It holds an `Arc` of the check's shared state (method, headers, TLS
/// configuration, client) and either the socket address to connect to (TCP)
/// or the request URL and a handle to a reqwest `Client` (HTTP, HTTPS): about
/// 40 bytes inline plus ~120 bytes of URL. The client is the check's, shared by
/// all its endpoints, except for an HTTPS check with a `host` name and no
/// `target`: there the host name must be the URL host (for SNI and
/// certificate verification) while the connection must go to this endpoint,
/// so the endpoint gets its own client (about 2 KB) whose resolver maps the
/// name to the endpoint's address, and DNS is never asked.
#[derive(Clone, Debug)]
pub struct EndpointProber {
    shared: Arc<Shared>,
    target: Target,
}

#[derive(Clone, Debug)]
enum Target {
    Tcp(SocketAddr),
    // Boxed: a `Url` is ~90 bytes and TCP endpoints should not pay for it.
    Http { url: Box<Url>, client: Client },
}

impl CheckProber {
    /// Prepares the probes of `check`: parses the method, host and headers
    /// and builds the TLS configuration (reading `ca_file`, a small blocking
    /// read done once per check and reload).
    pub fn new(check: Arc<Check>) -> Result<CheckProber, ProbeError> {
        let name = || check.name.clone();
        let scheme = match check.kind {
            CheckKind::Https => "https",
            CheckKind::Http | CheckKind::Tcp => "http",
        };
        let method =
            Method::from_bytes(check.method.as_bytes()).map_err(|_| ProbeError::Method {
                check: name(),
                method: check.method.clone(),
            })?;
        let mut tls_name = None;
        let mut headers = HeaderMap::new();
        if let Some(host) = &check.host {
            if ServerName::try_from(host.as_str()).is_err() {
                return Err(ProbeError::Host {
                    check: name(),
                    host: host.clone(),
                });
            }
            if check.kind == CheckKind::Https && host.parse::<IpAddr>().is_err() {
                // The URL carries it; hyper derives the Host header from the URL.
                tls_name = Some(host.clone());
            } else {
                // The URL carries the endpoint address, so the Host header must
                // be set here, with the port as hyper would write it.
                let port = check.target.map_or(check.port, |t| t.port());
                let value = host_header(host, port, check.kind == CheckKind::Https);
                let value = HeaderValue::from_str(&value).map_err(|e| ProbeError::Host {
                    check: name(),
                    host: format!("{host} ({e})"),
                })?;
                headers.insert(HOST, value);
            }
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
            // insert, not append: a configured Host replaces the derived one.
            headers.insert(hname, hvalue);
        }
        // Catch a bad path now rather than on every endpoint.
        let probe_url = format!(
            "{scheme}://{}:{}{}",
            tls_name.as_deref().unwrap_or("192.0.2.1"),
            check.port.max(1),
            check.path
        );
        if let Err(e) = Url::parse(&probe_url) {
            return Err(ProbeError::Url {
                check: name(),
                url: probe_url,
                msg: e.to_string(),
            });
        }

        let clients = match check.kind {
            CheckKind::Tcp => Clients::None,
            CheckKind::Http | CheckKind::Https => {
                let tls = tls_config(&check)?;
                let client_err = |e| ProbeError::Client {
                    check: name(),
                    source: e,
                };
                match (&tls_name, check.target) {
                    (Some(_), None) => Clients::PerEndpoint(Box::new(tls)),
                    // Every endpoint connects to the target: one pinned client.
                    (Some(host), Some(target)) => Clients::Shared(
                        build_client(tls, Some((host, target))).map_err(client_err)?,
                    ),
                    (None, _) => Clients::Shared(build_client(tls, None).map_err(client_err)?),
                }
            }
        };
        Ok(CheckProber {
            shared: Arc::new(Shared {
                check,
                scheme,
                method,
                headers,
                tls_name,
                clients,
            }),
        })
    }

    /// The prober of one endpoint: connects to `addr` on the check's port, or
    /// to the check's `target` when set.
    pub fn for_endpoint(&self, addr: IpAddr) -> Result<EndpointProber, ProbeError> {
        let shared = &self.shared;
        let check = &shared.check;
        let connect = check.target.unwrap_or(SocketAddr::new(addr, check.port));
        let target = match check.kind {
            CheckKind::Tcp => Target::Tcp(connect),
            CheckKind::Http | CheckKind::Https => {
                let url = match &shared.tls_name {
                    Some(host) => format!(
                        "{}://{host}:{}{}",
                        shared.scheme,
                        connect.port(),
                        check.path
                    ),
                    None => format!("{}://{connect}{}", shared.scheme, check.path),
                };
                let url = Url::parse(&url).map_err(|e| ProbeError::Url {
                    check: check.name.clone(),
                    url,
                    msg: e.to_string(),
                })?;
                let client = match (&shared.clients, &shared.tls_name) {
                    (Clients::Shared(client), _) => client.clone(),
                    (Clients::PerEndpoint(tls), Some(host)) => {
                        build_client(ClientConfig::clone(tls), Some((host, connect))).map_err(
                            |e| ProbeError::Client {
                                check: check.name.clone(),
                                source: e,
                            },
                        )?
                    }
                    (Clients::PerEndpoint(_), None) | (Clients::None, _) => {
                        unreachable!(
                            "CheckProber::new builds clients for every HTTP check, per endpoint only with a TLS name"
                        )
                    }
                };
                Target::Http {
                    url: Box::new(url),
                    client,
                }
            }
        };
        Ok(EndpointProber {
            shared: shared.clone(),
            target,
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
        match &self.target {
            Target::Tcp(addr) => match TcpStream::connect(addr).await {
                // Dropping the stream closes it: the handshake was the test.
                Ok(_stream) => (ProbeOutcome::Success, "ok".to_string()),
                Err(e) => classify(&e, &self.server_name()),
            },
            Target::Http { url, client } => self.http(url, client).await,
        }
    }

    async fn http(&self, url: &Url, client: &Client) -> (ProbeOutcome, String) {
        let shared = &self.shared;
        let check = &shared.check;
        let request = client
            .request(shared.method.clone(), url.clone())
            .headers(shared.headers.clone());
        let mut response = match request.send().await {
            Ok(r) => r,
            Err(e) => return classify(&e, &self.server_name()),
        };
        let status = response.status().as_u16();
        if !status_matches(&check.expect_status, status) {
            return (ProbeOutcome::Status, format!("status {status}"));
        }
        if let Some(needle) = &check.expect_body {
            let mut scan = BodyScan::new(needle.as_bytes());
            loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => match scan.push(&chunk) {
                        Scan::Found => break,
                        Scan::Exhausted => return (ProbeOutcome::Body, body_reason(needle)),
                        Scan::More => {}
                    },
                    Ok(None) => return (ProbeOutcome::Body, body_reason(needle)),
                    Err(e) => return classify(&e, &self.server_name()),
                }
            }
        }
        // Dropping the response closes the connection (no pool), also when
        // body bytes remain unread.
        (ProbeOutcome::Success, format!("ok ({status})"))
    }

    /// The name the certificate must match, for messages.
    fn server_name(&self) -> String {
        match (&self.shared.check.host, &self.target) {
            (Some(host), _) => host.clone(),
            (None, Target::Tcp(addr)) => addr.ip().to_string(),
            (None, Target::Http { url, .. }) => url
                .host_str()
                .unwrap_or_default()
                .trim_matches(['[', ']'])
                .to_string(),
        }
    }
}

/// One client: the given TLS configuration, no proxy, no redirect, no
/// idle connections (each probe opens its own, so a refused port or a dead
/// backend is seen at once), HTTP/1.1, and optionally one name pinned to an
/// address so that it is never looked up.
fn build_client(tls: ClientConfig, pin: Option<(&str, SocketAddr)>) -> reqwest::Result<Client> {
    let mut builder = Client::builder()
        // reqwest is built without a crypto provider: without a ready
        // configuration its build would look for a process default.
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .http1_only()
        .user_agent(USER_AGENT);
    if let Some((host, addr)) = pin {
        builder = builder.resolve(host, addr);
    }
    builder.build()
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
/// (hyper is not a direct dependency, so its errors are known by their text).
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
        let text = e.to_string();
        if text == "connection closed before message completed" {
            return (ProbeOutcome::Reset, "connection closed mid-response".into());
        }
        if text.starts_with("invalid HTTP")
            || text.starts_with("invalid content-length")
            || text.starts_with("unexpected transfer-encoding")
            || text == "message head is too large"
            || text == "received unexpected message from connection"
        {
            return (ProbeOutcome::Protocol, "invalid HTTP response".into());
        }
        cur = e.source();
    }
    if let Some(reason) = connect_error {
        return (ProbeOutcome::Connect, reason);
    }
    let is_connect = err
        .downcast_ref::<reqwest::Error>()
        .is_some_and(reqwest::Error::is_connect)
        || err.downcast_ref::<io::Error>().is_some();
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

    /// An error with a message and a cause, as hyper and reqwest build them.
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
    fn classifies_hyper_messages() {
        let e = wrap(
            "error sending request",
            Wrap("connection closed before message completed", None),
        );
        assert_eq!(
            classify(&e, "x"),
            (ProbeOutcome::Reset, "connection closed mid-response".into())
        );
        let e = wrap(
            "error sending request",
            Wrap("invalid HTTP version parsed", None),
        );
        assert_eq!(
            classify(&e, "x"),
            (ProbeOutcome::Protocol, "invalid HTTP response".into())
        );
        let e = wrap(
            "error sending request",
            Wrap("message head is too large", None),
        );
        assert_eq!(
            classify(&e, "x"),
            (ProbeOutcome::Protocol, "invalid HTTP response".into())
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
