//! `[service.NAME]`: a name answered from regions by a policy.

use std::sync::Arc;

use hickory_proto::rr::Name;
use toml::Spanned;

use super::geo::{geo_policy, map_of, nearest_policy};
use super::names::{Defined, parse_owner};
use super::source::Ctx;
use super::spec::ServiceSpec;
use super::{DEFAULT_DEGRADED_TTL, DEFAULT_SERVICE_TTL};
use crate::model::{
    GeoMap, Origin, Policy, Region, RegionTarget, Service, ServiceRegion, WhenAllDown,
};

pub(super) fn build_service(
    cx: &mut Ctx<'_, '_>,
    key: &Spanned<String>,
    s: &ServiceSpec,
    regions: &Defined<Region>,
    maps: &Defined<GeoMap>,
    apex: &Name,
) -> Option<Service> {
    let before = cx.errors.len();
    let name = match parse_owner(key.get_ref(), apex) {
        Ok(n) => n,
        Err(e) => {
            cx.err(key, e);
            return None;
        }
    };
    let (policy, members) = policy(cx, key, s, regions, maps)?;
    check_answers(cx, key, s, &policy, &members);
    let ttl = cx.ttl(&s.ttl, DEFAULT_SERVICE_TTL);
    let degraded_ttl = cx.ttl(&s.degraded_ttl, ttl.min(DEFAULT_DEGRADED_TTL));
    if degraded_ttl > ttl {
        cx.err(
            s.degraded_ttl.as_ref().expect("set when above ttl"),
            format!("degraded-ttl {degraded_ttl} is above ttl {ttl}"),
        );
    }
    let max_records = cx.int(&s.max_records, "max-records", 1, 64, 8) as usize;
    let when_all_down = when_all_down(cx, s, regions);
    if cx.errors.len() > before {
        return None;
    }
    Some(Service {
        key: key.get_ref().clone(),
        name,
        policy,
        regions: members,
        ttl,
        degraded_ttl,
        max_records,
        when_all_down,
        origin: cx.src.at(key),
    })
}

/// The region called `name`; `None` when it is unknown (reported here) or
/// invalid (reported already, and the zone is rejected for it).
pub(super) fn lookup(
    cx: &mut Ctx<'_, '_>,
    regions: &Defined<Region>,
    name: &str,
    at: Origin,
) -> Option<Arc<Region>> {
    match regions.get("region", name) {
        Ok(reg) => Some(reg),
        Err(Some(msg)) => {
            cx.err_at(at, msg);
            None
        }
        Err(None) => None,
    }
}

/// The policy and the regions it answers from.
fn policy(
    cx: &mut Ctx<'_, '_>,
    key: &Spanned<String>,
    s: &ServiceSpec,
    regions: &Defined<Region>,
    maps: &Defined<GeoMap>,
) -> Option<(Policy, Vec<ServiceRegion>)> {
    let answers = cx.int(&s.answers, "answers", 1, 64, 1) as usize;
    let name = s.policy.as_ref().map(|p| p.get_ref().as_str());
    if !matches!(name, Some("geo" | "nearest")) {
        for (what, span) in [
            ("geo", s.geo.as_ref().map(Spanned::span)),
            ("map", s.map.as_ref().map(Spanned::span)),
        ] {
            if let Some(span) = span {
                let at = cx.src.origin(span.start);
                cx.err_at(
                    at,
                    format!("`{what}` applies to policy = \"geo\" or \"nearest\""),
                );
            }
        }
    }
    if let Some(a) = &s.answers
        && !matches!(name, Some("weighted" | "nearest" | "geo"))
    {
        cx.err(
            a,
            "`answers` applies to the weighted and nearest policies only",
        );
    }
    let simple = |cx: &mut Ctx<'_, '_>, policy: Policy| {
        let members = members(cx, key, s, &policy, regions);
        Some((policy, members))
    };
    match (s.policy.as_ref(), name) {
        (_, None | Some("failover")) => simple(cx, Policy::Failover),
        (_, Some("weighted")) => simple(cx, Policy::Weighted { answers }),
        (_, Some("all-healthy")) => simple(cx, Policy::AllHealthy),
        (Some(p), Some("geo")) => {
            let map = map_of(cx, s, p, maps)?;
            let (g, members) = geo_policy(cx, key, s, map, regions)?;
            Some((Policy::Geo(Arc::new(g)), members))
        }
        (Some(p), Some("nearest")) => {
            let map = map_of(cx, s, p, maps);
            let members = members(cx, key, s, &Policy::Failover, regions);
            let n = nearest_policy(cx, key, s, map?, answers, &members, regions)?;
            Some((Policy::Nearest(Arc::new(n)), members))
        }
        (Some(p), Some(other)) => {
            cx.err(p, format!("unknown policy {other:?} (expected \"failover\", \"weighted\", \"all-healthy\", \"geo\" or \"nearest\")"));
            None
        }
        (None, Some(_)) => unreachable!("a name comes from a policy"),
    }
}

