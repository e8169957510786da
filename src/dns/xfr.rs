//! Transfers out: AXFR (RFC 5936) and IXFR (RFC 1995) of the zone as
//! transferred ([`super::journal`]), over TCP, each message TSIG-signed
//! (RFC 8945) when the zone names a key. Over UDP an IXFR gets the current
//! SOA alone (RFC 1995 §2), which sends the secondary to TCP when it is
//! behind.
//!
//! Who may transfer: an address inside the zone's `allow` (else REFUSED),
//! then, when the zone names a key, a request signed with it: unsigned is
//! REFUSED, another key NOTAUTH/BADKEY, a bad MAC NOTAUTH/BADSIG, a time
//! outside the fudge NOTAUTH/BADTIME (RFC 8945 §5.2).
//!
//! Bounded: at most [`MAX_TRANSFERS`] at once, [`MAX_PER_CLIENT`] per
//! client address (the rest get SERVFAIL, retried by the secondary), each
//! message written within [`WRITE_TIMEOUT`], the whole within
//! [`TRANSFER_TIMEOUT`]; a transfer encodes one message at a time from the
//! version it started with, so its memory is one message.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::tsig::{TSIG, TsigError, make_tsig_record};
use hickory_proto::rr::{Record, RecordType};
use hickory_proto::rr::{TSigResponseContext, TSigner};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
use tokio::io::AsyncWriteExt;

use super::journal::{Journal, Version, soa_serial};
use super::snapshot::ServedZone;
use super::{Engine, Transport};
use crate::model::TsigKey;
use crate::throttle::{LogThrottle, suppressed_note};

/// Transfers served at once, in all.
pub const MAX_TRANSFERS: usize = 8;
/// Transfers served at once to one address.
pub const MAX_PER_CLIENT: usize = 2;
/// Longest a transfer message may take to be written.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a whole transfer may take.
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(300);
/// Message size a transfer fills up to, before name compression (which
/// only shrinks it): room for the header, question and TSIG under 64 KiB.
const MESSAGE_FILL: usize = 60_000;
/// TSIG fudge: how far the peers' clocks may differ (RFC 8945 §10: 300 s).
const FUDGE: u16 = 300;

/// The transfers in flight, per client address.
#[derive(Default)]
pub struct InFlight {
    per_client: Mutex<HashMap<IpAddr, usize>>,
}

/// A transfer's place in [`InFlight`], given back on drop.
struct Slot<'a>(&'a InFlight, IpAddr);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut m = self.0.per_client.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

impl InFlight {
    fn take(&self, client: IpAddr) -> Option<Slot<'_>> {
        let mut m = self.per_client.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = m.values().sum();
        let mine = m.entry(client).or_insert(0);
        if total >= MAX_TRANSFERS || *mine >= MAX_PER_CLIENT {
            if *mine == 0 {
                m.remove(&client);
            }
            return None;
        }
        *mine += 1;
        Some(Slot(self, client))
    }
}

/// Whether `req` asks for a transfer (AXFR or IXFR): a cheap look at the
/// header and the question's type, without parsing.
pub fn is_transfer(req: &[u8]) -> bool {
    if req.len() < 17 || req[2] & 0xf8 != 0 || req[4..6] != [0, 1] {
        return false; // a response, not QUERY, or not one question
    }
    let mut i = 12;
    while let Some(&len) = req.get(i) {
        if len == 0 {
            break;
        }
        if len & 0xc0 != 0 {
            return false;
        }
        i += usize::from(len) + 1;
    }
    matches!(req.get(i + 1..i + 3), Some([0, 251 | 252]))
}

/// The request's TSIG, verified: what the answers are signed with.
struct Signing {
    signer: TSigner,
    request_mac: Vec<u8>,
    id: u16,
    /// The fixed time to sign at (fuzzing), else the clock's.
    fixed_now: Option<u64>,
}

impl Signing {
    fn now(&self) -> u64 {
        self.fixed_now.unwrap_or_else(unix_secs)
    }
}

