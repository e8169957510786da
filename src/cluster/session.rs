//! The etcd session: lease, keep-alive, publishing, the initial load and
//! the watch. On any error the session ends, the node goes `stale` (then
//! `local` after the TTL, see the watchdog) and a new session starts after
//! a backoff, which republishes and reloads everything.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use etcd_client::{
    Certificate, Client, ConnectOptions, EventType, GetOptions, Identity, LeaseKeepAliveStream,
    LeaseKeeper, PutOptions, TlsOptions, Txn, TxnOp, WatchOptions,
};
use tokio_util::sync::CancellationToken;

use super::view::{Touched, View, node_key, observation_key};
use super::{Cluster, ClusterError, Mode, TXN_OPS, timeout};

/// First delay before reconnecting; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Keys per page when loading the cluster state.
const PAGE: i64 = 2000;
/// Largest gRPC message accepted from etcd (watch responses).
const MAX_MESSAGE: usize = 64 << 20;

pub(super) async fn run(cluster: Arc<Cluster>, shutdown: CancellationToken) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = Instant::now();
        let result = tokio::select! {
            r = session(&cluster, &shutdown) => r,
            () = shutdown.cancelled() => Ok(()),
        };
        *cluster.client.lock().expect("cluster lock poisoned") = None;
        if shutdown.is_cancelled() {
            return;
        }
        let why = match result {
            Ok(()) => "session ended".to_string(),
            Err(e) => {
                cluster.metrics.errors.inc();
                e.to_string()
            }
        };
        if cluster.mode() == Mode::Cluster {
            cluster.set_mode(Mode::Stale, &why);
        } else {
            tracing::debug!(error = %why, "etcd still unreachable");
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

async fn connect(cluster: &Cluster) -> Result<Client, ClusterError> {
    let s = &cluster.settings;
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        // HTTP/2 pings find a dead connection even while nothing is sent.
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
        .with_keep_alive_while_idle(true)
        // A member cut off from its peers fails calls instead of serving a
        // stale view.
        .with_require_leader(true);
    if let (Some(user), Some(password)) = (&s.user, &s.password) {
        opts = opts.with_user(user.clone(), password.clone());
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
    timeout(Client::connect(s.etcd.clone(), Some(opts))).await
}

async fn session(cluster: &Arc<Cluster>, shutdown: &CancellationToken) -> Result<(), ClusterError> {
    let s = &cluster.settings;
    let ttl = s.lease_ttl;
    let mut client = connect(cluster).await?;
    cluster.count("grant");
    let lease = timeout(client.lease_grant(ttl.as_secs() as i64, None))
        .await?
        .id();
    cluster.count("keepalive");
    let (mut keeper, mut keepalive) = timeout(client.lease_keep_alive(lease)).await?;
    *cluster.last_contact.lock().expect("cluster lock poisoned") = Some(Instant::now());
    // Everything this node knows, under the new lease.
    cluster.node_dirty.store(true, Ordering::Release);
    {
        let local = cluster.local.lock().expect("cluster lock poisoned");
        cluster
            .dirty
            .lock()
            .expect("cluster lock poisoned")
            .extend(local.keys().cloned());
    }
    publish(cluster, &mut client, lease).await?;
    // The whole shared state, then every change after it.
    let load_start = Instant::now();
    let view = load(cluster, &mut client).await?;
    let rev = view.rev;
    let (nodes, observations) = (view.nodes.len(), view.obs.len());
    *cluster.view.lock().expect("cluster lock poisoned") = view;
    cluster.count("watch");
    // One revision can carry many events (a node's lease expiring deletes
    // all its observations at once): allow large messages.
    let mut watcher = client.watch_client().max_decoding_message_size(MAX_MESSAGE);
    let mut watch = timeout(
        watcher.watch(
            cluster.prefix.clone(),
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(rev + 1),
            ),
        ),
    )
    .await?;
    *cluster.client.lock().expect("cluster lock poisoned") = Some(client.clone());
    cluster.set_mode(Mode::Cluster, "connected");
    cluster.health.set_cluster_rev(rev);
    cluster.nodes_changed();
    cluster.decide_all();
    cluster.applied.send_replace(rev);
    tracing::info!(
        revision = rev,
        nodes,
        endpoints = observations,
        node = %s.node,
        load_ms = load_start.elapsed().as_secs_f64() * 1000.0,
        "loaded the cluster state from etcd"
    );
    let mut tick = tokio::time::interval((ttl / 3).max(Duration::from_millis(500)));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                keep_alive(cluster, &mut keeper).await?;
                let silent = cluster
                    .last_contact
                    .lock()
                    .expect("cluster lock poisoned")
                    .is_none_or(|t| t.elapsed() > ttl);
                if silent {
                    return Err(ClusterError::Unavailable(format!(
                        "no keep-alive answer for {}",
                        humantime::format_duration(ttl)
                    )));
                }
            }
            m = keepalive_message(&mut keepalive) => {
                m?;
                *cluster.last_contact.lock().expect("cluster lock poisoned") = Some(Instant::now());
            }
            m = watch.message() => {
                let resp = m
                    .map_err(|e| ClusterError::Unavailable(format!("watch: {e}")))?
                    .ok_or_else(|| ClusterError::Unavailable("watch closed".into()))?;
                if resp.canceled() {
                    return Err(ClusterError::Unavailable(format!(
                        "watch canceled: {}",
                        resp.cancel_reason()
                    )));
                }
                apply_events(cluster, resp.events());
            }
            () = cluster.wake.notified() => publish(cluster, &mut client, lease).await?,
            () = shutdown.cancelled() => {
                // Leaving on purpose: let the others recompute now rather
                // than after the TTL.
                cluster.count("revoke");
                let _ = tokio::time::timeout(Duration::from_secs(1), client.lease_revoke(lease)).await;
                return Ok(());
            }
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
            view.apply(&cluster.prefix, kv.key(), Some(kv.value()));
        }
        match resp.kvs().last() {
            Some(kv) if resp.more() => {
                start = kv.key().to_vec();
                start.push(0);
            }
            _ => return Ok(view),
        }
    }
}

