//! The authoritative server answers the way NSD and Knot do: flags, negative
//! answers, CNAMEs, referrals, errors, EDNS, truncation, TCP, ANY, case.

use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::support::*;

async fn server() -> TestServer {
    TestServer::start(&[("gslb.example.com.toml", ZONE)]).await
}

fn soa_ttl_in_authority(m: &Message) -> u32 {
    assert_eq!(m.authorities.len(), 1, "one SOA in authority: {m}");
    let soa = &m.authorities[0];
    assert_eq!(soa.record_type(), RecordType::SOA);
    assert_eq!(soa.name.to_ascii(), "gslb.example.com.");
    soa.ttl
}

#[tokio::test]
async fn authoritative_answer_sets_aa_copies_rd_never_ra() {
    let s = server().await;
    let m = s.query("static.gslb.example.com.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    assert!(m.metadata.recursion_desired, "RD copied");
    assert!(!m.metadata.recursion_available, "RA never set");
    assert_eq!(m.metadata.message_type, MessageType::Response);
    assert_eq!(answers(&m), ["static.gslb.example.com. A 192.0.2.10"]);
    assert_eq!(m.answers[0].ttl, 300);

    let mut req = request("static.gslb.example.com.", RecordType::AAAA, true);
    req.metadata.recursion_desired = false;
    let m = udp(s.dns, &req).await.expect("answer");
    assert!(!m.metadata.recursion_desired, "RD clear copied");
    assert!(!m.metadata.recursion_available);
    assert_eq!(answers(&m), ["static.gslb.example.com. AAAA 2001:db8::10"]);
}

#[tokio::test]
async fn nxdomain_and_nodata_carry_soa_with_negative_ttl() {
    let s = server().await;
    let m = s.query("nope.gslb.example.com.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(m.metadata.authoritative);
    assert!(m.answers.is_empty());
    // min(SOA TTL 300, minimum 60)
    assert_eq!(soa_ttl_in_authority(&m), 60);
    let RData::SOA(soa) = &m.authorities[0].data else {
        panic!("SOA")
    };
    assert_eq!(soa.serial, 2024010101);
    assert_eq!(soa.minimum, 60);
    assert_eq!(soa.mname.to_ascii(), "ns1.gslb.example.com.");
    assert_eq!(soa.rname.to_ascii(), "hostmaster.example.com.");

    let m = s.query("static.gslb.example.com.", RecordType::MX).await;
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NoError,
        "NODATA is NOERROR"
    );
    assert!(m.metadata.authoritative);
    assert!(m.answers.is_empty());
    assert_eq!(soa_ttl_in_authority(&m), 60);

    // An empty non-terminal exists: NODATA, not NXDOMAIN.
    let m = s.query("_tcp.gslb.example.com.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(soa_ttl_in_authority(&m), 60);
}

#[tokio::test]
async fn soa_and_ns_at_apex() {
    let s = server().await;
    let m = s.query("gslb.example.com.", RecordType::SOA).await;
    assert_eq!(m.answers.len(), 1);
    assert_eq!(
        m.answers[0].ttl, 300,
        "the SOA's own TTL when asked for directly"
    );
    let m = s.query("gslb.example.com.", RecordType::NS).await;
    let mut ns = answers(&m);
    ns.sort();
    assert_eq!(
        ns,
        [
            "gslb.example.com. NS ns1.gslb.example.com.",
            "gslb.example.com. NS ns2.gslb.example.com."
        ]
    );
    let mut glue: Vec<String> = m
        .additionals
        .iter()
        .map(|r| format!("{} {}", r.name, r.data))
        .collect();
    glue.sort();
    assert_eq!(
        glue,
        [
            "ns1.gslb.example.com. 198.51.100.53",
            "ns2.gslb.example.com. 203.0.113.53"
        ]
    );
}

#[tokio::test]
async fn cname_is_chased_inside_the_zone() {
    let s = server().await;
    let m = s.query("docs.gslb.example.com.", RecordType::A).await;
    assert!(m.metadata.authoritative);
    assert_eq!(
        answers(&m),
        [
            "docs.gslb.example.com. CNAME static.gslb.example.com.",
            "static.gslb.example.com. A 192.0.2.10"
        ]
    );
    // Two links.
    let m = s.query("chain1.gslb.example.com.", RecordType::AAAA).await;
    assert_eq!(
        answers(&m),
        [
            "chain1.gslb.example.com. CNAME docs.gslb.example.com.",
            "docs.gslb.example.com. CNAME static.gslb.example.com.",
            "static.gslb.example.com. AAAA 2001:db8::10"
        ]
    );
    // Asking for the CNAME itself does not chase.
    let m = s.query("docs.gslb.example.com.", RecordType::CNAME).await;
    assert_eq!(
        answers(&m),
        ["docs.gslb.example.com. CNAME static.gslb.example.com."]
    );
    // Out of zone: the resolver follows it.
    let m = s.query("away.gslb.example.com.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        answers(&m),
        ["away.gslb.example.com. CNAME www.example.net."]
    );
    assert!(m.authorities.is_empty());
    // Target missing: NXDOMAIN for the last name in the chain (RFC 6604), CNAME kept.
    let m = s.query("dangling.gslb.example.com.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(
        answers(&m),
        ["dangling.gslb.example.com. CNAME nothing-here.gslb.example.com."]
    );
    assert_eq!(soa_ttl_in_authority(&m), 60);
    // Target exists without the type: NODATA with the CNAME.
    let m = s.query("docs.gslb.example.com.", RecordType::MX).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        answers(&m),
        ["docs.gslb.example.com. CNAME static.gslb.example.com."]
    );
    assert_eq!(soa_ttl_in_authority(&m), 60);
}

#[tokio::test]
async fn cname_loop_terminates() {
    let s = server().await;
    let m = s.query("loop1.gslb.example.com.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        answers(&m),
        [
            "loop1.gslb.example.com. CNAME loop2.gslb.example.com.",
            "loop2.gslb.example.com. CNAME loop1.gslb.example.com."
        ]
    );
    // The server is still fine.
    let m = s.query("static.gslb.example.com.", RecordType::A).await;
    assert_eq!(addrs(&m), ["192.0.2.10"]);
}

#[tokio::test]
async fn names_below_a_delegation_get_a_referral() {
    let s = server().await;
    for (name, qtype) in [
        ("host.lab.gslb.example.com.", RecordType::A),
        ("lab.gslb.example.com.", RecordType::NS),
        ("lab.gslb.example.com.", RecordType::A),
    ] {
        let m = s.query(name, qtype).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
        assert!(!m.metadata.authoritative, "AA clear on a referral: {name}");
        assert!(m.answers.is_empty());
        let mut ns: Vec<String> = m
            .authorities
            .iter()
            .map(|r| format!("{} {} {}", r.name, r.record_type(), r.data))
            .collect();
        ns.sort();
        assert_eq!(
            ns,
            [
                "lab.gslb.example.com. NS ns.elsewhere.example.net.",
                "lab.gslb.example.com. NS ns.lab.gslb.example.com."
            ]
        );
        let glue: Vec<String> = m
            .additionals
            .iter()
            .map(|r| format!("{} {}", r.name, r.data))
            .collect();
        assert_eq!(
            glue,
            ["ns.lab.gslb.example.com. 192.0.2.53"],
            "in-zone glue only"
        );
    }
    // DS lives on the parent side: an authoritative NODATA (the zone is unsigned).
    let m = s.query("lab.gslb.example.com.", RecordType::DS).await;
    assert!(m.metadata.authoritative);
    assert!(m.answers.is_empty());
    assert_eq!(soa_ttl_in_authority(&m), 60);
    // A CNAME into the delegation: the CNAME (authoritative) plus the referral.
    let m = s.query("to-lab.gslb.example.com.", RecordType::A).await;
    assert!(m.metadata.authoritative);
    assert_eq!(
        answers(&m),
        ["to-lab.gslb.example.com. CNAME host.lab.gslb.example.com."]
    );
    assert_eq!(m.authorities.len(), 2);
}

#[tokio::test]
async fn wildcards_synthesise_the_query_name() {
    let s = server().await;
    let m = s
        .query("anything.pages.gslb.example.com.", RecordType::A)
        .await;
    assert!(m.metadata.authoritative);
    assert_eq!(
        answers(&m),
        ["anything.pages.gslb.example.com. A 192.0.2.80"]
    );
    let m = s
        .query("deep.er.pages.gslb.example.com.", RecordType::A)
        .await;
    assert_eq!(
        answers(&m),
        ["deep.er.pages.gslb.example.com. A 192.0.2.80"]
    );
    // Wildcard NODATA.
    let m = s.query("x.pages.gslb.example.com.", RecordType::AAAA).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert_eq!(soa_ttl_in_authority(&m), 60);
    // A wildcard CNAME is chased.
    let m = s.query("x.alias.gslb.example.com.", RecordType::A).await;
    assert_eq!(
        answers(&m),
        [
            "x.alias.gslb.example.com. CNAME static.gslb.example.com.",
            "static.gslb.example.com. A 192.0.2.10"
        ]
    );
    // The wildcard does not cover the existing name itself.
    let m = s.query("pages.gslb.example.com.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
}

/// `*.<apex>` is a name one label below the apex, like any other: without a
/// wildcard there it does not exist (Knot: NXDOMAIN), and it is never the apex.
#[tokio::test]
async fn the_literal_star_below_the_apex_is_not_the_apex() {
    let s = server().await;
    for rtype in [RecordType::MX, RecordType::A, RecordType::SOA] {
        let m = s.query("*.gslb.example.com.", rtype).await;
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::NXDomain,
            "{rtype}: {m}"
        );
        assert!(m.metadata.authoritative);
        assert!(m.answers.is_empty(), "{rtype}: {m}");
        assert_eq!(soa_ttl_in_authority(&m), 60);
        let m = s.query_tcp("*.gslb.example.com.", rtype).await;
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::NXDomain,
            "TCP {rtype}: {m}"
        );
        assert!(m.answers.is_empty(), "TCP {rtype}: {m}");
    }
    // The apex itself still answers.
    let m = s.query("gslb.example.com.", RecordType::MX).await;
    assert_eq!(
        answers(&m),
        ["gslb.example.com. MX 10 mail.gslb.example.com."]
    );
    // A literal `*` one level further down is below its own parent, too.
    let m = s.query("*.static.gslb.example.com.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{m}");
}

