//! Checks before any worker starts, each failure a distinct error code with the numbers in
//! `details` and what to do in the message. Pure functions of a snapshot of the machine, so
//! every branch is unit-tested; the daemon takes the snapshot.

use rbee_types::{ApiError, Backend, ErrorCode};

use crate::config::Limits;
use crate::resources::{BackendStatus, Disk, Memory};

/// Memory a model needs beyond its file size (KV cache, buffers): file × 1.2.
pub(crate) const MODEL_OVERHEAD: f64 = 1.2;
/// Free disk the state directory keeps by default (logs, records).
pub(crate) const DEFAULT_MIN_FREE_DISK: u64 = 100 << 20;

/// What the new worker needs.
#[derive(Debug, Clone)]
pub(crate) struct Need {
    /// Where the layers would run.
    pub backend: Backend,
    /// Device index.
    pub device: u32,
    /// Model file size.
    pub model_bytes: u64,
}

/// The machine at the time of the request.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    /// RAM.
    pub memory: Memory,
    /// The state directory's filesystem.
    pub disk: Disk,
    /// Backends.
    pub backends: Vec<BackendStatus>,
    /// Model bytes of the CPU workers already running (counted against `limits.ram_bytes`).
    pub ram_in_use_by_workers: u64,
}

fn gib(b: u64) -> String {
    format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
}

