//! The scheduler and table with fake probes under paused time: exact
//! transition points and timings, rapid recheck, overrides, reload
//! carry-over and the state file.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::config::{LoadOptions, load_sources};
use crate::metrics::Metrics;
use crate::model::Config;
use crate::policy::HealthView;

/// Fake backends: each address answers ok or not; every probe is logged.
#[derive(Clone, Default)]
struct Fake {
    healthy: Arc<Mutex<HashMap<IpAddr, bool>>>,
    /// Probes of these fail for a local reason (out of descriptors).
    local: Arc<Mutex<Vec<IpAddr>>>,
    log: Arc<Mutex<Vec<(IpAddr, Instant, bool)>>>,
    latency: Duration,
}

struct FakeProbe {
    addr: IpAddr,
    fake: Fake,
}

impl Probe for FakeProbe {
    fn probe(&self) -> Pin<Box<dyn Future<Output = ProbeResult> + Send + '_>> {
        Box::pin(async move {
            tokio::time::sleep(self.fake.latency).await;
            let ok = *self
                .fake
                .healthy
                .lock()
                .unwrap()
                .get(&self.addr)
                .unwrap_or(&true);
            self.fake
                .log
                .lock()
                .unwrap()
                .push((self.addr, Instant::now(), ok));
            if self.fake.local.lock().unwrap().contains(&self.addr) {
                return ProbeResult {
                    outcome: ProbeOutcome::Local,
                    reason: "local error (gslb's, not the backend's): too many open files".into(),
                    latency: Duration::ZERO,
                    certificate_expiry: None,
                };
            }
            ProbeResult {
                outcome: if ok {
                    ProbeOutcome::Success
                } else {
                    ProbeOutcome::Status
                },
                reason: if ok { "ok".into() } else { "status 503".into() },
                latency: self.fake.latency,
                certificate_expiry: None,
            }
        })
    }
}

impl ProbeFactory for Fake {
    fn make(&self, _check: &Arc<Check>, key: &EndpointKey) -> Box<dyn Probe> {
        Box::new(FakeProbe {
            addr: key.addr,
            fake: self.clone(),
        })
    }
}

impl Fake {
    fn set(&self, addr: &str, ok: bool) {
        self.healthy
            .lock()
            .unwrap()
            .insert(addr.parse().unwrap(), ok);
    }
    fn probes_of(&self, addr: &str) -> Vec<(Instant, bool)> {
        let a: IpAddr = addr.parse().unwrap();
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(x, _, _)| *x == a)
            .map(|(_, t, ok)| (*t, *ok))
            .collect()
    }
}

fn config(extra: &str) -> Config {
    load(config_text(extra))
}

fn load(text: String) -> Config {
    load_sources(&[(PathBuf::from("z.toml"), text)], LoadOptions::default()).expect("valid")
}

/// Zone z.example: east (two endpoints, min-healthy 1) and west (one),
/// checked every 5 s with a rapid recheck, then `extra`.
fn config_text(extra: &str) -> String {
    format!(
        r#"[zone]
name = "z.example."
nameservers = ["ns1.example.net."]
hostmaster = "h.example.net."

[check.web]
type = "http"
interval = "5s"
timeout = "2s"
recheck = "200ms"
fall = 3
rise = 2

[region.east]
endpoints = ["192.0.2.1", "192.0.2.2"]
check = "web"
min-healthy = 1

[region.west]
endpoints = ["192.0.2.3"]
check = "web"
{extra}
"#
    )
}

fn table(fake: &Fake, state: Option<PathBuf>) -> Arc<HealthTable> {
    Arc::new(HealthTable::new(
        Metrics::new(),
        Arc::new(fake.clone()),
        state,
        CancellationToken::new(),
    ))
}

/// Set an override on endpoint `addr` of `region` (the only zone's).
fn override_endpoint(t: &HealthTable, region: &str, addr: &str, o: Override) {
    t.set_override(None, region, Some(addr.parse().unwrap()), o)
        .unwrap();
}

/// The endpoint of address `addr` (one region has it).
fn endpoint(t: &HealthTable, addr: &str) -> EndpointRef {
    t.endpoints()
        .into_iter()
        .find(|e| e.key.addr.to_string() == addr)
        .unwrap()
}

fn ep_up(zh: &ZoneHealth, region: usize, ep: usize) -> bool {
    zh.endpoint_up(region, ep)
}

/// Wait (in paused time) until `f` holds.
async fn until(limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < limit,
            "condition not reached within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    start.elapsed()
}

