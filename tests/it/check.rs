//! `gslb check` on broken zone files: one fixture per kind of mistake, each
//! stating the `line:col` and message it must produce in `# expect:` lines.

use std::path::{Path, PathBuf};
use std::process::Command;

fn gslb() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gslb"))
}

fn fixtures(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir)
}

/// `# expect: LINE:COL substring` lines of a fixture.
fn expectations(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).expect("fixture");
    text.lines()
        .filter_map(|l| l.strip_prefix("# expect: "))
        .map(|l| {
            let (pos, msg) = l.split_once(' ').expect("LINE:COL message");
            (pos.to_string(), msg.to_string())
        })
        .collect()
}

#[test]
fn every_broken_fixture_is_reported_with_file_line_and_column() {
    let dir = fixtures("bad");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "fixtures present");
    for file in files {
        // Run from the fixtures folder so paths in messages are as written below.
        let name = PathBuf::from(file.file_name().unwrap());
        let out = gslb()
            .current_dir(&dir)
            .arg("check")
            .arg(&name)
            .output()
            .unwrap();
        let file = name;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{} must fail:\n{stderr}",
            file.display()
        );
        let expects = expectations(&dir.join(&file));
        assert!(
            !expects.is_empty(),
            "{} has # expect: lines",
            file.display()
        );
        for (pos, msg) in &expects {
            let want = format!("{}:{pos}: ", file.display());
            assert!(
                stderr
                    .lines()
                    .any(|l| l.starts_with(&want) && l.contains(msg.as_str())),
                "{}: expected a line starting {want:?} containing {msg:?}; got:\n{stderr}",
                file.display()
            );
        }
        let problems = stderr
            .lines()
            .filter(|l| l.starts_with(&file.display().to_string()))
            .count();
        assert_eq!(
            problems,
            expects.len(),
            "{}: exactly the expected problems:\n{stderr}",
            file.display()
        );
    }
}

#[test]
fn two_files_claiming_one_zone_is_an_error() {
    let dir = fixtures("duplicate-zone");
    let out = gslb().arg("check").arg(&dir).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    let b = dir.join("b.toml");
    assert!(
        stderr.contains(&format!(
            "{}:3:8: zone dup.example.com. is already defined at {}:3:8",
            b.display(),
            dir.join("a.toml").display()
        )),
        "{stderr}"
    );
}

#[test]
fn shipped_example_zones_pass_check() {
    let zones = Path::new(env!("CARGO_MANIFEST_DIR")).join("zones");
    let out = gslb().arg("check").arg(&zones).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("ok:") && stdout.contains("zones"),
        "{stdout}"
    );
}

#[test]
fn check_says_what_it_loaded() {
    let out = gslb().arg("check").arg(fixtures("good")).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("ok: 1 zone, 6 records, 0 services, 0 regions"),
        "{stdout}"
    );
}

// Issue 24 item 15: `ok: 0 zones` before.
#[test]
fn a_folder_without_zones_is_a_problem_for_check_and_serve() {
    let dir = tempfile::tempdir().unwrap();
    let out = gslb().arg("check").arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no zone files"), "{stderr}");
    let out = gslb()
        .args([
            "serve",
            "--state-file",
            "off",
            "--admin",
            "off",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--zones")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "serve refuses to start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no zone files"), "{stderr}");
}

#[test]
fn missing_path_is_a_problem() {
    let out = gslb()
        .arg("check")
        .arg("/nonexistent/zones")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/zones: cannot read"),
        "{stderr}"
    );
    assert!(!stderr.contains(":0:0"), "no made-up position: {stderr}");
    assert!(stderr.contains("1 problem found"), "{stderr}");
}

/// Every `gslb_*` metric name in `text` (histogram suffixes stripped).
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("gslb_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let name = &text[start..end];
        let name = name
            .strip_suffix("_bucket")
            .or(name.strip_suffix("_count"))
            .or(name.strip_suffix("_sum"))
            .unwrap_or(name);
        out.insert(name.to_string());
        i = end;
    }
    out
}

