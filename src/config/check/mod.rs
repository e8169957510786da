//! `[check.NAME]`: how endpoints are probed.
//!
//! Everything the prober will need is validated here, the way the prober
//! uses it (hyper's header and URI types, rustls' server names and trust
//! store), and the CA file is read here: `gslb check`, serve and reload
//! accept exactly the checks that can be probed.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hickory_proto::rr::Name;
use hyper::Uri;
use hyper::header::{HeaderName, HeaderValue};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use toml::Spanned;

use super::source::Ctx;
use super::spec::{CheckSpec, RecheckSpec, StatusList, StatusSpec};
use crate::model::{BODY_LIMIT, CaFile, Check, CheckKind, HttpCheck, StatusRange, TlsCheck};

/// A setting as written: its name and where it is, if it is set.
type Field = (&'static str, Option<std::ops::Range<usize>>);

/// The settings of HTTP and HTTPS checks (the request and its judgement).
fn http_fields(s: &CheckSpec) -> [Field; 7] {
    [
        ("method", s.method.as_ref().map(Spanned::span)),
        ("path", s.path.as_ref().map(Spanned::span)),
        ("host", s.host.as_ref().map(Spanned::span)),
        ("headers", s.headers.as_ref().map(Spanned::span)),
        ("expect-status", s.expect_status.as_ref().map(Spanned::span)),
        ("expect-body", s.expect_body.as_ref().map(Spanned::span)),
        (
            "reuse-connection",
            s.reuse_connection.as_ref().map(Spanned::span),
        ),
    ]
}

/// The settings of HTTPS checks only.
fn tls_fields(s: &CheckSpec) -> [Field; 2] {
    [
        ("tls-verify", s.tls_verify.as_ref().map(Spanned::span)),
        ("ca-file", s.ca_file.as_ref().map(Spanned::span)),
    ]
}

/// An error at each of `fields` that is set: it applies to `applies`
/// checks, not to `kind`.
fn misplaced(cx: &mut Ctx<'_, '_>, fields: &[Field], applies: &str, kind: &str) {
    for (field, span) in fields {
        if let Some(span) = span {
            let origin = cx.src.origin(span.start);
            cx.err_at(
                origin,
                format!("`{field}` applies to {applies} checks, not {kind}"),
            );
        }
    }
}

pub(super) fn build_check(
    cx: &mut Ctx<'_, '_>,
    name: &Spanned<String>,
    s: &CheckSpec,
) -> Option<Check> {
    let before = cx.errors.len();
    let (kind, default_port) = match s.kind.get_ref().as_str() {
        "tcp" => {
            misplaced(cx, &http_fields(s), "http and https", "tcp");
            misplaced(cx, &tls_fields(s), "http and https", "tcp");
            if s.port.is_none() && s.target.is_none() {
                cx.err(
                    name,
                    format!("check {}: a tcp check needs `port`", name.get_ref()),
                );
            }
            (CheckKind::Tcp, 0)
        }
        "http" => {
            misplaced(cx, &tls_fields(s), "https", "http");
            (CheckKind::Http(http_check(cx, name, s, None)), 80)
        }
        "https" => {
            let tls = tls_check(cx, s);
            (CheckKind::Http(http_check(cx, name, s, Some(tls))), 443)
        }
        other => {
            cx.err(
                &s.kind,
                format!("unknown check type {other:?} (expected \"http\", \"https\" or \"tcp\")"),
            );
            return None;
        }
    };
    let port = cx.int(&s.port, "port", 1, 65535, default_port) as u16;
    let target = s.target.as_ref().and_then(|t| match t.get_ref().parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            cx.err(t, format!("target {:?} is not ADDR:PORT (e.g. \"192.0.2.1:8080\" or \"[2001:db8::1]:443\")", t.get_ref()));
            None
        }
    });
    let (interval, timeout, recheck) = timing(cx, name, s);
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
        target,
        interval,
        timeout,
        recheck,
        fall,
        rise,
        probers,
    })
}

