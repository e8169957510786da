//! Failover events: a webhook receiver on loopback gets exactly one JSON
//! POST per region transition, and a receiver that hangs delays neither DNS
//! answers nor failover.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::backend::Backend;
use crate::support::*;

/// What a receiver gives: its URL, the bodies it got, connections accepted.
pub(crate) type Receiver = (
    String,
    Arc<Mutex<Vec<serde_json::Value>>>,
    Arc<Mutex<usize>>,
);

/// A receiver that records every POST body; `hang` makes it never answer.
pub(crate) async fn receiver(hang: bool) -> Receiver {
    receiver_on("127.0.0.1", hang).await
}

/// [`receiver`] on an address of this host.
pub(crate) async fn receiver_on(ip: &str, hang: bool) -> Receiver {
    let l = TcpListener::bind((ip, 0)).await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let accepted = Arc::new(Mutex::new(0usize));
    let (g, a) = (got.clone(), accepted.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            *a.lock().unwrap() += 1;
            let g = g.clone();
            tokio::spawn(async move {
                let Some((_, body)) = read_post(&mut s).await else {
                    return;
                };
                if hang {
                    // Hold the connection, never answer.
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    return;
                }
                g.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).expect("JSON body"));
                answer_ok(&mut s).await;
            });
        }
    });
    (url, got, accepted)
}

fn zone(webhook: &str, us: &Backend, eu: &Backend) -> String {
    format!(
        "[zone]\nname = \"gslb.example.com.\"\nnameservers = [\"ns1.example.net.\"]\nhostmaster = \"hostmaster.example.com.\"\nwebhook = \"{webhook}\"\n{}\n[service.api]\nregions = [\"us\", \"eu\"]\n",
        backend_regions(&[("us", us.addr), ("eu", eu.addr)])
    )
}

async fn answer(ts: &TestServer) -> Vec<String> {
    addrs(&ts.query("api.gslb.example.com.", RecordType::A).await)
}

/// Both tests' opening: backends `us` (first in the failover list) and
/// `eu`, a server posting region events to `url`, first verdicts in; then
/// `us` killed and the answer failed over to `eu`.
struct FailedOver {
    ts: TestServer,
    us: Backend,
    us_ip: String,
    eu_ip: String,
    _eu: Backend,
}

