//! Checks before any worker starts, each failure a distinct error code with the numbers in
//! `details` and what to do in the message. Pure functions of a snapshot of the machine, so
//! every branch is unit-tested; the daemon takes the snapshot.

use rbee_types::{ApiError, Backend, ErrorCode};

use crate::config::Limits;
use crate::resources::{BackendStatus, Disk, Memory};

/// Memory a model needs beyond its file size and KV cache (buffers): file × 1.2.
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
    /// The KV cache of its slots.
    pub kv: KvCache,
}

/// Memory a worker is counted as needing: its model file × [`MODEL_OVERHEAD`] and its KV
/// cache.
pub(crate) fn worker_memory(model_bytes: u64, kv_bytes: u64) -> u64 {
    ((model_bytes as f64 * MODEL_OVERHEAD) as u64).saturating_add(kv_bytes)
}

/// The KV cache a worker allocates when it loads: every slot's context, in keys and
/// values of every layer. It can be far larger than the model (64 slots of 4096 tokens of
/// SmolLM2-135M: 6 GiB for a 98 MB file).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct KvCache {
    /// Bytes (0 when unknown).
    pub bytes: u64,
    /// Whether the model's header gave the size (not for hybrid recurrent models).
    pub known: bool,
    /// Slots.
    pub slots: u32,
    /// Context tokens per slot.
    pub ctx_per_slot: u32,
}

impl KvCache {
    /// The cache of `slots` slots of `asked_ctx` tokens each (the worker's default when
    /// `None`) of the model whose header is `header`.
    pub(crate) fn estimate(
        header: &rbee_gguf::GgufHeader,
        slots: u32,
        asked_ctx: Option<u32>,
    ) -> KvCache {
        let trained = header
            .context_length()
            .map_or(rbee_types::worker::DEFAULT_CTX_CAP, |c| {
                u32::try_from(c).unwrap_or(u32::MAX)
            });
        let ctx_per_slot = rbee_types::worker::ctx_per_slot(asked_ctx, trained);
        let bytes = header.kv_cache_bytes(slots, ctx_per_slot);
        KvCache {
            bytes: bytes.unwrap_or(0),
            known: bytes.is_some(),
            slots,
            ctx_per_slot,
        }
    }

