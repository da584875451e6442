//! The hive's HTTP API: every request and answer body, and the events of its progress
//! streams. The hive serialises these; the keeper, the benchmarks and the tests read them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{Backend, ErrorBody, ModelRef};

/// `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HiveHealth {
    /// Always `alive`.
    pub status: String,
    /// The hive's version.
    pub version: String,
    /// `v1`.
    pub api_version: String,
    /// `systemd-system`, `systemd-user` or `process` (defaults: a hive of another version
    /// may not send it, and the keeper must still read its version).
    #[serde(default)]
    pub supervisor: String,
    /// The hive's process id (lets `hive stop` end a hive started as a plain process).
    #[serde(default)]
    pub pid: u32,
}

// ---------------------------------------------------------------- resources

/// RAM, bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    /// Installed.
    pub total_bytes: u64,
    /// Available for new work (the kernel's `MemAvailable`).
    pub available_bytes: u64,
}

/// Space of one filesystem, bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    /// Size.
    pub total_bytes: u64,
    /// Free for unprivileged users.
    pub available_bytes: u64,
}

/// One device of a backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// Index to pass as `device`.
    pub index: u32,
    /// Product name.
    pub name: String,
    /// Memory on the device (RAM for the CPU), bytes.
    pub memory_total_bytes: u64,
    /// Free memory, bytes.
    pub memory_free_bytes: u64,
    /// `/dev/nvidia<minor>` for CUDA devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_node: Option<String>,
}

/// One backend and whether workers can use it here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendStatus {
    /// The backend.
    pub name: Backend,
    /// Whether it can run workers here.
    pub available: bool,
    /// Why not, when unavailable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Its devices.
    pub devices: Vec<Device>,
}

/// `GET /v1/backends`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendList {
    /// Every backend, available or not.
    pub backends: Vec<BackendStatus>,
}

/// `GET /v1/resources`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// RAM.
    pub memory: Memory,
    /// The filesystem of the hive's state directory.
    pub disk: DiskAt,
}

/// A filesystem and where it was measured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskAt {
    /// The directory.
    pub path: PathBuf,
    /// Its filesystem's space.
    pub space: Disk,
}

// ---------------------------------------------------------------- workers

/// Where a worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// Started, model still loading.
    Loading,
    /// Ready, no request running.
    Idle,
    /// Ready, at least one slot busy.
    Busy,
    /// Being stopped.
    Draining,
    /// Missed health checks; about to be stopped.
    Unhealthy,
    /// Ended unexpectedly.
    Failed,
}

impl WorkerState {
    /// Every state, in the order of a worker's life.
    pub const ALL: [WorkerState; 6] = [
        Self::Loading,
        Self::Idle,
        Self::Busy,
        Self::Draining,
        Self::Unhealthy,
        Self::Failed,
    ];

    /// Whether a spawn request for the same model may reuse the worker.
    pub fn reusable(self) -> bool {
        matches!(self, Self::Loading | Self::Idle | Self::Busy)
    }

    /// Whether the worker takes inference requests.
    pub fn ready(self) -> bool {
        matches!(self, Self::Idle | Self::Busy)
    }

    /// The lower-case name (`idle`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Loading => "loading",
            Self::Idle => "idle",
            Self::Busy => "busy",
            Self::Draining => "draining",
            Self::Unhealthy => "unhealthy",
            Self::Failed => "failed",
        }
    }
}

impl std::fmt::Display for WorkerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A worker as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerView {
    /// Id.
    pub id: String,
    /// systemd unit (or process name).
    pub unit: String,
    /// Base URL of its API.
    pub url: String,
    /// The model reference it was started for.
    pub model_ref: ModelRef,
    /// Backend.
    pub backend: Backend,
    /// Device index.
    pub device: u32,
    /// State.
    pub state: WorkerState,
    /// Slots.
    pub slots: u32,
    /// Busy slots (last health check).
    pub slots_busy: u32,
    /// Last activity.
    pub last_activity_unix: u64,
    /// Start time.
    pub started_at_unix: u64,
    /// Main PID.
    pub pid: Option<u32>,
    /// `systemd-system`, `systemd-user`, `process`.
    pub supervisor: String,
    /// The executable it runs.
    pub binary: Option<PathBuf>,
    /// The model file it serves (two references may name one file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_path: Option<PathBuf>,
}

