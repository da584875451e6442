//! The hive's worker-binary routes: the catalogue, builds and their progress streams.

use rbee_http::{read_json, respond_error, respond_json};
use rbee_types::{ApiError, ErrorCode};
use serde::Deserialize;
use serde_json::json;
use tiny_http::Request;

use crate::hive::Hive;

/// `POST /v1/worker-binaries/build`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BuildRequest {
    /// Cargo features (`[]` or `["cpu"]`: the CPU worker; `["cuda"]`, `["metal"]`).
    #[serde(default)]
    features: Vec<String>,
    /// Branch, tag or commit (default: the configured `git_ref`).
    #[serde(default, rename = "ref")]
    git_ref: Option<String>,
}

/// `GET /v1/worker-binaries`.
pub fn list(hive: &Hive, request: Request) {
    match hive.binaries.list() {
        Ok(b) => respond_json(
            request,
            200,
            &json!({ "binaries": b, "source": hive.binaries.config().source }),
        ),
        Err(e) => respond_error(request, &e),
    }
}

/// The answer that points at a build's progress stream.
pub fn build_ref(id: &str) -> serde_json::Value {
    json!({
        "build_id": id,
        "progress_url": format!("/v1/worker-binaries/build/progress?id={id}"),
    })
}

/// `POST /v1/worker-binaries/build` {features, ref?}: 202 with the (new or joined) build.
pub fn build(hive: &Hive, mut request: Request, max_body: usize) {
    let req: BuildRequest = match read_json(&mut request, max_body) {
        Ok(r) => r,
        Err(e) => return respond_error(request, &e),
    };
    match hive.binaries.build(&req.features, req.git_ref.as_deref()) {
        Ok(b) => respond_json(request, 202, &build_ref(&b.id)),
        Err(e) => respond_error(request, &e),
    }
}

/// `GET /v1/worker-binaries/build/progress?id=…`: SSE of the build's events (every line
/// of cargo's output), ending with `complete` or `error`, then `[DONE]`.
pub fn progress(hive: &Hive, request: Request, id: Option<&str>) {
    let Some(b) = id.and_then(|id| hive.binaries.build_by_id(id)) else {
        let e = ApiError::new(
            ErrorCode::NotFound,
            "no such build; POST /v1/worker-binaries/build returns the id",
        )
        .detail("id", id.unwrap_or(""));
        return respond_error(request, &e);
    };
    let mut seen = 0;
    rbee_http::sse::stream(request, |timeout| {
        let (events, done) = b.events_since(seen, timeout);
        seen += events.len();
        (events, done)
    });
}

/// `DELETE /v1/worker-binaries/{id}`: refused while a worker runs it.
pub fn delete(hive: &Hive, request: Request, id: &str) {
    match hive.binaries.remove(id) {
        Ok(b) => respond_json(
            request,
            200,
            &json!({ "removed": b.id, "file_deleted": b.origin == rbee_binaries::catalog::Origin::Git }),
        ),
        Err(e) => respond_error(request, &e),
    }
}
