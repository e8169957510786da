//! Validated, immutable configuration: zones with their static records, and the
//! checks, regions and services that make answers health-aware.
//!
//! Plain data built by `config` and read by `dns`, `policy` and `health`. It
//! depends on nothing in this crate but uses hickory-proto's `Name`, `Record`
//! and `RData` as the representation of DNS data: they are the wire encoding we
//! serve, so keeping our own copy would only add a conversion.

mod cluster;
mod geo;
mod transfer;
mod zone;

pub use cluster::{ClusterSettings, Quorum};
pub use geo::{Coords, GeoDb, GeoEntry, GeoMap, GeoNet, GeoPolicy, MapKey, NearestPolicy};
pub use transfer::{Transfer, TsigKey};
pub use zone::{Node, RRset, RecordStore, Zone, label as zone_label};

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::Name;

/// A position in a configuration file, for messages that name `file:line:column`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Origin {
    /// The file the item was read from.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Line 0: the whole file (cannot be read), no position to give.
        if self.line == 0 {
            write!(f, "{}", self.file.display())
        } else {
            write!(f, "{}:{}:{}", self.file.display(), self.line, self.col)
        }
    }
}

/// "1 zone", "2 zones": a count with its noun.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// What a probe of a check does: connect, or send an HTTP(S) request.
///
/// The HTTP-only settings live in [`HttpCheck`], so a TCP check carries
/// none of them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CheckKind {
    /// TCP connect: the endpoint is up when the three-way handshake completes.
    Tcp,
    /// An HTTP request (over TLS when [`HttpCheck::tls`] is set), judged by
    /// status and body.
    Http(Box<HttpCheck>),
    /// A DNS query, judged by rcode and answer.
    Dns(Box<DnsCheck>),
    /// A program, judged by its exit status.
    Exec(Box<ExecCheck>),
    /// ICMP echo: the endpoint is up when it replies.
    Icmp,
    /// The gRPC health checking protocol (`grpc.health.v1.Health/Check`).
    Grpc(Box<GrpcCheck>),
}

/// A gRPC health check.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GrpcCheck {
    /// The service asked about; empty: the server as a whole.
    pub service: String,
    /// Over TLS (with these settings), or plain HTTP/2 when `None`.
    pub tls: Option<TlsCheck>,
    /// TLS server name and `:authority` (default: the endpoint address).
    pub host: Option<String>,
}

/// An exec check: a program run once per probe (no shell), passing on exit
/// status 0.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ExecCheck {
    /// The program (an absolute path) and its arguments.
    pub command: Vec<String>,
    /// Run as this user; `None`: as gslb's own user, or as `nobody` when
    /// that is root.
    pub user: Option<ExecUser>,
    /// At most this many runs of this check at once.
    pub max_running: u32,
}

/// A user a program runs as.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ExecUser {
    /// As written.
    pub name: String,
    /// Its user ID.
    pub uid: u32,
    /// Its primary group.
    pub gid: u32,
}

/// The rcodes a DNS check may expect, by the names dig shows.
pub const DNS_RCODES: [(&str, hickory_proto::op::ResponseCode); 6] = [
    ("NOERROR", hickory_proto::op::ResponseCode::NoError),
    ("FORMERR", hickory_proto::op::ResponseCode::FormErr),
    ("SERVFAIL", hickory_proto::op::ResponseCode::ServFail),
    ("NXDOMAIN", hickory_proto::op::ResponseCode::NXDomain),
    ("NOTIMP", hickory_proto::op::ResponseCode::NotImp),
    ("REFUSED", hickory_proto::op::ResponseCode::Refused),
];

/// The name of an rcode as dig shows it ("SERVFAIL", else "RCODE9").
pub fn rcode_name(rcode: hickory_proto::op::ResponseCode) -> String {
    DNS_RCODES.iter().find(|(_, r)| *r == rcode).map_or_else(
        || format!("RCODE{}", u16::from(rcode)),
        |(n, _)| (*n).to_string(),
    )
}

/// A DNS check: one question, over UDP (TCP when the answer is truncated).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DnsCheck {
    /// The name asked for (absolute).
    pub name: Name,
    /// The type asked for.
    pub qtype: hickory_proto::rr::RecordType,
    /// The rcode that passes.
    pub rcode: hickory_proto::op::ResponseCode,
    /// When set, the answer section must hold a record of `qtype` with
    /// this data.
    pub expect_answer: Option<hickory_proto::rr::RData>,
    /// Ask for recursion (a resolver); off for an authoritative server.
    pub recursion_desired: bool,
}

