//! `GET /api/v1/status`: every zone, service, region and endpoint with its
//! state, and the last transitions. Built from the served snapshot and the
//! health cells on request; nothing here is on the DNS path.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use std::sync::Arc;

use crate::cluster::Cluster;
use crate::dns::Engine;
use crate::health::HealthTable;
use crate::health::{Override, ProbeOutcome, Transition};
use crate::model::{RegionTarget, unix_ms};
use crate::policy::{self, HealthView, Outcome};

/// The whole status document.
#[derive(Serialize, Debug)]
pub struct Status {
    /// gslb version.
    pub version: &'static str,
    /// Every checked endpoint has a verdict.
    pub ready: bool,
    /// Unix milliseconds when this document was made.
    pub now_ms: u64,
    /// Zones served.
    pub zones: Vec<ZoneStatus>,
    /// The last transitions, oldest first.
    pub transitions: Vec<Transition>,
    /// The cluster, when this node is part of one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::cluster::ClusterStatus>,
}

/// One zone.
#[derive(Serialize, Debug)]
pub struct ZoneStatus {
    /// Zone name (no trailing dot).
    pub name: String,
    /// File it was loaded from.
    pub file: String,
    /// SOA serial.
    pub serial: u32,
    /// Static records.
    pub records: usize,
    /// Services.
    pub services: Vec<ServiceStatus>,
    /// Regions.
    pub regions: Vec<RegionStatus>,
    /// Transfers to secondaries, for a zone with `[transfer]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer: Option<TransferStatus>,
    /// Signing, for a zone with `[dnssec]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dnssec: Option<DnssecStatus>,
}

/// A signed zone: its keys (tags and times, never key material), the next
/// key event, the earliest expiry of a signature it may serve.
#[derive(Serialize, Debug)]
pub struct DnssecStatus {
    /// `signature-validity`, seconds.
    pub signature_validity_s: u32,
    /// The earliest expiration of a signature served now (unix ms).
    pub earliest_signature_expiry_ms: u64,
    /// The next time a key changes state, unix ms, and what happens then.
    pub next_key_event: Option<KeyEventStatus>,
    /// Every key of the zone in its folder.
    pub keys: Vec<KeyStatus>,
    /// Since the zone was last loaded: signatures made for a query (what
    /// signing ahead did not foresee: denials, wildcards, partial
    /// regions), signatures made ahead, RRsets whose signatures came from
    /// the cache.
    pub signatures_made: u64,
    /// Signatures made ahead of the queries.
    pub signatures_made_ahead: u64,
    /// RRsets served with cached signatures.
    pub rrsets_from_cache: u64,
}

/// The next key event.
#[derive(Serialize, Debug)]
pub struct KeyEventStatus {
    /// When (unix ms).
    pub at_ms: u64,
    /// What happens to which key, e.g. "key 12345 becomes active".
    pub what: String,
}

/// One key of a signed zone.
#[derive(Serialize, Debug)]
pub struct KeyStatus {
    /// Key tag.
    pub tag: u16,
    /// Algorithm number.
    pub algorithm: u8,
    /// "CSK", "KSK" or "ZSK".
    pub role: &'static str,
    /// "future", "published", "active", "retired" or "removed".
    pub state: &'static str,
    /// Timing metadata, unix ms (absent when unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_ms: Option<u64>,
    /// Signs from then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activate_ms: Option<u64>,
    /// Signs no more from then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inactive_ms: Option<u64>,
    /// Out of the DNSKEY set from then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete_ms: Option<u64>,
}

