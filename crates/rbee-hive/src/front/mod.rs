//! The hive as the node's one front door, in the API every client speaks: OpenAI's
//! `/v1/models`, `/v1/chat/completions` and `/v1/completions`, with the hive's key only.
//! A request names a model ([`names`]); the hive finds a worker for it or starts one (and
//! downloads the model first when needed), admits the request through the model's queue
//! ([`crate::queue`]) and proxies the worker's answer as it comes ([`proxy`]). Worker URLs and
//! keys never leave the hive.

pub(crate) mod names;
pub(crate) mod proxy;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rbee_http::Request;
use rbee_types::hive::{SpawnRequest, WorkerState};
use rbee_types::openai::{CompletionRequest, ModelObject, ModelObjectList};
use rbee_types::{ApiError, ErrorCode, ModelRef};

use crate::hive::Hive;
use crate::queue::{self, Refused};

/// Largest OpenAI request body (a long conversation), bytes.
pub(crate) const MAX_BODY: usize = 4 << 20;

/// How the front door behaves (from the hive's config).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// `[aliases]`: name → model id or reference.
    pub(crate) aliases: BTreeMap<String, String>,
    /// Requests that may wait per model.
    pub(crate) queue_max: usize,
    /// How long one may wait.
    pub(crate) queue_timeout: Duration,
    /// How long a model may take to download and load before its waiting requests fail.
    pub(crate) load_timeout: Duration,
    /// Largest request body.
    pub(crate) max_body: usize,
}

/// The front door: its settings and the hive's queues.
pub(crate) struct FrontDoor<'a> {
    pub(crate) settings: Settings,
    pub(crate) queues: &'a Arc<queue::Queues>,
}

impl FrontDoor<'_> {
    /// The front door of `hive`, as its config says.
    pub(crate) fn of(hive: &Hive) -> FrontDoor<'_> {
        let c = &hive.config;
        FrontDoor {
            settings: Settings {
                aliases: c.aliases.clone(),
                queue_max: c.queue_max,
                queue_timeout: Duration::from_secs(c.queue_timeout_secs),
                load_timeout: Duration::from_secs(c.load_timeout_secs),
                max_body: MAX_BODY,
            },
            queues: &hive.queues,
        }
    }
}

/// Which completion route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Text,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::Chat => "/v1/chat/completions",
            Kind::Text => "/v1/completions",
        }
    }
}

/// Every model a request can name now (catalogue and running workers).
fn entries(hive: &Hive) -> Result<Vec<names::Entry>, ApiError> {
    let models = hive
        .models
        .catalog()
        .list()
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    // A worker of a catalogued file is listed under the catalogue's name only.
    let views: Vec<_> = hive
        .registry
        .all()
        .into_iter()
        .filter(|w| !models.iter().any(|m| m.local_path == w.spec.model_path))
        .map(|w| w.view())
        .collect();
    Ok(names::entries(&models, &views))
}

fn model_objects(hive: &Hive, front: &FrontDoor) -> Result<Vec<ModelObject>, ApiError> {
    let entries = entries(hive)?;
    let mut out: Vec<ModelObject> = entries.iter().map(|e| object(&e.id, e)).collect();
    // Every alias: one whose model is not on the node yet is downloaded when a request
    // names it (`created` 0 until then).
    for (alias, target) in &front.settings.aliases {
        let Some(model_ref) = names::resolve(target, &entries, &BTreeMap::new()) else {
            continue;
        };
        let model_ref = canonical(hive, model_ref);
        // An alias named like a listed id shadows it, as it does when a request names it.
        out.retain(|m| m.id != *alias);
        out.push(match entries.iter().find(|e| e.model_ref == model_ref) {
            Some(e) => object(alias, e),
            None => ModelObject {
                id: alias.clone(),
                object: "model".into(),
                created: 0,
                owned_by: match &model_ref {
                    ModelRef::Hf { repo, .. } => {
                        repo.split('/').next().unwrap_or("local").to_owned()
                    }
                    ModelRef::File { .. } => "local".into(),
                },
                reference: Some(model_ref),
            },
        });
    }
    Ok(out)
}

/// The model object of `e` listed as `id`.
fn object(id: &str, e: &names::Entry) -> ModelObject {
    ModelObject {
        id: id.to_owned(),
        object: "model".into(),
        created: e.created,
        owned_by: e.owned_by.clone(),
        reference: Some(e.model_ref.clone()),
    }
}

