//! The answer engine: request bytes in, response bytes out, the way NSD and
//! Knot answer (RFC 1034 §4.3.2 lookup, RFC 2308 negative answers, RFC 6891
//! EDNS, RFC 8482 minimal ANY). UDP and TCP both call [`Engine::respond`].
//!
//! hickory-proto parses requests and encodes responses (names, compression,
//! record data); this module owns the semantics: which zone, which records in
//! which section, which flags.

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, Message, Metadata, OpCode, Query, ResponseCode, emit_message_parts};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, TXT};
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncoder};
use rand::SeedableRng;
use rand::rngs::SmallRng;

use super::cache::{self, Fill, Worker};
use super::snapshot::{ServedZone, Snapshot, labels};
use crate::health::Epoch;
use crate::metrics::{DnsMetrics, Transport};
use crate::model::{Node, RegionTarget, Service, Zone};
use crate::policy::{self, HealthView, Outcome};

/// Our EDNS UDP payload size (DNS flag day 2020).
pub const DEFAULT_UDP_PAYLOAD: u16 = 1232;
/// Longest CNAME chain followed inside a zone.
const MAX_CNAME_CHAIN: usize = 12;

/// Settings of the engine.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// EDNS payload size we advertise and the cap on UDP answers.
    pub udp_payload: u16,
    /// Answer `version.bind`/`version.server` CH TXT with the version.
    pub version: Option<String>,
    /// Seed of the per-worker RNGs (weighted picks, shuffles), for
    /// reproducible tests; `None`: seeded from the OS.
    pub rng_seed: Option<u64>,
    /// Answer cache of each UDP worker, in bytes (its share of the
    /// process's `answer-cache-mib`).
    pub cache_bytes_per_worker: usize,
    /// Response rate limiting of UDP answers, when on.
    pub rrl: Option<Arc<super::rrl::Rrl>>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            udp_payload: DEFAULT_UDP_PAYLOAD,
            version: Some(format!("gslb {}", env!("CARGO_PKG_VERSION"))),
            rng_seed: None,
            cache_bytes_per_worker: super::cache::DEFAULT_CACHE_BYTES,
            rrl: None,
        }
    }
}

/// Answers queries from the current snapshot.
pub struct Engine {
    snapshot: ArcSwap<Snapshot>,
    opts: EngineOptions,
    metrics: DnsMetrics,
    /// Bumped on every health change (for answer caches).
    pub epoch: Arc<Epoch>,
    /// Versions of the zones served with `[transfer]`.
    pub transfers: Arc<super::Transfers>,
}

/// The sections of a response being built.
#[derive(Default)]
struct Reply<'s> {
    rcode: ResponseCode,
    aa: bool,
    answers: Vec<Record>,
    authority: Vec<Record>,
    additional: Vec<Record>,
    /// A referral whose glue must fit, or the answer is truncated (RFC 9471).
    glue_required: bool,
    /// Zone answered from, for metrics.
    zone: Option<&'s Arc<ServedZone>>,
    /// Whether the answer cache may store this answer, and how.
    fill: Fill,
    /// ECS SCOPE PREFIX-LENGTH: the answer depends on the client's
    /// network of this length (0: on nothing about the client).
    scope: u8,
}

/// Who asked: the query's source and the client subnet it carries.
#[derive(Clone, Copy)]
struct Client {
    from: IpAddr,
    ecs: Option<super::ecs::ClientSubnet>,
}

impl Client {
    /// The address a service of `zone` locates this client by.
    fn locating_addr(&self, zone: &Zone) -> IpAddr {
        super::ecs::locating_addr(self.from, self.ecs.as_ref().filter(|_| zone.ecs))
    }
}

impl Engine {
    /// An engine serving `snapshot`.
    pub fn new(
        snapshot: Snapshot,
        opts: EngineOptions,
        metrics: DnsMetrics,
        epoch: Arc<Epoch>,
    ) -> Self {
        Engine {
            snapshot: ArcSwap::from_pointee(snapshot),
            opts,
            metrics,
            epoch,
            transfers: Arc::default(),
        }
    }

