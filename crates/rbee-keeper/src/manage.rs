//! The management commands, each a thin layer over a hive's API: `workers`, `models`,
//! `hive` and `logs`. Without `--node`, `workers list` asks every known hive (the local one
//! and each registered node) and says which did not answer.

use clap::Subcommand;
use rbee_client::Download;
use rbee_types::hive::WorkerView;
use rbee_types::ModelRef;
use serde::Serialize;

use crate::config::Config;
use crate::node::Conn;
use crate::registry::Registry;
use crate::report::{table, Failure};

/// `workers …`.
#[derive(Debug, Subcommand)]
pub enum WorkersCommand {
    /// The workers of one node, or of every node: node, id, model, backend/device, state,
    /// slots, url.
    List {
        /// Only this node.
        #[arg(long)]
        node: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Whether a node's hive answers, its version, and its workers' states.
    Health {
        /// The node [default: the config's `[defaults] node`, else localhost].
        #[arg(long)]
        node: Option<String>,
    },
    /// Drain and stop one worker.
    Shutdown {
        /// The node [default: the config's `[defaults] node`, else localhost].
        #[arg(long)]
        node: Option<String>,
        /// The worker's id (from `workers list`).
        #[arg(long)]
        id: String,
    },
}

/// `models …`.
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// The node's model catalogue.
    List {
        /// The node [default: the config's `[defaults] node`, else localhost].
        #[arg(long)]
        node: Option<String>,
    },
    /// Download a model to the node, with a progress bar.
    Download {
        /// The node [default: the config's `[defaults] node`, else localhost].
        #[arg(long)]
        node: Option<String>,
        /// The model reference.
        #[arg(long)]
        model: ModelRef,
    },
    /// Remove a model from the node's catalogue (and its file, if downloaded).
    Rm {
        /// The node [default: the config's `[defaults] node`, else localhost].
        #[arg(long)]
        node: Option<String>,
        /// The model's id (from `models list`).
        #[arg(long)]
        id: String,
    },
}

/// `hive …`.
#[derive(Debug, Subcommand)]
pub enum HiveCommand {
    /// Version, supervisor, memory and disk of a node's hive.
    Status {
        /// The node [default: the config's `[defaults] node`, else localhost].
        #[arg(long)]
        node: Option<String>,
    },
    /// Start a node's hive: `systemctl start` of its unit (the user's rbee-hive.service,
    /// else the system's), then wait until it answers. On this machine without a unit, as
    /// `infer` does: a transient user unit, else a background process.
    Start {
        /// The node [default: the config's `[defaults] node`, else localhost].
        #[arg(long)]
        node: Option<String>,
    },
    /// Stop a node's hive (`systemctl stop` of its unit) and with it its workers.
    Stop {
        /// The node [default: the config's `[defaults] node`, else localhost].
        #[arg(long)]
        node: Option<String>,
    },
}

fn hive(node: &str, cfg: &Config, reg: &Registry) -> Result<Conn, Failure> {
    Conn::open(node, cfg, reg)
}

/// A worker as `workers list --json` prints it: the hive's view (without its key) and
/// the node it runs on.
#[derive(Serialize)]
struct ListedWorker {
    node: String,
    #[serde(flatten)]
    worker: WorkerView,
}

