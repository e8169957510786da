//! One integration test binary (as hickory does): a module per area.

mod backend;
mod support;

mod admin;
mod check;
mod dns;
mod failover;
mod probes;
mod reload;
mod webhook;
