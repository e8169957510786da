//! Failover events out: a JSON POST to a webhook on every region state
//! change, for chat, paging or audit.
//!
//! Never in anyone's way: transitions reach the dispatcher through the health
//! broadcast (a send never blocks a prober), each URL has its own bounded
//! queue and delivery task, a full queue drops the event and counts it in
//! `gslb_webhook_events_dropped_total`, and a slow or hanging receiver only
//! delays its own queue.
//!
//! A URL may carry credentials or a key (user-info, query string, and for
//! Slack, Discord and Teams the path itself): every log line and error shows
//! a webhook by scheme and host only ([`webhook_label`]). Repeated warnings of one
//! URL (retries, failures, drops) are logged at most once per [`LOG_PERIOD`],
//! each line saying how many similar ones were suppressed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
use crate::config::webhook_label;
use crate::dns::Engine;
use crate::health::HealthTable;
use crate::health::Transition;
use crate::metrics::Metrics;
use crate::throttle::{LogThrottle, suppressed_note};

/// Events waiting per webhook URL before new ones are dropped: a few
/// thousand regions failing at once fit.
pub const QUEUE_LEN: usize = 16_384;
/// Delivery attempts per event.
pub const ATTEMPTS: u32 = 5;
/// Bound on one delivery attempt.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// First retry delay; doubles per attempt (0.5, 1, 2, 4 s).
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// At most one line per period for each kind of repeated warning of one URL
/// (delivery retried, event given up, event dropped from a full queue).
pub const LOG_PERIOD: Duration = Duration::from_secs(10);

/// The JSON body of a webhook POST.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FailoverEvent {
    /// Always "region_state_changed".
    pub event: &'static str,
    /// Zone (no trailing dot).
    pub zone: String,
    /// Region whose state changed.
    pub region: String,
    /// Services that use the region (their answers may have changed).
    pub services: Vec<String>,
    /// Previous state: "up" or "down".
    pub old: &'static str,
    /// New state.
    pub new: &'static str,
    /// Why (endpoint counts and the deciding probe, or the override).
    pub reason: String,
    /// When, RFC 3339 with milliseconds.
    pub time: String,
    /// When, unix milliseconds.
    pub time_ms: u64,
    /// In a cluster, the node that sent it (the first to claim the
    /// transition in etcd).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The event as one line, in the field Slack's incoming webhooks
    /// read (Mattermost, Rocket.Chat and Discord's `/slack` URLs too), so
    /// every body is also a chat message: `&`, `<` and `>` escaped as
    /// Slack requires.
    pub text: String,
}

/// What the dispatcher needs: where transitions come from, where the
/// served zones are (for their webhooks and services), the cluster that
/// decides which node sends, and the counters.
pub struct Events {
    /// The served snapshot.
    pub engine: Arc<Engine>,
    /// Transitions.
    pub health: Arc<HealthTable>,
    /// The cluster, if any.
    pub cluster: Option<Arc<Cluster>>,
    /// Counters.
    pub metrics: Metrics,
    /// The global webhook of the settings file.
    pub webhook: Option<String>,
    /// The key every POST is signed with (`webhook-secret`), if any.
    pub secret: Option<Arc<str>>,
}

/// Sent with every POST: who is calling, for the receiver's logs and rules.
pub const USER_AGENT: &str = concat!("gslb/", env!("CARGO_PKG_VERSION"));
/// The signature header, Stripe's scheme: `t=UNIX_SECONDS,v1=HEX`, the
/// HMAC-SHA256 under `webhook-secret` of `"{t}." + body`. The time inside
/// the signed text lets a receiver refuse a replayed old POST.
pub const SIGNATURE_HEADER: &str = "x-gslb-signature";

/// The signature header's value for `body` sent at `unix` seconds.
pub fn signature(secret: &str, unix: u64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(format!("{unix}.").as_bytes());
    ctx.update(body);
    let tag = ctx.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={unix},v1={hex}")
}