impl DnssecStatus {
    /// The status of `signer` at `now` (unix seconds).
    pub fn of(signer: &crate::dnssec::sign::ZoneSigner, now: u64) -> DnssecStatus {
        let ms = |t: Option<u64>| t.map(|t| t * 1000);
        // Every key's events, the earliest ones (a roll: one key stops as
        // the other starts) said together.
        let events: Vec<(u64, String)> = signer
            .key_info
            .iter()
            .flat_map(|k| {
                let t = &k.timing;
                [
                    (t.publish, "is published"),
                    (t.activate, "becomes active"),
                    (t.inactive, "stops signing"),
                    (t.delete, "is removed"),
                ]
                .into_iter()
                .filter_map(move |(at, what)| {
                    at.filter(|&a| a > now)
                        .map(|a| (a, format!("key {} {what}", k.tag)))
                })
            })
            .collect();
        let next = events.iter().map(|(at, _)| *at).min().map(|first| {
            let what: Vec<&str> = events
                .iter()
                .filter(|(at, _)| *at == first)
                .map(|(_, w)| w.as_str())
                .collect();
            (first, what.join(", "))
        });
        let count = |i: usize| signer.counts[i].load(std::sync::atomic::Ordering::Relaxed);
        DnssecStatus {
            signatures_made: count(0),
            signatures_made_ahead: count(1),
            rrsets_from_cache: count(2),
            signature_validity_s: signer.validity(),
            earliest_signature_expiry_ms: u64::from(signer.earliest_expiry(now)) * 1000,
            next_key_event: next.map(|(at, what)| KeyEventStatus {
                at_ms: at * 1000,
                what,
            }),
            keys: signer
                .key_info
                .iter()
                .map(|k| KeyStatus {
                    tag: k.tag,
                    algorithm: k.algorithm,
                    role: k.role,
                    state: k.state(now),
                    publish_ms: ms(k.timing.publish),
                    activate_ms: ms(k.timing.activate),
                    inactive_ms: ms(k.timing.inactive),
                    delete_ms: ms(k.timing.delete),
                })
                .collect(),
        }
    }
}

/// A zone served to secondaries: its serial, the transfers served and what
/// each secondary in `notify` was last told.
#[derive(Serialize, Debug)]
pub struct TransferStatus {
    /// Records in the zone as transferred (SOA included once).
    pub records: usize,
    /// Changes kept for IXFR.
    pub changes_kept: usize,
    /// Transfers served since start, by kind.
    pub axfr_served: u64,
    /// IXFRs served since start.
    pub ixfr_served: u64,
    /// Secondaries notified of changes.
    pub notify: Vec<NotifyStatus>,
}

/// What one secondary was last told.
#[derive(Serialize, Debug)]
pub struct NotifyStatus {
    /// Its address.
    pub secondary: String,
    /// What it was told and whether it answered.
    #[serde(flatten)]
    pub state: crate::dns::notify::NotifyState,
}

/// One service and what it answers now.
#[derive(Serialize, Debug)]
pub struct ServiceStatus {
    /// Owner name.
    pub name: String,
    /// Table key in the zone file.
    pub key: String,
    /// Policy.
    pub policy: &'static str,
    /// Regions in configured order, with weights.
    pub regions: Vec<ServiceRegionStatus>,
    /// The answer differs from the fully healthy one.
    pub degraded: bool,
    /// Every region is down; the all-down rule applies.
    pub all_down: bool,
    /// TTL served now.
    pub ttl: u32,
    /// The all-down rule.
    pub when_all_down: String,
    /// What a query gets now (geo and nearest: a client of no known
    /// location).
    pub answer: AnswerStatus,
    /// Geo and nearest services: the `[geo.NAME]` map.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub geo: Option<String>,
    /// Geo and nearest services: each location's region order and what it
    /// is answered now (nearest: a client at each region's location).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<LocationStatus>,
}

/// One location of a geo or nearest service.
#[derive(Serialize, Debug)]
pub struct LocationStatus {
    /// The map key (geo), or the region the client is nearest (nearest); `*`
    /// for clients of no known location.
    pub location: String,
    /// Its regions in order of preference.
    pub order: Vec<String>,
    /// The regions answered now.
    pub answer: Vec<String>,
    /// The answer is not the location's first choice.
    pub degraded: bool,
    /// NOERROR with records, or "nodata" / "servfail" when its regions are all down.
    pub kind: &'static str,
}

