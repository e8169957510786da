//! The server settings file (`--config gslb.toml`): the same settings as the
//! `serve` flags, for production. Flags given on the command line win.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::source::{Source, parse_collecting, read_text};
use super::{ConfigError, ConfigErrors};
use crate::model::{ClusterSettings, Quorum};

/// Environment variable holding the etcd password.
pub const ETCD_PASSWORD_ENV: &str = "GSLB_ETCD_PASSWORD";
/// etcd will not keep a lease shorter than this (its minimum TTL with the
/// default election timeout).
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(2);

/// `gslb.toml`.
#[derive(Debug, Default, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServerFile {
    /// Folder (or file) of zone files (default `zones`).
    pub zones: Option<PathBuf>,
    /// DNS listeners, UDP and TCP each (default `["127.0.0.1:5353"]`).
    pub listen: Option<Vec<SocketAddr>>,
    /// Admin HTTP listener (default `127.0.0.1:9153`); `"off"` disables it.
    pub admin: Option<String>,
    /// Bearer token for mutating admin calls (or env `GSLB_ADMIN_TOKEN`).
    pub admin_token: Option<Spanned<String>>,
    /// Host names mutating admin calls may be sent to, besides addresses
    /// and `localhost` (the `Host` header; DNS rebinding is refused).
    pub admin_hosts: Option<Vec<Spanned<String>>>,
    /// `error`, `warn`, `info` (default), `debug`, `trace`, or a tracing filter.
    pub log_level: Option<String>,
    /// `text` (default) or `json`.
    pub log_format: Option<String>,
    /// Where health state and overrides persist across restarts
    /// (default `gslb-state.json` in the working directory); `"off"` disables it.
    pub state_file: Option<String>,
    /// EDNS UDP payload size we advertise and answer up to (default 1232).
    pub udp_payload: Option<u16>,
    /// Close idle DNS-over-TCP connections after this long (default `"10s"`).
    pub tcp_idle_timeout: Option<String>,
    /// Most DNS-over-TCP connections open at once (default 1024; lowered to
    /// fit the file descriptor limit).
    pub tcp_connections: Option<Spanned<i64>>,
    /// Most DNS-over-TCP connections from one /24 or /56 (default 64).
    pub tcp_connections_per_prefix: Option<Spanned<i64>>,
    /// Most DNS-over-TCP connections from one IPv6 /48 (default 128).
    pub tcp_connections_per_48: Option<Spanned<i64>>,
    /// Most admin API connections open at once (default 64; lowered to fit
    /// the file descriptor limit).
    pub admin_connections: Option<Spanned<i64>>,
    /// The answer cache of the whole process, in MiB (default 32), shared
    /// out between the UDP workers.
    pub answer_cache_mib: Option<Spanned<i64>>,
    /// Response rate limiting: UDP responses per second per /24 or /56
    /// and class (default 0: off).
    pub rate_limit: Option<Spanned<i64>>,
    /// Every Nth limited response is sent truncated (default 2; 0: none).
    pub rate_limit_slip: Option<Spanned<i64>>,
    /// Prefixes never rate-limited (`"192.0.2.0/24"`, `"2001:db8::/32"`).
    pub rate_limit_whitelist: Option<Vec<Spanned<String>>>,
    /// Reload when a file in the zones folder changes (default false).
    pub watch: Option<bool>,
    /// With `watch`: stop serving a zone whose file disappears (default
    /// false: such a reload is refused).
    pub watch_allow_removal: Option<bool>,
    /// With `watch`: how long the files must stay unchanged before they are
    /// reloaded (default `"3s"`).
    pub watch_settle: Option<Spanned<String>>,
    /// URL receiving a JSON POST on every region state change of any zone.
    pub webhook: Option<String>,
    /// Key of the HMAC-SHA256 signature every webhook POST carries (or env
    /// `GSLB_WEBHOOK_SECRET`); never logged.
    pub webhook_secret: Option<Spanned<String>>,
    /// Local address that probes connect from.
    pub probe_source: Option<Spanned<String>>,
    /// Run as one node of a cluster sharing health through etcd.
    pub cluster: Option<ClusterFile>,
    /// TSIG keys by name (zone transfers).
    #[serde(default)]
    pub tsig: std::collections::BTreeMap<Spanned<String>, TsigFile>,
    /// The keys of `tsig` with their secrets, read by `load`.
    #[serde(skip)]
    pub tsig_keys: std::collections::BTreeMap<String, crate::model::TsigKey>,
}

