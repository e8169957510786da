//! Geo routing end to end: a real mmdb database written by
//! tests/geo/mmdb.py, clients located by their ECS subnet (UDP and TCP) or,
//! without one, by their source address (client sockets bound to
//! 127.0.0.x), answers and ECS scopes per location, failover inside a
//! location against real backends, the answer cache under many subnets,
//! and reloads that change or break the database.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, UdpSocket};

use crate::backend::{Backend, Mode};
use crate::support::*;

/// The test database: networks with country, continent and coordinates.
pub const DB_SPEC: &str = r#"{
  "192.0.2.0/24":    {"country": "US", "continent": "NA", "lat": 39.0, "lon": -77.5},
  "192.0.2.128/25":  {"country": "IN", "continent": "AS", "lat": 19.0, "lon": 72.8},
  "203.0.113.0/24":  {"country": "IN", "continent": "AS", "lat": 19.0, "lon": 72.8},
  "198.51.0.0/16":   {"country": "CA", "continent": "NA", "lat": 45.4, "lon": -75.7},
  "100.64.0.0/16":   {"continent": "SA"},
  "2001:db8:1::/48": {"country": "FR", "continent": "EU", "lat": 48.8, "lon": 2.3}
}"#;

/// Write an mmdb file from a JSON spec with tests/geo/mmdb.py.
pub fn write_mmdb(spec: &str, out: &Path) {
    let json = out.with_extension("json");
    std::fs::write(&json, spec).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/geo/mmdb.py");
    let status = std::process::Command::new("python3")
        .arg(&script)
        .arg(&json)
        .arg(out)
        .status()
        .expect("python3 runs (scripts/test installs mmdb-writer)");
    assert!(status.success(), "tests/geo/mmdb.py failed");
}

/// A zone with three regions on real backends (us 127.0.0.2, eu
/// 127.0.0.3, ap 127.0.0.4), a map with nets and the database, a geo
/// service and a nearest service.
pub fn geo_zone(us: SocketAddr, eu: SocketAddr, ap: SocketAddr) -> String {
    let mut z = String::from(
        "[zone]\nname = \"gslb.example.com.\"\nnameservers = [\"ns1.example.net.\"]\nhostmaster = \"h.example.com.\"\n\n[[record]]\nname = \"static\"\ntype = \"A\"\nvalue = \"192.0.2.99\"\n",
    );
    z.push_str(&backend_regions(&[("us", us), ("eu", eu), ("ap", ap)]));
    for (name, loc) in [
        ("us", "[39.0, -77.5]"),
        ("eu", "[50.1, 8.7]"),
        ("ap", "[19.1, 72.9]"),
    ] {
        z = z.replace(
            &format!("[region.{name}]\n"),
            &format!("[region.{name}]\nlocation = {loc}\n"),
        );
    }
    z.push_str(
        r#"
[geo.world]
database = "geo.mmdb"
nets = { "198.51.100.0/24" = "office", "127.0.0.16/28" = "office", "127.0.0.32/28" = "ap" }

[service.api]
policy = "geo"
geo = "world"
ttl = 30
degraded-ttl = 5
map = { office = ["eu", "us"], "continent:EU" = ["eu", "us"], "country:IN" = ["ap", "eu"], "*" = ["us", "eu"] }

[service.cdn]
policy = "nearest"
geo = "world"
ttl = 30
regions = ["us", "eu", "ap"]

[service.plain]
regions = ["us", "eu"]
"#,
    );
    z
}

pub const API: &str = "api.gslb.example.com.";
const CDN: &str = "cdn.gslb.example.com.";

/// Which region an answer came from (by its backend address).
fn region_of(m: &Message) -> &'static str {
    match addrs(m).as_slice() {
        [a] if a == "127.0.0.2" => "us",
        [a] if a == "127.0.0.3" => "eu",
        [a] if a == "127.0.0.4" => "ap",
        other => panic!("not one region's address: {other:?} in {m}"),
    }
}