#[tokio::test(start_paused = true)]
async fn endpoint_goes_down_after_exactly_fall_failures_with_rapid_recheck() {
    let fake = Fake::default();
    let t = table(&fake, None);
    let zh = t.apply(&config("")).remove(0);
    // Let every endpoint be probed once (first probes are spread over 5 s).
    until(Duration::from_secs(6), || {
        fake.probes_of("192.0.2.1").len() == 1
    })
    .await;
    fake.set("192.0.2.1", false);
    let n0 = fake.probes_of("192.0.2.1").len();
    until(Duration::from_secs(6), || {
        fake.probes_of("192.0.2.1").len() == n0 + 2
    })
    .await;
    assert!(ep_up(&zh, 0, 0), "still up after the 2nd failure");
    until(Duration::from_secs(1), || {
        fake.probes_of("192.0.2.1").len() == n0 + 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(!ep_up(&zh, 0, 0), "down right after the 3rd failure");
    let probes = fake.probes_of("192.0.2.1");
    let gaps: Vec<Duration> = probes[n0..].windows(2).map(|w| w[1].0 - w[0].0).collect();
    assert_eq!(
        gaps,
        [Duration::from_millis(200), Duration::from_millis(200)],
        "rapid recheck between failures"
    );
    // Region east still up: the other endpoint is healthy (min-healthy 1).
    assert!(zh.region_up(0));
    // Back on the interval once down.
    until(Duration::from_secs(6), || {
        fake.probes_of("192.0.2.1").len() == n0 + 4
    })
    .await;
    let p = fake.probes_of("192.0.2.1");
    assert_eq!(p[n0 + 3].0 - p[n0 + 2].0, Duration::from_secs(5));
    // Recovery: rise = 2, with recheck after the first success.
    fake.set("192.0.2.1", true);
    until(Duration::from_secs(6), || ep_up(&zh, 0, 0)).await;
    let p = fake.probes_of("192.0.2.1");
    let k = p.len();
    assert!(
        p[k - 1].1 && p[k - 2].1 && !p[k - 3].1,
        "up after exactly two successes"
    );
    assert_eq!(p[k - 1].0 - p[k - 2].0, Duration::from_millis(200));
    let journal = t.journal();
    let eps: Vec<(&str, &str)> = journal
        .iter()
        .filter(|j| j.endpoint.is_some())
        .map(|j| (j.from, j.to))
        .collect();
    assert_eq!(eps, [("up", "down"), ("down", "up")]);
    assert!(
        journal.iter().all(|j| j.endpoint.is_some()),
        "the region never changed"
    );
}

/// Out of file descriptors, every probe fails locally: no verdict moves, and
/// the failures do not count toward `fall` afterwards either.
#[tokio::test(start_paused = true)]
async fn local_errors_never_fail_an_endpoint() {
    let fake = Fake::default();
    let t = table(&fake, None);
    let zh = t.apply(&config("")).remove(0);
    until(Duration::from_secs(6), || {
        fake.probes_of("192.0.2.3").len() == 1
    })
    .await;
    fake.local
        .lock()
        .unwrap()
        .push("192.0.2.3".parse().unwrap());
    let n = fake.probes_of("192.0.2.3").len();
    until(Duration::from_secs(60), || {
        fake.probes_of("192.0.2.3").len() >= n + 5
    })
    .await;
    assert!(zh.region_up(1), "still up after 5 local errors");
    assert!(t.journal().is_empty(), "no transition");
    let local = t.metrics.local_errors.with_label_values(&["probe"]).get();
    assert!(local >= 5, "{local} local errors counted");
    // The local errors left no run behind: two real failures are not three.
    fake.local.lock().unwrap().clear();
    fake.set("192.0.2.3", false);
    let n = fake.probes_of("192.0.2.3").len();
    until(Duration::from_secs(6), || {
        fake.probes_of("192.0.2.3").len() == n + 2
    })
    .await;
    assert!(
        zh.region_up(1),
        "two failures after local errors do not fail it"
    );
}

#[tokio::test(start_paused = true)]
async fn a_single_blip_never_fails_a_healthy_endpoint() {
    let fake = Fake::default();
    let t = table(&fake, None);
    let zh = t.apply(&config("")).remove(0);
    until(Duration::from_secs(6), || {
        fake.probes_of("192.0.2.3").len() == 1
    })
    .await;
    for _ in 0..5 {
        fake.set("192.0.2.3", false);
        let n = fake.probes_of("192.0.2.3").len();
        until(Duration::from_secs(6), || {
            fake.probes_of("192.0.2.3").len() == n + 2
        })
        .await;
        fake.set("192.0.2.3", true);
        let n = fake.probes_of("192.0.2.3").len();
        until(Duration::from_secs(6), || {
            fake.probes_of("192.0.2.3").len() == n + 1
        })
        .await;
        assert!(zh.region_up(1));
    }
    assert!(t.journal().is_empty());
}

#[tokio::test(start_paused = true)]
async fn region_follows_min_healthy_and_logs_its_own_transition() {
    let fake = Fake::default();
    fake.set("192.0.2.1", false);
    fake.set("192.0.2.2", false);
    let t = table(&fake, None);
    let zh = t.apply(&config("")).remove(0);
    let took = until(Duration::from_secs(10), || !zh.region_up(0)).await;
    // First probe within the interval, then two rechecks (fall 3).
    assert!(
        took <= Duration::from_secs(5) + Duration::from_millis(400) + Duration::from_millis(50),
        "{took:?}"
    );
    let regions: Vec<Transition> = t
        .journal()
        .into_iter()
        .filter(|j| j.endpoint.is_none())
        .collect();
    assert_eq!(regions.len(), 1);
    assert_eq!(
        (regions[0].region.as_str(), regions[0].to),
        ("east", "down")
    );
    assert!(
        regions[0].reason.contains("0 of 2 endpoints up"),
        "{}",
        regions[0].reason
    );
}

#[tokio::test(start_paused = true)]
async fn overrides_force_regions_and_endpoints() {
    let fake = Fake::default();
    let t = table(&fake, None);
    let zh = t.apply(&config("")).remove(0);
    t.set_override(None, "west", None, Override::Down).unwrap();
    assert!(!zh.region_up(1), "drained");
    t.set_override(Some("z.example."), "west", None, Override::Auto)
        .unwrap();
    assert!(zh.region_up(1));
    override_endpoint(&t, "east", "192.0.2.1", Override::Down);
    assert!(!ep_up(&zh, 0, 0) && ep_up(&zh, 0, 1));
    assert!(zh.region_up(0), "one endpoint left, min-healthy 1");
    override_endpoint(&t, "east", "192.0.2.2", Override::Down);
    assert!(!zh.region_up(0));
    // Forced up wins over dead probes.
    fake.set("192.0.2.3", false);
    until(Duration::from_secs(10), || !zh.region_up(1)).await;
    t.set_override(None, "west", None, Override::Up).unwrap();
    assert!(zh.region_up(1));
    assert!(matches!(
        t.set_override(None, "mars", None, Override::Down),
        Err(OverrideError::UnknownRegion(_))
    ));
    // Each refusal names what is missing: the zone, or the region in it.
    let refused = |zone: Option<&str>, region: &str, endpoint: Option<&str>| {
        t.set_override(
            zone,
            region,
            endpoint.map(|e| e.parse().unwrap()),
            Override::Down,
        )
        .unwrap_err()
        .to_string()
    };
    assert_eq!(
        refused(Some("us-east.example."), "east", None),
        "no zone named \"us-east.example\""
    );
    assert_eq!(
        refused(Some("Z.example."), "us-east", None),
        "zone \"z.example\" has no region named \"us-east\""
    );
    assert_eq!(
        refused(None, "us-east", None),
        "no region named \"us-east\" in any zone"
    );
    assert_eq!(
        refused(Some("z.example"), "east", Some("192.0.2.99")),
        "region \"east\" of zone \"z.example\" has no endpoint 192.0.2.99"
    );
    assert!(matches!(
        t.set_override(
            None,
            "east",
            Some("192.0.2.99".parse().unwrap()),
            Override::Down
        ),
        Err(OverrideError::UnknownEndpoint(..))
    ));
    let reasons: Vec<String> = t
        .journal()
        .iter()
        .filter(|j| j.endpoint.is_none())
        .map(|j| j.reason.clone())
        .collect();
    assert!(reasons.iter().any(|r| r == "override down"), "{reasons:?}");
}

#[tokio::test(start_paused = true)]
async fn reload_keeps_state_counters_and_runs_of_unchanged_endpoints() {
    let fake = Fake::default();
    let t = table(&fake, None);
    let zh = t.apply(&config("")).remove(0);
    fake.set("192.0.2.3", false);
    until(Duration::from_secs(10), || !zh.region_up(1)).await;
    let probes_before = zh.regions[1].endpoints[0].detail().probes;
    // Reload with an unrelated addition: west stays down, same cell, counters kept.
    let zh2 = t
        .apply(&config("[region.north]\nendpoints = [\"192.0.2.9\"]\n"))
        .remove(0);
    let west = zh2.regions.iter().find(|r| r.name == "west").unwrap();
    assert!(Arc::ptr_eq(west, &zh.regions[1]), "same region cell");
    assert!(!west.is_up(), "a reload never flips a down region up");
    assert!(west.endpoints[0].detail().probes >= probes_before);
    // A run in progress continues across the reload: two failures, reload, one more.
    fake.set("192.0.2.1", false);
    let n = fake.probes_of("192.0.2.1").len();
    until(Duration::from_secs(6), || {
        fake.probes_of("192.0.2.1").len() == n + 2
    })
    .await;
    let zh3 = t
        .apply(&config(
            "[region.north]\nendpoints = [\"192.0.2.9\"]\n# changed\n",
        ))
        .remove(0);
    until(Duration::from_secs(1), || !zh3.endpoint_up(0, 0)).await; // regions by name: east, north, west
    assert_eq!(
        fake.probes_of("192.0.2.1").len(),
        n + 3,
        "down on the 3rd failure, not restarted"
    );
    // Removing an endpoint stops its probes.
    let cfg_without_west = config("").zones[0].clone();
    let mut z = (*cfg_without_west).clone();
    z.regions.remove("west");
    let trimmed = Config {
        zones: vec![Arc::new(z)],
    };
    t.apply(&trimmed);
    let n = fake.probes_of("192.0.2.3").len();
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(
        fake.probes_of("192.0.2.3").len(),
        n,
        "removed endpoint is no longer probed"
    );
}

/// `config("")` with the west check changed by `f`.
fn with_west_check(f: impl Fn(&mut Check)) -> Config {
    let mut z = (*config("").zones[0]).clone();
    let mut west = (*z.regions["west"]).clone();
    let mut check = (*west.check.clone().unwrap()).clone();
    f(&mut check);
    west.check = Some(Arc::new(check));
    z.regions.insert("west".into(), Arc::new(west));
    Config {
        zones: vec![Arc::new(z)],
    }
}

// Fails on the code before identities left the check out: the edited
// check made a fresh cell that started up, so the dead region was answered
// again until three new failures (and "up" then "down" went out).
#[tokio::test(start_paused = true)]
async fn editing_a_check_keeps_the_verdict_override_and_counters() {
    let fake = Fake::default();
    let t = table(&fake, None);
    let mut events = t.subscribe();
    let zh = t.apply(&config("")).remove(0);
    fake.set("192.0.2.3", false);
    until(Duration::from_secs(30), || !zh.region_up(1)).await;
    override_endpoint(&t, "east", "192.0.2.1", Override::Down);
    let probes_before = zh.regions[1].endpoints[0].detail().probes;
    while events.try_recv().is_ok() {}

    // interval, fall and rise change; the endpoint is the same one.
    let zh2 = t
        .apply(&with_west_check(|c| {
            c.interval = Duration::from_secs(2);
            c.fall = 5;
            c.rise = 3;
        }))
        .remove(0);
    assert!(
        Arc::ptr_eq(&zh.regions[1].endpoints[0], &zh2.regions[1].endpoints[0]),
        "same cell"
    );
    // Record the region every 100 ms for 20 s: down the whole time.
    let mut timeline = Vec::new();
    for _ in 0..200 {
        timeline.push(zh2.region_up(1));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        timeline.iter().all(|up| !up),
        "the dead region came back after a check edit: {timeline:?}"
    );
    assert!(events.try_recv().is_err(), "no transition from an edit");
    let d = zh2.regions[1].endpoints[0].detail();
    assert!(d.probes > probes_before, "counters carry on: {d:?}");
    assert_eq!(
        zh2.regions[0].endpoints[0].override_state(),
        Override::Down,
        "the drain survives"
    );
    // The new check probes now: every 2 s, and its own rise (3) decides.
    let n = fake.probes_of("192.0.2.3").len();
    fake.set("192.0.2.3", true);
    until(Duration::from_secs(30), || zh2.region_up(1)).await;
    let ups: Vec<_> = fake.probes_of("192.0.2.3")[n..]
        .iter()
        .filter(|(_, ok)| *ok)
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(ups.len(), 3, "rise = 3 of the new check: {ups:?}");
}

#[tokio::test(start_paused = true)]
async fn removing_a_check_makes_the_endpoint_up_and_stops_probing() {
    let fake = Fake::default();
    let t = table(&fake, None);
    let zh = t.apply(&config("")).remove(0);
    fake.set("192.0.2.3", false);
    until(Duration::from_secs(30), || !zh.region_up(1)).await;
    let mut z = (*config("").zones[0]).clone();
    let mut west = (*z.regions["west"]).clone();
    west.check = None;
    z.regions.insert("west".into(), Arc::new(west));
    let zh2 = t
        .apply(&Config {
            zones: vec![Arc::new(z)],
        })
        .remove(0);
    assert!(zh2.region_up(1), "unchecked means up");
    let n = fake.probes_of("192.0.2.3").len();
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(fake.probes_of("192.0.2.3").len(), n, "no longer probed");
}

#[tokio::test(start_paused = true)]
async fn state_file_restores_verdicts_and_overrides_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let fake = Fake::default();
    fake.set("192.0.2.3", false);
    let shutdown = CancellationToken::new();
    let t = Arc::new(HealthTable::new(
        Metrics::new(),
        Arc::new(fake.clone()),
        Some(path.clone()),
        shutdown.clone(),
    ));
    let writer = tokio::spawn(t.clone().persist_loop());
    let zh = t.apply(&config("")).remove(0);
    until(Duration::from_secs(10), || !zh.region_up(1)).await;
    override_endpoint(&t, "east", "192.0.2.2", Override::Down);
    shutdown.cancel();
    writer.await.unwrap();
    t.stop().await;
    let saved = StateFile::read(&path).unwrap().expect("written");
    let by = saved.by_endpoint();
    assert_eq!(
        by[&(
            "z.example".to_string(),
            "west".to_string(),
            "192.0.2.3".parse().unwrap()
        )]
            .up,
        Some(false)
    );

    // "Restart": a new table reading the file. West is down from the first
    // query on (no flap to up), the override survived, and no transition is
    // logged for unchanged endpoints.
    let fake2 = Fake::default();
    fake2.set("192.0.2.3", false);
    let t2 = Arc::new(HealthTable::new(
        Metrics::new(),
        Arc::new(fake2.clone()),
        Some(path),
        CancellationToken::new(),
    ));
    let zh2 = t2.apply(&config("")).remove(0);
    assert!(!zh2.region_up(1), "restored down");
    assert!(!zh2.endpoint_up(0, 1), "override restored");
    assert!(zh2.endpoint_up(0, 0));
    assert!(
        t2.first_verdicts_known(),
        "restored verdicts count as known"
    );
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(
        t2.journal().is_empty(),
        "no transitions after a restart: {:?}",
        t2.journal()
    );
}

/// A backend that, once frozen, accepts and never answers: every probe
/// fails only at the check's timeout.
struct Freezable {
    frozen: Arc<std::sync::atomic::AtomicBool>,
    timeout: Duration,
    starts: Arc<Mutex<Vec<Instant>>>,
}

impl Probe for Freezable {
    fn probe(&self) -> Pin<Box<dyn Future<Output = ProbeResult> + Send + '_>> {
        Box::pin(async move {
            self.starts.lock().unwrap().push(Instant::now());
            if self.frozen.load(std::sync::atomic::Ordering::SeqCst) {
                tokio::time::sleep(self.timeout).await;
                ProbeResult {
                    outcome: ProbeOutcome::Timeout,
                    reason: "timeout after 500ms".into(),
                    latency: self.timeout,
                    certificate_expiry: None,
                }
            } else {
                ProbeResult {
                    outcome: ProbeOutcome::Success,
                    reason: "ok".into(),
                    latency: Duration::ZERO,
                    certificate_expiry: None,
                }
            }
        })
    }
}

