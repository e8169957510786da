//! The admin API as operators and Prometheus see it: `/metrics` during a
//! failover (checked by `promtool`), the status JSON field by field, the
//! bearer token on overrides, liveness and readiness, reload, the CLI
//! against a running server, and the live status page in headless Chromium
//! driven over WebDriver.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use gslb::metrics::{
    BUILD_INFO, CONFIG_LAST_RELOAD, CONFIG_RELOADS, DNS_ANSWERS, DNS_QUERIES, ENDPOINT_OVERRIDE,
    ENDPOINT_UP, PROBE_BUCKETS, PROBE_DURATION, PROBE_RESULTS, REGION_OVERRIDE, REGION_UP,
    SERVICE_DEGRADED, STATE_TRANSITIONS,
};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};

use crate::backend::{Backend, Mode};
use crate::support::*;

const ZONE_NAME: &str = "gslb.test";
const API: &str = "api.gslb.test.";
const PRIMARY_IP: &str = "127.0.0.2";
const SECONDARY_IP: &str = "127.0.0.3";
const TOKEN: &str = "secret";
/// Bound on every wait: failover takes well under a second here.
const LIMIT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------
// Set-up

/// How the two checks probe.
struct Probing {
    interval: &'static str,
    timeout: &'static str,
    /// `rise` of the primary's check.
    rise: u32,
}

const FAST: Probing = Probing {
    interval: "200ms",
    timeout: "150ms",
    rise: 2,
};

/// A zone with service `api` failing over from `primary` (127.0.0.2) to
/// `secondary` (127.0.0.3), each region probed by its own HTTP check on
/// its backend's port, plus a static record `www`.
fn zone_text(primary_port: u16, secondary_port: u16, p: &Probing) -> String {
    let check = |name: &str, port: u16, rise: u32| {
        format!(
            "[check.{name}]\ntype = \"http\"\nport = {port}\npath = \"/health\"\n\
             interval = \"{}\"\ntimeout = \"{}\"\nrecheck = \"50ms\"\nfall = 3\nrise = {rise}\n\n",
            p.interval, p.timeout
        )
    };
    format!(
        "[zone]\nname = \"{ZONE_NAME}.\"\nnameservers = [\"ns1.example.net.\"]\n\
         hostmaster = \"hostmaster@example.com\"\nserial = 7\n\n\
         [[record]]\nname = \"www\"\ntype = \"A\"\nvalue = \"192.0.2.1\"\n\n\
         {}{}\
         [region.primary]\nendpoints = [\"{PRIMARY_IP}\"]\ncheck = \"primary\"\n\n\
         [region.secondary]\nendpoints = [\"{SECONDARY_IP}\"]\ncheck = \"secondary\"\n\n\
         [service.api]\npolicy = \"failover\"\nregions = [\"primary\", \"secondary\"]\n\
         ttl = 60\ndegraded-ttl = 5\n",
        check("primary", primary_port, p.rise),
        check("secondary", secondary_port, 2),
    )
}

/// Two healthy backends and a server with the admin API on 127.0.0.1:0.
struct Rig {
    primary: Backend,
    secondary: Backend,
    ts: TestServer,
    admin: SocketAddr,
    http: reqwest::Client,
}

impl Rig {
    async fn start(p: &Probing, token: Option<&str>) -> Rig {
        Self::start_backends_in(p, token, Mode::Healthy).await
    }

