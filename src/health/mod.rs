//! Health: probes (HTTP, HTTPS, TCP), the fall/rise threshold machine, the
//! per-endpoint scheduler, operator overrides and the state file.
//!
//! Health flows one way: one probe task per checked endpoint turns probe
//! results into this node's verdicts; whoever decides ([`verdicts`]: this
//! node, or the cluster's quorum) stores effective verdicts in the shared
//! cells ([`state`]); readers (DNS, metrics, status) load them and never
//! wait on a probe. The parts, each in its own module:
//! - this module: the registry, endpoints by stable identity (zone,
//!   region, address) with their cells and probe tasks, kept across
//!   reloads, and region reconciliation;
//! - [`verdicts`]: who decides, and the one section where effective
//!   verdicts are decided and stored;
//! - [`transitions`]: logged, counted, journaled, broadcast;
//! - [`overrides`]: operators' drains and their notes;
//! - [`persist`]: the state file, and when it is written.

mod overrides;
pub(crate) mod persist;
pub mod probe;
mod scheduler;
mod state;
mod threshold;
mod transitions;
mod verdicts;

pub use overrides::{
    MAX_COMMENT, OverrideError, OverrideKey, OverrideNote, OverrideTarget, cap_comment,
};
pub use transitions::{JOURNAL_LEN, REGION_EVENTS, Transition};
pub use verdicts::{DecidedBy, Deciding, Decision, Observer};

pub use persist::{SavedRegion, SavedZone, StateFile, fingerprint};
pub use probe::{CheckProber, EndpointProber, ProbeError, ProbeResult};
pub use scheduler::{Probe, ProbeFactory, RealProbes};
pub use state::{
    DependencyCell, DependencyCells, EndpointCell, EndpointDetail, Epoch, Override, ProbeOutcome,
    RegionCell, ZoneHealth,
};
pub use threshold::Threshold;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::{Notify, Semaphore, broadcast};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::model::{Check, Config, Region, RegionTarget, Zone};

/// Probes running at once across all endpoints. Each holds its permit at
/// most one timeout, so a backlog drains within a timeout.
pub const MAX_CONCURRENT_PROBES: usize = 4096;

/// A region whose cell is yet to be made: its zone's and its own position,
/// its zone's label, the region, its endpoint cells.
type PendingRegion = (usize, usize, String, Arc<Region>, Vec<Arc<EndpointCell>>);

/// The order in which to make region cells: each region after the regions
/// it depends on. The loader refused cycles; were there one, its edge back
/// would be left out rather than loop.
fn dependency_order(pending: &[PendingRegion]) -> Vec<usize> {
    let index: HashMap<(&str, &str), usize> = pending
        .iter()
        .enumerate()
        .map(|(i, (_, _, z, r, _))| ((z.as_str(), r.name.as_str()), i))
        .collect();
    let mut state = vec![0u8; pending.len()]; // 0 new, 1 open, 2 done
    let mut order = Vec::with_capacity(pending.len());
    for start in 0..pending.len() {
        if state[start] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        state[start] = 1;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            let deps = pending[node]
                .3
                .depends
                .as_ref()
                .map_or(&[][..], |d| &d.on[..]);
            match deps.get(*next) {
                None => {
                    state[node] = 2;
                    order.push(node);
                    stack.pop();
                }
                Some(d) => {
                    *next += 1;
                    if d.endpoint.is_some() {
                        continue; // endpoint cells exist already
                    }
                    if let Some(&to) = index.get(&(d.zone.as_str(), d.region.as_str()))
                        && state[to] == 0
                    {
                        state[to] = 1;
                        stack.push((to, 0));
                    }
                }
            }
        }
    }
    order
}

/// What an endpoint is: its zone, region and address. Its check is a
/// setting that can change under it: a reload that keeps these three keeps
/// the endpoint's verdict, counters and overrides, and a changed check only
/// restarts the probing (the last verdict stands until the new check's own
/// fall/rise decides).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointKey {
    /// Zone label.
    pub zone: String,
    /// Region name.
    pub region: String,
    /// Address.
    pub addr: IpAddr,
}

struct EndpointEntry {
    cell: Arc<EndpointCell>,
    /// The check it is probed with now (a setting, not part of the key).
    check: Option<Arc<Check>>,
    task: Option<JoinHandle<()>>,
}

