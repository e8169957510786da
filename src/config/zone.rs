//! One zone file to a [`Zone`]: the `[zone]` table (SOA and NS), static
//! records, delegations, then checks, regions and services (each in its own
//! module), compiled into the name tree the engine serves.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use hickory_proto::rr::rdata::{NS, SOA};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

use super::check::build_check;
use super::geo::build_geo;
use super::names::{Defined, parse_name, parse_owner};
use super::region::build_region;
use super::service::build_service;
use super::source::{Ctx, Source, parse_collecting};
use super::spec::{ZoneFile, ZoneSpec};
use super::{ConfigError, DEFAULT_TTL, LoadOptions, MAX_TTL, check_webhook_url, records};
use crate::model::{Node, Origin, RRset, RegionTarget, Service, WhenAllDown, Zone};

/// Where a record of the zone came from, for conflict messages.
struct Entry {
    record: Record,
    origin: Origin,
    ttl_origin: Origin,
}

/// Static records by owner and type, in file order.
type Data = BTreeMap<LowerName, (Name, BTreeMap<RecordType, Vec<Entry>>)>;

/// What the `[zone]` table defines.
struct Head {
    name: Name,
    apex: LowerName,
    origin: Origin,
    ttl: u32,
    /// SOA MINIMUM.
    minimum: u32,
    soa: Record,
    nameservers: Vec<(Name, Origin)>,
    webhook: Option<String>,
}

pub(super) fn load_zone(
    src: &Source<'_>,
    opts: LoadOptions,
    errors: &mut Vec<ConfigError>,
) -> Option<Zone> {
    let file: ZoneFile = parse_collecting(src, errors)?;
    let before = errors.len();
    let mut cx = Ctx { src, errors };
    let head = zone_table(&mut cx, &file.zone, opts)?;
    let data = static_records(&mut cx, &file, &head);
    check_rrsets(&mut cx, &head.apex, &data);
    let cuts = delegations(&mut cx, &head, &data);

    // Names defined but invalid are remembered so references to them do not
    // add a second, misleading "unknown" error.
    let mut checks = Defined::default();
    for (name, spec) in &file.check {
        let built = build_check(&mut cx, name, spec).map(Arc::new);
        checks.insert(name.get_ref(), name.span().start, built);
    }
    let mut regions = Defined::default();
    for (name, spec) in &file.region {
        let index = regions.valid.len();
        let built = build_region(&mut cx, index, name, spec, &checks, &head.name).map(Arc::new);
        regions.insert(name.get_ref(), name.span().start, built);
    }
    let mut maps = Defined::default();
    for (name, spec) in &file.geo {
        let built = build_geo(&mut cx, name, spec).map(Arc::new);
        maps.insert(name.get_ref(), name.span().start, built);
    }
    let services = services(&mut cx, &file, &head, &regions, &maps, &cuts, &data);
    if cx.errors.len() > before {
        return None;
    }

    let (nodes, record_count, has_wildcards) = compile(&head.apex, data, &services);
    Some(Zone {
        negative_ttl: head.ttl.min(head.minimum),
        name: head.name,
        apex: head.apex,
        file: src.file.to_path_buf(),
        origin: head.origin,
        soa: head.soa,
        nodes,
        has_wildcards,
        checks: checks.valid,
        regions: regions.valid,
        services,
        record_count,
        // A changed database changes the zone as a changed file does.
        content_hash: maps
            .valid
            .values()
            .fold(crate::model::fnv1a(src.text.as_bytes()), |h, m| {
                match &m.database {
                    Some(db) => {
                        crate::model::fnv1a(&[h.to_le_bytes(), db.hash.to_le_bytes()].concat())
                    }
                    None => h,
                }
            }),
        geo: maps.valid,
        webhook: head.webhook,
        serial_auto: file.zone.serial.is_none(),
        ecs: file.zone.ecs.unwrap_or(true),
    })
}

