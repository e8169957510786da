//! Zone transfers out (issue 21): the serial, AXFR and IXFR with TSIG and
//! their refusals, asked by hand; then NSD and Knot as real secondaries of
//! gslb on loopback, following a failover.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::{Name, RData, Record, RecordType, TSigner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::backend::{Backend, Mode};
use crate::support::*;

const APEX: &str = "xfr.example.com.";
/// The test key's secret, base64 (as the secondaries' configs want it).
const SECRET_B64: &str = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0IQ==";
const SECRET: &[u8] = b"secret-secret-secret-secret!";

/// A zone transferred to 127.0.0.0/8 with key `xfr-key`: `www` fails over
/// from `primary` (127.0.0.1, checked on `backend`) to `secondary`
/// (127.0.0.2); `notify` names the secondaries to tell.
fn zone(backend: SocketAddr, notify: &[SocketAddr]) -> String {
    let notify: Vec<String> = notify.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"[zone]
name = "{APEX}"
nameservers = ["ns1.xfr.example.com."]
hostmaster = "hostmaster@example.com"
refresh = 3600

[transfer]
allow = ["127.0.0.0/8"]
notify = [{}]
tsig-key = "xfr-key"

[[record]]
name = "ns1"
type = "A"
value = "192.0.2.53"

[[record]]
name = "txt"
type = "TXT"
value = "static text"

{}"#,
        notify.join(", "),
        crate::support::failover_www(backend.port())
    )
}

fn key() -> gslb::model::TsigKey {
    key_of(TsigAlgorithm::HmacSha256)
}

/// The test key `xfr-key.` with another HMAC.
fn key_of(algorithm: TsigAlgorithm) -> gslb::model::TsigKey {
    gslb::model::TsigKey {
        name: Name::from_ascii("xfr-key.").unwrap(),
        algorithm,
        secret: SECRET.to_vec(),
    }
}

/// How a secondary knows the test key: its algorithm's name and the
/// secret (base64), or no key at all.
#[derive(Clone, Copy)]
struct SecondaryKey {
    algorithm: &'static str,
    secret_b64: &'static str,
}

/// The key gslb has: HMAC-SHA256 with the test secret.
const GOOD: Option<SecondaryKey> = Some(SecondaryKey {
    algorithm: "hmac-sha256",
    secret_b64: SECRET_B64,
});

async fn start(backend: SocketAddr, notify: &[SocketAddr], state: Option<&Path>) -> TestServer {
    let state = state.map(Path::to_path_buf);
    let s = TestServer::start_with(&[("xfr.toml", &zone(backend, notify))], |st| {
        st.tsig_keys.insert("xfr-key".into(), key());
        st.state_file = state;
    })
    .await;
    s.wait_first_verdicts(Duration::from_secs(5)).await;
    s
}

fn soa_serial(m: &Message) -> u32 {
    match m.answers.first().map(|r| &r.data) {
        Some(RData::SOA(soa)) => soa.serial,
        other => panic!("no SOA answer: {other:?}"),
    }
}

/// A transfer request, signed with `signer` when given.
fn xfr_request(rtype: RecordType, since: Option<u32>, signer: Option<&TSigner>) -> Message {
    let mut m = Message::new(0x4242, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(APEX).unwrap(), rtype));
    if let Some(serial) = since {
        let n = Name::from_ascii(APEX).unwrap();
        m.add_authority(Record::from_rdata(
            n.clone(),
            0,
            RData::SOA(SOA::new(n.clone(), n, serial, 0, 0, 0, 0)),
        ));
    }
    if let Some(s) = signer {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let (tsig, _) = s.sign_message(&m, now).unwrap();
        m.set_signature(tsig);
    }
    m
}

fn signer(secret: &[u8], name: &str) -> TSigner {
    TSigner::new(
        secret.to_vec(),
        TsigAlgorithm::HmacSha256,
        Name::from_ascii(name).unwrap(),
        300,
    )
    .unwrap()
}

/// Every message of a transfer over TCP (until the closing SOA, or the
/// first message when it is an error), as raw bytes and parsed.
async fn transfer(server: SocketAddr, req: &Message) -> Vec<(Vec<u8>, Message)> {
    let mut s = TcpStream::connect(server).await.expect("connect");
    let bytes = req.to_vec().unwrap();
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    s.write_all(&framed).await.unwrap();
    let mut out: Vec<(Vec<u8>, Message)> = Vec::new();
    let mut soas = 0;
    loop {
        let mut len = [0u8; 2];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut len))
            .await
            .expect("a message in time")
            .expect("read");
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut buf).await.unwrap();
        let m = Message::from_vec(&buf).expect("valid DNS");
        let error = m.metadata.response_code != ResponseCode::NoError;
        soas += m
            .answers
            .iter()
            .filter(|r| r.record_type() == RecordType::SOA)
            .count();
        let first_soa_only = out.is_empty() && m.answers.len() == 1 && soas == 1;
        out.push((buf, m));
        // Done: an error, an up-to-date IXFR (one SOA), or the closing SOA
        // (AXFR: 2 in all; IXFR: the current SOA begins and ends it, with
        // two per change between).
        let closing = soas >= 2
            && out
                .last()
                .and_then(|(_, m)| m.answers.last())
                .is_some_and(|r| r.record_type() == RecordType::SOA)
            && out[0].1.answers.first().map(|r| r.data.clone())
                == out
                    .last()
                    .and_then(|(_, m)| m.answers.last())
                    .map(|r| r.data.clone());
        if error || first_soa_only || closing {
            return out;
        }
    }
}

fn records(msgs: &[(Vec<u8>, Message)]) -> Vec<String> {
    msgs.iter()
        .flat_map(|(_, m)| m.answers.iter())
        .map(|r| format!("{} {} {} {}", r.name, r.ttl, r.record_type(), r.data))
        .collect()
}

