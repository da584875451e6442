//! rbee-keeper through its real binary, against a real sshd on loopback.

mod infer;
mod setup;
