//! NOTIFY (RFC 1996): every secondary in a zone's `notify` list is told of
//! each new serial of the zone as transferred, at once, and again with
//! back-off until it acknowledges (waits of 1, 2, 4, 8, 16, 32 s, then a
//! minute apart), signed with the zone's TSIG key when it has one. After
//! five tries unanswered (BIND and Knot give up there) it is logged and
//! counted as failed, and retried on: a secondary down for an hour hears
//! of the change within a minute of coming back, not at its next SOA
//! refresh. A newer serial replaces the one being retried. One task per
//! (zone, secondary), started and stopped as reloads change the lists.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType, TSigner};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::Engine;
use super::journal::Journal;

/// Tries unanswered before a serial is logged and counted as failed (it is
/// retried on).
const WARN_AFTER: u32 = 5;
/// Wait for the first answer; doubled for each retry, up to [`MAX_WAIT`].
const FIRST_WAIT: Duration = Duration::from_secs(1);
/// Longest wait between tries.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// What one secondary was last told, and when it answered.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct NotifyState {
    /// The serial last sent.
    pub serial: Option<u32>,
    /// Unix time it was first sent.
    pub sent: Option<u64>,
    /// The serial last acknowledged.
    pub acked_serial: Option<u32>,
    /// Unix time of that acknowledgement.
    pub acked: Option<u64>,
    /// Why the last try failed, if it did.
    pub error: Option<String>,
}

/// The NOTIFY state of every (zone, secondary).
#[derive(Default)]
pub struct Notifies {
    states: std::sync::Mutex<HashMap<(String, SocketAddr), NotifyState>>,
    /// Poked when the zones (or their lists) may have changed.
    pub(super) reconfigured: tokio::sync::Notify,
}

impl Notifies {
    /// Every (zone, secondary) and what it was last told.
    pub fn states(&self) -> Vec<(String, SocketAddr, NotifyState)> {
        let mut v: Vec<_> = self
            .lock()
            .iter()
            .map(|((z, a), s)| (z.clone(), *a, s.clone()))
            .collect();
        v.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        v
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, SocketAddr), NotifyState>> {
        self.states.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, zone: &str, to: SocketAddr, f: impl FnOnce(&mut NotifyState)) {
        f(self.lock().entry((zone.to_string(), to)).or_default());
    }
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What a sender tells a secondary: the zone's journal, its apex, its key.
type Target = (Arc<Journal>, Name, Option<TSigner>);

/// One sender's identity: the zone and secondary, and what it was started
/// with (the key's name, the journal), so that a reload changing either
/// starts a new sender instead of leaving the old one signing with a gone
/// key or watching a gone journal.
type SenderKey = (String, SocketAddr, Option<String>, usize);

/// Keep one sender per (zone, secondary) of the served zones: started for
/// new ones, stopped for those gone. Returns at `shutdown`.
pub async fn run(engine: Arc<Engine>, shutdown: CancellationToken) {
    let mut senders: HashMap<SenderKey, CancellationToken> = HashMap::new();
    loop {
        let mut wanted: HashMap<SenderKey, Target> = HashMap::new();
        for served in engine.snapshot().zones() {
            let (Some(t), Some(j)) = (&served.zone.transfer, &served.journal) else {
                continue;
            };
            let signer = t.tsig_key.as_ref().and_then(|k| {
                let key = engine.transfers.key(k)?;
                TSigner::new(
                    key.secret.clone(),
                    key.algorithm.clone(),
                    key.name.clone(),
                    300,
                )
                .ok()
            });
            for to in &t.notify {
                wanted.insert(
                    (
                        served.zone.label(),
                        *to,
                        t.tsig_key.clone(),
                        Arc::as_ptr(j) as usize,
                    ),
                    (j.clone(), served.zone.name.clone(), signer.clone()),
                );
            }
        }
        senders.retain(|k, stop| {
            let keep = wanted.contains_key(k);
            if !keep {
                stop.cancel();
            }
            keep
        });
        for (key, (journal, apex, signer)) in wanted {
            if senders.contains_key(&key) {
                continue;
            }
            let stop = shutdown.child_token();
            senders.insert(key.clone(), stop.clone());
            let engine = engine.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = sender(&engine, &key.0, key.1, &journal, &apex, signer) => {}
                    () = stop.cancelled() => {}
                }
            });
        }
        tokio::select! {
            () = engine.transfers.notifies.reconfigured.notified() => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// Tell `to` of every new serial of `journal`, for as long as it runs.
async fn sender(
    engine: &Engine,
    zone: &str,
    to: SocketAddr,
    journal: &Journal,
    apex: &Name,
    signer: Option<TSigner>,
) {
    let mut serials = journal.subscribe();
    let metrics = &engine.transfers.metrics;
    let target = to.to_string();
    // Every result's series from 0, so that the first failure is an
    // increase an alert on `increase()` sees.
    for result in ["sent", "acked", "failed"] {
        metrics.notifies.with_label_values(&[zone, &target, result]);
    }
    'serial: loop {
        // The current serial first: a start or a reload tells secondaries
        // too (they may have missed changes while this node was down).
        serials.mark_unchanged();
        let Some(version) = journal.current() else {
            if serials.changed().await.is_err() {
                return;
            }
            continue;
        };
        let serial = version.serial;
        engine.transfers.notifies.update(zone, to, |s| {
            s.serial = Some(serial);
            s.sent = Some(unix_secs());
            s.error = None;
        });
        let mut wait = FIRST_WAIT;
        for attempt in 1.. {
            metrics
                .notifies
                .with_label_values(&[zone, &target, "sent"])
                .inc();
            metrics
                .notify_sent
                .with_label_values(&[zone, &target])
                .set(unix_secs() as i64);
            let started = tokio::time::Instant::now();
            let result = tokio::select! {
                r = notify_once(to, engine.transfers.notify_source(to), apex, &version.soa, signer.as_ref(), wait) => r,
                r = serials.changed() => {
                    if r.is_err() { return; }
                    continue 'serial; // a newer serial to tell
                }
            };
            match result {
                Ok(()) => {
                    metrics
                        .notifies
                        .with_label_values(&[zone, &target, "acked"])
                        .inc();
                    let now = unix_secs();
                    metrics
                        .notify_acked
                        .with_label_values(&[zone, &target])
                        .set(now as i64);
                    engine.transfers.notifies.update(zone, to, |s| {
                        s.acked_serial = Some(serial);
                        s.acked = Some(now);
                        s.error = None;
                    });
                    if attempt > WARN_AFTER {
                        tracing::info!(zone, secondary = %to, serial, attempt, "NOTIFY acknowledged by {to} at try {attempt}");
                    } else {
                        tracing::debug!(zone, secondary = %to, serial, attempt, "NOTIFY acknowledged by {to}");
                    }
                    break;
                }
                Err(e) => {
                    engine
                        .transfers
                        .notifies
                        .update(zone, to, |s| s.error = Some(e.clone()));
                    if attempt >= WARN_AFTER {
                        // Counted for every try from the fifth on, so the
                        // alert on it lasts as long as the secondary is
                        // deaf, and clears once it answers.
                        metrics
                            .notifies
                            .with_label_values(&[zone, &target, "failed"])
                            .inc();
                    }
                    if attempt == WARN_AFTER {
                        tracing::warn!(zone, secondary = %to, serial, error = %e, "NOTIFY to {to} not acknowledged after {WARN_AFTER} tries: {e}; trying again, with back-off up to {}s, until it is", MAX_WAIT.as_secs());
                    }
                    // A quick failure (port unreachable: the secondary is
                    // not up yet) waits out its turn like a silent one.
                    tokio::select! {
                        () = tokio::time::sleep_until(started + wait) => {}
                        r = serials.changed() => {
                            if r.is_err() { return; }
                            continue 'serial;
                        }
                    }
                    wait = (wait * 2).min(MAX_WAIT);
                }
            }
        }
        if serials.changed().await.is_err() {
            return;
        }
    }
}

