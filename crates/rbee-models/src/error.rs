//! What goes wrong with models: [`HubError`] for the hub client and its downloads,
//! [`ProvisionError`] for the provisioner (which passes hub errors on). Both are turned into
//! the HTTP error envelope ([`ApiError`]) by the hive when it answers, and by the
//! provisioner for the last event of a download's progress feed (a wire event).

use std::path::{Path, PathBuf};

use rbee_types::{ApiError, ErrorBody, ErrorCode};

use crate::catalog::CatalogError;

/// Why a repository could not be listed, a file chosen, or a download finished.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The hub's answer names a commit that is not 40 hex characters.
    #[error(
        "the hub's answer for {repo} is not valid: its commit id is not 40 hexadecimal characters"
    )]
    BadCommit {
        /// The repository.
        repo: String,
        /// The model reference.
        reference: String,
    },
    /// 404 for the repository or the file.
    #[error("{what} not found on the hub (404): check the reference {reference}")]
    NotFound {
        /// What was asked for (`repository org/repo@main`, `file m.gguf`).
        what: String,
        /// The model reference.
        reference: String,
    },
    /// 401 or 403: a gated or private repository.
    #[error(
        "the hub refused access to {what} ({status}): the repository is gated or private; \
         set HF_TOKEN to a token that may read it (and accept its terms on the hub)"
    )]
    AccessDenied {
        /// What was asked for.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The model reference.
        reference: String,
    },
    /// Another status that is not worth retrying.
    #[error("the hub answered {status} for {what}")]
    Status {
        /// What was asked for.
        what: String,
        /// The HTTP status.
        status: u16,
    },
    /// The repository's file list is not the JSON the hub's API sends.
    #[error("the hub's file list for {repo} is not understood: {source}")]
    BadFileList {
        /// The repository.
        repo: String,
        /// The parse error.
        source: std::io::Error,
    },
    /// The hub could not be reached (or answered 5xx) on every attempt.
    #[error("cannot reach the hub at {endpoint} for {repo}: {last}")]
    Unreachable {
        /// The hub's base URL.
        endpoint: String,
        /// The repository.
        repo: String,
        /// The last attempt's error.
        last: String,
    },
    /// No GGUF file of the repository matches the selector.
    #[error("{what} in {reference}; its GGUF files: {}", .candidates.join(", "))]
    NoMatch {
        /// What was looked for (`no GGUF file of quantization q4_k_m`).
        what: String,
        /// The model reference.
        reference: String,
        /// The repository's GGUF files.
        candidates: Vec<String>,
    },
    /// Several GGUF files match the selector.
    #[error(
        "{what}: {} match in {reference}; name one with :QUANT or /file.gguf: {}",
        .candidates.len(),
        .candidates.join(", ")
    )]
    Ambiguous {
        /// What was looked for.
        what: String,
        /// The model reference.
        reference: String,
        /// The files that match.
        candidates: Vec<String>,
    },
    /// The reference names no file and the repository has several GGUF files.
    #[error(
        "{reference} has {} GGUF files; choose one with :QUANT (e.g. {reference}:Q4_K_M) or /file.gguf: {}",
        .candidates.len(),
        .candidates.join(", ")
    )]
    Unchosen {
        /// The model reference.
        reference: String,
        /// The repository's GGUF files.
        candidates: Vec<String>,
    },
    /// Too little room in the models directory for the file (or for the rest of it).
    #[error(
        "not enough disk space for {} in the models directory: {:.2} GiB needed, {:.2} GiB free; free up {:.2} GiB",
        file_name(.dest),
        gib(*.required),
        gib(*.available),
        gib(.required.saturating_sub(*.available))
    )]
    DiskFull {
        /// The file being downloaded.
        dest: PathBuf,
        /// Bytes still to write.
        required: u64,
        /// Bytes free.
        available: u64,
    },
    /// A file of the models directory could not be created, read, written or renamed. The
    /// message names the file, not its path (the log has that).
    #[error("{} in the models directory: {source}", file_name(.path))]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Every attempt of a download failed.
    #[error(
        "downloading {reference} failed after {attempts} attempts: {} ({last}); {}",
        .cause.what(),
        .cause.kept()
    )]
    Exhausted {
        /// The model reference.
        reference: String,
        /// Attempts made.
        attempts: u32,
        /// How the last attempt failed.
        cause: RetryCause,
        /// The last attempt's error.
        last: String,
    },
}

/// How a download attempt that is worth retrying failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryCause {
    /// The whole file arrived but its SHA-256 is not the hub's.
    Checksum,
    /// No byte arrived for the stall timeout.
    Stalled,
    /// Anything else: transport error, 5xx, cut connection.
    Transfer,
}

impl RetryCause {
    /// What happened, for a person.
    fn what(self) -> &'static str {
        match self {
            RetryCause::Checksum => "the file's SHA-256 did not match the hub's",
            RetryCause::Stalled => "the transfer stalled",
            RetryCause::Transfer => "the transfer failed",
        }
    }

    /// What is left of the file.
    fn kept(self) -> &'static str {
        match self {
            RetryCause::Checksum => "nothing of it is kept; the next request downloads it again",
            _ => "the partial file is kept and the next request resumes it",
        }
    }
}