    /// Like [`Rig::start`], the backends in `mode` before the first probe.
    async fn start_backends_in(p: &Probing, token: Option<&str>, mode: Mode) -> Rig {
        let primary = Backend::start(PRIMARY_IP).await;
        let secondary = Backend::start(SECONDARY_IP).await;
        primary.set(mode);
        secondary.set(mode);
        let text = zone_text(primary.addr.port(), secondary.addr.port(), p);
        let token = token.map(str::to_string);
        let ts = TestServer::start_with(&[("gslb.test.toml", &text)], |s| {
            s.admin = Some("127.0.0.1:0".parse().unwrap());
            s.admin_token = token;
        })
        .await;
        let admin = ts.server.admin_addr.expect("admin API bound");
        Rig {
            primary,
            secondary,
            ts,
            admin,
            http: client(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// GET: (status, body).
    async fn get(&self, path: &str) -> (u16, String) {
        let r = self.http.get(self.url(path)).send().await.expect("GET");
        let status = r.status().as_u16();
        (status, r.text().await.expect("body"))
    }

    /// POST with an optional bearer token: (status, headers, body).
    async fn post(
        &self,
        path: &str,
        token: Option<&str>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut req = self.http.post(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.expect("POST");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, headers, body)
    }

    async fn status(&self) -> Value {
        let (code, body) = self.get("/api/v1/status").await;
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("status is JSON")
    }

    async fn scrape(&self) -> Scrape {
        let (code, body) = self.get("/metrics").await;
        assert_eq!(code, 200, "{body}");
        Scrape::parse(&body)
    }

    /// Wait until every endpoint has had a successful probe and both regions are up.
    async fn wait_healthy(&self) {
        wait_for(LIMIT, "both endpoints probed healthy", || async {
            let st = self.status().await;
            st["ready"] == true
                && ["primary", "secondary"].iter().all(|r| {
                    let reg = region(&st, r);
                    reg["up"] == true && reg["endpoints"][0]["last_result"] == "success"
                })
        })
        .await;
    }

    /// Addresses DNS answers for `api` now (A over UDP).
    async fn api(&self) -> Vec<String> {
        let m = self.ts.query(API, RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m}");
        addrs(&m)
    }
}

/// An HTTP client for loopback only.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

/// Like `support::wait_until`, also for closures that borrow mutably.
async fn wait_for<F, Fut>(limit: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Poll `f` every 10 ms until it gives a value.
async fn poll<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A region of the first zone in the status document.
fn region<'a>(st: &'a Value, name: &str) -> &'a Value {
    st["zones"][0]["regions"]
        .as_array()
        .expect("regions")
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("region {name} in {st:#}"))
}

// ---------------------------------------------------------------------------
// Prometheus text exposition, parsed simply: `name{labels} value` lines.

struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

struct Scrape {
    text: String,
    samples: Vec<Sample>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let samples = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (series, value) = l
                    .rsplit_once(' ')
                    .unwrap_or_else(|| panic!("sample line {l:?}"));
                let (name, labels) = match series.split_once('{') {
                    Some((n, rest)) => (
                        n,
                        parse_labels(rest.strip_suffix('}').expect("labels end with }")),
                    ),
                    None => (series, BTreeMap::new()),
                };
                Sample {
                    name: name.to_string(),
                    labels,
                    value: value.parse().unwrap_or_else(|_| panic!("value in {l:?}")),
                }
            })
            .collect();
        Scrape {
            text: text.to_string(),
            samples,
        }
    }

    /// The value of the series with exactly these labels.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let found: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
            .collect();
        assert!(found.len() <= 1, "{name}{want:?} appears twice");
        found.first().copied()
    }

    /// Like [`Scrape::get`], the series must exist.
    fn must(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no series {name}{labels:?} in\n{}", self.text))
    }

    /// Every sample of `name` whose labels include these.
    fn matching(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The `# TYPE` of a family.
    fn kind(&self, name: &str) -> Option<&str> {
        self.text.lines().find_map(|l| {
            l.strip_prefix("# TYPE ")
                .and_then(|r| r.strip_prefix(name))
                .and_then(|r| r.strip_prefix(' '))
        })
    }
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek() == Some(&',') || chars.peek() == Some(&' ') {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            return out;
        }
        assert_eq!(chars.next(), Some('"'), "label {key} is quoted in {s:?}");
        let mut value = String::new();
        loop {
            match chars.next().expect("label value ends") {
                '\\' => match chars.next().expect("escape") {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.insert(key, value);
    }
}

/// `target/NAME` in the package folder, its parent folder created.
fn target_path(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(name);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("create target folder");
    p
}

/// `promtool check metrics` on a scrape: (success, everything it printed).
fn promtool_check(file: &Path) -> (bool, String) {
    let out = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(file).expect("scrape file"))
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool is required for this test (apt install prometheus, or put promtool on PATH): {e}")
        });
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), printed)
}

// ---------------------------------------------------------------------------
// 1. Metrics during a failover