/// At most this much of a body is read when looking for `expect_body`, as
/// Route 53 does: a health page that hides its marker deeper is a
/// misconfiguration, and a huge or endless body must not hold the prober.
pub const BODY_LIMIT: usize = 5120;

/// The request of an HTTP(S) check and how its response is judged.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HttpCheck {
    /// HTTPS: how the server's certificate is checked. `None`: plain HTTP.
    pub tls: Option<TlsCheck>,
    /// HTTP method (`GET` or `HEAD`).
    pub method: String,
    /// HTTP request path, starting with `/`.
    pub path: String,
    /// Host header and TLS SNI; the endpoint address when not set.
    pub host: Option<String>,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// Accepted HTTP status codes.
    pub expect_status: Vec<StatusRange>,
    /// Substring that must appear in the first [`BODY_LIMIT`] bytes of the body.
    pub expect_body: Option<String>,
    /// Keep the connection of a successful probe open for the next one (a
    /// new connection at least every minute, after any failure, and
    /// whenever the server closes it).
    pub reuse_connection: bool,
}

impl HttpCheck {
    /// The zone file's defaults: `GET /`, 200-399, reused connections.
    pub fn new(tls: Option<TlsCheck>) -> Box<HttpCheck> {
        Box::new(HttpCheck {
            tls,
            method: "GET".into(),
            path: "/".into(),
            host: None,
            headers: Vec::new(),
            expect_status: vec![StatusRange { lo: 200, hi: 399 }],
            expect_body: None,
            reuse_connection: true,
        })
    }
}

/// How an HTTPS check verifies the server.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TlsCheck {
    /// Verify the server certificate.
    pub verify: bool,
    /// Trust anchors instead of the built-in web roots.
    pub ca: Option<CaFile>,
    /// A leaf certificate expiring within this is warned about (zero: never).
    pub warn_expiry: Duration,
    /// A leaf certificate expiring within this fails the probe.
    pub fail_expiry: Option<Duration>,
}

/// `warn-expiry` when a check does not set it.
pub const DEFAULT_WARN_EXPIRY: Duration = Duration::from_secs(14 * 86_400);

impl Default for TlsCheck {
    /// Verified against the web roots, warned 14 days ahead, never failed
    /// for expiry alone.
    fn default() -> Self {
        TlsCheck {
            verify: true,
            ca: None,
            warn_expiry: DEFAULT_WARN_EXPIRY,
            fail_expiry: None,
        }
    }
}

/// A `ca-file`, read when the zone was loaded.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CaFile {
    /// Where it was read from, for messages.
    pub path: PathBuf,
    /// Its certificates (at least one, each usable as a trust anchor).
    pub certs: Vec<rustls_pki_types::CertificateDer<'static>>,
}

impl CheckKind {
    /// The name used in the zone file and in metrics labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            CheckKind::Tcp => "tcp",
            CheckKind::Http(h) if h.tls.is_none() => "http",
            CheckKind::Http(_) => "https",
            CheckKind::Dns(_) => "dns",
            CheckKind::Exec(_) => "exec",
            CheckKind::Icmp => "icmp",
            CheckKind::Grpc(_) => "grpc",
        }
    }

    /// The TLS settings of a kind over TLS (https, grpc with `tls`).
    pub fn tls(&self) -> Option<&TlsCheck> {
        match self {
            CheckKind::Http(h) => h.tls.as_ref(),
            CheckKind::Grpc(g) => g.tls.as_ref(),
            _ => None,
        }
    }
}

/// An inclusive range of acceptable HTTP status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StatusRange {
    /// Lowest accepted status.
    pub lo: u16,
    /// Highest accepted status.
    pub hi: u16,
}