#[tokio::test]
async fn the_serial_follows_the_zone_as_transferred_and_ixfr_sends_the_change() {
    let mut backend = Backend::start("127.0.0.1").await;
    let state_dir = tempfile::tempdir().unwrap();
    let state = state_dir.path().join("state.json");
    let s = start(backend.addr, &[], Some(&state)).await;
    let soa = s.query(APEX, RecordType::SOA).await;
    let first = soa_serial(&soa);
    assert!(first > 1_700_000_000, "a unix-time serial: {first}");
    let key = signer(SECRET, "xfr-key.");

    // AXFR: SOA, every record as transferred, SOA; signed.
    let msgs = transfer(s.dns, &xfr_request(RecordType::AXFR, None, Some(&key))).await;
    let all = records(&msgs);
    assert_eq!(
        all,
        [
            format!(
                "{APEX} 300 SOA ns1.xfr.example.com. hostmaster.example.com. {first} 3600 600 604800 60"
            ),
            format!("{APEX} 300 NS ns1.xfr.example.com."),
            "ns1.xfr.example.com. 300 A 192.0.2.53".into(),
            "txt.xfr.example.com. 300 TXT static text".into(),
            "www.xfr.example.com. 5 A 127.0.0.1".into(),
            format!(
                "{APEX} 300 SOA ns1.xfr.example.com. hostmaster.example.com. {first} 3600 600 604800 60"
            ),
        ]
    );
    assert!(
        msgs.iter().all(|(_, m)| m.signature().is_some()),
        "every message signed"
    );
    assert!(msgs[0].1.metadata.authoritative);

    // The secondary region going down changes no answer: the serial stays.
    // (Nothing checks it; a reload that changes nothing a secondary gets
    // keeps it too.)
    s.server.reload().await.expect("reload");
    assert_eq!(soa_serial(&s.query(APEX, RecordType::SOA).await), first);

    // Fail the primary: the answer moves, and with it the serial, in the
    // very next SOA answer after the first answer that moved.
    backend.set(Mode::Failing);
    wait_until(Duration::from_secs(5), "failover", || async {
        addrs(&s.query("www.xfr.example.com.", RecordType::A).await) == ["127.0.0.2"]
    })
    .await;
    // The serial follows within moments (the zone is rendered again on
    // the transition, off the DNS path).
    let deadline = Instant::now() + Duration::from_secs(2);
    let second = loop {
        let serial = soa_serial(&s.query(APEX, RecordType::SOA).await);
        if serial != first {
            break serial;
        }
        assert!(Instant::now() < deadline, "the serial did not move");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(gslb_serial_gt(second, first), "{second} after {first}");
    // Over TCP too, and the NXDOMAIN's SOA carries it.
    assert_eq!(
        soa_serial(&s.query_tcp(APEX, RecordType::SOA).await),
        second
    );
    let nx = s.query("nope.xfr.example.com.", RecordType::A).await;
    match &nx.authorities[0].data {
        RData::SOA(soa) => assert_eq!(soa.serial, second),
        other => panic!("{other:?}"),
    }

    // IXFR from the first serial: the one change.
    let msgs = transfer(
        s.dns,
        &xfr_request(RecordType::IXFR, Some(first), Some(&key)),
    )
    .await;
    let soa_line = |serial: u32| {
        format!(
            "{APEX} 300 SOA ns1.xfr.example.com. hostmaster.example.com. {serial} 3600 600 604800 60"
        )
    };
    assert_eq!(
        records(&msgs),
        [
            soa_line(second),
            soa_line(first),
            "www.xfr.example.com. 5 A 127.0.0.1".into(),
            soa_line(second),
            "www.xfr.example.com. 5 A 127.0.0.2".into(),
            soa_line(second),
        ]
    );
    // Up to date: the SOA alone. Unknown serial: the zone whole.
    let msgs = transfer(
        s.dns,
        &xfr_request(RecordType::IXFR, Some(second), Some(&key)),
    )
    .await;
    assert_eq!(records(&msgs), [soa_line(second)]);
    let msgs = transfer(
        s.dns,
        &xfr_request(RecordType::IXFR, Some(12345), Some(&key)),
    )
    .await;
    assert_eq!(records(&msgs).len(), 6, "AXFR-style: {:?}", records(&msgs));
    // IXFR over UDP: the current SOA, signed.
    let m = udp(
        s.dns,
        &xfr_request(RecordType::IXFR, Some(first), Some(&key)),
    )
    .await
    .expect("answer");
    assert_eq!(soa_serial(&m), second);
    assert!(m.signature().is_some());

    // Restart on the same state and verdicts: the same serial.
    backend.set(Mode::Healthy);
    wait_until(Duration::from_secs(5), "failback", || async {
        addrs(&s.query("www.xfr.example.com.", RecordType::A).await) == ["127.0.0.1"]
    })
    .await;
    wait_until(
        Duration::from_secs(2),
        "the serial to move again",
        || async { soa_serial(&s.query(APEX, RecordType::SOA).await) != second },
    )
    .await;
    let third = soa_serial(&s.query(APEX, RecordType::SOA).await);
    assert!(
        gslb_serial_gt(third, second),
        "failback moves it on, never back"
    );
    // What a shutdown writes last, written now (the server below starts
    // before this one's shutdown would have finished).
    s.server.health.persist_now().await.expect("state written");
    drop(s);
    let s = start(backend.addr, &[], Some(&state)).await;
    assert_eq!(soa_serial(&s.query(APEX, RecordType::SOA).await), third);
    backend.kill();
}

/// RFC 1982: whether `a` is after `b`.
fn gslb_serial_gt(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < (1 << 31)
}

#[tokio::test]
async fn transfers_are_refused_unless_allowed_and_signed_with_the_zones_key() {
    let backend = Backend::start("127.0.0.1").await;
    let s = start(backend.addr, &[], None).await;
    let tsig_error = |m: &Message| m.signature().and_then(|t| t.data.error);
    // Unsigned: REFUSED, over TCP and UDP.
    let m = &transfer(s.dns, &xfr_request(RecordType::AXFR, None, None)).await[0].1;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert!(m.answers.is_empty());
    let m = udp(s.dns, &xfr_request(RecordType::IXFR, Some(1), None))
        .await
        .unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    // Another key: NOTAUTH, BADKEY.
    let other = signer(SECRET, "other-key.");
    let m = &transfer(s.dns, &xfr_request(RecordType::AXFR, None, Some(&other))).await[0].1;
    assert_eq!(m.metadata.response_code, ResponseCode::NotAuth);
    assert_eq!(
        tsig_error(m),
        Some(hickory_proto::rr::rdata::tsig::TsigError::BadKey)
    );
    // The right name, the wrong secret: NOTAUTH, BADSIG.
    let wrong = signer(b"not-the-secret-not-the-secret!!", "xfr-key.");
    let m = &transfer(s.dns, &xfr_request(RecordType::AXFR, None, Some(&wrong))).await[0].1;
    assert_eq!(m.metadata.response_code, ResponseCode::NotAuth);
    assert_eq!(
        tsig_error(m),
        Some(hickory_proto::rr::rdata::tsig::TsigError::BadSig)
    );
    // Signed an hour ago: NOTAUTH, BADTIME, signed by the server.
    let key = signer(SECRET, "xfr-key.");
    let mut old = Message::new(0x4243, MessageType::Query, OpCode::Query);
    old.add_query(Query::query(
        Name::from_ascii(APEX).unwrap(),
        RecordType::AXFR,
    ));
    let hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 3600;
    let (tsig, _) = key.sign_message(&old, hour_ago).unwrap();
    old.set_signature(tsig);
    let m = &transfer(s.dns, &old).await[0].1;
    assert_eq!(m.metadata.response_code, ResponseCode::NotAuth);
    assert_eq!(
        tsig_error(m),
        Some(hickory_proto::rr::rdata::tsig::TsigError::BadTime)
    );
    let t = &m.signature().unwrap().data;
    assert!(!t.mac.is_empty(), "BADTIME is signed");
    // Its Time Signed is the request's, its Other Data the server's time
    // (RFC 8945 §5.2.3), so the client can see how far off it is.
    assert_eq!(t.time, hour_ago);
    assert_eq!(t.other.len(), 6);
    let server_time = t
        .other
        .iter()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    assert!(server_time.abs_diff(hour_ago + 3600) < 5, "{server_time}");
    // AXFR over UDP: REFUSED even when signed (TCP only, RFC 5936).
    let m = udp(s.dns, &xfr_request(RecordType::AXFR, None, Some(&key)))
        .await
        .unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    // The right key: served.
    let msgs = transfer(s.dns, &xfr_request(RecordType::AXFR, None, Some(&key))).await;
    assert_eq!(msgs[0].1.metadata.response_code, ResponseCode::NoError);
    // A zone not served, and an address outside allow: REFUSED.
    let mut elsewhere = xfr_request(RecordType::AXFR, None, None);
    elsewhere.queries[0] =
        Query::query(Name::from_ascii("example.org.").unwrap(), RecordType::AXFR);
    let m = &transfer(s.dns, &elsewhere).await[0].1;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    let text = std::fs::read_to_string(s.zone_path("xfr.toml"))
        .unwrap()
        .replace("allow = [\"127.0.0.0/8\"]", "allow = [\"192.0.2.10\"]");
    std::fs::write(s.zone_path("xfr.toml"), text).unwrap();
    s.server.reload().await.expect("reload");
    let m = &transfer(s.dns, &xfr_request(RecordType::AXFR, None, Some(&key))).await[0].1;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    // Counted.
    let body = s.server.metrics.render();
    for line in [
        "gslb_transfers_refused_total{reason=\"address\",zone=\"xfr.example.com\"} 1",
        "gslb_transfers_total{kind=\"axfr\",zone=\"xfr.example.com\"} 1",
    ] {
        assert!(body.contains(line), "{line} in\n{body}");
    }
    assert!(
        body.contains("gslb_transfers_refused_total{reason=\"tsig\",zone=\"xfr.example.com\"}")
    );
}

/// A secondary server process (NSD or Knot) of gslb on loopback.
struct Secondary {
    name: &'static str,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    /// The program and its arguments.
    command: Vec<String>,
    child: Option<Child>,
}

impl Secondary {
    fn new(name: &'static str, addr: SocketAddr, dir: tempfile::TempDir, command: &[&str]) -> Self {
        let mut x = Secondary {
            name,
            addr,
            dir,
            command: command.iter().map(|c| c.to_string()).collect(),
            child: None,
        };
        x.start();
        x
    }

    fn start(&mut self) {
        let child = std::process::Command::new(&self.command[0])
            .args(&self.command[1..])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("stderr")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("{} runs: {e}", self.command[0]));
        self.child = Some(Child(child));
    }

    fn stop(&mut self) {
        self.child = None;
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    async fn www(&self) -> Vec<String> {
        match udp(
            self.addr,
            &request("www.xfr.example.com.", RecordType::A, true),
        )
        .await
        {
            Some(m) if m.metadata.response_code == ResponseCode::NoError => addrs(&m),
            _ => Vec::new(),
        }
    }

    async fn serial(&self) -> Option<u32> {
        let m = udp(self.addr, &request(APEX, RecordType::SOA, true)).await?;
        match m.answers.first().map(|r| &r.data) {
            Some(RData::SOA(soa)) => Some(soa.serial),
            _ => None,
        }
    }
}

/// NSD's log, once it shows at least `transfers` committed, each with
/// every message's TSIG verified with the test key.
fn nsd_verified(x: &Secondary, transfers: usize) -> String {
    let log = x.log();
    let commits: Vec<&str> = log.lines().filter(|l| l.contains("committed")).collect();
    assert!(commits.len() >= transfers, "{log}");
    assert!(
        commits
            .iter()
            .all(|l| l.contains("TSIG verified with key xfr-key")),
        "{log}"
    );
    log
}

/// NSD 4 on a free loopback port, secondary of `primary` with the test
/// key (`request-xfr` and `allow-notify`), reloading at once after a
/// transfer.
fn nsd(primary: SocketAddr) -> Secondary {
    nsd_of(&[primary])
}

/// NSD as a secondary of each of `primaries`, in that order.
fn nsd_of(primaries: &[SocketAddr]) -> Secondary {
    nsd_notified_by(primaries, None)
}

/// NSD as a secondary of `primaries`, taking NOTIFY from `notifier` (else
/// from the primaries).
fn nsd_notified_by(primaries: &[SocketAddr], notifier: Option<&str>) -> Secondary {
    nsd_keyed(primaries, notifier, GOOD, None)
}

/// NSD as a secondary of `primaries` with `key` (none: it asks unsigned),
/// asking from `outgoing` when given.
fn nsd_keyed(
    primaries: &[SocketAddr],
    notifier: Option<&str>,
    key: Option<SecondaryKey>,
    outgoing: Option<&str>,
) -> Secondary {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_udp_tcp_addr();
    let d = dir.path().display();
    let conf = format!(
        r#"server:
    ip-address: {ip}@{port}
    port: {port}
    zonesdir: "{d}"
    database: ""
    pidfile: "{d}/nsd.pid"
    xfrdfile: "{d}/xfrd.state"
    zonelistfile: "{d}/zone.list"
    logfile: "{d}/log"
    username: ""
    chroot: ""
    verbosity: 2
    xfrd-reload-timeout: 0
remote-control:
    control-enable: no
{key_block}zone:
    name: "{APEX}"
    zonefile: "xfr.zone"
{primaries}{outgoing}"#,
        ip = addr.ip(),
        port = addr.port(),
        outgoing = outgoing.map_or_else(String::new, |o| format!("    outgoing-interface: {o}\n")),
        key_block = key.map_or_else(String::new, |k| format!(
            "key:\n    name: \"xfr-key\"\n    algorithm: {}\n    secret: \"{}\"\n",
            k.algorithm, k.secret_b64
        )),
        primaries = primaries
            .iter()
            .map(|p| format!(
                "    request-xfr: {}@{} {k}\n    allow-notify: {} {k}\n",
                p.ip(),
                p.port(),
                notifier.map_or_else(|| p.ip().to_string(), str::to_string),
                k = if key.is_some() { "xfr-key" } else { "NOKEY" },
            ))
            .collect::<String>(),
    );
    std::fs::write(dir.path().join("nsd.conf"), conf).unwrap();
    let conf = dir.path().join("nsd.conf").display().to_string();
    Secondary::new("NSD", addr, dir, &["/usr/sbin/nsd", "-d", "-c", &conf])
}

/// Knot 3 on a free loopback port, secondary of `primary` with the test
/// key (`master` and a notify ACL).
fn knot(primary: SocketAddr) -> Secondary {
    knot_keyed(primary, GOOD)
}

/// Knot as a secondary of `primary` with `key` (none: it asks unsigned).
fn knot_keyed(primary: SocketAddr, key: Option<SecondaryKey>) -> Secondary {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_udp_tcp_addr();
    let d = dir.path().display();
    let conf = format!(
        r#"server:
    listen: {ip}@{port}
    rundir: "{d}"
log:
  - target: "{d}/log"
    any: info
database:
    storage: "{d}"
{key_block}remote:
  - id: gslb
    address: {pip}@{pport}
{key_ref}acl:
  - id: gslb-notify
    address: {pip}
{key_ref}    action: notify
template:
  - id: default
    storage: "{d}"
zone:
  - domain: {APEX}
    master: gslb
    acl: gslb-notify
"#,
        ip = addr.ip(),
        port = addr.port(),
        pip = primary.ip(),
        pport = primary.port(),
        key_block = key.map_or_else(String::new, |k| format!(
            "key:\n  - id: xfr-key\n    algorithm: {}\n    secret: {}\n",
            k.algorithm, k.secret_b64
        )),
        key_ref = if key.is_some() {
            "    key: xfr-key\n"
        } else {
            ""
        },
    );
    std::fs::write(dir.path().join("knot.conf"), conf).unwrap();
    let conf = dir.path().join("knot.conf").display().to_string();
    Secondary::new("Knot", addr, dir, &["/usr/sbin/knotd", "-c", &conf])
}

/// BIND 9 on a free loopback port, secondary of `primary`, configured as
/// the README's "Secondaries" shows (`server` with the key, `primaries`
/// with the key, `allow-notify` by key), its log in `log`.
fn bind(primary: SocketAddr) -> Secondary {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_udp_tcp_addr();
    let d = dir.path().display();
    let conf = format!(
        r#"options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    session-keyfile "{d}/session.key";
    managed-keys-directory "{d}";
    listen-on port {port} {{ {ip}; }};
    listen-on-v6 {{ none; }};
    recursion no;
    notify no;
    dnssec-validation no;
}};
controls {{ }};
logging {{
    channel file {{ file "{d}/log"; severity info; print-time yes; }};
    category default {{ file; }};
    category xfer-in {{ file; }};
    category notify {{ file; }};
}};
key "xfr-key" {{ algorithm hmac-sha256; secret "{SECRET_B64}"; }};
server {pip} {{ keys {{ xfr-key; }}; }};
zone "{APEX}" {{
    type secondary;
    primaries port {pport} {{ {pip} key xfr-key; }};
    allow-notify {{ key xfr-key; }};
    file "{d}/xfr.example.com.db";
}};
"#,
        ip = addr.ip(),
        port = addr.port(),
        pip = primary.ip(),
        pport = primary.port(),
    );
    std::fs::write(dir.path().join("named.conf"), conf).unwrap();
    let conf = dir.path().join("named.conf").display().to_string();
    Secondary::new("BIND", addr, dir, &["/usr/sbin/named", "-f", "-c", &conf])
}

