//! `rbee-bench-front`: what the hive's OpenAI front door costs, next to its baseline in one
//! run: the same streamed greedy chat request to the worker's own `/v1/chat/completions`
//! (with its key) and through the hive's (which names the model, queues and proxies),
//! interleaved round by round on one worker.
//!
//! 1. One stream: time to the first content chunk (TTFT) and decode speed (tokens after
//!    the first, per second), medians and the median of per-round ratios.
//! 2. Four concurrent streams (a 4-slot worker): aggregate tokens per second.
//! 3. `--queue` requests at once on a 1-slot worker through the hive: all answered, and
//!    the hive's resident memory before and at the end.
//! 4. The worker's own chat route against llama-server's `/v1/chat/completions` on the same
//!    request (both one slot, 4096 tokens of context, the same threads; both prompt caches
//!    off, so every round reads the whole prompt), interleaved, when llama-server is built
//!    (`scripts/build-llama-server`).

use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Parser;
use rbee_bench::harness::{default_llama_server, file_ref, worker_and_llama_server, Hive};
use rbee_bench::openai_stream::{stream_body, Run};
use rbee_bench::stats::median;
use rbee_types::hive::SpawnRequest;
use rbee_types::Backend;

/// Measures the front door against the worker's own OpenAI route.
#[derive(Parser)]
struct Args {
    /// GGUF model (default: the test model).
    #[arg(long)]
    model: Option<std::path::PathBuf>,
    /// Interleaved rounds.
    #[arg(long, default_value_t = 9)]
    rounds: usize,
    /// Tokens per answer.
    #[arg(long, default_value_t = 96)]
    tokens: u32,
    /// Requests at once in the queue test.
    #[arg(long, default_value_t = 64)]
    queue: usize,
    /// llama-server binary [default: what scripts/build-llama-server built; none: skipped].
    #[arg(long)]
    llama_server: Option<std::path::PathBuf>,
    /// Threads for the worker and llama-server in the comparison [default: all CPUs].
    #[arg(long)]
    threads: Option<usize>,
}

/// The request every figure is made of: a short chat turn, greedy, streamed.
fn chat_body(model: &str, tokens: u32) -> serde_json::Value {
    serde_json::json!({
        "model": model,
        // A system message of its own: SmolLM2's template adds a default one otherwise,
        // which llama-server's Jinja renderer does and llama.cpp's built-in one does not.
        "messages": [{"role": "system", "content": "You are a storyteller."},
                     {"role": "user", "content": "Tell a long story about a bee colony."}],
        "temperature": 0, "max_tokens": tokens, "stream": true,
        "stream_options": {"include_usage": true},
    })
}

fn stream(url: &str, key: Option<&str>, model: &str, tokens: u32) -> anyhow::Result<Run> {
    stream_body(url, key, &chat_body(model, tokens))
}

/// `k` streams at once; aggregate tokens per second.
fn concurrent(url: &str, key: Option<&str>, model: &str, tokens: u32, k: usize) -> f64 {
    let t0 = Instant::now();
    let total: u32 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..k)
            .map(|_| s.spawn(|| stream(url, key, model, tokens).map_or(0, |r| r.tokens)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    f64::from(total) / t0.elapsed().as_secs_f64()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let model = match args
        .model
        .clone()
        .or_else(rbee_test_support::model::test_model)
    {
        Some(m) => m,
        None => bail!("no model: pass --model or run scripts/fetch-test-model"),
    };
    let reference = file_ref(&model)?;
    let hive = Hive::start("process", &[])?;
    let id = hive.spawn(&SpawnRequest {
        slots: Some(4),
        ..SpawnRequest::new(reference.clone(), Backend::Cpu, 0)
    })?;
    hive.wait_idle(&id, Instant::now(), Duration::from_millis(20))?;
    let w = hive.client.worker(&id)?;
    let key = hive.worker_key(&id)?;
    let name = reference.to_string();
    let (mut direct, mut front) = (vec![], vec![]);
    for _ in 0..args.rounds {
        direct.push(stream(&w.url, Some(&key), &name, args.tokens)?);
        front.push(stream(&hive.url, None, &name, args.tokens)?);
    }
    let pick = |v: &[Run], f: fn(&Run) -> f64| median(&mut v.iter().map(f).collect::<Vec<_>>());
    let ratio = |f: fn(&Run) -> f64| {
        median(
            &mut direct
                .iter()
                .zip(&front)
                .map(|(d, h)| f(h) / f(d))
                .collect::<Vec<_>>(),
        )
    };
    println!(
        "== one stream, {} rounds interleaved, {} tokens, greedy",
        args.rounds, args.tokens
    );
    println!("{:<34} {:>10} {:>10} {:>8}", "", "worker", "hive", "hive/w");
    println!(
        "{:<34} {:>10.1} {:>10.1} {:>8.3}",
        "TTFT ms (median)",
        pick(&direct, |r| r.ttft_ms),
        pick(&front, |r| r.ttft_ms),
        ratio(|r| r.ttft_ms)
    );
    println!(
        "{:<34} {:>10.1} {:>10.1} {:>8.3}",
        "decode tok/s (median)",
        pick(&direct, |r| r.decode_tok_s),
        pick(&front, |r| r.decode_tok_s),
        ratio(|r| r.decode_tok_s)
    );
    let (mut agg_w, mut agg_h) = (vec![], vec![]);
    for _ in 0..3 {
        agg_w.push(concurrent(&w.url, Some(&key), &name, args.tokens, 4));
        agg_h.push(concurrent(&hive.url, None, &name, args.tokens, 4));
    }
    let (aw, ah) = (median(&mut agg_w), median(&mut agg_h));
    println!("== four streams at once (4 slots), 3 rounds interleaved");
    println!(
        "{:<34} {:>10.1} {:>10.1} {:>8.3}",
        "aggregate tok/s (median)",
        aw,
        ah,
        ah / aw
    );

    // The queue: a second hive whose worker has one slot.
    let q = Hive::start("process", &[])?;
    let qid = q.spawn(&SpawnRequest::new(reference, Backend::Cpu, 0))?;
    q.wait_idle(&qid, Instant::now(), Duration::from_millis(20))?;
    let before = q.rss_kib();
    let t0 = Instant::now();
    let answered: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.queue)
            .map(|_| s.spawn(|| stream(&q.url, None, &name, 8).is_ok()))
            .collect();
        handles
            .into_iter()
            .map(|h| usize::from(h.join().unwrap_or(false)))
            .sum()
    });
    println!(
        "== {} requests at once on a 1-slot worker through the hive",
        args.queue
    );
    println!(
        "answered {answered}/{} in {:.1} s; hive RSS {} KiB before, {} KiB after",
        args.queue,
        t0.elapsed().as_secs_f64(),
        before,
        q.rss_kib()
    );
    drop(q);
    drop(hive);
    versus_llama_server(&model, &args)
}

