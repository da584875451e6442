//! rbee-hive, the node daemon: runs `llm-worker-rbee` workers as transient systemd units
//! (`rbee-worker@<model>.service`, over D-Bus) or as child processes, watches them, and
//! answers an HTTP API.
//!
//! - [`config`]: the TOML file and the command line.
//! - [`daemon`]: the process's life (sd-notify, signals, shutdown cascade).
//! - `api`: HTTP routes; `models`: the model routes (catalogue, downloads);
//!   `binaries`: the worker-binary routes (catalogue, builds from git).
//! - `hive`: spawn (reuse, preflight, ports, unit names), stop, adoption, events.
//! - `registry`: the workers in memory and their record files.
//! - `supervisor`: systemd or child processes, behind one interface.
//! - `monitor`: health checks and the idle timeout; `metrics`: what the hive counts;
//!   `scrape`: `GET /metrics`, the counters with the state now.
//! - `preflight`, `resources`: what the machine has and whether a worker fits.
//! - `front`: OpenAI's routes, the node's one front door (names, load on demand,
//!   proxying); `queue`: admission per model.
//! - `naming`: worker ids; `worker_log`: reading worker log lines; `logs`: the log
//!   route; models come from `rbee-models`.

// Everything but what main.rs calls is crate-private; the lint keeps it that way.
#![warn(unreachable_pub)]

mod api;
mod binaries;
pub mod config;
pub mod daemon;
mod front;
mod hive;
mod logs;
mod metrics;
mod models;
mod monitor;
mod naming;
mod placement;
mod preflight;
mod queue;
mod registry;
mod resources;
mod scrape;
mod supervisor;
mod worker_log;