/// Why a request is not served, and the answer that says so.
enum Refusal {
    /// An rcode, no TSIG (the request was not signed, or not verified).
    Rcode(ResponseCode),
    /// An rcode for a request whose TSIG was verified: signed (RFC 8945
    /// §5.3), or the secondary would discard it.
    SignedRcode(ResponseCode, Box<Signing>),
    /// NOTAUTH with an unsigned TSIG error (BADKEY, BADSIG).
    Unsigned(TSigResponseContext),
    /// NOTAUTH/BADTIME, signed, its Time Signed the request's and its Other
    /// Data this server's time (RFC 8945 §5.2.3, §4.3).
    BadTime(Box<Signing>, u64),
}

impl Refusal {
    /// `rc`, signed when the request's TSIG was verified.
    fn rcode(rc: ResponseCode, signing: Option<Signing>) -> Self {
        match signing {
            Some(s) => Refusal::SignedRcode(rc, Box::new(s)),
            None => Refusal::Rcode(rc),
        }
    }
}

/// Log a refused transfer at WARN, at most a line a second per reason
/// with a count of those left out: refusals come from anyone, and a flood
/// of them must not become a flood of log lines.
fn log_refusal(throttle: &LogThrottle, zone: &str, client: IpAddr, why: std::fmt::Arguments<'_>) {
    if let Some(n) = throttle.allow() {
        tracing::warn!(zone, %client, "transfer refused: {why}{}", suppressed_note(n));
    }
}

/// A request let in: its zone, the zone's journal, the request's TSIG.
type Admitted = (Arc<ServedZone>, Arc<Journal>, Option<Signing>);

/// Check who asks: the zone, its `allow`, its key.
fn admit(engine: &Engine, raw: &[u8], msg: &Message, client: IpAddr) -> Result<Admitted, Refusal> {
    let q = msg
        .queries
        .first()
        .ok_or(Refusal::Rcode(ResponseCode::FormErr))?;
    let snap = engine.snapshot();
    let served = snap
        .find_zone(&q.name().into())
        .filter(|z| z.zone.apex == q.name().into())
        .cloned()
        .ok_or(Refusal::Rcode(ResponseCode::Refused))?;
    let (Some(transfer), Some(journal)) = (served.zone.transfer.clone(), served.journal.clone())
    else {
        return Err(Refusal::Rcode(ResponseCode::Refused));
    };
    let label = served.zone.label();
    if !transfer.allows(client) {
        static NOT_ALLOWED: LogThrottle = LogThrottle::new(Duration::from_secs(1));
        engine.transfers.count_refused(&label, "address");
        log_refusal(
            &NOT_ALLOWED,
            &label,
            client,
            format_args!("{client} is not in the zone's transfer allow list"),
        );
        return Err(Refusal::Rcode(ResponseCode::Refused));
    }
    static BAD_TSIG: LogThrottle = LogThrottle::new(Duration::from_secs(1));
    let signing = match (&transfer.tsig_key, msg.signature()) {
        (Some(key_name), _) => {
            let key = engine
                .transfers
                .key(key_name)
                .ok_or(Refusal::Rcode(ResponseCode::ServFail))?;
            Some(verify(engine, raw, msg, key).inspect_err(|_| {
                engine.transfers.count_refused(&label, "tsig");
                log_refusal(
                    &BAD_TSIG,
                    &label,
                    client,
                    format_args!("the request is not signed with the zone's TSIG key {key_name}"),
                );
            })?)
        }
        // No key required, but the request is signed: verified with the
        // settings file's key of its name, and answered signed.
        (None, Some(tsig)) => {
            let verified = match engine.transfers.key_named(&tsig.name) {
                Some(key) => verify(engine, raw, msg, key),
                None => Err(Refusal::Unsigned(TSigResponseContext::unknown_key(
                    msg.metadata.id,
                    now_for(engine),
                    tsig.name.clone(),
                ))),
            };
            Some(verified.inspect_err(|_| {
                engine.transfers.count_refused(&label, "tsig");
                log_refusal(
                    &BAD_TSIG,
                    &label,
                    client,
                    format_args!("its TSIG does not verify with a key of this server"),
                );
            })?)
        }
        (None, None) => None,
    };
    Ok((served, journal, signing))
}

/// Now, in unix seconds.
fn unix_secs() -> u64 {
    crate::reload::unix_now().max(0) as u64
}

/// Now for TSIG: the clock's, or the engine's fixed time (fuzzing).
fn now_for(engine: &Engine) -> u64 {
    engine.transfers.tsig_now().unwrap_or_else(unix_secs)
}

