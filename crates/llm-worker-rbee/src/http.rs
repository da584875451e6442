//! The worker's HTTP API: routing, authentication, body limits, and the handlers. Each
//! connection has its own thread ([`rbee_http::server`]); at most [`MAX_IN_FLIGHT`]
//! requests at once, beyond which the server answers 503 `OVERLOADED` itself, so memory
//! stays bounded under any load.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rbee_types::worker::{
    CompletionResponse, InferenceRequest, ReadyResponse, StartEvent, TokenEvent, WorkerHealth,
};
use rbee_types::{ApiError, ErrorCode, API_VERSION};
use serde_json::json;

use crate::app::{serving, start, tokens_for, Started};
pub(crate) use crate::app::{App, ShutdownCause};
use crate::engine::Event;
use crate::openai;
use crate::state::{lock, Phase, Shared};
use crate::validate::validate;
use rbee_http::{
    check_route, header, json_response, read_body, respond_error, respond_json, Method, Request,
    Response, SseWriter,
};

/// Requests handled at once before new ones get 503 `OVERLOADED`.
pub(crate) const MAX_IN_FLIGHT: usize = 256;

/// What the worker's server admits.
pub(crate) const LIMITS: rbee_http::Limits = rbee_http::Limits {
    who: "worker",
    max_in_flight: MAX_IN_FLIGHT,
    request_timeout: std::time::Duration::from_secs(30),
    max_connections: rbee_http::server::MAX_CONNECTIONS,
    max_connections_per_peer: rbee_http::server::MAX_CONNECTIONS_PER_PEER,
};

/// Serves requests until the server is unblocked.
pub(crate) fn serve(server: &rbee_http::Server, app: &Arc<App>) {
    let app = Arc::clone(app);
    server.serve(move |request| {
        let outcome = request.outcome();
        let path = request.url().split('?').next().unwrap_or("");
        let label = route(path).map_or("other", |(r, _)| r.label());
        handle(&app, request);
        let status = outcome.status().unwrap_or(0).to_string();
        app.shared.metrics.requests.with(&[label, &status]).inc();
    });
}

enum Route {
    Health,
    Info,
    Slots,
    Ready,
    Progress,
    Inference,
    Cancel(String),
    Shutdown,
    Models(Option<String>),
    ChatCompletions,
    Completions,
    Metrics,
}

impl Route {
    /// The route as a metrics label: its pattern, not the ids in it.
    fn label(&self) -> &'static str {
        match self {
            Route::Health => "/v1/health",
            Route::Info => "/v1/info",
            Route::Slots => "/v1/slots",
            Route::Ready => "/v1/ready",
            Route::Progress => "/v1/loading/progress",
            Route::Inference => "/v1/inference",
            Route::Cancel(_) => "/v1/inference/{id}",
            Route::Shutdown => "/v1/admin/shutdown",
            Route::Models(None) => "/v1/models",
            Route::Models(Some(_)) => "/v1/models/{id}",
            Route::ChatCompletions => "/v1/chat/completions",
            Route::Completions => "/v1/completions",
            Route::Metrics => "/metrics",
        }
    }

    /// Routes whose answers and errors are in OpenAI's shapes.
    fn is_openai(&self) -> bool {
        matches!(
            self,
            Route::Models(_) | Route::ChatCompletions | Route::Completions
        )
    }
}

fn route(path: &str) -> Option<(Route, Method)> {
    Some(match path {
        "/v1/health" => (Route::Health, Method::Get),
        "/v1/info" => (Route::Info, Method::Get),
        "/v1/slots" => (Route::Slots, Method::Get),
        "/v1/ready" => (Route::Ready, Method::Get),
        "/v1/loading/progress" => (Route::Progress, Method::Get),
        "/v1/inference" => (Route::Inference, Method::Post),
        "/v1/admin/shutdown" => (Route::Shutdown, Method::Post),
        "/v1/models" => (Route::Models(None), Method::Get),
        "/v1/chat/completions" => (Route::ChatCompletions, Method::Post),
        "/v1/completions" => (Route::Completions, Method::Post),
        "/metrics" => (Route::Metrics, Method::Get),
        p if p.starts_with("/v1/models/") => {
            let id = p.strip_prefix("/v1/models/")?;
            if id.is_empty() {
                return None;
            }
            (Route::Models(Some(id.to_owned())), Method::Get)
        }
        p => {
            let id = p.strip_prefix("/v1/inference/")?;
            if id.is_empty() || id.contains('/') {
                return None;
            }
            (Route::Cancel(id.to_owned()), Method::Delete)
        }
    })
}

