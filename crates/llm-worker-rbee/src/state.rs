//! State shared between the HTTP threads, the engine thread and the main thread.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rbee_types::worker::{LoadProgress, SlotsView, WorkerInfo};

/// Lifecycle of the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// The model is being read.
    Loading,
    /// Serving.
    Ready,
    /// No new requests; active ones finish.
    Draining,
    /// The model failed to load; the process is about to exit.
    Failed,
}

/// Loading progress, watched by `/v1/loading/progress` clients.
#[derive(Debug, Clone, Default)]
pub(crate) struct LoadState {
    /// Layers loaded so far.
    pub layers_loaded: u64,
    /// Layers in the model.
    pub layers_total: u64,
    /// Set when loading failed (a message without paths).
    pub error: Option<String>,
    /// Bumped on every change so watchers can wait for the next one.
    pub generation: u64,
}

/// Counts busy slots; taking one is a single compare-and-swap, so two requests can never
/// both get the last slot.
#[derive(Debug)]
pub(crate) struct Slots {
    total: u32,
    busy: AtomicU32,
    created: Instant,
    /// Milliseconds after `created` of the last take or give-back.
    last_change_ms: AtomicU64,
}

impl Slots {
    /// `total` slots, all free.
    pub(crate) fn new(total: u32) -> Self {
        Self {
            total,
            busy: AtomicU32::new(0),
            created: Instant::now(),
            last_change_ms: AtomicU64::new(0),
        }
    }

    /// Records activity now (a slot taken or given back, the model becoming ready).
    pub(crate) fn touch(&self) {
        let now = self.created.elapsed().as_millis() as u64;
        self.last_change_ms.fetch_max(now, Ordering::AcqRel);
    }

    /// How long no slot has been busy; `None` while one is. The hive's idle timeout reads
    /// this through `/v1/health`.
    pub(crate) fn idle_for(&self) -> Option<Duration> {
        if self.busy() > 0 {
            return None;
        }
        let last = self.last_change_ms.load(Ordering::Acquire);
        Some(
            self.created
                .elapsed()
                .saturating_sub(Duration::from_millis(last)),
        )
    }

    /// Takes a slot, or returns `None` when all are busy.
    pub(crate) fn try_acquire(&self) -> Option<()> {
        self.busy
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                (b < self.total).then_some(b + 1)
            })
            .ok()
            .map(|_| self.touch())
    }

    /// Gives a slot back.
    pub(crate) fn release(&self) {
        self.touch();
        self.busy.fetch_sub(1, Ordering::AcqRel);
    }

    /// Busy slots now.
    pub(crate) fn busy(&self) -> u32 {
        self.busy.load(Ordering::Acquire)
    }

    /// All slots.
    pub(crate) fn total(&self) -> u32 {
        self.total
    }
}

/// Everything the threads share.
pub(crate) struct Shared {
    /// Static facts for `/v1/info`.
    pub info: Mutex<WorkerInfo>,
    /// Current phase.
    pub phase: Mutex<Phase>,
    /// Loading progress and its change notification.
    pub load: Mutex<LoadState>,
    /// Signalled when `load` or `phase` changes.
    pub changed: Condvar,
    /// Slot accounting.
    pub slots: Slots,
    /// Cancel flags of active requests, by request id.
    pub cancels: Mutex<HashMap<String, Arc<AtomicBool>>>,
    /// Tokens generated since start (for the tokens/s in STATUS).
    pub tokens_generated: AtomicU64,
    /// The slots' prompt cache as the engine last left it (`/v1/slots`, STATUS).
    pub cache: Mutex<SlotsView>,
    /// Prometheus counters and histograms.
    pub metrics: crate::metrics::Metrics,
    /// API key, if one is configured.
    pub api_key: Option<String>,
    /// The worker's base URL.
    pub base_url: String,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// The HTTP server's connection counts (for metrics).
    connections: rbee_http::Connections,
    /// When the process started.
    pub started: Instant,
    next_request: AtomicU64,
}

impl Shared {
    /// The text of a `/metrics` scrape: the counters and the state now.
    pub(crate) fn metrics_text(&self) -> String {
        let backend = lock(&self.info).backend;
        self.metrics.render(&crate::metrics::Gauges {
            backend: backend.as_str(),
            tokens_generated: self.tokens_generated.load(Ordering::Relaxed),
            slots_busy: self.slots.busy(),
            slots_total: self.slots.total(),
            connections: self.connections.stats(),
        })
    }

