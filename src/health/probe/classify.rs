//! A failed connect, handshake, request or body read to an outcome class
//! and a reason for operators.

use std::error::Error as StdError;
use std::io;

use super::ProbeOutcome;
use super::http::CLOSED_BEFORE_RESPONSE;

/// Turns a failed connect, handshake, request or body read into an outcome
/// and a reason, from the most telling error in the chain: an I/O error kind,
/// a rustls error, or hyper's predicates for a malformed or truncated
/// response. `server_name` is the name the certificate was checked against.
pub(super) fn classify(
    err: &(dyn StdError + 'static),
    server_name: &str,
) -> (ProbeOutcome, String) {
    let mut innermost = err;
    let mut connect_error: Option<String> = None;
    let mut cur = Some(err);
    while let Some(e) = cur {
        innermost = e;
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return (ProbeOutcome::Tls, super::tls::reason(tls, server_name));
        }
        if let Some(io_err) = e.downcast_ref::<io::Error>() {
            if let Some(verdict) = classify_io(io_err) {
                return verdict;
            }
            if matches!(
                io_err.kind(),
                io::ErrorKind::NetworkUnreachable | io::ErrorKind::HostUnreachable
            ) {
                connect_error.get_or_insert_with(|| strip_os_error(io_err));
            }
            // An io::Error's own source() skips the error it wraps (a rustls
            // error from tokio-rustls, say): step into that one instead.
            if let Some(inner) = io_err.get_ref() {
                cur = Some(inner);
                continue;
            }
        }
        // hyper's own predicates, not its messages (which may change).
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() {
                return (ProbeOutcome::Reset, CLOSED_BEFORE_RESPONSE.into());
            }
            // Say what was wrong: "invalid HTTP response" alone sent
            // operators looking at the wrong thing.
            if h.is_parse_too_large() {
                return (
                    ProbeOutcome::Protocol,
                    "invalid HTTP response: its head is too large (more than 100 header fields, or more than 400 KiB)".into(),
                );
            }
            if h.is_parse_status() {
                return (
                    ProbeOutcome::Protocol,
                    "invalid HTTP response: its status code is not a number from 100 to 999".into(),
                );
            }
            if h.is_parse() {
                return (
                    ProbeOutcome::Protocol,
                    format!("invalid HTTP response: {h}"),
                );
            }
        }
        cur = e.source();
    }
    if let Some(reason) = connect_error {
        return (ProbeOutcome::Connect, reason);
    }
    let is_connect = err.downcast_ref::<io::Error>().is_some();
    let reason = innermost.to_string();
    if is_connect {
        (ProbeOutcome::Connect, format!("connect: {reason}"))
    } else {
        (ProbeOutcome::Protocol, reason)
    }
}

fn classify_io(e: &io::Error) -> Option<(ProbeOutcome, String)> {
    use io::ErrorKind as K;
    if e.get_ref()
        .is_some_and(|inner| inner.is::<super::sock::SetEnded>())
    {
        return Some((
            ProbeOutcome::Local,
            format!("local error (gslb's, not the backend's): {e}"),
        ));
    }
    // This process's own resources: no socket, buffer or local port to
    // probe with. Not the backend's failure.
    if let Some(code) = e.raw_os_error()
        && matches!(
            code,
            libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL
        )
    {
        return Some((
            ProbeOutcome::Local,
            format!(
                "local error (gslb's, not the backend's): {}",
                strip_os_error(e)
            ),
        ));
    }
    Some(match e.kind() {
        K::ConnectionRefused => (ProbeOutcome::Refused, "connection refused".into()),
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => {
            (ProbeOutcome::Reset, "connection reset".into())
        }
        // tokio-rustls reports a close during the handshake as this.
        K::UnexpectedEof if e.to_string().contains("tls handshake") => (
            ProbeOutcome::Reset,
            "connection closed during TLS handshake".into(),
        ),
        K::UnexpectedEof => (ProbeOutcome::Reset, "connection closed mid-response".into()),
        K::TimedOut => (ProbeOutcome::Timeout, "connection timed out".into()),
        _ => return None,
    })
}