async fn fail_over(url: &str) -> FailedOver {
    let mut us = Backend::start("127.0.0.2").await;
    let eu = Backend::start("127.0.0.3").await;
    let ts = TestServer::start(&[("z.toml", &zone(url, &us, &eu))]).await;
    let (us_ip, eu_ip) = (us.addr.ip().to_string(), eu.addr.ip().to_string());
    ts.wait_first_verdicts(Duration::from_secs(5)).await;

    us.kill();
    wait_until(Duration::from_secs(5), "failover to eu", || async {
        answer(&ts).await == [eu_ip.clone()]
    })
    .await;
    FailedOver {
        ts,
        us,
        us_ip,
        eu_ip,
        _eu: eu,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_gets_exactly_one_event_per_region_transition() {
    let (url, got, _) = receiver(false).await;
    let FailedOver {
        ts,
        mut us,
        us_ip,
        eu_ip: _,
        _eu,
    } = fail_over(&url).await;
    us.revive().await;
    wait_until(Duration::from_secs(5), "failback to us", || async {
        answer(&ts).await == [us_ip.clone()]
    })
    .await;
    wait_until(Duration::from_secs(5), "two events delivered", || async {
        got.lock().unwrap().len() >= 2
    })
    .await;

    let region_transitions = ts.region_transitions();
    assert_eq!(region_transitions, 2, "down, then up");
    // Give a duplicate every chance to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = got.lock().unwrap().clone();
    assert_eq!(
        events.len(),
        region_transitions,
        "exactly one event per region transition: {events:#?}"
    );
    assert_eq!(events[0]["event"], "region_state_changed");
    // The Slack-compatible line: the same facts, escaped.
    let text = events[0]["text"].as_str().unwrap();
    assert!(
        text.starts_with(
            "gslb: region gslb.example.com/us is down (was up): 0 of 1 endpoints up (min-healthy 1); "
        ) && text.ends_with("; services: api.gslb.example.com"),
        "{text}"
    );
    assert_eq!(events[0]["zone"], "gslb.example.com");
    assert_eq!(events[0]["region"], "us");
    assert_eq!(
        (events[0]["old"].as_str(), events[0]["new"].as_str()),
        (Some("up"), Some("down"))
    );
    assert_eq!(
        events[0]["services"],
        serde_json::json!(["api.gslb.example.com"])
    );
    assert!(
        events[0]["reason"]
            .as_str()
            .unwrap()
            .contains("connection refused"),
        "{}",
        events[0]["reason"]
    );
    assert!(events[0]["time"].as_str().unwrap().ends_with('Z'));
    assert!(events[0]["time_ms"].as_u64().unwrap() > 0);
    assert_eq!(
        (events[1]["old"].as_str(), events[1]["new"].as_str()),
        (Some("down"), Some("up"))
    );
    let metrics = ts.server.metrics.render();
    assert!(
        metrics.contains("gslb_webhook_deliveries_total{result=\"success\"} 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_delays_neither_dns_nor_failover() {
    let (url, _, accepted) = receiver(true).await;
    let FailedOver {
        ts,
        mut us,
        us_ip,
        eu_ip,
        _eu,
    } = fail_over(&url).await;
    // The receiver now holds the delivery of the "down" event.
    wait_until(
        Duration::from_secs(5),
        "delivery attempt in flight",
        || async { *accepted.lock().unwrap() >= 1 },
    )
    .await;
    // While it hangs, every query is answered (support::udp waits at most 1 s
    // and fails otherwise) and health keeps moving.
    for _ in 0..50 {
        assert_eq!(answer(&ts).await, [eu_ip.clone()]);
    }
    us.revive().await;
    wait_until(
        Duration::from_secs(5),
        "failback while the webhook hangs",
        || async { answer(&ts).await == [us_ip.clone()] },
    )
    .await;
    assert_eq!(ts.region_transitions(), 2);
}

/// A receiver that answers every request 500; the request heads it got.
async fn failing_receiver() -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let h = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let h = h.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                h.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf).to_ascii_lowercase());
                let _ = s
                    .write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (addr, heads)
}

/// Log lines of the test's own thread (tracing's thread-local default): the
/// server's tasks run there on the current-thread runtime.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    /// Captures this thread's INFO lines and above (the server's tasks
    /// too, on a current-thread test runtime) while the guard lives.
    fn install() -> (Captured, tracing::subscriber::DefaultGuard) {
        let log = Captured::default();
        let guard = tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_writer(log.clone())
                .with_ansi(false)
                .with_max_level(tracing::Level::INFO)
                .finish(),
        );
        (log, guard)
    }
    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_string)
            .collect()
    }
    fn count(&self, all: &[&str]) -> usize {
        self.lines()
            .iter()
            .filter(|l| all.iter().all(|s| l.contains(s)))
            .count()
    }
}

