//! A controllable HTTP backend on a loopback address: healthy (200 "ok"),
//! failing (503), hanging (accepts, never answers), or killed (listener
//! closed: connection refused) and revived on the same address and port.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What the backend does with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// 200 with body "ok".
    Healthy = 0,
    /// 503.
    Failing = 1,
    /// Accept, read, never answer.
    Hang = 2,
    /// Accept and reset at once (as close to refusing one client as a
    /// listener shared by all clients can get).
    Reset = 3,
}

/// A running backend.
pub struct Backend {
    pub addr: SocketAddr,
    mode: Arc<AtomicU8>,
    /// Modes for particular client addresses (a node's `probe-source`).
    per_client: Arc<Mutex<HashMap<IpAddr, Mode>>>,
    /// Requests seen (health probes).
    pub hits: Arc<AtomicUsize>,
    /// Requests seen per client address.
    pub clients: Arc<Mutex<HashMap<IpAddr, usize>>>,
    task: Option<JoinHandle<()>>,
}

impl Backend {
    /// Start on `ip` with a free port.
    pub async fn start(ip: &str) -> Backend {
        let ip: IpAddr = ip.parse().expect("ip");
        let l = TcpListener::bind(SocketAddr::new(ip, 0))
            .await
            .expect("bind backend");
        let addr = l.local_addr().unwrap();
        let mut b = Backend {
            addr,
            mode: Arc::new(AtomicU8::new(Mode::Healthy as u8)),
            per_client: Arc::default(),
            clients: Arc::default(),
            hits: Arc::new(AtomicUsize::new(0)),
            task: None,
        };
        b.task = Some(b.serve(l));
        b
    }

    fn serve(&self, l: TcpListener) -> JoinHandle<()> {
        let mode = self.mode.clone();
        let per_client = self.per_client.clone();
        let hits = self.hits.clone();
        let clients = self.clients.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, peer)) = l.accept().await else {
                    continue;
                };
                let mode = match per_client.lock().unwrap().get(&peer.ip()) {
                    Some(m) => *m as u8,
                    None => mode.load(Ordering::Relaxed),
                };
                if mode == Mode::Reset as u8 {
                    let _ = s.set_zero_linger();
                    drop(s);
                    continue;
                }
                let hits = hits.clone();
                let clients = clients.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 2048];
                    let mut seen = Vec::new();
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    hits.fetch_add(1, Ordering::Relaxed);
                    *clients.lock().unwrap().entry(peer.ip()).or_default() += 1;
                    let resp: &[u8] = match mode {
                        0 => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                        1 => b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nConnection: close\r\n\r\ndown",
                        _ => {
                            // Hang: hold the connection open until the client gives up.
                            let _ = s.read(&mut buf).await;
                            return;
                        }
                    };
                    let _ = s.write_all(resp).await;
                    let _ = s.shutdown().await;
                });
            }
        })
    }

    /// Change what requests get.
    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::Relaxed);
    }

    /// Change what requests from `client` get (`None`: as everyone).
    pub fn set_for(&self, client: &str, mode: Option<Mode>) {
        let ip: IpAddr = client.parse().expect("client ip");
        let mut m = self.per_client.lock().unwrap();
        match mode {
            Some(mode) => m.insert(ip, mode),
            None => m.remove(&ip),
        };
    }

    /// Close the listener: new connections are refused.
    pub fn kill(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Listen again on the same address and port, healthy.
    pub async fn revive(&mut self) {
        self.kill();
        self.set(Mode::Healthy);
        // The aborted task drops its listener asynchronously; retry briefly.
        let mut tries = 0;
        let l = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tries < 200 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                Err(e) => panic!("cannot rebind {}: {e}", self.addr),
            }
        };
        self.task = Some(self.serve(l));
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}