fn handle(app: &App, request: Request) {
    let path = request.url().split('?').next().unwrap_or("").to_owned();
    let Some((request, route)) = check_route(request, &path, route(&path)) else {
        return;
    };
    let guarded = app.guard.check(&request);
    if let Err(e) = guarded {
        return if route.is_openai() {
            openai::respond_error(request, &e)
        } else {
            respond_error(request, &e)
        };
    }
    let open = match route {
        Route::Health => true,
        Route::Metrics => app.open_metrics && request.remote_addr().ip().is_loopback(),
        _ => false,
    };
    if !open {
        if let Err(e) = check_auth(&app.shared, &request) {
            return if route.is_openai() {
                openai::respond_error(request, &e)
            } else {
                respond_error(request, &e)
            };
        }
    }
    match route {
        Route::Health => respond_json(request, 200, &health(&app.shared)),
        Route::Info => {
            let info = lock(&app.shared.info).clone();
            respond_json(request, 200, &info);
        }
        Route::Slots => {
            let view = lock(&app.shared.cache).clone();
            respond_json(request, 200, &view);
        }
        Route::Ready => respond_json(request, 200, &ready(&app.shared)),
        Route::Progress => progress(app, request),
        Route::Inference => inference(app, request),
        Route::Cancel(id) => {
            let was_active = app.shared.cancel(&id);
            tracing::info!(request_id = %id, was_active, "cancel requested");
            let _ = request.respond(Response::empty(204));
        }
        Route::Shutdown => {
            let _ = app.shutdown.send(ShutdownCause::AdminRequest);
            respond_json(request, 202, &json!({"state": "draining"}));
        }
        Route::Models(id) => openai::models(app, request, id.as_deref()),
        Route::ChatCompletions => openai::completion(app, request, openai::Kind::Chat),
        Route::Completions => openai::completion(app, request, openai::Kind::Text),
        Route::Metrics => {
            let text = app.shared.metrics_text();
            let resp = Response::from_string(text)
                .with_header(header("Content-Type", rbee_metrics::CONTENT_TYPE));
            let _ = request.respond(resp);
        }
    }
}

fn health(shared: &Shared) -> WorkerHealth {
    let phase = shared.phase();
    WorkerHealth {
        status: "alive".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        api_version: API_VERSION.into(),
        state: ready(shared).state,
        slots_busy: shared.slots.busy(),
        slots_total: shared.slots.total(),
        idle_ms: if phase == Phase::Ready {
            shared.slots.idle_for().map(|d| d.as_millis() as u64)
        } else {
            None
        },
    }
}

fn ready(shared: &Shared) -> ReadyResponse {
    let busy = shared.slots.busy();
    let (ready, state, loaded) = match shared.phase() {
        Phase::Loading => (false, "loading", false),
        Phase::Ready if busy > 0 => (true, "busy", true),
        Phase::Ready => (true, "idle", true),
        Phase::Draining => (false, "draining", true),
        Phase::Failed => (false, "failed", false),
    };
    ReadyResponse {
        ready,
        state: state.into(),
        model_loaded: Some(loaded),
        progress_url: (!loaded && state == "loading")
            .then(|| format!("{}/v1/loading/progress", shared.base_url)),
    }
}

