//! The command line: clap's definitions of the subcommands and of every option that
//! overrides the file.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use super::{PortRange, SupervisorChoice, WorkerLogs};

/// rbee's node daemon: runs llm-worker-rbee workers (one model each) as transient systemd
/// units `rbee-worker@<model>.service` — or as child processes where there is no systemd —
/// watches them, stops idle ones, and answers an HTTP API (default 127.0.0.1:9200).
///
///   rbee-hive --state-dir /var/lib/rbee
///   curl localhost:9200/v1/workers/spawn -d '{"model_ref": "hf:bartowski/SmolLM2-135M-Instruct-GGUF:Q4_K_M"}'
///   curl localhost:9200/v1/workers/spawn -d "{\"model_ref\": \"file://$HOME/models/smol.gguf\"}"
///   systemctl status 'rbee-worker@*'
///
/// A file:// model must lie under models_dir, a directory of model_dirs (config file) or,
/// for a user's hive, the user's home.
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
