//! The hive's HTTP API (a thread per connection, [`rbee_http::server`]): JSON, the error envelope, and
//! Bearer auth when a key is configured (`/v1/health` stays open).

use std::sync::Arc;

use rbee_http::{
    check_bearer, check_route, constant_time_eq, read_json, respond_error, respond_json, Method,
    Request,
};
use rbee_types::hive::{
    BackendList, DiskAt, HiveHealth, Resources, SpawnRequest, Stopped, WorkerAnswer, WorkerList,
};
use rbee_types::worker::{ReadyAck, ReadyCallback};
use rbee_types::{ApiError, ErrorCode, API_VERSION};

use crate::hive::{worker_not_found, Hive};
use crate::{binaries, front, logs, models, resources};

/// Requests handled at once before new ones get 503 `OVERLOADED`.
pub(crate) const MAX_IN_FLIGHT: usize = 256;
/// Largest request body, bytes.
pub(crate) const MAX_BODY: usize = 64 << 10;

/// What the hive's server admits.
pub(crate) const LIMITS: rbee_http::Limits = rbee_http::Limits {
    who: "hive",
    max_in_flight: MAX_IN_FLIGHT,
    request_timeout: std::time::Duration::from_secs(30),
    max_connections: rbee_http::server::MAX_CONNECTIONS,
    max_connections_per_peer: rbee_http::server::MAX_CONNECTIONS_PER_PEER,
};

/// Serves requests until the server is unblocked.
pub(crate) fn serve(server: &rbee_http::Server, hive: &Arc<Hive>) {
    let hive = Arc::clone(hive);
    server.serve(move |request| {
        let outcome = request.outcome();
        let path = request.url().split('?').next().unwrap_or("");
        let label = route(path, request.method()).map_or("other", |(r, _)| r.label());
        handle(&hive, request);
        hive.metrics.request(label, outcome.status());
    });
}

enum Route {
    Health,
    Backends,
    Resources,
    List,
    Get(String),
    Spawn,
    Ready,
    Shutdown(String),
    Logs(String),
    LoadingProgress(String),
    Models,
    Download,
    DownloadProgress,
    DeleteModel(String),
    RetrieveModel(String),
    ChatCompletions,
    Completions,
    Binaries,
    Build,
    BuildProgress,
    DeleteBinary(String),
    Metrics,
    StatusPage,
}

impl Route {
    /// The route as a metrics label: its pattern, not the ids in it.
    fn label(&self) -> &'static str {
        match self {
            Route::Health => "/v1/health",
            Route::Backends => "/v1/backends",
            Route::Resources => "/v1/resources",
            Route::List => "/v1/workers/list",
            Route::Get(_) => "/v1/workers/{id}",
            Route::Spawn => "/v1/workers/spawn",
            Route::Ready => "/v1/workers/ready",
            Route::Shutdown(_) => "/v1/workers/{id}/shutdown",
            Route::Logs(_) => "/v1/workers/{id}/logs",
            Route::LoadingProgress(_) => "/v1/workers/{id}/loading/progress",
            Route::Models => "/v1/models",
            Route::Download => "/v1/models/download",
            Route::DownloadProgress => "/v1/models/download/progress",
            Route::DeleteModel(_) | Route::RetrieveModel(_) => "/v1/models/{id}",
            Route::ChatCompletions => "/v1/chat/completions",
            Route::Completions => "/v1/completions",
            Route::Binaries => "/v1/worker-binaries",
            Route::Build => "/v1/worker-binaries/build",
            Route::BuildProgress => "/v1/worker-binaries/build/progress",
            Route::DeleteBinary(_) => "/v1/worker-binaries/{id}",
            Route::Metrics => "/metrics",
            Route::StatusPage => "/",
        }
    }
}