/// An endpoint as the cluster indexes it: what it is, how it is probed now,
/// and its cell.
#[derive(Clone)]
pub struct EndpointRef {
    /// Zone, region, address.
    pub key: EndpointKey,
    /// The check it is probed with now.
    pub check: Option<Arc<Check>>,
    /// Its health.
    pub cell: Arc<EndpointCell>,
}

#[derive(Default)]
struct Inner {
    endpoints: HashMap<EndpointKey, EndpointEntry>,
    regions: HashMap<(String, String), Arc<RegionCell>>,
    /// State read from the state file, applied to cells as they are created.
    restored: Option<StateFile>,
    /// Regions with `depends-on`, each after what it depends on: looked at
    /// again on every change, since a change anywhere may move them.
    dependents: Vec<Arc<RegionCell>>,
    /// Overrides of zones not served now (their file gone, or not yet
    /// loaded since a restart): kept, saved, and applied when the zone
    /// comes back, so a drain survives a zone file's absence.
    absent: HashMap<String, StateFile>,
}

/// All health cells and probe tasks, by key: reload reuses the cells (and
/// keeps the tasks) of unchanged endpoints.
pub struct HealthTable {
    // std Mutex: taken to apply a config, record a transition or serve the
    // admin API; never across an `.await`, never by the DNS path.
    inner: Mutex<Inner>,
    transitions: transitions::Transitions,
    /// Bumped on every change of what DNS answers.
    pub epoch: Arc<Epoch>,
    /// Override notes and shadowed cluster overrides.
    notes: Mutex<overrides::Notes>,
    metrics: Metrics,
    probes: Arc<dyn ProbeFactory>,
    permits: Arc<Semaphore>,
    /// Wakes the state-file writer.
    dirty: Arc<Notify>,
    /// Serials gslb gave its zones (persisted so they never go backwards).
    zone_serials: Mutex<Vec<SavedZone>>,
    state_file: Option<PathBuf>,
    /// One state-file write at a time: the debounced writer and
    /// [`HealthTable::persist_now`] share its temporary file.
    writing: tokio::sync::Mutex<()>,
    shutdown: CancellationToken,
    /// The cluster, told of every local verdict.
    observer: OnceLock<Arc<dyn Observer>>,
    /// Who decides the effective verdicts; its lock is the decision
    /// section ([`HealthTable::deciding`]).
    decider: Mutex<DecidedBy>,
    /// The revision in `decider` while the cluster decides, 0 otherwise:
    /// written in the decision section, read without it (transitions'
    /// stamps, status).
    decided_rev: AtomicI64,
    /// Where probe tasks run: a thread of their own, or (tests of this
    /// module, in paused time) the caller's runtime, where only `stop`
    /// (not the shutdown token) ends them.
    prober: Option<ProberThread>,
}

/// The thread every probe task runs on: a current-thread runtime of its own.
///
/// Probing is many small waits on sockets and timers. On the server's
/// multi-threaded runtime each probe woke the other worker (a futex and an
/// eventfd write) and moved tasks between threads: 15% of the prober's CPU
/// in `perf` (bench/probe-scale.sh, 10,000 tcp endpoints). One thread, as
/// gdnsd probes, does none of that, and keeps probing from taking the
/// threads that serve DNS over TCP and the admin API. What blocks or burns
/// CPU in a probe (an exec check's fork) goes to the blocking pool.
struct ProberThread {
    handle: tokio::runtime::Handle,
    /// Ends the thread (and drops its tasks) when the table goes.
    stop: CancellationToken,
}

impl ProberThread {
    fn start(shutdown: &CancellationToken) -> std::io::Result<ProberThread> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("gslb-probe-blocking")
            .build()?;
        let handle = rt.handle().clone();
        let stop = shutdown.child_token();
        let until = stop.clone();
        std::thread::Builder::new()
            .name("gslb-probes".into())
            .spawn(move || rt.block_on(until.cancelled()))?;
        Ok(ProberThread { handle, stop })
    }
}

