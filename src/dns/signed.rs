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
    let negative =
        answers.is_empty() && authority.iter().any(|r| r.record_type() == RecordType::SOA);
    if negative {
        let types: Vec<RecordType> = if *rcode == ResponseCode::NXDomain {
            vec![NXNAME]
        } else {
            types_at(zone, qname)
                .into_iter()
                .filter(|t| *t != qtype)
                .collect()
        };
        authority.push(denial(qname, types, zone.negative_ttl));
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
            let ttl = zone.negative_ttl;
            authority.push(denial(&cut, vec![RecordType::NS], ttl));
        }
    }
    *answers = with_rrsigs(answers, signer, now, |_| true);
    *authority = with_rrsigs(authority, signer, now, |r| {
        !(referral && r.record_type() == RecordType::NS)
    });
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