/// `[tsig.NAME]`: a TSIG key (RFC 8945), named as both ends know it.
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TsigFile {
    /// `hmac-sha256` (default), `hmac-sha384` or `hmac-sha512`.
    pub algorithm: Option<Spanned<String>>,
    /// File holding the secret: its base64 alone, or a BIND key clause as
    /// `tsig-keygen` writes it (relative to this settings file).
    pub secret_file: Option<Spanned<PathBuf>>,
    /// Environment variable holding the base64 secret.
    pub secret_env: Option<Spanned<String>>,
}

/// The TSIG keys of `tsig`, with their secrets read; every problem goes to
/// `err` (a secret is never part of a message).
fn tsig_keys(
    tsig: &std::collections::BTreeMap<Spanned<String>, TsigFile>,
    dir: &Path,
    err: &mut dyn FnMut(std::ops::Range<usize>, String),
) -> std::collections::BTreeMap<String, crate::model::TsigKey> {
    use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
    let mut out = std::collections::BTreeMap::new();
    for (name, spec) in tsig {
        let text = name.get_ref();
        let key_name = match hickory_proto::rr::Name::from_ascii(text) {
            Ok(mut n) if !text.is_empty() && !n.is_root() => {
                n.set_fqdn(true);
                n
            }
            _ => {
                err(
                    name.span(),
                    format!("[tsig.{text}]: {text:?} is not a key name like \"xfr-key\""),
                );
                continue;
            }
        };
        let algorithm = match spec.algorithm.as_ref().map(|a| a.get_ref().trim()) {
            None | Some("hmac-sha256") => TsigAlgorithm::HmacSha256,
            Some("hmac-sha384") => TsigAlgorithm::HmacSha384,
            Some("hmac-sha512") => TsigAlgorithm::HmacSha512,
            Some(other) => {
                err(
                    spec.algorithm.as_ref().expect("given").span(),
                    format!(
                        "[tsig.{text}] algorithm {other:?} is not one of \"hmac-sha256\", \"hmac-sha384\", \"hmac-sha512\""
                    ),
                );
                continue;
            }
        };
        let secret = match (&spec.secret_file, &spec.secret_env) {
            (Some(f), None) => {
                let path = dir.join(f.get_ref());
                match std::fs::read_to_string(&path) {
                    Ok(t) => decode_secret(&t).map_err(|why| {
                        (
                            f.span(),
                            format!("[tsig.{text}] secret-file {}: {why}", path.display()),
                        )
                    }),
                    Err(e) => Err((
                        f.span(),
                        format!("[tsig.{text}] secret-file {}: {e}", path.display()),
                    )),
                }
            }
            (None, Some(v)) => match std::env::var(v.get_ref()) {
                Ok(t) => decode_secret(&t).map_err(|why| {
                    (
                        v.span(),
                        format!("[tsig.{text}] secret-env {}: {why}", v.get_ref()),
                    )
                }),
                Err(_) => Err((
                    v.span(),
                    format!(
                        "[tsig.{text}] secret-env: the environment variable {} is not set",
                        v.get_ref()
                    ),
                )),
            },
            _ => Err((
                name.span(),
                format!(
                    "[tsig.{text}] needs exactly one of secret-file and secret-env (a secret is not written in the settings file itself)"
                ),
            )),
        };
        match secret {
            Ok(secret) => {
                out.insert(
                    text.clone(),
                    crate::model::TsigKey {
                        name: key_name,
                        algorithm,
                        secret,
                    },
                );
            }
            Err((at, msg)) => err(at, msg),
        }
    }
    out
}

/// The secret of a key file: the base64 alone, or the `secret "...";` of a
/// BIND key clause (what `tsig-keygen` and `dnssec-keygen` write).
fn decode_secret(text: &str) -> Result<Vec<u8>, String> {
    let b64 = match text.find("secret") {
        Some(i) => text[i + "secret".len()..]
            .split('"')
            .nth(1)
            .ok_or("a `secret` clause without a quoted value")?,
        None => text.trim(),
    };
    let b64: String = b64.split_whitespace().collect();
    match data_encoding::BASE64.decode(b64.as_bytes()) {
        Ok(s) if s.len() >= 16 => Ok(s),
        Ok(s) if s.is_empty() => Err("the secret is empty".into()),
        Ok(s) => Err(format!(
            "the secret is {} bytes; use at least 16 (tsig-keygen makes 32)",
            s.len()
        )),
        Err(_) => {
            Err("not base64 (make one with `tsig-keygen NAME` or `openssl rand -base64 32`)".into())
        }
    }
}

