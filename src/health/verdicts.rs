//! Who decides the effective verdicts, and the one section in which they
//! are decided and stored.
//!
//! Evidence comes from two places: this node's own probes (fall/rise, in
//! the probe tasks) and, in a cluster, the quorum over every live node's
//! votes ([`crate::cluster::arbiter`]). One of them decides at a time:
//! [`DecidedBy::ThisNode`] (no `[cluster]`, or a node in `local` mode) or
//! [`DecidedBy::Cluster`] at an etcd revision. Either writes effective
//! verdicts only through a [`Deciding`], which holds the one lock over who
//! decides: a probe result and a cluster revision never interleave, and
//! the one that does not decide cannot write a cell. The DNS path never
//! takes this lock; it reads the cells' atomics and never knows who
//! decided.

use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};

use super::{
    EndpointCell, EndpointKey, HealthTable, Override, OverrideKey, OverrideNote, RegionCell,
};
use crate::model::Check;

/// Who decides the effective verdicts now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecidedBy {
    /// This node's own probes: alone, or out of the cluster (`local`).
    ThisNode,
    /// The cluster's quorum, as of this etcd revision (`cluster`, and
    /// `stale` until lease-ttl).
    Cluster(i64),
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

/// An effective verdict to store: the endpoint, its cell, the verdict and
/// why.
pub type Decision = (EndpointKey, Arc<EndpointCell>, bool, String);

/// The section in which effective verdicts are decided and stored: held
/// across deciding and storing, so two deciders never interleave.
pub struct Deciding<'a> {
    table: &'a HealthTable,
    by: MutexGuard<'a, DecidedBy>,
}

impl HealthTable {
    /// Enter the decision section (short: never held across an `.await`).
    pub fn deciding(&self) -> Deciding<'_> {
        Deciding {
            table: self,
            by: self.decider.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }

    /// Whether the cluster decides the effective verdicts now.
    pub fn cluster_decides(&self) -> bool {
        self.decided_rev.load(Ordering::Acquire) != 0
    }

    /// The revision transitions are stamped with: the cluster's, while it
    /// decides.
    pub(super) fn stamp(&self) -> Option<i64> {
        let rev = self.decided_rev.load(Ordering::Acquire);
        (rev != 0).then_some(rev)
    }

    /// Tell `observer` of every local verdict from now on (once).
    pub fn set_observer(&self, observer: Arc<dyn Observer>) {
        let _ = self.observer.set(observer);
    }

    /// The one place where a verdict of this node's own probes arrives (the
    /// probe task calls it on a change, `changed` holding the consecutive
    /// results that made it, and once fall/rise first confirms a starting
    /// state). It is always this node's own verdict (kept for `local`
    /// mode), published in a cluster, and the effective one when this node
    /// decides.
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
                let to = super::transitions::word(up);
                tracing::info!(zone = %key.zone, region = %key.region, endpoint = %key.addr, to, reason, consecutive,
                    "this node's probes say endpoint {} of {}/{} is {to}: {reason}", key.addr, key.zone, key.region);
            }
            o.observed(key, check, up, reason);
        }
        if changed.is_some() {
            let d = self.deciding();
            if d.by() == DecidedBy::ThisNode {
                d.set_one(key, cell, up, reason, changed);
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
}

impl Deciding<'_> {
    /// Who decides now.
    pub fn by(&self) -> DecidedBy {
        *self.by
    }

    /// The cluster decides from now on; its state is that of etcd revision
    /// `rev` (stamped on transitions).
    pub fn follow_cluster(&mut self, rev: i64) {
        let rev = rev.max(1);
        *self.by = DecidedBy::Cluster(rev);
        self.table.decided_rev.store(rev, Ordering::Release);
    }

    /// This node's own verdicts decide from now on (etcd unreachable for
    /// longer than the lease TTL): every endpoint takes this node's own
    /// verdict. Only endpoints this node has probed change: one it never
    /// probed (`probers`) keeps the cluster's last verdict rather than a
    /// default.
    pub fn take_own(&mut self, why: &str) {
        *self.by = DecidedBy::ThisNode;
        self.table.decided_rev.store(0, Ordering::Release);
        let changes: Vec<Decision> = self
            .table
            .endpoints()
            .into_iter()
            .filter(|e| e.cell.detail().last_probe.is_some())
            .map(|e| {
                let up = e.cell.local_up();
                (e.key, e.cell, up, why.to_string())
            })
            .collect();
        self.set(&changes);
    }

    /// Set the effective verdict of one endpoint; on a change, the very
    /// next query sees it and the transition is logged, counted and sent
    /// on. Returns whether it changed.
    pub fn set_one(
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
        let t = self.table;
        t.epoch.bump();
        t.transitions
            .endpoint(key, cell, up, consecutive, reason, t.stamp());
        t.endpoint_gauges(&key.zone, &key.region, cell);
        t.reconcile_regions(Some(&key.zone), Some(&key.region), reason, false);
        true
    }

    /// Set several effective verdicts decided together (one etcd revision):
    /// every endpoint first, then each region involved once, so a region
    /// never shows a state that no revision had.
    pub fn set(&self, changes: &[Decision]) {
        let t = self.table;
        let mut regions: Vec<(&str, &str, &str)> = Vec::new();
        for (key, cell, up, reason) in changes {
            if cell.probed_up() == *up {
                continue;
            }
            cell.set_probed_up(*up);
            t.transitions
                .endpoint(key, cell, *up, None, reason, t.stamp());
            t.endpoint_gauges(&key.zone, &key.region, cell);
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
        t.epoch.bump();
        for (zone, region, reason) in regions {
            t.reconcile_regions(Some(zone), Some(region), reason, false);
        }
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
        let t = self.table;
        let cells: Vec<Arc<RegionCell>> = {
            let inner = t.inner.lock().expect("health lock poisoned");
            let mut notes = t.notes.lock().expect("notes lock poisoned");
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
            }
            // Only once every override is in: a region's state may depend
            // on another's (depends-on).
            for cell in inner.regions.values() {
                cell.reset_last_up();
            }
            inner.regions.values().cloned().collect()
        };
        t.set_gauges(&cells);
        t.epoch.bump();
        t.dirty.notify_one();
    }
}