/// The catalogue's own reference for the file `r` names when that file is here
/// (`hf:org/repo` → `hf:org/repo/file.gguf@main`), else `r`.
fn canonical(hive: &Hive, r: ModelRef) -> ModelRef {
    let Some(path) = hive.models.local_path(&r) else {
        return r;
    };
    let models = hive.models.catalog().list().unwrap_or_default();
    models
        .into_iter()
        .find(|m| m.local_path == path)
        .and_then(|m| m.reference.parse().ok())
        .unwrap_or(r)
}

/// `GET /v1/models` as OpenAI lists models.
pub(crate) fn list(hive: &Hive, front: &FrontDoor) -> Result<ModelObjectList, ApiError> {
    Ok(ModelObjectList {
        object: "list".into(),
        data: model_objects(hive, front)?,
    })
}

/// `GET /v1/models/{id}`: a listed model (aliases included), or one named by its
/// catalogue id (`rbee-keeper models list`).
pub(crate) fn retrieve(hive: &Hive, front: &FrontDoor, id: &str) -> Result<ModelObject, ApiError> {
    if let Some(m) = model_objects(hive, front)?.into_iter().find(|m| m.id == id) {
        return Ok(m);
    }
    entries(hive)?
        .iter()
        .find(|e| e.catalogue_id.as_deref() == Some(id))
        .map(|e| object(id, e))
        .ok_or_else(|| not_found(id))
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::ModelNotFound,
        format!(
            "no model {name:?} on this hive; GET /v1/models lists the models, aliases and ids \
             it serves (a reference such as hf:org/repo:Q4_K_M is downloaded on demand)"
        ),
    )
    .detail("field", "model")
}

/// `POST /v1/chat/completions` or `/v1/completions`: the model's worker answers, through
/// the queue; errors in OpenAI's envelope.
pub(crate) fn completion(hive: &Hive, front: &FrontDoor, mut request: Request, kind: Kind) {
    let arrived = Instant::now();
    let parsed = rbee_http::read_body(&mut request, front.settings.max_body).and_then(|body| {
        let req: CompletionRequest = rbee_http::parse_named(&body)?;
        Ok((body, req))
    });
    let (body, req) = match parsed {
        Ok(p) => p,
        Err(e) => return rbee_http::respond_openai_error(request, &e),
    };
    let Some(name) = req.model.as_deref().filter(|m| !m.trim().is_empty()) else {
        let e = ApiError::new(
            ErrorCode::InvalidRequest,
            "`model` is required: GET /v1/models lists the models this hive serves",
        )
        .detail("field", "model");
        return rbee_http::respond_openai_error(request, &e);
    };
    let model_ref = match resolve(hive, front, name) {
        Ok(r) => r,
        Err(e) => return rbee_http::respond_openai_error(request, &e),
    };
    let stream = req.stream.unwrap_or(false);
    let model = model_ref.to_string();
    crate::metrics::label_model(&model);
    let client_gone = request.disconnect_probe();
    let admitted = ready_worker(hive, front, &model_ref, &client_gone)
        .and_then(|()| admit(hive, front, &model_ref, client_gone));
    let permit = match admitted {
        Ok(p) => p,
        Err(e) => return rbee_http::respond_openai_error(request, &e),
    };
    // The slot may have gone to a worker that left meanwhile: pick one that is ready now.
    let Some(worker) = pick_worker(hive, &model_ref) else {
        drop(permit);
        let e = ApiError::new(
            ErrorCode::ModelLoading,
            format!("the worker of {model_ref} went away; retry"),
        );
        return rbee_http::respond_openai_error(request, &e);
    };
    // The hive's view follows the request (not only the next health poll).
    hive.registry.update(&worker.spec.id, |w| busy_by(w, 1));
    let tally = crate::metrics::Tally::new(&hive.metrics, &model, arrived);
    proxy::forward(
        request,
        &worker,
        kind.path(),
        body.as_bytes(),
        stream,
        tally,
    );
    hive.registry.update(&worker.spec.id, |w| busy_by(w, -1));
    drop(permit);
}

/// One more (`1`) or one fewer (`-1`) busy slot on a serving worker, and activity now.
fn busy_by(w: &mut crate::registry::Worker, delta: i32) {
    w.last_activity_unix = rbee_types::now_unix();
    if !matches!(w.state, WorkerState::Idle | WorkerState::Busy) {
        return;
    }
    w.slots_busy = w.slots_busy.saturating_add_signed(delta).min(w.spec.slots);
    w.state = if w.slots_busy > 0 {
        WorkerState::Busy
    } else {
        WorkerState::Idle
    };
}

