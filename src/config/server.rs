//! The server settings file (`--config gslb.toml`): the same settings as the
//! `serve` flags, for production. Flags given on the command line win.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, ConfigErrors, Source};

/// `gslb.toml`.
#[derive(Debug, Default, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServerFile {
    /// Folder (or file) of zone files (default `zones`).
    pub zones: Option<PathBuf>,
    /// DNS listeners, UDP and TCP each (default `["127.0.0.1:5353"]`).
    pub listen: Option<Vec<SocketAddr>>,
    /// Admin HTTP listener (default `127.0.0.1:9153`); `"off"` disables it.
    pub admin: Option<String>,
    /// Bearer token for mutating admin calls (or env `GSLB_ADMIN_TOKEN`).
    pub admin_token: Option<String>,
    /// `error`, `warn`, `info` (default), `debug`, `trace`, or a tracing filter.
    pub log_level: Option<String>,
    /// `text` (default) or `json`.
    pub log_format: Option<String>,
    /// Where health state and overrides persist across restarts
    /// (default `gslb-state.json` in the working directory); `"off"` disables it.
    pub state_file: Option<String>,
    /// EDNS UDP payload size we advertise and answer up to (default 1232).
    pub udp_payload: Option<u16>,
    /// Close idle DNS-over-TCP connections after this long (default `"10s"`).
    pub tcp_idle_timeout: Option<String>,
    /// Reload when a file in the zones folder changes (default false).
    pub watch: Option<bool>,
    /// URL receiving a JSON POST on every region state change of any zone.
    pub webhook: Option<String>,
}

impl ServerFile {
    /// Read and parse; errors name `file:line:column`.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                origin: crate::model::Origin {
                    file: path.to_path_buf(),
                    line: 0,
                    col: 0,
                },
                msg: format!("cannot read: {e}"),
            }])
        })?;
        let src = Source::new(path, &text);
        let file: ServerFile = toml::from_str(&text).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                origin: src.origin(e.span().map(|s| s.start).unwrap_or(0)),
                msg: e.message().trim().to_string(),
            }])
        })?;
        if let Some(t) = &file.tcp_idle_timeout
            && humantime::parse_duration(t).is_err()
        {
            return Err(ConfigErrors(vec![ConfigError {
                origin: src.origin(text.find("tcp-idle-timeout").unwrap_or(0)),
                msg: format!("tcp-idle-timeout {t:?} is not a duration like \"10s\""),
            }]));
        }
        Ok(file)
    }

    /// The TCP idle timeout, parsed (validated by `load`).
    pub fn tcp_idle(&self) -> Option<Duration> {
        self.tcp_idle_timeout
            .as_deref()
            .and_then(|t| humantime::parse_duration(t).ok())
    }
}