/// Send one NOTIFY to `to`, from `source` when given, and wait up to
/// `wait` for its acknowledgement.
async fn notify_once(
    to: SocketAddr,
    source: Option<std::net::IpAddr>,
    apex: &Name,
    soa: &hickory_proto::rr::Record,
    signer: Option<&TSigner>,
    wait: Duration,
) -> Result<(), String> {
    let mut m = Message::new(rand::random(), MessageType::Query, OpCode::Notify);
    m.metadata.authoritative = true;
    m.add_query(Query::query(apex.clone(), RecordType::SOA));
    m.add_answer(soa.clone());
    let mut verifier = None;
    if let Some(s) = signer {
        let (tsig, v) = s
            .sign_message(&m, unix_secs())
            .map_err(|e| format!("cannot sign: {e}"))?;
        m.set_signature(tsig);
        verifier = v;
    }
    let bytes = m.to_vec().map_err(|e| format!("cannot encode: {e}"))?;
    let local: SocketAddr = match source {
        Some(ip) => SocketAddr::new(ip, 0),
        None if to.is_ipv4() => "0.0.0.0:0".parse().expect("address"),
        None => "[::]:0".parse().expect("address"),
    };
    let sock = UdpSocket::bind(local).await.map_err(|e| {
        format!("cannot open a UDP socket from {local} (a local problem of gslb): {e}")
    })?;
    sock.connect(to)
        .await
        .map_err(|e| format!("cannot reach {to}: {e}"))?;
    sock.send(&bytes)
        .await
        .map_err(|e| format!("cannot send to {to}: {e}"))?;
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
            Err(_) => return Err(format!("no answer within {}s", wait.as_secs())),
            Ok(Err(e)) => return Err(format!("{e}")),
            Ok(Ok(n)) => n,
        };
        let Ok(r) = Message::from_vec(&buf[..n]) else {
            continue; // not a DNS message: keep waiting for the answer
        };
        if r.metadata.id != m.metadata.id || r.metadata.message_type != MessageType::Response {
            continue;
        }
        if let Some(v) = verifier.as_mut()
            && let Err(e) = v.verify(&buf[..n])
        {
            // An error answer is often unsigned (the secondary does not
            // know the key): its rcode and TSIG error say why.
            let rc = r.metadata.response_code;
            let tsig_error = r
                .signature()
                .and_then(|t| t.data.error)
                .map(|e| format!(", TSIG error {e:?}"))
                .unwrap_or_default();
            return Err(if rc != ResponseCode::NoError || !tsig_error.is_empty() {
                format!(
                    "answered rcode {} ({rc}){tsig_error}, not signed with the zone's key",
                    u16::from(rc)
                )
            } else {
                format!("answer not signed with the zone's key: {e}")
            });
        }
        return match r.metadata.response_code {
            ResponseCode::NoError => Ok(()),
            rc => Err(format!("answered rcode {} ({rc})", u16::from(rc))),
        };
    }
}
