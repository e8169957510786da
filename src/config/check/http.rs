//! `type = "http"` and `type = "https"`: a request, judged by status and
//! body; over TLS with `tls-verify` and `ca-file`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hickory_proto::rr::Name;
use hyper::Uri;
use hyper::header::{HeaderName, HeaderValue};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use toml::Spanned;

use super::super::source::Ctx;
use super::super::spec::{CheckSpec, StatusList, StatusSpec};
use crate::model::{
    BODY_LIMIT, CaFile, CheckKind, DEFAULT_WARN_EXPIRY, HttpCheck, StatusRange, TlsCheck,
};

/// The settings of HTTP checks (the request and its judgement).
pub(super) const HTTP_FIELDS: &[&str] = &[
    "method",
    "path",
    "host",
    "headers",
    "expect-status",
    "expect-body",
    "reuse-connection",
];

/// The settings of every check over TLS (https, grpc with `tls`).
pub(super) const TLS_FIELDS: &[&str] = &["tls-verify", "ca-file", "warn-expiry", "fail-expiry"];

pub(super) fn build_http(cx: &mut Ctx<'_, '_>, name: &Spanned<String>, s: &CheckSpec) -> CheckKind {
    CheckKind::Http(http_check(cx, name, s, None))
}

pub(super) fn build_https(
    cx: &mut Ctx<'_, '_>,
    name: &Spanned<String>,
    s: &CheckSpec,
) -> CheckKind {
    let tls = tls_check(cx, s);
    CheckKind::Http(http_check(cx, name, s, Some(tls)))
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
    http.host = host(cx, s);
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

/// `host`: the Host header (or `:authority`) and the TLS server name, so
/// both must take it.
pub(super) fn host(cx: &mut Ctx<'_, '_>, s: &CheckSpec) -> Option<String> {
    let h = s.host.as_ref()?;
    let v = h.get_ref();
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
    Some(v.clone())
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

/// `tls-verify`, `ca-file`, `warn-expiry` and `fail-expiry` of a check over
/// TLS; the CA file is read and its certificates checked here, so a file
/// that cannot serve as a trust store is a config error, not a region that
/// every probe fails.
pub(super) fn tls_check(cx: &mut Ctx<'_, '_>, s: &CheckSpec) -> TlsCheck {
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
    let warn_expiry = cx.duration(&s.warn_expiry, "warn-expiry", DEFAULT_WARN_EXPIRY);
    let fail_expiry = s.fail_expiry.as_ref().map(|f| {
        (
            f,
            cx.duration(&s.fail_expiry, "fail-expiry", Duration::ZERO),
        )
    });
    if let Some((f, d)) = fail_expiry
        && humantime::parse_duration(f.get_ref()).is_ok()
    {
        if d.is_zero() {
            cx.err(
                f,
                "fail-expiry must be above zero (leave it out to never fail for expiry)",
            );
        } else if !warn_expiry.is_zero() && d > warn_expiry {
            cx.err(
                f,
                format!(
                    "fail-expiry {} is beyond warn-expiry {}: the probe would fail before any warning",
                    humantime::format_duration(d),
                    humantime::format_duration(warn_expiry)
                ),
            );
        }
    }
    TlsCheck {
        verify: s.tls_verify.as_ref().is_none_or(|v| *v.get_ref()),
        ca,
        warn_expiry,
        fail_expiry: fail_expiry.map(|(_, d)| d),
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
