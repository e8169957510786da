//! TLS for HTTPS probes: the rustls configuration of a check, and set-ups
//! admitted a bounded number at a time.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

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

/// When the leaf certificate the server presented on `conn` expires
/// (its notAfter), if it sent one that parses.
pub(super) fn leaf_not_after(conn: &rustls::ClientConnection) -> Option<SystemTime> {
    let leaf = conn.peer_certificates()?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    let secs = cert.validity().not_after.timestamp();
    let secs = u64::try_from(secs).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
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

/// A readable reason for a failed TLS set-up, for every rustls error: the
/// errors rustls prints as Rust values (`peer misbehaved: ...`, certificate
/// errors such as `Other(OtherError(CaUsedAsEndEntity))`) get words.
pub(super) fn reason(e: &rustls::Error, server_name: &str) -> String {
    use rustls::Error as E;
    let why = match e {
        E::InvalidCertificate(cert) => certificate(cert, server_name),
        E::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => {
            "the server does not speak TLS (its reply is no TLS record)".into()
        }
        E::InvalidMessage(m) => format!(
            "malformed message from the server ({})",
            words(&format!("{m:?}"))
        ),
        E::AlertReceived(alert) => alert_reason(*alert, server_name),
        E::PeerIncompatible(p) => incompatible(p),
        E::PeerMisbehaved(p) => format!(
            "the server broke the TLS protocol ({})",
            words(&format!("{p:?}"))
        ),
        E::InappropriateMessage {
            expect_types,
            got_type,
        } => format!(
            "unexpected message from the server ({} instead of {})",
            words(&format!("{got_type:?}")),
            any_of(expect_types)
        ),
        E::InappropriateHandshakeMessage {
            expect_types,
            got_type,
        } => format!(
            "unexpected handshake message from the server ({} instead of {})",
            words(&format!("{got_type:?}")),
            any_of(expect_types)
        ),
        E::NoCertificatesPresented => "the server sent no certificate".into(),
        E::UnsupportedNameType => "the server name's type is not supported".into(),
        E::InvalidCertRevocationList(crl) => format!(
            "invalid certificate revocation list ({})",
            match crl {
                rustls::CertRevocationListError::Other(o) => other(o),
                crl => words(&format!("{crl:?}")),
            }
        ),
        E::InvalidEncryptedClientHello(ech) => format!(
            "encrypted client hello failed ({})",
            words(&format!("{ech:?}"))
        ),
        E::PeerSentOversizedRecord => "the server sent an oversized record".into(),
        E::NoApplicationProtocol => {
            "the server accepts none of our application protocols (ALPN http/1.1)".into()
        }
        E::FailedToGetCurrentTime => "cannot read the clock to check certificates".into(),
        E::FailedToGetRandomBytes => "no random numbers available".into(),
        E::HandshakeNotComplete => "handshake not complete".into(),
        E::BadMaxFragmentSize => "bad maximum fragment size".into(),
        E::InconsistentKeys(_) => "the certificate and its private key do not match".into(),
        E::Other(o) => other(o),
        // rustls's own words are readable for the rest: decrypt and
        // encrypt errors, `General`.
        other => other.to_string(),
    };
    format!("TLS: {why}")
}

/// What is wrong with the server's certificate.
fn certificate(cert: &CertificateError, server_name: &str) -> String {
    use CertificateError as C;
    #[allow(deprecated)] // UnsupportedSignatureAlgorithm: still produced by older verifiers
    match cert {
        C::Expired | C::ExpiredContext { .. } => "certificate expired".into(),
        C::NotValidYet | C::NotValidYetContext { .. } => "certificate not valid yet".into(),
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            format!("certificate not valid for name {server_name:?}")
        }
        C::UnknownIssuer => "unknown issuer".into(),
        C::Revoked => "certificate revoked".into(),
        C::BadSignature => "bad certificate signature".into(),
        C::BadEncoding => "certificate malformed (bad encoding)".into(),
        C::UnhandledCriticalExtension => "certificate has an unsupported critical extension".into(),
        C::UnknownRevocationStatus => "certificate revocation status unknown".into(),
        C::ExpiredRevocationList | C::ExpiredRevocationListContext { .. } => {
            "certificate revocation list expired".into()
        }
        C::UnsupportedSignatureAlgorithm | C::UnsupportedSignatureAlgorithmContext { .. } => {
            "certificate signed with an unsupported algorithm".into()
        }
        C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
            "certificate signature algorithm does not fit the issuer's key".into()
        }
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
            "certificate not valid for a TLS server (extended key usage)".into()
        }
        C::InvalidOcspResponse => "invalid OCSP response".into(),
        C::ApplicationVerificationFailure => "certificate rejected by the verifier".into(),
        C::Other(o) => other(o),
        other => words(&format!("{other:?}")),
    }
}