async fn keep_alive(cluster: &Cluster, keeper: &mut LeaseKeeper) -> Result<(), ClusterError> {
    cluster.count("keepalive");
    timeout(keeper.keep_alive()).await
}

async fn keepalive_message(ka: &mut LeaseKeepAliveStream) -> Result<(), ClusterError> {
    match ka.message().await {
        Ok(Some(r)) if r.ttl() > 0 => Ok(()),
        Ok(Some(_)) => Err(ClusterError::Unavailable(
            "the lease expired (this node was cut off for longer than lease-ttl)".into(),
        )),
        Ok(None) => Err(ClusterError::Unavailable("keep-alive stream closed".into())),
        Err(e) => Err(ClusterError::Unavailable(format!("keep-alive: {e}"))),
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
        if batch_rev.is_some_and(|r| r != rev) {
            cluster.commit(batch_rev.unwrap_or(rev), std::mem::take(&mut batch));
        }
        batch_rev = Some(rev);
        let value = match ev.event_type() {
            EventType::Put => Some(kv.value()),
            EventType::Delete => None,
        };
        let touched = cluster.view.lock().expect("cluster lock poisoned").apply(
            &cluster.prefix,
            kv.key(),
            value,
        );
        batch.push(touched);
    }
    if let Some(rev) = batch_rev {
        cluster.commit(rev, batch);
    }
}

/// Write what changed: the node record and observations, in transactions
/// of at most [`TXN_OPS`] operations.
async fn publish(cluster: &Cluster, client: &mut Client, lease: i64) -> Result<(), ClusterError> {
    let prefix = &cluster.prefix;
    let node = &cluster.settings.node;
    let mut ops = Vec::new();
    let mut taken = Vec::new();
    if cluster.node_dirty.swap(false, Ordering::AcqRel) {
        let info = serde_json::to_vec(&cluster.node_info()).expect("node record serialises");
        ops.push(TxnOp::put(
            node_key(prefix, node),
            info,
            Some(PutOptions::new().with_lease(lease)),
        ));
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
    let mut result = Ok(());
    for chunk in ops.chunks(TXN_OPS) {
        cluster.count("txn");
        if let Err(e) = timeout(client.txn(Txn::new().and_then(chunk.to_vec()))).await {
            result = Err(e);
            break;
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
    }
    result
}