impl Drop for ProberThread {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl HealthTable {
    /// A table probing with `probes`, persisting to `state_file`.
    pub fn new(
        metrics: Metrics,
        probes: Arc<dyn ProbeFactory>,
        state_file: Option<PathBuf>,
        shutdown: CancellationToken,
    ) -> Self {
        let mut state_file = state_file;
        let restored = state_file.clone().and_then(|p| match StateFile::recover(&p) {
            Ok(persist::Recovered::Absent) => None,
            Ok(persist::Recovered::Read(s)) => Some(s),
            Ok(persist::Recovered::SetAside { state, aside, error }) => {
                let overrides = state
                    .endpoints
                    .iter()
                    .filter(|e| e.overridden != Override::Auto)
                    .count()
                    + state.regions.len();
                tracing::warn!(file = %p.display(), kept_as = %aside.display(), error = %error, overrides,
                    "the state file is unreadable: kept as {}; the {overrides} overrides that still parse are restored, verdicts start afresh", aside.display());
                Some(state)
            }
            Err(e) => {
                // Never write over what we could not read or move.
                tracing::error!(file = %p.display(), error = %e, "the state file is unreadable and stays as it is: no state is saved until it is moved or repaired");
                state_file = None;
                None
            }
        });
        if let (Some(s), Some(p)) = (&restored, &state_file) {
            tracing::info!(file = %p.display(), endpoints = s.endpoints.len(), regions = s.regions.len(), "restoring health state");
        }
        let zone_serials = restored
            .as_ref()
            .map(|s| s.zones.clone())
            .unwrap_or_default();
        HealthTable {
            zone_serials: Mutex::new(zone_serials),
            inner: Mutex::new(Inner {
                restored,
                ..Inner::default()
            }),
            transitions: transitions::Transitions::new(metrics.clone()),
            epoch: Arc::default(),
            notes: Mutex::default(),
            metrics,
            probes,
            permits: Arc::new(Semaphore::new(MAX_CONCURRENT_PROBES)),
            dirty: Arc::default(),
            state_file,
            writing: tokio::sync::Mutex::new(()),
            shutdown,
            observer: OnceLock::new(),
            decider: Mutex::new(DecidedBy::ThisNode),
            decided_rev: AtomicI64::new(0),
            prober: None,
        }
    }

    /// Run the probes on a thread of their own ([`ProberThread`]) rather
    /// than on the runtime that applies the config.
    pub fn probing_on_own_thread(mut self) -> std::io::Result<Self> {
        self.prober = Some(ProberThread::start(&self.shutdown)?);
        Ok(self)
    }

    /// Every endpoint: key, check and cell.
    pub fn endpoints(&self) -> Vec<EndpointRef> {
        self.inner
            .lock()
            .expect("health lock poisoned")
            .endpoints
            .iter()
            .map(|(k, e)| EndpointRef {
                key: k.clone(),
                check: e.check.clone(),
                cell: e.cell.clone(),
            })
            .collect()
    }

    /// Subscribe to transitions.
    pub fn subscribe(&self) -> broadcast::Receiver<Transition> {
        self.transitions.subscribe()
    }

    /// Subscribe to region transitions alone.
    pub fn subscribe_regions(&self) -> broadcast::Receiver<Transition> {
        self.transitions.subscribe_regions()
    }

    /// The last transitions, oldest first.
    pub fn journal(&self) -> Vec<Transition> {
        self.transitions.journal()
    }

