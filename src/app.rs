//! Wiring: load zones, build the snapshot, bind listeners, spawn the DNS,
//! health and admin tasks, reload on SIGHUP, shut down on one token.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
use crate::config::{self, ConfigErrors, LoadOptions};
use crate::dns::{self, Engine, EngineOptions, ServedZone, Snapshot};
use crate::health::{HealthTable, ProbeFactory, RealProbes};
use crate::metrics::Metrics;
use crate::model::{ClusterSettings, Config};

/// Everything `serve` needs, after merging flags and the settings file.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Zone files or folders.
    pub zones: Vec<PathBuf>,
    /// DNS listen addresses.
    pub listen: Vec<SocketAddr>,
    /// Admin API address, if enabled.
    pub admin: Option<SocketAddr>,
    /// Token for mutating admin calls.
    pub admin_token: Option<String>,
    /// Health state file, if enabled.
    pub state_file: Option<PathBuf>,
    /// EDNS payload size.
    pub udp_payload: u16,
    /// Idle timeout of DNS-over-TCP connections.
    pub tcp_idle: Duration,
    /// UDP sockets per address.
    pub udp_workers: usize,
    /// Reload when zone files change.
    pub watch: bool,
    /// Global webhook for failover events.
    pub webhook: Option<String>,
    /// Seed the answer RNGs (tests: reproducible weighted splits).
    pub rng_seed: Option<u64>,
    /// Local address probes connect from.
    pub probe_source: Option<std::net::IpAddr>,
    /// Take part in a cluster through etcd.
    pub cluster: Option<ClusterSettings>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            zones: vec![PathBuf::from("zones")],
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 5353))],
            admin: Some(SocketAddr::from(([127, 0, 0, 1], 9153))),
            admin_token: None,
            state_file: Some(PathBuf::from("gslb-state.json")),
            udp_payload: dns::DEFAULT_UDP_PAYLOAD,
            tcp_idle: Duration::from_secs(10),
            udp_workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            watch: false,
            webhook: None,
            rng_seed: None,
            probe_source: None,
            cluster: None,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The zones do not load.
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// A listener could not be bound.
    #[error("{0}")]
    Bind(std::io::Error),
}

/// State shared by the tasks and the admin API.
pub struct Shared {
    /// Settings the server runs with.
    pub settings: Settings,
    /// The DNS engine (holds the served snapshot).
    pub engine: Arc<Engine>,
    /// The loaded configuration (for status and reload diffs).
    pub config: ArcSwap<Config>,
    /// Health cells.
    pub health: Arc<HealthTable>,
    /// Metrics.
    pub metrics: Metrics,
    /// The cluster this node is part of, if any.
    pub cluster: Option<Arc<Cluster>>,
    /// Serialises reloads (held across the file reads, hence tokio's).
    reload_lock: tokio::sync::Mutex<()>,
}

/// A running server.
pub struct Server {
    /// Bound DNS addresses (port 0 resolved).
    pub dns_addrs: Vec<SocketAddr>,
    /// Bound admin address.
    pub admin_addr: Option<SocketAddr>,
    /// Shared state.
    pub shared: Arc<Shared>,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

/// What changed in a reload.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ReloadSummary {
    /// Zones now served.
    pub zones: usize,
    /// Zones added.
    pub zones_added: Vec<String>,
    /// Zones removed.
    pub zones_removed: Vec<String>,
    /// Zones whose content changed.
    pub zones_changed: Vec<String>,
    /// Services added (zone/key).
    pub services_added: Vec<String>,
    /// Services removed.
    pub services_removed: Vec<String>,
    /// Services changed.
    pub services_changed: Vec<String>,
    /// Regions added (zone/name).
    pub regions_added: Vec<String>,
    /// Regions removed.
    pub regions_removed: Vec<String>,
    /// Regions changed.
    pub regions_changed: Vec<String>,
}