/// Why a worker ended, kept for the next request for its model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The worker.
    pub worker_id: String,
    /// Its unit.
    pub unit: String,
    /// `killed by signal 9 (signal)`, `exited with status 4 (exit-code)`, …
    pub exit: String,
    /// The end of its log.
    pub last_log_lines: Vec<String>,
    /// When.
    pub at_unix: u64,
}

/// A failure of a model's worker, as the hive's recent failures list it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentFailure {
    /// The model the worker ran.
    pub model_ref: ModelRef,
    /// How it ended.
    #[serde(flatten)]
    pub failure: Failure,
}

/// `GET /v1/workers/list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerList {
    /// Every worker the hive runs.
    pub workers: Vec<WorkerView>,
    /// The last few workers that failed (to start, load or run), newest first.
    #[serde(default)]
    pub failures: Vec<RecentFailure>,
}

/// `GET /v1/workers/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerAnswer {
    /// The worker.
    pub worker: WorkerView,
}

/// `POST /v1/workers/{id}/shutdown`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stopped {
    /// The worker's id.
    pub stopped: String,
}

/// `POST /v1/workers/spawn`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpawnRequest {
    /// Which model.
    pub model_ref: ModelRef,
    /// Where the worker runs; absent: the hive's `default_backend` (`auto`: a GPU when
    /// there is one the worker binary can drive and the model fits, else the CPU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<Backend>,
    /// Device index; absent: the hive's `default_device`, else 0 (with `auto`, the GPU
    /// with the most free memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<u32>,
    /// Concurrent requests (1–64, default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<u32>,
    /// Context tokens per slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctx_size: Option<u32>,
}

impl SpawnRequest {
    /// A request for `model_ref` on `backend`/`device`, other settings the hive's.
    pub fn new(model_ref: ModelRef, backend: Backend, device: u32) -> Self {
        SpawnRequest {
            backend: Some(backend),
            device: Some(device),
            ..SpawnRequest::placed_by_hive(model_ref)
        }
    }

    /// A request for `model_ref` that leaves backend, device and the rest to the hive.
    pub fn placed_by_hive(model_ref: ModelRef) -> Self {
        SpawnRequest {
            model_ref,
            backend: None,
            device: None,
            slots: None,
            ctx_size: None,
        }
    }
}

/// The answer to a spawn: 200 when a worker was reused, else 202.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpawnResponse {
    /// The worker (state `loading` when new); `None` while its model downloads or its
    /// binary builds.
    pub worker: Option<WorkerView>,
    /// Whether an existing worker was reused.
    pub reused: bool,
    /// The download the worker waits for (its model was not here yet); the worker is
    /// started when it completes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download: Option<DownloadRef>,
    /// The build of the worker binary the worker waits for (none was built for its
    /// backend yet); the worker is started when it completes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildRef>,
    /// How the previous worker of this model ended, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_failure: Option<Failure>,
}

impl SpawnResponse {
    /// An existing worker serves the request (200).
    pub fn reused(worker: WorkerView) -> Self {
        SpawnResponse {
            worker: Some(worker),
            reused: true,
            download: None,
            build: None,
            previous_failure: None,
        }
    }

    /// A new worker is loading (202).
    pub fn started(worker: WorkerView, previous_failure: Option<Failure>) -> Self {
        SpawnResponse {
            worker: Some(worker),
            reused: false,
            download: None,
            build: None,
            previous_failure,
        }
    }

    /// The worker starts once its model is downloaded (202).
    pub fn waiting_for_download(download: DownloadRef, previous_failure: Option<Failure>) -> Self {
        SpawnResponse {
            worker: None,
            reused: false,
            download: Some(download),
            build: None,
            previous_failure,
        }
    }

    /// The worker starts once its binary is built (202).
    pub fn waiting_for_build(build: BuildRef, previous_failure: Option<Failure>) -> Self {
        SpawnResponse {
            worker: None,
            reused: false,
            download: None,
            build: Some(build),
            previous_failure,
        }
    }
}

/// A download a spawn waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownloadRef {
    /// Transfer id.
    pub id: String,
    /// `GET` this for the SSE progress stream of [`DownloadProgress`].
    pub progress_url: String,
}

/// A worker-binary build a spawn waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildRef {
    /// Build id.
    pub id: String,
    /// `GET` this for the SSE progress stream of [`BuildEvent`]s.
    pub progress_url: String,
}

/// The path of a download's progress stream.
pub fn download_progress_path(id: &str) -> String {
    format!("/v1/models/download/progress?id={id}")
}

