//! A minimal HTTP health backend for the probe-scale benchmark: answers
//! `200 ok` to every request on one port, for every loopback address
//! (bound to 0.0.0.0, so 127.1.0.1 ... 127.1.39.16 all reach it). It keeps
//! connections open between requests (HTTP/1.1 keep-alive, as nginx and
//! most servers do) unless the request says `Connection: close`.
//!
//! With `--tls CA_PEM`, it speaks HTTPS with a certificate for `bench.test`
//! issued by a CA it makes, and writes that CA to `CA_PEM` for the check's
//! `ca-file`. With `--grpc`, it serves the gRPC health protocol (tonic's
//! health service, SERVING) over h2c instead.
//!
//!     cargo run --release --example bench_backend -- 18090 [--tls ca.pem | --grpc]

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const KEEP: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
const CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = args.get(1).and_then(|p| p.parse().ok()).unwrap_or(18090);
    let tls = match args.iter().position(|a| a == "--tls") {
        Some(i) => Some(tls_acceptor(&args[i + 1])?),
        None => None,
    };
    // A deep accept queue: 10,000 probers connecting within the first
    // second overflowed tokio's default of 1,024 (TcpExtListenOverflows).
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(([0, 0, 0, 0], port).into())?;
    let l = socket.listen(8192)?;
    eprintln!("bench backend on 0.0.0.0:{port}");
    if args.iter().any(|a| a == "--grpc") {
        let (_reporter, health) = tonic_health::server::health_reporter();
        return tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(l))
            .await
            .map_err(std::io::Error::other);
    }
    loop {
        let (s, _) = match l.accept().await {
            Ok(c) => c,
            Err(_) => continue,
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve(s).await,
                Some(acceptor) => {
                    if let Ok(s) = acceptor.accept(s).await {
                        serve(s).await;
                    }
                }
            }
        });
    }
}

/// Answers requests on one connection until the client closes it.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) {
    let mut buf = [0u8; 1024];
    loop {
        let mut seen = 0;
        loop {
            match s.read(&mut buf[seen..]).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen += n,
            }
            if buf[..seen].windows(4).any(|w| w == b"\r\n\r\n") || seen == buf.len() {
                break;
            }
        }
        let head = String::from_utf8_lossy(&buf[..seen]).to_ascii_lowercase();
        let close = head.contains("connection: close");
        if s.write_all(if close { CLOSE } else { KEEP }).await.is_err() || close {
            return;
        }
    }
}

/// A CA (written to `ca_pem`) and a certificate for `bench.test` from it.
fn tls_acceptor(ca_pem: &str) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("key")).expect("CA");
    let key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["bench.test".to_string()])
        .expect("leaf params")
        .signed_by(&key, &*ca)
        .expect("leaf");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], key)
    .expect("server config");
    std::fs::write(ca_pem, ca.pem())?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
