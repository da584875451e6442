//! What goes wrong with worker binaries: one typed error for the whole crate, turned into
//! the HTTP error envelope ([`ApiError`]) by the hive when it answers, and by the builder
//! for the last event of a build's feed (a wire event).

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use rbee_types::{ApiError, Backend, ErrorBody, ErrorCode};

/// Why a worker binary could not be found, built, checked, kept or removed.
#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    /// A build ended with this error (as its event feed carried it).
    #[error("{}", .0.message)]
    Failed(ErrorBody),
    /// A build's feed ended without a result.
    #[error("the build ended without a result")]
    NoResult,
    /// The catalogue (`workers.db`) failed.
    #[error(transparent)]
    Db(#[from] rbee_sqlite::DbError),
    /// No worker installed and no source to build one from.
    #[error("no worker binary: none is installed next to rbee-hive or on PATH, and no [worker_source] is configured to build one")]
    NoWorker,
    /// The installed worker could not be read to hash it.
    #[error("{}: {source}", .path.display())]
    Hash {
        /// The worker.
        path: PathBuf,
        /// The read error.
        source: std::io::Error,
    },
    /// The installed worker was built without the backend a worker needs.
    #[error("the installed worker {} was built without {backend} ({version}); install a {backend} build, or configure [worker_source] so the hive builds one", .path.display())]
    InstalledLacksBackend {
        /// The installed worker.
        path: PathBuf,
        /// What its `--version` printed.
        version: String,
        /// The backend asked for.
        backend: Backend,
    },
    /// A build was asked for without a `[worker_source]`.
    #[error("this hive has no [worker_source] to build workers from; add one to its config (git_url, git_ref) or install llm-worker-rbee next to rbee-hive")]
    NoWorkerSource,
    /// The build's thread could not be started.
    #[error("cannot start the build: {0}")]
    Thread(#[source] std::io::Error),
    /// No binary with that id.
    #[error("no worker binary {id}; GET /v1/worker-binaries lists them")]
    BinaryNotFound {
        /// The id asked for.
        id: String,
    },
    /// The binary is used by a running worker.
    #[error("worker binary {id} is used by a running worker; stop it first")]
    BinaryInUse {
        /// The binary's id.
        id: String,
    },
    /// No cargo to build with.
    #[error("cannot build the worker: {0}; install Rust (https://rustup.rs) for the user the hive runs as, or set [worker_source] cargo to its path")]
    CargoNotFound(CargoMissing),
    /// A cuda build without the CUDA toolkit.
    #[error("a cuda worker needs the CUDA toolkit (nvcc) to build: install it (e.g. `apt install nvidia-cuda-toolkit`, or NVIDIA's packages into /usr/local/cuda) and set CUDA_PATH for the hive if it is elsewhere; rbee looked in $CUDA_PATH, $CUDA_HOME, PATH, /usr/local/cuda and /opt/cuda")]
    CudaToolkitNotFound {
        /// The build's log, when the build itself found out.
        log_path: Option<PathBuf>,
    },
    /// The build log could not be created.
    #[error("build log {}: {source}", .path.display())]
    BuildLog {
        /// The log file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// cargo could not be started (for another reason than not being there).
    #[error("cannot run {}: {source}", .cargo.display())]
    CargoSpawn {
        /// The cargo.
        cargo: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Waiting for cargo failed.
    #[error("waiting for cargo: {0}")]
    CargoWait(#[source] std::io::Error),
    /// `cargo build` failed or was killed.
    #[error("{}", build_failed(*.status, .first_errors, .log_path))]
    BuildFailed {
        /// How cargo ended.
        status: ExitStatus,
        /// The first compiler errors (see [`crate::cargo::ErrorLines`]).
        first_errors: Vec<String>,
        /// The whole output.
        log_path: PathBuf,
    },
    /// A feature the worker does not have.
    #[error("unknown worker feature {feature:?}; the worker has {} (an empty list builds the CPU worker)", .known.join(", "))]
    UnknownFeature {
        /// The feature asked for.
        feature: String,
        /// The features the worker has.
        known: &'static [&'static str],
    },
    /// A worker binary failed its check.
    #[error("worker binary {}: {why}", .path.display())]
    Unverified {
        /// The binary.
        path: PathBuf,
        /// What is wrong with it.
        why: VerifyFailure,
        /// The log of the build that made it, if one did.
        log_path: Option<PathBuf>,
    },
    /// The binaries directory is full.
    #[error("no space left in {} to keep the worker binary; free some space and build again", .dir.display())]
    NoSpace {
        /// The binaries directory.
        dir: PathBuf,
    },
    /// Copying the built binary into place failed.
    #[error("{}: {source}", .path.display())]
    Install {
        /// The file being read or written.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Not a usable branch, tag or commit name.
    #[error(
        "{git_ref:?} is not a branch, tag or commit name (e.g. main, v0.1.0 or a 40-hex commit)"
    )]
    BadRef {
        /// The ref asked for.
        git_ref: String,
    },
    /// The SSH server's host key is not known.
    #[error("cannot fetch {url}: {}; the server's SSH host key must be in ~/.ssh/known_hosts of the user the hive runs as: check its fingerprint, then add it (`ssh-keyscan -p PORT HOST >> ~/.ssh/known_hosts`)", .source.message())]
    UnknownHostKey {
        /// The repository.
        url: String,
        /// git's error.
        source: git2::Error,
    },
    /// The git server refused the credentials.
    #[error("{url} refused the credentials: {}; for ssh:// or git@ URLs set [worker_source] ssh_key to a key the server accepts (readable by the hive, chmod 600), for https:// configure a git credential helper", .source.message())]
    GitAuth {
        /// The repository.
        url: String,
        /// git's error.
        source: git2::Error,
    },
    /// The repository could not be fetched.
    #[error("cannot fetch {url}: {}; check [worker_source] git_url and that this node can reach it", .source.message())]
    GitFetch {
        /// The repository.
        url: String,
        /// git's error.
        source: git2::Error,
    },
    /// The ref names nothing in the repository.
    #[error("{git_ref:?} is not a branch, tag or commit of {url}; known: {}", if .known.is_empty() { "none".to_owned() } else { .known.join(", ") })]
    RefNotFound {
        /// The repository.
        url: String,
        /// The ref asked for.
        git_ref: String,
        /// Some of its branches and tags (at most 20).
        known: Vec<String>,
    },
    /// The local checkout could not be made.
    #[error("worker source checkout {}: {message}", .dir.display())]
    Checkout {
        /// The checkout directory.
        dir: PathBuf,
        /// What failed.
        message: String,
    },
}

/// Why there is no cargo.
#[derive(Debug, thiserror::Error)]
pub enum CargoMissing {
    /// The configured one is not there.
    #[error("the configured cargo {} does not exist", .0.display())]
    Configured(PathBuf),
    /// None in the usual places.
    #[error("no cargo on PATH, in $CARGO_HOME/bin or ~/.cargo/bin")]
    NotFound,
    /// The one found cannot be run.
    #[error("{} cannot be run", .0.display())]
    CannotRun(PathBuf),
}

/// What is wrong with a worker binary.
#[derive(Debug, thiserror::Error)]
pub enum VerifyFailure {
    /// Its metadata cannot be read (it is missing, mostly).
    #[error("cannot be read: {0}")]
    CannotRead(#[source] std::io::Error),
    /// Not a regular file.
    #[error("is not a file")]
    NotAFile,
    /// No execute bit.
    #[error("is not executable (mode {mode:o}); `chmod +x` it or point worker_binary at the real worker")]
    NotExecutable {
        /// Its permission bits.
        mode: u32,
    },
    /// It cannot be started.
    #[error("cannot be run: {0}")]
    CannotRun(#[source] std::io::Error),
    /// `--version` hung.
    #[error("`--version` did not finish in {0:?}")]
    Hung(Duration),
    /// `--version` failed.
    #[error("`--version` failed ({status}): {stderr}")]
    VersionFailed {
        /// How it ended.
        status: ExitStatus,
        /// What it printed on stderr (trimmed).
        stderr: String,
    },
    /// Its `--version` is not the worker's.
    #[error("`--version` printed {version:?}, not llm-worker-rbee's version")]
    NotTheWorker {
        /// What it printed.
        version: String,
    },
    /// It lacks a feature it must have.
    #[error("was built without {feature} (it says {version:?})")]
    MissingFeature {
        /// The feature.
        feature: String,
        /// What `--version` printed.
        version: String,
    },
}

fn build_failed(status: ExitStatus, first: &[String], log: &Path) -> String {
    let why = match std::os::unix::process::ExitStatusExt::signal(&status) {
        Some(sig) => format!("the build was killed by signal {sig}"),
        None => format!("cargo build failed ({status})"),
    };
    let first = if first.is_empty() {
        String::new()
    } else {
        format!(":\n{}\n", first.join("\n"))
    };
    format!("{why}{first}; the whole output is in {}", log.display())
}

fn path_value(p: &Path) -> String {
    p.display().to_string()
}

impl BinaryError {
    /// The error code the HTTP API answers this with.
    pub fn code(&self) -> ErrorCode {
        use BinaryError::*;
        match self {
            Failed(body) => body.code,
            NoResult | Db(_) | Thread(_) | BuildLog { .. } | CargoSpawn { .. } | CargoWait(_) => {
                ErrorCode::Internal
            }
            Install { .. } | Checkout { .. } => ErrorCode::Internal,
            NoWorker => ErrorCode::SpawnFailed,
            Hash { .. } | Unverified { .. } => ErrorCode::BinaryVerificationFailed,
            InstalledLacksBackend { .. } => ErrorCode::BackendUnavailable,
            NoWorkerSource => ErrorCode::NoWorkerSource,
            BinaryNotFound { .. } => ErrorCode::BinaryNotFound,
            BinaryInUse { .. } => ErrorCode::BinaryInUse,
            CargoNotFound(_) => ErrorCode::CargoNotFound,
            CudaToolkitNotFound { .. } => ErrorCode::CudaToolkitNotFound,
            BuildFailed { .. } => ErrorCode::WorkerBuildFailed,
            UnknownFeature { .. } | BadRef { .. } => ErrorCode::InvalidRequest,
            NoSpace { .. } => ErrorCode::InsufficientDisk,
            UnknownHostKey { .. } | GitFetch { .. } => ErrorCode::GitFetchFailed,
            GitAuth { .. } => ErrorCode::GitAuthFailed,
            RefNotFound { .. } => ErrorCode::GitRefNotFound,
        }
    }

    /// The same error, naming the log of the build that made the binary it is about.
    pub(crate) fn in_build(mut self, log: &Path) -> Self {
        if let BinaryError::Unverified { log_path, .. } = &mut self {
            *log_path = Some(log.to_path_buf());
        }
        self
    }
}

impl From<BinaryError> for ApiError {
    fn from(e: BinaryError) -> Self {
        use BinaryError::*;
        let api = ApiError::new(e.code(), e.to_string());
        match e {
            Failed(error) => ApiError { error },
            InstalledLacksBackend { backend, .. } => api.detail("backend", backend.as_str()),
            BinaryNotFound { id } | BinaryInUse { id } => api.detail("id", id),
            CudaToolkitNotFound { log_path: Some(l) } => api.detail("log_path", path_value(&l)),
            BuildFailed {
                first_errors,
                log_path,
                ..
            } => api
                .detail("log_path", path_value(&log_path))
                .detail("first_errors", first_errors),
            UnknownFeature { .. } => api.detail("field", "features"),
            BadRef { .. } => api.detail("field", "ref"),
            Unverified { path, log_path, .. } => {
                let api = api.detail("binary_path", path_value(&path));
                match log_path {
                    Some(l) => api.detail("log_path", path_value(&l)),
                    None => api,
                }
            }
            UnknownHostKey { url, .. } | GitAuth { url, .. } | GitFetch { url, .. } => {
                api.detail("git_url", url)
            }
            RefNotFound {
                url,
                git_ref,
                known,
                ..
            } => api
                .detail("git_url", url)
                .detail("ref", git_ref)
                .detail("known_refs", known),
            _ => api,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn the_envelope_carries_the_message_code_and_details() {
        let e = BinaryError::BuildFailed {
            status: ExitStatus::from_raw(1 << 8),
            first_errors: vec!["error[E0308]: mismatched types".into()],
            log_path: "/s/b.log".into(),
        };
        let api = ApiError::from(e);
        assert_eq!(api.error.code, ErrorCode::WorkerBuildFailed);
        assert_eq!(
            api.error.message,
            "cargo build failed (exit status: 1):\nerror[E0308]: mismatched types\n; the whole output is in /s/b.log"
        );
        assert_eq!(api.error.details["log_path"], "/s/b.log");
        assert_eq!(
            api.error.details["first_errors"][0],
            "error[E0308]: mismatched types"
        );

        let e = BinaryError::Unverified {
            path: "/w".into(),
            why: VerifyFailure::NotExecutable { mode: 0o644 },
            log_path: None,
        }
        .in_build(Path::new("/s/b.log"));
        let api = ApiError::from(e);
        assert_eq!(api.error.code, ErrorCode::BinaryVerificationFailed);
        assert!(api
            .error
            .message
            .starts_with("worker binary /w: is not executable (mode 644)"));
        assert_eq!(api.error.details["binary_path"], "/w");
        assert_eq!(api.error.details["log_path"], "/s/b.log");

        let api = ApiError::from(BinaryError::RefNotFound {
            url: "/r.git".into(),
            git_ref: "x".into(),
            known: vec![],
        });
        assert_eq!(
            api.error.message,
            "\"x\" is not a branch, tag or commit of /r.git; known: none"
        );
        assert_eq!(api.error.details["ref"], "x");
        assert_eq!(api.error.details["known_refs"], serde_json::json!([]));
    }
}
