//! Worker binaries for rbee-hive: which `llm-worker-rbee` a worker runs.
//!
//! With a `[worker_source]` configured, the hive builds the worker itself: [`source`]
//! clones or fetches the git repository (git2) and checks out the pinned ref, [`cargo`]
//! runs `cargo build --release --locked` with the backend's features, [`install`] verifies
//! the result and copies it under a content-addressed name, and [`catalog`] records it in
//! `workers.db`. [`builder::Builder`] ties these together: shared builds, a limit on
//! concurrent builds, a progress feed per build, and old binaries removed once unused.
//! Without a source, the worker installed next to the hive is recorded and used.
//! Errors are [`BinaryError`]s; the hive turns them into its HTTP error envelope.
//! [`child`]: child processes that die with the hive (builds, and the hive's process
//! supervisor).

pub mod builder;
pub mod cargo;
pub mod catalog;
pub mod child;
pub mod error;
pub mod features;
pub mod install;
pub mod source;

pub use builder::{Build, BuildEvent, Builder, BuilderConfig, Resolved};
pub use catalog::{Binary, Catalog};
pub use error::BinaryError;
pub use source::Source;
