//! Configuration: a TOML file, every option of which the command line can override.
//!
//! - [`cli`]: the command line (clap).
//! - [`values`]: option values with their own syntax (port ranges, choices, limits).
//! - [`settings`]: defaults, then the file, then the command line, resolved in one place.
//! - [`validate`]: values that parse but cannot work.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod cli;
mod settings;
mod validate;
mod values;

pub use cli::{Cli, Command, Overrides};
pub use settings::ConfigError;
pub use values::{Limits, PortRange, SupervisorChoice, WorkerLogs};

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

impl Config {
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