/// Section 4: the worker's chat route against llama-server's, one stream at a time, the
/// order alternating each round.
fn versus_llama_server(model: &std::path::Path, args: &Args) -> anyhow::Result<()> {
    let Some(bin) = args.llama_server.clone().or_else(default_llama_server) else {
        println!("== worker vs llama-server: skipped, llama-server not built (scripts/build-llama-server)");
        return Ok(());
    };
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .to_string();
    let (worker, server) = worker_and_llama_server(model, &bin, 1, 4096, &threads)?;
    let mut uncached = chat_body("m", args.tokens);
    uncached["cache_prompt"] = false.into();
    let (mut w, mut l) = (vec![], vec![]);
    for round in 0..args.rounds {
        let ours = || {
            stream_body(
                &format!("http://127.0.0.1:{}", worker.port),
                None,
                &uncached,
            )
        };
        let theirs = || {
            stream_body(
                &format!("http://127.0.0.1:{}", server.port),
                None,
                &uncached,
            )
        };
        if round % 2 == 0 {
            w.push(ours()?);
            l.push(theirs()?);
        } else {
            l.push(theirs()?);
            w.push(ours()?);
        }
    }
    let pick = |v: &[Run], f: fn(&Run) -> f64| median(&mut v.iter().map(f).collect::<Vec<_>>());
    let per_round = |f: fn(&Run, &Run) -> f64| {
        median(&mut w.iter().zip(&l).map(|(a, b)| f(a, b)).collect::<Vec<_>>())
    };
    println!(
        "== worker vs llama-server, /v1/chat/completions, 1 slot each, {threads} threads, {} rounds interleaved",
        args.rounds
    );
    println!(
        "{:<34} {:>10} {:>10} {:>8}",
        "", "worker", "llama-s.", "w/l"
    );
    println!(
        "{:<34} {:>10.1} {:>10.1} {:>+8.1}",
        "TTFT ms (median; w-l per round)",
        pick(&w, |r| r.ttft_ms),
        pick(&l, |r| r.ttft_ms),
        per_round(|a, b| a.ttft_ms - b.ttft_ms)
    );
    println!(
        "{:<34} {:>10.1} {:>10.1} {:>8.3}",
        "decode tok/s (median; w/l)",
        pick(&w, |r| r.decode_tok_s),
        pick(&l, |r| r.decode_tok_s),
        per_round(|a, b| a.decode_tok_s / b.decode_tok_s)
    );
    println!(
        "tokens per answer: worker {}, llama-server {}; prompt tokens (each server's chat template): worker {}, llama-server {} (targets: decode >= 1.0, TTFT <= +5 ms)",
        pick(&w, |r| f64::from(r.tokens)),
        pick(&l, |r| f64::from(r.tokens)),
        pick(&w, |r| f64::from(r.prompt_tokens)),
        pick(&l, |r| f64::from(r.prompt_tokens))
    );
    Ok(())
}
