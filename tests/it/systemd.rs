//! Socket activation: the real binary given its DNS sockets the way systemd
//! passes them (`LISTEN_FDS`, `LISTEN_PID`, fds from 3), and restarted while
//! a client keeps asking.

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

use crate::support::*;

const ZONE: &str = "[zone]\nname = \"gslb.example.com.\"\nnameservers = [\"ns1.example.net.\"]\nhostmaster = \"hostmaster.example.com.\"\n\n[[record]]\nname = \"www\"\ntype = \"A\"\nvalue = \"192.0.2.1\"\n";

/// `gslb serve` with `udp` as fd 3 and `tcp` as fd 4, as systemd passes a
/// `gslb.socket` with one ListenDatagram and one ListenStream.
fn activated(zones: &std::path::Path, udp: i32, tcp: i32) -> Child {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("export LISTEN_PID=$$ LISTEN_FDS=2; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_gslb"))
        .args(SERVE_QUIET)
        // Never used: the sockets come from the parent.
        .args(["--listen", "127.0.0.1:9"])
        .arg("--zones")
        .arg(zones)
        .stdin(Stdio::null());
    // SAFETY: only dup2, which is async-signal-safe, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(udp, 3) < 0 || libc::dup2(tcp, 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().expect("gslb starts")
}

/// A descriptor of `fd` numbered 100 or above (close-on-exec): dup2 to 3 and
/// 4 in the child must not find its own source there.
fn high(fd: i32) -> i32 {
    let d = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100) };
    assert!(d >= 100, "fcntl: {}", std::io::Error::last_os_error());
    d
}

fn stop(mut c: Child) {
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    let _ = c.wait();
}

// Issue 24 item 12. Fails on the code before it: gslb ignored the sockets
// and bound --listen itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_sockets_from_systemd_loses_no_query() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("z.toml"), ZONE).unwrap();
    // What systemd's gslb.socket holds: the DNS port, UDP and TCP.
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = tcp.local_addr().unwrap();
    let held_udp = std::net::UdpSocket::bind(addr).unwrap();
    let (u, t) = (high(held_udp.as_raw_fd()), high(tcp.as_raw_fd()));
    let mut child = Some(activated(dir.path(), u, t));
    wait_until(
        Duration::from_secs(10),
        "it answers on the passed sockets",
        || async {
            udp_raw(
                addr,
                &request("www.gslb.example.com.", RecordType::A, false)
                    .to_vec()
                    .unwrap(),
                Duration::from_millis(200),
            )
            .await
            .is_some()
        },
    )
    .await;
    let q = tcp_exchange(
        &mut tokio::net::TcpStream::connect(addr).await.unwrap(),
        &request("www.gslb.example.com.", RecordType::A, false),
    )
    .await
    .expect("TCP answer");
    assert_eq!(addrs(&q), ["192.0.2.1"]);

    // A client asking 20 times a second; gslb restarted twice meanwhile.
    let start = Instant::now();
    let (mut asked, mut answered) = (0, 0);
    let mut restarts = 0;
    while start.elapsed() < Duration::from_secs(4) {
        if (restarts == 0 && start.elapsed() > Duration::from_secs(1))
            || (restarts == 1 && start.elapsed() > Duration::from_secs(2))
        {
            stop(child.take().expect("running"));
            child = Some(activated(dir.path(), u, t));
            restarts += 1;
        }
        asked += 1;
        let m = udp(
            addr,
            &request("www.gslb.example.com.", RecordType::A, false),
        )
        .await;
        if m.is_some_and(|m| addrs(&m) == ["192.0.2.1"]) {
            answered += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop(child.take().expect("running"));
    assert_eq!(restarts, 2);
    assert_eq!(
        answered,
        asked,
        "{} of {asked} queries lost across two restarts",
        asked - answered
    );
}

/// Receives one notification within `limit`, as systemd's notify socket does.
fn notification(sock: &std::os::unix::net::UnixDatagram, limit: Duration) -> Option<String> {
    sock.set_read_timeout(Some(limit)).expect("timeout");
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_once_serving_and_stopping_on_sigterm() {
    // `Type=notify`: the real binary with NOTIFY_SOCKET pointing at a
    // datagram socket of the test's, as systemd sets it.
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("z.toml"), ZONE).expect("zone");
    let path = dir.path().join("notify");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).expect("bind notify socket");
    let dns = free_udp_tcp_addr();
    let mut child = serve_command(dns, dir.path())
        .env("NOTIFY_SOCKET", &path)
        .spawn()
        .expect("gslb starts");
    let ready = notification(&sock, Duration::from_secs(30)).expect("a notification");
    let lines: Vec<&str> = ready.lines().collect();
    assert!(lines.contains(&"READY=1"), "{ready:?}");
    assert!(
        lines.contains(&format!("STATUS=serving DNS on {dns}").as_str()),
        "{ready:?}"
    );
    // Ready means answering, with no retry needed.
    let m = udp(dns, &request("www.gslb.example.com.", RecordType::A, true))
        .await
        .expect("an answer as soon as READY=1 is sent");
    assert_eq!(answers(&m), ["www.gslb.example.com. A 192.0.2.1"]);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let stopping = notification(&sock, Duration::from_secs(10)).expect("a notification");
    assert_eq!(stopping.trim(), "STOPPING=1");
    let status = child.wait().expect("exits");
    assert!(status.success(), "{status:?}");
}

