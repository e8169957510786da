//! Failover end to end over real sockets: loopback HTTP backends that die,
//! fail, hang and recover; the server's probes notice them after exactly
//! `fall` (or `rise`) probes, and DNS answers follow from the very next query.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use gslb::health::{EndpointCell, ProbeOutcome, RegionCell, Transition};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::backend::{Backend, Mode};
use crate::support::*;

const US: &str = "127.0.0.2";
const EU: &str = "127.0.0.3";
const AP: &str = "127.0.0.4";

/// The zone header.
const HEAD: &str = r#"
[zone]
name = "gslb.test."
nameservers = ["ns1.example.net."]
hostmaster = "hostmaster@example.net"
serial = 1
negative-ttl = 30
"#;

/// A zone with one region per backend, each probed by its own fast check
/// (fall 3, rise 2) on that backend's port, then `rest`.
fn zone(regions: &[(&str, &Backend, &str)], rest: &str) -> String {
    let mut z = HEAD.to_string();
    for (name, backend, recheck) in regions {
        z.push_str(&format!(
            r#"
[check.{name}]
type = "http"
port = {port}
path = "/health"
interval = "200ms"
timeout = "150ms"
recheck = "{recheck}"
fall = 3
rise = 2

[region.{name}]
endpoints = ["{ip}"]
check = "{name}"
"#,
            port = backend.addr.port(),
            ip = backend.addr.ip(),
        ));
    }
    z.push_str(rest);
    z
}

/// Start the server on `zone` and wait until every endpoint has been probed once.
async fn serve(zone: &str) -> TestServer {
    let ts = TestServer::start_with(&[("gslb.test.toml", zone)], |s| s.udp_workers = 2).await;
    ts.wait_first_verdicts(Duration::from_secs(3)).await;
    ts
}

fn fqdn(key: &str) -> String {
    format!("{key}.gslb.test.")
}

/// The addresses an A query for service `key` gets, sorted.
async fn a(ts: &TestServer, key: &str) -> Vec<String> {
    let mut v = addrs(&ts.query(&fqdn(key), RecordType::A).await);
    v.sort();
    v
}

/// The TTLs of the answer to an A query for `key` (asserted equal), and the answer.
async fn ttl_of(ts: &TestServer, key: &str) -> (u32, Vec<String>) {
    let m = ts.query(&fqdn(key), RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m}");
    let ttls: BTreeSet<u32> = m.answers.iter().map(|r| r.ttl).collect();
    assert_eq!(ttls.len(), 1, "one TTL across the answer: {m}");
    let mut v = addrs(&m);
    v.sort();
    (*ttls.first().expect("one"), v)
}

fn region_cell(ts: &TestServer, name: &str) -> Arc<RegionCell> {
    ts.server
        .health
        .regions()
        .into_iter()
        .find(|r| r.name == name)
        .expect("region cell")
}

/// Journal length now: transitions after this mark are the test's.
fn mark(ts: &TestServer) -> usize {
    ts.server.health.journal().len()
}

/// The first transition of `region` (the region itself, or with `endpoint`
/// its endpoint) to `to` journaled after `mark`.
fn journaled(
    ts: &TestServer,
    region: &str,
    endpoint: bool,
    to: &str,
    mark: usize,
) -> Option<Transition> {
    ts.server
        .health
        .journal()
        .into_iter()
        .skip(mark)
        .find(|t| t.region == region && t.endpoint.is_some() == endpoint && t.to == to)
}

/// What [`watch_flip`] saw.
struct Flip {
    /// The region's transition, from the journal.
    at: Transition,
    /// The endpoint's run (consecutive probes disagreeing with its state)
    /// when each query answered in the old state was sent.
    runs: BTreeSet<u32>,
}

