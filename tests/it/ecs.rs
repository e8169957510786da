//! EDNS Client Subnet (RFC 7871) on the wire: echoed with SCOPE 0 (no
//! answer depends on the client's location yet), never added to a response
//! whose query had none, malformed options answered FORMERR, and ignored by
//! a zone with `ecs = false`. Over UDP and TCP, and through the answer
//! cache.

use std::net::IpAddr;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};

use crate::support::*;

const NAME: &str = "mail.gslb.example.com.";

fn with_option(option: EdnsOption) -> Message {
    let mut m = request(NAME, RecordType::A, true);
    m.edns.as_mut().expect("EDNS").options_mut().insert(option);
    m
}

fn subnet(addr: &str, source: u8) -> Message {
    with_option(EdnsOption::Subnet(ClientSubnet::new(
        addr.parse().unwrap(),
        source,
        0,
    )))
}

fn ecs_of(m: &Message) -> Option<ClientSubnet> {
    match m.edns.as_ref()?.option(EdnsCode::Subnet)? {
        EdnsOption::Subnet(s) => Some(*s),
        _ => None,
    }
}

#[tokio::test]
async fn client_subnet_is_echoed_with_scope_zero_over_udp_and_tcp() {
    let ts = TestServer::start(&[("z.toml", ZONE)]).await;
    for (addr, source) in [
        ("198.51.100.0", 24),
        ("2001:db8:0:100::", 56),
        ("0.0.0.0", 0),
    ] {
        let q = subnet(addr, source);
        for r in [udp(ts.dns, &q).await, tcp(ts.dns, &q).await] {
            let r = r.expect("an answer");
            assert_eq!(r.metadata.response_code, ResponseCode::NoError);
            assert!(!r.answers.is_empty());
            let ecs = ecs_of(&r).expect("ECS echoed");
            assert_eq!(ecs.addr(), addr.parse::<IpAddr>().unwrap());
            assert_eq!((ecs.source_prefix(), ecs.scope_prefix()), (source, 0));
        }
    }
    // No ECS asked, none given: also after an ECS query of the same name
    // (the cache holds no echo), and an ECS query after a plain one still
    // gets its echo.
    for _ in 0..2 {
        let plain = udp(ts.dns, &request(NAME, RecordType::A, true))
            .await
            .unwrap();
        assert!(ecs_of(&plain).is_none(), "{plain}");
        let ecs = udp(ts.dns, &subnet("192.0.2.0", 24)).await.unwrap();
        assert!(ecs_of(&ecs).is_some(), "{ecs}");
    }
}

#[tokio::test]
async fn malformed_client_subnets_get_formerr() {
    let ts = TestServer::start(&[("z.toml", ZONE)]).await;
    let raw = |family: u16, source: u8, addr: &[u8]| {
        let mut d = family.to_be_bytes().to_vec();
        d.extend_from_slice(&[source, 0]);
        d.extend_from_slice(addr);
        with_option(EdnsOption::Unknown(8, d))
    };
    let cases = [
        ("family 3", raw(3, 24, &[198, 51, 100])),
        ("IPv4 /33", raw(1, 33, &[198, 51, 100, 0, 0])),
        ("IPv6 /129", raw(2, 129, &[0; 17])),
        (
            "address longer than /24 needs",
            raw(1, 24, &[198, 51, 100, 1]),
        ),
        ("bits past /20", subnet("198.51.97.0", 20)),
    ];
    for (what, q) in cases {
        let bytes = q.to_vec().unwrap();
        let r = udp_raw(ts.dns, &bytes, Duration::from_secs(2))
            .await
            .unwrap_or_else(|| panic!("{what}: no answer"));
        let r = Message::from_vec(&r).unwrap();
        assert_eq!(r.metadata.response_code, ResponseCode::FormErr, "{what}");
        assert_eq!(r.metadata.id, q.metadata.id, "{what}");
        // Issue 19 item 7. Fails on the code before it: the FORMERR went
        // out without an OPT although the request had one (RFC 6891 §7,
        // BIND and Knot include it).
        let opt = r.edns.as_ref().unwrap_or_else(|| panic!("{what}: no OPT"));
        assert_eq!(opt.version(), 0, "{what}");
        assert!(opt.max_payload() >= 512, "{what}");
    }
}

#[tokio::test]
async fn a_zone_with_ecs_off_ignores_the_option() {
    let zone = ZONE.replace("negative-ttl = 60\n", "negative-ttl = 60\necs = false\n");
    assert_ne!(zone, ZONE);
    let ts = TestServer::start(&[("z.toml", &zone)]).await;
    let r = udp(ts.dns, &subnet("198.51.100.0", 24)).await.unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(!r.answers.is_empty());
    assert!(ecs_of(&r).is_none(), "{r}");
}
