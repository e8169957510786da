//! The cluster's shared state as this node last read it from etcd, and the
//! key layout under `/gslb/<name>/`:
//!
//! | key | value | lease |
//! |---|---|---|
//! | `nodes/<node>` | [`NodeInfo`] | the node's |
//! | `obs/<zone>/<region>/<addr>/<check>/<node>` | [`Observation`] | the node's |
//! | `override/<zone>/<region>[/<addr>]` | [`StoredOverride`] | none |
//! | `events/<zone>/<region>/<to>/<revision>` | the sending node | 10 minutes |
//! | `verdict/<zone>/<region>/<addr>/<check>` | [`Held`]: the last decision | none |
//!
//! Observations live under their node's lease, so the observations present
//! are exactly those of live nodes: a node that dies or is cut off from etcd
//! loses them all in one revision when its lease expires. Only those count
//! as votes: an observation whose node has no live record, or that is not
//! under that record's lease (written by hand, left from an old session),
//! is shown but never counted; a malformed one is no vote at all, on every
//! node alike.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::arbiter::{Held, Tally, Votes};
use crate::health::{EndpointKey, Override, OverrideNote, fingerprint};
use crate::model::Check;

/// Reasons read from etcd are cut to this many bytes: another node's (or a
/// hand-written) reason must not fill this node's memory and logs.
pub const MAX_REASON: usize = 512;

/// One node's verdict on one endpoint, as published.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Observation {
    /// Up or down, by that node's own probes and thresholds.
    pub up: bool,
    /// The deciding probe's reason.
    pub reason: String,
    /// Unix milliseconds of that node's last change.
    pub since_ms: u64,
    /// The etcd lease it was written under (read from etcd, not stored in
    /// the value).
    #[serde(skip)]
    pub lease: i64,
}

fn yes() -> bool {
    true
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
    /// A random id of the process: two processes that claim one node name
    /// tell each other apart by it.
    #[serde(default)]
    pub instance: String,
    /// Written once the session's votes are all written too: a node back
    /// from an outage waits for the others' records with this set (see the
    /// rejoin guard in `session`). Absent (an older version): set.
    #[serde(default = "yes")]
    pub republished: bool,
    /// The etcd lease it was written under (read from etcd, not stored in
    /// the value).
    #[serde(skip)]
    pub lease: i64,
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
    /// Comment and expiry.
    #[serde(flatten, default)]
    pub note: OverrideNote,
}

pub use crate::health::OverrideKey;