/// Query `key` every 10 ms until the journal shows `region` (one endpoint)
/// going `to`. While the endpoint is still in its old state once a reply is
/// back, the reply must be `before`; the first query sent after the journal
/// shows the transition must already answer `after`.
async fn watch_flip(
    ts: &TestServer,
    region: &str,
    to: &str,
    mark: usize,
    key: &str,
    before: &str,
    after: &str,
) -> Flip {
    let cell = region_cell(ts, region);
    let old_up = to == "down";
    let mut runs = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let shown = journaled(ts, region, false, to, mark);
        let run = cell.endpoints[0].detail().run;
        let got = a(ts, key).await;
        if let Some(at) = shown {
            assert_eq!(
                got,
                [after],
                "the first query after the journal shows {region} {to} answers {after}"
            );
            let needed = if old_up { 3 } else { 2 };
            assert!(
                runs.iter().all(|&r| r < needed),
                "{region} stayed {} after {needed} probes toward {to}: runs seen {runs:?}",
                if old_up { "up" } else { "down" }
            );
            return Flip { at, runs };
        }
        // Within one phase the endpoint only moves one way: still in the old
        // state now means it was in it when the query was answered.
        if cell.is_up() == old_up {
            assert_eq!(
                got,
                [before],
                "{key} answers {before} while {region} has had only {run} probe(s) toward {to}"
            );
            runs.insert(run);
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {region} to go {to}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `key` answers every one of `n` A queries from `allowed` with one address.
async fn only_from(ts: &TestServer, key: &str, n: usize, allowed: &[&str]) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        let got = a(ts, key).await;
        assert_eq!(got.len(), 1, "{key}: one region, one address: {got:?}");
        assert!(allowed.contains(&got[0].as_str()), "{key} answered {got:?}");
        seen.insert(got[0].clone());
    }
    seen
}

/// Failed and successful probes of an endpoint so far.
fn tally(ep: &EndpointCell) -> (u64, u64) {
    let d = ep.detail();
    (d.failures, d.probes - d.failures)
}

/// The endpoint transition `t` came with exactly `n` probes of its new kind
/// since `before` (checked when no probe has ended since the deciding one,
/// which is the case unless this test stalled for a whole interval).
fn assert_decided_by(ep: &EndpointCell, before: (u64, u64), t: &Transition, n: u64) {
    // The threshold machine's own count, always checked.
    assert_eq!(
        t.consecutive,
        Some(n as u32),
        "{} went {} after {:?} consecutive results, not {n}",
        t.region,
        t.to,
        t.consecutive
    );
    // And the probes counted on the endpoint: exactly n when no probe has
    // ended since the transition, at least n otherwise.
    let d = ep.detail();
    let now = (d.failures, d.probes - d.failures);
    let (kind, k) = match t.to {
        "down" => ("failures", now.0 - before.0),
        _ => ("successes", now.1 - before.1),
    };
    if d.last_probe.is_some_and(|p| p <= t.time) {
        assert_eq!(k, n, "{} went {} after {k} {kind}", t.region, t.to);
    } else {
        assert!(k >= n, "{} went {} after only {k} {kind}", t.region, t.to);
    }
}

