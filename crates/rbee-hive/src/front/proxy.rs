//! A request forwarded to its worker and the answer passed back as it comes: each SSE
//! event written and flushed the moment the worker sends it, nothing buffered. A client
//! that goes away from a stream closes the connection to the worker, which cancels the
//! generation and frees the slot; one that goes away while a whole answer is generated
//! gets its generation cancelled by name (the hive names each request it forwards,
//! `X-Request-Id`). A worker that dies mid-stream ends the client's stream with an error
//! event. Also the worker's loading progress, relayed the same way.

use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use rbee_http::{header, SseWriter};
use rbee_http::{Request, Response};
use rbee_types::openai::{OpenAiError, Usage};
use rbee_types::worker::LoadProgress;
use rbee_types::{ApiError, ErrorCode};

use crate::metrics::Tally;
use crate::registry::Worker;

/// One agent for every worker call: connections are reused.
fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            // A long answer arrives token by token; a worker silent for this long is stuck.
            .timeout_read(Duration::from_secs(600))
            .build()
    })
}

/// Sends `body` to `path` of `worker` with the worker's key and answers `request` with what
/// the worker answers: an SSE stream event by event (`stream`), else the one document; the
/// worker's errors (already in OpenAI's shape) with their status.
pub(crate) fn forward(
    request: Request,
    worker: &Worker,
    path: &str,
    body: &[u8],
    stream: bool,
    mut tally: Tally<'_>,
) {
    let url = format!("{}{path}", worker.spec.url());
    let id = request_id();
    let call = {
        let (key, id, body) = (worker.api_key.clone(), id.clone(), body.to_vec());
        move || {
            agent()
                .post(&url)
                .set("Authorization", &format!("Bearer {key}"))
                .set("Content-Type", "application/json")
                .set("X-Request-Id", &id)
                .send_bytes(&body)
                .map_err(Box::new)
        }
    };
    // A stream's head comes at once and its client's leaving shows when a write fails; a
    // whole answer comes only at its end, so its client is watched meanwhile.
    let sent = if stream {
        call()
    } else {
        let gone = request.disconnect_probe();
        match wait_watching(call, &gone, |first| cancel(worker, &id, first)) {
            Some(sent) => sent,
            None => {
                let e = ApiError::new(
                    ErrorCode::Internal,
                    format!("the call to worker {} failed", worker.spec.id),
                );
                return rbee_http::respond_openai_error(request, &e);
            }
        }
    };
    let resp = match sent.map_err(|e| *e) {
        Ok(r) => r,
        Err(ureq::Error::Status(status, r)) => return pass_through(request, status, r, None),
        Err(e) => {
            let e = ApiError::new(
                ErrorCode::Internal,
                format!("worker {} did not answer: {e}", worker.spec.id),
            );
            return rbee_http::respond_openai_error(request, &e);
        }
    };
    let is_sse = resp
        .header("Content-Type")
        .is_some_and(|c| c.starts_with("text/event-stream"));
    if stream && is_sse {
        let why = broke_off(&worker.spec.id, "in the middle of the answer");
        let e = ApiError::new(ErrorCode::InferenceFailed, why);
        relay_events(request, resp, &worker.spec.id, Some(&mut tally), |sse| {
            sse.json(&OpenAiError::from_api(&e).1)
        });
    } else {
        pass_through(request, resp.status(), resp, Some(&tally));
    }
}

/// A name for a forwarded request, unique across hive restarts (a random prefix per hive
/// process): the worker keeps it, and cancelling by it reaches only this request.
fn request_id() -> String {
    static PREFIX: OnceLock<String> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let prefix = PREFIX.get_or_init(|| match crate::registry::store::random_key() {
        Ok(k) => k[..16].to_owned(),
        Err(_) => format!("{:x}{:x}", std::process::id(), rbee_types::now_unix()),
    });
    format!("hive-{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// How often a request waiting for a whole answer checks its client.
const CLIENT_CHECK: Duration = Duration::from_millis(250);

/// Runs `call` on its own thread and waits for it. Once `gone` turns true, calls
/// `on_gone` at every check until the call returns (`true` the first time): a cancel that
/// reached the worker before it registered the request is sent again. None if the call's
/// thread panicked.
fn wait_watching<T: Send + 'static>(
    call: impl FnOnce() -> T + Send + 'static,
    gone: &dyn Fn() -> bool,
    mut on_gone: impl FnMut(bool),
) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(call());
    });
    let mut left = false;
    let mut next_check = Instant::now() + CLIENT_CHECK;
    loop {
        match rx.recv_timeout(CLIENT_CHECK) {
            Ok(result) => return Some(result),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return None,
        }
        if Instant::now() >= next_check {
            if left || gone() {
                on_gone(!left);
                left = true;
            }
            next_check = Instant::now() + CLIENT_CHECK;
        }
    }
}

