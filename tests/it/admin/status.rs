//! The status JSON before and after a failover, field by field.

use super::*;

#[tokio::test]
async fn status_reports_a_failover_field_by_field() {
    // rise 4 on the primary: its way back up is slow enough to watch. A
    // timeout three times FAST's: the healthy status below says no probe
    // ever failed, and under the whole suite's load on two cores a 150 ms
    // timeout on loopback once did (CI flake, stop 29).
    let slow_rise = Probing {
        interval: "500ms",
        timeout: "450ms",
        rise: 4,
    };
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

    let killed_at = gslb::model::unix_ms(std::time::SystemTime::now());
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

// Issue 21: what a standard secondary would be given, before and after a
// failover, over the admin API.
#[tokio::test]
async fn the_zone_as_transferred_follows_the_verdicts() {
    let mut rig = Rig::start(&FAST, Some(TOKEN)).await;
    rig.wait_healthy().await;
    let path = format!("/api/v1/zones/{ZONE_NAME}/transfer");
    // The whole zone is not for anyone who reaches the admin port: with a
    // token set, it takes the token (the status, a read, does not).
    let (code, text) = rig.get(&path).await;
    assert_eq!(code, 401, "{text}");
    let (http, base) = (rig.http.clone(), rig.url(""));
    let get = |path: String| {
        let req = http.get(format!("{base}{path}")).bearer_auth(TOKEN);
        async move {
            let r = req.send().await.expect("GET");
            (r.status().as_u16(), r.text().await.expect("body"))
        }
    };
    let (code, text) = get(path.clone()).await;
    assert_eq!(code, 200, "{text}");
    let first = text.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!("{ZONE_NAME}. ")) && first.contains(" IN SOA "),
        "the SOA first:\n{text}"
    );
    let api = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with(&format!("{API} ")))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        api(&text),
        [format!("{API} 60 IN A {PRIMARY_IP}")],
        "{text}"
    );
    assert!(
        text.contains(&format!("www.{ZONE_NAME}. ")) && text.contains(" IN A 192.0.2.1\n"),
        "the static record:\n{text}"
    );

    rig.primary.kill();
    let text = poll(LIMIT, "the secondary, as transferred", || async {
        let (_, t) = get(path.clone()).await;
        (api(&t) == [format!("{API} 5 IN A {SECONDARY_IP}")]).then_some(t)
    })
    .await;
    // The DNS answer says the same.
    assert_eq!(rig.api().await, [SECONDARY_IP], "{text}");

    let (code, _) = get("/api/v1/zones/not-served.example/transfer".into()).await;
    assert_eq!(code, 404);
}
