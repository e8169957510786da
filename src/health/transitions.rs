//! Transitions: every change of an effective verdict or a region's state,
//! logged as one structured event, counted, journaled for the status API
//! and broadcast (the live page; region transitions on a channel of their
//! own for webhooks).
//!
//! Whoever decides (see [`super::verdicts`]) calls in here after storing a
//! verdict; nothing in here decides anything.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::broadcast;

use super::persist;
use super::{EndpointCell, EndpointKey, Override, RegionCell};
use crate::metrics::Metrics;

/// Transitions kept for the status API.
pub const JOURNAL_LEN: usize = 256;
/// Region transitions the webhook dispatcher may fall behind by before it
/// loses one (it claims each in etcd, in a cluster).
pub const REGION_EVENTS: usize = 65_536;

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

pub(super) fn word(up: bool) -> &'static str {
    if up { "up" } else { "down" }
}

/// The journal and the two broadcasts.
pub(super) struct Transitions {
    journal: Mutex<VecDeque<Transition>>,
    /// Every transition (the live page).
    events: broadcast::Sender<Transition>,
    /// Region transitions alone, for webhooks: a storm of endpoint
    /// transitions (thousands of endpoints failing at once) cannot push a
    /// region transition out of this one.
    region_events: broadcast::Sender<Transition>,
    metrics: Metrics,
}

impl Transitions {
    pub(super) fn new(metrics: Metrics) -> Self {
        Transitions {
            journal: Mutex::new(VecDeque::with_capacity(JOURNAL_LEN)),
            events: broadcast::channel(1024).0,
            region_events: broadcast::channel(REGION_EVENTS).0,
            metrics,
        }
    }

    /// An endpoint's effective verdict became `up`, decided at `rev` (a
    /// cluster revision) or by this node (`None`).
    pub(super) fn endpoint(
        &self,
        key: &EndpointKey,
        cell: &EndpointCell,
        up: bool,
        consecutive: Option<u32>,
        reason: &str,
        rev: Option<i64>,
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
            cluster_rev: rev,
            consecutive,
        });
    }

    /// A region's state became `up`, because of `reason` (what changed).
    pub(super) fn region(&self, cell: &RegionCell, up: bool, reason: &str, rev: Option<i64>) {
        let healthy = cell.endpoints.iter().filter(|e| e.is_up()).count();
        let why = match (cell.override_state(), &cell.depends) {
            // Down for what it depends on (its own endpoints would serve):
            // say that first, and not the endpoint change that moved a
            // dependency somewhere else.
            (Override::Auto, Some(d)) if cell.own_up() && !d.met() => {
                format!(
                    "{}; {healthy} of {} endpoints up",
                    d.summary(),
                    cell.endpoints.len()
                )
            }
            (Override::Auto, Some(d)) => format!(
                "{healthy} of {} endpoints up (min-healthy {}); {}; {reason}",
                cell.endpoints.len(),
                cell.min_healthy,
                d.summary()
            ),
            (Override::Auto, None) => format!(
                "{healthy} of {} endpoints up (min-healthy {}); {reason}",
                cell.endpoints.len(),
                cell.min_healthy
            ),
            (o, _) => format!("override {}", o.as_str()),
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
            cluster_rev: rev,
            consecutive: None,
        });
    }

    fn record(&self, t: Transition) {
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

    /// Subscribe to transitions.
    pub(super) fn subscribe(&self) -> broadcast::Receiver<Transition> {
        self.events.subscribe()
    }

    /// Subscribe to region transitions alone.
    pub(super) fn subscribe_regions(&self) -> broadcast::Receiver<Transition> {
        self.region_events.subscribe()
    }

    /// The last transitions, oldest first.
    pub(super) fn journal(&self) -> Vec<Transition> {
        self.journal
            .lock()
            .expect("journal lock poisoned")
            .iter()
            .cloned()
            .collect()
    }
}
