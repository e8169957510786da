//! Every metric gslb exports: names as constants, one `Registry`, handles
//! created once.
//!
//! The DNS path counts into relaxed atomics in a fixed per-zone array
//! ([`ZoneCounters`]) that the served zone holds directly: no label hashing,
//! no lock, no allocation per query. A custom collector turns them into
//! Prometheus counters at scrape time. Health metrics (a few per probe, not
//! per query) use ordinary `prometheus` vectors.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// DNS queries answered, by zone, qtype, rcode and proto.
pub const DNS_QUERIES: &str = "gslb_dns_queries_total";
/// Service answers, by zone, service and the region answered.
pub const DNS_ANSWERS: &str = "gslb_dns_answers_total";
/// Packets dropped without an answer (no header, or a response), by proto.
pub const DNS_DROPPED: &str = "gslb_dns_dropped_total";
/// What the UDP workers' answer caches hold, in bytes (estimated).
pub const ANSWER_CACHE_BYTES: &str = "gslb_answer_cache_bytes";
/// Endpoint health (1 up, 0 down) by zone, region, endpoint.
pub const ENDPOINT_UP: &str = "gslb_endpoint_up";
/// Region health (1 up, 0 down) by zone, region.
pub const REGION_UP: &str = "gslb_region_up";
/// Region override: 0 auto, 1 forced down (drained), 2 forced up.
pub const REGION_OVERRIDE: &str = "gslb_region_override";
/// Endpoint override: 0 auto, 1 forced down, 2 forced up.
pub const ENDPOINT_OVERRIDE: &str = "gslb_endpoint_override";
/// Probe duration histogram by zone, region, endpoint, type.
pub const PROBE_DURATION: &str = "gslb_probe_duration_seconds";
/// When the leaf certificate an endpoint presented expires, by zone, region, endpoint.
pub const ENDPOINT_CERT_EXPIRY: &str = "gslb_endpoint_certificate_expiry_timestamp_seconds";
/// Probe results by zone, region, endpoint, result.
pub const PROBE_RESULTS: &str = "gslb_probe_results_total";
/// Endpoint and region state transitions by zone, region, endpoint ("" for the region), to.
pub const STATE_TRANSITIONS: &str = "gslb_state_transitions_total";
/// Service degraded (1) or not (0), by zone, service.
pub const SERVICE_DEGRADED: &str = "gslb_service_degraded";
/// Every region of a service down, answered by its all-down rule (1) or
/// not (0), by zone, service, when_all_down.
pub const SERVICE_ALL_DOWN: &str = "gslb_service_all_down";
/// The regions a service answers now (1, or the share of a weighted
/// service's answers; 0 for a region not answered), by zone, service, region.
pub const SERVICE_ANSWER_REGION: &str = "gslb_service_answer_region";
/// Unix time of a region's last state change, by zone, region.
pub const REGION_LAST_TRANSITION: &str = "gslb_region_last_transition_timestamp_seconds";
/// Reloads by result (success, error).
pub const CONFIG_RELOADS: &str = "gslb_config_reloads_total";
/// Unix time of the last successful load.
pub const CONFIG_LAST_RELOAD: &str = "gslb_config_last_reload_success_timestamp_seconds";
/// Build information (version label, value 1).
pub const BUILD_INFO: &str = "gslb_build_info";
/// Webhook events dropped because the queue was full, by zone.
pub const WEBHOOK_DROPPED: &str = "gslb_webhook_events_dropped_total";
/// Webhook deliveries by result (success, error).
pub const WEBHOOK_DELIVERIES: &str = "gslb_webhook_deliveries_total";
/// Errors of gslb itself (out of file descriptors, buffers, local ports), by
/// where they happened; never counted as a backend failing.
pub const LOCAL_ERRORS: &str = "gslb_local_errors_total";
/// Open connections, by listener (`dns_tcp`, `admin`).
pub const CONNECTIONS: &str = "gslb_connections";
/// The most connections a listener keeps open at once.
pub const CONNECTION_LIMIT: &str = "gslb_connection_limit";
/// UDP responses limited by response rate limiting, by class and action.
pub const RRL_LIMITED: &str = "gslb_rrl_limited_total";
/// Connections closed by gslb to stay within its limits, by listener and why.
pub const CONNECTIONS_SHED: &str = "gslb_connections_shed_total";
/// Overrides in force on this node alone (`drain --local` in a cluster).
pub const LOCAL_OVERRIDES: &str = "gslb_local_overrides";
/// Signatures made and RRsets signed from the cache.
pub const DNSSEC_SIGNATURES: &str = "gslb_dnssec_signatures_total";
/// The earliest expiry of a signature a signed zone may serve now.
pub const DNSSEC_EXPIRY: &str = "gslb_dnssec_signature_expiry_earliest_timestamp_seconds";
/// SOA serial of each zone served with `[transfer]`.
pub const ZONE_SERIAL: &str = "gslb_zone_serial";
/// Transfers served, by zone and kind.
pub const TRANSFERS: &str = "gslb_transfers_total";
/// Bytes of transfers served, by zone.
pub const TRANSFER_BYTES: &str = "gslb_transfer_bytes_total";
/// Transfer requests refused, by zone and reason.
pub const TRANSFERS_REFUSED: &str = "gslb_transfers_refused_total";
/// NOTIFY messages, by zone, secondary and result.
pub const NOTIFIES: &str = "gslb_notify_total";
/// When each secondary last acknowledged a NOTIFY.
pub const NOTIFY_LAST_ACK: &str = "gslb_notify_last_ack_timestamp_seconds";
/// Unix time a NOTIFY was last sent, per zone and secondary.
pub const NOTIFY_LAST_SENT: &str = "gslb_notify_last_sent_timestamp_seconds";
/// Log lines that never reached stderr, by why (`write_error`: stderr
/// failed, a closed pipe; `queue_full`: stderr too slow).
pub const LOG_LINES_LOST: &str = "gslb_log_lines_lost_total";

