//! Zone files (TOML) to the validated model, with every problem reported as
//! `file:line:column: message`.
//!
//! No tokio, no I/O beyond reading the files: `gslb check`, `gslb serve` and
//! reload all call [`load`], so what `check` accepts is exactly what serves.

mod records;
pub mod server;
mod spec;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::rdata::{NS, SOA};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use toml::Spanned;

use crate::model::{
    Check, CheckKind, Config, Node, Origin, Policy, RRset, Region, RegionTarget, Service,
    ServiceRegion, StatusRange, WhenAllDown, Zone,
};
use spec::{CheckSpec, RecheckSpec, RegionSpec, ServiceSpec, StatusList, StatusSpec, ZoneFile};

/// Largest TTL a record may carry (RFC 2181 §8).
pub const MAX_TTL: i64 = 2_147_483_647;
/// Default TTL of static records.
pub const DEFAULT_TTL: u32 = 300;
/// Default TTL of service answers.
pub const DEFAULT_SERVICE_TTL: u32 = 30;
/// Cap on the default degraded TTL.
pub const DEFAULT_DEGRADED_TTL: u32 = 10;

/// One problem in one file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {msg}")]
pub struct ConfigError {
    /// Where.
    pub origin: Origin,
    /// What is wrong.
    pub msg: String,
}

/// Every problem found by one load.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}:\n{}", crate::model::count(.0.len(), "problem"), .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<ConfigError>);

/// Options of a load that do not come from the files.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// Serial of zones that do not set `serial` (see `app` for the scheme).
    pub auto_serial: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        LoadOptions {
            auto_serial: u32::try_from(now).unwrap_or(u32::MAX),
        }
    }
}

/// The zone files named by `paths`: each a `.toml` file or a folder whose
/// `*.toml` files are read (not recursively), in name order.
pub fn zone_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ConfigErrors> {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        let err = |msg: String| ConfigError {
            origin: Origin {
                file: path.clone(),
                line: 0,
                col: 0,
            },
            msg,
        };
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => match std::fs::read_dir(path) {
                Ok(rd) => {
                    let mut found: Vec<PathBuf> = rd
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.extension().is_some_and(|e| e == "toml") && p.is_file())
                        .collect();
                    found.sort();
                    files.extend(found);
                }
                Err(e) => errors.push(err(format!("cannot read folder: {e}"))),
            },
            Ok(_) => files.push(path.clone()),
            Err(e) => errors.push(err(format!("cannot read: {e}"))),
        }
    }
    if errors.is_empty() {
        Ok(files)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Read and validate every zone file under `paths`.
pub fn load(paths: &[PathBuf], opts: LoadOptions) -> Result<Config, ConfigErrors> {
    let files = zone_files(paths)?;
    let mut sources = Vec::with_capacity(files.len());
    let mut errors = Vec::new();
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(text) => sources.push((file, text)),
            Err(e) => errors.push(ConfigError {
                origin: Origin {
                    file,
                    line: 0,
                    col: 0,
                },
                msg: format!("cannot read: {e}"),
            }),
        }
    }
    match load_sources(&sources, opts) {
        Ok(cfg) if errors.is_empty() => Ok(cfg),
        Ok(_) => Err(ConfigErrors(errors)),
        Err(ConfigErrors(more)) => {
            errors.extend(more);
            Err(ConfigErrors(errors))
        }
    }
}

/// Validate zone files given as (path, text): the part of [`load`] after I/O.
pub fn load_sources(
    sources: &[(PathBuf, String)],
    opts: LoadOptions,
) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let mut zones: Vec<Arc<Zone>> = Vec::new();
    let mut claimed: HashMap<LowerName, Origin> = HashMap::new();
    for (file, text) in sources {
        let src = Source::new(file, text);
        let Some(zone) = load_zone(&src, opts, &mut errors) else {
            continue;
        };
        if let Some(first) = claimed.get(&zone.apex) {
            errors.push(ConfigError {
                origin: zone.origin.clone(),
                msg: format!("zone {} is already defined at {first}", zone.name),
            });
            continue;
        }
        claimed.insert(zone.apex.clone(), zone.origin.clone());
        zones.push(Arc::new(zone));
    }
    if errors.is_empty() {
        Ok(Config { zones })
    } else {
        // Report in reading order, file by file.
        errors.sort_by(|a, b| {
            (&a.origin.file, a.origin.line, a.origin.col).cmp(&(
                &b.origin.file,
                b.origin.line,
                b.origin.col,
            ))
        });
        Err(ConfigErrors(errors))
    }
}

