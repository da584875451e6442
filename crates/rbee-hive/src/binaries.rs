//! The hive's worker-binary routes: the catalogue, builds and their progress streams.

use rbee_http::Request;
use rbee_http::{read_json, respond_error, respond_json};
use rbee_types::hive::{BinaryList, BuildRequest, BuildStarted, Origin, Removed};
use rbee_types::{ApiError, ErrorCode};

use crate::hive::Hive;

/// `GET /v1/worker-binaries`.
pub(crate) fn list(hive: &Hive, request: Request) {
    match hive.binaries.list() {
        Ok(binaries) => respond_json(
            request,
            200,
            &BinaryList {
                binaries,
                source: hive.binaries.config().source.clone(),
            },
        ),
        Err(e) => respond_error(request, &ApiError::from(e)),
    }
}

/// `POST /v1/worker-binaries/build` {features, ref?}: 202 with the (new or joined) build.
pub(crate) fn build(hive: &Hive, mut request: Request, max_body: usize) {
    let req: BuildRequest = match read_json(&mut request, max_body) {
        Ok(r) => r,
        Err(e) => return respond_error(request, &e),
    };
    match hive.binaries.build(&req.features, req.git_ref.as_deref()) {
        Ok(b) => respond_json(request, 202, &BuildStarted::new(&b.id)),
        Err(e) => respond_error(request, &ApiError::from(e)),
    }
}

/// `GET /v1/worker-binaries/build/progress?id=…`: SSE of the build's events (every line
/// of cargo's output), ending with `complete` or `error`, then `[DONE]`.
pub(crate) fn progress(hive: &Hive, request: Request, id: Option<&str>) {
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
pub(crate) fn delete(hive: &Hive, request: Request, id: &str) {
    match hive.binaries.remove(id) {
        Ok(b) => respond_json(
            request,
            200,
            &Removed {
                file_deleted: b.origin == Origin::Git,
                removed: b.id,
            },
        ),
        Err(e) => respond_error(request, &ApiError::from(e)),
    }
}