/// `[zone]`: the apex, its SOA and name servers, the webhook.
fn zone_table(cx: &mut Ctx<'_, '_>, z: &ZoneSpec, opts: LoadOptions) -> Option<Head> {
    let written = z.name.get_ref().trim();
    let name = match Name::from_ascii(written) {
        // The root zone only when asked for by name: an empty `name` is a
        // mistake, not ".".
        Ok(mut n)
            if !written.is_empty()
                && (!n.is_root() || written == ".")
                && !n.iter().any(|l| l == b"*") =>
        {
            n.set_fqdn(true);
            n
        }
        Ok(_) | Err(_) => {
            cx.err(
                &z.name,
                format!(
                    "invalid zone name {:?} (the zone's domain, e.g. \"gslb.example.com\")",
                    z.name.get_ref()
                ),
            );
            return None;
        }
    };
    let ttl = cx.ttl(&z.ttl, DEFAULT_TTL);
    let refresh = cx.int(&z.refresh, "refresh", 0, MAX_TTL, 3600) as i32;
    let retry = cx.int(&z.retry, "retry", 0, MAX_TTL, 600) as i32;
    let expire = cx.int(&z.expire, "expire", 0, MAX_TTL, 604_800) as i32;
    let minimum = cx.int(&z.negative_ttl, "negative-ttl", 0, MAX_TTL, 60) as u32;
    let serial = cx.int(
        &z.serial,
        "serial",
        0,
        i64::from(u32::MAX),
        i64::from(opts.auto_serial),
    ) as u32;

    let mut nameservers = Vec::new();
    for ns in z.nameservers.get_ref() {
        match parse_name(ns.get_ref(), &name) {
            Ok(n) => nameservers.push((n, cx.src.at(ns))),
            Err(e) => cx.err(ns, e),
        }
    }
    if z.nameservers.get_ref().is_empty() {
        cx.err(&z.nameservers, "nameservers must name at least one server");
    }
    let rname = {
        let h = z.hostmaster.get_ref().trim();
        let h = match h.split_once('@') {
            // An address names an absolute mailbox: hostmaster@example.com.
            Some((local, domain)) => format!(
                "{}.{}.",
                local.replace('.', "\\."),
                domain.trim_end_matches('.')
            ),
            None => h.to_string(),
        };
        match parse_name(&h, &name) {
            Ok(n) => n,
            Err(e) => {
                cx.err(&z.hostmaster, e);
                Name::root()
            }
        }
    };
    let webhook = z
        .webhook
        .as_ref()
        .and_then(|w| match check_webhook_url(w.get_ref()) {
            Ok(()) => Some(w.get_ref().clone()),
            Err(e) => {
                cx.err(w, e);
                None
            }
        });
    let mname = nameservers
        .first()
        .map(|n| n.0.clone())
        .unwrap_or_else(Name::root);
    let soa = Record::from_rdata(
        name.clone(),
        ttl,
        RData::SOA(SOA::new(
            mname, rname, serial, refresh, retry, expire, minimum,
        )),
    );
    Some(Head {
        apex: LowerName::new(&name),
        origin: cx.src.at(&z.name),
        name,
        ttl,
        minimum,
        soa,
        nameservers,
        webhook,
    })
}

/// SOA, apex NS and every `[[record]]`, by owner and type.
fn static_records(cx: &mut Ctx<'_, '_>, file: &ZoneFile, head: &Head) -> Data {
    let mut data = Data::new();
    let mut add = |name: &Name, entry: Entry| {
        data.entry(LowerName::new(name))
            .or_insert_with(|| (name.clone(), BTreeMap::new()))
            .1
            .entry(entry.record.record_type())
            .or_default()
            .push(entry);
    };
    add(
        &head.name,
        Entry {
            record: head.soa.clone(),
            origin: head.origin.clone(),
            ttl_origin: head.origin.clone(),
        },
    );
    for (ns, origin) in &head.nameservers {
        let rdata = RData::NS(NS(ns.clone()));
        add(
            &head.name,
            Entry {
                record: Record::from_rdata(head.name.clone(), head.ttl, rdata),
                origin: origin.clone(),
                ttl_origin: head.origin.clone(),
            },
        );
    }
    for r in &file.record {
        let owner = match parse_owner(r.name.get_ref(), &head.name) {
            Ok(n) => n,
            Err(e) => {
                cx.err(&r.name, e);
                continue;
            }
        };
        let rtype = r.rtype.get_ref().trim().to_ascii_uppercase();
        let rdata = match records::parse_rdata(&rtype, r.value.get_ref(), &head.name) {
            Ok(d) => d,
            Err(records::RDataError::Type(msg)) => {
                cx.err(&r.rtype, msg);
                continue;
            }
            Err(records::RDataError::Value(msg)) => {
                cx.err(&r.value, msg);
                continue;
            }
        };
        if rdata.record_type() == RecordType::NS && LowerName::new(&owner) == head.apex {
            cx.err(
                &r.rtype,
                "NS records at the apex come from `nameservers` in [zone]",
            );
            continue;
        }
        let rttl = cx.ttl(&r.ttl, head.ttl);
        let origin = cx.src.at(&r.name);
        let ttl_origin = r
            .ttl
            .as_ref()
            .map(|t| cx.src.at(t))
            .unwrap_or_else(|| origin.clone());
        add(
            &owner,
            Entry {
                record: Record::from_rdata(owner.clone(), rttl, rdata),
                origin,
                ttl_origin,
            },
        );
    }
    data
}