    /// Serve transfers from these journals (the ones the snapshots were
    /// built with).
    pub fn with_transfers(mut self, transfers: Arc<super::Transfers>) -> Self {
        self.transfers = transfers;
        self
    }

    /// Let an idle worker drop what it keeps of an older snapshot: its
    /// answer cache holds the zones it answered from until its next query.
    /// A UDP worker calls this when its receive times out, so a reload's
    /// old zones are freed within a poll even when no query comes.
    pub(crate) fn refresh(&self, worker: &mut super::Worker) {
        let snap = self.snapshot.load();
        worker.sync((snap.serial, self.epoch.get()));
    }

    /// The response rate limiter of UDP answers, when on.
    pub fn rrl(&self) -> Option<&super::rrl::Rrl> {
        self.opts.rrl.as_deref()
    }

    /// A UDP worker's cache: its share of the answer cache.
    pub fn worker(&self, rng: SmallRng) -> super::Worker {
        super::Worker::with_cache(rng, self.opts.cache_bytes_per_worker)
            .reporting_to(self.metrics.clone())
    }

    /// An RNG for one worker (UDP socket task or TCP connection): each
    /// worker owns its own, so picks share no state across threads.
    pub fn rng(&self, worker: u64) -> SmallRng {
        match self.opts.rng_seed {
            Some(seed) => {
                SmallRng::seed_from_u64(seed ^ worker.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            }
            None => SmallRng::from_rng(&mut rand::rng()),
        }
    }

    /// Replace the snapshot; queries in flight finish on the old one.
    pub fn store(&self, snapshot: Snapshot) {
        self.snapshot.store(Arc::new(snapshot));
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Answer one request from `from` (the source address, which locates
    /// the client when the query has no client subnet). Writes the
    /// response into `out` and returns true, or returns false when the
    /// request gets no answer at all (too short to have a header, or itself
    /// a response).
    pub fn respond(
        &self,
        req: &[u8],
        from: IpAddr,
        transport: Transport,
        out: &mut Vec<u8>,
        worker: &mut Worker,
    ) -> bool {
        out.clear();
        if req.len() < 12 || req[2] & 0x80 != 0 {
            // No header to answer, or a response: answering would invite loops.
            self.metrics.dropped(transport);
            return false;
        }
        let snap = self.snapshot.load();
        worker.sync((snap.serial, self.epoch.get()));
        let tcp = transport == Transport::Tcp;
        let fast = cache::parse(req).filter(|q| !matches!(q.qtype, 251 | 252));
        if let Some(q) = &fast {
            let limit = match (transport, q.edns) {
                (Transport::Tcp, _) => usize::from(u16::MAX),
                (Transport::Udp, Some(_)) => {
                    usize::from(q.payload.clamp(512, self.opts.udp_payload.max(512)))
                }
                (Transport::Udp, None) => 512,
            };
            if worker.answer(q, from, tcp, limit, out, &self.metrics) {
                return true;
            }
        }
        // Bytes after the last section are as malformed as missing ones
        // (Knot answers both FORMERR): not a message to answer as if whole.
        let mut decoder = BinDecoder::new(req);
        let msg = match Message::read(&mut decoder) {
            Ok(m) if decoder.is_empty() => m,
            _ => {
                return self.formerr(req, transport, out);
            }
        };
        // A malformed client subnet is rejected (RFC 7871 §7.1.1).
        let ecs = match super::ecs::from_request(req) {
            Ok(ecs) => ecs,
            Err(_) => {
                return self.formerr(req, transport, out);
            }
        };
        if msg.metadata.op_code == OpCode::Query
            && msg.queries.len() == 1
            && matches!(
                msg.queries[0].query_type(),
                RecordType::AXFR | RecordType::IXFR
            )
        {
            // Over TCP the listener serves transfers itself (`dns::xfr`).
            return super::xfr::answer_udp(self, req, from, out);
        }
        if msg.signature().is_some() {
            // Signed: verified, answered, the answer signed (`dns::xfr`).
            return super::xfr::answer_signed(self, req, &msg, from, transport, out, worker);
        }
        let mut meta = Metadata::response_from_request(&msg.metadata);
        if msg.metadata.op_code != OpCode::Query {
            // RD and CD are QUERY's bits: not copied into another opcode's
            // NOTIMP (ISC's compliance tester flags it).
            meta.recursion_desired = false;
            meta.checking_disabled = false;
        }
        let edns_req = msg.edns.as_ref();
        let mut edns = edns_req.map(|e| {
            let mut r = Edns::new();
            r.set_max_payload(self.opts.udp_payload.max(512));
            r.set_version(0);
            r.set_dnssec_ok(e.flags().dnssec_ok);
            // Compact Answers OK (RFC 9824 §4) is echoed with DO.
            if e.flags().dnssec_ok {
                r.flags_mut().z = e.flags().z & super::signed::CO_FLAG;
            }
            r
        });
        let limit = match transport {
            Transport::Tcp => u16::MAX as usize,
            Transport::Udp => self.udp_limit_of(edns_req),
        };
        let query = msg.queries.first();
        let qtype = query
            .map(|q| q.query_type())
            .unwrap_or(RecordType::Unknown(0));
        let reply = if msg.metadata.op_code != OpCode::Query {
            Reply::rcode(ResponseCode::NotImp)
        } else if msg.queries.len() != 1 {
            Reply::rcode(ResponseCode::FormErr)
        } else if edns_req.is_some_and(|e| e.version() > 0) {
            Reply::rcode(ResponseCode::BADVERS)
        } else {
            let q = query.expect("one query");
            let client = Client { from, ecs };
            let mut reply = self.answer(&snap, q, transport, &client, worker);
            if let Some(z) = reply.zone
                && let Some(serial) = z.journal.as_ref().and_then(|j| j.answer_serial())
            {
                // The serial of the zone as transferred (`dns::journal`).
                for r in reply.answers.iter_mut().chain(reply.authority.iter_mut()) {
                    if let RData::SOA(soa) = &mut r.data
                        && r.name == z.zone.name
                    {
                        soa.serial = serial;
                    }
                }
            }
            if let Some(z) = reply.zone
                && let Some(signer) = &z.zone.signer
                && edns_req.is_some_and(|e| e.flags().dnssec_ok)
            {
                // Signed for a client that asked (`dns::signed`).
                super::signed::sign_sections(
                    &z.zone,
                    signer,
                    q.name(),
                    q.query_type(),
                    &mut reply.rcode,
                    reply.aa,
                    &mut reply.answers,
                    &mut reply.authority,
                    edns_req.is_some_and(|e| e.flags().z & super::signed::CO_FLAG != 0),
                    crate::reload::unix_now().max(0) as u64,
                );
            }
            reply
        };
        meta.authoritative = reply.aa;
        meta.response_code = reply.rcode;
        // ECS echoed (RFC 7871 §7.2.1) with the scope of the answer, after
        // encoding: the answer cache stores the bytes without it. Not for a
        // zone with `ecs = false`, nor for queries outside every zone:
        // those ignore the option.
        let echo = match (ecs, &edns, reply.zone) {
            (Some(cs), Some(_), Some(z)) if z.zone.ecs => Some(cs),
            _ => None,
        };
        if reply.rcode.high() > 0 && edns.is_none() {
            // Extended rcodes need an OPT to carry them; only BADVERS is
            // extended, and it is only sent in reply to an OPT.
            edns = Some(Edns::new());
        }
        let complete = encode(
            &meta,
            msg.queries.first(),
            &reply,
            edns.as_ref(),
            limit - echo.as_ref().map_or(0, super::ecs::echo_len),
            out,
        );
        match reply.zone {
            Some(z) => z.counters.query(qtype, reply.rcode, transport),
            None => self.metrics.query_no_zone(qtype, reply.rcode, transport),
        }
        // Only whole answers are stored: one cut to fit a small client
        // (additional section dropped, or TC) must not be served to others.
        if let (Some(q), true) = (&fast, complete) {
            worker.fill(q, tcp, reply.zone.cloned(), reply.rcode, reply.fill, out);
        }
        if let Some(cs) = &echo {
            super::ecs::append(out, cs, super::ecs::echo_scope(cs, reply.scope));
        }
        true
    }

    /// The most a UDP answer to `req` may carry: its EDNS size (at least
    /// 512, at most this server's `udp-payload`), or 512 without EDNS.
    pub(crate) fn udp_limit(&self, req: &Message) -> usize {
        self.udp_limit_of(req.edns.as_ref())
    }

    fn udp_limit_of(&self, edns: Option<&Edns>) -> usize {
        match edns {
            Some(e) => usize::from(e.max_payload().clamp(512, self.opts.udp_payload.max(512))),
            None => 512,
        }
    }

    /// Answer a datagram that the receive buffer cut: FORMERR, as the rest
    /// of it is unknown, or nothing when it is a response (or too short to
    /// have a header). Never answered from what fit, even when that parses.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn respond_cut(&self, req: &[u8], transport: Transport, out: &mut Vec<u8>) -> bool {
        out.clear();
        if req.len() < 12 || req[2] & 0x80 != 0 {
            self.metrics.dropped(transport);
            return false;
        }
        self.formerr(req, transport, out)
    }

    /// FORMERR for a request that is not a whole, well-formed query,
    /// counted; always answered (true).
    fn formerr(&self, req: &[u8], transport: Transport, out: &mut Vec<u8>) -> bool {
        self.formerr_raw(req, out);
        self.metrics
            .query_no_zone(RecordType::Unknown(0), ResponseCode::FormErr, transport);
        true
    }

    /// FORMERR for a request whose header parsed but the rest did not.
    fn formerr_raw(&self, req: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(&req[..12]);
        // QR=1, keep opcode, and RD for QUERY only; clear AA, TC; RA=0,
        // Z=0, RCODE=FORMERR; no sections.
        let rd = if req[2] & 0x78 == 0 { req[2] & 0x01 } else { 0 };
        out[2] = 0x80 | (req[2] & 0x78) | rd;
        out[3] = ResponseCode::FormErr.low();
        out[4..12].fill(0);
        // A request with an OPT gets one back (RFC 6891 §7, as BIND and
        // Knot answer), even when its option is what was malformed (a bad
        // client subnet): our payload size, version 0, no options.
        if super::wire::opt_record(req).is_some() {
            out.extend_from_slice(&[0, 0, 41]);
            out.extend_from_slice(&self.opts.udp_payload.max(512).to_be_bytes());
            out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
            out[11] = 1;
        }
    }

    fn answer<'s>(
        &self,
        snap: &'s Snapshot,
        q: &Query,
        transport: Transport,
        client: &Client,
        worker: &mut Worker,
    ) -> Reply<'s> {
        let qtype = q.query_type();
        match q.query_class() {
            DNSClass::IN => {}
            DNSClass::CH => return self.chaos(q),
            _ => return Reply::rcode(ResponseCode::Refused),
        }
        match qtype {
            RecordType::OPT => return Reply::rcode(ResponseCode::FormErr),
            RecordType::AXFR | RecordType::IXFR => return Reply::rcode(ResponseCode::Refused),
            RecordType::TSIG
            | RecordType::Unknown(249)
            | RecordType::Unknown(253)
            | RecordType::Unknown(254) => {
                return Reply::rcode(ResponseCode::NotImp);
            }
            _ => {}
        }
        let lname = LowerName::new(q.name());
        let Some(served) = snap.find_zone(&lname) else {
            return Reply::rcode(ResponseCode::Refused);
        };
        let mut reply = Reply {
            aa: true,
            zone: Some(served),
            ..Reply::default()
        };
        let mut chain: Vec<LowerName> = Vec::new();
        let mut qname = q.name().clone();
        let mut lname = lname;
        loop {
            let mut at = At {
                served,
                transport,
                client,
                worker: &mut *worker,
            };
            match lookup(&mut at, &qname, &lname, qtype, &mut reply) {
                Step::Done => break,
                Step::Follow(target) => {
                    chain.push(lname);
                    let lt = LowerName::new(&target);
                    if !served.zone.apex.zone_of(&lt)
                        || chain.contains(&lt)
                        || chain.len() >= MAX_CNAME_CHAIN
                    {
                        // Out of zone (the resolver follows it), or a loop: stop here.
                        break;
                    }
                    qname = target;
                    lname = lt;
                }
            }
        }
        reply
    }

