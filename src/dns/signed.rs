//! Signed answers (issue 20), for a zone with `[dnssec]` and a query with
//! the DO bit: every RRset of the answer and authority sections gets its
//! RRSIGs (`dnssec::sign`, from its cache), except the NS set of a
//! referral, which the child signs.
//!
//! Denial of existence is compact (RFC 9824): a name that does not exist
//! gets NOERROR with one NSEC at the query name whose type bitmap holds
//! RRSIG, NSEC and NXNAME; a name without the type asked for gets the same
//! NSEC listing the types the name has. Its next name is the query name's
//! immediate successor (`\000.name`), so it covers nothing but the name
//! itself: each denial is made and signed for the name asked, no zone walk
//! is possible, and health-dependent names need no chain. A client that
//! sets the Compact Answers OK flag gets NXDOMAIN back (RFC 9824 §4), with
//! the same NSEC. A referral
//! without DS records gets the NSEC proving there are none at the cut.

use hickory_proto::dnssec::rdata::{DNSSECRData, NSEC};
use hickory_proto::op::ResponseCode;
use std::net::IpAddr;

use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

use crate::dnssec::sign::ZoneSigner;
use crate::model::Zone;

/// The NXNAME meta-type (RFC 9824 §3.1): in the bitmap of the NSEC of a
/// name that does not exist.
pub const NXNAME: RecordType = RecordType::Unknown(128);

/// The Compact Answers OK flag (RFC 9824 §4): bit 1 of the EDNS header
/// flags, after DO. A client that sets it gets NXDOMAIN back.
pub const CO_FLAG: u16 = 0x4000;

/// Sign the sections of an answer from `zone` to (`qname`, `qtype`):
/// compact denial for a negative answer (NXDOMAIN becomes NOERROR unless
/// the client set `compact_ok`), a DS denial for a referral, RRSIGs after
/// each RRset.
#[allow(clippy::too_many_arguments)]
pub(super) fn sign_sections(
    zone: &Zone,
    signer: &ZoneSigner,
    qname: &Name,
    qtype: RecordType,
    rcode: &mut ResponseCode,
    aa: bool,
    answers: &mut Vec<Record>,
    authority: &mut Vec<Record>,
    compact_ok: bool,
    now: u64,
) {
    if *rcode != ResponseCode::NoError && *rcode != ResponseCode::NXDomain {
        return;
    }
    let referral = !aa && authority.iter().any(|r| r.record_type() == RecordType::NS);
    // The name the answer ends at: the query name, or the last target of
    // a CNAME chain inside the zone (`alias CNAME static`, asked AAAA: the
    // denial is of static's AAAA).
    let mut last = qname.clone();
    if qtype != RecordType::CNAME {
        // At most one step per record: a chain that loops (a -> b -> a,
        // cut by the engine) ends here too.
        for _ in 0..answers.len() {
            let Some(target) = answers.iter().find_map(|r| match &r.data {
                RData::CNAME(c) if r.name == last => Some(c.0.clone()),
                _ => None,
            }) else {
                break;
            };
            last = target;
        }
    }
    let negative = authority.iter().any(|r| r.record_type() == RecordType::SOA)
        && !answers
            .iter()
            .any(|r| r.record_type() == qtype && r.name == last);
    if negative {
        let types: Vec<RecordType> = if *rcode == ResponseCode::NXDomain {
            vec![NXNAME]
        } else {
            types_at(zone, &last)
                .into_iter()
                .filter(|t| *t != qtype)
                .collect()
        };
        authority.push(denial(&last, types, zone.negative_ttl));
        if !compact_ok {
            *rcode = ResponseCode::NoError;
        }
    }
    if referral && !authority.iter().any(|r| r.record_type() == RecordType::DS) {
        let cut = authority
            .iter()
            .find(|r| r.record_type() == RecordType::NS)
            .map(|r| r.name.clone());
        if let Some(cut) = cut {
            // The child's DS set, signed, when the zone file has one (RFC
            // 4035 §3.1.4.1); else the proof that there is none.
            let ds: Vec<Record> = zone
                .nodes
                .get(&LowerName::new(&cut))
                .and_then(|node| zone.rrset(node, RecordType::DS))
                .map(|set| set.records(&cut).collect())
                .unwrap_or_default();
            if ds.is_empty() {
                authority.push(denial(&cut, vec![RecordType::NS], zone.negative_ttl));
            } else {
                authority.extend(ds);
            }
        }
    }
    *answers = with_rrsigs(answers, signer, now, |_| true);
    *authority = with_rrsigs(authority, signer, now, |r| {
        !(referral && r.record_type() == RecordType::NS)
    });
}

