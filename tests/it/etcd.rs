//! A real etcd (Debian's `etcd-server`) for the cluster tests: one member on
//! free loopback ports with a temporary data directory, that a test can
//! kill (SIGKILL) and restart on the same ports and data.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::wait_until;

/// PEM files of a TLS etcd: its CA, and a client certificate it accepts.
pub struct TlsFiles {
    pub ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

/// A running (or killed) etcd member.
pub struct Etcd {
    child: Option<Child>,
    /// Serving TLS, requiring client certificates.
    pub tls: Option<TlsFiles>,
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

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
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
        Self::start_with(false).await
    }

    /// Start a member that serves TLS only and requires a client
    /// certificate from a CA made here.
    pub async fn start_tls() -> Etcd {
        Self::start_with(true).await
    }

    async fn start_with(tls: bool) -> Etcd {
        let mut e = Etcd {
            child: None,
            tls: None,
            url: String::new(),
            client_port: free_port(),
            peer_port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
        };
        e.url = format!("http://127.0.0.1:{}", e.client_port);
        if tls {
            e.tls = Some(make_certs(e.dir.path()));
            e.url = format!("https://127.0.0.1:{}", e.client_port);
        }
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
        let mut cmd = Command::new(etcd_binary());
        if let Some(t) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&t.server_cert)
                .arg("--key-file")
                .arg(&t.server_key)
                .arg("--trusted-ca-file")
                .arg(&t.ca)
                .arg("--client-cert-auth");
        }
        let child = cmd
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

    /// No member at all: for settings whose endpoints a test fills in.
    pub fn placeholder() -> Etcd {
        Etcd {
            child: None,
            tls: None,
            url: "http://127.0.0.1:9".into(),
            client_port: 9,
            peer_port: 9,
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// Connect options that this member accepts (its CA and a client
    /// certificate when it serves TLS).
    pub fn options(&self) -> Option<etcd_client::ConnectOptions> {
        let t = self.tls.as_ref()?;
        let read = |p: &PathBuf| std::fs::read(p).expect("PEM");
        Some(
            etcd_client::ConnectOptions::new().with_tls(
                etcd_client::TlsOptions::new()
                    .ca_certificate(etcd_client::Certificate::from_pem(read(&t.ca)))
                    .identity(etcd_client::Identity::from_pem(
                        read(&t.client_cert),
                        read(&t.client_key),
                    )),
            ),
        )
    }

    async fn wait_ready(&self) {
        wait_answers(&self.url, self.options(), false, Duration::from_secs(20)).await;
    }

    /// SIGKILL: no goodbye to anyone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // A frozen process dies of SIGKILL too.
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP: etcd hangs, connections stay open, nothing answers.
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    /// SIGCONT after [`Etcd::freeze`].
    pub fn thaw(&self) {
        self.signal("CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("etcd running").id();
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -{sig} {pid}");
    }

    /// Start again on the same ports with no data at all: an etcd rebuilt
    /// empty at the same address.
    pub async fn wipe_and_restart(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(self.dir.path().join("data"));
        self.spawn();
        self.wait_ready().await;
    }

    /// Keep a copy of the data as it is now (stopping the member for the
    /// copy, as a file-level backup does); [`Etcd::restore_copy`] brings it
    /// back.
    pub async fn copy_data(&mut self) {
        self.kill();
        copy_dir(&self.dir.path().join("data"), &self.dir.path().join("copy"));
        self.spawn();
        self.wait_ready().await;
    }

    /// Start again from the copy [`Etcd::copy_data`] kept: an etcd restored
    /// from an old backup, with the same cluster id and an older revision.
    pub async fn restore_copy(&mut self) {
        self.kill();
        let data = self.dir.path().join("data");
        let _ = std::fs::remove_dir_all(&data);
        copy_dir(&self.dir.path().join("copy"), &data);
        self.spawn();
        self.wait_ready().await;
    }

    /// Start again on the same ports with the same data.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_ready().await;
    }

    /// A client, for looking at what the nodes wrote.
    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.url.clone()], self.options())
            .await
            .expect("etcd client")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Wait until the etcd at `url` answers a read (or, with `write`, a write)
