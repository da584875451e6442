//! `GET /metrics`: the counters of [`crate::metrics`] with what the hive sees now (its
//! queues, its workers with their memory and CPU time, its downloads).

use crate::hive::Hive;
use crate::metrics::{Gauges, WorkerUse};
use crate::supervisor::Supervisor;

/// The text of a scrape.
pub(crate) fn scrape(hive: &Hive) -> String {
    let workers = hive
        .registry
        .all()
        .iter()
        .map(|w| {
            let (memory_bytes, cpu_seconds) = worker_use(hive, &w.spec.unit, w.pid);
            WorkerUse {
                id: w.spec.id.clone(),
                model: w.spec.model_ref.to_string(),
                state: w.state,
                memory_bytes,
                cpu_seconds,
            }
        })
        .collect();
    hive.metrics.render(&Gauges {
        supervisor: hive.supervisor.name(),
        queue_depths: hive.queues.depths(),
        workers,
        downloaded_bytes: hive.models.downloaded_bytes(),
        connections: hive
            .connections
            .get()
            .map(rbee_http::Connections::stats)
            .unwrap_or_default(),
    })
}

/// A worker's memory (bytes) and CPU time (seconds): systemd's accounting of its unit when
/// there is one (all its processes), else (or where systemd does not account) its main
/// process in `/proc`.
fn worker_use(hive: &Hive, unit: &str, pid: Option<u32>) -> (Option<u64>, Option<f64>) {
    let (mut memory, mut cpu) = (None, None);
    if let Supervisor::Systemd(s) = &hive.supervisor {
        if let Some(su) = hive.rt.block_on(s.usage(unit)) {
            memory = su.memory_bytes;
            cpu = su.cpu_nsec.map(|n| n as f64 / 1e9);
        }
    }
    if let Some(pid) = pid {
        memory = memory.or_else(|| rbee_metrics::process::rss_bytes(pid));
        cpu = cpu.or_else(|| rbee_metrics::process::cpu_seconds(pid));
    }
    (memory, cpu)
}
