//! The health loop: every interval, `GET /v1/health` on each ready worker. Three misses in
//! a row make it unhealthy (stopped and removed); a worker idle longer than the idle
//! timeout is stopped gracefully.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rbee_types::worker::WorkerHealth;

use crate::hive::Hive;
use rbee_types::hive::WorkerState;

use crate::registry::now_unix;

/// Health checks a worker may miss in a row.
pub(crate) const MAX_MISSES: u32 = 3;

/// Runs the loop on its own thread until the hive drains.
pub(crate) fn spawn(hive: Arc<Hive>) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("monitor".into())
        .spawn(move || {
            let interval = Duration::from_secs(hive.config.health_interval_secs);
            loop {
                std::thread::sleep(interval);
                if hive.draining.load(Ordering::Acquire) {
                    return;
                }
                check_all(&hive, interval);
            }
        })
}

/// One round: checks every ready worker in parallel, then stops the idle and the
/// unhealthy ones (each on its own thread, so a slow drain holds nothing up).
pub(crate) fn check_all(hive: &Arc<Hive>, interval: Duration) {
    let timeout = interval.min(Duration::from_secs(5));
    let workers: Vec<_> = hive
        .registry
        .all()
        .into_iter()
        .filter(|w| matches!(w.state, WorkerState::Idle | WorkerState::Busy))
        .collect();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = workers
            .iter()
            .map(|w| {
                s.spawn(move || {
                    ureq::get(&format!("{}/v1/health", w.spec.url()))
                        .set("Authorization", &format!("Bearer {}", w.api_key))
                        .timeout(timeout)
                        .call()
                        .ok()
                        .and_then(|r| r.into_json::<WorkerHealth>().ok())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().ok().flatten())
            .collect()
    });
    let idle_limit = hive.config.idle_timeout_secs;
    let mut to_stop = vec![];
    for (w, health) in workers.iter().zip(results) {
        let id = w.spec.id.clone();
        match health {
            Some(h) => {
                hive.registry.update(&id, |w| {
                    if !matches!(w.state, WorkerState::Idle | WorkerState::Busy) {
                        return;
                    }
                    w.health_misses = 0;
                    w.slots_busy = h.slots_busy;
                    w.state = if h.slots_busy > 0 {
                        WorkerState::Busy
                    } else {
                        WorkerState::Idle
                    };
                    w.last_activity_unix = match h.idle_ms {
                        Some(ms) => now_unix().saturating_sub(ms / 1000),
                        None => now_unix(),
                    };
                });
                // Requests queued or running through the front door are activity too.
                let (running, queued) = hive.queues.load(&w.spec.model_ref.to_string());
                if let Some(ms) = h.idle_ms.filter(|_| running == 0 && queued == 0) {
                    if idle_limit > 0 && ms >= idle_limit * 1000 {
                        to_stop.push((id, format!("idle for {} s", ms / 1000)));
                    }
                }
            }
            None => {
                let mut misses = 0;
                hive.registry.update(&id, |w| {
                    w.health_misses += 1;
                    misses = w.health_misses;
                    if misses >= MAX_MISSES {
                        w.state = WorkerState::Unhealthy;
                    }
                });
                tracing::warn!(%id, misses, "worker missed a health check");
                if misses >= MAX_MISSES {
                    to_stop.push((id, format!("missed {MAX_MISSES} health checks in a row")));
                }
            }
        }
    }
    // A worker still loading after the load timeout (systemd's start job has its own
    // timeout; child processes only have this one).
    let load_timeout = hive.config.load_timeout_secs;
    for w in hive.registry.all() {
        if w.state == WorkerState::Loading
            && now_unix().saturating_sub(w.spec.started_at_unix) > load_timeout
        {
            // Stopped as unhealthy, so the next spawn of the model hears why.
            hive.registry
                .update(&w.spec.id, |w| w.state = WorkerState::Unhealthy);
            to_stop.push((
                w.spec.id.clone(),
                format!("did not finish loading within {load_timeout} s"),
            ));
        }
    }
    for (id, reason) in to_stop {
        let hive = Arc::clone(hive);
        let _ = std::thread::Builder::new()
            .name("stop".into())
            .spawn(move || {
                if let Err(e) = hive.stop_worker(&id, &reason) {
                    tracing::warn!(%id, error = %e, "stopping the worker failed");
                }
            });
    }
}
