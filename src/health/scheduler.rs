//! One task per checked endpoint: probe on the check's interval (the first
//! probe at a random offset within it, so 10,000 endpoints do not fire in
//! the same millisecond), re-probe after `recheck` while a transition is
//! under way, feed the threshold machine, store verdicts.
//!
//! A probe is bounded by its timeout and is a future of the endpoint's task
//! (awaited beside the task's timers, never in its way), so a slow or hung
//! backend delays nobody else; a global semaphore bounds how many probes
//! run at once.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use prometheus::IntCounter;
use rand::RngExt;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use super::probe::{CheckProber, ProbeResult};
use super::{EndpointCell, EndpointKey, HealthTable, ProbeOutcome, Threshold};
use crate::model::Check;
use crate::throttle::{LogThrottle, suppressed_note};

/// Something that probes one endpoint.
pub trait Probe: Send + Sync + 'static {
    /// Run one probe; it must end within the check's timeout.
    fn probe(&self) -> Pin<Box<dyn Future<Output = ProbeResult> + Send + '_>>;
    /// Resolves when the backend closed the connection kept between probes
    /// (then the next probe runs at once). `None`: this probe keeps no
    /// connection (the default), so there is nothing to watch. Asked once,
    /// unpolled, when the endpoint's task starts: `Some` or `None` must
    /// never change for one probe.
    fn idle_closed(&self) -> Option<Pin<Box<dyn Future<Output = ()> + Send + '_>>> {
        None
    }
}

impl Probe for super::probe::EndpointProber {
    fn probe(&self) -> Pin<Box<dyn Future<Output = ProbeResult> + Send + '_>> {
        Box::pin(super::probe::EndpointProber::probe(self))
    }
    fn idle_closed(&self) -> Option<Pin<Box<dyn Future<Output = ()> + Send + '_>>> {
        self.keeps_connections()
            .then(|| Box::pin(super::probe::EndpointProber::idle_closed(self)) as Pin<Box<_>>)
    }
}

/// Makes the probe of one endpoint (real probers, or fakes in tests).
pub trait ProbeFactory: Send + Sync {
    /// The probe of the endpoint `key` under `check`.
    fn make(&self, check: &Arc<Check>, key: &super::EndpointKey) -> Box<dyn Probe>;
}

/// Real HTTP/HTTPS/TCP probes; one `CheckProber` (TLS settings) per check.
#[derive(Default)]
pub struct RealProbes {
    checks: Mutex<HashMap<Check, Arc<CheckProber>>>,
    source: Option<IpAddr>,
}

impl RealProbes {
    /// Probes that connect from `source` (the `probe-source` setting).
    pub fn with_source(source: Option<IpAddr>) -> Self {
        RealProbes {
            checks: Mutex::default(),
            source,
        }
    }
}

/// A probe that always fails: the check could not be set up (a bad CA file).
struct Broken(String);

impl Probe for Broken {
    fn probe(&self) -> Pin<Box<dyn Future<Output = ProbeResult> + Send + '_>> {
        Box::pin(async move {
            ProbeResult {
                outcome: ProbeOutcome::Protocol,
                reason: self.0.clone(),
                latency: Duration::ZERO,
                certificate_expiry: None,
            }
        })
    }
}

impl ProbeFactory for RealProbes {
    fn make(&self, check: &Arc<Check>, key: &super::EndpointKey) -> Box<dyn Probe> {
        let addr = key.addr;
        let prober = {
            let mut checks = self.checks.lock().expect("probe cache lock poisoned");
            match checks.get(check.as_ref()) {
                Some(p) => Ok(p.clone()),
                None => CheckProber::new(check.clone()).map(|p| {
                    let p = Arc::new(p);
                    checks.insert(check.as_ref().clone(), p.clone());
                    p
                }),
            }
        };
        match prober.and_then(|p| p.for_endpoint_from(addr, self.source)) {
            Ok(ep) => Box::new(ep.in_region(&key.zone, &key.region)),
            Err(e) => {
                tracing::error!(check = %check.name, endpoint = %addr, error = %e, "cannot set up the health check; the endpoint will fail every probe");
                Box::new(Broken(format!("check misconfigured: {e}")))
            }
        }
    }
}