/// With a wildcard right below the apex, the literal name `*.<apex>` is the
/// wildcard's own node (RFC 4592 §2.2.1): its records, not the apex's.
#[tokio::test]
async fn a_wildcard_below_the_apex_answers_for_its_literal_name() {
    let zone = format!(
        "{ZONE}\n[[record]]\nname = \"*\"\ntype = \"TXT\"\nvalue = \"wildcard\"\n\n[[record]]\nname = \"@\"\ntype = \"TXT\"\nvalue = \"apex\"\n"
    );
    let s = TestServer::start(&[("gslb.example.com.toml", &zone)]).await;
    let m = s.query("*.gslb.example.com.", RecordType::TXT).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m}");
    assert_eq!(answers(&m), ["*.gslb.example.com. TXT wildcard"]);
    let m = s.query_tcp("*.gslb.example.com.", RecordType::TXT).await;
    assert_eq!(answers(&m), ["*.gslb.example.com. TXT wildcard"]);
    // Types the wildcard lacks: NODATA at the wildcard, not the apex's MX.
    let m = s.query("*.gslb.example.com.", RecordType::MX).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m}");
    assert!(m.answers.is_empty(), "{m}");
    // Other names are synthesised from it; the apex keeps its own.
    let m = s.query("other.gslb.example.com.", RecordType::TXT).await;
    assert_eq!(answers(&m), ["other.gslb.example.com. TXT wildcard"]);
    let m = s.query("gslb.example.com.", RecordType::TXT).await;
    assert_eq!(answers(&m), ["gslb.example.com. TXT apex"]);
}

