//! Health state shared between the probers (writers) and the DNS path, metrics
//! and status (readers).
//!
//! The verdicts readers need on every query are atomics: the DNS path loads a
//! few `AtomicBool`s and `AtomicU8`s and never takes a lock or waits on a
//! probe, and a verdict stored by a prober is seen by the very next query. The
//! details only status pages read (last result, reason, counters) sit behind a
//! `std::sync::Mutex` held for a field copy, never across an `.await`.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use prometheus::IntGauge;
use serde::{Deserialize, Serialize};

/// An operator's override of the probes' verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Override {
    /// Follow the probes.
    #[default]
    Auto,
    /// Forced down (drained): no traffic whatever the probes say.
    Down,
    /// Forced up: traffic whatever the probes say.
    Up,
}

impl Override {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Override::Down,
            2 => Override::Up,
            _ => Override::Auto,
        }
    }
    fn to_u8(self) -> u8 {
        match self {
            Override::Auto => 0,
            Override::Down => 1,
            Override::Up => 2,
        }
    }
    /// Name used in the API, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Override::Auto => "auto",
            Override::Down => "down",
            Override::Up => "up",
        }
    }
    /// Value of the `gslb_region_override` gauge: 0 auto, 1 forced down, 2 forced up.
    pub fn gauge(self) -> i64 {
        i64::from(self.to_u8())
    }
}

/// How a probe ended, as a metrics label and a short class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum ProbeOutcome {
    /// Healthy.
    Success,
    /// No complete answer within the timeout.
    Timeout,
    /// Connection refused.
    Refused,
    /// Connection reset or closed early.
    Reset,
    /// Other connection error (unreachable, ...).
    Connect,
    /// Unexpected HTTP status.
    Status,
    /// Body did not contain the expected text.
    Body,
    /// TLS handshake or certificate failure.
    Tls,
    /// Malformed response.
    Protocol,
    /// The probe could not run for a reason of gslb's own (out of file
    /// descriptors, buffers or local ports): says nothing about the
    /// backend, so it never counts toward `fall` or `rise`.
    Local,
}

impl ProbeOutcome {
    /// Every outcome, for metrics initialisation.
    pub const ALL: [ProbeOutcome; 10] = [
        ProbeOutcome::Success,
        ProbeOutcome::Timeout,
        ProbeOutcome::Refused,
        ProbeOutcome::Reset,
        ProbeOutcome::Connect,
        ProbeOutcome::Status,
        ProbeOutcome::Body,
        ProbeOutcome::Tls,
        ProbeOutcome::Protocol,
        ProbeOutcome::Local,
    ];
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeOutcome::Success => "success",
            ProbeOutcome::Timeout => "timeout",
            ProbeOutcome::Refused => "refused",
            ProbeOutcome::Reset => "reset",
            ProbeOutcome::Connect => "connect",
            ProbeOutcome::Status => "status",
            ProbeOutcome::Body => "body",
            ProbeOutcome::Tls => "tls",
            ProbeOutcome::Protocol => "protocol",
            ProbeOutcome::Local => "local_error",
        }
    }
}

/// What status pages show of an endpoint beyond up/down.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EndpointDetail {
    /// Outcome of the last probe.
    pub last_outcome: Option<ProbeOutcome>,
    /// Why the last probe failed ("status 503"), or "ok".
    pub last_reason: Option<String>,
    /// Duration of the last probe.
    pub last_latency: Option<Duration>,
    /// When the last probe ended.
    pub last_probe: Option<SystemTime>,
    /// Consecutive results that disagree with the current state (the run
    /// toward `fall` or `rise`).
    pub run: u32,
    /// When the state last changed (or was restored).
    pub since: Option<SystemTime>,
    /// Probes sent.
    pub probes: u64,
    /// Probes that failed.
    pub failures: u64,
    /// When the leaf certificate the endpoint last presented expires.
    pub certificate_expiry: Option<SystemTime>,
    /// It expires within the check's `warn-expiry`.
    pub certificate_expiring: bool,
}

/// One endpoint's health: the threshold machine's verdict and the override.
#[derive(Debug)]
pub struct EndpointCell {
    /// The address answered in DNS.
    pub addr: IpAddr,
    /// The verdict DNS uses before overrides: this node's own probes alone,
    /// or in a cluster the quorum of every node's (true while unprobed).
    up: AtomicBool,
    /// This node's own probes' verdict (what it publishes to a cluster).
    local_up: AtomicBool,
    overridden: AtomicU8,
    restored: AtomicBool,
    detail: Mutex<EndpointDetail>,
    /// Its `up` and `override` gauges, made on first use: setting them is
    /// then a store, not a label lookup (a transition in a region of 100
    /// endpoints made 200 lookups).
    gauges: OnceLock<[IntGauge; 2]>,
}

