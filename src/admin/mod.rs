//! The admin HTTP API, on its own listener (default 127.0.0.1:9153):
//! Prometheus metrics, liveness and readiness, status JSON, the live status
//! page, operator overrides and reload.
//!
//! Reading is open on the admin listener. Mutating calls need the bearer
//! token (`admin-token` or `GSLB_ADMIN_TOKEN`); without a configured token
//! they are allowed only when the listener is bound to loopback. Either
//! way they must come from an API client, not from a web page a browser
//! shows ([`same_site`]: cross-site requests and DNS rebinding).

mod status;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::health::Override;
use crate::metrics::{ConnMetrics, Metrics};
use crate::reload::Reloader;
use crate::throttle::{LogThrottle, suppressed_note};

pub use status::{ServiceStatus, Status, StatusSource, status};

const PAGE: &str = include_str!("status.html");

/// Who may call the mutating endpoints.
#[derive(Default)]
pub struct AdminAuth {
    /// Bearer token, if configured.
    pub token: Option<String>,
    /// The listener is bound to loopback (then no token is needed when none
    /// is configured).
    pub loopback: bool,
    /// Host names a mutating call may name in its `Host` header besides an
    /// IP address and `localhost` (`admin-hosts`), lowercase.
    pub hosts: Vec<String>,
}

/// The client address of a request (set by the listener).
#[derive(Clone, Copy, Debug)]
struct Peer(IpAddr);

/// The header a client may send to mark a mutating call as its own (any
/// value): a page on another site cannot send it without a CORS preflight,
/// which gslb never grants. A JSON content type or a bearer token does the
/// same.
pub const REQUEST_HEADER: &str = "x-gslb-request";

/// What the admin API reaches: the status sources, metrics, the reloader
/// and its authorisation. Overrides go through the health table (alone) or
/// the cluster.
#[derive(Clone)]
pub struct AdminState {
    /// Served snapshot, health, cluster.
    pub status: StatusSource,
    /// Metrics to render.
    pub metrics: Metrics,
    /// Reloads the zones.
    pub reloader: Arc<Reloader>,
    /// Who may mutate.
    pub auth: Arc<AdminAuth>,
    /// The status for live pages, built once for all of them.
    pub feed: Arc<StatusFeed>,
}

/// Bounds of the admin listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdminLimits {
    /// Connections open at once (sized from the descriptor limit). One
    /// address keeps at most a quarter of them, one /24 or /56 (or IPv6
    /// /48) half; at a budget or the limit, the connection idle longest
    /// (a half-sent request head is idle) makes room, else the one whose
    /// request has taken longest ([`crate::conns`]).
    pub connections: usize,
    /// A request head (or, on a kept connection, the next one) must arrive
    /// within this long, else the connection is closed: a half-sent or idle
    /// connection holds nothing for long.
    pub header_timeout: Duration,
    /// Live event streams open at once; more get 503.
    pub event_streams: usize,
}

impl Default for AdminLimits {
    fn default() -> Self {
        AdminLimits {
            connections: 64,
            header_timeout: Duration::from_secs(3),
            event_streams: 32,
        }
    }
}

impl AdminLimits {
    /// Live streams one address may hold: half its connection budget, so
    /// its other calls always find room.
    pub fn streams_per_address(&self) -> usize {
        (self.table().per_addr / 2).max(1)
    }

    /// The connection table's limits.
    fn table(&self) -> crate::conns::Limits {
        let n = self.connections.max(1);
        crate::conns::Limits {
            max: n,
            per_prefix: (n / 2).max(1),
            per_48: (n / 2).max(1),
            per_addr: (n / 4).max(1),
            idle: self.header_timeout,
        }
    }
}

/// The status document for the live page's event streams: built by one
/// task at most once a second while things change (and every 5 s
/// regardless), shared by every stream, which sends the latest one.
pub struct StatusFeed {
    tx: watch::Sender<Arc<str>>,
    streams: AtomicUsize,
    max_streams: usize,
    /// Streams open per client address, and the most one may have: a live
    /// stream is busy for as long as it lasts, so without this one address
    /// could hold its whole connection budget with streams and be refused
    /// everything else (its own scrapes and CLI calls).
    per_addr: std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>,
    max_per_addr: usize,
}

impl StatusFeed {
    /// A feed for at most `max_streams` live streams, `max_per_addr` of
    /// them from one client address.
    pub fn with_limits(max_streams: usize, max_per_addr: usize) -> Arc<StatusFeed> {
        Arc::new(StatusFeed {
            tx: watch::channel(Arc::from("")).0,
            streams: AtomicUsize::new(0),
            max_streams,
            per_addr: std::sync::Mutex::default(),
            max_per_addr: max_per_addr.max(1),
        })
    }

