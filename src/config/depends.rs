//! `depends-on`: what it names exists (a region, or an endpoint of one,
//! in this zone or another) and no region depends on itself, directly or
//! through others. Names in the region's own zone are judged with the zone
//! ([`check_zone`], so a zone with other errors still has these reported);
//! names in other zones, and cycles through them, once every zone is loaded
//! ([`check_across`]). The form of each entry and `healthy-when` were
//! checked with the region ([`super::region`]).

use std::collections::HashMap;
use std::sync::Arc;

use super::ConfigError;
use super::names::Defined;
use crate::model::{Dependency, Region, RegionTarget, Zone};

/// A region, by zone label and name.
type Key<'a> = (&'a str, &'a str);

/// Edges from a region to the regions it depends on.
type Graph<'a> = HashMap<Key<'a>, Vec<(Key<'a>, &'a Dependency)>>;

/// The dependencies of zone `label`'s regions on its own regions.
pub(super) fn check_zone(label: &str, regions: &Defined<Region>, errors: &mut Vec<ConfigError>) {
    let mut graph: Graph<'_> = HashMap::new();
    for region in regions.valid.values() {
        let Some(deps) = &region.depends else {
            continue;
        };
        let edges = graph.entry((label, &region.name)).or_default();
        for d in deps.on.iter().filter(|d| d.zone == label) {
            let target = match regions.get("region", &d.region) {
                Ok(t) => t,
                // Defined but invalid: reported already.
                Err(None) => continue,
                Err(Some(msg)) => {
                    errors.push(err(d, msg));
                    continue;
                }
            };
            match d.endpoint {
                Some(addr) => {
                    if let Some(msg) = missing_endpoint(&target, addr) {
                        errors.push(err(d, msg));
                    }
                }
                None => edges.push(((label, region_name(regions, &d.region)), d)),
            }
        }
    }
    cycles(&graph, |_| true, errors);
}

/// The name as the zone's table holds it (borrowed for the graph).
fn region_name<'a>(regions: &'a Defined<Region>, name: &str) -> &'a str {
    regions
        .valid
        .get_key_value(name)
        .map_or("", |(k, _)| k.as_str())
}

/// Every zone's dependencies on other zones, and the cycles that pass
/// through another zone (those within one were found by [`check_zone`]).
/// `all_loaded`: no zone file failed, so a zone not among `zones` does not
/// exist (when one failed, it may be that one, and "no zone" would mislead).
pub(super) fn check_across(zones: &[Arc<Zone>], all_loaded: bool, errors: &mut Vec<ConfigError>) {
    let labels: Vec<String> = zones.iter().map(|z| z.label()).collect();
    let by_label: HashMap<&str, &Zone> = labels
        .iter()
        .map(String::as_str)
        .zip(zones.iter().map(|z| z.as_ref()))
        .collect();
    let mut graph: Graph<'_> = HashMap::new();
    for (zone, label) in zones.iter().zip(&labels) {
        for region in zone.regions.values() {
            let Some(deps) = &region.depends else {
                continue;
            };
            let edges = graph.entry((label, &region.name)).or_default();
            for d in &deps.on {
                let Some(target_zone) = by_label.get(d.zone.as_str()) else {
                    if all_loaded {
                        errors.push(err(d, format!("no zone {} is loaded", d.zone)));
                    }
                    continue;
                };
                let Some(target) = target_zone.regions.get(&d.region) else {
                    if d.zone != *label {
                        errors.push(err(
                            d,
                            format!("zone {} has no region {}", d.zone, d.region),
                        ));
                    }
                    continue;
                };
                match d.endpoint {
                    Some(addr) if d.zone != *label => {
                        if let Some(msg) = missing_endpoint(target, addr) {
                            errors.push(err(d, msg));
                        }
                    }
                    Some(_) => {}
                    None => edges.push(((&d.zone, &target.name), d)),
                }
            }
        }
    }
    cycles(&graph, |path| path.iter().any(|k| k.0 != path[0].0), errors);
}

fn err(d: &Dependency, msg: String) -> ConfigError {
    ConfigError {
        origin: d.origin.clone(),
        msg: format!("depends-on {:?}: {msg}", d.written),
    }
}

fn missing_endpoint(region: &Region, addr: std::net::IpAddr) -> Option<String> {
    match &region.target {
        RegionTarget::Alias(_) => Some(format!(
            "region {} is a cname region: it has no endpoints to name",
            region.name
        )),
        RegionTarget::Endpoints(eps) if !eps.contains(&addr) => {
            Some(format!("region {} has no endpoint {addr}", region.name))
        }
        RegionTarget::Endpoints(_) => None,
    }
}

/// Each cycle of region dependencies, reported where the edge that closes
/// it is written, with the whole path.
/// `report` picks the cycles to report, given the regions on it.
fn cycles(graph: &Graph<'_>, report: impl Fn(&[Key<'_>]) -> bool, errors: &mut Vec<ConfigError>) {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    let mut marks: HashMap<Key<'_>, Mark> = HashMap::new();
    // Sorted, so that a cycle is reported at the same place every load.
    let mut starts: Vec<&Key<'_>> = graph.keys().collect();
    starts.sort();
    for &start in starts {
        if marks.contains_key(&start) {
            continue;
        }
        // Iterative depth-first search: (node, next edge to follow).
        let mut path: Vec<(Key<'_>, usize)> = vec![(start, 0)];
        marks.insert(start, Mark::Open);
        while let Some(&mut (node, ref mut next)) = path.last_mut() {
            let edges = graph.get(&node).map_or(&[][..], Vec::as_slice);
            let Some(&(to, dep)) = edges.get(*next) else {
                marks.insert(node, Mark::Done);
                path.pop();
                continue;
            };
            *next += 1;
            match marks.get(&to) {
                Some(Mark::Done) => {}
                Some(Mark::Open) => {
                    let from = path.iter().position(|(k, _)| *k == to).unwrap_or(0);
                    let on: Vec<Key<'_>> = path[from..].iter().map(|(k, _)| *k).collect();
                    if !report(&on) {
                        continue;
                    }
                    let home = node.0;
                    let mut names: Vec<String> =
                        path[from..].iter().map(|(k, _)| name(*k, home)).collect();
                    names.push(name(to, home));
                    let msg = if names.len() == 2 {
                        format!("region {} depends on itself", names[0])
                    } else {
                        format!("a cycle: {}", names.join(" → "))
                    };
                    errors.push(err(dep, msg));
                }
                None => {
                    marks.insert(to, Mark::Open);
                    path.push((to, 0));
                }
            }
        }
    }
}

/// A region as a cycle names it: by name in `home`, else `ZONE:REGION`.
fn name((zone, region): Key<'_>, home: &str) -> String {
    if zone == home {
        region.to_string()
    } else {
        format!("{zone}:{region}")
    }
}