/// Zone cuts (NS below the apex): nothing may live below one but glue, and
/// name servers inside the zone need an address. Returns the cuts.
fn delegations(cx: &mut Ctx<'_, '_>, head: &Head, data: &Data) -> Vec<LowerName> {
    let apex = &head.apex;
    let cuts: Vec<LowerName> = data
        .iter()
        .filter(|(k, (_, sets))| *k != apex && sets.contains_key(&RecordType::NS))
        .map(|(k, _)| k.clone())
        .collect();
    for (key, (_, sets)) in data {
        for cut in &cuts {
            if key == cut || !cut.zone_of(key) {
                continue;
            }
            for (t, entries) in sets {
                if !matches!(t, RecordType::A | RecordType::AAAA) {
                    let e = &entries[0];
                    cx.err_at(
                        e.origin.clone(),
                        format!("{} {t} is below the delegation {cut} and would never be served (only A/AAAA glue may be)", e.record.name),
                    );
                }
            }
        }
        if sets.contains_key(&RecordType::NS) && key != apex && key.is_wildcard() {
            let e = &sets[&RecordType::NS][0];
            cx.err_at(
                e.origin.clone(),
                format!("{}: a wildcard cannot be a delegation", e.record.name),
            );
        }
    }
    let mut ns_targets: Vec<(Name, Origin)> = head.nameservers.clone();
    for cut in &cuts {
        for e in &data[cut].1[&RecordType::NS] {
            if let RData::NS(ns) = &e.record.data {
                ns_targets.push((ns.0.clone(), e.origin.clone()));
            }
        }
    }
    for (ns, origin) in ns_targets {
        let key = LowerName::new(&ns);
        if !apex.zone_of(&key) {
            continue;
        }
        let has_addr = data.get(&key).is_some_and(|(_, s)| {
            s.contains_key(&RecordType::A) || s.contains_key(&RecordType::AAAA)
        });
        if !has_addr {
            cx.err_at(
                origin,
                format!("name server {ns} is inside the zone but has no A or AAAA record (glue)"),
            );
        }
    }
    cuts
}

/// Every `[service]`, checked against the static records and delegations
/// and against each other.
fn services(
    cx: &mut Ctx<'_, '_>,
    file: &ZoneFile,
    head: &Head,
    regions: &Defined<crate::model::Region>,
    maps: &Defined<crate::model::GeoMap>,
    cuts: &[LowerName],
    data: &Data,
) -> Vec<Arc<Service>> {
    let mut services: Vec<Arc<Service>> = Vec::new();
    let mut service_at: HashMap<LowerName, Origin> = HashMap::new();
    for (key, spec) in &file.service {
        let Some(s) = build_service(cx, key, spec, regions, maps, &head.name) else {
            continue;
        };
        let lname = LowerName::new(&s.name);
        if let Some(cut) = cuts.iter().find(|c| c.zone_of(&lname)) {
            cx.err(
                key,
                format!("service {} is at or below the delegation {cut}", s.name),
            );
            continue;
        }
        let has_alias = s
            .regions
            .iter()
            .any(|r| matches!(r.region.target, RegionTarget::Alias(_)))
            || matches!(&s.when_all_down, WhenAllDown::LastResort(r) if matches!(r.target, RegionTarget::Alias(_)));
        if has_alias && lname == head.apex {
            cx.err(
                key,
                "a service at the apex cannot use a cname region (no CNAME at the zone apex)",
            );
        }
        if let Some((_, sets)) = data.get(&lname) {
            for (t, entries) in sets {
                let clash =
                    has_alias || matches!(t, RecordType::A | RecordType::AAAA | RecordType::CNAME);
                if clash {
                    let why = if has_alias {
                        "it answers with a CNAME, which allows no other data at the name"
                    } else {
                        "the service answers A and AAAA there"
                    };
                    cx.err_at(
                        entries[0].origin.clone(),
                        format!(
                            "static {t} record at {} conflicts with [service.{}] at {} ({why})",
                            s.name,
                            key.get_ref(),
                            s.origin
                        ),
                    );
                }
            }
        }
        if let Some(first) = service_at.insert(lname, s.origin.clone()) {
            cx.err(
                key,
                format!(
                    "service name {} is already used by the service at {first}",
                    s.name
                ),
            );
            continue;
        }
        services.push(Arc::new(s));
    }
    services
}