    /// Take a stream's place for `addr`, if there is one.
    fn enter(&self, addr: Option<IpAddr>) -> bool {
        if self.streams.fetch_add(1, Ordering::Relaxed) >= self.max_streams {
            self.streams.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        if let Some(a) = addr {
            let mut m = self.per_addr.lock().unwrap_or_else(|p| p.into_inner());
            let n = m.entry(a).or_default();
            if *n >= self.max_per_addr {
                drop(m);
                self.streams.fetch_sub(1, Ordering::Relaxed);
                return false;
            }
            *n += 1;
        }
        true
    }

    /// Give a stream's place back.
    fn leave(&self, addr: Option<IpAddr>) {
        self.streams.fetch_sub(1, Ordering::Relaxed);
        if let Some(a) = addr {
            let mut m = self.per_addr.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = m.get_mut(&a) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&a);
                }
            }
        }
    }

    /// Builds the status after transitions (at most once a second) and
    /// every 5 s, while anyone listens, until `shutdown`.
    async fn run(self: Arc<Self>, source: StatusSource, shutdown: CancellationToken) {
        let mut rx = source.health.subscribe();
        let mut last = tokio::time::Instant::now() - Duration::from_secs(1);
        loop {
            if self.tx.receiver_count() > 0 {
                let s = serde_json::to_string(&status(&source)).unwrap_or_default();
                self.tx.send_replace(Arc::from(s));
                last = tokio::time::Instant::now();
            }
            tokio::select! {
                r = rx.recv() => if let Err(tokio::sync::broadcast::error::RecvError::Closed) = r {
                    return;
                },
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
                () = shutdown.cancelled() => return,
            }
            // Coalesce: one document per second however many transitions.
            tokio::select! {
                () = tokio::time::sleep_until(last + Duration::from_secs(1)) => {}
                () = shutdown.cancelled() => return,
            }
            while rx.try_recv().is_ok() {}
        }
    }
}

/// Bind the admin listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let l = TcpListener::bind(addr).await?;
    tracing::info!(addr = %l.local_addr()?, "admin API listening on http://{}", l.local_addr()?);
    Ok(l)
}

/// Every route.
pub fn router(shared: AdminState) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/api/v1/status", get(status_json))
        .route("/api/v1/events", get(events))
        .route("/api/v1/explain", get(explain))
        .route("/api/v1/zones/{zone}/transfer", get(zone_transfer))
        .route("/api/v1/reload", post(reload))
        .route(
            "/api/v1/regions/{zone}/{region}/{action}",
            post(region_override),
        )
        .route(
            "/api/v1/regions/{zone}/{region}/endpoints/{endpoint}/{action}",
            post(endpoint_override),
        )
        .with_state(shared)
}

/// Serve until `shutdown`, within `limits`.
pub async fn serve(
    listener: TcpListener,
    shared: AdminState,
    limits: AdminLimits,
    conn_metrics: ConnMetrics,
    shutdown: CancellationToken,
) {
    static ACCEPT_ERRORS: LogThrottle = LogThrottle::new(Duration::from_secs(10));
    tokio::spawn(
        shared
            .feed
            .clone()
            .run(shared.status.clone(), shutdown.clone()),
    );
    let app = router(shared);
    let table = Arc::new(crate::conns::Table::new(limits.table(), conn_metrics));
    let mut conns = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    table.accept_error();
                    if let Some(n) = ACCEPT_ERRORS.allow() {
                        tracing::error!(error = %e, "admin API accept failed (a local resource problem of gslb){}", suppressed_note(n));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let Ok((id, close)) = table.admit(peer.ip()) else {
            drop(stream);
            continue;
        };
        // Given back however the task ends, a panic in a handler included.
        struct Slot(Arc<crate::conns::Table>, u64);
        impl Drop for Slot {
            fn drop(&mut self) {
                self.0.release(self.1);
            }
        }
        let slot = Slot(table.clone(), id);
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout);
        // Busy from a request's head until its response's body is written
        // (a live stream is busy while it lasts, an answer a client does
        // not read is busy and the slowest); a connection waiting for (the
        // rest of) a request head is idle, and makes room first.
        let (svc, busy) = (app.clone(), table.clone());
        let svc = tower::service_fn(move |mut req: axum::http::Request<hyper::body::Incoming>| {
            busy.set_idle(id, false);
            req.extensions_mut().insert(Peer(peer.ip()));
            let (call, table) = (tower::ServiceExt::oneshot(svc.clone(), req), busy.clone());
            async move {
                let r: Result<Response, Infallible> = call.await;
                struct Written(Arc<crate::conns::Table>, u64);
                impl Drop for Written {
                    fn drop(&mut self) {
                        self.0.set_idle(self.1, true);
                    }
                }
                let written = Written(table, id);
                r.map(|resp| {
                    resp.map(move |body| {
                        axum::body::Body::new(http_body_util::BodyExt::map_frame(body, move |f| {
                            let _until_written = &written;
                            f
                        }))
                    })
                })
            }
        });
        let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc));
        let shutdown = shutdown.clone();
        conns.spawn(async move {
            let _slot = slot;
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                // Made room for another connection.
                () = close.cancelled() => {}
                () = shutdown.cancelled() => {
                    // Finish what is in flight, briefly (a live stream never ends).
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
                }
            }
        });
        while conns.try_join_next().is_some() {}
    }
    // Each connection finishes within a second of the shutdown.
    while conns.join_next().await.is_some() {}
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn metrics(State(shared): State<AdminState>) -> Response {
    status::refresh_service_gauges(&shared.status, &shared.metrics);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        shared.metrics.render(),
    )
        .into_response()
}

