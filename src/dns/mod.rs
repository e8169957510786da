//! Authoritative DNS: the answer engine and the UDP/TCP listeners feeding it.
//!
//! The engine reads one immutable [`Snapshot`] per query (an `ArcSwap`
//! load) and the health cells' atomics; it never awaits, so listeners call it
//! inline instead of spawning a task per query.

mod cache;
pub mod ecs;
mod engine;
pub mod explain;
pub mod journal;
#[cfg(target_os = "linux")]
mod mmsg;
pub mod notify;
mod prefix;
pub(crate) use prefix::client_prefix;
pub mod rrl;
mod server;
pub mod signed;
mod snapshot;
mod tcp;
pub mod transfer;
mod wire;
pub mod xfr;

pub use crate::metrics::Transport;
pub use cache::{DEFAULT_CACHE_BYTES, Worker};
pub use engine::{DEFAULT_UDP_PAYLOAD, Engine, EngineOptions};
pub use journal::Transfers;
pub use server::{Listeners, bind, from_systemd, serve};
pub use snapshot::{ServedZone, Snapshot};
pub use tcp::{PRESSURE_IDLE, TcpLimits};
