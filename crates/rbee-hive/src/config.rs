//! Configuration: a TOML file, every option of which the command line can override.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

/// rbee's node daemon: runs llm-worker-rbee workers (one model each) as transient systemd
/// units `rbee-worker@<model>.service` — or as child processes where there is no systemd —
/// watches them, stops idle ones, and answers an HTTP API (default 127.0.0.1:9200).
///
///   rbee-hive --state-dir /var/lib/rbee
///   curl localhost:9200/v1/workers/spawn -d '{"model_ref": "file:///models/smol.gguf"}'
///   systemctl status 'rbee-worker@*'
///
/// Every option can also be set in the TOML file given with --config (same names, with
/// underscores); the command line wins.
#[derive(Debug, Parser)]
#[command(name = "rbee-hive", version, about, long_about, verbatim_doc_comment)]
pub struct Cli {
    /// What to do (default: run the daemon).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of the daemon.
    #[command(flatten)]
    pub options: Overrides,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validates a configuration file and exits: 0 when valid, 2 with the reason when not.
    /// Files it names (API key, worker binary) are not opened: they may only exist at run
    /// time.
    CheckConfig {
        /// The TOML file.
        path: PathBuf,
    },
}

/// How workers are run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SupervisorChoice {
    /// systemd when a manager answers over D-Bus (the system manager first when root, the
    /// user's manager first otherwise), else child processes.
    #[default]
    Auto,
    /// Transient units of the system manager (system bus).
    SystemdSystem,
    /// Transient units of the user's manager (session bus, `systemctl --user`).
    SystemdUser,
    /// Child processes of the hive (no systemd: macOS, containers).
    Process,
}

/// Where systemd workers' output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum WorkerLogs {
    /// The journal when journald runs here, else files.
    #[default]
    Auto,
    /// journald (`journalctl -u rbee-worker@…`).
    Journal,
    /// `<state-dir>/logs/<worker>.log`.
    File,
}

/// An inclusive port range, written `9300-9399`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub start: u16,
    /// Last port (inclusive).
    pub end: u16,
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid port range {s:?}: expected FIRST-LAST, e.g. 9300-9399");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let start: u16 = a.trim().parse().map_err(|_| bad())?;
        let end: u16 = b.trim().parse().map_err(|_| bad())?;
        if start == 0 || start > end {
            return Err(format!(
                "invalid port range {s:?}: the first port must be at least 1 and not above the last"
            ));
        }
        Ok(PortRange { start, end })
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

impl Serialize for PortRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Command-line options; each overrides the same option of the config file.
#[derive(Debug, Clone, Default, Args)]
pub struct Overrides {
    /// TOML configuration file.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Address of the hive's API [default: 127.0.0.1]. Anything but loopback needs an API
    /// key or a firewall.
    #[arg(long)]
    pub host: Option<IpAddr>,
    /// Port of the hive's API [default: 9200].
    #[arg(long)]
    pub port: Option<u16>,
    /// Where worker records, keys and logs live [default: $STATE_DIRECTORY, else
    /// /var/lib/rbee as root, else ~/.local/state/rbee].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// File holding the API key clients must send as `Authorization: Bearer <key>`.
    #[arg(long, value_name = "PATH")]
    pub api_key_file: Option<PathBuf>,
    /// How workers run [default: auto].
    #[arg(long, value_enum)]
    pub supervisor: Option<SupervisorChoice>,
    /// Ports workers listen on [default: 9300-9399].
    #[arg(long, value_name = "FIRST-LAST")]
    pub worker_ports: Option<PortRange>,
    /// Seconds a worker may sit idle before it is stopped; 0 never stops one [default: 300].
    #[arg(long, value_name = "SECONDS")]
    pub idle_timeout_secs: Option<u64>,
    /// Seconds between health checks of each worker [default: 30].
    #[arg(long, value_name = "SECONDS")]
    pub health_interval_secs: Option<u64>,
    /// The llm-worker-rbee binary [default: the one next to rbee-hive, else on PATH].
    #[arg(long, value_name = "PATH")]
    pub worker_binary: Option<PathBuf>,
    /// Where systemd workers' output goes [default: auto].
    #[arg(long, value_enum)]
    pub worker_logs: Option<WorkerLogs>,
}

