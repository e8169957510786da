//! The zone as transferred, version by version (issue 21): what AXFR
//! sends, the serial every answer's SOA carries, and the changes IXFR
//! sends.
//!
//! A version is a rendering of the zone ([`super::transfer`]) with its
//! serial. The serial moves forward exactly when the rendering changes: a
//! flap that changes no answer, or a reload that changes nothing a
//! secondary gets, keeps it. A new serial is the time in unix seconds, or
//! the previous one + 1 when the time is not later (RFC 1982), so a
//! restart never goes back. The (content hash, serial) pair is kept in the
//! state file: a restart whose first rendering is the one it stopped with
//! keeps its serial.
//!
//! Content and serial are published together: AXFR sends a version, never
//! a fresh rendering, so no two secondaries can be given two contents
//! under one serial. Answers read the serial from an atomic; the health
//! epoch is bumped after it moves, so the answer caches drop SOAs of the
//! old one.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hickory_proto::rr::{RData, Record};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

use super::{Engine, ServedZone};
use crate::health::{HealthTable, SavedZone};

/// Set in [`Journal`]'s answer serial once it holds one.
const SERIAL_SET: u64 = 1 << 32;

/// Most changes kept for IXFR; older serials get a full transfer.
const MAX_CHANGES: usize = 64;

/// One version of the zone as transferred.
pub struct Version {
    /// Its serial.
    pub serial: u32,
    /// Hash of its content, the serial aside.
    pub hash: u64,
    /// Its SOA, carrying `serial`.
    pub soa: Record,
    /// Every other record, in [`super::transfer::order`].
    pub records: Vec<Record>,
}

/// A new content waiting for its serial.
pub(super) struct Pending {
    soa: Record,
    records: Vec<Record>,
    /// Hash of the content.
    pub hash: u64,
    /// The serial this node alone would give it.
    pub candidate: u32,
    /// The last serial this node served (or saved) for the zone.
    pub floor: Option<u32>,
}

/// What changed from one version to the next (an IXFR difference
/// sequence, RFC 1995 §4).
pub struct Change {
    /// The SOA of the version it starts from.
    pub from: Record,
    /// The SOA of the version it leads to.
    pub to: Record,
    /// Records removed.
    pub removed: Vec<Record>,
    /// Records added.
    pub added: Vec<Record>,
}

impl Change {
    fn size(&self) -> usize {
        self.removed.len() + self.added.len() + 2
    }
}

#[derive(Default)]
struct State {
    current: Option<Arc<Version>>,
    /// Oldest first; each starts where the one before ends.
    changes: VecDeque<Arc<Change>>,
    /// Records in `changes`, SOAs included.
    change_records: usize,
}

/// The versions of one zone.
pub struct Journal {
    /// The current serial for answers, with [`SERIAL_SET`] once there is
    /// a version (until then answers keep the zone's own SOA).
    serial: AtomicU64,
    state: Mutex<State>,
    /// One rendering at a time (held across the rendering, never by the
    /// DNS path).
    refreshing: tokio::sync::Mutex<()>,
    /// Told of each new version's serial (NOTIFY).
    changed: tokio::sync::watch::Sender<u32>,
}

impl Default for Journal {
    fn default() -> Self {
        Journal {
            serial: AtomicU64::new(0),
            state: Mutex::default(),
            refreshing: tokio::sync::Mutex::new(()),
            changed: tokio::sync::watch::channel(0).0,
        }
    }
}

impl Journal {
    /// The serial answers carry; `None` before the first version.
    pub fn serial(&self) -> Option<u32> {
        self.current().map(|v| v.serial)
    }

    /// The serial for the DNS path (one atomic load): `None` before the
    /// first version.
    pub(super) fn answer_serial(&self) -> Option<u32> {
        let v = self.serial.load(Ordering::Acquire);
        (v & SERIAL_SET != 0).then_some(v as u32)
    }

    /// The current version.
    pub fn current(&self) -> Option<Arc<Version>> {
        self.lock().current.clone()
    }

