//! The hive's model routes: the catalogue, downloads and their progress streams.

use rbee_http::Request;
use rbee_http::{read_json, respond_error, respond_json};
use rbee_models::provisioner::Ensured;
use rbee_types::hive::{
    download_progress_path, DownloadRequest, DownloadStarted, ModelAnswer, ModelList, Removed,
};
use rbee_types::{ApiError, ErrorCode};

use crate::hive::Hive;

/// `GET /v1/models`: OpenAI's list (`object`, `data`) and the catalogue (`models`).
pub(crate) fn list(hive: &Hive, request: Request) {
    // The catalogue's lock is released before the front door takes it again.
    let models = hive.models.catalog().list();
    let answer = models
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))
        .and_then(|models| {
            let openai = crate::front::list(hive, &crate::front::FrontDoor::of(hive))?;
            Ok(ModelList {
                object: openai.object,
                data: openai.data,
                models,
            })
        });
    match answer {
        Ok(list) => respond_json(request, 200, &list),
        Err(e) => respond_error(request, &e),
    }
}

/// `POST /v1/models/download` {model_ref}: 200 with the model when it is here, else 202
/// with the (new or joined) download.
pub(crate) fn download(hive: &Hive, mut request: Request, max_body: usize) {
    let req: DownloadRequest = match read_json(&mut request, max_body) {
        Ok(r) => r,
        Err(e) => return respond_error(request, &e),
    };
    match hive.models.ensure(&req.model_ref) {
        Ok(Ensured::Ready(m)) => respond_json(request, 200, &ModelAnswer { model: *m }),
        Ok(Ensured::Downloading(t)) => respond_json(
            request,
            202,
            &DownloadStarted {
                download_id: t.id.clone(),
                progress_url: download_progress_path(&t.id),
            },
        ),
        Err(e) => respond_error(request, &e.into()),
    }
}

/// `GET /v1/models/download/progress?id=…`: SSE of progress events, ending with
/// `complete` or `error`, then `[DONE]`.
pub(crate) fn progress(hive: &Hive, request: Request, id: Option<&str>) {
    let Some(t) = id.and_then(|id| hive.models.transfer(id)) else {
        let e = ApiError::new(
            ErrorCode::NotFound,
            "no such download; POST /v1/models/download returns the id",
        )
        .detail("id", id.unwrap_or(""));
        return respond_error(request, &e);
    };
    let mut seen = 0;
    rbee_http::sse::stream(request, |timeout| {
        let (g, p) = t.wait_newer(seen, timeout);
        if g == seen {
            return (vec![], false);
        }
        seen = g;
        let end = p.is_final();
        (vec![p], end)
    });
}

/// `DELETE /v1/models/{id}`: the row and (downloaded models) the file; refused while a
/// worker uses it.
pub(crate) fn delete(hive: &Hive, request: Request, id: &str) {
    let model = match hive.models.catalog().get(id) {
        Ok(Some(m)) => m,
        Ok(None) => {
            let e = ApiError::new(
                ErrorCode::ModelNotFound,
                format!("no model {id} in the catalogue; GET /v1/models lists them"),
            )
            .detail("id", id);
            return respond_error(request, &e);
        }
        Err(e) => {
            return respond_error(request, &ApiError::new(ErrorCode::Internal, e.to_string()))
        }
    };
    let users = hive.registry.users_of_model(&model.local_path);
    if !users.is_empty() {
        let e = ApiError::new(
            ErrorCode::ModelInUse,
            format!(
                "model {id} is in use by worker(s) {}; stop them first (POST /v1/workers/{{id}}/shutdown)",
                users.join(", ")
            ),
        )
        .detail("workers", users);
        return respond_error(request, &e);
    }
    match hive.models.remove(id) {
        Ok((m, file_deleted)) => respond_json(
            request,
            200,
            &Removed {
                file_deleted,
                removed: m.id,
            },
        ),
        Err(e) => respond_error(request, &e.into()),
    }
}
