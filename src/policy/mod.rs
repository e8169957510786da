//! Pure answer selection: (service, health view, rng) -> the regions to
//! answer from. No I/O, no clocks, no locks: the DNS path calls it per query
//! and the unit tests drive it over literal health snapshots.

pub mod geo;

use std::borrow::Cow;
use std::net::IpAddr;

use rand::{Rng, RngExt, SeedableRng};

use crate::model::{Policy, RegionTarget, Service, WhenAllDown};

/// Health as the policy sees it, indexed by `Region::index` within the zone.
pub trait HealthView {
    /// May the region be answered (override, else its endpoints and `min-healthy`)?
    fn region_up(&self, region: usize) -> bool;
    /// Is this endpoint of the region healthy?
    fn endpoint_up(&self, region: usize, endpoint: usize) -> bool;
}

/// What to answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answer from `Selection::picks`.
    Answer,
    /// Every region is down and the service says NODATA.
    NoData,
    /// Every region is down and the service says SERVFAIL.
    ServFail,
}

/// The result of [`select`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// What to answer.
    pub outcome: Outcome,
    /// Positions in `Service::regions` to answer from, in answer order; for
    /// the last-resort region, `Service::regions.len()`.
    pub picks: Vec<usize>,
    /// The answer differs from the one a fully healthy service gives: serve
    /// the degraded TTL.
    pub degraded: bool,
    /// No region was up and the all-down rule chose these regions anyway.
    pub all_down: bool,
}

/// Choose the regions a query for `svc` is answered from, for a client
/// of no known location (geo: the `*` entry; nearest: the service's order).
pub fn select<R: Rng + ?Sized>(svc: &Service, view: &dyn HealthView, rng: &mut R) -> Selection {
    select_at(svc, view, &default_order(svc), rng)
}

/// The region order of a geo or nearest service for a client of no known
/// location (empty for the other policies, which have no order to give).
pub fn default_order(svc: &Service) -> Cow<'_, [usize]> {
    match &svc.policy {
        Policy::Geo(g) => Cow::Borrowed(&g.entries[g.default].order),
        Policy::Nearest(_) => Cow::Owned((0..svc.regions.len()).collect()),
        _ => Cow::Borrowed(&[]),
    }
}

/// [`select`] for a client located by [`geo::locate`]: `order` is its
/// place's region order (ignored by the policies that have none).
pub fn select_at<R: Rng + ?Sized>(
    svc: &Service,
    view: &dyn HealthView,
    order: &[usize],
    rng: &mut R,
) -> Selection {
    let up = |pos: usize| view.region_up(svc.regions[pos].region.index);
    let n = svc.regions.len();
    let (picks, degraded) = match svc.policy {
        Policy::Geo(_) => match order.iter().position(|&p| up(p)) {
            Some(i) => (vec![order[i]], i != 0),
            None => (Vec::new(), true),
        },
        Policy::Nearest(ref np) => {
            let picks: Vec<usize> = order
                .iter()
                .copied()
                .filter(|&p| up(p))
                .take(np.answers)
                .collect();
            let degraded = picks[..] != order[..np.answers.min(order.len())];
            (picks, degraded)
        }
        Policy::Failover => match (0..n).find(|&p| up(p)) {
            Some(p) => (vec![p], p != 0),
            None => (Vec::new(), true),
        },
        Policy::AllHealthy => {
            let picks: Vec<usize> = (0..n).filter(|&p| up(p)).collect();
            let degraded = picks.len() != n;
            (picks, degraded)
        }
        Policy::Weighted { answers } => {
            let weighted: Vec<usize> = (0..n).filter(|&p| svc.regions[p].weight > 0).collect();
            let live: Vec<usize> = weighted.iter().copied().filter(|&p| up(p)).collect();
            let degraded = live.len() != weighted.len();
            if !live.is_empty() {
                (draw_weighted(svc, &live, answers, rng), degraded)
            } else {
                let mut standby: Vec<usize> = (0..n)
                    .filter(|&p| svc.regions[p].weight == 0 && up(p))
                    .collect();
                // Standby regions have no weight to draw by: any of them, uniformly.
                let mut picks = Vec::new();
                while picks.len() < answers && !standby.is_empty() {
                    picks.push(standby.swap_remove(rng.random_range(0..standby.len())));
                }
                (picks, true)
            }
        }
    };
    if !picks.is_empty() {
        let degraded = degraded || picks.iter().any(|&p| partly_down(svc, p, view));
        return Selection {
            outcome: Outcome::Answer,
            picks,
            degraded,
            all_down: false,
        };
    }
    let (outcome, picks) = match &svc.when_all_down {
        WhenAllDown::FailOpen => {
            // As if every region were up: the healthy answer.
            let picks = match svc.policy {
                Policy::Failover => vec![0],
                Policy::Geo(_) => order[..1].to_vec(),
                Policy::Nearest(ref np) => order[..np.answers.min(order.len())].to_vec(),
                Policy::AllHealthy => (0..n).collect(),
                Policy::Weighted { answers } => {
                    let weighted: Vec<usize> =
                        (0..n).filter(|&p| svc.regions[p].weight > 0).collect();
                    draw_weighted(svc, &weighted, answers, rng)
                }
            };
            (Outcome::Answer, picks)
        }
        WhenAllDown::LastResort(_) => (Outcome::Answer, vec![n]),
        WhenAllDown::NoData => (Outcome::NoData, Vec::new()),
        WhenAllDown::ServFail => (Outcome::ServFail, Vec::new()),
    };
    Selection {
        outcome,
        picks,
        degraded: true,
        all_down: true,
    }
}

