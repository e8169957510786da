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
use super::source::{Ctx, Source, parse_collecting, parse_piece};
use super::spec::{RecordPiece, RecordSpec, ZoneFile, ZoneSpec};
use super::split;
use super::{ConfigError, DEFAULT_TTL, LoadOptions, MAX_TTL, check_webhook_url, records};
use crate::model::{Node, Origin, RecordStore, RegionTarget, Service, WhenAllDown, Zone};

/// A record of the zone and where it was written (file offsets: made into
/// `file:line:column` only for a message, not once per record).
struct Entry {
    record: Record,
    at: usize,
    ttl_at: usize,
}

/// Static records by owner and type, in file order. A hash map: a million
/// names sorted in DNSSEC order cost a fifth of loading them; messages are
/// put in file order at the end (`load_sources`).
type Data = rustc_hash::FxHashMap<LowerName, (Name, BTreeMap<RecordType, Vec<Entry>>)>;

/// `[[record]]` tables per piece of a large zone file (config/split.rs):
/// about 600 KB of text, 25 MB of parse tree.
const RECORDS_PER_PIECE: usize = 8192;

/// What the `[zone]` table defines.
struct Head {
    name: Name,
    apex: LowerName,
    origin: Origin,
    /// Where `name` is written, as a file offset.
    at: usize,
    ttl: u32,
    /// SOA MINIMUM.
    minimum: u32,
    soa: Record,
    nameservers: Vec<(Name, usize)>,
    webhook: Option<String>,
}

pub(super) fn load_zone(
    src: &Source<'_>,
    opts: LoadOptions,
    errors: &mut Vec<ConfigError>,
) -> Option<Zone> {
    load_zone_in_pieces(src, opts, records_per_piece(), errors)
}

#[cfg(test)]
thread_local! {
    /// Tests read every zone both whole and one record per piece.
    pub(super) static PER_PIECE: std::cell::Cell<usize> =
        const { std::cell::Cell::new(RECORDS_PER_PIECE) };
}

fn records_per_piece() -> usize {
    #[cfg(test)]
    return PER_PIECE.with(std::cell::Cell::get);
    #[cfg(not(test))]
    RECORDS_PER_PIECE
}

/// [`load_zone`], reading a file of more than `per_piece` records in pieces
/// of that many (config/split.rs).
fn load_zone_in_pieces(
    src: &Source<'_>,
    opts: LoadOptions,
    per_piece: usize,
    errors: &mut Vec<ConfigError>,
) -> Option<Zone> {
    let plan = split::plan(src.text, per_piece);
    let file: ZoneFile = match &plan {
        None => parse_collecting(src, errors)?,
        Some(plan) => parse_piece(src, &plan.head, Some(&|at| plan.head_offset(at)), errors)?,
    };
    let before = errors.len();
    let mut cx = Ctx { src, errors };
    let head = zone_table(&mut cx, &file.zone, opts)?;
    let signer = file
        .dnssec
        .as_ref()
        .and_then(|d| dnssec_table(&mut cx, d, &head, file.transfer.is_some()))
        .map(Arc::new);
    let mut data = apex_records(&head);
    if let Some(signer) = &signer {
        // The DNSKEY, CDS and CDNSKEY sets are the zone's data: answered,
        // and signed, as any.
        for record in signer.dnskeys.iter().chain(&signer.cds) {
            add(
                &mut data,
                &head.name,
                Entry {
                    record: record.clone(),
                    at: head.at,
                    ttl_at: head.at,
                },
            );
        }
    }
    add_records(&mut cx, &head, &file.record, &mut data);
    if let Some(plan) = &plan {
        if !file.record.is_empty() {
            cx.err_at(
                src.origin(plan.chunks[0].start),
                "`record` is both an array in the root table and [[record]] tables; write one of them",
            );
        } else {
            add_pieces(&mut cx, &head, &plan.chunks, &mut data);
        }
    }
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
    let label = crate::model::zone_label(&head.apex);
    for (name, spec) in &file.region {
        let index = regions.valid.len();
        let built =
            build_region(&mut cx, index, name, spec, &checks, &head.name, &label).map(Arc::new);
        regions.insert(name.get_ref(), name.span().start, built);
    }
    super::depends::check_zone(&label, &regions, cx.errors);
    let transfer = file
        .transfer
        .as_ref()
        .and_then(|t| transfer_table(&mut cx, t, &file.zone))
        .map(Arc::new);
    let mut maps = Defined::default();
    for (name, spec) in &file.geo {
        let built = build_geo(&mut cx, name, spec).map(Arc::new);
        maps.insert(name.get_ref(), name.span().start, built);
    }
    let services = services(&mut cx, &file, &head, &regions, &maps, &cuts, &data);
    let Compiled {
        nodes,
        records,
        record_count,
        has_wildcards,
    } = compile(&mut cx, &head.apex, data, &services);
    if cx.errors.len() > before {
        return None;
    }
    Some(Zone {
        negative_ttl: head.ttl.min(head.minimum),
        name: head.name,
        apex: head.apex,
        file: src.file.to_path_buf(),
        origin: head.origin,
        soa: head.soa,
        nodes,
        records,
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
        transfer,
        signer,
    })
}