/// A file's text with its line starts, to turn byte spans into line:column.
struct Source<'a> {
    file: &'a Path,
    text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> Source<'a> {
    fn new(file: &'a Path, text: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Source {
            file,
            text,
            line_starts,
        }
    }

    fn origin(&self, offset: usize) -> Origin {
        let line = self.line_starts.partition_point(|&s| s <= offset);
        let start = self.line_starts[line - 1];
        let col = self.text[start..offset.min(self.text.len())]
            .chars()
            .count()
            + 1;
        Origin {
            file: self.file.to_path_buf(),
            line,
            col,
        }
    }

    fn at<T>(&self, s: &Spanned<T>) -> Origin {
        self.origin(s.span().start)
    }
}

/// Collects the problems of one file.
struct Ctx<'s, 'a> {
    src: &'s Source<'a>,
    errors: &'s mut Vec<ConfigError>,
}

impl Ctx<'_, '_> {
    fn err<T>(&mut self, at: &Spanned<T>, msg: impl Into<String>) {
        let origin = self.src.at(at);
        self.errors.push(ConfigError {
            origin,
            msg: msg.into(),
        });
    }

    fn err_at(&mut self, origin: Origin, msg: impl Into<String>) {
        self.errors.push(ConfigError {
            origin,
            msg: msg.into(),
        });
    }

    /// An integer field within `lo..=hi`, else an error naming `what`.
    fn int(&mut self, v: &Option<Spanned<i64>>, what: &str, lo: i64, hi: i64, default: i64) -> i64 {
        match v {
            None => default,
            Some(s) if (lo..=hi).contains(s.get_ref()) => *s.get_ref(),
            Some(s) => {
                self.err(
                    s,
                    format!("{what} {} is out of range ({lo}..={hi})", s.get_ref()),
                );
                default
            }
        }
    }

    fn ttl(&mut self, v: &Option<Spanned<i64>>, default: u32) -> u32 {
        self.int(v, "TTL", 0, MAX_TTL, i64::from(default)) as u32
    }

    fn duration(&mut self, v: &Option<Spanned<String>>, what: &str, default: Duration) -> Duration {
        match v {
            None => default,
            Some(s) => match humantime::parse_duration(s.get_ref()) {
                Ok(d) => d,
                Err(e) => {
                    self.err(
                        s,
                        format!(
                            "{what} {:?} is not a duration like \"5s\" or \"200ms\": {e}",
                            s.get_ref()
                        ),
                    );
                    default
                }
            },
        }
    }
}

/// Parse a domain name in the zone file: `@` is the apex, a trailing dot makes
/// it absolute, anything else is relative to the apex.
pub(crate) fn parse_name(s: &str, apex: &Name) -> Result<Name, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty name".into());
    }
    if s == "@" {
        return Ok(apex.clone());
    }
    let name = Name::from_ascii(s).map_err(|e| format!("invalid name {s:?}: {e}"))?;
    if name.is_fqdn() {
        Ok(name)
    } else {
        name.append_domain(apex)
            .map_err(|e| format!("invalid name {s:?}: {e}"))
    }
}

/// Like [`parse_name`], and the name must be the apex or below it; a `*` is
/// only allowed as the leftmost label.
fn parse_owner(s: &str, apex: &Name) -> Result<Name, String> {
    let name = parse_name(s, apex)?;
    if !apex.zone_of(&name) {
        return Err(format!("name {name} is outside the zone {apex}"));
    }
    if name.iter().skip(1).any(|l| l == b"*") {
        return Err(format!(
            "name {name}: `*` is only allowed as the leftmost label of a wildcard"
        ));
    }
    Ok(name)
}