/// The route of `path`; `method` only tells apart routes that share a path.
fn route(path: &str, method: &Method) -> Option<(Route, Method)> {
    Some(match path {
        "/v1/chat/completions" => (Route::ChatCompletions, Method::Post),
        "/v1/completions" => (Route::Completions, Method::Post),
        "/v1/health" => (Route::Health, Method::Get),
        "/metrics" => (Route::Metrics, Method::Get),
        "/" => (Route::StatusPage, Method::Get),
        "/v1/backends" => (Route::Backends, Method::Get),
        "/v1/resources" => (Route::Resources, Method::Get),
        "/v1/workers/list" => (Route::List, Method::Get),
        "/v1/workers/spawn" => (Route::Spawn, Method::Post),
        "/v1/workers/ready" => (Route::Ready, Method::Post),
        "/v1/models" => (Route::Models, Method::Get),
        "/v1/models/download" => (Route::Download, Method::Post),
        "/v1/models/download/progress" => (Route::DownloadProgress, Method::Get),
        "/v1/worker-binaries" => (Route::Binaries, Method::Get),
        "/v1/worker-binaries/build" => (Route::Build, Method::Post),
        "/v1/worker-binaries/build/progress" => (Route::BuildProgress, Method::Get),
        p if p.starts_with("/v1/worker-binaries/") => {
            let id = p.strip_prefix("/v1/worker-binaries/")?;
            if id.is_empty() || id.contains('/') {
                return None;
            }
            (Route::DeleteBinary(id.to_owned()), Method::Delete)
        }
        p if p.starts_with("/v1/models/") => {
            let id = p.strip_prefix("/v1/models/")?;
            if id.is_empty() || id.contains('/') {
                return None;
            }
            if *method == Method::Get {
                (Route::RetrieveModel(id.to_owned()), Method::Get)
            } else {
                (Route::DeleteModel(id.to_owned()), Method::Delete)
            }
        }
        p => {
            let rest = p.strip_prefix("/v1/workers/")?;
            let (id, tail) = rest.split_once('/').unwrap_or((rest, ""));
            if id.is_empty() {
                return None;
            }
            let id = id.to_owned();
            match tail {
                "" => (Route::Get(id), Method::Get),
                "shutdown" => (Route::Shutdown(id), Method::Post),
                "logs" => (Route::Logs(id), Method::Get),
                "loading/progress" => (Route::LoadingProgress(id), Method::Get),
                _ => return None,
            }
        }
    })
}

fn query_param<'a>(url: &'a str, name: &str) -> Option<&'a str> {
    url.split_once('?')?
        .1
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

/// Allows the request's `Origin` when `cors_origins` lists it; answers a preflight
/// (`OPTIONS`) itself: 204 for an allowed origin, 403 otherwise. Returns the request when
/// it is not a preflight.
fn cors(hive: &Hive, request: Request) -> Option<Request> {
    let origin = request.header("Origin").map(str::to_owned);
    let allowed = origin
        .as_deref()
        .filter(|o| rbee_http::cors::matches(o, &hive.config.cors_origins));
    rbee_http::cors::allow(allowed);
    if *request.method() != Method::Options {
        return Some(request);
    }
    if allowed.is_some() {
        let _ = request.respond(rbee_http::cors::preflight());
    } else {
        let e = ApiError::new(
            ErrorCode::MethodNotAllowed,
            format!(
                "cross-origin requests from {} are not allowed; list the origin in the hive's cors_origins",
                origin.as_deref().unwrap_or("this page")
            ),
        )
        .detail("origin", origin.unwrap_or_default());
        let resp = rbee_http::error_response(&e).with_status_code(403);
        let _ = request.respond(resp);
    }
    None
}

