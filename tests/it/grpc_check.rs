//! `type = "grpc"` checks (issue 23 item 3) against tonic-health's server on
//! loopback, over h2c and TLS: SERVING and NOT_SERVING as the server
//! switches, an unknown service, a server that is killed, one that accepts
//! and never speaks, certificates that do and do not match; and a failover
//! driven by the health status.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use gslb::health::ProbeOutcome;
use gslb::health::probe::{CheckProber, ProbeResult};
use gslb::model::{CaFile, Check, CheckKind, GrpcCheck, TlsCheck};
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
use tokio::net::TcpListener;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::support::*;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn grpc_check(port: u16, service: &str, tls: Option<TlsCheck>, host: Option<&str>) -> Check {
    Check {
        name: "grpc".into(),
        kind: CheckKind::Grpc(Box::new(GrpcCheck {
            service: service.into(),
            tls,
            host: host.map(str::to_string),
        })),
        port,
        target: None,
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(800),
        recheck: None,
        fall: 1,
        rise: 1,
        probers: None,
    }
}

async fn probe_with(prober: &CheckProber) -> ProbeResult {
    probe_once(prober, LOCALHOST).await
}

/// tonic-health's server on 127.0.0.1:0, over TLS when given an identity.
/// Returns its address, its reporter and the task serving it.
async fn health_server(
    tls: Option<Identity>,
) -> (SocketAddr, HealthReporter, tokio::task::JoinHandle<()>) {
    let (reporter, service) = tonic_health::server::health_reporter();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let mut builder = Server::builder();
    if let Some(id) = tls {
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(id))
            .unwrap();
    }
    let task = tokio::spawn(async move {
        let _ = builder
            .add_service(service)
            .serve_with_incoming(incoming)
            .await;
    });
    (addr, reporter, task)
}

#[tokio::test]
async fn serving_status_decides_and_the_connection_is_kept() {
    // The server runs in a runtime of its own, so that killing it (shutting
    // the runtime down) closes its connections as a killed process would.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (addr, reporter, _task) = rt.spawn(async { health_server(None).await }).await.unwrap();
    reporter
        .set_service_status("app", ServingStatus::Serving)
        .await;
    let whole = CheckProber::new(Arc::new(grpc_check(addr.port(), "", None, None))).unwrap();
    assert_outcome(
        &probe_with(&whole).await,
        ProbeOutcome::Success,
        "ok (SERVING)",
    );
    let app = CheckProber::new(Arc::new(grpc_check(addr.port(), "app", None, None))).unwrap();
    let endpoint = app.for_endpoint(LOCALHOST).unwrap();
    assert_outcome(
        &endpoint.probe().await,
        ProbeOutcome::Success,
        "ok (SERVING)",
    );
    reporter
        .set_service_status("app", ServingStatus::NotServing)
        .await;
    assert_outcome(&endpoint.probe().await, ProbeOutcome::Status, "NOT_SERVING");
    reporter
        .set_service_status("app", ServingStatus::Serving)
        .await;
    assert_outcome(
        &endpoint.probe().await,
        ProbeOutcome::Success,
        "ok (SERVING)",
    );
    let unknown = CheckProber::new(Arc::new(grpc_check(addr.port(), "nope", None, None))).unwrap();
    assert_outcome(
        &probe_with(&unknown).await,
        ProbeOutcome::Status,
        "service \"nope\" unknown to the server (NOT_FOUND)",
    );
    // The server is killed: the kept channel's next call fails.
    rt.shutdown_background();
    let r = endpoint.probe().await;
    eprintln!("killed: {r:?}");
    assert!(
        matches!(r.outcome, ProbeOutcome::Refused | ProbeOutcome::Reset),
        "{r:?}"
    );
}

#[tokio::test]
async fn a_server_that_never_speaks_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let p = CheckProber::new(Arc::new(grpc_check(port, "", None, None))).unwrap();
    assert_outcome(
        &probe_with(&p).await,
        ProbeOutcome::Timeout,
        "timeout after 800ms",
    );
}

