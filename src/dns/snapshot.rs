//! What the DNS path reads: one immutable [`Snapshot`] of every served zone
//! with its health cells and counters, swapped whole on reload.

use std::collections::HashMap;
use std::sync::Arc;

use hickory_proto::rr::LowerName;

use crate::health::ZoneHealth;
use crate::metrics::{AnswerCounter, DnsMetrics, ZoneCounters};
use crate::model::Zone;
use crate::policy;

/// One served zone with its health cells.
pub struct ServedZone {
    /// Static data, services and regions.
    pub zone: Arc<Zone>,
    /// Health of its regions, indexed by `Region::index`.
    pub health: Arc<ZoneHealth>,
    /// Query counters of the zone.
    pub counters: Arc<ZoneCounters>,
    /// Answer counters by service index, location (see
    /// `policy::geo::Place::loc`; 0 for services without locations), then
    /// pick position; `None` where a location never answers from a region.
    pub answer_counters: Vec<Vec<Vec<Option<Arc<AnswerCounter>>>>>,
    /// Versions of the zone as transferred, for a zone with `[transfer]`:
    /// its answers carry their serial.
    pub journal: Option<Arc<super::journal::Journal>>,
}

impl ServedZone {
    /// Serve `zone` with these health cells, counting into `metrics`.
    pub fn new(zone: Arc<Zone>, health: Arc<ZoneHealth>, metrics: &DnsMetrics) -> Self {
        let zname = zone.label();
        let answer_counters = zone
            .services
            .iter()
            .map(|svc| {
                // One per pick position: the service's regions, then the
                // last-resort region (see `policy::Selection::picks`).
                let n = svc.regions.len();
                let last_resort =
                    matches!(svc.when_all_down, crate::model::WhenAllDown::LastResort(_));
                let locations = policy::geo::locations(svc);
                locations
                    .iter()
                    .enumerate()
                    .map(|(loc, location)| {
                        // A geo location answers only from its own list.
                        let order = match &svc.policy {
                            crate::model::Policy::Geo(g) => Some(&g.entries[loc].order),
                            _ => None,
                        };
                        (0..=n)
                            .map(|p| {
                                let reachable = if p == n {
                                    last_resort
                                } else {
                                    order.is_none_or(|o| o.contains(&p))
                                };
                                reachable.then(|| {
                                    metrics.answer(
                                        &zname,
                                        &svc.key,
                                        &policy::picked_region(svc, p).name,
                                        location,
                                    )
                                })
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect();
        ServedZone {
            journal: None,
            counters: metrics.zone(&zname),
            zone,
            health,
            answer_counters,
        }
    }
}

impl ServedZone {
    /// Count an answer of service `svc` at location `loc` from these picks.
    pub(super) fn count_answer(&self, svc: usize, loc: usize, picks: &[usize]) {
        if let Some(per) = self.answer_counters[svc].get(loc) {
            for &p in picks {
                if let Some(Some(c)) = per.get(p) {
                    c.inc();
                }
            }
        }
    }
}

/// Everything the DNS path reads: swapped whole on reload.
#[derive(Default)]
pub struct Snapshot {
    zones: HashMap<LowerName, Arc<ServedZone>>,
    /// Unique per snapshot built: answer caches tell snapshots apart by it.
    pub(super) serial: u64,
    /// Fewest and most labels of any apex, to bound the zone search.
    min_labels: usize,
    max_labels: usize,
}

impl Snapshot {
    /// A snapshot serving these zones.
    pub fn new(zones: Vec<ServedZone>) -> Self {
        let min_labels = zones
            .iter()
            .map(|z| labels(&z.zone.apex))
            .min()
            .unwrap_or(0);
        let max_labels = zones
            .iter()
            .map(|z| labels(&z.zone.apex))
            .max()
            .unwrap_or(0);
        static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let serial = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Snapshot {
            serial,
            zones: zones
                .into_iter()
                .map(|z| (z.zone.apex.clone(), Arc::new(z)))
                .collect(),
            min_labels,
            max_labels,
        }
    }

    /// The zones served.
    pub fn zones(&self) -> impl Iterator<Item = &ServedZone> {
        self.zones.values().map(|z| z.as_ref())
    }

    /// The deepest zone containing `name`.
    pub fn find_zone(&self, name: &LowerName) -> Option<&Arc<ServedZone>> {
        let mut n = name.clone();
        loop {
            let count = labels(&n);
            if count < self.min_labels {
                return None;
            }
            if count <= self.max_labels
                && let Some(z) = self.zones.get(&n)
            {
                return Some(z);
            }
            if n.is_root() {
                return None;
            }
            n = n.base_name();
        }
    }
}

/// How many labels `name` has, a leading `*` included. hickory's
/// `num_labels` leaves a leading `*` out (RFC 4035's count for RRSIGs), which
/// would take the literal name `*.apex` for the apex itself; every name
/// comparison by depth in the DNS path uses this count instead.
pub(super) fn labels(name: &LowerName) -> usize {
    name.iter().len()
}