#[tokio::test]
async fn metrics_follow_a_region_failover_and_pass_promtool() {
    let mut rig = Rig::start(&FAST, None).await;
    rig.wait_healthy().await;
    let z = ("zone", ZONE_NAME);
    let primary = [z, ("region", "primary")];
    let secondary = [z, ("region", "secondary")];
    let primary_ep = [z, ("region", "primary"), ("endpoint", PRIMARY_IP)];
    let with = |base: &[(&'static str, &'static str)], extra: (&'static str, &'static str)| {
        let mut v = base.to_vec();
        v.push(extra);
        v
    };

    let before = rig.scrape().await;
    assert_eq!(before.must(REGION_UP, &primary), 1.0);
    assert_eq!(before.must(REGION_UP, &secondary), 1.0);
    assert_eq!(before.must(ENDPOINT_UP, &primary_ep), 1.0);
    assert_eq!(before.must(REGION_OVERRIDE, &primary), 0.0);
    assert_eq!(before.must(ENDPOINT_OVERRIDE, &primary_ep), 0.0);
    assert_eq!(before.must(SERVICE_DEGRADED, &[z, ("service", "api")]), 0.0);
    // `success` exists from the first probe on; a failure reason's series
    // only from its first occurrence (10,000 endpoints x 9 reasons would be
    // 90,000 series of zeros).
    assert_eq!(
        before.get(PROBE_RESULTS, &with(&primary_ep, ("result", "refused"))),
        None
    );
    assert!(before.must(PROBE_RESULTS, &with(&primary_ep, ("result", "success"))) >= 1.0);
    assert_eq!(
        before.get(STATE_TRANSITIONS, &with(&primary_ep, ("to", "down"))),
        None,
        "no transition yet"
    );

    // Traffic goes to the primary...
    let (mut to_primary, mut to_secondary) = (0.0, 0.0);
    for _ in 0..3 {
        assert_eq!(rig.api().await, [PRIMARY_IP]);
        to_primary += 1.0;
    }
    // ... until it dies.
    rig.primary.kill();
    let (early, late) = (std::cell::Cell::new(0.0), std::cell::Cell::new(0.0));
    wait_for(LIMIT, "DNS answers the secondary", || async {
        let a = rig.api().await;
        if a == [PRIMARY_IP] {
            early.set(early.get() + 1.0);
            false
        } else {
            assert_eq!(a, [SECONDARY_IP], "failover answers");
            late.set(late.get() + 1.0);
            true
        }
    })
    .await;
    to_primary += early.get();
    to_secondary += late.get();
    for _ in 0..5 {
        assert_eq!(rig.api().await, [SECONDARY_IP]);
        to_secondary += 1.0;
    }

    let after = rig.scrape().await;
    assert_eq!(
        after.must(REGION_UP, &primary),
        0.0,
        "primary region 1 -> 0"
    );
    assert_eq!(after.must(REGION_UP, &secondary), 1.0);
    assert_eq!(after.must(ENDPOINT_UP, &primary_ep), 0.0);
    assert_eq!(
        after.must(STATE_TRANSITIONS, &with(&primary_ep, ("to", "down"))),
        1.0,
        "endpoint series"
    );
    assert_eq!(
        after.must(
            STATE_TRANSITIONS,
            &[z, ("region", "primary"), ("endpoint", ""), ("to", "down")]
        ),
        1.0,
        "region series has endpoint=\"\""
    );
    // Region transitions exist at 0 before the first one (increase() then
    // sees the first).
    assert_eq!(
        after.get(
            STATE_TRANSITIONS,
            &[z, ("region", "secondary"), ("endpoint", ""), ("to", "down")]
        ),
        Some(0.0)
    );
    let svc = |r| [z, ("service", "api"), ("region", r)];
    assert_eq!(after.must(DNS_ANSWERS, &svc("primary")), to_primary);
    assert_eq!(after.must(DNS_ANSWERS, &svc("secondary")), to_secondary);
    assert_eq!(
        after.must(
            DNS_QUERIES,
            &[z, ("qtype", "A"), ("rcode", "NOERROR"), ("proto", "udp")]
        ),
        to_primary + to_secondary,
        "every query counted once"
    );
    assert_eq!(
        after.get(
            DNS_QUERIES,
            &[z, ("qtype", "A"), ("rcode", "NOERROR"), ("proto", "tcp")]
        ),
        None
    );
    assert!(after.must(PROBE_RESULTS, &with(&primary_ep, ("result", "refused"))) >= 3.0);
    // Each success counted is a request the secondary's backend really served.
    let secondary_ok = after.must(
        PROBE_RESULTS,
        &[
            z,
            ("region", "secondary"),
            ("endpoint", SECONDARY_IP),
            ("result", "success"),
        ],
    );
    let served = rig
        .secondary
        .hits
        .load(std::sync::atomic::Ordering::Relaxed) as f64;
    assert!(
        secondary_ok >= 1.0 && served >= secondary_ok,
        "{secondary_ok} successes, {served} requests served"
    );
    assert_eq!(after.must(SERVICE_DEGRADED, &[z, ("service", "api")]), 1.0);
    assert_eq!(after.must(CONFIG_RELOADS, &[("result", "success")]), 1.0);
    assert_eq!(after.must(CONFIG_RELOADS, &[("result", "error")]), 0.0);
    assert_eq!(
        after.must(BUILD_INFO, &[("version", env!("CARGO_PKG_VERSION"))]),
        1.0
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let loaded = after.must(CONFIG_LAST_RELOAD, &[]);
    assert!(
        (now - 120.0..=now + 1.0).contains(&loaded),
        "{loaded} vs {now}"
    );

    // The probe histogram: explicit buckets, cumulative, +Inf = count.
    // Per region: an endpoint label would make 16 series per endpoint.
    let hist = [z, ("region", "primary")];
    let bucket_name = format!("{PROBE_DURATION}_bucket");
    let mut buckets: Vec<(f64, f64)> = after
        .matching(&bucket_name, &hist)
        .iter()
        .map(|s| {
            (
                s.labels["le"].parse::<f64>().expect("le is a number"),
                s.value,
            )
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let les: Vec<f64> = buckets.iter().map(|b| b.0).collect();
    let mut want = PROBE_BUCKETS.to_vec();
    want.push(f64::INFINITY);
    assert_eq!(les, want, "explicit buckets");
    assert!(
        buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "cumulative: {buckets:?}"
    );
    let count = after.must(&format!("{PROBE_DURATION}_count"), &hist);
    assert_eq!(buckets.last().unwrap().1, count);
    assert!(
        count >= 4.0,
        "at least one success and three refusals: {count}"
    );
    assert!(after.must(&format!("{PROBE_DURATION}_sum"), &hist) > 0.0);

    for (name, kind) in [
        (REGION_UP, "gauge"),
        (ENDPOINT_UP, "gauge"),
        (REGION_OVERRIDE, "gauge"),
        (ENDPOINT_OVERRIDE, "gauge"),
        (STATE_TRANSITIONS, "counter"),
        (DNS_ANSWERS, "counter"),
        (DNS_QUERIES, "counter"),
        (PROBE_RESULTS, "counter"),
        (PROBE_DURATION, "histogram"),
        (SERVICE_DEGRADED, "gauge"),
        (CONFIG_RELOADS, "counter"),
        (CONFIG_LAST_RELOAD, "gauge"),
        (BUILD_INFO, "gauge"),
    ] {
        assert_eq!(after.kind(name), Some(kind), "# TYPE of {name}");
    }

    // The same page through promtool's linter (CI also runs it on this file).
    let file = target_path("metrics-scrape.txt");
    std::fs::write(&file, &after.text).expect("write scrape");
    println!("metrics scrape written to {}", file.display());
    let (ok, printed) = promtool_check(&file);
    assert!(
        ok && printed.trim().is_empty(),
        "promtool check metrics:\n{printed}"
    );
}

// ---------------------------------------------------------------------------
// 2. Status JSON before and after a failover

#[tokio::test]
async fn status_reports_a_failover_field_by_field() {
    // rise 4 on the primary: its way back up is slow enough to watch.
    let slow_rise = Probing { rise: 4, ..FAST };
    let mut rig = Rig::start(&slow_rise, None).await;
    rig.wait_healthy().await;

    let st = rig.status().await;
    assert_eq!(st["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(st["ready"], true);
    let zone = &st["zones"][0];
    assert_eq!(st["zones"].as_array().unwrap().len(), 1);
    assert_eq!(zone["name"], ZONE_NAME);
    assert_eq!(zone["serial"], 7);
    assert!(
        zone["file"].as_str().unwrap().ends_with("gslb.test.toml"),
        "{zone}"
    );
    let svc = &zone["services"][0];
    assert_eq!(svc["key"], "api");
    assert_eq!(svc["name"], API);
    assert_eq!(svc["policy"], "failover");
    assert_eq!(svc["degraded"], false);
    assert_eq!(svc["all_down"], false);
    assert_eq!(svc["ttl"], 60);
    assert_eq!(svc["answer"]["kind"], "answer");
    assert_eq!(svc["answer"]["regions"], json!([["primary", 1.0]]));
    assert_eq!(svc["answer"]["addresses"], json!([PRIMARY_IP]));
    assert_eq!(
        svc["regions"],
        json!([
            {"name": "primary", "weight": 1, "up": true},
            {"name": "secondary", "weight": 1, "up": true},
        ])
    );
    let p = region(&st, "primary");
    assert_eq!(p["up"], true);
    assert_eq!(p["probed_up"], true);
    assert_eq!(p["override"], "auto");
    assert_eq!(p["check"], "primary");
    assert_eq!(p["min_healthy"], 1);
    let since_before = p["since_ms"].as_u64().expect("since_ms");
    let ep = &p["endpoints"][0];
    assert_eq!(ep["address"], PRIMARY_IP);
    assert_eq!(ep["up"], true);
    assert_eq!(ep["override"], "auto");
    assert_eq!(ep["last_result"], "success");
    assert_eq!(ep["reason"], "ok (200)");
    assert_eq!(ep["consecutive"], 0);
    assert_eq!(ep["failures"], 0);
    let probes_before = ep["probes"].as_u64().expect("probes");
    assert!(probes_before >= 1);
    assert!(ep["latency_ms"].as_f64().expect("latency") < 150.0);
    assert_eq!(st["transitions"], json!([]), "no transition yet");

    let killed_at = now_ms();
    rig.primary.kill();
    wait_for(LIMIT, "status shows the primary down", || async {
        region(&rig.status().await, "primary")["up"] == false
    })
    .await;
    // DNS follows the same verdict.
    assert_eq!(rig.api().await, [SECONDARY_IP]);

    let st = rig.status().await;
    let svc = &st["zones"][0]["services"][0];
    assert_eq!(svc["degraded"], true);
    assert_eq!(svc["all_down"], false);
    assert_eq!(svc["ttl"], 5, "degraded-ttl");
    assert_eq!(svc["answer"]["regions"], json!([["secondary", 1.0]]));
    assert_eq!(svc["answer"]["addresses"], json!([SECONDARY_IP]));
    assert_eq!(
        svc["regions"][0],
        json!({"name": "primary", "weight": 1, "up": false})
    );
    let p = region(&st, "primary");
    assert_eq!(p["up"], false);
    assert_eq!(p["probed_up"], false);
    assert_eq!(p["override"], "auto");
    let since_after = p["since_ms"].as_u64().unwrap();
    assert!(
        since_after > since_before && since_after >= killed_at,
        "since_ms moves to the failover: {since_before} -> {since_after} (killed at {killed_at})"
    );
    let ep = &p["endpoints"][0];
    assert_eq!(ep["up"], false);
    assert_eq!(ep["probed_up"], false);
    assert_eq!(ep["last_result"], "refused");
    assert_eq!(ep["reason"], "connection refused");
    assert_eq!(ep["consecutive"], 0, "the run ended with the transition");
    assert!(ep["since_ms"].as_u64().unwrap() >= killed_at);
    assert!(ep["failures"].as_u64().unwrap() >= 3);
    assert!(ep["probes"].as_u64().unwrap() >= probes_before + 3);
    assert_eq!(region(&st, "secondary")["up"], true);

    let t = st["transitions"].as_array().expect("transitions");
    assert_eq!(t.len(), 2, "{t:#?}");
    for (i, endpoint, reason) in [
        (0, json!(PRIMARY_IP), "connection refused".to_string()),
        (
            1,
            Value::Null,
            "0 of 1 endpoints up (min-healthy 1); connection refused".to_string(),
        ),
    ] {
        assert_eq!(t[i]["zone"], ZONE_NAME);
        assert_eq!(t[i]["region"], "primary");
        assert_eq!(t[i]["endpoint"], endpoint);
        assert_eq!((&t[i]["from"], &t[i]["to"]), (&json!("up"), &json!("down")));
        assert_eq!(t[i]["reason"], reason);
        assert!(t[i]["time"].as_u64().unwrap() >= killed_at);
    }

    // Back up: the run toward `rise` shows while the endpoint is still down.
    rig.primary.revive().await;
    let ep = poll(LIMIT, "a success run toward rise", || async {
        let ep = region(&rig.status().await, "primary")["endpoints"][0].clone();
        (ep["up"] == false && ep["consecutive"].as_u64().unwrap() > 0).then_some(ep)
    })
    .await;
    assert!(ep["consecutive"].as_u64().unwrap() < 4, "below rise: {ep}");
    assert_eq!(ep["last_result"], "success", "{ep}");
    assert_eq!(ep["reason"], "ok (200)");
    wait_for(LIMIT, "the primary back up", || async {
        region(&rig.status().await, "primary")["up"] == true
    })
    .await;
    let st = rig.status().await;
    assert_eq!(st["zones"][0]["services"][0]["degraded"], false);
    assert_eq!(
        st["zones"][0]["services"][0]["answer"]["addresses"],
        json!([PRIMARY_IP])
    );
    let t = st["transitions"].as_array().unwrap();
    assert_eq!(t.len(), 4, "{t:#?}");
    assert_eq!(t[2]["endpoint"], PRIMARY_IP);
    assert_eq!(t[3]["endpoint"], Value::Null);
    for x in &t[2..] {
        assert_eq!((&x["from"], &x["to"]), (&json!("down"), &json!("up")));
        assert_eq!(x["region"], "primary");
    }
    assert_eq!(t[2]["reason"], "ok (200)");
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

// ---------------------------------------------------------------------------
// 3. Overrides and the bearer token

#[tokio::test]
async fn overrides_need_the_bearer_token_when_one_is_configured() {
    let rig = Rig::start(&FAST, Some(TOKEN)).await;
    rig.wait_healthy().await;
    assert_eq!(rig.api().await, [PRIMARY_IP]);
    let drain = format!("/api/v1/regions/{ZONE_NAME}/primary/drain");

    let (code, headers, body) = rig.post(&drain, None).await;
    assert_eq!(code, 401, "no token: {body}");
    assert_eq!(headers["www-authenticate"], "Bearer");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("Authorization: Bearer"),
        "{body}"
    );
    let (code, _, body) = rig.post(&drain, Some("wrong")).await;
    assert_eq!(code, 401, "wrong token: {body}");
    assert_eq!(body["error"], "wrong bearer token");
    let (code, _, _) = rig.post(&drain, Some("secre")).await;
    assert_eq!(code, 401, "a prefix of the token");
    let (code, _, _) = rig.post("/api/v1/reload", None).await;
    assert_eq!(code, 401, "reload needs the token too");
    // Refused calls change nothing.
    assert_eq!(region(&rig.status().await, "primary")["override"], "auto");
    assert_eq!(rig.api().await, [PRIMARY_IP]);

    // Reading needs no token.
    for path in ["/", "/metrics", "/api/v1/status", "/healthz", "/readyz"] {
        assert_eq!(rig.get(path).await.0, 200, "GET {path}");
    }

    let (code, _, body) = rig.post(&drain, Some(TOKEN)).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body,
        json!({"ok": true, "target": {"zone": ZONE_NAME, "region": "primary", "endpoint": null, "state": "down"}})
    );
    // Effective for the very next query.
    assert_eq!(rig.api().await, [SECONDARY_IP]);
    let st = rig.status().await;
    let p = region(&st, "primary");
    assert_eq!(
        (&p["override"], &p["up"], &p["probed_up"]),
        (&json!("down"), &json!(false), &json!(true))
    );
    assert_eq!(
        st["transitions"].as_array().unwrap().last().unwrap()["reason"],
        "override down"
    );
    let m = rig.scrape().await;
    assert_eq!(
        m.must(
            REGION_OVERRIDE,
            &[("zone", ZONE_NAME), ("region", "primary")]
        ),
        1.0
    );
    assert_eq!(
        m.must(REGION_UP, &[("zone", ZONE_NAME), ("region", "primary")]),
        0.0
    );

    let (code, _, body) = rig
        .post(
            &format!("/api/v1/regions/{ZONE_NAME}/primary/undrain"),
            Some(TOKEN),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["target"]["state"], "auto");
    assert_eq!(rig.api().await, [PRIMARY_IP]);

    // Unknown names are 404, not 200.
    for path in [
        format!("/api/v1/regions/{ZONE_NAME}/mars/drain"),
        "/api/v1/regions/other.test/primary/drain".to_string(),
        format!("/api/v1/regions/{ZONE_NAME}/primary/explode"),
        format!("/api/v1/regions/{ZONE_NAME}/primary/endpoints/127.0.0.9/drain"),
    ] {
        let (code, _, body) = rig.post(&path, Some(TOKEN)).await;
        assert_eq!(code, 404, "POST {path}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }
    let (code, _, _) = rig
        .post(
            &format!("/api/v1/regions/{ZONE_NAME}/primary/endpoints/nope/drain"),
            Some(TOKEN),
        )
        .await;
    assert_eq!(code, 400);

    // One endpoint: the only one of the region, so the region goes too.
    let ep = format!("/api/v1/regions/{ZONE_NAME}/primary/endpoints/{PRIMARY_IP}");
    let (code, _, _) = rig.post(&format!("{ep}/drain"), None).await;
    assert_eq!(code, 401);
    let (code, _, body) = rig.post(&format!("{ep}/drain"), Some(TOKEN)).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["target"]["endpoint"], PRIMARY_IP);
    assert_eq!(body["target"]["state"], "down");
    assert_eq!(rig.api().await, [SECONDARY_IP]);
    let st = rig.status().await;
    let p = region(&st, "primary");
    assert_eq!(p["override"], "auto", "the region itself is not overridden");
    assert_eq!(p["up"], false);
    assert_eq!(p["endpoints"][0]["override"], "down");
    assert_eq!(p["endpoints"][0]["up"], false);
    let m = rig.scrape().await;
    assert_eq!(
        m.must(
            ENDPOINT_OVERRIDE,
            &[
                ("zone", ZONE_NAME),
                ("region", "primary"),
                ("endpoint", PRIMARY_IP)
            ]
        ),
        1.0
    );
    let (code, _, _) = rig.post(&format!("{ep}/undrain"), Some(TOKEN)).await;
    assert_eq!(code, 200);
    assert_eq!(rig.api().await, [PRIMARY_IP]);

    // `_` stands for the zone that has the region.
    let (code, _, body) = rig
        .post("/api/v1/regions/_/secondary/drain", Some(TOKEN))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["target"]["zone"], ZONE_NAME);
    assert_eq!(region(&rig.status().await, "secondary")["override"], "down");
}

#[tokio::test]
async fn overrides_are_open_on_a_loopback_listener_without_a_token() {
    let rig = Rig::start(&FAST, None).await;
    rig.wait_healthy().await;
    assert_eq!(rig.api().await, [PRIMARY_IP]);
    let (code, _, body) = rig
        .post(&format!("/api/v1/regions/{ZONE_NAME}/primary/drain"), None)
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(rig.api().await, [SECONDARY_IP]);
    // A token sent anyway is ignored.
    let (code, _, _) = rig
        .post(
            &format!("/api/v1/regions/{ZONE_NAME}/primary/undrain"),
            Some("anything"),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(rig.api().await, [PRIMARY_IP]);
    let (code, _, _) = rig
        .post(&format!("/api/v1/regions/{ZONE_NAME}/mars/drain"), None)
        .await;
    assert_eq!(code, 404);
}

// ---------------------------------------------------------------------------
// 4. Liveness and readiness

#[tokio::test]
async fn readyz_waits_for_the_first_verdicts_healthz_does_not() {
    // Backends that never answer, probed with a 30 s timeout: no verdict for 30 s.
    let slow = Probing {
        interval: "60s",
        timeout: "30s",
        rise: 2,
    };
    let rig = Rig::start_backends_in(&slow, None, Mode::Hang).await;
    let (code, body) = rig.get("/healthz").await;
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let (code, body) = rig.get("/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("first health verdicts"), "{body}");
    assert_eq!(rig.status().await["ready"], false);
    // DNS serves meanwhile (endpoints start up).
    assert_eq!(rig.api().await, [PRIMARY_IP]);
    drop(rig);

    let rig = Rig::start(&FAST, None).await;
    wait_for(LIMIT, "/readyz 200", || async {
        rig.get("/readyz").await.0 == 200
    })
    .await;
    let (_, body) = rig.get("/readyz").await;
    assert_eq!(body, "ready\n");
    let st = rig.status().await;
    assert_eq!(st["ready"], true);
    for r in ["primary", "secondary"] {
        assert!(
            !region(&st, r)["endpoints"][0]["last_result"].is_null(),
            "{r} probed"
        );
    }
    assert_eq!(rig.get("/healthz").await.0, 200);
}

// ---------------------------------------------------------------------------
// 5. Reload

#[tokio::test]
async fn reload_applies_a_good_file_and_rejects_a_broken_one_with_positions() {
    let rig = Rig::start(&FAST, None).await;
    let file = rig.ts.zone_path("gslb.test.toml");
    let original = std::fs::read_to_string(&file).unwrap();
    let m = rig.ts.query("new.gslb.test.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    let records = rig.status().await["zones"][0]["records"].as_u64().unwrap();

    // A new record and a new service.
    let added = format!(
        "{original}\n[[record]]\nname = \"new\"\ntype = \"A\"\nvalue = \"192.0.2.99\"\n\n\
         [service.web]\nregions = [\"secondary\"]\n"
    );
    std::fs::write(&file, &added).unwrap();
    let (code, _, body) = rig.post("/api/v1/reload", None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body,
        json!({"ok": true, "summary": {
            "zones": 1, "zones_added": [], "zones_removed": [], "zones_changed": [ZONE_NAME],
            "services_added": ["gslb.test/web"], "services_removed": [], "services_changed": [],
            "regions_added": [], "regions_removed": [], "regions_changed": [],
        }})
    );
    let m = rig.ts.query("new.gslb.test.", RecordType::A).await;
    assert_eq!(addrs(&m), ["192.0.2.99"], "the new record is served");
    let m = rig.ts.query("web.gslb.test.", RecordType::A).await;
    assert_eq!(addrs(&m), [SECONDARY_IP], "the new service answers");
    let st = rig.status().await;
    assert_eq!(st["zones"][0]["records"], records + 1);
    assert_eq!(st["zones"][0]["services"].as_array().unwrap().len(), 2);

    // Two problems in one file: both reported, each with file:line:col.
    let broken = format!(
        "{added}\n[service.bad1]\nregions = [\"mars\"]\n\n[service.bad2]\nregions = [\"primary\", \"venus\"]\n"
    );
    std::fs::write(&file, &broken).unwrap();
    let pos = |needle: &str| {
        let at = broken.find(needle).unwrap();
        let line = broken[..at].matches('\n').count() + 1;
        let col = at - broken[..at].rfind('\n').map_or(0, |i| i + 1) + 1;
        format!("{}:{line}:{col}", file.display())
    };
    let (code, _, body) = rig.post("/api/v1/reload", None).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["ok"], false);
    let errors: Vec<&str> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 2, "{errors:#?}");
    for (needle, region) in [("\"mars\"", "mars"), ("\"venus\"", "venus")] {
        let at = pos(needle);
        assert!(
            errors.iter().any(|e| e.starts_with(&format!("{at}: "))
                && e.contains(&format!("unknown region \"{region}\""))),
            "an error at {at} about {region}: {errors:#?}"
        );
    }
    // Still serving the previous data.
    let m = rig.ts.query("new.gslb.test.", RecordType::A).await;
    assert_eq!(addrs(&m), ["192.0.2.99"]);
    let m = rig.ts.query("bad1.gslb.test.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(rig.api().await, [PRIMARY_IP]);
    assert_eq!(
        rig.status().await["zones"][0]["services"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // A syntax error names its position too.
    let syntax = format!("{added}\n[region.west\n");
    std::fs::write(&file, &syntax).unwrap();
    let (code, _, body) = rig.post("/api/v1/reload", None).await;
    assert_eq!(code, 422, "{body}");
    let line = syntax.lines().count();
    let err = body["errors"][0].as_str().unwrap();
    assert!(
        err.starts_with(&format!("{}:{line}:", file.display())),
        "syntax error on line {line}: {err}"
    );

    let m = rig.scrape().await;
    assert_eq!(m.must(CONFIG_RELOADS, &[("result", "success")]), 2.0);
    assert_eq!(m.must(CONFIG_RELOADS, &[("result", "error")]), 2.0);
}

// ---------------------------------------------------------------------------
// 6. The CLI against the running server

/// Run the `gslb` binary off the runtime thread (the server runs on it).
async fn gslb(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_gslb"))
            .args(&args)
            .env_remove("GSLB_ADMIN")
            .env_remove("GSLB_ADMIN_TOKEN")
            .stdin(Stdio::null())
            .output()
            .expect("run gslb")
    })
    .await
    .expect("join")
}

/// Asserts a `gslb` run exited 0 (showing its output if not); its stdout.
fn succeeded(out: &std::process::Output) -> String {
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    stdout.into_owned()
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn cli_drains_undrains_and_reloads_the_running_server() {
    let rig = Rig::start(&FAST, Some(TOKEN)).await;
    rig.wait_healthy().await;
    let admin = rig.admin.to_string();
    assert_eq!(rig.api().await, [PRIMARY_IP]);

    let out = gslb(args(&[
        "drain", "primary", "--admin", &admin, "--token", TOKEN,
    ]))
    .await;
    let stdout = succeeded(&out);
    assert!(
        stdout.contains("region primary in zone gslb.test: override down"),
        "{stdout}"
    );
    assert_eq!(rig.api().await, [SECONDARY_IP], "drained");

    let out = gslb(args(&[
        "undrain", "primary", "--admin", &admin, "--token", TOKEN,
    ]))
    .await;
    succeeded(&out);
    assert_eq!(rig.api().await, [PRIMARY_IP], "undrained");

    // One endpoint, with the zone named.
    let out = gslb(args(&[
        "drain",
        "primary",
        "--endpoint",
        PRIMARY_IP,
        "--zone",
        "gslb.test.",
        "--admin",
        &admin,
        "--token",
        TOKEN,
    ]))
    .await;
    let stdout = succeeded(&out);
    assert!(
        stdout.contains("endpoint 127.0.0.2 of region primary"),
        "{stdout}"
    );
    assert_eq!(rig.api().await, [SECONDARY_IP]);
    let out = gslb(args(&[
        "undrain",
        "primary",
        "--endpoint",
        PRIMARY_IP,
        "--admin",
        &admin,
        "--token",
        TOKEN,
    ]))
    .await;
    succeeded(&out);
    assert_eq!(rig.api().await, [PRIMARY_IP]);

    // Refused: exit 3, the reason on stderr, nothing changed.
    for bad in [vec!["--token", "wrong"], vec![]] {
        let mut a = args(&["drain", "primary", "--admin", &admin]);
        a.extend(args(&bad));
        let out = gslb(a).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "token {bad:?}: {stderr}");
        assert!(stderr.contains("401"), "{stderr}");
        assert_eq!(rig.api().await, [PRIMARY_IP]);
    }
    let out = gslb(args(&[
        "drain", "mars", "--admin", &admin, "--token", TOKEN,
    ]))
    .await;
    assert_eq!(out.status.code(), Some(3), "unknown region");
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));

    // The token from the environment.
    let admin2 = admin.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_gslb"))
            .args(["reload", "--admin", &admin2])
            .env_remove("GSLB_ADMIN")
            .env("GSLB_ADMIN_TOKEN", TOKEN)
            .output()
            .expect("run gslb")
    })
    .await
    .unwrap();
    let stdout = succeeded(&out);
    assert!(stdout.contains("reloaded: 1 zones"), "{stdout}");
}

// ---------------------------------------------------------------------------
// 7. The live status page in headless Chromium over WebDriver

/// chromedriver and its browser session; both end on drop, whatever happens.
struct Browser {
    driver: std::process::Child,
    base: String,
    session: Option<String>,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        // Found on PATH, as a shell would (Debian: chromium, chromedriver;
        // elsewhere often chromium-browser or google-chrome).
        let on_path = |names: &[&str]| -> PathBuf {
            let path = std::env::var_os("PATH").unwrap_or_default();
            std::env::split_paths(&path)
                .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
                .find(|p| p.is_file())
                .unwrap_or_else(|| {
                    panic!(
                        "none of {names:?} is on PATH: this test needs Chromium and ChromeDriver (scripts/test installs them)"
                    )
                })
        };
        let chromium = on_path(&["chromium", "chromium-browser", "google-chrome"]);
        let chromedriver = on_path(&["chromedriver"]);
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().unwrap().port()
        };
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let mut b = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            session: None,
            http: client(),
            _profile: tempfile::tempdir().expect("profile dir"),
        };
        wait_for(LIMIT, "chromedriver ready", || async {
            match b.http.get(format!("{}/status", b.base)).send().await {
                Ok(r) => r
                    .text()
                    .await
                    .ok()
                    .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                    .is_some_and(|v| v["value"]["ready"] == true),
                Err(_) => false,
            }
        })
        .await;
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run",
                    format!("--user-data-dir={}", b._profile.path().display()),
                ],
            },
        }}});
        let v = b.call(reqwest::Method::POST, "/session", Some(caps)).await;
        let id = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("session: {v}"));
        b.session = Some(id.to_string());
        b
    }

    /// One WebDriver command; its `value`.
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let r = req.send().await.expect("WebDriver call");
        let status = r.status();
        let v: Value = serde_json::from_str(&r.text().await.expect("body")).expect("JSON");
        assert!(status.is_success(), "WebDriver {path}: {status} {v}");
        v["value"].clone()
    }

    async fn session_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let id = self.session.as_deref().expect("session");
        self.call(method, &format!("/session/{id}{path}"), body)
            .await
    }

    async fn script(&self, js: &str) -> Value {
        self.session_call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": js, "args": []})),
        )
        .await
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(id) = self.session.take() {
            // Blocking on purpose (no runtime in drop): end the session, which quits Chromium.
            let addr = self.base.trim_start_matches("http://").to_string();
            let _ = blocking_delete(&addr, &format!("/session/{id}"));
        }
        let pgid = self.driver.id();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // Anything chromedriver left behind is in its process group.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .stderr(Stdio::null())
            .status();
    }
}

