//! `[geo.NAME]` maps, and the `geo` and `nearest` policies of services.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use ipnet::IpNet;
use toml::Spanned;

use super::names::Defined;
use super::service::lookup;
use super::source::Ctx;
use super::spec::{GeoSpec, NameList, ServiceSpec};
use crate::model::{
    Coords, GeoDb, GeoEntry, GeoMap, GeoNet, GeoPolicy, MapKey, NearestPolicy, Region,
    ServiceRegion,
};

/// Continent codes of GeoIP2 databases.
const CONTINENTS: [&str; 7] = ["AF", "AN", "AS", "EU", "NA", "OC", "SA"];

pub(super) fn build_geo(
    cx: &mut Ctx<'_, '_>,
    name: &Spanned<String>,
    s: &GeoSpec,
) -> Option<GeoMap> {
    let before = cx.errors.len();
    let database = s.database.as_ref().and_then(|d| {
        let path = cx
            .src
            .file
            .parent()
            .unwrap_or(Path::new("."))
            .join(d.get_ref());
        match read_database(&path) {
            Ok(db) => Some(Arc::new(db)),
            Err(e) => {
                cx.err(d, format!("database {}: {e}", path.display()));
                None
            }
        }
    });
    let mut labels: Vec<String> = Vec::new();
    let mut nets: Vec<(GeoNet, String)> = Vec::new();
    if let Some(list) = &s.nets {
        for (cidr, label) in list.get_ref() {
            let net = match cidr.get_ref().trim().parse::<IpNet>() {
                Ok(n) if n.trunc() != n => {
                    cx.err(
                        cidr,
                        format!(
                            "{} has bits set past its prefix length (the network is {})",
                            cidr.get_ref(),
                            n.trunc()
                        ),
                    );
                    continue;
                }
                Ok(n) => n,
                Err(_) => {
                    cx.err(
                        cidr,
                        format!(
                            "{:?} is not a CIDR network (like \"198.51.100.0/24\" or \"2001:db8::/48\")",
                            cidr.get_ref()
                        ),
                    );
                    continue;
                }
            };
            let l = label.get_ref().trim();
            if l.is_empty() || l == "*" || l.contains(':') {
                cx.err(
                    label,
                    format!("label {l:?}: a nets label is a name (not empty, not `*`, no `:`)"),
                );
                continue;
            }
            if let Some((_, other)) = nets.iter().find(|(n, _)| n.net == net) {
                cx.err(cidr, format!("{net} is listed twice (also as {other:?})"));
                continue;
            }
            if !labels.iter().any(|x| x == l) {
                labels.push(l.to_string());
            }
            nets.push((GeoNet { net, label: 0 }, l.to_string()));
        }
    }
    if s.database.is_none() && s.nets.is_none() {
        cx.err(
            name,
            format!(
                "geo {} needs `database` or `nets` (or both)",
                name.get_ref()
            ),
        );
    }
    if cx.errors.len() > before {
        return None;
    }
    labels.sort();
    let mut nets: Vec<GeoNet> = nets
        .into_iter()
        .map(|(mut n, l)| {
            n.label = labels.binary_search(&l).expect("collected");
            n
        })
        .collect();
    // Longest prefix first: the first entry holding an address is the most specific.
    nets.sort_by(|a, b| {
        (b.net.prefix_len(), a.net.addr()).cmp(&(a.net.prefix_len(), b.net.addr()))
    });
    Some(GeoMap {
        name: name.get_ref().clone(),
        nets,
        labels,
        database,
        origin: cx.src.at(name),
    })
}

/// Read and open an mmdb file whole; a file that is not one is an error
/// (so a reload keeps the previous configuration).
fn read_database(path: &Path) -> Result<GeoDb, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let hash = crate::model::fnv1a(&bytes);
    let reader =
        maxminddb::Reader::from_source(bytes).map_err(|e| format!("not a MaxMind DB file: {e}"))?;
    // A damaged search tree opens fine and fails at lookup: walk the tree
    // once now (the data section is checked record by record as used).
    probe_tree(&reader).map_err(|e| format!("damaged MaxMind DB file: {e}"))?;
    Ok(GeoDb {
        path: path.to_path_buf(),
        reader,
        hash,
    })
}

