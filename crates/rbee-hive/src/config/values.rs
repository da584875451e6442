//! The option values that are more than a number or a path: how workers run, where their
//! output goes, the worker port range, and the operator's limits.

use std::str::FromStr;

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

/// How workers are run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SupervisorChoice {
    /// systemd when a manager answers over D-Bus (the system manager first when root, the
    /// user's manager first otherwise), else child processes.
    #[default]
    Auto,
    /// Transient units of the system manager (system bus).
    SystemdSystem,
    /// Transient units of the user's manager (session bus, `systemctl --user`).
    SystemdUser,
    /// Child processes of the hive (no systemd: macOS, containers).
    Process,
}

/// Where systemd workers' output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum WorkerLogs {
    /// The journal when journald runs here, else files.
    #[default]
    Auto,
    /// journald (`journalctl -u rbee-worker@…`).
    Journal,
    /// `<state-dir>/logs/<worker>.log`.
    File,
}

/// An inclusive port range, written `9300-9399`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub start: u16,
    /// Last port (inclusive).
    pub end: u16,
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid port range {s:?}: expected FIRST-LAST, e.g. 9300-9399");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let start: u16 = a.trim().parse().map_err(|_| bad())?;
        let end: u16 = b.trim().parse().map_err(|_| bad())?;
        if start == 0 || start > end {
            return Err(format!(
                "invalid port range {s:?}: the first port must be at least 1 and not above the last"
            ));
        }
        Ok(PortRange { start, end })
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

impl Serialize for PortRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Limits the operator sets below what the machine has (also how tests provoke each
/// preflight failure).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Most RAM all workers together may use, bytes (default: what the machine has
    /// available).
    pub ram_bytes: Option<u64>,
    /// Most VRAM a worker may use on its device, bytes (default: the device's free memory).
    pub vram_bytes: Option<u64>,
    /// Free disk space the state directory must keep, bytes (default 100 MiB).
    pub min_free_disk_bytes: Option<u64>,
}