fn blocking_delete(addr: &str, path: &str) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "DELETE {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    // Read the whole reply (the session is gone once it came), not until
    // the close: chromedriver keeps the connection open.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        got.extend_from_slice(&buf[..n]);
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return Ok(());
            }
        }
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let clean: Vec<u8> = s
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &c)| acc | val(c) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

#[test]
fn base64_decoder_decodes() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGk="), b"hi");
    assert_eq!(base64_decode("YWJj"), b"abc");
}

/// State and text of the primary's row in the regions table, and of its chip
/// on the service card.
const PRIMARY_ROW_JS: &str = r#"
const row = document.querySelector('#regions tr[data-region="primary"]');
const chip = document.querySelector('.card .chip[data-region="primary"]');
const card = document.querySelector('.card[data-service]');
return row ? {
  state: row.dataset.state,
  text: row.innerText,
  chip: chip ? chip.dataset.state : null,
  card: card ? card.className : null,
  answer: card ? card.querySelector('.answer').innerText : null,
  timeline: document.getElementById('timeline').innerText,
  live: document.getElementById('livetext').textContent,
} : null;
"#;

#[tokio::test]
async fn status_page_shows_a_region_going_down_live() {
    let mut rig = Rig::start(&FAST, None).await;
    rig.wait_healthy().await;
    let browser = Browser::start().await;
    browser
        .session_call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": 1400, "height": 900})),
        )
        .await;
    browser
        .session_call(
            reqwest::Method::POST,
            "/url",
            Some(json!({"url": rig.url("/")})),
        )
        .await;
    assert_eq!(
        browser
            .session_call(reqwest::Method::GET, "/title", None)
            .await,
        "gslb status"
    );

    let row = poll(LIMIT, "the page shows the primary UP", || async {
        let row = browser.script(PRIMARY_ROW_JS).await;
        (row["state"] == "up" && row["text"].as_str().unwrap_or("").contains("UP")).then_some(row)
    })
    .await;
    assert_eq!(row["chip"], "up");
    assert!(row["text"].as_str().unwrap().contains(PRIMARY_IP), "{row}");

    // Down without reloading the page: the live feed must carry it.
    rig.primary.kill();
    let row = poll(LIMIT, "the page shows the primary DOWN", || async {
        let row = browser.script(PRIMARY_ROW_JS).await;
        (row["state"] == "down").then_some(row)
    })
    .await;
    let text = row["text"].as_str().unwrap();
    assert!(text.contains("DOWN"), "{row:#}");
    assert!(
        text.contains("connection refused"),
        "the reason shows: {row:#}"
    );
    assert_eq!(row["chip"], "down");
    assert!(
        row["card"].as_str().unwrap().contains("degraded"),
        "{row:#}"
    );
    assert!(
        row["answer"].as_str().unwrap().contains("secondary"),
        "{row:#}"
    );
    assert!(
        row["answer"].as_str().unwrap().contains(SECONDARY_IP),
        "{row:#}"
    );
    let row = poll(LIMIT, "the timeline lists the transition", || async {
        let row = browser.script(PRIMARY_ROW_JS).await;
        row["timeline"]
            .as_str()
            .unwrap_or("")
            .contains("up → down")
            .then_some(row)
    })
    .await;
    assert!(row["live"].as_str().unwrap().starts_with("live"), "{row:#}");

    let png = browser
        .session_call(reqwest::Method::GET, "/screenshot", None)
        .await;
    let png = base64_decode(png.as_str().expect("base64 PNG"));
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    let path = target_path("artifacts/status-page.png");
    std::fs::write(&path, &png).expect("write screenshot");
    println!("status page screenshot: {}", path.display());
}