/// BIND, configured as the README says, loads the zone, is told of a
/// failover by NOTIFY, fetches it by IXFR (its log says so) and answers
/// the secondary region; and back.
#[tokio::test]
async fn bind_follows_a_failover_as_the_readme_configures_it() {
    let mut backend = Backend::start("127.0.0.1").await;
    let s = start(backend.addr, &[], None).await;
    let x = bind(s.dns);
    notify_and_load(&s, backend.addr, &x, "BIND").await;
    assert_eq!(x.www().await, ["127.0.0.1"], "{}", x.log());
    for (mode, want) in [(Mode::Failing, "127.0.0.2"), (Mode::Healthy, "127.0.0.1")] {
        backend.set(mode);
        wait_until(Duration::from_secs(5), "gslb to move", || async {
            addrs(&s.query("www.xfr.example.com.", RecordType::A).await) == [want]
        })
        .await;
        wait_until(Duration::from_secs(10), "BIND to follow", || async {
            x.www().await == [want]
        })
        .await;
    }
    // Told by NOTIFY, transferred with the key; BIND's log at info names
    // no transfer kind, so gslb's count says which: after the first load,
    // each change went by IXFR.
    let log = x.log();
    assert!(log.contains("notify from 127.0.0.1"), "{log}");
    assert!(
        log.matches("Transfer status: success").count() >= 3,
        "{log}"
    );
    assert!(
        log.contains("transferred serial") && log.contains("TSIG 'xfr-key'"),
        "{log}"
    );
    assert!(!log.contains("failed"), "{log}");
    let ixfr = s
        .server
        .metrics
        .transfers
        .served
        .with_label_values(&["xfr.example.com", "ixfr"])
        .get();
    assert!(ixfr >= 2, "{ixfr} IXFRs served to BIND\n{log}");
    backend.kill();
}

