//! Reload: atomic under load, validated, health carried over, zones added
//! and removed at runtime, serials that only go up; SIGHUP and --watch on
//! the real binary.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

use crate::backend::Backend;
use crate::support::*;

const HEAD: &str = r#"
[zone]
name = "gslb.example.com."
nameservers = ["ns1.example.net."]
hostmaster = "hostmaster.example.com."
"#;

/// A config whose `mix` name has `addrs` at `ttl`, and a TXT naming it.
fn version(tag: &str, addrs: &[&str], ttl: u32) -> String {
    let mut z = format!("{HEAD}\n[[record]]\nname = \"tag\"\ntype = \"TXT\"\nvalue = \"{tag}\"\n");
    for a in addrs {
        z.push_str(&format!(
            "\n[[record]]\nname = \"mix\"\ntype = \"A\"\nvalue = \"{a}\"\nttl = {ttl}\n"
        ));
    }
    z
}

const BROKEN: &str = "[zone]\nname = \"gslb.example.com.\"\nnameservers = [\"ns1.example.net.\"]\nhostmaster = \"h.example.com.\"\n\n[[record]]\nname = \"mix\"\ntype = \"A\"\nvalue = \"203.0.113.300\"\n";

fn serial(m: &hickory_proto::op::Message) -> u32 {
    let rec = m.answers.first().or(m.authorities.first()).expect("SOA");
    match &rec.data {
        RData::SOA(soa) => soa.serial,
        other => panic!("not an SOA: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_reloads_under_load_lose_nothing_and_never_mix_configs() {
    let a = version("A", &["192.0.2.1", "192.0.2.2", "192.0.2.3"], 100);
    let b = version("B", &["198.51.100.1", "198.51.100.2"], 200);
    let ts = TestServer::start_with(&[("z.toml", &a)], |s| s.udp_workers = 2).await;
    let set_a: Vec<String> = vec!["192.0.2.1".into(), "192.0.2.2".into(), "192.0.2.3".into()];
    let set_b: Vec<String> = vec!["198.51.100.1".into(), "198.51.100.2".into()];

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, answered, dns) = (stop.clone(), answered.clone(), ts.dns);
        let (set_a, set_b) = (set_a.clone(), set_b.clone());
        load.push(tokio::spawn(async move {
            let mut seen = (0usize, 0usize);
            while !stop.load(Ordering::Relaxed) {
                let m = udp(dns, &request("mix.gslb.example.com.", RecordType::A, true))
                    .await
                    .expect("every query is answered");
                assert_eq!(m.metadata.response_code, ResponseCode::NoError);
                let mut got = addrs(&m);
                got.sort();
                let ttls: Vec<u32> = m.answers.iter().map(|r| r.ttl).collect();
                if got == set_a {
                    assert!(
                        ttls.iter().all(|&t| t == 100),
                        "A's TTL with A's data: {ttls:?}"
                    );
                    seen.0 += 1;
                } else if got == set_b {
                    assert!(
                        ttls.iter().all(|&t| t == 200),
                        "B's TTL with B's data: {ttls:?}"
                    );
                    seen.1 += 1;
                } else {
                    panic!("an answer from neither config (a mix, or the broken one): {got:?}");
                }
                answered.fetch_add(1, Ordering::Relaxed);
            }
            seen
        }));
    }
    let path = ts.zone_path("z.toml");
    let mut ok = 0;
    let mut rejected = 0;
    for i in 0..50 {
        let (text, valid) = match i % 3 {
            0 => (b.as_str(), true),
            1 => (BROKEN, false),
            _ => (a.as_str(), true),
        };
        std::fs::write(&path, text).unwrap();
        match ts.server.reload().await {
            Ok(_) => {
                assert!(valid, "a broken config was accepted");
                ok += 1;
            }
            Err(e) => {
                assert!(!valid, "a valid config was rejected: {e}");
                assert!(
                    e.to_string().contains("z.toml:9:9"),
                    "error names file:line:col: {e}"
                );
                rejected += 1;
                // The old snapshot is still served, untouched.
                let m = ts.query("mix.gslb.example.com.", RecordType::A).await;
                assert!(!addrs(&m).iter().any(|a| a.starts_with("203.0.113")));
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut seen = (0, 0);
    for l in load {
        let s = l.await.expect("load task saw only consistent answers");
        seen.0 += s.0;
        seen.1 += s.1;
    }
    assert_eq!((ok, rejected), (33, 17));
    assert!(
        seen.0 > 0 && seen.1 > 0,
        "both configs were served under load: {seen:?}"
    );
    assert!(answered.load(Ordering::Relaxed) > 200);
    let metrics = ts.server.metrics.render();
    assert!(
        metrics.contains("gslb_config_reloads_total{result=\"error\"} 17"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gslb_config_reloads_total{result=\"success\"} 34"),
        "start + 33 reloads"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_region_stays_down_across_an_unrelated_reload() {
    let mut us = Backend::start("127.0.0.2").await;
    let eu = Backend::start("127.0.0.3").await;
    let (us_addr, eu_addr) = (us.addr, eu.addr);
    let regions = backend_regions(&[("us", us_addr), ("eu", eu_addr)]);
    let zone = move |extra: &str| {
        format!("{HEAD}{regions}\n[service.api]\nregions = [\"us\", \"eu\"]\n{extra}\n")
    };
    let ts = TestServer::start(&[("z.toml", &zone(""))]).await;
    let eu_ip = eu.addr.ip().to_string();
    us.kill();
    wait_until(Duration::from_secs(5), "failover", || async {
        addrs(&ts.query("api.gslb.example.com.", RecordType::A).await) == [eu_ip.clone()]
    })
    .await;
    let status = || ts.server.status();
    let us_endpoint = |s: &gslb::admin::Status| {
        let r = s.zones[0].regions.iter().find(|r| r.name == "us").unwrap();
        (
            r.up,
            r.since_ms,
            r.endpoints[0].probes,
            r.endpoints[0].failures,
        )
    };
    let before = us_endpoint(&status());
    assert!(!before.0);
    // Reload with an unrelated new service.
    std::fs::write(
        ts.zone_path("z.toml"),
        zone("[service.www]\nregions = [\"eu\"]\n"),
    )
    .unwrap();
    let summary = ts.server.reload().await.expect("valid");
    assert_eq!(summary.services_added, ["gslb.example.com/www"]);
    assert!(summary.regions_changed.is_empty(), "{summary:?}");
    let after = us_endpoint(&status());
    assert!(!after.0, "still down right after the reload");
    assert_eq!(after.1, before.1, "region 'since' unchanged");
    assert!(
        after.2 >= before.2 && after.3 >= before.3,
        "probe counters not reset: {before:?} -> {after:?}"
    );
    assert_eq!(
        addrs(&ts.query("api.gslb.example.com.", RecordType::A).await),
        [eu_ip.clone()]
    );
    assert_eq!(
        addrs(&ts.query("www.gslb.example.com.", RecordType::A).await),
        [eu_ip.clone()]
    );
    // And it keeps being probed: the counters grow, and failback still works.
    wait_until(Duration::from_secs(5), "probes continue", || async {
        us_endpoint(&status()).2 > after.2
    })
    .await;
    us.revive().await;
    let us_ip = us.addr.ip().to_string();
    wait_until(Duration::from_secs(5), "failback", || async {
        addrs(&ts.query("api.gslb.example.com.", RecordType::A).await) == [us_ip.clone()]
    })
    .await;
    assert_eq!(
        ts.region_transitions(),
        2,
        "down once, up once: the reload flipped nothing"
    );
}

#[tokio::test]
async fn zones_are_added_and_removed_at_runtime() {
    let ts = TestServer::start(&[("a.toml", &version("A", &["192.0.2.1"], 60))]).await;
    let m = ts.query("www.other.example.", RecordType::SOA).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    std::fs::write(
        ts.zone_path("other.toml"),
        "[zone]\nname = \"other.example.\"\nnameservers = [\"ns.example.net.\"]\nhostmaster = \"h.example.net.\"\n[[record]]\nname = \"www\"\ntype = \"A\"\nvalue = \"192.0.2.99\"\n",
    )
    .unwrap();
    let s = ts.server.reload().await.unwrap();
    assert_eq!(s.zones_added, ["other.example"]);
    assert_eq!(
        addrs(&ts.query("www.other.example.", RecordType::A).await),
        ["192.0.2.99"]
    );
    std::fs::remove_file(ts.zone_path("other.toml")).unwrap();
    let s = ts.server.reload_allowing_removal().await.unwrap();
    assert_eq!(s.zones_removed, ["other.example"]);
    let m = ts.query("www.other.example.", RecordType::A).await;
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::Refused,
        "a removed zone is refused"
    );
    assert_eq!(
        addrs(&ts.query("mix.gslb.example.com.", RecordType::A).await),
        ["192.0.2.1"],
        "the other zone untouched"
    );
}

#[tokio::test]
async fn managed_serials_only_move_when_the_zone_changes_and_never_go_back() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let zones = tempfile::tempdir().unwrap();
    std::fs::write(
        zones.path().join("z.toml"),
        version("A", &["192.0.2.1"], 60),
    )
    .unwrap();
    let start = |state: std::path::PathBuf| {
        let mut s = test_settings(zones.path());
        s.state_file = Some(state);
        gslb::app::Server::start(s)
    };
    let server = start(state.clone()).await.unwrap();
    let dns = server.dns_addrs[0];
    let soa = || async move {
        serial(
            &udp(dns, &request("gslb.example.com.", RecordType::SOA, true))
                .await
                .unwrap(),
        )
    };
    let s1 = soa().await;
    server.reload().await.unwrap();
    assert_eq!(soa().await, s1, "unchanged file: same serial");
    std::fs::write(
        zones.path().join("z.toml"),
        version("B", &["192.0.2.2"], 60),
    )
    .unwrap();
    server.reload().await.unwrap();
    let s2 = soa().await;
    assert!(s2 > s1, "changed: higher ({s1} -> {s2})");
    std::fs::write(
        zones.path().join("z.toml"),
        version("C", &["192.0.2.3"], 60),
    )
    .unwrap();
    server.reload().await.unwrap();
    let s3 = soa().await;
    assert!(
        s3 > s2,
        "changed again within the same second: still higher ({s2} -> {s3})"
    );
    server.shutdown();
    server.wait().await;
    // Restart: the state file keeps the serial of the unchanged zone.
    let server = start(state).await.unwrap();
    let dns = server.dns_addrs[0];
    let again = serial(
        &udp(dns, &request("gslb.example.com.", RecordType::SOA, true))
            .await
            .unwrap(),
    );
    assert_eq!(
        again, s3,
        "a restart does not move the serial of an unchanged zone"
    );
    server.shutdown();
    // An explicit serial is left alone.
    let explicit =
        TestServer::start(&[("z.toml", &HEAD.replace("[zone]\n", "[zone]\nserial = 42\n"))]).await;
    assert_eq!(
        serial(&explicit.query("gslb.example.com.", RecordType::SOA).await),
        42
    );
}

/// RFC 1982 §3.2: `a` is greater than `b`.
fn serial_gt(a: u32, b: u32) -> bool {
    (a < b && b - a > 1 << 31) || (a > b && a - b < 1 << 31)
}

/// A saved serial at the top of the range (4294967295) does not pin the
/// zone's serial: it moves on, forward in serial arithmetic, on every change.
#[tokio::test]
async fn a_saved_serial_of_4294967295_still_moves_forward() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    std::fs::write(
        &state,
        r#"{"version": 1, "endpoints": [], "regions": [],
            "zones": [{"zone": "gslb.example.com", "serial": 4294967295, "content_hash": 1}]}"#,
    )
    .unwrap();
    let zones = tempfile::tempdir().unwrap();
    std::fs::write(
        zones.path().join("z.toml"),
        version("A", &["192.0.2.1"], 60),
    )
    .unwrap();
    let mut settings = test_settings(zones.path());
    settings.state_file = Some(state);
    /// Stops the server however the test ends (a failed assertion too).
    struct Stop(gslb::app::Server);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.shutdown();
        }
    }
    let server = Stop(gslb::app::Server::start(settings).await.unwrap());
    let dns = server.0.dns_addrs[0];
    let soa = || async move {
        serial(
            &udp(dns, &request("gslb.example.com.", RecordType::SOA, true))
                .await
                .unwrap(),
        )
    };
    let mut last = u32::MAX;
    for (i, tag) in ["A", "B", "C", "D"].into_iter().enumerate() {
        if i > 0 {
            std::fs::write(
                zones.path().join("z.toml"),
                version(tag, &["192.0.2.1"], 60),
            )
            .unwrap();
            server.0.reload().await.unwrap();
        }
        let s = soa().await;
        assert!(
            serial_gt(s, last),
            "version {tag}: serial {s} is not after {last} (RFC 1982)"
        );
        last = s;
    }
}