fn event_for(ev: &Events, t: &Transition) -> FailoverEvent {
    let snap = ev.engine.snapshot();
    let services = snap
        .zones()
        .map(|z| &z.zone)
        .filter(|z| z.label() == t.zone)
        .flat_map(|z| {
            z.services
                .iter()
                .filter(|s| s.regions.iter().any(|r| r.region.name == t.region))
                .map(|s| s.name.to_string().trim_end_matches('.').to_string())
        })
        .collect();
    FailoverEvent {
        event: "region_state_changed",
        zone: t.zone.clone(),
        region: t.region.clone(),
        services,
        old: t.from,
        new: t.to,
        reason: t.reason.clone(),
        time: humantime::format_rfc3339_millis(t.time).to_string(),
        time_ms: t
            .time
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        node: ev.cluster.as_ref().map(|c| c.settings().node.clone()),
        text: String::new(),
    }
    .with_text()
}

impl FailoverEvent {
    fn with_text(mut self) -> Self {
        let mut t = format!(
            "gslb: region {}/{} is {} (was {}): {}",
            self.zone, self.region, self.new, self.old, self.reason
        );
        if !self.services.is_empty() {
            t.push_str(&format!("; services: {}", self.services.join(", ")));
        }
        if let Some(n) = &self.node {
            t.push_str(&format!(" [node {n}]"));
        }
        self.text = t
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        self
    }
}

/// Where events of a zone go: its own webhook and the global one.
fn urls_for(ev: &Events, zone: &str) -> Vec<String> {
    let snap = ev.engine.snapshot();
    let mut urls: Vec<String> = snap
        .zones()
        .map(|z| &z.zone)
        .filter(|z| z.label() == zone)
        .filter_map(|z| z.webhook.clone())
        .collect();
    if let Some(g) = &ev.webhook
        && !urls.contains(g)
    {
        urls.push(g.clone());
    }
    urls
}

/// Every webhook URL configured now.
fn all_urls(ev: &Events) -> std::collections::HashSet<String> {
    let snap = ev.engine.snapshot();
    snap.zones()
        .filter_map(|z| z.zone.webhook.clone())
        .chain(ev.webhook.clone())
        .collect()
}

/// Dispatch region transitions to webhooks until `shutdown`.
///
/// Subscribes to transitions when called, not when first polled: a
/// transition right after start, before the spawned task first runs, is
/// not missed.
pub fn run(ev: Events, shutdown: CancellationToken) -> impl std::future::Future<Output = ()> {
    let rx = ev.health.subscribe_regions();
    // The answers as of the subscription, not of the task's first run: a
    // transition in between is then logged against what came before it.
    let mut answers = Answers::default();
    answers.seed(&ev);
    dispatch(Arc::new(ev), rx, answers, shutdown)
}

/// What each service answers a client of no known location, as the log
/// says it: regions in answer order (`us-east`), a weighted service's
/// shares (`us-east 75%, eu-west 25%`), or the all-down rule at work
/// (`fail-open: us-east, eu-west`, `NODATA`, `SERVFAIL`).
fn answer_of(svc: &crate::model::Service, view: &dyn crate::policy::HealthView) -> String {
    use crate::policy::{self, Outcome};
    let (mut shares, sel) = policy::shares(svc, view);
    match sel.outcome {
        Outcome::NoData => return "NODATA (every region down)".into(),
        Outcome::ServFail => return "SERVFAIL (every region down)".into(),
        Outcome::Answer => {}
    }
    let weighted = matches!(svc.policy, crate::model::Policy::Weighted { .. });
    if weighted {
        // In the service's order, whatever order the draw keeps them in.
        shares.sort_by_key(|&(pos, _)| pos);
    }
    let regions: Vec<String> = shares
        .iter()
        .map(|&(pos, share)| {
            let name = &policy::picked_region(svc, pos).name;
            if weighted && shares.len() > 1 {
                format!("{name} {:.0}%", share * 100.0)
            } else {
                name.clone()
            }
        })
        .collect();
    let list = regions.join(", ");
    if sel.all_down {
        // Only fail-open and last-resort answer with regions.
        format!("{}: {list}", svc.when_all_down.rule())
    } else {
        list
    }
}

/// The answer each service gave when last looked at, so a region
/// transition logs one line per service whose answer it moved
/// (`api: us-east -> eu-west`): the line an operator looks for first.
#[derive(Default)]
struct Answers(HashMap<(String, String), String>);

