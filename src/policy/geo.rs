//! Where a client is, for the `geo` and `nearest` policies: the most
//! specific `nets` entry the service uses, else the database's record
//! (country, then continent, or coordinates), else nowhere (`*`, or the
//! service's own order). Also the ECS scope of the answer: the prefix length
//! of the network over which that answer holds.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;

use crate::model::{Coords, GeoMap, GeoNet, GeoPolicy, NearestPolicy, Policy, Service};

/// What a database says about a network.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DbRecord {
    /// ISO 3166 country code (the registered country when no country is given).
    pub country: Option<[u8; 2]>,
    /// Continent code.
    pub continent: Option<[u8; 2]>,
    /// Latitude and longitude.
    pub coords: Option<Coords>,
    /// The same on the unit sphere (`Coords::unit`), computed once per record.
    pub unit: Option<[f64; 3]>,
}

impl std::fmt::Display for DbRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let code = |c: Option<[u8; 2]>| {
            c.map(|c| String::from_utf8_lossy(&c).into_owned())
                .unwrap_or_else(|| "-".into())
        };
        write!(
            f,
            "country {}, continent {}",
            code(self.country),
            code(self.continent)
        )?;
        match self.coords {
            Some(c) => write!(f, ", location {:.4},{:.4}", c.lat, c.lon),
            None => write!(f, ", no location"),
        }
    }
}

/// Why a client got its location.
#[derive(Clone, Debug, PartialEq)]
pub enum Basis {
    /// A `nets` entry of the map (index into `GeoMap::nets`).
    Net(usize),
    /// The database's record for this network.
    Database {
        /// The database network holding the address.
        network: IpNet,
        /// What it says.
        record: DbRecord,
    },
    /// No `nets` entry and no database record; `network`: the database's
    /// empty network holding the address (none without a database).
    Unknown {
        /// The network the database has no record for.
        network: Option<IpNet>,
    },
    /// As found for an earlier client of the same /24 (/48), which the
    /// answer covers whole (the DNS path's memory; `explain` never sees it).
    Remembered,
}

/// A client's location as a service sees it.
#[derive(Clone, Debug)]
pub struct Place<'s> {
    /// Location index: the map entry (geo), or the nearest region's position,
    /// `regions.len()` when unknown (nearest). Bounded by the configuration:
    /// answer counters and the metrics' `location` label use it.
    pub loc: usize,
    /// Positions in `Service::regions` in preference order.
    pub order: Cow<'s, [usize]>,
    /// ECS SCOPE PREFIX-LENGTH: the answer holds for the client's network of
    /// this length.
    pub scope: u8,
    /// Why.
    pub basis: Basis,
}

/// One worker's memory of database answers, so that the database is not
/// walked per query: what it says for each client network (a /24, or a
/// /48 for IPv6) that lies whole inside one database network, and the
/// decoded records by (database, record offset), since many networks share
/// a record. Owned by one worker (no lock); each map is emptied when full
/// and both when the snapshot changes. Std's randomly keyed SipHash keeps
/// chosen client subnets from colliding; fixed-size set-associative tables
/// were tried and thrashed (35% misses with 10,000 subnets in 16,384
/// two-way slots, BENCHMARKS.md).
#[derive(Default)]
pub struct Memo {
    subnets: HashMap<u128, (u8, Option<DbRecord>)>,
    records: HashMap<u128, DbRecord>,
    /// Places by (policy, client network), when the place covers the whole
    /// client network: a repeated client costs one lookup, not the nets
    /// scan, the database and the scope.
    places: HashMap<u128, Remembered>,
}

/// A place without its basis; `order` only for nearest (geo borrows its
/// entry's).
struct Remembered {
    loc: usize,
    scope: u8,
    order: Option<Box<[usize]>>,
}

/// Entries kept per map per worker (under 100 bytes each: at most about
/// 5 MiB per worker for the three).
const MEMO_MAX: usize = 16_384;
/// The client networks the memo is keyed by: what resolvers send as ECS.
const SUBNET_V4: u8 = 24;
const SUBNET_V6: u8 = 48;

