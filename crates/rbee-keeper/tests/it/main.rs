//! rbee-keeper through its real binary, against a real sshd on loopback.

mod check;
mod common;
mod completions;
mod errors;
mod infer;
mod install;
mod manage;
mod node;
mod run;
mod setup;
mod system;