    /// Make cells for every zone of `config`, reusing existing ones; start
    /// probes for new checked endpoints and stop those of removed ones.
    /// Must run inside the tokio runtime (it spawns the probe tasks).
    pub fn apply(self: &Arc<Self>, config: &Config) -> Vec<Arc<ZoneHealth>> {
        let mut inner = self.inner.lock().expect("health lock poisoned");
        let mut seen_eps: HashMap<EndpointKey, ()> = HashMap::new();
        let mut seen_regions: HashMap<(String, String), ()> = HashMap::new();
        // Endpoints whose check was removed: unchecked means up.
        let mut unchecked: Vec<(EndpointKey, Arc<EndpointCell>)> = Vec::new();
        // Endpoint cells first, region by region; region cells after, each
        // after those it depends on (its cell holds theirs).
        let mut pending: Vec<PendingRegion> = Vec::new();
        for (zi, zone) in config.zones.iter().enumerate() {
            let zname = zone.label();
            for (ri, region) in zone.regions.values().enumerate() {
                let mut endpoints = Vec::new();
                for addr in health_targets(region) {
                    let key = EndpointKey {
                        zone: zname.clone(),
                        region: region.name.clone(),
                        addr,
                    };
                    seen_eps.insert(key.clone(), ());
                    let cell = match inner.endpoints.get_mut(&key) {
                        Some(e) if e.check.as_deref() == region.check.as_deref() => e.cell.clone(),
                        Some(e) => {
                            // The check changed: the endpoint stays what it
                            // is (verdict, counters, overrides); only its
                            // probing restarts with the new settings.
                            if let Some(task) = e.task.take() {
                                task.abort();
                            }
                            let cell = e.cell.clone();
                            e.check = region.check.clone();
                            e.task = region
                                .check
                                .as_ref()
                                .map(|check| self.spawn_probe(zone, region, check, &key, &cell));
                            if region.check.is_none() {
                                unchecked.push((key.clone(), cell.clone()));
                            }
                            cell
                        }
                        None => {
                            let cell = Arc::new(self.new_cell(&mut inner, &key));
                            let task = region
                                .check
                                .as_ref()
                                .map(|check| self.spawn_probe(zone, region, check, &key, &cell));
                            inner.endpoints.insert(
                                key.clone(),
                                EndpointEntry {
                                    cell: cell.clone(),
                                    check: region.check.clone(),
                                    task,
                                },
                            );
                            cell
                        }
                    };
                    endpoints.push(cell);
                }
                seen_regions.insert((zname.clone(), region.name.clone()), ());
                pending.push((zi, ri, zname.clone(), region.clone(), endpoints));
            }
        }
        let mut built: HashMap<(String, String), Arc<RegionCell>> =
            HashMap::with_capacity(pending.len());
        let mut zone_cells: Vec<Vec<Option<Arc<RegionCell>>>> = config
            .zones
            .iter()
            .map(|z| vec![None; z.regions.len()])
            .collect();
        let mut dependents = Vec::new();
        for i in dependency_order(&pending) {
            let (zi, ri, zname, region, endpoints) = &pending[i];
            let depends = region.depends.as_ref().map(|d| DependencyCells {
                needed: d.needed,
                on: d
                    .on
                    .iter()
                    .map(|dep| {
                        let cell = match dep.endpoint {
                            None => built
                                .get(&(dep.zone.clone(), dep.region.clone()))
                                .map(|c| DependencyCell::Region(c.clone())),
                            Some(addr) => inner
                                .endpoints
                                .get(&EndpointKey {
                                    zone: dep.zone.clone(),
                                    region: dep.region.clone(),
                                    addr,
                                })
                                .map(|e| DependencyCell::Endpoint(e.cell.clone())),
                        };
                        // The loader checked that every dependency exists;
                        // were one missing it would count as down, never as up.
                        let cell = cell.unwrap_or_else(|| {
                            DependencyCell::Endpoint(Arc::new(EndpointCell::new(
                                std::net::Ipv4Addr::UNSPECIFIED.into(),
                                false,
                            )))
                        });
                        (dep.written.clone(), cell)
                    })
                    .collect(),
            });
            let cell = self.region_cell(&mut inner, zname, region, endpoints.clone(), depends);
            if cell.depends.is_some() {
                dependents.push(cell.clone());
            }
            built.insert((zname.clone(), region.name.clone()), cell.clone());
            zone_cells[*zi][*ri] = Some(cell);
        }
        inner.dependents = dependents;
        let out: Vec<Arc<ZoneHealth>> = zone_cells
            .into_iter()
            .map(|cells| {
                Arc::new(ZoneHealth {
                    regions: cells
                        .into_iter()
                        .map(|c| c.expect("every region has a cell"))
                        .collect(),
                })
            })
            .collect();
        // Zones no longer served keep their overrides (see `absent`).
        let served: std::collections::HashSet<String> =
            config.zones.iter().map(|z| z.label()).collect();
        let mut gone_overrides: HashMap<String, StateFile> = HashMap::new();
        for ((zone, region), cell) in &inner.regions {
            if served.contains(zone) {
                continue;
            }
            let kept = gone_overrides.entry(zone.clone()).or_default();
            if cell.override_state() != Override::Auto {
                kept.regions.push(persist::SavedRegion {
                    zone: zone.clone(),
                    region: region.clone(),
                    overridden: cell.override_state(),
                    note: self
                        .note(&(zone.clone(), region.clone(), None))
                        .unwrap_or_default(),
                });
            }
            for e in &cell.endpoints {
                if e.override_state() != Override::Auto {
                    kept.endpoints.push(persist::SavedEndpoint {
                        zone: zone.clone(),
                        region: region.clone(),
                        addr: e.addr,
                        check: 0,
                        up: None,
                        overridden: e.override_state(),
                        since_ms: 0,
                        note: self
                            .note(&(zone.clone(), region.clone(), Some(e.addr)))
                            .unwrap_or_default(),
                    });
                }
            }
        }
        gone_overrides.retain(|_, k| !k.regions.is_empty() || !k.endpoints.is_empty());
        // Stop what is gone, and drop its metric series.
        let gone: Vec<EndpointKey> = inner
            .endpoints
            .keys()
            .filter(|k| !seen_eps.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(entry) = inner.endpoints.remove(&key) {
                if let Some(task) = entry.task {
                    task.abort();
                }
                let ep = key.addr.to_string();
                let _ =
                    self.metrics
                        .endpoint_up
                        .remove_label_values(&[&key.zone, &key.region, &ep]);
                for vec in [
                    &self.metrics.endpoint_override,
                    &self.metrics.endpoint_cert_expiry,
                ] {
                    let _ = vec.remove_label_values(&[&key.zone, &key.region, &ep]);
                }
                for o in ProbeOutcome::ALL {
                    let _ = self.metrics.probe_results.remove_label_values(&[
                        &key.zone,
                        &key.region,
                        &ep,
                        o.as_str(),
                    ]);
                }
            }
        }
        let gone: Vec<(String, String)> = inner
            .regions
            .keys()
            .filter(|k| !seen_regions.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            inner.regions.remove(&key);
            let _ = self
                .metrics
                .region_up
                .remove_label_values(&[&key.0, &key.1]);
            let _ = self
                .metrics
                .region_override
                .remove_label_values(&[&key.0, &key.1]);
            let _ = self
                .metrics
                .probe_duration
                .remove_label_values(&[&key.0, &key.1]);
            for to in ["up", "down"] {
                let _ = self
                    .metrics
                    .transitions
                    .remove_label_values(&[&key.0, &key.1, "", to]);
            }
        }
        // The overrides of zones served again have been applied; those of
        // zones no longer served are kept for their return.
        inner.absent.retain(|z, _| !served.contains(z));
        if let Some(restored) = inner.restored.take() {
            // Restored state applies to the first load only; the overrides
            // of zones that this load does not serve wait for them.
            for e in restored.endpoints {
                if e.overridden != Override::Auto && !served.contains(&e.zone) {
                    let mut e = e;
                    e.up = None;
                    inner
                        .absent
                        .entry(e.zone.clone())
                        .or_default()
                        .endpoints
                        .push(e);
                }
            }
            for r in restored.regions {
                if !served.contains(&r.zone) {
                    inner
                        .absent
                        .entry(r.zone.clone())
                        .or_default()
                        .regions
                        .push(r);
                }
            }
        }
        for (zone, kept) in gone_overrides {
            let slot = inner.absent.entry(zone).or_default();
            slot.endpoints.extend(kept.endpoints);
            slot.regions.extend(kept.regions);
        }
        drop(inner);
        for (key, cell) in unchecked {
            cell.set_local_up(true);
            self.deciding()
                .set_one(&key, &cell, true, "check removed: always up", None);
        }
        // A config change (min-healthy, endpoints) may flip a region.
        self.reconcile_regions(None, None, "configuration changed", true);
        out
    }