/// What the probe task of one endpoint needs.
pub(super) struct EndpointTask {
    /// Weak: a removed table (tests, shutdown) ends its tasks.
    pub table: Weak<HealthTable>,
    pub key: EndpointKey,
    pub zone_name: String,
    pub cell: Arc<EndpointCell>,
    pub check: Arc<Check>,
    pub permits: Arc<Semaphore>,
    pub region_name: String,
}

/// The probe loop of one endpoint, until its task is aborted (dropping a
/// probe in flight aborts it).
pub(super) async fn run(task: EndpointTask, probe: Box<dyn Probe>) {
    let check = task.check.clone();
    let mut threshold = Threshold::new(task.cell.local_up());
    let ep = task.key.addr.to_string();
    // Latency is per region (an endpoint's last one is in the status API);
    // result counters are per endpoint, `success` from the start and each
    // failure reason from its first occurrence: 10,000 endpoints would
    // otherwise export 270,000 series, 29 MB per scrape.
    let (duration, results_vec, local_errors, expiry_vec) = match task.table.upgrade() {
        Some(t) => (
            t.metrics
                .probe_duration
                .with_label_values(&[&task.key.zone, &task.region_name]),
            t.metrics.probe_results.clone(),
            t.metrics.local_errors.with_label_values(&["probe"]),
            t.metrics.endpoint_cert_expiry.clone(),
        ),
        None => return,
    };
    // Exported once a certificate has been seen. A check with no TLS (a
    // reload may have made it one) shows no certificate of an earlier one.
    let mut expiry_gauge = None;
    let mut certificate = CertificateWatch::default();
    if check.kind.tls().is_none() {
        let _ = expiry_vec.remove_label_values(&[&task.key.zone, &task.region_name, &ep]);
        task.cell.update_detail(|d| {
            d.certificate_expiry = None;
            d.certificate_expiring = false;
        });
    }
    let result_counter = |o: ProbeOutcome| {
        results_vec.with_label_values(&[&task.key.zone, &task.region_name, &ep, o.as_str()])
    };
    let slot_of = |o: ProbeOutcome| {
        ProbeOutcome::ALL
            .iter()
            .position(|x| *x == o)
            .expect("every outcome is listed")
    };
    let mut results: [Option<IntCounter>; ProbeOutcome::ALL.len()] = Default::default();
    results[slot_of(ProbeOutcome::Success)] = Some(result_counter(ProbeOutcome::Success));
    // Spread first probes over the interval.
    let offset =
        rand::rng().random_range(Duration::ZERO..check.interval.max(Duration::from_millis(1)));
    let mut next = Instant::now() + offset;
    tracing::debug!(zone = %task.zone_name, region = %task.region_name, endpoint = %ep, offset = %humantime::format_duration(Duration::from_millis(offset.as_millis() as u64)), "probing every {}", humantime::format_duration(check.interval));
    // Probes are futures of this task. Normally one at a time, `interval`
    // apart (from start to start). While a transition is under way, re-probes
    // start `recheck` apart even if the previous one still waits for its
    // timeout (at most max(fall, rise) at once): a frozen backend is then
    // confirmed in about (fall - 1) x recheck + timeout, not fall x timeout,
    // with the same count of consecutive failures.
    let max_in_flight = check.fall.max(check.rise).max(1) as usize;
    // Polled by this task rather than spawned: a task per probe cost a
    // task allocation, a wake-up through the JoinSet's lock and a second
    // poll for every result. A probe that panics is caught here as it was
    // by its task, and gives no verdict.
    let mut in_flight = InFlight::default();
    // A permit, then the probe. A permit free now (the normal case) is
    // taken here, so the probe's own future is all that is allocated. A
    // probe that panics making its future gives no verdict, as one that
    // panics while polled.
    let launch = || match task.permits.try_acquire() {
        Ok(permit) => Some(Running {
            probe: std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| probe.probe())).ok()?,
            _permit: Some(permit),
        }),
        Err(_) => Some(Running {
            _permit: None,
            probe: Box::pin(async {
                let _permit = task
                    .permits
                    .acquire()
                    .await
                    .expect("probe semaphore never closed");
                probe.probe().await
            }),
        }),
    };
    // Whether the probe keeps a connection to watch between probes.
    let keeps_connection = probe.idle_closed().is_some();
    let mut last_start = Instant::now();
    // The next result is the first of this task (or after a withdrawal):
    // the threshold starts from the verdict in force then.
    let mut first = true;
    // This node's verdict has been told to the cluster (which publishes
    // only verdicts fall/rise decided, never a starting state).
    let mut published = false;
    // Evidence ends when probing does: a node whose probes of this endpoint
    // produce no result (local errors freeze the verdict on purpose, a
    // starved prober) withdraws its vote after a few intervals rather than
    // vote on with what it saw minutes ago.
    let stale_after = check.interval * STALE_INTERVALS + check.timeout;
    let mut last_evidence = Instant::now();
    // Not probing now (`probers`), observation withdrawn.
    let mut withdrawn = false;
    // The probe in flight was started early, by the backend closing the
    // kept connection. One that succeeds means the backend just closes idle
    // connections (a short keep-alive timeout): no early probe for ten
    // intervals then, so such a backend is not probed more often.
    let mut early = false;
    let mut early_quiet_until: Option<Instant> = None;
    // One timer for the task's life, moved rather than made anew on every
    // turn of the loop (each made and dropped timer is a wheel insertion
    // and removal). It points at the next probe or, once that is due and
    // cannot start (probes still in flight, waiting for a permit, or as
    // many rechecks as may run), at the withdrawal of a stale vote; while
    // a vote is published, never later than that withdrawal. A timer of
    // its own for the withdrawal fired every three intervals on every
    // endpoint to find evidence had come since: a task wake-up for nothing
    // per three probes.
    let wake = tokio::time::sleep_until(next);
    tokio::pin!(wake);
    // Watches the kept connection while no probe runs (it holds the
    // connection meanwhile, and gives it back when dropped): made when
    // watching starts, not on every turn of the loop.
    let mut idle = None;
    loop {
        let rechecking = threshold.pending() && check.recheck.is_some();
        let may_launch = in_flight.is_empty() || (rechecking && in_flight.len() < max_in_flight);
        let stale_due = last_evidence + stale_after;
        let mut at = if may_launch || (!rechecking && Instant::now() < next) {
            next
        } else {
            stale_due
        };
        if published {
            at = at.min(stale_due);
        }
        if (may_launch || published) && wake.deadline() != at {
            wake.as_mut().reset(at);
        }
        let watch = keeps_connection
            && in_flight.is_empty()
            && !threshold.pending()
            && !withdrawn
            && early_quiet_until.is_none_or(|t| Instant::now() >= t);
        if !watch {
            idle = None;
        } else if idle.is_none() {
            idle = probe.idle_closed();
        }
        // In this order, and only until one is ready: a result first (it is
        // evidence).
        let result = tokio::select! {
            biased;
            joined = std::future::poll_fn(|cx| in_flight.poll_next(cx)), if !in_flight.is_empty() => match joined {
                Ok(r) => r,
                Err(_) => continue, // a probe that panicked: no verdict
            },
            () = &mut wake, if may_launch || published => {
                let now = Instant::now();
                // No result for too long: the vote goes; a result that
                // comes later must confirm the verdict anew before it
                // counts again.
                if published && now >= stale_due {
                    if let Some(table) = task.table.upgrade() {
                        tracing::warn!(zone = %task.zone_name, region = %task.region_name, endpoint = %ep, "no probe result for {}: this node's vote on the endpoint is withdrawn until its probes decide again", humantime::format_duration(stale_after));
                        table.withdraw(&task.key, &check);
                    }
                    published = false;
                    threshold.undecide();
                    continue;
                }
                if !may_launch || now < next {
                    continue;
                }
                if check.probers.is_some() {
                    let Some(table) = task.table.upgrade() else { return };
                    if !table.should_probe(&task.key, &check) {
                        // Other nodes probe it now; look again next interval.
                        if !withdrawn {
                            // A probe still in flight must not publish
                            // again after the withdrawal.
                            in_flight.clear();
                            table.withdraw(&task.key, &check);
                            withdrawn = true;
                            published = false;
                        }
                        next = Instant::now() + check.interval;
                        continue;
                    }
                    if withdrawn {
                        // Probing again: start from the verdict in force
                        // (the cluster's), not from this node's verdict of
                        // when it stopped.
                        task.cell.set_local_up(task.cell.probed_up());
                        first = true;
                        withdrawn = false;
                        last_evidence = now;
                    }
                }
                last_start = now;
                // The watch gives the kept connection back to the probe.
                idle = None;
                if let Some(running) = launch() {
                    in_flight.push(running);
                }
                next = next_probe(&check, &threshold, last_start);
                continue;
            }
            // The backend closed the kept connection (killed, restarted):
            // probe now instead of an interval later. A success changes
            // nothing; a failure starts the usual fast confirmation, so
            // fall/rise hysteresis is kept.
            () = async { idle.as_mut().expect("enabled only with a watch").await }, if idle.is_some() => {
                idle = None;
                tracing::debug!(zone = %task.zone_name, region = %task.region_name, endpoint = %ep, "kept connection closed by the backend: probing now");
                next = Instant::now();
                early = true;
                continue;
            }
        };
        results[slot_of(result.outcome)]
            .get_or_insert_with(|| result_counter(result.outcome))
            .inc();
        if result.outcome == ProbeOutcome::Local {
            // gslb could not probe (out of descriptors, buffers, ports):
            // nothing is known of the backend, so its verdict and run stay
            // as they are. Counted and logged as gslb's own error; probed
            // again at the usual cadence.
            static LOCAL: LogThrottle = LogThrottle::new(Duration::from_secs(10));
            local_errors.inc();
            if let Some(n) = LOCAL.allow() {
                tracing::error!(zone = %task.zone_name, region = %task.region_name, endpoint = %ep, reason = %result.reason, "probe not run for a local reason; the endpoint's verdict is unchanged{}", suppressed_note(n));
            }
            // Shown, but not a probe: `last_probe` (which readiness reads as
            // "a verdict is known") stays as it was.
            task.cell.update_detail(|d| {
                d.last_outcome = Some(result.outcome);
                d.last_reason = Some(result.reason.clone());
            });
            next = next_probe(&check, &threshold, last_start);
            continue;
        }
        duration.observe(result.latency.as_secs_f64());
        let now = Instant::now();
        last_evidence = now;
        let ok = result.ok();
        if std::mem::take(&mut early) && ok {
            early_quiet_until = Some(now + check.interval * 10);
        }
        if std::mem::take(&mut first) {
            // Start from the verdict in force when the first result comes
            // (restored, or taken from a cluster this node joined).
            threshold = Threshold::new(task.cell.local_up());
        }
        let change = threshold.observe(ok, check.fall, check.rise);
        if let Some(expiry) = result.certificate_expiry {
            let unix = expiry
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            expiry_gauge
                .get_or_insert_with(|| {
                    expiry_vec.with_label_values(&[&task.key.zone, &task.region_name, &ep])
                })
                .set(i64::try_from(unix).unwrap_or(i64::MAX));
            let warn = check.kind.tls().map_or(Duration::ZERO, |t| t.warn_expiry);
            let now = SystemTime::now();
            let left = expiry.duration_since(now).unwrap_or(Duration::ZERO);
            let expires = humantime::format_rfc3339_seconds(expiry);
            match certificate.observe(warn, expiry, now) {
                Some(true) => {
                    tracing::warn!(zone = %task.zone_name, region = %task.region_name, endpoint = %ep, check = %check.name, %expires, "the endpoint's certificate expires in {} (warn-expiry {})", super::probe::rough(left), humantime::format_duration(warn));
                }
                Some(false) => {
                    tracing::info!(zone = %task.zone_name, region = %task.region_name, endpoint = %ep, check = %check.name, %expires, "the endpoint's certificate no longer expires within warn-expiry (renewed)");
                }
                None => {}
            }
        }
        task.cell.update_detail(|d| {
            d.certificate_expiry = result.certificate_expiry.or(d.certificate_expiry);
            d.certificate_expiring = certificate.expiring;
            d.last_outcome = Some(result.outcome);
            if d.last_reason.as_deref() != Some(result.reason.as_str()) {
                d.last_reason = Some(result.reason.clone());
            }
            d.last_latency = Some(result.latency);
            d.last_probe = Some(SystemTime::now());
            d.run = threshold.run();
            d.probes += 1;
            d.failures += u64::from(!ok);
        });
        // A change, or the first verdict that fall/rise stands behind: a
        // starting state (up, restored, the cluster's) is never told.
        if change.is_some() || (!published && threshold.decided()) {
            published = true;
            let Some(table) = task.table.upgrade() else {
                return;
            };
            let up = change.unwrap_or(threshold.is_up());
            let needed = if up { check.rise } else { check.fall };
            table.local_verdict(
                &task.key,
                &check,
                &task.cell,
                up,
                change.map(|_| needed),
                &result.reason,
            );
        } else if !ok || threshold.pending() {
            tracing::debug!(zone = %task.zone_name, region = %task.region_name, endpoint = %ep, reason = %result.reason, run = threshold.run(), "probe result toward a transition");
        }
        next = next_probe(&check, &threshold, last_start);
    }
}

