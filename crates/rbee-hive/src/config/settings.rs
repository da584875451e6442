//! Settings resolved in one place: built-in defaults (some from the environment: the
//! state directory), then the TOML file, then the command line; the result checked once.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::{Config, Limits, Overrides, PortRange, SupervisorChoice, WorkerLogs};

impl Default for Config {
    fn default() -> Self {
        Config {
            host: IpAddr::from([127, 0, 0, 1]),
            port: 9200,
            state_dir: default_state_dir(),
            api_key_file: None,
            supervisor: SupervisorChoice::Auto,
            worker_ports: PortRange {
                start: 9300,
                end: 9399,
            },
            worker_host: IpAddr::from([127, 0, 0, 1]),
            idle_timeout_secs: 300,
            health_interval_secs: 30,
            load_timeout_secs: 600,
            stop_timeout_secs: 40,
            worker_binary: None,
            worker_logs: WorkerLogs::Auto,
            stop_workers_on_exit: true,
            models_dir: None,
            download_stall_secs: 60,
            download_attempts: 6,
            limits: Limits::default(),
            worker_source: None,
            provision: vec![],
            provision_sync: false,
            default_backend: Default::default(),
            default_device: None,
            aliases: Default::default(),
            queue_max: 64,
            queue_timeout_secs: 300,
            cors_origins: vec![],
            allowed_hosts: vec![],
            model_dirs: vec![],
            metrics_auth: true,
        }
    }
}

/// A configuration that cannot be used, with the reason.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Parses a TOML document and checks its values.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError(format!("{}: {e}", origin.display())))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and checks a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        Config::parse(&text, path)
    }

    /// The file (when given) with the command line on top.
    pub fn resolve(o: &Overrides) -> Result<Config, ConfigError> {
        let mut c = match &o.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        macro_rules! over {
            ($($f:ident),*) => { $( if let Some(v) = o.$f.clone() { c.$f = v; } )* };
        }
        over!(
            host,
            port,
            state_dir,
            supervisor,
            worker_ports,
            idle_timeout_secs,
            health_interval_secs,
            worker_logs
        );
        if o.api_key_file.is_some() {
            c.api_key_file = o.api_key_file.clone();
        }
        if o.worker_binary.is_some() {
            c.worker_binary = o.worker_binary.clone();
        }
        c.validate()?;
        Ok(c)
    }
}

fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY") {
        // systemd's StateDirectory= (may list several, colon-separated).
        let first = dir
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_owned();
        if !first.is_empty() {
            return PathBuf::from(first);
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/rbee");
    }
    match std::env::var_os("XDG_STATE_HOME") {
        Some(x) if !x.is_empty() => PathBuf::from(x).join("rbee"),
        _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into()))
            .join(".local/state/rbee"),
    }
}