/// How to decide whether one endpoint is healthy, and how often.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Check {
    /// Name of the `[check.NAME]` table.
    pub name: String,
    /// What a probe does.
    pub kind: CheckKind,
    /// Port to connect to on every endpoint.
    pub port: u16,
    /// Connect here instead of `endpoint:port`.
    pub target: Option<SocketAddr>,
    /// Time between two probes of one endpoint.
    pub interval: Duration,
    /// Bound on one probe: connect, TLS, request and response.
    pub timeout: Duration,
    /// Delay of the fast re-probe after a result that would start a transition;
    /// `None` disables fast confirmation.
    pub recheck: Option<Duration>,
    /// Consecutive failures that mark an up endpoint down.
    pub fall: u32,
    /// In a cluster: how many of the live nodes probe each endpoint (chosen
    /// by rendezvous hashing); `None`: every node.
    pub probers: Option<u32>,
    /// Consecutive successes that mark a down endpoint up.
    pub rise: u32,
}

/// Version of [`Check::probe_fingerprint`]'s encoding: bump it whenever the
/// encoding changes, so old and new fingerprints can never be equal by
/// accident.
pub const PROBE_FINGERPRINT_VERSION: u8 = 1;

impl Check {
    /// A canonical, versioned hash of what changes what a probe of this
    /// check sees: the kind, where it connects, its timeout and what it
    /// sends and accepts. Scheduling and decision settings (`interval`,
    /// `recheck`, `fall`, `rise`, `probers`) and the table's name are left
    /// out: changing them changes when and how often one probes, not what
    /// one observes, so it must not part an endpoint from its evidence.
    ///
    /// Written field by field with lengths, not derived from `Debug` (which
    /// moves with every new field and every formatting change).
    pub fn probe_fingerprint(&self) -> u64 {
        let mut b: Vec<u8> = Vec::with_capacity(128);
        fn field(b: &mut Vec<u8>, tag: &str, bytes: &[u8]) {
            b.extend_from_slice(tag.as_bytes());
            b.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            b.extend_from_slice(bytes);
        }
        b.extend_from_slice(b"gslb-probe\0");
        b.push(PROBE_FINGERPRINT_VERSION);
        field(&mut b, "kind", self.kind.as_str().as_bytes());
        field(&mut b, "port", &self.port.to_be_bytes());
        if let Some(t) = self.target {
            field(&mut b, "target", t.to_string().as_bytes());
        }
        field(
            &mut b,
            "timeout",
            &(self.timeout.as_millis() as u64).to_be_bytes(),
        );
        if let CheckKind::Http(h) = &self.kind {
            if let Some(tls) = &h.tls {
                field(&mut b, "verify", &[u8::from(tls.verify)]);
                for c in tls.ca.iter().flat_map(|ca| &ca.certs) {
                    field(&mut b, "ca", c.as_ref());
                }
            }
            field(&mut b, "method", h.method.as_bytes());
            field(&mut b, "path", h.path.as_bytes());
            if let Some(host) = &h.host {
                field(&mut b, "host", host.as_bytes());
            }
            for (k, v) in &h.headers {
                field(&mut b, "header", k.as_bytes());
                field(&mut b, "value", v.as_bytes());
            }
            for r in &h.expect_status {
                field(
                    &mut b,
                    "status",
                    &[r.lo.to_be_bytes(), r.hi.to_be_bytes()].concat(),
                );
            }
            if let Some(body) = &h.expect_body {
                field(&mut b, "body", body.as_bytes());
            }
            field(&mut b, "reuse", &[u8::from(h.reuse_connection)]);
        }
        if let CheckKind::Dns(d) = &self.kind {
            field(&mut b, "qname", d.name.to_lowercase().to_ascii().as_bytes());
            field(&mut b, "qtype", &u16::from(d.qtype).to_be_bytes());
            field(&mut b, "rcode", &u16::from(d.rcode).to_be_bytes());
            if let Some(a) = &d.expect_answer {
                field(&mut b, "answer", a.to_string().as_bytes());
            }
            field(&mut b, "rd", &[u8::from(d.recursion_desired)]);
        }
        if let CheckKind::Grpc(g) = &self.kind {
            field(&mut b, "service", g.service.as_bytes());
            if let Some(tls) = &g.tls {
                field(&mut b, "verify", &[u8::from(tls.verify)]);
                for c in tls.ca.iter().flat_map(|ca| &ca.certs) {
                    field(&mut b, "ca", c.as_ref());
                }
            }
            if let Some(host) = &g.host {
                field(&mut b, "host", host.as_bytes());
            }
        }
        if let CheckKind::Exec(e) = &self.kind {
            for arg in &e.command {
                field(&mut b, "arg", arg.as_bytes());
            }
            if let Some(u) = &e.user {
                field(&mut b, "user", u.name.as_bytes());
            }
        }
        fnv1a(&b)
    }

