//! Real probes against real local backends: hand-written HTTP servers on
//! `127.0.0.1:0` that answer, stall, reset or talk nonsense, and TLS servers
//! with certificates from a test CA made here with rcgen.

use std::future::Future;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gslb::health::ProbeOutcome;
use gslb::health::probe::{CheckProber, ProbeResult};
use gslb::model::{CaFile, Check, CheckKind, HttpCheck, StatusRange, TlsCheck};
use rcgen::{CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";

/// A check with the config defaults, for `kind` on `port`.
fn check(kind: CheckKind, port: u16) -> Check {
    Check {
        name: "test".into(),
        kind,
        port,
        target: None,
        interval: Duration::from_secs(5),
        timeout: Duration::from_secs(2),
        recheck: None,
        fall: 3,
        rise: 2,
        probers: None,
    }
}

/// An HTTP check of `/health` on `port`.
fn http_check(port: u16) -> Check {
    let mut spec = HttpCheck::new(None);
    spec.path = "/health".into();
    check(CheckKind::Http(spec), port)
}

fn tcp_check(port: u16) -> Check {
    check(CheckKind::Tcp, port)
}

/// The HTTP settings of an HTTP(S) check.
fn http(c: &mut Check) -> &mut HttpCheck {
    match &mut c.kind {
        CheckKind::Http(h) => h,
        _ => panic!("not an http check"),
    }
}

/// One probe of `check` on 127.0.0.1.
async fn probe(check: Check) -> ProbeResult {
    crate::support::probe_check(check).await
}

use crate::support::assert_outcome;

/// A backend on 127.0.0.1:0 running `handle` on every connection it accepts.
async fn backend<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(handle(stream));
        }
    });
    addr
}

/// A port nothing listens on: bound, then closed.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("local addr").port()
}

/// Reads a request head (up to the blank line, or EOF).
async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> String {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Waits until the peer closes (so a reply is never cut by our close).
async fn drain<S: AsyncRead + Unpin>(s: &mut S) {
    let mut buf = [0u8; 1024];
    while let Ok(n) = s.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// A backend answering every request with `response`, then closing.
async fn http_backend(response: &'static str) -> SocketAddr {
    backend(move |mut s| async move {
        read_head(&mut s).await;
        let _ = s.write_all(response.as_bytes()).await;
        let _ = s.shutdown().await;
    })
    .await
}

/// Like [`http_backend`], also sending each request head to the returned channel.
async fn recording_backend(
    response: &'static str,
) -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let addr = backend(move |mut s| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(read_head(&mut s).await);
            let _ = s.write_all(response.as_bytes()).await;
            let _ = s.shutdown().await;
        }
    })
    .await;
    (addr, rx)
}

/// Header lines of a request head, names lowercased.
fn header_lines(head: &str) -> Vec<String> {
    head.lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| format!("{}: {}", k.trim().to_ascii_lowercase(), v.trim()))
        .collect()
}

#[tokio::test]
async fn healthy_backend_passes() {
    let addr = http_backend(OK).await;
    let r = probe(http_check(addr.port())).await;
    assert_outcome(&r, ProbeOutcome::Success, "ok (200)");
    assert!(r.ok());
    assert!(r.latency < Duration::from_secs(2), "{r:?}");
}

#[tokio::test]
async fn unexpected_status_fails_with_the_status() {
    let addr = http_backend("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n").await;
    let r = probe(http_check(addr.port())).await;
    assert_outcome(&r, ProbeOutcome::Status, "status 503");
    assert!(!r.ok());
}

#[tokio::test]
async fn expected_body_must_appear() {
    let addr = http_backend("HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\nstatus: healthy").await;
    let mut c = http_check(addr.port());
    http(&mut c).expect_body = Some("healthy".into());
    assert_outcome(&probe(c.clone()).await, ProbeOutcome::Success, "ok (200)");
    http(&mut c).expect_body = Some("ready".into());
    assert_outcome(
        &probe(c).await,
        ProbeOutcome::Body,
        "body did not contain \"ready\"",
    );
}

#[tokio::test]
async fn body_is_read_no_further_than_5120_bytes() {
    // A huge body that never ends: the marker sits past 5120 bytes and the
    // rest never comes, so only a probe that stops at 5120 answers in time.
    let addr = backend(|mut s| async move {
        read_head(&mut s).await;
        let mut body = vec![b'x'; 6000];
        body.extend_from_slice(b"ok");
        let head = "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n";
        let _ = s.write_all(head.as_bytes()).await;
        let _ = s.write_all(&body).await;
        drain(&mut s).await;
    })
    .await;
    let mut c = http_check(addr.port());
    http(&mut c).expect_body = Some("ok".into());
    assert_outcome(
        &probe(c).await,
        ProbeOutcome::Body,
        "body did not contain \"ok\"",
    );
}

#[tokio::test]
async fn body_reading_stops_once_the_text_is_found() {
    let addr = backend(|mut s| async move {
        read_head(&mut s).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\nstatus ok, more follows")
            .await;
        drain(&mut s).await;
    })
    .await;
    let mut c = http_check(addr.port());
    http(&mut c).expect_body = Some("ok".into());
    assert_outcome(&probe(c).await, ProbeOutcome::Success, "ok (200)");
}

