//! The `exec` kind: a program run once per probe, without a shell, in a
//! process group of its own, passing on exit status 0.
//!
//! Bounded every way a script can misbehave: at most `max-running` runs of
//! a check at once (one over is a local error: it says nothing about the
//! backend); the whole process group is killed when the probe ends, by
//! its deadline or not (a script's children that outlive it go too); the
//! output is read to its end but only its last [`KEEP`] bytes are kept, and
//! the last line is the reason. The environment is clean: `PATH`, `LANG`
//! and the endpoint's place, never gslb's own (which may hold the admin
//! token). As root, a check without `user` runs as `nobody`.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::Semaphore;

use super::{EndpointProber, ProbeError, ProbeOutcome};
use crate::model::{ExecCheck, ExecUser};

/// Bytes of a run's output kept (its tail), for the reason.
const KEEP: usize = 4096;

/// How long the output may still arrive once the program has exited.
const DRAIN: Duration = Duration::from_millis(50);

/// Programs being started at once, process-wide. A fork copies gslb's page
/// tables under its memory lock, so forks from many threads at once only
/// wait on each other (the blocking pool would run hundreds): as many as
/// there are cores here in `bench/probe-scale.sh`, KIND=exec.
static STARTING: Semaphore = Semaphore::const_new(2);

/// What every endpoint of an exec check shares.
#[derive(Debug)]
pub(super) struct Program {
    spec: ExecCheck,
    /// The user it runs as, if not gslb's own.
    user: Option<ExecUser>,
    running: Arc<Semaphore>,
}

impl Program {
    pub(super) fn new(check: &str, spec: &ExecCheck) -> Result<Program, ProbeError> {
        // SAFETY: geteuid cannot fail and touches no memory.
        let root = unsafe { libc::geteuid() } == 0;
        let user = match (&spec.user, root) {
            (Some(u), _) => Some(u.clone()),
            (None, true) => Some(crate::config::lookup_user("nobody").ok_or_else(|| {
                ProbeError::Exec {
                    check: check.to_string(),
                    msg: "gslb runs as root and there is no user `nobody` to run the program as; set `user`".into(),
                }
            })?),
            (None, false) => None,
        };
        Ok(Program {
            spec: spec.clone(),
            user,
            running: Arc::new(Semaphore::new(spec.max_running as usize)),
        })
    }
}

/// Kills the process group when dropped: at the deadline (the probe's
/// future is dropped) and after the program exits (its children).
struct Group(Option<i32>);

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            // SAFETY: a signal to a process group; ESRCH (all gone) is fine.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }
}