/// Draw `k` distinct positions from `from`, each with probability proportional
/// to its weight among those not yet drawn.
fn draw_weighted<R: Rng + ?Sized>(
    svc: &Service,
    from: &[usize],
    k: usize,
    rng: &mut R,
) -> Vec<usize> {
    let mut pool: Vec<usize> = from.to_vec();
    let mut picks = Vec::with_capacity(k.min(pool.len()));
    while picks.len() < k && !pool.is_empty() {
        let total: u64 = pool.iter().map(|&p| u64::from(svc.regions[p].weight)).sum();
        if total == 0 {
            break;
        }
        let mut r = rng.random_range(0..total);
        let mut chosen = pool.len() - 1;
        for (i, &p) in pool.iter().enumerate() {
            let w = u64::from(svc.regions[p].weight);
            if r < w {
                chosen = i;
                break;
            }
            r -= w;
        }
        picks.push(pool.swap_remove(chosen));
    }
    picks
}

fn partly_down(svc: &Service, pos: usize, view: &dyn HealthView) -> bool {
    let region = &svc.regions[pos].region;
    (0..region.endpoints().len()).any(|e| !view.endpoint_up(region.index, e))
}

/// What a service answers right now, as (region position, share of
/// answers): the picked region for failover, every up region for
/// all-healthy, each eligible region's weight share for weighted. For the
/// status API and page; the DNS path uses [`select`].
pub fn shares(svc: &Service, view: &dyn HealthView) -> (Vec<(usize, f64)>, Selection) {
    // Seeded: status must not depend on luck, and weighted shares are computed, not drawn.
    let mut rng = rand::rngs::SmallRng::seed_from_u64(0);
    let sel = select(svc, view, &mut rng);
    if sel.outcome != Outcome::Answer {
        return (Vec::new(), sel);
    }
    let out = match svc.policy {
        // Fail-open answers as if every region were up: the same weights
        // over every region, as `select` draws them.
        Policy::Weighted { answers }
            if !sel.all_down || matches!(svc.when_all_down, WhenAllDown::FailOpen) =>
        {
            let n = svc.regions.len();
            let up: Vec<usize> = (0..n)
                .filter(|&p| sel.all_down || view.region_up(svc.regions[p].region.index))
                .collect();
            let weighted: Vec<usize> = up
                .iter()
                .copied()
                .filter(|&p| svc.regions[p].weight > 0)
                .collect();
            let pool = if weighted.is_empty() { up } else { weighted };
            let total: u64 = pool.iter().map(|&p| u64::from(svc.regions[p].weight)).sum();
            pool.iter()
                .map(|&p| {
                    let share = if total == 0 {
                        1.0 / pool.len() as f64
                    } else {
                        f64::from(svc.regions[p].weight) / total as f64
                    };
                    (p, (share * answers as f64).min(1.0))
                })
                .collect()
        }
        _ => sel.picks.iter().map(|&p| (p, 1.0)).collect(),
    };
    (out, sel)
}

/// The region a pick refers to (`picks` may name the last-resort region).
pub fn picked_region(svc: &Service, pick: usize) -> &crate::model::Region {
    match svc.regions.get(pick) {
        Some(r) => &r.region,
        None => match &svc.when_all_down {
            WhenAllDown::LastResort(r) => r,
            _ => &svc.regions[0].region,
        },
    }
}

/// The addresses of one family to answer for a selection: the healthy
/// endpoints of each picked region, or all of them when none is healthy (the
/// region was chosen by the all-down rule or forced up), capped at
/// `max_records` and shuffled for all-healthy. Returns true when the order
/// (or the choice, when capped) was random.
pub fn addresses<R: Rng + ?Sized>(
    svc: &Service,
    sel: &Selection,
    view: &dyn HealthView,
    want_v6: bool,
    rng: &mut R,
    out: &mut Vec<IpAddr>,
) -> bool {
    out.clear();
    for &pick in &sel.picks {
        let region = picked_region(svc, pick);
        let RegionTarget::Endpoints(eps) = &region.target else {
            continue;
        };
        // Only a region with no healthy endpoint at all (of either family) is
        // answered in full: a region whose IPv4 endpoints are up but whose
        // IPv6 ones are down answers AAAA with nothing, not with dead hosts.
        let any_up = (0..eps.len()).any(|i| view.endpoint_up(region.index, i));
        for (i, a) in eps.iter().enumerate() {
            if a.is_ipv6() == want_v6 && (!any_up || view.endpoint_up(region.index, i)) {
                out.push(*a);
            }
        }
    }
    let random =
        out.len() > 1 && (matches!(svc.policy, Policy::AllHealthy) || out.len() > svc.max_records);
    if random {
        shuffle(out, rng);
    }
    out.truncate(svc.max_records);
    random
}

fn shuffle<T, R: Rng + ?Sized>(v: &mut [T], rng: &mut R) {
    for i in (1..v.len()).rev() {
        let j = rng.random_range(0..=i);
        v.swap(i, j);
    }
}

/// Health as literal vectors, for tests: `regions[i]` up?,
/// `endpoints[i][j]` up?
#[cfg(test)]
pub(crate) struct LiteralView {
    pub(crate) regions: Vec<bool>,
    pub(crate) endpoints: Vec<Vec<bool>>,
}

#[cfg(test)]
impl HealthView for LiteralView {
    fn region_up(&self, r: usize) -> bool {
        self.regions[r]
    }
    fn endpoint_up(&self, r: usize, e: usize) -> bool {
        self.endpoints[r][e]
    }
}

#[cfg(test)]
mod tests;
