//! Reload: the one writer of the served snapshot after start. Loads the
//! zone files, keeps serving the old snapshot on any error, otherwise builds
//! the new one on the same health cells and swaps it in; says what changed.
//! Triggered by SIGHUP, the admin API, the CLI and (with `--watch`) file
//! changes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
use crate::config::{self, ConfigErrors, LoadOptions};
use crate::dns::{Engine, ServedZone, Snapshot};
use crate::health::HealthTable;
use crate::metrics::Metrics;
use crate::model::Config;

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

/// Reloads the zones of a running server.
pub struct Reloader {
    /// Zone files or folders.
    pub(crate) zones: Vec<PathBuf>,
    pub(crate) engine: Arc<Engine>,
    pub(crate) health: Arc<HealthTable>,
    pub(crate) metrics: Metrics,
    pub(crate) cluster: Option<Arc<Cluster>>,
    /// The settings file's TSIG keys, which zones name.
    pub(crate) tsig_keys: std::collections::BTreeMap<String, crate::model::TsigKey>,
    /// Serialises reloads (held across the file reads, hence tokio's).
    pub(crate) lock: tokio::sync::Mutex<()>,
}

impl Reloader {
    /// The configuration being served, from the snapshot itself: there is
    /// no second copy that could disagree with what DNS answers.
    pub fn served_config(&self) -> Config {
        Config {
            zones: self
                .engine
                .snapshot()
                .zones()
                .map(|z| z.zone.clone())
                .collect(),
        }
    }

    /// Load every zone file into a new snapshot; on any error keep serving the
    /// old one and return every problem; otherwise swap atomically. A
    /// reload that would stop serving a zone (its file gone, moved or
    /// renamed) is refused unless `allow_removal`: a file deleted by
    /// mistake, or not yet restored by a deploy, must not take a zone off
    /// the air.
    pub async fn reload(&self, allow_removal: bool) -> Result<ReloadSummary, ConfigErrors> {
        let _serial = self.lock.lock().await;
        let zones = self.zones.clone();
        let cluster = self.cluster.as_ref().map(|c| c.settings().clone());
        let tsig = self.tsig_keys.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            load(&zones).and_then(|c| {
                let conflicts = config::cross_check(cluster.as_ref(), &tsig, &c);
                if conflicts.is_empty() {
                    Ok(c)
                } else {
                    Err(ConfigErrors(conflicts))
                }
            })
        })
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
        let old = self.served_config();
        let summary = diff(&old, &new);
        if !summary.zones_removed.is_empty() && !allow_removal {
            self.metrics.reloads.with_label_values(&["error"]).inc();
            let errors: Vec<config::ConfigError> = old
                .zones
                .iter()
                .filter(|z| summary.zones_removed.contains(&z.label()))
                .map(|z| config::ConfigError {
                    origin: crate::model::Origin {
                        file: z.origin.file.clone(),
                        line: 0,
                        col: 0,
                    },
                    msg: format!(
                        "zone {} would no longer be served (its file is gone): reload refused; to remove it, reload with `gslb reload --allow-removal` (API: POST /api/v1/reload?allow-removal=true)",
                        z.name
                    ),
                })
                .collect();
            tracing::warn!(
                removed = ?summary.zones_removed,
                "reload refused: it would stop serving zones whose files are gone; still serving the previous zones"
            );
            return Err(ConfigErrors(errors));
        }
        assign_serials(&mut new, &self.health);
        // Signed zones answer their first query from signatures made here
        // (or kept from the old zones when the keys are the same).
        let (zones, old_zones) = (new.zones.clone(), old.zones.clone());
        tokio::task::spawn_blocking(move || {
            crate::dns::signed::sign_ahead_all(&zones, &old_zones);
        })
        .await
        .expect("signing ahead does not panic");
        let snapshot = build_snapshot(&new, &self.health, &self.metrics, &self.engine.transfers);
        if let Some(c) = &self.cluster {
            c.zones_loaded(zone_hashes(&new), false);
        }
        self.engine.store(snapshot);
        self.engine.transfers.reconfigured();
        crate::dns::journal::refresh_all(&self.engine, &self.health).await;
        give_back_memory();
        self.metrics.reloads.with_label_values(&["success"]).inc();
        self.metrics.last_reload.set(unix_now());
        if !summary.zones_removed.is_empty() {
            tracing::warn!(removed = %summary.zones_removed.join(", "), "zones removed: no longer served (REFUSED); their overrides are kept for when they return");
        }
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

/// After a reload, give the pages the old zones held back to the system,
/// once they are freed (the UDP workers let go of the old snapshot at their
/// next query; a second is plenty). glibc keeps freed memory in its arenas,
/// one per thread that allocated: without this, RSS after reloads of a
/// large zone climbed to several times its size and never came down, not
/// even when the zone was removed. `malloc_trim` walks every arena.
pub(crate) fn give_back_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tokio::spawn(async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _ = tokio::task::spawn_blocking(crate::trim_allocator).await;
    });
}

