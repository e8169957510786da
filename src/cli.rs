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
    Reload(ReloadArgs),
    /// Ask the running server what a client gets for a name, and why: its
    /// location, the region order there, each region's health, the answer.
    Explain(ExplainArgs),
    /// Print the running server's zones: each service's answer now, and
    /// each region's health and why.
    Status(StatusArgs),
    /// DNSSEC keys: make them, print the DS records for the parent.
    #[command(subcommand)]
    Dnssec(DnssecCommand),
    /// Exit 0 if the running server is ready (its /readyz: zones served,
    /// first health verdicts known), 1 if not: a container's health check.
    Ready(ReadyArgs),
}

/// `gslb dnssec ...`.
#[derive(Debug, Subcommand, Clone)]
pub enum DnssecCommand {
    /// Make a key pair for ZONE in BIND's format (K<zone>.+<alg>+<tag>.key
    /// and .private, mode 0600), published and active from now.
    Keygen(KeygenArgs),
    /// Print the DS records of ZONE's key-signing (or combined) keys, for
    /// the parent zone.
    Ds(DsArgs),
    /// Show the running server's signed zones: each key's role, state and
    /// times, the next key event, the earliest signature expiry.
    Status(DnssecStatusArgs),
}

/// `gslb dnssec status`.
#[derive(Debug, Args, Clone)]
pub struct DnssecStatusArgs {
    /// Only this zone.
    pub zone: Option<String>,
    /// Print the status API's `dnssec` sections as JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// The running server.
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `gslb dnssec keygen`.
#[derive(Debug, Args, Clone)]
pub struct KeygenArgs {
    /// The zone (its apex name); with --successor, the predecessor's.
    #[arg(required_unless_present = "successor")]
    pub zone: Option<String>,
    /// Folder to write the key files into.
    #[arg(long, value_name = "DIR", default_value = "keys")]
    pub keys: std::path::PathBuf,
    /// Instead of --keys: the zone files (a file or folder, as `serve
    /// --zones`); the keys go to the folder the zone's `[dnssec] keys`
    /// names.
    #[arg(long, value_name = "PATH", conflicts_with = "keys")]
    pub zones: Option<std::path::PathBuf>,
    /// 13 (ECDSAP256SHA256, the default) or 15 (ED25519).
    #[arg(long)]
    pub algorithm: Option<String>,
    /// A key-signing key (flags 257) to go with a separate ZSK; without
    /// --ksk or --zsk, one combined key (CSK, flags 257).
    #[arg(long, conflicts_with = "zsk")]
    pub ksk: bool,
    /// A zone-signing key (flags 256).
    #[arg(long)]
    pub zsk: bool,
    /// Make the successor of KEY (its .key or .private file, or its
    /// K<zone>.+<alg>+<tag> name in --keys), as BIND's `dnssec-keygen -S`
    /// does: same zone, algorithm and kind; it signs from KEY's Inactive
    /// time and is published --prepublish before that (or now, if later).
    #[arg(long, value_name = "KEY", conflicts_with_all = ["ksk", "zsk", "algorithm"])]
    pub successor: Option<std::path::PathBuf>,
    /// With --successor: how long before it signs the successor is in the
    /// DNSKEY set (validators must have it cached by then).
    #[arg(long, value_name = "DURATION", default_value = "30d", requires = "successor",
          value_parser = humantime::parse_duration)]
    pub prepublish: std::time::Duration,
}

/// `gslb dnssec ds`.
#[derive(Debug, Args, Clone)]
pub struct DsArgs {
    /// The zone (its apex name).
    pub zone: String,
    /// Folder of key files (BIND's format, as keygen or dnssec-keygen write them).
    #[arg(long, value_name = "DIR", default_value = "keys")]
    pub keys: std::path::PathBuf,
    /// Instead of --keys: the zone files; the keys are read from the folder
    /// the zone's `[dnssec] keys` names.
    #[arg(long, value_name = "PATH", conflicts_with = "keys")]
    pub zones: Option<std::path::PathBuf>,
}

