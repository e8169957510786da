//! gslb: a global DNS failover controller.
//!
//! An authoritative DNS server for TOML zones whose service names answer with
//! the regions that are healthy right now. Modules, lowest first; each uses
//! only modules above it in this list (tests excepted):
//!
//! - [`throttle`]: rate-limited log lines; [`logging`]: where they go.
//! - [`dnssec`]: DNSSEC keys (BIND's files) and signing RRsets.
//! - [`model`]: validated configuration, plain data.
//! - [`limits`]: the file descriptor budget for a configuration.
//! - [`config`]: zone and settings files (TOML) to the model, errors with
//!   `file:line:column`.
//! - [`policy`]: pure answer selection over a health view.
//! - [`metrics`]: every metric, one registry.
//! - [`health`]: probes, thresholds, health cells, the state file; the one
//!   place where a local verdict arrives and an effective one is set.
//! - [`cluster`]: several nodes deciding the effective verdicts together
//!   through etcd.
//! - [`dns`]: the served snapshot, the answer engine, the UDP/TCP listeners.
//! - [`reload`]: the one writer of the served snapshot after start.
//! - [`events`]: failover webhooks.
//! - [`admin`]: the admin HTTP API and status page.
//! - [`app`]: wiring, start and shutdown; [`cli`] and [`demo`] for the binary.

pub mod admin;
pub mod app;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod conns;
pub mod demo;
pub mod dns;
pub mod dnssec;
pub mod events;
#[doc(hidden)]
pub mod fuzz;
pub mod health;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod reload;
pub mod throttle;

/// Fix glibc's thresholds for giving memory back (call once, first thing).
///
/// glibc raises its mmap threshold to the size of any large block freed,
/// up to 32 MB, and its trim threshold to twice that: after one reload had
/// parsed a large zone (token vectors of many MB), every later block went
/// into the arenas and the freed top of a thread's arena stayed resident
/// for good (malloc_trim does not shrink those). Measured with a
/// 100,000-record zone: 58 MiB resident after it was removed, 14 MiB of it
/// in use. Fixed thresholds keep blocks of 256 KiB and more in their own
/// mappings, unmapped when freed, and return a free arena top above 256 KiB.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets the allocator's parameters; called before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 * 1024);
    }
}

/// Give the allocator's free pages back to the system (glibc's
/// `malloc_trim`, which walks every arena); a no-op elsewhere. Blocks for
/// as long as the walk takes: call it off the DNS path.
pub fn trim_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Install rustls' ring provider as the process default (idempotent).
/// reqwest is built without a provider of its own and needs one for any
/// client, even one that only speaks plain HTTP.
pub fn install_crypto_provider() {
    // Err means a provider is installed already: fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An HTTP client from `make`, verifying TLS against the system's CA
/// certificates (reqwest's platform verifier: a company's own CA works)
/// and, where the system has none (a `scratch` image, a bare host), against
/// the Mozilla roots built into gslb, as the probes do. reqwest refuses to
/// build any client without a certificate store, even one that only speaks
/// plain HTTP: without this fallback such a host would lose its webhooks
/// and its CLI. When the fallback was taken, the first build's error
/// comes along (why the system's store was not used).
pub fn http_client(
    make: impl Fn() -> reqwest::ClientBuilder,
) -> Result<(reqwest::Client, Option<String>), reqwest::Error> {
    let first = match make().build() {
        Ok(c) => return Ok((c, None)),
        Err(e) => e,
    };
    let why = describe_error(&first);
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let Ok(versions) =
        rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions()
    else {
        return Err(first);
    };
    let tls = versions.with_root_certificates(roots).with_no_client_auth();
    make()
        .tls_backend_preconfigured(tls)
        .build()
        .map(|c| (c, Some(why)))
}

/// An error with its causes, `: `-joined, a cause its parent's message
/// already ends with left out (reqwest's own message is often just
/// "builder error" or "error sending request").
pub(crate) fn describe_error(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let m = c.to_string();
        if !text.ends_with(&m) {
            text.push_str(": ");
            text.push_str(&m);
        }
        cause = c.source();
    }
    text
}