struct FreezableFactory(Arc<std::sync::atomic::AtomicBool>, Arc<Mutex<Vec<Instant>>>);

impl ProbeFactory for FreezableFactory {
    fn make(&self, check: &Arc<Check>, _key: &EndpointKey) -> Box<dyn Probe> {
        Box::new(Freezable {
            frozen: self.0.clone(),
            timeout: check.timeout,
            starts: self.1.clone(),
        })
    }
}

#[tokio::test(start_paused = true)]
async fn rechecks_overlap_a_probe_that_waits_for_its_timeout() {
    let text = r#"[zone]
name = "z.example."
nameservers = ["ns1.example.net."]
hostmaster = "h.example.net."
[check.c]
type = "http"
interval = "1s"
timeout = "500ms"
recheck = "200ms"
fall = 3
rise = 2
[region.r]
endpoints = ["192.0.2.1"]
check = "c"
"#;
    let cfg = load(text.into());
    let frozen = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let starts = Arc::new(Mutex::new(Vec::new()));
    let t = Arc::new(HealthTable::new(
        Metrics::new(),
        Arc::new(FreezableFactory(frozen.clone(), starts.clone())),
        None,
        CancellationToken::new(),
    ));
    let zh = t.apply(&cfg).remove(0);
    until(Duration::from_secs(2), || starts.lock().unwrap().len() == 1).await;
    frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    let n = starts.lock().unwrap().len();
    until(Duration::from_secs(2), || {
        starts.lock().unwrap().len() == n + 1
    })
    .await;
    let first_failing = *starts.lock().unwrap().last().unwrap();
    until(Duration::from_secs(5), || !zh.region_up(0)).await;
    let took = Instant::now() - first_failing;
    // Probes start at 0 (fails at 500 ms), 500 ms (when that failure is
    // known), 700 ms (recheck later, while the second still waits): the third
    // failure lands at 1.2 s. Sequential rechecks would need
    // 3 x 500 ms + 2 x 200 ms = 1.9 s.
    // `until` polls every millisecond.
    assert!(
        took >= Duration::from_millis(1200) && took <= Duration::from_millis(1202),
        "down at 2 x timeout + recheck after the first failing probe started, took {took:?}"
    );
    let s = starts.lock().unwrap().clone();
    assert_eq!(
        s[n + 1] - s[n],
        Duration::from_millis(500),
        "first re-probe when the first timeout is known"
    );
    assert_eq!(
        s[n + 2] - s[n + 1],
        Duration::from_millis(200),
        "the next one recheck later, while the previous still waits"
    );
    let endpoint_events: Vec<u32> = t
        .journal()
        .iter()
        .filter(|j| j.endpoint.is_some())
        .map(|_| 0)
        .collect();
    assert_eq!(endpoint_events.len(), 1, "exactly one transition");
}

