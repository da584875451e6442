//! What a process uses, from Linux's `/proc`: CPU time and resident memory.

/// CPU time (user + system) a process has used so far, seconds; `None` when unreadable
/// (gone, or not Linux).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (which may hold spaces and parentheses) start at
    // "state"; utime and stime are fields 14 and 15 of the line, in clock ticks.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((ticks(11)? + ticks(12)?) / hz.max(1.0))
}

/// Resident memory of a process (`VmRSS`), bytes; `None` when unreadable.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_uses_some_memory_and_cpu() {
        let me = std::process::id();
        assert!(rss_bytes(me).is_some_and(|b| b > 1 << 20));
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(30) {}
        assert!(cpu_seconds(me).is_some_and(|s| s > 0.0));
        assert_eq!(cpu_seconds(u32::MAX), None);
    }
}