fn after(t: &Transition, since: SystemTime) -> Duration {
    t.time.duration_since(since).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_follows_backend_health_end_to_end() {
    let mut us = Backend::start(US).await;
    let mut eu = Backend::start(EU).await;
    let mut ap = Backend::start(AP).await;
    // us re-probes after 100 ms so a query lands between its failures.
    let z = zone(
        &[
            ("us", &us, "100ms"),
            ("eu", &eu, "50ms"),
            ("ap", &ap, "50ms"),
        ],
        r#"
[service.api]
regions = ["us", "eu", "ap"]
ttl = 60

[service.www]
policy = "weighted"
weights = { us = 3, eu = 1, ap = 0 }

[service.assets]
policy = "all-healthy"
regions = ["us", "eu"]

[service.api-servfail]
regions = ["us", "eu", "ap"]
when-all-down = "servfail"

[service.api-nodata]
regions = ["us", "eu", "ap"]
when-all-down = "nodata"

[service.api-last]
regions = ["us", "eu"]
when-all-down = "last-resort"
last-resort = "ap"
"#,
    );
    let ts = serve(&z).await;
    let us_ep = region_cell(&ts, "us").endpoints[0].clone();

    // All healthy: the primary, full TTLs, both all-healthy regions, weighted never the standby.
    assert_eq!(ttl_of(&ts, "api").await, (60, vec![US.to_string()]));
    assert_eq!(
        ttl_of(&ts, "assets").await,
        (30, vec![US.to_string(), EU.to_string()])
    );
    assert_eq!(ttl_of(&ts, "www").await.0, 30);
    only_from(&ts, "www", 40, &[US, EU]).await;

    // Killed: refused connections; down after exactly 3 failures, not before.
    let before = tally(&us_ep);
    let m = mark(&ts);
    let t0 = SystemTime::now();
    us.kill();
    let flip = watch_flip(&ts, "us", "down", m, "api", US, EU).await;
    assert!(
        flip.runs.contains(&1) && flip.runs.contains(&2),
        "api answered us after the 1st and the 2nd failure: runs seen {:?}",
        flip.runs
    );
    let ep = journaled(&ts, "us", true, "down", m).expect("endpoint transition");
    assert_eq!(ep.reason, "connection refused");
    assert!(ep.time <= flip.at.time);
    assert_decided_by(&us_ep, before, &ep, 3);
    eprintln!("killed: us down after {:?}", after(&flip.at, t0));

    // Degraded: the secondary with the degraded TTL; weighted never answers
    // the standby while eu is up; all-healthy only eu.
    assert_eq!(ttl_of(&ts, "api").await, (10, vec![EU.to_string()]));
    assert_eq!(ttl_of(&ts, "www").await, (10, vec![EU.to_string()]));
    only_from(&ts, "www", 50, &[EU]).await;
    assert_eq!(ttl_of(&ts, "assets").await, (10, vec![EU.to_string()]));

    // Back: up after exactly 2 successes (eu until then), full TTL again.
    let before = tally(&us_ep);
    let m = mark(&ts);
    let t0 = SystemTime::now();
    us.revive().await;
    let flip = watch_flip(&ts, "us", "up", m, "api", EU, US).await;
    assert!(
        flip.runs.contains(&1),
        "api answered eu after the 1st success: runs seen {:?}",
        flip.runs
    );
    let ep = journaled(&ts, "us", true, "up", m).expect("endpoint transition");
    assert_decided_by(&us_ep, before, &ep, 2);
    eprintln!("revived: us up after {:?}", after(&flip.at, t0));
    assert_eq!(ttl_of(&ts, "api").await, (60, vec![US.to_string()]));
    assert_eq!(
        ttl_of(&ts, "assets").await,
        (30, vec![US.to_string(), EU.to_string()])
    );
    let seen = only_from(&ts, "www", 60, &[US, EU]).await;
    assert!(seen.contains(US), "www answers us again");

    // 503: the same failover.
    let before = tally(&us_ep);
    let m = mark(&ts);
    let t0 = SystemTime::now();
    us.set(Mode::Failing);
    let flip = watch_flip(&ts, "us", "down", m, "api", US, EU).await;
    assert!(
        flip.runs.contains(&1) && flip.runs.contains(&2),
        "api answered us after the 1st and the 2nd 503: runs seen {:?}",
        flip.runs
    );
    let ep = journaled(&ts, "us", true, "down", m).expect("endpoint transition");
    assert_eq!(ep.reason, "status 503");
    assert_decided_by(&us_ep, before, &ep, 3);
    eprintln!("503: us down after {:?}", after(&flip.at, t0));
    assert_eq!(ttl_of(&ts, "api").await, (10, vec![EU.to_string()]));

    let m = mark(&ts);
    let t0 = SystemTime::now();
    us.set(Mode::Healthy);
    let flip = watch_flip(&ts, "us", "up", m, "api", EU, US).await;
    eprintln!("healthy: us up after {:?}", after(&flip.at, t0));
    assert_eq!(ttl_of(&ts, "api").await, (60, vec![US.to_string()]));

    // Everything down: each service's when-all-down rule.
    let m = mark(&ts);
    us.kill();
    eu.kill();
    ap.kill();
    wait_until(Duration::from_secs(5), "us, eu and ap down", || {
        let all = ["us", "eu", "ap"]
            .iter()
            .all(|r| journaled(&ts, r, false, "down", m).is_some());
        async move { all }
    })
    .await;
    // fail-open (the default): as if all were up, the primary, degraded TTL.
    assert_eq!(ttl_of(&ts, "api").await, (10, vec![US.to_string()]));
    only_from(&ts, "www", 30, &[US, EU]).await;
    assert_eq!(
        ttl_of(&ts, "assets").await,
        (10, vec![US.to_string(), EU.to_string()])
    );
    let r = ts.query(&fqdn("api-servfail"), RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail, "{r}");
    assert!(r.answers.is_empty(), "{r}");
    let r = ts.query(&fqdn("api-nodata"), RecordType::A).await;
    assert_nodata(&r);
    // last-resort: the named region, down or not.
    assert_eq!(ttl_of(&ts, "api-last").await, (10, vec![AP.to_string()]));
}

/// NOERROR, authoritative, no answer, the zone's SOA in authority with the negative TTL.
fn assert_nodata(m: &Message) {
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m}");
    assert!(m.metadata.authoritative, "AA: {m}");
    assert!(m.answers.is_empty(), "no answer: {m}");
    assert_eq!(m.authorities.len(), 1, "one SOA in authority: {m}");
    let soa = &m.authorities[0];
    assert_eq!(soa.record_type(), RecordType::SOA, "{m}");
    assert_eq!(soa.name.to_ascii(), "gslb.test.");
    assert_eq!(soa.ttl, 30, "negative TTL");
}