/// A region as a service lists it.
#[derive(Serialize, Debug)]
pub struct ServiceRegionStatus {
    /// Region name.
    pub name: String,
    /// Weight (1 for failover and all-healthy).
    pub weight: u32,
    /// Region up.
    pub up: bool,
}

/// The current answer of a service.
#[derive(Serialize, Debug)]
pub struct AnswerStatus {
    /// NOERROR with records, or "nodata" / "servfail" when all are down.
    pub kind: &'static str,
    /// Regions answered, with their share of answers (1.0 for each answered
    /// region of failover and all-healthy).
    pub regions: Vec<(String, f64)>,
    /// Addresses answered (both families), for endpoint regions.
    pub addresses: Vec<IpAddr>,
    /// CNAME target, for a cname region.
    pub cname: Option<String>,
}

/// One region's health.
#[derive(Serialize, Debug)]
pub struct RegionStatus {
    /// Name.
    pub name: String,
    /// Up as DNS uses it (override applied).
    pub up: bool,
    /// Up as the probes say.
    pub probed_up: bool,
    /// Unix milliseconds of the last change.
    pub since_ms: u64,
    /// Override.
    #[serde(rename = "override")]
    pub overridden: Override,
    /// The override's comment, expiry and whether it is this node's alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub override_note: Option<crate::health::OverrideNote>,
    /// min-healthy.
    pub min_healthy: usize,
    /// Check name, if any.
    pub check: Option<String>,
    /// CNAME target, for a cname region.
    pub cname: Option<String>,
    /// Calculated health: what it depends on, and how many must be up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<DependsStatus>,
    /// Why it is down: `override`, `endpoints` or `depends-on`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub down_because: Option<&'static str>,
    /// Endpoints.
    pub endpoints: Vec<EndpointStatus>,
}

/// A region's `depends-on` now.
#[derive(Serialize, Debug)]
pub struct DependsStatus {
    /// How many must be up (`healthy-when`).
    pub needed: usize,
    /// How many are up.
    pub up: usize,
    /// Each, as written, and whether it is up as DNS uses it.
    pub on: Vec<DependencyStatus>,
    /// In words: `depends-on: 1 of 2 up, needs 2 (db down, cache up)`.
    pub summary: String,
}

/// One dependency now.
#[derive(Serialize, Debug)]
pub struct DependencyStatus {
    /// As written in `depends-on`.
    pub name: String,
    /// Up as DNS uses it.
    pub up: bool,
}

/// A region's `depends-on` as the status shows it.
fn depends_status(cell: &crate::health::RegionCell) -> Option<DependsStatus> {
    let d = cell.depends.as_ref()?;
    Some(DependsStatus {
        needed: d.needed,
        up: d.up(),
        on: d
            .on
            .iter()
            .map(|(name, c)| DependencyStatus {
                name: name.clone(),
                up: c.is_up(),
            })
            .collect(),
        summary: d.summary(),
    })
}

/// One endpoint's health.
#[derive(Serialize, Debug)]
pub struct EndpointStatus {
    /// Address.
    pub address: IpAddr,
    /// Up as DNS uses it.
    pub up: bool,
    /// The probes' verdict (in a cluster: the quorum's).
    pub probed_up: bool,
    /// This node's own probes' verdict.
    pub local_up: bool,
    /// In a cluster: every live node's verdict.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub observations: Vec<crate::cluster::ObservationStatus>,
    /// Override.
    #[serde(rename = "override")]
    pub overridden: Override,
    /// The override's comment, expiry and whether it is this node's alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub override_note: Option<crate::health::OverrideNote>,
    /// Last probe outcome.
    pub last_result: Option<ProbeOutcome>,
    /// Last probe reason.
    pub reason: Option<String>,
    /// Last probe latency in milliseconds.
    pub latency_ms: Option<f64>,
    /// Unix milliseconds of the last probe.
    pub last_probe_ms: Option<u64>,
    /// Consecutive results toward a transition.
    pub consecutive: u32,
    /// Unix milliseconds of the last change.
    pub since_ms: Option<u64>,
    /// Probes sent.
    pub probes: u64,
    /// Probes failed.
    pub failures: u64,
    /// Checks over TLS: Unix milliseconds at which the leaf certificate the
    /// endpoint last presented expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_expires_ms: Option<u64>,
    /// It expires within the check's `warn-expiry`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub certificate_expiring: bool,
}