fn free_port() -> u16 {
    // Both UDP and TCP must be free on the port.
    loop {
        let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = t.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

async fn serve_binary(zones: &std::path::Path, extra: &[&str]) -> (Child, std::net::SocketAddr) {
    let port = free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let child = serve_command(addr, zones)
        .args(extra)
        .spawn()
        .expect("gslb serve starts");
    let child = Child(child);
    wait_until(Duration::from_secs(10), "the binary answers", || async {
        udp_raw(
            addr,
            &request("tag.gslb.example.com.", RecordType::TXT, false)
                .to_vec()
                .unwrap(),
            Duration::from_millis(100),
        )
        .await
        .is_some()
    })
    .await;
    (child, addr)
}

async fn tag(addr: std::net::SocketAddr) -> String {
    let m = udp(
        addr,
        &request("tag.gslb.example.com.", RecordType::TXT, false),
    )
    .await
    .unwrap();
    m.answers
        .first()
        .map(|r| r.data.to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn sighup_reloads_the_running_binary_and_keeps_serving_on_errors() {
    let zones = tempfile::tempdir().unwrap();
    std::fs::write(
        zones.path().join("z.toml"),
        version("A", &["192.0.2.1"], 60),
    )
    .unwrap();
    let (child, addr) = serve_binary(zones.path(), &[]).await;
    assert_eq!(tag(addr).await, "A");
    let hup = || {
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &child.0.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    };
    std::fs::write(
        zones.path().join("z.toml"),
        version("B", &["192.0.2.2"], 60),
    )
    .unwrap();
    hup();
    wait_until(Duration::from_secs(5), "SIGHUP reload", || async {
        tag(addr).await == "B"
    })
    .await;
    std::fs::write(zones.path().join("z.toml"), BROKEN).unwrap();
    hup();
    // The broken file is rejected; B keeps being served. Then a valid one is taken.
    for _ in 0..20 {
        assert_eq!(tag(addr).await, "B");
    }
    std::fs::write(
        zones.path().join("z.toml"),
        version("C", &["192.0.2.3"], 60),
    )
    .unwrap();
    hup();
    wait_until(
        Duration::from_secs(5),
        "reload after a rejected one",
        || async { tag(addr).await == "C" },
    )
    .await;
}

#[tokio::test]
async fn watch_reloads_when_a_zone_file_changes() {
    let zones = tempfile::tempdir().unwrap();
    std::fs::write(
        zones.path().join("z.toml"),
        version("A", &["192.0.2.1"], 60),
    )
    .unwrap();
    let (_child, addr) = serve_binary(zones.path(), &["--watch"]).await;
    assert_eq!(tag(addr).await, "A");
    std::fs::write(
        zones.path().join("z.toml"),
        version("Bee", &["192.0.2.2"], 60),
    )
    .unwrap();
    wait_until(Duration::from_secs(10), "watched reload", || async {
        tag(addr).await == "Bee"
    })
    .await;
}

/// A Kubernetes ConfigMap volume, as the kubelet writes it: each file a
/// link through `..data` to a timestamped folder; an update writes a new
/// folder and swaps `..data` in one rename. docker/kubernetes relies on
/// `watch = true` seeing that (the file names themselves never change).
#[tokio::test]
async fn watch_reloads_a_configmap_volume_updated_the_kubelets_way() {
    use std::os::unix::fs::symlink;
    let zones = tempfile::tempdir().unwrap();
    let dir = zones.path();
    let generation = |name: &str, text: String| {
        std::fs::create_dir(dir.join(name)).unwrap();
        std::fs::write(dir.join(name).join("z.toml"), text).unwrap();
    };
    generation("..2026_12_07_00_00_00.1", version("Aa", &["192.0.2.1"], 60));
    symlink("..2026_12_07_00_00_00.1", dir.join("..data")).unwrap();
    symlink("..data/z.toml", dir.join("z.toml")).unwrap();
    let (_child, addr) = serve_binary(dir, &["--watch"]).await;
    assert_eq!(tag(addr).await, "Aa");

    // Same length, so only the new file's time tells it apart.
    generation("..2026_12_07_00_01_00.2", version("Bb", &["192.0.2.1"], 60));
    symlink("..2026_12_07_00_01_00.2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(dir.join("..2026_12_07_00_00_00.1")).unwrap();
    wait_until(
        Duration::from_secs(10),
        "the ConfigMap's new zone",
        || async { tag(addr).await == "Bb" },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_health_and_overrides_from_the_state_file() {
    let mut us = Backend::start("127.0.0.2").await;
    let eu = Backend::start("127.0.0.3").await;
    let ap = Backend::start("127.0.0.4").await;
    let zone = format!(
        "{HEAD}{}\n[service.api]\nregions = [\"us\", \"eu\", \"ap\"]\n",
        backend_regions(&[("us", us.addr), ("eu", eu.addr), ("ap", ap.addr)])
    );
    let zones = tempfile::tempdir().unwrap();
    std::fs::write(zones.path().join("z.toml"), &zone).unwrap();
    let state_dir = tempfile::tempdir().unwrap();
    let state = state_dir.path().join("state.json");
    let start = || {
        let mut s = test_settings(zones.path());
        s.state_file = Some(state.clone());
        gslb::app::Server::start(s)
    };
    let api = |dns| async move {
        addrs(
            &udp(dns, &request("api.gslb.example.com.", RecordType::A, true))
                .await
                .unwrap(),
        )
    };
    let (eu_ip, ap_ip) = (eu.addr.ip().to_string(), ap.addr.ip().to_string());

    // First life: us dies (down by probes), eu is drained by the operator.
    let server = start().await.unwrap();
    let dns = server.dns_addrs[0];
    us.kill();
    wait_until(Duration::from_secs(5), "us down", || async {
        api(dns).await == [eu_ip.clone()]
    })
    .await;
    server
        .health
        .set_override(None, "eu", None, gslb::health::Override::Down)
        .unwrap();
    assert_eq!(api(dns).await, [ap_ip.clone()]);
    server.shutdown();
    server.wait().await; // the state file is written once more at shutdown

    // Second life: from the very first query, us is still down and eu still
    // drained: the answer is ap, with no transition logged for anyone.
    let server = start().await.unwrap();
    let dns = server.dns_addrs[0];
    assert_eq!(
        api(dns).await,
        [ap_ip.clone()],
        "restored, not restarted from 'all up'"
    );
    assert!(
        server.health.first_verdicts_known(),
        "restored verdicts count as known"
    );
    // Let every endpoint be probed a few times; nothing flaps.
    let probes = |s: &gslb::app::Server| {
        s.health
            .regions()
            .iter()
            .flat_map(|r| r.endpoints.iter().map(|e| e.detail().probes))
            .min()
            .unwrap_or(0)
    };
    wait_until(Duration::from_secs(5), "several probes each", || async {
        probes(&server) >= 3
    })
    .await;
    assert_eq!(api(dns).await, [ap_ip.clone()]);
    assert!(
        server.health.journal().is_empty(),
        "no transitions after a restart: {:?}",
        server.health.journal()
    );
    // The drain survived; undrain brings eu back.
    server
        .health
        .set_override(None, "eu", None, gslb::health::Override::Auto)
        .unwrap();
    assert_eq!(api(dns).await, [eu_ip.clone()]);
    server.shutdown();
}

/// The /metrics page of a server with its admin API on.
async fn scrape(ts: &TestServer) -> String {
    let url = format!("http://{}/metrics", ts.server.admin_addr.expect("admin on"));
    http_get(&url).await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_and_region_series_follow_reloads_and_exist_from_the_start() {
    let zone = |services: &str| {
        format!(
            "{HEAD}\n[region.us]\nendpoints = [\"192.0.2.1\"]\n\n[region.eu]\nendpoints = [\"192.0.2.2\"]\n{services}"
        )
    };
    let two = "\n[service.api]\nregions = [\"us\", \"eu\"]\n\n[service.www]\npolicy = \"weighted\"\nweights = { us = 3, eu = 1 }\n";
    let ts = TestServer::start_with(&[("z.toml", &zone(two))], |s| {
        s.admin = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let m = scrape(&ts).await;
    for want in [
        r#"gslb_service_degraded{service="api",zone="gslb.example.com"} 0"#,
        r#"gslb_service_degraded{service="www",zone="gslb.example.com"} 0"#,
        r#"gslb_service_answer_region{region="us",service="api",zone="gslb.example.com"} 1"#,
        r#"gslb_service_answer_region{region="eu",service="api",zone="gslb.example.com"} 0"#,
        r#"gslb_service_answer_region{region="us",service="www",zone="gslb.example.com"} 0.75"#,
        r#"gslb_service_answer_region{region="eu",service="www",zone="gslb.example.com"} 0.25"#,
        r#"gslb_state_transitions_total{endpoint="",region="us",to="down",zone="gslb.example.com"} 0"#,
        r#"gslb_state_transitions_total{endpoint="",region="eu",to="up",zone="gslb.example.com"} 0"#,
        r#"gslb_webhook_events_dropped_total{zone="gslb.example.com"} 0"#,
        r#"gslb_webhook_events_dropped_total{zone=""} 0"#,
        r#"gslb_region_last_transition_timestamp_seconds{region="us",zone="gslb.example.com"}"#,
        r#"gslb_dns_answers_total{location="",region="eu",service="www",zone="gslb.example.com"} 0"#,
    ] {
        assert!(m.contains(want), "missing {want} in:\n{m}");
    }
    // Every region down: both services fail open, and say so.
    let all_down = |svc: &str, v: u8| {
        format!(
            r#"gslb_service_all_down{{service="{svc}",when_all_down="fail-open",zone="gslb.example.com"}} {v}"#
        )
    };
    for svc in ["api", "www"] {
        assert!(
            m.contains(&all_down(svc, 0)),
            "missing {} in:\n{m}",
            all_down(svc, 0)
        );
    }
    let set = |region: &str, o: gslb::health::Override| {
        ts.server
            .health
            .set_override(None, region, None, o)
            .expect("override");
    };
    set("us", gslb::health::Override::Down);
    set("eu", gslb::health::Override::Down);
    let m = scrape(&ts).await;
    for svc in ["api", "www"] {
        assert!(
            m.contains(&all_down(svc, 1)),
            "missing {} in:\n{m}",
            all_down(svc, 1)
        );
    }
    set("eu", gslb::health::Override::Auto);
    let m = scrape(&ts).await;
    for svc in ["api", "www"] {
        assert!(
            m.contains(&all_down(svc, 0)),
            "missing {} in:\n{m}",
            all_down(svc, 0)
        );
    }
    set("us", gslb::health::Override::Auto);
    // A reload drops www and the eu region: their series go with them.
    std::fs::write(
        ts.zone_path("z.toml"),
        format!("{HEAD}\n[region.us]\nendpoints = [\"192.0.2.1\"]\n\n[service.api]\nregions = [\"us\"]\n"),
    )
    .unwrap();
    ts.server.reload().await.expect("reload");
    let m = scrape(&ts).await;
    assert!(
        m.contains(r#"gslb_service_degraded{service="api",zone="gslb.example.com"} 0"#),
        "{m}"
    );
    for gone in [r#"service="www""#, r#"region="eu""#] {
        // Gauges (an alert on them would fire forever); counters may stay.
        let left: Vec<&str> = m
            .lines()
            .filter(|l| l.contains(gone) && !l.contains("_total"))
            .collect();
        assert!(left.is_empty(), "series left behind: {left:?}");
    }
    // The answer counters of www and of api's eu region are shown until no
    // served snapshot holds them (the UDP workers let go of the old one
    // within a second), then let go: 100,000 removed services kept 90 MB
    // of them for good.
    let removed = |m: &str| {
        m.lines()
            .filter(|l| l.starts_with("gslb_dns_answers_total"))
            .filter(|l| l.contains(r#"service="www""#) || l.contains(r#"region="eu""#))
            .count()
    };
    wait_until(
        Duration::from_secs(5),
        "the removed answer counters let go",
        || async { removed(&scrape(&ts).await) == 0 },
    )
    .await;
    let m = scrape(&ts).await;
    assert!(
        m.contains(r#"gslb_dns_answers_total{location="",region="us",service="api",zone="gslb.example.com"} 0"#),
        "the kept service's counter stays: {m}"
    );
}

/// A zone with regions r1 (192.0.2.5) and r2 (192.0.2.6), no checks, and a
/// failover service `api` over them.
const OTHER: &str = "[zone]\nname = \"other.example.\"\nnameservers = [\"ns.example.net.\"]\nhostmaster = \"h.example.net.\"\n[region.r1]\nendpoints = [\"192.0.2.5\"]\n[region.r2]\nendpoints = [\"192.0.2.6\"]\n[service.api]\nregions = [\"r1\", \"r2\"]\n";

// Issue 24 item 15. Fails on the code before it: the reload went through
// quietly (the zone answered REFUSED) and the drain was gone when the
// file came back.
#[tokio::test]
async fn a_reload_that_would_drop_a_zone_is_refused_unless_asked_and_drains_wait_for_it() {
    let ts = TestServer::start(&[
        ("a.toml", &version("A", &["192.0.2.1"], 60)),
        ("other.toml", OTHER),
    ])
    .await;
    let api = || ts.query("api.other.example.", RecordType::A);
    assert_eq!(addrs(&api().await), ["192.0.2.5"]);
    ts.server
        .health
        .set_override(None, "r1", None, gslb::health::Override::Down)
        .unwrap();
    assert_eq!(addrs(&api().await), ["192.0.2.6"], "r1 drained");

    // The file goes (a careless deploy): the reload is refused, the zone
    // stays served.
    let saved = ts.zone_path("other.toml");
    std::fs::remove_file(&saved).unwrap();
    let err = ts.server.reload().await.expect_err("refused").to_string();
    assert!(
        err.contains("other.toml") && err.contains("--allow-removal"),
        "{err}"
    );
    assert_eq!(addrs(&api().await), ["192.0.2.6"], "still served");

    // Asked for: removed, and the drain waits for the zone.
    let s = ts.server.reload_allowing_removal().await.unwrap();
    assert_eq!(s.zones_removed, ["other.example"]);
    assert_eq!(api().await.metadata.response_code, ResponseCode::Refused);
    std::fs::write(&saved, OTHER).unwrap();
    let s = ts.server.reload().await.unwrap();
    assert_eq!(s.zones_added, ["other.example"]);
    assert_eq!(
        addrs(&api().await),
        ["192.0.2.6"],
        "the drain came back with the zone"
    );
}

// Issue 24 item 15: a dangling link was skipped as if absent.
#[tokio::test]
async fn a_zone_file_that_cannot_be_opened_is_an_error() {
    let ts = TestServer::start(&[
        ("a.toml", &version("A", &["192.0.2.1"], 60)),
        ("other.toml", OTHER),
    ])
    .await;
    let other = ts.zone_path("other.toml");
    std::fs::remove_file(&other).unwrap();
    std::os::unix::fs::symlink(ts.zone_path("nowhere.toml"), &other).unwrap();
    let err = ts
        .server
        .reload_allowing_removal()
        .await
        .expect_err("a dangling link is an error")
        .to_string();
    assert!(
        err.contains("other.toml") && err.contains("cannot read"),
        "{err}"
    );
    assert_eq!(
        addrs(&ts.query("api.other.example.", RecordType::A).await),
        ["192.0.2.5"],
        "the old snapshot is still served"
    );
}

/// One polled answer: its rcode and addresses, `None` when none came.
type Polled = Option<(ResponseCode, Vec<String>)>;

/// Ask `dns` for `name` (A) every 50 ms until `stop`.
fn poll_answers(
    dns: std::net::SocketAddr,
    name: &'static str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Polled>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let m = udp(dns, &request(name, RecordType::A, true)).await;
            seen.push(m.map(|m| (m.metadata.response_code, addrs(&m))));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        seen
    })
}

// Issue 24 item 15: under --watch, deleting a zone file and putting it
// back within seconds (rsync --delete, a careless deploy) made the zone
// answer REFUSED in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_watch_a_zone_file_deleted_and_restored_is_served_throughout() {
    let ts = TestServer::start_with(
        &[
            ("a.toml", &version("A", &["192.0.2.1"], 60)),
            ("other.toml", OTHER),
        ],
        |s| s.watch = true,
    )
    .await;
    let reloads = |r: &str| ts.server.metrics.reloads.with_label_values(&[r]).get();
    let stop = Arc::new(AtomicBool::new(false));
    let poller = poll_answers(ts.dns, "api.other.example.", stop.clone());
    let path = ts.zone_path("other.toml");
    std::fs::remove_file(&path).unwrap();
    wait_until(
        Duration::from_secs(10),
        "the watched reload refused",
        || async { reloads("error") >= 1 },
    )
    .await;
    let ok_before = reloads("success");
    std::fs::write(&path, OTHER).unwrap();
    wait_until(
        Duration::from_secs(10),
        "the watched reload after the restore",
        || async { reloads("success") > ok_before },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let seen = poller.await.unwrap();
    let bad: Vec<_> = seen
        .iter()
        .filter(|a| **a != Some((ResponseCode::NoError, vec!["192.0.2.5".to_string()])))
        .collect();
    assert!(
        seen.len() > 20 && bad.is_empty(),
        "{} of {} answers were not the zone's: {bad:?}",
        bad.len(),
        seen.len()
    );
}

// Issue 19 item 7. Fails on the code before it: --watch reloaded after one
// quiet second, so a file written in two steps more than a second apart
// was served half-written in between (here: without its last service).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_watch_a_file_written_in_two_steps_is_read_once_settled() {
    let head = "[zone]\nname = \"other.example.\"\nnameservers = [\"ns.example.net.\"]\nhostmaster = \"h.example.net.\"\n[region.r1]\nendpoints = [\"192.0.2.5\"]\n[region.r2]\nendpoints = [\"192.0.2.6\"]\n[service.www]\nregions = [\"r2\"]\n";
    let tail = "[service.ftp]\nregions = [\"r2\"]\n";
    let first = format!("{head}[service.api]\nregions = [\"r1\", \"r2\"]\n{tail}");
    let ts = TestServer::start_with(
        &[
            ("a.toml", &version("A", &["192.0.2.1"], 60)),
            ("other.toml", &first),
        ],
        |s| s.watch = true,
    )
    .await;
    let reloads = || {
        ts.server
            .metrics
            .reloads
            .with_label_values(&["success"])
            .get()
    };
    let before = reloads();
    let stop = Arc::new(AtomicBool::new(false));
    let poller = poll_answers(ts.dns, "ftp.other.example.", stop.clone());
    // A deploy that writes the new file in two parts, 2.2 s apart: the
    // first part parses (every table whole), but lacks `ftp`.
    let path = ts.zone_path("other.toml");
    let new_head = format!("{head}[service.api]\nregions = [\"r2\", \"r1\"]\n");
    std::fs::write(&path, &new_head).unwrap();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    std::fs::write(&path, format!("{new_head}{tail}")).unwrap();
    wait_until(Duration::from_secs(10), "the settled reload", || async {
        reloads() > before
    })
    .await;
    let api = ts.query("api.other.example.", RecordType::A).await;
    assert_eq!(addrs(&api), ["192.0.2.6"], "the new file is served");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let seen = poller.await.unwrap();
    let bad: Vec<_> = seen
        .iter()
        .filter(|r| r.as_ref().map(|(code, _)| *code) != Some(ResponseCode::NoError))
        .collect();
    assert!(
        seen.len() > 40 && bad.is_empty(),
        "ftp was not answered {} times of {}: the half file was served",
        bad.len(),
        seen.len()
    );
    assert_eq!(reloads(), before + 1, "one reload, of the whole file");
}
