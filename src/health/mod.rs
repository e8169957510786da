//! Health: probes (HTTP, HTTPS, TCP), the fall/rise threshold machine, the
//! per-endpoint scheduler, operator overrides and the state file.
//!
//! Health flows one way: one probe task per checked endpoint stores verdicts
//! in the shared cells ([`state`]) and readers (DNS, metrics, status) load
//! them; no reader ever waits on a probe. Transitions are logged as one
//! structured event each, counted, journaled for the status API and
//! broadcast (webhooks, live page).

pub(crate) mod persist;
pub mod probe;
mod scheduler;
mod state;
mod threshold;

pub use persist::{SavedZone, StateFile, fingerprint};
pub use probe::{CheckProber, EndpointProber, ProbeError, ProbeResult};
pub use scheduler::{Probe, ProbeFactory, RealProbes};
pub use state::{
    EndpointCell, EndpointDetail, Epoch, Override, ProbeOutcome, RegionCell, ZoneHealth,
};
pub use threshold::Threshold;

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore, broadcast};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::model::{Check, Config, Region, RegionTarget, Zone};

/// Transitions kept for the status API.
pub const JOURNAL_LEN: usize = 256;
/// Region transitions the webhook dispatcher may fall behind by before it
/// loses one (it claims each in etcd, in a cluster).
pub const REGION_EVENTS: usize = 65_536;
/// Probes running at once across all endpoints. Each holds its permit at
/// most one timeout, so a backlog drains within a timeout.
pub const MAX_CONCURRENT_PROBES: usize = 4096;

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

/// One state change, as logged, journaled and sent to webhooks.
#[derive(Clone, Debug, Serialize)]
pub struct Transition {
    /// When.
    #[serde(with = "persist::unix_millis")]
    pub time: SystemTime,
    /// Zone label.
    pub zone: String,
    /// Region name.
    pub region: String,
    /// The endpoint, or `None` for a region transition.
    pub endpoint: Option<IpAddr>,
    /// Previous state: "up" or "down".
    pub from: &'static str,
    /// New state.
    pub to: &'static str,
    /// Why: the deciding probe's reason, or the override.
    pub reason: String,
    /// In a cluster, the etcd revision of the shared state that decided it:
    /// every node computes the same transition at the same revision, which
    /// is how one node alone sends its webhook. `None` when this node
    /// decided alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_rev: Option<i64>,
    /// For an endpoint decided by this node's probes: the consecutive
    /// results that decided it (`fall` or `rise`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive: Option<u32>,
}

/// Who is told of this node's own verdicts: the cluster, which publishes
/// them and decides the effective verdicts from every node's.
pub trait Observer: Send + Sync {
    /// This node's probes decided `up` for `key` under `check` (a change,
    /// or a verdict confirmed by fall/rise after a start: never a starting
    /// state).
    fn observed(&self, key: &EndpointKey, check: &Check, up: bool, reason: &str);
    /// Whether this node probes `key` now (a check with `probers = K`
    /// is probed by K of the live nodes).
    fn should_probe(&self, key: &EndpointKey, check: &Check) -> bool;
    /// This node stopped probing `key` under `check` (hand-off, or its
    /// probing stalled): its observation is withdrawn.
    fn withdraw(&self, key: &EndpointKey, check: &Check);
}

fn word(up: bool) -> &'static str {
    if up { "up" } else { "down" }
}

