//! Reload through the API, and the CLI against a running server.

use std::process::Stdio;

use super::*;

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

#[tokio::test]
async fn the_cli_names_the_admin_address_and_says_when_it_was_the_default() {
    // Nothing chosen: the message says where it looked and that this was
    // the default (whether or not something answers there).
    let out = gslb(args(&["drain", "primary"])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(
            "127.0.0.1:9153 (the default; --admin ADDR:PORT or GSLB_ADMIN names another)"
        ),
        "{stderr}"
    );
    // Chosen: named, without the note.
    let closed = free_udp_tcp_addr().to_string();
    let out = gslb(args(&["drain", "primary", "--admin", &closed])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot reach the admin API at {closed}:")),
        "{stderr}"
    );
    assert!(!stderr.contains("the default"), "{stderr}");
}

#[tokio::test]
async fn status_prints_each_services_answer_and_each_regions_health() {
    let (_ts, admin) = unchecked(None).await;
    let out = gslb(args(&["status", "--admin", &admin])).await;
    let text = succeeded(&out);
    for want in [
        format!("zone {ZONE_NAME}"),
        format!("  api            failover    -> primary [{PRIMARY_IP}]\n"),
        "  region primary      up    1/1 endpoints up\n".to_string(),
        "  region secondary    up    1/1 endpoints up\n".to_string(),
    ] {
        assert!(text.contains(&want), "{want:?} not in\n{text}");
    }
    succeeded(&gslb(args(&["drain", "primary", "--admin", &admin])).await);
    let text = succeeded(&gslb(args(&["status", "--admin", &admin])).await);
    for want in [
        format!("  api            failover    -> secondary [{SECONDARY_IP}]  degraded\n"),
        "  region primary      DOWN  1/1 endpoints up, override down by cli from 127.0.0.1\n"
            .to_string(),
    ] {
        assert!(text.contains(&want), "{want:?} not in\n{text}");
    }
    succeeded(&gslb(args(&["drain", "secondary", "--admin", &admin])).await);
    let text = succeeded(&gslb(args(&["status", "--admin", &admin])).await);
    assert!(text.contains("ALL DOWN (fail-open)"), "{text}");
    // The JSON is the status API's.
    let json: Value = serde_json::from_str(&succeeded(
        &gslb(args(&["status", "--json", "--admin", &admin])).await,
    ))
    .expect("JSON");
    assert_eq!(json["zones"][0]["services"][0]["all_down"], true);
}