/// Runs every check in order: backend, device, memory, disk.
pub(crate) fn check(need: &Need, snap: &Snapshot, limits: &Limits) -> Result<(), ApiError> {
    let available: Vec<&str> = snap
        .backends
        .iter()
        .filter(|b| b.available)
        .map(|b| b.name.as_str())
        .collect();
    let backend = snap.backends.iter().find(|b| b.name == need.backend);
    let backend = match backend {
        Some(b) if b.available => b,
        other => {
            let why = other
                .and_then(|b| b.reason.clone())
                .unwrap_or_else(|| "unknown backend".into());
            return Err(ApiError::new(
                ErrorCode::BackendUnavailable,
                format!(
                    "backend {} is not available here ({why}); available: {}",
                    need.backend,
                    available.join(", ")
                ),
            )
            .detail("backend", need.backend.as_str())
            .detail("available", available));
        }
    };
    let Some(device) = backend.devices.iter().find(|d| d.index == need.device) else {
        let valid: Vec<u32> = backend.devices.iter().map(|d| d.index).collect();
        return Err(ApiError::new(
            ErrorCode::DeviceNotFound,
            format!(
                "{} has no device {}; valid devices: {valid:?}",
                need.backend, need.device
            ),
        )
        .detail("backend", need.backend.as_str())
        .detail("device", need.device)
        .detail("valid_devices", valid));
    };
    let required = (need.model_bytes as f64 * MODEL_OVERHEAD) as u64;
    match need.backend {
        Backend::Cuda => {
            let free = limits.vram_bytes.map_or(device.memory_free_bytes, |l| {
                l.min(device.memory_free_bytes)
            });
            if required > free {
                return Err(ApiError::new(
                    ErrorCode::InsufficientVram,
                    format!(
                        "the model needs about {} of VRAM but {} (device {}) has {} free; \
                         stop other GPU work, pick another device, or use a smaller quantization",
                        gib(required),
                        device.name,
                        device.index,
                        gib(free)
                    ),
                )
                .detail("required_bytes", required)
                .detail("available_bytes", free)
                .detail("device", device.index));
            }
        }
        _ => {
            let mut avail = snap.memory.available_bytes;
            if let Some(limit) = limits.ram_bytes {
                let budget = limit
                    .saturating_sub((snap.ram_in_use_by_workers as f64 * MODEL_OVERHEAD) as u64);
                avail = avail.min(budget);
            }
            if required > avail {
                return Err(ApiError::new(
                    ErrorCode::InsufficientRam,
                    format!(
                        "the model needs about {} of RAM (file size × {MODEL_OVERHEAD}) but {} is \
                         available to workers; stop idle workers, free memory, or use a smaller \
                         quantization",
                        gib(required),
                        gib(avail)
                    ),
                )
                .detail("required_bytes", required)
                .detail("available_bytes", avail)
                .detail("model_bytes", need.model_bytes));
            }
        }
    }
    let min_free = limits.min_free_disk_bytes.unwrap_or(DEFAULT_MIN_FREE_DISK);
    if snap.disk.available_bytes < min_free {
        return Err(ApiError::new(
            ErrorCode::InsufficientDisk,
            format!(
                "the state directory's disk has {} free, below the {} the hive keeps for logs \
                 and records; free some space",
                gib(snap.disk.available_bytes),
                gib(min_free)
            ),
        )
        .detail("required_bytes", min_free)
        .detail("available_bytes", snap.disk.available_bytes));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Device;

    fn dev(index: u32, free: u64) -> Device {
        Device {
            index,
            name: format!("dev{index}"),
            memory_total_bytes: free * 2,
            memory_free_bytes: free,
            device_node: None,
        }
    }

    fn snap(cuda: bool) -> Snapshot {
        Snapshot {
            memory: Memory {
                total_bytes: 16 << 30,
                available_bytes: 8 << 30,
            },
            disk: Disk {
                total_bytes: 100 << 30,
                available_bytes: 50 << 30,
            },
            backends: vec![
                BackendStatus {
                    name: Backend::Cpu,
                    available: true,
                    reason: None,
                    devices: vec![dev(0, 8 << 30)],
                },
                BackendStatus {
                    name: Backend::Cuda,
                    available: cuda,
                    reason: (!cuda).then(|| "NVIDIA driver not found".into()),
                    devices: if cuda {
                        vec![dev(0, 4 << 30), dev(1, 1 << 30)]
                    } else {
                        vec![]
                    },
                },
            ],
            ram_in_use_by_workers: 0,
        }
    }

    fn need(backend: Backend, device: u32, model_bytes: u64) -> Need {
        Need {
            backend,
            device,
            model_bytes,
        }
    }

    fn code(r: Result<(), ApiError>) -> ErrorCode {
        r.expect_err("should fail").error.code
    }

    #[test]
    fn a_small_model_on_the_cpu_passes() {
        check(
            &need(Backend::Cpu, 0, 100 << 20),
            &snap(false),
            &Limits::default(),
        )
        .unwrap();
    }

    #[test]
    fn an_unavailable_backend_lists_the_available_ones() {
        let e = check(&need(Backend::Cuda, 0, 1), &snap(false), &Limits::default()).unwrap_err();
        assert_eq!(e.error.code, ErrorCode::BackendUnavailable);
        assert!(e.error.message.contains("NVIDIA driver not found"));
        assert_eq!(e.error.details["available"], serde_json::json!(["cpu"]));
        let e = check(&need(Backend::Metal, 0, 1), &snap(true), &Limits::default()).unwrap_err();
        assert_eq!(
            e.error.details["available"],
            serde_json::json!(["cpu", "cuda"])
        );
    }

    #[test]
    fn a_device_out_of_range_lists_the_valid_ones() {
        let e = check(&need(Backend::Cuda, 2, 1), &snap(true), &Limits::default()).unwrap_err();
        assert_eq!(e.error.code, ErrorCode::DeviceNotFound);
        assert_eq!(e.error.details["valid_devices"], serde_json::json!([0, 1]));
        assert_eq!(
            code(check(
                &need(Backend::Cpu, 1, 1),
                &snap(true),
                &Limits::default()
            )),
            ErrorCode::DeviceNotFound
        );
    }

    #[test]
    fn ram_needs_the_model_size_times_one_point_two() {
        // 7 GiB × 1.2 = 8.4 GiB > 8 GiB available.
        let e = check(
            &need(Backend::Cpu, 0, 7 << 30),
            &snap(false),
            &Limits::default(),
        )
        .unwrap_err();
        assert_eq!(e.error.code, ErrorCode::InsufficientRam);
        assert_eq!(e.error.details["available_bytes"], 8u64 << 30);
        assert!(e.error.details["required_bytes"].as_u64().unwrap() > 8 << 30);
        // 6 GiB × 1.2 = 7.2 GiB fits.
        check(
            &need(Backend::Cpu, 0, 6 << 30),
            &snap(false),
            &Limits::default(),
        )
        .unwrap();
    }

    #[test]
    fn the_ram_limit_counts_the_running_workers() {
        let limits = Limits {
            ram_bytes: Some(2 << 30),
            ..Default::default()
        };
        let mut s = snap(false);
        check(&need(Backend::Cpu, 0, 1 << 30), &s, &limits).unwrap();
        s.ram_in_use_by_workers = 1 << 30;
        assert_eq!(
            code(check(&need(Backend::Cpu, 0, 1 << 30), &s, &limits)),
            ErrorCode::InsufficientRam
        );
    }

    #[test]
    fn vram_is_checked_on_the_chosen_device_only() {
        // 2 GiB fits device 0 (4 GiB free), not device 1 (1 GiB free).
        check(
            &need(Backend::Cuda, 0, 2 << 30),
            &snap(true),
            &Limits::default(),
        )
        .unwrap();
        let e = check(
            &need(Backend::Cuda, 1, 2 << 30),
            &snap(true),
            &Limits::default(),
        )
        .unwrap_err();
        assert_eq!(e.error.code, ErrorCode::InsufficientVram);
        assert_eq!(e.error.details["device"], 1);
        let limits = Limits {
            vram_bytes: Some(1 << 30),
            ..Default::default()
        };
        assert_eq!(
            code(check(
                &need(Backend::Cuda, 0, 2 << 30),
                &snap(true),
                &limits
            )),
            ErrorCode::InsufficientVram
        );
    }

    #[test]
    fn too_little_disk_is_refused() {
        let limits = Limits {
            min_free_disk_bytes: Some(60 << 30),
            ..Default::default()
        };
        let e = check(&need(Backend::Cpu, 0, 1), &snap(false), &limits).unwrap_err();
        assert_eq!(e.error.code, ErrorCode::InsufficientDisk);
        assert_eq!(e.error.details["required_bytes"], 60u64 << 30);
    }
}