struct EndpointEntry {
    cell: Arc<EndpointCell>,
    /// The check it is probed with now (a setting, not part of the key).
    check: Option<Arc<Check>>,
    task: Option<(CancellationToken, JoinHandle<()>)>,
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
    journal: Mutex<VecDeque<Transition>>,
    /// Every transition (the live page).
    events: broadcast::Sender<Transition>,
    /// Region transitions alone, for webhooks: a storm of endpoint
    /// transitions (thousands of endpoints failing at once) cannot push a
    /// region transition out of this one.
    region_events: broadcast::Sender<Transition>,
    /// Bumped on every change of what DNS answers.
    pub epoch: Arc<Epoch>,
    /// Override notes and shadowed cluster overrides.
    notes: Mutex<Notes>,
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
    /// See [`HealthTable::verdict_guard`].
    verdicts: Mutex<()>,
    /// Non-zero while the cluster decides effective verdicts: the etcd
    /// revision they reflect. Zero: this node's own probes decide.
    cluster_rev: AtomicI64,
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
            journal: Mutex::new(VecDeque::with_capacity(JOURNAL_LEN)),
            events: broadcast::channel(1024).0,
            region_events: broadcast::channel(REGION_EVENTS).0,
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
            verdicts: Mutex::new(()),
            cluster_rev: AtomicI64::new(0),
        }
    }

    /// Tell `observer` of every local verdict from now on (once).
    pub fn set_observer(&self, observer: Arc<dyn Observer>) {
        let _ = self.observer.set(observer);
    }

    /// Whether the cluster decides the effective verdicts now.
    pub fn cluster_decides(&self) -> bool {
        self.cluster_rev.load(Ordering::Acquire) != 0
    }

    /// The cluster decides from now on; its state is that of etcd revision
    /// `rev` (recorded in transitions).
    pub fn set_cluster_rev(&self, rev: i64) {
        self.cluster_rev.store(rev.max(1), Ordering::Release);
    }

    /// The one place where a verdict of this node's own probes arrives (the
    /// probe task calls it on a change, `changed` holding the consecutive
    /// results that made it, and once fall/rise first confirms a starting
    /// state). Alone, the local verdict is the effective one; in a cluster
    /// it is published and the cluster decides.
    pub(crate) fn local_verdict(
        &self,
        key: &EndpointKey,
        check: &Check,
        cell: &EndpointCell,
        up: bool,
        changed: Option<u32>,
        reason: &str,
    ) {
        cell.set_local_up(up);
        if let Some(o) = self.observer.get() {
            if let Some(consecutive) = changed {
                let to = word(up);
                tracing::info!(zone = %key.zone, region = %key.region, endpoint = %key.addr, to, reason, consecutive,
                    "this node's probes say endpoint {} of {}/{} is {to}: {reason}", key.addr, key.zone, key.region);
            }
            o.observed(key, check, up, reason);
        }
        if changed.is_some() {
            let _one = self.verdict_guard();
            if !self.cluster_decides() {
                self.set_effective(key, cell, up, reason, changed);
            }
        }
    }

    /// Whether this node probes `key` now: always alone, and in a cluster
    /// unless the check's `probers` picks other nodes.
    pub(crate) fn should_probe(&self, key: &EndpointKey, check: &Check) -> bool {
        match self.observer.get() {
            Some(o) if check.probers.is_some() => o.should_probe(key, check),
            _ => true,
        }
    }

    /// This node stopped probing `key` under `check`.
    pub(crate) fn withdraw(&self, key: &EndpointKey, check: &Check) {
        if let Some(o) = self.observer.get() {
            o.withdraw(key, check);
        }
    }

    /// Set the effective verdict of an endpoint; on a change, the very next
    /// query sees it and the transition is logged, counted and sent on.
    /// Returns whether it changed.
    pub fn set_effective(
        &self,
        key: &EndpointKey,
        cell: &EndpointCell,
        up: bool,
        reason: &str,
        consecutive: Option<u32>,
    ) -> bool {
        if cell.probed_up() == up {
            return false;
        }
        // Store first, then bump the epoch so every worker drops its
        // cached answers: the very next DNS query sees the new verdict.
        cell.set_probed_up(up);
        self.epoch.bump();
        self.endpoint_transition(key, cell, up, consecutive, reason);
        self.reconcile_regions(Some(&key.zone), Some(&key.region), reason);
        true
    }

    /// Set several effective verdicts decided together (one etcd revision):
    /// every endpoint first, then each region involved once, so a region
    /// never shows a state that no revision had.
    pub fn set_effective_batch(&self, changes: &[(EndpointKey, Arc<EndpointCell>, bool, String)]) {
        let mut regions: Vec<(&str, &str, &str)> = Vec::new();
        for (key, cell, up, reason) in changes {
            if cell.probed_up() == *up {
                continue;
            }
            cell.set_probed_up(*up);
            self.endpoint_transition(key, cell, *up, None, reason);
            match regions
                .iter_mut()
                .find(|(z, r, _)| *z == key.zone && *r == key.region)
            {
                Some(slot) => slot.2 = reason,
                None => regions.push((&key.zone, &key.region, reason)),
            }
        }
        if regions.is_empty() {
            return;
        }
        self.epoch.bump();
        for (zone, region, reason) in regions {
            self.reconcile_regions(Some(zone), Some(region), reason);
        }
    }

    /// Held by whoever decides effective verdicts (this node's probes while
    /// alone, the cluster otherwise) across deciding and storing, so two
    /// deciders never interleave.
    pub fn verdict_guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.verdicts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stop following the cluster: every endpoint takes this node's own
    /// verdict (etcd unreachable for longer than the lease TTL).
    /// Only endpoints this node has probed change: one it never probed
    /// (`probers`) keeps the cluster's last verdict rather than a default.
    pub fn use_local_verdicts(&self, why: &str) {
        let _one = self.verdict_guard();
        self.cluster_rev.store(0, Ordering::Release);
        let changes: Vec<_> = self
            .endpoints()
            .into_iter()
            .filter(|e| e.cell.detail().last_probe.is_some())
            .map(|e| {
                let up = e.cell.local_up();
                (e.key, e.cell, up, why.to_string())
            })
            .collect();
        self.set_effective_batch(&changes);
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

    /// Take verdicts and overrides from a cluster that this node joins,
    /// without transitions: a node that starts answers what the others
    /// answer from its first query. `verdict` gives an endpoint's effective
    /// state (`None`: keep its own), `override_of` the override of a region
    /// (`None` endpoint) or endpoint.
    pub fn seed(
        &self,
        verdict: impl Fn(&EndpointKey) -> Option<bool>,
        override_of: impl Fn(&OverrideKey) -> (Override, OverrideNote),
    ) {
        let cells: Vec<Arc<RegionCell>> = {
            let inner = self.inner.lock().expect("health lock poisoned");
            let mut notes = self.notes.lock().expect("notes lock poisoned");
            // The cluster's override goes in force, or under this node's
            // local one (restored from the state file), which stays.
            let mut take = |key: OverrideKey, set: &dyn Fn(Override)| {
                let (o, note) = override_of(&key);
                if notes.notes.get(&key).is_some_and(|n| n.local) {
                    if o != Override::Auto {
                        notes.shadowed.insert(key, (o, note));
                    }
                    return;
                }
                set(o);
                if o == Override::Auto {
                    notes.notes.remove(&key);
                } else {
                    notes.notes.insert(key, note);
                }
            };
            for (key, e) in &inner.endpoints {
                if let Some(up) = verdict(key) {
                    e.cell.set_probed_up(up);
                    e.cell.set_local_up(up);
                    e.cell.set_restored();
                }
                take(
                    (key.zone.clone(), key.region.clone(), Some(key.addr)),
                    &|o| e.cell.set_override(o),
                );
            }
            for ((zone, region), cell) in &inner.regions {
                take((zone.clone(), region.clone(), None), &|o| {
                    cell.set_override(o)
                });
                cell.reset_last_up();
            }
            inner.regions.values().cloned().collect()
        };
        self.set_gauges(&cells);
        self.epoch.bump();
        self.dirty.notify_one();
    }

    /// Subscribe to transitions.
    pub fn subscribe(&self) -> broadcast::Receiver<Transition> {
        self.events.subscribe()
    }

    /// Subscribe to region transitions alone.
    pub fn subscribe_regions(&self) -> broadcast::Receiver<Transition> {
        self.region_events.subscribe()
    }

    /// The last transitions, oldest first.
    pub fn journal(&self) -> Vec<Transition> {
        self.journal
            .lock()
            .expect("journal lock poisoned")
            .iter()
            .cloned()
            .collect()
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
        let mut out = Vec::with_capacity(config.zones.len());
        for zone in &config.zones {
            let zname = zone.label();
            let mut regions = Vec::with_capacity(zone.regions.len());
            for region in zone.regions.values() {
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
                            if let Some((cancel, _task)) = e.task.take() {
                                cancel.cancel();
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
                let rkey = (zname.clone(), region.name.clone());
                seen_regions.insert(rkey.clone(), ());
                let cell = match inner.regions.get(&rkey) {
                    Some(old)
                        if old.endpoints.len() == endpoints.len()
                            && old
                                .endpoints
                                .iter()
                                .zip(&endpoints)
                                .all(|(a, b)| Arc::ptr_eq(a, b))
                            && old.min_healthy == region.min_healthy =>
                    {
                        old.clone()
                    }
                    old => {
                        let cell = RegionCell::new(
                            zname.clone(),
                            region.name.clone(),
                            endpoints,
                            region.min_healthy,
                        );
                        // Region transitions exist at 0 from the start, so
                        // increase() sees the first one.
                        for to in ["up", "down"] {
                            self.metrics.transitions.with_label_values(&[
                                &zname,
                                &region.name,
                                "",
                                to,
                            ]);
                        }
                        match old {
                            Some(old) => cell.inherit(old),
                            None => {
                                let restored = inner
                                    .restored
                                    .as_ref()
                                    .and_then(|s| s.region_override(&zname, &region.name))
                                    .or_else(|| {
                                        inner
                                            .absent
                                            .get(&zname)
                                            .and_then(|s| s.region_override(&zname, &region.name))
                                    });
                                if let Some((o, note)) = restored {
                                    cell.set_override(o);
                                    self.notes
                                        .lock()
                                        .expect("notes lock poisoned")
                                        .notes
                                        .insert((zname.clone(), region.name.clone(), None), note);
                                }
                                cell.reset_last_up();
                            }
                        }
                        Arc::new(cell)
                    }
                };
                inner.regions.insert(rkey, cell.clone());
                regions.push(cell);
            }
            out.push(Arc::new(ZoneHealth { regions }));
        }
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
                if let Some((cancel, _task)) = entry.task {
                    cancel.cancel();
                }
                let ep = key.addr.to_string();
                let _ =
                    self.metrics
                        .endpoint_up
                        .remove_label_values(&[&key.zone, &key.region, &ep]);
                let _ = self.metrics.endpoint_override.remove_label_values(&[
                    &key.zone,
                    &key.region,
                    &ep,
                ]);
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
            let _one = self.verdict_guard();
            self.set_effective(&key, &cell, true, "check removed: always up", None);
        }
        // A config change (min-healthy, endpoints) may flip a region.
        self.reconcile_regions(None, None, "configuration changed");
        out
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
    ) -> (CancellationToken, JoinHandle<()>) {
        let cancel = self.shutdown.child_token();
        let probe = self.probes.make(check, key.addr);
        let ctx = scheduler::EndpointTask {
            table: Arc::downgrade(self),
            key: key.clone(),
            zone_name: zone.name.to_string(),
            cell: cell.clone(),
            check: check.clone(),
            permits: self.permits.clone(),
            region_name: region.name.clone(),
        };
        let handle = tokio::spawn(scheduler::run(ctx, probe, cancel.clone()));
        (cancel, handle)
    }

    /// Called by a probe task when its endpoint's verdict changed.
    fn endpoint_transition(
        &self,
        key: &EndpointKey,
        cell: &EndpointCell,
        up: bool,
        consecutive: Option<u32>,
        reason: &str,
    ) {
        let from = word(!up);
        let to = word(up);
        // A failure is a warning; a recovery is good news (INFO).
        if up {
            tracing::info!(
                zone = %key.zone, region = %key.region, endpoint = %key.addr, from, to, reason, consecutive,
                "endpoint {} of {}/{} is {to}: {reason}", key.addr, key.zone, key.region
            );
        } else {
            tracing::warn!(
                zone = %key.zone, region = %key.region, endpoint = %key.addr, from, to, reason, consecutive,
                "endpoint {} of {}/{} is {to}: {reason}", key.addr, key.zone, key.region
            );
        }
        cell.update_detail(|d| d.since = Some(SystemTime::now()));
        self.metrics
            .transitions
            .with_label_values(&[&key.zone, &key.region, &key.addr.to_string(), to])
            .inc();
        self.record(Transition {
            time: SystemTime::now(),
            zone: key.zone.clone(),
            region: key.region.clone(),
            endpoint: Some(key.addr),
            from,
            to,
            reason: reason.to_string(),
            cluster_rev: None,
            consecutive,
        });
    }

    /// Re-derive region states after an endpoint or override change; log,
    /// count and journal each region that flipped.
    fn reconcile_regions(&self, zone: Option<&str>, region: Option<&str>, reason: &str) {
        let cells: Vec<Arc<RegionCell>> = {
            let inner = self.inner.lock().expect("health lock poisoned");
            inner
                .regions
                .iter()
                .filter(|((z, r), _)| {
                    zone.is_none_or(|want| want == z) && region.is_none_or(|want| want == r)
                })
                .map(|(_, c)| c.clone())
                .collect()
        };
        for cell in &cells {
            if let Some(up) = cell.reconcile() {
                let healthy = cell.endpoints.iter().filter(|e| e.is_up()).count();
                let why = match cell.override_state() {
                    Override::Auto => format!(
                        "{healthy} of {} endpoints up (min-healthy {}); {reason}",
                        cell.endpoints.len(),
                        cell.min_healthy
                    ),
                    o => format!("override {}", o.as_str()),
                };
                let (from, to) = (word(!up), word(up));
                if up {
                    tracing::info!(zone = %cell.zone, region = %cell.name, from, to, reason = %why, "region {}/{} is {to}: {why}", cell.zone, cell.name);
                } else {
                    tracing::warn!(zone = %cell.zone, region = %cell.name, from, to, reason = %why, "region {}/{} is {to}: {why}", cell.zone, cell.name);
                }
                self.metrics
                    .transitions
                    .with_label_values(&[&cell.zone, &cell.name, "", to])
                    .inc();
                self.record(Transition {
                    time: SystemTime::now(),
                    zone: cell.zone.clone(),
                    region: cell.name.clone(),
                    endpoint: None,
                    from,
                    to,
                    reason: why,
                    cluster_rev: None,
                    consecutive: None,
                });
            }
        }
        // Only the gauges of the regions looked at (and their endpoints):
        // refreshing every series on every transition made a failure storm
        // across 10,000 endpoints quadratic (probe-scale benchmark).
        self.set_gauges(&cells);
        self.epoch.bump();
        self.dirty.notify_one();
    }

    fn record(&self, mut t: Transition) {
        let rev = self.cluster_rev.load(Ordering::Acquire);
        t.cluster_rev = (rev != 0).then_some(rev);
        {
            let mut j = self.journal.lock().expect("journal lock poisoned");
            if j.len() == JOURNAL_LEN {
                j.pop_front();
            }
            j.push_back(t.clone());
        }
        // No receivers is fine.
        if t.endpoint.is_none() {
            let _ = self.region_events.send(t.clone());
        }
        let _ = self.events.send(t);
    }

    /// Set the gauges of these regions and their endpoints.
    fn set_gauges(&self, cells: &[Arc<RegionCell>]) {
        for cell in cells {
            let (zone, region) = (cell.zone.as_str(), cell.name.as_str());
            self.metrics
                .region_up
                .with_label_values(&[zone, region])
                .set(i64::from(cell.is_up()));
            self.metrics
                .region_override
                .with_label_values(&[zone, region])
                .set(cell.override_state().gauge());
            for e in &cell.endpoints {
                let ep = e.addr.to_string();
                self.metrics
                    .endpoint_up
                    .with_label_values(&[zone, region, ep.as_str()])
                    .set(i64::from(e.is_up()));
                self.metrics
                    .endpoint_override
                    .with_label_values(&[zone, region, ep.as_str()])
                    .set(e.override_state().gauge());
            }
        }
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

    /// Set an override on a region, or on one of its endpoints. `zone` may
    /// be omitted when only one zone has a region of that name.
    pub fn set_override(
        &self,
        zone: Option<&str>,
        region: &str,
        endpoint: Option<IpAddr>,
        o: Override,
    ) -> Result<OverrideTarget, OverrideError> {
        let target = self.resolve_override(zone, region, endpoint, o)?;
        self.apply_override(&target);
        Ok(target)
    }

    /// Find what an override would apply to, without applying it.
    pub fn resolve_override(
        &self,
        zone: Option<&str>,
        region: &str,
        endpoint: Option<IpAddr>,
        o: Override,
    ) -> Result<OverrideTarget, OverrideError> {
        let inner = self.inner.lock().expect("health lock poisoned");
        let zone = zone.map(|z| z.trim_end_matches('.').to_ascii_lowercase());
        let matches: Vec<&(String, String)> = inner
            .regions
            .keys()
            .filter(|(z, r)| r == region && zone.as_deref().is_none_or(|want| want == z))
            .collect();
        let (zname, rname) = match matches.as_slice() {
            [one] => (*one).clone(),
            [] => {
                return Err(match zone {
                    // Name what is missing: the zone, or the region in it.
                    Some(z) if !inner.regions.keys().any(|(have, _)| *have == z) => {
                        OverrideError::UnknownZone(z)
                    }
                    Some(z) => OverrideError::NoRegionInZone(region.to_string(), z),
                    None => OverrideError::UnknownRegion(region.to_string()),
                });
            }
            many => {
                let mut zones: Vec<String> = many.iter().map(|(z, _)| z.clone()).collect();
                zones.sort();
                return Err(OverrideError::Ambiguous(region.to_string(), zones));
            }
        };
        if let Some(addr) = endpoint {
            let cell = &inner.regions[&(zname.clone(), rname.clone())];
            if !cell.endpoints.iter().any(|e| e.addr == addr) {
                return Err(OverrideError::UnknownEndpoint(addr, rname, zname));
            }
        }
        Ok(OverrideTarget {
            zone: zname,
            region: rname,
            endpoint,
            state: o,
            note: OverrideNote::default(),
        })
    }

    /// Apply an override to the region or endpoint it names, if that exists
    /// and differs from the one in force. Returns whether anything changed.
    ///
    /// Two layers: the shared one (this node's alone, or the cluster's from
    /// etcd) and, in a cluster, a local one (`note.local`, an operator's
    /// emergency override on this node) that hides the shared one until it
    /// ends; the shared override under it is kept and comes back then.
    pub fn apply_override(&self, target: &OverrideTarget) -> bool {
        let key = target.key();
        // Before the notes lock: lock order is inner, then notes.
        let in_force = self.override_in_force(&key);
        // One section decides the layer and records the note in force, so
        // two overrides of one key never interleave between the two.
        let (state, note) = {
            let mut n = self.notes.lock().expect("notes lock poisoned");
            let local_in_force = n.notes.get(&key).is_some_and(|x| x.local);
            let (state, note) = match (target.note.local, local_in_force) {
                // The cluster's override under a local one: kept for later.
                (false, true) => {
                    if target.state == Override::Auto {
                        n.shadowed.remove(&key);
                    } else {
                        n.shadowed.insert(key, (target.state, target.note.clone()));
                    }
                    return false;
                }
                // A local one ends: the cluster's comes back.
                (true, _) if target.state == Override::Auto => match n.shadowed.remove(&key) {
                    Some((o, note)) => (o, note),
                    None => (Override::Auto, OverrideNote::default()),
                },
                // A local one over the shared one in force: keep that.
                (true, false) => {
                    let shared = in_force;
                    if shared != Override::Auto {
                        let note = n.notes.get(&key).cloned().unwrap_or_default();
                        n.shadowed.insert(key.clone(), (shared, note));
                    }
                    (target.state, target.note.clone())
                }
                _ => (target.state, target.note.clone()),
            };
            if state == Override::Auto {
                n.notes.remove(&key);
            } else {
                n.notes.insert(key.clone(), note.clone());
            }
            (state, note)
        };
        let changed = {
            let inner = self.inner.lock().expect("health lock poisoned");
            let Some(cell) = inner
                .regions
                .get(&(target.zone.clone(), target.region.clone()))
            else {
                return false;
            };
            match target.endpoint {
                None => {
                    let changed = cell.override_state() != state;
                    cell.set_override(state);
                    changed
                }
                Some(addr) => match cell.endpoints.iter().find(|e| e.addr == addr) {
                    Some(ep) => {
                        let changed = ep.override_state() != state;
                        ep.set_override(state);
                        changed
                    }
                    None => false,
                },
            }
        };
        self.metrics
            .local_overrides
            .set(self.local_override_count() as i64);
        self.dirty.notify_one();
        if !changed {
            return false;
        }
        // Drop cached answers now, before logging and reconciling.
        self.epoch.bump();
        tracing::info!(zone = %target.zone, region = %target.region, endpoint = ?target.endpoint, state = state.as_str(),
            local = note.local, comment = note.comment.as_deref().unwrap_or(""), expires_ms = note.expires_ms.unwrap_or(0), "override set");
        self.reconcile_regions(
            Some(&target.zone),
            Some(&target.region),
            &format!("override {}", state.as_str()),
        );
        true
    }

    /// The override a cell holds now.
    fn override_in_force(&self, key: &OverrideKey) -> Override {
        let inner = self.inner.lock().expect("health lock poisoned");
        let Some(cell) = inner.regions.get(&(key.0.clone(), key.1.clone())) else {
            return Override::Auto;
        };
        match key.2 {
            None => cell.override_state(),
            Some(a) => cell
                .endpoints
                .iter()
                .find(|e| e.addr == a)
                .map_or(Override::Auto, |e| e.override_state()),
        }
    }

    fn local_override_count(&self) -> usize {
        self.notes
            .lock()
            .expect("notes lock poisoned")
            .notes
            .values()
            .filter(|n| n.local)
            .count()
    }

    /// The note of the override in force on `key`.
    pub fn note(&self, key: &OverrideKey) -> Option<OverrideNote> {
        self.notes
            .lock()
            .expect("notes lock poisoned")
            .notes
            .get(key)
            .cloned()
    }

    /// End the overrides whose expiry has passed (`now_ms`, unix ms): the
    /// local ones always, the shared ones when `shared_too` (alone; in a
    /// cluster etcd ends them, at one revision for every node). Returns
    /// what ended.
    pub fn expire_overrides(&self, now_ms: u64, shared_too: bool) -> Vec<OverrideKey> {
        let due: Vec<(OverrideKey, bool)> = {
            let n = self.notes.lock().expect("notes lock poisoned");
            n.notes
                .iter()
                .filter(|(_, note)| note.expires_ms.is_some_and(|t| t <= now_ms))
                .filter(|(_, note)| note.local || shared_too)
                .map(|(k, note)| (k.clone(), note.local))
                .collect()
        };
        for (key, local) in &due {
            tracing::info!(zone = %key.0, region = %key.1, endpoint = ?key.2, local, "override expired");
            self.apply_override(&OverrideTarget {
                zone: key.0.clone(),
                region: key.1.clone(),
                endpoint: key.2,
                state: Override::Auto,
                note: OverrideNote {
                    local: *local,
                    ..OverrideNote::default()
                },
            });
        }
        due.into_iter().map(|(k, _)| k).collect()
    }

    /// Every override in force: (zone, region, endpoint), its state and
    /// note.
    pub fn overrides(&self) -> Vec<OverrideTarget> {
        let notes = self
            .notes
            .lock()
            .expect("notes lock poisoned")
            .notes
            .clone();
        let inner = self.inner.lock().expect("health lock poisoned");
        let mut out = Vec::new();
        for ((zone, region), cell) in &inner.regions {
            let mut push = |endpoint, state| {
                if state != Override::Auto {
                    let note = notes
                        .get(&(zone.clone(), region.clone(), endpoint))
                        .cloned()
                        .unwrap_or_default();
                    out.push(OverrideTarget {
                        zone: zone.clone(),
                        region: region.clone(),
                        endpoint,
                        state,
                        note,
                    });
                }
            };
            push(None, cell.override_state());
            for e in &cell.endpoints {
                push(Some(e.addr), e.override_state());
            }
        }
        out
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

    /// The current state in state-file form.
    pub fn state(&self) -> StateFile {
        let inner = self.inner.lock().expect("health lock poisoned");
        let mut state = StateFile::capture(
            inner
                .endpoints
                .iter()
                .map(|(k, e)| (k, e.check.as_deref(), &e.cell)),
            inner.regions.values(),
        );
        for kept in inner.absent.values() {
            state.endpoints.extend(kept.endpoints.iter().cloned());
            state.regions.extend(kept.regions.iter().cloned());
        }
        drop(inner);
        let notes = self.notes.lock().expect("notes lock poisoned");
        for e in state.endpoints.iter_mut() {
            if let Some(n) = notes
                .notes
                .get(&(e.zone.clone(), e.region.clone(), Some(e.addr)))
            {
                e.note = n.clone();
            }
        }
        for r in state.regions.iter_mut() {
            if let Some(n) = notes.notes.get(&(r.zone.clone(), r.region.clone(), None)) {
                r.note = n.clone();
            }
        }
        drop(notes);
        state.zones = self.zone_serials();
        state
    }

    /// The serials last given to zones (restored from the state file at start).
    pub fn zone_serials(&self) -> Vec<SavedZone> {
        self.zone_serials
            .lock()
            .expect("serial lock poisoned")
            .clone()
    }

    /// Remember the serials given to zones, and persist them.
    pub fn set_zone_serials(&self, serials: Vec<SavedZone>) {
        *self.zone_serials.lock().expect("serial lock poisoned") = serials;
        self.dirty.notify_one();
    }

    /// End expired overrides every second (see
    /// [`HealthTable::expire_overrides`]) until shutdown.
    pub async fn expiry_loop(self: Arc<Self>, shared_too: bool) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.shutdown.cancelled() => return,
            }
            self.expire_overrides(crate::model::unix_ms(SystemTime::now()), shared_too);
        }
    }

    /// Write the state file whenever health changes (debounced), and once
    /// more at shutdown. Returns when `shutdown` is cancelled.
    pub async fn persist_loop(self: Arc<Self>) {
        let Some(path) = self.state_file.clone() else {
            return;
        };
        loop {
            tokio::select! {
                () = self.dirty.notified() => {}
                () = self.shutdown.cancelled() => break,
            }
            // Let a burst of changes settle into one write.
            tokio::select! {
                () = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
                () = self.shutdown.cancelled() => break,
            }
            let _ = self.write_state(&path).await;
        }
        let _ = self.write_state(&path).await;
    }

    /// Write the state file now, for a change an operator must know is
    /// saved (an override): `Ok(true)` once written, `Ok(false)` when there
    /// is no state file, `Err` saying why it could not be written.
    pub async fn persist_now(&self) -> Result<bool, String> {
        let Some(path) = self.state_file.clone() else {
            return Ok(false);
        };
        self.write_state(&path).await.map(|()| true)
    }

    async fn write_state(&self, path: &std::path::Path) -> Result<(), String> {
        let _one = self.writing.lock().await;
        let state = self.state();
        let path = path.to_path_buf();
        let res =
            tokio::task::spawn_blocking(move || state.write(&path).map_err(|e| (path, e))).await;
        match res {
            Ok(Ok(())) => Ok(()),
            Ok(Err((path, e))) => {
                // A full or read-only disk fails every write: one line a minute.
                static FAILED: crate::throttle::LogThrottle =
                    crate::throttle::LogThrottle::new(std::time::Duration::from_secs(60));
                if let Some(n) = FAILED.allow() {
                    tracing::warn!(file = %path.display(), error = %e, "cannot write the state file{}", crate::throttle::suppressed_note(n));
                }
                Err(format!(
                    "cannot write the state file {}: {e}",
                    path.display()
                ))
            }
            Err(e) => Err(format!("the state file writer failed: {e}")),
        }
    }

    /// Stop every probe task and wait for them.
    pub async fn stop(&self) {
        let tasks: Vec<JoinHandle<()>> = {
            let mut inner = self.inner.lock().expect("health lock poisoned");
            inner
                .endpoints
                .values_mut()
                .filter_map(|e| e.task.take())
                .map(|(cancel, task)| {
                    cancel.cancel();
                    task
                })
                .collect()
        };
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// What an override was applied to.
#[derive(Clone, Debug, Default, Serialize)]
pub struct OverrideTarget {
    /// Zone label.
    pub zone: String,
    /// Region.
    pub region: String,
    /// Endpoint, when one endpoint was overridden.
    pub endpoint: Option<IpAddr>,
    /// The override now in force.
    pub state: Override,
    /// Why, until when, and whether it is this node's alone.
    #[serde(flatten)]
    pub note: OverrideNote,
}

impl OverrideTarget {
    /// (zone, region, endpoint): what the override is on.
    pub fn key(&self) -> OverrideKey {
        (self.zone.clone(), self.region.clone(), self.endpoint)
    }
}

/// What an override applies to: (zone, region, endpoint).
pub type OverrideKey = (String, String, Option<IpAddr>);

/// What goes with an override besides its state, as Route 53 ARC's zonal
/// shifts do: every one can expire and say why.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverrideNote {
    /// Why (the operator's words), at most [`MAX_COMMENT`] characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Unix milliseconds when it ends by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
    /// In a cluster: on this node alone (`--local`), not stored in etcd.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub local: bool,
}

