//! The workers this hive runs: in memory for the API, and one record file per worker in
//! the state directory, so that a restarted hive can adopt what is still running.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rbee_types::hive::{Failure, RecentFailure, WorkerState, WorkerView};
use rbee_types::{Backend, ModelRef};
use serde::{Deserialize, Serialize};

/// What the hive decided when it started a worker; persisted as
/// `<state-dir>/workers/<id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct WorkerSpec {
    /// Short id used in the API (`smollm2-135m-instruct.q4_1`).
    pub id: String,
    /// `rbee-worker@….service` (systemd) or the same name for a process.
    pub unit: String,
    /// The reference the client asked for.
    pub model_ref: ModelRef,
    /// The model file.
    pub model_path: PathBuf,
    /// Its size, for the RAM budget.
    pub model_bytes: u64,
    /// The KV cache of its slots as estimated at spawn, for the RAM budget and its memory
    /// limit (0 in records of hives before 2026-12).
    #[serde(default)]
    pub kv_bytes: u64,
    /// Where the layers run.
    pub backend: Backend,
    /// Device index.
    pub device: u32,
    /// Concurrent requests.
    pub slots: u32,
    /// Context tokens per slot, when the spawn asked for a size.
    #[serde(default)]
    pub ctx_size: Option<u32>,
    /// GPU device nodes it may open.
    #[serde(default)]
    pub devices: Vec<String>,
    /// Address the worker listens on.
    pub host: IpAddr,
    /// Port the worker listens on.
    pub port: u16,
    /// `systemd-system`, `systemd-user` or `process`.
    pub supervisor: String,
    /// Where its output goes, when not the journal.
    pub log_file: Option<PathBuf>,
    /// When it was started.
    pub started_at_unix: u64,
    /// The executable it runs (a recorded worker binary).
    #[serde(default)]
    pub binary: Option<PathBuf>,
}

impl WorkerSpec {
    /// The worker's base URL.
    pub(crate) fn url(&self) -> String {
        match self.host {
            IpAddr::V6(h) => format!("http://[{h}]:{}", self.port),
            IpAddr::V4(h) if h.is_unspecified() => format!("http://127.0.0.1:{}", self.port),
            IpAddr::V4(h) => format!("http://{h}:{}", self.port),
        }
    }
}

/// A worker as the registry holds it.
#[derive(Debug, Clone)]
pub(crate) struct Worker {
    /// What it was started as.
    pub spec: WorkerSpec,
    /// Its key (only the hive uses it: clients come through the front door).
    pub api_key: String,
    /// Current state.
    pub state: WorkerState,
    /// Busy slots at the last health check.
    pub slots_busy: u32,
    /// Last request activity (or start).
    pub last_activity_unix: u64,
    /// Health checks missed in a row.
    pub health_misses: u32,
    /// Main process.
    pub pid: Option<u32>,
    /// Port tries so far (a worker that cannot bind gets the next port).
    pub port_attempts: u32,
}

impl Worker {
    /// The API's view.
    pub(crate) fn view(&self) -> WorkerView {
        WorkerView {
            id: self.spec.id.clone(),
            unit: self.spec.unit.clone(),
            url: self.spec.url(),
            model_ref: self.spec.model_ref.clone(),
            backend: self.spec.backend,
            device: self.spec.device,
            state: self.state,
            slots: self.spec.slots,
            slots_busy: self.slots_busy,
            last_activity_unix: self.last_activity_unix,
            started_at_unix: self.spec.started_at_unix,
            pid: self.pid,
            supervisor: self.spec.supervisor.clone(),
            binary: self.spec.binary.clone(),
            model_path: Some(self.spec.model_path.clone()),
        }
    }
}

#[derive(Default)]
struct Inner {
    workers: BTreeMap<String, Worker>,
    failures: BTreeMap<ModelRef, Failure>,
    /// The last failures of any model, oldest first (for the status page).
    recent: std::collections::VecDeque<RecentFailure>,
}

/// Failures kept for `GET /v1/workers/list`.
const RECENT_FAILURES: usize = 10;

/// The workers, behind one lock held only for short, non-blocking sections.
#[derive(Default)]
pub(crate) struct Registry {
    inner: Mutex<Inner>,
}