/// Verify the request's TSIG against `key` (RFC 8945 §5.2).
fn verify(engine: &Engine, raw: &[u8], msg: &Message, key: &TsigKey) -> Result<Signing, Refusal> {
    let Some(tsig) = msg.signature() else {
        return Err(Refusal::Rcode(ResponseCode::Refused));
    };
    let now = now_for(engine);
    if tsig.name != key.name || tsig.data.algorithm != key.algorithm {
        return Err(Refusal::Unsigned(TSigResponseContext::unknown_key(
            msg.metadata.id,
            now,
            tsig.name.clone(),
        )));
    }
    let signer = TSigner::new(
        key.secret.clone(),
        key.algorithm.clone(),
        key.name.clone(),
        FUDGE,
    )
    .map_err(|_| Refusal::Rcode(ResponseCode::ServFail))?;
    match signer.verify_message_byte(raw, None, true) {
        Ok((mac, time, range)) => {
            let signing = Signing {
                signer,
                request_mac: mac,
                id: msg.metadata.id,
                fixed_now: engine.transfers.tsig_now(),
            };
            if range.start <= now && now <= range.end {
                Ok(signing)
            } else {
                Err(Refusal::BadTime(Box::new(signing), time))
            }
        }
        Err(_) => Err(Refusal::Unsigned(TSigResponseContext::bad_signature(
            msg.metadata.id,
            now,
            signer,
        ))),
    }
}

/// The answer to a refused request.
fn refusal_bytes(msg: &Message, refusal: Refusal) -> Vec<u8> {
    let mut m = response_to(msg);
    match refusal {
        Refusal::Rcode(rc) => {
            m.metadata.response_code = rc;
        }
        Refusal::SignedRcode(rc, signing) => {
            m.metadata.response_code = rc;
            let mut s = StreamSigner {
                signing: *signing,
                previous: None,
            };
            let _ = s.sign(&mut m);
        }
        Refusal::Unsigned(ctx) => {
            m.metadata.response_code = ResponseCode::NotAuth;
            if let Ok(unsigned) = m.to_vec()
                && let Ok(tsig) = ctx.sign(&unsigned)
            {
                m.set_signature(tsig);
            }
        }
        Refusal::BadTime(signing, request_time) => {
            m.metadata.response_code = ResponseCode::NotAuth;
            let now = signing.now();
            let mut other = ((now >> 32) as u16).to_be_bytes().to_vec();
            other.extend_from_slice(&(now as u32).to_be_bytes());
            let s = &signing.signer;
            let stub = TSIG::new(
                s.algorithm().clone(),
                request_time,
                FUDGE,
                Vec::new(),
                signing.id,
                Some(TsigError::BadTime),
                other,
            );
            if let Ok(unsigned) = m.to_vec()
                && let Ok(tbs) = s.encode_response_tbs(&signing.request_mac, &unsigned, &stub)
                && let Ok(mac) = s.sign(&tbs)
            {
                m.set_signature(Box::new(make_tsig_record(
                    s.signer_name().clone(),
                    stub.set_mac(mac),
                )));
            }
        }
    }
    m.to_vec().unwrap_or_default()
}

/// A response header for `req`: its ID and question, AA set.
fn response_to(req: &Message) -> Message {
    let mut m = Message::new(req.metadata.id, MessageType::Response, OpCode::Query);
    m.metadata.authoritative = true;
    m.queries = req.queries.clone();
    m
}

/// Signs the messages of one response stream: the first over the
/// request's MAC with the full TSIG variables, each later one over the
/// previous MAC with the timers only (RFC 8945 §5.3.1).
struct StreamSigner {
    signing: Signing,
    previous: Option<Vec<u8>>,
}