fn handle(hive: &Hive, request: Request) {
    if let Err(e) = hive.guard.check(&request) {
        let openai =
            request.url().starts_with("/v1/chat/") || request.url().starts_with("/v1/completions");
        return if openai {
            rbee_http::respond_openai_error(request, &e)
        } else {
            respond_error(request, &e)
        };
    }
    let Some(request) = cors(hive, request) else {
        return;
    };
    let url = request.url().to_owned();
    let path = url.split('?').next().unwrap_or("").to_owned();
    let found = route(&path, request.method());
    let Some((mut request, route)) = check_route(request, &path, found) else {
        return;
    };
    let openai = matches!(
        route,
        Route::RetrieveModel(_) | Route::ChatCompletions | Route::Completions
    );
    match route {
        // The page holds no data; it asks for the key and calls the API with it.
        Route::Health | Route::StatusPage => {}
        // The worker authenticates its callback with its own key.
        Route::Ready => {}
        Route::Metrics if !hive.config.metrics_auth && request.remote_addr().ip().is_loopback() => {
        }
        _ => {
            if let Err(e) = check_bearer(&request, hive.api_key.as_deref(), "this hive") {
                return if openai {
                    rbee_http::respond_openai_error(request, &e)
                } else {
                    respond_error(request, &e)
                };
            }
        }
    }
    match route {
        Route::StatusPage => status_page(request),
        Route::Metrics => {
            let text = crate::scrape::scrape(hive);
            let resp = rbee_http::Response::from_string(text).with_header(rbee_http::header(
                "Content-Type",
                rbee_metrics::CONTENT_TYPE,
            ));
            let _ = request.respond(resp);
        }
        Route::Health => respond_json(
            request,
            200,
            &HiveHealth {
                status: "alive".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                api_version: API_VERSION.into(),
                supervisor: hive.supervisor.name().into(),
                pid: std::process::id(),
            },
        ),
        Route::Backends => respond_json(
            request,
            200,
            &BackendList {
                backends: resources::backends(),
            },
        ),
        Route::Resources => {
            let dir = &hive.config.state_dir;
            let res = Resources {
                memory: resources::memory(),
                disk: DiskAt {
                    path: dir.clone(),
                    space: resources::disk(dir),
                },
            };
            respond_json(request, 200, &res)
        }
        Route::List => {
            let list = WorkerList {
                workers: hive.registry.views(),
                failures: hive.registry.recent_failures(),
            };
            respond_json(request, 200, &list)
        }
        Route::Get(id) => match hive.registry.get(&id) {
            Some(w) => respond_json(request, 200, &WorkerAnswer { worker: w.view() }),
            None => respond_error(request, &worker_not_found(&id)),
        },
        Route::Spawn => {
            let req: SpawnRequest = match read_json(&mut request, MAX_BODY) {
                Ok(r) => r,
                Err(e) => return respond_error(request, &with_available_backends(e)),
            };
            match hive.spawn(&req) {
                Ok((status, resp)) => respond_json(request, status, &resp),
                Err(e) => respond_error(request, &e),
            }
        }
        Route::Ready => ready_callback(hive, request),
        Route::LoadingProgress(id) => match hive.registry.get(&id) {
            Some(w) => front::proxy::loading_progress(request, &w),
            None => respond_error(request, &worker_not_found(&id)),
        },
        Route::Shutdown(id) => match hive.stop_worker(&id, "requested through the API") {
            Ok(()) => respond_json(request, 200, &Stopped { stopped: id }),
            Err(e) => respond_error(request, &e),
        },
        Route::Models => models::list(hive, request),
        Route::Download => models::download(hive, request, MAX_BODY),
        Route::DownloadProgress => models::progress(hive, request, query_param(&url, "id")),
        Route::DeleteModel(id) => models::delete(hive, request, &id),
        Route::RetrieveModel(id) => match front::retrieve(hive, &front::FrontDoor::of(hive), &id) {
            Ok(m) => respond_json(request, 200, &m),
            Err(e) => rbee_http::respond_openai_error(request, &e),
        },
        Route::ChatCompletions => front::completion(
            hive,
            &front::FrontDoor::of(hive),
            request,
            front::Kind::Chat,
        ),
        Route::Completions => front::completion(
            hive,
            &front::FrontDoor::of(hive),
            request,
            front::Kind::Text,
        ),
        Route::Binaries => binaries::list(hive, request),
        Route::Build => binaries::build(hive, request, MAX_BODY),
        Route::BuildProgress => binaries::progress(hive, request, query_param(&url, "id")),
        Route::DeleteBinary(id) => binaries::delete(hive, request, &id),
        Route::Logs(id) => {
            let lines = match query_param(&url, "lines").map(str::parse::<usize>) {
                None => 100,
                Some(Ok(n)) => n,
                Some(Err(_)) => {
                    let e = ApiError::new(
                        ErrorCode::InvalidRequest,
                        format!("lines must be a number up to {}", logs::MAX_LINES),
                    );
                    return respond_error(request, &e);
                }
            };
            let follow = matches!(query_param(&url, "follow"), Some("true" | "1"));
            logs::serve(hive, request, &id, lines, follow)
        }
    }
}

