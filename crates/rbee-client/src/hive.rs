//! `rbee-hive`'s API, typed.

use std::time::Duration;

use rbee_types::hive::{
    BackendList, BinaryList, BuildEvent, BuildRequest, BuildStarted, DownloadProgress,
    DownloadRequest, DownloadStarted, HiveHealth, LogLine, Model, ModelAnswer, ModelList, Removed,
    Resources, SpawnRequest, SpawnResponse, Stopped, WorkerAnswer, WorkerList, WorkerView,
};
use rbee_types::openai::{
    ChatCompletionChunk, CompletionRequest, ModelObject, ModelObjectList, StreamItem,
    TextCompletion,
};
use rbee_types::worker::LoadProgress;
use rbee_types::ModelRef;

use crate::http::{ClientError, Events, Http};

/// What `POST /v1/models/download` found.
#[derive(Debug, Clone, PartialEq)]
pub enum Download {
    /// The model is here (200).
    Ready(Box<Model>),
    /// A download runs (202), new or joined.
    Started(DownloadStarted),
}

/// A client of one hive.
#[derive(Clone)]
pub struct HiveClient {
    http: Http,
}

impl HiveClient {
    /// The hive at `base` (`http://host:port`), with its key if it has one.
    pub fn new(base: &str, key: Option<String>) -> HiveClient {
        HiveClient {
            http: Http::new(base, key, "rbee-hive"),
        }
    }

    /// The same hive, every call bounded by `t` in all.
    pub fn with_timeout(&self, t: Duration) -> HiveClient {
        HiveClient {
            http: self.http.with_timeout(t),
        }
    }

    /// The same hive, its errors naming `node` and its `address` as the user knows it
    /// (`gpu1.lan:9200`, when the client goes through a tunnel).
    pub fn at_node(mut self, node: &str, address: &str) -> HiveClient {
        self.http.node = Some((node.to_owned(), address.to_owned()));
        self
    }

    /// Its base URL.
    pub fn base(&self) -> &str {
        &self.http.base
    }

    /// `GET /v1/health` (needs no key).
    pub fn health(&self) -> Result<HiveHealth, ClientError> {
        self.http.get("/v1/health")
    }

    /// `GET /v1/backends`.
    pub fn backends(&self) -> Result<BackendList, ClientError> {
        self.http.get("/v1/backends")
    }

    /// `GET /v1/resources`.
    pub fn resources(&self) -> Result<Resources, ClientError> {
        self.http.get("/v1/resources")
    }

    /// `GET /v1/workers/list`.
    pub fn workers(&self) -> Result<Vec<WorkerView>, ClientError> {
        self.http
            .get::<WorkerList>("/v1/workers/list")
            .map(|l| l.workers)
    }

    /// `GET /v1/workers/list` whole: the workers and the recent failures.
    pub fn worker_list(&self) -> Result<WorkerList, ClientError> {
        self.http.get("/v1/workers/list")
    }

    /// `GET /v1/workers/{id}`.
    pub fn worker(&self, id: &str) -> Result<WorkerView, ClientError> {
        self.http
            .get::<WorkerAnswer>(&format!("/v1/workers/{id}"))
            .map(|a| a.worker)
    }

    /// `POST /v1/workers/spawn`: 200 and the reused worker, or 202 and what it waits for.
    pub fn spawn(&self, req: &SpawnRequest) -> Result<(u16, SpawnResponse), ClientError> {
        self.http.json("POST", "/v1/workers/spawn", Some(req))
    }

    /// `POST /v1/workers/{id}/shutdown`.
    pub fn stop_worker(&self, id: &str) -> Result<Stopped, ClientError> {
        self.http
            .json("POST", &format!("/v1/workers/{id}/shutdown"), None::<&()>)
            .map(|(_, s)| s)
    }

    /// `GET /v1/workers/{id}/logs?lines=N`: the last lines, as text.
    pub fn logs(&self, id: &str, lines: usize) -> Result<String, ClientError> {
        let path = format!("/v1/workers/{id}/logs?lines={lines}");
        self.http.call("GET", &path, None::<&()>).map(|r| r.body)
    }

    /// `GET /v1/workers/{id}/logs?lines=N&follow=true`: the last lines, then new ones.
    pub fn follow_logs(&self, id: &str, lines: usize) -> Result<Events<LogLine>, ClientError> {
        let path = format!("/v1/workers/{id}/logs?lines={lines}&follow=true");
        self.http.events(&path, None::<&()>)
    }