    fn chaos(&self, q: &Query) -> Reply<'static> {
        let name = q.name().to_lowercase().to_ascii();
        let is_version = matches!(name.as_str(), "version.bind." | "version.server.");
        match (&self.opts.version, q.query_type()) {
            (Some(v), RecordType::TXT | RecordType::ANY) if is_version => {
                let mut rec =
                    Record::from_rdata(q.name().clone(), 0, RData::TXT(TXT::new(vec![v.clone()])));
                rec.dns_class = DNSClass::CH;
                Reply {
                    aa: true,
                    answers: vec![rec],
                    ..Reply::default()
                }
            }
            _ => Reply::rcode(ResponseCode::Refused),
        }
    }
}

impl Reply<'_> {
    fn rcode(rcode: ResponseCode) -> Self {
        Reply {
            rcode,
            ..Reply::default()
        }
    }
}

/// What to do after looking up one name.
enum Step {
    Done,
    /// A CNAME was answered; look up its target in the same zone.
    Follow(Name),
}

/// What a lookup needs besides the name: the zone, the transport, who
/// asked, and the worker (its RNG and geo memo).
struct At<'a> {
    served: &'a ServedZone,
    transport: Transport,
    client: &'a Client,
    worker: &'a mut Worker,
}

/// Look up `qname` in the zone and add what it yields to `reply`.
fn lookup(
    at: &mut At<'_>,
    qname: &Name,
    lname: &LowerName,
    qtype: RecordType,
    reply: &mut Reply<'_>,
) -> Step {
    let zone = &at.served.zone;
    let apex_labels = labels(&zone.apex);
    // Ancestors from just below the apex down to qname: a zone cut on the way
    // means a referral; a missing name ends the walk at the closest encloser.
    // Counted with the leading `*`: the literal `*.apex` is below the apex.
    let mut ancestors: Vec<LowerName> =
        Vec::with_capacity(labels(lname).saturating_sub(apex_labels));
    let mut n = lname.clone();
    while labels(&n) > apex_labels {
        let parent = n.base_name();
        ancestors.push(n);
        n = parent;
    }
    let mut encloser = zone.apex.clone();
    let mut exact: Option<&Node> = if ancestors.is_empty() {
        zone.nodes.get(&zone.apex)
    } else {
        None
    };
    for (i, anc) in ancestors.iter().rev().enumerate() {
        let Some(node) = zone.nodes.get(anc) else {
            break;
        };
        let is_qname = i + 1 == ancestors.len();
        if node.cut && !(is_qname && qtype == RecordType::DS) {
            referral(zone, anc, node, reply);
            return Step::Done;
        }
        encloser = anc.clone();
        if is_qname {
            exact = Some(node);
        }
    }
    if let Some(node) = exact {
        return answer_node(at, node, qname, qtype, reply);
    }
    if zone.has_wildcards {
        let wild = LowerName::new(
            &Name::from(encloser.clone())
                .prepend_label("*")
                .expect("wildcard label fits"),
        );
        if let Some(node) = zone.nodes.get(&wild) {
            // Not cached: every name below a wildcard would take an entry
            // of its own, and random names would fill the cache for nothing.
            reply.fill = Fill::No;
            return answer_node(at, node, qname, qtype, reply);
        }
    }
    reply.rcode = ResponseCode::NXDomain;
    negative(zone, reply);
    Step::Done
}