/// Where a record of the zone came from, for conflict messages.
struct Entry {
    record: Record,
    origin: Origin,
    ttl_origin: Origin,
}

/// Remove the key written at `offset` from the tree; whether one was.
fn remove_key_at(table: &mut toml::de::DeTable<'_>, offset: usize) -> bool {
    use toml::de::DeValue;
    let found = table
        .iter()
        .find(|(k, _)| k.span().start == offset)
        .map(|(k, _)| k.get_ref().to_string());
    if let Some(k) = found {
        table.remove(k.as_str());
        return true;
    }
    fn in_value(v: &mut DeValue<'_>, offset: usize) -> bool {
        match v {
            DeValue::Table(t) => remove_key_at(t, offset),
            DeValue::Array(a) => a.iter_mut().any(|i| in_value(i.get_mut(), offset)),
            _ => false,
        }
    }
    table.iter_mut().any(|(_, v)| in_value(v.get_mut(), offset))
}

/// Most unknown keys one file reports (each costs a parse).
const MAX_UNKNOWN_KEYS: usize = 64;

/// Parse a zone or settings file. Every unknown key is reported with its position, not
/// only the first: on serde's "unknown field" error the key is taken out
/// of the parsed tree and the file deserialised again, so a typo in one
/// table hides neither the others nor the semantic errors found later.
fn parse_collecting<T: serde::de::DeserializeOwned>(
    src: &Source<'_>,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    let at = |e: &toml::de::Error| {
        e.span().map(|s| src.origin(s.start)).unwrap_or(Origin {
            file: src.file.to_path_buf(),
            line: 1,
            col: 1,
        })
    };
    let mut tree = match toml::de::DeTable::parse(src.text) {
        Ok(t) => t,
        Err(e) => {
            errors.push(ConfigError {
                origin: at(&e),
                msg: e.message().trim().to_string(),
            });
            return None;
        }
    };
    let mut removed = 0;
    for _ in 0..=MAX_UNKNOWN_KEYS {
        let parsed: Result<T, toml::de::Error> =
            serde::Deserialize::deserialize(toml::de::Deserializer::from(tree.clone()));
        let e = match parsed {
            Ok(f) => return Some(f),
            Err(e) => e,
        };
        // A field missing once a misspelt one was taken out is that typo
        // again (`vaule` for `value`): already reported, with the names
        // expected.
        if removed > 0 && e.message().starts_with("missing field") {
            return None;
        }
        errors.push(ConfigError {
            origin: at(&e),
            msg: e.message().trim().to_string(),
        });
        let unknown = e.message().starts_with("unknown field");
        match e.span() {
            Some(span) if unknown && remove_key_at(tree.get_mut(), span.start) => removed += 1,
            _ => return None,
        }
    }
    None
}