fn build_snapshot(config: &Config, health: &Arc<HealthTable>, metrics: &Metrics) -> Snapshot {
    let cells = health.apply(config);
    Snapshot::new(
        config
            .zones
            .iter()
            .zip(cells)
            .map(|(z, h)| ServedZone::new(z.clone(), h, &metrics.dns))
            .collect(),
    )
}

/// Zone label to the hash of its file, as a cluster compares them.
fn zone_hashes(config: &Config) -> std::collections::BTreeMap<String, u64> {
    config
        .zones
        .iter()
        .map(|z| (dns::zone_label(z), z.content_hash))
        .collect()
}

fn load(settings: &Settings) -> Result<Config, ConfigErrors> {
    config::load(&settings.zones, LoadOptions::default())
}

/// Give zones without an explicit `serial` theirs: an unchanged file keeps
/// the serial it had (across reloads and restarts, via the state file); a
/// changed or new one gets the current unix time, or the previous serial + 1
/// when that is higher, so a serial never goes backwards.
fn assign_serials(config: &mut Config, health: &HealthTable) {
    let now = u32::try_from(unix_now()).unwrap_or(u32::MAX);
    let previous = health.zone_serials();
    let mut given = Vec::new();
    for zone in config.zones.iter_mut() {
        if !zone.serial_auto {
            continue;
        }
        let label = dns::zone_label(zone);
        let serial = match previous.iter().find(|p| p.zone == label) {
            Some(p) if p.content_hash == zone.content_hash => p.serial,
            Some(p) => now.max(p.serial.saturating_add(1)),
            None => now,
        };
        Arc::make_mut(zone).set_serial(serial);
        given.push(crate::health::SavedZone {
            zone: label,
            serial,
            content_hash: zone.content_hash,
        });
    }
    health.set_zone_serials(given);
}

impl Server {
    /// Load the zones, bind every listener and start serving.
    pub async fn start(settings: Settings) -> Result<Server, AppError> {
        let probes = Arc::new(RealProbes::with_source(settings.probe_source));
        Self::start_with_probes(settings, probes).await
    }