/// Answer from the node at (or synthesised for) `qname`.
fn answer_node(
    at: &mut At<'_>,
    node: &Node,
    qname: &Name,
    qtype: RecordType,
    reply: &mut Reply<'_>,
) -> Step {
    let zone = &at.served.zone;
    if let Some(cname) = zone.rrset(node, RecordType::CNAME) {
        let Some(rec) = cname.records(qname).next() else {
            return Step::Done;
        };
        let target = match &rec.data {
            RData::CNAME(t) => Some(t.0.clone()),
            _ => None,
        };
        reply.answers.push(rec);
        if qtype == RecordType::CNAME || qtype == RecordType::ANY {
            return Step::Done;
        }
        return target.map_or(Step::Done, Step::Follow);
    }
    // A service answers A and AAAA (or a CNAME when its pick is a cname region).
    if let Some(si) = node.service {
        let svc = &zone.services[si];
        let wants_addr = matches!(qtype, RecordType::A | RecordType::AAAA | RecordType::ANY);
        let may_alias = svc
            .regions
            .iter()
            .any(|r| matches!(r.region.target, RegionTarget::Alias(_)))
            || matches!(&svc.when_all_down, crate::model::WhenAllDown::LastResort(r) if matches!(r.target, RegionTarget::Alias(_)));
        if wants_addr || may_alias {
            match service_answer(at, si, svc, qname, qtype, reply) {
                ServiceStep::Records => return Step::Done,
                ServiceStep::Alias(target) => {
                    if qtype == RecordType::CNAME || qtype == RecordType::ANY {
                        return Step::Done;
                    }
                    return Step::Follow(target);
                }
                ServiceStep::ServFail => {
                    reply.rcode = ResponseCode::ServFail;
                    reply.aa = false;
                    reply.answers.clear();
                    return Step::Done;
                }
                ServiceStep::Nothing => {
                    if qtype != RecordType::ANY {
                        negative(zone, reply);
                        return Step::Done;
                    }
                }
            }
        }
    }
    if qtype == RecordType::ANY {
        // RFC 8482: over UDP, one RRset is enough; over TCP, all of them.
        for set in zone.rrsets(node) {
            reply.answers.extend(set.records(qname));
            if at.transport == Transport::Udp {
                break;
            }
        }
        if reply.answers.is_empty() {
            negative(zone, reply);
        }
        return Step::Done;
    }
    match zone.rrset(node, qtype) {
        Some(set) => {
            reply.answers.extend(set.records(qname));
            additional_for(zone, set, reply);
        }
        None => negative(zone, reply),
    }
    Step::Done
}