#[tokio::test]
async fn record_types_and_additional_section() {
    let s = server().await;
    let m = s.query("gslb.example.com.", RecordType::MX).await;
    assert_eq!(
        answers(&m),
        ["gslb.example.com. MX 10 mail.gslb.example.com."]
    );
    let add: Vec<String> = m
        .additionals
        .iter()
        .map(|r| format!("{} {}", r.name, r.data))
        .collect();
    assert_eq!(
        add,
        [
            "mail.gslb.example.com. 192.0.2.25",
            "mail.gslb.example.com. 2001:db8::25"
        ]
    );
    let m = s
        .query("_sip._tcp.gslb.example.com.", RecordType::SRV)
        .await;
    assert_eq!(
        answers(&m),
        ["_sip._tcp.gslb.example.com. SRV 10 5 5060 static.gslb.example.com."]
    );
    assert_eq!(m.additionals.len(), 2, "A and AAAA of the SRV target");
    let m = s.query("gslb.example.com.", RecordType::CAA).await;
    assert_eq!(m.answers.len(), 1);
    let RData::CAA(caa) = &m.answers[0].data else {
        panic!("CAA")
    };
    assert_eq!(caa.tag, "issue");
    assert_eq!(caa.value, b"letsencrypt.org");
    let m = s
        .query("10.2.0.192.in-addr.gslb.example.com.", RecordType::PTR)
        .await;
    assert_eq!(
        answers(&m),
        ["10.2.0.192.in-addr.gslb.example.com. PTR static.gslb.example.com."]
    );
    let m = s.query("static.gslb.example.com.", RecordType::TXT).await;
    assert_eq!(answers(&m), ["static.gslb.example.com. TXT hello"]);
}