/// The metric names the server registers (from a real registry).
fn registered() -> std::collections::BTreeSet<String> {
    let m = gslb::metrics::Metrics::new();
    // Touch every vector once so it appears in the exposition.
    m.endpoint_up.with_label_values(&["z", "r", "e"]).set(1);
    m.region_up.with_label_values(&["z", "r"]).set(1);
    m.region_override.with_label_values(&["z", "r"]).set(0);
    m.endpoint_override
        .with_label_values(&["z", "r", "e"])
        .set(0);
    m.probe_duration.with_label_values(&["z", "r"]).observe(0.1);
    m.endpoint_cert_expiry
        .with_label_values(&["z", "r", "e"])
        .set(1);
    m.probe_results
        .with_label_values(&["z", "r", "e", "success"])
        .inc();
    m.transitions
        .with_label_values(&["z", "r", "", "down"])
        .inc();
    m.service_degraded.with_label_values(&["z", "s"]).set(0);
    m.service_all_down
        .with_label_values(&["z", "s", "fail-open"])
        .set(0);
    m.service_answer_region
        .with_label_values(&["z", "s", "r"])
        .set(1.0);
    m.region_last_transition
        .with_label_values(&["z", "r"])
        .set(1.0);
    m.webhook_dropped.with_label_values(&["z"]).inc();
    m.dnssec_signatures.with_label_values(&["made"]).inc();
    m.dnssec_expiry.with_label_values(&["z"]).set(1);
    let t = &m.transfers;
    t.serial.with_label_values(&["z"]).set(1);
    t.served.with_label_values(&["z", "axfr"]).inc();
    t.bytes.with_label_values(&["z"]).inc();
    t.refused.with_label_values(&["z", "tsig"]).inc();
    t.notifies
        .with_label_values(&["z", "192.0.2.10:53", "acked"])
        .inc();
    t.notify_acked
        .with_label_values(&["z", "192.0.2.10:53"])
        .set(1);
    m.dns.answer("z", "s", "r", "").inc();
    m.dns.zone("z").query(
        hickory_proto::rr::RecordType::A,
        hickory_proto::op::ResponseCode::NoError,
        gslb::dns::Transport::Udp,
    );
    m.dns.dropped(gslb::dns::Transport::Udp);
    // The cluster's metrics, registered only by a cluster node.
    let health = std::sync::Arc::new(gslb::health::HealthTable::new(
        m.clone(),
        std::sync::Arc::new(gslb::health::RealProbes::default()),
        None,
        tokio_util::sync::CancellationToken::new(),
    ));
    let _cluster = gslb::cluster::Cluster::new(
        gslb::model::ClusterSettings {
            name: "c".into(),
            node: "n".into(),
            etcd: vec!["http://127.0.0.1:2379".into()],
            quorum: gslb::model::Quorum::Majority,
            lease_ttl: std::time::Duration::from_secs(5),
            vote_grace: std::time::Duration::from_secs(30),
            user: None,
            password: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
        },
        health,
        &m,
        Default::default(),
    );
    metric_names(&m.render())
}

#[test]
fn dashboard_and_alerts_use_only_metrics_that_exist() {
    let have = registered();
    for file in ["docker/grafana/gslb.json", "docker/alerts.yml"] {
        let text =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap();
        let used = metric_names(&text);
        assert!(!used.is_empty(), "{file} uses metrics");
        let missing: Vec<&String> = used.difference(&have).collect();
        assert!(
            missing.is_empty(),
            "{file} uses metrics gslb does not export: {missing:?}"
        );
    }
}

#[test]
fn readme_documents_every_metric() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let documented = metric_names(&readme);
    let missing: Vec<String> = registered()
        .into_iter()
        .filter(|m| !documented.contains(m))
        .collect();
    assert!(missing.is_empty(), "README misses: {missing:?}");
}

