//! The inference engine: one thread owns the llama.cpp context and decodes every active
//! request ("slot", one llama sequence each) together in one batch per step. A request that
//! arrives mid-way joins the next step (continuous batching); its prompt is prefilled in the
//! same batch as the other slots' next tokens.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::{LlamaModelParams, LlamaSplitMode};
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use rbee_types::worker::{ChatMessage, DoneEvent, FinishReason, ModelMetadata, SlotsView};
use rbee_types::{ApiError, ErrorCode};

use crate::cli::Backend;
use crate::next_turn::NextTurn;
use crate::output::{Emit, OutputText};
use crate::prepared::Prepared;
use crate::prompt_cache::PromptCache;
use crate::sampling::{Picker, Sampling};
use crate::state::{lock, Phase, Shared};
use crate::step_plan::{self, Want};

/// Largest number of tokens decoded in one step (prompt chunks plus one token per slot).
const BATCH_TOKENS: u32 = 512;
/// How often an idle engine wakes up to notice a shutdown.
const IDLE_TICK: Duration = Duration::from_millis(200);
/// How long the engine stays idle before it prepares a finished chat's next turn: a
/// request that comes sooner (a program's next turn) decodes those tokens itself instead of
/// waiting for them.
const PREPARE_AFTER_IDLE: Duration = Duration::from_millis(50);

/// What the engine needs to load the model.
#[derive(Debug, Clone)]
pub(crate) struct EngineConfig {
    /// GGUF file.
    pub model_path: PathBuf,
    /// Where the layers run.
    pub backend: Backend,
    /// GPU index.
    pub device: u32,
    /// Number of slots (llama sequences).
    pub slots: u32,
    /// Context tokens per slot; `None` = the model's, capped at 4096.
    pub ctx_size: Option<u32>,
    /// CPU threads.
    pub threads: u32,
    /// Keep each slot's KV cache for the next request (see [`crate::prompt_cache`]).
    pub prompt_cache: bool,
}

/// Something a request receives from the engine.
#[derive(Debug)]
pub(crate) enum Event {
    /// Text of one generated token (may be empty while a stop string is pending).
    Token(String),
    /// Generation ended.
    Done(DoneEvent),
    /// Generation failed.
    Error(ApiError),
}

/// Releases the request's slot and cancel flag when the engine is done with it (or when a
/// job never reached the engine).
pub(crate) struct RequestGuard {
    shared: Arc<Shared>,
    request_id: String,
}

impl RequestGuard {
    /// Registers `cancel` under the id the client chose (`X-Request-Id`, when it is a
    /// valid id no active request has) or a fresh one; the caller must already hold a
    /// slot. Returns the guard and the id.
    pub(crate) fn new(
        shared: Arc<Shared>,
        wanted: Option<&str>,
        cancel: Arc<AtomicBool>,
    ) -> (Self, String) {
        let mut cancels = lock(&shared.cancels);
        let request_id = wanted
            .filter(|id| valid_request_id(id) && !cancels.contains_key(*id))
            .map_or_else(|| shared.new_request_id(), str::to_owned);
        cancels.insert(request_id.clone(), cancel);
        drop(cancels);
        let guard = Self {
            shared,
            request_id: request_id.clone(),
        };
        (guard, request_id)
    }
}

/// A request id a client may choose: 1 to 64 letters, digits, `.`, `_`, `:` or `-` (it
/// goes into logs, headers and a URL path), not starting with `req-`: the worker's own ids
/// (`req-<pid>-<n>`, predictable) must never meet a client's.
pub(crate) fn valid_request_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && !id.starts_with("req-")
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        lock(&self.shared.cancels).remove(&self.request_id);
        self.shared.slots.release();
    }
}