fn load_zone(src: &Source<'_>, opts: LoadOptions, errors: &mut Vec<ConfigError>) -> Option<Zone> {
    let file: ZoneFile = parse_collecting(src, errors)?;
    let before = errors.len();
    let mut cx = Ctx { src, errors };
    let z = &file.zone;

    let zone_name = match Name::from_ascii(z.name.get_ref().trim()) {
        Ok(mut n) if !n.is_root() || z.name.get_ref().trim() == "." => {
            n.set_fqdn(true);
            n
        }
        Ok(_) | Err(_) => {
            cx.err(&z.name, format!("invalid zone name {:?}", z.name.get_ref()));
            return None;
        }
    };
    let apex = LowerName::new(&zone_name);
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
        match parse_name(ns.get_ref(), &zone_name) {
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
        match parse_name(&h, &zone_name) {
            Ok(n) => n,
            Err(e) => {
                cx.err(&z.hostmaster, e);
                Name::root()
            }
        }
    };
    let zone_origin = cx.src.at(&z.name);
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
        zone_name.clone(),
        ttl,
        RData::SOA(SOA::new(
            mname, rname, serial, refresh, retry, expire, minimum,
        )),
    );

    // Static records by owner and type, in file order.
    let mut data: BTreeMap<LowerName, (Name, BTreeMap<RecordType, Vec<Entry>>)> = BTreeMap::new();
    let mut add = |name: &Name, entry: Entry| {
        data.entry(LowerName::new(name))
            .or_insert_with(|| (name.clone(), BTreeMap::new()))
            .1
            .entry(entry.record.record_type())
            .or_default()
            .push(entry);
    };
    add(
        &zone_name,
        Entry {
            record: soa.clone(),
            origin: zone_origin.clone(),
            ttl_origin: zone_origin.clone(),
        },
    );
    for (ns, origin) in &nameservers {
        add(
            &zone_name,
            Entry {
                record: Record::from_rdata(zone_name.clone(), ttl, RData::NS(NS(ns.clone()))),
                origin: origin.clone(),
                ttl_origin: zone_origin.clone(),
            },
        );
    }
    for r in &file.record {
        let owner = match parse_owner(r.name.get_ref(), &zone_name) {
            Ok(n) => n,
            Err(e) => {
                cx.err(&r.name, e);
                continue;
            }
        };
        let rtype = r.rtype.get_ref().trim().to_ascii_uppercase();
        let rdata = match records::parse_rdata(&rtype, r.value.get_ref(), &zone_name) {
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
        if rdata.record_type() == RecordType::NS && LowerName::new(&owner) == apex {
            cx.err(
                &r.rtype,
                "NS records at the apex come from `nameservers` in [zone]",
            );
            continue;
        }
        let rttl = cx.ttl(&r.ttl, ttl);
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

    check_rrsets(&mut cx, &apex, &data);

    // Zone cuts: NS below the apex. Nothing may live below one but glue.
    let cuts: Vec<LowerName> = data
        .iter()
        .filter(|(k, (_, sets))| **k != apex && sets.contains_key(&RecordType::NS))
        .map(|(k, _)| k.clone())
        .collect();
    for (key, (_, sets)) in &data {
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
        if sets.contains_key(&RecordType::NS) && *key != apex && key.is_wildcard() {
            let e = &sets[&RecordType::NS][0];
            cx.err_at(
                e.origin.clone(),
                format!("{}: a wildcard cannot be a delegation", e.record.name),
            );
        }
    }
    // Name servers inside the zone (or a delegated child) need an address.
    let mut ns_targets: Vec<(Name, Origin)> = nameservers.clone();
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

    // Checks, regions, services.
    // Names defined but invalid are remembered so references to them do not
    // add a second, misleading "unknown" error.
    let mut checks = Defined::default();
    for (name, spec) in &file.check {
        let built = build_check(&mut cx, name, spec).map(Arc::new);
        checks.insert(name.get_ref(), name.span().start, built);
    }
    let mut regions = Defined::default();
    for (name, spec) in &file.region {
        let built = build_region(
            &mut cx,
            regions.valid.len(),
            name,
            spec,
            &checks,
            &zone_name,
        )
        .map(Arc::new);
        regions.insert(name.get_ref(), name.span().start, built);
    }
    let mut services: Vec<Arc<Service>> = Vec::new();
    let mut service_at: HashMap<LowerName, Origin> = HashMap::new();
    for (key, spec) in &file.service {
        let Some(s) = build_service(&mut cx, key, spec, &regions, &zone_name) else {
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
        if has_alias && lname == apex {
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

    if cx.errors.len() > before {
        return None;
    }

    // Compile: nodes with RRsets, then the empty non-terminals above them.
    let mut record_count = 0;
    let mut has_wildcards = false;
    let mut nodes: HashMap<LowerName, Node> = HashMap::with_capacity(data.len() * 2);
    for (key, (_, sets)) in data {
        let cut = key != apex && sets.contains_key(&RecordType::NS);
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
        while apex.zone_of(&n) && n != apex {
            nodes.entry(n.clone()).or_default();
            n = n.base_name();
        }
    }

    Some(Zone {
        name: zone_name,
        apex,
        file: src.file.to_path_buf(),
        origin: zone_origin,
        negative_ttl: ttl.min(minimum),
        soa,
        nodes,
        has_wildcards,
        checks: checks.valid,
        regions: regions.valid,
        services,
        record_count,
        content_hash: crate::model::fnv1a(src.text.as_bytes()),
        webhook,
        serial_auto: z.serial.is_none(),
    })
}

/// A URL without user-info or query (they may hold secrets), for logs,
/// messages and the status API.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.to_string().trim_end_matches('/').to_string()
        }
        Err(_) => "<not a URL>".to_string(),
    }
}

/// A webhook must be an absolute http(s) URL.
pub fn check_webhook_url(url: &str) -> Result<(), String> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        Ok(_) => Err(format!(
            "webhook {url:?} must be an http:// or https:// URL"
        )),
        Err(e) => Err(format!("webhook {url:?} is not a URL: {e}")),
    }
}

