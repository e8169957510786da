//! The state file: last verdicts and operator overrides, so a restart
//! resumes where it stopped instead of flapping. JSON, written atomically
//! (temporary file, then rename) after changes settle.

use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{EndpointCell, EndpointKey, Override, OverrideNote, RegionCell};
use crate::model::Check;

/// Format version of the file.
const VERSION: u32 = 1;

/// The fingerprint of how an endpoint is probed: [`Check::probe_fingerprint`],
/// 0 for an unchecked endpoint.
pub fn fingerprint(check: Option<&Check>) -> u64 {
    check.map_or(0, Check::probe_fingerprint)
}

/// One endpoint's saved state.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SavedEndpoint {
    /// Zone label.
    pub zone: String,
    /// Region.
    pub region: String,
    /// Address.
    pub addr: IpAddr,
    /// Fingerprint of the check it was probed with (shown; an endpoint
    /// keeps its verdict when its check changes).
    pub check: u64,
    /// The verdict.
    pub up: Option<bool>,
    /// Override.
    #[serde(rename = "override", default)]
    pub overridden: Override,
    /// Unix milliseconds of the last change.
    pub since_ms: u64,
    /// The override's comment, expiry, and whether it is local.
    #[serde(flatten, default)]
    pub note: OverrideNote,
}

impl SavedEndpoint {
    /// When the state last changed.
    pub fn since(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.since_ms)
    }
}

/// One region's saved override.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SavedRegion {
    /// Zone label.
    pub zone: String,
    /// Region.
    pub region: String,
    /// Override.
    #[serde(rename = "override")]
    pub overridden: Override,
    /// Its comment, expiry, and whether it is local.
    #[serde(flatten, default)]
    pub note: OverrideNote,
}

/// The state file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct StateFile {
    /// Format version.
    pub version: u32,
    /// Endpoints.
    pub endpoints: Vec<SavedEndpoint>,
    /// Regions with an override.
    pub regions: Vec<SavedRegion>,
    /// Serials of zones whose serial gslb manages.
    #[serde(default)]
    pub zones: Vec<SavedZone>,
}

/// The serial gslb gave a zone, and the content it was given for.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SavedZone {
    /// Zone label.
    pub zone: String,
    /// Serial served.
    pub serial: u32,
    /// Hash of the zone file's text; for a zone with `[transfer]`, of the
    /// zone as transferred (`dns::journal`).
    pub content_hash: u64,
}