#[tokio::test]
async fn status_says_why_an_endpoint_is_down() {
    let mut rig = Rig::start(&FAST, None).await;
    rig.wait_healthy().await;
    let admin = rig.admin.to_string();
    rig.primary.kill();
    let want = format!("    {PRIMARY_IP} down: connection refused");
    let status = || async { succeeded(&gslb(args(&["status", "--admin", &admin])).await) };
    wait_for(Duration::from_secs(10), "status says why", || async {
        status().await.contains(&want)
    })
    .await;
    let text = status().await;
    assert!(text.contains(&want), "{want:?} not in\n{text}");
    assert!(
        text.contains("  region primary      DOWN  0/1 endpoints up\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!("-> secondary [{SECONDARY_IP}]  degraded")),
        "{text}"
    );
}

#[tokio::test]
async fn a_rejected_reload_fails_the_cli_as_systemctl_reload_needs() {
    // docker/systemd/gslb.service runs `gslb reload` as ExecReload, so
    // `systemctl reload gslb` fails exactly when the new zones are rejected.
    let (ts, admin) = unchecked(None).await;
    let file = ts.zone_path("gslb.test.toml");
    let good = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        format!(
            "{good}
[service.web]
regions = [\"mars\"]
"
        ),
    )
    .unwrap();
    let out = gslb(args(&["reload", "--admin", &admin])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("gslb.test.toml:"), "the position: {stderr}");
    assert!(stderr.contains("mars"), "{stderr}");
    assert!(
        stderr.contains("reload rejected; the server keeps serving its previous zones"),
        "{stderr}"
    );
    let m = ts.query("api.gslb.test.", RecordType::A).await;
    assert_eq!(addrs(&m), [PRIMARY_IP], "still served as before");
    std::fs::write(&file, good).unwrap();
    let out = gslb(args(&["reload", "--admin", &admin])).await;
    assert!(succeeded(&out).contains("reloaded: 1 zones"));
}

/// A server with unchecked regions `primary` and `secondary`, the admin API
/// on loopback without a token, and `state_file`.
async fn unchecked(state_file: Option<std::path::PathBuf>) -> (TestServer, String) {
    let zone = format!(
        "[zone]\nname = \"{ZONE_NAME}.\"\nnameservers = [\"ns1.example.net.\"]\n\
         hostmaster = \"hostmaster@example.com\"\n\n\
         [region.primary]\nendpoints = [\"{PRIMARY_IP}\"]\n\n\
         [region.secondary]\nendpoints = [\"{SECONDARY_IP}\"]\n\n\
         [service.api]\nregions = [\"primary\", \"secondary\"]\n"
    );
    let ts = TestServer::start_with(&[("gslb.test.toml", &zone)], |s| {
        s.admin = Some("127.0.0.1:0".parse().unwrap());
        s.state_file = state_file;
    })
    .await;
    let admin = ts.server.admin_addr.expect("admin API bound").to_string();
    (ts, admin)
}

/// POST `/api/v1/regions/_/{path}`: (status, JSON body).
async fn post(admin: &str, path: &str) -> (u16, Value) {
    let r = client()
        .post(format!("http://{admin}/api/v1/regions/_/{path}"))
        .header("x-gslb-request", "test")
        .send()
        .await
        .expect("POST");
    let code = r.status().as_u16();
    let text = r.text().await.expect("body");
    (
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// An override that cannot be saved still applies, and says so: the API
/// answers `persisted: false` with a warning, the CLI exits 4. Saved, it is
/// on disk when the answer comes.
#[tokio::test]
async fn overrides_say_whether_the_state_file_kept_them() {
    let dir = tempfile::tempdir().unwrap();
    // A folder that does not exist: the state file cannot be written.
    let unwritable = dir.path().join("missing").join("state.json");
    let (ts, admin) = unchecked(Some(unwritable.clone())).await;
    let (code, body) = post(&admin, "primary/drain").await;
    assert_eq!(code, 200, "the override applies: {body}");
    assert_eq!(body["persisted"], false, "{body}");
    let warning = body["warning"].as_str().unwrap_or_default();
    assert!(
        warning.contains("not persisted") && warning.contains(&*unwritable.to_string_lossy()),
        "{body}"
    );
    let api = || async { addrs(&ts.query(API, RecordType::A).await) };
    assert_eq!(api().await, [SECONDARY_IP], "drained all the same");
    for (action, answer) in [
        ("undrain", PRIMARY_IP),
        ("drain", SECONDARY_IP),
        ("force-up", PRIMARY_IP),
    ] {
        let out = gslb(args(&[action, "primary", "--admin", &admin])).await;
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(out.status.code(), Some(4), "{action}: {stdout}{stderr}");
        assert!(
            stdout.contains("region primary in zone gslb.test: override"),
            "{stdout}"
        );
        assert!(
            stderr.contains("applies but is not persisted") && stderr.contains("state.json"),
            "{stderr}"
        );
        assert_eq!(api().await, [answer], "{action} applied");
    }
    drop(ts);

    // Writable: saved before the answer, exit 0.
    let state = dir.path().join("state.json");
    let (ts, admin) = unchecked(Some(state.clone())).await;
    let out = gslb(args(&["drain", "primary", "--admin", &admin])).await;
    succeeded(&out);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(
        saved["regions"],
        json!([{"zone": ZONE_NAME, "region": "primary", "override": "down", "by": "cli from 127.0.0.1"}]),
        "{saved}"
    );
    let (code, body) = post(&admin, "primary/undrain").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["persisted"], true, "{body}");
    assert!(body.get("warning").is_none(), "{body}");
    drop(ts);

    // No state file at all (`--state-file off`): nothing to save, no warning.
    let (_ts, admin) = unchecked(None).await;
    let out = gslb(args(&["drain", "primary", "--admin", &admin])).await;
    succeeded(&out);
    let (code, body) = post(&admin, "primary/undrain").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["persisted"], false, "{body}");
    assert!(body.get("warning").is_none(), "{body}");
}

// Issue 24 item 10: a drain may carry an expiry and a comment (as Route 53
// ARC's zonal shifts do); alone, it ends by itself, and a restart keeps
// both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_for_a_while_with_a_comment_ends_by_itself_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let (ts, admin) = unchecked(Some(state.clone())).await;
    let out = gslb(args(&[
        "drain",
        "primary",
        "--for",
        "3s",
        "--comment",
        "db migration",
        "--admin",
        &admin,
    ]))
    .await;
    succeeded(&out);
    let answer = |ts: &TestServer| {
        let dns = ts.dns;
        async move {
            addrs(
                &udp(
                    dns,
                    &request(&format!("api.{ZONE_NAME}."), RecordType::A, true),
                )
                .await
                .unwrap(),
            )
        }
    };
    assert_eq!(answer(&ts).await, [SECONDARY_IP]);
    let st = serde_json::to_value(ts.server.status()).unwrap();
    let r = region(&st, "primary");
    assert_eq!(r["override_note"]["comment"], "db migration", "{r}");
    // Who asked: the CLI marks its requests, the listener knows the address.
    assert_eq!(r["override_note"]["by"], "cli from 127.0.0.1", "{r}");
    let ends = r["override_note"]["expires_ms"]
        .as_u64()
        .expect("an expiry");
    // A restart in between keeps the drain, its comment and its end (the
    // API answered once the state file had it).
    drop(ts);
    let (ts, admin) = unchecked(Some(state)).await;
    assert_eq!(
        answer(&ts).await,
        [SECONDARY_IP],
        "still drained after a restart"
    );
    let st = serde_json::to_value(ts.server.status()).unwrap();
    assert_eq!(region(&st, "primary")["override_note"]["expires_ms"], ends);
    assert_eq!(
        region(&st, "primary")["override_note"]["by"],
        "cli from 127.0.0.1"
    );
    let start = std::time::Instant::now();
    wait_for(Duration::from_secs(10), "the drain ends", || async {
        answer(&ts).await == [PRIMARY_IP]
    })
    .await;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(now_ms >= ends, "not before its end ({:?})", start.elapsed());
    let out = gslb(args(&[
        "drain", "primary", "--for", "soon", "--admin", &admin,
    ]))
    .await;
    assert_ne!(out.status.code(), Some(0), "a bad duration is refused");
}

