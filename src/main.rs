//! The `gslb` binary: parse the command line, run, map errors to exit codes.
//!
//! Exit codes (documented in the README): 0 success; 1 invalid configuration
//! (`check` found problems, `serve` could not load its zones); 2 usage error;
//! 3 runtime failure (a listener could not be bound, the admin API of the
//! running server could not be reached or refused the request); 4 an
//! override applies but could not be saved in the state file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use gslb::app::{AppError, Server, Settings};
use gslb::cli::{
    AdminArgs, Cli, Command, DemoArgs, ExplainArgs, OverrideArgs, ServeArgs, StatusArgs,
};
use gslb::config::server::ServerFile;

const EXIT_CONFIG: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_RUNTIME: u8 = 3;
const EXIT_NOT_PERSISTED: u8 = 4;
const EXIT_NOT_SERVED: u8 = 5;

fn main() -> ExitCode {
    gslb::tune_allocator();
    let cli = Cli::parse();
    gslb::install_crypto_provider();
    match cli.command {
        Command::Check(args) => check(args.paths, args.config),
        Command::Serve(args) => serve(args),
        Command::Drain(args) => override_call(&args, "drain"),
        Command::Undrain(args) => override_call(&args, "undrain"),
        Command::ForceUp(args) => override_call(&args, "force-up"),
        Command::Reload(args) => reload_call(&args),
        Command::Demo(args) => demo(args),
        Command::Explain(args) => explain_call(&args),
        Command::Status(args) => status_call(&args),
        Command::Ready(args) => ready_call(&args),
        Command::Dnssec(gslb::cli::DnssecCommand::Keygen(args)) => dnssec_keygen(&args),
        Command::Dnssec(gslb::cli::DnssecCommand::Ds(args)) => dnssec_ds(&args),
        Command::Dnssec(gslb::cli::DnssecCommand::Status(args)) => dnssec_status(&args),
    }
}

/// Call the running server's admin API; (status, JSON body).
fn admin_call(
    admin: &AdminArgs,
    method: reqwest::Method,
    path: &str,
    query: &[(&str, &str)],
) -> Result<(u16, serde_json::Value), String> {
    admin_call_within(
        admin,
        method,
        path,
        query,
        std::time::Duration::from_secs(30),
    )
}

/// [`admin_call`] with a deadline; a body that is not JSON comes back as a
/// JSON string.
fn admin_call_within(
    admin: &AdminArgs,
    method: reqwest::Method,
    path: &str,
    query: &[(&str, &str)],
    timeout: std::time::Duration,
) -> Result<(u16, serde_json::Value), String> {
    let url = format!("http://{}{path}", admin.admin);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (client, _) =
            gslb::http_client(|| reqwest::Client::builder().no_proxy().timeout(timeout))
                .map_err(|e| e.to_string())?;
        let url = reqwest::Url::parse_with_params(&url, query)
            .map_err(|e| format!("admin address {}: {e}", admin.admin))?;
        // Marks the call as an API client's (the server refuses changes
        // that a web page could have sent cross-site).
        let mut req = client
            .request(method, url)
            .header(gslb::admin::REQUEST_HEADER, "cli");
        if let Some(t) = &admin.token {
            req = req.bearer_auth(t);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("cannot reach the admin API at {}: {e}", admin.describe()))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        Ok((status, body))
    })
}

fn override_call(args: &OverrideArgs, action: &str) -> ExitCode {
    let enc = |s: &str| s.replace('%', "%25").replace('/', "%2F");
    let zone = args
        .zone
        .as_deref()
        .map(|z| enc(z.trim_end_matches('.')))
        .unwrap_or_else(|| "_".into());
    let mut path = format!("/api/v1/regions/{zone}/{}", enc(&args.region));
    if let Some(ep) = &args.endpoint {
        path.push_str(&format!("/endpoints/{}", enc(ep)));
    }
    path.push_str(&format!("/{action}"));
    let mut query: Vec<(&str, &str)> = Vec::new();
    if let Some(d) = &args.duration {
        query.push(("for", d));
    }
    if let Some(c) = &args.comment {
        query.push(("comment", c));
    }
    if args.local {
        query.push(("local", "true"));
    }
    match admin_call(&args.admin, reqwest::Method::POST, &path, &query) {
        Ok((200, body)) => {
            let t = &body["target"];
            let what = match t["endpoint"].as_str() {
                Some(ep) => format!(
                    "endpoint {ep} of region {}",
                    t["region"].as_str().unwrap_or("?")
                ),
                None => format!("region {}", t["region"].as_str().unwrap_or("?")),
            };
            println!(
                "{what} in zone {}: override {}",
                t["zone"].as_str().unwrap_or("?"),
                t["state"].as_str().unwrap_or("?")
            );
            // Applied, but a restart would lose it: not a plain success.
            match body["warning"].as_str() {
                Some(w) if body["persisted"] == false => {
                    eprintln!("gslb: {action}: {w}");
                    ExitCode::from(EXIT_NOT_PERSISTED)
                }
                _ => ExitCode::SUCCESS,
            }
        }
        other => admin_failed(action, &args.admin, other),
    }
}