impl Memo {
    /// Forget everything (a reload may have replaced the databases).
    pub fn clear(&mut self) {
        self.subnets.clear();
        self.records.clear();
        self.places.clear();
    }
}

/// The memo key of `addr`'s client network in database `db`, and its
/// length. Keys are one `u128` (the database in the high half; the family
/// and the network's bits in the low): hashed in one write, where a tuple
/// cost SipHash a write per field (800 instructions a query, callgrind).
fn subnet_key(db: usize, addr: IpAddr) -> (u128, u8) {
    let (low, len) = match addr {
        IpAddr::V4(a) => (u64::from(a.to_bits() >> (32 - SUBNET_V4)), SUBNET_V4),
        IpAddr::V6(a) => (
            1 << 63 | (a.to_bits() >> (128 - SUBNET_V6)) as u64,
            SUBNET_V6,
        ),
    };
    ((db as u128) << 64 | u128::from(low), len)
}

/// Put `value` in a memo map, emptying it first when full.
fn remember<V>(map: &mut HashMap<u128, V>, key: u128, value: V) {
    if map.len() >= MEMO_MAX {
        map.clear();
    }
    map.insert(key, value);
}

/// Where `addr` is for `svc`; `None` for a service that does not depend on
/// the client's location.
pub fn locate<'s>(svc: &'s Service, addr: IpAddr, memo: &mut Memo) -> Option<Place<'s>> {
    let addr = addr.to_canonical();
    let id = match &svc.policy {
        Policy::Geo(g) => std::ptr::from_ref(g.as_ref()) as usize,
        Policy::Nearest(n) => std::ptr::from_ref(n.as_ref()) as usize,
        _ => return None,
    };
    let (key, key_len) = subnet_key(id, addr);
    if let Some(r) = memo.places.get(&key) {
        let order = match (&svc.policy, &r.order) {
            (_, Some(o)) => Cow::Owned(o.to_vec()),
            (Policy::Geo(g), None) => Cow::Borrowed(&g.entries[r.loc].order[..]),
            (_, None) => Cow::Owned(Vec::new()),
        };
        return Some(Place {
            loc: r.loc,
            order,
            scope: r.scope,
            basis: Basis::Remembered,
        });
    }
    let place = match &svc.policy {
        Policy::Geo(g) => locate_geo(g, addr, memo),
        Policy::Nearest(n) => locate_nearest(n, addr, memo),
        _ => unreachable!("located policies only"),
    };
    // The answer holds over the client's network of length `scope`: when
    // that covers the whole memo network, so does the place.
    if place.scope <= key_len {
        let order = match &svc.policy {
            Policy::Nearest(_) => Some(place.order.to_vec().into_boxed_slice()),
            _ => None,
        };
        let r = Remembered {
            loc: place.loc,
            scope: place.scope,
            order,
        };
        remember(&mut memo.places, key, r);
    }
    Some(place)
}

/// How many locations a service has (1 when it has none), and the name of each.
pub fn locations(svc: &Service) -> Vec<String> {
    match &svc.policy {
        Policy::Geo(g) => g.entries.iter().map(|e| e.key.to_string()).collect(),
        Policy::Nearest(_) => svc
            .regions
            .iter()
            .map(|r| r.region.name.clone())
            .chain(std::iter::once("*".to_string()))
            .collect(),
        _ => vec![String::new()],
    }
}

/// The region order of location `loc` (for the status page: the answer of
/// each location). Nearest: as seen from that region's own location.
pub fn order_of(svc: &Service, loc: usize) -> Vec<usize> {
    let n = svc.regions.len();
    match &svc.policy {
        Policy::Geo(g) => g.entries[loc].order.clone(),
        Policy::Nearest(np) if loc < n => by_distance(np, np.units[loc]),
        _ => (0..n).collect(),
    }
}