/// The transport a request came over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// UDP: answers are limited to the client's payload size.
    Udp,
    /// TCP: up to 65535 bytes.
    Tcp,
}

impl Transport {
    /// Label value for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// Buckets of the probe duration histogram: 1 ms to 10 s, tight where
/// timeouts are usually set.
pub const PROBE_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0,
];

const QTYPES: [(RecordType, &str); 15] = [
    (RecordType::A, "A"),
    (RecordType::AAAA, "AAAA"),
    (RecordType::CNAME, "CNAME"),
    (RecordType::MX, "MX"),
    (RecordType::NS, "NS"),
    (RecordType::PTR, "PTR"),
    (RecordType::SOA, "SOA"),
    (RecordType::SRV, "SRV"),
    (RecordType::TXT, "TXT"),
    (RecordType::CAA, "CAA"),
    (RecordType::ANY, "ANY"),
    (RecordType::DS, "DS"),
    (RecordType::HTTPS, "HTTPS"),
    (RecordType::SVCB, "SVCB"),
    (RecordType::DNSKEY, "DNSKEY"),
];
const QTYPE_SLOTS: usize = QTYPES.len() + 1;
const RCODES: [(ResponseCode, &str); 7] = [
    (ResponseCode::NoError, "NOERROR"),
    (ResponseCode::FormErr, "FORMERR"),
    (ResponseCode::ServFail, "SERVFAIL"),
    (ResponseCode::NXDomain, "NXDOMAIN"),
    (ResponseCode::NotImp, "NOTIMP"),
    (ResponseCode::Refused, "REFUSED"),
    (ResponseCode::BADVERS, "BADVERS"),
];
const RCODE_SLOTS: usize = RCODES.len() + 1;
const PROTOS: [&str; 2] = ["udp", "tcp"];

