//! File descriptors: the soft limit is raised to the hard one at start-up,
//! and the connection limits are sized from it, so that clients can never
//! take the descriptors that probes, webhooks, the state file and etcd need.
//!
//! With systemd's default soft limit of 1024 and `MAX_TCP_CONNECTIONS` at
//! 1024, a client holding that many DNS-over-TCP connections made every
//! probe fail with `Too many open files`, and healthy regions went down. Now:
//!
//! - `reserve` = 128 (listeners, UDP sockets, the state file, etcd,
//!   webhooks, logs) + 2 per probed endpoint (a kept connection and a fresh
//!   one while a probe overlaps a recheck);
//! - what is left is shared: DNS over TCP at most three quarters of it, the
//!   admin API at most an eighth; each also at most its setting.

use std::io;

/// Descriptors set aside for everything but client connections.
pub const BASE_RESERVE: u64 = 128;

/// Descriptors set aside per probed endpoint.
pub const PER_ENDPOINT: u64 = 2;

/// How the descriptor limit is shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdBudget {
    /// The soft limit in force (after raising it).
    pub nofile: u64,
    /// Set aside for probes and the rest.
    pub reserve: u64,
    /// DNS-over-TCP connections.
    pub dns_tcp: usize,
    /// Admin API connections.
    pub admin: usize,
}

impl FdBudget {
    /// The budget under `nofile` descriptors with `endpoints` probed
    /// endpoints, for the connection limits asked for.
    pub fn new(nofile: u64, endpoints: usize, want_tcp: usize, want_admin: usize) -> FdBudget {
        let reserve = BASE_RESERVE + PER_ENDPOINT * endpoints as u64;
        let left = nofile.saturating_sub(reserve);
        let share = |n: u64, want: usize| usize::try_from(n).unwrap_or(usize::MAX).min(want).max(1);
        FdBudget {
            nofile,
            reserve,
            dns_tcp: share(left * 3 / 4, want_tcp),
            admin: share(left / 8, want_admin),
        }
    }

    /// Whether the limit leaves the reserve and the asked-for connections
    /// room (else the limits were lowered).
    pub fn fits(&self, want_tcp: usize, want_admin: usize) -> bool {
        self.dns_tcp >= want_tcp && self.admin >= want_admin
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; the soft limit now.
pub fn raise_nofile() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid pointer to an rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: a valid pointer to an rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        } else {
            tracing::warn!(error = %io::Error::last_os_error(), soft = lim.rlim_cur, hard = lim.rlim_max, "cannot raise the file descriptor limit");
        }
    }
    Ok(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_limit_lowers_the_connection_limits_and_keeps_the_reserve() {
        // systemd's default soft limit, two endpoints.
        let b = FdBudget::new(1024, 2, 1024, 64);
        assert_eq!(b.reserve, 132);
        assert_eq!(b.dns_tcp, 669, "three quarters of 892");
        assert_eq!(b.admin, 64);
        assert!(b.reserve + b.dns_tcp as u64 + b.admin as u64 <= 1024);
        assert!(!b.fits(1024, 64));
        // 10,000 endpoints under 1024: the probes come first.
        let b = FdBudget::new(1024, 10_000, 1024, 64);
        assert_eq!((b.dns_tcp, b.admin), (1, 1));
    }

    #[test]
    fn a_large_limit_gives_what_is_asked() {
        let b = FdBudget::new(1 << 20, 10_000, 1024, 64);
        assert_eq!((b.dns_tcp, b.admin), (1024, 64));
        assert!(b.fits(1024, 64));
    }

    #[test]
    fn raising_keeps_a_limit() {
        let n = raise_nofile().expect("getrlimit");
        assert!(n >= 64, "{n}");
    }
}