/// The name tree: nodes with RRsets and services, then the empty
/// non-terminals above them. Returns it with the record count and whether
/// any name is a wildcard.
fn compile(
    apex: &LowerName,
    data: Data,
    services: &[Arc<Service>],
) -> (HashMap<LowerName, Node>, usize, bool) {
    let mut record_count = 0;
    let mut has_wildcards = false;
    let mut nodes: HashMap<LowerName, Node> = HashMap::with_capacity(data.len() * 2);
    for (key, (_, sets)) in data {
        let cut = key != *apex && sets.contains_key(&RecordType::NS);
        has_wildcards |= key.is_wildcard();
        let mut node = Node {
            cut,
            ..Node::default()
        };
        for (rtype, entries) in sets {
            record_count += entries.len();
            node.rrsets.push(RRset {
                rtype,
                records: entries.into_iter().map(|e| e.record).collect(),
            });
        }
        nodes.insert(key, node);
    }
    for (i, s) in services.iter().enumerate() {
        let key = LowerName::new(&s.name);
        has_wildcards |= key.is_wildcard();
        nodes.entry(key).or_default().service = Some(i);
    }
    let owners: Vec<LowerName> = nodes.keys().cloned().collect();
    for owner in owners {
        let mut n = owner.base_name();
        while apex.zone_of(&n) && n != *apex {
            nodes.entry(n.clone()).or_default();
            n = n.base_name();
        }
    }
    (nodes, record_count, has_wildcards)
}

/// Per-name rules: CNAME alone and not at the apex, no duplicates, one TTL per RRset.
fn check_rrsets(cx: &mut Ctx<'_, '_>, apex: &LowerName, data: &Data) {
    for (key, (name, sets)) in data {
        if let Some(cnames) = sets.get(&RecordType::CNAME) {
            let first = &cnames[0];
            if key == apex {
                cx.err_at(
                    first.origin.clone(),
                    format!(
                        "CNAME at the zone apex {name} is not allowed (the apex has SOA and NS)"
                    ),
                );
            } else if let Some((t, other)) = sets.iter().find(|(t, _)| **t != RecordType::CNAME) {
                cx.err_at(
                    first.origin.clone(),
                    format!("CNAME at {name} conflicts with the {t} record at {} (a CNAME allows no other data)", other[0].origin),
                );
            }
            for extra in &cnames[1..] {
                cx.err_at(
                    extra.origin.clone(),
                    format!(
                        "second CNAME at {name} (first at {}); a name has at most one",
                        first.origin
                    ),
                );
            }
        }
        for entries in sets.values() {
            for (i, e) in entries.iter().enumerate() {
                if let Some(dup) = entries[..i].iter().find(|d| d.record.data == e.record.data) {
                    cx.err_at(
                        e.origin.clone(),
                        format!(
                            "duplicate record {name} {} (same as at {})",
                            e.record.record_type(),
                            dup.origin
                        ),
                    );
                } else if e.record.ttl != entries[0].record.ttl {
                    cx.err_at(
                        e.ttl_origin.clone(),
                        format!(
                            "TTL {} differs from TTL {} of the same {name} {} set at {} (one RRset has one TTL)",
                            e.record.ttl,
                            entries[0].record.ttl,
                            e.record.record_type(),
                            entries[0].origin
                        ),
                    );
                }
            }
        }
    }
}