/// The node's status page: one self-contained document (`status.html`) that polls the API.
fn status_page(request: Request) {
    const PAGE: &str = include_str!("status.html");
    // Inline script and style only, requests to this origin only, never in a frame.
    const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                       connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";
    let resp = rbee_http::Response::from_string(PAGE)
        .with_header(rbee_http::header(
            "Content-Type",
            "text/html; charset=utf-8",
        ))
        .with_header(rbee_http::header("Content-Security-Policy", CSP))
        .with_header(rbee_http::header("X-Content-Type-Options", "nosniff"))
        .with_header(rbee_http::header("Cache-Control", "no-cache"));
    let _ = request.respond(resp);
}

/// An unknown backend's error lists the backends available here, as preflight's does.
fn with_available_backends(e: ApiError) -> ApiError {
    if e.error.code != ErrorCode::BackendUnavailable {
        return e;
    }
    let available: Vec<&str> = resources::backends()
        .iter()
        .filter(|b| b.available)
        .map(|b| b.name.as_str())
        .collect();
    let message = format!(
        "{}; available here: {}",
        e.error.message,
        available.join(", ")
    );
    ApiError {
        error: rbee_types::ErrorBody { message, ..e.error },
    }
    .detail("available", available)
}

fn ready_callback(hive: &Hive, mut request: Request) {
    let cb: ReadyCallback = match read_json(&mut request, MAX_BODY) {
        Ok(c) => c,
        Err(e) => return respond_error(request, &e),
    };
    let Some(w) = hive.registry.get(&cb.worker_id) else {
        return respond_error(request, &worker_not_found(&cb.worker_id));
    };
    let token = rbee_http::bearer_token(&request).unwrap_or_default();
    let authorised = constant_time_eq(token.as_bytes(), w.api_key.as_bytes())
        || hive
            .api_key
            .as_deref()
            .is_some_and(|k| constant_time_eq(token.as_bytes(), k.as_bytes()));
    if !authorised {
        let e = ApiError::new(
            ErrorCode::InvalidApiKey,
            "the callback must carry the worker's own key (or the hive's)",
        );
        return respond_error(request, &e);
    }
    tracing::info!(id = %w.spec.id, url = %cb.url, "worker listening");
    respond_json(request, 200, &ReadyAck { ok: true });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_worker_paths_and_nothing_deeper() {
        assert!(
            matches!(route("/v1/workers/abc", &Method::Get), Some((Route::Get(id), Method::Get)) if id == "abc")
        );
        assert!(matches!(
            route("/v1/workers/abc/logs", &Method::Get),
            Some((Route::Logs(_), Method::Get))
        ));
        assert!(matches!(
            route("/v1/workers/abc/shutdown", &Method::Get),
            Some((Route::Shutdown(_), Method::Post))
        ));
        assert!(matches!(
            route("/v1/workers/abc/loading/progress", &Method::Get),
            Some((Route::LoadingProgress(id), Method::Get)) if id == "abc"
        ));
        assert!(route("/v1/workers/abc/x/y", &Method::Get).is_none());
        assert!(route("/v1/workers/", &Method::Get).is_none());
        assert!(route("/v2/health", &Method::Get).is_none());
    }

    #[test]
    fn query_parameters_are_found_by_name() {
        let url = "/v1/workers/a/logs?lines=5&follow=true";
        assert_eq!(query_param(url, "lines"), Some("5"));
        assert_eq!(query_param(url, "follow"), Some("true"));
        assert_eq!(query_param(url, "x"), None);
        assert_eq!(query_param("/p", "lines"), None);
    }
}