/// What `name` stands for: an alias, an id, or a reference; else 404 `model_not_found`.
fn resolve(hive: &Hive, front: &FrontDoor, name: &str) -> Result<ModelRef, ApiError> {
    names::resolve(name, &entries(hive)?, &front.settings.aliases).ok_or_else(|| not_found(name))
}

/// Workers of `model_ref`: started with that reference, or serving the file it names (a
/// worker started for `hf:org/repo` serves a request naming the model by its short id).
fn workers_of(hive: &Hive, model_ref: &ModelRef) -> Vec<crate::registry::Worker> {
    let path = hive.models.local_path(model_ref);
    hive.registry
        .all()
        .into_iter()
        .filter(|w| &w.spec.model_ref == model_ref || path.as_ref() == Some(&w.spec.model_path))
        .collect()
}

/// Workers of `model_ref` that take requests now.
fn ready_workers(hive: &Hive, model_ref: &ModelRef) -> Vec<crate::registry::Worker> {
    let mut w = workers_of(hive, model_ref);
    w.retain(|w| w.state.ready());
    w
}

/// The ready worker of `model_ref` with the fewest busy slots.
fn pick_worker(hive: &Hive, model_ref: &ModelRef) -> Option<crate::registry::Worker> {
    ready_workers(hive, model_ref)
        .into_iter()
        .min_by_key(|w| w.slots_busy)
}

/// Makes sure a worker of `model_ref` is ready: starts one (downloading the model first
/// when needed) and waits for it, at most the load timeout. A worker that fails to load
/// fails every request waiting for it, with its reason.
fn ready_worker(
    hive: &Hive,
    front: &FrontDoor,
    model_ref: &ModelRef,
    client_gone: &dyn Fn() -> bool,
) -> Result<(), ApiError> {
    if !ready_workers(hive, model_ref).is_empty() {
        return Ok(());
    }
    let asked = rbee_types::now_unix();
    let (_, spawned) = hive.spawn(&SpawnRequest::placed_by_hive(model_ref.clone()))?;
    if let Some(f) = spawned.previous_failure {
        tracing::info!(model = %model_ref, exit = %f.exit, "the previous worker of this model failed; starting another");
    }
    let deadline = Instant::now() + front.settings.load_timeout;
    let mut last_check = Instant::now();
    loop {
        if !ready_workers(hive, model_ref).is_empty() {
            front.queues.capacity_changed();
            return Ok(());
        }
        if let Some(f) = hive
            .registry
            .failure(model_ref)
            .filter(|f| f.at_unix >= asked)
        {
            let mut msg = format!("the worker for {model_ref} did not start: {}", f.exit);
            if let Some(l) = f.last_log_lines.last() {
                msg.push_str(&format!(" (last log line: {l})"));
            }
            return Err(ApiError::new(ErrorCode::ModelLoadFailed, msg)
                .detail("last_log_lines", f.last_log_lines));
        }
        let loading = workers_of(hive, model_ref)
            .iter()
            .any(|w| w.state == WorkerState::Loading);
        if !loading && spawned.worker.is_some() && hive.registry.failure(model_ref).is_none() {
            // Started, then gone without a recorded failure (stopped by someone): try again.
            hive.spawn(&SpawnRequest::placed_by_hive(model_ref.clone()))?;
        }
        if Instant::now() >= deadline {
            return Err(ApiError::new(
                ErrorCode::ModelLoading,
                format!(
                    "{model_ref} is not ready after {:?} (load_timeout_secs); retry later",
                    front.settings.load_timeout
                ),
            ));
        }
        if last_check.elapsed() >= Duration::from_secs(1) {
            last_check = Instant::now();
            if client_gone() {
                return Err(ApiError::new(ErrorCode::Internal, "the client left"));
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Waits in the model's queue for a free slot of its workers.
fn admit(
    hive: &Hive,
    front: &FrontDoor,
    model_ref: &ModelRef,
    client_gone: impl Fn() -> bool,
) -> Result<queue::Permit, ApiError> {
    let capacity = || {
        ready_workers(hive, model_ref)
            .iter()
            .map(|w| w.spec.slots)
            .sum()
    };
    let s = &front.settings;
    front
        .queues
        .enter(
            &model_ref.to_string(),
            capacity,
            s.queue_max,
            s.queue_timeout,
            || !client_gone(),
        )
        .map_err(|r| {
            let e = ApiError::new(
                if r == Refused::Abandoned {
                    ErrorCode::Internal
                } else {
                    ErrorCode::QueueFull
                },
                format!("{model_ref}: {r}; retry later, or start the worker with more slots"),
            );
            match r {
                Refused::Full { waiting } => e.detail("queued", waiting),
                _ => e,
            }
        })
}
