//! Several nameservers, one answer: nodes share health through etcd.
//!
//! Every node probes as it does alone and publishes its own verdict per
//! endpoint ([`view::Observation`]) under a lease it keeps alive, writing on
//! change only. Every node watches every observation and decides each
//! endpoint's effective verdict by the same quorum over the same data, so
//! all nodes change their answers at the same etcd revision. Overrides are
//! stored in etcd and apply everywhere. The DNS path never sees any of it:
//! it reads the same atomics as a single node, which this module sets.
//!
//! Modes, each change logged once:
//! - `cluster`: a session is live (state loaded, watch running), or was
//!   less than [`STALE_AFTER`] ago (a reconnect to another member, an etcd
//!   leader election); the cluster's verdicts are in force.
//! - `stale`: no live session for longer than that, but less than
//!   `lease-ttl` since one was last live; the last cluster verdicts stay in
//!   force.
//! - `local`: no live session for `lease-ttl` (or never since start); this
//!   node's own verdicts are in force, until a session is live again.

pub mod arbiter;
pub mod mode;
mod session;
pub mod view;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use prometheus::{IntCounterVec, IntGauge, Opts};
use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::config::redact_url;
use crate::health::{
    Deciding, EndpointCell, EndpointKey, HealthTable, Observer, Override, OverrideNote,
    OverrideTarget, Transition,
};
use crate::metrics::Metrics;
use crate::model::{Check, ClusterSettings, unix_ms};
use view::{NodeInfo, Observation, OverrideKey, StoredOverride, Touched, View, endpoint_id};

/// Bound on one etcd request (a watch or keep-alive stream excepted).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// How long event claims are kept in etcd.
pub const EVENT_CLAIM_TTL: i64 = 600;
/// Bound on claiming one webhook event.
pub const CLAIM_TIMEOUT: Duration = Duration::from_secs(1);
/// Operations per etcd transaction (etcd's default limit is 128).
pub const TXN_OPS: usize = 100;
/// A session's opening calls (connect, lease grant, keep-alive stream) on
/// one member: past this, the next member is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Lease keep-alives are sent this often...
pub const KEEPALIVE_EVERY: Duration = Duration::from_millis(500);
/// ...and a member that answers none for this long is left for the next.
pub const KEEPALIVE_SILENCE: Duration = Duration::from_millis(1500);
/// With no live session for this long, a node in `cluster` mode goes
/// `stale` (and `local` at `lease-ttl` after it was last live, whichever
/// comes first): long enough for a reconnect to another member and for
/// etcd to elect a new leader (1 to 2 s with etcd's defaults).
pub const STALE_AFTER: Duration = Duration::from_secs(3);
/// While a node cannot join, why is said at WARN once per this period.
pub const OUT_WARNING_PERIOD: Duration = Duration::from_secs(30);

/// Why a cluster call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// etcd could not be reached or refused the call.
    #[error("the cluster store (etcd) is unreachable: {0}")]
    Unavailable(String),
    /// Another live gslb process holds this node's name.
    #[error(
        "node name {node:?} is in use by another live gslb process (version {version}, started {started}): this node does not join; give each node its own [cluster] node name"
    )]
    NameTaken {
        /// The name.
        node: String,
        /// The other process's version.
        version: String,
        /// When it started (RFC 3339).
        started: String,
    },
}

/// The mode a node is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The cluster's verdicts.
    Cluster,
    /// The last cluster verdicts, etcd lost less than `lease-ttl` ago.
    Stale,
    /// This node's own verdicts.
    Local,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Cluster => "cluster",
            Mode::Stale => "stale",
            Mode::Local => "local",
        }
    }
}

struct ClusterMetrics {
    connected: IntGauge,
    local: IntGauge,
    nodes: IntGauge,
    skew: IntGauge,
    requests: IntCounterVec,
    claims: IntCounterVec,
    errors: prometheus::IntCounter,
    attempts_failed: prometheus::IntCounter,
    identity_changes: prometheus::IntCounter,
}

impl ClusterMetrics {
    fn new(metrics: &Metrics) -> Self {
        let reg = |c: Box<dyn prometheus::core::Collector>| {
            metrics
                .registry
                .register(c)
                .expect("cluster metric names are unique")
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::with_opts(Opts::new(name, help)).expect("valid metric");
            reg(Box::new(g.clone()));
            g
        };
        let counter = |name: &str, help: &str, label: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric");
            reg(Box::new(c.clone()));
            c
        };
        let m = ClusterMetrics {
            connected: gauge(
                "gslb_cluster_connected",
                "1 while this node reaches etcd and follows the cluster's verdicts.",
            ),
            local: gauge(
                "gslb_cluster_local_verdicts",
                "1 while this node answers from its own verdicts (etcd lost for longer than lease-ttl).",
            ),
            nodes: gauge(
                "gslb_cluster_nodes",
                "Live nodes of the cluster (whose lease is alive), as this node last saw.",
            ),
            skew: gauge(
                "gslb_cluster_config_skew_zones",
                "Zones whose zone data differs between live nodes.",
            ),
            requests: counter(
                "gslb_cluster_etcd_requests_total",
                "Requests this node sent to etcd, by operation.",
                "op",
            ),
            claims: counter(
                "gslb_cluster_event_claims_total",
                "Webhook events this node claimed in etcd: won (this node sends it), lost (another node does), error (sent anyway).",
                "result",
            ),
            errors: {
                let c = prometheus::IntCounter::with_opts(Opts::new(
                    "gslb_cluster_etcd_session_errors_total",
                    "Live etcd sessions (state loaded, watch running) that ended in an error: each is a reconnect.",
                ))
                .expect("valid metric");
                reg(Box::new(c.clone()));
                c
            },
            identity_changes: {
                let c = prometheus::IntCounter::with_opts(Opts::new(
                    "gslb_cluster_etcd_identity_changes_total",
                    "Times etcd was found not to be the cluster state this node followed (another cluster id, or its revision went back): the node republished what it holds.",
                ))
                .expect("valid metric");
                reg(Box::new(c.clone()));
                c
            },
            attempts_failed: {
                let c = prometheus::IntCounter::with_opts(Opts::new(
                    "gslb_cluster_etcd_connect_failures_total",
                    "Attempts to open an etcd session that failed before it was live (a member down, an election, wrong credentials).",
                ))
                .expect("valid metric");
                reg(Box::new(c.clone()));
                c
            },
        };
        for op in [
            "grant",
            "keepalive",
            "put",
            "txn",
            "get",
            "watch",
            "delete",
            "revoke",
        ] {
            m.requests.with_label_values(&[op]);
        }
        for r in ["won", "lost", "error"] {
            m.claims.with_label_values(&[r]);
        }
        m.local.set(1);
        m
    }
}

