//! The etcd session: lease and keep-alive (a task of their own, so a slow
//! publish never starves them), the paged load, the watch, publishing.
//!
//! On any error the session ends, the node goes `stale` (then `local` after
//! the TTL, see the watchdog) and a new session starts after a backoff. A
//! new session resumes the watch where the view stopped (`view.rev + 1`),
//! so the node replays the same revisions as every other node and decides
//! the same transitions at the same revisions; only a node that never
//! loaded, or whose revision etcd has compacted away, reads everything
//! again.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    LeaseKeepAliveStream, LeaseKeeper, PutOptions, TlsOptions, Txn, TxnOp, WatchOptions,
};
use tokio_util::sync::CancellationToken;

use super::arbiter::Held;
use super::view::{Touched, View, node_key, observation_key, verdict_key};
use super::{Cluster, ClusterError, Mode, TXN_OPS, timeout};

/// First delay before reconnecting; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Keys per page when loading the cluster state.
const PAGE: i64 = 2000;
/// Largest gRPC message accepted from etcd (watch responses).
const MAX_MESSAGE: usize = 64 << 20;

/// Run sessions until `shutdown`, one etcd member at a time.
///
/// etcd-client's balanced channel spreads requests over every endpoint,
/// the dead one included, so one member down broke sessions again and
/// again (its issue #39). As etcd's own Go client does, a session talks to
/// one member. Which one is raced ([`pick_member`]): the first member that
/// answers a read needing a leader, so a dead, frozen or partitioned member
/// costs nothing and an etcd election costs only its own length. The mode
/// leaves `cluster` only when no session has been live for
/// [`super::STALE_AFTER`] (the watchdog), so losing one member costs one
/// reconnect and no mode change.
pub(super) async fn run(cluster: Arc<Cluster>, shutdown: CancellationToken) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = Instant::now();
        let result = tokio::select! {
            r = async {
                let (endpoint, client) = pick_member(&cluster).await?;
                session(&cluster, &endpoint, client, &shutdown)
                    .await
                    .map_err(|e| (Some(endpoint), e))
            } => r,
            () = shutdown.cancelled() => Ok(()),
        };
        let was_live = cluster.live();
        *cluster.client.lock().expect("cluster lock poisoned") = None;
        let lease = cluster.lease.lock().expect("cluster lock poisoned").take();
        if shutdown.is_cancelled() {
            // Leaving on purpose: let the others recompute now rather than
            // after the TTL.
            if let Some((mut client, id)) = lease {
                cluster.count("revoke");
                let _ = tokio::time::timeout(Duration::from_secs(1), client.lease_revoke(id)).await;
            }
            return;
        }
        let (endpoint, why) = match result {
            Ok(()) => (None, "session ended".to_string()),
            Err((endpoint, e)) => {
                if was_live {
                    cluster.metrics.errors.inc();
                } else {
                    cluster.metrics.attempts_failed.inc();
                }
                (endpoint, e.to_string())
            }
        };
        let redacted = endpoint
            .as_deref()
            .map_or_else(|| "every member".to_string(), crate::config::redact_url);
        if was_live {
            cluster.event(super::mode::Event::Lost(why.clone()));
            tracing::info!(node = %cluster.settings.node, etcd = %redacted, error = %why, "etcd session ended; reconnecting");
            // A session that was live: the next one at once.
            backoff = FIRST_BACKOFF;
            continue;
        }
        if cluster.mode() != Mode::Cluster
            && let Some(n) = cluster.out_warnings.allow()
        {
            // Said at WARN for as long as it lasts (a wrong password, CA,
            // URL or node name), not only at debug.
            tracing::warn!(node = %cluster.settings.node, etcd = %redacted, error = %why, "not in the cluster: {why}{}", crate::throttle::suppressed_note(n));
        }
        if started.elapsed() > Duration::from_secs(10) {
            backoff = FIRST_BACKOFF;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// How long [`pick_member`] waits for a member with a leader: longer than
/// an etcd election (1 to 2 s with etcd's defaults).
const PICK_TIMEOUT: Duration = Duration::from_secs(3);
/// How often a member is asked again while it has no leader.
const PICK_RETRY: Duration = Duration::from_millis(100);

/// The member the next session talks to, and a client to it.
///
/// Every member is asked at once, and again every [`PICK_RETRY`], for a
/// linearizable read, which a member answers only while it has a leader:
/// a dead member refuses, a frozen or partitioned one never answers, and
/// one whose cluster is electing answers once the election is over. The
/// first to answer is taken. Trying members one after another cost a full
/// [`super::CONNECT_TIMEOUT`] on each member that was waiting for the
/// election (measured: sessions back 2.2 s after the etcd leader was
/// killed, against about 1.2 s for the election itself).
async fn pick_member(
    cluster: &Arc<Cluster>,
) -> Result<(String, Client), (Option<String>, ClusterError)> {
    let deadline = tokio::time::Instant::now() + PICK_TIMEOUT;
    let mut race = tokio::task::JoinSet::new();
    for endpoint in cluster.settings.etcd.clone() {
        let cluster = cluster.clone();
        race.spawn(async move {
            let probe = format!("{}node/{}", cluster.prefix, cluster.settings.node);
            let mut last = ClusterError::Unavailable("no answer".into());
            loop {
                let attempt = async {
                    let mut client = connect(&cluster, &endpoint).await?;
                    cluster.count("get");
                    // Not bounded by itself: during an election it answers
                    // as soon as there is a leader again.
                    client
                        .get(probe.as_str(), Some(GetOptions::new().with_count_only()))
                        .await
                        .map_err(|e| ClusterError::Unavailable(e.to_string()))?;
                    Ok::<Client, ClusterError>(client)
                };
                match tokio::time::timeout_at(deadline, attempt).await {
                    Ok(Ok(client)) => return Ok((endpoint, client)),
                    Ok(Err(e)) => last = e,
                    Err(_) => return Err((endpoint, last)),
                }
                if tokio::time::timeout_at(deadline, tokio::time::sleep(PICK_RETRY))
                    .await
                    .is_err()
                {
                    return Err((endpoint, last));
                }
            }
        });
    }
    let mut errors = Vec::new();
    while let Some(done) = race.join_next().await {
        match done {
            // The others are dropped (aborted) with the set.
            Ok(Ok(won)) => return Ok(won),
            Ok(Err((endpoint, e))) => {
                errors.push(format!("{}: {e}", crate::config::redact_url(&endpoint)))
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    Err((
        None,
        ClusterError::Unavailable(format!(
            "no etcd member with a leader answered ({})",
            errors.join("; ")
        )),
    ))
}

async fn connect(cluster: &Cluster, endpoint: &str) -> Result<Client, ClusterError> {
    let s = &cluster.settings;
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        // HTTP/2 pings find a dead connection even while nothing is sent;
        // etcd refuses pings more often than every 5 s (too_many_pings).
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
        .with_keep_alive_while_idle(true)
        // A member cut off from its peers fails calls instead of serving a
        // stale view.
        .with_require_leader(true);
    if let (Some(user), Some(password)) = (&s.user, &s.password) {
        // etcd's auth tokens expire (5 minutes unused by default): renew
        // them rather than fail the first call after a quiet spell.
        opts = opts
            .with_user(user.clone(), password.clone())
            .with_auto_token_refresh(true);
    }
    if s.ca_file.is_some() || s.cert_file.is_some() {
        let read = |p: &std::path::Path| {
            std::fs::read(p)
                .map_err(|e| ClusterError::Unavailable(format!("cannot read {}: {e}", p.display())))
        };
        let mut tls = TlsOptions::new();
        if let Some(ca) = &s.ca_file {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let (Some(cert), Some(key)) = (&s.cert_file, &s.key_file) {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        opts = opts.with_tls(tls);
    }
    first_answer(Client::connect([endpoint], Some(opts))).await
}

/// Bound a session's opening calls and its writes more tightly than
/// [`timeout`]: a member that does not answer within a second (frozen,
/// partitioned) is left for another rather than waited for. So is a write
/// in flight when the etcd leader died: a follower forwards it to the
/// leader and it is lost with it, never answered, even after the next
/// election (measured: sessions on followers stuck until the 3 s bound,
/// 1.5 s after the election was over).
async fn first_answer<T>(
    f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, ClusterError> {
    match tokio::time::timeout(super::CONNECT_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ClusterError::Unavailable(e.to_string())),
        Err(_) => Err(ClusterError::Unavailable(format!(
            "no answer within {}",
            humantime::format_duration(super::CONNECT_TIMEOUT)
        ))),
    }
}

async fn session(
    cluster: &Arc<Cluster>,
    endpoint: &str,
    mut client: Client,
    shutdown: &CancellationToken,
) -> Result<(), ClusterError> {
    let s = &cluster.settings;
    let ttl = s.lease_ttl;
    // The lease of the last session, if it still lives: a reconnect (to
    // another member, after a leader change) keeps this node's record and
    // votes as they are, under the lease they were written with.
    let kept = *cluster.lease_id.lock().expect("cluster lock poisoned");
    let resumed = match kept {
        Some(id) => {
            cluster.count("keepalive");
            match first_answer(client.lease_keep_alive(id)).await {
                Ok((keeper, stream)) => Some((id, keeper, stream)),
                Err(ClusterError::Unavailable(e)) if e.contains("lease not found") => None,
                Err(e) => return Err(e),
            }
        }
        None => None,
    };
    let (lease, keeper, stream) = match resumed {
        Some(r) => r,
        None => {
            cluster.count("grant");
            let lease = first_answer(client.lease_grant(ttl.as_secs() as i64, None))
                .await?
                .id();
            *cluster.lease_id.lock().expect("cluster lock poisoned") = Some(lease);
            cluster.count("keepalive");
            let (keeper, stream) = first_answer(client.lease_keep_alive(lease)).await?;
            (lease, keeper, stream)
        }
    };
    *cluster.lease.lock().expect("cluster lock poisoned") = Some((client.clone(), lease));
    // The mode machine is not told of this session until it is live
    // (record, state, watch, own writes): a session that gets this far and
    // fails must not keep `stale` alive past `lease-ttl`.
    // The lease lives in a task of its own: nothing this session waits on
    // can delay a keep-alive.
    let lost = CancellationToken::new();
    let keep = tokio::spawn(keep_alive(
        cluster.clone(),
        keeper,
        stream,
        lost.clone(),
        shutdown.clone(),
    ));
    let _stop_keeping = AbortOnDrop(keep);

    check_identity(cluster, &mut client, endpoint).await?;
    // Resume where the view stopped, or read everything once.
    let loaded = cluster.view.lock().expect("cluster lock poisoned").rev;
    let from = if loaded == 0 {
        let load_start = Instant::now();
        let view = load(cluster, &mut client).await?;
        let rev = view.rev;
        let (nodes, observations) = (view.nodes.len(), view.obs.len());
        *cluster.view.lock().expect("cluster lock poisoned") = view;
        tracing::info!(
            revision = rev,
            nodes,
            endpoints = observations,
            node = %s.node,
            load_ms = load_start.elapsed().as_secs_f64() * 1000.0,
            "loaded the cluster state from etcd"
        );
        rev
    } else {
        loaded
    };
    cluster.count("watch");
    // One revision can carry many events (a node's lease expiring deletes
    // all its observations at once): allow large messages.
    let mut watcher = client.watch_client().max_decoding_message_size(MAX_MESSAGE);
    let mut watch = first_answer(
        watcher.watch(
            cluster.prefix.clone(),
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(from + 1),
            ),
        ),
    )
    .await?;
    *cluster.client.lock().expect("cluster lock poisoned") = Some(client.clone());
    cluster.nodes_changed();
    cluster.applied.send_replace(from);
    // Everything this node knows, under this session's lease, once the
    // watch is in place; then the watch replays up to those writes before
    // the cluster decides, so a node back from `local` decides from every
    // node's current view, its own included, not from the view it had
    // when etcd went away.
    cluster.node_dirty.store(true, Ordering::Release);
    {
        let local = cluster.local.lock().expect("cluster lock poisoned");
        cluster
            .dirty
            .lock()
            .expect("cluster lock poisoned")
            .extend(local.keys().cloned());
    }
    if let Some(written) = publish(cluster, &mut client, lease).await? {
        let deadline = tokio::time::Instant::now() + ttl.max(super::REQUEST_TIMEOUT);
        while *cluster.applied.borrow() < written {
            let m = tokio::time::timeout_at(deadline, watch.message())
                .await
                .map_err(|_| {
                    ClusterError::Unavailable(
                        "the watch did not bring back this node's writes".into(),
                    )
                })?;
            on_watch(cluster, m)?;
        }
    }
    // Back from `local`, the node takes the verdicts in force as the
    // cluster decided them, replayed by the watch revision by revision (up
    // to this node's own writes, above): what the connected nodes answer.
    // But after an etcd outage every node was out, and etcd keeps leases
    // across its own restart: the others' votes may predate the outage, and
    // verdicts decided from them would flip this node's answers back for
    // a moment (4 changes for one failure). So where a verdict in force
    // disagrees with this node's own, it waits until every other live node
    // has written its record again since this session began, or one
    // lease-ttl. Where they agree (only this node was cut off: the others'
    // votes are current) it follows at once.
    if loaded != 0 && cluster.mode() == Mode::Local && cluster.held_disagrees_with_own() {
        let deadline = tokio::time::Instant::now() + ttl;
        let me = &cluster.settings.node;
        loop {
            let waiting = {
                let view = cluster.view.lock().expect("cluster lock poisoned");
                view.nodes.iter().any(|(n, info)| {
                    n != me
                        && (!info.republished || view.node_revs.get(n).is_none_or(|r| *r <= from))
                })
            };
            if !waiting || !cluster.held_disagrees_with_own() {
                break;
            }
            match tokio::time::timeout_at(deadline, watch.message()).await {
                Ok(m) => on_watch(cluster, m)?,
                Err(_) => break,
            }
        }
    }
    // Only now may the keep-alive task bring the node back into the
    // cluster after a silence: the name is this node's, the state loaded
    // and the others' republished.
    cluster.event(super::mode::Event::Live);
    loop {
        tokio::select! {
            // Watch first: what etcd already sent is applied before a lost
            // lease ends the session (a node resuming from a pause catches
            // up from the buffered events instead of a new session's replay).
            biased;
            m = watch.message() => on_watch(cluster, m)?,
            () = cluster.wake.notified() => {
                // A lost lease ends the session even while a write waits.
                tokio::select! {
                    r = publish(cluster, &mut client, lease) => { r?; }
                    () = lost.cancelled() => {}
                }
            }
            () = lost.cancelled() => {
                return Err(ClusterError::Unavailable(format!(
                    "no lease keep-alive answer for {}",
                    humantime::format_duration(super::KEEPALIVE_SILENCE)
                )));
            }
        }
    }
}

/// Whether the etcd this session reached is the one this node followed:
/// the same cluster id, and a revision not behind the view's. A different
/// etcd at the same address (rebuilt, replaced), or the same one that lost
/// its data (restarted empty, restored from an old snapshot), must not be
/// mixed with the view: every node that finds it says so at WARN and
/// applies one rule, **republish**: the overrides and verdicts it holds
/// are written back (overrides made equal to its set, verdict records
/// where absent; its votes are written by every session anyway), then it
/// reads everything again. Nodes that were following agree on those
/// sets, so whichever writes first, the result is the same.
async fn check_identity(
    cluster: &Cluster,
    client: &mut Client,
    endpoint: &str,
) -> Result<(), ClusterError> {
    cluster.count("get");
    let resp = timeout(client.get(
        cluster.prefix.clone(),
        Some(GetOptions::new().with_prefix().with_count_only()),
    ))
    .await?;
    let Some(header) = resp.header() else {
        return Ok(());
    };
    let (id, rev) = (header.cluster_id(), header.revision());
    let known = cluster
        .etcd_identity
        .lock()
        .expect("cluster lock poisoned")
        .replace(id);
    let loaded = cluster.view.lock().expect("cluster lock poisoned").rev;
    let why = match known {
        Some(old) if old != id => format!("its cluster id changed from {old:x} to {id:x}"),
        _ if loaded > 0 && rev < loaded => {
            format!("its revision went back from {loaded} to {rev}: it lost data")
        }
        _ => return Ok(()),
    };
    cluster.metrics.identity_changes.inc();
    tracing::warn!(node = %cluster.settings.node, etcd = %crate::config::redact_url(endpoint), reason = %why,
        "etcd is not the cluster state this node followed ({why}): republishing this node's overrides and verdicts, then reading everything again");
    republish(cluster, client).await?;
    cluster.view.lock().expect("cluster lock poisoned").rev = 0;
    Ok(())
}

/// Write back the overrides and verdicts this node holds (see
/// [`check_identity`]).
async fn republish(cluster: &Cluster, client: &mut Client) -> Result<(), ClusterError> {
    let prefix = &cluster.prefix;
    let (overrides, held): (Vec<_>, Vec<_>) = {
        let view = cluster.view.lock().expect("cluster lock poisoned");
        (
            view.overrides
                .iter()
                .map(|(k, (s, _))| (k.clone(), s.clone()))
                .collect(),
            view.tallies
                .iter()
                .filter_map(|(id, t)| Some((id.clone(), t.held?)))
                .collect(),
        )
    };
    let mut ops: Vec<TxnOp> = Vec::new();
    // Overrides: exactly the held set (an etcd restored from an old
    // snapshot may hold drains since lifted). etcd refuses a transaction
    // whose puts fall in its delete range: delete the others key by key.
    let held_keys: std::collections::HashSet<String> = overrides
        .iter()
        .map(|(k, _)| super::view::override_key(prefix, k))
        .collect();
    cluster.count("get");
    let there = timeout(client.get(
        format!("{prefix}override/"),
        Some(GetOptions::new().with_prefix().with_keys_only()),
    ))
    .await?;
    for kv in there.kvs() {
        if let Ok(k) = kv.key_str()
            && !held_keys.contains(k)
        {
            ops.push(TxnOp::delete(k, None));
        }
    }
    for (k, stored) in &overrides {
        let value = serde_json::to_vec(stored).expect("override serialises");
        ops.push(TxnOp::put(
            super::view::override_key(prefix, k),
            value,
            None,
        ));
    }
    cluster.count("txn");
    // One transaction for the overrides, so nobody sees half of them.
    timeout(client.txn(Txn::new().and_then(ops))).await?;
    for chunk in held.chunks(TXN_OPS / 2) {
        let compares: Vec<Compare> = chunk
            .iter()
            .map(|(id, _)| Compare::create_revision(verdict_key(prefix, id), CompareOp::Equal, 0))
            .collect();
        let puts: Vec<TxnOp> = chunk
            .iter()
            .map(|(id, h)| {
                TxnOp::put(
                    verdict_key(prefix, id),
                    serde_json::to_vec(h).expect("verdict serialises"),
                    None,
                )
            })
            .collect();
        cluster.count("txn");
        // Another node wrote them first: theirs are the same.
        let _ = timeout(client.txn(Txn::new().when(compares).and_then(puts))).await?;
    }
    tracing::info!(node = %cluster.settings.node, overrides = overrides.len(), verdicts = held.len(), "republished into etcd");
    Ok(())
}

/// Handle one watch message.
fn on_watch(
    cluster: &Cluster,
    m: Result<Option<etcd_client::WatchResponse>, etcd_client::Error>,
) -> Result<(), ClusterError> {
    let resp = m
        .map_err(|e| ClusterError::Unavailable(format!("watch: {e}")))?
        .ok_or_else(|| ClusterError::Unavailable("watch closed".into()))?;
    if resp.canceled() {
        if resp.compact_revision() > 0 {
            // The revisions after the view are gone: read everything again
            // in the next session.
            cluster.view.lock().expect("cluster lock poisoned").rev = 0;
        }
        return Err(ClusterError::Unavailable(format!(
            "watch canceled: {}",
            resp.cancel_reason()
        )));
    }
    apply_events(cluster, resp.events());
    Ok(())
}

/// Aborts a task when dropped (the session's keep-alive task).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Keep the lease alive every third of its TTL; cancel `lost` when etcd
/// stops answering for a whole TTL or says the lease has expired.
async fn keep_alive(
    cluster: Arc<Cluster>,
    mut keeper: LeaseKeeper,
    mut stream: LeaseKeepAliveStream,
    lost: CancellationToken,
    shutdown: CancellationToken,
) {
    // Often, so that a member that stops answering (frozen, cut off) is
    // left within KEEPALIVE_SILENCE, not after a whole TTL.
    let mut tick = tokio::time::interval(super::KEEPALIVE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut last_answer = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if last_answer.elapsed() > super::KEEPALIVE_SILENCE {
                    lost.cancel();
                    return;
                }
                cluster.count("keepalive");
                // Sending only queues the request on the stream.
                if tokio::time::timeout(super::KEEPALIVE_SILENCE, keeper.keep_alive()).await.map_or(true, |r| r.is_err()) {
                    lost.cancel();
                    return;
                }
            }
            m = stream.message() => match m {
                Ok(Some(r)) if r.ttl() > 0 => {
                    last_answer = Instant::now();
                    // Keeps a live session's node in the cluster (and
                    // brings it back after the watchdog gave up); ignored
                    // until the session is live.
                    cluster.event(super::mode::Event::Answered);
                }
                _ => {
                    lost.cancel();
                    return;
                }
            },
            () = shutdown.cancelled() => return,
        }
    }
}

/// Read everything under the cluster's prefix at one revision, in pages
/// (a single response for 10,000 endpoints on 3 nodes would pass gRPC's
/// 4 MiB default message limit).
async fn load(cluster: &Cluster, client: &mut Client) -> Result<View, ClusterError> {
    let prefix = cluster.prefix.as_bytes();
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1; // the prefix ends in '/': its successor bounds the range
    }
    let mut view = View::default();
    let mut start = prefix.to_vec();
    loop {
        let mut opts = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
        if view.rev != 0 {
            opts = opts.with_revision(view.rev);
        }
        cluster.count("get");
        let resp = timeout(client.get(start.clone(), Some(opts))).await?;
        if view.rev == 0 {
            view.rev = resp.header().map(|h| h.revision()).unwrap_or(1);
        }
        for kv in resp.kvs() {
            view.apply(
                &cluster.prefix,
                kv.key(),
                Some(kv.value()),
                kv.lease(),
                kv.mod_revision(),
            );
        }
        match resp.kvs().last() {
            Some(kv) if resp.more() => {
                start = kv.key().to_vec();
                start.push(0);
            }
            _ => {
                view.tally_all(cluster.settings.quorum);
                return Ok(view);
            }
        }
    }
}

/// Apply watch events, revision by revision: every node decides after the
/// same revisions, so every node sees the same transitions at the same
/// revision.
fn apply_events(cluster: &Cluster, events: &[etcd_client::Event]) {
    let mut batch: Vec<Touched> = Vec::new();
    let mut batch_rev = None;
    for ev in events {
        let Some(kv) = ev.kv() else { continue };
        let rev = kv.mod_revision();
        if let Some(r) = batch_rev.filter(|r| *r != rev) {
            cluster.commit(r, std::mem::take(&mut batch));
        }
        batch_rev = Some(rev);
        let value = match ev.event_type() {
            EventType::Put => Some(kv.value()),
            EventType::Delete => None,
        };
        let touched = {
            let mut view = cluster.view.lock().expect("cluster lock poisoned");
            view.apply(&cluster.prefix, kv.key(), value, kv.lease(), rev)
        };
        batch.push(touched);
    }
    if let Some(rev) = batch_rev {
        cluster.commit(rev, batch);
    }
}

/// Write what changed: the node record and observations, in transactions
/// of at most [`TXN_OPS`] operations. Returns the revision of the last
/// write, if anything was written.
async fn publish(
    cluster: &Cluster,
    client: &mut Client,
    lease: i64,
) -> Result<Option<i64>, ClusterError> {
    let prefix = &cluster.prefix;
    let node = &cluster.settings.node;
    let mut ops = Vec::new();
    let mut taken = Vec::new();
    // The record first (it claims the name), marked not yet republished;
    // again after the votes, marked republished.
    let record = cluster.node_dirty.swap(false, Ordering::AcqRel);
    if record && let Err(e) = write_node_record(cluster, client, lease).await {
        cluster.node_dirty.store(true, Ordering::Release);
        return Err(e);
    }
    {
        let ids: Vec<String> = cluster
            .dirty
            .lock()
            .expect("cluster lock poisoned")
            .drain()
            .collect();
        let local = cluster.local.lock().expect("cluster lock poisoned");
        for id in ids {
            let key = observation_key(prefix, &id, node);
            match local.get(&id) {
                Some(o) => ops.push(TxnOp::put(
                    key,
                    serde_json::to_vec(o).expect("observation serialises"),
                    Some(PutOptions::new().with_lease(lease)),
                )),
                None => ops.push(TxnOp::delete(key, None)),
            }
            taken.push(id);
        }
    }
    if record {
        ops.push(TxnOp::put(
            node_key(prefix, node),
            serde_json::to_vec(&cluster.node_info(true)).expect("node record serialises"),
            Some(PutOptions::new().with_lease(lease)),
        ));
    }
    let mut result = Ok(None);
    for chunk in ops.chunks(TXN_OPS) {
        cluster.count("txn");
        match first_answer(client.txn(Txn::new().and_then(chunk.to_vec()))).await {
            Ok(r) => result = Ok(r.header().map(|h| h.revision())),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    if result.is_err() {
        // Published again by the next session.
        cluster
            .dirty
            .lock()
            .expect("cluster lock poisoned")
            .extend(taken);
        cluster.node_dirty.store(true, Ordering::Release);
        return result;
    }
    record_verdicts(cluster, client).await?;
    let deletions: Vec<(String, i64, &str)> =
        std::mem::take(&mut *cluster.deletions.lock().expect("cluster lock poisoned"));
    for (key, rev, why) in deletions {
        cluster.count("txn");
        let r = first_answer(
            client.txn(
                Txn::new()
                    .when([Compare::mod_revision(key.clone(), CompareOp::Equal, rev)])
                    .and_then([TxnOp::delete(key.clone(), None)]),
            ),
        )
        .await?;
        if r.succeeded() {
            tracing::info!(key = %key, reason = why, "override ended in etcd: {why}");
        }
    }
    result
}

/// Write this node's record, unless another live process holds the name:
/// the record is created where there is none, and replaced only where this
/// process wrote it (an earlier session's). A crashed process's record
/// goes with its lease, so a restart under the same name waits at most
/// one `lease-ttl`; a second host with the same name never joins.
async fn write_node_record(
    cluster: &Cluster,
    client: &mut Client,
    lease: i64,
) -> Result<(), ClusterError> {
    let key = node_key(&cluster.prefix, &cluster.settings.node);
    let info = serde_json::to_vec(&cluster.node_info(false)).expect("node record serialises");
    let put = TxnOp::put(key.clone(), info, Some(PutOptions::new().with_lease(lease)));
    cluster.count("txn");
    let resp = first_answer(
        client.txn(
            Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([put.clone()])
                .or_else([TxnOp::get(key.clone(), None)]),
        ),
    )
    .await?;
    if resp.succeeded() {
        return Ok(());
    }
    let held = resp.op_responses().into_iter().find_map(|r| match r {
        etcd_client::TxnOpResponse::Get(g) => g.kvs().first().map(|kv| {
            (
                serde_json::from_slice::<super::view::NodeInfo>(kv.value()).ok(),
                kv.mod_revision(),
            )
        }),
        _ => None,
    });
    let Some((info, mod_rev)) = held else {
        // Gone in between (its lease expired): the next session creates it.
        return Err(ClusterError::Unavailable(
            "the node record changed while it was written".into(),
        ));
    };
    match info {
        Some(other) if other.instance != cluster.instance => Err(ClusterError::NameTaken {
            node: cluster.settings.node.clone(),
            version: other.version,
            started: humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + Duration::from_millis(other.started_ms),
            )
            .to_string(),
        }),
        // Ours, from an earlier session (or unreadable): replace it.
        _ => {
            cluster.count("txn");
            let r = first_answer(
                client.txn(
                    Txn::new()
                        .when([Compare::mod_revision(key, CompareOp::Equal, mod_rev)])
                        .and_then([put]),
                ),
            )
            .await?;
            if r.succeeded() {
                Ok(())
            } else {
                Err(ClusterError::Unavailable(
                    "the node record changed while it was written".into(),
                ))
            }
        }
    }
}

/// Write the verdicts this node decided to their records (`verdict/<id>`),
/// where the record is older: the record is what a node that joins later
/// starts from when the votes it loads cannot decide. Every node decides
/// the same verdicts; the first live node in rendezvous order for an
/// endpoint writes its record, the others leave it. Each write is a
/// compare-and-swap on the record's revision, so a late write of an older
/// decision never replaces a newer one.
async fn record_verdicts(cluster: &Cluster, client: &mut Client) -> Result<(), ClusterError> {
    let mut pending: Vec<(String, Held)> = cluster
        .records
        .lock()
        .expect("cluster lock poisoned")
        .drain()
        .collect();
    pending.sort_by(|a, b| a.0.cmp(&b.0));
    let me = &cluster.settings.node;
    let mut todo: Vec<(String, Held, i64)> = {
        let view = cluster.view.lock().expect("cluster lock poisoned");
        pending
            .into_iter()
            .filter(|(id, _)| {
                view.nodes
                    .keys()
                    .max_by_key(|n| super::rendezvous(n, id))
                    .is_none_or(|first| first == me)
            })
            .filter_map(|(id, held)| match view.records.get(&id) {
                Some((rec, _)) if rec.rev >= held.rev => None,
                Some((_, mod_rev)) => Some((id, held, *mod_rev)),
                None => Some((id, held, 0)),
            })
            .collect()
    };
    let prefix = &cluster.prefix;
    let cas = |batch: &[(String, Held, i64)]| {
        let compares: Vec<Compare> = batch
            .iter()
            .map(|(id, _, m)| Compare::mod_revision(verdict_key(prefix, id), CompareOp::Equal, *m))
            .collect();
        let puts: Vec<TxnOp> = batch
            .iter()
            .map(|(id, held, _)| {
                TxnOp::put(
                    verdict_key(prefix, id),
                    serde_json::to_vec(held).expect("verdict serialises"),
                    None,
                )
            })
            .collect();
        Txn::new().when(compares).and_then(puts)
    };
    // Batches first; a batch that loses a race goes one by one, each
    // after reading the record again.
    let mut lost = Vec::new();
    for batch in todo.chunks(TXN_OPS / 2) {
        cluster.count("txn");
        if !first_answer(client.txn(cas(batch))).await?.succeeded() {
            lost.extend_from_slice(batch);
        }
    }
    todo = lost;
    for (id, held, _) in todo {
        for _ in 0..3 {
            cluster.count("get");
            let resp = first_answer(client.get(verdict_key(prefix, &id), None)).await?;
            let (rec, mod_rev) = match resp.kvs().first() {
                Some(kv) => (
                    serde_json::from_slice::<Held>(kv.value()).ok(),
                    kv.mod_revision(),
                ),
                None => (None, 0),
            };
            if rec.is_some_and(|r| r.rev >= held.rev) {
                break; // as new or newer already
            }
            cluster.count("txn");
            if first_answer(client.txn(cas(&[(id.clone(), held, mod_rev)])))
                .await?
                .succeeded()
            {
                break;
            }
        }
    }
    Ok(())
}
