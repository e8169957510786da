//! The chaos suite: what production runs, faulted as production is.
//!
//! Three real `gslb serve` processes, each in a network namespace of its
//! own (veth to a bridge this test creates, addresses 198.51.100.0/24,
//! TEST-NET-2, on hosts that exist only in these namespaces); a
//! three-member etcd, HTTP backends and a webhook receiver on the bridge;
//! faults by nftables rules inside a node's namespace and by killing
//! processes. A poller asks every node 10 times a second and records every
//! answer; each scenario asserts on the whole record: every node on the
//! new answer within a stated bound after the fault, never a wrong answer
//! after it, no answer change without a change of evidence, one webhook per
//! region transition. Each scenario prints a row; `bench/chaos.sh` runs the
//! suite and prints the rows as BENCHMARKS.md keeps them.
//!
//! Needs root (CI runs as root) and `ip`, `nft` (scripts/test installs
//! iproute2 and nftables).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

use crate::backend::{Backend, Mode};
use crate::etcd::EtcdCluster;
use crate::support::*;

/// The bridge's address in the root namespace, and the lab's hosts there.
const HUB: &str = "198.51.100.1";
const PRIMARY: &str = "198.51.100.2";
const SECONDARY: &str = "198.51.100.3";
const ETCD: [&str; 3] = ["198.51.100.4", "198.51.100.5", "198.51.100.6"];
/// Node i (1-based) is 198.51.100.1i.
fn node_ip(i: usize) -> String {
    format!("198.51.100.{}", 10 + i)
}
/// etcd's default: an etcd leader election (1 to 2 s) must not take a node
/// out of the cluster (with 2 s it can: every node then decided alone).
/// gslb nodes in the lab.
const NODES: usize = 3;
const LEASE_TTL: Duration = Duration::from_secs(5);
/// Detection: fall 3 at 500 ms with 100 ms rechecks, 300 ms timeouts; rise
/// 2. Every bound below is detection plus what the scenario adds, plus a
/// margin of one second for the poller and the debug build.
const DETECT: Duration = Duration::from_millis(1500);
const MARGIN: Duration = Duration::from_secs(1);
/// The nodes' admin token (their admin listeners are not on loopback).
const TOKEN: &str = "chaos-lab-token";

fn netns(ns: &str, args: &[&str]) {
    let mut a = vec!["netns", "exec", ns];
    a.extend_from_slice(args);
    run("ip", &a);
}