/// The path of a build's progress stream.
pub fn build_progress_path(id: &str) -> String {
    format!("/v1/worker-binaries/build/progress?id={id}")
}

/// One line of `GET /v1/workers/{id}/logs?follow=true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// The line, without its newline.
    pub line: String,
}

// ---------------------------------------------------------------- models

/// Whether a catalogued model's file is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelStatus {
    /// File present.
    Ready,
    /// File vanished (found on reconciliation).
    Missing,
}

impl ModelStatus {
    /// The lower-case name (`ready`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Missing => "missing",
        }
    }
}

/// One catalogued model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// Short id for the API (`org--repo--file`).
    pub id: String,
    /// `hf` or `file`.
    pub provider: String,
    /// The canonical reference (`hf:org/repo/file.gguf@revision`, `file:///path`).
    pub reference: String,
    /// `org/repo` (hf).
    pub repo: Option<String>,
    /// The revision asked for (hf).
    pub revision: Option<String>,
    /// The commit it resolved to (hf).
    pub commit_sha: Option<String>,
    /// File name.
    pub file_name: String,
    /// Where it is.
    pub local_path: PathBuf,
    /// Size.
    pub size_bytes: u64,
    /// SHA-256 (hex) when known.
    pub sha256: Option<String>,
    /// Whether `sha256` is the hub's own: `true` when the download matched the hash the hub
    /// published, `false` when the hub published none and the hash was computed here
    /// ("unverified by the hub"); absent for local files and rows rebuilt from disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_verified: Option<bool>,
    /// When it was recorded.
    pub downloaded_at_unix: u64,
    /// GGUF `general.architecture`.
    pub architecture: Option<String>,
    /// Parameter count.
    pub parameter_count: Option<u64>,
    /// Quantization.
    pub quantization: Option<String>,
    /// Training context length.
    pub context_length: Option<u64>,
    /// Vocabulary size.
    pub vocab_size: Option<u64>,
    /// Present or missing.
    pub status: ModelStatus,
}

/// `GET /v1/models`: one answer for two audiences. OpenAI clients read `object` and
/// `data` (every name a request may use); rbee's own read `models`, the catalogue's rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    /// `list`.
    #[serde(default)]
    pub object: String,
    /// Every model id and alias, as OpenAI lists models.
    #[serde(default)]
    pub data: Vec<crate::openai::ModelObject>,
    /// The catalogue.
    pub models: Vec<Model>,
}

/// `POST /v1/models/download`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownloadRequest {
    /// What to fetch.
    pub model_ref: ModelRef,
}

/// `POST /v1/models/download` answered 200: the model is here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelAnswer {
    /// Its catalogue row.
    pub model: Model,
}

/// `POST /v1/models/download` answered 202: a download (new or joined).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownloadStarted {
    /// Transfer id.
    pub download_id: String,
    /// `GET` this for the SSE progress stream of [`DownloadProgress`].
    pub progress_url: String,
}

/// One event of a download's progress stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "stage", rename_all = "lowercase")]
pub enum DownloadProgress {
    /// Asking the hub for the file list.
    Resolving,
    /// Bytes arriving.
    Downloading {
        /// Received so far (written and hashed once it equals `bytes_total`).
        bytes_downloaded: u64,
        /// File size.
        bytes_total: u64,
        /// Recent speed.
        speed_mbps: f64,
        /// Attempt (1-based).
        attempt: u32,
    },
    /// An attempt failed; the next starts after a pause (resuming where it stopped).
    Retrying {
        /// The attempt about to start (2 for the first retry).
        attempt: u32,
        /// How many attempts there are in all.
        attempts: u32,
        /// Why the last attempt failed.
        reason: String,
        /// Bytes kept so far.
        bytes_downloaded: u64,
        /// File size.
        bytes_total: u64,
    },
    /// Verified and catalogued.
    Complete {
        /// Where the file is.
        local_path: PathBuf,
        /// Its catalogue id.
        model_id: String,
    },
    /// Failed for good.
    Error {
        /// The error envelope's body.
        error: ErrorBody,
    },
}

impl DownloadProgress {
    /// Whether this ends the stream.
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Complete { .. } | Self::Error { .. })
    }
}

/// `DELETE /v1/models/{id}` and `DELETE /v1/worker-binaries/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    /// The id removed from the catalogue.
    pub removed: String,
    /// Whether its file was deleted too (downloaded models, built binaries).
    pub file_deleted: bool,
}

