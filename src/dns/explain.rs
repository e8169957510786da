//! `gslb explain`: why a client gets the answer it gets, as Route 53's
//! TestDNSAnswer tells. The answer is a real one: the query goes through
//! the engine as a client's would (and is counted like one), with the
//! client's address and subnet; the location, the region order and each
//! region's health come from the same snapshot and the same policy code.

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, LowerName, Name, RecordType};
use ipnet::IpNet;
use serde::Serialize;

use super::{Engine, Transport, Worker};
use crate::model::{Node, Policy};
use crate::policy::geo::{self, Basis, Memo};

/// What to explain.
#[derive(Clone, Debug)]
pub struct Question {
    /// The name asked.
    pub name: String,
    /// The type asked.
    pub qtype: RecordType,
    /// The query's source address (the resolver's).
    pub client: IpAddr,
    /// The query's EDNS Client Subnet.
    pub ecs: Option<IpNet>,
}

/// The explanation.
#[derive(Serialize, Debug)]
pub struct Explanation {
    /// The name, absolute.
    pub name: String,
    /// The type.
    #[serde(rename = "type")]
    pub qtype: String,
    /// The source address used.
    pub client: IpAddr,
    /// The client subnet sent, as ADDRESS/SOURCE.
    pub ecs: Option<String>,
    /// The zone answering (none: REFUSED).
    pub zone: Option<String>,
    /// The service at the name, when there is one.
    pub service: Option<ServiceExplanation>,
    /// Response code.
    pub rcode: String,
    /// Answer records, in presentation form.
    pub answers: Vec<String>,
    /// Authority records (the SOA of a negative answer).
    pub authority: Vec<String>,
    /// TTL of the first answer record.
    pub ttl: Option<u32>,
    /// The client subnet echoed, with its scope: ADDRESS/SOURCE/SCOPE.
    pub ecs_echo: Option<String>,
    /// The ECS SCOPE PREFIX-LENGTH of the answer.
    pub scope: Option<u8>,
}

/// How the service at the name chose.
#[derive(Serialize, Debug)]
pub struct ServiceExplanation {
    /// Table key.
    pub key: String,
    /// Policy.
    pub policy: &'static str,
    /// The `[geo.NAME]` map (geo and nearest).
    pub geo: Option<String>,
    /// The address located: the subnet's or the source's, and why.
    pub located_by: Option<String>,
    /// The location (a map key, the nearest region, or `*`).
    pub location: Option<String>,
    /// How the location was found: the nets entry or database record.
    pub why: Option<String>,
    /// Regions in the order this client's location prefers, with health.
    pub order: Vec<RegionExplanation>,
}

/// One region in the client's order.
#[derive(Serialize, Debug)]
pub struct RegionExplanation {
    /// Region name.
    pub region: String,
    /// Up as DNS uses it.
    pub up: bool,
    /// Endpoints up, of all.
    pub endpoints_up: usize,
    /// Endpoints.
    pub endpoints: usize,
    /// Distance from the client in km (nearest, when located).
    pub distance_km: Option<f64>,
    /// Why it is down: `override`, `endpoints` or `depends-on`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub down_because: Option<&'static str>,
    /// Calculated health, in words: `depends-on: 1 of 2 up, needs 2 (db
    /// down, cache up)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<String>,
}

/// Answer `q` and say why.
pub fn explain(engine: &Engine, q: &Question) -> Result<Explanation, String> {
    let mut name = Name::from_utf8(&q.name).map_err(|e| format!("name {:?}: {e}", q.name))?;
    name.set_fqdn(true);
    let ecs = q.ecs.map(|n| n.trunc());
    // The real answer, through the engine.
    let mut m = Message::new(0x4242, MessageType::Query, OpCode::Query);
    let mut query = Query::query(name.clone(), q.qtype);
    query.set_query_class(DNSClass::IN);
    m.add_query(query);
    let mut e = Edns::new();
    e.set_max_payload(4096);
    if let Some(n) = ecs {
        e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
            n.addr(),
            n.prefix_len(),
            0,
        )));
    }
    m.set_edns(e);
    let bytes = m.to_vec().map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut worker = Worker::without_cache(engine.rng(0));
    if !engine.respond(&bytes, q.client, Transport::Tcp, &mut out, &mut worker) {
        return Err("no answer".into());
    }
    let resp = Message::from_vec(&out).map_err(|e| e.to_string())?;
    let echo = resp
        .edns
        .as_ref()
        .and_then(|e| e.option(EdnsCode::Subnet))
        .and_then(|o| match o {
            EdnsOption::Subnet(s) => Some(*s),
            _ => None,
        });
    let snap = engine.snapshot();
    let lname = LowerName::new(&name);
    let served = snap.find_zone(&lname);
    let service = served.and_then(|z| {
        let node: &Node = z.zone.nodes.get(&lname)?;
        let si = node.service?;
        Some(service(z, si, q, ecs.as_ref()))
    });
    Ok(Explanation {
        name: name.to_string(),
        qtype: q.qtype.to_string(),
        client: q.client,
        ecs: ecs.map(|n| n.to_string()),
        zone: served.map(|z| z.zone.label()),
        service,
        rcode: crate::metrics::rcode_name(resp.metadata.response_code),
        answers: resp.answers.iter().map(|r| r.to_string()).collect(),
        authority: resp.authorities.iter().map(|r| r.to_string()).collect(),
        ttl: resp.answers.first().map(|r| r.ttl),
        ecs_echo: echo.map(|s| format!("{}/{}/{}", s.addr(), s.source_prefix(), s.scope_prefix())),
        scope: echo.map(|s| s.scope_prefix()),
    })
}