/// `-` for nothing.
fn or_dash(v: Option<impl ToString>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// Runs a `workers` command.
pub fn workers(cmd: WorkersCommand, cfg: &Config, reg: &Registry) -> Result<(), Failure> {
    match cmd {
        WorkersCommand::List { node, json } => {
            let nodes: Vec<String> = match node {
                Some(n) => vec![n],
                None => std::iter::once("localhost".to_owned())
                    .chain(
                        reg.list()
                            .map_err(|e| Failure::new("rbee-keeper", e.to_string()))?
                            .into_iter()
                            .map(|n| n.node_name),
                    )
                    .collect(),
            };
            let single = nodes.len() == 1;
            let mut rows = Vec::new();
            let mut all = Vec::new();
            for n in &nodes {
                let h = match hive(n, cfg, reg) {
                    Ok(h) => h,
                    Err(f) if single => return Err(f),
                    Err(f) => {
                        eprintln!("[rbee-keeper] ⚠️  {n}: {}", f.message);
                        continue;
                    }
                };
                match h.workers() {
                    Ok(workers) => {
                        for w in workers {
                            rows.push(vec![
                                n.clone(),
                                w.id.clone(),
                                w.model_ref.to_string(),
                                format!("{}:{}", w.backend, w.device),
                                w.state.to_string(),
                                format!("{}/{}", w.slots_busy, w.slots),
                                w.url.clone(),
                            ]);
                            all.push(ListedWorker {
                                node: n.clone(),
                                worker: w,
                            });
                        }
                    }
                    Err(e) if single => return Err(e.into()),
                    Err(e) if crate::client::unreachable(&e) => eprintln!(
                        "[rbee-keeper] ⚠️  {n}: its hive does not answer at {}",
                        h.base()
                    ),
                    Err(e) => eprintln!("[rbee-keeper] ⚠️  {n}: {}", Failure::from(e).message),
                }
            }
            if json {
                println!("{}", serde_json::to_string(&all).unwrap_or_default());
            } else if rows.is_empty() {
                eprintln!("[rbee-keeper] no workers running");
            } else {
                print!(
                    "{}",
                    table(
                        &["NODE", "ID", "MODEL", "BACKEND", "STATE", "SLOTS", "URL"],
                        &rows
                    )
                );
            }
            Ok(())
        }
        WorkersCommand::Health { node } => {
            let node = cfg.node_or_default(node);
            let h = hive(&node, cfg, reg)?;
            let health = h.health()?;
            let workers = h.workers()?;
            println!(
                "{node}: rbee-hive {} ({}), {} worker(s)",
                health.version,
                health.supervisor,
                workers.len()
            );
            for w in &workers {
                println!(
                    "  {} {} {}/{} slots busy",
                    w.id, w.state, w.slots_busy, w.slots
                );
            }
            Ok(())
        }
        WorkersCommand::Shutdown { node, id } => {
            let node = cfg.node_or_default(node);
            let h = hive(&node, cfg, reg)?;
            h.stop_worker(&id)?;
            eprintln!("[rbee-keeper] ✅ worker {id} on {node} stopped");
            Ok(())
        }
    }
}

/// Runs a `models` command.
pub fn models(cmd: ModelsCommand, cfg: &Config, reg: &Registry) -> Result<(), Failure> {
    match cmd {
        ModelsCommand::List { node } => {
            let node = cfg.node_or_default(node);
            let models = hive(&node, cfg, reg)?.models()?;
            let rows: Vec<Vec<String>> = models
                .into_iter()
                .map(|m| {
                    vec![
                        m.id,
                        m.reference,
                        crate::progress::bytes(m.size_bytes),
                        or_dash(m.quantization),
                        match m.hub_verified {
                            Some(false) => format!("{}, unverified by the hub", m.status.as_str()),
                            _ => m.status.as_str().to_owned(),
                        },
                    ]
                })
                .collect();
            if rows.is_empty() {
                eprintln!("[rbee-keeper] no models on {node}");
            } else {
                print!(
                    "{}",
                    table(&["ID", "REFERENCE", "SIZE", "QUANT", "STATUS"], &rows)
                );
            }
            Ok(())
        }
        ModelsCommand::Download { node, model } => {
            let node = cfg.node_or_default(node);
            let h = hive(&node, cfg, reg)?;
            match h.download(&model)? {
                Download::Ready(m) => {
                    eprintln!("[rbee-keeper] ✅ {} is on {node} already", m.id);
                    Ok(())
                }
                Download::Started(d) => crate::infer::follow_download(&h, &d.progress_url),
            }
        }
        ModelsCommand::Rm { node, id } => {
            let node = cfg.node_or_default(node);
            hive(&node, cfg, reg)?.delete_model(&id)?;
            eprintln!("[rbee-keeper] ✅ model {id} removed from {node}");
            Ok(())
        }
    }
}

/// Runs a `hive` command.
pub fn hive_cmd(cmd: HiveCommand, cfg: &Config, reg: &Registry) -> Result<(), Failure> {
    match cmd {
        HiveCommand::Status { node } => {
            let node = cfg.node_or_default(node);
            let h = hive(&node, cfg, reg)?;
            let health = h.health()?;
            let res = h.resources()?;
            println!("node:        {node} ({})", h.base());
            println!("version:     rbee-hive {}", health.version);
            println!("supervisor:  {}", health.supervisor);
            println!(
                "memory:      {} available of {}",
                crate::progress::bytes(res.memory.available_bytes),
                crate::progress::bytes(res.memory.total_bytes)
            );
            Ok(())
        }
        HiveCommand::Start { node } => crate::service::start(&cfg.node_or_default(node), cfg, reg),
        HiveCommand::Stop { node } => crate::service::stop(&cfg.node_or_default(node), cfg, reg),
    }
}

/// `logs --node [--worker] [--follow] [--lines]`: a worker's log through its hive, or
/// the hive's own journal on its node.
pub fn logs(
    node: &str,
    worker: Option<&str>,
    follow: bool,
    lines: usize,
    cfg: &Config,
    reg: &Registry,
) -> Result<(), Failure> {
    if follow {
        end_follow_on_ctrl_c();
    }
    let Some(worker) = worker else {
        return crate::service::journal(node, lines, follow, cfg, reg);
    };
    let h = hive(node, cfg, reg)?;
    if !follow {
        print!("{}", h.logs(worker, lines)?);
        return Ok(());
    }
    for line in h.follow_logs(worker, lines)? {
        println!("{}", line?.line);
    }
    Ok(())
}

extern "C" fn exit_interrupted(_: libc::c_int) {
    // SAFETY: _exit is async-signal-safe; every printed line is already written.
    unsafe { libc::_exit(i32::from(crate::infer::EXIT_INTERRUPTED)) }
}

/// A follow ends with Ctrl+C: exit 130 at once (what was printed is complete lines).
pub(crate) fn end_follow_on_ctrl_c() {
    // SAFETY: the handler only calls _exit.
    unsafe {
        libc::signal(
            libc::SIGINT,
            exit_interrupted as *const () as libc::sighandler_t,
        );
    }
}
