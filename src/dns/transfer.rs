//! The zone as a standard secondary would get it (issue 21): every static
//! record, and at each service's name the answer a client of no known
//! location gets now. A secondary cannot weigh, locate or probe, so:
//!
//! - failover: the first region that is up (the all-down rule applies as in
//!   answers);
//! - all-healthy: every healthy endpoint;
//! - weighted: every healthy endpoint of every region with a weight above 0
//!   (the standby regions only when no weighted region is up);
//! - geo and nearest: the `*` entry's answer, and nearest's default order;
//! - a CNAME region: its CNAME;
//! - NODATA and SERVFAIL all-down rules: nothing at the name (a secondary
//!   then answers NXDOMAIN; SERVFAIL cannot be transferred).
//!
//! TTLs are the ones gslb answers with (the degraded TTL while degraded),
//! and addresses are capped at the service's `max-records` as in answers.
//! Deterministic: the same zone and verdicts give the same records in the
//! same order on every node, sorted by name (DNSSEC's canonical order),
//! type and data, the SOA first. The SOA is the zone's own: its serial does
//! not move with health yet (that comes with AXFR, and must be the same on
//! every node; today an unset `serial` is each node's own load time).

use std::net::IpAddr;

use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use rand::SeedableRng;

use crate::model::{Policy, RegionTarget, Service, Zone};
use crate::policy::{self, HealthView, Outcome, Selection};

/// The records of `zone` under `view`, as transferred: the SOA first.
pub fn zone_as_transferred(zone: &Zone, view: &dyn HealthView) -> Vec<Record> {
    let mut records: Vec<Record> = Vec::new();
    for (lname, node) in &zone.nodes {
        let owner = Name::from(lname.clone());
        for set in zone.rrsets(node) {
            if set.rtype == RecordType::SOA && *lname == zone.apex {
                continue; // first, below
            }
            records.extend(set.records(&owner));
        }
        if let Some(svc) = node.service.and_then(|i| zone.services.get(i)) {
            service_records(svc, &owner, view, &mut records);
        }
    }
    // The order of [`order`], each record's data encoded once.
    records.sort_by_cached_key(|r| (r.name.clone(), u16::from(r.record_type()), rdata_wire(r)));
    records.dedup_by(|a, b| a.name == b.name && a.data == b.data);
    records.insert(0, zone.soa.clone());
    records
}

/// The order of the zone as transferred: by name (DNSSEC's canonical
/// order), type, then data in canonical wire form (RFC 4034 §6.3).
/// Versions are compared in it (`dns::journal`).
pub(crate) fn order(a: &Record, b: &Record) -> std::cmp::Ordering {
    (a.name.cmp(&b.name))
        .then_with(|| u16::from(a.record_type()).cmp(&u16::from(b.record_type())))
        .then_with(|| rdata_wire(a).cmp(&rdata_wire(b)))
}

/// A record's data in canonical wire form (RFC 4034 §6.2): two records
/// with the same bytes are the same data, which their text need not say
/// (hickory prints the TXT strings "ab" and "a" "b" alike).
pub(crate) fn rdata_wire(r: &Record) -> Vec<u8> {
    use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
    let mut buf = Vec::with_capacity(32);
    let mut enc = BinEncoder::new(&mut buf);
    enc.set_canonical_form(true);
    if r.data.emit(&mut enc).is_err() {
        buf.clear();
        buf.extend_from_slice(r.data.to_string().as_bytes());
    }
    buf
}

/// The zone as transferred, in the presentation format of RFC 1035 zone
/// files, one record a line.
pub fn zone_text(zone: &Zone, view: &dyn HealthView) -> String {
    let mut out = String::new();
    for r in zone_as_transferred(zone, view) {
        record_line(&r, &mut out);
        out.push('\n');
    }
    out
}

