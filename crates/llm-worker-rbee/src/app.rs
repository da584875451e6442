//! What every request handler shares (the app: state, engine, the drain channel) and the
//! path a request takes to the engine: the worker serves, the prompt fits, a slot is free.
//! rbee's own `/v1/inference` (the `http` module) and OpenAI's routes (the `openai` module)
//! both go through it, so they run on the same engine with the same checks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use llama_cpp_2::token::LlamaToken;
use rbee_types::worker::DoneEvent;
use rbee_types::{ApiError, ErrorCode};

use crate::engine::{Engine, Event, Job, RequestGuard};
use crate::prepared::Prepared;
use crate::state::{Phase, Shared};
use crate::validate::Valid;

/// How often a request waiting for a whole (non-streamed) answer checks its client.
const CLIENT_CHECK: Duration = Duration::from_millis(250);

/// Why the main thread should start draining.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ShutdownCause {
    /// SIGTERM or SIGINT.
    Signal,
    /// `POST /v1/admin/shutdown`.
    AdminRequest,
    /// The model failed to load.
    LoadFailed,
    /// The engine failed after the model had loaded.
    EngineFailed,
}

/// What every handler needs.
pub(crate) struct App {
    /// Shared state.
    pub shared: Arc<Shared>,
    /// The engine.
    pub engine: Arc<Engine>,
    /// Tells the main thread to drain.
    pub shutdown: mpsc::Sender<ShutdownCause>,
    /// Whether the backend is a GPU (for the loading stage name).
    pub gpu: bool,
    /// Which `Host` names and origins are answered (DNS rebinding, cross-site requests).
    pub guard: rbee_http::guard::Guard,
    /// Whether `/metrics` is served without the key to loopback clients.
    pub open_metrics: bool,
}

/// A request that passed every check and holds a slot; the engine sends its events.
pub(crate) struct Started {
    /// `req-…`.
    pub(crate) request_id: String,
    /// Tokens, then `Done` or `Error`.
    pub(crate) events: mpsc::Receiver<Event>,
    /// Set to stop generation (the client left).
    pub(crate) cancel: Arc<AtomicBool>,
}

impl Started {
    /// Stops generation because the client went away (`why`: where that was noticed).
    pub(crate) fn client_gone(&self, why: &str) {
        self.cancel.store(true, Ordering::Release);
        tracing::info!(request_id = %self.request_id, why, "client disconnected; generation cancelled");
    }
}

/// The loaded model, when the worker takes requests now.
pub(crate) fn serving(app: &App) -> Result<&Prepared, ApiError> {
    match app.shared.phase() {
        Phase::Ready => {}
        Phase::Loading => {
            return Err(ApiError::new(ErrorCode::ModelLoading, "the model is still loading; follow /v1/loading/progress and retry when it is ready"));
        }
        Phase::Draining | Phase::Failed => {
            return Err(ApiError::new(
                ErrorCode::Draining,
                "the worker is shutting down and takes no new requests",
            ));
        }
    }
    app.engine
        .prepared()
        .ok_or_else(|| ApiError::new(ErrorCode::ModelLoading, "the model is not loaded"))
}

/// The prompt's tokens (chat messages rendered with the model's template first); refused
/// when empty or when it leaves no room in a slot's context.
pub(crate) fn tokens_for(prepared: &Prepared, v: &Valid) -> Result<Vec<LlamaToken>, ApiError> {
    let text = match &v.messages {
        Some(m) => prepared.render_chat(m)?,
        None => v.prompt.clone().unwrap_or_default(),
    };
    let tokens = prepared.tokenize(&text);
    if tokens.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "the prompt is empty",
        ));
    }
    if tokens.len() >= prepared.ctx_size as usize {
        return Err(ApiError::new(
            ErrorCode::PromptTooLong,
            format!(
                "the prompt has {} tokens but a slot's context holds {}: shorten it (a worker started with a larger context takes more: --ctx-size, or ctx_size when the hive spawns it)",
                tokens.len(),
                prepared.ctx_size
            ),
        )
        .detail("prompt_tokens", tokens.len())
        .detail("ctx_size", prepared.ctx_size));
    }
    Ok(tokens)
}

/// Takes a slot (or answers `ALL_SLOTS_BUSY` at once) and hands the job to the engine.
/// The request keeps the id the client sent in `X-Request-Id` when it is valid and not in
/// use (the hive names the requests it forwards, so that it can cancel one whose client
/// left), else gets a fresh one.
pub(crate) fn start(
    app: &App,
    v: Valid,
    tokens: Vec<LlamaToken>,
    received: Instant,
    wanted_id: Option<&str>,
) -> Result<Started, ApiError> {
    if app.shared.slots.try_acquire().is_none() {
        let total = app.shared.slots.total();
        return Err(ApiError::new(
            ErrorCode::AllSlotsBusy,
            format!(
                "all {total} slots are busy; retry shortly or start a worker with more --slots"
            ),
        )
        .field("slots_total", total)
        .field("slots_busy", total));
    }
    let cancel = Arc::new(AtomicBool::new(false));
    let (guard, request_id) =
        RequestGuard::new(Arc::clone(&app.shared), wanted_id, Arc::clone(&cancel));
    let (tx, rx) = mpsc::channel();
    let job = Job {
        tokens,
        sampling: v.sampling,
        max_tokens: v.max_tokens,
        stop: v.stop,
        cache_prompt: v.cache_prompt,
        messages: v.messages,
        cancel: Arc::clone(&cancel),
        events: tx,
        received,
        guard,
    };
    app.engine.submit(job)?;
    tracing::debug!(%request_id, stream = v.stream, "inference started");
    Ok(Started {
        request_id,
        events: rx,
        cancel,
    })
}

impl Started {
    /// Waits for the whole answer: its text and how it ended. Checks `client_gone` while
    /// it waits: a client that hung up (or timed out) before the answer was ready cancels
    /// the generation, as a streamed one does, instead of holding its slot to the end.
    pub(crate) fn collect(
        &self,
        client_gone: &dyn Fn() -> bool,
    ) -> Result<(String, DoneEvent), ApiError> {
        let mut text = String::new();
        let mut next_check = Instant::now() + CLIENT_CHECK;
        loop {
            match self.events.recv_timeout(CLIENT_CHECK) {
                Ok(Event::Token(t)) => text.push_str(&t),
                Ok(Event::Done(d)) => return Ok((text, d)),
                Ok(Event::Error(e)) => return Err(e),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(ApiError::new(ErrorCode::Internal, "the engine stopped"))
                }
            }
            // Tokens come faster than the check's period: it goes by the clock.
            if Instant::now() >= next_check {
                if client_gone() {
                    self.client_gone("waiting for the answer");
                    // Nobody reads this answer; the slot frees as the engine ends the job.
                    return Err(ApiError::new(
                        ErrorCode::InferenceFailed,
                        "generation cancelled: the client left",
                    ));
                }
                next_check = Instant::now() + CLIENT_CHECK;
            }
        }
    }
}
