//! The zone file format, as serde reads it. Field docs here are the zone
//! reference; the README repeats them with examples.
//!
//! Every struct denies unknown fields so a typo (`wieght`) is an error naming
//! the line, not a silently ignored setting. Fields that need a check serde
//! cannot do keep their `Spanned` position for the message.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// One zone file: `[zone]`, `[[record]]`, `[check.NAME]`, `[region.NAME]`,
/// `[geo.NAME]`, `[service.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct ZoneFile {
    /// The zone header (SOA and apex NS).
    pub zone: ZoneSpec,
    /// Static records.
    #[serde(default)]
    pub record: Vec<RecordSpec>,
    /// Health checks, by name.
    #[serde(default)]
    pub check: BTreeMap<Spanned<String>, CheckSpec>,
    /// Regions, by name.
    #[serde(default)]
    pub region: BTreeMap<Spanned<String>, RegionSpec>,
    /// Client location maps, by name.
    #[serde(default)]
    pub geo: BTreeMap<Spanned<String>, GeoSpec>,
    /// Health-aware names, by owner name relative to the zone.
    #[serde(default)]
    pub service: BTreeMap<Spanned<String>, ServiceSpec>,
    /// Transfers to secondaries.
    pub transfer: Option<Spanned<TransferSpec>>,
    /// DNSSEC signing.
    pub dnssec: Option<Spanned<DnssecSpec>>,
}

/// `[dnssec]`: the zone's answers are signed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct DnssecSpec {
    /// Folder of the zone's key files (BIND's format), relative to the
    /// zone file.
    pub keys: Spanned<String>,
    /// How long a signature is valid (default "14d").
    pub signature_validity: Option<Spanned<String>>,
}

/// `[transfer]`: the zone is served to standard secondaries.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct TransferSpec {
    /// Prefixes that may transfer the zone (AXFR, IXFR).
    pub allow: Vec<Spanned<String>>,
    /// `address:port` (port 53 when left out) told of every change.
    #[serde(default)]
    pub notify: Vec<Spanned<String>>,
    /// Name of a `[tsig.NAME]` key of the settings file: transfers and
    /// NOTIFYs must be signed with it.
    pub tsig_key: Option<Spanned<String>>,
}

/// A run of `[[record]]` tables of a large zone file, read on its own
/// (config/split.rs).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecordPiece {
    #[serde(default)]
    pub record: Vec<RecordSpec>,
}

/// A list of names (regions), each with its position.
pub(crate) type NameList = Spanned<Vec<Spanned<String>>>;

/// `[geo.NAME]`: how a client's address becomes a location.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct GeoSpec {
    /// A MaxMind DB file (GeoIP2/GeoLite2 City or Country, DB-IP), relative
    /// to the zone file.
    pub database: Option<Spanned<String>>,
    /// CIDR to label; checked before the database, most specific first.
    pub nets: Option<Spanned<BTreeMap<Spanned<String>, Spanned<String>>>>,
}

/// `[zone]`: the apex and what the SOA is generated from.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct ZoneSpec {
    /// Apex name, e.g. `gslb.example.com.` (the trailing dot is optional here).
    pub name: Spanned<String>,
    /// Default TTL of static records and of the SOA and apex NS (default 300).
    pub ttl: Option<Spanned<i64>>,
    /// Authoritative name servers: the apex NS set; the first is the SOA MNAME.
    pub nameservers: Spanned<Vec<Spanned<String>>>,
    /// Mailbox of the zone's administrator, as a name (`hostmaster.example.com.`)
    /// or an address (`hostmaster@example.com`): the SOA RNAME.
    pub hostmaster: Spanned<String>,
    /// SOA serial; when absent gslb manages it (see the README).
    pub serial: Option<Spanned<i64>>,
    /// SOA refresh in seconds (default 3600).
    pub refresh: Option<Spanned<i64>>,
    /// SOA retry in seconds (default 600).
    pub retry: Option<Spanned<i64>>,
    /// SOA expire in seconds (default 604800).
    pub expire: Option<Spanned<i64>>,
    /// SOA minimum: how long resolvers cache NXDOMAIN and NODATA (default 60).
    pub negative_ttl: Option<Spanned<i64>>,
    /// URL receiving a JSON POST on every region state change of this zone.
    pub webhook: Option<Spanned<String>>,
    /// Honour EDNS Client Subnet (default true); false ignores it.
    pub ecs: Option<bool>,
}