/// `regions` or `weights`: the service's regions in the file's order.
fn members(
    cx: &mut Ctx<'_, '_>,
    key: &Spanned<String>,
    s: &ServiceSpec,
    policy: &Policy,
    regions: &Defined<Region>,
) -> Vec<ServiceRegion> {
    let mut members: Vec<ServiceRegion> = Vec::new();
    // Every listed region was found (unknown and invalid ones are reported
    // on their own; nothing is said about what they leave behind).
    let mut all_found = true;
    let mut add = |cx: &mut Ctx<'_, '_>, name: &str, at: Origin, weight: u32| {
        let Some(region) = lookup(cx, regions, name, at.clone()) else {
            all_found = false;
            return;
        };
        if members.iter().any(|m| m.region.name == region.name) {
            cx.err_at(at, format!("region {:?} is listed twice", region.name));
        } else {
            members.push(ServiceRegion { region, weight });
        }
    };
    match (&s.regions, &s.weights) {
        (Some(list), None) => {
            for r in list.get_ref() {
                let at = cx.src.at(r);
                add(cx, r.get_ref(), at, 1);
            }
            if list.get_ref().is_empty() {
                cx.err(list, "regions is empty");
            }
        }
        (None, Some(weights)) => {
            if !matches!(policy, Policy::Weighted { .. }) {
                cx.err(weights, "`weights` applies to the weighted policy; use `regions` for failover and all-healthy");
            }
            let mut weights_valid = true;
            for (r, w) in weights.get_ref() {
                let at = cx.src.at(w);
                let valid = (0..=1_000_000).contains(w.get_ref());
                weights_valid &= valid;
                let weight = cx.int(&Some(w.clone()), "weight", 0, 1_000_000, 1) as u32;
                add(cx, r, at, weight);
            }
            if weights.get_ref().is_empty() {
                cx.err(weights, "weights is empty");
            } else if all_found && weights_valid && members.iter().all(|m| m.weight == 0) {
                cx.err(
                    weights,
                    "every weight is 0: at least one region needs a positive weight",
                );
            }
        }
        (Some(list), Some(_)) => {
            cx.err(
                list,
                "set `regions` or `weights`, not both (weights also lists the regions)",
            );
        }
        (None, None) => cx.err(
            key,
            format!(
                "service {} needs `regions` (or `weights` for the weighted policy)",
                key.get_ref()
            ),
        ),
    }
    members
}

/// What `answers` and cname regions allow together.
fn check_answers(
    cx: &mut Ctx<'_, '_>,
    key: &Spanned<String>,
    s: &ServiceSpec,
    policy: &Policy,
    members: &[ServiceRegion],
) {
    let aliases = members
        .iter()
        .filter(|m| matches!(m.region.target, RegionTarget::Alias(_)))
        .count();
    if aliases > 0
        && (matches!(policy, Policy::AllHealthy)
            || matches!(policy, Policy::Weighted { answers } if *answers > 1)
            || matches!(policy, Policy::Nearest(n) if n.answers > 1))
    {
        cx.err(key, format!("service {}: a cname region can only be answered alone (failover, or weighted with answers = 1)", key.get_ref()));
    }
    let answers = match policy {
        Policy::Weighted { answers } => *answers,
        Policy::Nearest(n) => n.answers,
        _ => 1,
    };
    if answers > members.len() && !members.is_empty() {
        cx.err(
            s.answers.as_ref().expect("answers > 1 is set"),
            format!(
                "answers = {answers} but the service has {} regions",
                members.len()
            ),
        );
    }
}

fn when_all_down(cx: &mut Ctx<'_, '_>, s: &ServiceSpec, regions: &Defined<Region>) -> WhenAllDown {
    let mode = s
        .when_all_down
        .as_ref()
        .map(|m| m.get_ref().as_str())
        .unwrap_or("fail-open");
    match (mode, &s.last_resort) {
        ("fail-open", None) => WhenAllDown::FailOpen,
        ("nodata", None) => WhenAllDown::NoData,
        ("servfail", None) => WhenAllDown::ServFail,
        ("last-resort" | "fail-open", Some(r))
            if s.when_all_down.is_none() || mode == "last-resort" =>
        {
            let at = cx.src.at(r);
            match lookup(cx, regions, r.get_ref(), at) {
                Some(reg) => WhenAllDown::LastResort(reg),
                None => WhenAllDown::FailOpen,
            }
        }
        ("last-resort", None) => {
            cx.err(
                s.when_all_down.as_ref().expect("set"),
                "when-all-down = \"last-resort\" needs `last-resort = \"REGION\"`",
            );
            WhenAllDown::FailOpen
        }
        (_, Some(r)) if matches!(mode, "fail-open" | "nodata" | "servfail") => {
            cx.err(
                r,
                format!(
                    "`last-resort` is only used with when-all-down = \"last-resort\", not {mode:?}"
                ),
            );
            WhenAllDown::FailOpen
        }
        (other, _) => {
            cx.err(
                s.when_all_down.as_ref().expect("set"),
                format!("unknown when-all-down {other:?} (expected \"fail-open\", \"last-resort\", \"nodata\" or \"servfail\")"),
            );
            WhenAllDown::FailOpen
        }
    }
}