/// Remove the namespaces and bridge of labs whose test process is gone (a
/// run killed before its drop): left in place, the bridge keeps the lab's
/// addresses and every later run's nodes reach nothing.
fn remove_orphans() {
    let alive = |pid: &str| {
        pid.parse::<u32>().is_ok_and(|p| {
            p == std::process::id() % 100_000 || Path::new(&format!("/proc/{p}")).exists()
        })
    };
    let list = |args: &[&str]| {
        Command::new("ip")
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    for line in list(&["netns", "list"]).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if let Some((pid, _)) = name.strip_prefix("gc").and_then(|r| r.split_once('n'))
            && !alive(pid)
        {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
    for line in list(&["-br", "link"]).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if let Some(pid) = name.strip_prefix("gc").and_then(|r| r.strip_suffix("br"))
            && !alive(pid)
        {
            let _ = Command::new("ip").args(["link", "del", name]).status();
        }
    }
}

/// The namespaces, bridge and veths of one lab; removed on drop.
struct Net {
    bridge: String,
    ns: Vec<String>,
}

impl Net {
    fn create(tag: &str, nodes: usize) -> Net {
        remove_orphans();
        let bridge = format!("{tag}br");
        let net = Net {
            bridge: bridge.clone(),
            ns: (1..=nodes).map(|i| format!("{tag}n{i}")).collect(),
        };
        run("ip", &["link", "add", &bridge, "type", "bridge"]);
        run("ip", &["link", "set", &bridge, "up"]);
        for ip in [HUB, PRIMARY, SECONDARY, ETCD[0], ETCD[1], ETCD[2]] {
            run("ip", &["addr", "add", &format!("{ip}/24"), "dev", &bridge]);
        }
        for (i, ns) in net.ns.iter().enumerate() {
            let (host, peer) = (format!("{tag}h{}", i + 1), format!("{tag}p{}", i + 1));
            run("ip", &["netns", "add", ns]);
            run(
                "ip",
                &["link", "add", &host, "type", "veth", "peer", "name", &peer],
            );
            run("ip", &["link", "set", &host, "master", &bridge]);
            run("ip", &["link", "set", &host, "up"]);
            run("ip", &["link", "set", &peer, "netns", ns]);
            netns(ns, &["ip", "link", "set", "lo", "up"]);
            netns(
                ns,
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("{}/24", node_ip(i + 1)),
                    "dev",
                    &peer,
                ],
            );
            netns(ns, &["ip", "link", "set", &peer, "up"]);
            netns(ns, &["ip", "route", "add", "default", "via", HUB]);
        }
        net
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

/// Drop what node `ns` sends to `to` (a host or several), until healed.
fn cut(ns: &str, to: &[&str]) {
    let set = to.join(", ");
    netns(ns, &["nft", "add", "table", "inet", "chaos"]);
    netns(
        ns,
        &[
            "nft",
            "add",
            "chain",
            "inet",
            "chaos",
            "out",
            "{ type filter hook output priority 0 ; }",
        ],
    );
    netns(
        ns,
        &[
            "nft",
            "add",
            "rule",
            "inet",
            "chaos",
            "out",
            "ip",
            "daddr",
            &format!("{{ {set} }}"),
            "drop",
        ],
    );
}

fn heal(ns: &str) {
    netns(ns, &["nft", "delete", "table", "inet", "chaos"]);
}

/// One gslb node: a real process in its namespace.
struct Node {
    ns: String,
    ip: String,
    cfg: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

impl Node {
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(env!("CARGO_BIN_EXE_gslb"))
            .arg("serve")
            .arg("--config")
            .arg(&self.cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("gslb starts");
        self.child = Some(child);
    }

    fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }

    fn dns(&self) -> SocketAddr {
        format!("{}:5353", self.ip).parse().expect("addr")
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Every answer of every node, 10 times a second.
type Record = Arc<Mutex<Vec<(Duration, usize, String)>>>;

struct Lab {
    nodes: Vec<Node>,
    etcd: EtcdCluster,
    primary: Backend,
    secondary: Backend,
    hooks: crate::webhook::Receiver,
    record: Record,
    start: Instant,
    stop: Arc<AtomicBool>,
    rows: Vec<String>,
    _dir: tempfile::TempDir,
    // Last: the network goes after every process in it.
    _net: Net,
}

/// The lab's zone; `probe` is the checks' interval and timeout.
fn zone(primary: &Backend, secondary: &Backend, hook: &str, probe: (&str, &str)) -> String {
    let (interval, timeout) = probe;
    let check = |name: &str, b: &Backend| {
        format!(
            "\n[check.{name}]\ntype = \"http\"\nport = {}\npath = \"/health\"\ninterval = \"{interval}\"\ntimeout = \"{timeout}\"\nrecheck = \"100ms\"\nfall = 3\nrise = 2\n\n[region.{name}]\nendpoints = [\"{}\"]\ncheck = \"{name}\"\n",
            b.addr.port(),
            b.addr.ip()
        )
    };
    format!(
        "[zone]\nname = \"gslb.example.com.\"\nnameservers = [\"ns1.example.net.\"]\nhostmaster = \"hostmaster.example.com.\"\nwebhook = \"{hook}\"\n{}{}\n[service.api]\nregions = [\"primary\", \"secondary\"]\n",
        check("primary", primary),
        check("secondary", secondary)
    )
}

impl Lab {
    async fn start(nodes: usize) -> Lab {
        // Interface names are at most 15 bytes: a short tag per run.
        let tag = format!("gc{}", std::process::id() % 100_000);
        let net = Net::create(&tag, nodes);
        let etcd = EtcdCluster::start_on(&ETCD).await;
        let primary = Backend::start(PRIMARY).await;
        let secondary = Backend::start(SECONDARY).await;
        let hooks = crate::webhook::receiver_on(HUB, false).await;
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("zones")).expect("zones");
        std::fs::write(
            dir.path().join("zones/z.toml"),
            zone(&primary, &secondary, &hooks.0, ("500ms", "300ms")),
        )
        .expect("zone");
        let etcd_urls: Vec<String> = (0..3).map(|i| format!("\"{}\"", etcd.url(i))).collect();
        let mut lab_nodes = Vec::new();
        for i in 1..=nodes {
            let ip = node_ip(i);
            let cfg = dir.path().join(format!("ns{i}.toml"));
            std::fs::write(
                &cfg,
                format!(
                    "zones = \"{}\"\nlisten = [\"{ip}:5353\"]\nadmin = \"{ip}:9153\"\nadmin-token = \"{TOKEN}\"\nstate-file = \"{}\"\nlog-level = \"info\"\n\n[cluster]\nname = \"chaos\"\nnode = \"ns{i}\"\netcd = [{}]\nlease-ttl = \"5s\"\nvote-grace = \"30s\"\n",
                    dir.path().join("zones").display(),
                    dir.path().join(format!("state{i}.json")).display(),
                    etcd_urls.join(", ")
                ),
            )
            .expect("settings");
            let mut n = Node {
                ns: format!("{tag}n{i}"),
                ip,
                cfg,
                child: None,
                log: dir.path().join(format!("ns{i}.log")),
            };
            n.start();
            lab_nodes.push(n);
        }
        let lab = Lab {
            nodes: lab_nodes,
            etcd,
            primary,
            secondary,
            hooks,
            record: Arc::default(),
            start: Instant::now(),
            stop: Arc::default(),
            rows: Vec::new(),
            _dir: dir,
            _net: net,
        };
        lab.poll();
        lab.until_all(PRIMARY, Duration::from_secs(30), "the lab answers")
            .await;
        lab
    }

    /// The poller: every node, 10 times a second, into the record.
    fn poll(&self) {
        let addrs: Vec<SocketAddr> = self.nodes.iter().map(Node::dns).collect();
        let (record, stop, start) = (self.record.clone(), self.stop.clone(), self.start);
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let handles: Vec<_> = addrs
                    .iter()
                    .enumerate()
                    .map(|(i, a)| {
                        let a = *a;
                        tokio::spawn(async move {
                            let m = ask(a).await;
                            let answer = m
                                .and_then(|b| hickory_proto::op::Message::from_vec(&b).ok())
                                .map(|m| addrs_of(&m).join(","))
                                .unwrap_or_else(|| "-".into());
                            (i, answer)
                        })
                    })
                    .collect();
                let mut got = Vec::new();
                for h in handles {
                    got.push(h.await.expect("poll task"));
                }
                let t = start.elapsed();
                record
                    .lock()
                    .expect("record")
                    .extend(got.into_iter().map(|(i, a)| (t, i, a)));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Wait until every node answers `want`.
    async fn until_all(&self, want: &str, limit: Duration, what: &str) {
        let from = self.now();
        let deadline = Instant::now() + limit;
        loop {
            if (0..self.nodes.len()).all(|i| self.last(i, from).as_deref() == Some(want)) {
                return;
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self.nodes.iter().map(Node::log_tail).collect();
                panic!(
                    "{what}: not every node answers {want} after {limit:?}; last answers {:?}\n{}",
                    (0..self.nodes.len())
                        .map(|i| self.last(i, from))
                        .collect::<Vec<_>>(),
                    logs.join("\n---\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Node `i`'s last answer recorded after `from`.
    fn last(&self, i: usize, from: Duration) -> Option<String> {
        let r = self.record.lock().expect("record");
        r.iter()
            .rev()
            .find(|(t, n, _)| *n == i && *t >= from)
            .map(|(_, _, a)| a.clone())
    }

    /// The record of `[from, to)`, per node.
    fn window(&self, from: Duration, to: Duration) -> BTreeMap<usize, Vec<(Duration, String)>> {
        let mut out: BTreeMap<usize, Vec<(Duration, String)>> = BTreeMap::new();
        for (t, i, a) in self.record.lock().expect("record").iter() {
            if *t >= from && *t < to {
                out.entry(*i).or_default().push((*t, a.clone()));
            }
        }
        out
    }

    /// Wait until node `i` has a live etcd session again (its status says
    /// `connected`): within a reconnect backoff of etcd coming back.
    async fn until_connected(&self, i: usize) {
        let url = format!("http://{}:9153/api/v1/status", self.nodes[i].ip);
        wait_until(Duration::from_secs(30), "the node rejoins", || {
            let url = url.clone();
            async move {
                get(&url).await.is_some_and(|(code, body)| {
                    code == 200
                        && serde_json::from_str::<serde_json::Value>(&body)
                            .is_ok_and(|v| v["cluster"]["connected"] == true)
                })
            }
        })
        .await;
    }

    /// The moment of a fault: the record's time and the webhooks so far.
    fn mark(&self) -> Mark {
        Mark {
            at: self.now(),
            hooks: self.hooks_now(),
        }
    }

    /// Record for `e.hold` more, then check the window since the fault
    /// (`m`) against the scenario's expectations and print its row:
    /// - every node answers `after` from `m.at + bound[i]` on, and never
    ///   anything else after that;
    /// - before that it answers `before` or `after` only, changing at most
    ///   `changes` times;
    /// - `hooks` webhooks arrived for it.
    async fn judge(&mut self, m: Mark, e: Expect) {
        let Expect {
            name,
            before,
            after,
            bound,
            changes,
            hooks,
            hold,
        } = e;
        let (fault, hooks_before) = (m.at, m.hooks);
        tokio::time::sleep(hold).await;
        let end = self.now();
        let w = self.window(fault, end);
        let mut first_new = Vec::new();
        let mut unanswered = 0;
        for (i, answers) in &w {
            let b = bound[*i];
            // A node that is stopped or paused gives no answer ("-"):
            // counted, not wrong.
            unanswered += answers.iter().filter(|(_, a)| a == "-").count();
            let answers: Vec<(Duration, String)> =
                answers.iter().filter(|(_, a)| a != "-").cloned().collect();
            let wrong: Vec<_> = answers
                .iter()
                .filter(|(t, a)| a != after && (*t >= fault + b || a != before))
                .collect();
            assert!(
                wrong.is_empty(),
                "{name}: node {} answered wrongly (bound {b:?} after the fault at {fault:?}): {wrong:?}\n{}",
                i + 1,
                self.nodes[*i].log_tail()
            );
            let flips = answers.windows(2).filter(|p| p[0].1 != p[1].1).count();
            assert!(
                flips <= changes,
                "{name}: node {} changed its answer {flips} times (at most {changes}): {answers:?}",
                i + 1
            );
            first_new.push(
                answers
                    .iter()
                    .find(|(_, a)| a == after)
                    .map(|(t, _)| *t - fault),
            );
        }
        // Wait for the webhooks of this scenario's transitions, then count.
        let want = hooks_before + hooks;
        wait_until(
            Duration::from_secs(10),
            "the scenario's webhooks",
            || async { self.hooks.1.lock().expect("hooks").len() >= want },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let got = self.hooks.1.lock().expect("hooks").len() - hooks_before;
        assert_eq!(
            got,
            hooks,
            "{name}: webhooks for its transitions: {:?}\n{}",
            &self.hooks.1.lock().expect("hooks")[hooks_before..],
            self.nodes
                .iter()
                .map(Node::log_tail)
                .collect::<Vec<_>>()
                .join("\n---\n")
        );
        let times: Vec<Duration> = first_new.iter().flatten().copied().collect();
        let (lo, hi) = (
            times.iter().min().copied().unwrap_or_default(),
            times.iter().max().copied().unwrap_or_default(),
        );
        let row = format!(
            "| {name} | {} | {} | {} | 0 | {unanswered} | {} |",
            ms(hi.saturating_sub(lo)),
            first_new
                .iter()
                .map(|t| t.map_or("-".into(), ms))
                .collect::<Vec<_>>()
                .join(" / "),
            bound.iter().map(|b| ms(*b)).collect::<Vec<_>>().join(" / "),
            if hooks == 0 {
                "0".to_string()
            } else {
                format!("{got} for {hooks}")
            }
        );
        eprintln!("CHAOS {row}");
        self.rows.push(row);
    }

    /// Stop node `i` and start it again; returns once it is ready.
    async fn restart(&mut self, i: usize) {
        self.nodes[i].stop();
        self.nodes[i].start();
        let ip = self.nodes[i].ip.clone();
        wait_until(Duration::from_secs(15), "the node is back", || {
            let url = format!("http://{ip}:9153/readyz");
            async move { get(&url).await.is_some_and(|(code, _)| code == 200) }
        })
        .await;
    }

    /// POST `path` to node `i`'s admin API; asserts it succeeded.
    async fn post(&self, i: usize, path: &str) {
        let url = format!("http://{}:9153{path}", self.nodes[i].ip);
        let r = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("client")
            .post(&url)
            .header("content-type", "application/json")
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("admin API answers");
        let code = r.status().as_u16();
        let body = r.text().await.unwrap_or_default();
        assert_eq!(code, 200, "POST {url}: {body}");
    }

    /// Rewrite the zone with another probe interval and timeout (the
    /// timeout is part of what a probe sees, so the observations' keys
    /// change too) and reload every node.
    async fn edit_checks(&self, probe: (&str, &str)) {
        std::fs::write(
            self._dir.path().join("zones/z.toml"),
            zone(&self.primary, &self.secondary, &self.hooks.0, probe),
        )
        .expect("zone");
        for i in 0..self.nodes.len() {
            self.post(i, "/api/v1/reload").await;
        }
    }

    /// Write `n` observations of the primary by hand, saying down: keys
    /// with no lease and no node behind them. Returns their keys.
    async fn forge_votes(&self, n: usize) -> Vec<String> {
        let mut c = etcd_client::Client::connect(self.etcd.urls(), None)
            .await
            .expect("etcd client");
        let obs = c
            .get(
                "/gslb/chaos/obs/",
                Some(
                    etcd_client::GetOptions::new()
                        .with_prefix()
                        .with_keys_only(),
                ),
            )
            .await
            .expect("list observations");
        let own = obs
            .kvs()
            .iter()
            .filter_map(|kv| kv.key_str().ok())
            .find(|k| k.contains(&format!("/primary/{PRIMARY}/")))
            .expect("an observation of the primary")
            .to_string();
        let id = &own[..own.rfind('/').expect("node part")];
        let mut keys = Vec::new();
        for j in 0..n {
            let key = format!("{id}/forged{j}");
            c.put(
                key.as_str(),
                r#"{"up":false,"reason":"written by hand","since_ms":1}"#,
                None,
            )
            .await
            .expect("put");
            keys.push(key);
        }
        keys
    }

    fn hooks_now(&self) -> usize {
        self.hooks.1.lock().expect("hooks").len()
    }
}

/// The moment of a fault (see [`Lab::mark`]).
#[derive(Clone, Copy)]
struct Mark {
    at: Duration,
    hooks: usize,
}

/// What a scenario expects of the record from its fault on.
struct Expect {
    name: &'static str,
    before: &'static str,
    after: &'static str,
    /// Per node: from the fault plus this on, only `after`.
    bound: Vec<Duration>,
    /// Answer changes per node at most.
    changes: usize,
    /// Webhooks for the scenario.
    hooks: usize,
    /// How long to record after the fault.
    hold: Duration,
}

impl Expect {
    /// Every node moves from `before` to `after` within detection: one
    /// change each, one webhook.
    fn change(name: &'static str, before: &'static str, after: &'static str) -> Expect {
        Expect {
            name,
            before,
            after,
            bound: vec![DETECT + MARGIN; NODES],
            changes: 1,
            hooks: 1,
            hold: Duration::from_secs(4),
        }
    }

    /// No node's answer changes, no webhook.
    fn steady(name: &'static str, answer: &'static str) -> Expect {
        Expect {
            bound: vec![Duration::ZERO; NODES],
            changes: 0,
            hooks: 0,
            ..Expect::change(name, answer, answer)
        }
    }

    fn bound(mut self, d: Duration) -> Expect {
        self.bound = vec![d; NODES];
        self
    }

    fn bound_for(mut self, node: usize, d: Duration) -> Expect {
        self.bound[node] = d;
        self
    }

    fn hooks(mut self, n: usize) -> Expect {
        self.hooks = n;
        self
    }

    fn hold(mut self, d: Duration) -> Expect {
        self.hold = d;
        self
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // The nodes' logs, kept where CHAOS_LOGS says (bench/chaos.sh).
        if let Some(to) = std::env::var_os("CHAOS_LOGS") {
            let to = PathBuf::from(to);
            let _ = std::fs::create_dir_all(&to);
            for n in &self.nodes {
                if let Some(name) = n.log.file_name() {
                    let _ = std::fs::copy(&n.log, to.join(name));
                }
            }
        }
    }
}

/// One query from the bridge's address (a loopback source cannot reach
/// the namespaces); the reply bytes, or None within 90 ms.
async fn ask(node: SocketAddr) -> Option<Vec<u8>> {
    let sock = tokio::net::UdpSocket::bind((HUB, 0)).await.ok()?;
    let q = request("api.gslb.example.com.", RecordType::A, false)
        .to_vec()
        .expect("encode");
    sock.send_to(&q, node).await.ok()?;
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(Duration::from_millis(90), sock.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

/// GET `url` from the root namespace: (status, body), or None when the node
/// does not answer (stopped, restarting).
async fn get(url: &str) -> Option<(u16, String)> {
    let r = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .ok()?
        .get(url)
        .send()
        .await
        .ok()?;
    let code = r.status().as_u16();
    Some((code, r.text().await.unwrap_or_default()))
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

fn addrs_of(m: &hickory_proto::op::Message) -> Vec<String> {
    addrs(m)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_three_nodes_in_namespaces_three_etcd_members() {
    gslb::install_crypto_provider();
    let mut lab = Lab::start(NODES).await;
    let ns: Vec<String> = lab.nodes.iter().map(|x| x.ns.clone()).collect();

    // 1. The primary killed, then restored.
    let m = lab.mark();
    lab.primary.kill();
    lab.judge(m, Expect::change("primary killed", PRIMARY, SECONDARY))
        .await;
    let m = lab.mark();
    lab.primary.revive().await;
    lab.judge(m, Expect::change("primary restored", SECONDARY, PRIMARY))
        .await;

    // 2. One node cut off from the primary: 1 of 3 fails nothing.
    let m = lab.mark();
    cut(&ns[0], &[PRIMARY]);
    lab.judge(
        m,
        Expect::steady("one node cut off from the primary", PRIMARY),
    )
    .await;
    // 3. A second one: 2 of 3, everyone fails over.
    let m = lab.mark();
    cut(&ns[1], &[PRIMARY]);
    lab.judge(
        m,
        Expect::change("two nodes cut off from the primary", PRIMARY, SECONDARY),
    )
    .await;
    // 3b. A restart while observations are split 2:1 (item 4): neither a
    // node that sees the primary down nor the one that sees it up moves an
    // answer by restarting, itself included from its first answer.
    for (i, name) in [
        (0, "restart while split 2:1, a node that sees it down"),
        (2, "restart while split 2:1, the node that sees it up"),
    ] {
        let m = lab.mark();
        lab.restart(i).await;
        lab.judge(
            m,
            Expect::steady(name, SECONDARY).hold(Duration::from_secs(3)),
        )
        .await;
    }
    let m = lab.mark();
    heal(&ns[0]);
    heal(&ns[1]);
    lab.judge(m, Expect::change("both healed", SECONDARY, PRIMARY))
        .await;

    // 3c. Four observations of the primary written by hand, saying down,
    // with no lease and no node behind them (item 4): no vote, no change.
    let m = lab.mark();
    let forged = lab.forge_votes(4).await;
    lab.judge(
        m,
        Expect::steady("four down votes written by hand", PRIMARY),
    )
    .await;
    let mut c = etcd_client::Client::connect(lab.etcd.urls(), None)
        .await
        .expect("etcd client");
    for k in forged {
        c.delete(k, None).await.expect("delete");
    }

    // 3d. A check edited while its endpoint is down (item 5): a new
    // interval and timeout, reloaded on every node; the timeout is part of
    // what a probe sees, so the observations move to new keys. The dead
    // primary stays out until its new check's own rise.
    let m = lab.mark();
    lab.primary.set(Mode::Failing);
    lab.judge(m, Expect::change("primary failing", PRIMARY, SECONDARY))
        .await;
    let m = lab.mark();
    lab.edit_checks(("600ms", "250ms")).await;
    lab.judge(
        m,
        Expect::steady("its check edited, reloaded on every node", SECONDARY),
    )
    .await;
    let m = lab.mark();
    lab.primary.set(Mode::Healthy);
    lab.judge(
        m,
        Expect::change("primary restored, under the new check", SECONDARY, PRIMARY),
    )
    .await;

    // 4. One node cut off from etcd, then the primary killed: the others
    // follow the cluster; the cut node decides alone after lease-ttl (and,
    // alone, sends its own event: 2 in all); healed, it rejoins with no
    // change of answer.
    cut(&ns[2], &ETCD);
    let m = lab.mark();
    lab.primary.kill();
    lab.judge(
        m,
        Expect::change(
            "one node cut off from etcd, primary killed",
            PRIMARY,
            SECONDARY,
        )
        .bound_for(2, LEASE_TTL + DETECT + MARGIN)
        .hooks(2)
        .hold(Duration::from_secs(5)),
    )
    .await;
    let m = lab.mark();
    heal(&ns[2]);
    // Back in the cluster (a session live): within a reconnect backoff.
    lab.until_connected(2).await;
    lab.judge(m, Expect::steady("it rejoins", SECONDARY)).await;
    let m = lab.mark();
    lab.primary.revive().await;
    lab.judge(m, Expect::change("primary restored", SECONDARY, PRIMARY))
        .await;

    // 5. The etcd leader killed during a failover and a recovery. The
    // bound adds etcd's election (1 to 2 s with its defaults: no write
    // anywhere meanwhile) and a reconnect to the first member with a
    // leader (tens of ms); measured 1.6 to 1.9 s to the new answer.
    let leader = lab.etcd.leader().await;
    let m = lab.mark();
    lab.etcd.kill(leader);
    lab.primary.set(Mode::Failing);
    lab.judge(
        m,
        Expect::change("etcd leader killed during a failover", PRIMARY, SECONDARY)
            .bound(DETECT + MARGIN + Duration::from_secs(3))
            .hold(Duration::from_secs(5)),
    )
    .await;
    let m = lab.mark();
    lab.primary.set(Mode::Healthy);
    lab.judge(
        m,
        Expect::change("recovery with that member dead", SECONDARY, PRIMARY),
    )
    .await;

    // 6. A node paused longer than lease-ttl while the others fail over:
    // no answer while stopped, the cluster's as soon as it runs.
    lab.nodes[2].signal(libc::SIGSTOP);
    let m = lab.mark();
    lab.primary.set(Mode::Failing);
    tokio::time::sleep(LEASE_TTL + Duration::from_secs(1)).await;
    lab.nodes[2].signal(libc::SIGCONT);
    let resumed = lab.now() - m.at;
    lab.judge(
        m,
        Expect::change("a node paused 6 s during a failover", PRIMARY, SECONDARY)
            .bound_for(2, resumed + Duration::from_millis(500)),
    )
    .await;
    let m = lab.mark();
    lab.primary.set(Mode::Healthy);
    lab.judge(m, Expect::change("primary restored", SECONDARY, PRIMARY))
        .await;

    // 7. A rolling restart: no answer changes.
    let m = lab.mark();
    for i in 0..NODES {
        lab.restart(i).await;
    }
    lab.judge(
        m,
        Expect::steady("rolling restart", PRIMARY).hold(Duration::from_secs(2)),
    )
    .await;

    // 8. All of etcd down for 30 s, the primary failing meanwhile: every
    // node keeps the cluster's verdicts for lease-ttl, then decides alone
    // (and, alone, sends its own event: one per node); etcd back, they
    // rejoin with no change of answer.
    let m = lab.mark();
    for i in 0..3 {
        lab.etcd.kill(i);
    }
    lab.primary.set(Mode::Failing);
    lab.judge(
        m,
        Expect::change("all of etcd down, primary failing", PRIMARY, SECONDARY)
            .bound(LEASE_TTL + DETECT + MARGIN)
            .hooks(NODES)
            .hold(LEASE_TTL + Duration::from_secs(3)),
    )
    .await;
    let rest = Duration::from_secs(30).saturating_sub(lab.now() - m.at);
    tokio::time::sleep(rest).await;
    let m = lab.mark();
    lab.etcd.revive_all().await;
    for i in 0..NODES {
        lab.until_connected(i).await;
    }
    lab.judge(
        m,
        Expect::steady("etcd back after 30 s", SECONDARY).hold(Duration::from_secs(2)),
    )
    .await;
    let m = lab.mark();
    lab.primary.set(Mode::Healthy);
    lab.judge(m, Expect::change("primary restored", SECONDARY, PRIMARY))
        .await;

    // 9. etcd rebuilt empty at the same addresses under a drain (item 16):
    // every node notices the new cluster and republishes what it holds, so
    // the drain stands on every node, and an undrain made on another node
    // afterwards reaches them all through the new etcd.
    let m = lab.mark();
    lab.post(0, "/api/v1/regions/_/primary/drain").await;
    lab.judge(m, Expect::change("primary drained", PRIMARY, SECONDARY))
        .await;
    let m = lab.mark();
    lab.etcd.wipe_all().await;
    for i in 0..NODES {
        lab.until_connected(i).await;
    }
    lab.judge(
        m,
        Expect::steady("etcd rebuilt empty under a drain", SECONDARY).hold(Duration::from_secs(2)),
    )
    .await;
    let m = lab.mark();
    lab.post(1, "/api/v1/regions/_/primary/undrain").await;
    lab.judge(
        m,
        Expect::change("undrained on another node, new etcd", SECONDARY, PRIMARY),
    )
    .await;

    // 10. A two-node cluster: a node leaves (no change), then with two
    // live nodes one that sees the primary down changes nothing (a tie
    // holds), both do fail it over, and both healed bring it back.
    let m = lab.mark();
    lab.nodes[2].stop();
    lab.judge(
        m,
        Expect::steady("a node leaves: two live nodes", PRIMARY)
            .hold(LEASE_TTL + Duration::from_secs(1)),
    )
    .await;
    let m = lab.mark();
    cut(&ns[0], &[PRIMARY]);
    lab.judge(
        m,
        Expect::steady("two nodes: one cut off from the primary", PRIMARY),
    )
    .await;
    let m = lab.mark();
    cut(&ns[1], &[PRIMARY]);
    lab.judge(
        m,
        Expect::change(
            "two nodes: both cut off from the primary",
            PRIMARY,
            SECONDARY,
        ),
    )
    .await;
    let m = lab.mark();
    heal(&ns[0]);
    heal(&ns[1]);
    lab.judge(
        m,
        Expect::change("two nodes: both healed", SECONDARY, PRIMARY),
    )
    .await;

    eprintln!(
        "CHAOS | scenario | nodes disagree | time to the new answer per node | bound | wrong answers | no answer (node down or paused) | webhooks |"
    );
    for row in &lab.rows {
        eprintln!("CHAOS {row}");
    }
}