/// One request for the engine.
pub(crate) struct Job {
    /// Prompt tokens (non-empty, shorter than the slot's context).
    pub tokens: Vec<LlamaToken>,
    /// Sampling parameters.
    pub sampling: Sampling,
    /// Most tokens to generate.
    pub max_tokens: u32,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Reuse a cached prefix of the prompt.
    pub cache_prompt: bool,
    /// The conversation, for a chat request (to prepare the cache for its next turn).
    pub messages: Option<Vec<ChatMessage>>,
    /// Set to stop generation.
    pub cancel: Arc<AtomicBool>,
    /// Where events go; a closed channel cancels the request.
    pub events: Sender<Event>,
    /// When the HTTP request arrived (for TTFT and duration).
    pub received: Instant,
    /// Holds the slot until the engine has freed the sequence.
    pub guard: RequestGuard,
}

enum Command {
    Run(Box<Job>),
    Shutdown,
}

/// Handle to the engine thread.
pub(crate) struct Engine {
    prepared: OnceLock<Prepared>,
    commands: Sender<Command>,
    receiver: std::sync::Mutex<Option<Receiver<Command>>>,
}

impl Engine {
    /// An engine with no model yet; [`Engine::run`] loads it.
    pub(crate) fn new() -> Arc<Self> {
        let (tx, rx) = mpsc::channel();
        Arc::new(Self {
            prepared: OnceLock::new(),
            commands: tx,
            receiver: std::sync::Mutex::new(Some(rx)),
        })
    }

    /// The model, once loaded.
    pub(crate) fn prepared(&self) -> Option<&Prepared> {
        self.prepared.get()
    }

    /// Hands a job to the engine. On failure (engine gone) the job is dropped, which frees
    /// its slot.
    pub(crate) fn submit(&self, job: Job) -> Result<(), ApiError> {
        self.commands
            .send(Command::Run(Box::new(job)))
            .map_err(|_| ApiError::new(ErrorCode::Draining, "the worker is shutting down"))
    }