/// Default `signature-validity`.
const DEFAULT_VALIDITY: std::time::Duration = std::time::Duration::from_secs(14 * 86_400);

/// `[dnssec]`: the zone's keys, loaded and checked, ready to sign.
fn dnssec_table(
    cx: &mut Ctx<'_, '_>,
    d: &toml::Spanned<super::spec::DnssecSpec>,
    head: &Head,
    transferred: bool,
) -> Option<crate::dnssec::sign::ZoneSigner> {
    let spec = d.get_ref();
    if transferred {
        cx.err(
            d,
            "[dnssec] and [transfer] together are not supported yet: a signed zone would reach secondaries without its signatures; sign on the secondaries, or serve the signed zone from gslb alone",
        );
        return None;
    }
    let validity = match &spec.signature_validity {
        None => DEFAULT_VALIDITY,
        Some(v) => match humantime::parse_duration(v.get_ref()) {
            Ok(d)
                if d >= std::time::Duration::from_secs(2 * 3600)
                    && d <= std::time::Duration::from_secs(365 * 86_400) =>
            {
                d
            }
            _ => {
                cx.err(
                    v,
                    format!(
                        "signature-validity {:?} is not a duration from \"2h\" to \"365d\" (default \"14d\")",
                        v.get_ref()
                    ),
                );
                return None;
            }
        },
    };
    let base = cx.src.file.parent().unwrap_or(std::path::Path::new("."));
    let dir = base.join(spec.keys.get_ref());
    let (keys, _warnings) = match crate::dnssec::keyfile::KeyPair::load_zone(&dir, &head.name) {
        Ok(k) => k,
        Err(e) => {
            cx.err(&spec.keys, format!("[dnssec] keys: {e}"));
            return None;
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match crate::dnssec::sign::ZoneSigner::new(
        head.name.clone(),
        &keys,
        now,
        validity.as_secs() as u32,
        head.ttl,
    ) {
        Ok(s) => Some(s),
        Err(e) => {
            cx.err(
                &spec.keys,
                format!(
                    "[dnssec] keys {}: {e} (make one with `gslb dnssec keygen {}`)",
                    dir.display(),
                    head.name
                ),
            );
            None
        }
    }
}

/// `[transfer]`: who may transfer the zone, who is notified, the key.
fn transfer_table(
    cx: &mut Ctx<'_, '_>,
    t: &toml::Spanned<super::spec::TransferSpec>,
    z: &ZoneSpec,
) -> Option<crate::model::Transfer> {
    let before = cx.errors.len();
    if let Some(serial) = &z.serial {
        cx.err(
            serial,
            "serial cannot be set in a zone with [transfer]: gslb moves the serial whenever the zone as transferred changes (a failover), so secondaries follow; remove the line",
        );
    }
    let spec = t.get_ref();
    let mut allow = Vec::new();
    for a in &spec.allow {
        let text = a.get_ref().trim();
        // A bare address is its own host prefix.
        let parsed = text
            .parse::<ipnet::IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            Ok(n) => allow.push(n.trunc()),
            Err(_) => cx.err(
                a,
                format!(
                    "transfer allow: {text:?} is not an address or prefix like \"192.0.2.10/32\" or \"2001:db8::/64\""
                ),
            ),
        }
    }
    let mut notify = Vec::new();
    for n in &spec.notify {
        let text = n.get_ref().trim();
        let parsed = text.parse::<std::net::SocketAddr>().or_else(|_| {
            text.parse::<std::net::IpAddr>()
                .map(|ip| std::net::SocketAddr::new(ip, 53))
        });
        match parsed {
            Ok(a) if a.port() != 0 => notify.push(a),
            _ => cx.err(
                n,
                format!(
                    "transfer notify: {text:?} is not an address like \"192.0.2.10\", \"192.0.2.10:53\" or \"[2001:db8::10]:53\""
                ),
            ),
        }
    }
    let tsig_key = spec
        .tsig_key
        .as_ref()
        .map(|k| k.get_ref().trim().to_string());
    if let Some(k) = &spec.tsig_key
        && k.get_ref().trim().is_empty()
    {
        cx.err(
            k,
            "tsig-key is empty: name a [tsig.NAME] key of the settings file, or remove the line",
        );
    }
    (cx.errors.len() == before).then(|| crate::model::Transfer {
        allow,
        notify,
        tsig_origin: spec
            .tsig_key
            .as_ref()
            .map_or_else(|| cx.src.at(t), |k| cx.src.at(k)),
        tsig_key,
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
            Ok(n) => nameservers.push((n, ns.span().start)),
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
        at: z.name.span().start,
        name,
        ttl,
        minimum,
        soa,
        nameservers,
        webhook,
    })
}

/// Add a record to the data, by owner and type.
fn add(data: &mut Data, name: &Name, entry: Entry) {
    data.entry(LowerName::new(name))
        .or_insert_with(|| (name.clone(), BTreeMap::new()))
        .1
        .entry(entry.record.record_type())
        // Most RRsets hold one record; `Vec` would start at four.
        .or_insert_with(|| Vec::with_capacity(1))
        .push(entry);
}

/// The SOA and the apex NS, from the `[zone]` table.
fn apex_records(head: &Head) -> Data {
    let mut data = Data::default();
    let soa = Entry {
        record: head.soa.clone(),
        at: head.at,
        ttl_at: head.at,
    };
    add(&mut data, &head.name, soa);
    for (ns, at) in &head.nameservers {
        let rdata = RData::NS(NS(ns.clone()));
        let entry = Entry {
            record: Record::from_rdata(head.name.clone(), head.ttl, rdata),
            at: *at,
            ttl_at: head.at,
        };
        add(&mut data, &head.name, entry);
    }
    data
}

/// The `[[record]]` tables of a file read in pieces. Two threads parse
/// pieces (alternately, so they arrive in order) while this one adds the
/// records of the last: parsing is most of the work.
fn add_pieces(
    cx: &mut Ctx<'_, '_>,
    head: &Head,
    chunks: &[std::ops::Range<usize>],
    data: &mut Data,
) {
    const PARSERS: usize = 2;
    let src = cx.src;
    let mut add = |(piece, errors): (Option<RecordPiece>, Vec<ConfigError>)| {
        cx.errors.extend(errors);
        if let Some(piece) = piece {
            add_records(cx, head, &piece.record, data);
        }
    };
    std::thread::scope(|scope| {
        let parsers: Option<Vec<_>> = (0..PARSERS)
            .map(|first| {
                let (tx, rx) = std::sync::mpsc::sync_channel(1);
                std::thread::Builder::new()
                    .name("gslb-load".into())
                    .spawn_scoped(scope, move || {
                        for chunk in chunks.iter().skip(first).step_by(PARSERS) {
                            if tx.send(parse_records(src, chunk.clone())).is_err() {
                                return;
                            }
                        }
                    })
                    .ok()
                    .map(|_| rx)
            })
            .collect();
        match parsers {
            Some(parsers) => {
                for i in 0..chunks.len() {
                    match parsers[i % PARSERS].recv() {
                        Ok(parsed) => add(parsed),
                        Err(_) => break,
                    }
                }
            }
            // No thread to be had: parse here (a started one stops at its
            // first send).
            None => chunks
                .iter()
                .for_each(|c| add(parse_records(src, c.clone()))),
        }
    });
}

/// One piece of `[[record]]` tables, its spans the file's, and its errors.
fn parse_records(
    src: &Source<'_>,
    chunk: std::ops::Range<usize>,
) -> (Option<RecordPiece>, Vec<ConfigError>) {
    let start = chunk.start;
    let text = &src.text[chunk];
    // Most pieces are right: deserialise them directly and move the few
    // spans of each record; a piece with a problem takes the way that
    // reports every one.
    if let Ok(mut piece) = toml::from_str::<RecordPiece>(text) {
        let moved = |s: &mut toml::Spanned<String>| {
            let span = s.span();
            let value = std::mem::take(s.get_mut());
            *s = toml::Spanned::new(span.start + start..span.end + start, value);
        };
        for r in &mut piece.record {
            moved(&mut r.name);
            moved(&mut r.rtype);
            moved(&mut r.value);
            if let Some(t) = &mut r.ttl {
                let span = t.span();
                *t = toml::Spanned::new(span.start + start..span.end + start, *t.get_ref());
            }
        }
        return (Some(piece), Vec::new());
    }
    let mut errors = Vec::new();
    let piece = parse_piece(src, text, Some(&|at| start + at), &mut errors);
    (piece, errors)
}

/// `[[record]]` tables, by owner and type.
fn add_records(cx: &mut Ctx<'_, '_>, head: &Head, records: &[RecordSpec], data: &mut Data) {
    // Records of a name are usually written together: its owner is parsed
    // once.
    let mut last: Option<(&str, Name)> = None;
    for r in records {
        let owner = match &last {
            Some((text, owner)) if *text == r.name.get_ref() => owner.clone(),
            _ => match parse_owner(r.name.get_ref(), &head.name) {
                Ok(n) => {
                    last = Some((r.name.get_ref(), n.clone()));
                    n
                }
                Err(e) => {
                    cx.err(&r.name, e);
                    continue;
                }
            },
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
        let at = r.name.span().start;
        let entry = Entry {
            record: Record::from_rdata(owner.clone(), rttl, rdata),
            at,
            ttl_at: r.ttl.as_ref().map_or(at, |t| t.span().start),
        };
        add(data, &owner, entry);
    }
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
                        cx.src.origin(e.at),
                        format!("{} {t} is below the delegation {cut} and would never be served (only A/AAAA glue may be)", e.record.name),
                    );
                }
            }
        }
        if let Some(ds) = sets.get(&RecordType::DS)
            && !cuts.contains(key)
        {
            let e = &ds[0];
            cx.err_at(
                cx.src.origin(e.at),
                format!("DS at {}: a DS record belongs at a delegation, beside the NS records of a child zone", e.record.name),
            );
        }
        if sets.contains_key(&RecordType::NS) && key != apex && key.is_wildcard() {
            let e = &sets[&RecordType::NS][0];
            cx.err_at(
                cx.src.origin(e.at),
                format!("{}: a wildcard cannot be a delegation", e.record.name),
            );
        }
    }
    let mut ns_targets: Vec<(Name, usize)> = head.nameservers.clone();
    for cut in &cuts {
        for e in &data[cut].1[&RecordType::NS] {
            if let RData::NS(ns) = &e.record.data {
                ns_targets.push((ns.0.clone(), e.at));
            }
        }
    }
    for (ns, at) in ns_targets {
        let key = LowerName::new(&ns);
        if !apex.zone_of(&key) {
            continue;
        }
        let has_addr = data.get(&key).is_some_and(|(_, s)| {
            s.contains_key(&RecordType::A) || s.contains_key(&RecordType::AAAA)
        });
        if !has_addr {
            cx.err_at(
                cx.src.origin(at),
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
                        cx.src.origin(entries[0].at),
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
/// non-terminals above them.
struct Compiled {
    nodes: HashMap<LowerName, Node>,
    records: RecordStore,
    record_count: usize,
    /// Whether any name is a wildcard.
    has_wildcards: bool,
}

fn compile(
    cx: &mut Ctx<'_, '_>,
    apex: &LowerName,
    data: Data,
    services: &[Arc<Service>],
) -> Compiled {
    let mut record_count = 0;
    let mut has_wildcards = false;
    let mut records = RecordStore::default();
    let mut nodes: HashMap<LowerName, Node> = HashMap::with_capacity(data.len() + services.len());
    for (key, (_, sets)) in &data {
        let cut = key != apex && sets.contains_key(&RecordType::NS);
        has_wildcards |= key.is_wildcard();
        let mut node = Node {
            cut,
            ..Node::default()
        };
        for (rtype, entries) in sets {
            record_count += entries.len();
            let ttl = entries[0].record.ttl;
            match records.push(*rtype, ttl, entries.iter().map(|e| &e.record.data)) {
                Ok(i) if node.sets == (0, 0) => node.sets = (i, i + 1),
                Ok(i) => node.sets.1 = i + 1,
                Err(e) => cx.err_at(
                    cx.src.origin(entries[0].at),
                    format!("{} {rtype}: {e}", entries[0].record.name),
                ),
            }
        }
        nodes.insert(key.clone(), node);
        empty_non_terminals(apex, key, &mut nodes);
    }
    drop_aside(data);
    for (i, s) in services.iter().enumerate() {
        let key = LowerName::new(&s.name);
        has_wildcards |= key.is_wildcard();
        nodes.entry(key.clone()).or_default().service = Some(i);
        empty_non_terminals(apex, &key, &mut nodes);
    }
    nodes.shrink_to_fit();
    records.shrink_to_fit();
    Compiled {
        nodes,
        records,
        record_count,
        has_wildcards,
    }
}

/// The names between `name` and the apex exist (empty non-terminals, RFC
/// 8020) even with nothing at them.
fn empty_non_terminals(apex: &LowerName, name: &LowerName, nodes: &mut HashMap<LowerName, Node>) {
    let mut n = name.base_name();
    while n != *apex && apex.zone_of(&n) {
        let parent = n.base_name();
        nodes.entry(n).or_default();
        n = parent;
    }
}

/// Let a large zone's parsed records go on a thread of their own: freeing a
/// million of them takes most of a second, which serving need not wait
/// for. The pages go back to the system after (`malloc_trim`).
fn drop_aside(data: Data) {
    if data.len() < 10_000 {
        return;
    }
    // No thread to be had: the data is dropped here, with the closure.
    let _ = std::thread::Builder::new()
        .name("gslb-free".into())
        .spawn(move || {
            drop(data);
            crate::trim_allocator();
        });
}

/// Per-name rules: CNAME alone and not at the apex, no duplicates, one TTL per RRset.
fn check_rrsets(cx: &mut Ctx<'_, '_>, apex: &LowerName, data: &Data) {
    for (key, (name, sets)) in data {
        if let Some(cnames) = sets.get(&RecordType::CNAME) {
            let first = &cnames[0];
            if key == apex {
                cx.err_at(
                    cx.src.origin(first.at),
                    format!(
                        "CNAME at the zone apex {name} is not allowed (the apex has SOA and NS)"
                    ),
                );
            } else if let Some((t, other)) = sets.iter().find(|(t, _)| **t != RecordType::CNAME) {
                cx.err_at(
                    cx.src.origin(first.at),
                    format!("CNAME at {name} conflicts with the {t} record at {} (a CNAME allows no other data)", cx.src.origin(other[0].at)),
                );
            }
            for extra in &cnames[1..] {
                cx.err_at(
                    cx.src.origin(extra.at),
                    format!(
                        "second CNAME at {name} (first at {}); a name has at most one",
                        cx.src.origin(first.at)
                    ),
                );
            }
        }
        for entries in sets.values() {
            for (i, e) in entries.iter().enumerate() {
                if let Some(dup) = entries[..i].iter().find(|d| d.record.data == e.record.data) {
                    cx.err_at(
                        cx.src.origin(e.at),
                        format!(
                            "duplicate record {name} {} (same as at {})",
                            e.record.record_type(),
                            cx.src.origin(dup.at)
                        ),
                    );
                } else if e.record.ttl != entries[0].record.ttl {
                    cx.err_at(
                        cx.src.origin(e.ttl_at),
                        format!(
                            "TTL {} differs from TTL {} of the same {name} {} set at {} (one RRset has one TTL)",
                            e.record.ttl,
                            entries[0].record.ttl,
                            e.record.record_type(),
                            cx.src.origin(entries[0].at)
                        ),
                    );
                }
            }
        }
    }
}