/// Cancels request `id` on `worker` (its client left; `first`: the first time).
fn cancel(worker: &Worker, id: &str, first: bool) {
    let url = format!("{}/v1/inference/{id}", worker.spec.url());
    let r = agent()
        .delete(&url)
        .set("Authorization", &format!("Bearer {}", worker.api_key))
        .call();
    if first {
        tracing::info!(worker = %worker.spec.id, request_id = id, sent = r.is_ok(), "client left before its answer; cancelling the generation");
    }
}

/// `GET /v1/workers/{id}/loading/progress`: the worker's own loading progress stream,
/// relayed event by event until it ends, so that a client needs no way to the worker. A
/// worker that does not listen yet is `MODEL_LOADING` (retry).
pub(crate) fn loading_progress(request: Request, worker: &Worker) {
    let url = format!("{}/v1/loading/progress", worker.spec.url());
    let sent = agent()
        .get(&url)
        .set("Authorization", &format!("Bearer {}", worker.api_key))
        .call();
    match sent {
        Ok(resp) => {
            let failed = LoadProgress {
                stage: "failed".into(),
                layers_loaded: None,
                layers_total: None,
                error: Some(broke_off(&worker.spec.id, "while loading")),
            };
            relay_events(request, resp, &worker.spec.id, None, |sse| {
                sse.json(&failed)
            });
        }
        Err(ureq::Error::Status(status, r)) => pass_through(request, status, r, None),
        Err(_) => {
            let e = ApiError::new(
                ErrorCode::ModelLoading,
                format!(
                    "worker {} does not listen yet; retry in a moment",
                    worker.spec.id
                ),
            );
            rbee_http::respond_error(request, &e);
        }
    }
}

/// A whole answer, status and body as the worker sent them; its usage counted.
fn pass_through(request: Request, status: u16, resp: ureq::Response, tally: Option<&Tally<'_>>) {
    let request_id = resp.header("X-Request-Id").map(str::to_owned);
    let body = resp.into_string().unwrap_or_default();
    if let Some(t) = tally.filter(|_| status == 200) {
        #[derive(serde::Deserialize)]
        struct Answer {
            usage: Option<Usage>,
        }
        if let Ok(Answer { usage: Some(u) }) = serde_json::from_str(&body) {
            t.usage(&u);
        }
    }
    let mut out = Response::from_string(body)
        .with_status_code(status)
        .with_header(header("Content-Type", "application/json"));
    if let Some(id) = request_id {
        out = out.with_header(header("X-Request-Id", &id));
    }
    let _ = request.respond(rbee_http::cors::decorate(out));
}

/// The worker's events, one flushed chunk each, until `[DONE]`, the worker's end, or the
/// client's. A worker stream that breaks off (the worker died) gets `last_words`'s event
/// and `[DONE]`, so the client learns of it instead of waiting.
fn relay_events(
    request: Request,
    resp: ureq::Response,
    worker_id: &str,
    mut tally: Option<&mut Tally<'_>>,
    last_words: impl FnOnce(&mut SseWriter) -> std::io::Result<()>,
) {
    let request_id = resp.header("X-Request-Id").unwrap_or("").to_owned();
    let Ok(mut sse) = SseWriter::start(request, &[("X-Request-Id", &request_id)]) else {
        return;
    };
    let mut lines = BufReader::new(resp.into_reader());
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line) {
            Ok(0) | Err(_) => {
                tracing::warn!(
                    worker = worker_id,
                    "the worker's stream ended without [DONE]"
                );
                let _ = last_words(&mut sse).and_then(|()| sse.done());
                return;
            }
            Ok(_) => {}
        }
        let Some(data) = line.trim_end().strip_prefix("data: ") else {
            // The worker's usage comment ends its stream; clients do not need it.
            if let (Some(t), Some(u)) = (tally.as_deref(), Usage::from_comment(line.trim_end())) {
                t.usage(&u);
            }
            continue;
        };
        if data == "[DONE]" {
            let _ = sse.done();
            return;
        }
        if let Some(t) = tally.as_deref_mut() {
            t.event();
        }
        if sse.event(data).is_err() {
            // Dropping the worker's response closes its connection: the worker cancels.
            tracing::info!(
                worker = worker_id,
                request_id,
                "client left; closing the worker's stream"
            );
            return;
        }
    }
}

/// Why a relayed stream broke off.
fn broke_off(worker_id: &str, what: &str) -> String {
    format!(
        "worker {worker_id} stopped {what} (did it crash? GET /v1/workers/list and its logs say)"
    )
}