impl EndpointProber {
    /// One run of the program for this endpoint.
    pub(super) async fn exec(
        &self,
        p: &Program,
        zone: &str,
        region: &str,
    ) -> (ProbeOutcome, String) {
        let Ok(_permit) = p.running.clone().try_acquire_owned() else {
            return (
                ProbeOutcome::Local,
                format!(
                    "{} runs of this check already under way (max-running)",
                    p.spec.max_running
                ),
            );
        };
        let (program, args) = match p.spec.command.split_first() {
            Some(split) => split,
            None => return (ProbeOutcome::Local, "no command".into()),
        };
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("LANG", "C.UTF-8")
            .env("GSLB_ADDRESS", self.addr.ip().to_string())
            .env("GSLB_CHECK", &self.shared.check.name)
            .env("GSLB_ZONE", zone)
            .env("GSLB_REGION", region)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if self.shared.check.port != 0 {
            cmd.env("GSLB_PORT", self.shared.check.port.to_string());
        }
        if let Some(u) = &p.user {
            cmd.uid(u.uid).gid(u.gid);
            // SAFETY: setgroups is async-signal-safe; it drops gslb's
            // supplementary groups in the child before exec.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::setgroups(0, std::ptr::null()) != 0
                        && std::io::Error::last_os_error().raw_os_error() != Some(libc::EPERM)
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        // The fork (about 1 ms for a process of gslb's size: with `user`
        // the standard library cannot use posix_spawn) runs in the blocking
        // pool, not on the thread every other probe runs on, a few at a
        // time. A program gslb could not start within half the timeout is
        // gslb's problem, never the backend's: a local error.
        let start_by = self.shared.check.timeout / 2;
        let started = tokio::time::timeout(start_by, async {
            let slot = STARTING
                .acquire()
                .await
                .expect("the start semaphore is never closed");
            // The slot goes with the fork, so a start given up on at the
            // deadline still counts until its fork is done.
            tokio::task::spawn_blocking(move || {
                let _slot = slot;
                cmd.spawn()
            })
            .await
        })
        .await;
        let mut child = match started {
            Ok(Ok(Ok(c))) => c,
            Ok(Ok(Err(e))) => return spawn_failed(program, &e),
            Ok(Err(e)) => {
                return (
                    ProbeOutcome::Local,
                    format!("cannot start the program: {e}"),
                );
            }
            Err(_) => {
                return (
                    ProbeOutcome::Local,
                    format!(
                        "the program could not be started within {} (too many exec checks starting at once on this host)",
                        humantime::format_duration(start_by)
                    ),
                );
            }
        };
        let _group = Group(child.id().and_then(|id| i32::try_from(id).ok()));
        let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
        let mut tails = (Vec::new(), Vec::new());
        let status = {
            let read_out = tail(out.as_mut(), &mut tails.0);
            let read_err = tail(err.as_mut(), &mut tails.1);
            let reading = async { tokio::join!(read_out, read_err) };
            tokio::pin!(reading);
            let mut read_all = false;
            let status = tokio::select! {
                s = child.wait() => s,
                _ = &mut reading => {
                    read_all = true;
                    child.wait().await
                }
            };
            // What is still on its way once the program has exited (a
            // child of it may hold the pipes open: not waited for).
            if !read_all {
                let _ = tokio::time::timeout(DRAIN, &mut reading).await;
            }
            status
        };
        // A passing program's word is on stdout; a failing one's error,
        // most likely, on stderr.
        let (out, err) = (last_line(&tails.0), last_line(&tails.1));
        match status {
            Ok(s) if s.success() => (
                ProbeOutcome::Success,
                out.or(err)
                    .map_or_else(|| "ok".to_string(), |l| format!("ok: {l}")),
            ),
            Ok(s) => {
                use std::os::unix::process::ExitStatusExt;
                let how = match (s.code(), s.signal()) {
                    (Some(code), _) => format!("exit status {code}"),
                    (None, Some(sig)) => format!("killed by signal {sig}"),
                    (None, None) => "failed".to_string(),
                };
                (
                    ProbeOutcome::Status,
                    err.or(out).map_or(how.clone(), |l| format!("{how}: {l}")),
                )
            }
            Err(e) => (
                ProbeOutcome::Local,
                format!("cannot wait for the program: {e}"),
            ),
        }
    }
}

/// Read `from` to its end, keeping its last [`KEEP`] bytes in `keep`.
async fn tail<R: AsyncRead + Unpin>(from: Option<&mut R>, keep: &mut Vec<u8>) {
    let Some(from) = from else { return };
    let mut buf = [0u8; 4096];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                keep.extend_from_slice(&buf[..n]);
                if keep.len() > KEEP {
                    keep.drain(..keep.len() - KEEP);
                }
            }
        }
    }
}

/// The last line with text in it, trimmed and at most 200 characters.
fn last_line(output: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(output);
    let line = text.lines().rev().map(str::trim).find(|l| !l.is_empty())?;
    let mut shown: String = line.chars().take(200).collect();
    if shown.len() < line.len() {
        shown.push('…');
    }
    Some(shown)
}

fn spawn_failed(program: &str, e: &std::io::Error) -> (ProbeOutcome, String) {
    // Out of processes or descriptors: gslb's problem, not the backend's.
    let local = matches!(
        e.raw_os_error(),
        Some(libc::EAGAIN | libc::EMFILE | libc::ENFILE | libc::ENOMEM)
    );
    let outcome = if local {
        ProbeOutcome::Local
    } else {
        ProbeOutcome::Connect
    };
    (outcome, format!("cannot run {program}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_line_with_text_is_the_reason() {
        assert_eq!(
            last_line(b"checking\nlag 30s\n\n").as_deref(),
            Some("lag 30s")
        );
        assert_eq!(last_line(b"  \n"), None);
        let long = "x".repeat(500);
        assert_eq!(last_line(long.as_bytes()).unwrap().chars().count(), 201);
    }
}
