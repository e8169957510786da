//! File descriptors: the soft limit is raised to the hard one at start-up,
//! and the connection limits are sized from it, so that clients can never
//! take the descriptors that probes, webhooks, the state file and etcd need.
//!
//! With systemd's default soft limit of 1024 and `MAX_TCP_CONNECTIONS` at
//! 1024, a client holding that many DNS-over-TCP connections made every
//! probe fail with `Too many open files`, and healthy regions went down. Now:
//!
//! - `reserve` = 128 (the state file, etcd, webhooks, logs, stdio) + every
//!   listener and UDP socket + per probed endpoint its kept connection and
//!   up to max(fall, rise) fresh ones while a transition is confirmed
//!   (rechecks overlap), capped by the probes that can run at once;
//! - what is left is shared: DNS over TCP at most three quarters of it, the
//!   admin API at most an eighth; each also at most its setting.

use std::io;

use crate::model::Config;

/// Descriptors set aside for everything but client connections.
pub const BASE_RESERVE: u64 = 128;

/// The descriptors set aside for everything but client connections: the
/// base, `sockets` listeners and UDP sockets, and `probes` for probing.
pub fn reserve(sockets: usize, probes: u64) -> u64 {
    BASE_RESERVE + sockets as u64 + probes
}

/// Descriptors probes may hold: per endpoint its kept connection and
/// `1 + max(fall, rise)` more while a transition is confirmed, but never
/// more than `max_in_flight` probes at once beyond the kept ones.
pub fn probe_fds(endpoints: impl IntoIterator<Item = u32>, max_in_flight: usize) -> u64 {
    let (mut kept, mut busy) = (0u64, 0u64);
    for overlap in endpoints {
        kept += 1;
        busy += u64::from(overlap.max(1));
    }
    kept + busy.min(max_in_flight as u64)
}

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
    /// The budget under `nofile` descriptors with `reserve` set aside, for
    /// the connection limits asked for.
    pub fn new(nofile: u64, reserve: u64, want_tcp: usize, want_admin: usize) -> FdBudget {
        let left = nofile.saturating_sub(reserve);
        let share = |n: u64, want: usize| usize::try_from(n).unwrap_or(usize::MAX).min(want).max(1);
        FdBudget {
            nofile,
            reserve,
            dns_tcp: share(left / 4 * 3, want_tcp),
            admin: share(left / 8, want_admin),
        }
    }

    /// The budget for serving `config` with `sockets` listeners and UDP
    /// sockets, at most `max_in_flight` probes running at once, and the
    /// number of probed endpoints it reserved for.
    pub fn for_config(
        nofile: u64,
        config: &Config,
        sockets: usize,
        max_in_flight: usize,
        want_tcp: usize,
        want_admin: usize,
    ) -> (FdBudget, usize) {
        // Per probed endpoint, the rechecks that may overlap while a
        // transition is confirmed; a cname region is probed once, at its
        // check's target.
        let probed: Vec<u32> = config
            .zones
            .iter()
            .flat_map(|z| z.regions.values())
            .filter_map(|r| {
                let check = r.check.as_ref()?;
                let n = r.endpoints().len().max(1);
                Some(std::iter::repeat_n(check.fall.max(check.rise), n))
            })
            .flatten()
            .collect();
        let endpoints = probed.len();
        let reserve = reserve(sockets, probe_fds(probed, max_in_flight));
        (
            FdBudget::new(nofile, reserve, want_tcp, want_admin),
            endpoints,
        )
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
        // systemd's default soft limit; two listeners with 2 UDP workers
        // each, two endpoints with fall 3.
        let r = reserve(2 + 4, probe_fds([3, 3], 4096));
        assert_eq!(r, 128 + 6 + 2 + 6);
        let b = FdBudget::new(1024, r, 1024, 64);
        assert_eq!(b.dns_tcp, 660, "three quarters of 882");
        assert_eq!(b.admin, 64);
        assert!(b.reserve + b.dns_tcp as u64 + b.admin as u64 <= 1024);
        assert!(!b.fits(1024, 64));
        // 10,000 endpoints under 1024: the probes come first.
        let b = FdBudget::new(1024, reserve(6, probe_fds(vec![3; 10_000], 4096)), 1024, 64);
        assert_eq!((b.dns_tcp, b.admin), (1, 1));
    }

    #[test]
    fn in_flight_probes_are_capped() {
        assert_eq!(probe_fds(vec![3; 10_000], 4096), 10_000 + 4096);
        assert_eq!(probe_fds([2, 5], 4096), 2 + 7);
    }

    #[test]
    fn a_large_limit_gives_what_is_asked() {
        let b = FdBudget::new(
            1 << 20,
            reserve(6, probe_fds(vec![3; 10_000], 4096)),
            1024,
            64,
        );
        assert_eq!((b.dns_tcp, b.admin), (1024, 64));
        assert!(b.fits(1024, 64));
        let huge = FdBudget::new(u64::MAX, 0, 1024, 64);
        assert_eq!((huge.dns_tcp, huge.admin), (1024, 64), "no overflow");
    }

    #[test]
    fn raising_keeps_a_limit() {
        let n = raise_nofile().expect("getrlimit");
        assert!(n >= 64, "{n}");
    }
}