enum ServiceStep {
    Records,
    Alias(Name),
    Nothing,
    ServFail,
}

fn service_answer(
    at: &mut At<'_>,
    si: usize,
    svc: &Service,
    qname: &Name,
    qtype: RecordType,
    reply: &mut Reply<'_>,
) -> ServiceStep {
    let served = at.served;
    let view: &dyn HealthView = served.health.as_ref();
    let addr = at.client.locating_addr(&served.zone);
    let place = policy::geo::locate(svc, addr, &mut at.worker.geo);
    let rng = &mut at.worker.rng;
    {
        let (order, loc) = match &place {
            Some(p) => (&p.order[..], p.loc),
            None => (&[][..], 0),
        };
        let sel = policy::select_at(svc, view, order, rng);
        if let Some(p) = &place {
            reply.scope = reply.scope.max(p.scope);
        }
        // The cache stores one service's answer per pick; a second service in
        // a CNAME chain makes the answer depend on two draws: not stored.
        // Nor is NODATA or SERVFAIL of a located service: another location
        // may have regions up.
        reply.fill = match (&reply.fill, &sel.outcome) {
            (Fill::Fixed, Outcome::Answer) => Fill::Picks {
                svc: si,
                picks: sel.picks.clone(),
                degraded: sel.degraded,
                counted: false,
            },
            (Fill::Fixed, _) if place.is_none() => Fill::Fixed,
            _ => Fill::No,
        };
        match sel.outcome {
            Outcome::ServFail => return ServiceStep::ServFail,
            Outcome::NoData => return ServiceStep::Nothing,
            Outcome::Answer => {}
        }
        let ttl = if sel.degraded {
            svc.degraded_ttl
        } else {
            svc.ttl
        };
        // Count answers actually given, by the region that got the traffic.
        let count = |fill: &mut Fill| {
            if let Fill::Picks { counted, .. } = fill {
                *counted = true;
            }
            served.count_answer(si, loc, &sel.picks)
        };
        if let Some(&first) = sel.picks.first()
            && let RegionTarget::Alias(target) = &policy::picked_region(svc, first).target
        {
            reply.answers.push(Record::from_rdata(
                qname.clone(),
                ttl,
                RData::CNAME(CNAME(target.clone())),
            ));
            count(&mut reply.fill);
            return ServiceStep::Alias(target.clone());
        }
        if !matches!(qtype, RecordType::A | RecordType::AAAA | RecordType::ANY) {
            // Only a CNAME pick answers other types; addresses never do.
            return ServiceStep::Nothing;
        }
        // A CNAME chain may have put records here already: judge by what this step adds.
        let before = reply.answers.len();
        let mut addrs: Vec<IpAddr> = Vec::new();
        let families: &[bool] = match qtype {
            RecordType::A => &[false],
            RecordType::AAAA => &[true],
            _ => &[false, true],
        };
        for &v6 in families {
            if policy::addresses(svc, &sel, view, v6, rng, &mut addrs) {
                reply.fill = Fill::No; // shuffled: a stored copy would freeze the order
            }
            reply.answers.extend(addrs.iter().map(|a| {
                let data = match a {
                    IpAddr::V4(v4) => RData::A(A(*v4)),
                    IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
                };
                Record::from_rdata(qname.clone(), ttl, data)
            }));
            if reply.answers.len() > before && qtype == RecordType::ANY {
                break;
            }
        }
        if reply.answers.len() == before {
            ServiceStep::Nothing
        } else {
            count(&mut reply.fill);
            ServiceStep::Records
        }
    }
}

