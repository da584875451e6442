//! The error envelope every rbee HTTP API answers with:
//! `{"error": {"code": "ALL_SLOTS_BUSY", "message": "…", "details": {…}}}`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The fixed set of machine-readable error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The request body is not valid JSON or does not match the expected shape.
    InvalidJson,
    /// The request body is not valid UTF-8.
    InvalidUtf8,
    /// A field has a value outside its accepted range.
    InvalidRequest,
    /// The request body has a field the API does not know.
    UnknownField,
    /// The request body is larger than the server accepts.
    BodyTooLarge,
    /// The prompt does not fit in a slot's context.
    PromptTooLong,
    /// No such path.
    NotFound,
    /// The path exists but not with this method.
    MethodNotAllowed,
    /// The request's `Host` does not name this machine, or a web page of another origin
    /// tried to change something (DNS rebinding and cross-site protection).
    Forbidden,
    /// An API key is configured and the request carried none.
    MissingApiKey,
    /// The request carried a key that does not match.
    InvalidApiKey,
    /// Every inference slot of the worker is busy.
    AllSlotsBusy,
    /// The server is still loading its model.
    ModelLoading,
    /// The server is shutting down and takes no new work.
    Draining,
    /// Too many requests are being handled at once.
    Overloaded,
    /// Every slot of the model's workers is busy and its queue is full, or a request
    /// waited in it past `queue_timeout_secs` (429, with `Retry-After`).
    QueueFull,
    /// Generation stopped because of an internal llama.cpp failure.
    InferenceFailed,
    /// The model could not be loaded.
    ModelLoadFailed,
    /// Not enough VRAM on the chosen device.
    VramExhausted,
    /// Preflight: the model does not fit in the RAM available to workers.
    InsufficientRam,
    /// Preflight: the model does not fit in the chosen GPU's free memory.
    InsufficientVram,
    /// Preflight: too little free disk space.
    InsufficientDisk,
    /// The requested backend cannot run here (the error lists those that can).
    BackendUnavailable,
    /// The requested device index does not exist (the error lists valid ones).
    DeviceNotFound,
    /// A model reference that is not in one of the accepted formats.
    InvalidModelRef,
    /// The model reference names nothing that exists.
    ModelNotFound,
    /// The model file is not a usable GGUF file.
    ModelInvalid,
    /// No worker with that id.
    WorkerNotFound,
    /// The supervisor could not start the worker.
    SpawnFailed,
    /// The hub refused access (401/403): a gated or private repository.
    ModelAccessDenied,
    /// A download failed after its retries.
    DownloadFailed,
    /// A download stalled on every attempt.
    DownloadTimeout,
    /// The downloaded file's SHA-256 did not match, on every attempt.
    ChecksumMismatch,
    /// The model is in use by a worker.
    ModelInUse,
    /// The worker source's git repository could not be reached (clone or fetch failed).
    GitFetchFailed,
    /// The git server refused the credentials (SSH key, token).
    GitAuthFailed,
    /// The branch, tag or commit does not exist in the worker source.
    GitRefNotFound,
    /// No `cargo` to build a worker with.
    CargoNotFound,
    /// A `cuda` worker build needs the CUDA toolkit (`nvcc`), which is not installed.
    CudaToolkitNotFound,
    /// `cargo build` of the worker failed (the first compiler errors and the log path
    /// are in the details).
    WorkerBuildFailed,
    /// The built worker binary is missing, not executable, or does not run `--version`.
    BinaryVerificationFailed,
    /// No worker binary with that id.
    BinaryNotFound,
    /// The worker binary is used by a running worker.
    BinaryInUse,
    /// A build was asked for but no `[worker_source]` is configured.
    NoWorkerSource,
    /// Anything else; the message says what.
    Internal,
}