async fn readyz(State(shared): State<AdminState>) -> Response {
    // Zones loaded and listeners bound are true once the server runs; the
    // first verdicts take up to one interval (or come from the state file).
    if shared.status.health.first_verdicts_known() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first health verdicts\n",
        )
            .into_response()
    }
}

/// `GET /api/v1/zones/{zone}/transfer`: the zone as a standard secondary
/// would get it now (`dns::transfer`), as a zone file. Read-only, like the
/// status: what an operator checks before pointing secondaries at gslb.
async fn zone_transfer(
    State(shared): State<AdminState>,
    headers: HeaderMap,
    axum::extract::Path(zone): axum::extract::Path<String>,
) -> Response {
    // The whole zone, which AXFR refuses to strangers: the admin token
    // when one is set, else a loopback-only listener.
    if let Err(r) = check_token(&shared, &headers) {
        return *r;
    }
    // At most two renders at once, counted until each ends (a client that
    // leaves does not stop its render).
    static RENDERS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
    let Ok(permit) = RENDERS.try_acquire() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            Json(json!({ "error": "two zones are being rendered; retry" })),
        )
            .into_response();
    };
    let want = zone.trim_end_matches('.').to_ascii_lowercase();
    let engine = shared.status.engine.clone();
    // A large zone takes a while to render: off the runtime's threads, so
    // the TCP listeners and the rest of the API do not wait on it.
    let text = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let snap = engine.snapshot();
        snap.zones()
            .find(|z| z.zone.label() == want)
            .map(|served| crate::dns::transfer::zone_text(&served.zone, served.health.as_ref()))
            .ok_or(want)
    })
    .await;
    let text = match text {
        Ok(Ok(t)) => t,
        Ok(Err(want)) => {
            return (
                StatusCode::NOT_FOUND,
                Json(json!({ "error": format!("no zone {want} is served") })),
            )
                .into_response();
        }
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    (
        [(axum::http::header::CONTENT_TYPE, "text/dns; charset=utf-8")],
        text,
    )
        .into_response()
}

async fn status_json(State(shared): State<AdminState>) -> Json<Status> {
    Json(status(&shared.status))
}