impl EndpointCell {
    /// A cell in the given state.
    pub fn new(addr: IpAddr, up: bool) -> Self {
        EndpointCell {
            addr,
            up: AtomicBool::new(up),
            local_up: AtomicBool::new(up),
            overridden: AtomicU8::new(0),
            restored: AtomicBool::new(false),
            detail: Mutex::new(EndpointDetail {
                since: Some(SystemTime::now()),
                ..EndpointDetail::default()
            }),
            gauges: OnceLock::new(),
        }
    }
    /// Its `up` and `override` gauges (`make` makes them the first time).
    pub(super) fn gauges(&self, make: impl FnOnce() -> [IntGauge; 2]) -> &[IntGauge; 2] {
        self.gauges.get_or_init(make)
    }
    /// Whether the state came from the state file (a verdict is known).
    pub fn restored(&self) -> bool {
        self.restored.load(Ordering::Acquire)
    }
    /// Mark the state as restored from the state file.
    pub fn set_restored(&self) {
        self.restored.store(true, Ordering::Release);
    }
    /// The effective verdict of the probes (the cluster's, in a cluster).
    pub fn probed_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }
    /// Store the effective verdict.
    pub fn set_probed_up(&self, up: bool) {
        self.up.store(up, Ordering::Release);
    }
    /// This node's own probes' verdict.
    pub fn local_up(&self) -> bool {
        self.local_up.load(Ordering::Acquire)
    }
    /// Store this node's own verdict.
    pub fn set_local_up(&self, up: bool) {
        self.local_up.store(up, Ordering::Release);
    }
    /// The override.
    pub fn override_state(&self) -> Override {
        Override::from_u8(self.overridden.load(Ordering::Acquire))
    }
    /// Set the override.
    pub fn set_override(&self, o: Override) {
        self.overridden.store(o.to_u8(), Ordering::Release);
    }
    /// Whether DNS answers this endpoint: the override, else the verdict.
    pub fn is_up(&self) -> bool {
        match self.override_state() {
            Override::Auto => self.probed_up(),
            Override::Down => false,
            Override::Up => true,
        }
    }
    /// A copy of the details.
    pub fn detail(&self) -> EndpointDetail {
        self.detail.lock().expect("detail lock poisoned").clone()
    }
    /// Change the details.
    pub fn update_detail<R>(&self, f: impl FnOnce(&mut EndpointDetail) -> R) -> R {
        f(&mut self.detail.lock().expect("detail lock poisoned"))
    }
}

/// One region's health: its endpoints and the region override.
#[derive(Debug)]
pub struct RegionCell {
    /// Zone apex (lower case, no trailing dot) for logs and the API.
    pub zone: String,
    /// Region name.
    pub name: String,
    /// Endpoints, in the order of the region's `endpoints`.
    pub endpoints: Vec<Arc<EndpointCell>>,
    /// The region is up while at least this many endpoints are.
    pub min_healthy: usize,
    /// Calculated health: the cells it depends on (`depends-on`).
    pub depends: Option<DependencyCells>,
    overridden: AtomicU8,
    /// The state last logged, and since when: to detect region transitions.
    last: Mutex<(bool, SystemTime)>,
    /// Its `up` and `override` gauges, made on first use.
    gauges: OnceLock<[IntGauge; 2]>,
}

impl RegionCell {
    /// A region of these endpoints.
    pub fn new(
        zone: String,
        name: String,
        endpoints: Vec<Arc<EndpointCell>>,
        min_healthy: usize,
        depends: Option<DependencyCells>,
    ) -> Self {
        RegionCell {
            zone,
            name,
            endpoints,
            min_healthy,
            depends,
            overridden: AtomicU8::new(0),
            last: Mutex::new((true, SystemTime::now())),
            gauges: OnceLock::new(),
        }
    }
    /// Its `up` and `override` gauges (`make` makes them the first time).
    pub(super) fn gauges(&self, make: impl FnOnce() -> [IntGauge; 2]) -> &[IntGauge; 2] {
        self.gauges.get_or_init(make)
    }
    /// The region override.
    pub fn override_state(&self) -> Override {
        Override::from_u8(self.overridden.load(Ordering::Acquire))
    }
    /// Set the region override.
    pub fn set_override(&self, o: Override) {
        self.overridden.store(o.to_u8(), Ordering::Release);
    }
    /// Whether the probes (and endpoint overrides) say the region is up,
    /// ignoring the region override: its own endpoints, and what it
    /// depends on. Derived from the cells each time it is asked, so a
    /// dependency's change moves its dependents with the same store: no
    /// reader ever sees one changed and not the other.
    pub fn probed_up(&self) -> bool {
        self.own_up() && self.depends.as_ref().is_none_or(DependencyCells::met)
    }
    /// Whether its own endpoints (and endpoint overrides) say it is up,
    /// dependencies aside.
    pub fn own_up(&self) -> bool {
        let up = self.endpoints.iter().filter(|e| e.is_up()).count();
        // An alias region has no endpoints: it is up unless overridden or its
        // check (modelled as one endpoint cell) says otherwise.
        self.endpoints.is_empty() || up >= self.min_healthy
    }
    /// Why it is down: `override`, `endpoints` (too few up) or
    /// `depends-on` (its own endpoints would serve); `None` while up.
    pub fn down_because(&self) -> Option<&'static str> {
        if self.is_up() {
            return None;
        }
        Some(match self.override_state() {
            Override::Down => "override",
            _ if !self.own_up() => "endpoints",
            _ => "depends-on",
        })
    }
    /// Whether DNS may answer from this region.
    pub fn is_up(&self) -> bool {
        match self.override_state() {
            Override::Auto => self.probed_up(),
            Override::Down => false,
            Override::Up => true,
        }
    }
    /// When the region's state last changed.
    pub fn since(&self) -> SystemTime {
        self.last.lock().expect("region lock poisoned").1
    }
    /// Take the current state as the known one (a new region).
    pub fn reset_last_up(&self) {
        self.last.lock().expect("region lock poisoned").0 = self.is_up();
    }
    /// Take over the override and known state of the cell this one replaces.
    pub fn inherit(&self, old: &RegionCell) {
        self.set_override(old.override_state());
        *self.last.lock().expect("region lock poisoned") =
            *old.last.lock().expect("region lock poisoned");
    }
    /// Compare the current state with the known one; on a change, remember
    /// it and return the new state.
    pub fn reconcile(&self) -> Option<bool> {
        let mut last = self.last.lock().expect("region lock poisoned");
        let now = self.is_up();
        if now == last.0 {
            return None;
        }
        *last = (now, SystemTime::now());
        Some(now)
    }
}