fn qtype_slot(t: RecordType) -> usize {
    QTYPES
        .iter()
        .position(|(q, _)| *q == t)
        .unwrap_or(QTYPES.len())
}
/// A response code as dig and the metrics name it (`NOERROR`, `NXDOMAIN`...).
pub fn rcode_name(r: ResponseCode) -> String {
    match RCODES.iter().find(|(c, _)| *c == r) {
        Some((_, n)) => (*n).to_string(),
        None => format!("RCODE{}", u16::from(r)),
    }
}

fn rcode_slot(r: ResponseCode) -> usize {
    RCODES
        .iter()
        .position(|(c, _)| *c == r)
        .unwrap_or(RCODES.len())
}
fn proto_slot(t: Transport) -> usize {
    match t {
        Transport::Udp => 0,
        Transport::Tcp => 1,
    }
}

/// Query counters of one zone (or of queries in no zone), kept across reloads.
pub struct ZoneCounters {
    zone: String,
    queries: Box<[AtomicU64]>,
}

impl ZoneCounters {
    fn new(zone: String) -> Self {
        ZoneCounters {
            zone,
            queries: (0..QTYPE_SLOTS * RCODE_SLOTS * PROTOS.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }
    /// Count one answered query.
    pub fn query(&self, qtype: RecordType, rcode: ResponseCode, transport: Transport) {
        let i = (qtype_slot(qtype) * RCODE_SLOTS + rcode_slot(rcode)) * PROTOS.len()
            + proto_slot(transport);
        self.queries[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// Answers per (service, region) of one zone, kept across reloads.
#[derive(Default)]
pub struct AnswerCounter {
    labels: [String; 4],
    count: AtomicU64,
}

impl AnswerCounter {
    /// Count one answer from this region.
    pub fn inc(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// The DNS path's counters: handed to the engine, read at scrape time.
#[derive(Clone)]
pub struct DnsMetrics {
    inner: Arc<DnsInner>,
}

struct DnsInner {
    /// Zone name to counters; only touched when a snapshot is built and at scrape.
    zones: Mutex<HashMap<String, Arc<ZoneCounters>>>,
    answers: Mutex<HashMap<[String; 4], Arc<AnswerCounter>>>,
    no_zone: Arc<ZoneCounters>,
    dropped: [AtomicU64; 2],
    cache_bytes: AtomicI64,
}

impl DnsMetrics {
    /// Counters not attached to any registry (tests, `check`).
    pub fn disabled() -> Self {
        DnsMetrics {
            inner: Arc::new(DnsInner {
                zones: Mutex::default(),
                answers: Mutex::default(),
                no_zone: Arc::new(ZoneCounters::new(String::new())),
                dropped: [AtomicU64::new(0), AtomicU64::new(0)],
                cache_bytes: AtomicI64::new(0),
            }),
        }
    }

    /// The counters of a zone (created on first use, then kept).
    pub fn zone(&self, zone: &str) -> Arc<ZoneCounters> {
        let mut zones = self.inner.zones.lock().expect("metrics lock poisoned");
        zones
            .entry(zone.to_string())
            .or_insert_with(|| Arc::new(ZoneCounters::new(zone.to_string())))
            .clone()
    }

    /// The counter of answers for (zone, service, region, location): the
    /// location is a geo service's map key or a nearest service's nearest
    /// region ("*": unknown), empty for other services. Never a client
    /// address: the set is the configuration's.
    pub fn answer(
        &self,
        zone: &str,
        service: &str,
        region: &str,
        location: &str,
    ) -> Arc<AnswerCounter> {
        let key = [
            zone.to_string(),
            service.to_string(),
            region.to_string(),
            location.to_string(),
        ];
        let mut answers = self.inner.answers.lock().expect("metrics lock poisoned");
        answers
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(AnswerCounter {
                    labels: key,
                    count: AtomicU64::new(0),
                })
            })
            .clone()
    }

    /// Count a query answered for no served zone.
    pub fn query_no_zone(&self, qtype: RecordType, rcode: ResponseCode, transport: Transport) {
        self.inner.no_zone.query(qtype, rcode, transport);
    }

    /// Count a dropped packet.
    pub fn dropped(&self, transport: Transport) {
        self.inner.dropped[proto_slot(transport)].fetch_add(1, Ordering::Relaxed);
    }

    /// A worker's answer cache grew (or, negative, shrank) by `delta` bytes.
    /// Called when the cache fills or empties, never per cached answer.
    pub fn cache_bytes(&self, delta: i64) {
        self.inner.cache_bytes.fetch_add(delta, Ordering::Relaxed);
    }

    fn families(&self) -> Vec<MetricFamily> {
        let queries = IntCounterVec::new(
            Opts::new(DNS_QUERIES, "DNS queries answered, by zone (empty: no served zone), qtype, rcode and transport."),
            &["zone", "qtype", "rcode", "proto"],
        )
        .expect("valid metric");
        let zones: Vec<Arc<ZoneCounters>> = {
            let z = self.inner.zones.lock().expect("metrics lock poisoned");
            z.values()
                .cloned()
                .chain(std::iter::once(self.inner.no_zone.clone()))
                .collect()
        };
        for zc in zones {
            for (qi, q) in QTYPES
                .iter()
                .map(|(_, n)| *n)
                .chain(std::iter::once("other"))
                .enumerate()
            {
                for (ri, r) in RCODES
                    .iter()
                    .map(|(_, n)| *n)
                    .chain(std::iter::once("other"))
                    .enumerate()
                {
                    for (pi, p) in PROTOS.iter().enumerate() {
                        let v = zc.queries[(qi * RCODE_SLOTS + ri) * PROTOS.len() + pi]
                            .load(Ordering::Relaxed);
                        if v > 0 {
                            queries
                                .with_label_values(&[zc.zone.as_str(), q, r, p])
                                .inc_by(v);
                        }
                    }
                }
            }
        }
        let answers = IntCounterVec::new(
            Opts::new(
                DNS_ANSWERS,
                "Service answers, by zone, service, the region that got the traffic and the client's location (geo and nearest services).",
            ),
            &["zone", "service", "region", "location"],
        )
        .expect("valid metric");
        {
            let mut all = self.inner.answers.lock().expect("metrics lock poisoned");
            for a in all.values() {
                let [z, s, r, l] = &a.labels;
                answers
                    .with_label_values(&[z.as_str(), s.as_str(), r.as_str(), l.as_str()])
                    .inc_by(a.count.load(Ordering::Relaxed));
            }
            // A counter no served snapshot holds is of a service or region
            // a reload removed: shown this once more, then let go (100,000
            // removed services kept 90 MB of counters for good).
            all.retain(|_, a| Arc::strong_count(a) > 1);
        }
        let dropped = IntCounterVec::new(
            Opts::new(
                DNS_DROPPED,
                "Packets dropped without an answer (shorter than a header, or a response).",
            ),
            &["proto"],
        )
        .expect("valid metric");
        for (i, p) in PROTOS.iter().enumerate() {
            dropped
                .with_label_values(&[p])
                .inc_by(self.inner.dropped[i].load(Ordering::Relaxed));
        }
        let cache = IntGauge::new(
            ANSWER_CACHE_BYTES,
            "What the UDP workers' answer caches hold, in bytes (estimated; bounded by answer-cache-mib).",
        )
        .expect("valid metric");
        cache.set(self.inner.cache_bytes.load(Ordering::Relaxed));
        let mut out = Vec::new();
        out.extend(cache.collect());
        out.extend(queries.collect());
        out.extend(answers.collect());
        out.extend(dropped.collect());
        out
    }
}

/// Renders [`LOG_LINES_LOST`] from the log writer's counters at scrape time.
struct LogCollector {
    desc: Vec<Desc>,
}

impl LogCollector {
    fn family() -> IntCounterVec {
        IntCounterVec::new(
            Opts::new(
                LOG_LINES_LOST,
                "Log lines that never reached stderr: write_error (stderr failed, e.g. a closed pipe), queue_full (stderr too slow).",
            ),
            &["why"],
        )
        .expect("valid metric")
    }
    fn new() -> Self {
        LogCollector {
            desc: Self::family().desc().into_iter().cloned().collect(),
        }
    }
}

impl Collector for LogCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.desc.iter().collect()
    }
    fn collect(&self) -> Vec<MetricFamily> {
        let (errors, dropped) = crate::logging::lost();
        let c = Self::family();
        c.with_label_values(&["write_error"]).inc_by(errors);
        c.with_label_values(&["queue_full"]).inc_by(dropped);
        c.collect()
    }
}

/// Renders the DNS counters at scrape time.
struct DnsCollector {
    dns: DnsMetrics,
    descs: Vec<Desc>,
}

impl Collector for DnsCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }
    fn collect(&self) -> Vec<MetricFamily> {
        self.dns.families()
    }
}

/// Every metric handle, created once at start-up.
#[derive(Clone)]
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// DNS path counters.
    pub dns: DnsMetrics,
    /// `gslb_endpoint_up`.
    pub endpoint_up: IntGaugeVec,
    /// `gslb_region_up`.
    pub region_up: IntGaugeVec,
    /// `gslb_region_override`.
    pub region_override: IntGaugeVec,
    /// `gslb_endpoint_override`.
    pub endpoint_override: IntGaugeVec,
    /// `gslb_probe_duration_seconds`.
    pub probe_duration: HistogramVec,
    /// `gslb_probe_results_total`.
    pub probe_results: IntCounterVec,
    /// `gslb_endpoint_certificate_expiry_timestamp_seconds`.
    pub endpoint_cert_expiry: IntGaugeVec,
    /// `gslb_state_transitions_total`.
    pub transitions: IntCounterVec,
    /// `gslb_service_degraded`.
    pub service_degraded: IntGaugeVec,
    /// `gslb_service_all_down`.
    pub service_all_down: IntGaugeVec,
    /// `gslb_service_answer_region`.
    pub service_answer_region: GaugeVec,
    /// `gslb_region_last_transition_timestamp_seconds`.
    pub region_last_transition: GaugeVec,
    /// `gslb_config_reloads_total`.
    pub reloads: IntCounterVec,
    /// `gslb_config_last_reload_success_timestamp_seconds`.
    pub last_reload: IntGauge,
    /// `gslb_webhook_events_dropped_total`.
    pub webhook_dropped: IntCounterVec,
    /// `gslb_webhook_deliveries_total`.
    pub webhook_deliveries: IntCounterVec,
    /// `gslb_local_errors_total`.
    pub local_errors: IntCounterVec,
    /// `gslb_local_overrides`.
    pub local_overrides: IntGauge,
    /// DNS-over-TCP connections.
    pub dns_tcp: ConnMetrics,
    /// Admin API connections.
    pub admin_conns: ConnMetrics,
    /// Response rate limiting.
    pub rrl: crate::dns::rrl::RrlMetrics,
    /// Zone transfers and NOTIFY.
    pub transfers: TransferMetrics,
    /// `gslb_dnssec_signatures_total`.
    pub dnssec_signatures: IntCounterVec,
    /// `gslb_dnssec_signature_expiry_earliest_timestamp_seconds`.
    pub dnssec_expiry: IntGaugeVec,
}

