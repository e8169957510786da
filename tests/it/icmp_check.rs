//! `type = "icmp"` checks (issue 23 item 5): echo to loopback (IPv4 and
//! IPv6, many endpoints at once over the check's one socket), and to an
//! address in a network namespace this test makes and then cuts off.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use gslb::health::ProbeOutcome;
use gslb::health::probe::{CheckProber, ProbeResult};
use gslb::model::{Check, CheckKind};

use crate::support::*;

fn icmp_check() -> Check {
    quick_check(CheckKind::Icmp, 0, Duration::from_millis(500))
}

async fn probe(prober: &CheckProber, addr: IpAddr) -> ProbeResult {
    probe_once(prober, addr).await
}

/// Load these nftables rules in namespace `ns`.
fn nft(ns: &str, rules: &str) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(rules.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "nft {rules}");
}

/// A namespace at the end of a veth: the host is 10.251.X.1, the
/// namespace 10.251.X.2. Removed on drop.
struct Far {
    ns: String,
    host: String,
}

impl Far {
    fn new() -> Far {
        let x = std::process::id() % 250 + 1;
        let far = Far {
            ns: format!("gslbicmp{x}"),
            host: format!("gslbicmp{x}h"),
        };
        let _ = Command::new("ip").args(["netns", "del", &far.ns]).status();
        let _ = Command::new("ip").args(["link", "del", &far.host]).status();
        let peer = format!("gslbicmp{x}p");
        run("ip", &["netns", "add", &far.ns]);
        run(
            "ip",
            &[
                "link", "add", &far.host, "type", "veth", "peer", "name", &peer,
            ],
        );
        run("ip", &["link", "set", &peer, "netns", &far.ns]);
        run(
            "ip",
            &["addr", "add", &format!("10.251.{x}.1/30"), "dev", &far.host],
        );
        run("ip", &["link", "set", &far.host, "up"]);
        for args in [
            vec![
                "ip",
                "addr",
                "add",
                &format!("10.251.{x}.2/30"),
                "dev",
                &peer,
            ],
            vec!["ip", "link", "set", &peer, "up"],
            vec!["ip", "link", "set", "lo", "up"],
        ] {
            let mut a = vec!["netns", "exec", &far.ns];
            a.extend(args.iter().copied());
            run("ip", &a);
        }
        far
    }

    fn addr(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(
            10,
            251,
            (std::process::id() % 250 + 1) as u8,
            2,
        ))
    }

    /// Drop every ICMP packet in the namespace (or stop dropping).
    fn cut(&self, cut: bool) {
        if cut {
            nft(
                &self.ns,
                "add table inet cut\nadd chain inet cut in { type filter hook input priority 0; policy accept; }\nadd rule inet cut in meta l4proto icmp drop\n",
            );
        } else {
            nft(&self.ns, "delete table inet cut\n");
        }
    }
}

impl Drop for Far {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host])
            .status();
    }
}

#[tokio::test]
async fn loopback_answers_over_v4_and_v6_and_many_share_one_socket() {
    let prober = CheckProber::new(Arc::new(icmp_check())).unwrap();
    let r = probe(&prober, IpAddr::V4(Ipv4Addr::LOCALHOST)).await;
    assert_eq!(r.outcome, ProbeOutcome::Success, "{r:?}");
    assert!(
        r.reason.starts_with("ok (") && r.reason.ends_with(" ms)"),
        "{r:?}"
    );
    let r = probe(&prober, IpAddr::V6(Ipv6Addr::LOCALHOST)).await;
    assert_eq!(r.outcome, ProbeOutcome::Success, "{r:?}");
    // Forty endpoints at once: every reply reaches its own probe.
    let mut all = tokio::task::JoinSet::new();
    for i in 1..=40u8 {
        let prober = prober.clone();
        all.spawn(async move { probe(&prober, IpAddr::V4(Ipv4Addr::new(127, 0, 1, i))).await });
    }
    while let Some(r) = all.join_next().await {
        let r = r.unwrap();
        assert_eq!(r.outcome, ProbeOutcome::Success, "{r:?}");
    }
}

