//! One integration test binary (as hickory does): a module per area.

// Assertions compare with `[x.clone()]`: plainer than `slice::from_ref(&x)`.
#![allow(clippy::cloned_ref_to_slice_refs)]
// Helpers are `pub` for the modules of this one test binary.
#![allow(unreachable_pub)]

mod backend;
mod etcd;
mod support;

mod admin;
mod chaos;
mod check;
mod cluster;
mod depends;
mod dns;
mod dns_check;
mod dnssec;
mod ecs;
mod exec_check;
mod failover;
mod fuzz_replay;
mod geo;
mod grpc_check;
mod hardening;
mod icmp_check;
mod logging;
mod probes;
mod reload;
mod systemd;
mod transfer;
mod webhook;