impl StreamSigner {
    fn sign(&mut self, m: &mut Message) -> Result<(), String> {
        let now = self.signing.now();
        let unsigned = m.to_vec().map_err(|e| e.to_string())?;
        let s = &self.signing;
        let tsig = match &self.previous {
            None => {
                let ctx = TSigResponseContext::new(
                    s.id,
                    now,
                    s.signer.clone(),
                    s.request_mac.clone(),
                    None,
                );
                *ctx.sign(&unsigned).map_err(|e| e.to_string())?
            }
            Some(prev) => {
                let mut tbs = Vec::with_capacity(prev.len() + unsigned.len() + 10);
                tbs.extend_from_slice(&(prev.len() as u16).to_be_bytes());
                tbs.extend_from_slice(prev);
                tbs.extend_from_slice(&unsigned);
                tbs.extend_from_slice(&((now >> 32) as u16).to_be_bytes());
                tbs.extend_from_slice(&(now as u32).to_be_bytes());
                tbs.extend_from_slice(&FUDGE.to_be_bytes());
                let mac = s.signer.sign(&tbs).map_err(|e| e.to_string())?;
                make_tsig_record(
                    s.signer.signer_name().clone(),
                    TSIG::new(
                        s.signer.algorithm().clone(),
                        now,
                        FUDGE,
                        mac,
                        s.id,
                        None,
                        Vec::new(),
                    ),
                )
            }
        };
        self.previous = Some(tsig.data.mac.to_vec());
        m.set_signature(Box::new(tsig));
        Ok(())
    }
}

/// What an IXFR from `serial` gets: the current SOA alone when the client
/// is up to date (or ahead), the changes when the history reaches back,
/// else `None` (send the zone whole, as AXFR does).
fn ixfr_body(journal: &Journal, current: &Arc<Version>, serial: u32) -> Option<Body> {
    if serial == current.serial || crate::reload::serial_gt(serial, current.serial) {
        return Some(Body::Soa(current.clone()));
    }
    let (now, changes) = journal.changes_since(serial)?;
    Some(Body::Changes(now, changes))
}

/// The most a TSIG record signed by `signer` takes in an answer: owner
/// (the key name), type, class, TTL, length, then the algorithm's name,
/// time, fudge, MAC (64 bytes at most: SHA-512), original ID, error and
/// an empty other data.
fn tsig_room(signer: &TSigner) -> usize {
    (signer.signer_name().len() + 1)
        + 10
        + (signer.algorithm().to_name().len() + 1)
        + 6
        + 2
        + 2
        + 64
        + 2
        + 2
        + 2
}

/// How long `r` is on the wire at most (uncompressed).
fn wire_len(r: &Record) -> usize {
    let mut buf = Vec::with_capacity(128);
    let mut enc = BinEncoder::new(&mut buf);
    enc.set_canonical_form(true);
    match r.emit(&mut enc) {
        Ok(()) => buf.len(),
        Err(_) => MESSAGE_FILL,
    }
}

/// What a transfer request over TCP gets.
pub enum Plan<'e> {
    /// One message: a refusal or an error.
    Reply(Vec<u8>),
    /// The messages of a transfer, made one at a time.
    Stream(Box<Outgoing<'e>>),
}

/// The records a transfer sends, read in place from the version and the
/// journal's changes (shared, never copied): a transfer's own memory is
/// the message it is making, whatever the zone's or the change's size.
enum Body {
    /// The zone whole: SOA, records, SOA.
    Whole(Arc<Version>),
    /// An IXFR's changes to the version (RFC 1995 §4): its SOA, then per
    /// change the old SOA, the records removed, the new SOA, the records
    /// added; its SOA again.
    Changes(Arc<Version>, Vec<Arc<super::journal::Change>>),
    /// An IXFR of a client up to date: the version's SOA alone.
    Soa(Arc<Version>),
}

impl Body {
    fn get(&self, i: usize) -> Option<&Record> {
        match self {
            Body::Whole(v) => match i.checked_sub(1) {
                None => Some(&v.soa),
                Some(j) if j < v.records.len() => Some(&v.records[j]),
                Some(j) if j == v.records.len() => Some(&v.soa),
                Some(_) => None,
            },
            Body::Soa(v) => (i == 0).then_some(&v.soa),
            Body::Changes(v, changes) => {
                let Some(mut j) = i.checked_sub(1) else {
                    return Some(&v.soa);
                };
                for c in changes {
                    let removed = c.removed.len();
                    let n = removed + c.added.len() + 2;
                    if j < n {
                        return Some(match j {
                            0 => &c.from,
                            j if j <= removed => &c.removed[j - 1],
                            j if j == removed + 1 => &c.to,
                            j => &c.added[j - removed - 2],
                        });
                    }
                    j -= n;
                }
                (j == 0).then_some(&v.soa)
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Body::Whole(v) => v.records.len() + 2,
            Body::Soa(_) => 1,
            Body::Changes(_, changes) => {
                2 + changes
                    .iter()
                    .map(|c| c.removed.len() + c.added.len() + 2)
                    .sum::<usize>()
            }
        }
    }
}

/// A transfer under way: its place among those in flight, and what is
/// left to send.
pub struct Outgoing<'e> {
    _slot: Slot<'e>,
    label: String,
    kind: &'static str,
    serial: u32,
    req: Message,
    body: Body,
    signer: Option<StreamSigner>,
    next: usize,
    messages: usize,
    bytes: usize,
}