fn locate_geo<'s>(g: &'s GeoPolicy, addr: IpAddr, memo: &mut Memo) -> Place<'s> {
    let relevant = |n: &GeoNet| g.by_label[n.label].is_some();
    if let Some((i, n)) = net_match(&g.map, addr, relevant) {
        let loc = g.by_label[n.label].expect("relevant");
        return Place {
            loc,
            order: Cow::Borrowed(&g.entries[loc].order),
            scope: scope(&g.map, addr, n.net.prefix_len(), relevant),
            basis: Basis::Net(i),
        };
    }
    let (base, basis) = database(&g.map, addr, memo);
    let loc = match &basis {
        Basis::Database { record, .. } => record
            .country
            .and_then(|c| g.by_country.get(&c))
            .or_else(|| record.continent.and_then(|c| g.by_continent.get(&c)))
            .copied()
            .unwrap_or(g.default),
        _ => g.default,
    };
    Place {
        loc,
        order: Cow::Borrowed(&g.entries[loc].order),
        scope: scope(&g.map, addr, base, relevant),
        basis,
    }
}

fn locate_nearest<'s>(np: &'s NearestPolicy, addr: IpAddr, memo: &mut Memo) -> Place<'s> {
    let relevant = |n: &GeoNet| np.label_units[n.label].is_some();
    let (unit, base, basis) = match net_match(&np.map, addr, relevant) {
        Some((i, n)) => (np.label_units[n.label], n.net.prefix_len(), Basis::Net(i)),
        None => {
            let (base, basis) = database(&np.map, addr, memo);
            let unit = match &basis {
                Basis::Database { record, .. } => record.unit,
                _ => None,
            };
            (unit, base, basis)
        }
    };
    let n = np.units.len();
    let (loc, order) = match unit {
        Some(c) => {
            let order = by_distance(np, c);
            (order[0], order)
        }
        None => (n, (0..n).collect()),
    };
    Place {
        loc,
        order: Cow::Owned(order),
        scope: scope(&np.map, addr, base, relevant),
        basis,
    }
}

/// The service's regions by distance from the point `from` on the unit
/// sphere, nearest first (ties: the service's order): the larger the dot
/// product of the two points, the shorter the great circle between them.
fn by_distance(np: &NearestPolicy, from: [f64; 3]) -> Vec<usize> {
    let dot = |u: &[f64; 3]| from[0] * u[0] + from[1] * u[1] + from[2] * u[2];
    let mut keyed: Vec<(f64, usize)> = np.units.iter().map(dot).zip(0..).collect();
    keyed.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    keyed.into_iter().map(|(_, p)| p).collect()
}

/// The most specific `nets` entry holding `addr` that the service uses.
fn net_match(
    map: &GeoMap,
    addr: IpAddr,
    relevant: impl Fn(&GeoNet) -> bool,
) -> Option<(usize, &GeoNet)> {
    map.nets
        .iter()
        .enumerate()
        .find(|(_, n)| relevant(n) && n.net.contains(&addr))
}

/// The answer found for `addr` holds over its network of length `base`,
/// except where a more specific `nets` entry (one the service uses, not
/// holding `addr`) lies inside it: the scope grows until the client's
/// network no longer overlaps any such entry (RFC 7871 §7.2.1: a resolver
/// reuses the answer for the whole scope).
fn scope(map: &GeoMap, addr: IpAddr, base: u8, relevant: impl Fn(&GeoNet) -> bool) -> u8 {
    let mut s = base;
    for n in &map.nets {
        // Longest first: an entry this short cannot lengthen the scope.
        if n.net.prefix_len() <= s {
            break;
        }
        if !relevant(n) || n.net.contains(&addr) {
            continue;
        }
        if let Some(common) = common_prefix(addr, n.net.network()) {
            s = s.max(common + 1);
        }
    }
    s
}

/// Leading bits `a` and `b` share (`None` across families).
fn common_prefix(a: IpAddr, b: IpAddr) -> Option<u8> {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => Some((a.to_bits() ^ b.to_bits()).leading_zeros() as u8),
        (IpAddr::V6(a), IpAddr::V6(b)) => Some((a.to_bits() ^ b.to_bits()).leading_zeros() as u8),
        _ => None,
    }
}

