//! `gslb demo`: three small HTTP backends standing in for three regions on
//! loopback (127.0.0.2, .3 and .4), a server with a demo zone pointing at
//! them, and a live printout of what `api` answers and every transition.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use tokio::net::UdpSocket;

use crate::app::{Server, Settings};

/// The demo regions: name and backend address.
pub const REGIONS: [(&str, &str); 3] = [
    ("us-east", "127.0.0.2"),
    ("eu-west", "127.0.0.3"),
    ("ap-south", "127.0.0.4"),
];

/// The demo zone, for backends on `port`.
pub fn zone(port: u16) -> String {
    format!(
        r#"# The zone `gslb demo` serves.
[zone]
name = "gslb.example.com."
nameservers = ["ns1.gslb.example.com."]
hostmaster = "hostmaster.example.com."

[[record]]
name = "ns1"
type = "A"
value = "127.0.0.1"

[check.web]
type = "http"
port = {port}
path = "/health"
expect-body = "ok"
interval = "1s"
timeout = "500ms"
recheck = "200ms"
fall = 3
rise = 2

[region.us-east]
endpoints = ["127.0.0.2"]
check = "web"

[region.eu-west]
endpoints = ["127.0.0.3"]
check = "web"

[region.ap-south]
endpoints = ["127.0.0.4"]
check = "web"

[service.api]
policy = "failover"
regions = ["us-east", "eu-west", "ap-south"]
ttl = 30

[service.www]
policy = "weighted"
weights = {{ us-east = 3, eu-west = 1, ap-south = 0 }}
ttl = 30

[service.assets]
policy = "all-healthy"
regions = ["us-east", "eu-west", "ap-south"]
"#
    )
}

/// Errors of the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A backend could not bind.
    #[error("cannot start the demo backend on {0}: {1} (is the port taken? try --backend-port)")]
    Backend(SocketAddr, std::io::Error),
    /// Files.
    #[error("cannot write the demo zone: {0}")]
    Io(#[from] std::io::Error),
    /// The server did not start.
    #[error("{0}")]
    Server(#[from] crate::app::AppError),
}

async fn backend(addr: SocketAddr) -> Result<(), DemoError> {
    let failing = Arc::new(AtomicBool::new(false));
    let app = Router::new()
        .route(
            "/health",
            get(|State(f): State<Arc<AtomicBool>>| async move {
                if f.load(Ordering::Relaxed) {
                    (StatusCode::SERVICE_UNAVAILABLE, "failing\n")
                } else {
                    (StatusCode::OK, "ok\n")
                }
            }),
        )
        .route(
            "/fail",
            post(|State(f): State<Arc<AtomicBool>>| async move {
                f.store(true, Ordering::Relaxed);
                "this backend now fails its health checks (503)\n"
            }),
        )
        .route(
            "/recover",
            post(|State(f): State<Arc<AtomicBool>>| async move {
                f.store(false, Ordering::Relaxed);
                "this backend is healthy again\n"
            }),
        )
        .with_state(failing);
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| DemoError::Backend(addr, e))?;
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    Ok(())
}

async fn ask(dns: SocketAddr, name: &str) -> Option<Vec<IpAddr>> {
    let sock = UdpSocket::bind("127.0.0.1:0").await.ok()?;
    let mut m = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).ok()?, RecordType::A));
    sock.send_to(&m.to_vec().ok()?, dns).await.ok()?;
    let mut buf = [0u8; 1500];
    let (n, _) = tokio::time::timeout(Duration::from_secs(1), sock.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    let resp = Message::from_vec(&buf[..n]).ok()?;
    Some(
        resp.answers
            .iter()
            .filter_map(|r| r.data.ip_addr())
            .collect(),
    )
}

fn region_of(ip: &IpAddr) -> &'static str {
    REGIONS
        .iter()
        .find(|(_, a)| a.parse::<IpAddr>().ok() == Some(*ip))
        .map(|(n, _)| *n)
        .unwrap_or("?")
}

/// Run the demo until Ctrl-C.
pub async fn run(port: u16, admin_port: u16, backend_port: u16) -> Result<(), DemoError> {
    for (_, ip) in REGIONS {
        backend(SocketAddr::new(
            ip.parse().expect("demo address"),
            backend_port,
        ))
        .await?;
    }
    let dir = std::env::temp_dir().join(format!("gslb-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("gslb.example.com.toml"), zone(backend_port))?;
    let dns: SocketAddr = SocketAddr::from(([127, 0, 0, 1], port));
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    let settings = Settings {
        zones: vec![dir.clone()],
        listen: vec![dns],
        admin: Some(admin),
        state_file: None,
        udp_workers: 1,
        ..Settings::default()
    };
    let server = Server::start(settings).await?;
    let mut events = server.health.subscribe();
    println!(
        r#"
gslb demo: three regions on loopback, one health-checked zone.

  region     backend                  
  us-east    http://127.0.0.2:{bp}/health   (primary of api)
  eu-west    http://127.0.0.3:{bp}/health   (secondary)
  ap-south   http://127.0.0.4:{bp}/health   (tertiary; standby of www)

Ask it (another terminal):
  dig @127.0.0.1 -p {port} api.gslb.example.com +short      # failover: us-east, then eu-west, then ap-south
  dig @127.0.0.1 -p {port} www.gslb.example.com +short      # weighted 3:1 (ap-south is standby)
  dig @127.0.0.1 -p {port} assets.gslb.example.com +short   # every healthy region

Take us-east down, and watch api fail over below (about 1.5 s: 3 failed probes):
  curl -X POST http://127.0.0.2:{bp}/fail        # the backend answers 503
  curl -X POST http://127.0.0.2:{bp}/recover     # healthy again: failback after 2 good probes
or drain it by hand, and back:
  gslb drain us-east --admin 127.0.0.1:{admin_port}
  gslb undrain us-east --admin 127.0.0.1:{admin_port}

Status page: http://127.0.0.1:{admin_port}/      Metrics: http://127.0.0.1:{admin_port}/metrics
Ctrl-C stops everything.
"#,
        bp = backend_port
    );
    let stop = server.shutdown_token();
    let mut last: Option<Vec<IpAddr>> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            ev = events.recv() => {
                if let Ok(t) = ev {
                    let what = match t.endpoint {
                        Some(ep) => format!("endpoint {ep} ({})", t.region),
                        None => format!("region {}", t.region),
                    };
                    println!("  {}  {what}: {} -> {}  ({})", clock(), t.from, t.to, t.reason);
                }
            }
            _ = tick.tick() => {
                let now = ask(dns, "api.gslb.example.com.").await;
                if now.is_some() && now != last {
                    let a = now.clone().unwrap_or_default();
                    let shown: Vec<String> = a.iter().map(|ip| format!("{ip} ({})", region_of(ip))).collect();
                    println!("  {}  api.gslb.example.com A -> {}", clock(), shown.join(", "));
                    last = now;
                }
            }
        }
    }
    stop.cancel();
    server.wait().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn clock() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "{:02}:{:02}:{:02}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}
