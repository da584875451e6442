//! The worker's HTTP API: request and response bodies, and the SSE events of the token
//! stream and of the loading progress.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{ApiError, Backend, ModelRef};

/// Context tokens per slot of a worker started without `--ctx-size`: the model's training
/// context, at most this.
pub const DEFAULT_CTX_CAP: u32 = 4096;

/// The largest context per slot a worker takes (64 slots of it still fit the 32-bit
/// context size llama.cpp is given).
pub const MAX_CTX_PER_SLOT: u32 = 1 << 20;

/// The context per slot a worker takes: `asked`, else the model's training context
/// `trained` capped at [`DEFAULT_CTX_CAP`] (and at least 16).
pub fn ctx_per_slot(asked: Option<u32>, trained: u32) -> u32 {
    asked.unwrap_or(trained.clamp(16, DEFAULT_CTX_CAP))
}

/// One chat message; the worker renders a list of them with the model's own chat template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The message text.
    pub content: String,
}

/// `POST /v1/inference`. Numbers are taken wide (`i64`, `f64`) so that out-of-range values
/// get a range error that names the field rather than a type error.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceRequest {
    /// A raw prompt, used as is (exclusive with `messages`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Chat messages (exclusive with `prompt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<ChatMessage>>,
    /// Most tokens to generate (1 ..= context size; default 256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<i64>,
    /// 0 is greedy; 0 ..= 2 (default 0.7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling, (0, 1] (default 0.95).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Top-k sampling; 0 disables it (default 40).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<i64>,
    /// Seed of the sampler (default random).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Strings that end generation; not included in the output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Vec<String>>,
    /// Stream tokens as SSE (default true) or answer with one JSON document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Reuse a cached prefix of the prompt (default true; llama-server's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_prompt: Option<bool>,
    /// Lowers tokens that appeared in the answer so far, once each; -2 ..= 2 (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    /// Lowers tokens by how often they appeared in the answer so far; -2 ..= 2 (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
}

/// First SSE event of a stream: the id to cancel it with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartEvent {
    /// The request id (also in the `X-Request-Id` header).
    pub request_id: String,
}

/// One generated token: `{"token": "Once", "index": 0}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenEvent {
    /// The text of the token (UTF-8; a token that ends inside a character carries over).
    pub token: String,
    /// 0-based position in the generated output.
    pub index: u32,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model produced an end-of-generation token or a stop string matched.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The slot's context is full.
    ContextFull,
    /// Cancelled by `DELETE`, a client disconnect, or the drain deadline.
    Cancelled,
}

/// Last SSE event before `[DONE]`: `{"done": true, "total_tokens": N, "duration_ms": T}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DoneEvent {
    /// Always true.
    pub done: bool,
    /// Tokens generated.
    pub total_tokens: u32,
    /// Wall time from the request's arrival to its end.
    pub duration_ms: u64,
    /// Tokens in the prompt.
    pub prompt_tokens: u32,
    /// Prompt tokens found in the prompt cache (not decoded again).
    #[serde(default)]
    pub cached_prompt_tokens: u32,
    /// Time from arrival to the first generated token.
    pub time_to_first_token_ms: Option<u64>,
    /// Why it ended.
    pub finish_reason: FinishReason,
}

/// One slot's part of the prompt cache, in `GET /v1/slots`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotCache {
    /// The slot (its llama sequence), 0-based.
    pub id: u32,
    /// A request runs on it now.
    pub busy: bool,
    /// Tokens its KV cells hold (the last prompt and answer), reusable by the next request
    /// that starts with them.
    pub cached_tokens: u64,
    /// Requests that reused some of them.
    pub hits: u64,
    /// Prompt tokens those requests did not decode again.
    pub tokens_reused: u64,
}

/// `GET /v1/slots`: the slots and their prompt cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotsView {
    /// Whether the worker keeps prompts between requests (`--no-prompt-cache` turns it off).
    pub prompt_cache: bool,
    /// Each slot.
    pub slots: Vec<SlotCache>,
}

/// The answer to `stream: false`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionResponse {
    /// The request id.
    pub request_id: String,
    /// The generated text.
    pub text: String,
    /// Tokens generated.
    pub total_tokens: u32,
    /// Tokens in the prompt.
    pub prompt_tokens: u32,
    /// Prompt tokens found in the prompt cache (not decoded again).
    #[serde(default)]
    pub cached_prompt_tokens: u32,
    /// Wall time.
    pub duration_ms: u64,
    /// Why it ended.
    pub finish_reason: FinishReason,
}