    /// Like [`Server::start`], probing with `probes` (tests use fakes).
    pub async fn start_with_probes(
        settings: Settings,
        probes: Arc<dyn ProbeFactory>,
    ) -> Result<Server, AppError> {
        crate::install_crypto_provider();
        let metrics = Metrics::new();
        let mut config = match load(&settings) {
            Ok(c) => c,
            Err(e) => {
                metrics.reloads.with_label_values(&["error"]).inc();
                return Err(e.into());
            }
        };
        for z in &config.zones {
            tracing::info!(zone = %z.name, records = z.record_count, services = z.services.len(), regions = z.regions.len(), file = %z.file.display(), "loaded zone {}", z.name);
        }
        metrics.reloads.with_label_values(&["success"]).inc();
        metrics.last_reload.set(unix_now());
        // Bind before anything starts, so a busy port fails fast.
        let listeners = dns::bind(&settings.listen, settings.udp_workers, settings.tcp_idle)
            .map_err(AppError::Bind)?;
        let dns_addrs = listeners.addrs();
        let admin = match settings.admin {
            Some(a) => Some(crate::admin::bind(a).await.map_err(|e| {
                AppError::Bind(std::io::Error::new(
                    e.kind(),
                    format!("cannot listen on {a} (admin API): {e}"),
                ))
            })?),
            None => None,
        };
        let shutdown = CancellationToken::new();
        let health = Arc::new(HealthTable::new(
            metrics.clone(),
            probes,
            settings.state_file.clone(),
            shutdown.clone(),
        ));
        let mut tasks = JoinSet::new();
        // A cluster node loads the cluster's verdicts and overrides before
        // it answers; if etcd cannot be reached in time it starts from its
        // own (or the state file's) and catches up when etcd answers.
        let cluster = match &settings.cluster {
            Some(cs) => {
                let c = Cluster::new(cs.clone(), health.clone(), &metrics, zone_hashes(&config));
                tasks.spawn(c.clone().run(shutdown.clone()));
                let limit = cs.lease_ttl.min(Duration::from_secs(5));
                if !c.joined(limit).await {
                    tracing::warn!(cluster = %cs.name, node = %cs.node, "etcd not reached within {}; answering from this node's own verdicts until it is", humantime::format_duration(limit));
                }
                Some(c)
            }
            None => None,
        };
        assign_serials(&mut config, &health);
        let snapshot = build_snapshot(&config, &health, &metrics);
        if let Some(c) = &cluster {
            c.zones_loaded(zone_hashes(&config), true);
        }
        let opts = EngineOptions {
            udp_payload: settings.udp_payload,
            rng_seed: settings.rng_seed,
            ..EngineOptions::default()
        };
        let engine = Arc::new(Engine::new(
            snapshot,
            opts,
            metrics.dns.clone(),
            health.epoch.clone(),
        ));
        let shared = Arc::new(Shared {
            settings,
            engine: engine.clone(),
            config: ArcSwap::from_pointee(config),
            health,
            metrics,
            cluster,
            reload_lock: tokio::sync::Mutex::new(()),
        });
        tasks.spawn(dns::serve(listeners, engine, shutdown.clone()));
        tasks.spawn(shared.health.clone().persist_loop());
        let admin_addr = match admin {
            Some(l) => {
                let addr = l.local_addr().ok();
                tasks.spawn(crate::admin::serve(l, shared.clone(), shutdown.clone()));
                addr
            }
            None => None,
        };
        {
            let health = shared.health.clone();
            let token = shutdown.clone();
            tasks.spawn(async move {
                token.cancelled().await;
                health.stop().await;
            });
        }
        #[cfg(unix)]
        tasks.spawn(sighup_reloads(shared.clone(), shutdown.clone()));
        tasks.spawn(crate::events::run(shared.clone(), shutdown.clone()));
        if shared.settings.watch {
            tasks.spawn(watch_zones(shared.clone(), shutdown.clone()));
        }
        Ok(Server {
            dns_addrs,
            admin_addr,
            shared,
            shutdown,
            tasks,
        })
    }

    /// Ask every task to stop.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// The token that stops the server.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Wait for every task to finish (after [`Server::shutdown`]).
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }

    /// Reload the zones (see [`Shared::reload`]).
    pub async fn reload(&self) -> Result<ReloadSummary, ConfigErrors> {
        self.shared.reload().await
    }
}

impl Shared {
    /// Load every zone file into a new snapshot; on any error keep serving the
    /// old one and return every problem; otherwise swap atomically.
    pub async fn reload(&self) -> Result<ReloadSummary, ConfigErrors> {
        let _serial = self.reload_lock.lock().await;
        let settings = self.settings.clone();
        let loaded = tokio::task::spawn_blocking(move || load(&settings))
            .await
            .expect("zone loading does not panic");
        let mut new = match loaded {
            Ok(c) => c,
            Err(e) => {
                self.metrics.reloads.with_label_values(&["error"]).inc();
                for err in &e.0 {
                    tracing::error!(error = %err, "reload rejected: {err}");
                }
                tracing::warn!(
                    problems = e.0.len(),
                    "reload failed; still serving the previous zones"
                );
                return Err(e);
            }
        };
        let old = self.config.load_full();
        let summary = diff(&old, &new);
        assign_serials(&mut new, &self.health);
        let snapshot = build_snapshot(&new, &self.health, &self.metrics);
        if let Some(c) = &self.cluster {
            c.zones_loaded(zone_hashes(&new), false);
        }
        self.engine.store(snapshot);
        self.config.store(Arc::new(new));
        self.metrics.reloads.with_label_values(&["success"]).inc();
        self.metrics.last_reload.set(unix_now());
        tracing::info!(
            zones = summary.zones,
            added = ?summary.zones_added,
            removed = ?summary.zones_removed,
            changed = ?summary.zones_changed,
            services_added = ?summary.services_added,
            services_removed = ?summary.services_removed,
            services_changed = ?summary.services_changed,
            regions_added = ?summary.regions_added,
            regions_removed = ?summary.regions_removed,
            regions_changed = ?summary.regions_changed,
            "reloaded zones"
        );
        Ok(summary)
    }
}

