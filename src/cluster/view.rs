//! The cluster's shared state as this node last read it from etcd, and the
//! key layout under `/gslb/<name>/`:
//!
//! | key | value | lease |
//! |---|---|---|
//! | `nodes/<node>` | [`NodeInfo`] | the node's |
//! | `obs/<zone>/<region>/<addr>/<check>/<node>` | [`Observation`] | the node's |
//! | `override/<zone>/<region>[/<addr>]` | [`StoredOverride`] | none |
//! | `events/<zone>/<region>/<to>/<revision>` | the sending node | 10 minutes |
//!
//! Observations live under their node's lease, so the observations present
//! are exactly those of live nodes: a node that dies or is cut off from etcd
//! loses them all in one revision when its lease expires.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::health::{EndpointKey, Override, fingerprint};
use crate::model::Check;

/// One node's verdict on one endpoint, as published.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Observation {
    /// Up or down, by that node's own probes and thresholds.
    pub up: bool,
    /// The deciding probe's reason.
    pub reason: String,
    /// Unix milliseconds of that node's last change.
    pub since_ms: u64,
}

/// What a node publishes about itself.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct NodeInfo {
    /// gslb version.
    pub version: String,
    /// Unix milliseconds when the node started.
    pub started_ms: u64,
    /// Zone label to the fingerprint of its zone file's content.
    pub zones: BTreeMap<String, String>,
}

/// An override as stored.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StoredOverride {
    /// The override.
    pub state: Override,
    /// Node whose API took it.
    pub node: String,
    /// Unix milliseconds.
    pub at_ms: u64,
}

/// What an override applies to: (zone, region, endpoint).
pub type OverrideKey = (String, String, Option<IpAddr>);

/// What one etcd key change touched.
#[derive(Clone, Debug, PartialEq)]
pub enum Touched {
    /// Observations of this endpoint id.
    Endpoint(String),
    /// This override.
    Override(OverrideKey),
    /// The set of nodes or their zone fingerprints.
    Nodes,
    /// Nothing this node follows (event claims, unknown keys).
    Nothing,
}

/// `%` and `/` escaped, so that a name is one key segment.
fn enc(s: &str) -> String {
    s.replace('%', "%25").replace('/', "%2F")
}

fn dec(s: &str) -> String {
    s.replace("%2F", "/").replace("%25", "%")
}

/// The id of an endpoint's votes in etcd: zone, region, address and the
/// versioned fingerprint of what its check probes
/// ([`Check::probe_fingerprint`]), so nodes that probe it differently never
/// mix their votes, while a change of interval or fall/rise keeps them.
pub fn endpoint_id(key: &EndpointKey, check: Option<&Check>) -> String {
    format!(
        "{}/{}/{}/v{}-{:016x}",
        enc(&key.zone),
        enc(&key.region),
        key.addr,
        crate::model::PROBE_FINGERPRINT_VERSION,
        fingerprint(check)
    )
}

/// Key of an override.
pub fn override_key(prefix: &str, k: &OverrideKey) -> String {
    match k.2 {
        None => format!("{prefix}override/{}/{}", enc(&k.0), enc(&k.1)),
        Some(a) => format!("{prefix}override/{}/{}/{a}", enc(&k.0), enc(&k.1)),
    }
}

/// Key of an observation.
pub fn observation_key(prefix: &str, id: &str, node: &str) -> String {
    format!("{prefix}obs/{id}/{node}")
}

/// Key of a node's record.
pub fn node_key(prefix: &str, node: &str) -> String {
    format!("{prefix}nodes/{node}")
}

/// Key of an event claim.
pub fn event_key(prefix: &str, zone: &str, region: &str, to: &str, rev: i64) -> String {
    format!("{prefix}events/{}/{}/{to}/{rev}", enc(zone), enc(region))
}

