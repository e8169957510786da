//! Operator overrides (drain, force-up, undrain) of regions and endpoints,
//! and what goes with them: a comment, an expiry, and in a cluster a local
//! layer (`--local`) over the shared one.
//!
//! An override is evidence of another kind: an operator's word. It never
//! changes a verdict; it changes what a region or endpoint counts as
//! (`RegionCell::is_up`), and the same region reconciliation as a verdict
//! follows it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::{HealthTable, Override};

impl HealthTable {
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
        let mut before = Override::Auto;
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
                    before = cell.override_state();
                    cell.set_override(state);
                    before != state
                }
                Some(addr) => match cell.endpoints.iter().find(|e| e.addr == addr) {
                    Some(ep) => {
                        before = ep.override_state();
                        ep.set_override(state);
                        before != state
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
        // Fields are plain values (no `Some(..)`): an empty endpoint is the
        // whole region, an empty `by` an override from the state file or
        // one another node lifted.
        let endpoint = target.endpoint.map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(zone = %target.zone, region = %target.region, %endpoint, state = state.as_str(), was = before.as_str(),
            by = note.by.as_deref().unwrap_or(""), local = note.local, comment = note.comment.as_deref().unwrap_or(""),
            expires_ms = note.expires_ms.unwrap_or(0), "override {} -> {} on {}{}", before.as_str(), state.as_str(),
            if endpoint.is_empty() { format!("region {}", target.region) } else { format!("endpoint {endpoint} of region {}", target.region) },
            note.by.as_deref().map(|b| format!(" by {b}")).unwrap_or_default());
        self.reconcile_regions(
            Some(&target.zone),
            Some(&target.region),
            &format!("override {}", state.as_str()),
            true,
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
            let endpoint = key.2.map(|a| a.to_string()).unwrap_or_default();
            tracing::info!(zone = %key.0, region = %key.1, %endpoint, local, "override expired");
            self.apply_override(&OverrideTarget {
                zone: key.0.clone(),
                region: key.1.clone(),
                endpoint: key.2,
                state: Override::Auto,
                note: OverrideNote {
                    local: *local,
                    by: Some("expiry".into()),
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
    /// Who asked: how (`cli`, `api`) and from which address, as the admin
    /// API saw the request. Logged, kept in the state file and in etcd, and
    /// shown in the status API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
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
pub(super) struct Notes {
    /// The note of the override in force, where there is one.
    pub(super) notes: HashMap<OverrideKey, OverrideNote>,
    /// The cluster's override under a local one, in force again when the
    /// local one ends.
    pub(super) shadowed: HashMap<OverrideKey, (Override, OverrideNote)>,
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