#[tokio::test]
async fn long_txt_is_split_into_255_byte_strings() {
    let long = "x".repeat(600);
    let zone = format!("{ZONE}\n[[record]]\nname = \"long\"\ntype = \"TXT\"\nvalue = \"{long}\"\n");
    let s = TestServer::start(&[("z.toml", &zone)]).await;
    let m = s.query("long.gslb.example.com.", RecordType::TXT).await;
    let RData::TXT(txt) = &m.answers[0].data else {
        panic!("TXT")
    };
    let lens: Vec<usize> = txt.txt_data.iter().map(|s| s.len()).collect();
    assert_eq!(lens, [255, 255, 90]);
    assert_eq!(txt.txt_data.concat(), long.as_bytes());
}

#[tokio::test]
async fn names_are_case_insensitive_and_the_question_case_is_echoed() {
    let s = server().await;
    let m = s.query("StAtIc.GsLb.ExAmPlE.CoM.", RecordType::A).await;
    assert_eq!(m.queries[0].name().to_ascii(), "StAtIc.GsLb.ExAmPlE.CoM.");
    assert!(m.metadata.authoritative);
    assert_eq!(addrs(&m), ["192.0.2.10"]);
    assert_eq!(
        m.answers[0].name.to_ascii(),
        "StAtIc.GsLb.ExAmPlE.CoM.",
        "owner echoes the question"
    );
}

#[tokio::test]
async fn any_gets_a_minimal_answer_over_udp_and_all_over_tcp() {
    let s = server().await;
    let m = s.query("static.gslb.example.com.", RecordType::ANY).await;
    assert!(m.metadata.authoritative);
    let types: std::collections::BTreeSet<RecordType> =
        m.answers.iter().map(|r| r.record_type()).collect();
    assert_eq!(types.len(), 1, "one RRset over UDP (RFC 8482): {m}");
    let m = s
        .query_tcp("static.gslb.example.com.", RecordType::ANY)
        .await;
    let types: std::collections::BTreeSet<RecordType> =
        m.answers.iter().map(|r| r.record_type()).collect();
    assert_eq!(types.len(), 3, "A, AAAA and TXT over TCP: {m}");
}

#[tokio::test]
async fn queries_outside_served_zones_are_refused() {
    let s = server().await;
    for name in ["example.com.", "www.example.org.", "."] {
        let m = s.query(name, RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{name}");
        assert!(!m.metadata.authoritative);
        assert!(m.answers.is_empty() && m.authorities.is_empty());
    }
    // Zone transfers are not offered.
    let m = s.query_tcp("gslb.example.com.", RecordType::AXFR).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
}

#[tokio::test]
async fn other_opcodes_get_notimp() {
    let s = server().await;
    for op in [OpCode::Notify, OpCode::Update, OpCode::Status] {
        let mut req = request("gslb.example.com.", RecordType::SOA, false);
        req.metadata.op_code = op;
        // Issue 19 item 7. Fails on the code before it: RD and CD, bits
        // that only QUERY defines, were copied into the NOTIMP.
        req.metadata.recursion_desired = true;
        req.metadata.checking_disabled = true;
        let m = udp(s.dns, &req).await.expect("answer");
        assert_eq!(m.metadata.response_code, ResponseCode::NotImp, "{op:?}");
        assert_eq!(m.metadata.op_code, op, "opcode echoed");
        assert!(!m.metadata.authoritative);
        assert!(!m.metadata.recursion_desired, "{op:?}: RD not copied");
        assert!(!m.metadata.checking_disabled, "{op:?}: CD not copied");
    }
}

#[tokio::test]
async fn malformed_packets_get_formerr_or_are_dropped_and_never_stall() {
    let s = server().await;
    // Header fine, question truncated.
    let mut bad = vec![0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    bad.extend_from_slice(&[7, b'e', b'x', b'a']);
    let resp = udp_raw(s.dns, &bad, Duration::from_secs(1))
        .await
        .expect("FORMERR reply");
    let m = Message::from_vec(&resp).expect("valid");
    assert_eq!(m.metadata.id, 0xabcd);
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    // Two questions.
    let mut two = request("static.gslb.example.com.", RecordType::A, false);
    two.add_query(two.queries[0].clone());
    let m = udp(s.dns, &two).await.expect("answer");
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    // Shorter than a header: dropped.
    assert!(
        udp_raw(s.dns, &[1, 2, 3, 4, 5], Duration::from_millis(300))
            .await
            .is_none()
    );
    // A response (QR set) is never answered.
    let mut resp = request("static.gslb.example.com.", RecordType::A, false);
    resp.metadata.message_type = MessageType::Response;
    assert!(
        udp_raw(s.dns, &resp.to_vec().unwrap(), Duration::from_millis(300))
            .await
            .is_none()
    );
    // Random garbage over UDP and TCP: the server answers or drops, and keeps serving.
    let mut seed = 0x2545F4914F6CDD1Du64;
    for i in 0..300 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 80) as usize;
        let mut pkt: Vec<u8> = (0..len)
            .map(|j| (seed >> (j % 56)) as u8 ^ j as u8)
            .collect();
        if i % 2 == 0 && pkt.len() > 3 {
            pkt[2] &= 0x7f; // make it look like a query
        }
        let _ = udp_raw(s.dns, &pkt, Duration::from_millis(20)).await;
    }
    let mut conn = TcpStream::connect(s.dns).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut conn,
        &[
            0, 20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
        ],
    )
    .await
    .unwrap();
    let mut len = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(2), conn.read_exact(&mut len))
        .await
        .expect("TCP FORMERR in time")
        .unwrap();
    let m = s.query("static.gslb.example.com.", RecordType::A).await;
    assert_eq!(addrs(&m), ["192.0.2.10"], "still serving");
}