    /// New state in the `Loading` phase.
    pub(crate) fn new(
        info: WorkerInfo,
        api_key: Option<String>,
        base_url: String,
        max_body_bytes: usize,
        connections: rbee_http::Connections,
    ) -> Self {
        let slots = Slots::new(info.slots);
        Self {
            info: Mutex::new(info),
            phase: Mutex::new(Phase::Loading),
            load: Mutex::new(LoadState::default()),
            changed: Condvar::new(),
            slots,
            cancels: Mutex::new(HashMap::new()),
            tokens_generated: AtomicU64::new(0),
            cache: Mutex::new(SlotsView {
                prompt_cache: false,
                slots: Vec::new(),
            }),
            metrics: crate::metrics::Metrics::default(),
            api_key,
            base_url,
            max_body_bytes,
            connections,
            started: Instant::now(),
            next_request: AtomicU64::new(1),
        }
    }

    /// The current phase.
    pub(crate) fn phase(&self) -> Phase {
        *lock(&self.phase)
    }

    /// Moves to `phase` and wakes watchers.
    pub(crate) fn set_phase(&self, phase: Phase) {
        if phase == Phase::Ready {
            // Idle time counts from the moment the worker can serve.
            self.slots.touch();
        }
        *lock(&self.phase) = phase;
        self.bump();
    }

    /// Updates the loading progress and wakes watchers.
    pub(crate) fn update_load(&self, f: impl FnOnce(&mut LoadState)) {
        let mut l = lock(&self.load);
        f(&mut l);
        l.generation += 1;
        drop(l);
        self.changed.notify_all();
    }

    fn bump(&self) {
        self.update_load(|_| {});
    }

    /// The progress event a watcher sends now.
    pub(crate) fn progress_event(&self, backend_is_gpu: bool) -> LoadProgress {
        let phase = self.phase();
        let l = lock(&self.load).clone();
        let stage = match (phase, &l.error) {
            (_, Some(_)) | (Phase::Failed, _) => "failed",
            (Phase::Loading, _) if backend_is_gpu => "loading_to_vram",
            (Phase::Loading, _) => "loading_to_ram",
            _ => "ready",
        };
        LoadProgress {
            stage: stage.into(),
            layers_loaded: Some(l.layers_loaded),
            layers_total: Some(l.layers_total),
            error: l.error,
        }
    }

    /// A fresh request id, unique within this process.
    pub(crate) fn new_request_id(&self) -> String {
        let n = self.next_request.fetch_add(1, Ordering::Relaxed);
        format!("req-{:x}-{n}", std::process::id())
    }

    /// Sets the cancel flag of a request, if it is active. Returns whether it was.
    pub(crate) fn cancel(&self, request_id: &str) -> bool {
        match lock(&self.cancels).get(request_id) {
            Some(flag) => {
                flag.store(true, Ordering::Release);
                true
            }
            None => false,
        }
    }

    /// Cancels every active request (end of the drain deadline).
    pub(crate) fn cancel_all(&self) {
        for flag in lock(&self.cancels).values() {
            flag.store(true, Ordering::Release);
        }
    }
}

/// Locks a mutex, recovering the data if a thread panicked while holding it (the state
/// stays usable; a panic is already logged).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_never_exceed_their_total_under_contention() {
        let slots = Arc::new(Slots::new(3));
        let max_seen = Arc::new(AtomicU32::new(0));
        std::thread::scope(|s| {
            for _ in 0..8 {
                let (slots, max_seen) = (Arc::clone(&slots), Arc::clone(&max_seen));
                s.spawn(move || {
                    for _ in 0..10_000 {
                        if slots.try_acquire().is_some() {
                            max_seen.fetch_max(slots.busy(), Ordering::AcqRel);
                            slots.release();
                        }
                    }
                });
            }
        });
        assert!(max_seen.load(Ordering::Acquire) <= 3);
        assert_eq!(slots.busy(), 0);
    }

    #[test]
    fn a_full_worker_refuses_until_a_slot_is_released() {
        let slots = Slots::new(1);
        assert!(slots.try_acquire().is_some());
        assert!(slots.try_acquire().is_none());
        slots.release();
        assert!(slots.try_acquire().is_some());
    }
}