/// Limits the operator sets below what the machine has (also how tests provoke each
/// preflight failure).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Most RAM all workers together may use, bytes (default: what the machine has
    /// available).
    pub ram_bytes: Option<u64>,
    /// Most VRAM a worker may use on its device, bytes (default: the device's free memory).
    pub vram_bytes: Option<u64>,
    /// Free disk space the state directory must keep, bytes (default 100 MiB).
    pub min_free_disk_bytes: Option<u64>,
}

/// The whole configuration, as the TOML file spells it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the hive's API.
    pub host: IpAddr,
    /// Port of the hive's API.
    pub port: u16,
    /// Worker records, keys and logs.
    pub state_dir: PathBuf,
    /// File with the API key.
    pub api_key_file: Option<PathBuf>,
    /// How workers run.
    pub supervisor: SupervisorChoice,
    /// Ports workers listen on.
    pub worker_ports: PortRange,
    /// Address workers listen on.
    pub worker_host: IpAddr,
    /// Idle seconds before a worker is stopped (0: never).
    pub idle_timeout_secs: u64,
    /// Seconds between health checks.
    pub health_interval_secs: u64,
    /// Seconds a worker may take to load its model before the hive gives up on it.
    pub load_timeout_secs: u64,
    /// Seconds a worker may take to drain when stopped, before systemd (or the hive)
    /// kills it.
    pub stop_timeout_secs: u64,
    /// The worker binary.
    pub worker_binary: Option<PathBuf>,
    /// Where systemd workers' output goes.
    pub worker_logs: WorkerLogs,
    /// Stop every worker when the hive gets SIGTERM (set false to keep workers across
    /// hive restarts; they are adopted on the next start either way).
    pub stop_workers_on_exit: bool,
    /// Where downloaded models live (default `<state_dir>/models`).
    pub models_dir: Option<PathBuf>,
    /// Seconds without a byte before a download attempt counts as stalled.
    pub download_stall_secs: u64,
    /// Attempts per download (exponential backoff from 1 s between them).
    pub download_attempts: u32,
    /// Limits below what the machine has.
    pub limits: Limits,
    /// Where the hive builds its worker binaries from (`[worker_source]`: `git_url`,
    /// `git_ref`, `ssh_key`, `cargo`, `max_concurrent_builds`); without it, the worker
    /// installed next to the hive runs.
    pub worker_source: Option<rbee_binaries::Source>,
    /// Models to have at start (`provision = ["hf:org/repo:Q4_K_M", "file:///…gguf"]`):
    /// each missing one is downloaded (or imported) in the background once the hive runs;
    /// one that fails is logged and does not stop the hive.
    pub provision: Vec<rbee_types::ModelRef>,
    /// Make the catalogue exactly `provision` at start: every catalogued model that
    /// `provision` does not name is removed (a downloaded file is deleted; a `file://`
    /// model's file and the Hugging Face cache are never touched), except one a running
    /// worker serves, which is kept until a later start. Needs a non-empty `provision`.
    pub provision_sync: bool,
    /// Where workers run when a spawn names no backend (every front-door request, the
    /// keeper without `--backend`): `auto` (a GPU the worker binary can drive, the one with
    /// the most free memory, falling back to the CPU for a model it cannot hold), `cpu`,
    /// `cuda` or `metal`.
    pub default_backend: crate::placement::DefaultBackend,
    /// The device such workers get (default: `auto` picks; `cuda` and `metal` take 0).
    pub default_device: Option<u32>,
    /// Names for models in OpenAI requests (`[aliases]`, e.g. `chat = "hf:org/repo:Q4_K_M"`
    /// or `chat = "smollm2-135m-instruct:q4_1"`): listed by `GET /v1/models` next to the
    /// models' own ids.
    pub aliases: std::collections::BTreeMap<String, String>,
    /// Requests that may wait per model while every slot of its workers is busy; more get
    /// 429 with `Retry-After`.
    pub queue_max: usize,
    /// Seconds a request may wait in its model's queue before it gets 429.
    pub queue_timeout_secs: u64,
    /// Origins of browser UIs allowed to call the API (`http://localhost:3000`, or `*`):
    /// their preflights are answered and answers carry `Access-Control-Allow-Origin`.
    /// Default none: no CORS headers, and preflights are refused.
    pub cors_origins: Vec<String>,
    /// Host names the API answers to besides `localhost`, `*.localhost`, IP addresses and
    /// this machine's hostname (`["rbee.lan", "*.home.arpa"]`): a request naming any other
    /// `Host` gets 403 (DNS rebinding protection). A hive bound beyond loopback with an
    /// `api_key_file` answers any `Host`.
    pub allowed_hosts: Vec<String>,
    /// Directories `file://` model references may point into, besides `models_dir` and the
    /// directories of `file://` models in `provision`. A hive not under the system manager
    /// also serves from its user's home. Any
    /// other path gets the same "no readable file" answer as a missing one.
    pub model_dirs: Vec<PathBuf>,
    /// Whether `GET /metrics` needs the API key. `false` serves it without the key to
    /// clients on this machine (a local Prometheus or agent); others still need the key.
    /// Workers started by the hive get the same.
    pub metrics_auth: bool,
}

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

