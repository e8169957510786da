//! Helpers: start the daemon in-process on 127.0.0.1:0 with zone files in a
//! temporary folder, and query it over real UDP and TCP sockets with
//! hickory-proto messages.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gslb::app::{Server, Settings};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// A server running in this process, and the folder its zones live in.
pub struct TestServer {
    pub server: Server,
    pub dns: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    /// Start with these zone files (name, contents).
    pub async fn start(zones: &[(&str, &str)]) -> TestServer {
        Self::start_with(zones, |_| {}).await
    }

    /// Start with these zone files, adjusting the settings first.
    pub async fn start_with(
        zones: &[(&str, &str)],
        adjust: impl FnOnce(&mut Settings),
    ) -> TestServer {
        Self::start_prepared(zones, |_| {}, adjust).await
    }

    /// Start with these zone files, after `prepare` wrote what else the
    /// zones folder needs (a geo database, say).
    pub async fn start_prepared(
        zones: &[(&str, &str)],
        prepare: impl FnOnce(&Path),
        adjust: impl FnOnce(&mut Settings),
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        prepare(dir.path());
        for (name, text) in zones {
            std::fs::write(dir.path().join(name), text).expect("write zone");
        }
        let mut settings = test_settings(dir.path());
        adjust(&mut settings);
        let server = Server::start(settings).await.expect("server starts");
        let dns = server.dns_addrs[0];
        TestServer { server, dns, dir }
    }

    /// Path of a file in the zones folder.
    pub fn zone_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Query over UDP with EDNS (payload 1232), RD set.
    pub async fn query(&self, name: &str, rtype: RecordType) -> Message {
        udp(self.dns, &request(name, rtype, true))
            .await
            .expect("UDP answer")
    }

    /// Wait until every checked endpoint has its first verdict.
    pub async fn wait_first_verdicts(&self, limit: Duration) {
        let health = &self.server.health;
        wait_until(limit, "first verdicts", || async {
            health.first_verdicts_known()
        })
        .await;
    }

    /// Region transitions so far (endpoint transitions left out).
    pub fn region_transitions(&self) -> usize {
        self.server
            .health
            .journal()
            .iter()
            .filter(|t| t.endpoint.is_none())
            .count()
    }

    /// Query over TCP, RD set.
    pub async fn query_tcp(&self, name: &str, rtype: RecordType) -> Message {
        tcp(self.dns, &request(name, rtype, true))
            .await
            .expect("TCP answer")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.server.shutdown();
    }
}

/// Settings for tests: everything on loopback port 0, no state file.
pub fn test_settings(zones: &Path) -> Settings {
    Settings {
        zones: vec![zones.to_path_buf()],
        listen: vec!["127.0.0.1:0".parse().expect("addr")],
        admin: None,
        state_file: None,
        udp_workers: 1,
        tcp_idle: Duration::from_secs(2),
        ..Settings::default()
    }
}

/// GET a URL on loopback: (status, body).
pub async fn http_get(url: &str) -> (u16, String) {
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
        .unwrap();
    let code = r.status().as_u16();
    (code, r.text().await.unwrap())
}

/// A query message.
pub fn request(name: &str, rtype: RecordType, edns: bool) -> Message {
    let mut m = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    let mut q = Query::query(Name::from_ascii(name).expect("name"), rtype);
    q.set_query_class(DNSClass::IN);
    m.add_query(q);
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    m
}

fn rand_id() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0x1234);
    NEXT.fetch_add(7, Ordering::Relaxed)
}

/// Send a message over UDP and wait (1 s) for the reply with its ID.
pub async fn udp(server: SocketAddr, m: &Message) -> Option<Message> {
    let bytes = udp_raw(server, &m.to_vec().expect("encode"), Duration::from_secs(1)).await?;
    let resp = Message::from_vec(&bytes).expect("server sends valid DNS");
    assert_eq!(resp.metadata.id, m.metadata.id, "reply ID matches");
    Some(resp)
}