/// The shared state.
#[derive(Debug, Default)]
pub struct View {
    /// The etcd revision this view reflects.
    pub rev: i64,
    /// Endpoint id to node to observation.
    pub obs: HashMap<String, BTreeMap<String, Observation>>,
    /// Live nodes.
    pub nodes: BTreeMap<String, NodeInfo>,
    /// Overrides in force.
    pub overrides: HashMap<OverrideKey, Override>,
    /// The revision at which each live node last wrote its record (once per
    /// session): tells which nodes have republished after an outage.
    pub node_revs: BTreeMap<String, i64>,
}

impl View {
    /// Apply one key's new value (`None`: deleted). Malformed keys and
    /// values are ignored (another version's, or a hand edit): they must
    /// not stop a node from following the rest.
    pub fn apply(&mut self, prefix: &str, key: &[u8], value: Option<&[u8]>) -> Touched {
        let Some(rest) = std::str::from_utf8(key)
            .ok()
            .and_then(|k| k.strip_prefix(prefix))
        else {
            return Touched::Nothing;
        };
        if let Some(node) = rest.strip_prefix("nodes/") {
            match value.map(serde_json::from_slice::<NodeInfo>) {
                Some(Ok(info)) => {
                    self.nodes.insert(node.to_string(), info);
                }
                Some(Err(_)) => return Touched::Nothing,
                None => {
                    self.nodes.remove(node);
                }
            }
            return Touched::Nodes;
        }
        if let Some(o) = rest.strip_prefix("obs/") {
            let Some((id, node)) = o.rsplit_once('/') else {
                return Touched::Nothing;
            };
            match value.map(serde_json::from_slice::<Observation>) {
                Some(Ok(obs)) => {
                    self.obs
                        .entry(id.to_string())
                        .or_default()
                        .insert(node.to_string(), obs);
                }
                Some(Err(_)) => return Touched::Nothing,
                None => {
                    if let Some(m) = self.obs.get_mut(id) {
                        m.remove(node);
                        if m.is_empty() {
                            self.obs.remove(id);
                        }
                    }
                }
            }
            return Touched::Endpoint(id.to_string());
        }
        if let Some(o) = rest.strip_prefix("override/") {
            let parts: Vec<&str> = o.split('/').collect();
            let k: OverrideKey = match parts.as_slice() {
                [z, r] => (dec(z), dec(r), None),
                [z, r, a] => match a.parse() {
                    Ok(a) => (dec(z), dec(r), Some(a)),
                    Err(_) => return Touched::Nothing,
                },
                _ => return Touched::Nothing,
            };
            match value.map(serde_json::from_slice::<StoredOverride>) {
                Some(Ok(s)) if s.state != Override::Auto => {
                    self.overrides.insert(k.clone(), s.state);
                }
                Some(Ok(_)) | None => {
                    self.overrides.remove(&k);
                }
                Some(Err(_)) => return Touched::Nothing,
            }
            return Touched::Override(k);
        }
        Touched::Nothing
    }

    /// Note the revision of a write to `key`, if it is a node's record.
    pub fn note_rev(&mut self, prefix: &str, key: &[u8], rev: i64, deleted: bool) {
        let node = std::str::from_utf8(key)
            .ok()
            .and_then(|k| k.strip_prefix(prefix))
            .and_then(|k| k.strip_prefix("nodes/"));
        if let Some(node) = node {
            if deleted {
                self.node_revs.remove(node);
            } else {
                self.node_revs.insert(node.to_string(), rev);
            }
        }
    }

    /// The override of a region (`endpoint` None) or endpoint.
    pub fn override_of(&self, zone: &str, region: &str, endpoint: Option<IpAddr>) -> Override {
        self.overrides
            .get(&(zone.to_string(), region.to_string(), endpoint))
            .copied()
            .unwrap_or_default()
    }