/// A probe under way, holding its permit.
struct Running<'a> {
    // Dropped in this order: the probe (its sockets) before its permit.
    probe: Pin<Box<dyn Future<Output = ProbeResult> + Send + 'a>>,
    _permit: Option<SemaphorePermit<'a>>,
}

/// The probes of one endpoint under way: normally one, up to max(fall,
/// rise) while rechecking. Polled in turn by the endpoint's task with its
/// own waker, so a probe's readiness wakes the task itself: a
/// `FuturesUnordered` allocated a task and went through its own ready
/// queue and waker for every probe (a tenth of a TCP probe's user time).
#[derive(Default)]
struct InFlight<'a> {
    probes: Vec<Running<'a>>,
}

impl<'a> InFlight<'a> {
    fn push(&mut self, probe: Running<'a>) {
        self.probes.push(probe);
    }

    fn len(&self) -> usize {
        self.probes.len()
    }

    fn is_empty(&self) -> bool {
        self.probes.is_empty()
    }

    /// Drops (aborts) every probe under way.
    fn clear(&mut self) {
        self.probes.clear();
    }

    /// The result of a probe that finished (removed), in no order; `Err`
    /// for one that panicked.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<std::thread::Result<ProbeResult>> {
        for i in 0..self.probes.len() {
            let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.probes[i].probe.as_mut().poll(cx)
            }));
            let out = match polled {
                Ok(Poll::Pending) => continue,
                Ok(Poll::Ready(r)) => Ok(r),
                Err(panic) => Err(panic),
            };
            drop(self.probes.swap_remove(i));
            return Poll::Ready(out);
        }
        Poll::Pending
    }
}