/// `gslb ready`.
#[derive(Debug, Args, Clone)]
pub struct ReadyArgs {
    /// Give up (not ready) after this long without an answer.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
    /// The running server.
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `gslb status`.
#[derive(Debug, Args, Clone)]
pub struct StatusArgs {
    /// Print the server's JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// The running server.
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// The key folder of `zone` as its zone file among `zones` (a file or a
/// folder, as `serve --zones` takes it) names it: `[dnssec] keys`,
/// relative to the zone file. `Err` says what is missing.
pub fn key_dir_of(
    zones: &std::path::Path,
    zone: &hickory_proto::rr::Name,
) -> Result<std::path::PathBuf, String> {
    let files = crate::config::zone_files(&[zones.to_path_buf()]).map_err(|e| {
        e.0.iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let Ok(table) = text.parse::<toml::Table>() else {
            continue;
        };
        let name = table
            .get("zone")
            .and_then(|z| z.get("name"))
            .and_then(|n| n.as_str())
            .and_then(|n| hickory_proto::rr::Name::from_ascii(n).ok());
        let Some(mut name) = name else { continue };
        name.set_fqdn(true);
        if name != *zone {
            continue;
        }
        return match table
            .get("dnssec")
            .and_then(|d| d.get("keys"))
            .and_then(|k| k.as_str())
        {
            Some(keys) => Ok(file
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .join(keys)),
            None => Err(format!(
                "{}: zone {zone} has no [dnssec] table naming its keys; add\n[dnssec]\nkeys = \"keys/\"",
                file.display()
            )),
        };
    }
    Err(format!("no zone file in {} serves {zone}", zones.display()))
}

/// The signed zones of the status API's document (`zone`: only that
/// one), as `gslb dnssec status` prints them: `None` when no zone (or not
/// that zone) is signed.
pub fn dnssec_status_json(st: &serde_json::Value, zone: Option<&str>) -> Option<serde_json::Value> {
    let want = zone.map(|z| z.trim_end_matches('.').to_ascii_lowercase());
    let zones: Vec<serde_json::Value> = st["zones"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|z| !z["dnssec"].is_null())
        .filter(|z| {
            want.as_ref().is_none_or(|w| {
                z["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(w))
            })
        })
        .map(|z| serde_json::json!({"zone": z["name"], "dnssec": z["dnssec"]}))
        .collect();
    (!zones.is_empty()).then_some(serde_json::Value::Array(zones))
}

/// [`dnssec_status_json`] as text: per zone a summary line, then a line
/// per key.
pub fn dnssec_status_text(zones: &serde_json::Value, now_ms: u64) -> String {
    use std::fmt::Write;
    let time = |v: &serde_json::Value| match v.as_u64() {
        Some(ms) => humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
        )
        .to_string(),
        None => "-".to_string(),
    };
    let within = |v: &serde_json::Value| match v.as_u64() {
        Some(ms) if ms > now_ms => {
            // To the minute once it is an hour away.
            let secs = (ms - now_ms) / 1000;
            let secs = if secs >= 3600 { secs - secs % 60 } else { secs };
            format!(
                " (in {})",
                humantime::format_duration(std::time::Duration::from_secs(secs))
            )
        }
        _ => String::new(),
    };
    let mut o = String::new();
    for z in zones.as_array().into_iter().flatten() {
        let d = &z["dnssec"];
        let _ = writeln!(o, "zone {}", z["zone"].as_str().unwrap_or("-"));
        let _ = writeln!(
            o,
            "  signatures valid {}, earliest expiry {}{}",
            humantime::format_duration(std::time::Duration::from_secs(
                d["signature_validity_s"].as_u64().unwrap_or(0)
            )),
            time(&d["earliest_signature_expiry_ms"]),
            within(&d["earliest_signature_expiry_ms"]),
        );
        match d["next_key_event"].as_object() {
            Some(e) => {
                let _ = writeln!(
                    o,
                    "  next key event {}{}: {}",
                    time(&e["at_ms"]),
                    within(&e["at_ms"]),
                    e["what"].as_str().unwrap_or("-")
                );
            }
            None => {
                let _ = writeln!(o, "  next key event: none scheduled");
            }
        }
        let _ = writeln!(
            o,
            "  key    alg  role state      publish               activate              inactive              delete"
        );
        for k in d["keys"].as_array().into_iter().flatten() {
            let _ = writeln!(
                o,
                "  {:<6} {:<4} {:<4} {:<10} {:<21} {:<21} {:<21} {}",
                k["tag"].to_string(),
                k["algorithm"].to_string(),
                k["role"].as_str().unwrap_or("-"),
                k["state"].as_str().unwrap_or("-"),
                time(&k["publish_ms"]),
                time(&k["activate_ms"]),
                time(&k["inactive_ms"]),
                time(&k["delete_ms"]),
            );
        }
    }
    o
}

/// The status API's document as text: per zone, each service's answer for
/// a client of no known location, then each region's health (endpoints
/// up, overrides and who set them, the reason of a down endpoint).
pub fn status_text(st: &serde_json::Value) -> String {
    use std::fmt::Write;
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
    let mut o = String::new();
    for z in st["zones"].as_array().into_iter().flatten() {
        let _ = writeln!(o, "zone {} (serial {})", s(&z["name"]), z["serial"]);
        for svc in z["services"].as_array().into_iter().flatten() {
            let a = &svc["answer"];
            let regions: Vec<String> = a["regions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    let (name, share) = (s(&r[0]), r[1].as_f64().unwrap_or(1.0));
                    if share < 1.0 {
                        format!("{name} {:.0}%", share * 100.0)
                    } else {
                        name
                    }
                })
                .collect();
            let answer = match a["kind"].as_str() {
                Some("answer") => {
                    let mut t = regions.join(", ");
                    let addrs: Vec<String> = a["addresses"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(s)
                        .collect();
                    if !addrs.is_empty() {
                        let _ = write!(t, " [{}]", addrs.join(" "));
                    } else if let Some(c) = a["cname"].as_str() {
                        let _ = write!(t, " [CNAME {c}]");
                    }
                    t
                }
                Some(kind) => kind.to_uppercase(),
                None => "-".into(),
            };
            let mut flags = String::new();
            if svc["all_down"] == true {
                let _ = write!(flags, "  ALL DOWN ({})", s(&svc["when_all_down"]));
            } else if svc["degraded"] == true {
                flags.push_str("  degraded");
            }
            let _ = writeln!(
                o,
                "  {:<14} {:<11} -> {answer}{flags}",
                s(&svc["key"]),
                s(&svc["policy"])
            );
        }
        for r in z["regions"].as_array().into_iter().flatten() {
            let eps = r["endpoints"].as_array().map_or(&[][..], Vec::as_slice);
            let up = eps.iter().filter(|e| e["up"] == true).count();
            let _ = write!(
                o,
                "  region {:<12} {:<4}  {up}/{} endpoints up",
                s(&r["name"]),
                if r["up"] == true { "up" } else { "DOWN" },
                eps.len()
            );
            match r["override"].as_str() {
                Some("auto") | None => {}
                Some(state) => {
                    let by = r["override_note"]["by"]
                        .as_str()
                        .map(|b| format!(" by {b}"))
                        .unwrap_or_default();
                    let _ = write!(o, ", override {state}{by}");
                }
            }
            if r["down_because"] == "depends-on" {
                o.push_str(", down for what it depends on");
            }
            o.push('\n');
            for e in eps.iter().filter(|e| e["up"] != true) {
                let _ = writeln!(
                    o,
                    "    {} down: {}",
                    s(&e["address"]),
                    e["reason"].as_str().unwrap_or("no probe yet")
                );
            }
        }
    }
    o
}

/// `gslb explain`.
#[derive(Debug, Args, Clone)]
pub struct ExplainArgs {
    /// The name to ask for.
    pub name: String,
    /// The query's source address (a resolver, or a client querying directly). [default: 0.0.0.0]
    #[arg(long, value_name = "ADDR")]
    pub client: Option<String>,
    /// EDNS Client Subnet: ADDR/LEN, or an address (sent as /24 or /56).
    #[arg(long, value_name = "PREFIX")]
    pub ecs: Option<String>,
    /// Record type.
    #[arg(long = "type", value_name = "TYPE", default_value = "A")]
    pub qtype: String,
    /// Print the server's JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// The running server.
    #[command(flatten)]
    pub admin: AdminArgs,
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
    /// With --watch: stop serving a zone whose file disappears (otherwise
    /// such a reload is refused and the zone stays served).
    #[arg(long)]
    pub watch_allow_removal: bool,
    /// Local address that health probes connect from (an allowlisted address, a multi-homed host).
    #[arg(long, value_name = "ADDR")]
    pub probe_source: Option<std::net::IpAddr>,
}

/// `gslb check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The settings file: validated too (every problem as
    /// file:line:column), its `zones` checked unless paths are given, and
    /// cross-checked with the zones as `serve` does.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
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
        default_value = DEFAULT_ADMIN,
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

/// Where the commands that talk to a running server look for it.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9153";

impl AdminArgs {
    /// The admin address, and whether nobody chose it (no `--admin`, no
    /// `GSLB_ADMIN`): a message about it then says it was the default, so
    /// "cannot reach 127.0.0.1:9153" is not a puzzle on a host whose
    /// server listens elsewhere.
    pub fn describe(&self) -> String {
        if self.admin == DEFAULT_ADMIN && std::env::var_os("GSLB_ADMIN").is_none() {
            format!(
                "{} (the default; --admin ADDR:PORT or GSLB_ADMIN names another)",
                self.admin
            )
        } else {
            self.admin.clone()
        }
    }
}

/// `gslb reload`.
#[derive(Debug, Args, Clone)]
pub struct ReloadArgs {
    /// Stop serving zones whose files are gone (without it, such a reload
    /// is refused and every zone stays served).
    #[arg(long)]
    pub allow_removal: bool,
    /// The running server.
    #[command(flatten)]
    pub admin: AdminArgs,
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
    /// The override ends by itself after this long ("30m", "2h"), on every node.
    #[arg(long = "for", value_name = "DURATION")]
    pub duration: Option<String>,
    /// Why: shown in status, the page and logs (at most 256 characters).
    #[arg(long, value_name = "TEXT")]
    pub comment: Option<String>,
    /// In a cluster: on this node alone, not through etcd (works while etcd
    /// is unreachable; undo with the same command and --local).
    #[arg(long)]
    pub local: bool,
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

/// `gslb explain`'s text, from the server's JSON (`GET /api/v1/explain`).
pub fn explain_text(x: &serde_json::Value) -> String {
    use std::fmt::Write;
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
    let mut o = String::new();
    let _ = write!(
        o,
        "{} {} from {}",
        s(&x["name"]),
        s(&x["type"]),
        s(&x["client"])
    );
    if let Some(e) = x["ecs"].as_str() {
        let _ = write!(o, ", ECS {e}");
    }
    o.push('\n');
    match x["zone"].as_str() {
        Some(z) => {
            let _ = writeln!(o, "zone:       {z}");
        }
        None => o.push_str("zone:       none served here (REFUSED)\n"),
    }
    let svc = &x["service"];
    if svc.is_object() {
        let _ = write!(
            o,
            "service:    {} (policy {}",
            s(&svc["key"]),
            s(&svc["policy"])
        );
        if let Some(g) = svc["geo"].as_str() {
            let _ = write!(o, ", geo {g}");
        }
        o.push_str(")\n");
        if let Some(l) = svc["located_by"].as_str() {
            let _ = writeln!(o, "located by: {l}");
            let _ = writeln!(o, "location:   {}", s(&svc["location"]));
            let _ = writeln!(o, "because:    {}", s(&svc["why"]));
        }
        o.push_str("regions, in the order this client prefers:\n");
        for (i, r) in svc["order"].as_array().into_iter().flatten().enumerate() {
            let up = if r["up"].as_bool() == Some(true) {
                "up"
            } else {
                "DOWN"
            };
            let _ = write!(
                o,
                "  {}. {:<12} {:<4}  {}/{} endpoints up",
                i + 1,
                s(&r["region"]),
                up,
                r["endpoints_up"],
                r["endpoints"]
            );
            if let Some(d) = r["distance_km"].as_f64() {
                let _ = write!(o, ", {d:.0} km");
            }
            match r["down_because"].as_str() {
                Some("override") => o.push_str(", drained (override)"),
                Some("depends-on") => o.push_str(", down for what it depends on"),
                _ => {}
            }
            if let Some(d) = r["depends_on"].as_str() {
                let _ = write!(o, "\n     {d}");
            }
            o.push('\n');
        }
    }
    let _ = write!(o, "answer:     {}", s(&x["rcode"]));
    if x["zone"].is_null() {
        o.push_str(" (no zone this server serves holds the name)");
    }
    if let Some(t) = x["ttl"].as_u64() {
        let _ = write!(o, ", TTL {t}");
    }
    match x["scope"].as_u64() {
        Some(sc) => {
            let _ = write!(o, ", ECS scope /{sc}");
        }
        // Only a zone that answered can have ignored the option.
        None if x["ecs"].is_string() && !x["zone"].is_null() => {
            o.push_str(", no ECS echoed (the zone ignores ECS)")
        }
        None => {}
    }
    o.push('\n');
    for r in x["answers"].as_array().into_iter().flatten() {
        let _ = writeln!(o, "  {}", s(r));
    }
    for r in x["authority"].as_array().into_iter().flatten() {
        let _ = writeln!(o, "  {} (authority)", s(r));
    }
    o
}

/// The key webhooks are signed with: `GSLB_WEBHOOK_SECRET` (`env`) over
/// the settings file's `webhook-secret`; none: unsigned. An empty variable
/// is an error, never "unsigned" by accident.
pub fn webhook_secret(
    file: &crate::config::server::ServerFile,
    env: Option<String>,
) -> Result<Option<String>, String> {
    match env {
        Some(e) if e.trim().is_empty() => Err(
            "GSLB_WEBHOOK_SECRET is set but empty: give it a secret, or unset it (webhooks are then sent unsigned)"
                .into(),
        ),
        Some(e) => Ok(Some(e)),
        None => Ok(file.webhook_secret.as_ref().map(|s| s.get_ref().clone())),
    }
}

/// What `serve` runs with, after merging.
#[derive(Debug)]
pub struct Merged {
    /// The server's settings.
    pub settings: crate::app::Settings,
    /// Log level or filter.
    pub log_level: String,
    /// `text` or `json`.
    pub log_format: String,
}

/// Merge the `serve` flags over the settings file over the defaults: a flag
/// given on the command line wins, then the file, then the default.
/// `env_token` is `GSLB_ADMIN_TOKEN`, which wins over the file's token.
pub fn merge_settings(
    args: &ServeArgs,
    file: &crate::config::server::ServerFile,
    env_token: Option<String>,
) -> Result<Merged, String> {
    use crate::app::Settings;
    let mut s = Settings::default();
    if let Some(z) = args.zones.clone().or(file.zones.clone()) {
        s.zones = vec![z];
    }
    if !args.listen.is_empty() {
        s.listen = args.listen.clone();
    } else if let Some(l) = &file.listen {
        s.listen = l.clone();
    }
    if let Some(a) = args.admin.clone().or(file.admin.clone()) {
        s.admin = match a.as_str() {
            "off" | "" => None,
            a => Some(
                a.parse()
                    .map_err(|_| format!("admin address {a:?} is not ADDR:PORT"))?,
            ),
        };
    }
    if env_token.as_deref().is_some_and(|t| t.trim().is_empty()) {
        return Err(
            "GSLB_ADMIN_TOKEN is set but empty: give it a token, or unset it (without one, changes are allowed from loopback only)"
                .into(),
        );
    }
    s.admin_token = env_token.or(file.admin_token.as_ref().map(|t| t.get_ref().clone()));
    s.admin_hosts = file
        .admin_hosts
        .iter()
        .flatten()
        .map(|h| h.get_ref().clone())
        .collect();
    if let Some(f) = args.state_file.clone().or(file.state_file.clone()) {
        s.state_file = match f.as_str() {
            "off" | "" => None,
            f => Some(PathBuf::from(f)),
        };
    }
    if let Some(p) = file.udp_payload {
        s.udp_payload = p.clamp(512, 4096);
    }
    if let Some(t) = file.tcp_idle() {
        s.tcp_idle = t;
    }
    let count = |v: &Option<toml::Spanned<i64>>| v.as_ref().map(|v| *v.get_ref() as usize);
    if let Some(n) = count(&file.tcp_connections) {
        s.tcp_connections = n;
    }
    if let Some(n) = count(&file.tcp_connections_per_48) {
        s.tcp_connections_per_48 = n;
    }
    if let Some(n) = count(&file.tcp_connections_per_prefix) {
        s.tcp_connections_per_prefix = n;
    }
    if let Some(n) = count(&file.admin_connections) {
        s.admin_connections = n;
    }
    s.rate_limit = file.rate_limit();
    if let Some(n) = count(&file.answer_cache_mib) {
        s.answer_cache_bytes = n << 20;
    }
    if let Some(w) = args.udp_workers {
        s.udp_workers = w.max(1);
    }
    s.watch = args.watch || file.watch.unwrap_or(false);
    s.watch_allow_removal = args.watch_allow_removal || file.watch_allow_removal.unwrap_or(false);
    if let Some(d) = file.watch_settle() {
        s.watch_settle = d;
    }
    s.probe_source = args.probe_source.or(file.probe_source());
    s.cluster = file.cluster();
    s.tsig_keys = file.tsig_keys.clone();
    if let Some(w) = &file.webhook {
        crate::config::check_webhook_url(w).map_err(|e| {
            format!(
                "{}: {e}",
                args.config
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            )
        })?;
        s.webhook = Some(w.clone());
    }
    let level = args
        .log_level
        .clone()
        .or(file.log_level.clone())
        .unwrap_or_else(|| "info".into());
    let format = args
        .log_format
        .clone()
        .or(file.log_format.clone())
        .unwrap_or_else(|| "text".into());
    Ok(Merged {
        settings: s,
        log_level: level,
        log_format: format,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::server::ServerFile;

    fn file(text: &str) -> ServerFile {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = dir.path().join("gslb.toml");
        std::fs::write(&p, text).expect("write");
        ServerFile::load(&p).expect("settings file loads")
    }

    fn args(flags: &[&str]) -> ServeArgs {
        let mut argv = vec!["gslb", "serve"];
        argv.extend_from_slice(flags);
        match Cli::try_parse_from(argv).expect("flags parse").command {
            Command::Serve(a) => a,
            _ => unreachable!("serve"),
        }
    }

    const FILE: &str = r#"
zones = "/etc/gslb/zones"
listen = ["127.0.0.1:53"]
admin = "127.0.0.1:9000"
admin-token = "from-file"
state-file = "/var/lib/gslb/state.json"
log-level = "warn"
log-format = "json"
tcp-idle-timeout = "3s"
probe-source = "192.0.2.53"
"#;

    #[test]
    fn the_file_overrides_defaults() {
        let m = merge_settings(&args(&[]), &file(FILE), None).expect("merges");
        let s = &m.settings;
        assert_eq!(s.zones, vec![std::path::PathBuf::from("/etc/gslb/zones")]);
        assert_eq!(s.listen, vec!["127.0.0.1:53".parse().unwrap()]);
        assert_eq!(s.admin, Some("127.0.0.1:9000".parse().unwrap()));
        assert_eq!(s.admin_token.as_deref(), Some("from-file"));
        assert_eq!(s.tcp_idle, std::time::Duration::from_secs(3));
        assert_eq!(s.probe_source, Some("192.0.2.53".parse().unwrap()));
        assert_eq!(
            (m.log_level.as_str(), m.log_format.as_str()),
            ("warn", "json")
        );
    }

    #[test]
    fn flags_win_over_the_file_and_the_environment_over_the_file_token() {
        let a = args(&[
            "--zones",
            "z",
            "--listen",
            "127.0.0.2:5353",
            "--admin",
            "off",
            "--state-file",
            "off",
            "--log-level",
            "debug",
            "--probe-source",
            "127.0.1.1",
        ]);
        let m = merge_settings(&a, &file(FILE), Some("from-env".into())).expect("merges");
        let s = &m.settings;
        assert_eq!(s.zones, vec![std::path::PathBuf::from("z")]);
        assert_eq!(s.listen, vec!["127.0.0.2:5353".parse().unwrap()]);
        assert_eq!(s.admin, None, "\"off\" disables the admin API");
        assert_eq!(s.state_file, None);
        assert_eq!(s.admin_token.as_deref(), Some("from-env"));
        assert_eq!(s.probe_source, Some("127.0.1.1".parse().unwrap()));
        assert_eq!(m.log_level, "debug");
        assert_eq!(m.log_format, "json", "not given as a flag: the file's");
    }

    #[test]
    fn no_file_no_flags_gives_the_documented_defaults() {
        let m = merge_settings(&args(&[]), &ServerFile::default(), None).expect("merges");
        let s = &m.settings;
        assert_eq!(s.zones, vec![std::path::PathBuf::from("zones")]);
        assert_eq!(s.listen, vec!["127.0.0.1:5353".parse().unwrap()]);
        assert_eq!(s.admin, Some("127.0.0.1:9153".parse().unwrap()));
        assert_eq!(
            s.state_file,
            Some(std::path::PathBuf::from("gslb-state.json"))
        );
        assert!(s.cluster.is_none());
        assert_eq!(
            (m.log_level.as_str(), m.log_format.as_str()),
            ("info", "text")
        );
    }

    #[test]
    fn the_webhook_secret_comes_from_the_environment_over_the_file() {
        let dir = tempfile::tempdir().expect("dir");
        let p = dir.path().join("gslb.toml");
        std::fs::write(&p, "webhook-secret = \"from-file\"\n").expect("write");
        let f = ServerFile::load(&p).expect("loads");
        assert_eq!(
            webhook_secret(&f, None).unwrap().as_deref(),
            Some("from-file")
        );
        assert_eq!(
            webhook_secret(&f, Some("from-env".into()))
                .unwrap()
                .as_deref(),
            Some("from-env")
        );
        assert_eq!(webhook_secret(&ServerFile::default(), None).unwrap(), None);
        let e = webhook_secret(&f, Some(" ".into())).expect_err("empty is an error");
        assert!(e.contains("GSLB_WEBHOOK_SECRET is set but empty"), "{e}");
        std::fs::write(&p, "\nwebhook-secret = \"\"\n").expect("write");
        let e = ServerFile::load(&p).expect_err("empty in the file is an error");
        let e = e.to_string();
        assert!(e.contains("gslb.toml:2:18"), "{e}");
        assert!(e.contains("webhook-secret is empty"), "{e}");
    }

    #[test]
    fn a_bad_admin_address_is_an_error() {
        let e = merge_settings(&args(&["--admin", "nowhere"]), &ServerFile::default(), None)
            .expect_err("refused");
        assert!(e.contains("nowhere"), "{e}");
    }
}
