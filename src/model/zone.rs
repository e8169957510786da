//! A zone compiled for lookup: every owner name (and every empty non-terminal
//! between it and the apex) is a key of one hash map, so the query path finds
//! a node, a zone cut or a wildcard with a few hash lookups and no scan.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{
    BinDecoder, BinEncodable, BinEncoder, NameEncoding, Restrict,
};

use super::{Check, Origin, Region, Service};

/// The static records of a zone: every RRset, and the RDATA of all of them
/// in wire form (names uncompressed, case as written) in one buffer. A
/// record costs its RDATA and two bytes, not a 272-byte `Record` with its
/// own copy of the owner, and the whole zone is a few large allocations,
/// not one per record: a million small ones, interleaved with the garbage
/// of parsing, kept the pages around them from ever going back to the
/// system. The engine decodes what it answers (the answer cache keeps the
/// message).
#[derive(Clone, Debug, Default)]
pub struct RecordStore {
    sets: Vec<StoredSet>,
    /// Each record's RDATA after its length (a big-endian u16).
    wire: Vec<u8>,
}

/// One RRset's type, TTL and place in [`RecordStore::wire`].
#[derive(Clone, Copy, Debug)]
struct StoredSet {
    rtype: RecordType,
    ttl: u32,
    start: u32,
    end: u32,
}

impl RecordStore {
    /// Add a set of these records, in this order; returns its index. Fails
    /// on RDATA that does not encode (longer than 65,535 bytes) and when the
    /// store is full (4 GB of RDATA).
    pub fn push<'a>(
        &mut self,
        rtype: RecordType,
        ttl: u32,
        rdatas: impl IntoIterator<Item = &'a RData>,
    ) -> Result<u32, String> {
        let full = || "more record data than one zone can hold (4 GB)".to_string();
        let start = self.wire.len();
        let mut one = Vec::new();
        for rdata in rdatas {
            one.clear();
            let mut encoder = BinEncoder::new(&mut one);
            encoder.set_name_encoding(NameEncoding::Uncompressed);
            if let Err(e) = rdata.emit(&mut encoder) {
                self.wire.truncate(start);
                return Err(e.to_string());
            }
            let Ok(len) = u16::try_from(one.len()) else {
                self.wire.truncate(start);
                return Err(format!("{rtype} data longer than 65,535 bytes"));
            };
            self.wire.extend(len.to_be_bytes());
            self.wire.extend_from_slice(&one);
        }
        let (Ok(start), Ok(end)) = (u32::try_from(start), u32::try_from(self.wire.len())) else {
            self.wire.truncate(start);
            return Err(full());
        };
        let index = u32::try_from(self.sets.len()).map_err(|_| full())?;
        self.sets.push(StoredSet {
            rtype,
            ttl,
            start,
            end,
        });
        Ok(index)
    }

    /// Give back what the buffers reserved beyond their contents.
    pub fn shrink_to_fit(&mut self) {
        self.sets.shrink_to_fit();
        self.wire.shrink_to_fit();
    }

    fn get(&self, index: u32) -> Option<RRset<'_>> {
        let s = self.sets.get(index as usize)?;
        Some(RRset {
            rtype: s.rtype,
            ttl: s.ttl,
            wire: self.wire.get(s.start as usize..s.end as usize)?,
        })
    }
}

/// Records of one type at one name, with one TTL, as stored.
#[derive(Clone, Copy)]
pub struct RRset<'a> {
    /// Record type.
    pub rtype: RecordType,
    /// TTL, one for the set (RFC 2181 §5.2).
    pub ttl: u32,
    wire: &'a [u8],
}

impl<'a> RRset<'a> {
    /// The records' data, in order.
    pub fn rdatas(self) -> impl Iterator<Item = RData> + 'a {
        let mut rest = self.wire;
        let rtype = self.rtype;
        std::iter::from_fn(move || {
            let (len, tail) = rest.split_first_chunk::<2>()?;
            let len = u16::from_be_bytes(*len);
            let (data, tail) = tail.split_at_checked(usize::from(len))?;
            rest = tail;
            // Encoded by `RecordStore::push` from valid data: it decodes.
            RData::read(&mut BinDecoder::new(data), rtype, Restrict::new(len)).ok()
        })
    }

    /// The records, with this owner.
    pub fn records(self, owner: &'a Name) -> impl Iterator<Item = Record> + 'a {
        let ttl = self.ttl;
        self.rdatas()
            .map(move |d| Record::from_rdata(owner.clone(), ttl, d))
    }
}

impl std::fmt::Debug for RRset<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RRset")
            .field("rtype", &self.rtype)
            .field("ttl", &self.ttl)
            .field("rdatas", &self.rdatas().collect::<Vec<_>>())
            .finish()
    }
}

/// Everything at one owner name.
#[derive(Clone, Debug, Default)]
pub struct Node {
    /// Static RRsets, at most one per type: indexes `first..end` of the
    /// zone's [`RecordStore`].
    pub sets: (u32, u32),
    /// NS records here and this is not the apex: a delegation to a child zone.
    pub cut: bool,
    /// Index into `Zone::services` of the service answering at this name.
    pub service: Option<usize>,
}

impl Node {
    /// True for an empty non-terminal: a name that exists only because names
    /// below it do.
    pub fn is_empty_non_terminal(&self) -> bool {
        self.sets.0 == self.sets.1 && self.service.is_none()
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
    /// The static RRsets of the nodes.
    pub records: RecordStore,
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
    /// `[transfer]`: served to secondaries (AXFR, IXFR, NOTIFY); its
    /// serial then follows the zone as transferred.
    pub transfer: Option<std::sync::Arc<super::Transfer>>,
    /// `[dnssec]`: signs the zone's answers to clients that ask (DO).
    pub signer: Option<std::sync::Arc<crate::dnssec::sign::ZoneSigner>>,
}

/// A zone's name as logs, metrics and the API show it (see [`Zone::label`]).
pub fn label(apex: &LowerName) -> String {
    let s = apex.to_string();
    s.strip_suffix('.')
        .filter(|x| !x.is_empty())
        .unwrap_or(&s)
        .to_string()
}

impl Zone {
    /// The zone's name as logs, metrics and the API show it: lower case, no
    /// trailing dot ("." for the root).
    pub fn label(&self) -> String {
        label(&self.apex)
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
        // The apex's SOA set, written again (same length: only the serial
        // differs) in place.
        let Some(node) = self.nodes.get(&self.apex) else {
            return;
        };
        let Some(i) = (node.sets.0..node.sets.1)
            .find(|&i| self.records.sets[i as usize].rtype == RecordType::SOA)
        else {
            return;
        };
        let old = self.records.sets[i as usize];
        let mut fresh = RecordStore::default();
        if fresh
            .push(RecordType::SOA, old.ttl, [&self.soa.data])
            .is_ok()
            && fresh.wire.len() == (old.end - old.start) as usize
        {
            self.records.wire[old.start as usize..old.end as usize].copy_from_slice(&fresh.wire);
        }
    }

    /// The static RRsets at a node.
    pub fn rrsets(&self, node: &Node) -> impl Iterator<Item = RRset<'_>> {
        (node.sets.0..node.sets.1).filter_map(|i| self.records.get(i))
    }

    /// The static RRset of this type at a node.
    pub fn rrset(&self, node: &Node, rtype: RecordType) -> Option<RRset<'_>> {
        self.rrsets(node).find(|s| s.rtype == rtype)
    }
}