#[test]
fn without_notify_socket_nothing_is_sent_and_serving_works() {
    // Outside systemd the same binary starts as before (the other tests of
    // this file and every bench run it so); here only that it does not
    // fail when NOTIFY_SOCKET names nothing that listens.
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("z.toml"), ZONE).expect("zone");
    let dns = free_udp_tcp_addr();
    let child = serve_command(dns, dir.path())
        .env("NOTIFY_SOCKET", dir.path().join("nobody-listens"))
        .spawn()
        .expect("gslb starts");
    let start = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let answered = rt.block_on(async {
        while start.elapsed() < Duration::from_secs(30) {
            if let Some(m) = udp(dns, &request("www.gslb.example.com.", RecordType::A, true)).await
            {
                return Some(m);
            }
        }
        None
    });
    assert!(answered.is_some(), "serves although systemd cannot be told");
    stop(child);
}

#[test]
fn the_shipped_settings_file_is_what_the_unit_expects() {
    // docker/systemd/gslb.toml loads with gslb's own loader, and agrees
    // with gslb.service: state in its StateDirectory, zones in its
    // ConfigurationDirectory, and the admin API where ExecReload's
    // `gslb reload` looks by default.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let file = gslb::config::server::ServerFile::load(&root.join("docker/systemd/gslb.toml"))
        .unwrap_or_else(|e| panic!("the shipped gslb.toml loads: {e:?}"));
    assert_eq!(
        file.zones.as_deref(),
        Some(std::path::Path::new("/etc/gslb/zones"))
    );
    assert_eq!(file.state_file.as_deref(), Some("/var/lib/gslb/state.json"));
    assert_eq!(file.admin.as_deref(), Some("127.0.0.1:9153"));
    let unit = std::fs::read_to_string(root.join("docker/systemd/gslb.service")).expect("unit");
    for line in [
        "Type=notify",
        "ExecStart=/usr/local/bin/gslb serve --config /etc/gslb/gslb.toml",
        "ExecReload=/usr/local/bin/gslb reload",
        "StateDirectory=gslb",
        "ConfigurationDirectory=gslb",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "gslb.service lacks {line:?}"
        );
    }
    // The CLI's default admin address is the one the file sets.
    let help = Command::new(env!("CARGO_BIN_EXE_gslb"))
        .args(["reload", "--help"])
        .env_remove("GSLB_ADMIN")
        .output()
        .expect("gslb runs");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("[default: 127.0.0.1:9153]"), "{help}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dual_stack_socket_from_systemd_answers_ipv4_from_the_address_asked() {
    // BindIPv6Only=both: one [::] socket for IPv4 too. An IPv4 query to
    // 127.0.0.2 must be answered from 127.0.0.2, not 127.0.0.1. Linux
    // gives the IPv6 packet info of such a query as a v4-mapped address
    // and takes it back on the IPv4 sending path, so IPV6_RECVPKTINFO
    // alone covers it (checked: without packet info the answer came from
    // 127.0.0.1).
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("z.toml"), ZONE).expect("zone");
    let udp = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::DGRAM, None).unwrap();
    udp.set_only_v6(false).unwrap();
    udp.bind(&"[::]:0".parse::<std::net::SocketAddr>().unwrap().into())
        .unwrap();
    let port = udp.local_addr().unwrap().as_socket().unwrap().port();
    let tcp = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let (u, t) = (high(udp.as_raw_fd()), high(tcp.as_raw_fd()));
    let child = activated(dir.path(), u, t);
    let asked: std::net::SocketAddr = format!("127.0.0.2:{port}").parse().unwrap();
    let req = request("www.gslb.example.com.", RecordType::A, false)
        .to_vec()
        .unwrap();
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buf = [0u8; 1500];
    // Until it serves (it starts in the background), each try waits 200 ms.
    let mut from = None;
    let start = Instant::now();
    while from.is_none() && start.elapsed() < Duration::from_secs(10) {
        sock.send_to(&req, asked).await.unwrap();
        if let Ok(Ok((_, f))) =
            tokio::time::timeout(Duration::from_millis(200), sock.recv_from(&mut buf)).await
        {
            from = Some(f);
        }
    }
    stop(child);
    assert_eq!(from, Some(asked), "the answer's source");
}
