//! The management commands, each a thin layer over a hive's API: `workers`, `models`,
//! `hive` and `logs`. Without `--node`, `workers list` asks every known hive (the local one
//! and each registered node) and says which did not answer.

use clap::Subcommand;
use rbee_client::Download;
use rbee_types::hive::{Model, WorkerView};
use serde::Serialize;
use serde_json::json;

use crate::config::Config;
use crate::names::ModelArg;
use crate::node::Conn;
use crate::registry::Registry;
use crate::report::{print_json, table, Failure};

/// `workers …`.
#[derive(Debug, Subcommand)]
pub enum WorkersCommand {
    /// The workers of one node, or of every node: node, id, model, backend/device, state,
    /// slots, url.
    List {
        /// Only this node.
        #[arg(long)]
        node: Option<String>,
    },
    /// Whether a node's hive answers, its version, and its workers' states.
    Health {
        /// The node [default: the config's `[defaults] node`, else localhost].
        #[arg(long)]
        node: Option<String>,
    },
    /// Drain and stop a worker: by its id (from `workers list`), or every worker of a
    /// model (its name or reference).
    #[command(override_usage = "rbee-keeper workers shutdown [OPTIONS] <ID_OR_MODEL>")]
    Shutdown {
        /// The worker's id, or a model.
        #[arg(value_name = "ID_OR_MODEL", required_unless_present = "id")]
        target: Option<String>,
        /// The worker's id (the same as the argument).
        #[arg(long, hide = true, conflicts_with = "target")]
        id: Option<String>,
        /// The node [default: the config's `[defaults] node`, else localhost].
        #[arg(long)]
        node: Option<String>,
    },
}

/// `models …`.
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// The node's model catalogue: the name to use in `run` and OpenAI requests, the
    /// catalogue id, reference, size, quantization and state.
    List {
        /// The node [default: the config's `[defaults] node`, else localhost].
        #[arg(long)]
        node: Option<String>,
    },
    /// Download a model to the node, with a progress bar.
    // The argument is required (or the hidden --model); clap would show it as optional.
    #[command(override_usage = "rbee-keeper models download [OPTIONS] <MODEL>")]
    Download {
        /// The model: a reference (hf:org/repo:Q4_K_M), or an alias of the node's hive.
        #[arg(value_name = "MODEL", required_unless_present = "model")]
        name: Option<ModelArg>,
        /// The same as the argument.
        #[arg(long, hide = true, conflicts_with = "name")]
        model: Option<ModelArg>,
        /// The node [default: the config's `[defaults] node`, else localhost].
        #[arg(long)]
        node: Option<String>,
    },
    /// Remove a model from the node's catalogue (and its file, if downloaded).
    #[command(override_usage = "rbee-keeper models rm [OPTIONS] <MODEL>")]
    Rm {
        /// The model: its name or catalogue id (from `models list`), or its reference.
        #[arg(value_name = "MODEL", required_unless_present = "id")]
        name: Option<ModelArg>,
        /// The same as the argument.
        #[arg(long, hide = true, conflicts_with = "name")]
        id: Option<ModelArg>,
        /// The node [default: the config's `[defaults] node`, else localhost].
        #[arg(long)]
        node: Option<String>,
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
    /// Stop a node's hive (`systemctl stop` of its unit, or SIGTERM to a hive the keeper
    /// started in the background) and with it its workers.
    Stop {
        /// The node [default: the config's `[defaults] node`, else localhost].
        #[arg(long)]
        node: Option<String>,
    },
}