pub fn with_subnet(name: &str, addr: &str, source: u8) -> Message {
    let mut m = request(name, RecordType::A, true);
    m.edns
        .as_mut()
        .unwrap()
        .options_mut()
        .insert(EdnsOption::Subnet(ClientSubnet::new(
            addr.parse().unwrap(),
            source,
            0,
        )));
    m
}

pub fn ecs_of(m: &Message) -> Option<ClientSubnet> {
    match m.edns.as_ref()?.option(EdnsCode::Subnet)? {
        EdnsOption::Subnet(s) => Some(*s),
        _ => None,
    }
}

/// A UDP query sent from `src` (a 127.0.0.x address).
async fn udp_from(src: &str, server: SocketAddr, m: &Message) -> Message {
    let sock = UdpSocket::bind((src.parse::<IpAddr>().unwrap(), 0))
        .await
        .unwrap();
    sock.send_to(&m.to_vec().unwrap(), server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
        .await
        .expect("UDP answer")
        .unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

/// A TCP query sent from `src`.
async fn tcp_from(src: &str, server: SocketAddr, m: &Message) -> Message {
    let s = TcpSocket::new_v4().unwrap();
    s.bind((src.parse::<IpAddr>().unwrap(), 0).into()).unwrap();
    let mut stream = s.connect(server).await.unwrap();
    let bytes = m.to_vec().unwrap();
    stream
        .write_all(&(bytes.len() as u16).to_be_bytes())
        .await
        .unwrap();
    stream.write_all(&bytes).await.unwrap();
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await.unwrap();
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

pub struct GeoSetup {
    pub ts: TestServer,
    pub _us: Backend,
    pub eu: Backend,
    pub ap: Backend,
}

pub async fn start_geo(adjust: impl FnOnce(&mut gslb::app::Settings)) -> GeoSetup {
    let (us, eu, ap) = (
        Backend::start("127.0.0.2").await,
        Backend::start("127.0.0.3").await,
        Backend::start("127.0.0.4").await,
    );
    let zone = geo_zone(us.addr, eu.addr, ap.addr);
    let ts = TestServer::start_prepared(
        &[("z.toml", &zone)],
        |dir| write_mmdb(DB_SPEC, &dir.join("geo.mmdb")),
        |s| {
            s.udp_workers = 1;
            adjust(s);
        },
    )
    .await;
    ts.wait_first_verdicts(Duration::from_secs(10)).await;
    GeoSetup {
        ts,
        _us: us,
        eu,
        ap,
    }
}

/// Each case: ECS subnet, then the region and scope (how far the answer
/// holds) of the geo service, and of the nearest service.
type Case = (&'static str, u8, (&'static str, u8), (&'static str, u8));
const CASES: &[Case] = &[
    // A nets label: the office's list. The nearest service does not use
    // the label (not a region's name): the database's Canadian /16.
    ("198.51.100.0", 24, ("eu", 24), ("us", 16)),
    // The database's US network: not in the map, so `*`. Its /24 holds an
    // Indian /25: the answer holds for the /25 only.
    ("192.0.2.0", 24, ("us", 25), ("us", 25)),
    ("192.0.2.128", 25, ("ap", 25), ("ap", 25)),
    // country:IN wins over continent; nearest: Mumbai.
    ("203.0.113.0", 24, ("ap", 24), ("ap", 24)),
    // continent:EU (France is not in the map); nearest: Frankfurt.
    ("2001:db8:1::", 56, ("eu", 48), ("eu", 48)),
    // The database's /16 holds the office /24: the geo answer for
    // 198.51.7.0 holds only as far as the client's network does not reach
    // the office (they share 17 bits). Nearest ignores the office.
    ("198.51.7.0", 24, ("us", 18), ("us", 16)),
    // A continent only, no country key, no coordinates: `*`, and the
    // nearest service's own order.
    ("100.64.1.0", 24, ("us", 16), ("us", 16)),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecs_clients_get_their_locations_answer_and_scope_over_udp_and_tcp() {
    let g = start_geo(|_| {}).await;
    let dns = g.ts.dns;
    // Twice: the second round comes from the answer cache.
    for round in 0..2 {
        for &(addr, source, geo, nearest) in CASES {
            for (name, (want, scope)) in [(API, geo), (CDN, nearest)] {
                let q = with_subnet(name, addr, source);
                for (how, r) in [
                    ("udp", udp(dns, &q).await.unwrap()),
                    ("tcp", tcp(dns, &q).await.unwrap()),
                ] {
                    let what = format!("round {round} {how} {name} from {addr}/{source}");
                    assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{what}");
                    assert_eq!(region_of(&r), want, "{what}");
                    assert_eq!(r.answers[0].ttl, 30, "{what}: the location's first choice");
                    let ecs = ecs_of(&r).unwrap_or_else(|| panic!("{what}: ECS echoed"));
                    assert_eq!(ecs.addr(), addr.parse::<IpAddr>().unwrap(), "{what}");
                    assert_eq!(ecs.source_prefix(), source, "{what}");
                    assert_eq!(ecs.scope_prefix(), scope, "{what}: scope");
                }
            }
        }
    }
    // An address the database has no record for: `*`, with the scope of
    // the database's empty network (short: the whole empty block).
    let r = udp(dns, &with_subnet(API, "8.8.8.0", 24)).await.unwrap();
    assert_eq!(region_of(&r), "us");
    let scope = ecs_of(&r).unwrap().scope_prefix();
    assert!((1..=8).contains(&scope), "scope {scope}");
    // SOURCE 0 asks for an answer that does not depend on the client: the
    // source address (127.0.0.1: nowhere) locates, and the scope is 0.
    let r = udp(dns, &with_subnet(API, "0.0.0.0", 0)).await.unwrap();
    assert_eq!(region_of(&r), "us");
    assert_eq!(ecs_of(&r).unwrap().scope_prefix(), 0);
    // Answers that do not depend on the location: scope 0.
    for (name, rtype) in [
        ("plain.gslb.example.com.", RecordType::A),
        ("static.gslb.example.com.", RecordType::A),
        ("nothing.gslb.example.com.", RecordType::A),
        (API, RecordType::TXT),
    ] {
        let mut q = with_subnet(name, "198.51.100.0", 24);
        q.queries[0].query_type = rtype;
        let r = udp(dns, &q).await.unwrap();
        assert_eq!(ecs_of(&r).unwrap().scope_prefix(), 0, "{name} {rtype}");
    }
    // No ECS asked, none given, even right after ECS answers of the name.
    let r = udp(dns, &request(API, RecordType::A, true)).await.unwrap();
    assert!(ecs_of(&r).is_none(), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_ecs_are_located_by_their_source_address() {
    let g = start_geo(|_| {}).await;
    let dns = g.ts.dns;
    // (source, geo service, nearest service)
    let cases = [
        // The office's /28: the office's list; the nearest service does not
        // use the label (not a region's name), and 127.x is not in the
        // database: its own order.
        ("127.0.0.17", "eu", "us"),
        // Labelled "ap", a region's name: nearest places the client at that
        // region; the geo map has no "ap" key: `*`.
        ("127.0.0.33", "us", "ap"),
        ("127.0.0.1", "us", "us"),
    ];
    for round in 0..2 {
        for (src, geo, nearest) in cases {
            for (name, want) in [(API, geo), (CDN, nearest)] {
                let q = request(name, RecordType::A, true);
                let what = format!("round {round} {name} from {src}");
                let r = udp_from(src, dns, &q).await;
                assert_eq!(region_of(&r), want, "udp {what}");
                assert!(ecs_of(&r).is_none(), "no ECS asked, none given: {what}");
                let r = tcp_from(src, dns, &q).await;
                assert_eq!(region_of(&r), want, "tcp {what}");
            }
        }
    }
    // With ECS, the subnet locates, not the source.
    let r = udp_from("127.0.0.17", dns, &with_subnet(API, "203.0.113.0", 24)).await;
    assert_eq!(region_of(&r), "ap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_location_fails_over_inside_its_own_list() {
    let g = start_geo(|_| {}).await;
    let dns = g.ts.dns;
    let office = with_subnet(API, "198.51.100.0", 24);
    let india = with_subnet(API, "203.0.113.0", 24);
    let india_near = with_subnet(CDN, "203.0.113.0", 24);
    assert_eq!(region_of(&udp(dns, &office).await.unwrap()), "eu");
    g.eu.set(Mode::Failing);
    wait_until(
        Duration::from_secs(10),
        "office fails over to us",
        || async { region_of(&udp(dns, &office).await.unwrap()) == "us" },
    )
    .await;
    // Degraded TTL, same scope; `*` clients were never on eu.
    let r = udp(dns, &office).await.unwrap();
    assert_eq!(r.answers[0].ttl, 5, "degraded TTL: {r}");
    assert_eq!(ecs_of(&r).unwrap().scope_prefix(), 24);
    let r = udp(dns, &with_subnet(API, "192.0.2.0", 24)).await.unwrap();
    assert_eq!((region_of(&r), r.answers[0].ttl), ("us", 30));
    // India's list is ap, eu: with ap down too, and eu down, fail-open
    // answers ap (the list's first). With only ap down: eu (down) ...
    g.ap.set(Mode::Reset);
    wait_until(Duration::from_secs(10), "ap down", || async {
        // Nearest: from Mumbai, eu is next (eu is down), then us.
        region_of(&udp(dns, &india_near).await.unwrap()) == "us"
    })
    .await;
    // India's geo list (ap, eu) is all down: fail-open, its first region.
    let r = udp(dns, &india).await.unwrap();
    assert_eq!((region_of(&r), r.answers[0].ttl), ("ap", 5));
    g.eu.set(Mode::Healthy);
    wait_until(Duration::from_secs(10), "india on eu", || async {
        region_of(&udp(dns, &india).await.unwrap()) == "eu"
    })
    .await;
    assert_eq!(region_of(&udp(dns, &india_near).await.unwrap()), "eu");
    assert_eq!(region_of(&udp(dns, &office).await.unwrap()), "eu");
    // Answers are counted per location, never per client address.
    let text = g.ts.server.metrics.render();
    for want in [
        "gslb_dns_answers_total{location=\"office\",region=\"eu\",service=\"api\",zone=\"gslb.example.com\"}",
        "gslb_dns_answers_total{location=\"office\",region=\"us\",service=\"api\",zone=\"gslb.example.com\"}",
        "gslb_dns_answers_total{location=\"country:IN\",region=\"ap\",service=\"api\",zone=\"gslb.example.com\"}",
        "gslb_dns_answers_total{location=\"ap\",region=\"us\",service=\"cdn\",zone=\"gslb.example.com\"}",
        "gslb_dns_answers_total{location=\"\",region=\"us\",service=\"plain\",zone=\"gslb.example.com\"}",
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(want))
            .unwrap_or_else(|| panic!("{want} missing from\n{text}"));
        let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n >= 1.0 || want.contains("plain"), "{line}");
    }
    assert!(!text.contains("198.51.100"), "no client address in metrics");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_subnets_share_cached_answers_by_location_and_memory_stays_bounded() {
    let g = start_geo(|_| {}).await;
    let dns = g.ts.dns;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let gauge = || {
        let text = g.ts.server.metrics.render();
        text.lines()
            .find(|l| l.starts_with("gslb_answer_cache_bytes "))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let mut peak_after_warmup = 0.0f64;
    let mut warm = 0.0;
    for i in 0..3000u32 {
        // Distinct subnets of three locations, interleaved.
        let (subnet, source, want) = match i % 3 {
            0 => (format!("203.0.113.{}", (i / 3 % 16) * 16), 28, "ap"),
            1 => (format!("2001:db8:1:{:x}::", i / 3), 64, "eu"),
            _ => (format!("100.64.{}.0", i / 3 % 256), 24, "us"),
        };
        let q = with_subnet(API, &subnet, source);
        sock.send_to(&q.to_vec().unwrap(), dns).await.unwrap();
        let mut buf = [0u8; 1500];
        let (n, _) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
            .await
            .expect("answer")
            .unwrap();
        let r = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(r.metadata.id, q.metadata.id);
        assert_eq!(region_of(&r), want, "{subnet}/{source}");
        assert_eq!(
            ecs_of(&r).unwrap().addr(),
            subnet.parse::<IpAddr>().unwrap(),
            "each client gets its own subnet echoed"
        );
        if i == 30 {
            warm = gauge();
        }
        if i > 30 && i % 500 == 0 {
            peak_after_warmup = peak_after_warmup.max(gauge());
        }
    }
    assert!(warm > 0.0, "answers are cached");
    // The same three answers serve every subnet: nothing more is stored.
    assert!(
        peak_after_warmup <= warm,
        "cache grew with subnets: {warm} -> {peak_after_warmup}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_reads_a_changed_database_and_refuses_a_corrupt_one() {
    let g = start_geo(|_| {}).await;
    let dns = g.ts.dns;
    let db = g.ts.zone_path("geo.mmdb");
    let us_client = with_subnet(API, "192.0.2.0", 24);
    assert_eq!(region_of(&udp(dns, &us_client).await.unwrap()), "us");
    // Corrupt (random bytes; then a truncated file): a reload error naming
    // the database, and the old database keeps answering.
    let good = std::fs::read(&db).unwrap();
    for (what, bytes) in [
        (
            "garbage",
            (0..4096u32)
                .map(|i| (i * 7919 % 251) as u8)
                .collect::<Vec<u8>>(),
        ),
        ("truncated", good[..good.len() / 2].to_vec()),
    ] {
        std::fs::write(&db, &bytes).unwrap();
        let err = g.ts.server.reload().await.expect_err(what).to_string();
        assert!(
            err.contains("geo.mmdb") && err.contains("z.toml:"),
            "{what}: {err}"
        );
        assert_eq!(region_of(&udp(dns, &us_client).await.unwrap()), "us");
        assert_eq!(
            region_of(
                &udp(dns, &with_subnet(API, "203.0.113.0", 24))
                    .await
                    .unwrap()
            ),
            "ap"
        );
    }
    // A changed database: 192.0.2.0/24 is now in India.
    write_mmdb(
        &DB_SPEC.replace(
            "\"country\": \"US\", \"continent\": \"NA\"",
            "\"country\": \"IN\", \"continent\": \"AS\"",
        ),
        &db,
    );
    g.ts.server.reload().await.expect("a good database reloads");
    let r = udp(dns, &us_client).await.unwrap();
    assert_eq!(region_of(&r), "ap", "the new database answers: {r}");
}

async fn get_json(url: String) -> (u16, serde_json::Value) {
    let (code, text) = http_get(&url).await;
    (code, serde_json::from_str(&text).unwrap())
}

/// `gslb explain` with these arguments against the admin API at `admin`.
async fn explain_cli(admin: SocketAddr, args: &[&str]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    // The CLI blocks on its own runtime: off this test's threads.
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_gslb"))
            .arg("explain")
            .args(&args)
            .arg("--admin")
            .arg(admin.to_string())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_and_status_show_locations_orders_health_and_answers() {
    let g = start_geo(|s| s.admin = Some("127.0.0.1:0".parse().unwrap())).await;
    let admin = g.ts.server.admin_addr.unwrap();
    let api = |q: &str| format!("http://{admin}/api/v1/explain?{q}");

    // A database location.
    let (code, x) = get_json(api("name=api.gslb.example.com&ecs=203.0.113.0/24")).await;
    assert_eq!(code, 200, "{x}");
    let svc = &x["service"];
    assert_eq!(svc["policy"], "geo");
    assert_eq!(svc["location"], "country:IN");
    assert_eq!(svc["located_by"], "ECS subnet 203.0.113.0/24");
    assert_eq!(
        svc["why"],
        "database network 203.0.113.0/24: country IN, continent AS, location 19.0000,72.8000"
    );
    let order: Vec<&str> = svc["order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["region"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["ap", "eu"]);
    assert_eq!(svc["order"][0]["up"], true);
    assert_eq!(
        (x["rcode"].as_str(), x["ttl"].as_u64()),
        (Some("NOERROR"), Some(30))
    );
    assert!(
        x["answers"][0].as_str().unwrap().ends_with("127.0.0.4"),
        "{x}"
    );
    assert_eq!(x["scope"], 24);
    assert_eq!(x["ecs_echo"], "203.0.113.0/24/24");

    // Nearest, by distance from the database's coordinates.
    let (_, x) = get_json(api("name=cdn.gslb.example.com&ecs=2001:db8:1::/56")).await;
    let order: Vec<(&str, f64)> = x["service"]["order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["region"].as_str().unwrap(),
                r["distance_km"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        order.iter().map(|o| o.0).collect::<Vec<_>>(),
        ["eu", "us", "ap"]
    );
    assert!(order.windows(2).all(|w| w[0].1 < w[1].1), "{order:?}");

    // Bad requests are refused with a reason.
    let (code, x) = get_json(api("ecs=1.2.3.0/24")).await;
    assert_eq!(
        (code, x["error"].as_str()),
        (400, Some("`name` is required"))
    );
    let (code, _) = get_json(api("name=api.gslb.example.com&ecs=nowhere")).await;
    assert_eq!(code, 400);

    // Status: each location's order and answer.
    let (_, st) = get_json(format!("http://{admin}/api/v1/status")).await;
    let location = |st: &serde_json::Value, key: &str, loc: &str| {
        st["zones"][0]["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["key"] == key)
            .unwrap()["locations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["location"] == loc)
            .unwrap_or_else(|| panic!("{key} {loc}"))
            .clone()
    };
    let office = location(&st, "api", "office");
    assert_eq!(office["order"], serde_json::json!(["eu", "us"]));
    assert_eq!(office["answer"], serde_json::json!(["eu"]));
    assert_eq!(
        location(&st, "api", "*")["answer"],
        serde_json::json!(["us"])
    );
    assert_eq!(
        location(&st, "cdn", "ap")["order"],
        serde_json::json!(["ap", "eu", "us"])
    );

    // The office's first region fails: explain and status follow.
    g.eu.set(Mode::Failing);
    wait_until(Duration::from_secs(10), "eu down", || async {
        region_of(
            &udp(g.ts.dns, &with_subnet(API, "198.51.100.0", 24))
                .await
                .unwrap(),
        ) == "us"
    })
    .await;
    let (_, st) = get_json(format!("http://{admin}/api/v1/status")).await;
    let office = location(&st, "api", "office");
    assert_eq!(
        (office["answer"].clone(), office["degraded"].clone()),
        (serde_json::json!(["us"]), serde_json::json!(true))
    );

    // The CLI, against the running server.
    let (code, out, err) =
        explain_cli(admin, &["api.gslb.example.com", "--ecs", "198.51.100.7"]).await;
    assert_eq!(code, 0, "{err}");
    for want in [
        "api.gslb.example.com. A from 0.0.0.0, ECS 198.51.100.0/24",
        "service:    api (policy geo, geo world)",
        "located by: ECS subnet 198.51.100.0/24",
        "location:   office",
        "because:    nets entry 198.51.100.0/24 = \"office\" of geo world",
        "  1. eu           DOWN  0/1 endpoints up",
        "  2. us           up    1/1 endpoints up",
        "answer:     NOERROR, TTL 5, ECS scope /24",
        "IN A 127.0.0.2",
    ] {
        assert!(out.contains(want), "{want:?} not in\n{out}");
    }
    // Without ECS, the source address locates.
    let (code, out, _) = explain_cli(
        admin,
        &[
            "cdn.gslb.example.com",
            "--client",
            "127.0.0.33",
            "--type",
            "A",
        ],
    )
    .await;
    assert_eq!(code, 0);
    assert!(
        out.contains("located by: source address 127.0.0.33 (no ECS)"),
        "{out}"
    );
    assert!(out.contains("location:   ap"), "{out}");
    assert!(out.contains("1. ap "), "{out}");
    // A refused request: the reason, exit 3.
    let (code, _, err) = explain_cli(admin, &["api.gslb.example.com", "--ecs", "x"]).await;
    assert_eq!(code, 3);
    assert!(err.contains("explain refused (400)"), "{err}");
    // A name no served zone holds: REFUSED said as such, exit 5, and no
    // word on how "the zone" treats ECS (there is none).
    for json in [false, true] {
        let mut a = vec!["www.example.org", "--ecs", "198.51.100.7"];
        if json {
            a.push("--json");
        }
        let (code, out, err) = explain_cli(admin, &a).await;
        assert_eq!(code, 5, "{out}{err}");
        if json {
            assert!(out.contains("\"rcode\": \"REFUSED\""), "{out}");
        } else {
            assert!(
                out.contains("answer:     REFUSED (no zone this server serves holds the name)"),
                "{out}"
            );
        }
        assert!(!out.contains("ignores ECS"), "{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reloads_when_the_database_is_replaced() {
    let g = start_geo(|s| s.watch = true).await;
    let dns = g.ts.dns;
    let us_client = with_subnet(API, "192.0.2.0", 24);
    assert_eq!(region_of(&udp(dns, &us_client).await.unwrap()), "us");
    // As geoipupdate does: a new file renamed over the old one.
    let db = g.ts.zone_path("geo.mmdb");
    let tmp = g.ts.zone_path("geo.mmdb.new");
    write_mmdb(
        &DB_SPEC.replace(
            "\"country\": \"US\", \"continent\": \"NA\"",
            "\"country\": \"IN\", \"continent\": \"AS\"",
        ),
        &tmp,
    );
    std::fs::rename(&tmp, &db).unwrap();
    wait_until(
        Duration::from_secs(10),
        "the new database answers",
        || async { region_of(&udp(dns, &us_client).await.unwrap()) == "ap" },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_with_ecs_off_locates_by_the_source_address() {
    let (us, eu, ap) = (
        Backend::start("127.0.0.2").await,
        Backend::start("127.0.0.3").await,
        Backend::start("127.0.0.4").await,
    );
    let zone = geo_zone(us.addr, eu.addr, ap.addr).replace(
        "hostmaster = \"h.example.com.\"\n",
        "hostmaster = \"h.example.com.\"\necs = false\n",
    );
    assert!(zone.contains("ecs = false"));
    let ts = TestServer::start_prepared(
        &[("z.toml", &zone)],
        |dir| write_mmdb(DB_SPEC, &dir.join("geo.mmdb")),
        |_| {},
    )
    .await;
    ts.wait_first_verdicts(Duration::from_secs(10)).await;
    // India's subnet, sent from the office's source address: the office
    // answer, and no ECS echoed.
    for _ in 0..2 {
        let r = udp_from("127.0.0.17", ts.dns, &with_subnet(API, "203.0.113.0", 24)).await;
        assert_eq!(region_of(&r), "eu", "{r}");
        assert!(ecs_of(&r).is_none(), "{r}");
    }
}
