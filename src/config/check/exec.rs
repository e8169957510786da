//! `type = "exec"`: a program, the keepalived and gdnsd `extmon` way,
//! passing on exit status 0.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use toml::Spanned;

use super::super::source::Ctx;
use super::super::spec::CheckSpec;
use crate::model::{CheckKind, ExecCheck, ExecUser};

pub(super) const EXEC_FIELDS: &[&str] = &["command", "user", "max-running"];

pub(super) fn build(cx: &mut Ctx<'_, '_>, check: &Spanned<String>, s: &CheckSpec) -> CheckKind {
    let command = match &s.command {
        None => {
            cx.err(
                check,
                format!(
                    "check {}: an exec check needs `command`, e.g. [\"/usr/local/bin/check_app\", \"--fast\"]",
                    check.get_ref()
                ),
            );
            Vec::new()
        }
        Some(c) if c.get_ref().is_empty() => {
            cx.err(c, "command is empty: it needs at least the program");
            Vec::new()
        }
        Some(c) => {
            if let Err(e) = runnable(&c.get_ref()[0]) {
                cx.err(c, format!("command {:?}: {e}", c.get_ref()[0]));
            }
            c.get_ref().clone()
        }
    };
    let user = s
        .user
        .as_ref()
        .and_then(|u| match lookup_user(u.get_ref()) {
            Some(found) => Some(found),
            None => {
                cx.err(
                    u,
                    format!("user {:?} does not exist on this host", u.get_ref()),
                );
                None
            }
        });
    let max_running = cx.int(&s.max_running, "max-running", 1, 1024, 16) as u32;
    CheckKind::Exec(Box::new(ExecCheck {
        command,
        user,
        max_running,
    }))
}

/// The program: an absolute path to an executable file (no `PATH` search,
/// no shell: a probe runs exactly what the zone file says).
fn runnable(program: &str) -> Result<(), String> {
    let path = Path::new(program);
    if !path.is_absolute() {
        return Err("the program must be an absolute path (no PATH search)".into());
    }
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "does not exist".to_string(),
        _ => format!("cannot be read: {e}"),
    })?;
    if !meta.is_file() {
        return Err("is not a file".into());
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err("is not executable".into());
    }
    Ok(())
}

/// A user of this host by name.
pub(crate) fn lookup_user(name: &str) -> Option<ExecUser> {
    let cname = std::ffi::CString::new(name).ok()?;
    // SAFETY: passwd is plain data; all zeroes is a valid (empty) value.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0u8; 16 * 1024];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call, the buffer's length is
    // passed, and `found` is read only when it points at `pwd`.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut found,
        )
    };
    (rc == 0 && !found.is_null()).then(|| ExecUser {
        name: name.to_string(),
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
    })
}