fn file_name(p: &Path) -> std::borrow::Cow<'_, str> {
    p.file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default()
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

impl HubError {
    /// The machine-readable code this error is answered with.
    pub fn code(&self) -> ErrorCode {
        use HubError::*;
        match self {
            NotFound { .. } | NoMatch { .. } => ErrorCode::ModelNotFound,
            AccessDenied { .. } => ErrorCode::ModelAccessDenied,
            Ambiguous { .. } | Unchosen { .. } => ErrorCode::InvalidModelRef,
            DiskFull { .. } => ErrorCode::InsufficientDisk,
            Io { .. } => ErrorCode::Internal,
            BadCommit { .. } | Status { .. } | BadFileList { .. } | Unreachable { .. } => {
                ErrorCode::DownloadFailed
            }
            Exhausted { cause, .. } => match cause {
                RetryCause::Checksum => ErrorCode::ChecksumMismatch,
                RetryCause::Stalled => ErrorCode::DownloadTimeout,
                RetryCause::Transfer => ErrorCode::DownloadFailed,
            },
        }
    }
}

impl From<HubError> for ApiError {
    fn from(e: HubError) -> Self {
        use HubError::*;
        let api = ApiError::new(e.code(), e.to_string());
        match e {
            BadCommit { reference, .. } | NotFound { reference, .. } => {
                api.detail("model_ref", reference)
            }
            AccessDenied {
                status, reference, ..
            } => api.detail("model_ref", reference).detail("status", status),
            Status { status, .. } => api.detail("status", status),
            Unreachable { endpoint, .. } => api.detail("endpoint", endpoint),
            NoMatch {
                reference,
                candidates,
                ..
            }
            | Ambiguous {
                reference,
                candidates,
                ..
            }
            | Unchosen {
                reference,
                candidates,
            } => api
                .detail("model_ref", reference)
                .detail("candidates", candidates),
            DiskFull {
                required,
                available,
                ..
            } => api
                .detail("required_bytes", required)
                .detail("available_bytes", available)
                .detail("free_up_bytes", required.saturating_sub(available)),
            Exhausted {
                reference,
                attempts,
                ..
            } => api
                .detail("attempts", attempts)
                .detail("model_ref", reference),
            BadFileList { .. } | Io { .. } => api,
        }
    }
}

/// Why the provisioner could not open, find, import, fetch or remove a model.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// The hub, or a download from it, failed.
    #[error(transparent)]
    Hub(#[from] HubError),
    /// A download ended with this error (as its progress feed carried it).
    #[error("{}", .0.message)]
    Failed(ErrorBody),
    /// The catalogue could not be opened, rebuilt or reconciled on start.
    #[error(transparent)]
    Open(CatalogError),
    /// The models directory could not be created.
    #[error("cannot create {}: {source}", .dir.display())]
    ModelsDir {
        /// The models directory.
        dir: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The catalogue failed while in use. The message says what SQLite said, not where
    /// the database is (the log has that).
    #[error("{}", catalog_message(.0))]
    Catalog(#[source] CatalogError),
    /// The download's thread could not be started.
    #[error("{0}")]
    Thread(#[source] std::io::Error),
    /// The models directory refused the path the hub's answer leads to.
    #[error("{reference}: {source}")]
    DownloadPath {
        /// The model reference.
        reference: String,
        /// Why.
        source: crate::models_dir::Refused,
    },
    /// The downloaded file is not a usable GGUF model (it was deleted).
    #[error(
        "the hub's file for {reference} is not a usable GGUF model ({source}); it was deleted"
    )]
    DownloadedNotGguf {
        /// The model reference.
        reference: String,
        /// What is wrong with it.
        source: rbee_gguf::GgufError,
    },
    /// A `file://` model that is not a usable GGUF model.
    #[error("{reference} is not a usable GGUF model: {source}")]
    NotGguf {
        /// The model reference.
        reference: String,
        /// What is wrong with it.
        source: rbee_gguf::GgufError,
    },
    /// A `file://` reference outside the allowed directories, missing or unreadable: one
    /// answer for all, so that a client cannot probe which files the hive can read.
    #[error(
        "model {reference}: no readable regular file at that path in the directories \
         this hive serves file:// models from; a file elsewhere is served once its \
         directory is in model_dirs of the hive's config (which reason it was is in the \
         hive's log)"
    )]
    FileRefused {
        /// The model reference.
        reference: String,
    },
    /// No catalogued model with that id.
    #[error("no model {id} in the catalogue")]
    NoSuchModel {
        /// The id asked for.
        id: String,
    },
}

/// Whether the catalogue failed because its disk is full.
fn catalog_disk_full(e: &CatalogError) -> bool {
    matches!(
        e,
        rbee_sqlite::DbError::Sqlite {
            source: rusqlite::Error::SqliteFailure(f, _),
            ..
        } if f.code == rusqlite::ErrorCode::DiskFull
    )
}