pub(crate) fn build_snapshot(
    config: &Config,
    health: &Arc<HealthTable>,
    metrics: &Metrics,
    transfers: &crate::dns::Transfers,
) -> Snapshot {
    let cells = health.apply(config);
    let transferred: Vec<String> = config
        .zones
        .iter()
        .filter(|z| z.transfer.is_some())
        .map(|z| z.label())
        .collect();
    transfers.retain(&transferred);
    Snapshot::new(
        config
            .zones
            .iter()
            .zip(cells)
            .map(|(z, h)| {
                let mut served = ServedZone::new(z.clone(), h, &metrics.dns);
                if z.transfer.is_some() {
                    served.journal = Some(transfers.journal(&z.label()));
                }
                served
            })
            .collect(),
    )
}

/// Zone label to the hash of its file, as a cluster compares them.
pub(crate) fn zone_hashes(config: &Config) -> std::collections::BTreeMap<String, u64> {
    config
        .zones
        .iter()
        .map(|z| (z.label(), z.content_hash))
        .collect()
}

/// Load the zone files.
pub(crate) fn load(zones: &[PathBuf]) -> Result<Config, ConfigErrors> {
    config::load(zones, LoadOptions::default())
}

/// Give zones without an explicit `serial` theirs: an unchanged file keeps
/// the serial it had (across reloads and restarts, via the state file); a
/// changed or new one gets the current unix time, or the previous serial + 1
/// when the time is not later in RFC 1982 serial arithmetic, so a serial
/// always moves forward as secondaries compare it, wrapping past 2^32 - 1.
pub(crate) fn assign_serials(config: &mut Config, health: &HealthTable) {
    // Modulo 2^32, as serial arithmetic counts (and past 2106 too).
    let now = unix_now() as u32;
    // In place, under the list's lock: a transferred zone's entry, which
    // `dns::journal` keeps, is never overwritten by a stale copy.
    health.with_zone_serials(|saved| {
        saved.retain(|p| {
            config
                .zones
                .iter()
                .any(|z| z.label() == p.zone && (z.serial_auto || z.transfer.is_some()))
        });
        for zone in config.zones.iter_mut() {
            // A transferred zone's serial follows the zone as transferred
            // (`dns::journal`), which keeps its own entry.
            if zone.transfer.is_some() || !zone.serial_auto {
                continue;
            }
            let label = zone.label();
            let serial = match saved.iter().find(|p| p.zone == label) {
                Some(p) if p.content_hash == zone.content_hash => p.serial,
                Some(p) => next_serial(p.serial, now),
                None => now,
            };
            Arc::make_mut(zone).set_serial(serial);
            saved.retain(|p| p.zone != label);
            saved.push(crate::health::SavedZone {
                zone: label,
                serial,
                content_hash: zone.content_hash,
            });
        }
    });
}

/// RFC 1982 §3.2: whether serial `a` is greater than `b` (the comparison
/// secondaries make). Serials 2^31 apart compare neither way.
pub(crate) fn serial_gt(a: u32, b: u32) -> bool {
    const HALF: u32 = 1 << 31;
    (a < b && b - a > HALF) || (a > b && a - b < HALF)
}