    /// Zones whose fingerprints differ between live nodes: zone to node to
    /// fingerprint (`None`: that node does not serve the zone).
    pub fn skew(&self) -> BTreeMap<String, BTreeMap<String, Option<String>>> {
        let mut zones: BTreeMap<&str, ()> = BTreeMap::new();
        for info in self.nodes.values() {
            for z in info.zones.keys() {
                zones.insert(z, ());
            }
        }
        let mut out = BTreeMap::new();
        for z in zones.keys() {
            let per: BTreeMap<String, Option<String>> = self
                .nodes
                .iter()
                .map(|(n, info)| (n.clone(), info.zones.get(*z).cloned()))
                .collect();
            let mut distinct: Vec<&Option<String>> = per.values().collect();
            distinct.dedup();
            if distinct.len() > 1 {
                out.insert(z.to_string(), per);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/gslb/t/";

    fn obs(up: bool) -> Vec<u8> {
        serde_json::to_vec(&Observation {
            up,
            reason: "ok".into(),
            since_ms: 1,
        })
        .unwrap()
    }

    #[test]
    fn observations_come_and_go_per_node() {
        let mut v = View::default();
        let id = "z/r%2Fx/192.0.2.1/00000000000000ab";
        let t = v.apply(P, format!("{P}obs/{id}/ns1").as_bytes(), Some(&obs(true)));
        assert_eq!(t, Touched::Endpoint(id.into()));
        v.apply(P, format!("{P}obs/{id}/ns2").as_bytes(), Some(&obs(false)));
        assert_eq!(v.obs[id].len(), 2);
        assert!(!v.obs[id]["ns2"].up);
        v.apply(P, format!("{P}obs/{id}/ns1").as_bytes(), None);
        v.apply(P, format!("{P}obs/{id}/ns2").as_bytes(), None);
        assert!(!v.obs.contains_key(id), "no observer left");
    }

    #[test]
    fn overrides_of_regions_and_endpoints() {
        let mut v = View::default();
        let region = ("z".to_string(), "us/east".to_string(), None);
        let key = override_key(P, &region);
        assert_eq!(key, "/gslb/t/override/z/us%2Feast");
        let val = serde_json::to_vec(&StoredOverride {
            state: Override::Down,
            node: "ns1".into(),
            at_ms: 0,
        })
        .unwrap();
        assert_eq!(
            v.apply(P, key.as_bytes(), Some(&val)),
            Touched::Override(region.clone())
        );
        assert_eq!(v.override_of("z", "us/east", None), Override::Down);
        let ep = (
            "z".to_string(),
            "r".to_string(),
            Some("2001:db8::1".parse().unwrap()),
        );
        v.apply(P, override_key(P, &ep).as_bytes(), Some(&val));
        assert_eq!(v.override_of("z", "r", ep.2), Override::Down);
        v.apply(P, key.as_bytes(), None);
        assert_eq!(v.override_of("z", "us/east", None), Override::Auto);
    }

    #[test]
    fn garbage_is_ignored() {
        let mut v = View::default();
        assert_eq!(
            v.apply(P, format!("{P}obs/x/ns1").as_bytes(), Some(b"{not json")),
            Touched::Nothing
        );
        assert_eq!(
            v.apply(P, b"/other/obs/a/b", Some(&obs(true))),
            Touched::Nothing
        );
        assert_eq!(
            v.apply(P, format!("{P}override/a/b/notanip").as_bytes(), None),
            Touched::Nothing
        );
        assert!(v.obs.is_empty());
    }

    #[test]
    fn skew_lists_zones_that_differ() {
        let mut v = View::default();
        let info = |h: &str| NodeInfo {
            zones: [("a.example".to_string(), h.to_string())].into(),
            ..NodeInfo::default()
        };
        v.nodes.insert("ns1".into(), info("1"));
        v.nodes.insert("ns2".into(), info("1"));
        assert!(v.skew().is_empty());
        v.nodes.insert("ns3".into(), info("2"));
        let s = v.skew();
        assert_eq!(s["a.example"]["ns3"].as_deref(), Some("2"));
        v.nodes.insert("ns3".into(), NodeInfo::default());
        assert_eq!(
            v.skew()["a.example"]["ns3"],
            None,
            "a node missing the zone"
        );
    }
}