// ---------------------------------------------------------------- worker binaries

/// How a recorded binary came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Built by the hive from its `[worker_source]`.
    Git,
    /// The worker installed next to the hive (or configured as `worker_binary`).
    Installed,
}

/// One recorded worker binary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Binary {
    /// `llm-worker-rbee-cuda-1a2b3c4d5e6f` (feature set and commit), or
    /// `llm-worker-rbee-installed`.
    pub id: String,
    /// The worker kind (`llm-worker-rbee`).
    pub worker_type: String,
    /// Where the executable is.
    pub binary_path: PathBuf,
    /// The cargo features it was built with (empty: CPU only).
    pub features: Vec<String>,
    /// Built or installed.
    pub origin: Origin,
    /// The repository it was built from.
    pub git_url: Option<String>,
    /// The ref asked for (branch, tag or commit).
    pub git_ref: Option<String>,
    /// The commit it was built from (full sha).
    pub git_commit: Option<String>,
    /// `rustc --version` of the toolchain that built it.
    pub rust_version: Option<String>,
    /// What `--version` printed.
    pub version: String,
    /// When it was recorded.
    pub built_at_unix: u64,
    /// How long the build took.
    pub build_secs: Option<f64>,
    /// SHA-256 of the executable (hex).
    pub sha256: String,
}

/// Where workers are built from (`[worker_source]` in the hive's config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSource {
    /// `https://…`, `ssh://…`, `git@host:org/repo.git`, a local path or `file://…`.
    pub git_url: String,
    /// A branch, a tag, or a full 40-hex commit (which pins the build).
    #[serde(default = "default_ref")]
    pub git_ref: String,
    /// The private key for SSH URLs (else the SSH agent is asked).
    #[serde(default)]
    pub ssh_key: Option<PathBuf>,
    /// cargo to build with (default: on PATH, in `$CARGO_HOME/bin` or `~/.cargo/bin`).
    #[serde(default)]
    pub cargo: Option<PathBuf>,
    /// Builds (of different feature sets) running at once; they are CPU-heavy.
    #[serde(default = "one")]
    pub max_concurrent_builds: usize,
}

fn default_ref() -> String {
    "main".into()
}

fn one() -> usize {
    1
}

impl WorkerSource {
    /// A source at `git_url`, ref `git_ref`, with the defaults for everything else.
    pub fn new(git_url: impl Into<String>, git_ref: impl Into<String>) -> Self {
        WorkerSource {
            git_url: git_url.into(),
            git_ref: git_ref.into(),
            ssh_key: None,
            cargo: None,
            max_concurrent_builds: 1,
        }
    }
}

/// `GET /v1/worker-binaries`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BinaryList {
    /// The recorded binaries.
    pub binaries: Vec<Binary>,
    /// The configured git source, if any.
    pub source: Option<WorkerSource>,
}

/// `POST /v1/worker-binaries/build`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildRequest {
    /// Cargo features (`[]` or `["cpu"]`: the CPU worker; `["cuda"]`, `["metal"]`).
    #[serde(default)]
    pub features: Vec<String>,
    /// Branch, tag or commit (default: the configured `git_ref`).
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
}

/// `POST /v1/worker-binaries/build` answered 202: a build (new or joined).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildStarted {
    /// Build id.
    pub build_id: String,
    /// `GET` this for the SSE progress stream of [`BuildEvent`]s.
    pub progress_url: String,
}

impl BuildStarted {
    /// The answer for build `id`.
    pub fn new(id: &str) -> Self {
        BuildStarted {
            build_id: id.to_owned(),
            progress_url: build_progress_path(id),
        }
    }
}

/// One step of a build, as its progress stream sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "stage", rename_all = "snake_case")]
pub enum BuildEvent {
    /// Waiting for another build to finish.
    Queued {
        /// Why.
        message: String,
    },
    /// Cloning or fetching, checking out.
    Fetching {
        /// What happens.
        message: String,
    },
    /// One line of cargo's output.
    Building {
        /// The line.
        line: String,
    },
    /// Checking and recording the result.
    Verifying {
        /// What happens.
        message: String,
    },
    /// Done: the recorded binary.
    Complete {
        /// The binary.
        binary: Box<Binary>,
        /// The commit had been built before; nothing was built.
        already_built: bool,
    },
    /// Failed; the catalogue is as it was.
    Error {
        /// The error.
        error: ErrorBody,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ApiError, ErrorCode};
    use serde::de::DeserializeOwned;
    use std::fmt::Debug;

