//! `type = "dns"` checks (issue 23 item 4) against real DNS servers on
//! loopback: gslb itself answering (NOERROR with the record, NXDOMAIN,
//! REFUSED, a truncated answer), a socket that never answers, a closed port
//! and a server that first sends a reply to another query; and a whole
//! failover driven by a DNS check.

use std::net::SocketAddr;
use std::time::Duration;

use gslb::health::ProbeOutcome;
use gslb::health::probe::ProbeResult;
use gslb::model::{Check, CheckKind, DnsCheck};
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, TXT};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::net::UdpSocket;

use crate::support::*;

/// A DNS check of `name`/`qtype` on `port`, expecting `answer` if given.
fn dns_check(port: u16, name: &str, qtype: RecordType, answer: Option<RData>) -> Check {
    let kind = CheckKind::Dns(Box::new(DnsCheck {
        name: Name::from_ascii(name).unwrap(),
        qtype,
        rcode: ResponseCode::NoError,
        expect_answer: answer,
        recursion_desired: false,
    }));
    quick_check(kind, port, Duration::from_millis(500))
}

async fn probe(check: Check) -> ProbeResult {
    probe_check(check).await
}

fn a(addr: &str) -> Option<RData> {
    Some(RData::A(A(addr.parse().unwrap())))
}

/// 600 bytes of TXT: more than a UDP answer without EDNS may carry.
fn long_txt() -> String {
    "0123456789".repeat(60)
}

/// gslb serving `www` (192.0.2.1) and a long TXT at `big`.
async fn server() -> TestServer {
    let zone = format!(
        "{ZONE}\n[[record]]\nname = \"www\"\ntype = \"A\"\nvalue = \"192.0.2.1\"\n\n[[record]]\nname = \"big\"\ntype = \"TXT\"\nvalue = \"{}\"\n",
        long_txt()
    );
    TestServer::start(&[("z.toml", &zone)]).await
}

#[tokio::test]
async fn the_rcode_and_the_answer_decide() {
    let ts = server().await;
    let port = ts.dns.port();
    let www = "www.gslb.example.com.";
    assert_outcome(
        &probe(dns_check(port, www, RecordType::A, None)).await,
        ProbeOutcome::Success,
        "ok (NOERROR)",
    );
    assert_outcome(
        &probe(dns_check(
            port,
            "WWW.gslb.example.com",
            RecordType::A,
            a("192.0.2.1"),
        ))
        .await,
        ProbeOutcome::Success,
        "ok (NOERROR, 192.0.2.1)",
    );
    assert_outcome(
        &probe(dns_check(port, www, RecordType::A, a("192.0.2.2"))).await,
        ProbeOutcome::Body,
        "answer 192.0.2.1 (expected 192.0.2.2)",
    );
    assert_outcome(
        &probe(dns_check(port, www, RecordType::AAAA, None)).await,
        ProbeOutcome::Success,
        "ok (NOERROR)",
    );
    assert_outcome(
        &probe(dns_check(
            port,
            "nosuch.gslb.example.com.",
            RecordType::A,
            None,
        ))
        .await,
        ProbeOutcome::Status,
        "rcode NXDOMAIN (expected NOERROR)",
    );
    assert_outcome(
        &probe(dns_check(port, "example.org.", RecordType::A, None)).await,
        ProbeOutcome::Status,
        "rcode REFUSED (expected NOERROR)",
    );
    // Expecting NXDOMAIN: a name that must not exist.
    let mut gone = dns_check(port, "nosuch.gslb.example.com.", RecordType::A, None);
    if let CheckKind::Dns(d) = &mut gone.kind {
        d.rcode = ResponseCode::NXDomain;
    }
    assert_outcome(&probe(gone).await, ProbeOutcome::Success, "ok (NXDOMAIN)");
}