/// The request and the judgement of an HTTP(S) check.
fn http_check(
    cx: &mut Ctx<'_, '_>,
    name: &Spanned<String>,
    s: &CheckSpec,
    tls: Option<TlsCheck>,
) -> Box<HttpCheck> {
    let mut http = HttpCheck::new(tls);
    if let Some(m) = &s.method {
        let up = m.get_ref().to_ascii_uppercase();
        if up != "GET" && up != "HEAD" {
            cx.err(
                m,
                format!("method {:?} is not supported (GET or HEAD)", m.get_ref()),
            );
        }
        http.method = up;
    }
    if let Some(p) = &s.path {
        // What hyper will send: an origin-form request target.
        let origin_form = p.get_ref().starts_with('/')
            && Uri::try_from(p.get_ref().as_str())
                .is_ok_and(|u| u.scheme().is_none() && u.authority().is_none());
        if origin_form {
            http.path = p.get_ref().clone();
        } else {
            cx.err(
                p,
                format!(
                    "path {:?} is not a request path: it must start with / and hold no spaces or control characters (write a space as %20)",
                    p.get_ref()
                ),
            );
        }
    }
    if let Some(list) = &s.expect_status {
        http.expect_status = expect_status(cx, list);
    }
    if let (Some(b), "HEAD") = (&s.expect_body, http.method.as_str()) {
        cx.err(
            b,
            "expect-body cannot be checked with method HEAD (a HEAD response has no body)",
        );
    }
    if let Some(b) = &s.expect_body {
        if b.get_ref().is_empty() || b.get_ref().len() > BODY_LIMIT {
            cx.err(
                b,
                "expect-body must be 1 to 5120 bytes (only the first 5120 bytes of a body are read)",
            );
        }
        http.expect_body = Some(b.get_ref().clone());
    }
    if let Some(h) = &s.host {
        let v = h.get_ref();
        // The Host header and the TLS server name: both must take it.
        let valid = !v.is_empty()
            && !v.contains(':')
            && !v.contains('/')
            && (v.parse::<IpAddr>().is_ok() || Name::from_ascii(v).is_ok())
            && ServerName::try_from(v.as_str()).is_ok()
            && HeaderValue::from_str(v).is_ok();
        if !valid {
            cx.err(
                h,
                format!(
                    "host {v:?} is not a host name or address (no port or path: the port is `port`)"
                ),
            );
        }
        http.host = Some(v.clone());
    }
    if let Some(headers) = &s.headers {
        for (k, v) in headers.get_ref() {
            let valid =
                HeaderName::from_bytes(k.as_bytes()).is_ok() && HeaderValue::from_str(v).is_ok();
            if !valid {
                cx.err(
                    headers,
                    format!(
                        "check {}: header {k:?} is not a valid HTTP header (a token name, and a value of visible ASCII)",
                        name.get_ref()
                    ),
                );
            }
            http.headers.push((k.clone(), v.clone()));
        }
    }
    if let Some(r) = &s.reuse_connection {
        http.reuse_connection = *r.get_ref();
    }
    http
}

fn expect_status(cx: &mut Ctx<'_, '_>, list: &Spanned<StatusList>) -> Vec<StatusRange> {
    let items: Vec<StatusSpec> = match list.get_ref() {
        StatusList::One(one) => vec![one.clone()],
        StatusList::Many(many) => many.clone(),
    };
    let mut out = Vec::new();
    for item in items {
        match status_range(&item) {
            Some(r) => out.push(r),
            None => cx.err(
                list,
                format!(
                    "expect-status: {item:?} is not a status (100..=599) or a range \"200-299\""
                ),
            ),
        }
    }
    if out.is_empty() {
        cx.err(list, "expect-status is empty");
    }
    out
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

/// `tls-verify` and `ca-file` of an HTTPS check; the CA file is read and
/// its certificates checked here, so a file that cannot serve as a trust
/// store is a config error, not a region that every probe fails.
fn tls_check(cx: &mut Ctx<'_, '_>, s: &CheckSpec) -> TlsCheck {
    let ca = s.ca_file.as_ref().and_then(|f| {
        let path = PathBuf::from(f.get_ref());
        let path = if path.is_relative() {
            cx.src.file.parent().unwrap_or(Path::new(".")).join(path)
        } else {
            path
        };
        match read_ca_file(&path) {
            Ok(certs) => Some(CaFile { path, certs }),
            Err(e) => {
                cx.err(f, format!("ca-file {}: {e}", path.display()));
                None
            }
        }
    });
    TlsCheck {
        verify: s.tls_verify.as_ref().is_none_or(|v| *v.get_ref()),
        ca,
    }
}

/// The certificates of a PEM file, each one usable as a trust anchor.
fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "does not exist".to_string(),
        _ => format!("cannot be read: {e}"),
    })?;
    let mut certs = Vec::new();
    let mut roots = rustls::RootCertStore::empty();
    for (i, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let cert = cert.map_err(|e| format!("is not valid PEM: {e}"))?;
        roots
            .add(cert.clone())
            .map_err(|e| format!("certificate #{} is not a usable CA: {e}", i + 1))?;
        certs.push(cert);
    }
    if certs.is_empty() {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(certs)
}

/// `interval`, `timeout` and `recheck`, each checked against the others.
fn timing(
    cx: &mut Ctx<'_, '_>,
    name: &Spanned<String>,
    s: &CheckSpec,
) -> (Duration, Duration, Option<Duration>) {
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
    (interval, timeout, recheck)
}