/// within a second.
async fn wait_answers(
    url: &str,
    opts: Option<etcd_client::ConnectOptions>,
    write: bool,
    limit: Duration,
) {
    wait_until(limit, "etcd answers", || {
        let (url, opts) = (url.to_string(), opts.clone());
        async move {
            let Ok(Ok(mut c)) = tokio::time::timeout(
                Duration::from_secs(1),
                etcd_client::Client::connect([url], opts),
            )
            .await
            else {
                return false;
            };
            let second = Duration::from_secs(1);
            if write {
                matches!(
                    tokio::time::timeout(second, c.put("/probe", "x", None)).await,
                    Ok(Ok(_))
                )
            } else {
                matches!(
                    tokio::time::timeout(second, c.get("/probe", None)).await,
                    Ok(Ok(_))
                )
            }
        }
    })
    .await;
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as
/// PEM files in `dir`.
fn make_certs(dir: &std::path::Path) -> TlsFiles {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
    let ca = crate::support::test_ca_issuer("gslb etcd test CA");
    let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(names.clone()).expect("params");
        p.distinguished_name
            .push(DnType::CommonName, names[0].clone());
        p.extended_key_usages = vec![usage];
        let cert = p.signed_by(&key, &*ca).expect("certificate");
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(
        vec!["127.0.0.1".into(), "localhost".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client_cert, client_key) = leaf(vec!["gslb".into()], ExtendedKeyUsagePurpose::ClientAuth);
    let write = |name: &str, pem: &str| {
        let p = dir.join(name);
        std::fs::write(&p, pem).expect("write PEM");
        p
    };
    TlsFiles {
        ca: write("ca.pem", &ca.pem()),
        server_cert: write("server.pem", &server_cert),
        server_key: write("server-key.pem", &server_key),
        client_cert: write("client.pem", &client_cert),
        client_key: write("client-key.pem", &client_key),
    }
}

/// A three-member etcd cluster on loopback, whose members a test can kill,
/// freeze and thaw one by one.
pub struct EtcdCluster {
    members: Vec<Option<Child>>,
    ips: Vec<String>,
    client_ports: Vec<u16>,
    peer_ports: Vec<u16>,
    dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// Start three members and wait until each answers.
    pub async fn start() -> EtcdCluster {
        Self::start_on(&["127.0.0.1", "127.0.0.1", "127.0.0.1"]).await
    }

    /// Three members, member `i` on `ips[i]` (addresses of this host: a
    /// test lab's bridge), ports 2379 and 2380 unless on loopback.
    pub async fn start_on(ips: &[&str; 3]) -> EtcdCluster {
        let loopback = ips.iter().all(|ip| ip.starts_with("127."));
        let port = |fixed: u16| if loopback { free_port() } else { fixed };
        let mut c = EtcdCluster {
            members: Vec::new(),
            ips: ips.iter().map(|s| s.to_string()).collect(),
            client_ports: (0..3).map(|_| port(2379)).collect(),
            peer_ports: (0..3).map(|_| port(2380)).collect(),
            dir: tempfile::tempdir().expect("temp dir"),
        };
        for i in 0..3 {
            let child = c.spawn(i);
            c.members.push(Some(child));
        }
        for i in 0..3 {
            c.wait_ready(i).await;
        }
        c
    }

    /// Client URL of member `i`.
    pub fn url(&self, i: usize) -> String {
        format!("http://{}:{}", self.ips[i], self.client_ports[i])
    }

    /// Every member's client URL.
    pub fn urls(&self) -> Vec<String> {
        (0..3).map(|i| self.url(i)).collect()
    }

    fn spawn(&self, i: usize) -> Child {
        let peer = |j: usize| format!("http://{}:{}", self.ips[j], self.peer_ports[j]);
        let initial: Vec<String> = (0..3).map(|j| format!("m{j}={}", peer(j))).collect();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("m{i}.log")))
            .expect("etcd log");
        Command::new(etcd_binary())
            .args(["--name", &format!("m{i}")])
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("m{i}")))
            .args(["--listen-client-urls", &self.url(i)])
            .args(["--advertise-client-urls", &self.url(i)])
            .args(["--listen-peer-urls", &peer(i)])
            .args(["--initial-advertise-peer-urls", &peer(i)])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "gslb-test"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("etcd starts")
    }

    async fn wait_ready(&self, i: usize) {
        // A write: it needs a quorum of members, not just this one.
        wait_answers(&self.url(i), None, true, Duration::from_secs(30)).await;
    }

    /// The index of the member that leads now.
    pub async fn leader(&self) -> usize {
        for i in 0..3 {
            if self.members[i].is_none() {
                continue;
            }
            let Ok(Ok(mut c)) = tokio::time::timeout(
                Duration::from_secs(1),
                etcd_client::Client::connect([self.url(i)], None),
            )
            .await
            else {
                continue;
            };
            if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(1), c.status()).await
                && s.header().is_some_and(|h| h.member_id() == s.leader())
            {
                return i;
            }
        }
        panic!("no member leads");
    }

    /// SIGKILL member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start member `i` again on its ports and data.
    pub async fn revive(&mut self, i: usize) {
        self.kill(i);
        let child = self.spawn(i);
        self.members[i] = Some(child);
        self.wait_ready(i).await;
    }

    /// Start every member that is not running, then wait for each (one
    /// alone has no quorum to answer).
    pub async fn revive_all(&mut self) {
        for i in 0..3 {
            if self.members[i].is_none() {
                let child = self.spawn(i);
                self.members[i] = Some(child);
            }
        }
        for i in 0..3 {
            self.wait_ready(i).await;
        }
    }

    /// Kill every member, delete every member's data and start them again
    /// on the same addresses: an etcd cluster rebuilt empty (a new cluster
    /// id, revisions from 1).
    pub async fn wipe_all(&mut self) {
        for i in 0..3 {
            self.kill(i);
            let _ = std::fs::remove_dir_all(self.dir.path().join(format!("m{i}")));
        }
        self.revive_all().await;
    }

    /// SIGSTOP member `i`.
    pub fn freeze(&self, i: usize) {
        self.signal(i, "STOP");
    }

    /// SIGCONT member `i`.
    pub fn thaw(&self, i: usize) {
        self.signal(i, "CONT");
    }

    fn signal(&self, i: usize, sig: &str) {
        let pid = self.members[i].as_ref().expect("member running").id();
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -{sig} {pid}");
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..3 {
            self.kill(i);
        }
    }
}