/// Sign ahead, for the window `at` falls in, every RRset `zone` can
/// answer that is known before a query asks: first, for each service,
/// each region's answer (its endpoints of each family, or its CNAME) at
/// the service's TTL and degraded TTL, and all-healthy's answer with
/// every region up (what a failover needs at once); then each static
/// RRset that is served (not glue below a delegation, not a delegation's
/// NS set, which the child signs) and the SOA with the negative TTL it has
/// in denials. What depends on the query (a wildcard's name, the NSEC of
/// a denial) or on which endpoints are down (a partial region, all-healthy
/// with some regions down) is signed on first use. Signs at most
/// `budget` RRsets (counted down), so a huge zone cannot fill the
/// signature cache past what queries need. Returns the RRsets signed now
/// (those cached already cost a lookup).
pub fn presign(zone: &Zone, signer: &ZoneSigner, at: u64, budget: &mut usize) -> usize {
    use crate::model::{Policy, RegionTarget, WhenAllDown};
    use hickory_proto::rr::rdata::{A, AAAA, CNAME};
    let mut made = 0usize;
    let mut sign = |records: Vec<Record>| {
        if *budget > 0 && !records.is_empty() {
            *budget -= 1;
            made += usize::from(signer.sign_ahead(&records, at));
        }
    };
    for svc in &zone.services {
        if svc.name.is_wildcard() {
            continue;
        }
        let last = match &svc.when_all_down {
            WhenAllDown::LastResort(r) => Some(r),
            _ => None,
        };
        let mut ttls = vec![svc.ttl, svc.degraded_ttl];
        ttls.dedup();
        for ttl in ttls {
            let record = |a: &IpAddr| {
                let data = match a {
                    IpAddr::V4(v4) => RData::A(A(*v4)),
                    IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
                };
                Record::from_rdata(svc.name.clone(), ttl, data)
            };
            // All-healthy's answer with every region up: the service's
            // regions, not the last resort.
            let mut every: [Vec<Record>; 2] = [Vec::new(), Vec::new()];
            let listed = svc.regions.len();
            for (i, region) in svc
                .regions
                .iter()
                .map(|r| &r.region)
                .chain(last)
                .enumerate()
            {
                match &region.target {
                    RegionTarget::Alias(target) => sign(vec![Record::from_rdata(
                        svc.name.clone(),
                        ttl,
                        RData::CNAME(CNAME(target.clone())),
                    )]),
                    RegionTarget::Endpoints(eps) => {
                        for (v6, all) in every.iter_mut().enumerate() {
                            let set: Vec<Record> = eps
                                .iter()
                                .filter(|a| a.is_ipv6() == (v6 == 1))
                                .map(record)
                                .collect();
                            if i < listed {
                                all.extend(set.iter().cloned());
                            }
                            if set.len() <= svc.max_records {
                                sign(set);
                            }
                        }
                    }
                }
            }
            if matches!(svc.policy, Policy::AllHealthy) {
                for all in every {
                    if all.len() <= svc.max_records {
                        sign(all);
                    }
                }
            }
        }
    }
    for (name, node) in &zone.nodes {
        if below_cut(zone, name) {
            continue; // glue: served unsigned in referrals
        }
        let owner = Name::from(name.clone());
        for set in zone.rrsets(node) {
            // A delegation's NS set is the child's to sign.
            if !(node.cut && set.rtype == RecordType::NS) {
                sign(set.records(&owner).collect());
            }
        }
    }
    let mut soa = zone.soa.clone();
    soa.ttl = zone.negative_ttl;
    sign(vec![soa]);
    made
}

/// Whether `name` is strictly below a delegation of `zone`.
fn below_cut(zone: &Zone, name: &LowerName) -> bool {
    let mut n = name.base_name();
    while zone.apex.zone_of(&n) && n != zone.apex {
        if zone.nodes.get(&n).is_some_and(|node| node.cut) {
            return true;
        }
        n = n.base_name();
    }
    false
}