    /// The changes from `serial` to the current version, oldest first;
    /// `None` when the history does not reach back that far, `serial` was
    /// never this zone's, or it is the current serial.
    pub fn changes_since(&self, serial: u32) -> Option<(Arc<Version>, Vec<Arc<Change>>)> {
        let st = self.lock();
        let current = st.current.clone()?;
        let start = st
            .changes
            .iter()
            .position(|c| soa_serial(&c.from) == serial)?;
        Some((current, st.changes.iter().skip(start).cloned().collect()))
    }

    /// How many changes are kept for IXFR.
    pub fn changes_kept(&self) -> usize {
        self.lock().changes.len()
    }

    /// Watch new versions' serials.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u32> {
        self.changed.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Make `rendered` (SOA first) the current version, unless its content
    /// is the current one's. `saved` is the state file's (serial, hash) of
    /// this zone: a first rendering equal to it keeps its serial. Returns
    /// the new version's serial, or `None` when nothing changed.
    pub fn commit(
        &self,
        rendered: Vec<Record>,
        saved: Option<(u32, u64)>,
        now: u32,
    ) -> Option<u32> {
        let pending = self.prepare(rendered, saved, now)?;
        let serial = pending.candidate;
        Some(self.publish_pending(pending, serial))
    }

    /// The first half of [`Journal::commit`]: `None` when the content is
    /// the current one's; else the new content with the serial this node
    /// alone would give it (a cluster may agree on another, see
    /// `Cluster::agree_serial`).
    pub(super) fn prepare(
        &self,
        rendered: Vec<Record>,
        saved: Option<(u32, u64)>,
        now: u32,
    ) -> Option<Pending> {
        let mut rendered = rendered.into_iter();
        let soa = rendered.next()?;
        let records: Vec<Record> = rendered.collect();
        let hash = content_hash(&soa, &records);
        let st = self.lock();
        let (candidate, floor) = match &st.current {
            Some(v) if v.hash == hash => return None,
            Some(v) => (crate::reload::next_serial(v.serial, now), Some(v.serial)),
            None => match saved {
                Some((serial, h)) if h == hash => (serial, Some(serial)),
                Some((serial, _)) => (crate::reload::next_serial(serial, now), Some(serial)),
                None => (now, None),
            },
        };
        Some(Pending {
            soa,
            records,
            hash,
            candidate,
            floor,
        })
    }

    /// The second half of [`Journal::commit`]: `pending` becomes the
    /// current version under `serial`, unless another version took its
    /// place meanwhile with this content (then that one stands).
    pub(super) fn publish_pending(&self, pending: Pending, serial: u32) -> u32 {
        let Pending {
            mut soa,
            records,
            hash,
            ..
        } = pending;
        let mut st = self.lock();
        if let Some(v) = &st.current
            && v.hash == hash
        {
            return v.serial;
        }
        set_soa_serial(&mut soa, serial);
        let old = st.current.clone();
        self.publish(&mut st, old, soa, records, hash);
        serial
    }

    fn publish(
        &self,
        st: &mut State,
        old: Option<Arc<Version>>,
        soa: Record,
        records: Vec<Record>,
        hash: u64,
    ) {
        let serial = soa_serial(&soa);
        let version = Arc::new(Version {
            serial,
            hash,
            soa,
            records,
        });
        if let Some(old) = old {
            let change = Arc::new(diff(&old, &version));
            st.change_records += change.size();
            st.changes.push_back(change);
            // A history longer than the zone is worth less than the zone:
            // IXFR then sends it whole.
            let budget = version.records.len().max(1024);
            while st.changes.len() > MAX_CHANGES
                || (st.change_records > budget && st.changes.len() > 1)
            {
                let gone = st.changes.pop_front().expect("not empty");
                st.change_records -= gone.size();
            }
        }
        st.current = Some(version);
        self.serial
            .store(SERIAL_SET | u64::from(serial), Ordering::Release);
        self.changed.send_replace(serial);
    }
}

