//! rbee-keeper, the command line: a registry of nodes reached over SSH, and one-command
//! inference on any of them.
//!
//! - [`paths`]: where the keeper keeps its data and config.
//! - [`config`]: the keeper's TOML config (SSH options, per-node API keys).
//! - [`registry`]: `beehives.db`, the registered nodes.
//! - [`ssh`]: the system's OpenSSH client, with retries and explained failures.
//! - [`report`]: errors as a person reads them (`[rbee-keeper] ❌ Error: …`) and tables.
//! - [`setup`]: the `setup` commands (add, update, list, remove nodes); `check`:
//!   `setup check`, every layer to a node checked;
//!   `deploy`: `setup install`, building rbee on a node.
//! - `shell`: scripts run on a node (here or over SSH), output streamed;
//!   `service`: the hive as a unit on its node (`hive start|stop`, its journal).
//! - [`run`]: `run MODEL [PROMPT]`, one answer or a chat; [`infer`]: the same with
//!   flags, for scripts; `answer`: what both share (the model made ready, the answer
//!   streamed); `names`: model names and references; `client`: the hive's errors;
//!   `local`: starting the local hive; `progress`: bars on stderr.
//! - [`manage`]: `workers`, `models`, `hive` and `logs`, thin over the hive's API.
//! - [`completions`]: shell completion scripts.
//! - [`install`]: the binaries, configs and units in place.
//! - `node`: reaching a node's hive and workers; `tunnel`: SSH port forwards.

// Modules main.rs does not call are crate-private; the lint keeps their items so.
#![warn(unreachable_pub)]

mod answer;
mod check;
mod client;
pub mod completions;
pub mod config;
mod deploy;
pub mod infer;
pub mod install;
mod local;
pub mod manage;
mod names;
mod node;
pub mod paths;
mod progress;
pub mod registry;
pub mod report;
pub mod run;
mod service;
pub mod setup;
mod shell;
pub mod ssh;
mod tunnel;