/// `GET /v1/info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// The worker id given by the hive (or generated).
    pub id: String,
    /// The catalogue reference it serves (`hf:org/repo:Q4_1`), if given.
    pub model_ref: Option<ModelRef>,
    /// File name of the model (never the absolute path: error bodies and info are safe
    /// to show to API clients).
    pub model_file: String,
    /// Where the layers run.
    pub backend: Backend,
    /// Device index.
    pub device: u32,
    /// Number of slots.
    pub slots: u32,
    /// Context tokens per slot.
    pub ctx_size: u32,
    /// Worker version.
    pub version: String,
    /// GGUF metadata, once read.
    pub model: Option<ModelMetadata>,
}

/// What the GGUF header says about the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMetadata {
    /// `general.architecture` (`llama`, `qwen2`, …).
    pub architecture: String,
    /// `general.name`, if present.
    pub name: Option<String>,
    /// Parameter count (from llama.cpp once loaded, else from `general.size_label`).
    pub parameter_count: Option<u64>,
    /// Quantisation (`Q4_1`, `Q4_K_M`, `F16`, …) from `general.file_type`.
    pub quantization: Option<String>,
    /// `<arch>.context_length`.
    pub context_length: Option<u64>,
    /// `<arch>.block_count`.
    pub layers: Option<u64>,
    /// Vocabulary size.
    pub vocab_size: Option<u64>,
    /// End-of-sequence token id.
    pub eos_token_id: Option<u64>,
    /// All end-of-generation token ids llama.cpp recognises (filled once loaded).
    #[serde(default)]
    pub eog_token_ids: Vec<i64>,
    /// File size in bytes.
    pub file_size: u64,
}

/// `GET /v1/ready`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadyResponse {
    /// True once the model is loaded and the worker takes requests.
    pub ready: bool,
    /// `loading`, `idle`, `busy`, `draining` or `failed`.
    pub state: String,
    /// Whether the model is in memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_loaded: Option<bool>,
    /// Where to follow loading progress (while loading).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_url: Option<String>,
}

/// `GET /v1/health` of a worker: alive, plus what the hive's monitor needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerHealth {
    /// Always `alive` when the worker answers.
    pub status: String,
    /// The worker's version.
    pub version: String,
    /// `v1`.
    pub api_version: String,
    /// `loading`, `idle`, `busy`, `draining` or `failed`.
    #[serde(default)]
    pub state: String,
    /// Slots in use.
    #[serde(default)]
    pub slots_busy: u32,
    /// All slots.
    #[serde(default)]
    pub slots_total: u32,
    /// Milliseconds since the last request ended (or the model became ready); `None` while
    /// a slot is busy.
    #[serde(default)]
    pub idle_ms: Option<u64>,
}

/// One event of `GET /v1/loading/progress`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadProgress {
    /// `loading_to_vram` (or `loading_to_ram` on CPU), `ready` or `failed`.
    pub stage: String,
    /// Layers loaded so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers_loaded: Option<u64>,
    /// Layers in the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers_total: Option<u64>,
    /// Why loading failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `POST {hive}/v1/workers/ready`: the worker tells the hive where it listens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadyCallback {
    /// Worker id.
    pub worker_id: String,
    /// Base URL of the worker's API.
    pub url: String,
    /// The catalogue reference it serves.
    pub model_ref: Option<ModelRef>,
    /// Where the layers run.
    pub backend: Backend,
    /// Device index.
    pub device: u32,
}

/// One event of the token stream of `POST /v1/inference`, as a client reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StreamEvent {
    /// The first event: the request's id.
    Start(StartEvent),
    /// A generated token.
    Token(TokenEvent),
    /// The last event before `[DONE]`.
    Done(DoneEvent),
    /// Generation failed after the stream began.
    Error(ApiError),
}

/// The command line of a worker the hive starts: built from validated values, turned into
/// arguments only here, and parsed back by the worker's own command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerArgs {
    /// The GGUF file.
    pub model: PathBuf,
    /// Where the layers run.
    pub backend: Backend,
    /// GPU index.
    pub device: u32,
    /// Listen address.
    pub host: IpAddr,
    /// Listen port.
    pub port: u16,
    /// Concurrent requests.
    pub slots: u32,
    /// Context tokens per slot (`None`: the model's, capped).
    pub ctx_size: Option<u32>,
    /// Id reported to the hive.
    pub worker_id: String,
    /// The reference the model was asked for as.
    pub model_ref: ModelRef,
    /// Where to call back when listening.
    pub hive_url: String,
    /// Seconds active requests get to finish on shutdown.
    pub drain_timeout_secs: u64,
    /// `/metrics` without the key for loopback clients (`--open-metrics`).
    pub open_metrics: bool,
}

