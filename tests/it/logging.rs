//! Logs that cannot be written: the real binary with its stderr a pipe
//! whose reader went away (`gslb serve 2>&1 | head`, an SSH session that
//! dropped under `| tee`).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

use crate::backend::{Backend, Mode};
use crate::support::*;

async fn answer(dns: std::net::SocketAddr) -> Vec<String> {
    match udp(dns, &request("api.gslb.example.com.", RecordType::A, true)).await {
        Some(m) => addrs(&m),
        None => Vec::new(),
    }
}

/// A zones folder with `api` failing over from `primary` to `secondary`;
/// `zone_extra` goes in the `[zone]` table.
fn zones_dir(
    primary: &Backend,
    secondary: &Backend,
    zone_extra: &str,
) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let zones = dir.path().join("zones");
    std::fs::create_dir(&zones).unwrap();
    std::fs::write(
        zones.join("z.toml"),
        format!(
            "[zone]\nname = \"gslb.example.com.\"\nnameservers = [\"ns1.example.net.\"]\nhostmaster = \"hostmaster.example.com.\"\n{zone_extra}{}\n[service.api]\nregions = [\"primary\", \"secondary\"]\n",
            backend_regions(&[("primary", primary.addr), ("secondary", secondary.addr)])
        ),
    )
    .unwrap();
    (dir, zones)
}