/// NOERROR/NXDOMAIN without data: the SOA in authority, its TTL capped at the
/// negative TTL (RFC 2308 §3).
fn negative(zone: &Zone, reply: &mut Reply<'_>) {
    let mut soa = zone.soa.clone();
    soa.ttl = zone.negative_ttl;
    reply.authority.push(soa);
}

/// A referral to a child zone: its NS set in authority, glue in additional, AA clear.
fn referral(zone: &Zone, name: &LowerName, cut: &Node, reply: &mut Reply<'_>) {
    // AA belongs to the first owner: a CNAME chain into a delegation keeps it.
    if reply.answers.is_empty() {
        reply.aa = false;
    }
    if let Some(ns) = zone.rrset(cut, RecordType::NS) {
        reply
            .authority
            .extend(ns.records(&Name::from(name.clone())));
        let before = reply.additional.len();
        additional_for(zone, ns, reply);
        reply.glue_required = reply.additional.len() > before;
    }
}

/// A and AAAA of in-zone targets of NS, MX and SRV records.
fn additional_for(zone: &Zone, set: crate::model::RRset<'_>, reply: &mut Reply<'_>) {
    if !matches!(set.rtype, RecordType::NS | RecordType::MX | RecordType::SRV) {
        return;
    }
    for data in set.rdatas() {
        let target = match &data {
            RData::NS(ns) => &ns.0,
            RData::MX(mx) => &mx.exchange,
            RData::SRV(srv) => &srv.target,
            _ => continue,
        };
        let lt = LowerName::new(target);
        if !zone.apex.zone_of(&lt) {
            continue;
        }
        if let Some(node) = zone.nodes.get(&lt) {
            for t in [RecordType::A, RecordType::AAAA] {
                if let Some(set) = zone.rrset(node, t) {
                    for rec in set.records(target) {
                        if !reply.additional.contains(&rec) {
                            reply.additional.push(rec);
                        }
                    }
                }
            }
        }
    }
}