/// An error rustls passes on as it got it: from webpki (most certificate
/// errors rustls has no variant for), or anything else by its message.
fn other(o: &rustls::OtherError) -> String {
    match o.0.downcast_ref::<webpki::Error>() {
        Some(e) => webpki_reason(e),
        None => o.0.to_string(),
    }
}

/// webpki's errors print as their variant names (`CaUsedAsEndEntity`).
fn webpki_reason(e: &webpki::Error) -> String {
    use webpki::Error as W;
    #[allow(deprecated)] // RequiredEkuNotFound: older webpki versions
    let s = match e {
        W::CaUsedAsEndEntity => {
            "certificate is a CA certificate, not a server's (CA used as end entity)"
        }
        W::EndEntityUsedAsCa => "a server (end-entity) certificate signs another in the chain",
        W::CertDistrusted => "certificate distrusted",
        W::CertExpired { .. } | W::InvalidCertValidity => "certificate expired",
        W::CertNotValidYet { .. } => "certificate not valid yet",
        W::CertNotValidForName(_) => "certificate not valid for the name",
        W::CertRevoked => "certificate revoked",
        W::UnknownIssuer => "unknown issuer",
        W::UnknownRevocationStatus => "certificate revocation status unknown",
        W::BadDer | W::BadDerTime | W::TrailingData(_) => "certificate malformed (bad encoding)",
        W::EmptyEkuExtension => "certificate has an empty extended key usage",
        W::RequiredEkuNotFound | W::RequiredEkuNotFoundContext(_) => {
            "certificate not valid for a TLS server (extended key usage)"
        }
        W::ExtensionValueInvalid => "certificate has an invalid extension",
        W::MalformedExtensions => "certificate has malformed extensions",
        W::UnsupportedCriticalExtension => "certificate has an unsupported critical extension",
        W::UnsupportedCertVersion => "certificate is not X.509 version 3",
        W::InvalidSerialNumber => "certificate has an invalid serial number",
        W::MalformedDnsIdentifier => "certificate has a malformed DNS name",
        W::UnsupportedNameType => "certificate has a name of an unsupported type",
        W::MalformedNameConstraint | W::InvalidNetworkMaskConstraint => {
            "certificate chain has a malformed name constraint"
        }
        W::NameConstraintViolation => "certificate violates a name constraint of its issuer",
        W::PathLenConstraintViolated => "certificate chain longer than an issuer allows",
        W::MaximumPathDepthExceeded => "certificate chain too long",
        W::MaximumNameConstraintComparisonsExceeded
        | W::MaximumPathBuildCallsExceeded
        | W::MaximumSignatureChecksExceeded => "certificate chain too complex to verify",
        W::InvalidSignatureForPublicKey => "bad certificate signature",
        W::SignatureAlgorithmMismatch
        | W::UnsupportedSignatureAlgorithmForPublicKey
        | W::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
            "certificate signature algorithm does not fit the issuer's key"
        }
        W::UnsupportedSignatureAlgorithm | W::UnsupportedSignatureAlgorithmContext(_) => {
            "certificate signed with an unsupported algorithm"
        }
        W::CrlExpired { .. } => "certificate revocation list expired",
        // The rest are about revocation lists, which probes do not use.
        other => return format!("certificate rejected ({})", words(&format!("{other:?}"))),
    };
    s.to_string()
}