/// A state file with a drained endpoint (east 192.0.2.2), a drained region
/// (west) and west's verdict down, as a run of the table writes it.
async fn saved_state_with_drains(path: &std::path::Path) -> String {
    let fake = Fake::default();
    fake.set("192.0.2.3", false);
    let shutdown = CancellationToken::new();
    let t = Arc::new(HealthTable::new(
        Metrics::new(),
        Arc::new(fake.clone()),
        Some(path.to_path_buf()),
        shutdown.clone(),
    ));
    let writer = tokio::spawn(t.clone().persist_loop());
    let zh = t.apply(&config("")).remove(0);
    until(Duration::from_secs(10), || !zh.region_up(1)).await;
    override_endpoint(&t, "east", "192.0.2.2", Override::Down);
    t.set_override(None, "west", None, Override::Down).unwrap();
    shutdown.cancel();
    writer.await.unwrap();
    t.stop().await;
    std::fs::read_to_string(path).unwrap()
}

/// Start a table on `path` and let it write its state again.
async fn restart_on(path: &std::path::Path) -> (Arc<HealthTable>, Arc<ZoneHealth>) {
    let shutdown = CancellationToken::new();
    let t = Arc::new(HealthTable::new(
        Metrics::new(),
        Arc::new(Fake::default()),
        Some(path.to_path_buf()),
        shutdown.clone(),
    ));
    let writer = tokio::spawn(t.clone().persist_loop());
    let zh = t.apply(&config("")).remove(0);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(t.persist_now().await.unwrap(), "a state file is written");
    shutdown.cancel();
    writer.await.unwrap();
    t.stop().await;
    (t, zh)
}