/// Checks or regions of a zone: the valid ones, and the names of invalid ones.
struct Defined<T> {
    valid: BTreeMap<String, Arc<T>>,
    invalid: std::collections::BTreeSet<String>,
    /// Every name with its offset in the file: messages list them in the
    /// file's order.
    order: Vec<(usize, String)>,
}

impl<T> Default for Defined<T> {
    fn default() -> Self {
        Defined {
            valid: BTreeMap::new(),
            invalid: Default::default(),
            order: Vec::new(),
        }
    }
}

impl<T> Defined<T> {
    fn insert(&mut self, name: &str, at: usize, built: Option<Arc<T>>) {
        self.order.push((at, name.to_string()));
        match built {
            Some(v) => {
                self.valid.insert(name.to_string(), v);
            }
            None => {
                self.invalid.insert(name.to_string());
            }
        }
    }

    /// The item called `name`; `Err(None)` when it is defined but invalid
    /// (already reported), `Err(Some(msg))` when it does not exist.
    fn get(&self, what: &str, name: &str) -> Result<Arc<T>, Option<String>> {
        if let Some(v) = self.valid.get(name) {
            return Ok(v.clone());
        }
        if self.invalid.contains(name) {
            return Err(None);
        }
        let mut order = self.order.clone();
        order.sort();
        let known: Vec<&str> = order.iter().map(|(_, n)| n.as_str()).collect();
        let known = if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        };
        Err(Some(format!("unknown {what} {name:?} (defined: {known})")))
    }
}

