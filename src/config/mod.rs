//! Zone files (TOML) to the validated model, with every problem reported as
//! `file:line:column: message`.
//!
//! No tokio, no I/O beyond reading the files: `gslb check`, `gslb serve` and
//! reload all call [`load`], so what `check` accepts is exactly what serves.

mod check;

pub(crate) use check::{lookup_user, open_icmp_socket};
mod depends;
mod geo;
mod names;
mod records;
mod region;
pub mod server;
mod service;
mod source;
mod spec;
mod split;
mod zone;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use hickory_proto::rr::LowerName;

use crate::model::{Config, Origin, Zone};
use source::Source;
use zone::load_zone;

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
/// `*.toml` files are read (not recursively), in name order. A `*.toml`
/// entry that cannot be opened (a dangling link, a loop of links) is an
/// error, as any unreadable file is: skipping it would stop serving its
/// zone without a word.
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
                    let mut found: Vec<PathBuf> = Vec::new();
                    for p in rd.filter_map(|e| e.ok().map(|e| e.path())) {
                        if p.extension().is_none_or(|e| e != "toml") {
                            continue;
                        }
                        // metadata follows links: a dangling one fails here.
                        match std::fs::metadata(&p) {
                            Ok(m) if m.is_dir() => {}
                            Ok(_) => found.push(p),
                            Err(e) => errors.push(ConfigError {
                                origin: Origin {
                                    file: p,
                                    line: 0,
                                    col: 0,
                                },
                                msg: format!("cannot read: {e}"),
                            }),
                        }
                    }
                    found.sort();
                    files.extend(found);
                }
                Err(e) => errors.push(err(format!("cannot read folder: {e}"))),
            },
            Ok(_) => files.push(path.clone()),
            Err(e) => errors.push(err(format!("cannot read: {e}"))),
        }
    }
    if errors.is_empty() && files.is_empty() {
        // Nothing to serve is never what was meant (an empty folder, a
        // wrong path, a deploy that has not copied the files yet).
        for path in paths {
            errors.push(ConfigError {
                origin: Origin {
                    file: path.clone(),
                    line: 0,
                    col: 0,
                },
                msg: "no zone files (*.toml) here: nothing to serve".into(),
            });
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
        match source::read_text(&file) {
            Ok(text) => sources.push((file, text)),
            Err(e) => errors.push(e),
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

/// What the settings and the zones say that cannot work together: a check
/// with `probers = K` under `quorum = N > K` (at most K nodes vote on its
/// endpoints, so N down votes never come: they can never fail), and a
/// zone's `tsig-key` that the settings file does not define. `check
/// --config`, `serve` and every reload run it.
pub fn cross_check(
    cluster: Option<&crate::model::ClusterSettings>,
    tsig: &std::collections::BTreeMap<String, crate::model::TsigKey>,
    cfg: &Config,
) -> Vec<ConfigError> {
    let mut out = Vec::new();
    for zone in &cfg.zones {
        if let Some(t) = &zone.transfer
            && let Some(k) = &t.tsig_key
            && !tsig.contains_key(k)
        {
            out.push(ConfigError {
                origin: t.tsig_origin.clone(),
                msg: format!(
                    "tsig-key {k:?} is not defined: the settings file needs a [tsig.{k}] table (algorithm, secret-file or secret-env){}",
                    if tsig.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; it defines {}",
                            tsig.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
                        )
                    }
                ),
            });
        }
    }
    let Some(crate::model::Quorum::AtLeast(n)) = cluster.map(|c| c.quorum) else {
        return out;
    };
    for zone in &cfg.zones {
        for region in zone.regions.values() {
            let Some(k) = region.check.as_ref().and_then(|c| c.probers) else {
                continue;
            };
            if k < n {
                let check = &region
                    .check
                    .as_ref()
                    .expect("probers come with a check")
                    .name;
                out.push(ConfigError {
                    origin: region.origin.clone(),
                    msg: format!(
                        "region {} uses check {check} with probers = {k}, but the cluster's quorum is {n}: at most {k} nodes vote on its endpoints, so they can never be failed (raise probers to {n} or more, or lower quorum)",
                        region.name
                    ),
                });
            }
        }
    }
    out
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
    depends::check_across(&zones, errors.is_empty(), &mut errors);
    if errors.is_empty() {
        Ok(Config { zones })
    } else {
        // Report in reading order, file by file (two at one place by
        // message: names are checked in no particular order).
        errors.sort_by(|a, b| {
            (&a.origin.file, a.origin.line, a.origin.col, &a.msg).cmp(&(
                &b.origin.file,
                b.origin.line,
                b.origin.col,
                &b.msg,
            ))
        });
        Err(ConfigErrors(errors))
    }
}

/// A URL without user-info, query or fragment (they may hold secrets), for
/// logs, messages and the status API. Text that is no URL with a host
/// (`user:pw@host` parses as scheme `user`) is cut by [`redact_unparsed`].
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.has_host() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string().trim_end_matches('/').to_string()
        }
        _ => redact_unparsed(url),
    }
}

/// How a webhook is shown in logs and messages: scheme, host and port, and
/// "/…" for a path. Slack, Discord and Teams put the webhook's secret in
/// its path (`/services/T00/B00/SECRET`), so no part of a path is shown;
/// user-info, query and fragment go as in [`redact_url`].
pub fn webhook_label(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) if u.has_host() => {
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            let path = if u.path().len() > 1 { "/…" } else { "" };
            format!(
                "{}://{}{port}{path}",
                u.scheme(),
                u.host_str().unwrap_or_default()
            )
        }
        _ => {
            let r = redact_unparsed(url);
            let after = r.find("//").map_or(0, |i| i + 2);
            match r[after..].find('/') {
                Some(i) => format!("{}/…", &r[..after + i]),
                None => r,
            }
        }
    }
}

/// A webhook must be an absolute http(s) URL.
pub fn check_webhook_url(url: &str) -> Result<(), String> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        Ok(_) => Err(format!(
            "webhook {:?} must be an http:// or https:// URL",
            webhook_label(url)
        )),
        Err(e) => Err(format!(
            "webhook {:?} is not a URL: {e}",
            webhook_label(url)
        )),
    }
}

/// [`redact_url`] for text that does not parse as a URL with a host:
/// everything from a `?` or `#` on, and everything up to the last `@` after
/// the scheme, goes. Cruder than the parser, but an invalid URL may hold a
/// secret too.
fn redact_unparsed(text: &str) -> String {
    let head = text.split(['?', '#']).next().unwrap_or_default();
    let after_scheme = head.find("//").map_or(0, |i| i + 2);
    match head[after_scheme..].rfind('@') {
        Some(at) => format!(
            "{}{}",
            &head[..after_scheme],
            &head[after_scheme + at + 1..]
        ),
        None => head.to_string(),
    }
}

#[cfg(test)]
mod tests;