#[tokio::test]
async fn an_address_cut_off_times_out_and_comes_back() {
    let far = Far::new();
    let prober = CheckProber::new(Arc::new(icmp_check())).unwrap();
    let r = probe(&prober, far.addr()).await;
    assert_eq!(r.outcome, ProbeOutcome::Success, "{r:?}");
    far.cut(true);
    let r = probe(&prober, far.addr()).await;
    assert_eq!(
        (r.outcome, r.reason.as_str()),
        (ProbeOutcome::Timeout, "timeout after 500ms")
    );
    far.cut(false);
    let r = probe(&prober, far.addr()).await;
    assert_eq!(r.outcome, ProbeOutcome::Success, "{r:?}");
}

/// A zone with an icmp check loads and its region is up.
#[tokio::test]
async fn a_region_checked_by_icmp_is_served() {
    let zone = failover_zone(
        "type = \"icmp\"\ninterval = \"200ms\"\ntimeout = \"150ms\"\nfall = 1\nrise = 1",
    );
    let ts = TestServer::start(&[("z.toml", &zone)]).await;
    wait_for_api(ts.dns, "127.0.0.1", "primary answered").await;
}

/// Where the system allows unprivileged ping sockets, gslb uses one, not a
/// raw socket: the binary runs in a namespace of its own whose
/// ping_group_range takes every group, and checks its loopback.
#[tokio::test]
async fn an_unprivileged_ping_socket_is_used_where_the_system_allows_it() {
    let ns = format!("gslbping{}", std::process::id() % 250);
    let _ = Command::new("ip")
        .args(["netns", "del", &ns])
        .stderr(std::process::Stdio::null())
        .status();
    run("ip", &["netns", "add", &ns]);
    struct Gone(String, Option<std::process::Child>);
    impl Drop for Gone {
        fn drop(&mut self) {
            if let Some(c) = &mut self.1 {
                let _ = c.kill();
                let _ = c.wait();
            }
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    let mut guard = Gone(ns.clone(), None);
    let inside = |args: &[&str]| {
        let mut a = vec!["netns", "exec", ns.as_str()];
        a.extend_from_slice(args);
        run("ip", &a);
    };
    inside(&["ip", "link", "set", "lo", "up"]);
    inside(&[
        "sysctl",
        "-q",
        "-w",
        "net.ipv4.ping_group_range=0 2147483647",
    ]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("z.toml"),
        format!(
            "{ZONE}\n[check.ping]\ntype = \"icmp\"\ninterval = \"200ms\"\ntimeout = \"150ms\"\nfall = 1\nrise = 1\n\n[region.primary]\nendpoints = [\"127.0.0.1\"]\ncheck = \"ping\"\n\n[region.secondary]\nendpoints = [\"127.0.0.2\"]\n\n[service.api]\nregions = [\"primary\", \"secondary\"]\n"
        ),
    )
    .unwrap();
    let log = dir.path().join("gslb.log");
    guard.1 = Some(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                env!("CARGO_BIN_EXE_gslb"),
                "serve",
                "--admin",
                "off",
                "--state-file",
                "off",
                "--log-level",
                "info",
                "--listen",
                "127.0.0.1:5353",
                "--zones",
            ])
            .arg(dir.path())
            .stderr(std::fs::File::create(&log).unwrap())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("gslb serve starts in the namespace"),
    );
    let answer = |ns: &str| {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "dig",
                "+short",
                "+time=1",
                "+tries=1",
                "@127.0.0.1",
                "-p",
                "5353",
                "api.gslb.example.com",
                "A",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    wait_until(Duration::from_secs(10), "the primary answered", || {
        let a = answer(&ns);
        async move { a == "127.0.0.1" }
    })
    .await;
    // Echo replies dropped: the ping socket's probes fail, then pass again.
    nft(
        &ns,
        "add table inet cut\nadd chain inet cut in { type filter hook input priority 0; policy accept; }\nadd rule inet cut in icmp type echo-reply drop\n",
    );
    wait_until(Duration::from_secs(10), "failed over", || {
        let a = answer(&ns);
        async move { a == "127.0.0.2" }
    })
    .await;
    nft(&ns, "delete table inet cut\n");
    wait_until(Duration::from_secs(10), "back on the primary", || {
        let a = answer(&ns);
        async move { a == "127.0.0.1" }
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("ICMP socket open"))
        .unwrap_or_else(|| panic!("no socket line in:\n{text}"));
    assert!(line.contains("ping") && !line.contains("raw"), "{line}");
}