/// Send bytes over UDP; the reply bytes, or None when nothing came within `wait`.
pub async fn udp_raw(server: SocketAddr, bytes: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    sock.send_to(bytes, server).await.expect("send");
    let mut buf = vec![0u8; 65535];
    match tokio::time::timeout(wait, sock.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

/// Send a message over a new TCP connection.
pub async fn tcp(server: SocketAddr, m: &Message) -> Option<Message> {
    let mut s = TcpStream::connect(server).await.ok()?;
    tcp_exchange(&mut s, m).await
}

/// Send one message on an open TCP connection and read its reply.
pub async fn tcp_exchange(s: &mut TcpStream, m: &Message) -> Option<Message> {
    let bytes = m.to_vec().expect("encode");
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    s.write_all(&framed).await.ok()?;
    let mut len = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut len))
        .await
        .ok()?
        .ok()?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).await.ok()?;
    Some(Message::from_vec(&buf).expect("server sends valid DNS"))
}

/// The answer section as "name type data" strings, for readable assertions.
pub fn answers(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .map(|r| format!("{} {} {}", r.name, r.record_type(), r.data))
        .collect()
}

/// The A/AAAA addresses in the answer.
pub fn addrs(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter(|r| matches!(r.record_type(), RecordType::A | RecordType::AAAA))
        .map(|r| r.data.to_string())
        .collect()
}

/// Poll `f` every 10 ms until it is true, failing after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if f().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The example zone the DNS tests use.
pub const ZONE: &str = r#"
[zone]
name = "gslb.example.com."
ttl = 300
nameservers = ["ns1.gslb.example.com.", "ns2.gslb.example.com."]
hostmaster = "hostmaster@example.com"
negative-ttl = 60
serial = 2024010101

[[record]]
name = "ns1"
type = "A"
value = "198.51.100.53"

[[record]]
name = "ns2"
type = "A"
value = "203.0.113.53"

[[record]]
name = "@"
type = "MX"
value = "10 mail"

[[record]]
name = "mail"
type = "A"
value = "192.0.2.25"

[[record]]
name = "mail"
type = "AAAA"
value = "2001:db8::25"

[[record]]
name = "static"
type = "A"
value = "192.0.2.10"

[[record]]
name = "static"
type = "AAAA"
value = "2001:db8::10"

[[record]]
name = "static"
type = "TXT"
value = "hello"

[[record]]
name = "docs"
type = "CNAME"
value = "static"

[[record]]
name = "chain1"
type = "CNAME"
value = "docs.gslb.example.com."

[[record]]
name = "away"
type = "CNAME"
value = "www.example.net."

[[record]]
name = "dangling"
type = "CNAME"
value = "nothing-here"

[[record]]
name = "loop1"
type = "CNAME"
value = "loop2"

[[record]]
name = "loop2"
type = "CNAME"
value = "loop1"

[[record]]
name = "_sip._tcp"
type = "SRV"
value = "10 5 5060 static"

[[record]]
name = "*.pages"
type = "A"
value = "192.0.2.80"

[[record]]
name = "*.alias"
type = "CNAME"
value = "static"

[[record]]
name = "@"
type = "CAA"
value = "0 issue \"letsencrypt.org\""

[[record]]
name = "10.2.0.192.in-addr"
type = "PTR"
value = "static"

[[record]]
name = "lab"
type = "NS"
value = "ns.lab"

[[record]]
name = "lab"
type = "NS"
value = "ns.elsewhere.example.net."

[[record]]
name = "ns.lab"
type = "A"
value = "192.0.2.53"

[[record]]
name = "to-lab"
type = "CNAME"
value = "host.lab"
"#;

/// For each (name, backend address): a fast HTTP check on the backend's port
/// (interval 200 ms, timeout 150 ms, recheck 50 ms, fall 3, rise 2) and a
/// region of that name whose one endpoint is the backend's address.
pub fn backend_regions(regions: &[(&str, SocketAddr)]) -> String {
    regions
        .iter()
        .map(|(name, addr)| {
            format!(
                "\n[check.{name}]\ntype = \"http\"\nport = {}\npath = \"/health\"\ninterval = \"200ms\"\ntimeout = \"150ms\"\nrecheck = \"50ms\"\n\n[region.{name}]\nendpoints = [\"{}\"]\ncheck = \"{name}\"\n",
                addr.port(),
                addr.ip()
            )
        })
        .collect()
}

/// A CA for tests (rcgen), allowed to sign server and client certificates.
pub fn test_ca_issuer(common_name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyUsagePurpose};
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().expect("key"))
        .expect("CA")
}