pub(crate) use rbee_types::now_unix;

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds (or replaces) a worker.
    pub(crate) fn insert(&self, w: Worker) {
        self.lock().workers.insert(w.spec.id.clone(), w);
    }

    /// Removes a worker, returning it.
    pub(crate) fn remove(&self, id: &str) -> Option<Worker> {
        self.lock().workers.remove(id)
    }

    /// A copy of one worker.
    pub(crate) fn get(&self, id: &str) -> Option<Worker> {
        self.lock().workers.get(id).cloned()
    }

    /// Changes one worker in place; false when it is not there.
    pub(crate) fn update(&self, id: &str, f: impl FnOnce(&mut Worker)) -> bool {
        match self.lock().workers.get_mut(id) {
            Some(w) => {
                f(w);
                true
            }
            None => false,
        }
    }

    /// Copies of every worker.
    pub(crate) fn all(&self) -> Vec<Worker> {
        self.lock().workers.values().cloned().collect()
    }

    /// The API's view of every worker.
    pub(crate) fn views(&self) -> Vec<WorkerView> {
        self.lock().workers.values().map(Worker::view).collect()
    }

    /// The worker with this unit name.
    pub(crate) fn find_unit(&self, unit: &str) -> Option<Worker> {
        self.lock()
            .workers
            .values()
            .find(|w| w.spec.unit == unit)
            .cloned()
    }

    /// A worker serving `model_path` on that backend and device that a spawn may reuse.
    pub(crate) fn reusable(
        &self,
        model_path: &Path,
        backend: Backend,
        device: u32,
    ) -> Option<Worker> {
        self.lock()
            .workers
            .values()
            .find(|w| {
                w.state.reusable()
                    && w.spec.model_path == model_path
                    && w.spec.backend == backend
                    && w.spec.device == device
            })
            .cloned()
    }

    /// A worker serving `model_path` that a spawn may reuse, on any backend.
    pub(crate) fn reusable_any(&self, model_path: &Path) -> Option<Worker> {
        self.lock()
            .workers
            .values()
            .find(|w| w.state.reusable() && w.spec.model_path == model_path)
            .cloned()
    }

    /// Whether an id, unit or port is taken.
    pub(crate) fn taken(&self, id: &str, unit: &str, port: Option<u16>) -> bool {
        self.lock()
            .workers
            .values()
            .any(|w| w.spec.id == id || w.spec.unit == unit || Some(w.spec.port) == port)
    }

    /// Ports in use by workers.
    pub(crate) fn ports(&self) -> Vec<u16> {
        self.lock().workers.values().map(|w| w.spec.port).collect()
    }

    /// Memory the CPU workers were counted as needing when they started: model and KV
    /// cache (for the RAM budget).
    pub(crate) fn cpu_memory_bytes(&self) -> u64 {
        self.lock()
            .workers
            .values()
            .filter(|w| w.spec.backend == Backend::Cpu)
            .map(|w| crate::preflight::worker_memory(w.spec.model_bytes, w.spec.kv_bytes))
            .sum()
    }

    /// Ids of the workers serving the model file at `model_path`.
    pub(crate) fn users_of_model(&self, model_path: &Path) -> Vec<String> {
        self.lock()
            .workers
            .values()
            .filter(|w| w.spec.model_path == model_path)
            .map(|w| w.spec.id.clone())
            .collect()
    }

    /// Whether a worker runs the executable at `path`.
    pub(crate) fn uses_binary(&self, path: &std::path::Path) -> bool {
        self.lock()
            .workers
            .values()
            .any(|w| w.spec.binary.as_deref() == Some(path))
    }

    /// Remembers why a worker of `model_ref` ended.
    pub(crate) fn record_failure(&self, model_ref: &ModelRef, f: Failure) {
        let mut inner = self.lock();
        if inner.recent.len() == RECENT_FAILURES {
            inner.recent.pop_front();
        }
        inner.recent.push_back(RecentFailure {
            model_ref: model_ref.clone(),
            failure: f.clone(),
        });
        inner.failures.insert(model_ref.clone(), f);
    }

    /// The last failures, newest first.
    pub(crate) fn recent_failures(&self) -> Vec<RecentFailure> {
        self.lock().recent.iter().rev().cloned().collect()
    }

    /// How the last worker of `model_ref` ended, if it failed (left in place).
    pub(crate) fn failure(&self, model_ref: &ModelRef) -> Option<Failure> {
        self.lock().failures.get(model_ref).cloned()
    }

    /// Hands out (once) the last failure of a model's worker.
    pub(crate) fn take_failure(&self, model_ref: &ModelRef) -> Option<Failure> {
        self.lock().failures.remove(model_ref)
    }

    /// `3 workers: 2 idle, 1 busy` — for `systemctl status rbee-hive`.
    pub(crate) fn summary(&self) -> String {
        let inner = self.lock();
        let n = inner.workers.len();
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for w in inner.workers.values() {
            let name = match w.state {
                WorkerState::Loading => "loading",
                WorkerState::Idle => "idle",
                WorkerState::Busy => "busy",
                WorkerState::Draining => "draining",
                WorkerState::Unhealthy => "unhealthy",
                WorkerState::Failed => "failed",
            };
            *counts.entry(name).or_default() += 1;
        }
        let parts: Vec<String> = ["idle", "busy", "loading", "draining", "unhealthy", "failed"]
            .iter()
            .filter_map(|k| counts.get(k).map(|c| format!("{c} {k}")))
            .collect();
        let noun = if n == 1 { "worker" } else { "workers" };
        if parts.is_empty() {
            format!("{n} {noun}")
        } else {
            format!("{n} {noun}: {}", parts.join(", "))
        }
    }
}

