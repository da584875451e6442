//! How many threads llama.cpp gets by default.

/// Physical CPU cores of this machine (hyper-threads not counted), at least 1.
pub fn physical_cores() -> u32 {
    let logical = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let Ok(cpuinfo) = std::fs::read_to_string("/proc/cpuinfo") else {
        return logical;
    };
    let mut cores = std::collections::BTreeSet::new();
    let (mut phys, mut core) = (None, None);
    for line in cpuinfo.lines().chain(std::iter::once("")) {
        let mut kv = line.splitn(2, ':').map(str::trim);
        match (kv.next(), kv.next()) {
            (Some("physical id"), Some(v)) => phys = Some(v.to_owned()),
            (Some("core id"), Some(v)) => core = Some(v.to_owned()),
            (Some(""), None) => {
                if let (Some(p), Some(c)) = (phys.take(), core.take()) {
                    cores.insert((p, c));
                }
            }
            _ => {}
        }
    }
    if cores.is_empty() {
        return logical;
    }
    // Containers may see fewer CPUs than the package has cores.
    (cores.len() as u32).clamp(1, logical.max(1))
}
