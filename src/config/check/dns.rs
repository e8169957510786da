//! `type = "dns"`: one question to the endpoint, judged by the rcode and,
//! if asked, by a record of the answer.

use std::str::FromStr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RecordType};
use toml::Spanned;

use super::super::records;
use super::super::source::Ctx;
use super::super::spec::CheckSpec;
use crate::model::{CheckKind, DNS_RCODES as RCODES, DnsCheck};

pub(super) const DNS_FIELDS: &[&str] = &[
    "query-name",
    "query-type",
    "expect-rcode",
    "expect-answer",
    "recursion-desired",
];

pub(super) fn build(cx: &mut Ctx<'_, '_>, check: &Spanned<String>, s: &CheckSpec) -> CheckKind {
    let name = match &s.query_name {
        None => {
            cx.err(
                check,
                format!("check {}: a dns check needs `query-name`", check.get_ref()),
            );
            Name::root()
        }
        Some(q) => match Name::from_ascii(q.get_ref().trim()) {
            Ok(mut n) if !q.get_ref().trim().is_empty() => {
                n.set_fqdn(true);
                n
            }
            _ => {
                cx.err(
                    q,
                    format!("query-name {:?} is not a domain name", q.get_ref()),
                );
                Name::root()
            }
        },
    };
    let qtype = match &s.query_type {
        None => RecordType::A,
        Some(t) => match RecordType::from_str(&t.get_ref().trim().to_ascii_uppercase()) {
            Ok(rt)
                if !matches!(
                    rt,
                    RecordType::ANY
                        | RecordType::AXFR
                        | RecordType::IXFR
                        | RecordType::OPT
                        | RecordType::TSIG
                        | RecordType::Unknown(_)
                ) =>
            {
                rt
            }
            _ => {
                cx.err(
                    t,
                    format!("query-type {:?} is not a record type to ask for (A, AAAA, MX, TXT, SOA, ...)", t.get_ref()),
                );
                RecordType::A
            }
        },
    };
    let rcode = match &s.expect_rcode {
        None => ResponseCode::NoError,
        Some(r) => {
            let want = r.get_ref().trim().to_ascii_uppercase();
            match RCODES.iter().find(|(n, _)| *n == want) {
                Some((_, rc)) => *rc,
                None => {
                    let names: Vec<&str> = RCODES.iter().map(|(n, _)| *n).collect();
                    cx.err(
                        r,
                        format!(
                            "expect-rcode {:?} is not one of {}",
                            r.get_ref(),
                            super::one_of(&names, false).replace(" and ", " or ")
                        ),
                    );
                    ResponseCode::NoError
                }
            }
        }
    };
    // The expected data is parsed as a record of the zone file would be,
    // then compared as data (names without regard to case), not as text.
    let expect_answer = s.expect_answer.as_ref().and_then(|a| {
        match records::parse_rdata(&qtype.to_string(), a.get_ref(), &Name::root()) {
            Ok(d) => Some(d),
            Err(records::RDataError::Value(msg)) => {
                cx.err(a, format!("expect-answer: {msg}"));
                None
            }
            Err(records::RDataError::Type(_)) => {
                cx.err(
                    a,
                    format!(
                        "expect-answer works with query-type {} (not {qtype})",
                        records::SUPPORTED
                    ),
                );
                None
            }
        }
    });
    if let (Some(a), Some(_)) = (&s.expect_answer, &expect_answer)
        && rcode != ResponseCode::NoError
    {
        cx.err(
            a,
            "expect-answer needs expect-rcode NOERROR (only a NOERROR answer holds records)",
        );
    }
    CheckKind::Dns(Box::new(DnsCheck {
        name,
        qtype,
        rcode,
        expect_answer,
        recursion_desired: s.recursion_desired.as_ref().is_some_and(|r| *r.get_ref()),
    }))
}