/// The serial of an SOA record (0 for anything else).
pub(crate) fn soa_serial(r: &Record) -> u32 {
    match &r.data {
        RData::SOA(soa) => soa.serial,
        _ => 0,
    }
}

fn set_soa_serial(r: &mut Record, serial: u32) {
    if let RData::SOA(soa) = &mut r.data {
        soa.serial = serial;
    }
}

/// A hash of the content, the serial aside: every record's canonical wire
/// form (RFC 4034 §6.2: no compression, lower case), so every node and
/// every version of gslb computes the same.
fn content_hash(soa: &Record, records: &[Record]) -> u64 {
    let mut soa = soa.clone();
    set_soa_serial(&mut soa, 0);
    let mut buf = Vec::with_capacity(256);
    let mut h = crate::model::fnv1a(b"gslb zone as transferred");
    for r in std::iter::once(&soa).chain(records) {
        buf.clear();
        let mut enc = BinEncoder::new(&mut buf);
        enc.set_canonical_form(true);
        // A record that cannot be encoded cannot be transferred either; its
        // text stands in, so it still counts.
        if r.emit(&mut enc).is_err() {
            buf.clear();
            buf.extend_from_slice(r.to_string().as_bytes());
        }
        h = crate::model::fnv1a_more(h, &(buf.len() as u32).to_be_bytes());
        h = crate::model::fnv1a_more(h, &buf);
    }
    h
}

/// The change from `old` to `new`: both are in [`super::transfer::order`],
/// so one merge finds it. A record whose TTL changed is removed and added
/// (as is one whose data differs while its wire form sorts the same,
/// which cannot happen, but costs nothing to check).
fn diff(old: &Version, new: &Version) -> Change {
    use std::cmp::Ordering::*;
    let (mut removed, mut added) = (Vec::new(), Vec::new());
    let (mut a, mut b) = (old.records.iter().peekable(), new.records.iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some(_), None) => removed.extend(a.by_ref().cloned()),
            (None, Some(_)) => added.extend(b.by_ref().cloned()),
            (Some(x), Some(y)) => match super::transfer::order(x, y) {
                Less => removed.push(a.next().expect("peeked").clone()),
                Greater => added.push(b.next().expect("peeked").clone()),
                Equal => {
                    let (x, y) = (a.next().expect("peeked"), b.next().expect("peeked"));
                    if x.ttl != y.ttl || x.data != y.data {
                        removed.push(x.clone());
                        added.push(y.clone());
                    }
                }
            },
        }
    }
    Change {
        from: old.soa.clone(),
        to: new.soa.clone(),
        removed,
        added,
    }
}

/// The journals of every zone served with `[transfer]`, by zone label
/// (they outlive reloads), the TSIG keys, the transfers in flight.
pub struct Transfers {
    zones: Mutex<HashMap<String, Arc<Journal>>>,
    keys: std::collections::BTreeMap<String, crate::model::TsigKey>,
    pub(super) in_flight: super::xfr::InFlight,
    /// What each secondary was last told.
    pub notifies: super::notify::Notifies,
    /// Transfer and NOTIFY metrics.
    pub metrics: crate::metrics::TransferMetrics,
    /// The cluster whose nodes agree on each zone's serial, if any.
    pub cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
    /// The time TSIG is checked and signed at, when not the clock's (the
    /// transfer fuzzer, whose signed seeds must stay inside the fudge).
    fixed_now: Option<u64>,
    /// The addresses NOTIFY is sent from: the DNS listeners' own (not a
    /// wildcard), so that a secondary's `allow-notify` can name the
    /// address it transfers from.
    notify_sources: Vec<std::net::IpAddr>,
}

impl Default for Transfers {
    fn default() -> Self {
        Transfers::new(
            Default::default(),
            crate::metrics::TransferMetrics::disabled(),
        )
    }
}