/// A fatal alert from the server: what it most likely means.
fn alert_reason(alert: rustls::AlertDescription, server_name: &str) -> String {
    use rustls::AlertDescription as A;
    let name = words(&format!("{alert:?}"));
    match alert {
        A::HandshakeFailure => {
            format!(
                "the server refused the handshake (alert {name}: no cipher suite or version in common?)"
            )
        }
        A::ProtocolVersion => {
            format!("the server accepts none of our TLS versions, 1.2 and 1.3 (alert {name})")
        }
        A::UnrecognisedName => {
            format!("the server does not serve the name {server_name:?} (alert {name})")
        }
        A::CertificateRequired => {
            format!("the server requires a client certificate (alert {name})")
        }
        A::InternalError => format!("the server failed (alert {name})"),
        _ => format!("the server sent the alert {name}"),
    }
}

/// The server and we share no way to talk.
fn incompatible(p: &rustls::PeerIncompatible) -> String {
    use rustls::PeerIncompatible as P;
    match p {
        P::NoCipherSuitesInCommon => "no cipher suite in common with the server".into(),
        P::ServerDoesNotSupportTls12Or13
        | P::ServerTlsVersionIsDisabledByOurConfig
        | P::Tls12NotOffered
        | P::Tls12NotOfferedOrEnabled => {
            "the server accepts none of our TLS versions, 1.2 and 1.3".into()
        }
        P::NoKxGroupsInCommon => "no key exchange group in common with the server".into(),
        P::NoSignatureSchemesInCommon => "no signature scheme in common with the server".into(),
        other => format!(
            "the server is incompatible ({})",
            words(&format!("{other:?}"))
        ),
    }
}