    /// The HTTP part of an HTTP(S) check.
    pub fn http(&self) -> Option<&HttpCheck> {
        match &self.kind {
            CheckKind::Http(h) => Some(h),
            _ => None,
        }
    }
}

/// What a region answers with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegionTarget {
    /// A and AAAA records of its healthy endpoints.
    Endpoints(Vec<IpAddr>),
    /// A CNAME to this name (a cloud load balancer, say).
    Alias(Name),
}

/// A place where a service runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    /// Name of the `[region.NAME]` table.
    pub name: String,
    /// Position in `Zone::regions` (name order): how health cells are indexed.
    pub index: usize,
    /// What the region answers with.
    pub target: RegionTarget,
    /// The check probing its endpoints; `None`: always up (unless drained).
    pub check: Option<Arc<Check>>,
    /// The region is up while at least this many endpoints are up.
    pub min_healthy: usize,
    /// Where it is, for `policy = "nearest"`.
    pub location: Option<Coords>,
    /// Calculated health: what else must be up for it to be up.
    pub depends: Option<Dependencies>,
    /// Where it is defined.
    pub origin: Origin,
}

/// `depends-on` and `healthy-when`: a region is up only while its own
/// endpoints are and at least `needed` of `on` are up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dependencies {
    /// What it depends on, in the order written.
    pub on: Vec<Dependency>,
    /// How many of them must be up.
    pub needed: usize,
}

/// One entry of `depends-on`: a region, or one endpoint of a region, in
/// this zone or another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dependency {
    /// The zone's label (lower case, no trailing dot).
    pub zone: String,
    /// The region.
    pub region: String,
    /// One endpoint of it, or the region as a whole.
    pub endpoint: Option<IpAddr>,
    /// As written, for status and messages.
    pub written: String,
    /// Where it is written.
    pub origin: Origin,
}

impl Region {
    /// The endpoint addresses (empty for an alias region).
    pub fn endpoints(&self) -> &[IpAddr] {
        match &self.target {
            RegionTarget::Endpoints(e) => e,
            RegionTarget::Alias(_) => &[],
        }
    }
}

/// How a service chooses among its regions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Policy {
    /// The first region in the list that is up.
    Failover,
    /// `answers` distinct regions drawn by weight among the healthy ones;
    /// weight 0 regions only when no weighted region is up.
    Weighted {
        /// Regions drawn per answer.
        answers: usize,
    },
    /// Every healthy endpoint of every listed region.
    AllHealthy,
    /// The client's location chooses a list of regions, answered by failover.
    Geo(Arc<GeoPolicy>),
    /// The `answers` nearest healthy regions to the client.
    Nearest(Arc<NearestPolicy>),
}

impl Policy {
    /// Name used in the zone file, logs and the status API.
    pub fn as_str(&self) -> &'static str {
        match self {
            Policy::Failover => "failover",
            Policy::Weighted { .. } => "weighted",
            Policy::AllHealthy => "all-healthy",
            Policy::Geo(_) => "geo",
            Policy::Nearest(_) => "nearest",
        }
    }

    /// The map a geo or nearest service locates clients with.
    pub fn geo_map(&self) -> Option<&Arc<GeoMap>> {
        match self {
            Policy::Geo(g) => Some(&g.map),
            Policy::Nearest(n) => Some(&n.map),
            _ => None,
        }
    }
}

/// What a service answers when every one of its regions is down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WhenAllDown {
    /// Answer as if every region were up (Route 53's behaviour).
    FailOpen,
    /// Answer with this region, up or not.
    LastResort(Arc<Region>),
    /// NOERROR with no records (and the SOA).
    NoData,
    /// SERVFAIL.
    ServFail,
}

impl WhenAllDown {
    /// The rule as the zone file writes it, without a last resort's
    /// region: for metric labels and log lines.
    pub fn rule(&self) -> &'static str {
        match self {
            WhenAllDown::FailOpen => "fail-open",
            WhenAllDown::LastResort(_) => "last-resort",
            WhenAllDown::NoData => "nodata",
            WhenAllDown::ServFail => "servfail",
        }
    }
}

