//! `type = "exec"` checks (issue 23 item 2) with real scripts: that pass,
//! fail with a reason, print their environment, hang, leave a child behind,
//! print megabytes, run more often than allowed at once; and a failover
//! driven by one.

use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gslb::health::ProbeOutcome;
use gslb::health::probe::{CheckProber, ProbeResult};
use gslb::model::{Check, CheckKind, ExecCheck};

use crate::support::*;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A folder every user may run from and write to (scripts run as `nobody`
/// when the tests run as root, and write their children's pids here).
fn scripts() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn exec_check(program: &Path, timeout: Duration, max_running: u32) -> Check {
    Check {
        name: "app".into(),
        kind: CheckKind::Exec(Box::new(ExecCheck {
            command: vec![program.display().to_string(), "--fast".into()],
            user: None,
            max_running,
        })),
        port: 8080,
        target: None,
        interval: Duration::from_secs(5),
        timeout,
        recheck: None,
        fall: 1,
        rise: 1,
        probers: None,
    }
}

async fn probe(check: Check) -> ProbeResult {
    let prober = CheckProber::new(Arc::new(check)).expect("prober");
    let endpoint = prober
        .for_endpoint(LOCALHOST)
        .expect("endpoint prober")
        .in_region("gslb.example.com", "us-east");
    tokio::time::timeout(Duration::from_secs(20), endpoint.probe())
        .await
        .expect("probe returned")
}

/// Whether a process is gone (or a zombie no one has reaped yet).
fn gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('Z')),
    }
}

async fn pid_in(file: &Path) -> String {
    let mut pid = String::new();
    wait_until(Duration::from_secs(5), "the pid file", || {
        pid = std::fs::read_to_string(file)
            .unwrap_or_default()
            .trim()
            .to_string();
        let ready = !pid.is_empty();
        async move { ready }
    })
    .await;
    pid
}

#[tokio::test]
async fn exit_status_decides_and_the_last_line_is_the_reason() {
    let dir = scripts();
    let ok = script(
        dir.path(),
        "ok",
        "echo checking\necho 'replication lag 0s'\necho\nexit 0",
    );
    assert_outcome(
        &probe(exec_check(&ok, Duration::from_secs(5), 4)).await,
        ProbeOutcome::Success,
        "ok: replication lag 0s",
    );
    let bad = script(
        dir.path(),
        "bad",
        "echo checking\necho 'replication lag 30s' >&2\nexit 3",
    );
    assert_outcome(
        &probe(exec_check(&bad, Duration::from_secs(5), 4)).await,
        ProbeOutcome::Status,
        "exit status 3: replication lag 30s",
    );
    let killed = script(dir.path(), "killed", "kill -TERM $$");
    assert_outcome(
        &probe(exec_check(&killed, Duration::from_secs(5), 4)).await,
        ProbeOutcome::Status,
        "killed by signal 15",
    );
}

#[tokio::test]
async fn the_program_gets_its_arguments_a_clean_environment_and_a_safe_user() {
    let dir = scripts();
    let env = script(
        dir.path(),
        "env",
        "echo \"$1 $GSLB_ADDRESS:$GSLB_PORT $GSLB_ZONE $GSLB_REGION $GSLB_CHECK home=${HOME:-unset} uid=$(id -u)\"",
    );
    // SAFETY: geteuid touches no memory.
    let uid = match unsafe { libc::geteuid() } {
        0 => 65534, // root's checks run as nobody unless `user` says otherwise
        me => me,
    };
    assert_outcome(
        &probe(exec_check(&env, Duration::from_secs(5), 4)).await,
        ProbeOutcome::Success,
        &format!("ok: --fast 127.0.0.1:8080 gslb.example.com us-east app home=unset uid={uid}"),
    );
}

#[tokio::test]
async fn a_hung_program_is_killed_with_its_children_at_the_timeout() {
    let dir = scripts();
    let pids = dir.path().join("pids");
    let hang = script(
        dir.path(),
        "hang",
        &format!("sleep 300 &\necho $! > {}\nsleep 300", pids.display()),
    );
    let r = probe(exec_check(&hang, Duration::from_millis(500), 4)).await;
    assert_outcome(&r, ProbeOutcome::Timeout, "timeout after 500ms");
    let child = pid_in(&pids).await;
    wait_until(Duration::from_secs(5), "the script's child killed", || {
        let g = gone(&child);
        async move { g }
    })
    .await;
}

#[tokio::test]
async fn a_child_left_behind_by_a_passing_program_is_killed() {
    let dir = scripts();
    let pids = dir.path().join("pids");
    let leave = script(
        dir.path(),
        "leave",
        &format!(
            "sleep 300 >/dev/null 2>&1 &\necho $! > {}\necho done",
            pids.display()
        ),
    );
    let r = probe(exec_check(&leave, Duration::from_secs(5), 4)).await;
    assert_outcome(&r, ProbeOutcome::Success, "ok: done");
    let child = pid_in(&pids).await;
    wait_until(Duration::from_secs(5), "the left child killed", || {
        let g = gone(&child);
        async move { g }
    })
    .await;
}

#[tokio::test]
async fn megabytes_of_output_cost_no_memory_and_the_tail_is_kept() {
    let dir = scripts();
    let loud = script(
        dir.path(),
        "loud",
        "head -c 20000000 /dev/zero | tr '\\000' x\necho\necho 'all good'",
    );
    assert_outcome(
        &probe(exec_check(&loud, Duration::from_secs(10), 4)).await,
        ProbeOutcome::Success,
        "ok: all good",
    );
}

#[tokio::test]
async fn runs_beyond_max_running_are_local_errors_not_failures() {
    let dir = scripts();
    let slow = script(dir.path(), "slow", "sleep 1\necho slow");
    let prober = CheckProber::new(Arc::new(exec_check(&slow, Duration::from_secs(5), 1))).unwrap();
    let a = prober.for_endpoint(LOCALHOST).unwrap();
    let b = prober
        .for_endpoint(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .unwrap();
    let (ra, rb) = tokio::join!(a.probe(), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        b.probe().await
    });
    assert_outcome(&ra, ProbeOutcome::Success, "ok: slow");
    assert_outcome(
        &rb,
        ProbeOutcome::Local,
        "1 runs of this check already under way (max-running)",
    );
}

/// A region checked by a script that reads a flag file: removing the flag
/// fails the region over, putting it back brings it home.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_checked_by_a_script_fails_over_and_back() {
    let dir = scripts();
    let flag = dir.path().join("healthy");
    std::fs::write(&flag, "").unwrap();
    let check = script(
        dir.path(),
        "check",
        &format!(
            "test -e {} || {{ echo 'flag gone'; exit 1; }}",
            flag.display()
        ),
    );
    let zone = failover_zone(&format!(
        "type = \"exec\"\ncommand = [\"{}\"]\ninterval = \"300ms\"\ntimeout = \"250ms\"\nfall = 1\nrise = 1",
        check.display()
    ));
    // Timeout 250 ms: a shell started on a machine busy with the rest of
    // the suite took longer than the 90 ms this had (CI, twice).
    let ts = TestServer::start(&[("z.toml", &zone)]).await;
    wait_for_api(ts.dns, "127.0.0.1", "primary answered").await;
    std::fs::remove_file(&flag).unwrap();
    wait_for_api(ts.dns, "127.0.0.2", "failed over").await;
    std::fs::write(&flag, "").unwrap();
    wait_for_api(ts.dns, "127.0.0.1", "back on the primary").await;
}