impl Answers {
    /// Every service of every served zone, as it answers now.
    fn seed(&mut self, ev: &Events) {
        let snap = ev.engine.snapshot();
        for served in snap.zones() {
            let view: &dyn crate::policy::HealthView = served.health.as_ref();
            for svc in &served.zone.services {
                self.0
                    .insert((served.zone.label(), svc.key.clone()), answer_of(svc, view));
            }
        }
    }

    /// After a transition of `t.region`: log the services of its zone that
    /// use it and whose answer moved. A service first seen now (a reload added it) is
    /// remembered, not logged: what it answered before is not known.
    fn log_changes(&mut self, ev: &Events, t: &Transition) {
        let snap = ev.engine.snapshot();
        for served in snap.zones().filter(|z| z.zone.label() == t.zone) {
            let view: &dyn crate::policy::HealthView = served.health.as_ref();
            // Only a service that uses the region can have moved with it
            // (a dependent region's change is a transition of its own).
            let uses = |svc: &&Arc<crate::model::Service>| {
                svc.regions.iter().any(|r| r.region.name == t.region)
                    || matches!(&svc.when_all_down, crate::model::WhenAllDown::LastResort(r) if r.name == t.region)
            };
            for svc in served.zone.services.iter().filter(uses) {
                let now = answer_of(svc, view);
                let key = (t.zone.clone(), svc.key.clone());
                match self.0.insert(key, now.clone()) {
                    Some(before) if before != now => {
                        tracing::info!(zone = %t.zone, service = %svc.key, from = %before, to = %now, region = %t.region, "{}: {before} -> {now}", svc.key);
                    }
                    _ => {}
                }
            }
        }
    }
}

async fn dispatch(
    ev: Arc<Events>,
    mut rx: tokio::sync::broadcast::Receiver<Transition>,
    mut answers: Answers,
    shutdown: CancellationToken,
) {
    let mut queues: HashMap<String, mpsc::Sender<FailoverEvent>> = HashMap::new();
    // One per URL: a full queue drops every further event, one line per period.
    let mut drop_logs: HashMap<String, LogThrottle> = HashMap::new();
    let mut workers = JoinSet::new();
    let client = match crate::http_client(|| {
        reqwest::Client::builder()
            .no_proxy()
            .timeout(ATTEMPT_TIMEOUT)
            .user_agent(USER_AGENT)
            .redirect(reqwest::redirect::Policy::none())
    }) {
        Ok((c, None)) => c,
        Ok((c, Some(why))) => {
            tracing::warn!(error = %why, "no CA certificates found on this system; webhooks over https are verified against the Mozilla roots built into gslb");
            c
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook client; failover events will not be sent");
            return;
        }
    };
    loop {
        let t = tokio::select! {
            r = rx.recv() => r,
            () = shutdown.cancelled() => break,
        };
        let t = match t {
            Ok(t) => t,
            Err(RecvError::Lagged(n)) => {
                // The dispatcher itself fell behind (it never blocks, so only
                // under a storm of transitions): count what was missed.
                ev.metrics
                    .webhook_dropped
                    .with_label_values(&[""])
                    .inc_by(n);
                continue;
            }
            Err(RecvError::Closed) => break,
        };
        if t.endpoint.is_some() {
            continue; // region changes only
        }
        answers.log_changes(&ev, &t);
        // A URL that no zone (nor the settings file) names any more loses
        // its queue: its worker delivers what it holds, then ends.
        let configured = all_urls(&ev);
        queues.retain(|url, _| configured.contains(url));
        drop_logs.retain(|url, _| configured.contains(url));
        let urls = urls_for(&ev, &t.zone);
        if urls.is_empty() {
            continue;
        }
        // In a cluster every node sees the same transition; one sends it.
        if let Some(c) = &ev.cluster
            && !c.claim_event(&t).await
        {
            continue;
        }
        let event = event_for(&ev, &t);
        for url in urls {
            let tx = queues.entry(url.clone()).or_insert_with(|| {
                let (tx, rx) = mpsc::channel(QUEUE_LEN);
                workers.spawn(deliver(
                    url.clone(),
                    rx,
                    client.clone(),
                    ev.secret.clone(),
                    ev.metrics.clone(),
                    shutdown.clone(),
                ));
                tx
            });
            if tx.try_send(event.clone()).is_err() {
                ev.metrics
                    .webhook_dropped
                    .with_label_values(&[&t.zone])
                    .inc();
                let log = drop_logs
                    .entry(url.clone())
                    .or_insert_with(|| LogThrottle::new(LOG_PERIOD));
                if let Some(n) = log.allow() {
                    tracing::warn!(webhook = %webhook_label(&url), zone = %t.zone, region = %t.region, "webhook queue full: event dropped{}", suppressed_note(n));
                }
            }
        }
    }
    drop(queues);
    while workers.join_next().await.is_some() {}
}