// Issue 24 item 14. Fails on the code before it: the first log line after
// the reader went away panicked the task that wrote it (tracing reports a
// failed write with eprintln!, which panics on EPIPE), so the primary
// stayed down after it recovered and SIGTERM was never acted on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_log_pipe_stops_no_probe_and_no_shutdown() {
    let primary = Backend::start("127.0.0.2").await;
    let secondary = Backend::start("127.0.0.3").await;
    let (_dir, zones) = zones_dir(&primary, &secondary, "");
    let dns = free_udp_tcp_addr();
    let admin = free_udp_tcp_addr();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gslb"))
        .args(["serve", "--state-file", "off", "--log-level", "debug"])
        .args(["--listen", &dns.to_string(), "--admin", &admin.to_string()])
        .arg("--zones")
        .arg(&zones)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gslb serve starts");
    let mut stderr = child.stderr.take().expect("piped");
    // Killed if the test fails before its SIGTERM (on the code before the
    // fix, SIGTERM was never acted on).
    let mut child = Child(child);
    // Read until it serves, then close our end: every write fails now.
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("listening for DNS") {
        let n = stderr.read(&mut buf).expect("read the log");
        assert!(n > 0, "gslb exited: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    drop(stderr);
    let p = primary.addr.ip().to_string();
    let s = secondary.addr.ip().to_string();
    wait_until(Duration::from_secs(10), "answers the primary", || async {
        answer(dns).await == [p.clone()]
    })
    .await;
    // Transitions log lines (at info and warn) into the closed pipe.
    primary.set(Mode::Failing);
    wait_until(Duration::from_secs(10), "fails over", || async {
        answer(dns).await == [s.clone()]
    })
    .await;
    primary.set(Mode::Healthy);
    wait_until(Duration::from_secs(10), "comes back", || async {
        answer(dns).await == [p.clone()]
    })
    .await;
    gslb::install_crypto_provider();
    let (code, page) = http_get(&format!("http://{admin}/metrics")).await;
    assert_eq!(code, 200);
    let lost: f64 = page
        .lines()
        .find(|l| l.starts_with("gslb_log_lines_lost_total{why=\"write_error\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .expect("the lost-lines counter");
    assert!(lost > 0.0, "failed writes are counted: {lost}");

    // SIGTERM still shuts it down.
    let start = Instant::now();
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            assert!(status.success(), "clean exit: {status}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "SIGTERM was not acted on"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Run `gslb serve` with `zones` and `extra` arguments, its stderr read
/// into a shared buffer by a thread.
fn serve_logged(
    zones: &std::path::Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (
    Child,
    std::sync::Arc<std::sync::Mutex<String>>,
    std::net::SocketAddr,
) {
    let dns = free_udp_tcp_addr();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gslb"));
    cmd.args(["serve", "--state-file", "off"]);
    if !extra.contains(&"--admin") {
        cmd.args(["--admin", "off"]);
    }
    cmd.args(["--listen", &dns.to_string()])
        .arg("--zones")
        .arg(zones)
        .args(extra)
        .env_remove("GSLB_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("gslb serve starts");
    let mut stderr = child.stderr.take().expect("piped");
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let into = log.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    (Child(child), log, dns)
}

// Issue 19 item 3. Fails on the code before it: the webhook URL was logged
// with its path on every retry and drop, and Slack, Discord and Teams keep
// the webhook's secret in the path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhooks_secret_path_never_reaches_the_log() {
    let primary = Backend::start("127.0.0.2").await;
    let secondary = Backend::start("127.0.0.3").await;
    // Nothing listens there: every delivery fails and is retried.
    let closed = free_udp_tcp_addr();
    let (_dir, zones) = zones_dir(
        &primary,
        &secondary,
        &format!("webhook = \"http://{closed}/services/T00/B00/XXSECRETXX\"\n"),
    );
    let (_child, log, dns) = serve_logged(&zones, &["--log-level", "debug"], &[]);
    let p = primary.addr.ip().to_string();
    wait_until(Duration::from_secs(10), "answers the primary", || async {
        answer(dns).await == [p.clone()]
    })
    .await;
    primary.set(Mode::Failing);
    wait_until(
        Duration::from_secs(15),
        "a failed delivery logged",
        || async { log.lock().unwrap().contains("webhook delivery failed") },
    )
    .await;
    let text = log.lock().unwrap().clone();
    assert!(!text.contains("XXSECRETXX"), "{text}");
    assert!(
        text.contains(&format!("http://{closed}/…")),
        "shown by scheme and host: {text}"
    );
}

// Issue 19 item 3. Fails on the code before it: an empty GSLB_ADMIN_TOKEN
// was ignored (changes then went unauthenticated on loopback) and
// `admin-token = ""` was taken (every change then refused), both silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_admin_token_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let zones = dir.path().join("zones");
    std::fs::create_dir(&zones).unwrap();
    std::fs::write(
        zones.join("z.toml"),
        "[zone]\nname = \"gslb.example.com.\"\nnameservers = [\"ns1.example.net.\"]\nhostmaster = \"hostmaster.example.com.\"\n",
    )
    .unwrap();
    let settings = dir.path().join("gslb.toml");
    std::fs::write(&settings, "log-level = \"info\"\nadmin-token = \"\"\n").unwrap();
    for (args, env, want) in [
        (
            vec!["--config", settings.to_str().unwrap()],
            vec![],
            format!("{}:2:15: admin-token is empty", settings.display()),
        ),
        (
            vec![],
            vec![("GSLB_ADMIN_TOKEN", "")],
            "GSLB_ADMIN_TOKEN is set but empty".to_string(),
        ),
    ] {
        let (mut child, log, _) = serve_logged(&zones, &args, &env);
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.0.try_wait().unwrap() {
                break s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "still running: {}",
                log.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(!status.success());
        wait_until(Duration::from_secs(2), "the reason", || async {
            log.lock().unwrap().contains(&want)
        })
        .await;
    }
}

// Issue 22 (logs). An override's log line says what it was before and who
// asked, with plain values: no `Some(..)` (the endpoint field read
// `endpoint=Some(192.0.2.1)` or `None`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_override_is_logged_with_what_it_was_and_who_asked() {
    let primary = Backend::start("127.0.0.2").await;
    let secondary = Backend::start("127.0.0.3").await;
    let (_dir, zones) = zones_dir(&primary, &secondary, "");
    let admin = free_udp_tcp_addr().to_string();
    let (_child, log, dns) =
        serve_logged(&zones, &["--admin", &admin, "--log-format", "json"], &[]);
    let p = primary.addr.ip().to_string();
    wait_until(Duration::from_secs(10), "answers the primary", || async {
        answer(dns).await == [p.clone()]
    })
    .await;
    let cli = |a: &'static [&'static str]| {
        let admin = admin.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_gslb"))
                .args(a)
                .args(["--admin", &admin])
                .env_remove("GSLB_ADMIN_TOKEN")
                .output()
                .expect("gslb runs")
        })
    };
    let ep = secondary.addr.ip().to_string();
    assert!(cli(&["drain", "primary"]).await.unwrap().status.success());
    let out = cli(&["drain", "secondary", "--endpoint", "127.0.0.3"])
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(Duration::from_secs(10), "both overrides logged", || async {
        log.lock().unwrap().matches("override auto -> down").count() == 2
    })
    .await;
    let text = log.lock().unwrap().clone();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| l.contains("override auto -> down"))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let field = |v: &serde_json::Value, k: &str| v[k].clone();
    let region = &lines[0];
    assert_eq!(
        field(region, "message"),
        "override auto -> down on region primary by cli from 127.0.0.1",
        "{region}"
    );
    assert_eq!(field(region, "was"), "auto");
    assert_eq!(field(region, "state"), "down");
    assert_eq!(field(region, "endpoint"), "");
    assert_eq!(field(region, "by"), "cli from 127.0.0.1");
    let endpoint = &lines[1];
    assert_eq!(
        field(endpoint, "message"),
        format!("override auto -> down on endpoint {ep} of region secondary by cli from 127.0.0.1")
            .as_str(),
        "{endpoint}"
    );
    assert_eq!(field(endpoint, "endpoint"), ep.as_str());
    assert!(
        !text.contains("Some("),
        "a Debug rendering in the log: {text}"
    );
}
