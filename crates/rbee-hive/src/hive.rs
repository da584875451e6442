//! The hive's core: spawning (reuse, preflight, ports, unit names), stopping, adoption
//! after a restart, and the reaction to what supervisors report.

use std::net::{IpAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rbee_supervisor::unit_name::worker_unit;
use rbee_types::hive::{
    build_progress_path, download_progress_path, BuildRef, DownloadRef, Failure, SpawnRequest,
    SpawnResponse, WorkerState,
};
use rbee_types::worker::WorkerArgs;
use rbee_types::{exit, ApiError, Backend, ErrorCode};

use crate::config::Config;
use crate::naming::slug;
use crate::placement::{self, Placement};
use crate::preflight::{self, KvCache, Need, Snapshot};
use crate::registry::{now_unix, store, Registry, Worker, WorkerSpec};
use crate::resources;
use crate::supervisor::{Event, Launch, StartError, Supervisor};
use crate::worker_log;
use rbee_models::provisioner::{Ensured, Provisioner, Transfer};

/// Port tries for one worker before the spawn is given up.
pub(crate) const MAX_PORT_ATTEMPTS: u32 = 5;

/// A model resolved to a local file.
struct LocalModel {
    path: PathBuf,
    /// The file name without `.gguf`: the base of unit names and worker ids.
    model_id: String,
    bytes: u64,
}

impl From<rbee_models::catalog::Model> for LocalModel {
    fn from(m: rbee_models::catalog::Model) -> Self {
        LocalModel {
            model_id: m
                .file_name
                .strip_suffix(".gguf")
                .unwrap_or(&m.file_name)
                .to_owned(),
            path: m.local_path,
            bytes: m.size_bytes,
        }
    }
}

/// Slots and context size within what a worker accepts; the slots (default 1).
fn check_sizes(req: &SpawnRequest) -> Result<u32, ApiError> {
    let slots = req.slots.unwrap_or(1);
    if !(1..=64).contains(&slots) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("slots must be between 1 and 64, not {slots}"),
        )
        .detail("field", "slots"));
    }
    let max_ctx = rbee_types::worker::MAX_CTX_PER_SLOT;
    if let Some(c) = req.ctx_size.filter(|c| !(16..=max_ctx).contains(c)) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("ctx_size must be between 16 and {max_ctx} tokens per slot, not {c}"),
        )
        .detail("field", "ctx_size"));
    }
    Ok(slots)
}

/// Everything the hive's threads share.
pub(crate) struct Hive {
    /// Configuration.
    pub config: Config,
    /// The hive's own API key.
    pub api_key: Option<String>,
    /// The workers.
    pub registry: Registry,
    /// systemd or processes.
    pub supervisor: Supervisor,
    /// The runtime D-Bus work runs on.
    pub rt: tokio::runtime::Handle,
    /// The worker binaries: recorded, built from git, or the installed one.
    pub binaries: Arc<rbee_binaries::Builder>,
    /// The hive's own base URL (for worker callbacks).
    pub hive_url: String,
    /// Whether systemd workers log to the journal (else to files).
    pub journal: bool,
    /// Set on SIGTERM: no new workers.
    pub draining: AtomicBool,
    /// The model catalogue and downloads.
    pub models: Arc<Provisioner>,
    /// The front door's queue per model.
    pub(crate) queues: Arc<crate::queue::Queues>,
    /// Prometheus counters and histograms.
    pub(crate) metrics: crate::metrics::Metrics,
    /// Which `Host` names and browser origins are answered.
    pub(crate) guard: rbee_http::guard::Guard,
    spawn_lock: Mutex<()>,
    /// A handle to itself, for work that outlives a request (spawning after a download).
    pub me: std::sync::OnceLock<std::sync::Weak<Hive>>,
    /// The API server's connection counts (for metrics), once it listens.
    pub connections: std::sync::OnceLock<rbee_http::Connections>,
}

fn spawn_failed(msg: String) -> ApiError {
    ApiError::new(ErrorCode::SpawnFailed, msg)
}

