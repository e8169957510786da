//! The admin API as operators and Prometheus see it, one file per area:
//! `/metrics` during a failover ([`metrics`]), the status JSON ([`status`]),
//! the bearer token, liveness and readiness ([`auth`]), reload and the CLI
//! against a running server ([`cli`]), and the live status page in headless
//! Chromium ([`page`]). This file holds what they share: a server with two
//! real backends, polling helpers, and a parsed scrape.

mod auth;
mod cli;
mod metrics;
mod page;
mod status;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
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

    /// Like [`Rig::start`], with more settings.
    async fn start_with(
        p: &Probing,
        token: Option<&str>,
        more: impl FnOnce(&mut gslb::app::Settings) + Send + 'static,
    ) -> Rig {
        Self::start_full(p, token, Mode::Healthy, more).await
    }

    /// Like [`Rig::start`], the backends in `mode` before the first probe.
    async fn start_backends_in(p: &Probing, token: Option<&str>, mode: Mode) -> Rig {
        Self::start_full(p, token, mode, |_| {}).await
    }

    async fn start_full(
        p: &Probing,
        token: Option<&str>,
        mode: Mode,
        more: impl FnOnce(&mut gslb::app::Settings) + Send + 'static,
    ) -> Rig {
        let primary = Backend::start(PRIMARY_IP).await;
        let secondary = Backend::start(SECONDARY_IP).await;
        primary.set(mode);
        secondary.set(mode);
        let text = zone_text(primary.addr.port(), secondary.addr.port(), p);
        let token = token.map(str::to_string);
        let ts = TestServer::start_with(&[("gslb.test.toml", &text)], |s| {
            s.admin = Some("127.0.0.1:0".parse().unwrap());
            s.admin_token = token;
            more(s);
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
        let mut req = self
            .http
            .post(self.url(path))
            .header("x-gslb-request", "test");
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
// A scrape of /metrics, parsed by prometheus-parse (promtool checks the
// format itself).

struct Scrape {
    text: String,
    parsed: prometheus_parse::Scrape,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let lines = text.lines().map(|l| Ok(l.to_string()));
        Scrape {
            text: text.to_string(),
            parsed: prometheus_parse::Scrape::parse(lines).expect("a Prometheus text page"),
        }
    }

    /// Samples of `name` whose labels are exactly these.
    fn exactly<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a prometheus_parse::Sample> {
        self.parsed.samples.iter().filter(move |s| {
            s.metric == name
                && s.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
    }

    /// The value of the series with exactly these labels.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        use prometheus_parse::Value as V;
        let found: Vec<f64> = self
            .exactly(name, labels)
            .map(|s| match s.value {
                V::Counter(v) | V::Gauge(v) | V::Untyped(v) => v,
                _ => panic!("{name} is not a single value"),
            })
            .collect();
        assert!(found.len() <= 1, "{name}{labels:?} appears twice");
        found.first().copied()
    }

    /// Like [`Scrape::get`], the series must exist.
    fn must(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no series {name}{labels:?} in\n{}", self.text))
    }

    /// The buckets (upper bound, cumulative count) of the histogram `name`
    /// with exactly these labels (besides `le`), in the page's order.
    fn buckets(&self, name: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
        let mut found = self.exactly(name, labels).map(|s| match &s.value {
            prometheus_parse::Value::Histogram(h) => {
                h.iter().map(|b| (b.less_than, b.count)).collect()
            }
            _ => panic!("{name} is not a histogram"),
        });
        let buckets = found
            .next()
            .unwrap_or_else(|| panic!("no histogram {name}{labels:?} in\n{}", self.text));
        assert!(found.next().is_none(), "{name}{labels:?} appears twice");
        buckets
    }

    /// The type of a family, as its samples were declared.
    fn kind(&self, name: &str) -> Option<&'static str> {
        use prometheus_parse::Value as V;
        self.parsed
            .samples
            .iter()
            .find(|s| s.metric == name)
            .map(|s| match s.value {
                V::Counter(_) => "counter",
                V::Gauge(_) => "gauge",
                V::Histogram(_) => "histogram",
                V::Summary(_) => "summary",
                V::Untyped(_) => "untyped",
            })
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