/// Encode, fitting `limit`: first everything; then without the additional
/// section (unless it is required glue); else TC with the question only.
/// Returns true when the answer went out whole (the cache stores only those).
fn encode(
    meta: &Metadata,
    q: Option<&Query>,
    reply: &Reply<'_>,
    edns: Option<&Edns>,
    limit: usize,
    out: &mut Vec<u8>,
) -> bool {
    let none: &[Record] = &[];
    /// Answer, authority and additional sections, and the TC bit.
    type Attempt<'a> = (&'a [Record], &'a [Record], &'a [Record], bool);
    let attempts: [Attempt<'_>; 3] = [
        (&reply.answers, &reply.authority, &reply.additional, false),
        (&reply.answers, &reply.authority, none, false),
        (none, none, none, true),
    ];
    for (i, (ans, auth, add, tc)) in attempts.into_iter().enumerate() {
        if i == 1 && (reply.additional.is_empty() || reply.glue_required) {
            continue;
        }
        let mut m = *meta;
        m.truncation = tc;
        out.clear();
        let mut enc = BinEncoder::new(out);
        let ok = emit_message_parts(
            &m,
            &mut q.into_iter(),
            &mut ans.iter(),
            &mut auth.iter(),
            &mut add.iter(),
            edns,
            None,
            &mut enc,
        )
        .is_ok();
        if ok && out.len() <= limit {
            return i == 0;
        }
    }
    // Even the header and question did not fit (a 512-byte limit cannot be
    // exceeded by one question): send what we have, truncated.
    out.truncate(limit);
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    // Issue 19 item 6. Fails on the code before it: a UDP worker's answer
    // cache kept the zones of the snapshot it last answered from until its
    // next query, so a reload (or a zone's removal) freed nothing while the
    // server was quiet; RSS after 13 reloads of a 100,000-record zone grew
    // 44% and removing the zone gave nothing back.
    #[test]
    fn an_idle_worker_lets_go_of_a_replaced_snapshot() {
        let text = "[zone]\nname = \"z.example.\"\nnameservers = [\"ns1.example.net.\"]\nhostmaster = \"h.example.net.\"\n[[record]]\nname = \"www\"\ntype = \"A\"\nvalue = \"192.0.2.1\"\n";
        let config = crate::config::load_sources(
            &[(std::path::PathBuf::from("z.toml"), text.to_string())],
            crate::config::LoadOptions::default(),
        )
        .expect("valid");
        let zone = config.zones[0].clone();
        drop(config);
        let served = ServedZone::new(
            zone.clone(),
            Arc::new(crate::health::ZoneHealth {
                regions: Vec::new(),
            }),
            &DnsMetrics::disabled(),
        );
        let engine = Engine::new(
            Snapshot::new(vec![served]),
            EngineOptions::default(),
            DnsMetrics::disabled(),
            Arc::default(),
        );
        let mut worker = engine.worker(engine.rng(0));
        let mut q = Message::new(7, hickory_proto::op::MessageType::Query, OpCode::Query);
        q.add_query(Query::query(
            Name::from_ascii("www.z.example.").unwrap(),
            RecordType::A,
        ));
        let req = q.to_vec().unwrap();
        let mut out = Vec::new();
        for _ in 0..2 {
            assert!(engine.respond(
                &req,
                "192.0.2.9".parse().unwrap(),
                Transport::Udp,
                &mut out,
                &mut worker
            ));
        }
        let weak = Arc::downgrade(&zone);
        drop(zone);
        // A reload that removed the zone; the worker then sees no query.
        engine.store(Snapshot::new(Vec::new()));
        assert!(weak.upgrade().is_some(), "the worker's cache holds it");
        engine.refresh(&mut worker);
        assert!(weak.upgrade().is_none(), "let go once idle");
    }

    #[test]
    fn formerr_raw_keeps_id_and_opcode() {
        let engine = Engine::new(
            Snapshot::default(),
            EngineOptions::default(),
            DnsMetrics::disabled(),
            Arc::default(),
        );
        let mut req = vec![0x12, 0x34, 0x01, 0x20, 0, 1, 0, 0, 0, 0, 0, 0];
        req.extend_from_slice(&[0xff; 5]);
        let mut out = Vec::new();
        assert!(engine.respond(
            &req,
            "127.0.0.1".parse().unwrap(),
            Transport::Udp,
            &mut out,
            &mut Worker::new(engine.rng(0))
        ));
        assert_eq!(&out[..2], &[0x12, 0x34]);
        assert_eq!(out[2], 0x81, "QR set, RD copied");
        assert_eq!(out[3] & 0x0f, 1, "FORMERR");
        assert_eq!(&out[4..12], &[0; 8]);
    }

    #[test]
    fn short_or_response_packets_are_dropped() {
        let engine = Engine::new(
            Snapshot::default(),
            EngineOptions::default(),
            DnsMetrics::disabled(),
            Arc::default(),
        );
        let mut out = Vec::new();
        assert!(!engine.respond(
            &[1, 2, 3],
            "127.0.0.1".parse().unwrap(),
            Transport::Udp,
            &mut out,
            &mut Worker::new(engine.rng(0))
        ));
        let resp = [0, 1, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(!engine.respond(
            &resp,
            "127.0.0.1".parse().unwrap(),
            Transport::Udp,
            &mut out,
            &mut Worker::new(engine.rng(0))
        ));
    }
}
