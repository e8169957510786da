//! Health: probes (HTTP, HTTPS, TCP), the fall/rise threshold machine, the
//! per-endpoint scheduler, operator overrides and the state file.
//!
//! Health flows one way: probe tasks store verdicts in the shared cells
//! ([`state`]) and readers (DNS, metrics, status) load them; no reader ever
//! waits on a probe.

mod state;

pub use state::{EndpointCell, EndpointDetail, Epoch, Override, ProbeOutcome, RegionCell, ZoneHealth};

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::model::{Check, Config, Zone};

/// Identifies an endpoint across reloads: same zone, region, address and
/// check settings means the same endpoint, whose state carries over.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    /// Zone label.
    pub zone: String,
    /// Region name.
    pub region: String,
    /// Address.
    pub addr: IpAddr,
    /// The check, `None` for an unchecked region.
    pub check: Option<Check>,
}

/// All health cells, by key: reload reuses the cells of unchanged endpoints.
#[derive(Default)]
pub struct HealthTable {
    // std Mutex: only taken to build a snapshot or by the admin API, never
    // across an `.await` and never by the DNS path.
    inner: Mutex<HashMap<EndpointKey, Arc<EndpointCell>>>,
    regions: Mutex<HashMap<(String, String), Arc<RegionCell>>>,
}

impl HealthTable {
    /// Cells for every zone of `config`, reusing existing ones.
    pub fn cells_for(&self, config: &Config) -> Vec<Arc<ZoneHealth>> {
        config.zones.iter().map(|z| Arc::new(self.zone_cells(z))).collect()
    }

    fn zone_cells(&self, zone: &Zone) -> ZoneHealth {
        let zname = crate::dns::zone_label(zone);
        let mut eps = self.inner.lock().expect("health lock poisoned");
        let mut regs = self.regions.lock().expect("health lock poisoned");
        let mut regions = Vec::with_capacity(zone.regions.len());
        for region in zone.regions.values() {
            let endpoints: Vec<Arc<EndpointCell>> = region
                .endpoints()
                .iter()
                .map(|&addr| {
                    let key = EndpointKey {
                        zone: zname.clone(),
                        region: region.name.clone(),
                        addr,
                        check: region.check.as_deref().cloned(),
                    };
                    eps.entry(key).or_insert_with(|| Arc::new(EndpointCell::new(addr, true))).clone()
                })
                .collect();
            let rkey = (zname.clone(), region.name.clone());
            let cell = match regs.get(&rkey) {
                Some(old) if old.endpoints.len() == endpoints.len()
                    && old.endpoints.iter().zip(&endpoints).all(|(a, b)| Arc::ptr_eq(a, b))
                    && old.min_healthy == region.min_healthy => old.clone(),
                old => {
                    let cell = RegionCell::new(zname.clone(), region.name.clone(), endpoints, region.min_healthy);
                    if let Some(old) = old {
                        cell.set_override(old.override_state());
                    }
                    Arc::new(cell)
                }
            };
            regs.insert(rkey, cell.clone());
            regions.push(cell);
        }
        ZoneHealth { regions }
    }
}