/// `[[record]]`: one static resource record.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RecordSpec {
    /// Owner, relative to the zone (`www`), `@` for the apex, `*.foo` for a
    /// wildcard, or absolute with a trailing dot.
    pub name: Spanned<String>,
    /// Record type: A, AAAA, CNAME, MX, NS, PTR, SRV, TXT or CAA.
    #[serde(rename = "type")]
    pub rtype: Spanned<String>,
    /// The data, in zone-file presentation form except TXT (the raw text).
    pub value: Spanned<String>,
    /// TTL in seconds (default: the zone's `ttl`).
    pub ttl: Option<Spanned<i64>>,
}

/// Accepted HTTP statuses: `200`, `"200-399"`, or a list of those.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub(crate) enum StatusSpec {
    /// One code.
    Code(i64),
    /// A range `lo-hi`, or one code as a string.
    Range(String),
}

/// `expect-status`: one item or a list.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub(crate) enum StatusList {
    /// A single code or range.
    One(StatusSpec),
    /// Several.
    Many(Vec<StatusSpec>),
}

/// `recheck`: a duration, or `false` to disable fast confirmation.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub(crate) enum RecheckSpec {
    /// `false` disables fast confirmation (`true` keeps the default).
    Enabled(bool),
    /// Delay of the re-probe, e.g. `"200ms"`.
    Delay(String),
}

/// `[check.NAME]`: how endpoints are probed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct CheckSpec {
    /// `"dns"`, `"exec"`, `"grpc"`, `"http"`, `"https"`, `"icmp"` or `"tcp"`.
    #[serde(rename = "type")]
    pub kind: Spanned<String>,
    /// Port (default 80 for http, 443 for https; required for tcp).
    pub port: Option<Spanned<i64>>,
    /// HTTP method: GET (default) or HEAD.
    pub method: Option<Spanned<String>>,
    /// Request path (default `/`).
    pub path: Option<Spanned<String>>,
    /// Host header and TLS server name (default: the endpoint address).
    pub host: Option<Spanned<String>>,
    /// Extra request headers.
    pub headers: Option<Spanned<BTreeMap<String, String>>>,
    /// Accepted statuses (default `"200-399"`).
    pub expect_status: Option<Spanned<StatusList>>,
    /// Substring required in the first 5120 bytes of the body.
    pub expect_body: Option<Spanned<String>>,
    /// Verify the server's certificate (default true).
    pub tls_verify: Option<Spanned<bool>>,
    /// PEM file of CA certificates to trust instead of the web roots,
    /// relative to the zone file.
    pub ca_file: Option<Spanned<String>>,
    /// TLS: warn when the leaf certificate expires within this (default `"14d"`).
    pub warn_expiry: Option<Spanned<String>>,
    /// TLS: fail the probe when the leaf certificate expires within this.
    pub fail_expiry: Option<Spanned<String>>,
    /// Probe `ADDR:PORT` instead of each endpoint's own address.
    pub target: Option<Spanned<String>>,
    /// HTTP(S): reuse a successful probe's connection for the next (default true).
    pub reuse_connection: Option<Spanned<bool>>,
    /// gRPC: the service asked about (default: the whole server).
    pub service: Option<Spanned<String>>,
    /// gRPC: over TLS (default false: plain HTTP/2).
    pub tls: Option<Spanned<bool>>,
    /// Exec: the program and its arguments.
    pub command: Option<Spanned<Vec<String>>>,
    /// Exec: the user it runs as.
    pub user: Option<Spanned<String>>,
    /// Exec: at most this many runs at once (default 16).
    pub max_running: Option<Spanned<i64>>,
    /// DNS: the name asked for.
    pub query_name: Option<Spanned<String>>,
    /// DNS: the type asked for (default A).
    pub query_type: Option<Spanned<String>>,
    /// DNS: the rcode that passes (default NOERROR).
    pub expect_rcode: Option<Spanned<String>>,
    /// DNS: an answer record's data that must be there.
    pub expect_answer: Option<Spanned<String>>,
    /// DNS: set RD, for a resolver (default false).
    pub recursion_desired: Option<Spanned<bool>>,
    /// In a cluster, how many live nodes probe each endpoint (default: all).
    pub probers: Option<Spanned<i64>>,
    /// Time between probes of one endpoint (default `"5s"`, at least `"100ms"`).
    pub interval: Option<Spanned<String>>,
    /// Bound on one probe (default `"2s"`, at most `interval`).
    pub timeout: Option<Spanned<String>>,
    /// Fast confirmation delay (default `"200ms"`; `false` disables it).
    pub recheck: Option<Spanned<RecheckSpec>>,
    /// Consecutive failures before an up endpoint is marked down (default 3).
    pub fall: Option<Spanned<i64>>,
    /// Consecutive successes before a down endpoint is marked up (default 2).
    pub rise: Option<Spanned<i64>>,
}

