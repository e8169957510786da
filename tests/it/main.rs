//! One integration test binary (as hickory does): a module per area.

mod backend;
mod support;

mod check;
mod dns;
mod probes;
