//! `[region.NAME]`: where a service runs, and how its health is checked.

use std::net::IpAddr;

use hickory_proto::rr::Name;
use toml::Spanned;

use super::names::{Defined, parse_name};
use super::source::Ctx;
use super::spec::RegionSpec;
use crate::model::{Check, Coords, Dependencies, Dependency, Region, RegionTarget};

pub(super) fn build_region(
    cx: &mut Ctx<'_, '_>,
    index: usize,
    name: &Spanned<String>,
    s: &RegionSpec,
    checks: &Defined<Check>,
    apex: &Name,
    zone: &str,
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
    let depends = dependencies(cx, name, s, zone);
    if cx.errors.len() > before {
        return None;
    }
    Some(Region {
        location,
        depends,
        name: name.get_ref().clone(),
        index,
        target,
        check,
        min_healthy,
        origin: cx.src.at(name),
    })
}

/// `depends-on` and `healthy-when`: their form only. Whether what they
/// name exists, and cycles, are judged once every zone is loaded
/// ([`super::depends`]), since they may name other zones.
fn dependencies(
    cx: &mut Ctx<'_, '_>,
    name: &Spanned<String>,
    s: &RegionSpec,
    zone: &str,
) -> Option<Dependencies> {
    let Some(list) = &s.depends_on else {
        if let Some(h) = &s.healthy_when {
            cx.err(h, "healthy-when needs depends-on");
        }
        return None;
    };
    if list.get_ref().is_empty() {
        cx.err(
            list,
            format!(
                "region {}: depends-on is empty (leave it out to depend on nothing)",
                name.get_ref()
            ),
        );
        return None;
    }
    let mut on: Vec<Dependency> = Vec::new();
    for entry in list.get_ref() {
        match dependency(entry.get_ref(), zone) {
            Ok((dz, region, endpoint)) => {
                let written = entry.get_ref().trim().to_string();
                if on
                    .iter()
                    .any(|d| d.zone == dz && d.region == region && d.endpoint == endpoint)
                {
                    cx.err(entry, format!("depends-on {written:?} is listed twice"));
                    continue;
                }
                on.push(Dependency {
                    zone: dz,
                    region,
                    endpoint,
                    written,
                    origin: cx.src.at(entry),
                });
            }
            Err(msg) => cx.err(entry, format!("depends-on {:?}: {msg}", entry.get_ref())),
        }
    }
    let count = list.get_ref().len();
    let needed = match &s.healthy_when {
        None => count,
        Some(h) => match threshold(h.get_ref(), count) {
            Ok(n) => n,
            Err(msg) => {
                cx.err(h, format!("healthy-when {:?}: {msg}", h.get_ref()));
                count
            }
        },
    };
    Some(Dependencies { on, needed })
}

/// `"REGION"`, `"REGION/ADDRESS"`, `"ZONE:REGION"` or
/// `"ZONE:REGION/ADDRESS"`: (zone label, region, endpoint).
fn dependency(text: &str, zone: &str) -> Result<(String, String, Option<IpAddr>), String> {
    let text = text.trim();
    let (head, endpoint) = match text.split_once('/') {
        Some((h, a)) => match a.trim().parse::<IpAddr>() {
            Ok(a) => (h, Some(a)),
            Err(_) => return Err(format!("{a:?} is not an endpoint address (REGION/ADDRESS)")),
        },
        None => (text, None),
    };
    let (dz, region) = match head.split_once(':') {
        Some((z, r)) => {
            let z = z.trim().trim_end_matches('.').to_ascii_lowercase();
            if z.is_empty() {
                return Err("the zone before `:` is empty (ZONE:REGION)".into());
            }
            (z, r.trim())
        }
        None => (zone.to_string(), head.trim()),
    };
    if region.is_empty() {
        return Err(
            "names no region (REGION, REGION/ADDRESS, ZONE:REGION or ZONE:REGION/ADDRESS)".into(),
        );
    }
    Ok((dz, region.to_string(), endpoint))
}

/// `"N of M"` (M: how many `depends-on` lists), `"any"` or `"all"`: how
/// many must be up.
fn threshold(text: &str, count: usize) -> Result<usize, String> {
    let t = text.trim().to_ascii_lowercase();
    match t.as_str() {
        "all" => return Ok(count),
        "any" => return Ok(1),
        _ => {}
    }
    let form = || "is \"N of M\" (as \"2 of 3\"), \"any\" or \"all\"".to_string();
    let (n, m) = t.split_once(" of ").ok_or_else(form)?;
    let (n, m): (usize, usize) = match (n.trim().parse(), m.trim().parse()) {
        (Ok(n), Ok(m)) => (n, m),
        _ => return Err(form()),
    };
    if m != count {
        let listed = if count == 1 {
            "1 dependency".to_string()
        } else {
            format!("{count} dependencies")
        };
        return Err(format!("depends-on lists {listed}, not {m}"));
    }
    if n == 0 {
        return Err("needs at least 1 up (a region that needs none depends on nothing)".into());
    }
    if n > m {
        return Err(format!("cannot be met: {n} up of only {m}"));
    }
    Ok(n)
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
