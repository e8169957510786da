//! A real etcd (Debian's `etcd-server`) for the cluster tests: one member on
//! free loopback ports with a temporary data directory, that a test can
//! kill (SIGKILL) and restart on the same ports and data.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::wait_until;

/// A running (or killed) etcd member.
pub struct Etcd {
    child: Option<Child>,
    /// Client URL, `http://127.0.0.1:PORT`.
    pub url: String,
    client_port: u16,
    peer_port: u16,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn etcd_binary() -> PathBuf {
    for p in ["/usr/bin/etcd", "/usr/local/bin/etcd"] {
        if std::path::Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("etcd is not installed: run scripts/test, which installs Debian's etcd-server");
}

impl Etcd {
    /// Start a fresh member and wait until it answers.
    pub async fn start() -> Etcd {
        let mut e = Etcd {
            child: None,
            url: String::new(),
            client_port: free_port(),
            peer_port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
        };
        e.url = format!("http://127.0.0.1:{}", e.client_port);
        e.spawn();
        e.wait_ready().await;
        e
    }

    fn spawn(&mut self) {
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .expect("etcd log");
        let child = Command::new(etcd_binary())
            .args(["--name", "test"])
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &self.url])
            .args(["--advertise-client-urls", &self.url])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("test={peer}")])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("etcd starts");
        self.child = Some(child);
    }

    async fn wait_ready(&self) {
        let url = self.url.clone();
        wait_until(Duration::from_secs(20), "etcd answers", || {
            let url = url.clone();
            async move {
                let Ok(Ok(mut c)) = tokio::time::timeout(
                    Duration::from_secs(1),
                    etcd_client::Client::connect([url], None),
                )
                .await
                else {
                    return false;
                };
                matches!(
                    tokio::time::timeout(Duration::from_secs(1), c.get("/probe", None)).await,
                    Ok(Ok(_))
                )
            }
        })
        .await;
    }

    /// SIGKILL: no goodbye to anyone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same ports with the same data.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_ready().await;
    }

    /// A client, for looking at what the nodes wrote.
    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.url.clone()], None)
            .await
            .expect("etcd client")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}