impl Outgoing<'_> {
    /// The next message, or `None` when all were made. Messages fill up to
    /// [`MESSAGE_FILL`] bytes, the question in the first only (RFC 5936
    /// §2.2), each signed when the request was.
    pub fn next_message(&mut self) -> Option<Result<Vec<u8>, String>> {
        if self.next >= self.body.len() && self.messages > 0 {
            return None;
        }
        let mut m = response_to(&self.req);
        if self.messages > 0 {
            m.queries.clear();
        }
        let mut fill = 0;
        while let Some(r) = self.body.get(self.next) {
            let len = wire_len(r);
            if fill + len > MESSAGE_FILL && !m.answers.is_empty() {
                break;
            }
            fill += len;
            m.answers.push(r.clone());
            self.next += 1;
        }
        if let Some(s) = self.signer.as_mut()
            && let Err(e) = s.sign(&mut m)
        {
            return Some(Err(e));
        }
        let out = match m.to_vec() {
            Ok(o) => o,
            Err(e) => return Some(Err(e.to_string())),
        };
        self.messages += 1;
        self.bytes += out.len();
        Some(Ok(out))
    }
}

/// What the transfer request `raw` from `client` gets: a refusal, or the
/// transfer (then counted among those in flight until dropped).
pub fn plan<'e>(engine: &'e Engine, raw: &[u8], client: IpAddr) -> Plan<'e> {
    let Ok(msg) = Message::from_vec(raw) else {
        let mut out = Vec::new();
        engine.respond_cut(raw, Transport::Tcp, &mut out);
        return Plan::Reply(out);
    };
    let (served, journal, signing) = match admit(engine, raw, &msg, client) {
        Ok(v) => v,
        Err(r) => return Plan::Reply(refusal_bytes(&msg, r)),
    };
    let label = served.zone.label();
    let Some(slot) = engine.transfers.in_flight.take(client) else {
        static BUSY: LogThrottle = LogThrottle::new(Duration::from_secs(1));
        engine.transfers.count_refused(&label, "busy");
        log_refusal(
            &BUSY,
            &label,
            client,
            format_args!(
                "for now: {MAX_TRANSFERS} transfers in all or {MAX_PER_CLIENT} to this address are running"
            ),
        );
        return Plan::Reply(refusal_bytes(
            &msg,
            Refusal::rcode(ResponseCode::ServFail, signing),
        ));
    };
    let Some(version) = journal.current() else {
        return Plan::Reply(refusal_bytes(
            &msg,
            Refusal::rcode(ResponseCode::ServFail, signing),
        ));
    };
    let client_serial = msg
        .authorities
        .iter()
        .find(|r| r.record_type() == RecordType::SOA)
        .map(soa_serial);
    let (kind, body) = match (msg.queries[0].query_type(), client_serial) {
        (RecordType::IXFR, Some(s)) => match ixfr_body(&journal, &version, s) {
            Some(body) => ("ixfr", body),
            None => ("axfr", Body::Whole(version.clone())),
        },
        (RecordType::IXFR, None) => {
            return Plan::Reply(refusal_bytes(
                &msg,
                Refusal::rcode(ResponseCode::FormErr, signing),
            ));
        }
        _ => ("axfr", Body::Whole(version.clone())),
    };
    Plan::Stream(Box::new(Outgoing {
        _slot: slot,
        label,
        kind,
        serial: version.serial,
        req: msg,
        body,
        signer: signing.map(|signing| StreamSigner {
            signing,
            previous: None,
        }),
        next: 0,
        messages: 0,
        bytes: 0,
    }))
}