impl Hive {
    /// A hive with no workers yet.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        config: Config,
        api_key: Option<String>,
        supervisor: Supervisor,
        rt: tokio::runtime::Handle,
        binaries: Arc<rbee_binaries::Builder>,
        hive_url: String,
        journal: bool,
        models: Arc<Provisioner>,
    ) -> Hive {
        let guard = rbee_http::guard::Guard::new(
            config.host,
            api_key.is_some(),
            &config.allowed_hosts,
            &config.cors_origins,
        );
        Hive {
            queues: Arc::default(),
            metrics: crate::metrics::Metrics::default(),
            guard,
            config,
            api_key,
            registry: Registry::default(),
            supervisor,
            rt,
            binaries,
            hive_url,
            journal,
            models,
            draining: AtomicBool::new(false),
            spawn_lock: Mutex::new(()),
            me: std::sync::OnceLock::new(),
            connections: std::sync::OnceLock::new(),
        }
    }

    /// Reuses a live worker of the same model, backend and device, or runs preflight and
    /// starts a new one (returned in state `loading`). Spawns are serialised, so two
    /// concurrent requests for one model get one worker. A model still to download or a
    /// worker binary still to build is answered with what the worker waits for.
    pub(crate) fn spawn(&self, req: &SpawnRequest) -> Result<(u16, SpawnResponse), ApiError> {
        // A bad size is a bad request whether or not a worker would be reused.
        check_sizes(req)?;
        if req.backend.is_none() {
            // Any ready worker of the model will do: no need to look at the GPUs.
            if let Some(w) = self
                .models
                .local_path(&req.model_ref)
                .and_then(|p| self.registry.reusable_any(&p))
            {
                tracing::info!(id = %w.spec.id, model = %req.model_ref, "reusing worker");
                return Ok((200, SpawnResponse::reused(w.view())));
            }
        }
        // The config's default_device is for GPUs: a CPU worker is on device 0 unless the
        // request names another (preflight then says the CPU has no such device).
        let at = match req.backend {
            Some(backend) => {
                let default = self.config.default_device.filter(|_| backend.is_gpu());
                Placement::fixed(backend, req.device.or(default).unwrap_or(0))
            }
            None => {
                let mut at = placement::place(
                    self.config.default_backend,
                    req.device.or(self.config.default_device),
                    &resources::backends(),
                    |b| self.binaries.ready_for(b),
                );
                if at.backend == Backend::Cpu {
                    at.device = req.device.unwrap_or(0);
                }
                at
            }
        };
        match self.spawn_on(req, at) {
            Err(e) if at.cpu_fallback && e.error.code == ErrorCode::InsufficientVram => {
                tracing::info!(model = %req.model_ref, "does not fit on {} {}: {}; starting it on the CPU", at.backend, at.device, e.error.message);
                self.spawn_on(req, Placement::fixed(Backend::Cpu, 0))
            }
            Err(mut e)
                if req.backend.is_none()
                    && self.config.default_backend != placement::DefaultBackend::Auto =>
            {
                // The operator's setting chose this backend: say so.
                e.error.message.push_str(&format!(
                    " (the hive's default_backend = \"{}\" chose it; the request named none)",
                    at.backend
                ));
                Err(e)
            }
            other => other,
        }
    }

    /// [`Hive::spawn`] on a chosen backend and device.
    fn spawn_on(
        &self,
        req: &SpawnRequest,
        at: Placement,
    ) -> Result<(u16, SpawnResponse), ApiError> {
        let slots = check_sizes(req)?;
        let model = match self.models.ensure(&req.model_ref)? {
            Ensured::Ready(m) => LocalModel::from(*m),
            Ensured::Downloading(t) => return Ok((202, self.spawn_after(t, req))),
        };
        let _serial = self.spawn_lock.lock().unwrap_or_else(|e| e.into_inner());
        if self.draining.load(Ordering::Acquire) {
            return Err(ApiError::new(
                ErrorCode::Draining,
                "the hive is shutting down and starts no workers",
            ));
        }
        // A spawn that leaves the backend to the hive takes any ready worker of the model.
        let reusable = match req.backend {
            None => self.registry.reusable_any(&model.path),
            Some(_) => self.registry.reusable(&model.path, at.backend, at.device),
        };
        if let Some(w) = reusable {
            tracing::info!(id = %w.spec.id, model = %req.model_ref, "reusing worker");
            return Ok((200, SpawnResponse::reused(w.view())));
        }
        let (snapshot, kv) = self.preflight(req, at, slots, &model)?;
        let binary = match self.binaries.resolve(at.backend)? {
            rbee_binaries::Resolved::Ready(b) => b.binary_path,
            rbee_binaries::Resolved::Building(b) => {
                let build = BuildRef {
                    id: b.id.clone(),
                    progress_url: build_progress_path(&b.id),
                };
                tracing::info!(model = %req.model_ref, build = %b.id, "no worker binary for {} yet; the worker starts once it is built", at.backend);
                self.spawn_when(
                    req,
                    move || b.wait().map(|_| ()).map_err(ApiError::from),
                    "worker binary build",
                );
                let previous = self.registry.take_failure(&req.model_ref);
                return Ok((202, SpawnResponse::waiting_for_build(build, previous)));
            }
        };
        let devices = gpu_device_nodes(&snapshot.backends, at.backend, at.device);
        let previous = self.registry.take_failure(&req.model_ref);
        let w = self.start_new(req, at, kv, &model, binary, devices)?;
        Ok((202, SpawnResponse::started(w.view(), previous)))
    }

    /// The model file is a GGUF model and the machine has room for it and the KV cache of
    /// `slots` slots (backend, device, RAM or VRAM, disk); the snapshot the checks ran on,
    /// and that cache.
    fn preflight(
        &self,
        req: &SpawnRequest,
        at: Placement,
        slots: u32,
        model: &LocalModel,
    ) -> Result<(Snapshot, KvCache), ApiError> {
        // Read again although the catalogue checked it on admission: a `file://` model
        // can be replaced on disk since, and a unit started on a damaged file fails only
        // after its load timeout. (The worker reads it once more: it can run alone.)
        let header = rbee_gguf::read_header(&model.path).map_err(|e| {
            ApiError::new(
                ErrorCode::ModelInvalid,
                format!("{} is not a usable GGUF model: {e}", req.model_ref),
            )
            .detail("model_ref", req.model_ref.to_string())
        })?;
        let kv = KvCache::estimate(&header, slots, req.ctx_size);
        let snapshot = Snapshot {
            memory: resources::memory(),
            disk: resources::disk(&self.config.state_dir),
            backends: resources::backends(),
            ram_in_use_by_workers: self.registry.cpu_memory_bytes(),
        };
        let need = Need {
            backend: at.backend,
            device: at.device,
            model_bytes: model.bytes,
            kv,
        };
        preflight::check(&need, &snapshot, &self.config.limits).inspect_err(|e| {
            tracing::warn!(model = %req.model_ref, code = %e.error.code.as_str(), "preflight: {}", e.error.message);
        })?;
        Ok((snapshot, kv))
    }

    /// Starts a new worker: a free port, the first unit name and id not taken (by this
    /// hive's workers or by units it does not track), then [`Hive::launch`].
    fn start_new(
        &self,
        req: &SpawnRequest,
        at: Placement,
        kv: KvCache,
        model: &LocalModel,
        binary: PathBuf,
        devices: Vec<String>,
    ) -> Result<Worker, ApiError> {
        let port = self.pick_port(None).ok_or_else(|| {
            spawn_failed(format!(
                "no free port in the worker range {}; stop idle workers or widen worker_ports",
                self.config.worker_ports
            ))
        })?;
        for n in 0..64 {
            let unit = worker_unit(&model.model_id, n);
            let base = slug(&model.model_id);
            let id = if n == 0 {
                base
            } else {
                format!("{base}-{}", n + 1)
            };
            if self.registry.taken(&id, &unit, None) {
                continue;
            }
            let spec = WorkerSpec {
                id: id.clone(),
                unit,
                model_ref: req.model_ref.clone(),
                model_path: model.path.clone(),
                model_bytes: model.bytes,
                kv_bytes: kv.bytes,
                backend: at.backend,
                device: at.device,
                slots: kv.slots,
                ctx_size: req.ctx_size,
                devices: devices.clone(),
                host: self.config.worker_host,
                port,
                supervisor: self.supervisor.name().into(),
                log_file: (!self.journal || !self.supervisor.is_systemd())
                    .then(|| self.config.logs_dir().join(format!("{id}.log"))),
                started_at_unix: now_unix(),
                binary: Some(binary.clone()),
            };
            match self.launch(spec, 1) {
                Ok(w) => return Ok(w),
                Err(StartError::Exists(unit)) => {
                    tracing::info!(%unit, "unit name taken by a unit this hive does not track; trying the next instance");
                }
                Err(StartError::NoSpace) => {
                    return Err(ApiError::new(
                        ErrorCode::InsufficientDisk,
                        "no space left on the disk of the hive's state directory for the \
                         worker's record and log; free some space and retry",
                    ))
                }
                Err(StartError::Other(e)) => {
                    return Err(spawn_failed(format!("cannot start the worker: {e}")))
                }
            }
        }
        Err(spawn_failed(format!(
            "64 workers of {} exist already",
            model.model_id
        )))
    }

    /// The model is downloading: answer with the download, and spawn when it completes
    /// (a failed download is reported on the next spawn of the model).
    fn spawn_after(&self, t: Arc<Transfer>, req: &SpawnRequest) -> SpawnResponse {
        let download = DownloadRef {
            id: t.id.clone(),
            progress_url: download_progress_path(&t.id),
        };
        tracing::info!(model = %req.model_ref, download = %t.id, "model not here yet; the worker starts once it is downloaded");
        self.spawn_when(
            req,
            move || t.wait().map(|_| ()).map_err(ApiError::from),
            "model's download",
        );
        SpawnResponse::waiting_for_download(download, self.registry.take_failure(&req.model_ref))
    }

    /// Spawns `req` again once `wait` returns (a download, a build); its failure is
    /// reported on the next spawn of the model.
    fn spawn_when(
        &self,
        req: &SpawnRequest,
        wait: impl FnOnce() -> Result<(), ApiError> + Send + 'static,
        what: &'static str,
    ) {
        let Some(me) = self.me.get().and_then(std::sync::Weak::upgrade) else {
            return;
        };
        let req = req.clone();
        std::thread::spawn(move || match wait() {
            Ok(()) => match me.spawn(&req) {
                Ok((_, r)) => {
                    tracing::info!(model = %req.model_ref, worker = ?r.worker.map(|w| w.id), "{what} done; worker started")
                }
                Err(e) => {
                    tracing::error!(model = %req.model_ref, "{what} done but the worker did not start: {e}")
                }
            },
            Err(e) => {
                me.registry.record_failure(
                    &req.model_ref,
                    Failure {
                        worker_id: String::new(),
                        unit: String::new(),
                        exit: format!("the {what} failed: {e}"),
                        last_log_lines: vec![],
                        at_unix: now_unix(),
                    },
                );
            }
        });
    }

    /// Writes the record, registers the worker as loading, and asks the supervisor to start
    /// it. On failure nothing is left behind.
    fn launch(&self, spec: WorkerSpec, attempt: u32) -> Result<Worker, StartError> {
        let dir = self.config.workers_dir();
        let other = |e: std::io::Error| StartError::io("worker record", &e);
        let key = match self.registry.get(&spec.id) {
            Some(w) => w.api_key,
            None => store::random_key().map_err(other)?,
        };
        let key_path = store::save(&dir, &spec, &key).map_err(other)?;
        let args = WorkerArgs {
            model: spec.model_path.clone(),
            backend: spec.backend,
            device: spec.device,
            host: spec.host,
            port: spec.port,
            slots: spec.slots,
            ctx_size: spec.ctx_size,
            worker_id: spec.id.clone(),
            model_ref: spec.model_ref.clone(),
            hive_url: self.hive_url.clone(),
            drain_timeout_secs: self.config.stop_timeout_secs.saturating_sub(5).max(1),
            open_metrics: !self.config.metrics_auth,
        }
        .to_args();
        let worker = Worker {
            spec: spec.clone(),
            api_key: key,
            state: WorkerState::Loading,
            slots_busy: 0,
            last_activity_unix: now_unix(),
            health_misses: 0,
            pid: None,
            port_attempts: attempt,
        };
        self.registry.insert(worker.clone());
        let launch = Launch {
            binary: spec
                .binary
                .clone()
                .unwrap_or_else(|| PathBuf::from("llm-worker-rbee")),
            args,
            key_path,
            memory_max: memory_max(spec.model_bytes, spec.kv_bytes),
            devices: spec.devices.clone(),
            load_timeout: Duration::from_secs(self.config.load_timeout_secs),
            stop_timeout: Duration::from_secs(self.config.stop_timeout_secs),
            spec,
        };
        match self.rt.block_on(self.supervisor.start(&launch)) {
            Ok(pid) => {
                self.registry.update(&worker.spec.id, |w| w.pid = pid);
                tracing::info!(
                    id = %worker.spec.id,
                    unit = %worker.spec.unit,
                    port = worker.spec.port,
                    supervisor = self.supervisor.name(),
                    "worker starting"
                );
                Ok(Worker { pid, ..worker })
            }
            Err(e) => {
                self.metrics.model_load(false);
                self.registry.remove(&worker.spec.id);
                store::remove(&dir, &worker.spec.id);
                Err(e)
            }
        }
    }

    /// The first port of the range (after `after`, wrapping) that no worker holds and
    /// that can be bound now.
    fn pick_port(&self, after: Option<u16>) -> Option<u16> {
        let r = self.config.worker_ports;
        let used = self.registry.ports();
        let all: Vec<u16> = (r.start..=r.end).collect();
        let start = after
            .and_then(|a| all.iter().position(|&p| p == a).map(|i| i + 1))
            .unwrap_or(0);
        (0..all.len())
            .map(|i| all[(start + i) % all.len()])
            .filter(|p| Some(*p) != after && !used.contains(p))
            .find(|&p| port_free(self.config.worker_host, p))
    }

    /// Whether workers log to the user's journal (a user manager runs them).
    pub(crate) fn user_journal(&self) -> bool {
        matches!(&self.supervisor, Supervisor::Systemd(s) if s.kind() == rbee_supervisor::properties::ManagerKind::User)
    }

    /// Stops one worker gracefully: `/v1/admin/shutdown` (it drains), then the supervisor's
    /// stop (systemd's stop timeout does the force-kill). The worker leaves the registry.
    pub(crate) fn stop_worker(&self, id: &str, reason: &str) -> Result<(), ApiError> {
        let mut found = None;
        self.registry.update(id, |w| {
            // An unhealthy worker stays listed as such until it is gone.
            if w.state != WorkerState::Unhealthy {
                w.state = WorkerState::Draining;
            }
            found = Some(w.clone());
        });
        let Some(w) = found else {
            return Err(worker_not_found(id));
        };
        tracing::info!(%id, unit = %w.spec.unit, reason, "stopping worker");
        if w.state == WorkerState::Unhealthy {
            self.registry.record_failure(
                &w.spec.model_ref,
                Failure {
                    worker_id: w.spec.id.clone(),
                    unit: w.spec.unit.clone(),
                    exit: format!("stopped: {reason}"),
                    last_log_lines: worker_log::last_lines(self.user_journal(), &w.spec, 20),
                    at_unix: now_unix(),
                },
            );
        }
        let _ = ureq::post(&format!("{}/v1/admin/shutdown", w.spec.url()))
            .set("Authorization", &format!("Bearer {}", w.api_key))
            .timeout(Duration::from_secs(2))
            .call();
        let stop = Duration::from_secs(self.config.stop_timeout_secs);
        let result = self.rt.block_on(self.supervisor.stop(&w.spec.unit, stop));
        self.forget(&w.spec.id);
        result.map_err(|e| spawn_failed(format!("stopping {}: {e}", w.spec.unit)))
    }

    fn forget(&self, id: &str) {
        if self.registry.remove(id).is_some() {
            store::remove(&self.config.workers_dir(), id);
            // A replaced worker binary may be unused now.
            self.binaries.collect_garbage();
        }
    }

    /// Stops every worker at once, each bounded by the stop timeout.
    pub(crate) fn stop_all(&self, reason: &str) {
        let workers = self.registry.all();
        if workers.is_empty() {
            return;
        }
        tracing::info!(count = workers.len(), "stopping all workers");
        std::thread::scope(|s| {
            for w in &workers {
                s.spawn(|| {
                    if let Err(e) = self.stop_worker(&w.spec.id, reason) {
                        tracing::warn!(id = %w.spec.id, error = %e, "stop failed");
                    }
                });
            }
        });
    }

    /// Rebuilds the registry from running units and the records on disk: a hive restart
    /// loses no worker. Records of units that no longer run are removed.
    pub(crate) fn adopt(&self) {
        let dir = self.config.workers_dir();
        let records = store::load_all(&dir);
        let running = self.rt.block_on(self.supervisor.adoptable());
        for (spec, key) in &records {
            let Some((_, pid, loading)) = running.iter().find(|(u, _, _)| *u == spec.unit) else {
                tracing::info!(id = %spec.id, unit = %spec.unit, "worker no longer runs; record removed");
                store::remove(&dir, &spec.id);
                continue;
            };
            let spec = &self.count_kv_cache(spec, key);
            let info = ureq::get(&format!("{}/v1/info", spec.url()))
                .set("Authorization", &format!("Bearer {key}"))
                .timeout(Duration::from_secs(2))
                .call()
                .ok()
                .and_then(|r| r.into_json::<rbee_types::worker::WorkerInfo>().ok());
            match &info {
                Some(i) if i.id == spec.id => {}
                Some(i) => {
                    tracing::warn!(id = %spec.id, answered = %i.id, "adopted worker reports another id")
                }
                None if !loading => {
                    tracing::warn!(id = %spec.id, "adopted worker does not answer /v1/info yet; the health check decides")
                }
                None => {}
            }
            self.registry.insert(Worker {
                spec: spec.clone(),
                api_key: key.clone(),
                state: if *loading {
                    WorkerState::Loading
                } else {
                    WorkerState::Idle
                },
                slots_busy: 0,
                last_activity_unix: now_unix(),
                health_misses: 0,
                pid: *pid,
                port_attempts: 1,
            });
            let load_timeout = Duration::from_secs(self.config.load_timeout_secs);
            self.rt.block_on(
                self.supervisor
                    .watch_adopted(&spec.unit, *loading, load_timeout),
            );
            tracing::info!(id = %spec.id, unit = %spec.unit, pid = ?pid, "adopted running worker");
        }
        for (unit, _, _) in &running {
            if !records.iter().any(|(s, _)| &s.unit == unit) {
                tracing::warn!(%unit, "unit runs without a record of this hive (started by hand or by another hive); left alone");
            }
        }
    }

    /// A record written before hives counted the KV cache (`kv_bytes` 0) gets it from
    /// the model's header, so that the RAM budget counts it, and its unit's memory limit
    /// is raised to leave room for it (the old limit could let the kernel kill a worker
    /// with many slots). The record is saved again once the limit is raised.
    fn count_kv_cache(&self, spec: &WorkerSpec, key: &str) -> WorkerSpec {
        if spec.kv_bytes != 0 {
            return spec.clone();
        }
        let header = match rbee_gguf::read_header(&spec.model_path) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(id = %spec.id, error = %e, "cannot read the adopted worker's model header; its KV cache stays uncounted");
                return spec.clone();
            }
        };
        let kv = KvCache::estimate(&header, spec.slots, spec.ctx_size);
        if kv.bytes == 0 {
            return spec.clone();
        }
        let spec = WorkerSpec {
            kv_bytes: kv.bytes,
            ..spec.clone()
        };
        // The limit first: the record is saved only once it is raised, so that a hive
        // that could not raise it tries again at its next start.
        if let Some(max) = memory_max(spec.model_bytes, spec.kv_bytes) {
            if let Err(e) = self
                .rt
                .block_on(self.supervisor.set_memory_max(&spec.unit, max))
            {
                tracing::warn!(id = %spec.id, unit = %spec.unit, error = %e, "cannot raise the adopted worker's memory limit; trying again at the next start");
                return spec;
            }
        }
        if let Err(e) = store::save(&self.config.workers_dir(), &spec, key) {
            tracing::warn!(id = %spec.id, error = %e, "cannot save the adopted worker's record");
        }
        tracing::info!(id = %spec.id, kv_cache_bytes = kv.bytes, "adopted worker's KV cache counted (its record predates that)");
        spec
    }

    /// Reacts to a supervisor event.
    pub(crate) fn handle(&self, event: Event) {
        match event {
            Event::Ready { unit, pid } => {
                let Some(w) = self.registry.find_unit(&unit) else {
                    return;
                };
                if w.state == WorkerState::Loading {
                    self.metrics.model_load(true);
                }
                self.registry.update(&w.spec.id, |w| {
                    if w.state == WorkerState::Loading {
                        w.state = WorkerState::Idle;
                    }
                    w.pid = pid.filter(|p| *p != 0).or(w.pid);
                    w.last_activity_unix = now_unix();
                });
                tracing::info!(id = %w.spec.id, %unit, "worker ready");
            }
            Event::Exited { unit, exit } => {
                let Some(w) = self.registry.find_unit(&unit) else {
                    return;
                };
                if matches!(w.state, WorkerState::Draining | WorkerState::Unhealthy) {
                    tracing::info!(id = %w.spec.id, %unit, exit = %exit.description, "worker stopped");
                    self.forget(&w.spec.id);
                    return;
                }
                if exit.status == Some(exit::PORT_IN_USE)
                    && w.state == WorkerState::Loading
                    && w.port_attempts < MAX_PORT_ATTEMPTS
                    && self.retry_port(&w)
                {
                    return;
                }
                if w.state == WorkerState::Loading {
                    self.metrics.model_load(false);
                }
                let exit_text = exit.description;
                let last_log_lines = worker_log::last_lines(self.user_journal(), &w.spec, 20);
                tracing::error!(
                    id = %w.spec.id,
                    %unit,
                    exit = %exit_text,
                    last_log = %last_log_lines.join("\n"),
                    "worker ended unexpectedly"
                );
                self.registry.record_failure(
                    &w.spec.model_ref,
                    Failure {
                        worker_id: w.spec.id.clone(),
                        unit,
                        exit: exit_text,
                        last_log_lines,
                        at_unix: now_unix(),
                    },
                );
                self.forget(&w.spec.id);
            }
        }
    }

    /// The worker could not bind its port: the same worker again on the next free port.
    fn retry_port(&self, w: &Worker) -> bool {
        let Some(port) = self.pick_port(Some(w.spec.port)) else {
            return false;
        };
        tracing::warn!(
            id = %w.spec.id,
            old_port = w.spec.port,
            new_port = port,
            "worker could not bind its port; trying the next one"
        );
        let spec = WorkerSpec {
            port,
            ..w.spec.clone()
        };
        match self.launch(spec, w.port_attempts + 1) {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(id = %w.spec.id, error = %e, "retry on another port failed");
                false
            }
        }
    }
}