    /// The cell of `region`: the one it has when its endpoints, min-healthy
    /// and dependencies are the same cells, else a new one that takes over
    /// the old one's override and known state (or the restored ones).
    fn region_cell(
        &self,
        inner: &mut Inner,
        zname: &str,
        region: &Region,
        endpoints: Vec<Arc<EndpointCell>>,
        depends: Option<DependencyCells>,
    ) -> Arc<RegionCell> {
        let rkey = (zname.to_string(), region.name.clone());
        let cell = match inner.regions.get(&rkey) {
            Some(old)
                if old.endpoints.len() == endpoints.len()
                    && old
                        .endpoints
                        .iter()
                        .zip(&endpoints)
                        .all(|(a, b)| Arc::ptr_eq(a, b))
                    && old.min_healthy == region.min_healthy
                    && match (&old.depends, &depends) {
                        (None, None) => true,
                        (Some(a), Some(b)) => a.same(b),
                        _ => false,
                    } =>
            {
                old.clone()
            }
            old => {
                let cell = RegionCell::new(
                    zname.to_string(),
                    region.name.clone(),
                    endpoints,
                    region.min_healthy,
                    depends,
                );
                // Region transitions exist at 0 from the start, so
                // increase() sees the first one.
                for to in ["up", "down"] {
                    self.metrics
                        .transitions
                        .with_label_values(&[zname, &region.name, "", to]);
                }
                match old {
                    Some(old) => cell.inherit(old),
                    None => {
                        let restored = inner
                            .restored
                            .as_ref()
                            .and_then(|s| s.region_override(zname, &region.name))
                            .or_else(|| {
                                inner
                                    .absent
                                    .get(zname)
                                    .and_then(|s| s.region_override(zname, &region.name))
                            });
                        if let Some((o, note)) = restored {
                            cell.set_override(o);
                            self.notes
                                .lock()
                                .expect("notes lock poisoned")
                                .notes
                                .insert((zname.to_string(), region.name.clone(), None), note);
                        }
                        cell.reset_last_up();
                    }
                }
                Arc::new(cell)
            }
        };
        inner.regions.insert(rkey, cell.clone());
        cell
    }