/// Per-name rules: CNAME alone and not at the apex, no duplicates, one TTL per RRset.
fn check_rrsets(
    cx: &mut Ctx<'_, '_>,
    apex: &LowerName,
    data: &BTreeMap<LowerName, (Name, BTreeMap<RecordType, Vec<Entry>>)>,
) {
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

fn build_check(cx: &mut Ctx<'_, '_>, name: &Spanned<String>, s: &CheckSpec) -> Option<Check> {
    let before = cx.errors.len();
    let kind = match s.kind.get_ref().as_str() {
        "tcp" => CheckKind::Tcp,
        "http" => CheckKind::Http,
        "https" => CheckKind::Https,
        other => {
            cx.err(
                &s.kind,
                format!("unknown check type {other:?} (expected \"http\", \"https\" or \"tcp\")"),
            );
            return None;
        }
    };
    let default_port = match kind {
        CheckKind::Http => 80,
        CheckKind::Https => 443,
        CheckKind::Tcp => {
            if s.port.is_none() && s.target.is_none() {
                cx.err(
                    name,
                    format!("check {}: a tcp check needs `port`", name.get_ref()),
                );
            }
            0
        }
    };
    let port = cx.int(&s.port, "port", 1, 65535, default_port) as u16;
    if kind == CheckKind::Tcp {
        let http_only = [
            ("method", s.method.as_ref().map(|v| v.span())),
            ("path", s.path.as_ref().map(|v| v.span())),
            ("host", s.host.as_ref().map(|v| v.span())),
            ("expect-status", s.expect_status.as_ref().map(|v| v.span())),
            ("expect-body", s.expect_body.as_ref().map(|v| v.span())),
            ("ca-file", s.ca_file.as_ref().map(|v| v.span())),
        ];
        for (field, span) in http_only {
            if let Some(span) = span {
                let origin = cx.src.origin(span.start);
                cx.err_at(
                    origin,
                    format!("`{field}` applies to http and https checks, not tcp"),
                );
            }
        }
    }
    let method = match &s.method {
        None => "GET".to_string(),
        Some(m) => {
            let up = m.get_ref().to_ascii_uppercase();
            if up != "GET" && up != "HEAD" {
                cx.err(
                    m,
                    format!("method {:?} is not supported (GET or HEAD)", m.get_ref()),
                );
            }
            up
        }
    };
    let path = match &s.path {
        None => "/".to_string(),
        Some(p) if p.get_ref().starts_with('/') => p.get_ref().clone(),
        Some(p) => {
            cx.err(p, format!("path {:?} must start with /", p.get_ref()));
            "/".into()
        }
    };
    let expect_status = match &s.expect_status {
        None => vec![StatusRange { lo: 200, hi: 399 }],
        Some(list) => {
            let items: Vec<StatusSpec> = match list.get_ref() {
                StatusList::One(one) => vec![one.clone()],
                StatusList::Many(many) => many.clone(),
            };
            let mut out = Vec::new();
            for item in items {
                match status_range(&item) {
                    Some(r) => out.push(r),
                    None => cx.err(list, format!("expect-status: {item:?} is not a status (100..=599) or a range \"200-299\"")),
                }
            }
            if out.is_empty() {
                cx.err(list, "expect-status is empty");
            }
            out
        }
    };
    if let (Some(b), "HEAD") = (&s.expect_body, method.as_str()) {
        cx.err(
            b,
            "expect-body cannot be checked with method HEAD (a HEAD response has no body)",
        );
    }
    if let Some(h) = &s.host {
        let v = h.get_ref();
        let valid = v.parse::<IpAddr>().is_ok()
            || (Name::from_ascii(v).is_ok()
                && !v.contains(':')
                && !v.contains('/')
                && !v.is_empty());
        if !valid {
            cx.err(
                h,
                format!(
                    "host {v:?} is not a host name or address (no port or path: the port is `port`)"
                ),
            );
        }
    }
    for (k, v) in &s.headers {
        let name_ok = !k.is_empty()
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !name_ok || v.bytes().any(|b| b == b'\r' || b == b'\n') {
            cx.err(
                name,
                format!(
                    "check {}: header {k:?} is not a valid HTTP header",
                    name.get_ref()
                ),
            );
        }
    }
    if let Some(b) = &s.expect_body
        && (b.get_ref().is_empty() || b.get_ref().len() > 5120)
    {
        cx.err(
            b,
            "expect-body must be 1 to 5120 bytes (only the first 5120 bytes of a body are read)",
        );
    }
    let ca_file = s.ca_file.as_ref().map(|f| {
        let p = PathBuf::from(f.get_ref());
        let p = if p.is_relative() {
            cx.src.file.parent().unwrap_or(Path::new(".")).join(p)
        } else {
            p
        };
        if !p.is_file() {
            cx.err(f, format!("ca-file {} does not exist", p.display()));
        }
        p
    });
    let target = s.target.as_ref().and_then(|t| match t.get_ref().parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            cx.err(t, format!("target {:?} is not ADDR:PORT (e.g. \"192.0.2.1:8080\" or \"[2001:db8::1]:443\")", t.get_ref()));
            None
        }
    });
    if let (Some(r), CheckKind::Tcp) = (&s.reuse_connection, kind) {
        cx.err(
            r,
            "reuse-connection applies to http and https checks (a tcp check is the connection)",
        );
    }
    let interval = cx.duration(&s.interval, "interval", Duration::from_secs(5));
    let timeout = cx.duration(&s.timeout, "timeout", Duration::from_secs(2));
    if interval < Duration::from_millis(100)
        && let Some(i) = &s.interval
    {
        cx.err(i, "interval must be at least 100ms");
    }
    if timeout.is_zero() || timeout > interval {
        let at = s
            .timeout
            .as_ref()
            .map(|t| cx.src.at(t))
            .unwrap_or_else(|| cx.src.at(name));
        cx.err_at(
            at,
            format!(
                "timeout {} must be above zero and at most the interval {}",
                humantime::format_duration(timeout),
                humantime::format_duration(interval)
            ),
        );
    }
    let recheck = match &s.recheck {
        None => Some(Duration::from_millis(200)),
        Some(r) => match r.get_ref() {
            RecheckSpec::Enabled(false) => None,
            RecheckSpec::Enabled(true) => Some(Duration::from_millis(200)),
            RecheckSpec::Delay(d) => match humantime::parse_duration(d) {
                Ok(d) if d.is_zero() => None,
                Ok(d) if d <= interval => Some(d),
                Ok(_) => {
                    cx.err(r, "recheck must be at most the interval");
                    None
                }
                Err(e) => {
                    cx.err(r, format!("recheck {d:?} is not a duration: {e}"));
                    None
                }
            },
        },
    };
    let fall = cx.int(&s.fall, "fall", 1, 100, 3) as u32;
    let rise = cx.int(&s.rise, "rise", 1, 100, 2) as u32;
    let probers = s
        .probers
        .as_ref()
        .map(|_| cx.int(&s.probers, "probers", 1, 1000, 1) as u32);
    if cx.errors.len() > before {
        return None;
    }
    Some(Check {
        name: name.get_ref().clone(),
        kind,
        port,
        method,
        path,
        host: s.host.as_ref().map(|h| h.get_ref().clone()),
        headers: s
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        expect_status,
        expect_body: s.expect_body.as_ref().map(|b| b.get_ref().clone()),
        tls_verify: s.tls_verify.unwrap_or(true),
        ca_file,
        target,
        reuse_connection: s.reuse_connection.as_ref().is_none_or(|r| *r.get_ref()),
        interval,
        timeout,
        recheck,
        fall,
        rise,
        probers,
    })
}