/// NSD and Knot follow gslb through a failover and back: they load the
/// zone as transferred, are told of each change by NOTIFY, fetch it by
/// IXFR, and answer as gslb does. Prints how long each took after gslb's
/// own answer changed (the figures of `bench/transfer.sh`).
#[tokio::test]
async fn nsd_and_knot_follow_a_failover_by_notify_and_ixfr() {
    let mut backend = Backend::start("127.0.0.1").await;
    // gslb must know where to send NOTIFY before it starts: the
    // secondaries' ports first, their processes after.
    let (nsd_addr, knot_addr) = (free_udp_tcp_addr(), free_udp_tcp_addr());
    let _ = (nsd_addr, knot_addr);
    let gslb_port = free_udp_tcp_addr();
    let dir = tempfile::tempdir().unwrap();
    // Start gslb first on a known port, then the secondaries pointing at it.
    let s = TestServer::start_with(&[("xfr.toml", &zone(backend.addr, &[]))], |st| {
        st.tsig_keys.insert("xfr-key".into(), key());
        st.listen = vec![gslb_port];
    })
    .await;
    let _ = dir;
    s.wait_first_verdicts(Duration::from_secs(5)).await;
    let secondaries = [nsd(s.dns), knot(s.dns)];
    // Now tell gslb where they are: a reload adds them to `notify`.
    let notify: Vec<SocketAddr> = secondaries.iter().map(|x| x.addr).collect();
    std::fs::write(s.zone_path("xfr.toml"), zone(backend.addr, &notify)).unwrap();
    s.server.reload().await.expect("reload");
    let serial = soa_serial(&s.query(APEX, RecordType::SOA).await);
    for x in &secondaries {
        wait_until(
            Duration::from_secs(20),
            &format!("{} to load the zone", x.name),
            || async { x.serial().await == Some(serial) },
        )
        .await;
        let m = udp(
            x.addr,
            &request("www.xfr.example.com.", RecordType::A, true),
        )
        .await;
        assert_eq!(
            x.www().await,
            ["127.0.0.1"],
            "{}: {m:?}\n{}",
            x.name,
            x.log()
        );
        // The static records as they are in gslb.
        let m = udp(
            x.addr,
            &request("txt.xfr.example.com.", RecordType::TXT, true),
        )
        .await
        .unwrap();
        assert_eq!(
            answers(&m),
            ["txt.xfr.example.com. TXT static text"],
            "{}",
            x.name
        );
    }

    // Fail over and back, twice: each secondary follows each time.
    let mut lags: Vec<(&str, Duration)> = Vec::new();
    for (mode, want) in [
        (Mode::Failing, "127.0.0.2"),
        (Mode::Healthy, "127.0.0.1"),
        (Mode::Failing, "127.0.0.2"),
    ] {
        backend.set(mode);
        wait_until(Duration::from_secs(5), "gslb to move", || async {
            addrs(&s.query("www.xfr.example.com.", RecordType::A).await) == [want]
        })
        .await;
        let moved = Instant::now();
        let mut pending: Vec<&Secondary> = secondaries.iter().collect();
        while !pending.is_empty() {
            assert!(
                moved.elapsed() < Duration::from_secs(10),
                "{} did not follow gslb to {want}",
                pending
                    .iter()
                    .map(|x| x.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let mut still = Vec::new();
            for x in pending {
                if x.www().await == [want] {
                    lags.push((x.name, moved.elapsed()));
                } else {
                    still.push(x);
                }
            }
            pending = still;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    eprintln!("secondary lag after gslb's answer moved: {lags:?}");
    // They were told by NOTIFY and fetched each change by IXFR: two full
    // transfers (the first loads) and six incremental ones, in gslb's
    // count; Knot's log says so too (NSD's names no kind).
    let body = s.server.metrics.render();
    for line in [
        "gslb_transfers_total{kind=\"axfr\",zone=\"xfr.example.com\"} 2",
        "gslb_transfers_total{kind=\"ixfr\",zone=\"xfr.example.com\"} 6",
    ] {
        assert!(body.contains(line), "{line} in\n{body}");
    }
    let nsd_log = nsd_verified(&secondaries[0], 4);
    assert!(
        nsd_log
            .matches("notify for xfr.example.com. from 127.0.0.1")
            .count()
            >= 3,
        "{nsd_log}"
    );
    let knot_log = secondaries[1].log();
    let ixfrs = knot_log
        .lines()
        .filter(|l| l.contains("IXFR, incoming") && l.contains("finished"))
        .count();
    assert_eq!(ixfrs, 3, "{knot_log}");
    // Its SOA checks are signed too, and verified.
    assert!(!knot_log.contains("TSIG"), "{knot_log}");
    assert!(!knot_log.contains("no usable master"), "{knot_log}");
    // Every change's NOTIFY acknowledged by both (the one sent when the
    // reload named them may have found them still starting).
    for x in &secondaries {
        let acked = s
            .server
            .metrics
            .transfers
            .notifies
            .with_label_values(&["xfr.example.com", &x.addr.to_string(), "acked"])
            .get();
        assert!(acked >= 3, "{}: {acked} NOTIFYs acknowledged", x.name);
    }
    // The status API says the same: the serial, what was served, what each
    // secondary acknowledged.
    let now = soa_serial(&s.query(APEX, RecordType::SOA).await);
    let status = serde_json::to_value(s.server.status()).unwrap();
    let z = &status["zones"][0];
    assert_eq!(z["serial"], now);
    assert_eq!(z["transfer"]["records"], 5, "{z}");
    assert_eq!(z["transfer"]["axfr_served"], 2, "{z}");
    assert_eq!(z["transfer"]["ixfr_served"], 6, "{z}");
    assert_eq!(z["transfer"]["changes_kept"], 3, "{z}");
    let notify = z["transfer"]["notify"].as_array().unwrap();
    assert_eq!(notify.len(), 2, "{z}");
    for n in notify {
        assert_eq!(n["serial"], now, "{n}");
        assert_eq!(n["acked_serial"], now, "{n}");
    }
    // And the metrics: the serial, bytes served, when each secondary was
    // last sent a NOTIFY and last acknowledged one.
    let body = s.server.metrics.render();
    let value = |series: &str| -> f64 {
        body.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{series} in\n{body}"))
    };
    assert_eq!(
        value("gslb_zone_serial{zone=\"xfr.example.com\"}"),
        f64::from(now)
    );
    assert!(value("gslb_transfer_bytes_total{zone=\"xfr.example.com\"}") > 1000.0);
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64;
    for x in &secondaries {
        for metric in [
            "gslb_notify_last_sent_timestamp_seconds",
            "gslb_notify_last_ack_timestamp_seconds",
        ] {
            let t = value(&format!(
                "{metric}{{secondary=\"{}\",zone=\"xfr.example.com\"}}",
                x.addr
            ));
            assert!((unix - 60.0..=unix + 1.0).contains(&t), "{metric} {t}");
        }
    }
    backend.kill();
}

/// The serial of node `ts`'s zone.
async fn serial_of(ts: &TestServer) -> u32 {
    soa_serial(&ts.query(APEX, RecordType::SOA).await)
}

/// Two nodes of a cluster started in different seconds give one serial,
/// through every change, and NSD with both as primaries follows a
/// failover whichever it asks, and after the first is gone.
#[tokio::test]
async fn a_cluster_gives_one_serial_and_nsd_follows_either_primary() {
    let etcd = crate::etcd::Etcd::start().await;
    let mut backend = Backend::start("127.0.0.1").await;
    let name = crate::cluster::cluster_name();
    let (a1, a2) = (free_udp_tcp_addr(), free_udp_tcp_addr());
    let start = |i: usize, listen: SocketAddr| {
        let cs = crate::cluster::settings(&etcd, &name, i, gslb::model::Quorum::Majority);
        let z = zone(backend.addr, &[]);
        async move {
            TestServer::start_with(&[("xfr.toml", &z)], move |st| {
                st.tsig_keys.insert("xfr-key".into(), key());
                st.listen = vec![listen];
                st.probe_source = Some(format!("127.0.1.{i}").parse().unwrap());
                st.cluster = Some(cs);
            })
            .await
        }
    };
    let n1 = start(1, a1).await;
    n1.wait_first_verdicts(Duration::from_secs(5)).await;
    let first = serial_of(&n1).await;
    // Node 2 starts in a later second, so alone it would pick another
    // serial for the same content.
    let second_now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as u32
    };
    wait_until(Duration::from_secs(3), "the next second", || async {
        second_now() > first
    })
    .await;
    let n2 = start(2, a2).await;
    n2.wait_first_verdicts(Duration::from_secs(5)).await;
    assert_eq!(
        serial_of(&n2).await,
        first,
        "node 2 takes the cluster's serial"
    );
    let nodes = [n1, n2];

    let x = nsd_of(&[a1, a2]);
    for n in &nodes {
        let text = zone(backend.addr, &[x.addr]);
        std::fs::write(n.zone_path("xfr.toml"), text).unwrap();
        n.server.reload().await.expect("reload");
    }
    wait_until(Duration::from_secs(20), "NSD to load the zone", || async {
        x.serial().await == Some(first)
    })
    .await;

    // Fail over: record both nodes' serials until both moved; from then on
    // they are one, and NSD follows.
    backend.set(Mode::Failing);
    let mut timeline: Vec<(u32, u32)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pair = (serial_of(&nodes[0]).await, serial_of(&nodes[1]).await);
        timeline.push(pair);
        if pair.0 != first && pair.1 != first {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "serials never both moved: {timeline:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let moved = timeline.last().unwrap().0;
    for _ in 0..20 {
        timeline.push((serial_of(&nodes[0]).await, serial_of(&nodes[1]).await));
    }
    assert!(gslb_serial_gt(moved, first));
    for &(s1, s2) in &timeline {
        assert!(s1 == first || s1 == moved, "{timeline:?}");
        assert!(s2 == first || s2 == moved, "{timeline:?}");
    }
    assert!(timeline.ends_with(&[(moved, moved); 20]), "{timeline:?}");
    wait_until(
        Duration::from_secs(10),
        "NSD to follow the failover",
        || async { x.www().await == ["127.0.0.2"] },
    )
    .await;
    assert_eq!(x.serial().await, Some(moved));

    // Node 1 gone: NSD follows the failback through node 2.
    let [n1, n2] = nodes;
    drop(n1);
    backend.set(Mode::Healthy);
    wait_until(Duration::from_secs(10), "node 2 to fail back", || async {
        addrs(&n2.query("www.xfr.example.com.", RecordType::A).await) == ["127.0.0.1"]
    })
    .await;
    wait_until(
        Duration::from_secs(2),
        "node 2's serial to move",
        || async { serial_of(&n2).await != moved },
    )
    .await;
    let back = serial_of(&n2).await;
    assert!(gslb_serial_gt(back, moved), "{back} after {moved}");
    wait_until(
        Duration::from_secs(10),
        "NSD to follow through node 2",
        || async { x.www().await == ["127.0.0.1"] && x.serial().await == Some(back) },
    )
    .await;
    backend.kill();
}

/// A zone of `n` TXT records of 4,000 bytes besides the test zone's
/// (large records: few of them fill a transfer's socket buffers, and
/// loading and rendering them costs the other tests little CPU).
/// Its regions unchecked: no transition renders it again (the test runs
/// beside others, which must not be starved of CPU).
fn big_zone(backend: SocketAddr, n: usize) -> String {
    let checked = zone(backend, &[]);
    let cut = checked.find("[check.app]").expect("the check table");
    let mut z = checked[..cut].to_string()
        + "[region.primary]\nendpoints = [\"127.0.0.1\"]\n\n[region.secondary]\nendpoints = [\"127.0.0.2\"]\n\n[service.www]\nregions = [\"primary\", \"secondary\"]\nttl = 5\n";
    for i in 0..n {
        z.push_str(&format!(
            "\n[[record]]\nname = \"r{i}\"\ntype = \"TXT\"\nvalue = \"{}\"\n",
            "x".repeat(4000)
        ));
    }
    z
}

/// Ask for an AXFR on a connection whose receive buffer is tiny, and never
/// read: the transfer stays in flight, its writes blocked.
async fn stuck_transfer(server: SocketAddr, key: &TSigner) -> TcpStream {
    stuck_transfer_from(server, key, None).await
}

/// [`stuck_transfer`] from the loopback address `source`.
async fn stuck_transfer_from(server: SocketAddr, key: &TSigner, source: Option<&str>) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    if let Some(ip) = source {
        sock.bind(SocketAddr::new(ip.parse().unwrap(), 0)).unwrap();
    }
    let mut s = sock.connect(server).await.unwrap();
    let bytes = xfr_request(RecordType::AXFR, None, Some(key))
        .to_vec()
        .unwrap();
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    s.write_all(&framed).await.unwrap();
    s
}

/// Two transfers to one address at once, at most: a third gets SERVFAIL
/// while they hang (their client reads nothing), and UDP and TCP queries
/// are answered meanwhile; eight in all, at most: a ninth from a fifth
/// address gets SERVFAIL too; once they end, transfers are served again.
#[tokio::test]
async fn transfers_are_bounded_and_never_hold_up_answers() {
    let backend = Backend::start("127.0.0.1").await;
    let s = TestServer::start_with(&[("xfr.toml", &big_zone(backend.addr, 1500))], |st| {
        st.tsig_keys.insert("xfr-key".into(), key());
    })
    .await;
    s.wait_first_verdicts(Duration::from_secs(5)).await;
    let key = signer(SECRET, "xfr-key.");
    let stuck = [
        stuck_transfer(s.dns, &key).await,
        stuck_transfer(s.dns, &key).await,
    ];
    // Wait until both are in flight: a third is then turned away.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let msgs = transfer(s.dns, &xfr_request(RecordType::AXFR, None, Some(&key))).await;
        if msgs[0].1.metadata.response_code == ResponseCode::ServFail {
            assert_eq!(msgs.len(), 1);
            assert!(msgs[0].1.signature().is_some(), "signed: the request was");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a third transfer was never refused"
        );
    }
    // Answers go on, over UDP and TCP.
    for _ in 0..20 {
        for m in [
            s.query("www.xfr.example.com.", RecordType::A).await,
            s.query_tcp("www.xfr.example.com.", RecordType::A).await,
            s.query("ns1.xfr.example.com.", RecordType::A).await,
        ] {
            assert_eq!(m.metadata.response_code, ResponseCode::NoError);
            assert_eq!(m.answers.len(), 1);
        }
    }
    let body = s.server.metrics.render();
    assert!(
        body.contains("gslb_transfers_refused_total{reason=\"busy\",zone=\"xfr.example.com\"} 1"),
        "{body}"
    );
    // Six more from three other addresses: eight in flight, the most in
    // all, so a fifth address, under its own limit, is turned away.
    let mut more = Vec::new();
    for ip in ["127.0.0.3", "127.0.0.4", "127.0.0.5"] {
        for _ in 0..2 {
            more.push(stuck_transfer_from(s.dns, &key, Some(ip)).await);
        }
    }
    // Each has begun (its first bytes came): eight hold their places.
    for c in &mut more {
        let mut len = [0u8; 2];
        tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut len))
            .await
            .expect("a transfer under way")
            .expect("read");
    }
    let mut c = stuck_transfer_from(s.dns, &key, Some("127.0.0.6")).await;
    let mut len = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut len))
        .await
        .expect("an answer in time")
        .expect("read");
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    c.read_exact(&mut buf).await.unwrap();
    let m = Message::from_vec(&buf).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail, "a ninth");
    assert!(
        s.server
            .metrics
            .render()
            .contains("gslb_transfers_refused_total{reason=\"busy\",zone=\"xfr.example.com\"} 2")
    );
    // The stuck clients go away: the next transfer is whole (1,506
    // records: the SOA twice).
    drop(stuck);
    drop(more);
    wait_until(
        Duration::from_secs(5),
        "transfers to be served again",
        || async {
            let msgs = transfer(s.dns, &xfr_request(RecordType::AXFR, None, Some(&key))).await;
            msgs[0].1.metadata.response_code == ResponseCode::NoError
        },
    )
    .await;
    let msgs = transfer(s.dns, &xfr_request(RecordType::AXFR, None, Some(&key))).await;
    assert_eq!(records(&msgs).len(), 1506);
    assert!(msgs.len() > 1, "several messages");
    assert!(
        msgs.iter()
            .all(|(raw, m)| raw.len() <= 65535 && m.signature().is_some())
    );
}

