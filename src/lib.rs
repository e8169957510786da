//! gslb: a global DNS failover controller.
//!
//! An authoritative DNS server for TOML zones whose service names answer with
//! the regions that are healthy right now. Modules, lowest first; each uses
//! only modules above it in this list (tests excepted):
//!
//! - [`throttle`]: rate-limited log lines; [`logging`]: where they go.
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

/// Install rustls' ring provider as the process default (idempotent).
/// reqwest is built without a provider of its own and needs one for any
/// client, even one that only speaks plain HTTP.
pub fn install_crypto_provider() {
    // Err means a provider is installed already: fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