/// Message types in words: "handshake or alert".
fn any_of<T: std::fmt::Debug>(types: &[T]) -> String {
    types
        .iter()
        .map(|t| words(&format!("{t:?}")))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// A Rust variant name in words: `CaUsedAsEndEntity` becomes "ca used as
/// end entity", `Unknown(42)` "unknown 42". Only for the long tails no
/// sentence is written for.
fn words(debug: &str) -> String {
    let mut out = String::with_capacity(debug.len() + 8);
    let chars: Vec<char> = debug.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(char::is_ascii_lowercase);
            if prev.is_ascii_lowercase()
                || prev.is_ascii_digit()
                || (prev.is_ascii_uppercase() && next_lower)
            {
                out.push(' ');
            }
        }
        match c {
            '(' | ')' | '{' | '}' | '[' | ']' | ',' | ':' | '"' => {
                if !out.ends_with(' ') && !out.is_empty() {
                    out.push(' ');
                }
            }
            c => out.push(c.to_ascii_lowercase()),
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::{
        AlertDescription, CertRevocationListError, CertificateError, Error, InconsistentKeys,
        InvalidMessage, OtherError, PeerIncompatible, PeerMisbehaved,
    };

    use super::*;

    /// No Rust value in a reason: no CamelCase word, no `Other(`.
    fn assert_readable(reason: &str) {
        assert!(reason.starts_with("TLS: "), "{reason}");
        for word in reason.split(|c: char| !c.is_ascii_alphanumeric()) {
            let camel = word.char_indices().skip(1).any(|(i, c)| {
                c.is_ascii_uppercase() && word[..i].chars().any(|p| p.is_ascii_lowercase())
            });
            assert!(!camel, "{word:?} in {reason:?}");
        }
        assert!(!reason.contains("Other"), "{reason}");
    }

    fn pki(e: webpki::Error) -> Error {
        Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
    }

    #[test]
    fn webpki_errors_inside_other_are_downcast_and_named() {
        assert_eq!(
            reason(&pki(webpki::Error::CaUsedAsEndEntity), "api.test"),
            "TLS: certificate is a CA certificate, not a server's (CA used as end entity)"
        );
        assert_eq!(
            reason(&pki(webpki::Error::NameConstraintViolation), "api.test"),
            "TLS: certificate violates a name constraint of its issuer"
        );
        assert_eq!(
            reason(
                &Error::Other(OtherError(Arc::new(
                    webpki::Error::MaximumPathDepthExceeded
                ))),
                "x"
            ),
            "TLS: certificate chain too long"
        );
        #[allow(deprecated)]
        let all = [
            webpki::Error::BadDer,
            webpki::Error::BadDerTime,
            webpki::Error::CaUsedAsEndEntity,
            webpki::Error::CertDistrusted,
            webpki::Error::CertRevoked,
            webpki::Error::EmptyEkuExtension,
            webpki::Error::EndEntityUsedAsCa,
            webpki::Error::ExtensionValueInvalid,
            webpki::Error::InvalidCertValidity,
            webpki::Error::InvalidCrlNumber,
            webpki::Error::InvalidNetworkMaskConstraint,
            webpki::Error::InvalidSerialNumber,
            webpki::Error::InvalidCrlSignatureForPublicKey,
            webpki::Error::InvalidSignatureForPublicKey,
            webpki::Error::IssuerNotCrlSigner,
            webpki::Error::MalformedDnsIdentifier,
            webpki::Error::MalformedExtensions,
            webpki::Error::MalformedNameConstraint,
            webpki::Error::MaximumNameConstraintComparisonsExceeded,
            webpki::Error::MaximumPathBuildCallsExceeded,
            webpki::Error::MaximumPathDepthExceeded,
            webpki::Error::MaximumSignatureChecksExceeded,
            webpki::Error::NameConstraintViolation,
            webpki::Error::PathLenConstraintViolated,
            webpki::Error::RequiredEkuNotFound,
            webpki::Error::SignatureAlgorithmMismatch,
            webpki::Error::UnknownIssuer,
            webpki::Error::UnknownRevocationStatus,
            webpki::Error::UnsupportedCertVersion,
            webpki::Error::UnsupportedCriticalExtension,
            webpki::Error::UnsupportedCrlIssuingDistributionPoint,
            webpki::Error::UnsupportedCrlVersion,
            webpki::Error::UnsupportedDeltaCrl,
            webpki::Error::UnsupportedIndirectCrl,
            webpki::Error::UnsupportedNameType,
            webpki::Error::UnsupportedRevocationReason,
            webpki::Error::UnsupportedRevocationReasonsPartitioning,
            webpki::Error::UnsupportedCrlSignatureAlgorithm,
            webpki::Error::UnsupportedSignatureAlgorithm,
            webpki::Error::UnsupportedCrlSignatureAlgorithmForPublicKey,
            webpki::Error::UnsupportedSignatureAlgorithmForPublicKey,
        ];
        for e in all {
            assert_readable(&reason(&pki(e), "api.test"));
        }
        // Anything else passed on keeps its own message.
        let io = std::io::Error::other("hardware token unplugged");
        assert_eq!(
            reason(&Error::Other(OtherError(Arc::new(io))), "x"),
            "TLS: hardware token unplugged"
        );
    }

    #[test]
    fn every_certificate_error_reads_as_words() {
        assert_eq!(
            reason(&Error::InvalidCertificate(CertificateError::Expired), "a"),
            "TLS: certificate expired"
        );
        assert_eq!(
            reason(
                &Error::InvalidCertificate(CertificateError::NotValidForName),
                "api.test"
            ),
            "TLS: certificate not valid for name \"api.test\""
        );
        assert_eq!(
            reason(
                &Error::InvalidCertificate(CertificateError::BadEncoding),
                "a"
            ),
            "TLS: certificate malformed (bad encoding)"
        );
        #[allow(deprecated)]
        let all = [
            CertificateError::BadEncoding,
            CertificateError::Expired,
            CertificateError::NotValidYet,
            CertificateError::Revoked,
            CertificateError::UnhandledCriticalExtension,
            CertificateError::UnknownIssuer,
            CertificateError::UnknownRevocationStatus,
            CertificateError::ExpiredRevocationList,
            CertificateError::BadSignature,
            CertificateError::UnsupportedSignatureAlgorithm,
            CertificateError::UnsupportedSignatureAlgorithmContext {
                signature_algorithm_id: vec![1, 2],
                supported_algorithms: vec![],
            },
            CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext {
                signature_algorithm_id: vec![1],
                public_key_algorithm_id: vec![2],
            },
            CertificateError::NotValidForName,
            CertificateError::InvalidPurpose,
            CertificateError::InvalidOcspResponse,
            CertificateError::ApplicationVerificationFailure,
        ];
        for c in all {
            assert_readable(&reason(&Error::InvalidCertificate(c), "api.test"));
        }
    }

    #[test]
    fn every_other_rustls_error_reads_as_words() {
        assert_eq!(
            reason(
                &Error::InvalidMessage(InvalidMessage::InvalidContentType),
                "a"
            ),
            "TLS: the server does not speak TLS (its reply is no TLS record)"
        );
        assert_eq!(
            reason(
                &Error::AlertReceived(AlertDescription::UnrecognisedName),
                "api.test"
            ),
            "TLS: the server does not serve the name \"api.test\" (alert unrecognised name)"
        );
        assert_eq!(
            reason(
                &Error::PeerIncompatible(PeerIncompatible::NoCipherSuitesInCommon),
                "a"
            ),
            "TLS: no cipher suite in common with the server"
        );
        assert_eq!(
            reason(
                &Error::PeerMisbehaved(PeerMisbehaved::IllegalMiddleboxChangeCipherSpec),
                "a"
            ),
            "TLS: the server broke the TLS protocol (illegal middlebox change cipher spec)"
        );
        // Kept as rustls says it (the probe tests rely on it).
        assert_eq!(
            reason(&Error::DecryptError, "a"),
            "TLS: cannot decrypt peer's message"
        );
        let all = [
            Error::InappropriateMessage {
                expect_types: vec![rustls::ContentType::Handshake],
                got_type: rustls::ContentType::ApplicationData,
            },
            Error::InappropriateHandshakeMessage {
                expect_types: vec![rustls::HandshakeType::ServerHello],
                got_type: rustls::HandshakeType::Finished,
            },
            Error::InvalidMessage(InvalidMessage::HandshakePayloadTooLarge),
            Error::InvalidMessage(InvalidMessage::InvalidCertRequest),
            Error::NoCertificatesPresented,
            Error::UnsupportedNameType,
            Error::DecryptError,
            Error::EncryptError,
            Error::PeerIncompatible(PeerIncompatible::ServerDoesNotSupportTls12Or13),
            Error::PeerIncompatible(PeerIncompatible::NoKxGroupsInCommon),
            Error::PeerIncompatible(PeerIncompatible::NoSignatureSchemesInCommon),
            Error::PeerIncompatible(PeerIncompatible::ExtendedMasterSecretExtensionRequired),
            Error::PeerMisbehaved(PeerMisbehaved::BadCertChainExtensions),
            Error::PeerMisbehaved(PeerMisbehaved::SelectedUnofferedCipherSuite),
            Error::AlertReceived(AlertDescription::HandshakeFailure),
            Error::AlertReceived(AlertDescription::ProtocolVersion),
            Error::AlertReceived(AlertDescription::CertificateRequired),
            Error::AlertReceived(AlertDescription::InternalError),
            Error::AlertReceived(AlertDescription::BadCertificate),
            Error::AlertReceived(AlertDescription::Unknown(200)),
            Error::InvalidCertRevocationList(CertRevocationListError::BadSignature),
            Error::InvalidCertRevocationList(CertRevocationListError::UnsupportedDeltaCrl),
            Error::InvalidEncryptedClientHello(
                rustls::EncryptedClientHelloError::NoCompatibleConfig,
            ),
            Error::General("the thing broke".into()),
            Error::FailedToGetCurrentTime,
            Error::FailedToGetRandomBytes,
            Error::HandshakeNotComplete,
            Error::PeerSentOversizedRecord,
            Error::NoApplicationProtocol,
            Error::BadMaxFragmentSize,
            Error::InconsistentKeys(InconsistentKeys::KeyMismatch),
        ];
        for e in all {
            let r = reason(&e, "api.test");
            assert_readable(&r);
            assert!(!r.contains("  ") && !r.ends_with(' '), "{r:?}");
        }
    }

    #[test]
    fn words_splits_variant_names() {
        assert_eq!(words("CaUsedAsEndEntity"), "ca used as end entity");
        assert_eq!(words("Tls12NotOffered"), "tls12 not offered");
        assert_eq!(words("Unknown(200)"), "unknown 200");
        assert_eq!(
            words("ServerRejectedEncryptedClientHello(None)"),
            "server rejected encrypted client hello none"
        );
        assert_eq!(words("TLSVersion"), "tls version");
    }
}