/// A call the running server refused (its status and error), or one that
/// did not reach it: said on stderr, exit 3.
fn admin_failed(
    action: &str,
    admin: &AdminArgs,
    result: Result<(u16, serde_json::Value), String>,
) -> ExitCode {
    match result {
        Ok((status, body)) => eprintln!(
            "gslb: {action} refused ({status}) by the admin API at {}: {}",
            admin.describe(),
            body["error"].as_str().unwrap_or("no detail")
        ),
        Err(e) => eprintln!("gslb: {e}"),
    }
    ExitCode::from(EXIT_RUNTIME)
}

fn explain_call(args: &ExplainArgs) -> ExitCode {
    let mut query = vec![("name", args.name.as_str()), ("type", args.qtype.as_str())];
    if let Some(c) = &args.client {
        query.push(("client", c));
    }
    if let Some(e) = &args.ecs {
        query.push(("ecs", e));
    }
    match admin_call(&args.admin, reqwest::Method::GET, "/api/v1/explain", &query) {
        Ok((200, body)) => {
            if args.json {
                println!("{body:#}");
            } else {
                print!("{}", gslb::cli::explain_text(&body));
            }
            // A name no served zone holds: what a script asking "does gslb
            // answer this?" must not read as yes.
            if body["zone"].is_null() {
                ExitCode::from(EXIT_NOT_SERVED)
            } else {
                ExitCode::SUCCESS
            }
        }
        other => admin_failed("explain", &args.admin, other),
    }
}

fn status_call(args: &StatusArgs) -> ExitCode {
    match admin_call(&args.admin, reqwest::Method::GET, "/api/v1/status", &[]) {
        Ok((200, body)) if args.json => {
            println!("{body:#}");
            ExitCode::SUCCESS
        }
        Ok((200, body)) => {
            print!("{}", gslb::cli::status_text(&body));
            ExitCode::SUCCESS
        }
        other => admin_failed("status", &args.admin, other),
    }
}

fn dnssec_status(args: &gslb::cli::DnssecStatusArgs) -> ExitCode {
    match admin_call(&args.admin, reqwest::Method::GET, "/api/v1/status", &[]) {
        Ok((200, body)) => {
            let Some(zones) = gslb::cli::dnssec_status_json(&body, args.zone.as_deref()) else {
                match &args.zone {
                    Some(z) => eprintln!("gslb: zone {z} is not served signed"),
                    None => eprintln!("gslb: no zone is signed (no [dnssec] table)"),
                }
                return ExitCode::from(EXIT_RUNTIME);
            };
            if args.json {
                println!("{zones:#}");
            } else {
                let now = body["now_ms"].as_u64().unwrap_or(0);
                print!("{}", gslb::cli::dnssec_status_text(&zones, now));
            }
            ExitCode::SUCCESS
        }
        other => admin_failed("dnssec status", &args.admin, other),
    }
}

fn zone_name(zone: &str) -> Result<hickory_proto::rr::Name, String> {
    let mut n =
        hickory_proto::rr::Name::from_ascii(zone).map_err(|e| format!("zone {zone:?}: {e}"))?;
    n.set_fqdn(true);
    Ok(n)
}