/// A request with `pad` bytes of EDNS padding (option 12) in its OPT.
fn padded_request(name: &str, pad: usize) -> Vec<u8> {
    let mut bytes = request(name, RecordType::A, false).to_vec().unwrap();
    bytes[11] = 1; // ARCOUNT: the OPT
    bytes.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0]);
    bytes.extend_from_slice(&((4 + pad) as u16).to_be_bytes());
    bytes.extend_from_slice(&[0, 12]);
    bytes.extend_from_slice(&(pad as u16).to_be_bytes());
    bytes.resize(bytes.len() + pad, 0);
    bytes
}

fn rcode_of(resp: &[u8]) -> ResponseCode {
    Message::from_vec(resp)
        .expect("valid")
        .metadata
        .response_code
}

/// Bytes after the last section, or a datagram longer than the receive
/// buffer (4096 bytes): FORMERR, as Knot answers, never an answer to the
/// part that parsed.
#[tokio::test]
async fn trailing_bytes_and_datagrams_cut_by_the_buffer_get_formerr() {
    let s = server().await;
    let wait = Duration::from_secs(1);
    let name = "static.gslb.example.com.";
    // The same query, whole: answered. Asked twice, so that a cached answer
    // would be there for the malformed ones to hit.
    for edns in [false, true] {
        let whole = request(name, RecordType::A, edns).to_vec().unwrap();
        for _ in 0..2 {
            let resp = udp_raw(s.dns, &whole, wait).await.expect("answer");
            assert_eq!(rcode_of(&resp), ResponseCode::NoError);
        }
        for trailing in [&[0u8][..], &[0, 0, 0, 0], &[0xff; 100]] {
            let mut bad = whole.clone();
            bad.extend_from_slice(trailing);
            let resp = udp_raw(s.dns, &bad, wait).await.expect("FORMERR");
            assert_eq!(&resp[..2], &bad[..2], "ID echoed");
            assert_eq!(
                rcode_of(&resp),
                ResponseCode::FormErr,
                "EDNS {edns}, {} trailing bytes",
                trailing.len()
            );
            // Over TCP, bytes after the last section inside the frame too.
            let mut conn = TcpStream::connect(s.dns).await.unwrap();
            let mut framed = (bad.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&bad);
            tokio::io::AsyncWriteExt::write_all(&mut conn, &framed)
                .await
                .unwrap();
            let mut len = [0u8; 2];
            tokio::time::timeout(wait, conn.read_exact(&mut len))
                .await
                .expect("TCP reply in time")
                .unwrap();
            let mut resp = vec![0u8; usize::from(u16::from_be_bytes(len))];
            conn.read_exact(&mut resp).await.unwrap();
            assert_eq!(rcode_of(&resp), ResponseCode::FormErr, "TCP");
        }
    }
    // A query that exactly fills the 4096-byte buffer is answered...
    let base = padded_request(name, 0).len();
    let full = padded_request(name, 4096 - base);
    assert_eq!(full.len(), 4096);
    for _ in 0..2 {
        let resp = udp_raw(s.dns, &full, wait).await.expect("answer");
        assert_eq!(rcode_of(&resp), ResponseCode::NoError);
    }
    // ...but not when more follows: the buffer holds only its first 4096
    // bytes, which parse, and the datagram is not that message.
    let mut longer = full.clone();
    longer.extend_from_slice(&[0u8; 100]);
    let resp = udp_raw(s.dns, &longer, wait).await.expect("FORMERR");
    assert_eq!(&resp[..2], &longer[..2], "ID echoed");
    assert_eq!(rcode_of(&resp), ResponseCode::FormErr);
    // A longer one, whole and valid (its padding past the buffer): FORMERR.
    let big = padded_request(name, 6000);
    let resp = udp_raw(s.dns, &big, wait).await.expect("FORMERR");
    assert_eq!(rcode_of(&resp), ResponseCode::FormErr);
    let m = s.query(name, RecordType::A).await;
    assert_eq!(addrs(&m), ["192.0.2.10"], "still serving");
}