/// The database's answer for `addr`: the length of its network and what it says.
fn database(map: &GeoMap, addr: IpAddr, memo: &mut Memo) -> (u8, Basis) {
    let Some(db) = &map.database else {
        return (0, Basis::Unknown { network: None });
    };
    let family_max = if addr.is_ipv4() { 32 } else { 128 };
    let db_id = std::ptr::from_ref(db.as_ref()) as usize;
    let (key, key_len) = subnet_key(db_id, addr);
    let network_of = |prefix: u8| {
        IpNet::new(addr, prefix)
            .map(|n| n.trunc())
            .unwrap_or_else(|_| IpNet::from(addr))
    };
    if let Some(&(prefix, record)) = memo.subnets.get(&key) {
        let network = network_of(prefix);
        return match record {
            Some(record) => (prefix, Basis::Database { network, record }),
            None => (
                prefix,
                Basis::Unknown {
                    network: Some(network),
                },
            ),
        };
    }
    let found = match db.reader.lookup(addr) {
        Ok(found) => found,
        // A damaged tree: nothing known, and the answer holds for this
        // address only.
        Err(_) => return (family_max, Basis::Unknown { network: None }),
    };
    let network = found.network().ok().and_then(|n| {
        // An IPv4 address in a database without an IPv4 subtree: every IPv4
        // address ends at the same node, so the record holds for all of them.
        let prefix = if n.is_ipv4() == addr.is_ipv4() {
            n.prefix()
        } else {
            0
        };
        IpNet::new(addr, prefix).ok().map(|n| n.trunc())
    });
    let base = network.map(|n| n.prefix_len()).unwrap_or(family_max);
    // The whole client network lies in the database's: one answer for all.
    let whole = network.is_some() && base <= key_len;
    let Some(offset) = found.offset() else {
        if whole {
            remember(&mut memo.subnets, key, (base, None));
        }
        return (base, Basis::Unknown { network });
    };
    let rkey = (db_id as u128) << 64 | offset as u128;
    let record = match memo.records.get(&rkey) {
        Some(r) => *r,
        None => {
            let r = found
                .decode::<Raw<'_>>()
                .ok()
                .flatten()
                .map(Raw::record)
                .unwrap_or_default();
            remember(&mut memo.records, rkey, r);
            r
        }
    };
    if whole {
        remember(&mut memo.subnets, key, (base, Some(record)));
    }
    let network = network.unwrap_or_else(|| IpNet::from(addr));
    (base, Basis::Database { network, record })
}

/// The parts of a GeoIP2 City/Country record used here; the rest is skipped.
#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow)]
    country: Option<Code<'a>>,
    #[serde(borrow)]
    registered_country: Option<Code<'a>>,
    #[serde(borrow)]
    continent: Option<Code<'a>>,
    location: Option<Location>,
}

#[derive(Deserialize)]
struct Code<'a> {
    iso_code: Option<&'a str>,
    code: Option<&'a str>,
}

#[derive(Deserialize)]
struct Location {
    latitude: Option<f64>,
    longitude: Option<f64>,
}

