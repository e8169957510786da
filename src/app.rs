//! Wiring: load zones, build the snapshot, bind listeners, spawn the DNS,
//! health and admin tasks, reload on SIGHUP, shut down on one token.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::admin::{AdminAuth, AdminState, StatusSource};
use crate::cluster::Cluster;
use crate::config::ConfigErrors;
use crate::dns::{self, Engine, EngineOptions};
use crate::events::Events;
use crate::health::{HealthTable, ProbeFactory, RealProbes};
use crate::metrics::Metrics;
use crate::model::ClusterSettings;
use crate::reload::{self, assign_serials, build_snapshot, unix_now, zone_hashes};
pub use crate::reload::{ReloadSummary, Reloader};

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
    /// Host names mutating admin calls may use (lowercase).
    pub admin_hosts: Vec<String>,
    /// Health state file, if enabled.
    pub state_file: Option<PathBuf>,
    /// EDNS payload size.
    pub udp_payload: u16,
    /// Idle timeout of DNS-over-TCP connections.
    pub tcp_idle: Duration,
    /// Most DNS-over-TCP connections (lowered to fit the descriptor limit).
    pub tcp_connections: usize,
    /// Most DNS-over-TCP connections from one /24 or /56.
    pub tcp_connections_per_prefix: usize,
    /// Most DNS-over-TCP connections from one IPv6 /48.
    pub tcp_connections_per_48: usize,
    /// Most admin API connections (lowered to fit the descriptor limit).
    pub admin_connections: usize,
    /// Time allowed for an admin request head, or between requests.
    pub admin_header_timeout: Duration,
    /// The answer cache of the whole process, in bytes.
    pub answer_cache_bytes: usize,
    /// Response rate limiting of UDP answers (off: `None`).
    pub rate_limit: Option<crate::dns::rrl::RrlSettings>,
    /// UDP sockets per address.
    pub udp_workers: usize,
    /// Reload when zone files change.
    pub watch: bool,
    /// With `watch`: a zone file that disappears is removed from service
    /// (otherwise such a reload is refused, as for `gslb reload`).
    pub watch_allow_removal: bool,
    /// With `watch`: how long files stay unchanged before a reload.
    pub watch_settle: Duration,
    /// Global webhook for failover events.
    pub webhook: Option<String>,
    /// Key of the webhooks' HMAC signature (none: unsigned).
    pub webhook_secret: Option<String>,
    /// Seed the answer RNGs (tests: reproducible weighted splits).
    pub rng_seed: Option<u64>,
    /// Local address probes connect from.
    pub probe_source: Option<std::net::IpAddr>,
    /// Take part in a cluster through etcd.
    pub cluster: Option<ClusterSettings>,
    /// TSIG keys by name (zone transfers and NOTIFY).
    pub tsig_keys: std::collections::BTreeMap<String, crate::model::TsigKey>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            zones: vec![PathBuf::from("zones")],
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 5353))],
            admin: Some(SocketAddr::from(([127, 0, 0, 1], 9153))),
            admin_token: None,
            admin_hosts: Vec::new(),
            state_file: Some(PathBuf::from("gslb-state.json")),
            udp_payload: dns::DEFAULT_UDP_PAYLOAD,
            tcp_idle: Duration::from_secs(10),
            tcp_connections: 1024,
            tcp_connections_per_prefix: 64,
            tcp_connections_per_48: 128,
            admin_connections: 64,
            answer_cache_bytes: dns::DEFAULT_CACHE_BYTES,
            rate_limit: None,
            admin_header_timeout: crate::admin::AdminLimits::default().header_timeout,
            udp_workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            watch: false,
            watch_allow_removal: false,
            watch_settle: crate::reload::WATCH_SETTLE,
            webhook: None,
            webhook_secret: None,
            rng_seed: None,
            probe_source: None,
            cluster: None,
            tsig_keys: Default::default(),
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
    /// The probes' thread could not be started.
    #[error("cannot start the probing thread: {0}")]
    Prober(std::io::Error),
}