#[tokio::test]
async fn backend_that_accepts_and_never_answers_times_out_on_time() {
    let addr = backend(|s| async move {
        // Hold the connection open, read nothing, answer nothing.
        let _keep = s;
        std::future::pending::<()>().await;
    })
    .await;
    let mut c = http_check(addr.port());
    c.timeout = Duration::from_millis(300);
    let start = Instant::now();
    let r = probe(c).await;
    let took = start.elapsed();
    assert_outcome(&r, ProbeOutcome::Timeout, "timeout after 300ms");
    assert!(r.latency >= Duration::from_millis(300), "{r:?}");
    // Timeout plus generous slack for a loaded 2-core machine.
    assert!(took < Duration::from_millis(1300), "probe took {took:?}");
}

#[tokio::test]
async fn backend_that_stalls_mid_body_times_out() {
    let addr = backend(|mut s| async move {
        read_head(&mut s).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nstill loading")
            .await;
        drain(&mut s).await;
    })
    .await;
    let mut c = http_check(addr.port());
    http(&mut c).expect_body = Some("ready".into());
    c.timeout = Duration::from_millis(300);
    assert_outcome(
        &probe(c).await,
        ProbeOutcome::Timeout,
        "timeout after 300ms",
    );
}

#[tokio::test]
async fn slow_answer_within_the_timeout_passes() {
    let addr = backend(|mut s| async move {
        read_head(&mut s).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = s.write_all(OK.as_bytes()).await;
        let _ = s.shutdown().await;
    })
    .await;
    let mut c = http_check(addr.port());
    c.timeout = Duration::from_secs(1);
    let r = probe(c).await;
    assert_outcome(&r, ProbeOutcome::Success, "ok (200)");
    assert!(r.latency >= Duration::from_millis(100), "{r:?}");
}

#[tokio::test]
async fn refused_port_is_reported() {
    let r = probe(http_check(closed_port().await)).await;
    assert_outcome(&r, ProbeOutcome::Refused, "connection refused");
}

#[tokio::test]
async fn reset_mid_response_is_reported() {
    let addr = backend(|mut s| async move {
        read_head(&mut s).await;
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Le").await;
        // SO_LINGER 0: the close sends RST instead of FIN.
        let _ = s.set_zero_linger();
        drop(s);
    })
    .await;
    let r = probe(http_check(addr.port())).await;
    assert_eq!(r.outcome, ProbeOutcome::Reset, "{r:?}");
    assert!(
        r.reason == "connection reset" || r.reason == "connection closed before the response",
        "{r:?}"
    );
}

#[tokio::test]
async fn close_mid_headers_is_reported() {
    let addr = backend(|mut s| async move {
        read_head(&mut s).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/pl")
            .await;
        let _ = s.shutdown().await;
    })
    .await;
    let r = probe(http_check(addr.port())).await;
    assert_outcome(
        &r,
        ProbeOutcome::Reset,
        "connection closed before the response",
    );
}

#[tokio::test]
async fn close_mid_body_is_reported() {
    let addr = backend(|mut s| async move {
        read_head(&mut s).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
            .await;
        let _ = s.shutdown().await;
    })
    .await;
    let mut c = http_check(addr.port());
    http(&mut c).expect_body = Some("healthy".into());
    assert_outcome(
        &probe(c).await,
        ProbeOutcome::Reset,
        "connection closed mid-response",
    );
}