fn status_range(s: &StatusSpec) -> Option<StatusRange> {
    let ok = |v: i64| (100..=599).contains(&v).then_some(v as u16);
    match s {
        StatusSpec::Code(c) => ok(*c).map(|c| StatusRange { lo: c, hi: c }),
        StatusSpec::Range(r) => {
            let (lo, hi) = match r.split_once('-') {
                Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
                None => {
                    let v = r.trim().parse().ok()?;
                    (v, v)
                }
            };
            let (lo, hi) = (ok(lo)?, ok(hi)?);
            (lo <= hi).then_some(StatusRange { lo, hi })
        }
    }
}

fn build_region(
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
    if cx.errors.len() > before {
        return None;
    }
    Some(Region {
        name: name.get_ref().clone(),
        index,
        target,
        check,
        min_healthy,
        origin: cx.src.at(name),
    })
}

fn build_service(
    cx: &mut Ctx<'_, '_>,
    key: &Spanned<String>,
    s: &ServiceSpec,
    regions: &Defined<Region>,
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
    let lookup = |cx: &mut Ctx<'_, '_>, r: &str, at: Origin| -> Option<Arc<Region>> {
        match regions.get("region", r) {
            Ok(reg) => Some(reg),
            Err(Some(msg)) => {
                cx.err_at(at, msg);
                None
            }
            // Invalid region: reported already, and the zone is rejected for it.
            Err(None) => None,
        }
    };
    let policy_name = s
        .policy
        .as_ref()
        .map(|p| p.get_ref().as_str())
        .unwrap_or("failover");
    let answers = cx.int(&s.answers, "answers", 1, 64, 1) as usize;
    let policy = match policy_name {
        "failover" => Policy::Failover,
        "weighted" => Policy::Weighted { answers },
        "all-healthy" => Policy::AllHealthy,
        other => {
            let p = s
                .policy
                .as_ref()
                .expect("policy is set when not the default");
            cx.err(p, format!("unknown policy {other:?} (expected \"failover\", \"weighted\" or \"all-healthy\")"));
            return None;
        }
    };
    if let Some(answers) = &s.answers
        && !matches!(policy, Policy::Weighted { .. })
    {
        cx.err(answers, "`answers` applies to the weighted policy only");
    }
    let mut members: Vec<ServiceRegion> = Vec::new();
    let seen = |cx: &mut Ctx<'_, '_>, r: &Arc<Region>, at: Origin, members: &[ServiceRegion]| {
        if members.iter().any(|m| m.region.name == r.name) {
            cx.err_at(at, format!("region {:?} is listed twice", r.name));
            false
        } else {
            true
        }
    };
    match (&s.regions, &s.weights) {
        (Some(list), None) => {
            for r in list.get_ref() {
                let at = cx.src.at(r);
                if let Some(reg) = lookup(cx, r.get_ref(), at.clone())
                    && seen(cx, &reg, at, &members)
                {
                    members.push(ServiceRegion {
                        region: reg,
                        weight: 1,
                    });
                }
            }
            if list.get_ref().is_empty() {
                cx.err(list, "regions is empty");
            }
        }
        (None, Some(weights)) => {
            if !matches!(policy, Policy::Weighted { .. }) {
                cx.err(weights, "`weights` applies to the weighted policy; use `regions` for failover and all-healthy");
            }
            for (r, w) in weights.get_ref() {
                let at = cx.src.at(w);
                let weight = cx.int(&Some(w.clone()), "weight", 0, 1_000_000, 1) as u32;
                if let Some(reg) = lookup(cx, r, at.clone())
                    && seen(cx, &reg, at, &members)
                {
                    members.push(ServiceRegion {
                        region: reg,
                        weight,
                    });
                }
            }
            if weights.get_ref().is_empty() {
                cx.err(weights, "weights is empty");
            } else if members.iter().all(|m| m.weight == 0) && cx.errors.len() == before {
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
    let aliases = members
        .iter()
        .filter(|m| matches!(m.region.target, RegionTarget::Alias(_)))
        .count();
    if aliases > 0
        && (matches!(policy, Policy::AllHealthy)
            || matches!(policy, Policy::Weighted { answers } if answers > 1))
    {
        cx.err(key, format!("service {}: a cname region can only be answered alone (failover, or weighted with answers = 1)", key.get_ref()));
    }
    if let Policy::Weighted { answers } = policy
        && answers > members.len()
        && !members.is_empty()
    {
        cx.err(
            s.answers.as_ref().expect("answers > 1 is set"),
            format!(
                "answers = {answers} but the service has {} regions",
                members.len()
            ),
        );
    }
    let ttl = cx.ttl(&s.ttl, DEFAULT_SERVICE_TTL);
    let degraded_ttl = cx.ttl(&s.degraded_ttl, ttl.min(DEFAULT_DEGRADED_TTL));
    if degraded_ttl > ttl {
        cx.err(
            s.degraded_ttl.as_ref().expect("set when above ttl"),
            format!("degraded-ttl {degraded_ttl} is above ttl {ttl}"),
        );
    }
    let max_records = cx.int(&s.max_records, "max-records", 1, 64, 8) as usize;
    let mode = s
        .when_all_down
        .as_ref()
        .map(|m| m.get_ref().as_str())
        .unwrap_or("fail-open");
    let when_all_down = match (mode, &s.last_resort) {
        ("fail-open", None) => WhenAllDown::FailOpen,
        ("nodata", None) => WhenAllDown::NoData,
        ("servfail", None) => WhenAllDown::ServFail,
        ("last-resort" | "fail-open", Some(r))
            if s.when_all_down.is_none() || mode == "last-resort" =>
        {
            let at = cx.src.at(r);
            match lookup(cx, r.get_ref(), at) {
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
    };
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

#[cfg(test)]
mod tests;