/// A webhook URL's user-info and query may hold secrets: no log line shows
/// them, whether the receiver answers 500 or refuses the connection. And a
/// receiver that keeps failing, with a queue that overflows, costs a few
/// lines, each saying how many similar ones it stands for.
#[tokio::test]
async fn webhook_secrets_never_reach_the_log_and_repeated_warnings_are_throttled() {
    let (log, _guard) = Captured::install();
    let (failing, heads) = failing_receiver().await;
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let zone_url = format!("http://hook-user:hunter2@{failing}/hook?key=s3cret-zone");
    let global_url = format!("http://admin:swordfish@{refused}/events?token=s3cret-global");
    // Shown by scheme, host and port: Slack, Discord and Teams keep their
    // secret in the path.
    let (zone_shown, global_shown) = (format!("http://{failing}/…"), format!("http://{refused}/…"));
    let zone = format!(
        "[zone]\nname = \"gslb.example.com.\"\nnameservers = [\"ns1.example.net.\"]\nhostmaster = \"hostmaster.example.com.\"\nwebhook = \"{zone_url}\"\n\n[region.us]\nendpoints = [\"192.0.2.1\"]\n\n[region.eu]\nendpoints = [\"192.0.2.2\"]\n\n[service.api]\nregions = [\"us\", \"eu\"]\n"
    );
    let ts = TestServer::start_with(&[("z.toml", &zone)], |s| {
        s.webhook = Some(global_url.clone());
    })
    .await;
    let flip = |down: bool| {
        let o = if down {
            gslb::health::Override::Down
        } else {
            gslb::health::Override::Auto
        };
        ts.server.health.set_override(None, "us", None, o).unwrap();
    };

    // One event (the dispatcher subscribed when the server started): both URLs fail it and retry.
    flip(true);
    wait_until(
        Duration::from_secs(5),
        "first retries of both URLs",
        || async {
            !heads.lock().unwrap().is_empty()
                && log.count(&["retrying", &zone_shown]) >= 1
                && log.count(&["retrying", &global_shown]) >= 1
        },
    )
    .await;
    // The secrets do go to the receiver: redaction is for the log only.
    let head = heads.lock().unwrap()[0].clone();
    assert!(head.starts_with("post /hook?key=s3cret-zone "), "{head}");
    assert!(head.contains("authorization: basic "), "{head}");

    // A storm of transitions while both workers are stuck retrying the
    // first event: each queue fills (QUEUE_LEN) and the rest is dropped.
    let storm = gslb::events::QUEUE_LEN + 100;
    for i in 0..storm {
        flip(i % 2 == 1);
        tokio::task::yield_now().await; // the dispatcher takes each one
    }
    let dropped: f64 = ts
        .server
        .metrics
        .render()
        .lines()
        .filter(|l| l.starts_with("gslb_webhook_events_dropped_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(dropped >= 2.0 * 90.0, "both queues overflowed: {dropped}");
    for shown in [&zone_shown, &global_shown] {
        assert_eq!(
            log.count(&["event dropped", shown]),
            1,
            "one drop line per URL for {dropped} drops: {:#?}",
            log.lines()
        );
    }

    // Once the period is over, the next line of each kind says how many it
    // stands for.
    wait_until(
        gslb::events::LOG_PERIOD + Duration::from_secs(10),
        "lines counting what was suppressed",
        || {
            flip(true);
            flip(false);
            async {
                tokio::task::yield_now().await;
                [&zone_shown, &global_shown].iter().all(|shown| {
                    log.count(&["queue full: event dropped (", "similar suppressed)", shown]) >= 1
                        && log.count(&["retrying in", "similar suppressed)", shown]) >= 1
                })
            }
        },
    )
    .await;
    let lines = log.lines();
    for shown in [&zone_shown, &global_shown] {
        let retries = log.count(&["retrying in", shown]);
        assert!(
            retries <= 3,
            "{retries} retry lines for {shown}: {lines:#?}"
        );
    }
    assert!(
        log.count(&["refused"]) >= 1,
        "the cause of a failed connection is logged: {lines:#?}"
    );
    for secret in [
        "hunter2",
        "s3cret",
        "swordfish",
        "hook-user",
        "key=",
        "token=",
        "/hook",
        "/events",
    ] {
        let leaks: Vec<&String> = lines.iter().filter(|l| l.contains(secret)).collect();
        assert!(leaks.is_empty(), "{secret:?} logged: {leaks:#?}");
    }
}

// Issue 24 item 9. Fails on the code before it: every endpoint and region
// transition shared one broadcast channel of 1,024 and each URL a queue of
// 1,024, so when thousands of endpoints failed at once region events were
// lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_regions_failing_at_once_lose_no_event() {
    const N: usize = 2000;
    let (url, got, _) = receiver(false).await;
    let mut backend = Backend::start("127.0.0.2").await;
    let mut z = format!(
        "[zone]\nname = \"gslb.example.com.\"\nnameservers = [\"ns1.example.net.\"]\nhostmaster = \"hostmaster.example.com.\"\nwebhook = \"{url}\"\n\n[check.c]\ntype = \"http\"\nport = {}\npath = \"/health\"\ninterval = \"1s\"\ntimeout = \"500ms\"\nrecheck = \"100ms\"\nfall = 2\nrise = 1\n",
        backend.addr.port()
    );
    for i in 0..N {
        z.push_str(&format!(
            "\n[region.r{i}]\nendpoints = [\"{}\"]\ncheck = \"c\"\n",
            backend.addr.ip()
        ));
    }
    let names: Vec<String> = (0..N).map(|i| format!("\"r{i}\"")).collect();
    z.push_str(&format!(
        "\n[service.api]\nregions = [{}]\n",
        names.join(", ")
    ));
    let ts = TestServer::start(&[("z.toml", &z)]).await;
    ts.wait_first_verdicts(Duration::from_secs(10)).await;
    backend.kill();
    wait_until(Duration::from_secs(60), "every region's event", || async {
        got.lock().unwrap().len() >= N
    })
    .await;
    let mut per_region = std::collections::HashMap::new();
    for e in got.lock().unwrap().iter() {
        assert_eq!(e["new"], "down", "{e}");
        *per_region
            .entry(e["region"].as_str().unwrap_or_default().to_string())
            .or_insert(0) += 1;
    }
    assert_eq!(per_region.len(), N, "one event for every region");
    assert!(per_region.values().all(|n| *n == 1), "no duplicate");
    let metrics = ts.server.metrics.render();
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("gslb_webhook_events_dropped_total") && !l.ends_with(" 0")),
        "nothing dropped"
    );
}