fn damaged_copies(dir: &std::path::Path) -> Vec<(PathBuf, Vec<u8>)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".damaged-"))
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect()
}

// Issue 24 item 13. Fails on the code before it: a truncated file was
// warned about, every endpoint started up with no overrides, and the file
// was overwritten within seconds, the drains gone for good.
#[tokio::test(start_paused = true)]
async fn a_truncated_state_file_is_kept_aside_and_its_drains_survive() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let text = saved_state_with_drains(&path).await;
    // Cut after the last entry that names an override (the regions come
    // after the endpoints), inside the zones list.
    let cut = text.find("\"zones\"").expect("zones listed") + 12;
    let damaged = text[..cut].to_string();
    std::fs::write(&path, &damaged).unwrap();

    let (_t, zh) = restart_on(&path).await;
    assert!(!zh.endpoint_up(0, 1), "the endpoint drain survived");
    assert!(!zh.region_up(1), "the region drain survived");
    let copies = damaged_copies(dir.path());
    assert_eq!(copies.len(), 1, "kept aside once: {copies:?}");
    assert_eq!(copies[0].1, damaged.as_bytes(), "kept as it was");
    let now = StateFile::read(&path).unwrap().expect("a new state file");
    assert_eq!(now.regions.len(), 1, "{now:?}");
}

// Issue 24 item 13: a downgrade (a file of a newer format) undrained
// everything before.
#[tokio::test(start_paused = true)]
async fn a_state_file_of_a_newer_version_keeps_its_drains_after_a_downgrade() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let text = saved_state_with_drains(&path).await;
    let newer = text
        .replacen("\"version\": 1", "\"version\": 2", 1)
        .replace("\"since_ms\"", "\"new_field\": [1, 2], \"since_ms\"");
    assert_ne!(newer, text);
    std::fs::write(&path, &newer).unwrap();

    let (_t, zh) = restart_on(&path).await;
    assert!(!zh.endpoint_up(0, 1), "the endpoint drain survived");
    assert!(!zh.region_up(1), "the region drain survived");
    let copies = damaged_copies(dir.path());
    assert_eq!(copies.len(), 1);
    assert_eq!(
        copies[0].1,
        newer.as_bytes(),
        "the newer file is kept as it was"
    );
}

