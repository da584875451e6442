//! The floor the worker stands on: a bare llama-cpp-2 greedy decode loop with no HTTP, no
//! batching and no threads, written independently of the worker's engine. The haiku test
//! requires the worker's greedy tokens to equal this loop's; the benchmark measures the
//! worker's overhead against it.

use std::io::{BufRead, Write};
use std::num::NonZeroU32;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use rbee_llama::greedy;
use serde::Serialize;

/// How the KV cache holds several sequences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KvLayout {
    /// One KV stream per sequence, as the worker and llama-server -np lay it out.
    PerSequence,
    /// One buffer shared by all sequences (llama.cpp's kv_unified).
    Unified,
}

/// A context of `n_seqs` sequences of `ctx_size` tokens each.
fn context_params(ctx_size: u32, n_seqs: u32, threads: i32, kv: KvLayout) -> LlamaContextParams {
    LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(ctx_size * n_seqs))
        .with_n_batch(512)
        .with_n_ubatch(512)
        .with_n_seq_max(n_seqs)
        .with_kv_unified(kv == KvLayout::Unified)
        .with_n_threads(threads)
        .with_n_threads_batch(threads)
}

/// The result of one greedy run.
#[derive(Debug, Clone, Serialize)]
pub struct GreedyRun {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// The bytes of each generated token, as text (lossy for split characters).
    pub pieces: Vec<String>,
    /// The generated text.
    pub text: String,
    /// Milliseconds to decode the prompt and sample the first token.
    pub prefill_ms: f64,
    /// Generated tokens per second after the first.
    pub decode_tok_s: f64,
}

/// Renders one user message with the model's chat template, as the worker does for
/// `messages`.
pub fn chat_prompt(model: &LlamaModel, user: &str) -> anyhow::Result<String> {
    let tmpl = model
        .chat_template(None)
        .context("model has no chat template")?;
    if let Some(jinja) = rbee_llama::chat_template::JinjaTemplate::of_model(model, &tmpl) {
        let msg = rbee_types::worker::ChatMessage {
            role: "user".into(),
            content: user.into(),
        };
        return Ok(jinja.render(&[msg], true)?);
    }
    let msg = LlamaChatMessage::new("user".into(), user.into())?;
    Ok(model.apply_chat_template(&tmpl, &[msg], true)?)
}

/// Loads `model_path` and decodes greedily from `user_message` (chat-templated) or a raw
/// `prompt`, up to `max_tokens` or an end-of-generation token. With `warmup`, the prompt is
/// decoded once untimed first (for benchmarks; the tokens are the same either way).
pub fn greedy(
    model_path: &Path,
    prompt: Prompt<'_>,
    max_tokens: usize,
    threads: i32,
    ctx_size: u32,
    warmup: bool,
) -> anyhow::Result<GreedyRun> {
    let backend = LlamaBackend::init()?;
    let model = LlamaModel::load_from_file(&backend, model_path, &LlamaModelParams::default())?;
    let text = match prompt {
        Prompt::Chat(user) => chat_prompt(&model, user)?,
        Prompt::Raw(p) => p.to_owned(),
    };
    let mut ctx = model.new_context(
        &backend,
        context_params(ctx_size, 1, threads, KvLayout::PerSequence),
    )?;
    let vocab = model.vocab();
    let tokens = vocab.tokenize(text.as_bytes(), true, true);
    let mut batch = LlamaBatch::new(512, 1);
    let last = tokens.len() - 1;
    for (i, t) in tokens.iter().enumerate() {
        batch.add(*t, i as i32, &[0], i == last)?;
    }
    if warmup {
        // First use pays for page faults and buffer allocation; time the second prefill.
        ctx.decode(&mut batch)?;
        ctx.clear_kv_cache_seq(Some(0), None, None)?;
    }
    let mut sampler = LlamaSampler::greedy();
    let t0 = Instant::now();
    ctx.decode(&mut batch)?;
    let mut token = sampler.sample(&ctx, batch.n_tokens() - 1);
    let prefill_ms = t0.elapsed().as_secs_f64() * 1e3;
    let mut pieces = Vec::new();
    let mut bytes = Vec::new();
    let mut pos = tokens.len() as i32;
    let t1 = Instant::now();
    while !vocab.is_eog(token) && pieces.len() < max_tokens {
        let piece = vocab.token_to_piece(token, false, None);
        pieces.push(String::from_utf8_lossy(&piece).into_owned());
        bytes.extend_from_slice(&piece);
        if pieces.len() == max_tokens {
            break;
        }
        batch.clear();
        batch.add(token, pos, &[0], true)?;
        pos += 1;
        ctx.decode(&mut batch)?;
        token = sampler.sample(&ctx, 0);
    }
    let decode_s = t1.elapsed().as_secs_f64();
    Ok(GreedyRun {
        prompt_tokens: tokens.len(),
        decode_tok_s: pieces.len().saturating_sub(1) as f64 / decode_s.max(1e-9),
        pieces,
        text: String::from_utf8_lossy(&bytes).into_owned(),
        prefill_ms,
    })
}