#[tokio::test]
async fn ready_exits_0_only_for_a_ready_server_and_gives_up_on_a_hung_one() {
    // Ready (unchecked regions: verdicts known from the start).
    let (_ts, admin) = unchecked(None).await;
    let out = gslb(args(&["ready", "--admin", &admin])).await;
    assert_eq!(succeeded(&out).trim(), "ready");

    // On a host with no CA certificates too (a `scratch` image): reqwest
    // builds no client without a store, even for plain HTTP.
    let no_certs = tempfile::tempdir().unwrap();
    let (none, dir) = (
        no_certs.path().join("none.pem"),
        no_certs.path().to_path_buf(),
    );
    let a = admin.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_gslb"))
            .args(["ready", "--admin", &a])
            .env("SSL_CERT_FILE", none)
            .env("SSL_CERT_DIR", dir)
            .output()
            .expect("run gslb")
    })
    .await
    .unwrap();
    assert_eq!(succeeded(&out).trim(), "ready");

    // Nothing listening: 1 (a Docker HEALTHCHECK allows 0 and 1 only).
    let closed = free_udp_tcp_addr().to_string();
    let out = gslb(args(&["ready", "--admin", &closed])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not ready: cannot reach"), "{stderr}");

    // A listener that accepts and never answers: 1 at the timeout, not a
    // check that hangs for as long as the server does.
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = hung.local_addr().unwrap().to_string();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = hung.accept().await {
            conns.push(c);
        }
    });
    let asked = std::time::Instant::now();
    let out = gslb(args(&["ready", "--timeout", "300ms", "--admin", &addr])).await;
    let took = asked.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // Not the client's 30 s default: the timeout given.
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(stderr.contains("not ready"), "{stderr}");
    held.abort();
}