/// What the status document is built from: the served snapshot, the
/// health cells and the cluster. Nothing else, so the status can never
/// disagree with what DNS answers.
#[derive(Clone)]
pub struct StatusSource {
    /// The served snapshot.
    pub engine: Arc<Engine>,
    /// Health cells and the transition journal.
    pub health: Arc<HealthTable>,
    /// The cluster, if any.
    pub cluster: Option<Arc<Cluster>>,
}

/// Build the status document.
pub fn status(shared: &StatusSource) -> Status {
    let snap = shared.engine.snapshot();
    let mut zones: Vec<ZoneStatus> = snap
        .zones()
        .map(|served| {
            let zone = &served.zone;
            let view: &dyn HealthView = served.health.as_ref();
            let regions = zone
                .regions
                .values()
                .map(|r| {
                    let cell = &served.health.regions[r.index];
                    RegionStatus {
                        name: r.name.clone(),
                        up: cell.is_up(),
                        probed_up: cell.probed_up(),
                        since_ms: unix_ms(cell.since()),
                        overridden: cell.override_state(),
                        override_note: shared.health.note(&(zone.label(), r.name.clone(), None)),
                        min_healthy: r.min_healthy,
                        check: r.check.as_ref().map(|c| c.name.clone()),
                        cname: match &r.target {
                            RegionTarget::Alias(n) => Some(n.to_string()),
                            RegionTarget::Endpoints(_) => None,
                        },
                        depends_on: depends_status(cell),
                        down_because: cell.down_because(),
                        endpoints: cell
                            .endpoints
                            .iter()
                            .map(|e| {
                                let d = e.detail();
                                let observations = match &shared.cluster {
                                    Some(c) => c.observations(
                                        &crate::health::EndpointKey {
                                            zone: zone.label(),
                                            region: r.name.clone(),
                                            addr: e.addr,
                                        },
                                        r.check.as_deref(),
                                    ),
                                    None => Vec::new(),
                                };
                                EndpointStatus {
                                    address: e.addr,
                                    up: e.is_up(),
                                    probed_up: e.probed_up(),
                                    local_up: e.local_up(),
                                    observations,
                                    overridden: e.override_state(),
                                    override_note: shared.health.note(&(
                                        zone.label(),
                                        r.name.clone(),
                                        Some(e.addr),
                                    )),
                                    last_result: d.last_outcome,
                                    reason: d.last_reason,
                                    latency_ms: d.last_latency.map(|l| l.as_secs_f64() * 1000.0),
                                    last_probe_ms: d.last_probe.map(unix_ms),
                                    consecutive: d.run,
                                    since_ms: d.since.map(unix_ms),
                                    probes: d.probes,
                                    failures: d.failures,
                                    certificate_expires_ms: d.certificate_expiry.map(unix_ms),
                                    certificate_expiring: d.certificate_expiring,
                                }
                            })
                            .collect(),
                    }
                })
                .collect();
            let services = zone
                .services
                .iter()
                .map(|svc| service_status(svc, view))
                .collect();
            let mut serial = match &zone.soa.data {
                hickory_proto::rr::RData::SOA(soa) => soa.serial,
                _ => 0,
            };
            let transfer = served.journal.as_ref().map(|j| {
                let label = zone.label();
                let transfers = &shared.engine.transfers;
                let version = j.current();
                serial = version.as_ref().map_or(serial, |v| v.serial);
                let served_of = |kind: &str| {
                    transfers
                        .metrics
                        .served
                        .with_label_values(&[&label, kind])
                        .get()
                };
                TransferStatus {
                    records: version.as_ref().map_or(0, |v| v.records.len() + 1),
                    changes_kept: j.changes_kept(),
                    axfr_served: served_of("axfr"),
                    ixfr_served: served_of("ixfr"),
                    notify: transfers
                        .notifies
                        .states()
                        .into_iter()
                        .filter(|(z, a, _)| {
                            *z == label
                                && zone.transfer.as_ref().is_some_and(|t| t.notify.contains(a))
                        })
                        .map(|(_, a, state)| NotifyStatus {
                            secondary: a.to_string(),
                            state,
                        })
                        .collect(),
                }
            });
            ZoneStatus {
                name: zone.label(),
                file: zone.file.display().to_string(),
                serial,
                records: zone.record_count,
                services,
                regions,
                transfer,
                dnssec: zone
                    .signer
                    .as_ref()
                    .map(|signer| DnssecStatus::of(signer, unix_ms(SystemTime::now()) / 1000)),
            }
        })
        .collect();
    zones.sort_by(|a, b| a.name.cmp(&b.name));
    Status {
        version: env!("CARGO_PKG_VERSION"),
        ready: shared.health.first_verdicts_known(),
        now_ms: unix_ms(SystemTime::now()),
        zones,
        transitions: shared.health.journal(),
        cluster: shared.cluster.as_ref().map(|c| c.status()),
    }
}