/// A secondary down while gslb went through changes catches up when it
/// is back (Knot refreshes at start; gslb's NOTIFY retries would tell it
/// too): by IXFR when the history reaches back to its serial, by a full
/// transfer when it does not.
#[tokio::test]
async fn a_restarted_secondary_catches_up_by_ixfr_or_axfr() {
    let backend = Backend::start("127.0.0.1").await;
    let s = start(backend.addr, &[], None).await;
    let mut x = knot(s.dns);
    let xaddr = x.addr;
    let with_text = |t: &str| zone(backend.addr, &[xaddr]).replace("static text", t);
    std::fs::write(s.zone_path("xfr.toml"), with_text("v0")).unwrap();
    s.server.reload().await.expect("reload");
    let txt = |x: &Secondary| {
        let addr = x.addr;
        async move {
            udp(
                addr,
                &request("txt.xfr.example.com.", RecordType::TXT, true),
            )
            .await
            .map(|m| answers(&m))
            .unwrap_or_default()
        }
    };
    wait_until(Duration::from_secs(20), "Knot to load the zone", || async {
        txt(&x).await == ["txt.xfr.example.com. TXT v0"]
    })
    .await;

    for (changes, how) in [(3, "IXFR"), (70, "AXFR")] {
        x.stop();
        let before = x.log().len();
        for i in 1..=changes {
            std::fs::write(s.zone_path("xfr.toml"), with_text(&format!("{how} {i}"))).unwrap();
            s.server.reload().await.expect("reload");
        }
        let serial = serial_of(&s).await;
        x.start();
        let want = format!("txt.xfr.example.com. TXT {how} {changes}");
        wait_until(
            Duration::from_secs(20),
            &format!("Knot to catch up by {how}"),
            || async { txt(&x).await == [want.clone()] && x.serial().await == Some(serial) },
        )
        .await;
        let log = x.log()[before..].to_string();
        let done: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("incoming") && l.contains("finished"))
            .collect();
        assert_eq!(done.len(), 1, "{log}");
        match how {
            "IXFR" => assert!(done[0].contains("IXFR, incoming"), "{log}"),
            // The history does not reach back 70 changes: the zone whole,
            // as an AXFR-style answer to Knot's IXFR (RFC 1995 §4).
            _ => assert!(
                log.contains("receiving AXFR-style IXFR") && done[0].contains("AXFR, incoming"),
                "{log}"
            ),
        }
    }
    let body = s.server.metrics.render();
    assert!(
        body.contains("gslb_transfers_total{kind=\"ixfr\",zone=\"xfr.example.com\"} 1"),
        "{body}"
    );
}