/// The API error for an unknown worker id.
pub(crate) fn worker_not_found(id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::WorkerNotFound,
        format!("no worker {id}; GET /v1/workers/list shows the running ones"),
    )
    .detail("id", id)
}

fn port_free(host: IpAddr, port: u16) -> bool {
    TcpListener::bind((host, port)).is_ok()
}

/// systemd's memory limit for a worker: room for the weights, the KV cache its slots
/// allocate at load, and buffers; GPU workers keep weights and cache in VRAM but still map
/// the file.
fn memory_max(model_bytes: u64, kv_bytes: u64) -> Option<u64> {
    Some(
        model_bytes
            .saturating_mul(2)
            .saturating_add(kv_bytes)
            .saturating_add(2 << 30),
    )
}

/// The device nodes a CUDA worker needs (`DeviceAllow=`): the control and UVM nodes and
/// the one GPU it was given.
fn gpu_device_nodes(
    backends: &[resources::BackendStatus],
    backend: Backend,
    device: u32,
) -> Vec<String> {
    if backend != Backend::Cuda {
        return vec![];
    }
    let mut nodes: Vec<String> = ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if let Some(node) = backends
        .iter()
        .find(|b| b.name == Backend::Cuda)
        .and_then(|b| b.devices.iter().find(|d| d.index == device))
        .and_then(|d| d.device_node.clone())
    {
        nodes.push(node);
    }
    nodes
}