/// `[cluster]` as written.
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClusterFile {
    /// Cluster name (etcd key prefix `/gslb/<name>/`).
    pub name: Spanned<String>,
    /// This node's name (default: the host name).
    pub node: Option<Spanned<String>>,
    /// etcd endpoints.
    pub etcd: Spanned<Vec<String>>,
    /// "majority" (default), "any", "all" or a number.
    pub quorum: Option<Spanned<QuorumValue>>,
    /// How long a silent node's observations stay valid (default "5s").
    pub lease_ttl: Option<Spanned<String>>,
    /// How long a verdict that only withdrawn votes hold stands before the
    /// votes left decide (default "30s").
    pub vote_grace: Option<Spanned<String>>,
    /// etcd user.
    pub etcd_user: Option<Spanned<String>>,
    /// etcd password (or env `GSLB_ETCD_PASSWORD`).
    pub etcd_password: Option<Spanned<String>>,
    /// CA file for etcd's certificates.
    pub etcd_ca_file: Option<Spanned<PathBuf>>,
    /// Client certificate file.
    pub etcd_cert_file: Option<Spanned<PathBuf>>,
    /// Client key file.
    pub etcd_key_file: Option<Spanned<PathBuf>>,
}

/// `quorum = "majority"` or `quorum = 2`.
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(untagged)]
pub enum QuorumValue {
    /// A word.
    Word(String),
    /// A count.
    Number(i64),
}

impl ServerFile {
    /// Read and parse; errors name `file:line:column`.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let text = read_text(path).map_err(|e| ConfigErrors(vec![e]))?;
        let src = Source::new(path, &text);
        let mut errors = Vec::new();
        let parsed: Option<ServerFile> = parse_collecting(&src, &mut errors);
        let file = match parsed {
            Some(f) if errors.is_empty() => f,
            _ => {
                errors.sort_by_key(|e| (e.origin.line, e.origin.col));
                return Err(ConfigErrors(errors));
            }
        };
        if let Some(t) = &file.tcp_idle_timeout
            && humantime::parse_duration(t).is_err()
        {
            return Err(ConfigErrors(vec![ConfigError {
                origin: src.origin(text.find("tcp-idle-timeout").unwrap_or(0)),
                msg: format!("tcp-idle-timeout {t:?} is not a duration like \"10s\""),
            }]));
        }
        let mut errors = Vec::new();
        let mut err = |at: std::ops::Range<usize>, msg: String| {
            errors.push(ConfigError {
                origin: src.origin(at.start),
                msg,
            })
        };
        if let Some(t) = &file.watch_settle
            && humantime::parse_duration(t.get_ref()).map_or(true, |d| {
                d < Duration::from_millis(100) || d > Duration::from_secs(600)
            })
        {
            err(
                t.span(),
                format!(
                    "watch-settle {:?} is not a duration from \"100ms\" to \"10m\"",
                    t.get_ref()
                ),
            );
        }
        if let Some(t) = &file.webhook_secret
            && t.get_ref().trim().is_empty()
        {
            err(
                t.span(),
                "webhook-secret is empty: give a secret, or remove the line (webhooks are then sent unsigned)".into(),
            );
        }
        if let Some(t) = &file.admin_token
            && t.get_ref().trim().is_empty()
        {
            err(
                t.span(),
                "admin-token is empty: give a token, or remove the line (without one, changes are allowed from loopback only)".into(),
            );
        }
        for h in file.admin_hosts.iter().flatten() {
            let name = h.get_ref();
            let ok = !name.is_empty()
                && name.len() <= 253
                && name.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !ok {
                err(
                    h.span(),
                    format!(
                        "admin-hosts: {name:?} is not a host name like \"gslb-1.example.net\" (no port, no scheme)"
                    ),
                );
            }
        }
        if let Some(p) = &file.probe_source
            && p.get_ref().parse::<IpAddr>().is_err()
        {
            err(
                p.span(),
                format!("probe-source {:?} is not an IP address", p.get_ref()),
            );
        }
        for (what, v) in [
            ("tcp-connections", &file.tcp_connections),
            (
                "tcp-connections-per-prefix",
                &file.tcp_connections_per_prefix,
            ),
            ("tcp-connections-per-48", &file.tcp_connections_per_48),
            ("admin-connections", &file.admin_connections),
            ("answer-cache-mib", &file.answer_cache_mib),
        ] {
            if let Some(v) = v
                && !(1..=1_000_000).contains(v.get_ref())
            {
                err(
                    v.span(),
                    format!("{what} {} is out of range (1..=1000000)", v.get_ref()),
                );
            }
        }
        for (what, v, hi) in [
            ("rate-limit", &file.rate_limit, 1_000_000),
            ("rate-limit-slip", &file.rate_limit_slip, 100),
        ] {
            if let Some(v) = v
                && !(0..=hi).contains(v.get_ref())
            {
                err(
                    v.span(),
                    format!("{what} {} is out of range (0..={hi})", v.get_ref()),
                );
            }
        }
        for n in file.rate_limit_whitelist.iter().flatten() {
            if n.get_ref().parse::<ipnet::IpNet>().is_err() {
                err(
                    n.span(),
                    format!(
                        "rate-limit-whitelist: {:?} is not a prefix like \"192.0.2.0/24\" or \"2001:db8::/32\"",
                        n.get_ref()
                    ),
                );
            }
        }
        if let Some(c) = &file.cluster {
            let _ = cluster_settings(c, &mut err);
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let keys = tsig_keys(&file.tsig, dir, &mut err);
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let mut file = file;
        file.tsig_keys = keys;
        Ok(file)
    }