impl WorkerArgs {
    /// The arguments (without the program name), in the worker's `--flag value` form.
    pub fn to_args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            ("--model", self.model.display().to_string()),
            ("--backend", self.backend.to_string()),
            ("--device", self.device.to_string()),
            ("--host", self.host.to_string()),
            ("--port", self.port.to_string()),
            ("--slots", self.slots.to_string()),
            ("--worker-id", self.worker_id.clone()),
            ("--model-ref", self.model_ref.to_string()),
            ("--hive-url", self.hive_url.clone()),
            ("--drain-timeout", self.drain_timeout_secs.to_string()),
        ]
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_owned(), value])
        .collect();
        if let Some(c) = self.ctx_size {
            args.extend(["--ctx-size".to_owned(), c.to_string()]);
        }
        if self.open_metrics {
            args.push("--open-metrics".to_owned());
        }
        args
    }
}

/// The hive's answer to a [`ReadyCallback`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyAck {
    /// Always true (a refused callback gets an error envelope).
    pub ok: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_rejected() {
        let err = serde_json::from_str::<InferenceRequest>(r#"{"prompt":"x","tempreature":1}"#)
            .unwrap_err();
        assert!(err.to_string().contains("tempreature"), "{err}");
    }

    #[test]
    fn token_event_matches_the_wire_format() {
        let s = serde_json::to_string(&TokenEvent {
            token: "Once".into(),
            index: 0,
        })
        .unwrap();
        assert_eq!(s, r#"{"token":"Once","index":0}"#);
    }

    #[test]
    fn stream_events_are_told_apart() {
        let lines = [
            r#"{"request_id":"req-1"}"#,
            r#"{"token":"B","index":0}"#,
            r#"{"done":true,"total_tokens":1,"duration_ms":3,"prompt_tokens":2,"cached_prompt_tokens":0,"time_to_first_token_ms":1,"finish_reason":"stop"}"#,
            r#"{"error":{"code":"INFERENCE_FAILED","message":"x"}}"#,
        ];
        // A worker from before the prompt cache sends no `cached_prompt_tokens`.
        let older: StreamEvent = serde_json::from_str(r#"{"done":true,"total_tokens":1,"duration_ms":3,"prompt_tokens":2,"time_to_first_token_ms":1,"finish_reason":"stop"}"#).unwrap();
        assert!(matches!(older, StreamEvent::Done(d) if d.cached_prompt_tokens == 0));
        let events: Vec<StreamEvent> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(matches!(&events[0], StreamEvent::Start(s) if s.request_id == "req-1"));
        assert!(matches!(&events[1], StreamEvent::Token(t) if t.token == "B"));
        assert!(
            matches!(&events[2], StreamEvent::Done(d) if d.finish_reason == FinishReason::Stop)
        );
        assert!(matches!(&events[3], StreamEvent::Error(e) if e.error.message == "x"));
        for (e, line) in events.iter().zip(lines) {
            assert_eq!(serde_json::to_string(e).unwrap(), line);
        }
    }

    #[test]
    fn worker_args_name_every_flag_once() {
        let a = WorkerArgs {
            model: "/m/x.gguf".into(),
            backend: Backend::Cuda,
            device: 1,
            host: "127.0.0.1".parse().unwrap(),
            port: 9300,
            slots: 4,
            ctx_size: Some(512),
            worker_id: "x".into(),
            model_ref: "file:///m/x.gguf".parse().unwrap(),
            hive_url: "http://127.0.0.1:9200".into(),
            drain_timeout_secs: 25,
            open_metrics: false,
        };
        let args = a.to_args();
        let flag = |f: &str| {
            let i = args.iter().position(|x| x == f).unwrap();
            args[i + 1].clone()
        };
        assert_eq!(flag("--backend"), "cuda");
        assert_eq!(flag("--ctx-size"), "512");
        assert_eq!(flag("--model-ref"), "file:///m/x.gguf");
        assert_eq!(args.len(), 22);
        let without = WorkerArgs {
            ctx_size: None,
            ..a
        }
        .to_args();
        assert!(!without.contains(&"--ctx-size".to_owned()));
    }
}