impl Raw<'_> {
    fn record(self) -> DbRecord {
        let two = |s: Option<&str>| -> Option<[u8; 2]> {
            let b = s?.as_bytes();
            (b.len() == 2 && b.iter().all(u8::is_ascii_alphabetic))
                .then(|| [b[0].to_ascii_uppercase(), b[1].to_ascii_uppercase()])
        };
        let country = self
            .country
            .and_then(|c| two(c.iso_code))
            .or_else(|| self.registered_country.and_then(|c| two(c.iso_code)));
        let continent = self.continent.and_then(|c| two(c.code));
        let coords = self.location.and_then(|l| match (l.latitude, l.longitude) {
            (Some(lat), Some(lon))
                if lat.is_finite()
                    && lon.is_finite()
                    && (-90.0..=90.0).contains(&lat)
                    && (-180.0..=180.0).contains(&lon) =>
            {
                Some(Coords { lat, lon })
            }
            _ => None,
        });
        DbRecord {
            country,
            continent,
            unit: coords.map(Coords::unit),
            coords,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(nets: &[(&str, usize)]) -> GeoMap {
        let mut nets: Vec<GeoNet> = nets
            .iter()
            .map(|(n, l)| GeoNet {
                net: n.parse().unwrap(),
                label: *l,
            })
            .collect();
        nets.sort_by_key(|n| std::cmp::Reverse(n.net.prefix_len()));
        GeoMap {
            name: "t".into(),
            nets,
            labels: vec!["a".into(), "b".into()],
            database: None,
            origin: Default::default(),
        }
    }

    #[test]
    fn scope_grows_past_more_specific_nets_inside_the_answer() {
        let m = map(&[("10.0.0.0/8", 0), ("10.1.2.0/24", 1)]);
        let all = |_: &GeoNet| true;
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // 10.9.0.0 is in /8 "a"; the /24 "b" differs from it at bit 12
        // (10.0000_1001 vs 10.0000_0001): a /13 around the client excludes it.
        assert_eq!(scope(&m, ip("10.9.0.0"), 8, all), 13);
        // Inside the /24 itself: nothing more specific.
        assert_eq!(scope(&m, ip("10.1.2.7"), 24, all), 24);
        // Next door to the /24: 10.1.3.x shares 23 bits with it.
        assert_eq!(scope(&m, ip("10.1.3.1"), 8, all), 24);
        // An entry the service does not use changes nothing.
        assert_eq!(scope(&m, ip("10.1.3.1"), 8, |n: &GeoNet| n.label == 0), 8);
        // Another family never matters.
        assert_eq!(scope(&m, ip("2001:db8::1"), 0, all), 0);
    }

    #[test]
    fn nets_match_most_specific_used_entry() {
        let m = map(&[("10.0.0.0/8", 0), ("10.1.0.0/16", 1)]);
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(net_match(&m, ip, |_| true).unwrap().1.label, 1);
        assert_eq!(net_match(&m, ip, |n| n.label == 0).unwrap().1.label, 0);
        assert!(net_match(&m, "11.0.0.1".parse().unwrap(), |_| true).is_none());
    }

    #[test]
    fn the_unit_sphere_orders_as_great_circle_distance_does() {
        let regions = [
            (39.0, -77.5),
            (45.6, -121.2),
            (53.3, -6.3),
            (19.1, 72.9),
            (-23.5, -46.6),
            (-33.9, 151.2),
            (1.3, 103.8),
        ];
        let coords: Vec<Coords> = regions
            .iter()
            .map(|&(lat, lon)| Coords { lat, lon })
            .collect();
        let np = NearestPolicy {
            map: std::sync::Arc::new(map(&[])),
            answers: 1,
            units: coords.iter().map(|c| c.unit()).collect(),
            label_units: Vec::new(),
        };
        // Clients on a grid over the globe, poles and antimeridian included.
        for lat in (-90..=90).step_by(15) {
            for lon in (-180..=180).step_by(20) {
                let from = Coords {
                    lat: f64::from(lat),
                    lon: f64::from(lon),
                };
                let mut want: Vec<usize> = (0..coords.len()).collect();
                want.sort_by(|&a, &b| {
                    from.distance_km(coords[a])
                        .total_cmp(&from.distance_km(coords[b]))
                });
                assert_eq!(by_distance(&np, from.unit()), want, "from {lat},{lon}");
            }
        }
    }

    #[test]
    fn distances_are_great_circle() {
        let ny = Coords {
            lat: 40.7,
            lon: -74.0,
        };
        let london = Coords {
            lat: 51.5,
            lon: -0.1,
        };
        let d = ny.distance_km(london);
        assert!((5500.0..5650.0).contains(&d), "{d}");
        assert_eq!(ny.distance_km(ny), 0.0);
    }
}