/// One region of a service with its weight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRegion {
    /// The region, shared with the zone.
    pub region: Arc<Region>,
    /// Weight for the weighted policy (1 for other policies).
    pub weight: u32,
}

/// A health-aware name: its A/AAAA (or CNAME) answers follow region health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// Key of the `[service.KEY]` table.
    pub key: String,
    /// Owner name (absolute).
    pub name: Name,
    /// Selection policy.
    pub policy: Policy,
    /// Regions in order (failover priority).
    pub regions: Vec<ServiceRegion>,
    /// TTL while the preferred answer is served.
    pub ttl: u32,
    /// TTL while the service is degraded, so resolvers come back sooner.
    pub degraded_ttl: u32,
    /// At most this many addresses per answer (per family).
    pub max_records: usize,
    /// Behaviour when every region is down.
    pub when_all_down: WhenAllDown,
    /// Where it is defined.
    pub origin: Origin,
}

/// Everything loaded from the zones folder: what `serve` runs and `check` reports.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// Zones by file order.
    pub zones: Vec<Arc<Zone>>,
}

impl Config {
    /// Number of static records across all zones.
    pub fn record_count(&self) -> usize {
        self.zones.iter().map(|z| z.record_count).sum()
    }
    /// Number of services across all zones.
    pub fn service_count(&self) -> usize {
        self.zones.iter().map(|z| z.services.len()).sum()
    }
    /// Number of regions across all zones.
    pub fn region_count(&self) -> usize {
        self.zones.iter().map(|z| z.regions.len()).sum()
    }
}

/// Regions of a zone by name.
pub type Regions = BTreeMap<String, Arc<Region>>;

/// FNV-1a: a stable, fast hash (zone file texts, check fingerprints);
/// not for security.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_more(0xcbf2_9ce4_8422_2325, bytes)
}

/// [`fnv1a`] of what was hashed into `h` followed by `bytes`.
pub fn fnv1a_more(h: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(h, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Unix milliseconds of `t` (0 before 1970).
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp() -> Check {
        Check {
            name: "web".into(),
            kind: CheckKind::Tcp,
            port: 443,
            target: None,
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(800),
            recheck: Some(Duration::from_millis(200)),
            fall: 3,
            probers: None,
            rise: 2,
        }
    }

    #[test]
    fn probe_fingerprint_ignores_scheduling_and_names() {
        let base = tcp().probe_fingerprint();
        // Pinned: the fingerprint keys observations in etcd, so it must not
        // move between builds or releases unless the version is bumped.
        assert_eq!(base, 0x0cc3_21b6_6c49_307c, "{base:#x}");
        let same = [
            Check {
                name: "other".into(),
                ..tcp()
            },
            Check {
                interval: Duration::from_secs(2),
                ..tcp()
            },
            Check {
                recheck: None,
                ..tcp()
            },
            Check {
                fall: 5,
                rise: 7,
                ..tcp()
            },
            Check {
                probers: Some(2),
                ..tcp()
            },
        ];
        for c in same {
            assert_eq!(c.probe_fingerprint(), base, "{c:?}");
        }
        let differ = [
            Check { port: 80, ..tcp() },
            Check {
                timeout: Duration::from_secs(1),
                ..tcp()
            },
            Check {
                target: Some("192.0.2.9:443".parse().unwrap()),
                ..tcp()
            },
            Check {
                kind: CheckKind::Http(HttpCheck::new(None)),
                ..tcp()
            },
        ];
        for c in differ {
            assert_ne!(c.probe_fingerprint(), base, "{c:?}");
        }
        let http = |f: &dyn Fn(&mut HttpCheck)| {
            let mut h = HttpCheck::new(None);
            f(&mut h);
            Check {
                kind: CheckKind::Http(h),
                ..tcp()
            }
            .probe_fingerprint()
        };
        let plain = http(&|_| {});
        assert_ne!(http(&|h| h.path = "/health".into()), plain);
        assert_ne!(http(&|h| h.host = Some("a.example".into())), plain);
        assert_ne!(http(&|h| h.expect_body = Some("ok".into())), plain);
        assert_ne!(http(&|h| h.headers.push(("x".into(), "y".into()))), plain);
        // Lengths keep neighbouring fields apart.
        assert_ne!(
            http(&|h| h.headers.push(("ab".into(), "c".into()))),
            http(&|h| h.headers.push(("a".into(), "bc".into())))
        );
    }
}
