//! gslb: a global DNS failover controller.
//!
//! An authoritative DNS server for TOML zones whose service names answer with
//! the regions that are healthy right now. Modules, lowest first (each uses
//! only those above it):
//!
//! - [`model`]: validated configuration, plain data.
//! - [`config`]: zone files (TOML) to the model, errors with `file:line:column`.
//! - [`policy`]: pure answer selection over a health view.
//! - [`health`]: probes, thresholds, shared health cells, the state file.
//! - [`metrics`]: every metric, one registry.
//! - [`dns`]: the answer engine and the UDP/TCP listeners.
//! - [`cluster`]: several nodes deciding health together through etcd.
//! - [`admin`]: the admin HTTP API.
//! - [`app`]: wiring, reload, shutdown.

pub mod admin;
pub mod app;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod dns;
pub mod events;
pub mod health;
pub mod metrics;
pub mod model;
pub mod policy;

/// Install rustls' ring provider as the process default (idempotent).
/// reqwest is built without a provider of its own and needs one for any
/// client, even one that only speaks plain HTTP.
pub fn install_crypto_provider() {
    // Err means a provider is installed already: fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