    /// How the need is made up, for messages.
    fn explain(&self, model_bytes: u64) -> String {
        if !self.known {
            return format!(
                "the file's {} × {MODEL_OVERHEAD}; the KV cache is not counted: the model's \
                 header does not give its size",
                gib(model_bytes)
            );
        }
        format!(
            "the file's {} × {MODEL_OVERHEAD} plus {} of KV cache for {} slot{} of {} tokens",
            gib(model_bytes),
            gib(self.bytes),
            self.slots,
            if self.slots == 1 { "" } else { "s" },
            self.ctx_per_slot
        )
    }
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
    /// What the CPU workers already running were counted as needing when they started
    /// (model and KV cache; counted against `limits.ram_bytes`).
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
    let required = worker_memory(need.model_bytes, need.kv.bytes);
    match need.backend {
        Backend::Cuda => {
            let free = limits.vram_bytes.map_or(device.memory_free_bytes, |l| {
                l.min(device.memory_free_bytes)
            });
            if required > free {
                return Err(ApiError::new(
                    ErrorCode::InsufficientVram,
                    format!(
                        "the model needs about {} of VRAM ({}) but {} (device {}) has {} free; \
                         stop other GPU work, pick another device, ask for fewer slots or a \
                         smaller ctx_size, or use a smaller quantization",
                        gib(required),
                        need.kv.explain(need.model_bytes),
                        device.name,
                        device.index,
                        gib(free)
                    ),
                )
                .detail("required_bytes", required)
                .detail("available_bytes", free)
                .detail("kv_cache_bytes", need.kv.bytes)
                .detail("device", device.index));
            }
        }
        _ => {
            let mut avail = snap.memory.available_bytes;
            if let Some(limit) = limits.ram_bytes {
                let budget = limit.saturating_sub(snap.ram_in_use_by_workers);
                avail = avail.min(budget);
            }
            if required > avail {
                return Err(ApiError::new(
                    ErrorCode::InsufficientRam,
                    format!(
                        "the model needs about {} of RAM ({}) but {} is available to workers; \
                         stop idle workers, free memory, ask for fewer slots or a smaller \
                         ctx_size, or use a smaller quantization",
                        gib(required),
                        need.kv.explain(need.model_bytes),
                        gib(avail)
                    ),
                )
                .detail("required_bytes", required)
                .detail("available_bytes", avail)
                .detail("model_bytes", need.model_bytes)
                .detail("kv_cache_bytes", need.kv.bytes));
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
            kv: KvCache::default(),
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
        // A running worker of a 1 GiB model: 1.2 GiB counted.
        s.ram_in_use_by_workers = worker_memory(1 << 30, 0);
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
    fn the_kv_cache_of_every_slot_counts_in_ram_and_vram() {
        // 1 GiB of model fits 8 GiB of RAM; with 7 GiB of KV cache it does not.
        let big_kv = KvCache {
            bytes: 7 << 30,
            known: true,
            slots: 64,
            ctx_per_slot: 4096,
        };
        let e = check(
            &Need {
                kv: big_kv,
                ..need(Backend::Cpu, 0, 1 << 30)
            },
            &snap(false),
            &Limits::default(),
        )
        .unwrap_err();
        assert_eq!(e.error.code, ErrorCode::InsufficientRam);
        assert_eq!(e.error.details["kv_cache_bytes"], 7u64 << 30);
        assert!(
            e.error.details["required_bytes"].as_u64().unwrap() > 8 << 30,
            "{e:?}"
        );
        let m = &e.error.message;
        assert!(
            m.contains("7.00 GiB of KV cache for 64 slots of 4096 tokens")
                && m.contains("fewer slots or a smaller ctx_size"),
            "{m}"
        );
        // A cache the header does not size is not counted, and the message says so.
        let e = check(
            &Need {
                kv: KvCache {
                    bytes: 0,
                    known: false,
                    ..big_kv
                },
                ..need(Backend::Cpu, 0, 7 << 30)
            },
            &snap(false),
            &Limits::default(),
        )
        .unwrap_err();
        assert!(
            e.error.message.contains("the KV cache is not counted"),
            "{}",
            e.error.message
        );
        // On a GPU the cache is in VRAM: 2 GiB of model and 2 GiB of cache exceed 4 GiB.
        let e = check(
            &Need {
                kv: KvCache {
                    bytes: 2 << 30,
                    ..big_kv
                },
                ..need(Backend::Cuda, 0, 2 << 30)
            },
            &snap(true),
            &Limits::default(),
        )
        .unwrap_err();
        assert_eq!(e.error.code, ErrorCode::InsufficientVram);
    }

    /// A llama header: 30 layers, 3 KV heads of 64, trained on `ctx` tokens.
    fn header(ctx: Option<u64>) -> rbee_gguf::GgufHeader {
        use rbee_gguf::Value::{String as S, U64};
        let mut metadata = std::collections::BTreeMap::new();
        metadata.insert("general.architecture".to_owned(), S("llama".into()));
        for (k, v) in [
            ("block_count", 30),
            ("embedding_length", 576),
            ("attention.head_count", 9),
            ("attention.head_count_kv", 3),
        ] {
            metadata.insert(format!("llama.{k}"), U64(v));
        }
        if let Some(c) = ctx {
            metadata.insert("llama.context_length".to_owned(), U64(c));
        }
        rbee_gguf::GgufHeader::from_metadata(metadata)
    }

    #[test]
    fn the_kv_estimate_takes_the_workers_default_context_and_whole_blocks_of_256_cells() {
        let per_token = 30 * 3 * 128 * 2;
        // The model's context, capped at 4096 per slot, as the worker takes it.
        let kv = KvCache::estimate(&header(Some(8192)), 64, None);
        assert_eq!((kv.ctx_per_slot, kv.slots), (4096, 64));
        assert_eq!(kv.bytes, per_token * 4096 * 64);
        assert_eq!(
            KvCache::estimate(&header(Some(2048)), 1, None).ctx_per_slot,
            2048
        );
        assert_eq!(KvCache::estimate(&header(None), 1, None).ctx_per_slot, 4096);
        // An asked size wins; each slot's cells come in blocks of 256.
        let kv = KvCache::estimate(&header(Some(8192)), 3, Some(100));
        assert_eq!((kv.ctx_per_slot, kv.bytes), (100, per_token * 3 * 256));
        let kv = KvCache::estimate(&header(Some(8192)), 64, Some(300));
        assert_eq!(kv.bytes, per_token * 64 * 512);
        assert!(kv.known);
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
