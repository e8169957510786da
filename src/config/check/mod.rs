//! `[check.NAME]`: how endpoints are probed.
//!
//! Everything the prober will need is validated here, the way the prober
//! uses it (hyper's header and URI types, rustls' server names and trust
//! store), and the CA file is read here: `gslb check`, serve and reload
//! accept exactly the checks that can be probed.
//!
//! A check kind is one entry of [`KINDS`] and one module: its name, the
//! settings of its own and the builder of its [`CheckKind`]. What every
//! kind shares (port, target, timing, fall and rise, probers) is read
//! here; a setting of another kind is refused with the kinds it applies
//! to, from the same table, so adding a kind touches its module and the
//! table.

mod dns;
mod exec;
mod grpc;
mod http;
mod icmp;
mod tcp;

pub(crate) use exec::lookup_user;
pub(crate) use icmp::open_socket as open_icmp_socket;

use std::net::SocketAddr;
use std::time::Duration;

use toml::Spanned;

use super::source::Ctx;
use super::spec::{CheckSpec, RecheckSpec};
use crate::model::{Check, CheckKind};

/// A check kind as the zone file names it.
struct Kind {
    /// `type = "..."`.
    name: &'static str,
    /// The settings of its own, besides those every check has, in groups
    /// (the TLS ones are shared by https and grpc).
    fields: &'static [&'static [&'static str]],
    /// `port` when the check does not set it (0: it must).
    default_port: u16,
    /// What a probe of it does, from the table.
    build: fn(&mut Ctx<'_, '_>, &Spanned<String>, &CheckSpec) -> CheckKind,
}

impl Kind {
    /// Whether `field` is one of its own settings.
    fn takes(&self, field: &str) -> bool {
        self.fields.iter().any(|group| group.contains(&field))
    }
}

/// Every check kind.
const KINDS: &[Kind] = &[
    Kind {
        name: "dns",
        fields: &[dns::DNS_FIELDS],
        default_port: 53,
        build: dns::build,
    },
    Kind {
        name: "exec",
        fields: &[exec::EXEC_FIELDS],
        default_port: 0,
        build: exec::build,
    },
    Kind {
        name: "grpc",
        fields: &[grpc::GRPC_FIELDS, http::TLS_FIELDS],
        default_port: 0,
        build: grpc::build,
    },
    Kind {
        name: "http",
        fields: &[http::HTTP_FIELDS],
        default_port: 80,
        build: http::build_http,
    },
    Kind {
        name: "https",
        fields: &[http::HTTP_FIELDS, http::TLS_FIELDS],
        default_port: 443,
        build: http::build_https,
    },
    Kind {
        name: "icmp",
        fields: &[],
        default_port: 0,
        build: icmp::build,
    },
    Kind {
        name: "tcp",
        fields: &[],
        default_port: 0,
        build: tcp::build,
    },
];

/// The settings that belong to some kinds only, and where each is written
/// if it is set.
fn kind_fields(s: &CheckSpec) -> [(&'static str, Option<std::ops::Range<usize>>); 21] {
    [
        ("service", s.service.as_ref().map(Spanned::span)),
        ("tls", s.tls.as_ref().map(Spanned::span)),
        ("command", s.command.as_ref().map(Spanned::span)),
        ("user", s.user.as_ref().map(Spanned::span)),
        ("max-running", s.max_running.as_ref().map(Spanned::span)),
        ("query-name", s.query_name.as_ref().map(Spanned::span)),
        ("query-type", s.query_type.as_ref().map(Spanned::span)),
        ("expect-rcode", s.expect_rcode.as_ref().map(Spanned::span)),
        ("expect-answer", s.expect_answer.as_ref().map(Spanned::span)),
        (
            "recursion-desired",
            s.recursion_desired.as_ref().map(Spanned::span),
        ),
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
        ("tls-verify", s.tls_verify.as_ref().map(Spanned::span)),
        ("ca-file", s.ca_file.as_ref().map(Spanned::span)),
        ("warn-expiry", s.warn_expiry.as_ref().map(Spanned::span)),
        ("fail-expiry", s.fail_expiry.as_ref().map(Spanned::span)),
    ]
}

/// `"a"`, `"a" or "b"`, `"a", "b" or "c"`.
fn one_of(names: &[&str], quote: bool) -> String {
    let q: Vec<String> = names
        .iter()
        .map(|n| {
            if quote {
                format!("{n:?}")
            } else {
                (*n).to_string()
            }
        })
        .collect();
    match q.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!(
            "{} {} {last}",
            rest.join(", "),
            if quote { "or" } else { "and" }
        ),
    }
}

pub(super) fn build_check(
    cx: &mut Ctx<'_, '_>,
    name: &Spanned<String>,
    s: &CheckSpec,
) -> Option<Check> {
    let before = cx.errors.len();
    let Some(kind) = KINDS.iter().find(|k| k.name == s.kind.get_ref()) else {
        let mut names: Vec<&str> = KINDS.iter().map(|k| k.name).collect();
        names.sort_unstable();
        cx.err(
            &s.kind,
            format!(
                "unknown check type {:?} (expected {})",
                s.kind.get_ref(),
                one_of(&names, true)
            ),
        );
        return None;
    };
    for (field, span) in kind_fields(s) {
        let Some(span) = span else { continue };
        if kind.takes(field) {
            continue;
        }
        let owners: Vec<&str> = KINDS
            .iter()
            .filter(|k| k.takes(field))
            .map(|k| k.name)
            .collect();
        let origin = cx.src.origin(span.start);
        cx.err_at(
            origin,
            format!(
                "`{field}` applies to {} checks, not {}",
                one_of(&owners, false),
                kind.name
            ),
        );
    }
    let default_port = kind.default_port;
    let kind = (kind.build)(cx, name, s);
    let port = cx.int(&s.port, "port", 1, 65535, i64::from(default_port)) as u16;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_setting_belongs_to_a_kind_and_is_refused_by_the_others() {
        let spec: CheckSpec = toml::from_str("type = \"tcp\"").expect("a minimal check");
        let refused: Vec<&str> = kind_fields(&spec).iter().map(|(f, _)| *f).collect();
        for f in &refused {
            assert!(KINDS.iter().any(|k| k.takes(f)), "`{f}` belongs to no kind");
        }
        for k in KINDS {
            for f in k.fields.iter().copied().flatten() {
                assert!(
                    refused.contains(f),
                    "{}'s `{f}` would be taken silently by every other kind",
                    k.name
                );
            }
        }
    }

    #[test]
    fn lists_read_as_sentences() {
        assert_eq!(
            one_of(
                &["dns", "exec", "grpc", "http", "https", "icmp", "tcp"],
                true
            ),
            r#""dns", "exec", "grpc", "http", "https", "icmp" or "tcp""#
        );
        assert_eq!(one_of(&["http", "https"], false), "http and https");
        assert_eq!(one_of(&["https"], false), "https");
    }
}
