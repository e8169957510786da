//! `[region.NAME]`: where a service runs, and how its health is checked.

use std::net::IpAddr;

use hickory_proto::rr::Name;
use toml::Spanned;

use super::names::{Defined, parse_name};
use super::source::Ctx;
use super::spec::RegionSpec;
use crate::model::{Check, Coords, Region, RegionTarget};

pub(super) fn build_region(
    cx: &mut Ctx<'_, '_>,
    index: usize,
    name: &Spanned<String>,
    s: &RegionSpec,
    checks: &Defined<Check>,
    apex: &Name,
) -> Option<Region> {
    let before = cx.errors.len();
    let target = match (&s.endpoints, &s.cname) {
        (Some(_), Some(c)) => {
            cx.err(
                c,
                format!(
                    "region {}: set either `endpoints` or `cname`, not both",
                    name.get_ref()
                ),
            );
            return None;
        }
        (None, None) => {
            cx.err(
                name,
                format!(
                    "region {} needs `endpoints` (addresses) or `cname` (a host name)",
                    name.get_ref()
                ),
            );
            return None;
        }
        (Some(eps), None) => {
            let mut addrs: Vec<IpAddr> = Vec::new();
            for ep in eps.get_ref() {
                match ep.get_ref().trim().parse::<IpAddr>() {
                    Ok(a) if addrs.contains(&a) => {
                        cx.err(ep, format!("endpoint {a} is listed twice"))
                    }
                    Ok(a) => addrs.push(a),
                    Err(_) => cx.err(
                        ep,
                        format!("endpoint {:?} is not an IPv4 or IPv6 address", ep.get_ref()),
                    ),
                }
            }
            if eps.get_ref().is_empty() {
                cx.err(eps, format!("region {} has no endpoints", name.get_ref()));
            }
            RegionTarget::Endpoints(addrs)
        }
        (None, Some(c)) => match parse_name(c.get_ref(), apex) {
            Ok(n) => RegionTarget::Alias(n),
            Err(e) => {
                cx.err(c, e);
                return None;
            }
        },
    };
    let check = match &s.check {
        None => None,
        Some(c) => match checks.get("check", c.get_ref()) {
            Ok(chk) => Some(chk),
            Err(Some(msg)) => {
                cx.err(c, msg);
                None
            }
            // An invalid check was reported already; the region is invalid
            // too, and the zone is rejected for the check's error.
            Err(None) => return None,
        },
    };
    if let (RegionTarget::Alias(_), Some(chk)) = (&target, &check)
        && chk.target.is_none()
    {
        let at = s.check.as_ref().expect("check is set");
        cx.err(at, format!("region {}: a cname region is probed at the check's `target`, and check {} has none", name.get_ref(), chk.name));
    }
    let n_endpoints = match &target {
        RegionTarget::Endpoints(e) => e.len().max(1),
        RegionTarget::Alias(_) => 1,
    };
    let min_healthy = match &s.min_healthy {
        Some(m) if *m.get_ref() < 1 || *m.get_ref() > n_endpoints as i64 => {
            cx.err(
                m,
                format!(
                    "min-healthy {} must be between 1 and the region's {n_endpoints} endpoint(s)",
                    m.get_ref()
                ),
            );
            1
        }
        Some(m) => *m.get_ref() as usize,
        None => 1,
    };
    let location = s.location.as_ref().and_then(|l| location(cx, l));
    if cx.errors.len() > before {
        return None;
    }
    Some(Region {
        location,
        name: name.get_ref().clone(),
        index,
        target,
        check,
        min_healthy,
        origin: cx.src.at(name),
    })
}

/// `location = [latitude, longitude]`.
fn location(cx: &mut Ctx<'_, '_>, l: &Spanned<Vec<Spanned<f64>>>) -> Option<Coords> {
    let [lat, lon] = l.get_ref().as_slice() else {
        cx.err(
            l,
            "location is [latitude, longitude], two numbers in degrees",
        );
        return None;
    };
    let mut ok = true;
    for (v, what, max) in [(lat, "latitude", 90.0), (lon, "longitude", 180.0)] {
        if !(-max..=max).contains(v.get_ref()) {
            cx.err(
                v,
                format!("{what} {} is outside -{max} to {max}", v.get_ref()),
            );
            ok = false;
        }
    }
    ok.then(|| Coords {
        lat: *lat.get_ref(),
        lon: *lon.get_ref(),
    })
}