fn service_status(svc: &crate::model::Service, view: &dyn HealthView) -> ServiceStatus {
    let (shares, sel) = policy::shares(svc, view);
    let mut rng = <rand::rngs::SmallRng as rand::SeedableRng>::seed_from_u64(0);
    let mut addresses = Vec::new();
    let mut buf = Vec::new();
    let mut cname = None;
    // For weighted, list the addresses of every eligible region.
    let all_picks = policy::Selection {
        picks: shares.iter().map(|(p, _)| *p).collect(),
        ..sel.clone()
    };
    for v6 in [false, true] {
        policy::addresses(svc, &all_picks, view, v6, &mut rng, &mut buf);
        addresses.extend(buf.iter().copied());
    }
    addresses.sort();
    if let Some(&(p, _)) = shares.first()
        && let RegionTarget::Alias(n) = &policy::picked_region(svc, p).target
    {
        cname = Some(n.to_string());
    }
    ServiceStatus {
        name: svc.name.to_string(),
        key: svc.key.clone(),
        policy: svc.policy.as_str(),
        regions: svc
            .regions
            .iter()
            .map(|r| ServiceRegionStatus {
                name: r.region.name.clone(),
                weight: r.weight,
                up: view.region_up(r.region.index),
            })
            .collect(),
        degraded: sel.degraded,
        all_down: all_down(&sel),
        ttl: if sel.degraded {
            svc.degraded_ttl
        } else {
            svc.ttl
        },
        when_all_down: match &svc.when_all_down {
            crate::model::WhenAllDown::LastResort(r) => format!("last-resort {}", r.name),
            rule => rule.rule().into(),
        },
        geo: svc.policy.geo_map().map(|m| m.name.clone()),
        locations: locations(svc, view),
        answer: AnswerStatus {
            kind: outcome_kind(&sel.outcome),
            regions: shares
                .iter()
                .map(|&(p, share)| (policy::picked_region(svc, p).name.clone(), share))
                .collect(),
            addresses,
            cname,
        },
    }
}

fn outcome_kind(o: &Outcome) -> &'static str {
    match o {
        Outcome::Answer => "answer",
        Outcome::NoData => "nodata",
        Outcome::ServFail => "servfail",
    }
}