/// `GET /api/v1/explain?name=NAME[&type=A][&client=ADDR][&ecs=PREFIX]`:
/// the answer a client gets and why (see `dns::explain`). Read-only, like
/// the status. `ecs` is ADDR/LEN, or an address (then /24 or /56, as
/// resolvers send); `client` defaults to 0.0.0.0 (located nowhere).
async fn explain(
    State(shared): State<AdminState>,
    Query(params): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let bad =
        |msg: String| (StatusCode::BAD_REQUEST, Json(json!({ "error": msg }))).into_response();
    let Some(name) = params.get("name").filter(|n| !n.is_empty()) else {
        return bad("`name` is required".into());
    };
    let qtype = match params.get("type") {
        None => hickory_proto::rr::RecordType::A,
        Some(t) => match t.to_ascii_uppercase().parse() {
            Ok(t) => t,
            Err(_) => return bad(format!("type {t:?} is not a record type")),
        },
    };
    let client: IpAddr = match params.get("client") {
        None => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        Some(c) => match c.parse() {
            Ok(c) => c,
            Err(_) => return bad(format!("client {c:?} is not an address")),
        },
    };
    let ecs = match params.get("ecs") {
        None => None,
        Some(e) => match e.parse::<ipnet::IpNet>().or_else(|_| {
            e.parse::<IpAddr>().map(|a| {
                let len = if a.is_ipv4() { 24 } else { 56 };
                ipnet::IpNet::new(a, len).expect("valid length")
            })
        }) {
            Ok(n) => Some(n),
            Err(_) => return bad(format!("ecs {e:?} is not ADDRESS/LENGTH or an address")),
        },
    };
    let q = crate::dns::explain::Question {
        name: name.clone(),
        qtype,
        client,
        ecs,
    };
    match crate::dns::explain::explain(&shared.status.engine, &q) {
        Ok(x) => Json(x).into_response(),
        Err(e) => bad(e),
    }
}

/// Server-sent events: a `transition` event per state change, and a
/// `status` event with the whole status at most every second while things
/// change (and every 5 s regardless), for the live page. The status is the
/// [`StatusFeed`]'s, built once for every stream; a stream that falls behind
/// gets the latest one, not each. At most `event_streams` at once.
async fn events(State(shared): State<AdminState>, peer: Option<axum::Extension<Peer>>) -> Response {
    let feed = shared.feed.clone();
    let addr = peer.map(|p| p.0.0);
    if !feed.enter(addr) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "10")],
            "too many live event streams\n",
        )
            .into_response();
    }
    let mut transitions = shared.status.health.subscribe();
    let mut statuses = feed.tx.subscribe();
    // The first document is built for this stream: the feed's may be old
    // when nobody was listening.
    statuses.borrow_and_update();
    let first: Arc<str> =
        Arc::from(serde_json::to_string(&status(&shared.status)).unwrap_or_default());
    let stream = async_stream(move |tx| async move {
        struct Leave(Arc<StatusFeed>, Option<IpAddr>);
        impl Drop for Leave {
            fn drop(&mut self) {
                self.0.leave(self.1);
            }
        }
        let _leave = Leave(feed, addr);
        let status_event = |s: &str| Event::default().event("status").data(s);
        if tx.send(status_event(&first)).await.is_err() {
            return;
        }
        loop {
            let event = tokio::select! {
                r = transitions.recv() => match r {
                    Ok(t) => Event::default().event("transition").data(serde_json::to_string(&t).unwrap_or_default()),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                r = statuses.changed() => match r {
                    Ok(()) => status_event(&statuses.borrow_and_update().clone()),
                    Err(_) => return,
                },
                // The client went away: free the stream's place at once.
                () = tx.closed() => return,
            };
            if tx.send(event).await.is_err() {
                return;
            }
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// A stream fed by a task through a small channel (no extra crate needed).
fn async_stream<F, Fut>(f: F) -> impl futures_core::Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Event>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(tx));
    ReceiverStream(rx)
}

struct ReceiverStream(tokio::sync::mpsc::Receiver<Event>);

impl futures_core::Stream for ReceiverStream {
    type Item = Result<Event, Infallible>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|o| o.map(Ok))
    }
}

/// Whether a mutating call comes from a client of the admin API rather
/// than from a web page that a browser on an operator's host is showing:
///
/// - it is not a "simple" request that any page may send cross-site
///   without asking (a form post, `text/plain`): it carries a JSON content
///   type, [`REQUEST_HEADER`] or a bearer token, none of which a page on
///   another site can send without a CORS preflight (never granted);
/// - its `Host` is an IP address, `localhost` or a name in `admin-hosts`:
///   a page whose name was made to resolve to 127.0.0.1 (DNS rebinding) is
///   same-origin for the browser, but its `Host` is its own name;
/// - an `Origin` (browsers send one on every POST) is this listener's own
///   (the status page), and a browser's `Sec-Fetch-Site` is not
///   `cross-site`.
///
/// `Err`: why not, as a 403.
fn same_site(shared: &AdminState, headers: &HeaderMap) -> Result<(), String> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let json = text(header::CONTENT_TYPE.as_str()).is_some_and(|t| {
        t.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    });
    // A bearer token, not any Authorization: a browser adds cached Basic
    // credentials to cross-site form posts by itself.
    if !(json || headers.contains_key(REQUEST_HEADER) || bearer_token(headers).is_some()) {
        return Err(format!(
            "a mutating call needs Content-Type: application/json, an {REQUEST_HEADER} header or a bearer token (a page on another site can send none of them)"
        ));
    }
    let host = text(header::HOST.as_str()).unwrap_or_default();
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(n, _)| n),
    }
    .trim_end_matches('.')
    .to_ascii_lowercase();
    let known =
        name.parse::<IpAddr>().is_ok() || name == "localhost" || shared.auth.hosts.contains(&name);
    if !known {
        return Err(format!(
            "Host {host:?} is not an address of this listener (a page whose name resolves here?); list the name in admin-hosts to use it"
        ));
    }
    if text("sec-fetch-site") == Some("cross-site") {
        return Err("cross-site request refused".into());
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        let own = ["http://", "https://"]
            .iter()
            .any(|scheme| origin.strip_prefix(scheme) == Some(host));
        if !own {
            return Err(format!("cross-site request from Origin {origin:?} refused"));
        }
    }
    Ok(())
}