    /// Asks the engine loop to end once it is idle (active jobs are cancelled first by the
    /// caller).
    pub(crate) fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown);
    }

    /// Loads the model and runs the decode loop until [`Engine::shutdown`]. Call on its
    /// own thread. Returns an error (without paths) when loading fails.
    pub(crate) fn run(&self, cfg: &EngineConfig, shared: &Arc<Shared>) -> anyhow::Result<()> {
        let rx = lock(&self.receiver)
            .take()
            .ok_or_else(|| anyhow::anyhow!("engine already running"))?;
        crate::fault::inject(crate::fault::Point::Loading);
        let backend = LlamaBackend::init()?;
        let t0 = Instant::now();
        let model = Arc::new(load_model(&backend, cfg, shared)?);
        let ctx_size = rbee_types::worker::ctx_per_slot(cfg.ctx_size, model.n_ctx_train());
        let mut ctx = model
            .new_context(&backend, context_params(cfg, ctx_size))
            .map_err(|e| {
                anyhow::anyhow!(
                    "llama.cpp could not create a context of {ctx_size}×{} tokens: {e}",
                    cfg.slots
                )
            })?;
        warm_up(&model, &mut ctx);
        self.fill_metadata(&model, shared, ctx_size);
        let _ = self
            .prepared
            .set(Prepared::new(Arc::clone(&model), ctx_size));
        shared.update_load(|l| l.layers_loaded = l.layers_total);
        tracing::info!(
            elapsed_ms = t0.elapsed().as_millis() as u64,
            ctx_size,
            slots = cfg.slots,
            threads = cfg.threads,
            "model loaded"
        );
        shared.set_phase(Phase::Ready);
        self.serve(&rx, &mut ctx, &model, cfg, shared, ctx_size)?;
        drop(ctx);
        tracing::info!("model unloaded");
        Ok(())
    }

    /// The decode loop: takes requests, decodes one batch per step for every active slot,
    /// samples, and between requests prepares finished chats for their next turn.
    fn serve(
        &self,
        rx: &Receiver<Command>,
        ctx: &mut LlamaContext<'_>,
        model: &LlamaModel,
        cfg: &EngineConfig,
        shared: &Arc<Shared>,
        ctx_size: u32,
    ) -> anyhow::Result<()> {
        let mut batch = LlamaBatch::new(BATCH_TOKENS.max(cfg.slots) as usize, cfg.slots as i32);
        let mut seqs = PromptCache::new(cfg.slots, cfg.prompt_cache);
        let mut next_turns: Vec<NextTurn> = Vec::new();
        publish(&seqs, shared);
        let mut active: Vec<Slot> = Vec::new();
        let vocab = model.vocab();
        let mut shutdown = false;
        loop {
            if shutdown && active.is_empty() {
                break;
            }
            // Take new work: block only when there is nothing to decode.
            let running = active.len();
            // Idle with a conversation to prepare: do that once nothing has come for a
            // moment (a script or an agent sends its next turn at once, and would otherwise
            // wait behind the preparation's decode; a person takes longer), one at a time, so
            // a request waits at most one short decode.
            if active.is_empty() {
                let wait = if next_turns.is_empty() {
                    IDLE_TICK
                } else {
                    PREPARE_AFTER_IDLE
                };
                match rx.recv_timeout(wait) {
                    Ok(cmd) => shutdown |= self.admit(cmd, &mut active, &mut seqs, ctx),
                    Err(RecvTimeoutError::Timeout) => {
                        if let Some(next) = next_turns.pop() {
                            next.apply(ctx, &mut batch, &mut seqs, ctx_size);
                            publish(&seqs, shared);
                        }
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            while let Ok(cmd) = rx.try_recv() {
                shutdown |= self.admit(cmd, &mut active, &mut seqs, ctx);
            }
            if active.len() != running {
                publish(&seqs, shared);
            }
            drop_cancelled(&mut active, ctx, &mut seqs);
            if active.is_empty() {
                continue;
            }
            fill_batch(
                &mut batch,
                &mut active,
                &mut seqs,
                BATCH_TOKENS.max(cfg.slots) as usize,
            )?;
            let step_started = Instant::now();
            let decoded = ctx.decode(&mut batch);
            tracing::trace!(
                tokens = batch.n_tokens(),
                slots = active.len(),
                us = step_started.elapsed().as_micros() as u64,
                "decode step"
            );
            if let Err(e) = decoded {
                tracing::error!(error = %e, slots = active.len(), "llama_decode failed; failing active requests");
                for s in active.drain(..) {
                    let _ = s.job.events.send(Event::Error(ApiError::new(
                        ErrorCode::InferenceFailed,
                        format!("llama.cpp failed to decode: {e}"),
                    )));
                    // What the failed step left in the cells is unknown: not kept.
                    let _ = finish(s, FinishReason::Cancelled, false, ctx, &mut seqs);
                }
                continue;
            }
            // Sample for every slot that produced logits; advance or finish it.
            let mut i = 0;
            while i < active.len() {
                let s = &mut active[i];
                let Some(idx) = s.logits_at else {
                    i += 1;
                    continue;
                };
                if s.next_token.is_some() {
                    s.pos += 1;
                }
                let token = s.picker.pick(ctx, idx);
                let Some(reason) = s.step(token, &vocab, ctx_size, shared) else {
                    i += 1;
                    continue;
                };
                // (`remove`, not `swap_remove`: prompts are read in arrival order.)
                let slot = active.remove(i);
                if let Some(a) = finish(slot, reason, true, ctx, &mut seqs) {
                    let prepared = self.prepared().expect("loaded");
                    next_turns.extend(NextTurn::plan(
                        prepared,
                        &seqs,
                        a.seq,
                        &a.messages,
                        &a.answer,
                    ));
                }
            }
        }
        for s in active.drain(..) {
            let _ = finish(s, FinishReason::Cancelled, false, ctx, &mut seqs);
        }
        Ok(())
    }

    /// Starts a job on a free sequence, reusing what the prompt cache holds of its prompt.
    /// Returns true for a shutdown command.
    fn admit(
        &self,
        cmd: Command,
        active: &mut Vec<Slot>,
        seqs: &mut PromptCache,
        ctx: &mut LlamaContext<'_>,
    ) -> bool {
        let job = match cmd {
            Command::Shutdown => return true,
            Command::Run(job) => job,
        };
        crate::fault::inject(crate::fault::Point::Serving);
        let Some(plan) = seqs.start(&job.tokens, job.cache_prompt) else {
            // Cannot happen while slot accounting holds; answer rather than panic.
            let _ = job.events.send(Event::Error(ApiError::new(
                ErrorCode::AllSlotsBusy,
                "no free sequence in the llama context",
            )));
            return false;
        };
        let seq = plan.seq;
        let mut reuse = plan.reuse;
        if let Some((donor, _)) = plan.copy_from {
            // Each sequence has a KV stream of its own, and llama.cpp copies between
            // streams only whole (a partial range aborts the process): the donor's stream
            // is copied and the cut below drops what follows the shared prefix.
            let _ = ctx.clear_kv_cache_seq(Some(seq as u32), None, None);
            if ctx.copy_kv_cache_seq(donor, seq, None, None).is_err() {
                seqs.truncate(seq, 0);
                reuse = 0;
            }
        }
        // Drop the cells after the reused prefix. Memory that cannot drop part of a
        // sequence (recurrent models) starts from scratch instead.
        let cut = ctx.clear_kv_cache_seq(Some(seq as u32), Some(reuse as u32), None);
        if !matches!(cut, Ok(true)) {
            let _ = ctx.clear_kv_cache_seq(Some(seq as u32), None, None);
            seqs.truncate(seq, 0);
            reuse = 0;
        }
        if reuse > 0 {
            tracing::debug!(seq, reuse, prompt = job.tokens.len(), copied_from = ?plan.copy_from.map(|c| c.0), "prompt cache hit");
        }
        let picker = Picker::new(
            &job.sampling,
            self.prepared()
                .expect("loaded before serving")
                .model
                .n_vocab(),
        );
        let output = OutputText::new(job.stop.clone());
        active.push(Slot {
            seq,
            pos: reuse as i32,
            prefilled: reuse,
            cached: reuse as u32,
            answer: String::new(),
            next_token: None,
            logits_at: None,
            generated: 0,
            first_token_at: None,
            picker,
            output,
            job,
        });
        false
    }

    fn fill_metadata(&self, model: &LlamaModel, shared: &Shared, ctx_size: u32) {
        let vocab = model.vocab();
        let eog: Vec<i64> = vocab
            .tokens()
            .filter(|t| vocab.is_eog(*t))
            .map(|t| i64::from(t.0))
            .collect();
        let mut info = lock(&shared.info);
        info.ctx_size = ctx_size;
        if let Some(m) = info.model.as_mut() {
            m.parameter_count = Some(model.n_params());
            m.vocab_size = Some(model.n_vocab() as u64);
            m.context_length = Some(u64::from(model.n_ctx_train()));
            m.eog_token_ids = eog;
        }
    }
}

/// One active request in the batch.
struct Slot {
    seq: i32,
    /// Position of the next token to decode in this sequence.
    pos: i32,
    prefilled: usize,
    /// Prompt tokens that were in the cache.
    cached: u32,
    /// The text sent so far (chat requests only: it is what the next turn will repeat).
    answer: String,
    /// The sampled token that goes into the next batch (None while prefilling).
    next_token: Option<LlamaToken>,
    /// Where in the current batch this slot's logits are.
    logits_at: Option<i32>,
    generated: u32,
    first_token_at: Option<Instant>,
    picker: Picker,
    output: OutputText,
    job: Box<Job>,
}

impl Slot {
    /// Handles one sampled token; returns why the request ended, if it did.
    fn step(
        &mut self,
        token: LlamaToken,
        vocab: &llama_cpp_2::vocab::LlamaVocab<'_>,
        ctx_size: u32,
        shared: &Shared,
    ) -> Option<FinishReason> {
        if vocab.is_eog(token) {
            return Some(FinishReason::Stop);
        }
        self.generated += 1;
        shared.tokens_generated.fetch_add(1, Ordering::Relaxed);
        self.first_token_at.get_or_insert_with(Instant::now);
        let bytes = vocab.token_to_piece(token, false, None);
        let (text, stop) = match self.output.push(&bytes) {
            Emit::Text(t) => (t, false),
            Emit::Stop(t) => (t, true),
        };
        if !text.is_empty() {
            if self.job.messages.is_some() {
                self.answer.push_str(&text);
            }
            if self.job.events.send(Event::Token(text)).is_err() {
                return Some(FinishReason::Cancelled); // the client is gone
            }
        }
        if stop {
            return Some(FinishReason::Stop);
        }
        if self.generated >= self.job.max_tokens {
            return Some(FinishReason::Length);
        }
        if self.pos as u32 >= ctx_size {
            return Some(FinishReason::ContextFull);
        }
        self.next_token = Some(token);
        None
    }
}

/// A chat answer that ended (not cancelled), kept in the cache: its conversation can be
/// prepared for the next turn ([`crate::next_turn`]).
struct Answered {
    seq: i32,
    messages: Vec<ChatMessage>,
    answer: String,
}

/// Gives the slot's sequence back (its cells kept for the prompt cache when `keep`),
/// releases the slot, then tells the client.
fn finish(
    mut slot: Slot,
    reason: FinishReason,
    keep: bool,
    ctx: &mut LlamaContext<'_>,
    seqs: &mut PromptCache,
) -> Option<Answered> {
    let cleared = seqs.finish(slot.seq, keep);
    if cleared {
        let _ = ctx.clear_kv_cache_seq(Some(slot.seq as u32), None, None);
    }
    let tail = slot.output.finish();
    let job = *slot.job;
    let Job {
        events,
        received,
        guard,
        tokens,
        messages,
        ..
    } = job;
    let answered = match messages {
        Some(messages) if reason != FinishReason::Cancelled && !cleared => Some(Answered {
            seq: slot.seq,
            messages,
            answer: slot.answer + &tail,
        }),
        _ => None,
    };
    // Free the slot before the client hears "done", so its next request finds it free
    // (and `/v1/slots` shows what it left in the cache).
    let shared = Arc::clone(&guard.shared);
    publish(seqs, &shared);
    drop(guard);
    if reason != FinishReason::Cancelled && !tail.is_empty() {
        let _ = events.send(Event::Token(tail));
    }
    let done = DoneEvent {
        done: true,
        total_tokens: slot.generated,
        duration_ms: received.elapsed().as_millis() as u64,
        prompt_tokens: tokens.len() as u32,
        cached_prompt_tokens: slot.cached,
        time_to_first_token_ms: slot
            .first_token_at
            .map(|t| t.duration_since(received).as_millis() as u64),
        finish_reason: reason,
    };
    shared.metrics.finished(&done);
    let _ = events.send(Event::Done(done));
    answered
}

/// Reads the model file into llama.cpp (all layers on the GPU for a GPU backend),
/// reporting layers loaded to `/v1/loading/progress`.
fn load_model(
    backend: &LlamaBackend,
    cfg: &EngineConfig,
    shared: &Arc<Shared>,
) -> anyhow::Result<LlamaModel> {
    let gpu = cfg.backend != Backend::Cpu;
    let layers_total = lock(&shared.info)
        .model
        .as_ref()
        .and_then(|m| m.layers)
        .unwrap_or(0);
    let progress_shared = Arc::clone(shared);
    let mut params = LlamaModelParams::default()
        .with_n_gpu_layers(if gpu { u32::MAX >> 1 } else { 0 })
        .with_progress_callback(move |p| {
            let loaded = (f64::from(p) * layers_total as f64).round() as u64;
            progress_shared.update_load(|l| {
                l.layers_total = layers_total;
                l.layers_loaded = loaded.min(layers_total);
            });
            true
        });
    if gpu {
        params = params
            .with_main_gpu(cfg.device as i32)
            .with_split_mode(LlamaSplitMode::None);
    }
    LlamaModel::load_from_file(backend, &cfg.model_path, &params)
        .map_err(|e| anyhow::anyhow!("llama.cpp could not load the model: {e}"))
}

/// The context: `slots` sequences with a KV stream of `ctx_size` tokens each.
fn context_params(cfg: &EngineConfig, ctx_size: u32) -> LlamaContextParams {
    LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(ctx_size * cfg.slots))
        .with_n_batch(BATCH_TOKENS.max(cfg.slots))
        .with_n_ubatch(BATCH_TOKENS.max(cfg.slots))
        .with_n_seq_max(cfg.slots)
        // One KV stream per sequence (llama-server's layout with -np): each token attends
        // only to its own sequence's cells. With one buffer shared by all sequences,
        // attention and its mask span every slot's cells: measured with the bare loop,
        // batched decode is 10–18% slower at 8–16 sequences (docs/benchmarks.md,
        // "Throughput under load").
        .with_kv_unified(false)
        .with_n_threads(cfg.threads as i32)
        .with_n_threads_batch(cfg.threads as i32)
}

/// Ends the requests whose clients cancelled, before compute is spent on them.
fn drop_cancelled(active: &mut Vec<Slot>, ctx: &mut LlamaContext<'_>, seqs: &mut PromptCache) {
    let mut i = 0;
    while i < active.len() {
        if active[i].job.cancel.load(Ordering::Acquire) {
            let slot = active.remove(i);
            let _ = finish(slot, FinishReason::Cancelled, true, ctx, seqs);
        } else {
            i += 1;
        }
    }
}

/// One batch of at most `budget` tokens, as [`step_plan::plan`] lays it out.
fn fill_batch(
    batch: &mut LlamaBatch,
    active: &mut [Slot],
    seqs: &mut PromptCache,
    budget: usize,
) -> Result<(), llama_cpp_2::llama_batch::BatchAddError> {
    let wants: Vec<Want> = active
        .iter()
        .map(|s| Want {
            seq: s.seq,
            decoding: s.next_token.is_some(),
            prompt_left: s.job.tokens.len() - s.prefilled,
        })
        .collect();
    let plan = step_plan::plan(&wants, budget);
    batch.clear();
    for i in plan.order {
        let s = &mut active[i];
        s.logits_at = None;
        if let Some(t) = s.next_token {
            s.logits_at = Some(batch.n_tokens());
            batch.add(t, s.pos, &[s.seq], true)?;
            seqs.push(s.seq, t);
            continue;
        }
        let take = plan.take[i];
        for k in 0..take {
            let last = s.prefilled + k + 1 == s.job.tokens.len();
            if last {
                s.logits_at = Some(batch.n_tokens());
            }
            let t = s.job.tokens[s.prefilled + k];
            batch.add(t, s.pos, &[s.seq], last)?;
            seqs.push(s.seq, t);
            s.pos += 1;
        }
        s.prefilled += take;
    }
    Ok(())
}

/// Decodes one token and forgets it, so the first request does not pay for the first
/// touch of the weights and buffers (llama-server does the same before it is ready).
fn warm_up(model: &LlamaModel, ctx: &mut LlamaContext<'_>) {
    let mut batch = LlamaBatch::new(1, 1);
    let token = model.vocab().bos();
    if batch.add(token, 0, &[0], true).is_ok() && ctx.decode(&mut batch).is_err() {
        tracing::warn!("the warm-up decode failed; the first request will be slower");
    }
    let _ = ctx.clear_kv_cache_seq(None, None, None);
}

/// Shows the sequences' cache state to `/v1/slots` and STATUS.
fn publish(seqs: &PromptCache, shared: &Shared) {
    *lock(&shared.cache) = SlotsView {
        prompt_cache: seqs.enabled(),
        slots: seqs.view(),
    };
}

/// Model metadata from the GGUF header, before llama.cpp has loaded anything.
pub(crate) fn metadata_from_header(h: &rbee_gguf::GgufHeader) -> ModelMetadata {
    ModelMetadata {
        architecture: h.architecture().unwrap_or("unknown").to_owned(),
        name: h.name().map(str::to_owned),
        parameter_count: Some(h.parameters),
        quantization: h.quantization(),
        context_length: h.context_length(),
        layers: h.layers(),
        vocab_size: h.vocab_size(),
        eos_token_id: h.eos_token_id(),
        eog_token_ids: Vec::new(),
        file_size: h.file_size,
    }
}