impl Transfers {
    /// Journals to come, signing with these keys (by name).
    pub fn new(
        keys: std::collections::BTreeMap<String, crate::model::TsigKey>,
        metrics: crate::metrics::TransferMetrics,
    ) -> Self {
        Transfers {
            zones: Mutex::default(),
            keys,
            in_flight: Default::default(),
            notifies: Default::default(),
            metrics,
            cluster: Default::default(),
            fixed_now: None,
            notify_sources: Vec::new(),
        }
    }

    /// NOTIFY goes out from these addresses (the first of the
    /// secondary's family; none: the system picks, as for a wildcard
    /// listener).
    pub fn with_notify_sources(
        mut self,
        listeners: impl IntoIterator<Item = std::net::IpAddr>,
    ) -> Self {
        self.notify_sources = listeners
            .into_iter()
            .filter(|ip| !ip.is_unspecified())
            .collect();
        self
    }

    /// The address a NOTIFY to `to` is sent from: the one the system
    /// would pick when gslb listens on it, else a listener address of the
    /// same family and scope (loopback for a secondary on loopback, another
    /// for the rest: a loopback source cannot reach another host); `None`
    /// (the system picks) when there is none such, or no listener address
    /// was given.
    pub(super) fn notify_source(&self, to: std::net::SocketAddr) -> Option<std::net::IpAddr> {
        let mut same = self
            .notify_sources
            .iter()
            .copied()
            .filter(|ip| ip.is_ipv4() == to.is_ipv4())
            .peekable();
        same.peek()?;
        let unspecified = match to {
            std::net::SocketAddr::V4(_) => std::net::IpAddr::from([0u8; 4]),
            std::net::SocketAddr::V6(_) => std::net::IpAddr::from([0u16; 8]),
        };
        let routed = std::net::UdpSocket::bind((unspecified, 0))
            .and_then(|s| s.connect(to).and_then(|()| s.local_addr()))
            .ok()
            .map(|a| a.ip());
        let same: Vec<std::net::IpAddr> = same.collect();
        match routed {
            Some(ip) if same.contains(&ip) => Some(ip),
            _ => same
                .into_iter()
                .find(|ip| ip.is_loopback() == to.ip().is_loopback()),
        }
    }

    /// TSIG checked and signed as if it were always `unix` (fuzzing).
    #[doc(hidden)]
    pub fn at_fixed_time(mut self, unix: u64) -> Self {
        self.fixed_now = Some(unix);
        self
    }

    /// Now for TSIG, in unix seconds: the clock's, or the fixed time.
    pub(super) fn tsig_now(&self) -> Option<u64> {
        self.fixed_now
    }

    /// The TSIG key of this name.
    pub fn key(&self, name: &str) -> Option<&crate::model::TsigKey> {
        self.keys.get(name)
    }

    /// The TSIG key whose DNS name is `name`.
    pub(super) fn key_named(
        &self,
        name: &hickory_proto::rr::Name,
    ) -> Option<&crate::model::TsigKey> {
        self.keys.values().find(|k| k.name == *name)
    }

    pub(super) fn count_refused(&self, zone: &str, reason: &str) {
        self.metrics
            .refused
            .with_label_values(&[zone, reason])
            .inc();
    }

    pub(super) fn count_served(&self, zone: &str, kind: &str, bytes: usize) {
        self.metrics.served.with_label_values(&[zone, kind]).inc();
        self.metrics
            .bytes
            .with_label_values(&[zone])
            .inc_by(bytes as u64);
    }

    /// The journal of zone `label`, made on first use.
    pub fn journal(&self, label: &str) -> Arc<Journal> {
        self.zones
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(label.to_string())
            .or_default()
            .clone()
    }

    /// Forget the journals of zones no longer transferred (a reload).
    pub fn retain(&self, labels: &[String]) {
        self.zones
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| labels.contains(k));
    }

    /// The served zones changed (a reload stored them): the NOTIFY senders
    /// follow their lists.
    pub fn reconfigured(&self) {
        self.notifies.reconfigured.notify_one();
    }
}