/// The token of an `Authorization: Bearer TOKEN` header, trimmed.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
}

/// `Err`: the refusal to send (boxed: a `Response` is large).
fn authorize(shared: &AdminState, headers: &HeaderMap) -> Result<(), Box<Response>> {
    if let Err(why) = same_site(shared, headers) {
        return Err(Box::new(
            (StatusCode::FORBIDDEN, Json(json!({ "error": why }))).into_response(),
        ));
    }
    check_token(shared, headers)
}

/// The token rule of [`authorize`] alone: for reads that give away what
/// DNS does not (a whole zone, which AXFR refuses to strangers).
fn check_token(shared: &AdminState, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let deny = |code: StatusCode, msg: &str| {
        Box::new(
            (
                code,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                Json(json!({ "error": msg })),
            )
                .into_response(),
        )
    };
    match &shared.auth.token {
        Some(token) => match bearer_token(headers) {
            Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => Ok(()),
            Some(_) => Err(deny(StatusCode::UNAUTHORIZED, "wrong bearer token")),
            None => Err(deny(
                StatusCode::UNAUTHORIZED,
                "this call needs Authorization: Bearer TOKEN",
            )),
        },
        None if shared.auth.loopback => Ok(()),
        None => Err(deny(
            StatusCode::UNAUTHORIZED,
            "no admin token is configured and the admin listener is not loopback-only: set admin-token or GSLB_ADMIN_TOKEN",
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn parse_action(action: &str) -> Option<Override> {
    match action {
        "drain" | "force-down" => Some(Override::Down),
        "undrain" | "auto" => Some(Override::Auto),
        "force-up" => Some(Override::Up),
        _ => None,
    }
}

/// Who sent a mutating request, for the override's note and the log: the
/// client's own mark (`X-Gslb-Request: cli`) when it is a short word, else
/// `api`, and its address.
fn requester(headers: &HeaderMap, peer: Option<IpAddr>) -> String {
    let via = headers
        .get(REQUEST_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 16
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        .unwrap_or("api");
    match peer {
        Some(ip) => format!("{via} from {ip}"),
        None => via.to_string(),
    }
}

async fn apply_override(
    shared: &AdminState,
    zone: &str,
    region: &str,
    endpoint: Option<IpAddr>,
    action: &str,
    q: &OverrideQuery,
    by: String,
) -> Response {
    let note = match q.note() {
        Ok(n) => crate::health::OverrideNote { by: Some(by), ..n },
        Err(e) => return (StatusCode::BAD_REQUEST, Json(json!({ "error": e }))).into_response(),
    };
    let Some(o) = parse_action(action) else {
        return (
            StatusCode::NOT_FOUND,
            Json(
                json!({ "error": format!("unknown action {action:?} (drain, undrain, force-up)") }),
            ),
        )
            .into_response();
    };
    // `_` stands for "the zone that has this region".
    let zone = (zone != "_").then_some(zone);
    let local = note.local && shared.status.cluster.is_some();
    let result = match &shared.status.cluster {
        // In a cluster the override is stored in etcd and applies on
        // every node; without etcd it is refused rather than applied here
        // alone (nodes would answer differently), unless asked for
        // (`local`): then it is this node's alone.
        Some(c) if !local => match shared
            .status
            .health
            .resolve_override(zone, region, endpoint, o)
            .map(|t| crate::health::OverrideTarget {
                note: note.clone(),
                ..t
            }) {
            Ok(target) => match c.set_override(&target).await {
                Ok(()) => Ok(target),
                Err(e) => {
                    return (
                        StatusCode::SERVICE_UNAVAILABLE,
                        Json(json!({ "error": format!("{e}; the override was not applied on any node") })),
                    )
                        .into_response();
                }
            },
            Err(e) => Err(e),
        },
        _ => shared
            .status
            .health
            .resolve_override(zone, region, endpoint, o)
            .map(|t| {
                let t = crate::health::OverrideTarget {
                    note: crate::health::OverrideNote {
                        local,
                        ..note.clone()
                    },
                    ..t
                };
                shared.status.health.apply_override(&t);
                t
            }),
    };
    match result {
        Ok(target) => {
            let mut body = json!({ "ok": true, "target": target });
            if shared.status.cluster.is_some() && !local {
                body["persisted"] = json!(true); // in etcd, for every node
            } else {
                // Saved before answering: the operator must know whether a
                // restart keeps it.
                match shared.status.health.persist_now().await {
                    Ok(saved) => body["persisted"] = json!(saved),
                    Err(e) => {
                        body["persisted"] = json!(false);
                        body["warning"] = json!(format!(
                            "the override applies but is not persisted: {e}; a restart loses it"
                        ));
                    }
                }
            }
            (StatusCode::OK, Json(body)).into_response()
        }
        Err(e) => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}

/// `?for=2h&comment=...&local=true` on an override call.
#[derive(Debug, serde::Deserialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct OverrideQuery {
    /// It ends by itself after this long (`"30m"`, `"2h"`).
    #[serde(default, rename = "for")]
    duration: Option<String>,
    /// Why.
    #[serde(default)]
    comment: Option<String>,
    /// On this node alone, even in a cluster (and while etcd is away).
    #[serde(default)]
    local: bool,
}

impl OverrideQuery {
    fn note(&self) -> Result<crate::health::OverrideNote, String> {
        let expires_ms = match &self.duration {
            None => None,
            Some(d) => match humantime::parse_duration(d) {
                Ok(d) if !d.is_zero() && d <= std::time::Duration::from_secs(366 * 86_400) => {
                    Some(crate::model::unix_ms(std::time::SystemTime::now() + d))
                }
                _ => {
                    return Err(format!(
                        "for={d:?} is not a duration from 1s to 366 days, like \"2h\""
                    ));
                }
            },
        };
        let mut comment = self.comment.clone().filter(|c| !c.trim().is_empty());
        if let Some(c) = &mut comment {
            crate::health::cap_comment(c);
        }
        Ok(crate::health::OverrideNote {
            comment,
            expires_ms,
            local: self.local,
            by: None,
        })
    }
}

async fn region_override(
    State(shared): State<AdminState>,
    peer: Option<axum::Extension<Peer>>,
    headers: HeaderMap,
    Path((zone, region, action)): Path<(String, String, String)>,
    Query(q): Query<OverrideQuery>,
) -> Response {
    if let Err(r) = authorize(&shared, &headers) {
        return *r;
    }
    let by = requester(&headers, peer.map(|p| p.0.0));
    apply_override(&shared, &zone, &region, None, &action, &q, by).await
}

async fn endpoint_override(
    State(shared): State<AdminState>,
    peer: Option<axum::Extension<Peer>>,
    headers: HeaderMap,
    Path((zone, region, endpoint, action)): Path<(String, String, String, String)>,
    Query(q): Query<OverrideQuery>,
) -> Response {
    if let Err(r) = authorize(&shared, &headers) {
        return *r;
    }
    let Ok(addr) = endpoint.parse::<IpAddr>() else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": format!("{endpoint:?} is not an IP address") })),
        )
            .into_response();
    };
    let by = requester(&headers, peer.map(|p| p.0.0));
    apply_override(&shared, &zone, &region, Some(addr), &action, &q, by).await
}

/// `POST /api/v1/reload[?allow-removal=true]`.
#[derive(Debug, serde::Deserialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct ReloadQuery {
    #[serde(default)]
    allow_removal: bool,
}

async fn reload(
    State(shared): State<AdminState>,
    headers: HeaderMap,
    Query(q): Query<ReloadQuery>,
) -> Response {
    if let Err(r) = authorize(&shared, &headers) {
        return *r;
    }
    match shared.reloader.reload(q.allow_removal).await {
        Ok(summary) => (StatusCode::OK, Json(json!({ "ok": true, "summary": summary }))).into_response(),
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "ok": false, "errors": e.0.iter().map(|e| e.to_string()).collect::<Vec<_>>() })),
        )
            .into_response(),
    }
}
