//! The management commands, each a thin layer over a hive's API: `workers`, `models`,
//! `hive` and `logs`. Without `--node`, `workers list` asks every known hive (the local one
//! and each registered node) and says which did not answer.

use clap::Subcommand;
use serde_json::{json, Value};

use crate::client::Answer;
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
        model: String,
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

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
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
                match h.call("GET", "/v1/workers/list", None) {
                    Ok(Answer::Ok(_, v)) => {
                        for w in v["workers"].as_array().into_iter().flatten() {
                            rows.push(vec![
                                n.clone(),
                                s(&w["id"]),
                                s(&w["model_ref"]),
                                format!("{}:{}", s(&w["backend"]), s(&w["device"])),
                                s(&w["state"]),
                                format!("{}/{}", s(&w["slots_busy"]), s(&w["slots"])),
                                s(&w["url"]),
                            ]);
                            let mut w = w.clone();
                            w["node"] = json!(n);
                            if let Some(o) = w.as_object_mut() {
                                o.remove("api_key");
                            }
                            all.push(w);
                        }
                    }
                    Ok(Answer::Err(_, e)) => {
                        if single {
                            return Err(h.failure(&e));
                        }
                        eprintln!("[rbee-keeper] ⚠️  {n}: {}", e.error.message);
                    }
                    Err(f) => {
                        if single {
                            return Err(f);
                        }
                        eprintln!(
                            "[rbee-keeper] ⚠️  {n}: its hive does not answer at {}",
                            h.base
                        );
                    }
                }
            }
            if json {
                println!("{}", Value::Array(all));
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
            let (_, health) = h.json("GET", "/v1/health", None)?;
            let (_, list) = h.json("GET", "/v1/workers/list", None)?;
            let workers = list["workers"].as_array().cloned().unwrap_or_default();
            println!(
                "{node}: rbee-hive {} ({}), {} worker(s)",
                s(&health["version"]),
                s(&health["supervisor"]),
                workers.len()
            );
            for w in &workers {
                println!(
                    "  {} {} {}/{} slots busy",
                    s(&w["id"]),
                    s(&w["state"]),
                    s(&w["slots_busy"]),
                    s(&w["slots"])
                );
            }
            Ok(())
        }
        WorkersCommand::Shutdown { node, id } => {
            let node = cfg.node_or_default(node);
            let h = hive(&node, cfg, reg)?;
            h.json(
                "POST",
                &format!("/v1/workers/{id}/shutdown"),
                Some(&json!({})),
            )?;
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
            let (_, v) = hive(&node, cfg, reg)?.json("GET", "/v1/models", None)?;
            let rows: Vec<Vec<String>> = v["models"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| {
                    vec![
                        s(&m["id"]),
                        s(&m["reference"]),
                        crate::progress::bytes(m["size_bytes"].as_u64().unwrap_or(0)),
                        s(&m["quantization"]),
                        s(&m["status"]),
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
            if let Err(e) = rbee_models::reference::ModelRef::parse(&model) {
                return Err(Failure::new("rbee-keeper", e.error.message));
            }
            let h = hive(&node, cfg, reg)?;
            let (status, v) = h.json(
                "POST",
                "/v1/models/download",
                Some(&json!({"model_ref": model})),
            )?;
            if status == 200 {
                eprintln!(
                    "[rbee-keeper] ✅ {} is on {node} already",
                    s(&v["model"]["id"])
                );
                return Ok(());
            }
            crate::infer::follow_download(&h, v["progress_url"].as_str().unwrap_or(""))
        }
        ModelsCommand::Rm { node, id } => {
            let node = cfg.node_or_default(node);
            hive(&node, cfg, reg)?.json("DELETE", &format!("/v1/models/{id}"), None)?;
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
            let (_, health) = h.json("GET", "/v1/health", None)?;
            let (_, res) = h.json("GET", "/v1/resources", None)?;
            println!("node:        {node} ({})", h.base);
            println!("version:     rbee-hive {}", s(&health["version"]));
            println!("supervisor:  {}", s(&health["supervisor"]));
            println!(
                "memory:      {} available of {}",
                crate::progress::bytes(res["memory"]["available_bytes"].as_u64().unwrap_or(0)),
                crate::progress::bytes(res["memory"]["total_bytes"].as_u64().unwrap_or(0))
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
    let path = format!("/v1/workers/{worker}/logs?lines={lines}");
    if !follow {
        print!("{}", h.text(&path)?);
        return Ok(());
    }
    let mut events = h
        .stream(&format!("{path}&follow=true"), None)
        .map_err(|_| {
            Failure::new(
                "rbee-keeper",
                format!("cannot follow the log of {worker} on {node}"),
            )
        })?;
    while let Some(e) = events.next_json() {
        if let Some(l) = e["line"].as_str() {
            println!("{l}");
        }
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