/// Sign ahead for every signed zone of `zones` (a load, a reload, a key
/// event), for the current window and, when the next begins within
/// [`LOOKAHEAD`], for that one too. A zone whose old version (in `old`,
/// the zones served until now) signs with the same keys takes its
/// signatures first. Logs what it did when it made any.
pub fn sign_ahead_all(zones: &[std::sync::Arc<Zone>], old: &[std::sync::Arc<Zone>]) {
    let started = std::time::Instant::now();
    let now = crate::reload::unix_now().max(0) as u64;
    let mut made = 0;
    for zone in zones {
        let Some(signer) = &zone.signer else { continue };
        if let Some(previous) = old
            .iter()
            .filter(|o| o.apex == zone.apex)
            .find_map(|o| o.signer.as_ref())
        {
            signer.adopt(previous, now);
        }
        // Half the signature cache, for this window and the next together:
        // the rest is for what only queries can ask for.
        let mut budget = crate::dnssec::sign::CACHE_ENTRIES / 2;
        let next = signer.next_window_start(now);
        let ahead = next - now <= LOOKAHEAD.as_secs();
        if ahead {
            budget /= 2;
        }
        let per_window = budget;
        made += presign(zone, signer, now, &mut budget);
        if ahead {
            let mut budget = per_window;
            made += presign(zone, signer, next, &mut budget);
        }
    }
    if made > 0 {
        tracing::info!(
            rrsets = made,
            took_ms = started.elapsed().as_millis() as u64,
            "DNSSEC: signed ahead of the first queries"
        );
    }
}

/// How long before a validity window begins its signatures are made.
pub const LOOKAHEAD: std::time::Duration = std::time::Duration::from_secs(600);

/// Keep the signatures of the next validity window made before it begins
/// (checked every minute): no query waits on a signature when the window
/// moves on. Returns at `shutdown`.
pub async fn keep_ahead(
    engine: std::sync::Arc<super::engine::Engine>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
            () = shutdown.cancelled() => return,
        }
        let zones: Vec<std::sync::Arc<Zone>> = engine
            .snapshot()
            .zones()
            .filter(|z| z.zone.signer.is_some())
            .map(|z| z.zone.clone())
            .collect();
        if zones.is_empty() {
            continue;
        }
        let _ = tokio::task::spawn_blocking(move || sign_ahead_all(&zones, &[])).await;
    }
}

/// The NSEC of compact denial at `owner`: `types` and RRSIG and NSEC.
fn denial(owner: &Name, mut types: Vec<RecordType>, ttl: u32) -> Record {
    types.extend([RecordType::RRSIG, RecordType::NSEC]);
    types.sort_by_key(|t| u16::from(*t));
    types.dedup();
    // The immediate successor of `owner` in canonical order; `owner` itself
    // when it is too long to have one (the NSEC then covers nothing).
    let next = Name::from_labels(std::iter::once(&[0u8][..]).chain(owner.iter()))
        .map(|mut n| {
            n.set_fqdn(true);
            n
        })
        .unwrap_or_else(|_| owner.clone());
    Record::from_rdata(
        owner.clone(),
        ttl,
        RData::DNSSEC(DNSSECRData::NSEC(NSEC::new(next, types))),
    )
}

/// The types at `name` in `zone`: its static RRsets, and A and AAAA for a
/// service (which of them a service has depends on health; the one asked
/// for is left out by the caller, which is all a denial needs).
fn types_at(zone: &Zone, name: &Name) -> Vec<RecordType> {
    let Some(node) = zone.nodes.get(&LowerName::new(name)) else {
        return Vec::new();
    };
    let mut types: Vec<RecordType> = zone.rrsets(node).map(|s| s.rtype).collect();
    if node.service.is_some() {
        types.extend([RecordType::A, RecordType::AAAA]);
    }
    types
}

/// `records` with the RRSIGs of each RRset (consecutive records of one
/// owner and type) after it, for the RRsets `sign` picks.
fn with_rrsigs(
    records: &[Record],
    signer: &ZoneSigner,
    now: u64,
    sign: impl Fn(&Record) -> bool,
) -> Vec<Record> {
    let mut out = Vec::with_capacity(records.len() * 2);
    let mut i = 0;
    while i < records.len() {
        let first = &records[i];
        let mut j = i + 1;
        while j < records.len()
            && records[j].record_type() == first.record_type()
            && records[j].name == first.name
        {
            j += 1;
        }
        out.extend_from_slice(&records[i..j]);
        if first.record_type() != RecordType::RRSIG && sign(first) {
            out.extend(signer.rrsigs(&records[i..j], now).iter().cloned());
        }
        i = j;
    }
    out
}