/// The answer of each location of a geo or nearest service.
fn locations(svc: &crate::model::Service, view: &dyn HealthView) -> Vec<LocationStatus> {
    if svc.policy.geo_map().is_none() {
        return Vec::new();
    }
    let mut rng = <rand::rngs::SmallRng as rand::SeedableRng>::seed_from_u64(0);
    let name = |p: usize| policy::picked_region(svc, p).name.clone();
    policy::geo::locations(svc)
        .into_iter()
        .enumerate()
        .map(|(loc, location)| {
            let order = policy::geo::order_of(svc, loc);
            let sel = policy::select_at(svc, view, &order, &mut rng);
            LocationStatus {
                location,
                order: order.iter().map(|&p| name(p)).collect(),
                answer: sel.picks.iter().map(|&p| name(p)).collect(),
                degraded: sel.degraded,
                kind: outcome_kind(&sel.outcome),
            }
        })
        .collect()
}

/// No region of the service is up: its all-down rule answers (or refuses to).
fn all_down(sel: &policy::Selection) -> bool {
    sel.all_down || sel.outcome != Outcome::Answer
}

/// Set `gslb_service_degraded` and `gslb_service_all_down` for every
/// service (at scrape time).
pub(crate) fn refresh_service_gauges(shared: &StatusSource, metrics: &crate::metrics::Metrics) {
    // Gauges of services and regions are rebuilt from the served snapshot
    // on every scrape, so a service or region that a reload removed leaves
    // no series behind (an alert on it would fire forever). One scrape at a
    // time: another must not render a half-rebuilt set.
    static SCRAPE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = SCRAPE.lock().unwrap_or_else(|p| p.into_inner());
    metrics.service_degraded.reset();
    metrics.service_all_down.reset();
    metrics.service_answer_region.reset();
    metrics.region_last_transition.reset();
    metrics.dnssec_expiry.reset();
    // Counted by the signers themselves, process-wide; brought up to date.
    for (source, count) in [
        ("made", &crate::dnssec::sign::SIGNATURES_MADE),
        ("ahead", &crate::dnssec::sign::SIGNATURES_AHEAD),
        ("cache", &crate::dnssec::sign::SIGNATURES_CACHED),
    ] {
        let c = metrics.dnssec_signatures.with_label_values(&[source]);
        let now = count.load(std::sync::atomic::Ordering::Relaxed);
        c.inc_by(now.saturating_sub(c.get()));
    }
    let now_secs = crate::reload::unix_now().max(0) as u64;
    let snap = shared.engine.snapshot();
    for served in snap.zones() {
        let zname = served.zone.label();
        if let Some(signer) = &served.zone.signer {
            metrics
                .dnssec_expiry
                .with_label_values(&[zname.as_str()])
                .set(i64::from(signer.earliest_expiry(now_secs)));
        }
        // Present at 0 from the start, so increase() sees the first drop.
        metrics.webhook_dropped.with_label_values(&[zname.as_str()]);
        let view: &dyn HealthView = served.health.as_ref();
        for svc in &served.zone.services {
            let (shares, sel) = policy::shares(svc, view);
            metrics
                .service_degraded
                .with_label_values(&[zname.as_str(), svc.key.as_str()])
                .set(i64::from(sel.degraded));
            metrics
                .service_all_down
                .with_label_values(&[zname.as_str(), svc.key.as_str(), svc.when_all_down.rule()])
                .set(i64::from(all_down(&sel)));
            let mut answered: Vec<(String, f64)> = svc
                .regions
                .iter()
                .map(|r| (r.region.name.clone(), 0.0))
                .collect();
            for (pos, share) in shares {
                let name = policy::picked_region(svc, pos).name.clone();
                match answered.iter_mut().find(|(n, _)| *n == name) {
                    Some(slot) => slot.1 = share,
                    None => answered.push((name, share)),
                }
            }
            for (region, share) in answered {
                metrics
                    .service_answer_region
                    .with_label_values(&[zname.as_str(), svc.key.as_str(), region.as_str()])
                    .set(share);
            }
        }
        for cell in &served.health.regions {
            let at = cell
                .since()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            metrics
                .region_last_transition
                .with_label_values(&[zname.as_str(), cell.name.as_str()])
                .set(at);
        }
    }
    shared.health.refresh_gauges();
}