/// The key folder: `--keys`, or with `--zones` the one `zone`'s
/// `[dnssec] keys` names. `Err` is the exit code, the message printed.
fn key_dir(
    keys: &std::path::Path,
    zones: Option<&std::path::Path>,
    zone: Option<&str>,
) -> Result<std::path::PathBuf, ExitCode> {
    let Some(zones) = zones else {
        return Ok(keys.to_path_buf());
    };
    let Some(zone) = zone else {
        eprintln!("gslb: --zones needs the zone's name, to find its [dnssec] keys");
        return Err(ExitCode::from(EXIT_USAGE));
    };
    let name = zone_name(zone).map_err(|e| {
        eprintln!("gslb: {e}");
        ExitCode::from(EXIT_USAGE)
    })?;
    gslb::cli::key_dir_of(zones, &name).map_err(|e| {
        eprintln!("gslb: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn dnssec_keygen(args: &gslb::cli::KeygenArgs) -> ExitCode {
    use gslb::dnssec::keyfile::{KSK_FLAGS, KeyPair, ZSK_FLAGS, parse_algorithm};
    let now = gslb::model::unix_ms(std::time::SystemTime::now()) / 1000;
    let keys = match key_dir(&args.keys, args.zones.as_deref(), args.zone.as_deref()) {
        Ok(k) => k,
        Err(code) => return code,
    };
    // What to make: a new key from the arguments, or a predecessor's
    // successor. Usage problems exit 2, a predecessor that cannot be read
    // or succeeded exits 1 (as a configuration problem would).
    let make: Box<dyn Fn() -> Result<KeyPair, String>> = match &args.successor {
        Some(pred) => {
            let path = successor_path(pred, &keys);
            let pred = match KeyPair::load(&path) {
                Ok(k) => k,
                Err(e) => {
                    eprintln!("gslb: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            if let Some(zone) = &args.zone
                && zone_name(zone).ok().as_ref() != Some(&pred.zone)
            {
                eprintln!(
                    "gslb: {} is a key of {}, not of {zone}",
                    path.display(),
                    pred.zone
                );
                return ExitCode::from(EXIT_USAGE);
            }
            if let Err(e) = pred.successor(now, args.prepublish.as_secs()) {
                eprintln!("gslb: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
            let prepublish = args.prepublish.as_secs();
            Box::new(move || pred.successor(now, prepublish))
        }
        None => {
            let text = args.algorithm.as_deref().unwrap_or("13");
            let algorithm = parse_algorithm(text)
                .ok_or_else(|| format!("algorithm {text:?}: 13 (ECDSAP256SHA256) or 15 (ED25519)"));
            let zone = zone_name(args.zone.as_deref().unwrap_or_default());
            let (zone, algorithm) = match (zone, algorithm) {
                (Ok(z), Ok(a)) => (z, a),
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("gslb: {e}");
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            let flags = if args.zsk { ZSK_FLAGS } else { KSK_FLAGS };
            Box::new(move || KeyPair::generate(zone.clone(), algorithm, flags, now))
        }
    };
    let made = (|| {
        std::fs::create_dir_all(&keys).map_err(|e| format!("{}: {e}", keys.display()))?;
        // A key tag already taken in the folder: another key, as
        // dnssec-keygen does.
        for _ in 0..8 {
            let key = make()?;
            match key.write(&keys) {
                Ok(paths) => return Ok((key, paths)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(format!("{}: {e}", keys.display())),
            }
        }
        Err(format!("{}: no free key tag in 8 tries", keys.display()))
    })();
    match made {
        Ok((key, (k, p))) => {
            println!("{}\n{}", k.display(), p.display());
            if let Some(pred) = &args.successor {
                let pred = KeyPair::load(&successor_path(pred, &keys)).ok();
                let overlap = pred
                    .and_then(|p| p.timing.inactive)
                    .zip(key.timing.publish)
                    .map(|(i, p)| i.saturating_sub(p));
                if let Some(secs) = overlap.filter(|&s| s < 3600) {
                    eprintln!(
                        "gslb: warning: key {} is published only {secs} s before its predecessor stops signing: validators holding the DNSKEY set cached from before (up to its TTL) cannot follow the new signatures until it expires; give the predecessor a later Inactive time",
                        key.tag()
                    );
                }
                let at = |t: Option<u64>| {
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.unwrap_or(0)),
                    )
                };
                eprintln!(
                    "gslb: key {} is published from {} and signs from {}; set its predecessor's Delete time once validators no longer need it (dnssec-settime -D)",
                    key.tag(),
                    at(key.timing.publish),
                    at(key.timing.activate)
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gslb: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// A predecessor named as `dnssec-keygen -S` takes it: a path to its
/// `.key` or `.private` file, or its `K<zone>.+<alg>+<tag>` name in `keys`.
fn successor_path(pred: &std::path::Path, keys: &std::path::Path) -> std::path::PathBuf {
    let text = pred.to_string_lossy();
    if text.ends_with(".key") || text.ends_with(".private") {
        return pred.to_path_buf();
    }
    let base = if pred.components().count() == 1 {
        keys.join(pred)
    } else {
        pred.to_path_buf()
    };
    std::path::PathBuf::from(format!("{}.key", base.display()))
}

fn dnssec_ds(args: &gslb::cli::DsArgs) -> ExitCode {
    use gslb::dnssec::keyfile::KeyPair;
    let zone = match zone_name(&args.zone) {
        Ok(z) => z,
        Err(e) => {
            eprintln!("gslb: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let dir = match key_dir(&args.keys, args.zones.as_deref(), Some(&args.zone)) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let keys = match KeyPair::load_zone(&dir, &zone) {
        Ok((keys, warnings)) => {
            for w in warnings {
                eprintln!("gslb: {w}");
            }
            keys
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let mut printed = 0;
    for key in keys.iter().filter(|k| k.is_sep()) {
        match key.ds_line() {
            Ok(line) => {
                println!("{line}");
                printed += 1;
            }
            Err(e) => eprintln!("gslb: key {}: {e}", key.tag()),
        }
    }
    if printed == 0 {
        eprintln!("gslb: no key-signing key for {zone} in {}", dir.display());
        return ExitCode::from(EXIT_CONFIG);
    }
    ExitCode::SUCCESS
}

/// `gslb ready`: only 0 and 1, the two codes a Docker HEALTHCHECK may
/// return (2 is reserved).
fn ready_call(args: &gslb::cli::ReadyArgs) -> ExitCode {
    match admin_call_within(
        &args.admin,
        reqwest::Method::GET,
        "/readyz",
        &[],
        args.timeout,
    ) {
        Ok((200, _)) => {
            println!("ready");
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            let why = body.as_str().unwrap_or("").trim();
            eprintln!("gslb: not ready ({status}): {why}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("gslb: not ready: {e}");
            ExitCode::FAILURE
        }
    }
}

fn reload_call(args: &gslb::cli::ReloadArgs) -> ExitCode {
    let query: &[(&str, &str)] = if args.allow_removal {
        &[("allow-removal", "true")]
    } else {
        &[]
    };
    match admin_call(&args.admin, reqwest::Method::POST, "/api/v1/reload", query) {
        Ok((200, body)) => {
            let s = &body["summary"];
            let list = |k: &str| {
                s[k].as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default()
            };
            println!(
                "reloaded: {} zones (added: [{}], removed: [{}], changed: [{}])",
                s["zones"],
                list("zones_added"),
                list("zones_removed"),
                list("zones_changed")
            );
            ExitCode::SUCCESS
        }
        Ok((422, body)) => {
            for e in body["errors"].as_array().into_iter().flatten() {
                eprintln!("{}", e.as_str().unwrap_or_default());
            }
            eprintln!("reload rejected; the server keeps serving its previous zones");
            ExitCode::from(EXIT_CONFIG)
        }
        other => admin_failed("reload", &args.admin, other),
    }
}

fn demo(args: DemoArgs) -> ExitCode {
    let _log = gslb::logging::init("warn,gslb=warn", "text")
        .map_err(|e| eprintln!("gslb: {e}"))
        .ok();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime starts");
    match rt.block_on(gslb::demo::run(
        args.port,
        args.admin_port,
        args.backend_port,
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gslb demo: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

fn check(paths: Vec<PathBuf>, config: Option<PathBuf>) -> ExitCode {
    // The settings file first: exactly the loader `serve` uses.
    let file = match config
        .as_deref()
        .map(gslb::config::server::ServerFile::load)
    {
        None => None,
        Some(Ok(f)) => Some(f),
        Some(Err(errs)) => {
            for e in &errs.0 {
                eprintln!("{e}");
            }
            eprintln!("{} found", gslb::model::count(errs.0.len(), "problem"));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let paths = if !paths.is_empty() {
        paths
    } else if let Some(z) = file.as_ref().and_then(|f| f.zones.clone()) {
        vec![z]
    } else {
        vec![PathBuf::from("zones")]
    };
    let cluster = file.as_ref().and_then(|f| f.cluster());
    let tsig = file
        .as_ref()
        .map(|f| f.tsig_keys.clone())
        .unwrap_or_default();
    let loaded = gslb::config::load(&paths, gslb::config::LoadOptions::default()).and_then(|c| {
        let conflicts = gslb::config::cross_check(cluster.as_ref(), &tsig, &c);
        if conflicts.is_empty() {
            Ok(c)
        } else {
            Err(gslb::config::ConfigErrors(conflicts))
        }
    });
    match loaded {
        Ok(cfg) => {
            for z in &cfg.zones {
                println!(
                    "{}: zone {} ok: {}, {}, {}",
                    z.file.display(),
                    z.name,
                    gslb::model::count(z.record_count, "record"),
                    gslb::model::count(z.services.len(), "service"),
                    gslb::model::count(z.regions.len(), "region")
                );
            }
            use gslb::model::count;
            println!(
                "ok: {}, {}, {}, {}",
                count(cfg.zones.len(), "zone"),
                count(cfg.record_count(), "record"),
                count(cfg.service_count(), "service"),
                count(cfg.region_count(), "region")
            );
            ExitCode::SUCCESS
        }
        Err(errs) => {
            for e in &errs.0 {
                eprintln!("{e}");
            }
            eprintln!("{} found", gslb::model::count(errs.0.len(), "problem"));
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// Merge the settings file and flags (flags win).
fn settings(args: &ServeArgs) -> Result<(Settings, String, String), String> {
    let file = match &args.config {
        Some(p) => ServerFile::load(p).map_err(|e| e.to_string())?,
        None => ServerFile::default(),
    };
    let token = std::env::var("GSLB_ADMIN_TOKEN").ok();
    let mut merged = gslb::cli::merge_settings(args, &file, token)?;
    merged.settings.webhook_secret =
        gslb::cli::webhook_secret(&file, std::env::var("GSLB_WEBHOOK_SECRET").ok())?;
    Ok((merged.settings, merged.log_level, merged.log_format))
}

fn serve(args: ServeArgs) -> ExitCode {
    let (settings, level, format) = match settings(&args) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("gslb: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let _log = match gslb::logging::init(&level, &format) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("gslb: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        // UDP has threads of its own (one per socket); the runtime runs TCP,
        // probes and the admin API, and gets one thread per CPU.
        .worker_threads(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
        )
        .enable_all()
        .build()
        .expect("tokio runtime starts");
    rt.block_on(async move {
        let server = match Server::start(settings).await {
            Ok(s) => s,
            Err(AppError::Config(e)) => {
                for err in &e.0 {
                    tracing::error!("{err}");
                }
                tracing::error!(problems = e.0.len(), "zones do not load; not serving");
                return ExitCode::from(EXIT_CONFIG);
            }
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::from(EXIT_RUNTIME);
            }
        };
        // Under systemd (`Type=notify`): serving now, zones loaded and
        // sockets bound, so `systemctl start` returns only then and units
        // ordered after gslb start against a working server. Outside
        // systemd (no NOTIFY_SOCKET) nothing is sent. The variable stays
        // set (unsetting it races other threads); exec checks' programs
        // never see it, as they get a cleared environment.
        // Signals are caught from here on, before systemd hears of
        // readiness: a SIGTERM sent the moment after still shuts down
        // cleanly, never by the default action.
        let stop = shutdown_signal();
        let listening = server
            .dns_addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let status = format!("serving DNS on {listening}");
        if let Err(e) = sd_notify::notify(
            false,
            &[
                sd_notify::NotifyState::Ready,
                sd_notify::NotifyState::Status(&status),
            ],
        ) {
            tracing::warn!(error = %e, "cannot tell systemd that gslb is ready");
        }
        let token = server.shutdown_token();
        tokio::spawn(async move {
            stop.await;
            tracing::info!("shutting down");
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
            token.cancel();
        });
        server.wait().await;
        ExitCode::SUCCESS
    })
}

/// Resolves on SIGTERM or SIGINT; both are caught from the call on (not
/// from the first poll), so a signal that comes before then is not lost.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler installs");
        async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