    /// Serialise, parse back, compare; and the JSON once more through `Value` (no field
    /// lost or renamed on the way).
    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(v: &T) {
        let json = serde_json::to_string(v).unwrap();
        let back: T = serde_json::from_str(&json).unwrap();
        assert_eq!(&back, v, "{json}");
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), value);
    }

    fn view() -> WorkerView {
        WorkerView {
            id: "smollm2".into(),
            unit: "rbee-worker@smollm2.service".into(),
            url: "http://127.0.0.1:9300".into(),
            model_ref: "file:///m/smollm2.gguf".parse().unwrap(),
            backend: Backend::Cpu,
            device: 0,
            state: WorkerState::Idle,
            slots: 2,
            slots_busy: 1,
            last_activity_unix: 10,
            started_at_unix: 5,
            pid: Some(42),
            supervisor: "systemd-user".into(),
            binary: Some("/usr/bin/llm-worker-rbee".into()),
            model_path: Some("/m/smollm2.gguf".into()),
        }
    }

    fn model() -> Model {
        Model {
            id: "org--repo--m.gguf".into(),
            provider: "hf".into(),
            reference: "hf:org/repo/m.gguf@main".into(),
            repo: Some("org/repo".into()),
            revision: Some("main".into()),
            commit_sha: Some("a".repeat(40)),
            file_name: "m.gguf".into(),
            local_path: "/var/lib/rbee/models/m.gguf".into(),
            size_bytes: 98,
            sha256: None,
            hub_verified: None,
            downloaded_at_unix: 1,
            architecture: Some("llama".into()),
            parameter_count: Some(135),
            quantization: Some("Q4_1".into()),
            context_length: Some(2048),
            vocab_size: None,
            status: ModelStatus::Ready,
        }
    }

    fn binary() -> Binary {
        Binary {
            id: "llm-worker-rbee-installed".into(),
            worker_type: "llm-worker-rbee".into(),
            binary_path: "/usr/bin/llm-worker-rbee".into(),
            features: vec![],
            origin: Origin::Installed,
            git_url: None,
            git_ref: None,
            git_commit: None,
            rust_version: None,
            version: "0.1.0".into(),
            built_at_unix: 3,
            build_secs: Some(1.5),
            sha256: "0".repeat(64),
        }
    }

    #[test]
    fn every_hive_body_round_trips() {
        round_trip(&HiveHealth {
            status: "alive".into(),
            version: "0.1.0".into(),
            api_version: "v1".into(),
            supervisor: "process".into(),
            pid: 7,
        });
        let device = Device {
            index: 0,
            name: "H100".into(),
            memory_total_bytes: 80,
            memory_free_bytes: 79,
            device_node: Some("/dev/nvidia0".into()),
        };
        round_trip(&BackendList {
            backends: vec![BackendStatus {
                name: Backend::Cuda,
                available: false,
                reason: Some("no driver".into()),
                devices: vec![device],
            }],
        });
        round_trip(&Resources {
            memory: Memory {
                total_bytes: 2,
                available_bytes: 1,
            },
            disk: DiskAt {
                path: "/var/lib/rbee".into(),
                space: Disk::default(),
            },
        });
        round_trip(&WorkerList {
            workers: vec![view()],
            failures: vec![RecentFailure {
                model_ref: "hf:org/repo:Q4_K_M".parse().unwrap(),
                failure: Failure {
                    worker_id: "w-1".into(),
                    unit: "rbee-worker@w.service".into(),
                    exit: "exited with status 4 (exit-code)".into(),
                    last_log_lines: vec!["bad model".into()],
                    at_unix: 7,
                },
            }],
        });
        round_trip(&WorkerAnswer { worker: view() });
        round_trip(&Stopped {
            stopped: "smollm2".into(),
        });
        round_trip(&SpawnRequest {
            slots: Some(4),
            ctx_size: Some(512),
            ..SpawnRequest::new("hf:org/repo:Q4_1".parse().unwrap(), Backend::Cuda, 1)
        });
        round_trip(&SpawnResponse {
            worker: None,
            reused: false,
            download: Some(DownloadRef {
                id: "dl-1".into(),
                progress_url: download_progress_path("dl-1"),
            }),
            build: Some(BuildRef {
                id: "build-1".into(),
                progress_url: build_progress_path("build-1"),
            }),
            previous_failure: Some(Failure {
                worker_id: "w".into(),
                unit: "u".into(),
                exit: "exited with status 4 (exit-code)".into(),
                last_log_lines: vec!["bad".into()],
                at_unix: 9,
            }),
        });
        round_trip(&LogLine { line: "x".into() });
        round_trip(&ModelList {
            object: "list".into(),
            data: vec![crate::openai::ModelObject {
                id: "m:q4_1".into(),
                object: "model".into(),
                created: 1,
                owned_by: "org".into(),
                reference: Some("hf:org/m:Q4_1".parse().unwrap()),
            }],
            models: vec![model()],
        });
        round_trip(&DownloadRequest {
            model_ref: "hf:org/repo".parse().unwrap(),
        });
        round_trip(&ModelAnswer { model: model() });
        round_trip(&DownloadStarted {
            download_id: "dl-2".into(),
            progress_url: download_progress_path("dl-2"),
        });
        for p in [
            DownloadProgress::Resolving,
            DownloadProgress::Downloading {
                bytes_downloaded: 1,
                bytes_total: 2,
                speed_mbps: 0.5,
                attempt: 1,
            },
            DownloadProgress::Retrying {
                attempt: 2,
                attempts: 6,
                reason: "the connection closed".into(),
                bytes_downloaded: 1,
                bytes_total: 2,
            },
            DownloadProgress::Complete {
                local_path: "/m".into(),
                model_id: "m".into(),
            },
            DownloadProgress::Error {
                error: ApiError::new(ErrorCode::ModelNotFound, "gone").error,
            },
        ] {
            round_trip(&p);
        }
        round_trip(&Removed {
            removed: "m".into(),
            file_deleted: true,
        });
        round_trip(&BinaryList {
            binaries: vec![binary()],
            source: Some(WorkerSource::new("https://example.org/rbee.git", "main")),
        });
        round_trip(&BuildRequest {
            features: vec!["cuda".into()],
            git_ref: Some("v1".into()),
        });
        round_trip(&BuildStarted::new("build-2"));
        for e in [
            BuildEvent::Queued {
                message: "q".into(),
            },
            BuildEvent::Building { line: "l".into() },
            BuildEvent::Complete {
                binary: Box::new(binary()),
                already_built: true,
            },
            BuildEvent::Error {
                error: ApiError::new(ErrorCode::Internal, "x").error,
            },
        ] {
            round_trip(&e);
        }
    }

    #[test]
    fn wire_names_are_the_documented_ones() {
        let v = serde_json::to_value(view()).unwrap();
        assert_eq!(v["state"], "idle");
        assert_eq!(v["backend"], "cpu");
        assert_eq!(v["model_ref"], "file:///m/smollm2.gguf");
        let p = serde_json::to_value(DownloadProgress::Resolving).unwrap();
        assert_eq!(p, serde_json::json!({"stage": "resolving"}));
        let b = serde_json::to_value(BuildRequest {
            features: vec![],
            git_ref: Some("main".into()),
        })
        .unwrap();
        assert_eq!(b["ref"], "main");
    }

    #[test]
    fn a_spawn_body_takes_defaults_and_refuses_unknown_fields() {
        let r: SpawnRequest = serde_json::from_str(r#"{"model_ref":"file:///m.gguf"}"#).unwrap();
        assert_eq!(r.backend, None, "the hive's default_backend decides");
        assert_eq!(r.device, None);
        let r: SpawnRequest =
            serde_json::from_str(r#"{"model_ref":"file:///m.gguf","backend":"cuda","device":1}"#)
                .unwrap();
        assert_eq!((r.backend, r.device), (Some(Backend::Cuda), Some(1)));
        let e = serde_json::from_str::<SpawnRequest>(r#"{"model_ref":"file:///m.gguf","x":1}"#)
            .unwrap_err();
        assert!(e.to_string().starts_with("unknown field"), "{e}");
        let e = serde_json::from_str::<SpawnRequest>(r#"{"model_ref":"smol.gguf"}"#).unwrap_err();
        assert_eq!(
            crate::error::code_of_parse_error(&e.to_string()),
            Some(ErrorCode::InvalidModelRef)
        );
        let e = serde_json::from_str::<SpawnRequest>(
            r#"{"model_ref":"file:///m.gguf","backend":"rocm"}"#,
        )
        .unwrap_err();
        assert_eq!(
            crate::error::code_of_parse_error(&e.to_string()),
            Some(ErrorCode::BackendUnavailable)
        );
    }
}