/// Zone transfers and NOTIFY (`dns::xfr`, `dns::notify`).
#[derive(Clone, Debug)]
pub struct TransferMetrics {
    /// `gslb_zone_serial`.
    pub serial: IntGaugeVec,
    /// `gslb_transfers_total`.
    pub served: IntCounterVec,
    /// `gslb_transfer_bytes_total`.
    pub bytes: IntCounterVec,
    /// `gslb_transfers_refused_total`.
    pub refused: IntCounterVec,
    /// `gslb_notify_total`.
    pub notifies: IntCounterVec,
    /// `gslb_notify_last_ack_timestamp_seconds`.
    pub notify_acked: IntGaugeVec,
    /// `gslb_notify_last_sent_timestamp_seconds`.
    pub notify_sent: IntGaugeVec,
}

impl TransferMetrics {
    fn with(
        gauge: &dyn Fn(&str, &str, &[&str]) -> IntGaugeVec,
        counter: &dyn Fn(&str, &str, &[&str]) -> IntCounterVec,
    ) -> Self {
        TransferMetrics {
            serial: gauge(
                ZONE_SERIAL,
                "SOA serial of each zone served to secondaries ([transfer]): it moves when the zone as transferred changes.",
                &["zone"],
            ),
            served: counter(
                TRANSFERS,
                "Zone transfers served, by zone and kind (axfr, ixfr).",
                &["zone", "kind"],
            ),
            bytes: counter(
                TRANSFER_BYTES,
                "Bytes of zone transfers served, by zone.",
                &["zone"],
            ),
            refused: counter(
                TRANSFERS_REFUSED,
                "Transfer requests refused, by zone and reason (address: outside allow; tsig: unsigned or badly signed; busy: too many at once).",
                &["zone", "reason"],
            ),
            notifies: counter(
                NOTIFIES,
                "NOTIFY messages to secondaries, by zone, secondary and result (sent, acked; failed: a try not acknowledged, from the fifth on; retries go on until one is).",
                &["zone", "secondary", "result"],
            ),
            notify_acked: gauge(
                NOTIFY_LAST_ACK,
                "Unix time a secondary last acknowledged a NOTIFY of the zone.",
                &["zone", "secondary"],
            ),
            notify_sent: gauge(
                NOTIFY_LAST_SENT,
                "Unix time a NOTIFY of the zone was last sent to a secondary (first tries and retries).",
                &["zone", "secondary"],
            ),
        }
    }

