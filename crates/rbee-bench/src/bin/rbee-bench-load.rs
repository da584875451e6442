//! `rbee-bench-load`: throughput under load. N concurrent greedy streams against the worker
//! (`--slots N`) and llama-server (`-np N`), side by side in one run on the same model,
//! threads and context per slot, with the bare llama-cpp-2 loop decoding N sequences per
//! batch as the floor — with the worker's KV layout (a stream per sequence) and with one
//! KV buffer shared by all sequences (the worker's layout before). For each N: aggregate tokens per second (all streams' tokens over
//! the wall time of the set), TTFT p50 over the streams, and CPU time of the whole server
//! process per generated token.
//!
//! Rounds alternate which server goes first; figures are medians over rounds, ratios are
//! medians of each round's ratio.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use rbee_bench::harness::{default_llama_server, worker_and_llama_server, Server};
use rbee_bench::openai_stream::sse_data;
use rbee_bench::stats::median;
use rbee_bench::{batched_tok_s, cpu_seconds, BatchedRun, KvLayout};
use serde_json::{json, Value};

/// About 30 tokens of prompt, raw, whose greedy continuation is long.
const PROMPT: &str = "The history of beekeeping goes back thousands of years. In ancient Egypt, beekeepers moved their hives along the Nile to follow the flowering seasons, and";

/// Measures throughput at several concurrent streams against llama-server.
#[derive(Parser)]
struct Args {
    /// GGUF model (scripts/bench-load passes the test model).
    #[arg(long)]
    model: PathBuf,
    /// llama-server binary [default: what scripts/build-llama-server built].
    #[arg(long)]
    llama_server: Option<PathBuf>,
    /// Concurrent streams; one worker and one llama-server with that many slots each.
    #[arg(long, value_delimiter = ',', default_value = "8,16")]
    streams: Vec<u32>,
    /// Rounds per stream count.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Tokens per stream.
    #[arg(long, default_value_t = 96)]
    tokens: u32,
    /// Context per slot, tokens.
    #[arg(long, default_value_t = 512)]
    ctx: u32,
    /// Threads for every contender [default: all CPUs].
    #[arg(long)]
    threads: Option<usize>,
    #[command(subcommand)]
    cmd: Option<Sub>,
}

#[derive(Subcommand)]
enum Sub {
    /// Internal: the bare loop decoding `seqs` sequences per batch, in a fresh process;
    /// prints JSON.
    Bare {
        #[arg(long)]
        seqs: u32,
        #[arg(long, value_enum)]
        kv: KvLayout,
    },
}

/// One contender's figures for one set of streams.
#[derive(Clone, Copy, Default)]
struct Load {
    tok_s: f64,
    ttft_p50_ms: f64,
    cpu_ms_per_token: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    if let Some(Sub::Bare { seqs, kv }) = args.cmd {
        let run = batched_tok_s(
            &args.model,
            PROMPT,
            seqs,
            args.tokens as usize,
            threads as i32,
            args.ctx,
            kv,
        )?;
        println!("{}", serde_json::to_string(&run)?);
        return Ok(());
    }
    let server_bin = args
        .llama_server
        .clone()
        .or_else(default_llama_server)
        .context("no llama-server: run scripts/build-llama-server or pass --llama-server")?;
    eprintln!(
        "rbee-bench-load: {} threads, {} tokens per stream, {} tokens of context per slot, {} rounds",
        threads, args.tokens, args.ctx, args.rounds
    );
    for &n in &args.streams {
        let (worker, server) =
            worker_and_llama_server(&args.model, &server_bin, n, args.ctx, &threads.to_string())?;
        for s in [&worker, &server] {
            // Warm-up: the first requests pay for page faults of the weights.
            streams(s, n, 8)?;
        }
        let (mut bare, mut unified, mut w, mut l) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 0..args.rounds {
            bare.push(bare_run(&args, n, threads, KvLayout::PerSequence)?);
            unified.push(bare_run(&args, n, threads, KvLayout::Unified)?);
            let mut order = [(&worker, &mut w), (&server, &mut l)];
            if round % 2 == 1 {
                order.reverse();
            }
            for (s, out) in order {
                out.push(streams(s, n, args.tokens)?);
            }
            let (b, u, wl, ll) = (bare[round], unified[round], w[round], l[round]);
            eprintln!(
                "rbee-bench-load: {n} streams, round {}: bare {:.1} tok/s (unified KV {:.1}), prefill included; worker {:.1} tok/s, ttft p50 {:.0} ms, {:.2} cpu ms/tok; llama-server {:.1} tok/s, ttft p50 {:.0} ms, {:.2} cpu ms/tok",
                round + 1,
                b.with_prefill_tok_s,
                u.with_prefill_tok_s,
                wl.tok_s,
                wl.ttft_p50_ms,
                wl.cpu_ms_per_token,
                ll.tok_s,
                ll.ttft_p50_ms,
                ll.cpu_ms_per_token
            );
        }
        report(n, &bare, &unified, &w, &l);
    }
    Ok(())
}