    /// The probe source address (validated by `load`).
    pub fn probe_source(&self) -> Option<IpAddr> {
        self.probe_source
            .as_ref()
            .and_then(|p| p.get_ref().parse().ok())
    }

    /// The cluster settings (validated by `load`), with the password from
    /// the environment when the file has none.
    pub fn cluster(&self) -> Option<ClusterSettings> {
        let c = self.cluster.as_ref()?;
        cluster_settings(c, &mut |_, _| {})
    }

    /// Response rate limiting, when on (validated by `load`).
    pub fn rate_limit(&self) -> Option<crate::dns::rrl::RrlSettings> {
        let rate = *self.rate_limit.as_ref()?.get_ref();
        (rate > 0).then(|| crate::dns::rrl::RrlSettings {
            rate: rate as u32,
            slip: self
                .rate_limit_slip
                .as_ref()
                .map_or(2, |s| *s.get_ref() as u32),
            whitelist: self
                .rate_limit_whitelist
                .iter()
                .flatten()
                .filter_map(|n| n.get_ref().parse().ok())
                .collect(),
        })
    }

    /// The TCP idle timeout, parsed (validated by `load`).
    /// `watch-settle`, parsed.
    pub fn watch_settle(&self) -> Option<Duration> {
        self.watch_settle
            .as_ref()
            .and_then(|t| humantime::parse_duration(t.get_ref()).ok())
    }

    pub fn tcp_idle(&self) -> Option<Duration> {
        self.tcp_idle_timeout
            .as_deref()
            .and_then(|t| humantime::parse_duration(t).ok())
    }
}

/// A name that is one etcd key segment.
fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The host name, the default node name.
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most
    // that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let name = if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    };
    let name = name.split('.').next().unwrap_or_default().to_string();
    if valid_segment(&name) {
        name
    } else {
        "gslb".to_string()
    }
}