/// A secondary that does not take gslb's NOTIFY (its allow-notify names
/// another address) answers it REFUSED: gslb says so in its status and
/// counts the failure, the secondary keeps its copy until its own refresh.
/// A NOTIFY sent to gslb (a primary takes none) changes nothing.
#[tokio::test]
async fn notifies_refused_by_a_secondary_are_reported_and_notifies_to_gslb_ignored() {
    let mut backend = Backend::start("127.0.0.1").await;
    let s = start(backend.addr, &[], None).await;
    let x = nsd_notified_by(&[s.dns], Some("127.0.0.9"));
    let first = notify_and_load(&s, backend.addr, &x, "NSD").await;
    backend.set(Mode::Failing);
    wait_until(Duration::from_secs(5), "the failover", || async {
        addrs(&s.query("www.xfr.example.com.", RecordType::A).await) == ["127.0.0.2"]
    })
    .await;
    wait_until(
        Duration::from_secs(5),
        "the NOTIFY's refusal in the status",
        || async {
            let v = serde_json::to_value(s.server.status()).unwrap();
            let n = &v["zones"][0]["transfer"]["notify"][0];
            n["error"]
                .as_str()
                .is_some_and(|e| e.contains("rcode 5 (Query Refused)"))
                && n["acked_serial"].is_null()
        },
    )
    .await;
    assert!(x.log().contains("refused"), "{}", x.log());
    assert_eq!(x.www().await, ["127.0.0.1"], "NSD keeps its copy");
    assert_eq!(x.serial().await, Some(first));

    // A NOTIFY to gslb, signed or not: NOTIMP, and nothing moves.
    let before = serial_of(&s).await;
    let key = signer(SECRET, "xfr-key.");
    for signer in [None, Some(&key)] {
        let mut m = Message::new(0x3131, MessageType::Query, OpCode::Notify);
        m.add_query(Query::query(
            Name::from_ascii(APEX).unwrap(),
            RecordType::SOA,
        ));
        if let Some(k) = signer {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let (tsig, _) = k.sign_message(&m, now).unwrap();
            m.set_signature(tsig);
        }
        let r = udp(s.dns, &m).await.expect("an answer");
        assert_eq!(r.metadata.response_code, ResponseCode::NotImp);
    }
    assert_eq!(serial_of(&s).await, before);
    backend.kill();
}

/// Static TXT records enough to spread an AXFR over several messages.
const BULK: usize = 3000;

/// A zone with a service of every policy, besides `www`: `east` is checked
/// like `primary` (the same backend), `v6` is not checked and has an IPv6
/// address; `BULK` static TXT records make the AXFR several messages.
fn every_policy_zone(backend: SocketAddr, notify: &[SocketAddr]) -> String {
    let mut z = zone(backend, notify)
        + r#"
[region.cdn]
cname = "edge.cdn.example.net."

[region.east]
endpoints = ["127.0.0.1"]
check = "app"
location = [39.0, -77.5]

[region.v6]
endpoints = ["127.0.0.6", "2001:db8::6"]
location = [53.3, -6.3]

[service.all]
policy = "all-healthy"
regions = ["primary", "secondary"]

[service.split]
policy = "weighted"
weights = { primary = 3, secondary = 1 }

[geo.world]
nets = { "198.51.100.0/24" = "office" }

[service.geo]
policy = "geo"
geo = "world"
map = { office = ["secondary"], "*" = ["primary", "secondary"] }

[geo.places]
nets = { "203.0.113.0/24" = "v6" }

[service.near]
policy = "nearest"
geo = "places"
regions = ["east", "v6"]
answers = 1

[service.dual]
regions = ["v6"]

[service.strict]
regions = ["east"]
when-all-down = "nodata"

[service.edge]
regions = ["cdn", "primary"]
"#;
    for i in 0..BULK {
        z.push_str(&format!(
            "\n[[record]]\nname = \"bulk{i}\"\ntype = \"TXT\"\nvalue = \"static record number {i} of the bulk set\"\n"
        ));
    }
    z
}

/// What a secondary answers for `name` (A, AAAA; a CNAME as itself), or
/// the rcode when it is not NOERROR.
async fn secondary_answer(x: &Secondary, name: &str) -> Vec<String> {
    let mut got = Vec::new();
    for rtype in [RecordType::A, RecordType::AAAA] {
        let Some(m) = udp(x.addr, &request(name, rtype, true)).await else {
            return vec!["no answer".into()];
        };
        if m.metadata.response_code != ResponseCode::NoError {
            return vec![format!("{}", m.metadata.response_code)];
        }
        for r in m.answers.iter().filter(|r| r.name.to_string() == name) {
            let line = format!("{} {}", r.record_type(), r.data);
            if !got.contains(&line) {
                got.push(line);
            }
        }
    }
    got.sort();
    got
}