/// Look up a spread of addresses: a damaged tree fails some of them.
fn probe_tree(reader: &maxminddb::Reader<Vec<u8>>) -> Result<(), maxminddb::MaxMindDbError> {
    let v6 = reader.metadata().ip_version == 6;
    for i in 0u32..256 {
        let v4 = std::net::Ipv4Addr::from(i.wrapping_mul(0x0101_0101) ^ (i << 4));
        reader.lookup(v4.into())?;
        if v6 {
            let a = std::net::Ipv6Addr::from(u128::from(i) << 120 | 0x2001_0db8 << 96);
            reader.lookup(a.into())?;
        }
    }
    Ok(())
}

/// The `[geo.NAME]` a service names with `geo`.
pub(super) fn map_of(
    cx: &mut Ctx<'_, '_>,
    s: &ServiceSpec,
    policy: &Spanned<String>,
    maps: &Defined<GeoMap>,
) -> Option<Arc<GeoMap>> {
    let Some(geo) = &s.geo else {
        cx.err(
            policy,
            format!(
                "policy = {:?} needs `geo = \"NAME\"`, a [geo.NAME] table",
                policy.get_ref()
            ),
        );
        return None;
    };
    match maps.get("geo", geo.get_ref()) {
        Ok(m) => Some(m),
        Err(Some(msg)) => {
            cx.err(geo, msg);
            None
        }
        Err(None) => None,
    }
}

/// `policy = "geo"`: the map's entries, and the service's regions (every
/// region the map names, in the order first named).
pub(super) fn geo_policy(
    cx: &mut Ctx<'_, '_>,
    key: &Spanned<String>,
    s: &ServiceSpec,
    map: Arc<GeoMap>,
    regions: &Defined<Region>,
) -> Option<(GeoPolicy, Vec<ServiceRegion>)> {
    let before = cx.errors.len();
    let Some(spec) = &s.map else {
        cx.err(
            key,
            format!(
                "service {}: policy = \"geo\" needs `map`, location to regions",
                key.get_ref()
            ),
        );
        return None;
    };
    for (what, set) in [
        ("regions", s.regions.as_ref().map(Spanned::span)),
        ("weights", s.weights.as_ref().map(Spanned::span)),
        ("answers", s.answers.as_ref().map(Spanned::span)),
    ] {
        if let Some(span) = set {
            let at = cx.src.origin(span.start);
            cx.err_at(at, format!("`{what}` does not apply to policy = \"geo\": `map` lists the regions of each location"));
        }
    }
    // The file's order, for the service's region order.
    let mut keys: Vec<(&Spanned<String>, &NameList)> = spec.get_ref().iter().collect();
    keys.sort_by_key(|(k, _)| k.span().start);
    let mut members: Vec<ServiceRegion> = Vec::new();
    let mut entries: Vec<GeoEntry> = Vec::new();
    for (k, list) in keys {
        let Some(key) = map_key(cx, k, &map) else {
            continue;
        };
        let mut order = Vec::new();
        for r in list.get_ref() {
            let at = cx.src.at(r);
            let Some(region) = lookup(cx, regions, r.get_ref(), at) else {
                continue;
            };
            let pos = match members.iter().position(|m| m.region.name == region.name) {
                Some(p) => p,
                None => {
                    members.push(ServiceRegion { region, weight: 1 });
                    members.len() - 1
                }
            };
            if order.contains(&pos) {
                cx.err(r, format!("region {:?} is listed twice", r.get_ref()));
            }
            order.push(pos);
        }
        if list.get_ref().is_empty() {
            cx.err(list, format!("location {key} lists no regions"));
        }
        entries.push(GeoEntry { key, order });
    }
    if !entries.iter().any(|e| e.key == MapKey::Default) && cx.errors.len() == before {
        cx.err(
            spec,
            "map needs a \"*\" entry: the regions of clients no other key matches",
        );
    }
    if cx.errors.len() > before {
        return None;
    }
    entries.sort_by(|a, b| a.key.cmp(&b.key));
    let find = |k: &MapKey| entries.iter().position(|e| &e.key == k);
    let code = |c: &str| -> [u8; 2] { [c.as_bytes()[0], c.as_bytes()[1]] };
    let mut by_country = BTreeMap::new();
    let mut by_continent = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        match &e.key {
            MapKey::Country(c) => {
                by_country.insert(code(c), i);
            }
            MapKey::Continent(c) => {
                by_continent.insert(code(c), i);
            }
            _ => {}
        }
    }
    let policy = GeoPolicy {
        by_label: map
            .labels
            .iter()
            .map(|l| find(&MapKey::Label(l.clone())))
            .collect(),
        by_country,
        by_continent,
        default: find(&MapKey::Default).expect("checked"),
        entries,
        map,
    };
    Some((policy, members))
}