/// What a region depends on, as the cells DNS reads.
#[derive(Debug)]
pub struct DependencyCells {
    /// Each dependency as written in `depends-on`, and its cell.
    pub on: Vec<(String, DependencyCell)>,
    /// How many must be up.
    pub needed: usize,
}

/// The cell of one dependency.
#[derive(Debug, Clone)]
pub enum DependencyCell {
    /// A region, as DNS uses it (its override and its own dependencies
    /// included).
    Region(Arc<RegionCell>),
    /// One endpoint, as DNS uses it (its override included).
    Endpoint(Arc<EndpointCell>),
}

impl DependencyCell {
    /// Up as DNS uses it.
    pub fn is_up(&self) -> bool {
        match self {
            DependencyCell::Region(r) => r.is_up(),
            DependencyCell::Endpoint(e) => e.is_up(),
        }
    }

    fn same(&self, other: &DependencyCell) -> bool {
        match (self, other) {
            (DependencyCell::Region(a), DependencyCell::Region(b)) => Arc::ptr_eq(a, b),
            (DependencyCell::Endpoint(a), DependencyCell::Endpoint(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl DependencyCells {
    /// How many are up now.
    pub fn up(&self) -> usize {
        self.on.iter().filter(|(_, c)| c.is_up()).count()
    }

    /// At least `needed` are up: stops asking as soon as it knows.
    pub fn met(&self) -> bool {
        let mut up = 0;
        for (i, (_, c)) in self.on.iter().enumerate() {
            if up + (self.on.len() - i) < self.needed {
                return false;
            }
            if c.is_up() {
                up += 1;
                if up >= self.needed {
                    return true;
                }
            }
        }
        up >= self.needed
    }

    /// The same dependencies on the same cells (a reload that changed
    /// none of them keeps the region's cell).
    pub fn same(&self, other: &DependencyCells) -> bool {
        self.needed == other.needed
            && self.on.len() == other.on.len()
            && self
                .on
                .iter()
                .zip(&other.on)
                .all(|((wa, a), (wb, b))| wa == wb && a.same(b))
    }

    /// For operators: `depends-on: 1 of 2 up, needs 2 (db-east down,
    /// db-west up)`.
    pub fn summary(&self) -> String {
        let each: Vec<String> = self
            .on
            .iter()
            .map(|(w, c)| format!("{w} {}", if c.is_up() { "up" } else { "down" }))
            .collect();
        format!(
            "depends-on: {} of {} up, needs {} ({})",
            self.up(),
            self.on.len(),
            self.needed,
            each.join(", ")
        )
    }
}

/// The health of one zone's regions, indexed like `Zone::regions`.
#[derive(Debug, Default)]
pub struct ZoneHealth {
    /// Region cells by `Region::index`.
    pub regions: Vec<Arc<RegionCell>>,
}

impl crate::policy::HealthView for ZoneHealth {
    fn region_up(&self, region: usize) -> bool {
        self.regions.get(region).is_none_or(|r| r.is_up())
    }
    fn endpoint_up(&self, region: usize, endpoint: usize) -> bool {
        self.regions
            .get(region)
            .and_then(|r| r.endpoints.get(endpoint))
            .is_none_or(|e| e.is_up())
    }
}

/// A counter bumped on every verdict or override change, so caches of
/// answers can tell they are stale.
#[derive(Debug, Default)]
pub struct Epoch(AtomicU64);

impl Epoch {
    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
    /// Note a change.
    pub fn bump(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}
