//! `/metrics` during a failover, checked series by series and by `promtool`.

use super::*;

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
    let svc = |r| [z, ("service", "api"), ("region", r), ("location", "")];
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
    let buckets = after.buckets(PROBE_DURATION, &hist);
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