/// A settings file and a zones folder in `dir`: the zone's check has
/// `probers = 2`; the cluster's quorum is `quorum`.
fn cluster_setup(dir: &Path, quorum: &str, extra: &str) -> PathBuf {
    let zones = dir.join("zones");
    std::fs::create_dir_all(&zones).unwrap();
    std::fs::write(
        zones.join("z.toml"),
        "[zone]\nname = \"z.example.\"\nnameservers = [\"ns.example.net.\"]\nhostmaster = \"h.example.net.\"\n\n[check.web]\ntype = \"tcp\"\nport = 80\nprobers = 2\n\n[region.east]\nendpoints = [\"192.0.2.1\"]\ncheck = \"web\"\n\n[service.api]\nregions = [\"east\"]\n",
    )
    .unwrap();
    let cfg = dir.join("gslb.toml");
    std::fs::write(
        &cfg,
        format!(
            "zones = \"{}\"\nstate-file = \"off\"\nadmin = \"off\"\nlisten = [\"127.0.0.1:0\"]\n{extra}\n[cluster]\nname = \"t\"\nnode = \"ns1\"\netcd = [\"http://127.0.0.1:9\"]\nquorum = {quorum}\n",
            zones.display()
        ),
    )
    .unwrap();
    cfg
}

// Issue 24 item 7. Fails on the code before it: check had no --config, and
// serve started with a quorum its probers could never reach.
#[test]
fn check_config_cross_checks_the_settings_with_the_zones_and_serve_refuses_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = cluster_setup(dir.path(), "3", "");
    let out = gslb()
        .arg("check")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("z.toml:11:9")
            && stderr.contains("probers = 2")
            && stderr.contains("quorum is 3"),
        "{stderr}"
    );
    let out = gslb()
        .arg("serve")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success(), "serve refuses it too");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("probers = 2"), "{stderr}");

    // quorum = 2 works with probers = 2.
    let cfg = cluster_setup(dir.path(), "2", "");
    let out = gslb()
        .arg("check")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_config_reports_the_settings_files_own_problems_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = cluster_setup(dir.path(), "2", "wacth = true");
    let out = gslb()
        .arg("check")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("gslb.toml:5:1") && stderr.contains("wacth"),
        "{stderr}"
    );
}

/// A zone naming a TSIG key the settings file does not define: `check
/// --config` and `serve` refuse it alike, at the line of `tsig-key`; with
/// the key defined (its secret in a file) both accept it.
#[test]
fn check_and_serve_agree_on_a_zones_tsig_key() {
    let dir = tempfile::tempdir().unwrap();
    let zones = dir.path().join("zones");
    std::fs::create_dir_all(&zones).unwrap();
    std::fs::write(
        zones.join("z.toml"),
        "[zone]\nname = \"z.example.\"\nnameservers = [\"ns.example.net.\"]\nhostmaster = \"h.example.net.\"\n\n[transfer]\nallow = [\"127.0.0.1\"]\ntsig-key = \"xfr\"\n",
    )
    .unwrap();
    let cfg = dir.path().join("gslb.toml");
    let settings = |extra: &str| {
        std::fs::write(
            &cfg,
            format!(
                "zones = \"{}\"\nstate-file = \"off\"\nadmin = \"off\"\nlisten = [\"127.0.0.1:0\"]\n{extra}",
                zones.display()
            ),
        )
        .unwrap();
    };
    settings("");
    for cmd in ["check", "serve"] {
        let out = gslb().arg(cmd).arg("--config").arg(&cfg).output().unwrap();
        assert!(!out.status.success(), "{cmd} refuses it");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("z.toml:8:12") && stderr.contains("tsig-key \"xfr\" is not defined"),
            "{cmd}: {stderr}"
        );
    }
    std::fs::write(
        dir.path().join("xfr.key"),
        "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0IQ==\n",
    )
    .unwrap();
    settings("[tsig.xfr]\nsecret-file = \"xfr.key\"\n");
    let out = gslb()
        .arg("check")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The secret is never printed, even when the key is refused.
    std::fs::write(dir.path().join("xfr.key"), "c2hvcnQ=\n").unwrap();
    let out = gslb()
        .arg("check")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("5 bytes") && !stderr.contains("c2hvcnQ"),
        "{stderr}"
    );
}