/// A zone of unchecked (always up) regions us, eu and ap, then `rest`.
fn unchecked_zone(rest: &str) -> String {
    format!(
        r#"{HEAD}
[region.us]
endpoints = ["{US}"]

[region.eu]
endpoints = ["{EU}"]

[region.ap]
endpoints = ["{AP}"]
{rest}"#
    )
}

/// Send `n` A queries for `name` one after another on one socket; the
/// address sets answered.
async fn burst(server: SocketAddr, name: String, n: usize) -> Vec<Vec<String>> {
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let mut buf = vec![0u8; 4096];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let req = request(&name, RecordType::A, true);
        sock.send_to(&req.to_vec().expect("encode"), server)
            .await
            .expect("send");
        let (len, _) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
            .await
            .expect("answer within 2 s")
            .expect("recv");
        let m = Message::from_vec(&buf[..len]).expect("valid DNS");
        assert_eq!(m.metadata.id, req.metadata.id);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        out.push(addrs(&m));
    }
    out
}

/// Run `tasks` bursts of `each` queries concurrently.
async fn bursts(ts: &TestServer, key: &str, tasks: usize, each: usize) -> Vec<Vec<String>> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        set.spawn(burst(ts.dns, fqdn(key), each));
    }
    let mut all = Vec::with_capacity(tasks * each);
    while let Some(r) = set.join_next().await {
        all.extend(r.expect("burst task"));
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_answers_split_by_weight() {
    let z = unchecked_zone(
        r#"
[service.www]
policy = "weighted"
weights = { us = 3, eu = 1, ap = 0 }

[service.pair]
policy = "weighted"
weights = { us = 3, eu = 1, ap = 1 }
answers = 2
"#,
    );
    // One UDP worker with a seeded RNG: the k-th query answered gets the
    // k-th draw whatever order the clients' queries arrive in, so the split
    // (and this test) is the same on every run; the chi-square bound still
    // has to hold for that fixed sequence.
    let ts = TestServer::start_with(&[("gslb.test.toml", &z)], |s| {
        s.udp_workers = 1;
        s.rng_seed = Some(20261124);
    })
    .await;

    let answers = bursts(&ts, "www", 8, 1250).await;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for a in &answers {
        assert_eq!(a.len(), 1, "one region, one address: {a:?}");
        *counts.entry(a[0].clone()).or_default() += 1;
    }
    let n = answers.len() as f64;
    let got = |ip: &str| counts.get(ip).copied().unwrap_or(0);
    assert_eq!(got(AP), 0, "the standby gets nothing while others are up");
    assert_eq!(got(US) + got(EU), 10_000, "{counts:?}");
    // Goodness of fit to 75/25, 1 degree of freedom, p = 0.001.
    let chi2: f64 = [(got(US), 0.75), (got(EU), 0.25)]
        .iter()
        .map(|&(o, p)| {
            let e = n * p;
            (o as f64 - e).powi(2) / e
        })
        .sum();
    eprintln!("weighted 3:1:0 over {n} queries: {counts:?}, chi-square {chi2:.3}");
    assert!(
        chi2 < 10.828,
        "split {counts:?} is not 3:1 (chi-square {chi2:.3} >= 10.828)"
    );

    // answers = 2: two distinct regions every time; each region gets picked.
    let answers = bursts(&ts, "pair", 4, 150).await;
    let mut seen = BTreeSet::new();
    for a in &answers {
        let distinct: BTreeSet<&String> = a.iter().collect();
        assert_eq!(
            (a.len(), distinct.len()),
            (2, 2),
            "two distinct regions: {a:?}"
        );
        seen.extend(a.iter().cloned());
    }
    assert_eq!(
        seen,
        BTreeSet::from([US.to_string(), EU.to_string(), AP.to_string()])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_backend_fails_over_by_timeouts() {
    let us = Backend::start(US).await;
    let eu = Backend::start(EU).await;
    let z = zone(
        &[("us", &us, "100ms"), ("eu", &eu, "50ms")],
        r#"
[service.api]
regions = ["us", "eu"]
"#,
    );
    let ts = serve(&z).await;
    assert_eq!(a(&ts, "api").await, [US]);

    let m = mark(&ts);
    let t0 = SystemTime::now();
    us.set(Mode::Hang);
    let flip = watch_flip(&ts, "us", "down", m, "api", US, EU).await;
    assert!(
        flip.runs.contains(&2),
        "api answered us after the 2nd timeout: runs seen {:?}",
        flip.runs
    );
    let ep = journaled(&ts, "us", true, "down", m).expect("endpoint transition");
    assert_eq!(ep.reason, "timeout after 150ms");
    assert_eq!(
        region_cell(&ts, "us").endpoints[0].detail().last_outcome,
        Some(ProbeOutcome::Timeout)
    );
    eprintln!("hang: us down after {:?}", after(&flip.at, t0));

    let m = mark(&ts);
    us.set(Mode::Healthy);
    watch_flip(&ts, "us", "up", m, "api", EU, US).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cname_region_is_the_last_failover_step() {
    let mut us = Backend::start(US).await;
    let mut eu = Backend::start(EU).await;
    let z = zone(
        &[("us", &us, "50ms"), ("eu", &eu, "50ms")],
        r#"
[region.cloud]
cname = "lb.cloud.example.net."

[service.api]
regions = ["us", "eu", "cloud"]
ttl = 60
"#,
    );
    let ts = serve(&z).await;
    assert_eq!(ttl_of(&ts, "api").await, (60, vec![US.to_string()]));

    let m = mark(&ts);
    us.kill();
    watch_flip(&ts, "us", "down", m, "api", US, EU).await;

    let m = mark(&ts);
    eu.kill();
    wait_until(Duration::from_secs(5), "eu down", || {
        let down = journaled(&ts, "eu", false, "down", m).is_some();
        async move { down }
    })
    .await;
    for rtype in [RecordType::A, RecordType::AAAA, RecordType::CNAME] {
        let r = ts.query(&fqdn("api"), rtype).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{r}");
        assert!(r.metadata.authoritative, "{r}");
        assert_eq!(
            answers(&r),
            ["api.gslb.test. CNAME lb.cloud.example.net."],
            "{rtype}"
        );
        assert_eq!(r.answers[0].ttl, 10, "degraded TTL");
    }

    let m = mark(&ts);
    us.revive().await;
    wait_until(Duration::from_secs(5), "us up", || {
        let up = journaled(&ts, "us", false, "up", m).is_some();
        async move { up }
    })
    .await;
    assert_eq!(ttl_of(&ts, "api").await, (60, vec![US.to_string()]));
    let r = ts.query(&fqdn("api"), RecordType::A).await;
    assert_eq!(
        answers(&r),
        ["api.gslb.test. A 127.0.0.2"],
        "no CNAME once us is back"
    );
}

#[tokio::test]
async fn aaaa_for_ipv4_only_services_is_nodata() {
    let z = unchecked_zone(
        r#"
[service.api]
regions = ["us", "eu"]

[service.www]
policy = "weighted"
weights = { us = 3, eu = 1 }

[service.assets]
policy = "all-healthy"
regions = ["us", "eu"]
"#,
    );
    let ts = TestServer::start(&[("gslb.test.toml", &z)]).await;
    for key in ["api", "www", "assets"] {
        assert!(!a(&ts, key).await.is_empty(), "{key} has A records");
        let r = ts.query(&fqdn(key), RecordType::AAAA).await;
        assert_nodata(&r);
    }
}

#[tokio::test]
async fn service_with_a_cname_region_answers_other_types_with_nodata() {
    // While the endpoint region is picked, a TXT or MX question has no
    // answer at the service name: never the A records.
    let z = unchecked_zone(
        r#"
[region.cloud]
cname = "lb.cloud.example.net."

[service.api]
regions = ["us", "cloud"]
"#,
    );
    let ts = TestServer::start(&[("gslb.test.toml", &z)]).await;
    assert_eq!(a(&ts, "api").await, [US]);
    let mut wrong = Vec::new();
    for rtype in [RecordType::TXT, RecordType::MX, RecordType::CNAME] {
        let r = ts.query(&fqdn("api"), rtype).await;
        if !r.answers.is_empty() || r.metadata.response_code != ResponseCode::NoError {
            wrong.push(format!(
                "{rtype}: {} {:?}",
                r.metadata.response_code,
                answers(&r)
            ));
        } else {
            assert_nodata(&r);
        }
    }
    assert!(wrong.is_empty(), "NODATA expected, got {wrong:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_and_apex_services_follow_health() {
    let mut us = Backend::start("127.0.0.2").await;
    let eu = Backend::start("127.0.0.3").await;
    let zone = format!(
        "[zone]\nname = \"gslb.test.\"\nnameservers = [\"ns1.example.net.\"]\nhostmaster = \"h.example.net.\"\n{}\n[service.\"@\"]\nregions = [\"us\", \"eu\"]\n\n[service.\"*.edge\"]\nregions = [\"us\", \"eu\"]\n\n[[record]]\nname = \"@\"\ntype = \"TXT\"\nvalue = \"apex text beside the apex service\"\n",
        crate::support::backend_regions(&[("us", us.addr), ("eu", eu.addr)])
    );
    let ts = TestServer::start(&[("z.toml", &zone)]).await;
    let (us_ip, eu_ip) = (us.addr.ip().to_string(), eu.addr.ip().to_string());
    let a = |name: &'static str| {
        let dns = ts.dns;
        async move { addrs(&udp(dns, &request(name, RecordType::A, true)).await.unwrap()) }
    };
    assert_eq!(a("gslb.test.").await, [us_ip.clone()], "apex service");
    assert_eq!(
        a("pop1.edge.gslb.test.").await,
        [us_ip.clone()],
        "wildcard service"
    );
    let m = ts.query("Pop2.Edge.gslb.test.", RecordType::A).await;
    assert_eq!(
        m.answers[0].name.to_ascii(),
        "Pop2.Edge.gslb.test.",
        "synthesised owner echoes the query"
    );
    // Static data beside the apex service still answers.
    let m = ts.query("gslb.test.", RecordType::TXT).await;
    assert_eq!(m.answers.len(), 1);
    let m = ts.query("gslb.test.", RecordType::SOA).await;
    assert_eq!(m.answers.len(), 1);
    us.kill();
    wait_until(Duration::from_secs(5), "apex fails over", || async {
        a("gslb.test.").await == [eu_ip.clone()]
    })
    .await;
    assert_eq!(
        a("pop1.edge.gslb.test.").await,
        [eu_ip.clone()],
        "wildcard fails over too"
    );
    assert_eq!(a("pop3.edge.gslb.test.").await, [eu_ip.clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_fail_open_split_that_dns_answers() {
    let us = Backend::start("127.0.0.2").await;
    let eu = Backend::start("127.0.0.3").await;
    let z = format!(
        "[zone]\nname = \"gslb.test.\"\nnameservers = [\"ns1.example.net.\"]\nhostmaster = \"hostmaster.example.com.\"\n{}\n[service.www]\npolicy = \"weighted\"\nweights = {{ us = 3, eu = 1 }}\nwhen-all-down = \"fail-open\"\n",
        backend_regions(&[("us", us.addr), ("eu", eu.addr)])
    );
    let ts = TestServer::start_with(&[("z.toml", &z)], |s| {
        s.udp_workers = 1;
        s.rng_seed = Some(20261203);
    })
    .await;
    ts.wait_first_verdicts(Duration::from_secs(5)).await;
    us.set(Mode::Failing);
    eu.set(Mode::Failing);
    wait_until(Duration::from_secs(5), "both regions down", || async {
        ts.server.health.regions().iter().all(|r| !r.is_up())
    })
    .await;
    let status = serde_json::to_value(ts.server.status()).unwrap();
    let svc = &status["zones"][0]["services"][0];
    assert_eq!(svc["all_down"], true, "{svc}");
    let shares: BTreeMap<String, f64> = svc["answer"]["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_str().unwrap().to_string(), r[1].as_f64().unwrap()))
        .collect();
    // What DNS answers, 400 queries.
    let answers = bursts(&ts, "www", 4, 100).await;
    let n = answers.len() as f64;
    let ip = |region: &str| {
        if region == "us" {
            "127.0.0.2"
        } else {
            "127.0.0.3"
        }
    };
    for region in ["us", "eu"] {
        let got = answers.iter().filter(|a| a[0] == ip(region)).count() as f64 / n;
        let said = shares.get(region).copied().unwrap_or(0.0);
        assert!(
            (got - said).abs() < 0.1,
            "{region}: status says {said}, DNS answered {got} of {n} ({shares:?})"
        );
    }
}