/// The node's hive, once it answered (see [`Conn::reach`]).
fn hive(node: &str, cfg: &Config, reg: &Registry) -> Result<Conn, Failure> {
    let conn = Conn::open(node, cfg, reg)?;
    conn.reach(reg).map_err(Failure::from)?;
    Ok(conn)
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
pub fn workers(
    cmd: WorkersCommand,
    json: bool,
    cfg: &Config,
    reg: &Registry,
) -> Result<(), Failure> {
    match cmd {
        WorkersCommand::List { node } => {
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
                        crate::say!("⚠️  {n}: {}", f.message);
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
                    Err(e) if e.is_unreachable() => {
                        crate::say!("⚠️  {n}: its hive does not answer at {}", h.base())
                    }
                    Err(e) => crate::say!("⚠️  {n}: {}", Failure::from(e).message),
                }
            }
            if json {
                print_json(&all);
            } else if rows.is_empty() {
                crate::say!("no workers running");
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
            if json {
                print_json(&json!({
                    "node": node,
                    "version": health.version,
                    "supervisor": health.supervisor,
                    "workers": workers,
                }));
                return Ok(());
            }
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
        WorkersCommand::Shutdown { target, id, node } => {
            let node = cfg.node_or_default(node);
            let h = hive(&node, cfg, reg)?;
            let target = target.or(id).unwrap_or_default();
            let ids = workers_named(&h, &node, &target)?;
            for id in &ids {
                h.stop_worker(id)?;
                crate::say!("✅ worker {id} on {node} stopped");
            }
            if json {
                print_json(&json!({ "node": node, "stopped": ids }));
            }
            Ok(())
        }
    }
}

/// A catalogue entry as `models list --json` prints it: the name the front door serves it
/// under, and the entry.
#[derive(Serialize)]
struct ListedModel {
    name: Option<String>,
    #[serde(flatten)]
    model: Model,
}

/// The workers `target` names on the node: the worker of that id, else every worker of the
/// model it names (started with that reference, or serving the same file).
fn workers_named(h: &Conn, node: &str, target: &str) -> Result<Vec<String>, Failure> {
    let workers = h.workers()?;
    if workers.iter().any(|w| w.id == target) {
        return Ok(vec![target.to_owned()]);
    }
    let none = || {
        Failure::new("rbee-hive", format!("no worker {target:?} on {node}"))
            .code("WORKER_NOT_FOUND")
            .detail("code: WORKER_NOT_FOUND")
            .suggest([format!(
                "see the workers and their ids: rbee-keeper workers list --node {node}"
            )])
    };
    let Ok(model) = target.parse::<ModelArg>() else {
        return Err(none());
    };
    let r = match model.resolve(h, node) {
        Ok(r) => r,
        Err(f) if f.code.as_deref() == Some("MODEL_NOT_FOUND") => return Err(none()),
        Err(f) => return Err(f),
    };
    let path = h
        .models()?
        .into_iter()
        .find(|m| m.reference.parse().ok() == Some(r.clone()))
        .map(|m| m.local_path);
    let ids: Vec<String> = workers
        .iter()
        .filter(|w| w.model_ref == r || path.is_some() && w.model_path == path)
        .map(|w| w.id.clone())
        .collect();
    if ids.is_empty() {
        return Err(none());
    }
    Ok(ids)
}

/// Runs a `models` command.
pub fn models(cmd: ModelsCommand, json: bool, cfg: &Config, reg: &Registry) -> Result<(), Failure> {
    match cmd {
        ModelsCommand::List { node } => {
            let node = cfg.node_or_default(node);
            let h = hive(&node, cfg, reg)?;
            let names = h.openai_models()?.data;
            let listed: Vec<ListedModel> = h
                .models()?
                .into_iter()
                .map(|m| ListedModel {
                    name: names
                        .iter()
                        .find(|n| n.reference.is_some() && n.reference == m.reference.parse().ok())
                        .map(|n| n.id.clone()),
                    model: m,
                })
                .collect();
            if json {
                print_json(&listed);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = listed
                .into_iter()
                .map(|ListedModel { name, model: m }| {
                    vec![
                        or_dash(name),
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
                crate::say!("no models on {node}; download one: rbee-keeper models download hf:org/repo:Q4_K_M --node {node}");
            } else {
                print!(
                    "{}",
                    table(
                        &["NAME", "ID", "REFERENCE", "SIZE", "QUANT", "STATUS"],
                        &rows
                    )
                );
            }
            Ok(())
        }
        ModelsCommand::Download { name, model, node } => {
            let node = cfg.node_or_default(node);
            let h = hive(&node, cfg, reg)?;
            let model = name.or(model).unwrap_or(ModelArg::Name(String::new()));
            let r = model.resolve(&h, &node)?;
            let before: Vec<String> = h.models()?.into_iter().map(|m| m.id).collect();
            let m = match h.download(&r)? {
                // A file:// model is catalogued at once (nothing to download).
                Download::Ready(m) if before.contains(&m.id) => {
                    crate::say!("✅ {} is on {node} already", m.id);
                    *m
                }
                Download::Ready(m) => {
                    crate::say!("✅ {} added to the catalogue of {node}", m.id);
                    *m
                }
                Download::Started(d) => {
                    let id = crate::answer::follow_download(&h, &d.progress_url)?;
                    h.models()?
                        .into_iter()
                        .find(|m| m.id == id)
                        .ok_or_else(|| {
                            Failure::new(
                                "rbee-hive",
                                format!(
                                    "the downloaded model {id} is not in the catalogue of {node}"
                                ),
                            )
                        })?
                }
            };
            if json {
                print_json(&json!({ "node": node, "model": m }));
            }
            Ok(())
        }
        ModelsCommand::Rm { name, id, node } => {
            let node = cfg.node_or_default(node);
            let h = hive(&node, cfg, reg)?;
            let model = name.or(id).unwrap_or(ModelArg::Name(String::new()));
            let m = model.catalogued(&h, &node)?;
            h.delete_model(&m.id)?;
            crate::say!("✅ model {} removed from {node}", m.id);
            if json {
                print_json(&json!({ "node": node, "removed": m.id }));
            }
            Ok(())
        }
    }
}

/// Runs a `hive` command.
pub fn hive_cmd(cmd: HiveCommand, json: bool, cfg: &Config, reg: &Registry) -> Result<(), Failure> {
    match cmd {
        HiveCommand::Status { node } => {
            let node = cfg.node_or_default(node);
            let h = hive(&node, cfg, reg)?;
            let health = h.health()?;
            let res = h.resources()?;
            if json {
                print_json(&json!({
                    "node": node,
                    "url": h.base(),
                    "health": health,
                    "resources": res,
                }));
                return Ok(());
            }
            println!("node:        {node} ({})", h.base());
            println!("version:     rbee-hive {}", health.version);
            println!("supervisor:  {}", health.supervisor);
            println!(
                "memory:      {} available of {}",
                crate::progress::bytes(res.memory.available_bytes),
                crate::progress::bytes(res.memory.total_bytes)
            );
            println!(
                "disk:        {} free of {} at {}",
                crate::progress::bytes(res.disk.space.available_bytes),
                crate::progress::bytes(res.disk.space.total_bytes),
                res.disk.path.display()
            );
            Ok(())
        }
        HiveCommand::Start { node } => {
            let node = cfg.node_or_default(node);
            crate::service::start(&node, cfg, reg)?;
            if json {
                print_json(&json!({ "node": node, "hive": "running" }));
            }
            Ok(())
        }
        HiveCommand::Stop { node } => {
            let node = cfg.node_or_default(node);
            crate::service::stop(&node, cfg, reg)?;
            if json {
                print_json(&json!({ "node": node, "hive": "stopped" }));
            }
            Ok(())
        }
    }
}

/// `logs --node [--worker] [--follow] [--lines]`: a worker's log through its hive, or
/// the hive's own journal on its node.
///
/// With `--json`: a worker's lines as `{"node", "worker", "lines": [...]}`, or when
/// following one `{"line": "..."}` per line as they come.
pub fn logs(
    node: &str,
    worker: Option<&str>,
    (follow, lines, json): (bool, usize, bool),
    cfg: &Config,
    reg: &Registry,
) -> Result<(), Failure> {
    if follow {
        end_follow_on_ctrl_c();
    }
    let Some(worker) = worker else {
        if json {
            return Err(
                Failure::new("rbee-keeper", "--json is for a worker's log (--worker ID)").suggest(
                    [format!(
                        "the hive's journal as JSON: journalctl -u rbee-hive -o json (on {node})"
                    )],
                ),
            );
        }
        return crate::service::journal(node, lines, follow, cfg, reg);
    };
    let h = hive(node, cfg, reg)?;
    if !follow {
        let text = h.logs(worker, lines)?;
        if json {
            print_json(
                &json!({ "node": node, "worker": worker, "lines": text.lines().collect::<Vec<_>>() }),
            );
        } else {
            print!("{text}");
        }
        return Ok(());
    }
    for line in h.follow_logs(worker, lines)? {
        let line = line?.line;
        if json {
            println!("{}", json!({ "line": line }));
        } else {
            println!("{line}");
        }
    }
    Ok(())
}

extern "C" fn exit_interrupted(_: libc::c_int) {
    // SAFETY: _exit is async-signal-safe; every printed line is already written.
    unsafe { libc::_exit(i32::from(crate::answer::EXIT_INTERRUPTED)) }
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