/// Validate `[cluster]`; every problem goes to `err` with its span.
fn cluster_settings(
    c: &ClusterFile,
    err: &mut dyn FnMut(std::ops::Range<usize>, String),
) -> Option<ClusterSettings> {
    let mut ok = true;
    let name = c.name.get_ref().clone();
    if !valid_segment(&name) {
        err(
            c.name.span(),
            format!("cluster name {name:?} must be 1-64 letters, digits, '-', '_' or '.'"),
        );
        ok = false;
    }
    let node = match &c.node {
        Some(n) => {
            if !valid_segment(n.get_ref()) {
                err(
                    n.span(),
                    format!(
                        "node name {:?} must be 1-64 letters, digits, '-', '_' or '.'",
                        n.get_ref()
                    ),
                );
                ok = false;
            }
            n.get_ref().clone()
        }
        None => host_name(),
    };
    let etcd = c.etcd.get_ref().clone();
    if etcd.is_empty() {
        err(
            c.etcd.span(),
            "etcd needs at least one endpoint, like \"http://127.0.0.1:2379\"".into(),
        );
        ok = false;
    }
    let tls_files = c.etcd_ca_file.is_some() || c.etcd_cert_file.is_some();
    for e in &etcd {
        let scheme_ok = e.starts_with("http://") || e.starts_with("https://");
        let parsed = reqwest::Url::parse(e);
        // Messages never repeat credentials written into a URL.
        let shown = super::redact_url(e);
        if !scheme_ok || parsed.is_err() {
            err(
                c.etcd.span(),
                format!("etcd endpoint {shown} must be an http:// or https:// URL"),
            );
            ok = false;
        } else if parsed
            .as_ref()
            .is_ok_and(|u| !u.username().is_empty() || u.password().is_some())
        {
            err(
                c.etcd.span(),
                format!(
                    "etcd endpoint {shown} has credentials in it: use etcd-user and the GSLB_ETCD_PASSWORD environment variable"
                ),
            );
            ok = false;
        } else if tls_files && e.starts_with("http://") {
            err(
                c.etcd.span(),
                format!(
                    "etcd endpoint {e:?} is plain http:// but etcd-ca-file or etcd-cert-file is set: use https://"
                ),
            );
            ok = false;
        }
    }
    let quorum = match c.quorum.as_ref().map(|q| (q.span(), q.get_ref())) {
        None => Quorum::Majority,
        Some((_, QuorumValue::Word(w))) if w == "majority" => Quorum::Majority,
        Some((_, QuorumValue::Word(w))) if w == "any" => Quorum::Any,
        Some((_, QuorumValue::Word(w))) if w == "all" => Quorum::All,
        Some((_, QuorumValue::Number(n))) if (1..=1000).contains(n) => Quorum::AtLeast(*n as u32),
        Some((span, QuorumValue::Word(w))) => match w.parse::<u32>() {
            Ok(n) if (1..=1000).contains(&n) => Quorum::AtLeast(n),
            _ => {
                err(
                    span,
                    format!(
                        "quorum {w:?} is not \"majority\", \"any\", \"all\" or a number from 1"
                    ),
                );
                ok = false;
                Quorum::Majority
            }
        },
        Some((span, QuorumValue::Number(n))) => {
            err(span, format!("quorum {n} must be from 1 to 1000"));
            ok = false;
            Quorum::Majority
        }
    };
    let lease_ttl = match &c.lease_ttl {
        None => Duration::from_secs(5),
        Some(t) => match humantime::parse_duration(t.get_ref()) {
            Ok(d) if d >= MIN_LEASE_TTL && d <= Duration::from_secs(3600) => {
                // etcd leases are whole seconds: round up.
                Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0))
            }
            Ok(_) => {
                err(
                    t.span(),
                    format!(
                        "lease-ttl {:?} must be from 2s (etcd's shortest lease) to 1h",
                        t.get_ref()
                    ),
                );
                ok = false;
                Duration::from_secs(5)
            }
            Err(_) => {
                err(
                    t.span(),
                    format!("lease-ttl {:?} is not a duration like \"5s\"", t.get_ref()),
                );
                ok = false;
                Duration::from_secs(5)
            }
        },
    };
    let vote_grace = match &c.vote_grace {
        None => DEFAULT_VOTE_GRACE,
        Some(t) => match humantime::parse_duration(t.get_ref()) {
            Ok(d) if d >= Duration::from_secs(1) && d <= Duration::from_secs(86_400) => d,
            Ok(_) => {
                err(
                    t.span(),
                    format!("vote-grace {:?} must be from 1s to 24h", t.get_ref()),
                );
                ok = false;
                DEFAULT_VOTE_GRACE
            }
            Err(_) => {
                err(
                    t.span(),
                    format!(
                        "vote-grace {:?} is not a duration like \"30s\"",
                        t.get_ref()
                    ),
                );
                ok = false;
                DEFAULT_VOTE_GRACE
            }
        },
    };
    let user = c.etcd_user.as_ref().map(|u| u.get_ref().clone());
    let password: Option<String> = c
        .etcd_password
        .as_ref()
        .map(|p| p.get_ref().clone())
        .or_else(|| {
            std::env::var(ETCD_PASSWORD_ENV)
                .ok()
                .filter(|p| !p.is_empty())
        });
    if let Some(p) = &c.etcd_password
        && user.is_none()
    {
        err(p.span(), "etcd-password needs etcd-user".into());
        ok = false;
    } else if password.is_some() && user.is_none() {
        err(
            c.name.span(),
            format!("{ETCD_PASSWORD_ENV} is set but [cluster] has no etcd-user"),
        );
        ok = false;
    }
    match (&c.etcd_cert_file, &c.etcd_key_file) {
        (Some(f), None) => {
            err(f.span(), "etcd-cert-file needs etcd-key-file".into());
            ok = false;
        }
        (None, Some(f)) => {
            err(f.span(), "etcd-key-file needs etcd-cert-file".into());
            ok = false;
        }
        _ => {}
    }
    for f in [&c.etcd_ca_file, &c.etcd_cert_file, &c.etcd_key_file]
        .into_iter()
        .flatten()
    {
        if let Err(e) = std::fs::metadata(f.get_ref()) {
            err(
                f.span(),
                format!("cannot read {}: {e}", f.get_ref().display()),
            );
            ok = false;
        }
    }
    ok.then(|| ClusterSettings {
        name,
        node,
        etcd,
        quorum,
        lease_ttl,
        vote_grace,
        user,
        password,
        ca_file: c.etcd_ca_file.as_ref().map(|f| f.get_ref().clone()),
        cert_file: c.etcd_cert_file.as_ref().map(|f| f.get_ref().clone()),
        key_file: c.etcd_key_file.as_ref().map(|f| f.get_ref().clone()),
    })
}