/// `[region.NAME]`: where a service runs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RegionSpec {
    /// IPv4 and IPv6 addresses of the region's endpoints.
    pub endpoints: Option<Spanned<Vec<Spanned<String>>>>,
    /// Instead of endpoints: answer with a CNAME to this host name.
    pub cname: Option<Spanned<String>>,
    /// Name of the `[check.NAME]` probing the endpoints; none: always up.
    pub check: Option<Spanned<String>>,
    /// Region is up while at least this many endpoints are up (default 1).
    pub min_healthy: Option<Spanned<i64>>,
    /// `[latitude, longitude]` in degrees, for `policy = "nearest"`.
    pub location: Option<Spanned<Vec<Spanned<f64>>>>,
    /// Calculated health: regions or endpoints (`"db"`, `"db/192.0.2.7"`,
    /// `"other.example.com:db"`) that must be up for this one to be.
    pub depends_on: Option<Spanned<Vec<Spanned<String>>>>,
    /// How many of `depends-on` must be up: `"2 of 3"`, `"any"` or
    /// `"all"` (default).
    pub healthy_when: Option<Spanned<String>>,
}

/// `[service.NAME]`: a health-aware name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct ServiceSpec {
    /// `"failover"` (default), `"weighted"`, `"all-healthy"`, `"geo"` or `"nearest"`.
    pub policy: Option<Spanned<String>>,
    /// Regions in priority order.
    pub regions: Option<Spanned<Vec<Spanned<String>>>>,
    /// Weighted policy: region name to weight (0 = standby).
    pub weights: Option<Spanned<BTreeMap<String, Spanned<i64>>>>,
    /// TTL of the answers (default 30).
    pub ttl: Option<Spanned<i64>>,
    /// TTL while degraded (default: min(ttl, 10)).
    pub degraded_ttl: Option<Spanned<i64>>,
    /// Geo and nearest policies: the `[geo.NAME]` map that locates clients.
    pub geo: Option<Spanned<String>>,
    /// Geo policy: location key (a nets label, `country:XX`, `continent:XX`
    /// or `*`) to regions in failover order.
    pub map: Option<Spanned<BTreeMap<Spanned<String>, NameList>>>,
    /// Weighted and nearest policies: distinct regions per answer (default 1).
    pub answers: Option<Spanned<i64>>,
    /// Cap on addresses per answer (default 8).
    pub max_records: Option<Spanned<i64>>,
    /// `"fail-open"` (default), `"last-resort"`, `"nodata"` or `"servfail"`.
    pub when_all_down: Option<Spanned<String>>,
    /// Region answered when all are down and `when-all-down = "last-resort"`.
    pub last_resort: Option<Spanned<String>>,
}