/// NSD and Knot, keyed with HMAC-SHA512, answer every service as the
/// README's "What a secondary serves" renders it, before and after the
/// checked regions fail: failover its first region up, all-healthy and
/// weighted every healthy endpoint, geo the `*` entry, nearest the order
/// of `regions`, A and AAAA, a CNAME region its CNAME, a `nodata` service
/// absent while all down. The zone's AXFR is several messages, each
/// signed: both secondaries verify them all.
#[tokio::test]
async fn secondaries_answer_every_service_as_the_readme_renders_it() {
    let mut backend = Backend::start("127.0.0.1").await;
    let s = TestServer::start_with(&[("xfr.toml", &zone(backend.addr, &[]))], |st| {
        st.tsig_keys
            .insert("xfr-key".into(), key_of(TsigAlgorithm::HmacSha512));
    })
    .await;
    s.wait_first_verdicts(Duration::from_secs(5)).await;
    let sha512 = Some(SecondaryKey {
        algorithm: "hmac-sha512",
        secret_b64: SECRET_B64,
    });
    let secondaries = [
        nsd_keyed(&[s.dns], None, sha512, None),
        knot_keyed(s.dns, sha512),
    ];
    let notify: Vec<SocketAddr> = secondaries.iter().map(|x| x.addr).collect();
    std::fs::write(
        s.zone_path("xfr.toml"),
        every_policy_zone(backend.addr, &notify),
    )
    .unwrap();
    s.server.reload().await.expect("reload");
    s.wait_first_verdicts(Duration::from_secs(5)).await;
    wait_until(Duration::from_secs(5), "the new zone's serial", || async {
        s.server
            .engine
            .transfers
            .journal("xfr.example.com")
            .current()
            .is_some_and(|v| {
                v.records
                    .iter()
                    .any(|r| r.name.to_string().starts_with("near."))
            })
    })
    .await;
    // The AXFR is several messages, each signed with the zone's key.
    let key = TSigner::new(
        SECRET.to_vec(),
        TsigAlgorithm::HmacSha512,
        Name::from_ascii("xfr-key.").unwrap(),
        300,
    )
    .unwrap();
    let msgs = transfer(s.dns, &xfr_request(RecordType::AXFR, None, Some(&key))).await;
    assert!(msgs.len() >= 3, "{} messages", msgs.len());
    assert!(msgs.iter().all(|(_, m)| m.signature().is_some()));

    let n = |name: &str| format!("{name}.{APEX}");
    let before: Vec<(String, Vec<&str>)> = vec![
        (n("www"), vec!["A 127.0.0.1"]),
        (n("all"), vec!["A 127.0.0.1", "A 127.0.0.2"]),
        (n("split"), vec!["A 127.0.0.1", "A 127.0.0.2"]),
        (n("geo"), vec!["A 127.0.0.1"]),
        (n("near"), vec!["A 127.0.0.1"]),
        (n("dual"), vec!["A 127.0.0.6", "AAAA 2001:db8::6"]),
        (n("strict"), vec!["A 127.0.0.1"]),
        (n("edge"), vec!["CNAME edge.cdn.example.net."]),
    ];
    let after: Vec<(String, Vec<&str>)> = vec![
        (n("www"), vec!["A 127.0.0.2"]),
        (n("all"), vec!["A 127.0.0.2"]),
        (n("split"), vec!["A 127.0.0.2"]),
        (n("geo"), vec!["A 127.0.0.2"]),
        (n("near"), vec!["A 127.0.0.6", "AAAA 2001:db8::6"]),
        (n("dual"), vec!["A 127.0.0.6", "AAAA 2001:db8::6"]),
        (n("strict"), vec!["Non-Existent Domain"]),
        (n("edge"), vec!["CNAME edge.cdn.example.net."]),
    ];
    let mut serials = Vec::new();
    for (phase, want) in [("before", &before), ("after", &after)] {
        if phase == "after" {
            backend.set(Mode::Failing);
            // Both checked regions (probed each on its own) are down when
            // no record of the zone as transferred names 127.0.0.1.
            wait_until(Duration::from_secs(5), "gslb to fail over", || async {
                s.server
                    .engine
                    .transfers
                    .journal("xfr.example.com")
                    .current()
                    .is_some_and(|v| !v.records.iter().any(|r| r.data.to_string() == "127.0.0.1"))
            })
            .await;
        }
        let serial = serial_of(&s).await;
        serials.push(serial);
        for x in &secondaries {
            wait_until(
                Duration::from_secs(20),
                &format!("{} to load serial {serial} ({phase})", x.name),
                || async { x.serial().await == Some(serial) },
            )
            .await;
            for (name, want) in want.iter() {
                assert_eq!(
                    secondary_answer(x, name).await,
                    *want,
                    "{} for {name} {phase} the failure\n{}",
                    x.name,
                    x.log()
                );
            }
            let m = udp(x.addr, &request(&n("bulk2999"), RecordType::TXT, true))
                .await
                .expect("an answer");
            assert_eq!(
                answers(&m),
                [format!(
                    "bulk2999.{APEX} TXT static record number 2999 of the bulk set"
                )],
                "{}: the last message's records",
                x.name
            );
        }
    }
    // NSD verified every message of every transfer with the key.
    let nsd_log = nsd_verified(&secondaries[0], 2);
    // NSD's log names no transfer kind, but gives each one's size: the
    // first load is the whole zone (over 200 kB), the failover's update a
    // few hundred bytes, so an IXFR.
    let size_of = |serial: u32| -> usize {
        let line = nsd_log
            .lines()
            .find(|l| {
                l.contains(&format!("received update to serial {serial} "))
                    && l.contains(" bytes in ")
            })
            .unwrap_or_else(|| panic!("NSD's update to {serial} in\n{nsd_log}"));
        let before = line.split(" bytes in ").next().unwrap();
        before.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(size_of(serials[0]) > 200_000, "{nsd_log}");
    assert!(size_of(serials[1]) < 5_000, "{nsd_log}");
    // Knot's log names it: the refresh to the failover's serial follows an
    // IXFR.
    let knot_log = secondaries[1].log();
    let lines: Vec<&str> = knot_log.lines().collect();
    let refresh = lines
        .iter()
        .position(|l| l.contains("refresh") && l.contains(&format!("-> {}", serials[1])))
        .unwrap_or_else(|| panic!("Knot's refresh to {} in\n{knot_log}", serials[1]));
    assert!(
        lines[..refresh]
            .iter()
            .rev()
            .find(|l| l.contains(", incoming") && l.contains("finished"))
            .is_some_and(|l| l.contains("IXFR, incoming")),
        "{knot_log}"
    );
    backend.kill();
}

/// A flap that changes no answer keeps the serial: the secondary region
/// of a failover service going down and up while the primary serves.
#[tokio::test]
async fn a_flap_that_changes_no_answer_keeps_the_serial() {
    let primary = Backend::start("127.0.0.1").await;
    let mut secondary = Backend::start("127.0.0.2").await;
    let text = zone(primary.addr, &[]).replace(
        "[region.secondary]\nendpoints = [\"127.0.0.2\"]\n",
        &format!(
            "[check.standby]\ntype = \"http\"\nport = {}\npath = \"/health\"\ninterval = \"200ms\"\ntimeout = \"150ms\"\nrecheck = \"50ms\"\nfall = 2\nrise = 2\n\n[region.secondary]\nendpoints = [\"127.0.0.2\"]\ncheck = \"standby\"\n",
            secondary.addr.port()
        ),
    );
    assert!(text.contains("check = \"standby\""));
    let s = TestServer::start_with(&[("xfr.toml", &text)], |st| {
        st.tsig_keys.insert("xfr-key".into(), key());
    })
    .await;
    s.wait_first_verdicts(Duration::from_secs(5)).await;
    let serial = serial_of(&s).await;
    let transitions = s.region_transitions();
    secondary.set(Mode::Failing);
    wait_until(
        Duration::from_secs(5),
        "the secondary region down",
        || async { s.region_transitions() > transitions },
    )
    .await;
    secondary.set(Mode::Healthy);
    wait_until(
        Duration::from_secs(5),
        "the secondary region up again",
        || async { s.region_transitions() > transitions + 1 },
    )
    .await;
    // The journal has seen both transitions and rendered the zone twice.
    assert_eq!(serial_of(&s).await, serial);
    assert_eq!(
        addrs(&s.query("www.xfr.example.com.", RecordType::A).await),
        ["127.0.0.1"]
    );
    assert!(
        s.server
            .engine
            .transfers
            .journal("xfr.example.com")
            .changes_kept()
            == 0
    );
    // A reload that changes nothing a secondary gets (another zone added,
    // a check's timing) keeps the serial too.
    std::fs::write(
        s.zone_path("other.toml"),
        "[zone]\nname = \"other.example.com.\"\nnameservers = [\"ns1.other.example.com.\"]\nhostmaster = \"hostmaster@example.com\"\n\n[[record]]\nname = \"ns1\"\ntype = \"A\"\nvalue = \"192.0.2.1\"\n",
    )
    .unwrap();
    std::fs::write(
        s.zone_path("xfr.toml"),
        text.replace("interval = \"200ms\"", "interval = \"300ms\""),
    )
    .unwrap();
    s.server.reload().await.expect("reload");
    assert!(
        s.query("ns1.other.example.com.", RecordType::A)
            .await
            .answers
            .len()
            == 1
    );
    s.wait_first_verdicts(Duration::from_secs(5)).await;
    assert_eq!(serial_of(&s).await, serial);
    secondary.kill();
}

/// Real secondaries that may not have the zone get nothing: NSD with a
/// wrong secret (BADSIG), Knot with no key (unsigned: REFUSED), NSD asking
/// from an address outside `allow`. Each refusal is counted by reason and
/// none of them serves the zone.
#[tokio::test]
async fn secondaries_without_the_key_or_from_outside_allow_get_nothing() {
    let backend = Backend::start("127.0.0.1").await;
    let text = zone(backend.addr, &[]).replace("\"127.0.0.0/8\"", "\"127.0.0.1/32\"");
    let s = TestServer::start_with(&[("xfr.toml", &text)], |st| {
        st.tsig_keys.insert("xfr-key".into(), key());
    })
    .await;
    s.wait_first_verdicts(Duration::from_secs(5)).await;
    let refused = |reason: &str| {
        s.server
            .metrics
            .transfers
            .refused
            .with_label_values(&["xfr.example.com", reason])
            .get()
    };
    let wrong = Some(SecondaryKey {
        algorithm: "hmac-sha256",
        secret_b64: "d3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmctd3JvbmchISE=",
    });
    for (reason, case) in [("tsig", 0), ("tsig", 1), ("address", 2)] {
        let before = refused(reason);
        let x = match case {
            0 => nsd_keyed(&[s.dns], None, wrong, None),
            1 => knot_keyed(s.dns, None),
            _ => nsd_keyed(&[s.dns], None, GOOD, Some("127.0.0.77")),
        };
        wait_until(
            Duration::from_secs(20),
            &format!("{}'s request refused ({reason})", x.name),
            || async { refused(reason) > before },
        )
        .await;
        // Knot says so itself: the count just seen might otherwise have
        // been the previous NSD's last request.
        if case == 1 {
            wait_until(
                Duration::from_secs(20),
                "Knot's log of the refusal",
                || async { x.log().to_lowercase().contains("refused") },
            )
            .await;
        }
        // What it asked was refused; it has no zone to serve.
        assert_eq!(x.serial().await, None, "{}\n{}", x.name, x.log());
        assert!(x.www().await.is_empty(), "{}", x.name);
    }
    assert_eq!(
        s.server
            .metrics
            .transfers
            .served
            .with_label_values(&["xfr.example.com", "axfr"])
            .get(),
        0
    );
}

/// Name secondary `x` (`what`, for messages) in the zone's `notify` (a
/// reload) and wait until it has loaded the serial gslb serves; returns
/// that serial.
async fn notify_and_load(s: &TestServer, backend: SocketAddr, x: &Secondary, what: &str) -> u32 {
    std::fs::write(s.zone_path("xfr.toml"), zone(backend, &[x.addr])).unwrap();
    s.server.reload().await.expect("reload");
    let first = serial_of(s).await;
    let waiting = format!("{what} to load the zone");
    wait_until(Duration::from_secs(20), &waiting, || async {
        x.serial().await == Some(first)
    })
    .await;
    first
}

/// Name `secondary` in the zone's `notify` (a reload), fail the primary
/// over, and return the serial gslb then serves.
async fn notify_then_fail_over(
    s: &TestServer,
    backend: &mut Backend,
    secondary: SocketAddr,
) -> u32 {
    std::fs::write(s.zone_path("xfr.toml"), zone(backend.addr, &[secondary])).unwrap();
    s.server.reload().await.expect("reload");
    backend.set(Mode::Failing);
    wait_until(Duration::from_secs(5), "the failover", || async {
        addrs(&s.query("www.xfr.example.com.", RecordType::A).await) == ["127.0.0.2"]
    })
    .await;
    serial_of(s).await
}

/// A secondary down through five NOTIFYs hears of the change when it is
/// back: gslb logs and counts the failures from the fifth try on, and
/// keeps trying (here the sixth try, 31 s after the first) until the
/// restarted NSD acknowledges.
#[tokio::test]
async fn notify_is_retried_until_a_secondary_back_from_an_outage_acknowledges() {
    let mut backend = Backend::start("127.0.0.1").await;
    let s = start(backend.addr, &[], None).await;
    let mut x = nsd(s.dns);
    let first = serial_of(&s).await;
    wait_until(Duration::from_secs(20), "NSD to load the zone", || async {
        x.serial().await == Some(first)
    })
    .await;
    x.stop();
    let moved = notify_then_fail_over(&s, &mut backend, x.addr).await;
    assert_ne!(moved, first);
    let target = x.addr.to_string();
    let count = |result: &str| {
        s.server
            .metrics
            .transfers
            .notifies
            .with_label_values(&["xfr.example.com", &target, result])
            .get()
    };
    wait_until(
        Duration::from_secs(40),
        "five unanswered NOTIFYs counted as failed",
        || async { count("failed") >= 1 },
    )
    .await;
    assert_eq!(count("acked"), 0);
    let sent = count("sent");
    assert!(sent >= 5, "{sent} sent");
    x.start();
    wait_until(
        Duration::from_secs(40),
        "the restarted NSD to acknowledge a retry",
        || async { count("acked") >= 1 },
    )
    .await;
    assert!(count("sent") > sent, "acknowledged a try after the fifth");
    let v = serde_json::to_value(s.server.status()).unwrap();
    let n = &v["zones"][0]["transfer"]["notify"][0];
    assert_eq!(n["acked_serial"], moved, "{n}");
    assert!(n["error"].is_null(), "{n}");
    assert!(
        x.log().contains(&format!(
            "notify for xfr.example.com. from 127.0.0.1 serial {moved}"
        )),
        "{}",
        x.log()
    );
    wait_until(Duration::from_secs(10), "NSD to follow", || async {
        x.www().await == ["127.0.0.2"]
    })
    .await;
    backend.kill();
}

/// A zone of 30 nameservers, each with its address in the zone: the apex
/// NS answer is about 600 bytes, its glue about 500 more.
fn many_nameservers_zone(backend: SocketAddr) -> String {
    let names: Vec<String> = (1..=30).map(|i| format!("\"ns{i}.{APEX}\"")).collect();
    let mut z = zone(backend, &[]).replace(
        "nameservers = [\"ns1.xfr.example.com.\"]",
        &format!("nameservers = [{}]", names.join(", ")),
    );
    for i in 2..=30 {
        z.push_str(&format!(
            "\n[[record]]\nname = \"ns{i}\"\ntype = \"A\"\nvalue = \"192.0.2.{i}\"\n"
        ));
    }
    z
}

/// A signed query over UDP gets a signed answer that fits the client's
/// size with its TSIG: room is kept for it, so what does not fit beside
/// it is the glue (left out, no TC), not the answer; without EDNS (512
/// bytes) it is TC with the question alone, still signed.
#[tokio::test]
async fn a_signed_udp_answer_keeps_room_for_its_tsig() {
    let backend = Backend::start("127.0.0.1").await;
    let s = TestServer::start_with(
        &[("xfr.toml", &many_nameservers_zone(backend.addr))],
        |st| {
            st.tsig_keys.insert("xfr-key".into(), key());
        },
    )
    .await;
    let key = signer(SECRET, "xfr-key.");
    let ask = |payload: Option<u16>| {
        let mut m = request(APEX, RecordType::NS, payload.is_some());
        if let (Some(p), Some(e)) = (payload, m.edns.as_mut()) {
            e.set_max_payload(p);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let (tsig, verifier) = key.sign_message(&m, now).unwrap();
        m.set_signature(tsig);
        (m, verifier.expect("a verifier for the answer"))
    };
    // Unsigned, the whole answer with its glue is about 1,100 bytes.
    let plain = udp(s.dns, &request(APEX, RecordType::NS, true))
        .await
        .unwrap();
    let whole = plain.to_vec().unwrap().len();
    assert_eq!((plain.answers.len(), plain.additionals.len()), (30, 30));
    assert!((1000..1150).contains(&whole), "{whole} bytes");
    for (payload, answers, glue, tc) in [
        // Room enough for everything and the TSIG.
        (Some(4096), 30, 30, false),
        // The unsigned answer fits, the signed one would not: the glue
        // goes, the answer stays, no TC.
        (Some(whole as u16 + 10), 30, 0, false),
        // 512 bytes: not even the NS set fits.
        (None, 0, 0, true),
    ] {
        let (m, mut verifier) = ask(payload);
        let raw = udp_raw(s.dns, &m.to_vec().unwrap(), Duration::from_secs(1))
            .await
            .expect("an answer");
        let limit = payload.map_or(512, usize::from);
        assert!(raw.len() <= limit, "{} bytes for {limit}", raw.len());
        verifier
            .verify(&raw)
            .expect("signed with the key, over the request's MAC");
        let r = Message::from_vec(&raw).unwrap();
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert_eq!(r.metadata.truncation, tc, "{payload:?}");
        assert_eq!(r.answers.len(), answers, "{payload:?}");
        assert_eq!(r.additionals.len(), glue, "{payload:?}");
        assert_eq!(r.edns.is_some(), payload.is_some(), "the OPT stays");
    }
}

/// NOTIFY goes out from the address gslb listens on, not whatever the
/// system picks: gslb on 127.0.0.3, NSD taking NOTIFY only from there
/// (the primary it transfers from) acknowledges it. From 127.0.0.1, the
/// system's choice for a secondary on 127.0.0.1, NSD refused it.
#[tokio::test]
async fn notify_comes_from_the_address_gslb_listens_on() {
    let mut backend = Backend::start("127.0.0.1").await;
    let s = TestServer::start_with(&[("xfr.toml", &zone(backend.addr, &[]))], |st| {
        st.tsig_keys.insert("xfr-key".into(), key());
        st.listen = vec!["127.0.0.3:0".parse().unwrap()];
    })
    .await;
    s.wait_first_verdicts(Duration::from_secs(5)).await;
    assert_eq!(s.dns.ip().to_string(), "127.0.0.3");
    let x = nsd(s.dns);
    let moved = notify_then_fail_over(&s, &mut backend, x.addr).await;
    wait_until(Duration::from_secs(20), "NSD to acknowledge", || async {
        let v = serde_json::to_value(s.server.status()).unwrap();
        v["zones"][0]["transfer"]["notify"][0]["acked_serial"] == moved
    })
    .await;
    let log = x.log();
    assert!(
        log.contains(&format!(
            "notify for xfr.example.com. from 127.0.0.3 serial {moved}"
        )),
        "{log}"
    );
    assert!(!log.contains("refused"), "{log}");
    backend.kill();
}