/// Longest override comment kept.
pub const MAX_COMMENT: usize = 256;

/// Cut a comment to [`MAX_COMMENT`] characters.
pub fn cap_comment(c: &mut String) {
    if let Some((i, _)) = c.char_indices().nth(MAX_COMMENT) {
        c.truncate(i);
    }
}

/// The notes of the overrides in force, and the cluster's override that a
/// local one hides (std Mutex: short sections, never across `.await`).
#[derive(Default)]
struct Notes {
    /// The note of the override in force, where there is one.
    notes: HashMap<OverrideKey, OverrideNote>,
    /// The cluster's override under a local one, in force again when the
    /// local one ends.
    shadowed: HashMap<OverrideKey, (Override, OverrideNote)>,
}

/// Why an override could not be set.
#[derive(Clone, Debug, thiserror::Error)]
pub enum OverrideError {
    /// No zone was named and no zone has a region of that name.
    #[error("no region named {0:?} in any zone")]
    UnknownRegion(String),
    /// The zone named is not served.
    #[error("no zone named {0:?}")]
    UnknownZone(String),
    /// The zone named has no region of that name.
    #[error("zone {1:?} has no region named {0:?}")]
    NoRegionInZone(String, String),
    /// Several zones have a region of that name.
    #[error("region {name:?} exists in several zones ({zones}); name the zone", name = .0, zones = .1.join(", "))]
    Ambiguous(String, Vec<String>),
    /// No such endpoint in the region (region, zone).
    #[error("region {1:?} of zone {2:?} has no endpoint {0}")]
    UnknownEndpoint(IpAddr, String, String),
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