/// `GET /v1/loading/progress`: an event on every change until `ready` or `failed`.
fn progress(app: &App, request: Request) {
    let Ok(mut sse) = SseWriter::start(request, &[]) else {
        return;
    };
    let mut last = None;
    let mut last_write = Instant::now();
    loop {
        let generation = lock(&app.shared.load).generation;
        let ev = app.shared.progress_event(app.gpu);
        let finished = ev.stage == "ready" || ev.stage == "failed";
        if last.as_ref() != Some(&ev) {
            if sse.json(&ev).is_err() {
                return;
            }
            last_write = Instant::now();
            last = Some(ev);
        } else if last_write.elapsed() > Duration::from_secs(10) {
            // A comment line keeps proxies from closing the stream and detects a gone client.
            if sse.comment("keep-alive").is_err() {
                return;
            }
            last_write = Instant::now();
        }
        if finished {
            let _ = sse.done();
            return;
        }
        let guard = lock(&app.shared.load);
        if guard.generation == generation {
            let _ = app
                .shared
                .changed
                .wait_timeout(guard, Duration::from_millis(500));
        }
    }
}

/// `POST /v1/inference`.
fn inference(app: &App, mut request: Request) {
    let received = Instant::now();
    let admitted = serving(app).and_then(|prepared| {
        let body = read_body(&mut request, app.shared.max_body_bytes)?;
        let req: InferenceRequest = rbee_http::parse_named(&body)?;
        let v = validate(&req, prepared.ctx_size)?;
        let tokens = tokens_for(prepared, &v)?;
        let stream = v.stream;
        let id = request.header("X-Request-Id");
        Ok((start(app, v, tokens, received, id)?, stream))
    });
    match admitted {
        Ok((started, true)) => stream(request, &started),
        Ok((started, false)) => complete(request, &started),
        Err(e) => respond_error(request, &e),
    }
}

fn stream(request: Request, started: &Started) {
    let (request_id, rx) = (started.request_id.as_str(), &started.events);
    let gone = |why: &str| started.client_gone(why);
    let Ok(mut sse) = SseWriter::start(request, &[("X-Request-Id", request_id)]) else {
        return gone("head");
    };
    if sse
        .json(&StartEvent {
            request_id: request_id.to_owned(),
        })
        .is_err()
    {
        return gone("start");
    }
    let mut index = 0u32;
    loop {
        let sent = match rx.recv() {
            Ok(Event::Token(token)) => {
                index += 1;
                sse.json(&TokenEvent {
                    token,
                    index: index - 1,
                })
            }
            Ok(Event::Done(done)) => {
                let _ = sse.json(&done).and_then(|()| sse.done());
                return;
            }
            Ok(Event::Error(e)) => {
                let _ = sse.json(&e).and_then(|()| sse.done());
                return;
            }
            Err(_) => {
                let e = ApiError::new(ErrorCode::Internal, "the engine stopped");
                let _ = sse.json(&e).and_then(|()| sse.done());
                return;
            }
        };
        if sent.is_err() {
            return gone("write");
        }
    }
}

fn complete(request: Request, started: &Started) {
    let request_id = started.request_id.as_str();
    match started.collect(&request.disconnect_probe()) {
        Ok((text, d)) => {
            let body = CompletionResponse {
                request_id: request_id.to_owned(),
                text,
                total_tokens: d.total_tokens,
                prompt_tokens: d.prompt_tokens,
                cached_prompt_tokens: d.cached_prompt_tokens,
                duration_ms: d.duration_ms,
                finish_reason: d.finish_reason,
            };
            let resp = json_response(200, &body).with_header(header("X-Request-Id", request_id));
            let _ = request.respond(resp);
        }
        Err(e) => respond_error(request, &e),
    }
}

fn check_auth(shared: &Shared, request: &Request) -> Result<(), ApiError> {
    rbee_http::check_bearer(request, shared.api_key.as_deref(), "this worker")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_cancel_ids_but_not_nested_paths() {
        assert!(
            matches!(route("/v1/inference/req-1"), Some((Route::Cancel(id), Method::Delete)) if id == "req-1")
        );
        assert!(route("/v1/inference/a/b").is_none());
        assert!(route("/v1/nope").is_none());
    }
}