/// Whether an endpoint's certificate expires within the check's
/// `warn-expiry`; told once when it enters that window (and again if a
/// renewed certificate leaves it and a later one enters it).
#[derive(Default)]
struct CertificateWatch {
    expiring: bool,
}

impl CertificateWatch {
    /// Takes the certificate seen now: `Some(true)` when it just entered the
    /// window, `Some(false)` when it just left it (renewed).
    fn observe(&mut self, warn: Duration, not_after: SystemTime, now: SystemTime) -> Option<bool> {
        let left = not_after.duration_since(now).unwrap_or(Duration::ZERO);
        let expiring = !warn.is_zero() && left < warn;
        let changed = (expiring != self.expiring).then_some(expiring);
        self.expiring = expiring;
        changed
    }
}

/// A node withdraws its vote on an endpoint after this many intervals (plus
/// a timeout) without a probe result.
pub(super) const STALE_INTERVALS: u32 = 3;

/// When the next probe starts, counted from the last one's start.
fn next_probe(check: &Check, threshold: &Threshold, last_start: Instant) -> Instant {
    match (threshold.pending(), check.recheck) {
        // Fast confirmation: re-probe `recheck` after the last start (at
        // once if that has passed).
        (true, Some(recheck)) => last_start + recheck,
        // Back to the cadence, from the last probe's start.
        _ => last_start + check.interval,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_entering_the_warning_window_is_told_once() {
        let day = Duration::from_secs(86_400);
        let now = SystemTime::UNIX_EPOCH + 20_000 * day;
        let mut w = CertificateWatch::default();
        assert_eq!(w.observe(14 * day, now + 30 * day, now), None);
        assert_eq!(w.observe(14 * day, now + 13 * day, now), Some(true));
        assert!(w.expiring);
        assert_eq!(w.observe(14 * day, now + 12 * day, now), None);
        // Renewed, then close again.
        assert_eq!(w.observe(14 * day, now + 90 * day, now), Some(false));
        assert_eq!(w.observe(14 * day, now - day, now), Some(true));
        // warn-expiry 0: never.
        let mut quiet = CertificateWatch::default();
        assert_eq!(quiet.observe(Duration::ZERO, now - day, now), None);
    }
}