/// Serve a transfer request that arrived over TCP: write every message of
/// the answer to `stream`. `Err` ends the connection.
pub(super) async fn serve_tcp(
    engine: &Engine,
    raw: &[u8],
    client: IpAddr,
    stream: &mut tokio::net::TcpStream,
) -> std::io::Result<()> {
    let mut t = match plan(engine, raw, client) {
        Plan::Reply(bytes) => return write_framed(stream, &bytes).await,
        Plan::Stream(t) => t,
    };
    let started = std::time::Instant::now();
    let sent = tokio::time::timeout(TRANSFER_TIMEOUT, async {
        while let Some(m) = t.next_message() {
            write_framed(stream, &m.map_err(std::io::Error::other)?).await?;
        }
        Ok::<(), std::io::Error>(())
    })
    .await;
    let (label, kind, serial) = (t.label.clone(), t.kind, t.serial);
    match sent {
        Ok(Ok(())) => {
            engine.transfers.count_served(&label, kind, t.bytes);
            tracing::info!(zone = %label, %client, serial, kind, records = t.body.len(), messages = t.messages, bytes = t.bytes, elapsed_ms = started.elapsed().as_millis() as u64,
                "zone transferred to {client} ({kind}, serial {serial})");
            Ok(())
        }
        Ok(Err(e)) => {
            tracing::warn!(zone = %label, %client, kind, error = %e, "transfer to {client} failed: {e}");
            Err(e)
        }
        Err(_) => {
            tracing::warn!(zone = %label, %client, kind, "transfer to {client} took longer than {}s: cut", TRANSFER_TIMEOUT.as_secs());
            Err(std::io::ErrorKind::TimedOut.into())
        }
    }
}

/// Write one length-prefixed message (RFC 1035 §4.2.2).
async fn write_framed(stream: &mut tokio::net::TcpStream, msg: &[u8]) -> std::io::Result<()> {
    let mut framed = Vec::with_capacity(msg.len() + 2);
    framed.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    framed.extend_from_slice(msg);
    tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&framed))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out"))?
}

/// Answer a transfer request that arrived over UDP: IXFR gets the current
/// SOA (signed when the zone has a key), AXFR is REFUSED (RFC 5936 §4.2
/// defines it over TCP only).
pub(super) fn answer_udp(engine: &Engine, raw: &[u8], client: IpAddr, out: &mut Vec<u8>) -> bool {
    let Ok(msg) = Message::from_vec(raw) else {
        return engine.respond_cut(raw, Transport::Udp, out);
    };
    out.clear();
    if msg.queries[0].query_type() == RecordType::AXFR {
        out.extend(refusal_bytes(&msg, Refusal::Rcode(ResponseCode::Refused)));
        return true;
    }
    let (journal, signing) = match admit(engine, raw, &msg, client) {
        Ok((_, j, s)) => (j, s),
        Err(r) => {
            out.extend(refusal_bytes(&msg, r));
            return true;
        }
    };
    let Some(version) = journal.current() else {
        out.extend(refusal_bytes(
            &msg,
            Refusal::rcode(ResponseCode::ServFail, signing),
        ));
        return true;
    };
    let mut m = response_to(&msg);
    m.answers.push(version.soa.clone());
    if let Some(signing) = signing {
        let mut s = StreamSigner {
            signing,
            previous: None,
        };
        let _ = s.sign(&mut m);
    }
    out.extend(m.to_vec().unwrap_or_default());
    true
}