    /// Not registered anywhere (tests).
    pub fn disabled() -> Self {
        Self::with(
            &|n, h, l| IntGaugeVec::new(Opts::new(n, h), l).expect("valid metric"),
            &|n, h, l| IntCounterVec::new(Opts::new(n, h), l).expect("valid metric"),
        )
    }
}

/// The connection gauges and counters of one listener.
#[derive(Clone, Debug)]
pub struct ConnMetrics {
    /// Open now.
    pub open: IntGauge,
    /// The limit in force.
    pub limit: IntGauge,
    /// Closed by gslb: the source prefix had its share.
    pub shed_per_prefix: prometheus::IntCounter,
    /// Closed by gslb: every slot busy (and none idle to close).
    pub shed_full: prometheus::IntCounter,
    /// Closed by gslb: the oldest idle one, to make room for a new one.
    pub shed_idle: prometheus::IntCounter,
    /// Closed by gslb: none idle, the one whose current request had taken
    /// longest, to make room for a new one.
    pub shed_slowest: prometheus::IntCounter,
    /// Accept failed for a local reason.
    pub accept_errors: prometheus::IntCounter,
}

impl ConnMetrics {
    /// Not registered anywhere (tests).
    pub fn disabled() -> ConnMetrics {
        let c = || prometheus::IntCounter::new("x", "x").expect("valid metric");
        ConnMetrics {
            open: IntGauge::new("x", "x").expect("valid metric"),
            limit: IntGauge::new("x", "x").expect("valid metric"),
            shed_per_prefix: c(),
            shed_full: c(),
            shed_idle: c(),
            shed_slowest: c(),
            accept_errors: c(),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Create and register every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let dns = DnsMetrics::disabled();
        let reg = |c: Box<dyn Collector>| registry.register(c).expect("metric names are unique");
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            reg(Box::new(g.clone()));
            g
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            reg(Box::new(c.clone()));
            c
        };
        let endpoint_up = gauge(
            ENDPOINT_UP,
            "Endpoint health as DNS uses it: 1 up, 0 down (overrides applied).",
            &["zone", "region", "endpoint"],
        );
        let region_up = gauge(
            REGION_UP,
            "Region health as DNS uses it: 1 up, 0 down (overrides applied).",
            &["zone", "region"],
        );
        let region_override = gauge(
            REGION_OVERRIDE,
            "Operator override of a region: 0 auto, 1 forced down (drained), 2 forced up.",
            &["zone", "region"],
        );
        let endpoint_override = gauge(
            ENDPOINT_OVERRIDE,
            "Operator override of an endpoint: 0 auto, 1 forced down, 2 forced up.",
            &["zone", "region", "endpoint"],
        );
        let probe_duration = HistogramVec::new(
            HistogramOpts::new(
                PROBE_DURATION,
                "Duration of the health probes of a region's endpoints, failed ones included.",
            )
            .buckets(PROBE_BUCKETS.to_vec()),
            &["zone", "region"],
        )
        .expect("valid metric");
        reg(Box::new(probe_duration.clone()));
        let probe_results = counter(
            PROBE_RESULTS,
            "Health probe results by outcome (a failure reason's series appears at its first occurrence).",
            &["zone", "region", "endpoint", "result"],
        );
        let endpoint_cert_expiry = gauge(
            ENDPOINT_CERT_EXPIRY,
            "Unix time at which the leaf certificate the endpoint last presented expires (checks over TLS).",
            &["zone", "region", "endpoint"],
        );
        let transitions = counter(
            STATE_TRANSITIONS,
            "State transitions of endpoints (endpoint label set) and regions (endpoint label empty), by new state.",
            &["zone", "region", "endpoint", "to"],
        );
        let service_degraded = gauge(
            SERVICE_DEGRADED,
            "1 while a service answers other than its fully healthy answer.",
            &["zone", "service"],
        );
        let service_all_down = gauge(
            SERVICE_ALL_DOWN,
            "1 while every region of a service is down and its when-all-down rule (label: fail-open, last-resort, nodata, servfail) decides the answer.",
            &["zone", "service", "when_all_down"],
        );
        let float_gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            reg(Box::new(g.clone()));
            g
        };
        let service_answer_region = float_gauge(
            SERVICE_ANSWER_REGION,
            "Regions a service answers now: 1 (or a weighted service's share of answers) for each region answered, 0 for the others.",
            &["zone", "service", "region"],
        );
        let region_last_transition = float_gauge(
            REGION_LAST_TRANSITION,
            "Unix time of the region's last state change (or of its first load).",
            &["zone", "region"],
        );
        let reloads = counter(
            CONFIG_RELOADS,
            "Zone loads and reloads by result.",
            &["result"],
        );
        let last_reload = IntGauge::new(
            CONFIG_LAST_RELOAD,
            "Unix time of the last successful zone load.",
        )
        .expect("valid metric");
        reg(Box::new(last_reload.clone()));
        let local_overrides = IntGauge::new(
            LOCAL_OVERRIDES,
            "Overrides in force on this node alone (drain --local in a cluster): this node may answer differently from the others.",
        )
        .expect("valid metric");
        reg(Box::new(local_overrides.clone()));
        let webhook_dropped = counter(
            WEBHOOK_DROPPED,
            "Failover events dropped because the webhook queue was full.",
            &["zone"],
        );
        let webhook_deliveries = counter(
            WEBHOOK_DELIVERIES,
            "Webhook deliveries by result.",
            &["result"],
        );
        let local_errors = counter(
            LOCAL_ERRORS,
            "Errors of gslb itself (out of file descriptors, buffers or local ports), by where; they never count as a backend failing.",
            &["where"],
        );
        let connections = gauge(CONNECTIONS, "Open connections by listener.", &["listener"]);
        let connection_limit = gauge(
            CONNECTION_LIMIT,
            "The most connections a listener keeps open at once (sized from the file descriptor limit).",
            &["listener"],
        );
        let shed = counter(
            CONNECTIONS_SHED,
            "Connections gslb closed to stay within its limits, by listener and reason.",
            &["listener", "reason"],
        );
        let conn_metrics = |listener: &str| ConnMetrics {
            open: connections.with_label_values(&[listener]),
            limit: connection_limit.with_label_values(&[listener]),
            shed_per_prefix: shed.with_label_values(&[listener, "per_prefix"]),
            shed_full: shed.with_label_values(&[listener, "full"]),
            shed_idle: shed.with_label_values(&[listener, "oldest_idle"]),
            shed_slowest: shed.with_label_values(&[listener, "slowest"]),
            accept_errors: local_errors.with_label_values(&[&format!("{listener}_accept")]),
        };
        let rrl_limited = counter(
            RRL_LIMITED,
            "UDP responses limited by response rate limiting, by class (answer, nxdomain, error) and action (dropped, slipped: sent truncated).",
            &["class", "action"],
        );
        let classes = |action: &str| {
            ["answer", "nxdomain", "error"].map(|c| rrl_limited.with_label_values(&[c, action]))
        };
        let rrl = crate::dns::rrl::RrlMetrics {
            dropped: classes("dropped"),
            slipped: classes("slipped"),
        };
        let transfers = TransferMetrics::with(&gauge, &counter);
        let dnssec_signatures = counter(
            DNSSEC_SIGNATURES,
            "DNSSEC: signatures made for a query (made) and ahead of the queries (ahead: at load, key events, before a validity window), and RRsets whose signatures came from the cache (cache).",
            &["source"],
        );
        let dnssec_expiry = gauge(
            DNSSEC_EXPIRY,
            "DNSSEC: unix time at which the earliest signature a signed zone may serve now expires.",
            &["zone"],
        );
        let dns_tcp = conn_metrics("dns_tcp");
        let admin_conns = conn_metrics("admin");
        local_errors.with_label_values(&["probe"]);
        for r in ["success", "error"] {
            reloads.with_label_values(&[r]);
            webhook_deliveries.with_label_values(&[r]);
        }
        // The dispatcher's own drops (zone ""): present at 0 from the start,
        // so increase() sees the first one.
        webhook_dropped.with_label_values(&[""]);
        let build = GaugeVec::new(
            Opts::new(BUILD_INFO, "Build information; the value is always 1."),
            &["version"],
        )
        .expect("valid metric");
        build
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1.0);
        reg(Box::new(build));
        let descs = [DNS_QUERIES, DNS_ANSWERS, DNS_DROPPED, ANSWER_CACHE_BYTES]
            .iter()
            .map(|n| {
                Desc::new(n.to_string(), "dns".into(), vec![], HashMap::new()).expect("valid desc")
            })
            .collect();
        reg(Box::new(DnsCollector {
            dns: dns.clone(),
            descs,
        }));
        reg(Box::new(LogCollector::new()));
        Metrics {
            registry,
            dns,
            endpoint_up,
            region_up,
            region_override,
            endpoint_override,
            probe_duration,
            probe_results,
            endpoint_cert_expiry,
            transitions,
            service_degraded,
            service_all_down,
            service_answer_region,
            region_last_transition,
            reloads,
            last_reload,
            webhook_dropped,
            webhook_deliveries,
            local_errors,
            local_overrides,
            dns_tcp,
            admin_conns,
            rrl,
            transfers,
            dnssec_signatures,
            dnssec_expiry,
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        buf
    }
}