/// This node's part in a cluster.
pub struct Cluster {
    settings: ClusterSettings,
    prefix: String,
    health: Arc<HealthTable>,
    metrics: ClusterMetrics,
    /// The shared state as last read (std Mutex: never held across an
    /// `.await`, never taken by the DNS path).
    view: Mutex<View>,
    /// Endpoint id to this node's cell, rebuilt after every config load.
    index: Mutex<HashMap<String, (EndpointKey, Arc<EndpointCell>)>>,

    /// This node's current observations, to publish and republish.
    local: Mutex<HashMap<String, Observation>>,
    /// Ids whose observation changed since the last publish (or went away).
    dirty: Mutex<HashSet<String>>,
    /// The node record changed (zones reloaded).
    node_dirty: AtomicBool,
    /// Wakes the session to publish.
    wake: Notify,
    /// The mode, as one state machine (see [`mode`]).
    machine: Mutex<mode::ModeMachine>,
    /// The revision applied so far (0 before the first load).
    applied: watch::Sender<i64>,
    /// Set once the node first follows the cluster's verdicts.
    entered: watch::Sender<bool>,
    /// Zone label to fingerprint of what this node serves.
    zones: Mutex<BTreeMap<String, String>>,
    /// Nodes seen live since start (to show the ones that went away).
    seen: Mutex<BTreeMap<String, ()>>,
    started_ms: u64,
    /// The client of the current session, for calls from the admin API and
    /// webhooks.
    client: Mutex<Option<etcd_client::Client>>,
    /// The current session's lease, revoked at shutdown.
    lease: Mutex<Option<(etcd_client::Client, i64)>>,
    /// This node's lease, kept across sessions while etcd keeps it alive.
    lease_id: Mutex<Option<i64>>,
    /// The cluster id of the etcd this node follows.
    etcd_identity: Mutex<Option<u64>>,
    /// Override keys to delete in etcd (expired, or of regions in no
    /// node's zones), with the revision they must still have; and when
    /// each was last asked for, so the watch has time to bring it.
    deletions: Mutex<Vec<(String, i64, &'static str)>>,
    asked: Mutex<HashMap<String, Instant>>,
    /// The lease event claims are written under, and when it was granted
    /// (one per few minutes, not one per claim).
    claim_lease: Mutex<Option<(i64, Instant)>>,
    /// Verdicts this node decided that etcd's record (`verdict/<id>`) may
    /// not have yet: the session writes them, for nodes that join later.
    records: Mutex<HashMap<String, arbiter::Held>>,
    /// This process's id in its node record (see [`NodeInfo::instance`]).
    instance: String,
    /// One warning per period while this node stays out of the cluster.
    out_warnings: crate::throttle::LogThrottle,
}

fn fingerprints(zones: BTreeMap<String, u64>) -> BTreeMap<String, String> {
    zones
        .into_iter()
        .map(|(z, h)| (z, format!("{h:016x}")))
        .collect()
}

impl Cluster {
    /// A cluster member deciding through `health`. Registers its metrics and
    /// becomes `health`'s observer.
    pub fn new(
        settings: ClusterSettings,
        health: Arc<HealthTable>,
        metrics: &Metrics,
        zones: BTreeMap<String, u64>,
    ) -> Arc<Cluster> {
        let machine = mode::ModeMachine::new(settings.lease_ttl);
        let c = Arc::new(Cluster {
            prefix: settings.prefix(),
            settings,
            health: health.clone(),
            metrics: ClusterMetrics::new(metrics),
            view: Mutex::default(),
            index: Mutex::default(),
            local: Mutex::default(),
            dirty: Mutex::default(),
            node_dirty: AtomicBool::new(false),
            wake: Notify::new(),
            machine: Mutex::new(machine),
            applied: watch::channel(0).0,
            entered: watch::channel(false).0,
            zones: Mutex::new(fingerprints(zones)),
            seen: Mutex::default(),
            started_ms: unix_ms(SystemTime::now()),
            client: Mutex::new(None),
            lease: Mutex::new(None),
            lease_id: Mutex::new(None),
            etcd_identity: Mutex::new(None),
            deletions: Mutex::default(),
            asked: Mutex::default(),
            claim_lease: Mutex::new(None),
            records: Mutex::default(),
            instance: format!("{:016x}", rand::random::<u64>()),
            out_warnings: crate::throttle::LogThrottle::new(OUT_WARNING_PERIOD),
        });
        health.set_observer(c.clone());
        c
    }