fn catalog_message(e: &CatalogError) -> String {
    if catalog_disk_full(e) {
        return "no space left on the disk of the hive's state directory for the model \
                catalogue; free some space and retry"
            .into();
    }
    let why = match e {
        rbee_sqlite::DbError::Sqlite { source, .. } => source.to_string(),
        other => other.to_string(),
    };
    format!("the model catalogue failed: {why}")
}

impl ProvisionError {
    /// The machine-readable code this error is answered with.
    pub fn code(&self) -> ErrorCode {
        use ProvisionError::*;
        match self {
            Hub(e) => e.code(),
            Failed(body) => body.code,
            Catalog(e) if catalog_disk_full(e) => ErrorCode::InsufficientDisk,
            Open(_) | ModelsDir { .. } | Catalog(_) | Thread(_) => ErrorCode::Internal,
            DownloadPath { .. } => ErrorCode::DownloadFailed,
            DownloadedNotGguf { .. } | NotGguf { .. } => ErrorCode::ModelInvalid,
            FileRefused { .. } | NoSuchModel { .. } => ErrorCode::ModelNotFound,
        }
    }
}

impl From<ProvisionError> for ApiError {
    fn from(e: ProvisionError) -> Self {
        use ProvisionError::*;
        let api = ApiError::new(e.code(), e.to_string());
        match e {
            Hub(e) => e.into(),
            Failed(error) => ApiError { error },
            DownloadPath { reference, .. }
            | DownloadedNotGguf { reference, .. }
            | NotGguf { reference, .. }
            | FileRefused { reference } => api.detail("model_ref", reference),
            NoSuchModel { id } => api.detail("id", id),
            Open(_) | ModelsDir { .. } | Catalog(_) | Thread(_) => api,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_keep_their_codes_messages_and_details() {
        let e = ApiError::from(HubError::DiskFull {
            dest: "/m/hf/o/r/c/m.gguf".into(),
            required: 3 << 30,
            available: 1 << 30,
        });
        assert_eq!(e.error.code, ErrorCode::InsufficientDisk);
        assert_eq!(
            e.error.message,
            "not enough disk space for m.gguf in the models directory: 3.00 GiB needed, \
             1.00 GiB free; free up 2.00 GiB"
        );
        assert_eq!(e.error.details["required_bytes"], 3u64 << 30);
        assert_eq!(e.error.details["available_bytes"], 1u64 << 30);
        assert_eq!(e.error.details["free_up_bytes"], 2u64 << 30);

        let e = ApiError::from(HubError::Exhausted {
            reference: "hf:o/r".into(),
            attempts: 3,
            cause: RetryCause::Checksum,
            last: "checksum mismatch: got a, the hub says b".into(),
        });
        assert_eq!(e.error.code, ErrorCode::ChecksumMismatch);
        assert_eq!(
            e.error.message,
            "downloading hf:o/r failed after 3 attempts: the file's SHA-256 did not match the \
             hub's (checksum mismatch: got a, the hub says b); nothing of it is kept; the next \
             request downloads it again"
        );
        assert_eq!(e.error.details["attempts"], 3);
        assert_eq!(e.error.details["model_ref"], "hf:o/r");

        let e = ApiError::from(ProvisionError::from(HubError::AccessDenied {
            what: "file m.gguf".into(),
            status: 403,
            reference: "hf:o/r".into(),
        }));
        assert_eq!(e.error.code, ErrorCode::ModelAccessDenied);
        assert_eq!(e.error.details["status"], 403);
        assert_eq!(e.error.details["model_ref"], "hf:o/r");

        let e = ApiError::from(HubError::Unchosen {
            reference: "hf:o/r".into(),
            candidates: vec!["a.gguf".into(), "b.gguf".into()],
        });
        assert_eq!(e.error.code, ErrorCode::InvalidModelRef);
        assert_eq!(
            e.error.message,
            "hf:o/r has 2 GGUF files; choose one with :QUANT (e.g. hf:o/r:Q4_K_M) or \
             /file.gguf: a.gguf, b.gguf"
        );
        assert_eq!(e.error.details["candidates"][1], "b.gguf");

        let e = ApiError::from(ProvisionError::NoSuchModel { id: "m".into() });
        assert_eq!(e.error.code, ErrorCode::ModelNotFound);
        assert_eq!(e.error.message, "no model m in the catalogue");
        assert_eq!(e.error.details["id"], "m");
    }

    #[test]
    fn a_failed_download_passes_its_feed_error_on_unchanged() {
        let body = ApiError::new(ErrorCode::DownloadTimeout, "stalled")
            .field("attempts", 6)
            .error;
        let e = ProvisionError::Failed(body.clone());
        assert_eq!(e.code(), ErrorCode::DownloadTimeout);
        assert_eq!(e.to_string(), "stalled");
        assert_eq!(ApiError::from(e).error, body);
    }
}