/// Times prefills of a raw `prompt` on demand, for the benchmark's time to first token:
/// loads the model once, prefills once untimed, then for every line read from `requests`
/// clears the sequence, decodes the prompt, samples the first token and writes the
/// milliseconds that took as a line to `replies`. Returns at the end of `requests`. Kept
/// running beside the servers, so that its prefills and their requests can alternate and
/// the machine's noise at any moment hits them alike.
pub fn prefill_timer(
    model_path: &Path,
    prompt: &str,
    threads: i32,
    ctx_size: u32,
    requests: impl BufRead,
    mut replies: impl Write,
) -> anyhow::Result<()> {
    let backend = LlamaBackend::init()?;
    let model = LlamaModel::load_from_file(&backend, model_path, &LlamaModelParams::default())?;
    let mut ctx = model.new_context(
        &backend,
        context_params(ctx_size, 1, threads, KvLayout::PerSequence),
    )?;
    let tokens = model.vocab().tokenize(prompt.as_bytes(), true, true);
    let mut batch = LlamaBatch::new(512, 1);
    let last = tokens.len() - 1;
    for (i, t) in tokens.iter().enumerate() {
        batch.add(*t, i as i32, &[0], i == last)?;
    }
    let mut sampler = LlamaSampler::greedy();
    ctx.decode(&mut batch)?;
    for line in requests.lines() {
        line?;
        ctx.clear_kv_cache_seq(Some(0), None, None)?;
        let t0 = Instant::now();
        ctx.decode(&mut batch)?;
        let _first = sampler.sample(&ctx, batch.n_tokens() - 1);
        writeln!(replies, "{}", t0.elapsed().as_secs_f64() * 1e3)?;
        replies.flush()?;
    }
    Ok(())
}

/// What to decode from.
#[derive(Debug, Clone, Copy)]
pub enum Prompt<'a> {
    /// One user message, rendered with the model's chat template.
    Chat(&'a str),
    /// Raw text.
    Raw(&'a str),
}

/// One timed batched run.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize)]
pub struct BatchedRun {
    /// Tokens per second, all sequences together, of the decode steps alone.
    pub tok_s: f64,
    /// Tokens per second over the whole run, the prefill of every prompt included (what
    /// a server's aggregate measures: every stream's tokens over the wall time).
    pub with_prefill_tok_s: f64,
    /// CPU time of this process per generated token over the whole run, milliseconds.
    pub cpu_ms_per_token: f64,
}

/// `n_seqs` sequences decoded greedily together, one batch per step, with no HTTP and no
/// threads: the prompts prefilled in one batch, then `max_tokens` tokens each (the first
/// from the prefill's logits). The floor for the worker's concurrent throughput.
pub fn batched_tok_s(
    model_path: &Path,
    prompt: &str,
    n_seqs: u32,
    max_tokens: usize,
    threads: i32,
    ctx_size: u32,
    kv: KvLayout,
) -> anyhow::Result<BatchedRun> {
    let backend = LlamaBackend::init()?;
    let model = LlamaModel::load_from_file(&backend, model_path, &LlamaModelParams::default())?;
    let mut ctx = model.new_context(&backend, context_params(ctx_size, n_seqs, threads, kv))?;
    let vocab = model.vocab();
    let tokens = vocab.tokenize(prompt.as_bytes(), true, true);
    anyhow::ensure!(
        tokens.len() * n_seqs as usize <= 512 && max_tokens >= 2,
        "{n_seqs} prompts of {} tokens do not fit one batch of 512 (or fewer than 2 tokens asked)",
        tokens.len()
    );
    let mut batch = LlamaBatch::new(512, n_seqs as i32);
    // Warm-up, then the timed run.
    for timed in [false, true] {
        ctx.clear_kv_cache();
        let t0 = Instant::now();
        let cpu0 = cpu_seconds(std::process::id());
        batch.clear();
        for s in 0..n_seqs as i32 {
            for (i, t) in tokens.iter().enumerate() {
                batch.add(*t, i as i32, &[s], i + 1 == tokens.len())?;
            }
        }
        ctx.decode(&mut batch)?;
        let mut next: Vec<_> = (0..n_seqs as usize)
            .map(|s| greedy::pick(&ctx, ((s + 1) * tokens.len() - 1) as i32))
            .collect();
        let t1 = Instant::now();
        let steps = if timed { max_tokens - 1 } else { 4 };
        for step in 0..steps {
            batch.clear();
            for (s, t) in next.iter().enumerate() {
                batch.add(*t, (tokens.len() + step) as i32, &[s as i32], true)?;
            }
            ctx.decode(&mut batch)?;
            for (s, t) in next.iter_mut().enumerate() {
                *t = greedy::pick(&ctx, s as i32);
            }
        }
        if timed {
            let cpu = cpu_seconds(std::process::id()) - cpu0;
            let all = (n_seqs as usize * max_tokens) as f64;
            return Ok(BatchedRun {
                tok_s: (n_seqs as usize * steps) as f64 / t1.elapsed().as_secs_f64(),
                with_prefill_tok_s: all / t0.elapsed().as_secs_f64(),
                cpu_ms_per_token: cpu * 1e3 / all,
            });
        }
    }
    unreachable!("the timed pass returns")
}

/// CPU time (user + system) a process has used so far, seconds (0 when unreadable).
pub fn cpu_seconds(pid: u32) -> f64 {
    rbee_metrics::process::cpu_seconds(pid).unwrap_or(0.0)
}

pub mod harness;
pub mod openai_stream;

/// Order statistics for the benchmarks' figures.
pub mod stats {
    /// The median (sorts `v`).
    pub fn median(v: &mut [f64]) -> f64 {
        percentile(v, 0.5)
    }

    /// The `p` quantile, 0 ≤ p ≤ 1, nearest rank (sorts `v`).
    pub fn percentile(v: &mut [f64], p: f64) -> f64 {
        v.sort_by(|a, b| a.total_cmp(b));
        v[((v.len() as f64 - 1.0) * p).round() as usize]
    }
}