impl ErrorCode {
    /// The HTTP status this code is answered with.
    pub fn http_status(self) -> u16 {
        use ErrorCode::*;
        match self {
            InvalidJson | InvalidUtf8 | InvalidRequest | UnknownField | PromptTooLong => 400,
            MissingApiKey | InvalidApiKey => 401,
            ModelAccessDenied => 403,
            ModelInUse | BinaryInUse | NoWorkerSource => 409,
            GitFetchFailed | GitAuthFailed => 502,
            DownloadFailed | ChecksumMismatch => 502,
            DownloadTimeout => 504,
            NotFound | ModelNotFound | WorkerNotFound | BinaryNotFound => 404,
            GitRefNotFound => 400,
            InvalidModelRef | BackendUnavailable | DeviceNotFound | ModelInvalid => 400,
            InsufficientRam | InsufficientVram | InsufficientDisk => 507,
            MethodNotAllowed => 405,
            Forbidden => 403,
            QueueFull => 429,
            BodyTooLarge => 413,
            AllSlotsBusy | ModelLoading | Draining | Overloaded => 503,
            VramExhausted => 507,
            InferenceFailed | ModelLoadFailed | SpawnFailed | Internal => 500,
            CargoNotFound | CudaToolkitNotFound | WorkerBuildFailed | BinaryVerificationFailed => {
                500
            }
        }
    }

    /// The code as it appears on the wire (`ALL_SLOTS_BUSY`).
    pub fn as_str(self) -> String {
        match serde_json::to_value(self) {
            Ok(Value::String(s)) => s,
            _ => format!("{self:?}"),
        }
    }
}

/// The inner object of the error envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// A sentence for a person: what went wrong and what to do.
    pub message: String,
    /// Numbers and names that help act on the error.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub details: Map<String, Value>,
    /// Fields some errors carry next to `code` for clients that read them there
    /// (`slots_total`, `slots_busy` of `ALL_SLOTS_BUSY`).
    #[serde(flatten, default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

/// An API error: code, message and details, ready to be serialised into the envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    /// The error.
    pub error: ErrorBody,
}

impl ApiError {
    /// A new error with no details.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: ErrorBody {
                code,
                message: message.into(),
                details: Map::new(),
                extra: Map::new(),
            },
        }
    }

    /// Adds one detail (`"slots_total": 4`).
    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.error.details.insert(key.to_owned(), value.into());
        self
    }

    /// Adds a field next to `code` and to `details` alike.
    pub fn field(mut self, key: &str, value: impl Into<Value>) -> Self {
        let value = value.into();
        self.error.extra.insert(key.to_owned(), value.clone());
        self.error.details.insert(key.to_owned(), value);
        self
    }

    /// The HTTP status for this error.
    pub fn http_status(&self) -> u16 {
        self.error.code.http_status()
    }

    /// The JSON document of the envelope.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"error":{"code":"INTERNAL","message":"error serialisation failed"}}"#.into()
        })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error.code.as_str(), self.error.message)
    }
}

impl std::error::Error for ApiError {}

impl From<crate::model_ref::ModelRefError> for ApiError {
    fn from(e: crate::model_ref::ModelRefError) -> Self {
        ApiError::new(ErrorCode::InvalidModelRef, e.to_string()).detail("model_ref", e.reference)
    }
}

impl From<crate::backend::BackendError> for ApiError {
    fn from(e: crate::backend::BackendError) -> Self {
        ApiError::new(ErrorCode::BackendUnavailable, e.to_string()).detail("backend", e.name)
    }
}

/// The code of a typed field that failed to parse inside a request body (serde keeps only
/// the message of a `FromStr` error): a model reference or a backend; `None` for others.
pub fn code_of_parse_error(message: &str) -> Option<ErrorCode> {
    if message.starts_with(crate::model_ref::MODEL_REF_ERROR_PREFIX) {
        Some(ErrorCode::InvalidModelRef)
    } else if message.starts_with(crate::backend::BACKEND_ERROR_PREFIX) {
        Some(ErrorCode::BackendUnavailable)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_has_the_documented_shape() {
        let e = ApiError::new(ErrorCode::AllSlotsBusy, "all 2 slots are busy")
            .detail("slots_total", 2)
            .detail("slots_busy", 2);
        let v: Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(v["error"]["code"], "ALL_SLOTS_BUSY");
        assert_eq!(v["error"]["details"]["slots_busy"], 2);
        assert_eq!(e.http_status(), 503);
        let back: ApiError = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn codes_are_screaming_snake_case() {
        assert_eq!(ErrorCode::InvalidApiKey.as_str(), "INVALID_API_KEY");
        assert_eq!(ErrorCode::VramExhausted.as_str(), "VRAM_EXHAUSTED");
    }
}
