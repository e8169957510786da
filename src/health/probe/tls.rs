//! TLS for HTTPS probes: the rustls configuration of a check, and set-ups
//! admitted a bounded number at a time.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::classify::classify;
use super::{ProbeError, ProbeOutcome};
use crate::model::TlsCheck;

/// At most this many TLS connections are set up at once, process-wide.
///
/// A full HTTPS probe costs about 0.4 ms of CPU, nearly all of it the
/// handshake (bench/probe-scale.sh, KIND=https-fresh). When more set-ups are
/// due than the CPU can do (10,000 HTTPS endpoints starting within a 1 s
/// interval), handshakes that all progress together all finish late and
/// time out, and the next probe starts them again: the work never completes
/// and every endpoint goes down. Admitted a slot at a time, they complete
/// at the CPU's rate. 128 at once finish well inside [`TLS_SETUP_SLOT_HOLD`]
/// even when the CPU is the limit (128 x 0.4 ms on two cores is 26 ms; 51
/// with the backend's side on the same cores, as in the benchmark). Over a
/// real network the slots turn over at least every 100 ms, so at least
/// 1,280 set-ups a second are admitted whatever the round trip.
static TLS_SETUPS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(128);

/// A set-up gives its slot back after this long even if it has not ended, so
/// endpoints that hang in the handshake (a frozen or black-holed region)
/// hold slots for 100 ms, not for a whole timeout: every slot turns over at
/// least every 100 ms, and a healthy endpoint is never queued behind them
/// for long.
const TLS_SETUP_SLOT_HOLD: Duration = Duration::from_millis(100);

/// A TLS session over the connection `tcp` makes, with one of the
/// [`TLS_SETUPS`] slots held meanwhile.
pub(super) async fn connect(
    config: &Arc<ClientConfig>,
    server_name: &ServerName<'static>,
    tcp: impl Future<Output = Result<TcpStream, (ProbeOutcome, String)>>,
) -> Result<TlsStream<TcpStream>, (ProbeOutcome, String)> {
    let setup = async {
        let tcp = tcp.await?;
        TlsConnector::from(config.clone())
            .connect(server_name.clone(), tcp)
            .await
            .map_err(|e| classify(&e, &server_name.to_str()))
    };
    tokio::pin!(setup);
    // A slot is taken before connecting, so that no backend holds a
    // connection whose handshake waits in our queue, and given back when
    // the set-up ends or after TLS_SETUP_SLOT_HOLD, whichever comes first.
    let mut slot = Some(
        TLS_SETUPS
            .acquire()
            .await
            .expect("the TLS set-up semaphore is never closed"),
    );
    tokio::select! {
        done = &mut setup => done,
        () = tokio::time::sleep(TLS_SETUP_SLOT_HOLD) => {
            slot.take();
            setup.await
        }
    }
}

/// The rustls configuration of a check: ring, TLS 1.2 and 1.3, web roots or
/// the check's CA file (or no verification), no session resumption.
pub(super) fn config(check: &str, tls: &TlsCheck) -> Result<ClientConfig, ProbeError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ProbeError::Tls {
            check: check.to_string(),
            source: e,
        })?;
    let mut config = match (tls.verify, &tls.ca) {
        (false, _) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert { algorithms }))
            .with_no_client_auth(),
        (true, Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for (i, cert) in ca.certs.iter().enumerate() {
                roots.add(cert.clone()).map_err(|e| ProbeError::CaCert {
                    check: check.to_string(),
                    path: ca.path.clone(),
                    index: i + 1,
                    source: e,
                })?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        (true, None) => {
            let roots = RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    // A resumed session skips certificate verification: a certificate that
    // expired or was replaced since the last probe must be seen by this one.
    config.resumption = Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// `tls_verify = false`: any certificate for any name is accepted, but the
/// handshake signatures are still checked (they cost nothing and keep the
/// handshake itself honest).
#[derive(Debug)]
struct AcceptAnyCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A readable reason for a failed TLS set-up.
pub(super) fn reason(e: &rustls::Error, server_name: &str) -> String {
    use CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(cert) => match cert {
            C::Expired | C::ExpiredContext { .. } => "TLS: certificate expired".into(),
            C::NotValidYet | C::NotValidYetContext { .. } => {
                "TLS: certificate not valid yet".into()
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                format!("TLS: certificate not valid for name {server_name:?}")
            }
            C::UnknownIssuer => "TLS: unknown issuer".into(),
            C::Revoked => "TLS: certificate revoked".into(),
            C::BadSignature => "TLS: bad certificate signature".into(),
            other => format!("TLS: {other}"),
        },
        other => format!("TLS: {other}"),
    }
}
