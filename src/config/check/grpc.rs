//! `type = "grpc"`: the gRPC health checking protocol, plain or over TLS.

use toml::Spanned;

use super::super::source::Ctx;
use super::super::spec::CheckSpec;
use super::http;
use crate::model::{CheckKind, GrpcCheck};

/// Its own settings; the TLS ones ([`http::TLS_FIELDS`]) need `tls = true`.
pub(super) const GRPC_FIELDS: &[&str] = &["service", "tls", "host"];

pub(super) fn build(cx: &mut Ctx<'_, '_>, check: &Spanned<String>, s: &CheckSpec) -> CheckKind {
    if s.port.is_none() && s.target.is_none() {
        cx.err(
            check,
            format!("check {}: a grpc check needs `port`", check.get_ref()),
        );
    }
    let tls_on = s.tls.as_ref().is_some_and(|t| *t.get_ref());
    if !tls_on {
        for (field, set) in super::kind_fields(s) {
            if let Some(span) = set.filter(|_| http::TLS_FIELDS.contains(&field)) {
                let origin = cx.src.origin(span.start);
                cx.err_at(origin, format!("`{field}` needs `tls = true`"));
            }
        }
    }
    let tls = tls_on.then(|| http::tls_check(cx, s));
    CheckKind::Grpc(Box::new(GrpcCheck {
        service: s
            .service
            .as_ref()
            .map(|v| v.get_ref().clone())
            .unwrap_or_default(),
        tls,
        host: http::host(cx, s),
    }))
}