fn service(
    z: &super::ServedZone,
    si: usize,
    q: &Question,
    ecs: Option<&IpNet>,
) -> ServiceExplanation {
    let svc = &z.zone.services[si];
    let view: &dyn crate::policy::HealthView = z.health.as_ref();
    let honoured = ecs.filter(|_| z.zone.ecs);
    let subnet = honoured.map(|n| super::ecs::ClientSubnet {
        addr: n.addr(),
        source: n.prefix_len(),
    });
    let addr = super::ecs::locating_addr(q.client, subnet.as_ref());
    let located_by = match (ecs, honoured) {
        (Some(_), None) => format!("source address {} (the zone has ecs = false)", q.client),
        (Some(n), Some(_)) if n.prefix_len() == 0 => format!(
            "source address {} (ECS SOURCE PREFIX-LENGTH 0 asks for no client information)",
            q.client
        ),
        (Some(n), Some(_)) => format!("ECS subnet {n}"),
        (None, _) => format!("source address {} (no ECS)", q.client),
    };
    let mut memo = Memo::default();
    let place = geo::locate(svc, addr, &mut memo);
    let map = svc.policy.geo_map();
    let order: Vec<usize> = match &place {
        Some(p) => p.order.to_vec(),
        None => (0..svc.regions.len()).collect(),
    };
    let from = match (&place, &svc.policy) {
        (Some(p), Policy::Nearest(np)) => match &p.basis {
            // A label placing its clients at the region of that name.
            Basis::Net(i) => z
                .zone
                .regions
                .get(&np.map.labels[np.map.nets[*i].label])
                .and_then(|r| r.location),
            Basis::Database { record, .. } => record.coords,
            Basis::Unknown { .. } | Basis::Remembered => None,
        },
        _ => None,
    };
    let order = order
        .iter()
        .map(|&p| {
            let r = &svc.regions[p].region;
            let eps = r.endpoints().len();
            let cell = z.health.regions.get(r.index);
            RegionExplanation {
                down_because: cell.and_then(|c| c.down_because()),
                depends_on: cell.and_then(|c| c.depends.as_ref()).map(|d| d.summary()),
                region: r.name.clone(),
                up: view.region_up(r.index),
                endpoints_up: (0..eps).filter(|&e| view.endpoint_up(r.index, e)).count(),
                endpoints: eps,
                distance_km: from
                    .zip(r.location)
                    .map(|(a, b)| (a.distance_km(b) * 10.0).round() / 10.0),
            }
        })
        .collect();
    let why = place.as_ref().zip(map).map(|(p, map)| match &p.basis {
        Basis::Net(i) => {
            let n = &map.nets[*i];
            format!(
                "nets entry {} = {:?} of geo {}",
                n.net, map.labels[n.label], map.name
            )
        }
        Basis::Database { network, record } => {
            format!("database network {network}: {record}")
        }
        Basis::Unknown { network: Some(n) } => {
            format!("no nets entry, and the database has no record for {n}")
        }
        Basis::Unknown { network: None } => "no nets entry, and no database record".into(),
        Basis::Remembered => "as for an earlier client of this network".into(),
    });
    ServiceExplanation {
        key: svc.key.clone(),
        policy: svc.policy.as_str(),
        geo: map.map(|m| m.name.clone()),
        located_by: place.as_ref().map(|_| located_by),
        location: place.as_ref().map(|p| geo::locations(svc)[p.loc].clone()),
        why,
        order,
    }
}
