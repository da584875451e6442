//! `llm-worker-rbee`'s API, typed.

use std::time::Duration;

use rbee_types::worker::{
    InferenceRequest, LoadProgress, ReadyResponse, StreamEvent, WorkerHealth, WorkerInfo,
};

use crate::http::{ClientError, Events, Http};

/// A client of one worker.
#[derive(Clone)]
pub struct WorkerClient {
    http: Http,
}

impl WorkerClient {
    /// The worker at `base`, with its key if it has one.
    pub fn new(base: &str, key: Option<String>) -> WorkerClient {
        WorkerClient {
            http: Http::new(base, key, "llm-worker-rbee"),
        }
    }

    /// The same worker, every call bounded by `t` in all (a cancel must not hang on a
    /// worker that stopped answering).
    pub fn with_timeout(&self, t: Duration) -> WorkerClient {
        WorkerClient {
            http: self.http.with_timeout(t),
        }
    }

    /// Its base URL.
    pub fn base(&self) -> &str {
        &self.http.base
    }

    /// `GET /v1/health`.
    pub fn health(&self) -> Result<WorkerHealth, ClientError> {
        self.http.get("/v1/health")
    }

    /// `GET /v1/info`.
    pub fn info(&self) -> Result<WorkerInfo, ClientError> {
        self.http.get("/v1/info")
    }

    /// `GET /v1/ready`.
    pub fn ready(&self) -> Result<ReadyResponse, ClientError> {
        self.http.get("/v1/ready")
    }

    /// `GET /v1/loading/progress`.
    pub fn loading_progress(&self) -> Result<Events<LoadProgress>, ClientError> {
        self.http.events("/v1/loading/progress", None::<&()>)
    }

    /// `POST /v1/inference` with `stream: true`: the token stream.
    pub fn infer(&self, req: &InferenceRequest) -> Result<Events<StreamEvent>, ClientError> {
        let req = InferenceRequest {
            stream: Some(true),
            ..req.clone()
        };
        self.http.events("/v1/inference", Some(&req))
    }

    /// `DELETE /v1/inference/{id}`: stops a generation (idempotent).
    pub fn cancel(&self, request_id: &str) -> Result<(), ClientError> {
        self.http
            .call(
                "DELETE",
                &format!("/v1/inference/{request_id}"),
                None::<&()>,
            )
            .map(|_| ())
    }
}
