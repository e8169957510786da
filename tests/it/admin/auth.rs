//! The bearer token on overrides, and liveness and readiness.

use super::*;

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
        json!({"ok": true, "target": {"zone": ZONE_NAME, "region": "primary", "endpoint": null, "state": "down", "by": "test from 127.0.0.1"}, "persisted": false}),
        "no state file here: nothing saved"
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

// Issue 19 item 2. Fails on the code before it: with no token and the
// listener on loopback, any page a browser on the host showed could drain
// a region: a POST with `Origin: http://evil.example` and `Content-Type:
// text/plain` (a "simple" request, sent cross-site without asking) was
// taken, and so was one from a page whose name resolved to 127.0.0.1.
#[tokio::test]
async fn mutating_calls_refuse_cross_site_requests_and_foreign_hosts() {
    let rig = Rig::start(&FAST, None).await;
    rig.wait_healthy().await;
    let drain = rig.url(&format!("/api/v1/regions/{ZONE_NAME}/primary/drain"));
    let own = format!("http://{}", rig.admin);
    let send = |headers: Vec<(&'static str, String)>| {
        let mut req = rig.http.post(&drain);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        async move {
            let r = req.send().await.expect("POST");
            let code = r.status().as_u16();
            (code, r.text().await.unwrap_or_default())
        }
    };
    for (what, headers) in [
        ("a form post: no header of a client", vec![]),
        (
            "text/plain from another site",
            vec![
                ("origin", "http://evil.example".to_string()),
                ("content-type", "text/plain".to_string()),
            ],
        ),
        (
            "JSON from another site",
            vec![
                ("origin", "http://evil.example".to_string()),
                ("content-type", "application/json".to_string()),
            ],
        ),
        (
            "a page whose name resolves here (DNS rebinding)",
            vec![
                ("host", format!("rebind.evil.example:{}", rig.admin.port())),
                (
                    "origin",
                    format!("http://rebind.evil.example:{}", rig.admin.port()),
                ),
                ("content-type", "application/json".to_string()),
            ],
        ),
        (
            "a browser says cross-site",
            vec![
                ("x-gslb-request", "1".to_string()),
                ("sec-fetch-site", "cross-site".to_string()),
            ],
        ),
        (
            "Origin null",
            vec![
                ("x-gslb-request", "1".to_string()),
                ("origin", "null".to_string()),
            ],
        ),
    ] {
        let (code, body) = send(headers).await;
        assert_eq!(code, 403, "{what}: {body}");
        assert!(body.contains("error"), "{what}: {body}");
    }
    assert_eq!(region(&rig.status().await, "primary")["override"], "auto");
    assert_eq!(rig.api().await, [PRIMARY_IP], "nothing drained");

    // The status page (its own origin, a JSON body) and API clients (the
    // header, a JSON content type; Host an address or localhost) may.
    for headers in [
        vec![
            ("origin", own.clone()),
            ("content-type", "application/json".to_string()),
        ],
        vec![("x-gslb-request", "cli".to_string())],
        vec![
            ("host", format!("localhost:{}", rig.admin.port())),
            (
                "content-type",
                "application/json; charset=utf-8".to_string(),
            ),
        ],
    ] {
        let (code, body) = send(headers.clone()).await;
        assert_eq!(code, 200, "{headers:?}: {body}");
    }
    assert_eq!(region(&rig.status().await, "primary")["override"], "down");
}

// A name listed in admin-hosts may be used as the Host of mutating calls.
#[tokio::test]
async fn admin_hosts_names_the_hosts_a_mutating_call_may_use() {
    let rig = Rig::start_with(&FAST, None, |s| {
        s.admin_hosts = vec!["gslb-1.example.net".into()];
    })
    .await;
    rig.wait_healthy().await;
    let url = rig.url(&format!("/api/v1/regions/{ZONE_NAME}/primary/drain"));
    for (host, want) in [("gslb-1.example.net", 200), ("gslb-2.example.net", 403)] {
        let r = rig
            .http
            .post(&url)
            .header("host", format!("{host}:{}", rig.admin.port()))
            .header("x-gslb-request", "1")
            .send()
            .await
            .expect("POST");
        assert_eq!(r.status().as_u16(), want, "{host}");
    }
}