    /// `GET /v1/models`.
    pub fn models(&self) -> Result<Vec<Model>, ClientError> {
        self.http.get::<ModelList>("/v1/models").map(|l| l.models)
    }

    /// `POST /v1/models/download`.
    pub fn download(&self, model_ref: &ModelRef) -> Result<Download, ClientError> {
        let body = DownloadRequest {
            model_ref: model_ref.clone(),
        };
        let path = "/v1/models/download";
        let reply = self.http.call("POST", path, Some(&body))?;
        Ok(if reply.status == 200 {
            Download::Ready(Box::new(
                self.http.parse::<ModelAnswer>(path, &reply.body)?.model,
            ))
        } else {
            Download::Started(self.http.parse(path, &reply.body)?)
        })
    }

    /// A download's progress stream, from the `progress_url` the hive gave.
    pub fn download_progress(
        &self,
        progress_url: &str,
    ) -> Result<Events<DownloadProgress>, ClientError> {
        self.http.events(progress_url, None::<&()>)
    }

    /// `DELETE /v1/models/{id}`.
    pub fn delete_model(&self, id: &str) -> Result<Removed, ClientError> {
        self.http
            .json("DELETE", &format!("/v1/models/{id}"), None::<&()>)
            .map(|(_, r)| r)
    }

    /// `GET /v1/worker-binaries`.
    pub fn binaries(&self) -> Result<BinaryList, ClientError> {
        self.http.get("/v1/worker-binaries")
    }

    /// `POST /v1/worker-binaries/build`.
    pub fn build(&self, req: &BuildRequest) -> Result<BuildStarted, ClientError> {
        self.http
            .json("POST", "/v1/worker-binaries/build", Some(req))
            .map(|(_, b)| b)
    }

    /// A build's progress stream, from the `progress_url` the hive gave.
    pub fn build_progress(&self, progress_url: &str) -> Result<Events<BuildEvent>, ClientError> {
        self.http.events(progress_url, None::<&()>)
    }

    /// `DELETE /v1/worker-binaries/{id}`.
    pub fn delete_binary(&self, id: &str) -> Result<Removed, ClientError> {
        self.http
            .json("DELETE", &format!("/v1/worker-binaries/{id}"), None::<&()>)
            .map(|(_, r)| r)
    }

    /// `GET /v1/workers/{id}/loading/progress`: the worker's loading progress, relayed by
    /// the hive until the model is loaded (an error while the worker does not listen yet).
    pub fn loading_progress(&self, id: &str) -> Result<Events<LoadProgress>, ClientError> {
        let path = format!("/v1/workers/{id}/loading/progress");
        self.http.events(&path, None::<&()>)
    }

    /// `GET /v1/models` as OpenAI's list (the front door's names for its models).
    pub fn openai_models(&self) -> Result<ModelObjectList, ClientError> {
        self.http.get("/v1/models")
    }

    /// `GET /v1/models/{id}`: one name the front door serves (an id of the list, or an
    /// alias of the hive's config), with the reference it stands for.
    pub fn openai_model(&self, id: &str) -> Result<ModelObject, ClientError> {
        self.http.get(&format!("/v1/models/{id}"))
    }

    /// `POST /v1/chat/completions` streamed through the front door: its chunks, or the
    /// error that ended it. The answer may wait in the model's queue and for the model to
    /// load, so reads wait up to 10 minutes.
    pub fn chat_stream(
        &self,
        req: &CompletionRequest,
    ) -> Result<Events<StreamItem<ChatCompletionChunk>>, ClientError> {
        self.completion_events("/v1/chat/completions", req)
    }

    /// `POST /v1/completions` streamed, as [`HiveClient::chat_stream`].
    pub fn completion_stream(
        &self,
        req: &CompletionRequest,
    ) -> Result<Events<StreamItem<TextCompletion>>, ClientError> {
        self.completion_events("/v1/completions", req)
    }

    fn completion_events<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        req: &CompletionRequest,
    ) -> Result<Events<StreamItem<T>>, ClientError> {
        let req = CompletionRequest {
            stream: Some(true),
            ..req.clone()
        };
        self.http
            .with_read_timeout(Duration::from_secs(600))
            .events(path, Some(&req))
    }
}