/// The bare loop in a fresh process (its own memory and CPU time).
fn bare_run(args: &Args, seqs: u32, threads: usize, kv: KvLayout) -> anyhow::Result<BatchedRun> {
    let kv = kv.to_possible_value().expect("no skipped variants");
    let out = Command::new(std::env::current_exe()?)
        .arg("--model")
        .arg(&args.model)
        .args(["--tokens", &args.tokens.to_string()])
        .args(["--ctx", &args.ctx.to_string()])
        .args(["--threads", &threads.to_string()])
        .args(["bare", "--seqs", &seqs.to_string(), "--kv", kv.get_name()])
        .stderr(Stdio::piped())
        .output()?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(5).collect();
        anyhow::bail!(
            "the bare loop failed ({}): {}",
            out.status,
            tail.join(" / ")
        );
    }
    serde_json::from_slice(&out.stdout).context("output of rbee-bench-load bare")
}

/// `n` concurrent streamed completions of `tokens` tokens each.
fn streams(s: &Server, n: u32, tokens: u32) -> anyhow::Result<Load> {
    let pid = s.child.id();
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    let runs: Vec<anyhow::Result<(u32, f64)>> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..n)
            .map(|_| sc.spawn(|| one_stream(s.port, tokens)))
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("stream thread"))
            .collect()
    });
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu0;
    let mut ttfts = Vec::new();
    let mut total = 0;
    for r in runs {
        let (tok, ttft) = r?;
        total += tok;
        ttfts.push(ttft);
    }
    Ok(Load {
        tok_s: f64::from(total) / wall,
        ttft_p50_ms: median(&mut ttfts),
        cpu_ms_per_token: cpu * 1e3 / f64::from(total.max(1)),
    })
}

/// One streamed OpenAI completion (both servers serve the route): (tokens, TTFT ms).
fn one_stream(port: u16, tokens: u32) -> anyhow::Result<(u32, f64)> {
    let body = json!({"prompt": PROMPT, "max_tokens": tokens, "temperature": 0,
                      "stream": true, "cache_prompt": false});
    let t0 = Instant::now();
    let resp = ureq::post(&format!("http://127.0.0.1:{port}/v1/completions"))
        .send_string(&body.to_string())?;
    let (mut n, mut first) = (0u32, None);
    sse_data(resp.into_reader(), |data| {
        let v: Value = serde_json::from_str(data)?;
        if v["choices"][0]["text"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
        {
            n += 1;
            first.get_or_insert_with(|| t0.elapsed().as_secs_f64() * 1e3);
        }
        Ok(true)
    })?;
    Ok((n, first.context("no token streamed")?))
}

/// Prints one stream count's table and ratios.
fn report(n: u32, bare: &[BatchedRun], unified: &[BatchedRun], w: &[Load], l: &[Load]) {
    let med = |f: &dyn Fn(usize) -> f64| median(&mut (0..w.len()).map(f).collect::<Vec<_>>());
    println!();
    println!("{n} streams, medians over {} rounds:", w.len());
    println!(
        "| contender | aggregate tok/s | decode steps alone tok/s | TTFT p50 ms | CPU ms per token |"
    );
    println!("|---|---|---|---|---|");
    for (name, b) in [
        (
            format!("bare llama-cpp-2 loop, {n} sequences per batch"),
            bare,
        ),
        (
            "bare loop, one KV buffer for all sequences".to_owned(),
            unified,
        ),
    ] {
        println!(
            "| {name} | {:.1} | {:.1} | – | {:.2} |",
            med(&|i| b[i].with_prefill_tok_s),
            med(&|i| b[i].tok_s),
            med(&|i| b[i].cpu_ms_per_token)
        );
    }
    for (name, v) in [
        (format!("llm-worker-rbee --slots {n}"), w),
        (format!("llama-server -np {n}"), l),
    ] {
        println!(
            "| {name} | {:.1} | – | {:.0} | {:.2} |",
            med(&|i| v[i].tok_s),
            med(&|i| v[i].ttft_p50_ms),
            med(&|i| v[i].cpu_ms_per_token)
        );
    }
    println!(
        "- worker / llama-server aggregate = {:.3} (target >= 1.0, then >= 1.2 at 16)",
        med(&|i| w[i].tok_s / l[i].tok_s)
    );
    println!(
        "- worker / bare loop aggregate, prefill included in both = {:.3} (target >= 0.95)",
        med(&|i| w[i].tok_s / bare[i].with_prefill_tok_s)
    );
    println!(
        "- worker aggregate / bare decode steps alone = {:.3}",
        med(&|i| w[i].tok_s / bare[i].tok_s)
    );
    println!(
        "- worker - llama-server TTFT p50 = {:+.0} ms (target <= 0)",
        med(&|i| w[i].ttft_p50_ms - l[i].ttft_p50_ms)
    );
}