/// A running server: its addresses and a handle on each part.
pub struct Server {
    /// Bound DNS addresses (port 0 resolved).
    pub dns_addrs: Vec<SocketAddr>,
    /// Bound admin address.
    pub admin_addr: Option<SocketAddr>,
    /// The DNS engine (holds the served snapshot).
    pub engine: Arc<Engine>,
    /// Health cells, overrides, transitions.
    pub health: Arc<HealthTable>,
    /// Metrics.
    pub metrics: Metrics,
    /// The cluster this node is part of, if any.
    pub cluster: Option<Arc<Cluster>>,
    /// Reloads the zones.
    pub reloader: Arc<Reloader>,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
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
        let mut config = match reload::load(&settings.zones).and_then(|c| {
            let conflicts =
                crate::config::cross_check(settings.cluster.as_ref(), &settings.tsig_keys, &c);
            if conflicts.is_empty() {
                Ok(c)
            } else {
                Err(ConfigErrors(conflicts))
            }
        }) {
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
        // Descriptors: probes and the rest first, then client connections.
        let nofile = crate::limits::raise_nofile().unwrap_or(1024);
        let sockets = settings.listen.len() * (1 + settings.udp_workers.max(1));
        let (budget, endpoints) = crate::limits::FdBudget::for_config(
            nofile,
            &config,
            sockets,
            crate::health::MAX_CONCURRENT_PROBES,
            settings.tcp_connections,
            settings.admin_connections,
        );
        let lowered = !budget.fits(settings.tcp_connections, settings.admin_connections);
        let msg = format!(
            "file descriptors: limit {nofile}; DNS-over-TCP connections {}, admin {}, {} kept for probing {endpoints} endpoints and the rest{}",
            budget.dns_tcp,
            budget.admin,
            budget.reserve,
            if lowered {
                " (connections lowered to fit: raise LimitNOFILE)"
            } else {
                ""
            }
        );
        if lowered {
            tracing::warn!(nofile, reserve = budget.reserve, "{msg}");
        } else {
            tracing::info!(nofile, reserve = budget.reserve, "{msg}");
        }
        // probe-source must be an address of this host: every probe would
        // fail otherwise.
        if let Some(source) = settings.probe_source {
            let probe = std::net::TcpListener::bind(SocketAddr::new(source, 0));
            if let Err(e) = probe {
                return Err(AppError::Bind(std::io::Error::new(
                    e.kind(),
                    format!("probe-source {source} is not an address of this host: {e}"),
                )));
            }
        }
        // Bind before anything starts, so a busy port fails fast.
        let listeners = match dns::from_systemd(settings.udp_workers, settings.tcp_idle)
            .map_err(AppError::Bind)?
        {
            Some(l) => l,
            None => dns::bind(&settings.listen, settings.udp_workers, settings.tcp_idle)
                .map_err(AppError::Bind)?,
        };
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
        let health = Arc::new(
            HealthTable::new(
                metrics.clone(),
                probes,
                settings.state_file.clone(),
                shutdown.clone(),
            )
            .probing_on_own_thread()
            .map_err(AppError::Prober)?,
        );
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
        let transfers = Arc::new(
            dns::Transfers::new(settings.tsig_keys.clone(), metrics.transfers.clone())
                .with_notify_sources(dns_addrs.iter().map(|a| a.ip())),
        );
        if let Some(c) = &cluster {
            let _ = transfers.cluster.set(c.clone());
        }
        // Signed zones answer their first query from signatures made here.
        let zones = config.zones.clone();
        tokio::task::spawn_blocking(move || dns::signed::sign_ahead_all(&zones, &[]))
            .await
            .expect("signing ahead does not panic");
        let snapshot = build_snapshot(&config, &health, &metrics, &transfers);
        if let Some(c) = &cluster {
            c.zones_loaded(zone_hashes(&config), true);
        }
        let opts = EngineOptions {
            udp_payload: settings.udp_payload,
            rng_seed: settings.rng_seed,
            cache_bytes_per_worker: settings.answer_cache_bytes
                / (settings.udp_workers.max(1) * settings.listen.len().max(1)),
            rrl: settings.rate_limit.clone().map(|r| {
                tracing::info!(
                    rate = r.rate,
                    slip = r.slip,
                    whitelist = r.whitelist.len(),
                    "response rate limiting: {} responses a second per /24 or /56 and class",
                    r.rate
                );
                Arc::new(dns::rrl::Rrl::new(r, metrics.rrl.clone()))
            }),
            ..EngineOptions::default()
        };
        let engine = Arc::new(
            Engine::new(snapshot, opts, metrics.dns.clone(), health.epoch.clone())
                .with_transfers(transfers),
        );
        // The first version of every transferred zone, before any answer;
        // transitions from now on are followed (subscribed first: none is
        // missed while the first versions are made).
        let transitions = dns::journal::subscribe(&health);
        dns::journal::refresh_all(&engine, &health).await;
        tasks.spawn(dns::notify::run(engine.clone(), shutdown.clone()));
        tasks.spawn(dns::signed::keep_ahead(engine.clone(), shutdown.clone()));
        // Answers cached with signatures are made again every hour: a
        // signature's validity window moves on (`dnssec::sign`) even when
        // no verdict or reload would empty the caches.
        tasks.spawn({
            let (epoch, shutdown) = (health.epoch.clone(), shutdown.clone());
            async move {
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(3600)) => epoch.bump(),
                        () = shutdown.cancelled() => return,
                    }
                }
            }
        });
        tasks.spawn(dns::journal::follow(
            engine.clone(),
            health.clone(),
            transitions,
            shutdown.clone(),
        ));
        // Reading the zones left their parse trees' pages with the allocator.
        reload::give_back_memory();
        let reloader = Arc::new(Reloader {
            zones: settings.zones.clone(),
            engine: engine.clone(),
            health: health.clone(),
            metrics: metrics.clone(),
            cluster: cluster.clone(),
            tsig_keys: settings.tsig_keys.clone(),
            lock: tokio::sync::Mutex::new(()),
        });
        let tcp = dns::TcpLimits {
            max: budget.dns_tcp,
            per_prefix: settings.tcp_connections_per_prefix.max(1),
            per_48: settings.tcp_connections_per_48.max(1),
            per_addr: 0,
            idle: settings.tcp_idle,
        };
        tasks.spawn(dns::serve(
            listeners,
            engine.clone(),
            tcp,
            metrics.dns_tcp.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(health.clone().persist_loop());
        // Overrides with an expiry end by themselves: here the local ones,
        // and alone the shared ones too (in a cluster etcd ends those).
        tasks.spawn(health.clone().expiry_loop(cluster.is_none()));
        let status = StatusSource {
            engine: engine.clone(),
            health: health.clone(),
            cluster: cluster.clone(),
        };
        let admin_addr = match admin {
            Some(l) => {
                let limits = crate::admin::AdminLimits {
                    connections: budget.admin,
                    header_timeout: settings.admin_header_timeout,
                    // Live streams never take every slot: /healthz and
                    // /metrics keep half.
                    event_streams: crate::admin::AdminLimits::default()
                        .event_streams
                        .min(budget.admin / 2)
                        .max(1),
                };
                let addr = l.local_addr().ok();
                let state = AdminState {
                    status: status.clone(),
                    metrics: metrics.clone(),
                    reloader: reloader.clone(),
                    auth: Arc::new(AdminAuth {
                        // Compared with the client's token trimmed: trimmed too.
                        token: settings.admin_token.as_ref().map(|t| t.trim().to_string()),
                        loopback: settings.admin.is_some_and(|a| a.ip().is_loopback()),
                        hosts: settings
                            .admin_hosts
                            .iter()
                            .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
                            .collect(),
                    }),
                    feed: crate::admin::StatusFeed::with_limits(
                        limits.event_streams,
                        limits.streams_per_address(),
                    ),
                };
                tasks.spawn(crate::admin::serve(
                    l,
                    state,
                    limits,
                    metrics.admin_conns.clone(),
                    shutdown.clone(),
                ));
                addr
            }
            None => None,
        };
        {
            let health = health.clone();
            let token = shutdown.clone();
            tasks.spawn(async move {
                token.cancelled().await;
                health.stop().await;
            });
        }
        #[cfg(unix)]
        tasks.spawn(reload::sighup_reloads(reloader.clone(), shutdown.clone()));
        tasks.spawn(reload::key_events(reloader.clone(), shutdown.clone()));
        let events = Events {
            engine: engine.clone(),
            health: health.clone(),
            cluster: cluster.clone(),
            metrics: metrics.clone(),
            webhook: settings.webhook.clone(),
            secret: settings.webhook_secret.as_deref().map(Arc::from),
        };
        tasks.spawn(crate::events::run(events, shutdown.clone()));
        if settings.watch {
            tasks.spawn(reload::watch_zones(
                reloader.clone(),
                settings.watch_allow_removal,
                settings.watch_settle,
                shutdown.clone(),
            ));
        }
        Ok(Server {
            dns_addrs,
            admin_addr,
            engine,
            health,
            metrics,
            cluster,
            reloader,
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

    /// Reload the zones (see [`Reloader::reload`]).
    pub async fn reload(&self) -> Result<ReloadSummary, ConfigErrors> {
        self.reloader.reload(false).await
    }

    /// Reload, removing the zones whose files are gone.
    pub async fn reload_allowing_removal(&self) -> Result<ReloadSummary, ConfigErrors> {
        self.reloader.reload(true).await
    }

    /// The status document, as `GET /api/v1/status` serves it.
    pub fn status(&self) -> crate::admin::Status {
        crate::admin::status(&self.status_source())
    }

    /// What the status document is built from.
    pub fn status_source(&self) -> StatusSource {
        StatusSource {
            engine: self.engine.clone(),
            health: self.health.clone(),
            cluster: self.cluster.clone(),
        }
    }
}