/// Render zone `served` as transferred now and make it the current version
/// when it changed: the serial moves, the state file learns it, answer
/// caches drop the old SOA. Does nothing when the zone is not transferred,
/// or when a reload replaced the zone meanwhile (that reload refreshes it).
pub async fn refresh(engine: &Engine, health: &HealthTable, served: &ServedZone) {
    let Some(journal) = served.journal.clone() else {
        return;
    };
    let _one = journal.refreshing.lock().await;
    let (zone, cells) = (served.zone.clone(), served.health.clone());
    let rendered = tokio::task::spawn_blocking(move || {
        super::transfer::zone_as_transferred(&zone, cells.as_ref())
    })
    .await
    .expect("rendering does not panic");
    let label = served.zone.label();
    let still_served = engine
        .snapshot()
        .find_zone(&served.zone.apex)
        .is_some_and(|z| Arc::ptr_eq(&z.zone, &served.zone));
    if !still_served {
        return;
    }
    let saved = health
        .zone_serials()
        .into_iter()
        .find(|z| z.zone == label)
        .map(|z| (z.serial, z.content_hash));
    let now = crate::reload::unix_now() as u32;
    let Some(pending) = journal.prepare(rendered, saved, now) else {
        return;
    };
    // In a cluster, the serial every node gives this content.
    let serial = match engine.transfers.cluster.get() {
        Some(c) => match c
            .agree_serial(&label, pending.hash, pending.candidate, pending.floor, now)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(zone = %label, error = %e, "cannot agree on the zone's serial through etcd: this node gives serial {} alone (it may differ from the other nodes' until etcd answers and the zone changes again)", pending.candidate);
                pending.candidate
            }
        },
        None => pending.candidate,
    };
    // Saved before it is published: a serial a secondary may have seen is
    // in the state file, so a restart never gives it to another content
    // (nor goes back from it).
    let hash = pending.hash;
    health.save_zone_serial(SavedZone {
        zone: label.clone(),
        serial,
        content_hash: hash,
    });
    if let Err(e) = health.persist_now().await {
        tracing::warn!(zone = %label, error = %e, "serial {serial} not saved before it is served: {e}");
    }
    let serial = journal.publish_pending(pending, serial);
    health.epoch.bump();
    engine
        .transfers
        .metrics
        .serial
        .with_label_values(&[&label])
        .set(i64::from(serial));
    match saved {
        Some((s, h)) if s == serial && h == hash => {
            tracing::info!(zone = %label, serial, "zone as transferred is the one saved: serial {serial} kept")
        }
        _ => tracing::info!(zone = %label, serial, "zone as transferred changed: serial {serial}"),
    }
}

/// Refresh every transferred zone of the current snapshot.
pub async fn refresh_all(engine: &Engine, health: &HealthTable) {
    let snap = engine.snapshot();
    for served in snap.zones() {
        refresh(engine, health, served).await;
    }
}

/// The transitions [`follow`] reads: taken before the first versions are
/// made, so that none in between is missed.
pub type Subscriptions = (
    tokio::sync::broadcast::Receiver<crate::health::Transition>,
    tokio::sync::broadcast::Receiver<crate::health::Transition>,
);

/// Subscribe to every transition, endpoints' and regions'.
pub fn subscribe(health: &HealthTable) -> Subscriptions {
    (health.subscribe(), health.subscribe_regions())
}

