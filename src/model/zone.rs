//! A zone compiled for lookup: every owner name (and every empty non-terminal
//! between it and the apex) is a key of one hash map, so the query path finds
//! a node, a zone cut or a wildcard with a few hash lookups and no scan.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use hickory_proto::rr::{LowerName, Name, Record, RecordType};

use super::{Check, Origin, Region, Service};

/// Records of one type at one name, with one TTL.
#[derive(Clone, Debug)]
pub struct RRset {
    /// Record type.
    pub rtype: RecordType,
    /// The records, owner name as written in the zone file.
    pub records: Vec<Record>,
}

/// Everything at one owner name.
#[derive(Clone, Debug, Default)]
pub struct Node {
    /// Static RRsets, at most one per type.
    pub rrsets: Vec<RRset>,
    /// NS records here and this is not the apex: a delegation to a child zone.
    pub cut: bool,
    /// Index into `Zone::services` of the service answering at this name.
    pub service: Option<usize>,
}

impl Node {
    /// The static RRset of this type.
    pub fn rrset(&self, rtype: RecordType) -> Option<&RRset> {
        self.rrsets.iter().find(|s| s.rtype == rtype)
    }
    /// True for an empty non-terminal: a name that exists only because names
    /// below it do.
    pub fn is_empty_non_terminal(&self) -> bool {
        self.rrsets.is_empty() && self.service.is_none()
    }
}

/// One authoritative zone.
#[derive(Clone, Debug)]
pub struct Zone {
    /// Apex, as written in the file (absolute).
    pub name: Name,
    /// Apex, lower-cased, the key of the zone.
    pub apex: LowerName,
    /// The file it was loaded from.
    pub file: PathBuf,
    /// Where `[zone] name` is written.
    pub origin: Origin,
    /// The SOA record generated from the `[zone]` table.
    pub soa: Record,
    /// TTL of negative answers: min(SOA TTL, SOA minimum) (RFC 2308 §5).
    pub negative_ttl: u32,
    /// Owner names (and empty non-terminals) to their data.
    pub nodes: HashMap<LowerName, Node>,
    /// Whether any owner is a wildcard, to skip the wildcard step otherwise.
    pub has_wildcards: bool,
    /// Health checks by name.
    pub checks: BTreeMap<String, Arc<Check>>,
    /// Regions by name.
    pub regions: BTreeMap<String, Arc<Region>>,
    /// `[geo.NAME]` maps by name.
    pub geo: BTreeMap<String, Arc<super::GeoMap>>,
    /// Services, indexed by `Node::service`.
    pub services: Vec<Arc<Service>>,
    /// Number of static records (SOA and NS included).
    pub record_count: usize,
    /// Hash of the file's text: an unchanged file keeps its serial.
    pub content_hash: u64,
    /// The serial is gslb's to manage (`serial` not set in the file).
    pub serial_auto: bool,
    /// Failover events of this zone are POSTed here.
    pub webhook: Option<String>,
    /// Queries' EDNS Client Subnet is honoured (echoed per RFC 7871);
    /// `false`: ignored, never echoed.
    pub ecs: bool,
}

impl Zone {
    /// The zone's name as logs, metrics and the API show it: lower case, no
    /// trailing dot ("." for the root).
    pub fn label(&self) -> String {
        let s = self.apex.to_string();
        s.strip_suffix('.')
            .filter(|x| !x.is_empty())
            .unwrap_or(&s)
            .to_string()
    }

    /// The SOA serial.
    pub fn serial(&self) -> u32 {
        match &self.soa.data {
            hickory_proto::rr::RData::SOA(soa) => soa.serial,
            _ => 0,
        }
    }

    /// Set the SOA serial (in the zone header and in the apex node).
    pub fn set_serial(&mut self, serial: u32) {
        let set = |r: &mut Record| {
            if let hickory_proto::rr::RData::SOA(soa) = &mut r.data {
                soa.serial = serial;
            }
        };
        set(&mut self.soa);
        if let Some(node) = self.nodes.get_mut(&self.apex) {
            for set_ in node
                .rrsets
                .iter_mut()
                .filter(|s| s.rtype == RecordType::SOA)
            {
                set_.records.iter_mut().for_each(set);
            }
        }
    }
}
