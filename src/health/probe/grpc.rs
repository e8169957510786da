//! The `grpc` kind: `grpc.health.v1.Health/Check` over HTTP/2, plain or
//! over TLS (the rustls configuration of https checks, ALPN `h2`), with
//! tonic-health's client. An endpoint keeps its channel, and with it its
//! connection, from probe to probe, as HTTP checks keep theirs; the channel
//! connects again by itself after the backend closed it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::OnceCell;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::classify::classify;
use super::{EndpointProber, ProbeError, ProbeOutcome};
use crate::model::GrpcCheck;

/// What every endpoint of a grpc check shares.
#[derive(Debug)]
pub(super) struct Parts {
    spec: GrpcCheck,
    tls: Option<Arc<ClientConfig>>,
}

impl Parts {
    pub(super) fn new(check: &str, spec: &GrpcCheck) -> Result<Parts, ProbeError> {
        let tls = match &spec.tls {
            None => None,
            Some(t) => {
                let mut config = super::tls::config(check, t)?;
                config.alpn_protocols = vec![b"h2".to_vec()];
                Some(Arc::new(config))
            }
        };
        Ok(Parts {
            spec: spec.clone(),
            tls,
        })
    }
}

/// One endpoint's channel, made at its first probe (it needs the runtime).
#[derive(Debug, Default)]
pub(super) struct Target {
    channel: OnceCell<Channel>,
    /// The leaf certificate of the channel's last TLS handshake (its
    /// connector sets it).
    pub(super) certificate: Arc<super::CertSeen>,
}

async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let stream = super::connect_from(addr, source).await?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

impl EndpointProber {
    fn grpc_channel(&self, parts: &Parts, target: &Target) -> Channel {
        let (addr, source) = (self.addr, self.source);
        let authority = parts.spec.host.clone().unwrap_or_else(|| match addr.ip() {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        });
        // Our connector does the TCP and TLS: the URI only names the
        // authority the requests carry.
        let endpoint = Endpoint::from_shared(format!("http://{authority}:{}", addr.port()))
            .unwrap_or_else(|_| Endpoint::from_static("http://gslb.invalid"));
        match &parts.tls {
            None => endpoint.connect_with_connector_lazy(tower::service_fn(move |_| async move {
                connect(addr, source).await.map(TokioIo::new)
            })),
            Some(config) => {
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                let name = parts
                    .spec
                    .host
                    .as_deref()
                    .and_then(|h| ServerName::try_from(h.to_string()).ok())
                    .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
                let seen = target.certificate.clone();
                endpoint.connect_with_connector_lazy(tower::service_fn(move |_| {
                    let (connector, name, seen) = (connector.clone(), name.clone(), seen.clone());
                    async move {
                        let tcp = connect(addr, source).await?;
                        let tls = connector.connect(name, tcp).await?;
                        seen.set(super::tls::leaf_not_after(tls.get_ref().1));
                        Ok::<_, std::io::Error>(TokioIo::new(tls))
                    }
                }))
            }
        }
    }

    /// One health check call on the endpoint's channel.
    pub(super) async fn grpc(&self, parts: &Parts, target: &Target) -> (ProbeOutcome, String) {
        let channel = target
            .channel
            .get_or_init(|| async { self.grpc_channel(parts, target) })
            .await
            .clone();
        let mut client = HealthClient::new(channel);
        let request = HealthCheckRequest {
            service: parts.spec.service.clone(),
        };
        match client.check(request).await {
            Ok(r) => match ServingStatus::try_from(r.into_inner().status) {
                Ok(ServingStatus::Serving) => (ProbeOutcome::Success, "ok (SERVING)".into()),
                Ok(s) => (ProbeOutcome::Status, s.as_str_name().to_string()),
                Err(_) => (ProbeOutcome::Protocol, "unknown serving status".into()),
            },
            Err(status) => self.grpc_error(parts, &status),
        }
    }

    fn grpc_error(&self, parts: &Parts, status: &tonic::Status) -> (ProbeOutcome, String) {
        use tonic::Code;
        match status.code() {
            Code::NotFound => (
                ProbeOutcome::Status,
                format!(
                    "service {:?} unknown to the server (NOT_FOUND)",
                    parts.spec.service
                ),
            ),
            Code::Unimplemented => (
                ProbeOutcome::Protocol,
                "the server has no grpc.health.v1 Health service (UNIMPLEMENTED)".into(),
            ),
            // Connection and TLS errors are in the source chain.
            _ if std::error::Error::source(status).is_some() => {
                let name = parts
                    .spec
                    .host
                    .clone()
                    .unwrap_or_else(|| self.addr.ip().to_string());
                classify(status, &name)
            }
            code => (
                ProbeOutcome::Protocol,
                format!("{code:?}: {}", status.message()),
            ),
        }
    }
}