#[test]
fn salvage_reads_every_complete_entry_and_no_verdict() {
    let text = r#"{"version": 7, "endpoints": [
        {"zone": "z", "region": "r", "addr": "192.0.2.1", "check": 1, "up": false, "override": "down", "since_ms": 5},
        {"zone": "z", "region": "r", "addr": "192.0.2.2", "check": 1, "up": true, "override": "auto", "since_ms": 5, "x": {"nested": "}"}},
        {"zone": "z", "region": "q", "addr": "192.0.2.3", "check": 1, "up": true, "ove"#;
    let s = StateFile::salvage(text);
    assert_eq!(s.endpoints.len(), 1, "{s:?}");
    assert_eq!(s.endpoints[0].overridden, Override::Down);
    assert_eq!(s.endpoints[0].up, None, "no verdict from a damaged file");
    let s =
        StateFile::salvage(r#"{"regions": [{"zone": "z", "region": "r\"}", "override": "up"}]}"#);
    assert_eq!(s.regions.len(), 1);
    assert_eq!(s.regions[0].region, "r\"}");
}

/// Records what the table tells a cluster, for the evidence rules.
#[derive(Default)]
struct Votes(Mutex<Vec<(String, Instant, &'static str)>>);

impl Observer for Votes {
    fn observed(&self, key: &EndpointKey, _check: &Check, up: bool, _reason: &str) {
        let what = if up { "up" } else { "down" };
        self.0
            .lock()
            .unwrap()
            .push((key.addr.to_string(), Instant::now(), what));
    }
    fn should_probe(&self, _key: &EndpointKey, _check: &Check) -> bool {
        true
    }
    fn withdraw(&self, key: &EndpointKey, _check: &Check) {
        self.0
            .lock()
            .unwrap()
            .push((key.addr.to_string(), Instant::now(), "withdrawn"));
    }
}

impl Votes {
    fn of(&self, addr: &str) -> Vec<(Instant, &'static str)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(a, _, _)| a == addr)
            .map(|(_, t, w)| (*t, *w))
            .collect()
    }
}

// Issue 24 item 4. Fails on the code before it: the first probe result
// published the starting state (up) as a vote, and a node whose probing
// stalled (local errors) kept voting for as long as its lease lived.
#[tokio::test(start_paused = true)]
async fn a_vote_is_published_once_decided_and_withdrawn_when_probing_stalls() {
    let fake = Fake::default();
    let t = table(&fake, None);
    let votes = Arc::new(Votes::default());
    t.set_observer(votes.clone());
    t.apply(&config(""));
    // rise = 2: the starting state counts once two results stand behind it.
    until(Duration::from_secs(20), || {
        !votes.of("192.0.2.3").is_empty()
    })
    .await;
    let probes = fake.probes_of("192.0.2.3");
    let first = votes.of("192.0.2.3")[0];
    assert_eq!(first.1, "up");
    assert_eq!(
        probes.len(),
        2,
        "published after the second result: {probes:?}"
    );
    assert!(first.0 >= probes[1].0, "not before it");
    // Probing stalls: every probe fails locally. The vote goes after three
    // intervals and a timeout (5 s, 2 s) without a result.
    fake.local
        .lock()
        .unwrap()
        .push("192.0.2.3".parse().unwrap());
    let stalled = Instant::now();
    until(Duration::from_secs(60), || {
        votes
            .of("192.0.2.3")
            .last()
            .is_some_and(|v| v.1 == "withdrawn")
    })
    .await;
    let after = votes.of("192.0.2.3").last().unwrap().0 - stalled;
    assert!(
        after <= Duration::from_secs(17) + Duration::from_secs(5),
        "withdrawn {after:?} after the stall"
    );
    // Probing again: the vote comes back once fall/rise stands behind it.
    fake.local.lock().unwrap().clear();
    let resumed = fake.probes_of("192.0.2.3").len();
    until(Duration::from_secs(30), || {
        votes.of("192.0.2.3").last().is_some_and(|v| v.1 == "up")
    })
    .await;
    assert!(
        fake.probes_of("192.0.2.3").len() >= resumed + 2,
        "two results before voting again"
    );
}

// The design of issue 24: one decider at a time, and only it writes
// effective verdicts. This node's probes keep their own verdict (for
// `local` mode and for publishing) while the cluster decides; the cluster's
// decisions carry its revision; taking its own verdicts back applies them.
#[tokio::test(start_paused = true)]
async fn only_the_decider_writes_effective_verdicts() {
    let fake = Fake::default();
    let t = table(&fake, None);
    let votes = Arc::new(Votes::default());
    t.set_observer(votes.clone());
    let zh = t.apply(&config("")).remove(0);
    let said = |what: &'static str| votes.of("192.0.2.3").last().is_some_and(|v| v.1 == what);
    until(Duration::from_secs(20), || said("up")).await;
    let ep = endpoint(&t, "192.0.2.3");
    t.deciding().follow_cluster(42);
    assert_eq!(t.deciding().by(), DecidedBy::Cluster(42));

    // This node's probes see it down: its own verdict, published, and not
    // the effective one while the cluster decides.
    fake.set("192.0.2.3", false);
    until(Duration::from_secs(30), || said("down")).await;
    assert!(!ep.cell.local_up());
    assert!(ep_up(&zh, 1, 0), "the cluster has not decided: still up");
    assert!(t.journal().is_empty(), "{:?}", t.journal());

    // The cluster decides down: stamped with its revision.
    let d = t.deciding();
    d.set(&[(ep.key.clone(), ep.cell.clone(), false, "decided".into())]);
    drop(d);
    assert!(!ep_up(&zh, 1, 0));
    let j = t.journal();
    assert!(
        !j.is_empty() && j.iter().all(|x| x.cluster_rev == Some(42)),
        "{j:?}"
    );

    // Probes see it up again: still the cluster's down.
    fake.set("192.0.2.3", true);
    until(Duration::from_secs(30), || said("up")).await;
    assert!(!ep_up(&zh, 1, 0), "only the cluster moves it");

    // Out of the cluster: this node's own verdict, unstamped.
    t.deciding().take_own("no live etcd session");
    assert_eq!(t.deciding().by(), DecidedBy::ThisNode);
    assert!(ep_up(&zh, 1, 0));
    let last = t.journal().pop().unwrap();
    assert_eq!((last.to, last.cluster_rev), ("up", None), "{last:?}");
}

/// Calculated health (issue 23 item 7): `west` depends on `east`. Polled
/// every millisecond through a failure and back, `west` is up exactly when
/// `east` is (its own endpoint stays up), each with its own transition.
#[tokio::test(start_paused = true)]
async fn a_region_moves_with_what_it_depends_on_in_the_same_instant() {
    let fake = Fake::default();
    let t = table(&fake, None);
    let cfg = config("depends-on = [\"east\"]");
    let zh = t.apply(&cfg).remove(0);
    let (east, west) = (0, 1);
    let same = |zh: &ZoneHealth| {
        assert_eq!(
            zh.region_up(west),
            zh.region_up(east),
            "west moves with east"
        );
        assert!(ep_up(zh, west, 0), "west's own endpoint stays up");
    };
    fake.set("192.0.2.1", false);
    fake.set("192.0.2.2", false);
    until(Duration::from_secs(10), || {
        same(&zh);
        !zh.region_up(east)
    })
    .await;
    let regions: Vec<Transition> = t
        .journal()
        .into_iter()
        .filter(|j| j.endpoint.is_none())
        .collect();
    let got: Vec<(&str, &str)> = regions.iter().map(|r| (r.region.as_str(), r.to)).collect();
    assert_eq!(got, [("east", "down"), ("west", "down")]);
    assert_eq!(
        regions[1].reason,
        "depends-on: 0 of 1 up, needs 1 (east down); 1 of 1 endpoints up"
    );
    // Forced up, the dependency counts as up: as DNS uses it.
    t.set_override(None, "east", None, Override::Up).unwrap();
    same(&zh);
    assert!(zh.region_up(west));
    t.set_override(None, "east", None, Override::Auto).unwrap();
    same(&zh);
    assert!(!zh.region_up(west));
    fake.set("192.0.2.1", true);
    until(Duration::from_secs(20), || {
        same(&zh);
        zh.region_up(east)
    })
    .await;
    // A reload of the same zones keeps every cell and moves nothing.
    let before = t.journal().len();
    let again = t.apply(&cfg).remove(0);
    assert!(Arc::ptr_eq(&again.regions[west], &zh.regions[west]));
    assert_eq!(t.journal().len(), before);
}

/// A reload that changes a dependency's cell (its min-healthy here) makes
/// a new cell for its dependents too, holding the new one; the endpoint
/// cells and their verdicts stay.
#[tokio::test(start_paused = true)]
async fn a_dependents_cell_follows_its_dependency_across_a_reload() {
    let fake = Fake::default();
    let t = table(&fake, None);
    let cfg = config("depends-on = [\"east\"]");
    let zh = t.apply(&cfg).remove(0);
    fake.set("192.0.2.2", false);
    until(Duration::from_secs(10), || !ep_up(&zh, 0, 1)).await;
    assert!(
        zh.region_up(0) && zh.region_up(1),
        "east has another endpoint up"
    );
    let mut cfg = cfg.clone();
    let zone = Arc::make_mut(&mut cfg.zones[0]);
    Arc::make_mut(zone.regions.get_mut("east").unwrap()).min_healthy = 2;
    let again = t.apply(&cfg).remove(0);
    assert!(!Arc::ptr_eq(&again.regions[0], &zh.regions[0]));
    assert!(!Arc::ptr_eq(&again.regions[1], &zh.regions[1]));
    assert!(Arc::ptr_eq(
        &again.regions[0].endpoints[1],
        &zh.regions[0].endpoints[1]
    ));
    match &again.regions[1].depends.as_ref().unwrap().on[0].1 {
        crate::health::DependencyCell::Region(r) => assert!(Arc::ptr_eq(r, &again.regions[0])),
        other => panic!("{other:?}"),
    }
    assert!(!again.region_up(0), "min-healthy 2 with one endpoint down");
    assert!(!again.region_up(1), "and west with it");
    let last: Vec<(String, &str)> = t
        .journal()
        .into_iter()
        .filter(|j| j.endpoint.is_none())
        .map(|j| (j.region, j.to))
        .collect();
    assert_eq!(
        last,
        [("east".to_string(), "down"), ("west".to_string(), "down")]
    );
}

/// Panics making its first probe's future, then while polling the second;
/// every later probe fails. Counts every endpoint's probes in `.1`.
struct Panicky(
    std::sync::atomic::AtomicU32,
    Arc<std::sync::atomic::AtomicU32>,
);

impl Probe for Panicky {
    fn probe(&self) -> Pin<Box<dyn Future<Output = ProbeResult> + Send + '_>> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        match self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            0 => panic!("a probe that panics making its future"),
            1 => Box::pin(async { panic!("a probe that panics while polled") }),
            _ => Box::pin(async {
                ProbeResult {
                    outcome: ProbeOutcome::Refused,
                    reason: "connection refused".into(),
                    latency: Duration::ZERO,
                    certificate_expiry: None,
                }
            }),
        }
    }
}

impl ProbeFactory for Panicky {
    fn make(&self, _check: &Arc<Check>, _key: &EndpointKey) -> Box<dyn Probe> {
        Box::new(Panicky(Default::default(), self.1.clone()))
    }
}

// A probe that panics gives no verdict and the endpoint's task goes on:
// making the future (outside the poll since the permit is taken at launch)
// and polling it alike.
#[tokio::test(start_paused = true)]
async fn a_probe_that_panics_gives_no_verdict_and_probing_goes_on() {
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let t = Arc::new(HealthTable::new(
        Metrics::new(),
        Arc::new(Panicky(Default::default(), calls.clone())),
        None,
        CancellationToken::new(),
    ));
    let zh = t.apply(&config("")).remove(0);
    let n = || calls.load(std::sync::atomic::Ordering::SeqCst);
    // Each endpoint: two panicking probes, then failures (fall = 3).
    until(Duration::from_secs(20), || n() >= 3 * 3).await;
    until(Duration::from_secs(30), || {
        !zh.region_up(0) && !zh.region_up(1)
    })
    .await;
    let west = endpoint(&t, "192.0.2.3");
    let d = west.cell.detail();
    assert_eq!(d.last_outcome, Some(ProbeOutcome::Refused));
    assert!(
        d.probes >= 3,
        "results counted after the panics: {}",
        d.probes
    );
    t.stop().await;
}

/// The value of gauge `vec`'s series with these label values (zone,
/// region, endpoint), if exported.
fn gauge(vec: &prometheus::IntGaugeVec, labels: &[&str]) -> Option<i64> {
    use prometheus::core::Collector;
    let names = ["zone", "region", "endpoint"];
    vec.collect()
        .iter()
        .flat_map(|f| f.get_metric())
        .find_map(|m| {
            let pairs = m.get_label();
            let matches = pairs.len() == labels.len()
                && names.iter().zip(labels).all(|(name, value)| {
                    pairs
                        .iter()
                        .any(|l| l.name() == *name && l.value() == *value)
                });
            matches.then(|| m.get_gauge().get_value() as i64)
        })
}

// A transition sets the changed endpoint's gauges and its region's (not
// every endpoint's of the region any more); overrides and reloads set and
// drop theirs.
#[tokio::test(start_paused = true)]
async fn gauges_follow_transitions_overrides_and_reloads() {
    let fake = Fake::default();
    let t = table(&fake, None);
    let zh = t.apply(&config("")).remove(0);
    let m = &t.metrics;
    let ep = |region: &str, addr: &str| gauge(&m.endpoint_up, &["z.example", region, addr]);
    let region = |r: &str| gauge(&m.region_up, &["z.example", r]);
    for (r, a) in [
        ("east", "192.0.2.1"),
        ("east", "192.0.2.2"),
        ("west", "192.0.2.3"),
    ] {
        assert_eq!(ep(r, a), Some(1), "{a}");
    }
    assert_eq!((region("east"), region("west")), (Some(1), Some(1)));

    fake.set("192.0.2.3", false);
    until(Duration::from_secs(10), || !zh.region_up(1)).await;
    assert_eq!(ep("west", "192.0.2.3"), Some(0));
    assert_eq!(region("west"), Some(0));
    assert_eq!(ep("east", "192.0.2.1"), Some(1));

    // Several verdicts decided together (a cluster's revision).
    let e2 = endpoint(&t, "192.0.2.2");
    let decide = |up: bool| {
        t.deciding()
            .set(&[(e2.key.clone(), e2.cell.clone(), up, "decided".into())])
    };
    decide(false);
    assert_eq!(ep("east", "192.0.2.2"), Some(0));
    decide(true);
    assert_eq!(ep("east", "192.0.2.2"), Some(1));

    override_endpoint(&t, "east", "192.0.2.1", Override::Down);
    assert_eq!(ep("east", "192.0.2.1"), Some(0));
    assert_eq!(
        gauge(&m.endpoint_override, &["z.example", "east", "192.0.2.1"]),
        Some(Override::Down.gauge())
    );
    assert_eq!(region("east"), Some(1), "min-healthy 1: one left");

    fake.set("192.0.2.3", true);
    until(Duration::from_secs(10), || zh.region_up(1)).await;
    assert_eq!(ep("west", "192.0.2.3"), Some(1));
    assert_eq!(region("west"), Some(1));

    // West's endpoint replaced: the old series goes, the new one is set.
    t.apply(&load(config_text("").replace("192.0.2.3", "192.0.2.4")));
    assert_eq!(ep("west", "192.0.2.3"), None, "gone with its endpoint");
    assert_eq!(ep("west", "192.0.2.4"), Some(1));
    assert_eq!(ep("east", "192.0.2.1"), Some(0), "the override stays");
    // And back: a new cell makes its series again.
    t.apply(&config(""));
    assert_eq!(ep("west", "192.0.2.4"), None);
    assert_eq!(ep("west", "192.0.2.3"), Some(1), "exported again");
    t.stop().await;
}