#[tokio::test]
async fn a_truncated_answer_is_asked_again_over_tcp() {
    let ts = server().await;
    let txt = RData::TXT(TXT::new(vec![
        long_txt()[..255].to_string(),
        long_txt()[255..510].to_string(),
        long_txt()[510..].to_string(),
    ]));
    // Over UDP without EDNS gslb answers TC with no records: the record is
    // only there if the probe asked again over TCP.
    let r = probe(dns_check(
        ts.dns.port(),
        "big.gslb.example.com.",
        RecordType::TXT,
        Some(txt),
    ))
    .await;
    assert_eq!(r.outcome, ProbeOutcome::Success, "{r:?}");
}

#[tokio::test]
async fn silent_closed_and_confused_servers_fail_as_such() {
    // Bound, never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let r = probe(dns_check(
        silent.local_addr().unwrap().port(),
        "www.example.",
        RecordType::A,
        None,
    ))
    .await;
    assert_outcome(&r, ProbeOutcome::Timeout, "timeout after 500ms");

    // Nothing bound: the kernel's port unreachable reads as refused.
    let closed = {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.local_addr().unwrap().port()
    };
    let r = probe(dns_check(closed, "www.example.", RecordType::A, None)).await;
    assert_eq!(r.outcome, ProbeOutcome::Refused, "{r:?}");

    // A server that first sends a reply with another ID and one to another
    // question, then SERVFAIL to the real one: only the last counts.
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = sock.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        let (n, from): (usize, SocketAddr) = sock.recv_from(&mut buf).await.unwrap();
        let q = Message::from_vec(&buf[..n]).unwrap();
        let reply = |id: u16, name: &str, rcode: ResponseCode| {
            let mut m = Message::new(id, MessageType::Response, OpCode::Query);
            m.metadata.response_code = rcode;
            m.add_query(hickory_proto::op::Query::query(
                Name::from_ascii(name).unwrap(),
                RecordType::A,
            ));
            m.to_vec().unwrap()
        };
        let id = q.metadata.id;
        sock.send_to(
            &reply(id.wrapping_add(1), "www.example.", ResponseCode::NoError),
            from,
        )
        .await
        .unwrap();
        sock.send_to(&reply(id, "other.example.", ResponseCode::NoError), from)
            .await
            .unwrap();
        sock.send_to(b"\x00", from).await.unwrap();
        sock.send_to(&reply(id, "www.example.", ResponseCode::ServFail), from)
            .await
            .unwrap();
    });
    let r = probe(dns_check(port, "www.example.", RecordType::A, None)).await;
    assert_outcome(
        &r,
        ProbeOutcome::Status,
        "rcode SERVFAIL (expected NOERROR)",
    );
}

/// A region checked by asking a real DNS server: when the server stops
/// answering the name, the service fails over, and it comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_checked_by_dns_fails_over_and_back() {
    let backend = server().await;
    let zone = failover_zone(&format!(
        "type = \"dns\"
port = {}
query-name = \"www.gslb.example.com\"
expect-answer = \"192.0.2.1\"
interval = \"100ms\"
timeout = \"80ms\"
fall = 1
rise = 1",
        backend.dns.port()
    ));
    let ts = TestServer::start(&[("z.toml", &zone)]).await;
    wait_for_api(ts.dns, "127.0.0.1", "primary answered").await;
    // The backend now answers 192.0.2.9: not what the check expects.
    let changed = std::fs::read_to_string(backend.zone_path("z.toml"))
        .unwrap()
        .replace("192.0.2.1", "192.0.2.9");
    std::fs::write(backend.zone_path("z.toml"), &changed).unwrap();
    backend.server.reload().await.expect("reload");
    wait_for_api(ts.dns, "127.0.0.2", "failed over").await;
    std::fs::write(
        backend.zone_path("z.toml"),
        changed.replace("192.0.2.9", "192.0.2.1"),
    )
    .unwrap();
    backend.server.reload().await.expect("reload");
    wait_for_api(ts.dns, "127.0.0.1", "back on the primary").await;
}