/// One request from `s`: its head (lower case) and body, once whole.
async fn read_post(s: &mut tokio::net::TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap_or(0))
            })
            .unwrap_or(0);
        if buf.len() >= end + 4 + len {
            return Some((head, buf[end + 4..end + 4 + len].to_vec()));
        }
    }
}

async fn answer_ok(s: &mut tokio::net::TcpStream) {
    let _ = s
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .await;
}

/// A receiver that keeps each POST's head (lower case) and raw body.
async fn raw_receiver() -> (String, Arc<Mutex<Vec<(String, Vec<u8>)>>>) {
    let l = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let g = g.clone();
            tokio::spawn(async move {
                if let Some(post) = read_post(&mut s).await {
                    g.lock().unwrap().push(post);
                    answer_ok(&mut s).await;
                }
            });
        }
    });
    (url, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_carry_a_user_agent_and_a_signature_the_receiver_can_check() {
    let (url, got) = raw_receiver().await;
    let mut us = Backend::start("127.0.0.2").await;
    let eu = Backend::start("127.0.0.3").await;
    let ts = TestServer::start_with(&[("z.toml", &zone(&url, &us, &eu))], |s| {
        s.webhook_secret = Some("whsec-test".into());
    })
    .await;
    ts.wait_first_verdicts(Duration::from_secs(5)).await;
    us.kill();
    wait_until(Duration::from_secs(10), "the event arrives", || async {
        !got.lock().unwrap().is_empty()
    })
    .await;
    let (head, body) = got.lock().unwrap()[0].clone();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                l.strip_prefix(&format!("{name}:"))
                    .map(|v| v.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no {name} in\n{head}"))
    };
    assert_eq!(
        header("user-agent"),
        format!("gslb/{}", env!("CARGO_PKG_VERSION"))
    );
    // As a receiver checks it: the time is recent, and the HMAC-SHA256 of
    // "{t}." + the body under the shared secret matches.
    let sig = header("x-gslb-signature");
    let (t, v1) = sig
        .strip_prefix("t=")
        .and_then(|r| r.split_once(",v1="))
        .unwrap_or_else(|| panic!("t=...,v1=... expected: {sig}"));
    let t: u64 = t.parse().expect("seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now.abs_diff(t) <= 60, "signed at {t}, now {now}");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"whsec-test");
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(&body);
    let tag: Vec<u8> = (0..v1.len() / 2)
        .map(|i| u8::from_str_radix(&v1[2 * i..2 * i + 2], 16).expect("hex"))
        .collect();
    ring::hmac::verify(&key, &signed, &tag).expect("the signature verifies");
    // A different body (or secret) does not.
    signed.push(b' ');
    assert!(ring::hmac::verify(&key, &signed, &tag).is_err());
    let event: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(event["region"], "us");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_webhooks_are_unsigned() {
    let (url, got) = raw_receiver().await;
    let mut us = Backend::start("127.0.0.2").await;
    let eu = Backend::start("127.0.0.3").await;
    let ts = TestServer::start(&[("z.toml", &zone(&url, &us, &eu))]).await;
    ts.wait_first_verdicts(Duration::from_secs(5)).await;
    us.kill();
    wait_until(Duration::from_secs(10), "the event arrives", || async {
        !got.lock().unwrap().is_empty()
    })
    .await;
    let head = got.lock().unwrap()[0].0.clone();
    assert!(head.contains("user-agent: gslb/"), "{head}");
    assert!(!head.contains("x-gslb-signature"), "{head}");
}

/// A host with no CA certificates (a `scratch` image, a bare system):
/// reqwest builds no client at all there, so webhooks were lost. gslb falls
/// back to its built-in roots, says so once, and delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_system_certificate_store_webhooks_are_still_sent() {
    let (url, got) = raw_receiver().await;
    let mut us = Backend::start("127.0.0.2").await;
    let eu = Backend::start("127.0.0.3").await;
    let zones = tempfile::tempdir().unwrap();
    std::fs::write(zones.path().join("z.toml"), zone(&url, &us, &eu)).unwrap();
    let no_certs = tempfile::tempdir().unwrap();
    let log = zones.path().join("stderr.log");
    let child = serve_command(free_udp_tcp_addr(), zones.path())
        .env("SSL_CERT_FILE", no_certs.path().join("none.pem"))
        .env("SSL_CERT_DIR", no_certs.path())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("gslb serve");
    let _child = Child(child);
    wait_until(
        Duration::from_secs(10),
        "the fallback is logged",
        || async {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("no CA certificates found on this system")
        },
    )
    .await;
    us.kill();
    wait_until(Duration::from_secs(15), "the event arrives", || async {
        !got.lock().unwrap().is_empty()
    })
    .await;
    let body = got.lock().unwrap()[0].1.clone();
    let event: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(
        (event["region"].as_str(), event["new"].as_str()),
        (Some("us"), Some("down"))
    );
}

// Issue 22 (logs): one line per service whose answer a transition moved,
// saying from what to what; none for a transition that moves no answer.
#[tokio::test]
async fn each_service_answer_change_is_one_log_line() {
    let (log, _guard) = Captured::install();
    let zone = "[zone]\nname = \"gslb.example.com.\"\nnameservers = [\"ns1.example.net.\"]\nhostmaster = \"hostmaster.example.com.\"\n\n[region.us]\nendpoints = [\"192.0.2.1\"]\n\n[region.eu]\nendpoints = [\"192.0.2.2\"]\n\n[service.api]\nregions = [\"us\", \"eu\"]\n\n[service.www]\npolicy = \"weighted\"\nweights = { us = 3, eu = 1 }\n\n[service.backup]\nregions = [\"eu\", \"us\"]\n";
    let ts = TestServer::start(&[("z.toml", zone)]).await;
    let set = |region: &str, o: gslb::health::Override| {
        ts.server
            .health
            .set_override(None, region, None, o)
            .unwrap();
    };
    set("us", gslb::health::Override::Down);
    wait_until(Duration::from_secs(5), "the lines", || async {
        log.count(&["api: us -> eu"]) == 1 && log.count(&["www: eu 25%, us 75% -> eu"]) == 1
    })
    .await;
    set("eu", gslb::health::Override::Down);
    wait_until(Duration::from_secs(5), "all down", || async {
        log.count(&["api: eu -> fail-open: us"]) == 1
    })
    .await;
    set("eu", gslb::health::Override::Auto);
    wait_until(Duration::from_secs(5), "eu back", || async {
        log.count(&["api: fail-open: us -> eu"]) == 1
            && log.count(&["www: fail-open: eu 25%, us 75% -> eu"]) == 1
    })
    .await;
    set("us", gslb::health::Override::Auto);
    wait_until(Duration::from_secs(5), "us back", || async {
        log.count(&["api: eu -> us"]) == 1 && log.count(&["www: eu -> eu 25%, us 75%"]) == 1
    })
    .await;
    // backup (eu first) did not move when us went down or came back:
    // only when eu went down too (both down: fail-open), and back.
    let lines: Vec<String> = log
        .lines()
        .into_iter()
        .filter(|l| l.contains("backup:"))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(
        lines[0].contains("backup: eu -> fail-open: eu"),
        "{lines:#?}"
    );
    assert!(
        lines[1].contains("backup: fail-open: eu -> eu"),
        "{lines:#?}"
    );
    assert!(
        log.lines().iter().all(|l| !l.contains("Some(")),
        "{:#?}",
        log.lines()
    );
}