#[tokio::test]
async fn over_tls_the_certificate_is_checked_as_for_https() {
    let ca = test_ca_issuer("gslb grpc test CA");
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["grpc.test".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "grpc.test");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &ca).unwrap();
    let (addr, _reporter, _task) =
        health_server(Some(Identity::from_pem(cert.pem(), key.serialize_pem()))).await;
    let trust = |verify: bool| TlsCheck {
        verify,
        ca: Some(CaFile {
            path: "ca.pem".into(),
            certs: vec![ca.der().clone()],
        }),
        ..TlsCheck::default()
    };
    let ok = CheckProber::new(Arc::new(grpc_check(
        addr.port(),
        "",
        Some(trust(true)),
        Some("grpc.test"),
    )))
    .unwrap();
    assert_outcome(
        &probe_with(&ok).await,
        ProbeOutcome::Success,
        "ok (SERVING)",
    );
    let wrong = CheckProber::new(Arc::new(grpc_check(
        addr.port(),
        "",
        Some(trust(true)),
        Some("other.test"),
    )))
    .unwrap();
    let r = probe_with(&wrong).await;
    assert_eq!(r.outcome, ProbeOutcome::Tls, "{r:?}");
    let any = CheckProber::new(Arc::new(grpc_check(
        addr.port(),
        "",
        Some(trust(false)),
        Some("other.test"),
    )))
    .unwrap();
    assert_outcome(
        &probe_with(&any).await,
        ProbeOutcome::Success,
        "ok (SERVING)",
    );
    // Plain HTTP/2 to a TLS server is no health answer.
    let plain = CheckProber::new(Arc::new(grpc_check(addr.port(), "", None, None))).unwrap();
    let r = probe_with(&plain).await;
    assert_ne!(r.outcome, ProbeOutcome::Success, "{r:?}");
}

/// Over TLS the leaf certificate's expiry is reported, and `fail-expiry`
/// fails a SERVING endpoint whose certificate expires within it.
#[tokio::test]
async fn over_tls_the_certificate_expiry_is_reported_and_can_fail() {
    let ca = test_ca_issuer("gslb grpc test CA");
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["grpc.test".to_string()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let day = Duration::from_secs(86_400);
    let not_after = std::time::SystemTime::now() + 2 * day;
    params.not_after = not_after.into();
    let cert = params.signed_by(&key, &ca).unwrap();
    let (addr, _reporter, _task) =
        health_server(Some(Identity::from_pem(cert.pem(), key.serialize_pem()))).await;
    let tls = |fail_expiry| TlsCheck {
        ca: Some(CaFile {
            path: "ca.pem".into(),
            certs: vec![ca.der().clone()],
        }),
        fail_expiry,
        ..TlsCheck::default()
    };
    let near = |t: Option<std::time::SystemTime>| {
        let t = t.expect("expiry reported");
        let off = t.duration_since(not_after).unwrap_or_else(|e| e.duration());
        assert!(off < Duration::from_secs(2), "{t:?} vs {not_after:?}");
    };
    let check = |fail| {
        CheckProber::new(Arc::new(grpc_check(
            addr.port(),
            "",
            Some(tls(fail)),
            Some("grpc.test"),
        )))
        .unwrap()
    };
    let r = probe_with(&check(None)).await;
    assert_outcome(&r, ProbeOutcome::Success, "ok (SERVING)");
    near(r.certificate_expiry);
    let r = probe_with(&check(Some(3 * day))).await;
    assert_eq!(r.outcome, ProbeOutcome::Tls, "{r:?}");
    assert!(
        r.reason.starts_with("certificate expires in 1day 23h")
            && r.reason.ends_with("(fail-expiry 3days)"),
        "{r:?}"
    );
    near(r.certificate_expiry);
    // Plain gRPC has no certificate to report.
    let (plain, _r2, _t2) = health_server(None).await;
    let r =
        probe_with(&CheckProber::new(Arc::new(grpc_check(plain.port(), "", None, None))).unwrap())
            .await;
    assert_outcome(&r, ProbeOutcome::Success, "ok (SERVING)");
    assert_eq!(r.certificate_expiry, None);
}

/// A region checked over gRPC fails over when its service stops serving,
/// and comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_checked_by_grpc_fails_over_and_back() {
    let (addr, reporter, _task) = health_server(None).await;
    reporter
        .set_service_status("app", ServingStatus::Serving)
        .await;
    let zone = failover_zone(&format!(
        "type = \"grpc\"\nport = {}\nservice = \"app\"\ninterval = \"100ms\"\ntimeout = \"90ms\"\nfall = 1\nrise = 1",
        addr.port()
    ));
    let ts = TestServer::start(&[("z.toml", &zone)]).await;
    wait_for_api(ts.dns, "127.0.0.1", "primary answered").await;
    reporter
        .set_service_status("app", ServingStatus::NotServing)
        .await;
    wait_for_api(ts.dns, "127.0.0.2", "failed over").await;
    reporter
        .set_service_status("app", ServingStatus::Serving)
        .await;
    wait_for_api(ts.dns, "127.0.0.1", "back on the primary").await;
}