/// What one etcd key change touched.
#[derive(Clone, Debug, PartialEq)]
pub enum Touched {
    /// Observations of this endpoint id.
    Endpoint(String),
    /// This override.
    Override(OverrideKey),
    /// The recorded verdict of this endpoint id.
    Record(String),
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

/// Key of an endpoint's recorded verdict.
pub fn verdict_key(prefix: &str, id: &str) -> String {
    format!("{prefix}verdict/{id}")
}

/// Key of a node's record.
pub fn node_key(prefix: &str, node: &str) -> String {
    format!("{prefix}nodes/{node}")
}

/// Key of a zone's shared serial (`dns::journal`).
pub fn serial_key(prefix: &str, zone: &str) -> String {
    format!("{prefix}serial/{}", enc(zone))
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
    /// Overrides in force, and the revision of their key.
    pub overrides: HashMap<OverrideKey, (StoredOverride, i64)>,
    /// The revision at which each live node last wrote its record (once per
    /// session): tells which nodes have republished after an outage.
    pub node_revs: BTreeMap<String, i64>,
    /// Recorded verdicts (`verdict/<id>`) and the revision of their key.
    pub records: HashMap<String, (Held, i64)>,
    /// Endpoint id to its counted votes and the verdict in force.
    pub tallies: HashMap<String, Tally>,
    /// Since when the verdict in force on an endpoint has stood on
    /// withdrawals alone ([`Tally::contested`]), by this node's clock.
    pub contested: HashMap<String, std::time::Instant>,
}

impl View {
    /// Apply one key's new value (`None`: deleted). Malformed keys and
    /// values are ignored (another version's, or a hand edit): they must
    /// not stop a node from following the rest.
    ///
    /// A malformed value replaces what the key held before: it is no vote
    /// (and no node record), so a node that saw the old value and one that
    /// joins later count the same votes.
    pub fn apply(
        &mut self,
        prefix: &str,
        key: &[u8],
        value: Option<&[u8]>,
        lease: i64,
        mod_rev: i64,
    ) -> Touched {
        let Some(rest) = std::str::from_utf8(key)
            .ok()
            .and_then(|k| k.strip_prefix(prefix))
        else {
            return Touched::Nothing;
        };
        if let Some(node) = rest.strip_prefix("nodes/") {
            match value.map(serde_json::from_slice::<NodeInfo>) {
                Some(Ok(mut info)) => {
                    info.lease = lease;
                    self.nodes.insert(node.to_string(), info);
                    self.node_revs.insert(node.to_string(), mod_rev);
                }
                Some(Err(_)) | None => {
                    self.nodes.remove(node);
                    self.node_revs.remove(node);
                }
            }
            return Touched::Nodes;
        }
        if let Some(id) = rest.strip_prefix("verdict/") {
            match value.map(serde_json::from_slice::<Held>) {
                Some(Ok(h)) => {
                    self.records.insert(id.to_string(), (h, mod_rev));
                }
                Some(Err(_)) | None => {
                    self.records.remove(id);
                }
            }
            return Touched::Record(id.to_string());
        }
        if let Some(o) = rest.strip_prefix("obs/") {
            let Some((id, node)) = o.rsplit_once('/') else {
                return Touched::Nothing;
            };
            match value.map(serde_json::from_slice::<Observation>) {
                Some(Ok(mut obs)) => {
                    obs.lease = lease;
                    if obs.reason.len() > MAX_REASON {
                        let mut cut = MAX_REASON;
                        while !obs.reason.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        obs.reason.truncate(cut);
                        obs.reason.push('…');
                    }
                    self.obs
                        .entry(id.to_string())
                        .or_default()
                        .insert(node.to_string(), obs);
                }
                Some(Err(_)) | None => {
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
                Some(Ok(mut s)) if s.state != Override::Auto => {
                    // What etcd holds is the cluster's, never one node's.
                    s.note.local = false;
                    if let Some(c) = &mut s.note.comment {
                        crate::health::cap_comment(c);
                    }
                    self.overrides.insert(k.clone(), (s, mod_rev));
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

    /// The votes that count on endpoint `id`: observations of live nodes,
    /// under that node's current lease.
    pub fn counted(&self, id: &str) -> Votes {
        self.obs
            .get(id)
            .into_iter()
            .flatten()
            .filter(|(n, o)| {
                o.lease != 0 && self.nodes.get(*n).is_some_and(|info| info.lease == o.lease)
            })
            .map(|(n, o)| (n.clone(), o.up))
            .collect()
    }

    /// Every endpoint id the view knows of (votes, tallies, records).
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .obs
            .keys()
            .chain(self.tallies.keys())
            .chain(self.records.keys())
            .cloned()
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// After a full load: every endpoint's votes as counted now, and the
    /// verdict in force as recorded (or, where nothing is recorded, as the
    /// votes decide it if they can).
    pub fn tally_all(&mut self, q: crate::model::Quorum) {
        self.tallies.clear();
        self.contested.clear();
        for id in self.ids() {
            let votes = self.counted(&id);
            let held = self
                .records
                .get(&id)
                .map(|(h, _)| *h)
                .or_else(|| super::arbiter::decide(q, &votes).map(|up| Held { up, rev: 0 }));
            let tally = Tally { votes, held };
            self.note_contest(q, &id, &tally);
            self.tallies.insert(id, tally);
        }
    }

    /// Start or end the grace of an endpoint's contested verdict.
    pub fn note_contest(&mut self, q: crate::model::Quorum, id: &str, tally: &Tally) {
        if tally.contested(q).is_some() {
            self.contested
                .entry(id.to_string())
                .or_insert_with(std::time::Instant::now);
        } else {
            self.contested.remove(id);
        }
    }

    /// The override of a region (`endpoint` None) or endpoint.
    pub fn override_of(&self, zone: &str, region: &str, endpoint: Option<IpAddr>) -> Override {
        self.overrides
            .get(&(zone.to_string(), region.to_string(), endpoint))
            .map(|(s, _)| s.state)
            .unwrap_or_default()
    }

    /// The note of an override in force.
    pub fn note_of(&self, k: &OverrideKey) -> OverrideNote {
        self.overrides
            .get(k)
            .map(|(s, _)| s.note.clone())
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
            lease: 0,
        })
        .unwrap()
    }

    #[test]
    fn observations_come_and_go_per_node() {
        let mut v = View::default();
        let id = "z/r%2Fx/192.0.2.1/00000000000000ab";
        let t = v.apply(
            P,
            format!("{P}obs/{id}/ns1").as_bytes(),
            Some(&obs(true)),
            7,
            1,
        );
        assert_eq!(t, Touched::Endpoint(id.into()));
        v.apply(
            P,
            format!("{P}obs/{id}/ns2").as_bytes(),
            Some(&obs(false)),
            7,
            1,
        );
        assert_eq!(v.obs[id].len(), 2);
        assert!(!v.obs[id]["ns2"].up);
        v.apply(P, format!("{P}obs/{id}/ns1").as_bytes(), None, 7, 1);
        v.apply(P, format!("{P}obs/{id}/ns2").as_bytes(), None, 7, 1);
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
            note: OverrideNote::default(),
        })
        .unwrap();
        assert_eq!(
            v.apply(P, key.as_bytes(), Some(&val), 7, 1),
            Touched::Override(region.clone())
        );
        assert_eq!(v.override_of("z", "us/east", None), Override::Down);
        let ep = (
            "z".to_string(),
            "r".to_string(),
            Some("2001:db8::1".parse().unwrap()),
        );
        v.apply(P, override_key(P, &ep).as_bytes(), Some(&val), 7, 1);
        assert_eq!(v.override_of("z", "r", ep.2), Override::Down);
        v.apply(P, key.as_bytes(), None, 7, 1);
        assert_eq!(v.override_of("z", "us/east", None), Override::Auto);
    }

    #[test]
    fn garbage_is_no_vote_and_stops_nothing() {
        let mut v = View::default();
        v.apply(
            P,
            format!("{P}obs/x/ns1").as_bytes(),
            Some(&obs(true)),
            7,
            1,
        );
        assert_eq!(
            v.apply(
                P,
                format!("{P}obs/x/ns1").as_bytes(),
                Some(b"{not json"),
                7,
                2
            ),
            Touched::Endpoint("x".into()),
            "a malformed vote replaces the vote it overwrote"
        );
        assert_eq!(
            v.apply(P, b"/other/obs/a/b", Some(&obs(true)), 7, 1),
            Touched::Nothing
        );
        assert_eq!(
            v.apply(P, format!("{P}override/a/b/notanip").as_bytes(), None, 7, 1),
            Touched::Nothing
        );
        assert!(v.obs.is_empty());
    }

    fn node(v: &mut View, n: &str, lease: i64) {
        let info = serde_json::to_vec(&NodeInfo::default()).unwrap();
        v.apply(P, format!("{P}nodes/{n}").as_bytes(), Some(&info), lease, 1);
    }

    #[test]
    fn only_live_nodes_under_their_lease_vote() {
        let mut v = View::default();
        let id = "z/r/192.0.2.1/v1-00000000000000ab";
        let put = |v: &mut View, n: &str, up: bool, lease: i64| {
            v.apply(
                P,
                format!("{P}obs/{id}/{n}").as_bytes(),
                Some(&obs(up)),
                lease,
                2,
            );
        };
        node(&mut v, "ns1", 11);
        node(&mut v, "ns2", 12);
        put(&mut v, "ns1", true, 11);
        put(&mut v, "ns2", false, 12);
        // Written by hand: no lease, and names with no live node.
        for n in ["x1", "x2", "x3", "x4"] {
            put(&mut v, n, false, 0);
        }
        // An old session's lease.
        put(&mut v, "ns3", false, 99);
        node(&mut v, "ns3", 13);
        let counted = v.counted(id);
        assert_eq!(
            counted,
            [("ns1".to_string(), true), ("ns2".to_string(), false)].into(),
            "only ns1 and ns2 vote"
        );
        assert_eq!(v.obs[id].len(), 7, "all are shown");
    }

    #[test]
    fn reasons_from_etcd_are_capped() {
        let mut v = View::default();
        let long = serde_json::to_vec(&Observation {
            up: false,
            reason: "é".repeat(700_000),
            since_ms: 1,
            lease: 0,
        })
        .unwrap();
        v.apply(P, format!("{P}obs/x/ns1").as_bytes(), Some(&long), 7, 1);
        assert!(v.obs["x"]["ns1"].reason.len() <= MAX_REASON + 3);
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