#[tokio::test]
async fn edns_opt_is_echoed_only_when_asked_and_unknown_versions_get_badvers() {
    let s = server().await;
    let m = s.query("static.gslb.example.com.", RecordType::A).await;
    let edns = m.edns.as_ref().expect("OPT echoed");
    assert_eq!(edns.max_payload(), 1232);
    assert_eq!(edns.version(), 0);

    let m = udp(
        s.dns,
        &request("static.gslb.example.com.", RecordType::A, false),
    )
    .await
    .unwrap();
    assert!(m.edns.is_none(), "no OPT in reply to a query without one");
    assert_eq!(addrs(&m), ["192.0.2.10"]);

    let mut req = request("static.gslb.example.com.", RecordType::A, false);
    let mut e = Edns::new();
    e.set_version(1);
    e.set_max_payload(1232);
    req.set_edns(e);
    let m = udp(s.dns, &req).await.unwrap();
    // hickory decodes extended rcode 16 as BADSIG, which shares the value with BADVERS.
    assert_eq!(u16::from(m.metadata.response_code), 16, "BADVERS");
    assert_eq!(m.edns.as_ref().expect("OPT carries BADVERS").version(), 0);
    assert!(m.answers.is_empty());
}

#[tokio::test]
async fn large_answers_are_truncated_over_udp_and_complete_over_tcp() {
    let mut zone = ZONE.to_string();
    for i in 0..12 {
        zone.push_str(&format!(
            "\n[[record]]\nname = \"big\"\ntype = \"TXT\"\nvalue = \"{i:02}{}\"\n",
            "t".repeat(120)
        ));
    }
    let s = TestServer::start(&[("z.toml", &zone)]).await;
    // No EDNS: 512 bytes.
    let m = udp(
        s.dns,
        &request("big.gslb.example.com.", RecordType::TXT, false),
    )
    .await
    .unwrap();
    assert!(m.metadata.truncation, "TC set");
    assert!(m.answers.is_empty(), "no partial RRset");
    assert_eq!(m.queries.len(), 1);
    // EDNS 1232 holds 12 x ~135 bytes? No: 1600+ bytes, still truncated.
    let m = s.query("big.gslb.example.com.", RecordType::TXT).await;
    assert!(m.metadata.truncation);
    assert!(m.edns.is_some(), "OPT kept in a truncated answer");
    // TCP: everything.
    let m = s.query_tcp("big.gslb.example.com.", RecordType::TXT).await;
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 12);
    // A small answer is never truncated.
    let m = udp(
        s.dns,
        &request("static.gslb.example.com.", RecordType::A, false),
    )
    .await
    .unwrap();
    assert!(!m.metadata.truncation);
}

#[tokio::test]
async fn tcp_serves_several_queries_per_connection_and_closes_idle_ones() {
    let s = TestServer::start_with(&[("z.toml", ZONE)], |st| {
        st.tcp_idle = Duration::from_millis(300)
    })
    .await;
    let mut conn = TcpStream::connect(s.dns).await.unwrap();
    for name in [
        "static.gslb.example.com.",
        "mail.gslb.example.com.",
        "ns1.gslb.example.com.",
    ] {
        let m = tcp_exchange(&mut conn, &request(name, RecordType::A, false))
            .await
            .expect("answer on the same connection");
        assert_eq!(m.answers.len(), 1, "{name}");
        assert!(m.metadata.authoritative);
    }
    // Now stay idle: the server closes the connection (read returns EOF).
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(3), conn.read(&mut buf))
        .await
        .expect("closed within the idle timeout");
    assert_eq!(n.unwrap_or(0), 0, "EOF");
}

#[tokio::test]
async fn version_bind_answers_in_chaos_class() {
    let s = server().await;
    let mut req = request("version.bind.", RecordType::TXT, false);
    req.queries[0].set_query_class(hickory_proto::rr::DNSClass::CH);
    let m = udp(s.dns, &req).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(answers(&m)[0].contains("gslb"));
}