/// One record in zone-file syntax. hickory prints TXT strings bare and
/// CAA values unescaped: those two are quoted here (RFC 1035 §5.1).
fn record_line(r: &Record, out: &mut String) {
    use std::fmt::Write;
    match &r.data {
        RData::TXT(txt) => {
            let _ = write!(out, "{} {} {} TXT", r.name, r.ttl, r.dns_class);
            for s in txt.txt_data.iter() {
                out.push(' ');
                quoted(s, out);
            }
        }
        RData::CAA(caa) => {
            let flags = (u8::from(caa.issuer_critical) << 7) | caa.reserved_flags;
            let _ = write!(
                out,
                "{} {} {} CAA {flags} {} ",
                r.name, r.ttl, r.dns_class, caa.tag
            );
            quoted(&caa.value, out);
        }
        _ => {
            let _ = write!(out, "{r}");
        }
    }
}

/// A character-string in double quotes: `"` and `\` escaped, bytes outside
/// printable ASCII as `\DDD`.
fn quoted(bytes: &[u8], out: &mut String) {
    use std::fmt::Write;
    out.push('"');
    for &b in bytes {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(char::from(b));
            }
            0x20..=0x7e => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\{b:03}");
            }
        }
    }
    out.push('"');
}

/// What one service contributes at `owner`.
fn service_records(svc: &Service, owner: &Name, view: &dyn HealthView, out: &mut Vec<Record>) {
    // Seeded: the same verdicts give the same records everywhere.
    let mut rng = rand::rngs::SmallRng::seed_from_u64(0);
    let (shares, sel) = policy::shares(svc, view);
    if sel.outcome != Outcome::Answer {
        return;
    }
    // Every region the service answers from now; for weighted, every
    // eligible region rather than one draw.
    let picks: Vec<usize> = match svc.policy {
        Policy::Weighted { .. } => {
            let mut p: Vec<usize> = shares.iter().map(|&(pos, _)| pos).collect();
            p.sort_unstable();
            p
        }
        _ => sel.picks.clone(),
    };
    let sel = Selection { picks, ..sel };
    let ttl = if sel.degraded {
        svc.degraded_ttl
    } else {
        svc.ttl
    };
    if let Some(&first) = sel.picks.first()
        && let RegionTarget::Alias(target) = &policy::picked_region(svc, first).target
    {
        out.push(Record::from_rdata(
            owner.clone(),
            ttl,
            RData::CNAME(CNAME(target.clone())),
        ));
        return;
    }
    let mut addrs: Vec<IpAddr> = Vec::new();
    for v6 in [false, true] {
        policy::addresses(svc, &sel, view, v6, &mut rng, &mut addrs);
        out.extend(addrs.iter().map(|a| {
            let data = match a {
                IpAddr::V4(v4) => RData::A(A(*v4)),
                IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
            };
            Record::from_rdata(owner.clone(), ttl, data)
        }));
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::{LoadOptions, load_sources};

    use crate::policy::LiteralView as View;

    /// Regions in name order: ap (198.51.100.1, .2), eu (192.0.2.1),
    /// us (203.0.113.1 and 2001:db8::1).
    const ZONE: &str = r#"[zone]
name = "z.example."
nameservers = ["ns1.example.net."]
hostmaster = "h.example.net."

[[record]]
name = "@"
type = "TXT"
value = "say \"hi\" ok"

[[record]]
name = "www"
type = "A"
value = "192.0.2.80"

[region.us]
endpoints = ["203.0.113.1", "2001:db8::1"]
[region.eu]
endpoints = ["192.0.2.1"]
[region.ap]
endpoints = ["198.51.100.1", "198.51.100.2"]
[region.lb]
cname = "lb.cloud.example."

[service.fo]
regions = ["us", "eu", "ap"]
ttl = 60
degraded-ttl = 5

[service.all]
policy = "all-healthy"
regions = ["us", "eu", "ap"]
ttl = 60

[service.wt]
policy = "weighted"
weights = { us = 3, eu = 1, ap = 0 }
ttl = 60

[service.closed]
regions = ["us", "eu"]
when-all-down = "nodata"

[service.alias]
regions = ["lb", "eu"]
"#;

    fn zone() -> std::sync::Arc<Zone> {
        let cfg = load_sources(
            &[(PathBuf::from("z.toml"), ZONE.to_string())],
            LoadOptions { auto_serial: 7 },
        )
        .expect("loads");
        cfg.zones[0].clone()
    }

    /// Index order of the regions: ap, eu, lb, us (name order).
    fn view(ap: bool, eu: bool, us: bool) -> View {
        View {
            regions: vec![ap, eu, true, us],
            endpoints: vec![vec![ap; 2], vec![eu], vec![], vec![us; 2]],
        }
    }

    fn lines(text: &str, name: &str) -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}.z.example. ")))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn all_up_static_records_and_each_policys_answer() {
        let z = zone();
        let text = zone_text(&z, &view(true, true, true));
        assert!(text.lines().next().unwrap().contains(" SOA "), "{text}");
        assert_eq!(text.matches(" SOA ").count(), 1, "{text}");
        assert!(
            text.contains("z.example. 300 IN TXT \"say \\\"hi\\\" ok\""),
            "{text}"
        );
        assert_eq!(lines(&text, "www"), ["www.z.example. 300 IN A 192.0.2.80"]);
        // failover: the first region, both families.
        assert_eq!(
            lines(&text, "fo"),
            [
                "fo.z.example. 60 IN A 203.0.113.1",
                "fo.z.example. 60 IN AAAA 2001:db8::1"
            ]
        );
        // all-healthy: every endpoint.
        assert_eq!(lines(&text, "all").len(), 5, "{text}");
        // weighted: the regions with a weight, not the standby.
        assert_eq!(
            lines(&text, "wt"),
            [
                "wt.z.example. 60 IN A 192.0.2.1",
                "wt.z.example. 60 IN A 203.0.113.1",
                "wt.z.example. 60 IN AAAA 2001:db8::1"
            ]
        );
        assert_eq!(
            lines(&text, "alias"),
            ["alias.z.example. 30 IN CNAME lb.cloud.example."]
        );
        // The same verdicts, the same text.
        assert_eq!(text, zone_text(&z, &view(true, true, true)));
    }

    #[test]
    fn txt_and_caa_are_quoted_as_zone_files_quote_them() {
        use hickory_proto::rr::rdata::{CAA, TXT};
        let name = Name::from_ascii("z.example.").unwrap();
        let line = |data: RData| {
            let mut out = String::new();
            record_line(&Record::from_rdata(name.clone(), 300, data), &mut out);
            out
        };
        assert_eq!(
            line(RData::TXT(TXT::new(vec![
                "a \"b\" \\ \u{7f}".into(),
                "c".into()
            ]))),
            r#"z.example. 300 IN TXT "a \"b\" \\ \127" "c""#
        );
        // A raw value no issuer parser would make: quotes inside.
        let mut caa = CAA::new_issue(true, None, Vec::new());
        caa.value = b"ca.example; x=\"y\"".to_vec();
        assert_eq!(
            line(RData::CAA(caa)),
            r#"z.example. 300 IN CAA 128 issue "ca.example; x=\"y\"""#
        );
    }

    #[test]
    fn failures_move_the_answers_as_gslb_moves_its_own() {
        let z = zone();
        let text = zone_text(&z, &view(true, true, false));
        // failover to eu, degraded TTL.
        assert_eq!(lines(&text, "fo"), ["fo.z.example. 5 IN A 192.0.2.1"]);
        assert_eq!(lines(&text, "all").len(), 3, "{text}");
        // weighted: eu, the one weighted region left (not the standby).
        let wt = lines(&text, "wt");
        assert_eq!(wt.len(), 1, "{text}");
        assert!(wt[0].ends_with(" IN A 192.0.2.1"), "{text}");
        // Every weighted region down: the standby answers.
        let text = zone_text(&z, &view(true, false, false));
        let wt = lines(&text, "wt");
        assert_eq!(wt.len(), 2, "{text}");
        assert!(wt.iter().all(|l| l.contains("198.51.100.")), "{text}");
        // Every region down: nodata leaves the name out; fail-open answers
        // as if all were up.
        let text = zone_text(&z, &view(false, false, false));
        assert_eq!(lines(&text, "closed"), Vec::<String>::new());
        assert_eq!(lines(&text, "fo").len(), 2, "{text}");
        assert!(lines(&text, "fo")[0].contains("203.0.113.1"), "{text}");
    }
}
