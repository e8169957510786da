//! Command line: `serve`, `check`, `demo`, `drain`, `undrain`, `reload`.
//! Users script against these flags; keep them stable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Global DNS failover controller: authoritative DNS whose answers follow region health.
#[derive(Debug, Parser)]
#[command(name = "gslb", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Sub-commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the zones over DNS (UDP and TCP) and run the health checks.
    Serve(ServeArgs),
    /// Validate zone files: print every problem, exit 1 on any.
    Check(CheckArgs),
    /// Start three local backends and a server for them, and show a failover.
    Demo(DemoArgs),
    /// Force a region (or one endpoint) down on the running server.
    Drain(OverrideArgs),
    /// Return a region (or one endpoint) to automatic health.
    Undrain(OverrideArgs),
    /// Force a region (or one endpoint) up on the running server, whatever its probes say.
    ForceUp(OverrideArgs),
    /// Reload the zones of the running server.
    Reload(AdminArgs),
}

/// `gslb serve`.
#[derive(Debug, Args, Default, Clone)]
pub struct ServeArgs {
    /// Folder of zone files (every *.toml in it). [default: zones]
    #[arg(long, value_name = "DIR")]
    pub zones: Option<PathBuf>,
    /// Serve DNS over UDP and TCP on this address; repeat for more (IPv4 and IPv6). [default: 127.0.0.1:5353]
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Vec<SocketAddr>,
    /// Admin HTTP listener (metrics, status, overrides), or "off". [default: 127.0.0.1:9153]
    #[arg(long, value_name = "ADDR:PORT")]
    pub admin: Option<String>,
    /// Settings file with the same settings as these flags (flags win).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log level (error, warn, info, debug, trace) or a tracing filter. [default: info]
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log format: text or json. [default: text]
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Health state file, or "off". [default: gslb-state.json]
    #[arg(long, value_name = "FILE")]
    pub state_file: Option<String>,
    /// UDP sockets (and worker threads) per listen address. [default: number of CPUs]
    #[arg(long, value_name = "N")]
    pub udp_workers: Option<usize>,
    /// Reload when a zone file changes (polled every second).
    #[arg(long)]
    pub watch: bool,
    /// Local address that health probes connect from (an allowlisted address, a multi-homed host).
    #[arg(long, value_name = "ADDR")]
    pub probe_source: Option<std::net::IpAddr>,
}

/// `gslb check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Zone files or folders of them. [default: zones]
    #[arg(value_name = "DIR|FILE")]
    pub paths: Vec<PathBuf>,
}

/// Where the running server's admin API is.
#[derive(Debug, Args, Clone)]
pub struct AdminArgs {
    /// Admin API address of the running server.
    #[arg(
        long,
        value_name = "ADDR:PORT",
        default_value = "127.0.0.1:9153",
        env = "GSLB_ADMIN"
    )]
    pub admin: String,
    /// Bearer token for the admin API.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "GSLB_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

/// `gslb drain|undrain|force-up`.
#[derive(Debug, Args, Clone)]
pub struct OverrideArgs {
    /// Region name.
    pub region: String,
    /// One endpoint (address) of the region instead of the whole region.
    #[arg(long, value_name = "ADDR")]
    pub endpoint: Option<String>,
    /// Zone of the region; needed only when several zones have a region of that name.
    #[arg(long, value_name = "ZONE")]
    pub zone: Option<String>,
    /// The running server.
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `gslb demo`.
#[derive(Debug, Args, Clone)]
pub struct DemoArgs {
    /// DNS port of the demo server.
    #[arg(long, default_value_t = 5354)]
    pub port: u16,
    /// Admin port of the demo server.
    #[arg(long, default_value_t = 9154)]
    pub admin_port: u16,
    /// Port of the three demo backends (on 127.0.0.2, .3 and .4).
    #[arg(long, default_value_t = 18081)]
    pub backend_port: u16,
}