    fn new_cell(&self, inner: &mut Inner, key: &EndpointKey) -> EndpointCell {
        let restored = inner
            .restored
            .as_ref()
            .and_then(|s| s.endpoint(key))
            .or_else(|| inner.absent.get(&key.zone).and_then(|s| s.endpoint(key)));
        let cell = EndpointCell::new(key.addr, true);
        if let Some(saved) = restored {
            // A restart resumes the last verdict (whatever the check is now)
            // and the override, so a healthy region does not flap.
            if let Some(up) = saved.up {
                cell.set_probed_up(up);
                cell.set_local_up(up);
            }
            cell.set_override(saved.overridden);
            if saved.overridden != Override::Auto {
                self.notes
                    .lock()
                    .expect("notes lock poisoned")
                    .notes
                    .insert(
                        (key.zone.clone(), key.region.clone(), Some(key.addr)),
                        saved.note.clone(),
                    );
            }
            cell.update_detail(|d| d.since = Some(saved.since()));
            cell.set_restored();
        }
        cell
    }

    fn spawn_probe(
        self: &Arc<Self>,
        zone: &Zone,
        region: &Region,
        check: &Arc<Check>,
        key: &EndpointKey,
        cell: &Arc<EndpointCell>,
    ) -> JoinHandle<()> {
        let probe = self.probes.make(check, key);
        let ctx = scheduler::EndpointTask {
            table: Arc::downgrade(self),
            key: key.clone(),
            zone_name: zone.name.to_string(),
            cell: cell.clone(),
            check: check.clone(),
            permits: self.permits.clone(),
            region_name: region.name.clone(),
        };
        // Stopped by aborting it (reload, removal, `stop`), or with the
        // prober thread's runtime at shutdown (without a prober thread, as
        // in some tests, only by `stop`): a cancellation token polled at
        // every turn of its loop cost two lock round trips a turn.
        let run = scheduler::run(ctx, probe);
        match &self.prober {
            Some(p) => p.handle.spawn(run),
            None => tokio::spawn(run),
        }
    }

