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

use super::{EndpointCell, EndpointKey, Override, RegionCell};
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
    /// Hash of the zone file's text.
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

    /// Write atomically: a crash never leaves a half-written file.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(
                serde_json::to_string_pretty(self)
                    .expect("state serialises")
                    .as_bytes(),
            )?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
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
            })
            .collect();
        eps.sort_by(|a, b| (&a.zone, &a.region, a.addr).cmp(&(&b.zone, &b.region, b.addr)));
        let mut regions: Vec<SavedRegion> = regions
            .filter(|r| r.override_state() != Override::Auto)
            .map(|r| SavedRegion {
                zone: r.zone.clone(),
                region: r.name.clone(),
                overridden: r.override_state(),
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

    /// The saved override of a region.
    pub fn region_override(&self, zone: &str, region: &str) -> Option<Override> {
        self.regions
            .iter()
            .find(|r| r.zone == zone && r.region == region)
            .map(|r| r.overridden)
    }

    /// Index for quick checks in tests and tools.
    pub fn by_endpoint(&self) -> HashMap<(String, String, IpAddr), &SavedEndpoint> {
        self.endpoints
            .iter()
            .map(|e| ((e.zone.clone(), e.region.clone(), e.addr), e))
            .collect()
    }
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
