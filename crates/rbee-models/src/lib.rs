//! rbee's models (references are `rbee_types::ModelRef`): the SQLite catalogue ([`catalog`]), the
//! Hugging Face hub client and verified, resumable downloads ([`hub`]), and the provisioner
//! that ties them together with shared transfers and progress ([`provisioner`]); free disk
//! space ([`space`]). A download's bytes are written and hashed off the receiving thread
//! (`sink`).

pub mod catalog;
pub mod hub;
pub mod provisioner;
mod sink;
pub mod space;
