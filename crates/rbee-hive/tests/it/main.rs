//! Integration tests of `rbee-hive`: the real binary, the real worker and model, a private
//! systemd user manager (cgroup-confined) for the systemd supervisor.

mod api;
mod binaries;
mod common;
mod front;
mod metrics;
mod models;
mod process;
mod status_page;
mod system;
mod systemd;
