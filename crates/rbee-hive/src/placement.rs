//! Where a worker runs when its spawn names no backend: every front-door request
//! (`/v1/chat/completions` names a model, never a GPU) and the keeper without `--backend`.
//! The hive's `default_backend` decides; `auto` uses a GPU when one is there and the worker
//! binary can drive it, and falls back to the CPU when the model does not fit on it.

use rbee_types::Backend;
use serde::{Deserialize, Serialize};

use crate::resources::BackendStatus;

/// `default_backend` in the hive's config.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultBackend {
    /// A GPU when NVML (or macOS) shows one and the worker binary has its backend, else
    /// the CPU; a model too large for the GPU runs on the CPU.
    #[default]
    Auto,
    /// Always the CPU.
    Cpu,
    /// Always CUDA (a model that does not fit fails with `INSUFFICIENT_VRAM`).
    Cuda,
    /// Always Metal.
    Metal,
}

/// The backend and device chosen for one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placement {
    /// Where the layers run.
    pub backend: Backend,
    /// Its device index.
    pub device: u32,
    /// Whether a GPU without room for the model gives way to the CPU (`auto` only).
    pub cpu_fallback: bool,
}

impl Placement {
    /// Exactly this backend and device, no fallback.
    pub(crate) fn fixed(backend: Backend, device: u32) -> Placement {
        Placement {
            backend,
            device,
            cpu_fallback: false,
        }
    }
}

/// The placement for a spawn that names no backend. `device` is the config's
/// `default_device`; without one, `auto` takes the GPU with the most free memory and the
/// fixed choices device 0. `worker_has` says whether a worker for a backend can start
/// without building one.
pub(crate) fn place(
    choice: DefaultBackend,
    device: Option<u32>,
    backends: &[BackendStatus],
    worker_has: impl Fn(Backend) -> bool,
) -> Placement {
    let fixed = |b| Placement::fixed(b, device.unwrap_or(0));
    match choice {
        DefaultBackend::Cpu => Placement::fixed(Backend::Cpu, 0),
        DefaultBackend::Cuda => fixed(Backend::Cuda),
        DefaultBackend::Metal => fixed(Backend::Metal),
        DefaultBackend::Auto => {
            for gpu in [Backend::Cuda, Backend::Metal] {
                let Some(status) = backends.iter().find(|b| b.name == gpu && b.available) else {
                    continue;
                };
                let roomiest = status
                    .devices
                    .iter()
                    .max_by_key(|d| (d.memory_free_bytes, std::cmp::Reverse(d.index)));
                let chosen = match device {
                    Some(d) => status.devices.iter().find(|x| x.index == d),
                    None => roomiest,
                };
                if let Some(d) = chosen {
                    if worker_has(gpu) {
                        return Placement {
                            backend: gpu,
                            device: d.index,
                            cpu_fallback: true,
                        };
                    }
                }
            }
            Placement::fixed(Backend::Cpu, 0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Device;

    fn gpu(index: u32, free_gib: u64) -> Device {
        Device {
            index,
            name: "NVIDIA H200".into(),
            memory_total_bytes: 141 << 30,
            memory_free_bytes: free_gib << 30,
            device_node: Some(format!("/dev/nvidia{index}")),
        }
    }

    fn machine(gpus: Vec<Device>) -> Vec<BackendStatus> {
        let status = |name, devices: Vec<Device>| BackendStatus {
            name,
            available: !devices.is_empty(),
            reason: devices
                .is_empty()
                .then(|| "the NVIDIA driver reports no GPU".into()),
            devices,
        };
        vec![
            status(Backend::Cpu, vec![gpu(0, 24)]),
            status(Backend::Cuda, gpus),
            status(Backend::Metal, vec![]),
        ]
    }

    #[test]
    fn auto_takes_the_roomiest_gpu_the_worker_can_drive_with_a_cpu_fallback() {
        let two = machine(vec![gpu(0, 10), gpu(1, 80)]);
        assert_eq!(
            place(DefaultBackend::Auto, None, &two, |_| true),
            Placement {
                backend: Backend::Cuda,
                device: 1,
                cpu_fallback: true
            }
        );
        // The configured device wins over free memory.
        assert_eq!(
            place(DefaultBackend::Auto, Some(0), &two, |_| true).device,
            0
        );
    }

    #[test]
    fn auto_stays_on_the_cpu_without_a_gpu_a_gpu_worker_or_the_configured_device() {
        let cpu = Placement::fixed(Backend::Cpu, 0);
        let none = machine(vec![]);
        assert_eq!(place(DefaultBackend::Auto, None, &none, |_| true), cpu);
        let one = machine(vec![gpu(0, 80)]);
        assert_eq!(
            place(DefaultBackend::Auto, None, &one, |b| b == Backend::Cpu),
            cpu,
            "a CPU-only worker binary"
        );
        assert_eq!(place(DefaultBackend::Auto, Some(3), &one, |_| true), cpu);
    }

    #[test]
    fn a_fixed_choice_is_kept_even_where_it_cannot_run() {
        let none = machine(vec![]);
        assert_eq!(
            place(DefaultBackend::Cuda, None, &none, |_| false),
            Placement::fixed(Backend::Cuda, 0),
            "preflight then says why it cannot run"
        );
        assert_eq!(
            place(DefaultBackend::Cuda, Some(2), &none, |_| false).device,
            2
        );
        let one = machine(vec![gpu(0, 80)]);
        assert_eq!(
            place(DefaultBackend::Cpu, Some(0), &one, |_| true),
            Placement::fixed(Backend::Cpu, 0)
        );
    }
}