/// An alias is a plain name (not itself a reference) for a model id or a reference.
fn check_alias(name: &str, target: &str) -> Result<(), String> {
    let plain = |s: &str| {
        !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:-/@".contains(&b))
    };
    if !plain(name) || name.parse::<rbee_types::ModelRef>().is_ok() {
        return Err(
            "an alias is letters, digits and . _ : - / @ (at most 128), and not a model reference"
                .into(),
        );
    }
    if target.starts_with("hf:") || target.starts_with("file:") {
        return target
            .parse::<rbee_types::ModelRef>()
            .map(|_| ())
            .map_err(|e| e.to_string());
    }
    if plain(target) {
        Ok(())
    } else {
        Err(format!(
            "{target:?} is neither a model id (as GET /v1/models lists them) nor a reference"
        ))
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

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: String| Err(ConfigError(m));
        if self.port == 0 {
            return err("port must be between 1 and 65535".into());
        }
        let p = self.worker_ports;
        if p.start == 0 || p.start > p.end {
            return err(format!("worker_ports {p} is empty"));
        }
        if (p.start..=p.end).contains(&self.port) {
            return err(format!(
                "worker_ports {p} contains the hive's own port {}; choose a range without it",
                self.port
            ));
        }
        if self.health_interval_secs == 0 || self.health_interval_secs > 3600 {
            return err(format!(
                "health_interval_secs must be between 1 and 3600, not {}",
                self.health_interval_secs
            ));
        }
        if self.load_timeout_secs == 0 || self.stop_timeout_secs == 0 {
            return err("load_timeout_secs and stop_timeout_secs must be at least 1".into());
        }
        if !self.state_dir.is_absolute() {
            return err(format!(
                "state_dir must be an absolute path, not {}",
                self.state_dir.display()
            ));
        }
        if self.download_stall_secs == 0 || !(1..=20).contains(&self.download_attempts) {
            return err(
                "download_stall_secs must be at least 1 and download_attempts between 1 and 20"
                    .into(),
            );
        }
        for (name, path) in [
            ("api_key_file", &self.api_key_file),
            ("worker_binary", &self.worker_binary),
            ("models_dir", &self.models_dir),
        ] {
            if let Some(path) = path {
                if !path.is_absolute() {
                    return err(format!(
                        "{name} must be an absolute path, not {}",
                        path.display()
                    ));
                }
            }
        }
        if let Some(src) = &self.worker_source {
            rbee_binaries::source::validate(src).map_err(ConfigError)?;
        }
        if self.provision_sync && self.provision.is_empty() {
            return err(
                "provision_sync = true with an empty provision list would remove every model in \
                 the catalogue; list the models to keep in provision, or set provision_sync = \
                 false"
                    .into(),
            );
        }
        if !(1..=10_000).contains(&self.queue_max) || self.queue_timeout_secs == 0 {
            return err(format!(
                "queue_max must be between 1 and 10000 (not {}) and queue_timeout_secs at least 1",
                self.queue_max
            ));
        }
        for o in &self.cors_origins {
            rbee_http::cors::check_origin(o)
                .map_err(|e| ConfigError(format!("cors_origins: {e}")))?;
        }
        if let Some(d) = self.model_dirs.iter().find(|d| !d.is_absolute()) {
            return err(format!(
                "model_dirs: {} is not an absolute path",
                d.display()
            ));
        }
        for h in &self.allowed_hosts {
            let name = h.strip_prefix("*.").unwrap_or(h);
            let plain = !name.is_empty()
                && name.len() <= 253
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !plain {
                return err(format!(
                    "allowed_hosts: {h:?} is not a host name (e.g. \"rbee.lan\" or \"*.home.arpa\")"
                ));
            }
        }
        for (name, target) in &self.aliases {
            check_alias(name, target)
                .map_err(|why| ConfigError(format!("[aliases] {name:?}: {why}")))?;
        }
        Ok(())
    }

    /// Where `file://` models may be (besides `models_dir`): `model_dirs`, the folders of
    /// provisioned `file://` models, and for a user's hive (`system`: false) its home.
    pub fn file_model_dirs(&self, system: bool) -> Vec<PathBuf> {
        let mut dirs = self.model_dirs.clone();
        for r in &self.provision {
            if let rbee_types::ModelRef::File { path } = r {
                dirs.extend(path.parent().map(Path::to_path_buf));
            }
        }
        // Not the state directory: a user's hive run as root keeps it in /var/lib/rbee.
        if !system {
            dirs.extend(std::env::var_os("HOME").map(PathBuf::from));
        }
        dirs
    }

    /// The directory of worker records and keys.
    pub fn workers_dir(&self) -> PathBuf {
        self.state_dir.join("workers")
    }

    /// The directory of downloaded models.
    pub fn models_dir(&self) -> PathBuf {
        self.models_dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("models"))
    }

    /// The directory of worker log files.
    pub fn logs_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("test.toml"))
    }

    #[test]
    fn default_backend_is_auto_unless_set_to_a_known_backend() {
        use crate::placement::DefaultBackend;
        let c = parse("").unwrap();
        assert_eq!(
            (c.default_backend, c.default_device),
            (DefaultBackend::Auto, None)
        );
        let c = parse("default_backend = \"cuda\"\ndefault_device = 1").unwrap();
        assert_eq!(
            (c.default_backend, c.default_device),
            (DefaultBackend::Cuda, Some(1))
        );
        let e = parse("default_backend = \"rocm\"").unwrap_err().to_string();
        assert!(
            e.contains("unknown variant `rocm`") && e.contains("`auto`"),
            "{e}"
        );
        let e = parse("default_device = -1").unwrap_err().to_string();
        assert!(e.contains("default_device"), "{e}");
    }

    #[test]
    fn provision_sync_needs_a_provision_list_and_a_boolean() {
        let c = parse("provision = [\"hf:org/repo\"]\nprovision_sync = true").unwrap();
        assert!(c.provision_sync);
        assert!(!parse("").unwrap().provision_sync, "off by default");
        let e = parse("provision_sync = true").unwrap_err().to_string();
        assert!(
            e.contains("would remove every model") && e.contains("provision_sync = false"),
            "{e}"
        );
        let e = parse("provision = [\"hf:org/repo\"]\nprovision_sync = \"yes\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("provision_sync"), "{e}");
    }

    #[test]
    fn provisioned_models_are_references_checked_with_the_config() {
        let c = parse("provision = [\"hf:org/repo:Q4_K_M\", \"file:///m/a.gguf\"]").unwrap();
        assert_eq!(c.provision.len(), 2);
        let e = parse("provision = [\"hf:../etc\"]")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("provision = ") && e.contains("invalid model reference"),
            "{e}"
        );
        let e = parse("provision = [\"http://x/m.gguf\"]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("hf:org/repo"), "{e}");
    }

    #[test]
    fn aliases_and_queue_bounds_are_checked() {
        let c = parse("queue_max = 8\n[aliases]\nchat = \"hf:org/repo:Q4_K_M\"\nsmall = \"smollm2-135m-instruct:q4_1\"\n").unwrap();
        assert_eq!(c.aliases.len(), 2);
        assert_eq!(c.queue_max, 8);
        for (toml, says) in [
            ("[aliases]\nchat = \"hf:../x\"\n", "invalid model reference"),
            (
                "[aliases]\n\"hf:org/repo\" = \"x\"\n",
                "not a model reference",
            ),
            ("[aliases]\nchat = \"two words\"\n", "neither a model id"),
            ("queue_max = 0\n", "queue_max"),
            ("queue_timeout_secs = 0\n", "queue_timeout_secs"),
            ("cors_origins = [\"localhost:3000\"]\n", "cors_origins"),
            ("allowed_hosts = [\"rbee.lan:9200\"]\n", "allowed_hosts"),
        ] {
            let e = parse(toml).unwrap_err().to_string();
            assert!(e.contains(says), "{toml}: {e}");
        }
    }

    #[test]
    fn an_empty_file_means_the_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.port, 9200);
        assert_eq!(c.idle_timeout_secs, 300);
        assert_eq!(c.health_interval_secs, 30);
        assert_eq!(c.worker_ports.to_string(), "9300-9399");
    }

    #[test]
    fn every_option_can_be_set_in_the_file() {
        let c = parse(
            r#"
            host = "0.0.0.0"
            port = 9999
            state_dir = "/srv/rbee"
            api_key_file = "/run/keys/rbee"
            supervisor = "systemd-user"
            worker_ports = "10000-10010"
            worker_host = "127.0.0.1"
            idle_timeout_secs = 0
            health_interval_secs = 5
            load_timeout_secs = 60
            stop_timeout_secs = 10
            worker_binary = "/opt/rbee/llm-worker-rbee"
            worker_logs = "file"
            stop_workers_on_exit = false
            models_dir = "/srv/models"
            download_stall_secs = 30
            download_attempts = 3
            [limits]
            ram_bytes = 1000
            vram_bytes = 2000
            min_free_disk_bytes = 3000
            [worker_source]
            git_url = "git@github.com:rbee-project/rbee.git"
            git_ref = "v0.1.0"
            ssh_key = "/var/lib/rbee/deploy_key"
            cargo = "/opt/rust/bin/cargo"
            max_concurrent_builds = 2
            "#,
        )
        .unwrap();
        let src = c.worker_source.as_ref().unwrap();
        assert_eq!(src.git_ref, "v0.1.0");
        assert_eq!(src.max_concurrent_builds, 2);
        assert_eq!(c.supervisor, SupervisorChoice::SystemdUser);
        assert_eq!(
            c.worker_ports,
            PortRange {
                start: 10000,
                end: 10010
            }
        );
        assert_eq!(c.limits.ram_bytes, Some(1000));
        assert!(!c.stop_workers_on_exit);
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        for (doc, says) in [
            ("prot = 1", "unknown field `prot`"),
            ("port = 0", "port must be between"),
            ("port = 70000", "port"),
            ("worker_ports = \"9400-9300\"", "invalid port range"),
            ("worker_ports = \"abc\"", "expected FIRST-LAST"),
            ("port = 9300", "contains the hive's own port"),
            ("health_interval_secs = 0", "health_interval_secs"),
            ("state_dir = \"relative\"", "absolute"),
            ("supervisor = \"docker\"", "unknown variant"),
            ("[limits]\nram = 1", "unknown field `ram`"),
            ("port = ", "test.toml"),
            (
                "[worker_source]\ngit_ref = \"main\"",
                "missing field `git_url`",
            ),
            ("[worker_source]\ngit_url = \"\"", "is not a repository URL"),
            (
                "[worker_source]\ngit_url = \"/r\"\ngit_ref = \"a..b\"",
                "git_ref",
            ),
            (
                "[worker_source]\ngit_url = \"/r\"\nssh_key = \"id_rsa\"",
                "ssh_key must be an absolute path",
            ),
            (
                "[worker_source]\ngit_url = \"/r\"\nmax_concurrent_builds = 0",
                "max_concurrent_builds",
            ),
            (
                "[worker_source]\ngit_url = \"/r\"\nbranch = \"x\"",
                "unknown field `branch`",
            ),
        ] {
            let e = parse(doc).expect_err(doc).to_string();
            assert!(e.contains(says), "{doc:?} → {e}");
        }
    }

    #[test]
    fn the_command_line_wins_over_the_file() {
        let dir = std::env::temp_dir().join(format!("rbee-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("hive.toml");
        std::fs::write(&file, "port = 9500\nidle_timeout_secs = 7\n").unwrap();
        let c = Config::resolve(&Overrides {
            config: Some(file),
            port: Some(9600),
            ..Default::default()
        })
        .unwrap();
        assert_eq!((c.port, c.idle_timeout_secs), (9600, 7));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