/// The serial of a changed zone after `prev`: the time when that is greater,
/// else `prev + 1` modulo 2^32 (RFC 1982 §3.1 addition). Never `prev`: a
/// saturating `+ 1` pinned 4294967295 for good.
pub(crate) fn next_serial(prev: u32, now: u32) -> u32 {
    if serial_gt(now, prev) {
        now
    } else {
        prev.wrapping_add(1)
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
            .map(|z| (z.label(), z.content_hash))
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
                    .map(move |svc| (format!("{}/{}", z.label(), svc.key), svc.clone()))
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
                    .map(move |r| (format!("{}/{}", z.label(), r.name), r.clone()))
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

/// How long the files must stay unchanged before `--watch` reloads them
/// (`watch-settle`).
pub const WATCH_SETTLE: Duration = Duration::from_secs(3);
/// How often `--watch` looks at the files.
const WATCH_POLL: Duration = Duration::from_millis(250);

/// Reload when a zone file is added, removed or changed, or a geo database
/// the served zones read (geoipupdate replacing it, say): polls the files'
/// size and modification time every [`WATCH_POLL`] and reloads once they
/// have stayed unchanged for `settle` ([`WATCH_SETTLE`] by default). A file
/// written in steps (an editor, a deploy tool, a copy in two parts) may
/// parse half-written; a reload of it would be accepted, so only files that
/// have settled are read. A reload that fails (the settled files do not
/// parse) keeps the zones served and says why, as any reload. Polling needs
/// no extra dependency, and seconds of delay are fine for config changes.
///
/// The files are first looked at when this is called, not when the task
/// first runs: a change made in between would otherwise be the baseline,
/// and never reloaded.
pub(crate) fn watch_zones(
    reloader: Arc<Reloader>,
    allow_removal: bool,
    settle: Duration,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> {
    let first = files_fingerprint(&reloader);
    watch_from(reloader, allow_removal, settle, shutdown, first)
}

/// What the watcher compares: every zone file and geo database the served
/// zones read, with size and modification time.
type FilesFingerprint = Vec<(PathBuf, u64, Option<std::time::SystemTime>)>;

fn files_fingerprint(reloader: &Reloader) -> FilesFingerprint {
    let fingerprint = |paths: &[PathBuf]| -> FilesFingerprint {
        let databases: Vec<PathBuf> = reloader
            .served_config()
            .zones
            .iter()
            .flat_map(|z| z.geo.values())
            .filter_map(|m| m.database.as_ref().map(|d| d.path.clone()))
            .collect();
        config::zone_files(paths)
            .unwrap_or_default()
            .into_iter()
            .chain(databases)
            .map(|p| {
                let m = std::fs::metadata(&p).ok();
                let len = m.as_ref().map(|m| m.len()).unwrap_or(0);
                let mtime = m.and_then(|m| m.modified().ok());
                (p, len, mtime)
            })
            .collect()
    };
    fingerprint(&reloader.zones)
}

async fn watch_from(
    reloader: Arc<Reloader>,
    allow_removal: bool,
    settle: Duration,
    shutdown: CancellationToken,
    mut last: FilesFingerprint,
) {
    // The files as last seen, and since when they have looked so.
    let mut seen = last.clone();
    let mut since = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep(WATCH_POLL) => {}
            () = shutdown.cancelled() => return,
        }
        let now = files_fingerprint(&reloader);
        if now != seen {
            seen = now;
            since = tokio::time::Instant::now();
            continue;
        }
        if seen != last && since.elapsed() >= settle {
            tracing::info!(settle = %humantime::format_duration(settle), "zone files changed and settled: reloading");
            let _ = reloader.reload(allow_removal).await;
            last = seen.clone();
        }
    }
}

#[cfg(unix)]
pub(crate) async fn sighup_reloads(reloader: Arc<Reloader>, shutdown: CancellationToken) {
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
        let _ = reloader.reload(false).await;
    }
}

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Load the zones again at each key event (`dnssec::sign`): a key enters
/// or leaves the DNSKEY set, starts or stops signing, at the time its
/// files say, on every node alike. Looks again at least every minute (a
/// reload may bring nearer events). Returns at `shutdown`.
pub async fn key_events(reloader: Arc<Reloader>, shutdown: CancellationToken) {
    loop {
        let next = reloader
            .engine
            .snapshot()
            .zones()
            .filter_map(|z| z.zone.signer.as_ref()?.next_key_event())
            .min();
        let now = std::time::SystemTime::now();
        let wait = match next {
            Some(t) => (std::time::UNIX_EPOCH + Duration::from_secs(t))
                .duration_since(now)
                .map_or(Duration::ZERO, |d| d + Duration::from_millis(10)),
            None => Duration::from_secs(60),
        }
        .min(Duration::from_secs(60));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return,
        }
        let due = next.is_some_and(|t| unix_now() >= t as i64);
        if !due {
            continue;
        }
        tracing::info!(
            "a DNSSEC key changes state now: loading the zones again so the keys follow their timing"
        );
        if let Err(e) = reloader.reload(false).await {
            tracing::warn!(
                problems = e.0.len(),
                "the reload for a key event failed; keys keep their previous state until a reload succeeds (retried in a minute)"
            );
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(60)) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_arithmetic_follows_rfc_1982() {
        assert!(serial_gt(1, 0));
        assert!(!serial_gt(0, 1));
        assert!(!serial_gt(5, 5));
        assert!(serial_gt(0, u32::MAX), "wraps forward");
        assert!(serial_gt(100, u32::MAX - 100));
        assert!(!serial_gt(u32::MAX, 0));
        // 2^31 apart: undefined, neither is greater.
        assert!(!serial_gt(1 << 31, 0) && !serial_gt(0, 1 << 31));
        assert!(serial_gt((1 << 31) - 1, 0));
    }

    #[test]
    fn the_next_serial_always_moves_forward_and_wraps() {
        let now = 1_800_000_000;
        // The time when it is later, else one more.
        assert_eq!(next_serial(1_700_000_000, now), now);
        assert_eq!(next_serial(now, now), now + 1);
        assert_eq!(
            next_serial(2_024_010_101, now),
            2_024_010_102,
            "a dated serial is later"
        );
        // The top of the range: the time is later in serial arithmetic.
        assert_eq!(next_serial(u32::MAX, now), now);
        // ...and when it is not (the time within 2^31 below), wrap to 0.
        assert_eq!(next_serial(u32::MAX, u32::MAX - 5), 0);
        assert_eq!(next_serial(u32::MAX, u32::MAX), 0);
        for prev in [0, 1, now, 1 << 31, u32::MAX - 1, u32::MAX] {
            for t in [0, now, u32::MAX, prev, prev.wrapping_add(1 << 31)] {
                let next = next_serial(prev, t);
                assert!(serial_gt(next, prev), "{prev} at {t} -> {next}");
            }
        }
    }
}
