//! One table of the connections of a listener (DNS over TCP, the admin
//! API), so that no client can take every slot:
//!
//! - at most `max` connections at once, sized from the file descriptor
//!   limit (`app`);
//! - budgets per client: per address (where set), per /24 (IPv4) or /56
//!   (IPv6), and per IPv6 /48 (one customer's allocation holds 256 /56s,
//!   so a /56 budget alone lets one of them fill the table);
//! - a client at one of its budgets makes room among its own connections:
//!   the one idle longest goes; only when all of them are busy is the new
//!   one refused;
//! - at the limit, a new connection takes the slot of the connection idle
//!   longest; when none is idle, of the one whose current request has
//!   taken longest (a slow-loris sender that is never idle, a client that
//!   never reads its answers). A new client is never refused while a slow
//!   one holds a slot: a legitimate request takes milliseconds, so the
//!   slowest is always the attacker's.
//!
//! Near the limit (three quarters of `max` in use) a connection waiting for
//! its next request gets a short idle timeout ([`PRESSURE_IDLE`]), as NSD
//! and Knot shorten theirs.
//!
//! The table is a std mutex held for a few map operations, never across an
//! `.await`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::dns::client_prefix;
use crate::metrics::ConnMetrics;

/// Idle timeout of a connection waiting for its next request while three
/// quarters of the slots are in use.
pub const PRESSURE_IDLE: Duration = Duration::from_millis(500);

/// Limits of a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once.
    pub max: usize,
    /// Connections open at once from one /24 or /56.
    pub per_prefix: usize,
    /// Connections open at once from one IPv6 /48 (0: no such budget).
    pub per_48: usize,
    /// Connections open at once from one address (0: no such budget).
    pub per_addr: usize,
    /// Idle timeout between requests.
    pub idle: Duration,
}

/// What a connection is doing, since when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Activity {
    /// Waiting for its next request.
    Idle(Instant),
    /// A request under way (arriving, answered, or its answer written).
    Busy(Instant),
}

#[derive(Debug)]
struct Conn {
    /// The budgets it counts in.
    groups: Vec<Group>,
    activity: Activity,
    close: CancellationToken,
}

/// A budget a connection counts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Group {
    Addr(IpAddr),
    Prefix(u128),
    Net48(u128),
}

/// Every open connection of a listener.
#[derive(Debug)]
pub struct Table {
    limits: Limits,
    conns: Mutex<Inner>,
    metrics: ConnMetrics,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    conns: HashMap<u64, Conn>,
    counts: HashMap<Group, usize>,
}

/// Why a new connection was not admitted.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Its address, prefix or /48 has its share, every one of them busy.
    Budget,
    /// Every slot is taken (cannot happen while one is idle or busy; kept
    /// for a table of size 0).
    Full,
}