/// Answer a query that carries a TSIG (a secondary's SOA check before a
/// refresh, signed as its transfers are): verified against the settings
/// file's key of that name, answered as any query, and the answer signed
/// (RFC 8945 §5.3). An unknown key gets NOTAUTH/BADKEY, a bad MAC
/// NOTAUTH/BADSIG, a stale time NOTAUTH/BADTIME.
pub(super) fn answer_signed(
    engine: &Engine,
    raw: &[u8],
    msg: &Message,
    from: IpAddr,
    transport: Transport,
    out: &mut Vec<u8>,
    worker: &mut super::Worker,
) -> bool {
    let Some(tsig) = msg.signature() else {
        return false;
    };
    let signing = match engine.transfers.key_named(&tsig.name) {
        None => Err(Refusal::Unsigned(TSigResponseContext::unknown_key(
            msg.metadata.id,
            now_for(engine),
            tsig.name.clone(),
        ))),
        Some(key) => verify(engine, raw, msg, key),
    };
    let signing = match signing {
        Ok(s) => s,
        Err(r) => {
            out.clear();
            out.extend(refusal_bytes(msg, r));
            return true;
        }
    };
    let mut plain = msg.clone();
    plain.signature = None;
    // Over UDP the answer is made to fit the client's size less the TSIG
    // to come, so that only what does not fit beside it is left out (RFC
    // 2181 §9), not the whole answer.
    let limit = match transport {
        Transport::Tcp => usize::from(u16::MAX),
        Transport::Udp => engine.udp_limit(msg),
    };
    if transport == Transport::Udp
        && let Some(edns) = plain.edns.as_mut()
    {
        let room = tsig_room(&signing.signer);
        edns.set_max_payload(u16::try_from(limit.saturating_sub(room).max(512)).unwrap_or(512));
    }
    let Ok(bytes) = plain.to_vec() else {
        return engine.respond_cut(raw, transport, out);
    };
    if !engine.respond(&bytes, from, transport, out, worker) {
        return false;
    }
    let Ok(mut m) = Message::from_vec(out) else {
        return true;
    };
    // Still too long with the TSIG (a client without EDNS, whose 512
    // bytes cannot be lowered): truncated (TC, no records), signed, and
    // the client asks again over TCP (RFC 8945 §5.3: the MAC covers the
    // truncated message).
    let mut s = StreamSigner {
        signing,
        previous: None,
    };
    if s.sign(&mut m).is_ok()
        && let Ok(signed) = m.to_vec()
    {
        if signed.len() <= limit {
            *out = signed;
            return true;
        }
        // The same answer without its records and its first TSIG, signed
        // afresh over the request's MAC.
        m.signature = None;
        m.metadata.truncation = true;
        m.answers.clear();
        m.authorities.clear();
        m.additionals.clear();
        s.previous = None;
        if s.sign(&mut m).is_ok()
            && let Ok(signed) = m.to_vec()
        {
            *out = signed;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::{Name, RData};

    fn a(name: &str, last: u8) -> Record {
        Record::from_rdata(
            Name::from_ascii(name).unwrap(),
            60,
            RData::A(A::new(192, 0, 2, last)),
        )
    }

    fn zone(records: &[Record]) -> Vec<Record> {
        let n = Name::from_ascii("z.").unwrap();
        let mut v = records.to_vec();
        v.sort_by(super::super::transfer::order);
        v.insert(
            0,
            Record::from_rdata(
                n.clone(),
                300,
                RData::SOA(SOA::new(n.clone(), n, 1, 1, 1, 1, 1)),
            ),
        );
        v
    }

    /// An IXFR's records, read in place from the journal's changes, are
    /// RFC 1995's sequence: the new SOA, per change the old SOA, removals,
    /// the new SOA, additions, and the new SOA again.
    #[test]
    fn an_ixfr_reads_the_changes_in_rfc_1995_order() {
        let j = Journal::default();
        j.commit(zone(&[a("a.z.", 1), a("b.z.", 1)]), None, 1000);
        j.commit(zone(&[a("a.z.", 2), a("b.z.", 1)]), None, 2000);
        j.commit(zone(&[a("a.z.", 2), a("c.z.", 3)]), None, 3000);
        let current = j.current().unwrap();
        let body = ixfr_body(&j, &current, 1000).expect("the history reaches");
        let got: Vec<String> = (0..body.len())
            .map(|i| {
                let r = body.get(i).expect("in range");
                match &r.data {
                    RData::SOA(s) => format!("SOA {}", s.serial),
                    d => format!("{} {d}", r.name),
                }
            })
            .collect();
        assert_eq!(
            got,
            [
                "SOA 3000",
                "SOA 1000",
                "a.z. 192.0.2.1",
                "SOA 2000",
                "a.z. 192.0.2.2",
                "SOA 2000",
                "b.z. 192.0.2.1",
                "SOA 3000",
                "c.z. 192.0.2.3",
                "SOA 3000",
            ]
        );
        assert!(body.get(body.len()).is_none());
        // Up to date, or ahead: the SOA alone. Unknown: None (AXFR).
        for serial in [3000, 3001] {
            let up = ixfr_body(&j, &current, serial).unwrap();
            assert_eq!(up.len(), 1);
            assert!(matches!(up.get(0).map(|r| &r.data), Some(RData::SOA(_))));
        }
        assert!(ixfr_body(&j, &current, 7).is_none());
    }
}