/// A loopback address whose port is free for both UDP and TCP (for a
/// server process that cannot report the port it bound).
pub fn free_udp_tcp_addr() -> SocketAddr {
    loop {
        let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = t.local_addr().unwrap();
        if std::net::UdpSocket::bind(a).is_ok() {
            return a;
        }
    }
}

/// One probe of `addr` by `prober`, bounded (a stuck probe fails the test
/// here instead of hanging it).
pub async fn probe_once(
    prober: &gslb::health::probe::CheckProber,
    addr: std::net::IpAddr,
) -> gslb::health::probe::ProbeResult {
    let endpoint = prober.for_endpoint(addr).expect("endpoint prober");
    tokio::time::timeout(Duration::from_secs(20), endpoint.probe())
        .await
        .expect("probe returned")
}

/// One probe of `check` on 127.0.0.1.
pub async fn probe_check(check: gslb::model::Check) -> gslb::health::probe::ProbeResult {
    let prober = gslb::health::probe::CheckProber::new(std::sync::Arc::new(check)).expect("prober");
    probe_once(&prober, std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)).await
}

/// The probe ended this way, for this reason.
pub fn assert_outcome(
    r: &gslb::health::probe::ProbeResult,
    outcome: gslb::health::ProbeOutcome,
    reason: &str,
) {
    assert_eq!((r.outcome, r.reason.as_str()), (outcome, reason), "{r:?}");
}

/// A check of `kind` on `port` that probes every second within `timeout`,
/// with no recheck and fall and rise 1.
pub fn quick_check(
    kind: gslb::model::CheckKind,
    port: u16,
    timeout: Duration,
) -> gslb::model::Check {
    gslb::model::Check {
        name: "test".into(),
        kind,
        port,
        target: None,
        interval: Duration::from_secs(1),
        timeout,
        recheck: None,
        fall: 1,
        rise: 1,
        probers: None,
    }
}

/// Wait until `api.gslb.example.com` answers A with exactly `addr`.
pub async fn wait_for_api(dns: SocketAddr, addr: &str, what: &str) {
    wait_until(Duration::from_secs(5), what, || async {
        let m = udp(dns, &request("api.gslb.example.com.", RecordType::A, false)).await;
        m.map(|m| addrs(&m)).unwrap_or_default() == [addr]
    })
    .await;
}

/// A zone (the example's head) whose service `api` fails over from region
/// `primary` (127.0.0.1, checked by `check`, whose table is `check_table`)
/// to `secondary` (127.0.0.2, unchecked).
pub fn failover_zone(check_table: &str) -> String {
    format!(
        "{ZONE}\n[check.app]\n{check_table}\n\n[region.primary]\nendpoints = [\"127.0.0.1\"]\ncheck = \"app\"\n\n[region.secondary]\nendpoints = [\"127.0.0.2\"]\n\n[service.api]\nregions = [\"primary\", \"secondary\"]\n"
    )
}

/// Run a command (ip, nft, sysctl) that must succeed.
pub fn run(cmd: &str, args: &[&str]) {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .expect("command runs");
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `gslb serve` with no admin API, no state file, warnings only.
pub const SERVE_QUIET: [&str; 7] = [
    "serve",
    "--admin",
    "off",
    "--state-file",
    "off",
    "--log-level",
    "warn",
];

/// A `gslb serve` child process, killed on drop.
pub struct Child(pub std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// [`SERVE_QUIET`] of the real binary on `dns` with the zones at `zones`:
/// add what a test needs, then spawn.
pub fn serve_command(dns: SocketAddr, zones: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_gslb"));
    cmd.args(SERVE_QUIET)
        .arg("--listen")
        .arg(dns.to_string())
        .arg("--zones")
        .arg(zones)
        .stdin(std::process::Stdio::null());
    cmd
}

/// `www` failing over from `primary` (127.0.0.1, checked over HTTP on
/// `port`) to `secondary` (127.0.0.2): the health-dependent part of the
/// DNSSEC and transfer test zones.
pub fn failover_www(port: u16) -> String {
    format!(
        r#"[check.app]
type = "http"
port = {port}
path = "/health"
interval = "200ms"
timeout = "150ms"
recheck = "50ms"
fall = 2
rise = 2

[region.primary]
endpoints = ["127.0.0.1"]
check = "app"

[region.secondary]
endpoints = ["127.0.0.2"]

[service.www]
regions = ["primary", "secondary"]
ttl = 5
"#
    )
}