impl Table {
    /// A table with these limits, counted in `metrics`.
    pub fn new(limits: Limits, metrics: ConnMetrics) -> Table {
        metrics.limit.set(limits.max as i64);
        Table {
            limits,
            conns: Mutex::default(),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn groups(&self, ip: IpAddr) -> Vec<(Group, usize)> {
        let mut g = Vec::with_capacity(3);
        if self.limits.per_addr > 0 {
            g.push((Group::Addr(ip), self.limits.per_addr));
        }
        g.push((Group::Prefix(client_prefix(ip)), self.limits.per_prefix));
        if self.limits.per_48 > 0
            && let IpAddr::V6(v6) = ip
            && v6.to_ipv4_mapped().is_none()
        {
            g.push((
                Group::Net48(u128::from(v6) & !((1u128 << 80) - 1)),
                self.limits.per_48,
            ));
        }
        g
    }

    /// A slot for a connection from `ip`: its id and the token that closes
    /// it (see the module documentation for who makes room).
    pub fn admit(&self, ip: IpAddr) -> Result<(u64, CancellationToken), Refused> {
        let groups = self.groups(ip);
        let mut inner = self.lock();
        // Every budget the client is at makes room among its own (the one
        // idle longest), all or none: when one of them cannot, nothing is
        // closed and the new one is refused.
        let mut victims: Vec<u64> = Vec::new();
        for (group, cap) in &groups {
            if inner.counts.get(group).copied().unwrap_or(0) < *cap {
                continue;
            }
            if victims
                .iter()
                .any(|v| inner.conns.get(v).is_some_and(|c| c.groups.contains(group)))
            {
                continue; // a victim found for a narrower budget counts here too
            }
            let oldest = inner
                .conns
                .iter()
                .filter(|(id, c)| c.groups.contains(group) && !victims.contains(id))
                .filter_map(|(id, c)| match c.activity {
                    Activity::Idle(t) => Some((t, *id)),
                    Activity::Busy(_) => None,
                })
                .min();
            match oldest {
                Some((_, id)) => victims.push(id),
                None => {
                    self.metrics.shed_per_prefix.inc();
                    return Err(Refused::Budget);
                }
            }
        }
        for id in victims {
            Self::remove_locked(&mut inner, id);
            self.metrics.shed_per_prefix.inc();
        }
        if inner.conns.len() >= self.limits.max {
            // The one idle longest, else the one busy longest.
            let victim = inner
                .conns
                .iter()
                .map(|(id, c)| match c.activity {
                    Activity::Idle(t) => ((0, t), *id),
                    Activity::Busy(t) => ((1, t), *id),
                })
                .min();
            let Some(((busy, _), id)) = victim else {
                self.metrics.shed_full.inc();
                return Err(Refused::Full);
            };
            Self::remove_locked(&mut inner, id);
            if busy == 0 {
                self.metrics.shed_idle.inc();
            } else {
                self.metrics.shed_slowest.inc();
            }
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let close = CancellationToken::new();
        for (g, _) in &groups {
            *inner.counts.entry(*g).or_default() += 1;
        }
        inner.conns.insert(
            id,
            Conn {
                groups: groups.into_iter().map(|(g, _)| g).collect(),
                activity: Activity::Idle(Instant::now()),
                close: close.clone(),
            },
        );
        self.metrics.open.set(inner.conns.len() as i64);
        Ok((id, close))
    }

    /// Takes a connection out (closing it if it still runs); a second call
    /// for the same id does nothing.
    fn remove_locked(inner: &mut Inner, id: u64) {
        if let Some(c) = inner.conns.remove(&id) {
            c.close.cancel();
            for g in &c.groups {
                if let Some(n) = inner.counts.get_mut(g) {
                    *n -= 1;
                    if *n == 0 {
                        inner.counts.remove(g);
                    }
                }
            }
        }
    }

    /// The connection `id` ended.
    pub fn release(&self, id: u64) {
        let mut inner = self.lock();
        Self::remove_locked(&mut inner, id);
        self.metrics.open.set(inner.conns.len() as i64);
    }

    /// Marks the connection idle (waiting for a request) or busy; returns
    /// the idle timeout in force now. Busy again while busy keeps the time
    /// the request began.
    pub fn set_idle(&self, id: u64, idle: bool) -> Duration {
        let mut inner = self.lock();
        if let Some(c) = inner.conns.get_mut(&id) {
            c.activity = match (idle, c.activity) {
                (true, _) => Activity::Idle(Instant::now()),
                (false, Activity::Busy(t)) => Activity::Busy(t),
                (false, Activity::Idle(_)) => Activity::Busy(Instant::now()),
            };
        }
        self.idle_timeout(&inner)
    }

    /// The idle timeout in force: short when three quarters of the slots
    /// are in use.
    fn idle_timeout(&self, inner: &Inner) -> Duration {
        if inner.conns.len() * 4 >= self.limits.max * 3 {
            self.limits.idle.min(PRESSURE_IDLE)
        } else {
            self.limits.idle
        }
    }

    /// The idle timeout in force now.
    pub fn current_idle_timeout(&self) -> Duration {
        self.idle_timeout(&self.lock())
    }

    /// An accept failed for a local reason.
    pub fn accept_error(&self) {
        self.metrics.accept_errors.inc();
    }

    /// Connections open now.
    pub fn len(&self) -> usize {
        self.lock().conns.len()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    fn table(max: usize, per_prefix: usize) -> Table {
        Table::new(
            Limits {
                max,
                per_prefix,
                per_48: 0,
                per_addr: 0,
                idle: Duration::from_secs(10),
            },
            ConnMetrics::disabled(),
        )
    }

    #[test]
    fn one_prefix_gets_its_share_and_no_more() {
        let t = table(10, 2);
        let a = t.admit(ip("192.0.2.1")).unwrap();
        let b = t.admit(ip("192.0.2.2")).unwrap();
        t.set_idle(a.0, false);
        t.set_idle(b.0, false);
        assert_eq!(t.admit(ip("192.0.2.3")), Err(Refused::Budget));
        assert!(t.admit(ip("198.51.100.1")).is_ok(), "another net is served");
        t.release(a.0);
        assert!(t.admit(ip("192.0.2.3")).is_ok(), "a slot freed is reused");
    }

    #[tokio::test(start_paused = true)]
    async fn a_prefix_at_its_share_makes_room_among_its_own() {
        let t = table(10, 2);
        let (_, old) = t.admit(ip("192.0.2.1")).unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        let (_, newer) = t.admit(ip("192.0.2.2")).unwrap();
        let (_, other) = t.admit(ip("198.51.100.1")).unwrap();
        assert!(t.admit(ip("192.0.2.3")).is_ok());
        assert!(old.is_cancelled(), "its own idle longest goes");
        assert!(!newer.is_cancelled() && !other.is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_limit_the_idle_longest_then_the_slowest_makes_room() {
        let t = table(2, 10);
        let (old, old_close) = t.admit(ip("192.0.2.1")).unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        let (busy, busy_close) = t.admit(ip("198.51.100.1")).unwrap();
        t.set_idle(busy, false);
        let (new, new_close) = t.admit(ip("203.0.113.1")).expect("room made");
        assert!(old_close.is_cancelled(), "the idle one is closed");
        assert!(!busy_close.is_cancelled(), "not a busy one while one idles");
        t.release(old);
        // Every slot busy: the one busy longest goes, not the new client.
        tokio::time::advance(Duration::from_secs(1)).await;
        t.set_idle(new, false);
        assert!(t.admit(ip("203.0.113.2")).is_ok());
        assert!(busy_close.is_cancelled(), "the slowest is shed");
        assert!(!new_close.is_cancelled());
    }

    #[test]
    fn an_ipv6_48_has_a_budget_beside_its_56s() {
        let t = Table::new(
            Limits {
                max: 100,
                per_prefix: 4,
                per_48: 6,
                per_addr: 0,
                idle: Duration::from_secs(10),
            },
            ConnMetrics::disabled(),
        );
        let mut ids = Vec::new();
        // Two /56s of one /48: 4 + 2 fit, all busy.
        for a in [
            "2001:db8:1:100::1",
            "2001:db8:1:100::2",
            "2001:db8:1:100::3",
            "2001:db8:1:100::4",
            "2001:db8:1:200::1",
            "2001:db8:1:200::2",
        ] {
            let (id, _) = t.admit(ip(a)).unwrap();
            t.set_idle(id, false);
            ids.push(id);
        }
        assert_eq!(
            t.admit(ip("2001:db8:1:300::1")),
            Err(Refused::Budget),
            "the /48 is full"
        );
        assert!(
            t.admit(ip("2001:db8:2::1")).is_ok(),
            "another /48 is served"
        );
        assert!(t.admit(ip("192.0.2.1")).is_ok());
    }

    #[test]
    fn a_refusal_closes_nothing() {
        let t = Table::new(
            Limits {
                max: 100,
                per_prefix: 2,
                per_48: 0,
                per_addr: 1,
                idle: Duration::from_secs(10),
            },
            ConnMetrics::disabled(),
        );
        // 192.0.2.1 idle, 192.0.2.2 busy: the /24 is at its budget.
        let (_, idle) = t.admit(ip("192.0.2.1")).unwrap();
        let (busy, _) = t.admit(ip("192.0.2.2")).unwrap();
        t.set_idle(busy, false);
        // A second from 192.0.2.2: its address budget has no idle one, so
        // it is refused, and 192.0.2.1's idle connection is left alone.
        assert_eq!(t.admit(ip("192.0.2.2")), Err(Refused::Budget));
        assert!(!idle.is_cancelled());
        // From 192.0.2.1: its own idle one makes room for both budgets.
        assert!(t.admit(ip("192.0.2.1")).is_ok());
        assert!(idle.is_cancelled());
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn an_address_has_a_budget_beside_its_prefix() {
        let t = Table::new(
            Limits {
                max: 100,
                per_prefix: 10,
                per_48: 0,
                per_addr: 2,
                idle: Duration::from_secs(10),
            },
            ConnMetrics::disabled(),
        );
        for _ in 0..2 {
            let (id, _) = t.admit(ip("192.0.2.1")).unwrap();
            t.set_idle(id, false);
        }
        assert_eq!(t.admit(ip("192.0.2.1")), Err(Refused::Budget));
        assert!(t.admit(ip("192.0.2.2")).is_ok(), "a neighbour is served");
    }

    #[test]
    fn the_idle_timeout_shortens_near_the_limit() {
        let t = table(4, 10);
        let (a, _) = t.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(t.set_idle(a, true), Duration::from_secs(10));
        t.admit(ip("198.51.100.1")).unwrap();
        t.admit(ip("203.0.113.1")).unwrap();
        assert_eq!(t.set_idle(a, true), PRESSURE_IDLE);
    }
}