// Issue 19 item 7. Fails on the code before it: "invalid HTTP response"
// alone, which sent operators looking for a broken backend rather than a
// chatty one.
#[tokio::test]
async fn too_many_response_headers_are_named_as_such() {
    let addr = backend(|mut s| async move {
        read_head(&mut s).await;
        let mut head = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n".to_vec();
        for i in 0..150 {
            head.extend_from_slice(format!("X-Trace-{i}: x\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        let _ = s.write_all(&head).await;
        drain(&mut s).await;
    })
    .await;
    let r = probe(http_check(addr.port())).await;
    assert_eq!(r.outcome, ProbeOutcome::Protocol, "{r:?}");
    assert!(r.reason.contains("more than 100 header fields"), "{r:?}");
}

#[tokio::test]
async fn garbage_is_an_invalid_http_response() {
    let addr = backend(|mut s| async move {
        read_head(&mut s).await;
        let _ = s.write_all(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").await;
        drain(&mut s).await;
    })
    .await;
    let r = probe(http_check(addr.port())).await;
    assert_eq!(r.outcome, ProbeOutcome::Protocol, "{r:?}");
    assert!(r.reason.starts_with("invalid HTTP response: "), "{r:?}");
}

#[tokio::test]
async fn expect_status_ranges_decide_and_redirects_are_not_followed() {
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    let addr = backend(move |mut s| {
        let counter = counter.clone();
        async move {
            read_head(&mut s).await;
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = s
                .write_all(
                    b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n",
                )
                .await;
            let _ = s.shutdown().await;
        }
    })
    .await;
    let mut c = http_check(addr.port());
    http(&mut c).expect_status = vec![StatusRange { lo: 200, hi: 299 }];
    assert_outcome(&probe(c.clone()).await, ProbeOutcome::Status, "status 302");
    http(&mut c).expect_status = vec![
        StatusRange { lo: 200, hi: 299 },
        StatusRange { lo: 301, hi: 302 },
    ];
    assert_outcome(&probe(c.clone()).await, ProbeOutcome::Success, "ok (302)");
    http(&mut c).expect_status = vec![StatusRange { lo: 302, hi: 302 }];
    assert_outcome(&probe(c).await, ProbeOutcome::Success, "ok (302)");
    // One request per probe: the Location was never followed.
    assert_eq!(requests.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn head_method_is_sent_and_no_body_awaited() {
    // A HEAD answer announces a body it does not send: waiting for it would time out.
    let (addr, mut heads) =
        recording_backend("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n").await;
    let mut c = http_check(addr.port());
    http(&mut c).method = "HEAD".into();
    assert_outcome(&probe(c).await, ProbeOutcome::Success, "ok (200)");
    let head = heads.recv().await.expect("request");
    assert!(head.starts_with("HEAD /health HTTP/1.1\r\n"), "{head}");
}

#[tokio::test]
async fn host_and_extra_headers_reach_the_backend() {
    let (addr, mut heads) = recording_backend(OK).await;
    let mut c = http_check(addr.port());
    http(&mut c).host = Some("api.test".into());
    http(&mut c).path = "/status?full=1".into();
    http(&mut c).headers = vec![
        ("X-Probe".into(), "gslb".into()),
        ("Authorization".into(), "Bearer t0k3n".into()),
    ];
    assert_outcome(&probe(c).await, ProbeOutcome::Success, "ok (200)");
    let head = heads.recv().await.expect("request");
    assert!(
        head.starts_with("GET /status?full=1 HTTP/1.1\r\n"),
        "{head}"
    );
    let lines = header_lines(&head);
    let port = addr.port();
    assert!(
        lines.contains(&format!("host: api.test:{port}")),
        "{lines:?}"
    );
    assert!(lines.contains(&"x-probe: gslb".to_string()), "{lines:?}");
    assert!(
        lines.contains(&"authorization: Bearer t0k3n".to_string()),
        "{lines:?}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("host:")).count(),
        1,
        "{lines:?}"
    );
}

#[tokio::test]
async fn default_host_header_is_the_address() {
    let (addr, mut heads) = recording_backend(OK).await;
    assert_outcome(
        &probe(http_check(addr.port())).await,
        ProbeOutcome::Success,
        "ok (200)",
    );
    let lines = header_lines(&heads.recv().await.expect("request"));
    assert!(lines.contains(&format!("host: {addr}")), "{lines:?}");
}

#[tokio::test]
async fn target_overrides_the_endpoint_address() {
    let addr = http_backend(OK).await;
    // The endpoint's own port is closed: only the target can answer.
    let mut c = http_check(closed_port().await);
    c.target = Some(addr);
    assert_outcome(&probe(c).await, ProbeOutcome::Success, "ok (200)");
}

/// A keep-alive HTTP backend: answers every request of a connection with
/// its response (until the client closes), counting connections and
/// requests. `kill` ends it as a dying process would: the listener and every
/// open connection close at once.
struct KeepAlive {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    /// While set, requests are read and never answered.
    frozen: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

const OK_KEEP_ALIVE: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

async fn keep_alive_backend(response: &'static str) -> KeepAlive {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let frozen = Arc::new(AtomicBool::new(false));
    let (a, r, f) = (accepted.clone(), requests.clone(), frozen.clone());
    let task = tokio::spawn(async move {
        // Dropped with the task: aborting it closes every connection.
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((mut s, _)) = listener.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            let (r, f) = (r.clone(), f.clone());
            conns.spawn(async move {
                while !read_head(&mut s).await.is_empty() {
                    r.fetch_add(1, Ordering::SeqCst);
                    if f.load(Ordering::SeqCst) {
                        std::future::pending::<()>().await;
                    }
                    if s.write_all(response.as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    KeepAlive {
        addr,
        accepted,
        requests,
        frozen,
        task,
    }
}

impl KeepAlive {
    fn counts(&self) -> (usize, usize) {
        (
            self.accepted.load(Ordering::SeqCst),
            self.requests.load(Ordering::SeqCst),
        )
    }

    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

fn endpoint_of(c: Check) -> gslb::health::EndpointProber {
    let prober = CheckProber::new(Arc::new(c)).expect("prober");
    prober.for_endpoint(LOCALHOST).expect("endpoint")
}

/// Probes the backend `times` times with one endpoint prober of `c`
/// (pointed at the backend), each probe ending as `outcome`/`reason`;
/// returns the backend's (connections, requests).
async fn probe_repeatedly(
    b: &KeepAlive,
    mut c: Check,
    times: usize,
    (outcome, reason): (ProbeOutcome, &str),
) -> (usize, usize) {
    c.port = b.addr.port();
    let endpoint = endpoint_of(c);
    for _ in 0..times {
        assert_outcome(&endpoint.probe().await, outcome, reason);
    }
    b.counts()
}

const PASSED: (ProbeOutcome, &str) = (ProbeOutcome::Success, "ok (200)");

#[tokio::test]
async fn passing_probes_reuse_one_connection() {
    let b = keep_alive_backend(OK_KEEP_ALIVE).await;
    let counts = probe_repeatedly(&b, http_check(0), 3, PASSED).await;
    assert_eq!(counts, (1, 3), "(connections, requests)");
}

#[tokio::test]
async fn a_failed_probe_does_not_keep_its_connection() {
    let b = keep_alive_backend("HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy").await;
    let failed = (ProbeOutcome::Status, "status 503");
    let counts = probe_repeatedly(&b, http_check(0), 2, failed).await;
    assert_eq!(counts, (2, 2), "(connections, requests)");
}

/// A check whose own headers say `Connection: close` gets a new connection
/// every probe, as hyper did, even from a server that keeps it open.
#[tokio::test]
async fn a_check_that_sends_connection_close_keeps_no_connection() {
    let b = keep_alive_backend(OK_KEEP_ALIVE).await;
    let mut c = http_check(0);
    http(&mut c)
        .headers
        .push(("Connection".into(), "Close".into()));
    let counts = probe_repeatedly(&b, c, 3, PASSED).await;
    assert_eq!(counts, (3, 3), "(connections, requests)");
}

#[tokio::test]
async fn without_reuse_every_probe_opens_a_connection_and_asks_to_close_it() {
    let b = keep_alive_backend(OK_KEEP_ALIVE).await;
    let mut c = http_check(0);
    http(&mut c).reuse_connection = false;
    let counts = probe_repeatedly(&b, c.clone(), 2, PASSED).await;
    assert_eq!(counts, (2, 2), "(connections, requests)");
    let (addr, mut heads) = recording_backend(OK).await;
    c.target = Some(addr);
    assert_outcome(&probe(c).await, ProbeOutcome::Success, "ok (200)");
    let lines = header_lines(&heads.recv().await.expect("request"));
    assert!(
        lines.contains(&"connection: close".to_string()),
        "{lines:?}"
    );
}

#[tokio::test]
async fn a_server_that_asks_to_close_gets_a_new_connection_next_time() {
    let b =
        keep_alive_backend("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            .await;
    let counts = probe_repeatedly(&b, http_check(0), 2, PASSED).await;
    assert_eq!(counts, (2, 2), "(connections, requests)");
}

#[tokio::test]
async fn with_an_interval_of_a_minute_connections_are_not_kept() {
    // The next probe would find the connection too old to use anyway.
    let b = keep_alive_backend(OK_KEEP_ALIVE).await;
    let mut c = http_check(0);
    c.interval = Duration::from_secs(60);
    let counts = probe_repeatedly(&b, c, 2, PASSED).await;
    assert_eq!(counts, (2, 2), "(connections, requests)");
}

#[tokio::test]
async fn a_408_on_a_kept_connection_is_the_server_closing_it_not_an_answer() {
    // Answers the first request of a connection; a second one gets the
    // 408 and close of a server timing out an idle connection.
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let addr = backend(move |mut s| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            read_head(&mut s).await;
            let _ = s.write_all(OK_KEEP_ALIVE.as_bytes()).await;
            read_head(&mut s).await;
            let _ = s
                .write_all(b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    })
    .await;
    let endpoint = endpoint_of(http_check(addr.port()));
    for _ in 0..2 {
        assert_outcome(&endpoint.probe().await, ProbeOutcome::Success, "ok (200)");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    // On a new connection a 408 is the backend's answer.
    let addr = http_backend("HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n").await;
    assert_outcome(
        &probe(http_check(addr.port())).await,
        ProbeOutcome::Status,
        "status 408",
    );
}

#[tokio::test]
async fn a_connection_the_server_closed_while_idle_is_replaced_without_a_failure() {
    // Answers keep-alive style, then closes the idle connection (as an
    // idle timeout would) and says so.
    let (tx, mut closed) = mpsc::unbounded_channel();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let addr = backend(move |mut s| {
        counter.fetch_add(1, Ordering::SeqCst);
        let tx = tx.clone();
        async move {
            read_head(&mut s).await;
            let _ = s.write_all(OK_KEEP_ALIVE.as_bytes()).await;
            let _ = s.shutdown().await;
            drop(s);
            let _ = tx.send(());
        }
    })
    .await;
    let endpoint = endpoint_of(http_check(addr.port()));
    assert_outcome(&endpoint.probe().await, ProbeOutcome::Success, "ok (200)");
    closed.recv().await.expect("server closed");
    assert_outcome(&endpoint.probe().await, ProbeOutcome::Success, "ok (200)");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_killed_backend_is_refused_even_after_a_reused_connection() {
    let b = keep_alive_backend(OK_KEEP_ALIVE).await;
    let endpoint = endpoint_of(http_check(b.addr.port()));
    assert_outcome(&endpoint.probe().await, ProbeOutcome::Success, "ok (200)");
    b.kill().await;
    assert_outcome(
        &endpoint.probe().await,
        ProbeOutcome::Refused,
        "connection refused",
    );
}

#[tokio::test]
async fn a_frozen_backend_times_out_on_a_reused_connection() {
    let b = keep_alive_backend(OK_KEEP_ALIVE).await;
    let mut c = http_check(b.addr.port());
    c.timeout = Duration::from_millis(300);
    let endpoint = endpoint_of(c);
    assert_outcome(&endpoint.probe().await, ProbeOutcome::Success, "ok (200)");
    b.frozen.store(true, Ordering::SeqCst);
    assert_outcome(
        &endpoint.probe().await,
        ProbeOutcome::Timeout,
        "timeout after 300ms",
    );
    // The request went out on the kept connection.
    assert_eq!(b.counts(), (1, 2), "(connections, requests)");
}

#[tokio::test]
async fn a_connection_is_replaced_after_a_minute() {
    let b = keep_alive_backend(OK_KEEP_ALIVE).await;
    let endpoint = endpoint_of(http_check(b.addr.port()));
    assert_outcome(&endpoint.probe().await, ProbeOutcome::Success, "ok (200)");
    assert_outcome(&endpoint.probe().await, ProbeOutcome::Success, "ok (200)");
    assert_eq!(b.counts(), (1, 2), "(connections, requests)");
    // Only the clock moves; probes run on real time again.
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(61)).await;
    tokio::time::resume();
    assert_outcome(&endpoint.probe().await, ProbeOutcome::Success, "ok (200)");
    assert_eq!(b.counts(), (2, 3), "(connections, requests)");
}

#[tokio::test]
async fn tcp_check_passes_on_a_listening_port_and_fails_on_a_closed_one() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let addr = backend(move |s| {
        let _ = tx.send(s.peer_addr().ok());
        async {}
    })
    .await;
    assert_outcome(
        &probe(tcp_check(addr.port())).await,
        ProbeOutcome::Success,
        "ok",
    );
    assert!(rx.recv().await.is_some(), "backend saw the connection");
    let r = probe(tcp_check(closed_port().await)).await;
    assert_outcome(&r, ProbeOutcome::Refused, "connection refused");
}

#[tokio::test]
async fn tcp_check_uses_the_target() {
    let addr = backend(|_s| async {}).await;
    let mut c = tcp_check(0);
    c.target = Some(addr);
    assert_outcome(&probe(c).await, ProbeOutcome::Success, "ok");
}

#[tokio::test]
async fn tcp_check_closes_with_a_reset() {
    // SO_LINGER 0, as HAProxy closes its checks: no FIN handshake for the
    // backend, no TIME_WAIT left on the prober.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let addr = backend(move |mut s| {
        let tx = tx.clone();
        async move {
            let mut buf = [0u8; 16];
            let _ = tx.send(s.read(&mut buf).await.map_err(|e| e.kind()));
        }
    })
    .await;
    assert_outcome(
        &probe(tcp_check(addr.port())).await,
        ProbeOutcome::Success,
        "ok",
    );
    assert_eq!(
        rx.recv().await.expect("backend read"),
        Err(std::io::ErrorKind::ConnectionReset)
    );
}

// ---- HTTPS ----

/// A CA for the tests, its certificate in a PEM file for `ca_file`.
struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pem_file: tempfile::NamedTempFile,
}

fn test_ca() -> TestCa {
    let issuer = crate::support::test_ca_issuer("gslb test CA");
    let mut pem_file = tempfile::NamedTempFile::new().expect("temp file");
    pem_file
        .write_all(issuer.pem().as_bytes())
        .expect("write CA");
    TestCa { issuer, pem_file }
}

/// Which certificate a TLS backend presents.
enum Leaf<'a> {
    /// Issued by the CA.
    IssuedBy(&'a TestCa),
    /// Issued by the CA, expired in 2001.
    ExpiredBy(&'a TestCa),
    /// Issued by the CA, expiring this long from now.
    ExpiresIn(&'a TestCa, Duration),
    /// Self-signed.
    SelfSigned,
}

fn leaf(names: &[&str], kind: Leaf<'_>) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let key = KeyPair::generate().expect("key");
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("params");
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = match kind {
        Leaf::IssuedBy(ca) => params.signed_by(&key, &*ca.issuer),
        Leaf::ExpiredBy(ca) => {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
            params.signed_by(&key, &*ca.issuer)
        }
        Leaf::ExpiresIn(ca, left) => {
            params.not_after = (std::time::SystemTime::now() + left).into();
            params.signed_by(&key, &*ca.issuer)
        }
        Leaf::SelfSigned => params.self_signed(&key),
    }
    .expect("certificate");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    (cert.der().clone(), key)
}

/// A keep-alive TLS backend presenting `cert` and answering
/// [`OK_KEEP_ALIVE`]; sends the SNI of each completed handshake to the
/// returned channel.
async fn tls_backend(
    (cert, key): (CertificateDer<'static>, PrivateKeyDer<'static>),
) -> (SocketAddr, mpsc::UnboundedReceiver<Option<String>>) {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (tx, rx) = mpsc::unbounded_channel();
    let addr = backend(move |tcp| {
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        async move {
            // A client that rejects the certificate aborts the handshake here.
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                return;
            };
            let _ = tx.send(tls.get_ref().1.server_name().map(str::to_owned));
            while !read_head(&mut tls).await.is_empty() {
                if tls.write_all(OK_KEEP_ALIVE.as_bytes()).await.is_err() {
                    break;
                }
            }
        }
    })
    .await;
    (addr, rx)
}

fn https_check(port: u16, host: Option<&str>, ca: Option<&TestCa>) -> Check {
    let ca = ca.map(|ca| CaFile {
        path: ca.pem_file.path().to_owned(),
        certs: vec![ca.issuer.der().clone()],
    });
    https_check_with(
        port,
        host,
        TlsCheck {
            ca,
            ..TlsCheck::default()
        },
    )
}

fn https_check_with(port: u16, host: Option<&str>, tls: TlsCheck) -> Check {
    let mut spec = HttpCheck::new(Some(tls));
    spec.path = "/health".into();
    spec.host = host.map(str::to_owned);
    check(CheckKind::Http(spec), port)
}

#[tokio::test]
async fn https_with_a_valid_certificate_passes_and_sends_the_host_as_sni() {
    let ca = test_ca();
    let (addr, mut sni) = tls_backend(leaf(&["api.test"], Leaf::IssuedBy(&ca))).await;
    // api.test resolves nowhere: the probe must connect to the endpoint address.
    let r = probe(https_check(addr.port(), Some("api.test"), Some(&ca))).await;
    assert_outcome(&r, ProbeOutcome::Success, "ok (200)");
    assert_eq!(sni.recv().await, Some(Some("api.test".to_string())));
}

const DAY: Duration = Duration::from_secs(86_400);

/// `fail_expiry` set on an https check.
fn failing_within(mut c: Check, fail: Duration) -> Check {
    if let CheckKind::Http(h) = &mut c.kind {
        h.tls.as_mut().expect("https").fail_expiry = Some(fail);
    }
    c
}

/// `t` is within two minutes of `now + left`.
fn assert_expires_in(t: Option<std::time::SystemTime>, left: Duration) {
    let t = t.expect("the certificate's expiry is reported");
    let want = std::time::SystemTime::now() + left;
    let off = t.duration_since(want).unwrap_or_else(|e| e.duration());
    assert!(
        off < Duration::from_secs(120),
        "expiry {t:?}, wanted about {want:?}"
    );
}

#[tokio::test]
async fn https_reports_the_leaf_expiry_and_fails_inside_fail_expiry_only() {
    let ca = test_ca();
    let (soon, _) = tls_backend(leaf(&["api.test"], Leaf::ExpiresIn(&ca, DAY))).await;
    let (later, _) = tls_backend(leaf(&["api.test"], Leaf::ExpiresIn(&ca, 365 * DAY))).await;
    // No fail-expiry: a certificate expiring tomorrow passes, its expiry told.
    let r = probe(https_check(soon.port(), Some("api.test"), Some(&ca))).await;
    assert_outcome(&r, ProbeOutcome::Success, "ok (200)");
    assert_expires_in(r.certificate_expiry, DAY);
    // fail-expiry 3d: the same certificate fails, as TLS, saying why.
    let c = failing_within(
        https_check(soon.port(), Some("api.test"), Some(&ca)),
        3 * DAY,
    );
    let r = probe(c).await;
    assert_eq!(r.outcome, ProbeOutcome::Tls, "{r:?}");
    assert!(
        r.reason.starts_with("certificate expires in 23h ")
            && r.reason.ends_with(" (fail-expiry 3days)"),
        "{r:?}"
    );
    assert_expires_in(r.certificate_expiry, DAY);
    // A certificate good for a year passes the same check.
    let c = failing_within(
        https_check(later.port(), Some("api.test"), Some(&ca)),
        3 * DAY,
    );
    let r = probe(c).await;
    assert_outcome(&r, ProbeOutcome::Success, "ok (200)");
    assert_expires_in(r.certificate_expiry, 365 * DAY);
}

#[tokio::test]
async fn a_kept_connection_keeps_reporting_its_certificate() {
    let ca = test_ca();
    let (addr, mut handshakes) =
        tls_backend(leaf(&["api.test"], Leaf::ExpiresIn(&ca, 2 * DAY))).await;
    let c = failing_within(
        https_check(addr.port(), Some("api.test"), Some(&ca)),
        3 * DAY,
    );
    let endpoint = endpoint_of(c);
    for _ in 0..3 {
        let r = endpoint.probe().await;
        assert_eq!(r.outcome, ProbeOutcome::Tls, "{r:?}");
        assert!(
            r.reason.starts_with("certificate expires in 1day 23h"),
            "{r:?}"
        );
        assert_expires_in(r.certificate_expiry, 2 * DAY);
    }
    assert!(handshakes.recv().await.is_some());
    assert!(
        handshakes.try_recv().is_err(),
        "one handshake for three probes: the connection was kept"
    );
}

#[tokio::test]
async fn an_expired_certificate_not_verified_fails_only_with_fail_expiry() {
    let ca = test_ca();
    let (addr, _) = tls_backend(leaf(&["api.test"], Leaf::ExpiredBy(&ca))).await;
    let unverified = || TlsCheck {
        verify: false,
        ..TlsCheck::default()
    };
    let r = probe(https_check_with(
        addr.port(),
        Some("api.test"),
        unverified(),
    ))
    .await;
    assert_outcome(&r, ProbeOutcome::Success, "ok (200)");
    let r = probe(failing_within(
        https_check_with(addr.port(), Some("api.test"), unverified()),
        3 * DAY,
    ))
    .await;
    assert_eq!(r.outcome, ProbeOutcome::Tls, "{r:?}");
    assert!(
        r.reason.starts_with("certificate expired ")
            && r.reason.ends_with(" ago (fail-expiry 3days)"),
        "{r:?}"
    );
}

#[tokio::test]
async fn https_probes_reuse_the_verified_connection() {
    let ca = test_ca();
    let (addr, mut handshakes) = tls_backend(leaf(&["api.test"], Leaf::IssuedBy(&ca))).await;
    let endpoint = endpoint_of(https_check(addr.port(), Some("api.test"), Some(&ca)));
    for _ in 0..3 {
        assert_outcome(&endpoint.probe().await, ProbeOutcome::Success, "ok (200)");
    }
    assert!(handshakes.recv().await.is_some());
    assert!(
        handshakes.try_recv().is_err(),
        "one handshake for three probes"
    );
}

#[tokio::test]
async fn endpoints_hanging_in_the_tls_handshake_do_not_hold_up_others() {
    // 300 endpoints whose backend accepts and never answers: more than the
    // TLS set-ups gslb runs at once (128), each hanging for its timeout.
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let frozen = backend(move |s| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let _keep = s;
            std::future::pending::<()>().await;
        }
    })
    .await;
    let ca = test_ca();
    let mut c = https_check(frozen.port(), Some("api.test"), Some(&ca));
    c.timeout = Duration::from_secs(3);
    let hung_check = CheckProber::new(Arc::new(c.clone())).expect("prober");
    let mut hung = tokio::task::JoinSet::new();
    for _ in 0..300 {
        let endpoint = hung_check.for_endpoint(LOCALHOST).expect("endpoint");
        hung.spawn(async move { endpoint.probe().await });
    }
    // Every set-up slot is taken by a hanging handshake.
    while accepted.load(Ordering::SeqCst) < 128 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (healthy, _sni) = tls_backend(leaf(&["api.test"], Leaf::IssuedBy(&ca))).await;
    c.port = healthy.port();
    let r = probe(c).await;
    assert_outcome(&r, ProbeOutcome::Success, "ok (200)");
    // Queued behind the hanging set-ups for their whole 3 s timeout, it
    // would have timed out; slots turn over every 100 ms.
    assert!(r.latency < Duration::from_secs(1), "{r:?}");
    hung.abort_all();
}

#[tokio::test]
async fn https_without_host_verifies_the_endpoint_address() {
    let ca = test_ca();
    let (addr, mut sni) = tls_backend(leaf(&["127.0.0.1"], Leaf::IssuedBy(&ca))).await;
    let r = probe(https_check(addr.port(), None, Some(&ca))).await;
    assert_outcome(&r, ProbeOutcome::Success, "ok (200)");
    // No SNI for an IP address.
    assert_eq!(sni.recv().await, Some(None));
}

#[tokio::test]
async fn https_with_host_and_target_connects_to_the_target() {
    let ca = test_ca();
    let (addr, _sni) = tls_backend(leaf(&["api.test"], Leaf::IssuedBy(&ca))).await;
    let mut c = https_check(closed_port().await, Some("api.test"), Some(&ca));
    c.target = Some(addr);
    assert_outcome(&probe(c).await, ProbeOutcome::Success, "ok (200)");
}

#[tokio::test]
async fn https_with_the_wrong_name_fails_naming_it() {
    let ca = test_ca();
    let (addr, _sni) = tls_backend(leaf(&["api.test"], Leaf::IssuedBy(&ca))).await;
    let r = probe(https_check(addr.port(), Some("other.test"), Some(&ca))).await;
    assert_outcome(
        &r,
        ProbeOutcome::Tls,
        "TLS: certificate not valid for name \"other.test\"",
    );
}

#[tokio::test]
async fn https_with_an_expired_certificate_fails() {
    let ca = test_ca();
    let (addr, _sni) = tls_backend(leaf(&["api.test"], Leaf::ExpiredBy(&ca))).await;
    let r = probe(https_check(addr.port(), Some("api.test"), Some(&ca))).await;
    assert_outcome(&r, ProbeOutcome::Tls, "TLS: certificate expired");
}

#[tokio::test]
async fn https_self_signed_fails_unless_verification_is_off() {
    let (addr, _sni) = tls_backend(leaf(&["api.test"], Leaf::SelfSigned)).await;
    let mut c = https_check(addr.port(), Some("api.test"), None);
    assert_outcome(
        &probe(c.clone()).await,
        ProbeOutcome::Tls,
        "TLS: unknown issuer",
    );
    if let Some(tls) = &mut http(&mut c).tls {
        tls.verify = false;
    }
    assert_outcome(&probe(c).await, ProbeOutcome::Success, "ok (200)");
}

#[tokio::test]
async fn https_with_a_ca_certificate_as_the_servers_own_fails_saying_so() {
    // The server presents a CA certificate (basic constraints CA:TRUE) for
    // its name, trusted as the CA: webpki refuses it as an end entity, and
    // rustls passes that on as Other(OtherError(CaUsedAsEndEntity)).
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec!["api.test".to_string()]).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    params
        .distinguished_name
        .push(DnType::CommonName, "api.test");
    let cert = params.self_signed(&key).expect("certificate").der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let (addr, _sni) = tls_backend((cert.clone(), key)).await;
    let mut c = https_check(addr.port(), Some("api.test"), None);
    if let Some(tls) = &mut http(&mut c).tls {
        tls.ca = Some(CaFile {
            path: "ca.pem".into(),
            certs: vec![cert],
        });
    }
    assert_outcome(
        &probe(c).await,
        ProbeOutcome::Tls,
        "TLS: certificate is a CA certificate, not a server's (CA used as end entity)",
    );
}

#[tokio::test]
async fn https_to_a_plain_http_backend_is_a_tls_failure() {
    let addr = backend(|mut s| async move {
        // A ClientHello is no request head: answer it as an HTTP server would.
        let _ = s.read(&mut [0u8; 1024]).await;
        let _ = s
            .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            .await;
        drain(&mut s).await;
    })
    .await;
    let r = probe(https_check(addr.port(), Some("api.test"), None)).await;
    assert_eq!(r.outcome, ProbeOutcome::Tls, "{r:?}");
    assert!(r.reason.starts_with("TLS: "), "{r:?}");
}

#[tokio::test]
async fn a_kept_connection_closed_by_the_backend_is_noticed_at_once() {
    let b = keep_alive_backend(OK_KEEP_ALIVE).await;
    let endpoint = endpoint_of(http_check(b.addr.port()));
    assert_outcome(&endpoint.probe().await, ProbeOutcome::Success, "ok (200)");
    // While the backend lives, nothing is noticed, and giving up the wait
    // puts the connection back: the next probe reuses it.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), endpoint.idle_closed())
            .await
            .is_err()
    );
    assert_outcome(&endpoint.probe().await, ProbeOutcome::Success, "ok (200)");
    assert_eq!(b.counts(), (1, 2), "(connections, requests)");
    // Killed: the close is seen without any probe.
    b.kill().await;
    tokio::time::timeout(Duration::from_secs(10), endpoint.idle_closed())
        .await
        .expect("the close of the kept connection is noticed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_fails_its_region_long_before_the_next_interval() {
    let b = keep_alive_backend(OK_KEEP_ALIVE).await;
    // A 10 s interval: only the close of the kept connection can make the
    // region fail within seconds; three failures are still needed.
    let zone = format!(
        "[zone]\nname = \"gslb.test.\"\nnameservers = [\"ns1.example.net.\"]\nhostmaster = \"h.example.net.\"\n\n[check.web]\ntype = \"http\"\nport = {}\ninterval = \"10s\"\ntimeout = \"150ms\"\nrecheck = \"50ms\"\nfall = 3\n\n[region.one]\nendpoints = [\"127.0.0.1\"]\ncheck = \"web\"\n",
        b.addr.port()
    );
    let ts = crate::support::TestServer::start(&[("z.toml", &zone)]).await;
    ts.wait_first_verdicts(Duration::from_secs(15)).await;
    let region = || ts.server.health.regions()[0].clone();
    assert!(region().is_up());
    b.kill().await;
    crate::support::wait_until(Duration::from_secs(5), "region down", || async {
        !region().is_up()
    })
    .await;
    // The region reads its endpoints' cells, stored just before the
    // transition is journaled: wait for the journal too.
    crate::support::wait_until(Duration::from_secs(1), "journaled", || async {
        ts.server
            .health
            .journal()
            .iter()
            .any(|t| t.endpoint.is_some())
    })
    .await;
    let t = ts
        .server
        .health
        .journal()
        .into_iter()
        .find(|t| t.endpoint.is_some())
        .expect("endpoint transition");
    assert_eq!(t.consecutive, Some(3), "hysteresis kept: {t:?}");
}

/// Issue 23 item 6 as an operator sees it: a certificate expiring tomorrow
/// is shown as expiring in the status API and exported as a metric while
/// the region serves; with `fail-expiry = "3d"` (a reload) the region fails
/// over, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_certificate_is_shown_exported_and_fails_over_with_fail_expiry() {
    let ca = test_ca();
    let (addr, _) = tls_backend(leaf(&["api.test"], Leaf::ExpiresIn(&ca, DAY))).await;
    let zone = |extra: &str| {
        crate::support::failover_zone(&format!(
            "type = \"https\"\nport = {}\nhost = \"api.test\"\nca-file = \"{}\"\npath = \"/health\"\ninterval = \"300ms\"\ntimeout = \"250ms\"\nfall = 1\nrise = 1\n{extra}",
            addr.port(),
            ca.pem_file.path().display()
        ))
    };
    let ts = crate::support::TestServer::start_with(&[("z.toml", &zone(""))], |s| {
        s.admin = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let admin = ts.server.admin_addr.expect("admin bound");
    crate::support::wait_for_api(ts.dns, "127.0.0.1", "the primary answered").await;
    let endpoint = || async {
        let (_, body) = crate::support::http_get(&format!("http://{admin}/api/v1/status")).await;
        let st: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        st["zones"][0]["regions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "primary")
            .expect("primary")["endpoints"][0]
            .clone()
    };
    crate::support::wait_until(
        Duration::from_secs(10),
        "a probe saw the certificate",
        || async { endpoint().await["certificate_expires_ms"].is_u64() },
    )
    .await;
    let e = endpoint().await;
    assert_eq!(e["certificate_expiring"], true, "{e}");
    assert_eq!(e["last_result"], "success", "{e}");
    let ms = e["certificate_expires_ms"].as_u64().unwrap();
    let want = std::time::SystemTime::now() + DAY;
    let want_ms = want
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(ms.abs_diff(want_ms) < 120_000, "{ms} vs {want_ms}");
    let (_, metrics) = crate::support::http_get(&format!("http://{admin}/metrics")).await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("gslb_endpoint_certificate_expiry_timestamp_seconds{"))
        .unwrap_or_else(|| panic!("no expiry series in\n{metrics}"));
    assert!(
        line.contains("endpoint=\"127.0.0.1\"") && line.contains("region=\"primary\""),
        "{line}"
    );
    let secs: u64 = line.rsplit(' ').next().unwrap().parse().expect("a number");
    assert!(secs.abs_diff(want_ms / 1000) < 120, "{line}");
    // One series: the secondary (unchecked) has no certificate to show.
    let series = metrics
        .lines()
        .filter(|l| l.starts_with("gslb_endpoint_certificate_expiry_timestamp_seconds{"))
        .count();
    assert_eq!(series, 1, "{metrics}");
    // fail-expiry 3d: the next probe fails and the answer moves.
    std::fs::write(ts.zone_path("z.toml"), zone("fail-expiry = \"3d\"")).unwrap();
    ts.server.reload().await.expect("the new zone loads");
    crate::support::wait_for_api(ts.dns, "127.0.0.2", "failed over for the certificate").await;
    let e = endpoint().await;
    assert_eq!(e["last_result"], "tls", "{e}");
    let reason = e["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("certificate expires in 23h ")
            && reason.ends_with("(fail-expiry 3days)"),
        "{e}"
    );
}