    /// Re-derive region states after an endpoint or override change; log,
    /// count and journal each region that flipped. The gauges of the
    /// regions looked at are set, and those of their endpoints too unless
    /// `endpoint_gauges` is false (a verdict's change: the caller sets the
    /// changed endpoints' own, so a transition sets no other endpoint's
    /// gauges, whatever the size of its region).
    pub(super) fn reconcile_regions(
        &self,
        zone: Option<&str>,
        region: Option<&str>,
        reason: &str,
        endpoint_gauges: bool,
    ) {
        let cells: Vec<Arc<RegionCell>> = {
            let inner = self.inner.lock().expect("health lock poisoned");
            // The regions asked about, then every region with depends-on,
            // each after what it depends on: a change anywhere may move them.
            let mut cells: Vec<Arc<RegionCell>> = inner
                .regions
                .iter()
                .filter(|((z, r), c)| {
                    c.depends.is_none()
                        && zone.is_none_or(|want| want == z)
                        && region.is_none_or(|want| want == r)
                })
                .map(|(_, c)| c.clone())
                .collect();
            cells.extend(inner.dependents.iter().cloned());
            cells
        };
        for cell in &cells {
            if let Some(up) = cell.reconcile() {
                self.transitions.region(cell, up, reason, self.stamp());
            }
        }
        // Only the gauges of the regions looked at (and, when asked, of
        // their endpoints): refreshing every series on every transition
        // made a failure storm across 10,000 endpoints quadratic
        // (probe-scale benchmark).
        if endpoint_gauges {
            self.set_gauges(&cells);
        } else {
            for cell in &cells {
                self.region_gauges(cell);
            }
        }
        self.epoch.bump();
        self.dirty.notify_one();
    }

    /// Set the gauges of these regions and their endpoints.
    pub(super) fn set_gauges(&self, cells: &[Arc<RegionCell>]) {
        for cell in cells {
            self.region_gauges(cell);
            for e in &cell.endpoints {
                self.endpoint_gauges(&cell.zone, &cell.name, e);
            }
        }
    }

    /// Set a region's gauges.
    fn region_gauges(&self, cell: &RegionCell) {
        let [up, overridden] = cell.gauges(|| {
            let labels = [cell.zone.as_str(), cell.name.as_str()];
            [
                self.metrics.region_up.with_label_values(&labels),
                self.metrics.region_override.with_label_values(&labels),
            ]
        });
        up.set(i64::from(cell.is_up()));
        overridden.set(cell.override_state().gauge());
    }

    /// Set the gauges of endpoint `e` of `zone`/`region`.
    pub(super) fn endpoint_gauges(&self, zone: &str, region: &str, e: &EndpointCell) {
        let [up, overridden] = e.gauges(|| {
            let ep = e.addr.to_string();
            let labels = [zone, region, ep.as_str()];
            [
                self.metrics.endpoint_up.with_label_values(&labels),
                self.metrics.endpoint_override.with_label_values(&labels),
            ]
        });
        up.set(i64::from(e.is_up()));
        overridden.set(e.override_state().gauge());
    }

    /// Set every health gauge from the cells (at scrape time and reload).
    pub fn refresh_gauges(&self) {
        let cells: Vec<Arc<RegionCell>> = self
            .inner
            .lock()
            .expect("health lock poisoned")
            .regions
            .values()
            .cloned()
            .collect();
        self.set_gauges(&cells);
    }

    /// Every region cell and endpoint cell, for status.
    pub fn regions(&self) -> Vec<Arc<RegionCell>> {
        self.inner
            .lock()
            .expect("health lock poisoned")
            .regions
            .values()
            .cloned()
            .collect()
    }

    /// True once every checked endpoint has finished at least one probe (or
    /// had its state restored from the state file).
    pub fn first_verdicts_known(&self) -> bool {
        let inner = self.inner.lock().expect("health lock poisoned");
        inner
            .endpoints
            .values()
            .all(|e| e.check.is_none() || e.cell.detail().last_probe.is_some() || e.cell.restored())
    }

    /// Stop every probe task and wait for them.
    pub async fn stop(&self) {
        let tasks: Vec<JoinHandle<()>> = {
            let mut inner = self.inner.lock().expect("health lock poisoned");
            inner
                .endpoints
                .values_mut()
                .filter_map(|e| e.task.take())
                .inspect(JoinHandle::abort)
                .collect()
        };
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// The addresses probed for a region: its endpoints, or for a cname region
/// with a check, the check's target.
pub fn health_targets(region: &Region) -> Vec<IpAddr> {
    match (&region.target, &region.check) {
        (RegionTarget::Endpoints(e), _) => e.clone(),
        (RegionTarget::Alias(_), Some(c)) => c.target.map(|t| vec![t.ip()]).unwrap_or_default(),
        (RegionTarget::Alias(_), None) => Vec::new(),
    }
}

#[cfg(test)]
mod tests;