impl StateFile {
    /// Read the file; `Ok(None)` when it does not exist.
    pub fn read(path: &Path) -> std::io::Result<Option<StateFile>> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        Self::parse(&text).map(Some)
    }

    /// Parse a state file's text.
    pub fn parse(text: &str) -> std::io::Result<StateFile> {
        let state: StateFile = serde_json::from_str(text)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        if state.version != VERSION {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("state file version {} is not {VERSION}", state.version),
            ));
        }
        Ok(state)
    }

    /// What can still be read of a damaged or foreign state file (cut
    /// short, edited badly, written by a newer version): every complete
    /// endpoint, region and zone entry that parses on its own. Endpoint
    /// verdicts are dropped (a file we cannot read whole is no evidence);
    /// overrides and zone serials are kept.
    pub fn salvage(text: &str) -> StateFile {
        let mut out = StateFile {
            version: VERSION,
            ..StateFile::default()
        };
        for obj in json_objects(text) {
            if let Ok(mut e) = serde_json::from_str::<SavedEndpoint>(obj) {
                e.up = None;
                out.endpoints.push(e);
            } else if let Ok(r) = serde_json::from_str::<SavedRegion>(obj) {
                out.regions.push(r);
            } else if let Ok(z) = serde_json::from_str::<SavedZone>(obj) {
                out.zones.push(z);
            }
        }
        out
    }

    /// Read the state file at `path` for a start. A file that cannot be
    /// read whole is renamed aside (`NAME.damaged-UNIXSECONDS`) before
    /// anything new is written, and what still parses of it is returned
    /// ([`StateFile::salvage`]). `Err` when it could not be moved aside:
    /// then nothing may be written over it.
    pub fn recover(path: &Path) -> Result<Recovered, String> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Recovered::Absent),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let text = String::from_utf8_lossy(&bytes);
        let error = match Self::parse(&text) {
            Ok(s) => return Ok(Recovered::Read(s)),
            Err(e) => e.to_string(),
        };
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".damaged-{secs}"));
        let aside = std::path::PathBuf::from(name);
        if aside.exists() {
            return Err(format!(
                "{} is unreadable ({error}) and {} exists already",
                path.display(),
                aside.display()
            ));
        }
        std::fs::rename(path, &aside).map_err(|e| {
            format!(
                "{} is unreadable ({error}) and cannot be moved aside: {e}",
                path.display()
            )
        })?;
        Ok(Recovered::SetAside {
            state: Self::salvage(&text),
            aside,
            error,
        })
    }

    /// Write atomically: a crash never leaves a half-written file.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(
                serde_json::to_string_pretty(self)
                    .expect("state serialises")
                    .as_bytes(),
            )?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if written.is_err() {
            // A full disk leaves a cut temporary file: nothing of it may
            // stay behind (the state file itself is untouched).
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    /// Capture the current cells.
    pub fn capture<'a>(
        endpoints: impl Iterator<Item = (&'a EndpointKey, Option<&'a Check>, &'a Arc<EndpointCell>)>,
        regions: impl Iterator<Item = &'a Arc<RegionCell>>,
    ) -> StateFile {
        let mut eps: Vec<SavedEndpoint> = endpoints
            .map(|(k, check, cell)| SavedEndpoint {
                zone: k.zone.clone(),
                region: k.region.clone(),
                addr: k.addr,
                check: fingerprint(check),
                up: Some(cell.probed_up()),
                overridden: cell.override_state(),
                since_ms: cell
                    .detail()
                    .since
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0),
                note: OverrideNote::default(),
            })
            .collect();
        eps.sort_by(|a, b| (&a.zone, &a.region, a.addr).cmp(&(&b.zone, &b.region, b.addr)));
        let mut regions: Vec<SavedRegion> = regions
            .filter(|r| r.override_state() != Override::Auto)
            .map(|r| SavedRegion {
                zone: r.zone.clone(),
                region: r.name.clone(),
                overridden: r.override_state(),
                note: OverrideNote::default(),
            })
            .collect();
        regions.sort_by(|a, b| (&a.zone, &a.region).cmp(&(&b.zone, &b.region)));
        StateFile {
            version: VERSION,
            endpoints: eps,
            regions,
            zones: Vec::new(),
        }
    }

    /// The saved state of an endpoint, whatever its check is now: the
    /// verdict stands until the (new) check's own fall/rise decides.
    pub fn endpoint(&self, key: &EndpointKey) -> Option<SavedEndpoint> {
        self.endpoints
            .iter()
            .find(|e| e.zone == key.zone && e.region == key.region && e.addr == key.addr)
            .cloned()
    }

    /// The saved override of a region, with its note.
    pub fn region_override(&self, zone: &str, region: &str) -> Option<(Override, OverrideNote)> {
        self.regions
            .iter()
            .find(|r| r.zone == zone && r.region == region)
            .map(|r| (r.overridden, r.note.clone()))
    }

    /// Index for quick checks in tests and tools.
    pub fn by_endpoint(&self) -> HashMap<(String, String, IpAddr), &SavedEndpoint> {
        self.endpoints
            .iter()
            .map(|e| ((e.zone.clone(), e.region.clone(), e.addr), e))
            .collect()
    }
}

/// What [`StateFile::recover`] found.
#[derive(Debug)]
pub enum Recovered {
    /// No state file yet.
    Absent,
    /// Read whole.
    Read(StateFile),
    /// Unreadable: moved aside, and what still parses of it.
    SetAside {
        /// What could be salvaged.
        state: StateFile,
        /// Where the damaged file is kept now.
        aside: std::path::PathBuf,
        /// Why it could not be read.
        error: String,
    },
}

/// Every balanced `{...}` in `text` that contains no other object, outside
/// and inside strings told apart: the entries of a state file, each of
/// which parses alone even where the whole does not.
fn json_objects(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    // Stack of (start, has a nested object).
    let mut stack: Vec<(usize, bool)> = Vec::new();
    let (mut in_str, mut escaped) = (false, false);
    for (i, c) in text.char_indices() {
        if in_str {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '{' => {
                if let Some(top) = stack.last_mut() {
                    top.1 = true;
                }
                stack.push((i, false));
            }
            '}' => {
                if let Some((start, nested)) = stack.pop()
                    && !nested
                {
                    out.push(&text[start..=i]);
                }
            }
            _ => {}
        }
    }
    out
}

