//! What this machine has, from Linux's `/proc/meminfo`.

/// The machine's RAM, bytes (zeros where `/proc/meminfo` cannot be read).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostMemory {
    /// Installed (`MemTotal`).
    pub total_bytes: u64,
    /// Available for new work without swapping (`MemAvailable`).
    pub available_bytes: u64,
}

/// The machine's RAM now.
pub fn memory() -> HostMemory {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    HostMemory {
        total_bytes: field("MemTotal"),
        available_bytes: field("MemAvailable"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_machine_has_some_memory_available() {
        let m = super::memory();
        assert!(
            m.available_bytes > 0 && m.available_bytes <= m.total_bytes,
            "{m:?}"
        );
    }
}
