//! What this machine has: RAM, disk, and backends with their devices (CPU always; CUDA
//! through NVML, loaded at run time so that a machine without NVIDIA just reports it
//! unavailable; Metal on macOS).

use std::path::Path;
use std::sync::{Mutex, OnceLock};

pub(crate) use rbee_types::hive::{BackendStatus, Device, Disk, Memory};
use rbee_types::Backend;

/// The kernel's view of RAM (`/proc/meminfo`).
pub(crate) fn memory() -> Memory {
    let m = rbee_metrics::host::memory();
    Memory {
        total_bytes: m.total_bytes,
        available_bytes: m.available_bytes,
    }
}

/// Space on the filesystem holding `path` (its nearest existing ancestor).
pub(crate) fn disk(path: &Path) -> Disk {
    rbee_models::space::space(path)
        .map(|(total_bytes, available_bytes)| Disk {
            total_bytes,
            available_bytes,
        })
        .unwrap_or_default()
}

fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        })
        .unwrap_or_else(|| "CPU".into())
}

fn nvml() -> &'static Mutex<Result<nvml_wrapper::Nvml, String>> {
    static NVML: OnceLock<Mutex<Result<nvml_wrapper::Nvml, String>>> = OnceLock::new();
    NVML.get_or_init(|| Mutex::new(nvml_wrapper::Nvml::init().map_err(|e| e.to_string())))
}

/// CUDA devices through NVML, or why there are none.
fn cuda() -> BackendStatus {
    let unavailable = |reason: String| BackendStatus {
        name: Backend::Cuda,
        available: false,
        reason: Some(reason),
        devices: vec![],
    };
    let guard = nvml().lock().unwrap_or_else(|e| e.into_inner());
    let nvml = match &*guard {
        Ok(n) => n,
        Err(e) => return unavailable(format!("NVIDIA driver not found (NVML: {e})")),
    };
    let count = match nvml.device_count() {
        Ok(c) => c,
        Err(e) => return unavailable(format!("NVML cannot count devices: {e}")),
    };
    let mut devices = vec![];
    for index in 0..count {
        let Ok(d) = nvml.device_by_index(index) else {
            continue;
        };
        let mem = d.memory_info().ok();
        devices.push(Device {
            index,
            name: d.name().unwrap_or_else(|_| format!("GPU {index}")),
            memory_total_bytes: mem.as_ref().map_or(0, |m| m.total),
            memory_free_bytes: mem.as_ref().map_or(0, |m| m.free),
            device_node: d.minor_number().ok().map(|m| format!("/dev/nvidia{m}")),
        });
    }
    if devices.is_empty() {
        return unavailable("the NVIDIA driver reports no GPU".into());
    }
    BackendStatus {
        name: Backend::Cuda,
        available: true,
        reason: None,
        devices,
    }
}

/// Every backend, available or not (CPU first).
pub(crate) fn backends() -> Vec<BackendStatus> {
    let mem = memory();
    let cpu = BackendStatus {
        name: Backend::Cpu,
        available: true,
        reason: None,
        devices: vec![Device {
            index: 0,
            name: cpu_name(),
            memory_total_bytes: mem.total_bytes,
            memory_free_bytes: mem.available_bytes,
            device_node: None,
        }],
    };
    let metal = if cfg!(target_os = "macos") {
        BackendStatus {
            name: Backend::Metal,
            available: true,
            reason: None,
            devices: vec![Device {
                index: 0,
                name: "Apple GPU".into(),
                memory_total_bytes: mem.total_bytes,
                memory_free_bytes: mem.available_bytes,
                device_node: None,
            }],
        }
    } else {
        BackendStatus {
            name: Backend::Metal,
            available: false,
            reason: Some("Metal exists on macOS only".into()),
            devices: vec![],
        }
    };
    vec![cpu, cuda(), metal]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_has_ram_disk_and_a_cpu() {
        let m = memory();
        assert!(
            m.total_bytes > 0 && m.available_bytes <= m.total_bytes,
            "{m:?}"
        );
        let d = disk(Path::new("/nonexistent/dir/below/root"));
        assert!(d.total_bytes > 0, "falls back to an existing ancestor");
        let b = backends();
        assert_eq!(b[0].name, Backend::Cpu);
        assert!(b[0].available);
        assert_eq!(b[0].devices.len(), 1);
        let names: Vec<_> = b.iter().map(|b| b.name).collect();
        assert_eq!(names, Backend::ALL);
    }

    #[test]
    fn without_an_nvidia_driver_cuda_is_unavailable_with_the_reason() {
        let cuda = &backends()[1];
        if cuda.available {
            // A GPU machine: the devices are real.
            assert!(cuda.devices.iter().all(|d| d.memory_total_bytes > 0));
        } else {
            assert!(cuda.reason.as_deref().unwrap_or("").contains("NVIDIA"));
        }
    }
}