fn diff(old: &Config, new: &Config) -> ReloadSummary {
    let mut s = ReloadSummary {
        zones: new.zones.len(),
        ..ReloadSummary::default()
    };
    /// Compare two keyed lists: what is only in `new`, only in `old`, or
    /// differs. Hash maps: 100,000 services must not compare pairwise.
    fn compare<T: PartialEq>(
        old: Vec<(String, T)>,
        new: Vec<(String, T)>,
        added: &mut Vec<String>,
        removed: &mut Vec<String>,
        changed: &mut Vec<String>,
    ) {
        let mut old: std::collections::HashMap<String, T> = old.into_iter().collect();
        for (k, v) in new {
            match old.remove(&k) {
                None => added.push(k),
                Some(ov) if ov != v => changed.push(k),
                Some(_) => {}
            }
        }
        removed.extend(old.into_keys());
        added.sort();
        removed.sort();
        changed.sort();
    }
    let zones = |c: &Config| {
        c.zones
            .iter()
            .map(|z| (dns::zone_label(z), z.content_hash))
            .collect::<Vec<_>>()
    };
    compare(
        zones(old),
        zones(new),
        &mut s.zones_added,
        &mut s.zones_removed,
        &mut s.zones_changed,
    );
    let services = |c: &Config| {
        c.zones
            .iter()
            .flat_map(|z| {
                z.services
                    .iter()
                    .map(move |svc| (format!("{}/{}", dns::zone_label(z), svc.key), svc.clone()))
            })
            .collect::<Vec<_>>()
    };
    compare(
        services(old),
        services(new),
        &mut s.services_added,
        &mut s.services_removed,
        &mut s.services_changed,
    );
    let regions = |c: &Config| {
        c.zones
            .iter()
            .flat_map(|z| {
                z.regions
                    .values()
                    .map(move |r| (format!("{}/{}", dns::zone_label(z), r.name), r.clone()))
            })
            .collect::<Vec<_>>()
    };
    compare(
        regions(old),
        regions(new),
        &mut s.regions_added,
        &mut s.regions_removed,
        &mut s.regions_changed,
    );
    s
}

/// Reload when a zone file is added, removed or changed: polls the files'
/// size and modification time every second and reloads once they have been
/// stable for one more poll (editors write in several steps). Polling needs
/// no extra dependency and a second of delay is fine for config changes.
async fn watch_zones(shared: Arc<Shared>, shutdown: CancellationToken) {
    let fingerprint = |paths: &[PathBuf]| -> Vec<(PathBuf, u64, Option<std::time::SystemTime>)> {
        config::zone_files(paths)
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                let m = std::fs::metadata(&p).ok();
                let len = m.as_ref().map(|m| m.len()).unwrap_or(0);
                let mtime = m.and_then(|m| m.modified().ok());
                (p, len, mtime)
            })
            .collect()
    };
    let mut last = fingerprint(&shared.settings.zones);
    let mut pending: Option<Vec<(PathBuf, u64, Option<std::time::SystemTime>)>> = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = shutdown.cancelled() => return,
        }
        let now = fingerprint(&shared.settings.zones);
        match &pending {
            Some(p) if *p == now => {
                tracing::info!("zone files changed: reloading");
                let _ = shared.reload().await;
                last = now;
                pending = None;
            }
            _ if now != last => pending = Some(now),
            _ => pending = None,
        }
    }
}

#[cfg(unix)]
async fn sighup_reloads(shared: Arc<Shared>, shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reload through the admin API only");
            return;
        }
    };
    loop {
        tokio::select! {
            s = hup.recv() => if s.is_none() { return },
            () = shutdown.cancelled() => return,
        }
        tracing::info!("SIGHUP: reloading zones");
        let _ = shared.reload().await;
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