/// Record files: `<dir>/<id>.json` (the spec) and `<dir>/<id>.key` (0600, the worker's key).
pub(crate) mod store {
    use super::*;

    /// Writes the spec and key of a new worker (atomically: temp file, fsync, rename).
    pub(crate) fn save(dir: &Path, spec: &WorkerSpec, key: &str) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let key_path = dir.join(format!("{}.key", spec.id));
        write_atomic(&key_path, key.as_bytes(), 0o600)?;
        let json = serde_json::to_vec_pretty(spec).map_err(std::io::Error::other)?;
        write_atomic(&dir.join(format!("{}.json", spec.id)), &json, 0o600)?;
        Ok(key_path)
    }

    /// The key file of a worker.
    pub(crate) fn key_path(dir: &Path, id: &str) -> PathBuf {
        dir.join(format!("{id}.key"))
    }

    fn write_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(tmp, path)
    }

    /// Every record (spec and key) in `dir`; unreadable ones are logged and skipped.
    pub(crate) fn load_all(dir: &Path) -> Vec<(WorkerSpec, String)> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return vec![];
        };
        let mut out = vec![];
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            let spec: Option<WorkerSpec> = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let Some(spec) = spec else {
                tracing::warn!(path = %path.display(), "unreadable worker record, ignored");
                continue;
            };
            match std::fs::read_to_string(key_path(dir, &spec.id)) {
                Ok(key) => out.push((spec, key.trim().to_owned())),
                Err(e) => tracing::warn!(id = %spec.id, error = %e, "worker key missing"),
            }
        }
        out
    }

    /// Deletes a worker's record and key.
    pub(crate) fn remove(dir: &Path, id: &str) {
        for ext in ["json", "key"] {
            let _ = std::fs::remove_file(dir.join(format!("{id}.{ext}")));
        }
    }

    /// 32 random bytes from the kernel, hex.
    pub(crate) fn random_key() -> std::io::Result<String> {
        use std::io::Read;
        let mut buf = [0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
        Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str, port: u16) -> WorkerSpec {
        WorkerSpec {
            id: id.into(),
            unit: format!("rbee-worker@{id}.service"),
            model_ref: format!("file:///m/{id}.gguf").parse().unwrap(),
            model_path: format!("/m/{id}.gguf").into(),
            model_bytes: 100,
            kv_bytes: 0,
            backend: Backend::Cpu,
            device: 0,
            slots: 2,
            ctx_size: None,
            devices: vec![],
            host: IpAddr::from([127, 0, 0, 1]),
            port,
            supervisor: "process".into(),
            log_file: None,
            started_at_unix: 1,
            binary: None,
        }
    }

    fn worker(id: &str, port: u16, state: WorkerState) -> Worker {
        Worker {
            spec: spec(id, port),
            api_key: "k".into(),
            state,
            slots_busy: 0,
            last_activity_unix: 1,
            health_misses: 0,
            pid: None,
            port_attempts: 1,
        }
    }

    #[test]
    fn the_status_line_counts_workers_by_state() {
        let r = Registry::default();
        assert_eq!(r.summary(), "0 workers");
        r.insert(worker("a", 1, WorkerState::Idle));
        r.insert(worker("b", 2, WorkerState::Idle));
        r.insert(worker("c", 3, WorkerState::Busy));
        assert_eq!(r.summary(), "3 workers: 2 idle, 1 busy");
    }

    #[test]
    fn only_live_workers_of_the_same_model_backend_and_device_are_reused() {
        let r = Registry::default();
        r.insert(worker("a", 1, WorkerState::Draining));
        assert!(r
            .reusable(Path::new("/m/a.gguf"), Backend::Cpu, 0)
            .is_none());
        r.insert(worker("a", 1, WorkerState::Loading));
        assert!(r
            .reusable(Path::new("/m/a.gguf"), Backend::Cpu, 0)
            .is_some());
        assert!(r
            .reusable(Path::new("/m/a.gguf"), Backend::Cpu, 1)
            .is_none());
        assert!(r
            .reusable(Path::new("/m/a.gguf"), Backend::Cuda, 0)
            .is_none());
    }

    #[test]
    fn records_round_trip_and_keys_are_private() {
        let dir = std::env::temp_dir().join(format!("rbee-store-{}", std::process::id()));
        let s = spec("smol", 9300);
        let key_path = store::save(&dir, &s, "sekrit").unwrap();
        let mode = std::fs::metadata(&key_path).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        assert_eq!(store::load_all(&dir), vec![(s, "sekrit".to_owned())]);
        store::remove(&dir, "smol");
        assert!(store::load_all(&dir).is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn keys_are_random_and_long() {
        let (a, b) = (store::random_key().unwrap(), store::random_key().unwrap());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