/// Serialise a `SystemTime` as unix milliseconds.
pub(crate) mod unix_millis {
    use std::time::{SystemTime, UNIX_EPOCH};

    use serde::Serializer;

    /// Serialise.
    pub(crate) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        )
    }
}

/// Saving the table's state: what goes in the file, and when.
impl super::HealthTable {
    /// The current state in state-file form.
    pub fn state(&self) -> StateFile {
        let inner = self.inner.lock().expect("health lock poisoned");
        let mut state = StateFile::capture(
            inner
                .endpoints
                .iter()
                .map(|(k, e)| (k, e.check.as_deref(), &e.cell)),
            inner.regions.values(),
        );
        for kept in inner.absent.values() {
            state.endpoints.extend(kept.endpoints.iter().cloned());
            state.regions.extend(kept.regions.iter().cloned());
        }
        drop(inner);
        let notes = self.notes.lock().expect("notes lock poisoned");
        for e in state.endpoints.iter_mut() {
            if let Some(n) = notes
                .notes
                .get(&(e.zone.clone(), e.region.clone(), Some(e.addr)))
            {
                e.note = n.clone();
            }
        }
        for r in state.regions.iter_mut() {
            if let Some(n) = notes.notes.get(&(r.zone.clone(), r.region.clone(), None)) {
                r.note = n.clone();
            }
        }
        drop(notes);
        state.zones = self.zone_serials();
        state
    }

    /// The serials last given to zones (restored from the state file at start).
    pub fn zone_serials(&self) -> Vec<SavedZone> {
        self.zone_serials
            .lock()
            .expect("serial lock poisoned")
            .clone()
    }

    /// Change the serials given to zones in place (under their lock), and
    /// persist them.
    pub fn with_zone_serials<R>(&self, f: impl FnOnce(&mut Vec<SavedZone>) -> R) -> R {
        let r = f(&mut self.zone_serials.lock().expect("serial lock poisoned"));
        self.dirty.notify_one();
        r
    }

    /// Remember the serial given to one zone, and persist it.
    pub fn save_zone_serial(&self, zone: SavedZone) {
        let mut all = self.zone_serials.lock().expect("serial lock poisoned");
        all.retain(|z| z.zone != zone.zone);
        all.push(zone);
        drop(all);
        self.dirty.notify_one();
    }

    /// Write the state file whenever health changes (debounced), and once
    /// more at shutdown. Returns when `shutdown` is cancelled.
    pub async fn persist_loop(self: Arc<Self>) {
        let Some(path) = self.state_file.clone() else {
            return;
        };
        loop {
            tokio::select! {
                () = self.dirty.notified() => {}
                () = self.shutdown.cancelled() => break,
            }
            // Let a burst of changes settle into one write.
            tokio::select! {
                () = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
                () = self.shutdown.cancelled() => break,
            }
            let _ = self.write_state(&path).await;
        }
        let _ = self.write_state(&path).await;
    }

    /// Write the state file now, for a change an operator must know is
    /// saved (an override): `Ok(true)` once written, `Ok(false)` when there
    /// is no state file, `Err` saying why it could not be written.
    pub async fn persist_now(&self) -> Result<bool, String> {
        let Some(path) = self.state_file.clone() else {
            return Ok(false);
        };
        self.write_state(&path).await.map(|()| true)
    }

    async fn write_state(&self, path: &std::path::Path) -> Result<(), String> {
        let _one = self.writing.lock().await;
        let state = self.state();
        let path = path.to_path_buf();
        let res =
            tokio::task::spawn_blocking(move || state.write(&path).map_err(|e| (path, e))).await;
        match res {
            Ok(Ok(())) => Ok(()),
            Ok(Err((path, e))) => {
                // A full or read-only disk fails every write: one line a minute.
                static FAILED: crate::throttle::LogThrottle =
                    crate::throttle::LogThrottle::new(std::time::Duration::from_secs(60));
                if let Some(n) = FAILED.allow() {
                    tracing::warn!(file = %path.display(), error = %e, "cannot write the state file{}", crate::throttle::suppressed_note(n));
                }
                Err(format!(
                    "cannot write the state file {}: {e}",
                    path.display()
                ))
            }
            Err(e) => Err(format!("the state file writer failed: {e}")),
        }
    }
}