/// One `map` key: a nets label, `country:XX`, `continent:XX` or `*`.
fn map_key(cx: &mut Ctx<'_, '_>, k: &Spanned<String>, map: &GeoMap) -> Option<MapKey> {
    let raw = k.get_ref().trim();
    let needs_db = |cx: &mut Ctx<'_, '_>, what: &str| {
        if map.database.is_none() {
            cx.err(
                k,
                format!(
                    "{what} keys need a database: geo {} has no `database`",
                    map.name
                ),
            );
        }
    };
    if raw == "*" {
        return Some(MapKey::Default);
    }
    if let Some(c) = raw.strip_prefix("country:") {
        if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_alphabetic()) {
            cx.err(
                k,
                format!("{raw:?}: a country is a two-letter ISO 3166 code, like \"country:IN\""),
            );
            return None;
        }
        needs_db(cx, "country");
        return Some(MapKey::Country(c.to_ascii_uppercase()));
    }
    if let Some(c) = raw.strip_prefix("continent:") {
        let up = c.to_ascii_uppercase();
        if !CONTINENTS.contains(&up.as_str()) {
            cx.err(
                k,
                format!(
                    "{raw:?}: unknown continent (one of {})",
                    CONTINENTS.join(", ")
                ),
            );
            return None;
        }
        needs_db(cx, "continent");
        return Some(MapKey::Continent(up));
    }
    if map.labels.iter().any(|l| l == raw) {
        return Some(MapKey::Label(raw.to_string()));
    }
    let known = if map.labels.is_empty() {
        "none".to_string()
    } else {
        map.labels.join(", ")
    };
    cx.err(
        k,
        format!(
            "unknown map key {raw:?}: not a nets label of geo {} (labels: {known}), \"country:XX\", \"continent:XX\" or \"*\"",
            map.name
        ),
    );
    None
}

/// `policy = "nearest"`: every region needs a location, and the map a way
/// to find the client's.
pub(super) fn nearest_policy(
    cx: &mut Ctx<'_, '_>,
    key: &Spanned<String>,
    s: &ServiceSpec,
    map: Arc<GeoMap>,
    answers: usize,
    members: &[ServiceRegion],
    regions: &Defined<Region>,
) -> Option<NearestPolicy> {
    let before = cx.errors.len();
    if let Some(m) = &s.map {
        cx.err(
            m,
            "`map` applies to policy = \"geo\"; nearest orders `regions` by distance",
        );
    }
    let mut units = Vec::new();
    for m in members {
        match m.region.location {
            Some(c) => units.push(c.unit()),
            None => cx.err(
                key,
                format!(
                    "service {}: region {} has no `location` (policy = \"nearest\" needs every region's)",
                    key.get_ref(),
                    m.region.name
                ),
            ),
        }
    }
    let label_units: Vec<Option<[f64; 3]>> = map
        .labels
        .iter()
        .map(|l| {
            regions
                .valid
                .get(l)
                .and_then(|r| r.location)
                .map(Coords::unit)
        })
        .collect();
    if map.database.is_none() && label_units.iter().all(Option::is_none) {
        cx.err(
            s.geo.as_ref().expect("map found"),
            format!(
                "geo {} gives no coordinates: nearest needs a `database` with locations, or nets labels that name regions with a `location`",
                map.name
            ),
        );
    }
    if cx.errors.len() > before {
        return None;
    }
    Some(NearestPolicy {
        map,
        answers,
        units,
        label_units,
    })
}
