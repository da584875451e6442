//! rbee's models (references are `rbee_types::ModelRef`): the SQLite catalogue ([`catalog`]), the
//! Hugging Face hub client and verified, resumable downloads ([`hub`]), models already in
//! the official clients' cache, used in place ([`hf_cache`]), and the provisioner
//! that ties them together with shared transfers and progress ([`provisioner`]); the one
//! place that decides which paths may be written or deleted ([`models_dir`]); free disk
//! space ([`space`]); their typed errors ([`error`]). A download's bytes are written and
//! hashed off the receiving thread (`sink`).

pub mod catalog;
pub mod error;
pub mod hf_cache;
pub mod hub;
pub mod models_dir;
pub mod provisioner;
pub mod repo;
mod sink;
pub mod space;
