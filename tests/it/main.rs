//! One integration test binary (as hickory does): a module per area.

mod backend;
mod etcd;
mod support;

mod admin;
mod check;
mod cluster;
mod dns;
mod failover;
mod probes;
mod reload;
mod webhook;