    /// The settings.
    pub fn settings(&self) -> &ClusterSettings {
        &self.settings
    }

    /// Run the etcd session (reconnecting) and the staleness watch until
    /// `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let watchdog = tokio::spawn(self.clone().watchdog(shutdown.clone()));
        session::run(self, shutdown).await;
        let _ = watchdog.await;
    }

    /// Wait until the node first follows the cluster (state loaded, own
    /// observations written back), at most `limit`. Returns whether
    /// it happened.
    pub async fn joined(&self, limit: Duration) -> bool {
        let mut rx = self.entered.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|e| *e))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// After the zones were (re)loaded into `health`: index the endpoints,
    /// withdraw observations of endpoints that are gone, publish the zone
    /// fingerprints, and decide every endpoint. On the first load
    /// (`initial`) of a node that joined, the verdicts and overrides are
    /// taken without transitions.
    pub fn zones_loaded(&self, zones: BTreeMap<String, u64>, initial: bool) {
        let endpoints = self.health.endpoints();
        let index: HashMap<String, (EndpointKey, Arc<EndpointCell>)> = endpoints
            .into_iter()
            .map(|e| (endpoint_id(&e.key, e.check.as_deref()), (e.key, e.cell)))
            .collect();
        {
            let mut local = self.local.lock().expect("cluster lock poisoned");
            let mut dirty = self.dirty.lock().expect("cluster lock poisoned");
            local.retain(|id, _| {
                let keep = index.contains_key(id);
                if !keep {
                    dirty.insert(id.clone());
                }
                keep
            });
        }
        *self.index.lock().expect("cluster lock poisoned") = index;
        *self.zones.lock().expect("cluster lock poisoned") = fingerprints(zones);
        self.node_dirty.store(true, Ordering::Release);
        self.wake.notify_one();
        if *self.applied.borrow() == 0 {
            return; // not joined: own verdicts (or the state file's) stand
        }
        let mut d = self.health.deciding();
        if initial {
            let view = self.view.lock().expect("cluster lock poisoned");
            let index = self.index.lock().expect("cluster lock poisoned");
            let ids: HashMap<&EndpointKey, &String> =
                index.iter().map(|(id, (k, _))| (k, id)).collect();
            d.seed(
                |key| Some(view.tallies.get(*ids.get(key)?)?.held?.up),
                |k| (view.override_of(&k.0, &k.1, k.2), view.note_of(k)),
            );
            d.follow_cluster(view.rev);
        } else if self.mode() == Mode::Cluster {
            self.decide_all(&d);
        }
    }

    /// Whether a verdict in force in the cluster differs from this node's
    /// own verdict on an endpoint it has probed.
    fn held_disagrees_with_own(&self) -> bool {
        let view = self.view.lock().expect("cluster lock poisoned");
        let index = self.index.lock().expect("cluster lock poisoned");
        index.iter().any(|(id, (_, cell))| {
            let held = view.tallies.get(id).and_then(|t| t.held);
            held.is_some_and(|h| h.up != cell.local_up()) && cell.detail().last_probe.is_some()
        })
    }

    /// Follow the cluster's verdicts from the view as it stands (a session
    /// became live, or etcd answered again): every effective verdict and
    /// override is taken from the view at its revision.
    fn follow_cluster(&self) {
        let mut d = self.health.deciding();
        let rev = self.view.lock().expect("cluster lock poisoned").rev;
        d.follow_cluster(rev);
        self.decide_all(&d);
    }

    /// Take every verdict in force and every override from the view (after
    /// a load or a reconnect). Nothing is decided anew here: the verdicts
    /// in force are those the cluster's votes decided, revision by
    /// revision, while this node followed them or not; an endpoint the
    /// cluster never decided keeps this node's verdict. Within the health
    /// table's decision section `d`.
    fn decide_all(&self, d: &Deciding<'_>) {
        let ids: Vec<String> = self
            .index
            .lock()
            .expect("cluster lock poisoned")
            .keys()
            .cloned()
            .collect();
        self.apply_held(d, &ids, "the cluster's verdict in force");
        let overrides: Vec<(OverrideKey, Override, OverrideNote)> = {
            let view = self.view.lock().expect("cluster lock poisoned");
            let mut all: Vec<(OverrideKey, Override, OverrideNote)> = view
                .overrides
                .iter()
                .map(|(k, (s, _))| (k.clone(), s.state, s.note.clone()))
                .collect();
            // Overrides in force here that etcd no longer has end (this
            // node's local ones excepted: etcd never had them).
            for t in self.health.overrides() {
                let k = t.key();
                if !t.note.local && !view.overrides.contains_key(&k) {
                    all.push((k, Override::Auto, OverrideNote::default()));
                }
            }
            all
        };
        for (k, o, note) in overrides {
            self.apply_override(k, o, note);
        }
    }

    fn apply_override(&self, k: OverrideKey, state: Override, note: OverrideNote) {
        self.health.apply_override(&OverrideTarget {
            zone: k.0,
            region: k.1,
            endpoint: k.2,
            state,
            note,
        });
    }

    /// Set these endpoints' effective verdicts to the cluster's verdicts in
    /// force: the one place where a cluster verdict reaches the cells,
    /// within the health table's decision section `d`.
    fn apply_held(&self, d: &Deciding<'_>, ids: &[String], why: &str) {
        let decisions: Vec<(EndpointKey, Arc<EndpointCell>, bool, String)> = {
            let view = self.view.lock().expect("cluster lock poisoned");
            let index = self.index.lock().expect("cluster lock poisoned");
            ids.iter()
                .filter_map(|id| {
                    let (key, cell) = index.get(id)?;
                    let tally = view.tallies.get(id)?;
                    if !tally.votes.is_empty() || tally.held.is_some() {
                        // Known from the cluster, whether or not this node
                        // probes it (`probers`): ready.
                        cell.set_restored();
                    }
                    let up = tally.held?.up;
                    Some((key.clone(), cell.clone(), up, self.reason(&view, id, why)))
                })
                .collect()
        };
        d.set(&decisions);
    }

    /// Why an endpoint has the verdict it has: the votes behind it.
    fn reason(&self, view: &View, id: &str, why: &str) -> String {
        let q = self.settings.quorum;
        let counted = view.counted(id);
        let down: Vec<String> = counted
            .iter()
            .filter(|(_, up)| !**up)
            .map(|(n, _)| match view.obs.get(id).and_then(|m| m.get(n)) {
                Some(o) => format!("{n}: {}", o.reason),
                None => n.clone(),
            })
            .collect();
        let mut out = format!(
            "{why}: {} of {} voting nodes see it down (quorum {})",
            down.len(),
            counted.len(),
            q.describe()
        );
        if !down.is_empty() {
            out.push_str(": ");
            out.push_str(&down.join("; "));
        }
        out
    }

    /// Apply a batch of changes that etcd made at `rev`: count the votes of
    /// every endpoint touched, let the arbiter ([`arbiter::Tally`]) decide
    /// where a vote was cast, and in `cluster` and `stale` mode set the
    /// verdicts that changed. In `local` mode this node's own verdicts stand
    /// and the tallies are kept current, so that it follows the cluster's
    /// verdicts in force when it comes back.
    fn commit(&self, rev: i64, touched: Vec<Touched>) {
        let mut d = self.health.deciding();
        let deciding = self.mode() != Mode::Local;
        if deciding {
            d.follow_cluster(rev);
        }
        let mut ids = Vec::new();
        let mut records = Vec::new();
        let mut nodes = false;
        for t in touched {
            match t {
                Touched::Endpoint(id) => ids.push(id),
                Touched::Record(id) => records.push(id),
                Touched::Override(_) if !deciding => {}
                Touched::Override(k) => {
                    let (o, note) = {
                        let view = self.view.lock().expect("cluster lock poisoned");
                        (view.override_of(&k.0, &k.1, k.2), view.note_of(&k))
                    };
                    self.apply_override(k, o, note);
                }
                Touched::Nodes => nodes = true,
                Touched::Nothing => {}
            }
        }
        let changed: Vec<String> = {
            let mut view = self.view.lock().expect("cluster lock poisoned");
            if nodes {
                // A node came, went or took a new lease: whose votes count
                // may have changed anywhere.
                ids = view.ids();
            }
            ids.sort();
            ids.dedup();
            let q = self.settings.quorum;
            let mut changed = Vec::new();
            let mut decided = Vec::new();
            for id in ids {
                let votes = view.counted(&id);
                let mut tally = view.tallies.remove(&id).unwrap_or_default();
                if tally.step(q, votes, rev).is_some() {
                    decided.push((id.clone(), tally.held.expect("just decided")));
                    changed.push(id.clone());
                }
                view.note_contest(q, &id, &tally);
                view.tallies.insert(id, tally);
            }
            for id in records {
                let Some((record, _)) = view.records.get(&id).copied() else {
                    continue;
                };
                let mut tally = view.tallies.remove(&id).unwrap_or_default();
                if tally.adopt(record).is_some() {
                    changed.push(id.clone());
                }
                view.note_contest(q, &id, &tally);
                view.tallies.insert(id, tally);
            }
            view.rev = rev;
            if !decided.is_empty() {
                self.records
                    .lock()
                    .expect("cluster lock poisoned")
                    .extend(decided);
                self.wake.notify_one();
            }
            changed
        };
        if deciding && !changed.is_empty() {
            self.apply_held(&d, &changed, "decided");
        }
        if nodes {
            self.nodes_changed();
        }
        self.applied.send_replace(rev);
    }

    fn nodes_changed(&self) {
        let view = self.view.lock().expect("cluster lock poisoned");
        self.metrics.nodes.set(view.nodes.len() as i64);
        let skew = view.skew();
        if skew.len() as i64 != self.metrics.skew.get() {
            if skew.is_empty() {
                tracing::info!("every live node serves the same zone data again");
            } else {
                tracing::warn!(zones = %skew.keys().map(String::as_str).collect::<Vec<_>>().join(", "), "live nodes serve different zone data (a deploy in progress?)");
            }
        }
        self.metrics.skew.set(skew.len() as i64);
        let mut seen = self.seen.lock().expect("cluster lock poisoned");
        for n in view.nodes.keys() {
            seen.insert(n.clone(), ());
        }
    }

    /// Take a mode event (see [`mode`]) now, and carry out the change it
    /// makes: log and metrics, and what the new mode means for verdicts
    /// (`cluster`: the cluster's verdicts in force; `local`: this node's).
    fn event(&self, ev: mode::Event) {
        let (change, paused) = {
            let mut m = self.machine.lock().expect("cluster lock poisoned");
            let change = m.on(ev, Instant::now());
            (change, m.take_pause())
        };
        if let Some(gap) = paused {
            // This process was not running (SIGSTOP, a VM frozen or
            // migrated) for longer than lease-ttl: its lease is gone, and
            // what it holds is as old as the pause. Its own verdicts are no
            // better (its probes were paused too), so it does not fall back
            // to them: the watch delivers what the cluster decided
            // meanwhile, and the keep-alive finds the lease gone and opens a
            // new session (or `local` comes lease-ttl later).
            tracing::warn!(node = %self.settings.node, paused = %humantime::format_duration(Duration::from_millis(gap.as_millis() as u64)),
                "this process was not running for longer than lease-ttl: catching up with the cluster");
        }
        let Some(change) = change else {
            return;
        };
        let (from, to, why) = (change.from, change.to, change.why.as_str());
        self.metrics.connected.set(i64::from(to == Mode::Cluster));
        self.metrics.local.set(i64::from(to == Mode::Local));
        match to {
            Mode::Cluster => {
                tracing::info!(cluster = %self.settings.name, node = %self.settings.node, from = from.as_str(), to = to.as_str(), "cluster mode: connected to etcd; following the cluster's verdicts");
                self.follow_cluster();
                self.entered.send_replace(true);
            }
            Mode::Stale => {
                tracing::warn!(cluster = %self.settings.name, node = %self.settings.node, from = from.as_str(), to = to.as_str(), reason = why, "cluster mode: etcd unreachable ({why}); keeping the last cluster verdicts for up to lease-ttl ({})", humantime::format_duration(self.settings.lease_ttl));
            }
            Mode::Local => {
                tracing::warn!(cluster = %self.settings.name, node = %self.settings.node, from = from.as_str(), to = to.as_str(), reason = why, "cluster mode: answering from this node's own verdicts ({why})");
                self.health
                    .deciding()
                    .take_own("no live etcd session for lease-ttl: this node's own verdict");
            }
        }
    }

    /// The mode now.
    pub fn mode(&self) -> Mode {
        self.machine.lock().expect("cluster lock poisoned").mode()
    }

    /// Whether a session is live now.
    fn live(&self) -> bool {
        self.machine.lock().expect("cluster lock poisoned").live()
    }

    /// Ticks the mode machine (stale, local, pauses), ends the grace of
    /// contested verdicts and, once a second, ends overrides in etcd.
    async fn watchdog(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u64 = 0;
        loop {
            ticks += 1;
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            if self.mode() == Mode::Cluster && self.live() {
                self.end_graces();
                if ticks.is_multiple_of(10) {
                    self.housekeeping();
                }
            }
            self.event(mode::Event::Tick);
        }
    }

    /// Overrides that end in etcd, once a second: those whose expiry has
    /// passed (every node asks; the delete is conditional on the key's
    /// revision, so a renewed override survives and every node applies the
    /// end at one revision), and those of regions or endpoints that no node
    /// serves any more while their zone is still served, once every live
    /// node serves the same zone data (so a region re-added months later
    /// does not come back drained; a zone absent altogether keeps them).
    fn housekeeping(&self) {
        let now = unix_ms(SystemTime::now());
        let served: std::collections::HashSet<String> = self
            .zones
            .lock()
            .expect("cluster lock poisoned")
            .keys()
            .cloned()
            .collect();
        let mut present: std::collections::HashSet<OverrideKey> = std::collections::HashSet::new();
        for cell in self.health.regions() {
            present.insert((cell.zone.clone(), cell.name.clone(), None));
            for e in &cell.endpoints {
                present.insert((cell.zone.clone(), cell.name.clone(), Some(e.addr)));
            }
        }
        let view = self.view.lock().expect("cluster lock poisoned");
        let same_zones = view.skew().is_empty();
        let mut asked = self.asked.lock().expect("cluster lock poisoned");
        asked.retain(|_, at| at.elapsed() < Duration::from_secs(2));
        let mut due = Vec::new();
        for (k, (s, rev)) in &view.overrides {
            let key = view::override_key(&self.prefix, k);
            if asked.contains_key(&key) {
                continue;
            }
            let why = if s.note.expires_ms.is_some_and(|t| t <= now) {
                "expired"
            } else if same_zones && served.contains(&k.0) && !present.contains(k) {
                "its region or endpoint is in no node's zones"
            } else {
                continue;
            };
            asked.insert(key.clone(), Instant::now());
            due.push((key, *rev, why));
        }
        drop(asked);
        drop(view);
        if !due.is_empty() {
            self.deletions
                .lock()
                .expect("cluster lock poisoned")
                .extend(due);
            self.wake.notify_one();
        }
    }

    /// Verdicts that have stood on withdrawn votes alone for `vote-grace`:
    /// the votes left decide now. The decision is written to the record
    /// (by the endpoint's first node in rendezvous order, see
    /// `session::record_verdicts`) and every node takes it from there, at
    /// one revision.
    fn end_graces(&self) {
        let grace = self.settings.vote_grace;
        let q = self.settings.quorum;
        let due: Vec<(String, arbiter::Held)> = {
            let mut view = self.view.lock().expect("cluster lock poisoned");
            let rev = view.rev;
            let ids: Vec<String> = view
                .contested
                .iter()
                .filter(|(_, since)| since.elapsed() >= grace)
                .map(|(id, _)| id.clone())
                .collect();
            let mut due = Vec::new();
            for id in ids {
                let Some(up) = view.tallies.get(&id).and_then(|t| t.contested(q)) else {
                    view.contested.remove(&id);
                    continue;
                };
                // Again after another grace if the record does not come.
                view.contested.insert(id.clone(), std::time::Instant::now());
                due.push((id, arbiter::Held { up, rev }));
            }
            due
        };
        if !due.is_empty() {
            tracing::info!(
                endpoints = due.len(),
                grace = %humantime::format_duration(grace),
                "verdicts held only by withdrawn votes for vote-grace: the votes left decide"
            );
            self.records
                .lock()
                .expect("cluster lock poisoned")
                .extend(due);
            self.wake.notify_one();
        }
    }

    /// The etcd client, while this node follows the cluster.
    fn connected_client(&self) -> Result<etcd_client::Client, ClusterError> {
        self.client
            .lock()
            .expect("cluster lock poisoned")
            .clone()
            .filter(|_| self.mode() == Mode::Cluster)
            .ok_or_else(|| ClusterError::Unavailable("not connected".into()))
    }

    /// Store an override in etcd; it applies on every node (this one
    /// included, before this returns).
    pub async fn set_override(&self, target: &OverrideTarget) -> Result<(), ClusterError> {
        let mut client = self.connected_client()?;
        let key = view::override_key(
            &self.prefix,
            &(target.zone.clone(), target.region.clone(), target.endpoint),
        );
        let rev = if target.state == Override::Auto {
            self.count("delete");
            timeout(client.delete(key, None))
                .await?
                .header()
                .map(|h| h.revision())
        } else {
            let value = serde_json::to_vec(&StoredOverride {
                state: target.state,
                node: self.settings.node.clone(),
                at_ms: unix_ms(SystemTime::now()),
                note: OverrideNote {
                    local: false,
                    ..target.note.clone()
                },
            })
            .expect("override serialises");
            self.count("put");
            timeout(client.put(key, value, None))
                .await?
                .header()
                .map(|h| h.revision())
        };
        // Wait for the watch to bring it back, so this node applies it at
        // the same revision as every other (one webhook for the cluster).
        // It is stored: if the watch is slow it still applies everywhere,
        // this node included, when the watch delivers it.
        let mut rx = self.applied.subscribe();
        let seen = tokio::time::timeout(
            REQUEST_TIMEOUT,
            rx.wait_for(|r| rev.is_some_and(|want| *r >= want)),
        )
        .await;
        if !matches!(seen, Ok(Ok(_))) {
            tracing::warn!(zone = %target.zone, region = %target.region, "override stored in etcd; the watch has not delivered it yet");
        }
        Ok(())
    }

    /// The serial every node gives zone `zone` whose content (as
    /// transferred) hashes to `hash` (issue 21): kept in etcd at
    /// `/gslb/NAME/serial/ZONE` with the hash it was given for, so nodes
    /// that render the same content serve the same serial, whenever each
    /// started or changed. `candidate` is what this node alone would give
    /// (its saved serial when the content is the saved one, else the next
    /// one after its own); `floor` the last serial this node served. The
    /// stored serial is taken when it is for this content and not behind
    /// `floor` (a secondary of this node must never see its serial go
    /// back); otherwise the next serial after both is stored, by
    /// compare-and-swap, so two nodes that change at once agree on one.
    /// `Err` while etcd cannot be asked: the caller then decides alone.
    pub async fn agree_serial(
        &self,
        zone: &str,
        hash: u64,
        candidate: u32,
        floor: Option<u32>,
        now: u32,
    ) -> Result<u32, ClusterError> {
        use crate::reload::{next_serial, serial_gt};
        let key = view::serial_key(&self.prefix, zone);
        for _ in 0..8 {
            let mut client = self.connected_client()?;
            self.count("get");
            let got = timeout(client.get(key.clone(), None)).await?;
            let stored = got.kvs().first().and_then(|kv| {
                serde_json::from_slice::<StoredSerial>(kv.value())
                    .ok()
                    .map(|s| (s, kv.mod_revision()))
            });
            let (serial, compare) = match &stored {
                Some((s, _))
                    if s.hash == hash
                        && floor.is_none_or(|f| f == s.serial || serial_gt(s.serial, f)) =>
                {
                    return Ok(s.serial);
                }
                Some((s, rev)) => {
                    let base = match floor {
                        Some(f) if serial_gt(f, s.serial) => f,
                        _ => s.serial,
                    };
                    (
                        next_serial(base, now),
                        etcd_client::Compare::mod_revision(
                            key.clone(),
                            etcd_client::CompareOp::Equal,
                            *rev,
                        ),
                    )
                }
                None => (
                    candidate,
                    etcd_client::Compare::create_revision(
                        key.clone(),
                        etcd_client::CompareOp::Equal,
                        0,
                    ),
                ),
            };
            let value = serde_json::to_vec(&StoredSerial {
                hash,
                serial,
                node: self.settings.node.clone(),
            })
            .expect("serial serialises");
            let txn = etcd_client::Txn::new()
                .when([compare])
                .and_then([etcd_client::TxnOp::put(key.clone(), value, None)]);
            self.count("txn");
            if timeout(client.txn(txn)).await?.succeeded() {
                return Ok(serial);
            }
            // Another node stored one meanwhile: look again.
        }
        Err(ClusterError::Unavailable(
            "the zone's serial kept changing under this node".into(),
        ))
    }

    /// Whether this node sends the webhook of `t`: the first node to claim
    /// the transition's revision in etcd does. A transition this node
    /// decided alone (no revision), or one it cannot claim because etcd
    /// fails, is sent: a duplicate is better than a lost page.
    ///
    /// While this node is in `cluster` mode but between sessions (a
    /// reconnect to another member, an etcd election), the claim is tried
    /// again until a session is back, for up to [`STALE_AFTER`]: sending at
    /// once from every node would page everyone several times for one
    /// transition.
    pub async fn claim_event(&self, t: &Transition) -> bool {
        let Some(rev) = t.cluster_rev else {
            return true;
        };
        let deadline = Instant::now() + STALE_AFTER;
        loop {
            let client = self.client.lock().expect("cluster lock poisoned").clone();
            let result = match client {
                Some(client) => self.try_claim(t, rev, client).await,
                None => Err(ClusterError::Unavailable("no etcd session".into())),
            };
            match result {
                Ok(won) => {
                    tracing::debug!(zone = %t.zone, region = %t.region, to = t.to, rev, won, "webhook claim");
                    self.metrics
                        .claims
                        .with_label_values(&[if won { "won" } else { "lost" }])
                        .inc();
                    return won;
                }
                Err(e) if self.mode() != Mode::Cluster || Instant::now() >= deadline => {
                    self.metrics.claims.with_label_values(&["error"]).inc();
                    tracing::warn!(zone = %t.zone, region = %t.region, error = %e, "cannot claim the webhook event in etcd; sending it from this node");
                    return true;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// One attempt at claiming `t` (decided at `rev`): whether this node
    /// won it.
    async fn try_claim(
        &self,
        t: &Transition,
        rev: i64,
        mut client: etcd_client::Client,
    ) -> Result<bool, ClusterError> {
        let key = view::event_key(&self.prefix, &t.zone, &t.region, t.to, rev);
        let claim = async {
            let lease = self.claim_lease(&mut client).await?;
            let txn = etcd_client::Txn::new()
                .when([etcd_client::Compare::create_revision(
                    key.clone(),
                    etcd_client::CompareOp::Equal,
                    0,
                )])
                .and_then([etcd_client::TxnOp::put(
                    key.clone(),
                    self.settings.node.clone(),
                    Some(etcd_client::PutOptions::new().with_lease(lease)),
                )]);
            self.count("txn");
            Ok::<bool, ClusterError>(timeout(client.txn(txn)).await?.succeeded())
        };
        // A claim that etcd does not answer quickly is an error: the
        // dispatcher must not fall behind a storm of transitions.
        let result = tokio::time::timeout(CLAIM_TIMEOUT, claim)
            .await
            .unwrap_or_else(|_| Err(ClusterError::Unavailable("claim timed out".into())));
        if result.is_err() {
            // The lease may be what failed: an etcd rebuilt or restored
            // does not have it ("requested lease not found"), and every
            // claim under it would fail, each node then sending the event.
            // The next attempt grants a new one.
            *self.claim_lease.lock().expect("cluster lock poisoned") = None;
        }
        result
    }

    /// The lease for event claims: granted for [`EVENT_CLAIM_TTL`] and used
    /// for half of that, so a claim lives 5 to 10 minutes.
    async fn claim_lease(&self, client: &mut etcd_client::Client) -> Result<i64, ClusterError> {
        let reuse = *self.claim_lease.lock().expect("cluster lock poisoned");
        if let Some((id, at)) = reuse
            && at.elapsed() < Duration::from_secs(EVENT_CLAIM_TTL as u64 / 2)
        {
            return Ok(id);
        }
        self.count("grant");
        let id = timeout(client.lease_grant(EVENT_CLAIM_TTL, None))
            .await?
            .id();
        *self.claim_lease.lock().expect("cluster lock poisoned") = Some((id, Instant::now()));
        Ok(id)
    }

    fn count(&self, op: &str) {
        self.metrics.requests.with_label_values(&[op]).inc();
    }

    /// The node record this node publishes.
    fn node_info(&self, republished: bool) -> NodeInfo {
        NodeInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_ms: self.started_ms,
            zones: self.zones.lock().expect("cluster lock poisoned").clone(),
            instance: self.instance.clone(),
            republished,
            lease: 0,
        }
    }

    /// The cluster section of the status document.
    pub fn status(&self) -> ClusterStatus {
        let view = self.view.lock().expect("cluster lock poisoned");
        let seen = self.seen.lock().expect("cluster lock poisoned");
        let own = self.zones.lock().expect("cluster lock poisoned").clone();
        let mut nodes: Vec<NodeStatus> = seen
            .keys()
            .chain(std::iter::once(&self.settings.node))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .map(|n| {
                let info = view.nodes.get(n);
                NodeStatus {
                    node: n.clone(),
                    this_node: *n == self.settings.node,
                    connected: info.is_some(),
                    version: info.map(|i| i.version.clone()),
                    started_ms: info.map(|i| i.started_ms),
                    same_zones: info.map(|i| i.zones == own),
                }
            })
            .collect();
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        let mode = self.mode();
        ClusterStatus {
            name: self.settings.name.clone(),
            node: self.settings.node.clone(),
            mode,
            connected: mode == Mode::Cluster && self.live(),
            quorum: self.settings.quorum.describe(),
            lease_ttl_ms: self.settings.lease_ttl.as_millis() as u64,
            etcd: self.settings.etcd.iter().map(|e| redact_url(e)).collect(),
            revision: view.rev,
            last_contact_ms_ago: self
                .machine
                .lock()
                .expect("cluster lock poisoned")
                .last_live()
                .map(|t| t.elapsed().as_millis() as u64),
            nodes,
            skew: view.skew(),
        }
    }

    /// Every live node's observation of an endpoint.
    pub fn observations(
        &self,
        key: &EndpointKey,
        check: Option<&crate::model::Check>,
    ) -> Vec<ObservationStatus> {
        let view = self.view.lock().expect("cluster lock poisoned");
        let id = endpoint_id(key, check);
        let counted = view.counted(&id);
        view.obs
            .get(&id)
            .map(|m| {
                m.iter()
                    .map(|(n, o)| ObservationStatus {
                        node: n.clone(),
                        up: o.up,
                        counted: counted.contains_key(n),
                        reason: o.reason.clone(),
                        since_ms: o.since_ms,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Rendezvous (highest random weight) score of `node` for endpoint `id`:
/// every node ranks the live nodes the same way, and when a node goes only
/// its share moves.
fn rendezvous(node: &str, id: &str) -> u64 {
    let mut h = crate::model::fnv1a(format!("{node}\n{id}").as_bytes());
    // splitmix64's finaliser: FNV alone mixes the last bytes poorly.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

impl Observer for Cluster {
    fn should_probe(&self, key: &EndpointKey, check: &Check) -> bool {
        let Some(k) = check.probers else {
            return true;
        };
        // Alone (etcd lost), a node probes everything it answers for.
        if self.mode() != Mode::Cluster {
            return true;
        }
        let view = self.view.lock().expect("cluster lock poisoned");
        let me = &self.settings.node;
        if !view.nodes.contains_key(me) {
            return true;
        }
        let id = endpoint_id(key, Some(check));
        let mut ranked: Vec<(u64, &String)> =
            view.nodes.keys().map(|n| (rendezvous(n, &id), n)).collect();
        ranked.sort_unstable_by(|a, b| b.cmp(a));
        ranked.iter().take(k as usize).any(|(_, n)| *n == me)
    }

    fn withdraw(&self, key: &EndpointKey, check: &Check) {
        let id = endpoint_id(key, Some(check));
        if self
            .local
            .lock()
            .expect("cluster lock poisoned")
            .remove(&id)
            .is_some()
        {
            self.dirty.lock().expect("cluster lock poisoned").insert(id);
            self.wake.notify_one();
        }
    }

    fn observed(&self, key: &EndpointKey, check: &Check, up: bool, reason: &str) {
        let id = endpoint_id(key, Some(check));
        let obs = Observation {
            up,
            reason: reason.to_string(),
            since_ms: unix_ms(SystemTime::now()),
            lease: 0,
        };
        {
            let mut local = self.local.lock().expect("cluster lock poisoned");
            if local.get(&id).is_some_and(|o| o.up == up) {
                return; // no change to publish
            }
            local.insert(id.clone(), obs);
        }
        self.dirty.lock().expect("cluster lock poisoned").insert(id);
        self.wake.notify_one();
    }
}

/// Bound a unary etcd call.
async fn timeout<T>(
    f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, ClusterError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ClusterError::Unavailable(e.to_string())),
        Err(_) => Err(ClusterError::Unavailable(format!(
            "no answer within {}",
            humantime::format_duration(REQUEST_TIMEOUT)
        ))),
    }
}

/// A zone's serial as etcd keeps it: the content hash it was given for,
/// and the node that stored it (for people reading etcd).
#[derive(Debug, Serialize, serde::Deserialize)]
struct StoredSerial {
    hash: u64,
    serial: u32,
    node: String,
}

/// The cluster in the status document.
#[derive(Debug, Serialize)]
pub struct ClusterStatus {
    /// Cluster name.
    pub name: String,
    /// This node.
    pub node: String,
    /// cluster, stale or local.
    pub mode: Mode,
    /// A session is live now (state loaded, watch running) and the node
    /// follows the cluster. Mode `cluster` with `connected` false: between
    /// two sessions (a reconnect).
    pub connected: bool,
    /// The quorum rule.
    pub quorum: String,
    /// Lease TTL.
    pub lease_ttl_ms: u64,
    /// etcd endpoints (without credentials).
    pub etcd: Vec<String>,
    /// etcd revision of the view.
    pub revision: i64,
    /// Milliseconds since etcd last answered a keep-alive.
    pub last_contact_ms_ago: Option<u64>,
    /// Nodes seen since this one started.
    pub nodes: Vec<NodeStatus>,
    /// Zones whose data differs between live nodes: node to fingerprint.
    pub skew: BTreeMap<String, BTreeMap<String, Option<String>>>,
}

/// A node as seen from this one.
#[derive(Debug, Serialize)]
pub struct NodeStatus {
    /// Name.
    pub node: String,
    /// This is the node answering.
    pub this_node: bool,
    /// Its lease is alive.
    pub connected: bool,
    /// Its version.
    pub version: Option<String>,
    /// When it started.
    pub started_ms: Option<u64>,
    /// It serves the same zone data as this node.
    pub same_zones: Option<bool>,
}

/// One node's view of an endpoint.
#[derive(Debug, Serialize)]
pub struct ObservationStatus {
    /// Node.
    pub node: String,
    /// Its verdict.
    pub up: bool,
    /// Whether it counts as a vote (its node is live, under that node's
    /// lease).
    pub counted: bool,
    /// Its reason.
    pub reason: String,
    /// Since when.
    pub since_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::rendezvous;
    use crate::config::redact_url;

    #[test]
    fn rendezvous_moves_only_the_leaving_nodes_share() {
        let nodes = ["ns1", "ns2", "ns3"];
        fn pick(nodes: &[&'static str], id: &str) -> &'static str {
            nodes
                .iter()
                .copied()
                .max_by_key(|n| rendezvous(n, id))
                .expect("nodes")
        }
        let mut per = std::collections::HashMap::new();
        let mut moved = 0;
        for i in 0..3000 {
            let id = format!("z/r/192.0.2.{}/{i}", i % 250);
            let before = pick(&nodes, &id);
            *per.entry(before).or_insert(0) += 1;
            let after = pick(&["ns1", "ns2"], &id);
            if before != "ns3" {
                assert_eq!(before, after, "a share that was not ns3's moved");
            } else {
                moved += 1;
            }
        }
        for n in nodes {
            assert!((800..1200).contains(&per[n]), "uneven: {per:?}");
        }
        assert!(moved > 0);
    }

    #[test]
    fn urls_lose_credentials_and_queries() {
        assert_eq!(
            redact_url("https://user:secret@etcd.example:2379/?token=x"),
            "https://etcd.example:2379"
        );
        assert_eq!(redact_url("http://10.0.0.1:2379"), "http://10.0.0.1:2379");
    }
}