#[tokio::test]
async fn repeated_queries_answered_from_the_cache_echo_id_case_and_flags() {
    let s = server().await;
    let names = [
        "static.gslb.example.com.",
        "STATIC.gslb.example.com.",
        "sTaTiC.GsLb.ExAmPlE.cOm.",
    ];
    for round in 0..30 {
        let name = names[round % names.len()];
        for edns in [true, false] {
            let mut req = request(name, RecordType::A, edns);
            req.metadata.recursion_desired = round % 2 == 0;
            req.metadata.checking_disabled = round % 3 == 0;
            let m = udp(s.dns, &req).await.expect("answer");
            assert_eq!(m.metadata.id, req.metadata.id);
            assert_eq!(
                m.metadata.recursion_desired,
                round % 2 == 0,
                "RD copied on round {round}"
            );
            assert_eq!(
                m.metadata.checking_disabled,
                round % 3 == 0,
                "CD copied on round {round}"
            );
            assert!(m.metadata.authoritative && !m.metadata.recursion_available);
            assert_eq!(m.queries[0].name().to_ascii(), name, "question case echoed");
            assert_eq!(
                m.answers[0].name.to_ascii(),
                name,
                "owner echoes the question"
            );
            assert_eq!(addrs(&m), ["192.0.2.10"]);
            assert_eq!(m.edns.is_some(), edns, "OPT only when asked");
        }
        // The same over TCP, and negative answers too.
        let m = s.query_tcp(name, RecordType::MX).await;
        assert_eq!(m.queries[0].name().to_ascii(), name);
        assert_eq!(m.authorities.len(), 1, "NODATA keeps its SOA");
        let m = s.query("NoPe.gslb.example.com.", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(m.queries[0].name().to_ascii(), "NoPe.gslb.example.com.");
    }
    // A large answer cached for a big-payload client is still truncated for a small one.
    let m = udp(s.dns, &request("gslb.example.com.", RecordType::NS, true))
        .await
        .unwrap();
    assert!(!m.metadata.truncation);
}

#[tokio::test]
async fn every_query_is_counted_whether_answered_from_the_cache_or_not() {
    let s = server().await;
    for _ in 0..5 {
        assert_eq!(
            s.query("www.example.org.", RecordType::A)
                .await
                .metadata
                .response_code,
            ResponseCode::Refused
        );
        assert_eq!(
            addrs(&s.query("static.gslb.example.com.", RecordType::A).await),
            ["192.0.2.10"]
        );
    }
    let m = s.server.metrics.render();
    let count = |zone: &str, rcode: &str| {
        m.lines()
            .find(|l| {
                l.starts_with("gslb_dns_queries_total{")
                    && l.contains(&format!("zone=\"{zone}\""))
                    && l.contains(&format!("rcode=\"{rcode}\""))
                    && l.contains("qtype=\"A\"")
                    && l.contains("proto=\"udp\"")
            })
            .and_then(|l| l.rsplit(' ').next())
            .map(|v| v.to_string())
    };
    assert_eq!(count("", "REFUSED").as_deref(), Some("5"), "{m}");
    assert_eq!(
        count("gslb.example.com", "NOERROR").as_deref(),
        Some("5"),
        "{m}"
    );
}

#[tokio::test]
async fn an_answer_cut_for_a_small_client_is_never_served_to_a_big_one() {
    // MX whose target has 40 addresses: the additional section fits 1232
    // bytes but not 512, so a 512-byte client gets it without additionals.
    let mut zone = ZONE.replace("value = \"10 mail\"", "value = \"10 big-mail\"");
    for i in 1..=40 {
        zone.push_str(&format!(
            "\n[[record]]\nname = \"big-mail\"\ntype = \"A\"\nvalue = \"192.0.2.{i}\"\n"
        ));
    }
    let s = TestServer::start(&[("z.toml", &zone)]).await;
    let ask = |payload: u16| {
        let mut req = request("gslb.example.com.", RecordType::MX, false);
        let mut e = Edns::new();
        e.set_max_payload(payload);
        req.set_edns(e);
        req
    };
    for _ in 0..3 {
        let small = udp(s.dns, &ask(512)).await.unwrap();
        assert_eq!(small.answers.len(), 1);
        assert!(
            small.additionals.is_empty(),
            "additionals dropped to fit 512 bytes"
        );
        assert!(!small.metadata.truncation, "the answer itself is whole");
        let big = udp(s.dns, &ask(1232)).await.unwrap();
        assert_eq!(
            big.additionals.len(),
            40,
            "the big client gets everything, never the cut copy"
        );
    }
}

/// A query over UDP from a socket connected to `to`, as resolvers send them:
/// the kernel drops a reply from any other address, so only an answer from
/// `to` itself comes back. Also says where an unconnected socket heard it
/// from.
async fn udp_from(to: std::net::SocketAddr, name: &str) -> (Option<Message>, std::net::SocketAddr) {
    let any: std::net::SocketAddr = if to.is_ipv4() {
        "127.0.0.1:0".parse().expect("addr")
    } else {
        "[::1]:0".parse().expect("addr")
    };
    let req = request(name, RecordType::A, true).to_vec().expect("encode");
    let mut buf = vec![0u8; 65535];
    let loose = tokio::net::UdpSocket::bind(any).await.expect("bind");
    loose.send_to(&req, to).await.expect("send");
    let (_, from) = tokio::time::timeout(Duration::from_secs(2), loose.recv_from(&mut buf))
        .await
        .expect("an answer within 2 s")
        .expect("recv");
    let connected = tokio::net::UdpSocket::bind(any).await.expect("bind");
    connected.connect(to).await.expect("connect");
    connected.send(&req).await.expect("send");
    let answer = match tokio::time::timeout(Duration::from_secs(1), connected.recv(&mut buf)).await
    {
        Ok(Ok(n)) => Some(Message::from_vec(&buf[..n]).expect("valid DNS")),
        _ => None,
    };
    (answer, from)
}

#[tokio::test]
async fn a_wildcard_listener_answers_from_the_address_asked() {
    // Listening on 0.0.0.0, asked at three loopback addresses: each answer
    // leaves from the address its query went to (without IP_PKTINFO the
    // kernel would pick 127.0.0.1 for all three, and a resolver's connected
    // socket would drop the other two).
    let s = TestServer::start_with(&[("gslb.example.com.toml", ZONE)], |st| {
        st.listen = vec!["0.0.0.0:0".parse().expect("addr")];
        st.udp_workers = 2;
    })
    .await;
    let port = s.dns.port();
    for ip in ["127.0.0.1", "127.0.0.2", "127.45.6.7"] {
        let to = std::net::SocketAddr::new(ip.parse().expect("ip"), port);
        for _ in 0..4 {
            // Two workers share the port: enough tries to meet both.
            let (answer, from) = udp_from(to, "static.gslb.example.com.").await;
            assert_eq!(from, to, "answer to a query for {to} came from {from}");
            let answer =
                answer.unwrap_or_else(|| panic!("no answer from {to} on a connected socket"));
            assert_eq!(answers(&answer), ["static.gslb.example.com. A 192.0.2.10"]);
        }
    }
    // Over TCP the connection fixes the address already.
    let to = std::net::SocketAddr::new("127.0.0.2".parse().expect("ip"), port);
    let m = tcp(
        to,
        &request("static.gslb.example.com.", RecordType::A, true),
    )
    .await
    .expect("TCP answer");
    assert_eq!(answers(&m), ["static.gslb.example.com. A 192.0.2.10"]);
}

#[test]
fn an_ipv6_wildcard_listener_answers_from_the_address_asked() {
    // The host has one IPv6 loopback address, so the test makes a network
    // namespace of its own (this thread's, and the server's threads it
    // starts) with three addresses on `lo`. Needs root, as CI has.
    std::thread::spawn(|| {
        // SAFETY: affects only this thread (and what it starts).
        assert_eq!(
            unsafe { libc::unshare(libc::CLONE_NEWNET) },
            0,
            "unshare: {}",
            std::io::Error::last_os_error()
        );
        run("ip", &["link", "set", "lo", "up"]);
        for a in ["fd00:53::1/128", "fd00:53::2/128"] {
            run("ip", &["-6", "addr", "add", a, "dev", "lo", "nodad"]);
        }
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async {
                let s = TestServer::start_with(&[("gslb.example.com.toml", ZONE)], |st| {
                    st.listen = vec!["[::]:0".parse().expect("addr")];
                    st.udp_workers = 2;
                })
                .await;
                for ip in ["::1", "fd00:53::1", "fd00:53::2"] {
                    let to = std::net::SocketAddr::new(ip.parse().expect("ip"), s.dns.port());
                    for _ in 0..4 {
                        let (answer, from) = udp_from(to, "static.gslb.example.com.").await;
                        assert_eq!(from, to, "answer to a query for {to} came from {from}");
                        let answer = answer
                            .unwrap_or_else(|| panic!("no answer from {to} on a connected socket"));
                        assert_eq!(answers(&answer), ["static.gslb.example.com. A 192.0.2.10"]);
                    }
                }
            });
    })
    .join()
    .expect("the test thread passes");
}
