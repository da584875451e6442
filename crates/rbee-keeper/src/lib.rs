//! rbee-keeper, the command line: a registry of nodes reached over SSH, and (to come)
//! one-command inference on any of them.
//!
//! - [`paths`]: where the keeper keeps its data and config.
//! - [`config`]: the keeper's TOML config (SSH options, per-node API keys).
//! - [`registry`]: `beehives.db`, the registered nodes.
//! - [`ssh`]: the system's OpenSSH client, with retries and explained failures.
//! - [`report`]: errors as a person reads them (`[rbee-keeper] ❌ Error: …`) and tables.
//! - [`setup`]: the `setup` commands (add, update, list, remove nodes).

pub mod config;
pub mod paths;
pub mod registry;
pub mod report;
pub mod setup;
pub mod ssh;