/// Follow health: after every transition, refresh the zones it touched
/// (a burst is taken in one go). Returns at `shutdown`.
pub async fn follow(
    engine: Arc<Engine>,
    health: Arc<HealthTable>,
    (mut endpoints, mut regions): Subscriptions,
    shutdown: tokio_util::sync::CancellationToken,
) {
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
    loop {
        let mut dirty: Vec<String> = Vec::new();
        let mut all = false;
        let first = tokio::select! {
            r = endpoints.recv() => r,
            r = regions.recv() => r,
            () = shutdown.cancelled() => return,
        };
        match first {
            Ok(t) => dirty.push(t.zone),
            Err(RecvError::Lagged(_)) => all = true,
            Err(RecvError::Closed) => return,
        }
        for rx in [&mut endpoints, &mut regions] {
            loop {
                match rx.try_recv() {
                    Ok(t) => dirty.push(t.zone),
                    Err(TryRecvError::Lagged(_)) => all = true,
                    Err(_) => break,
                }
            }
        }
        let snap = engine.snapshot();
        for served in snap.zones() {
            if served.journal.is_some() && (all || dirty.contains(&served.zone.label())) {
                refresh(&engine, &health, served).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::Name;

    /// NOTIFY's source: the system's pick when gslb listens on it, else a
    /// listener of the secondary's family and scope, else the system's.
    #[test]
    fn notify_goes_from_a_listener_that_can_reach_the_secondary() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let to = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        let t = |listen: &[&str]| {
            Transfers::default().with_notify_sources(listen.iter().map(|a| ip(a)))
        };
        // Wildcards and no listeners: the system picks.
        assert_eq!(
            t(&["0.0.0.0", "::"]).notify_source(to("127.0.0.1:53")),
            None
        );
        assert_eq!(t(&[]).notify_source(to("127.0.0.1:53")), None);
        // The system would pick 127.0.0.1, a listener: that one.
        assert_eq!(
            t(&["127.0.0.3", "127.0.0.1"]).notify_source(to("127.0.0.1:53")),
            Some(ip("127.0.0.1"))
        );
        // Not a listener: a loopback listener for a loopback secondary.
        assert_eq!(
            t(&["192.0.2.53", "127.0.0.3"]).notify_source(to("127.0.0.1:53")),
            Some(ip("127.0.0.3"))
        );
        // A secondary elsewhere is not sent to from loopback.
        assert_eq!(
            t(&["127.0.0.1", "192.0.2.53"]).notify_source(to("198.51.100.7:53")),
            Some(ip("192.0.2.53"))
        );
        assert_eq!(t(&["127.0.0.1"]).notify_source(to("198.51.100.7:53")), None);
        // Of the secondary's family only.
        assert_eq!(t(&["127.0.0.1"]).notify_source(to("[::1]:53")), None);
    }
    use hickory_proto::rr::rdata::{A, SOA};

    fn soa(serial: u32) -> Record {
        let n = Name::from_ascii("z.").unwrap();
        Record::from_rdata(
            n.clone(),
            300,
            RData::SOA(SOA::new(n.clone(), n, serial, 1, 1, 1, 1)),
        )
    }

    fn a(name: &str, last: u8, ttl: u32) -> Record {
        Record::from_rdata(
            Name::from_ascii(name).unwrap(),
            ttl,
            RData::A(A::new(192, 0, 2, last)),
        )
    }

    fn zone(records: &[Record]) -> Vec<Record> {
        let mut v = records.to_vec();
        v.sort_by(super::super::transfer::order);
        v.insert(0, soa(12345));
        v
    }

    #[test]
    fn the_serial_moves_only_when_the_content_does() {
        let j = Journal::default();
        assert_eq!(j.serial(), None);
        assert_eq!(j.answer_serial(), None, "answers keep the zone's own SOA");
        let one = zone(&[a("www.z.", 1, 60)]);
        assert_eq!(j.commit(one.clone(), None, 1000), Some(1000));
        assert_eq!(j.answer_serial(), Some(1000));
        assert_eq!(j.commit(one.clone(), None, 2000), None, "same content");
        // Changed within the same second: + 1, never the same serial.
        let two = zone(&[a("www.z.", 2, 60)]);
        assert_eq!(j.commit(two.clone(), None, 1000), Some(1001));
        // The clock went back: still forward.
        assert_eq!(j.commit(one.clone(), None, 5), Some(1002));
        assert_eq!(j.commit(two, None, 3000), Some(3000));
        assert_eq!(soa_serial(&j.current().unwrap().soa), 3000);
        // Wrapping past 2^32 - 1 is forward in serial arithmetic.
        let k = Journal::default();
        k.commit(one.clone(), Some((u32::MAX, 1)), 100);
        assert_eq!(k.serial(), Some(100), "u32::MAX + 1 wraps; 100 is later");
        assert!(crate::reload::serial_gt(100, u32::MAX));
    }

    #[test]
    fn a_restart_with_the_saved_content_keeps_its_serial() {
        let j = Journal::default();
        let one = zone(&[a("www.z.", 1, 60)]);
        j.commit(one.clone(), None, 1000);
        let hash = j.current().unwrap().hash;
        let again = Journal::default();
        assert_eq!(
            again.commit(one.clone(), Some((1000, hash)), 9999),
            Some(1000)
        );
        assert_eq!(again.current().unwrap().serial, 1000);
        // Another content than saved: forward from the saved serial.
        let third = Journal::default();
        let two = zone(&[a("www.z.", 2, 60)]);
        assert_eq!(third.commit(two, Some((1000, hash)), 500), Some(1001));
        // The serial is not part of the content.
        let mut renumbered = one.clone();
        set_soa_serial(&mut renumbered[0], 77);
        assert_eq!(j.commit(renumbered, None, 5000), None);
    }

    #[test]
    fn txt_strings_split_differently_are_a_change() {
        use hickory_proto::rr::rdata::TXT;
        let txt = |parts: &[&str]| {
            Record::from_rdata(
                Name::from_ascii("t.z.").unwrap(),
                60,
                RData::TXT(TXT::new(parts.iter().map(|p| p.to_string()).collect())),
            )
        };
        // hickory prints both as "ab": only their wire form tells them apart.
        assert_eq!(
            txt(&["ab"]).data.to_string(),
            txt(&["a", "b"]).data.to_string()
        );
        let j = Journal::default();
        j.commit(zone(&[txt(&["ab"])]), None, 100);
        assert_eq!(j.commit(zone(&[txt(&["a", "b"])]), None, 200), Some(200));
        let (_, ch) = j.changes_since(100).unwrap();
        assert_eq!(ch[0].removed, [txt(&["ab"])]);
        assert_eq!(ch[0].added, [txt(&["a", "b"])]);
    }

    #[test]
    fn changes_are_kept_for_ixfr_oldest_first_and_bounded() {
        let j = Journal::default();
        j.commit(zone(&[a("a.z.", 1, 60), a("b.z.", 1, 60)]), None, 100);
        j.commit(zone(&[a("a.z.", 2, 60), a("b.z.", 1, 60)]), None, 200);
        j.commit(
            zone(&[a("a.z.", 2, 30), a("b.z.", 1, 60), a("c.z.", 1, 60)]),
            None,
            300,
        );
        let (cur, ch) = j.changes_since(100).unwrap();
        assert_eq!(cur.serial, 300);
        assert_eq!(ch.len(), 2);
        assert_eq!((soa_serial(&ch[0].from), soa_serial(&ch[0].to)), (100, 200));
        assert_eq!(ch[0].removed, [a("a.z.", 1, 60)]);
        assert_eq!(ch[0].added, [a("a.z.", 2, 60)]);
        // A TTL change is a removal and an addition.
        assert_eq!(ch[1].removed, [a("a.z.", 2, 60)]);
        assert_eq!(ch[1].added, [a("a.z.", 2, 30), a("c.z.", 1, 60)]);
        assert_eq!(j.changes_since(200).unwrap().1.len(), 1);
        // Up to date is the caller's to see (the current serial).
        assert!(j.changes_since(300).is_none());
        assert!(j.changes_since(42).is_none(), "never this zone's serial");
        for i in 0..(MAX_CHANGES as u32 + 10) {
            j.commit(zone(&[a("a.z.", (i % 200) as u8 + 3, 60)]), None, 400 + i);
        }
        assert!(j.changes_since(100).is_none(), "history bounded");
        assert_eq!(j.lock().changes.len(), MAX_CHANGES);
    }
}