/// `"Network is unreachable (os error 101)"` -> `"network is unreachable"`.
fn strip_os_error(e: &io::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" (os error") {
        Some(i) => &text[..i],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::CertificateError;

    /// An error with a message and a cause, as hyper builds them.
    #[derive(Debug)]
    struct Wrap(&'static str, Option<Box<dyn StdError + Send + Sync>>);

    impl std::fmt::Display for Wrap {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl StdError for Wrap {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            self.1.as_deref().map(|e| e as &(dyn StdError + 'static))
        }
    }

    fn wrap(msg: &'static str, inner: impl StdError + Send + Sync + 'static) -> Wrap {
        Wrap(msg, Some(Box::new(inner)))
    }

    fn io(kind: io::ErrorKind) -> io::Error {
        io::Error::from(kind)
    }

    #[test]
    fn classifies_io_errors_deep_in_the_chain() {
        let e = wrap(
            "client error (Connect)",
            wrap("tcp connect error", io(io::ErrorKind::ConnectionRefused)),
        );
        assert_eq!(
            classify(&e, "x"),
            (ProbeOutcome::Refused, "connection refused".into())
        );
        let e = wrap("connection error", io(io::ErrorKind::ConnectionReset));
        assert_eq!(
            classify(&e, "x"),
            (ProbeOutcome::Reset, "connection reset".into())
        );
        let e = wrap(
            "error reading a body from connection",
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "end of file before message length reached",
            ),
        );
        assert_eq!(
            classify(&e, "x"),
            (ProbeOutcome::Reset, "connection closed mid-response".into())
        );
    }

    #[test]
    fn classifies_rustls_errors_wrapped_in_io_errors() {
        let tls = |c: CertificateError| {
            wrap(
                "client error (Connect)",
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    rustls::Error::InvalidCertificate(c),
                ),
            )
        };
        assert_eq!(
            classify(&tls(CertificateError::Expired), "api.test"),
            (ProbeOutcome::Tls, "TLS: certificate expired".into())
        );
        assert_eq!(
            classify(&tls(CertificateError::NotValidForName), "api.test"),
            (
                ProbeOutcome::Tls,
                "TLS: certificate not valid for name \"api.test\"".into()
            )
        );
        assert_eq!(
            classify(&tls(CertificateError::UnknownIssuer), "api.test"),
            (ProbeOutcome::Tls, "TLS: unknown issuer".into())
        );
        let e = io::Error::new(io::ErrorKind::InvalidData, rustls::Error::DecryptError);
        assert_eq!(
            classify(&e, "x"),
            (
                ProbeOutcome::Tls,
                "TLS: cannot decrypt peer's message".into()
            )
        );
    }

    #[test]
    fn unreachable_networks_are_connect_failures() {
        let e = wrap("tcp connect error", io(io::ErrorKind::NetworkUnreachable));
        let (outcome, reason) = classify(&e, "x");
        assert_eq!(outcome, ProbeOutcome::Connect);
        assert_eq!(reason, "network unreachable");
    }

    #[test]
    fn local_resource_errors_are_not_the_backends() {
        for code in [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOBUFS,
            libc::EADDRNOTAVAIL,
        ] {
            let e = wrap("tcp connect error", io::Error::from_raw_os_error(code));
            let (outcome, reason) = classify(&e, "x");
            assert_eq!(outcome, ProbeOutcome::Local, "{code}: {reason}");
            assert!(reason.starts_with("local error (gslb's"), "{reason}");
        }
    }

    #[test]
    fn a_probe_socket_set_that_ended_is_a_local_error() {
        let e = wrap(
            "tcp connect error",
            io::Error::from(super::super::sock::SetEnded),
        );
        assert_eq!(
            classify(&e, "x"),
            (
                ProbeOutcome::Local,
                "local error (gslb's, not the backend's): the prober's socket set has ended".into()
            )
        );
    }

    #[test]
    fn unknown_errors_keep_the_innermost_message() {
        let e = Wrap(
            "error sending request",
            Some(Box::new(Wrap("operation was canceled", None))),
        );
        assert_eq!(
            classify(&e, "x"),
            (ProbeOutcome::Protocol, "operation was canceled".into())
        );
    }

    #[test]
    fn strip_os_error_keeps_the_message() {
        let e = io::Error::from_raw_os_error(101);
        let s = strip_os_error(&e);
        assert!(!s.contains("os error"), "{s}");
        assert!(s.starts_with(|c: char| c.is_lowercase()), "{s}");
    }
}