/// Deliver one URL's events in order, each retried with backoff.
async fn deliver(
    url: String,
    mut rx: mpsc::Receiver<FailoverEvent>,
    client: reqwest::Client,
    secret: Option<Arc<str>>,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let shown = webhook_label(&url);
    let (retries, failures) = (LogThrottle::new(LOG_PERIOD), LogThrottle::new(LOG_PERIOD));
    while let Some(event) = tokio::select! {
        e = rx.recv() => e,
        () = shutdown.cancelled() => None,
    } {
        let body = serde_json::to_vec(&event).expect("event serialises");
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            let mut post = client.post(&url).header("content-type", "application/json");
            if let Some(secret) = &secret {
                // Signed at each attempt: a retry carries its own time.
                let unix = crate::model::unix_ms(std::time::SystemTime::now()) / 1000;
                post = post.header(SIGNATURE_HEADER, signature(secret, unix, &body));
            }
            let sent = post.body(body.clone()).send().await;
            let err = match sent {
                Ok(r) if r.status().is_success() => None,
                Ok(r) => Some(format!("status {}", r.status().as_u16())),
                Err(e) if e.is_timeout() => Some(format!(
                    "timeout after {}",
                    humantime::format_duration(ATTEMPT_TIMEOUT)
                )),
                Err(e) => Some(describe(e, &url, &shown)),
            };
            match err {
                None => {
                    metrics
                        .webhook_deliveries
                        .with_label_values(&["success"])
                        .inc();
                    break;
                }
                Some(e) => {
                    metrics
                        .webhook_deliveries
                        .with_label_values(&["error"])
                        .inc();
                    if attempt == ATTEMPTS {
                        if let Some(n) = failures.allow() {
                            tracing::error!(webhook = %shown, region = %event.region, error = %e, "webhook delivery failed {ATTEMPTS} times; event dropped{}", suppressed_note(n));
                        }
                        break;
                    }
                    if let Some(n) = retries.allow() {
                        tracing::warn!(webhook = %shown, attempt, error = %e, "webhook delivery failed; retrying in {}{}", humantime::format_duration(backoff), suppressed_note(n));
                    }
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = shutdown.cancelled() => return,
                    }
                    backoff *= 2;
                }
            }
        }
    }
}

/// A delivery error for the log: reqwest's message names the URL, with its
/// credentials and query, so it goes; the causes (refused, reset, TLS...)
/// come along instead, which reqwest's message leaves out.
fn describe(e: reqwest::Error, url: &str, shown: &str) -> String {
    let text = crate::describe_error(&e.without_url());
    // A cause quoting the URL itself still shows it redacted only.
    text.replace(url, shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_stripes_scheme_over_time_and_body() {
        // Computed independently: Python's hmac.new(b"s3cret",
        // b'1700000000.{"event":"x"}', hashlib.sha256).hexdigest().
        assert_eq!(
            super::signature("s3cret", 1_700_000_000, br#"{"event":"x"}"#),
            "t=1700000000,v1=546f0c8c62583fbe447af526f279d1039276c23e82e263a32b8b71379eac5faf"
        );
    }

    #[tokio::test]
    async fn delivery_errors_name_the_cause_but_not_the_url() {
        // A port nothing listens on: connection refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        crate::install_crypto_provider();
        let url = format!("http://user:hunter2@127.0.0.1:{port}/hook?key=s3cret");
        let e = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client")
            .post(&url)
            .send()
            .await
            .expect_err("nothing listens");
        assert!(
            e.to_string().contains("s3cret"),
            "reqwest names the URL: {e}"
        );
        let text = describe(e, &url, &webhook_label(&url));
        assert!(
            !text.contains("hunter2") && !text.contains("s3cret"),
            "{text}"
        );
        assert!(text.to_lowercase().contains("refused"), "{text}");
    }
}