/// How long a verdict held up by withdrawn votes alone stands, by default:
/// longer than a restart and the fall/rise that follows it, short enough
/// that a node gone for good does not pin a verdict for long.
pub const DEFAULT_VOTE_GRACE: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<ServerFile, ConfigErrors> {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = dir.path().join("gslb.toml");
        std::fs::write(&p, text).expect("write");
        ServerFile::load(&p)
    }

    fn problems(text: &str) -> Vec<String> {
        load(text)
            .expect_err("problems")
            .0
            .iter()
            .map(|e| format!("{}:{} {}", e.origin.line, e.origin.col, e.msg))
            .collect()
    }

    #[test]
    fn tsig_keys_come_from_a_file_or_the_environment_never_the_settings_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        // tsig-keygen's output, and a bare base64 secret.
        std::fs::write(
            dir.path().join("xfr.key"),
            "key \"xfr\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0IQ==\";\n};\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("bare.key"),
            "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0IQ==\n",
        )
        .unwrap();
        let p = dir.path().join("gslb.toml");
        std::fs::write(
            &p,
            "[tsig.xfr]\nsecret-file = \"xfr.key\"\n[tsig.other]\nalgorithm = \"hmac-sha512\"\nsecret-file = \"bare.key\"\n",
        )
        .unwrap();
        let f = ServerFile::load(&p).expect("loads");
        let k = &f.tsig_keys["xfr"];
        assert_eq!(k.name.to_string(), "xfr.");
        assert_eq!(k.secret, b"secret-secret-secret-secret!");
        assert_eq!(
            f.tsig_keys["other"].algorithm,
            hickory_proto::rr::rdata::tsig::TsigAlgorithm::HmacSha512
        );
        // Safety: tests that set this variable are this one only.
        unsafe {
            std::env::set_var(
                "GSLB_TEST_TSIG_SECRET",
                "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0IQ==",
            )
        };
        let f = load("[tsig.e]\nsecret-env = \"GSLB_TEST_TSIG_SECRET\"\n").expect("loads");
        assert_eq!(f.tsig_keys["e"].secret, b"secret-secret-secret-secret!");
        let p = problems(
            "[tsig.a]\nalgorithm = \"hmac-md5\"\nsecret-env = \"GSLB_TEST_TSIG_SECRET\"\n[tsig.b]\nsecret-env = \"GSLB_TEST_NOT_SET_EVER\"\n[tsig.c]\nsecret-file = \"/nonexistent/k\"\n[tsig.d]\n",
        );
        assert_eq!(p.len(), 4, "{p:#?}");
        assert!(
            p[0].starts_with("2:13 [tsig.a] algorithm \"hmac-md5\""),
            "{p:#?}"
        );
        assert!(p[1].starts_with("5:14 [tsig.b] secret-env: the environment variable GSLB_TEST_NOT_SET_EVER is not set"), "{p:#?}");
        assert!(
            p[2].starts_with("7:15 [tsig.c] secret-file /nonexistent/k:"),
            "{p:#?}"
        );
        assert!(
            p[3].starts_with("8:7 [tsig.d] needs exactly one of secret-file and secret-env"),
            "{p:#?}"
        );
        assert!(decode_secret("c2hvcnQ=").unwrap_err().contains("5 bytes"));
        assert!(
            decode_secret("not base64!")
                .unwrap_err()
                .contains("not base64")
        );
        assert!(decode_secret("key \"k\" { algorithm hmac-sha256; };").is_err());
    }

    #[test]
    fn a_cluster_table_becomes_settings() {
        let f = load(
            "probe-source = \"127.0.1.1\"\n[cluster]\nname = \"prod\"\nnode = \"ns1\"\netcd = [\"http://127.0.0.1:2379\"]\nquorum = 2\nlease-ttl = \"2500ms\"\n",
        )
        .expect("loads");
        assert_eq!(f.probe_source(), Some("127.0.1.1".parse().unwrap()));
        let c = f.cluster().expect("cluster");
        assert_eq!(c.prefix(), "/gslb/prod/");
        assert_eq!(c.node, "ns1");
        assert_eq!(c.quorum, Quorum::AtLeast(2));
        assert_eq!(
            c.lease_ttl,
            Duration::from_secs(3),
            "rounded up to whole seconds"
        );
        let d = load("[cluster]\nname = \"p\"\netcd = [\"http://127.0.0.1:2379\"]\n")
            .expect("loads")
            .cluster()
            .expect("cluster");
        assert_eq!(d.quorum, Quorum::Majority);
        assert_eq!(d.lease_ttl, Duration::from_secs(5));
        assert!(!d.node.is_empty(), "the host name by default");
        assert!(load("").expect("loads").cluster().is_none());
    }

    #[test]
    fn every_cluster_mistake_is_named_with_its_position() {
        let p = problems(
            "probe-source = \"nowhere\"\n[cluster]\nname = \"a/b\"\netcd = [\"127.0.0.1:2379\"]\nquorum = \"most\"\nlease-ttl = \"1s\"\netcd-password = \"x\"\n",
        );
        assert_eq!(p.len(), 6, "{p:?}");
        assert!(p[0].starts_with("1:16 probe-source"), "{p:?}");
        assert!(p.iter().any(|m| m.starts_with("3:8 cluster name")), "{p:?}");
        assert!(
            p.iter().any(|m| m.starts_with("4:8 etcd endpoint")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|m| m.starts_with("5:10 quorum \"most\"")),
            "{p:?}"
        );
        assert!(p.iter().any(|m| m.starts_with("6:13 lease-ttl")), "{p:?}");
        assert!(
            p.iter()
                .any(|m| m.starts_with("7:17 etcd-password needs etcd-user")),
            "{p:?}"
        );
        assert!(
            !p.iter().any(|m| m.contains("\"x\"")),
            "the password is never echoed: {p:?}"
        );
        let creds = problems(
            "[cluster]\nname = \"p\"\netcd = [\"https://gslb:hunter2@etcd.example:2379\"]\n",
        );
        assert!(creds[0].contains("has credentials in it"), "{creds:?}");
        assert!(
            !creds[0].contains("hunter2"),
            "the secret is not repeated: {creds:?}"
        );
        let unknown = problems("[cluster]\nname = \"p\"\netcd = []\nquorom = 2\n");
        assert!(unknown[0].contains("quorom"), "{unknown:?}");
        // Two typos in two tables: both reported.
        let two = problems("listn = []\n[cluster]\nname = \"p\"\netcd = []\nquorom = 2\n");
        assert_eq!(two.len(), 2, "{two:?}");
        assert!(two[0].starts_with("1:1 unknown field `listn`"), "{two:?}");
        assert!(two[1].starts_with("5:1 unknown field `quorom`"), "{two:?}");
        let tls = problems(
            "[cluster]\nname = \"p\"\netcd = [\"http://e:2379\"]\netcd-cert-file = \"/nonexistent.pem\"\n",
        );
        assert_eq!(
            tls.len(),
            3,
            "http with TLS, cert without key, missing file: {tls:?}"
        );
    }
}
