//! rbee-keeper through its real binary, against a real sshd on loopback.

mod common;
mod infer;
mod install;
mod manage;
mod node;
mod setup;
mod system;
