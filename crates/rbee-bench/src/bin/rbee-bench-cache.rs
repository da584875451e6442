//! `rbee-bench-cache`: the prompt cache, side by side with llama-server's in one run (the
//! same model, threads and context per slot; both servers' caches on, as users run them).
//!
//! 1. Multi-turn chat: an 8-turn conversation that opens with a ~500-token system prompt,
//!    one slot. Each turn sends the whole history (each server's own earlier answers), as
//!    every chat client does. Time to first token per turn, and over the conversation.
//! 2. A shared system prompt: four conversations on a 4-slot server, each opening with the
//!    same ~500-token system prompt, each started while the ones before it are still
//!    answering (several users of one assistant). First-turn TTFT of conversations 2–4.
//!
//! Rounds alternate which server goes first; each round's system prompt starts with the
//! round's number, so nothing is cached across rounds. Times are medians over rounds;
//! ratios are medians of each round's worker/llama-server ratio.

use std::sync::mpsc;

use anyhow::Context;
use clap::Parser;
use rbee_bench::harness::{default_llama_server, worker_and_llama_server, Server};
use rbee_bench::openai_stream::{stream_answer, Run};
use rbee_bench::stats::median;
use serde_json::{json, Value};

/// Measures the prompt cache against llama-server's.
#[derive(Parser)]
struct Args {
    /// GGUF model (scripts/bench-cache passes the test model).
    #[arg(long)]
    model: std::path::PathBuf,
    /// llama-server binary [default: what scripts/build-llama-server built].
    #[arg(long)]
    llama_server: Option<std::path::PathBuf>,
    /// Rounds (each: one conversation, or one set of four, per server).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Tokens per answer.
    #[arg(long, default_value_t = 32)]
    tokens: u32,
    /// Threads for both servers [default: all CPUs].
    #[arg(long)]
    threads: Option<usize>,
}

/// About 500 tokens of instructions, as an assistant's system prompt would have.
fn system_prompt(round: usize) -> String {
    let rules = [
        "You are Melissa, the assistant of a beekeepers' association.",
        "You answer questions about honey bees, their biology, their behaviour and their care.",
        "Keep answers short: two or three sentences unless the member asks for more.",
        "Use plain words; explain any technical term the first time you use it.",
        "When a question is about bee stings and allergies, advise seeing a doctor.",
        "When a question is about pesticides, name the local rules without legal advice.",
        "Never invent numbers; when unsure, say what is known and what is not.",
        "A colony has one queen, thousands of female workers and, in summer, some drones.",
        "Workers clean cells, nurse larvae, build comb, guard the entrance and forage.",
        "The queen lays up to two thousand eggs a day in spring and early summer.",
        "Drones mate with queens of other colonies and are expelled before winter.",
        "Honey is nectar that workers evaporate and enrich with enzymes, then cap with wax.",
        "The waggle dance tells nest mates the direction and distance of a food source.",
        "Varroa mites are the main threat to colonies; treatments must follow the label.",
        "Swarming is how colonies reproduce; the old queen leaves with part of the workers.",
        "In winter bees form a cluster and keep its centre warm by shivering their muscles.",
        "Beekeepers inspect hives on warm, calm days and move slowly and calmly.",
        "A smoker calms bees by masking the alarm pheromone; too much smoke harms them.",
        "Members may ask about equipment: hive bodies, supers, frames, foundation, veils.",
        "Recommend the association's mentoring programme to new beekeepers.",
        "Meetings are on the first Tuesday of each month; the apiary opens on Saturdays.",
        "Do not discuss politics or religion; steer back to bees politely.",
        "If a member reports a sick colony, ask for photos of the brood frames.",
        "If a member finds a swarm, tell them to keep a distance and call the swarm line.",
        "End every answer with a short, friendly sentence.",
    ];
    let mut s = format!("Session {round}. ");
    for r in rules.iter().chain(&rules[..6]) {
        s.push_str(r);
        s.push(' ');
    }
    s
}

const QUESTIONS: [&str; 8] = [
    "How many bees live in a hive?",
    "What does the queen do all day?",
    "Why do drones get expelled?",
    "How do I start with my first hive?",
    "What equipment should I buy first?",
    "How do I treat varroa mites?",
    "What should I do if I find a swarm?",
    "When is the next meeting?",
];

fn body(messages: &[Value], tokens: u32) -> Value {
    json!({"model": "m", "messages": messages, "temperature": 0, "max_tokens": tokens,
           "stream": true, "stream_options": {"include_usage": true}})
}

/// One conversation of `QUESTIONS.len()` turns on `url`.
fn conversation(url: &str, round: usize, tokens: u32) -> anyhow::Result<Vec<Run>> {
    let mut messages = vec![json!({"role": "system", "content": system_prompt(round)})];
    let mut runs = Vec::new();
    for q in QUESTIONS {
        messages.push(json!({"role": "user", "content": q}));
        let a = stream_answer(url, None, &body(&messages, tokens), || {})?;
        messages.push(json!({"role": "assistant", "content": a.text}));
        runs.push(a.run);
    }
    Ok(runs)
}

/// Four conversations with the same system prompt, each started once the one before has
/// its first token; the first-turn runs of all four.
fn shared(url: &str, round: usize, tokens: u32) -> anyhow::Result<Vec<Run>> {
    let system = system_prompt(round);
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for q in &QUESTIONS[..4] {
            let (tx, rx) = mpsc::channel();
            let b = body(
                &[
                    json!({"role": "system", "content": system}),
                    json!({"role": "user", "content": q}),
                ],
                tokens,
            );
            handles.push(s.spawn(move || {
                stream_answer(url, None, &b, || {
                    let _ = tx.send(());
                })
            }));
            rx.recv().context("a conversation ended without a token")?;
        }
        handles
            .into_iter()
            .map(|h| Ok(h.join().expect("no panic")?.run))
            .collect()
    })
}

/// The worker and llama-server with `slots` slots of 4096 tokens each.
fn servers(args: &Args, slots: u32) -> anyhow::Result<(Server, Server)> {
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .to_string();
    let bin = args
        .llama_server
        .clone()
        .or_else(default_llama_server)
        .context("llama-server not built: run scripts/build-llama-server")?;
    worker_and_llama_server(&args.model, &bin, slots, 4096, &threads)
}

/// Runs `f` on both servers for every round, alternating which goes first.
fn interleaved<T>(
    args: &Args,
    pair: &(Server, Server),
    f: impl Fn(&str, usize) -> anyhow::Result<T>,
) -> anyhow::Result<(Vec<T>, Vec<T>)> {
    let url = |s: &Server| format!("http://127.0.0.1:{}", s.port);
    let (mut w, mut l) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        if round % 2 == 0 {
            w.push(f(&url(&pair.0), round)?);
            l.push(f(&url(&pair.1), round)?);
        } else {
            l.push(f(&url(&pair.1), round)?);
            w.push(f(&url(&pair.0), round)?);
        }
    }
    Ok((w, l))
}

/// Median over rounds of `f(run)`'s value at index `t` of each round.
fn turn(runs: &[Vec<Run>], t: usize, f: fn(&Run) -> f64) -> f64 {
    median(&mut runs.iter().map(|r| f(&r[t])).collect::<Vec<_>>())
}

/// Median over rounds of the worker's `f` divided by llama-server's in the same round.
fn paired(w: &[Vec<Run>], l: &[Vec<Run>], f: impl Fn(&[Run]) -> f64) -> f64 {
    median(
        &mut w
            .iter()
            .zip(l)
            .map(|(a, b)| f(a) / f(b))
            .collect::<Vec<_>>(),
    )
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));

    let pair = servers(&args, 1)?;
    let (w, l) = interleaved(&args, &pair, |url, round| {
        conversation(url, round, args.tokens)
    })?;
    drop(pair);
    println!(
        "== multi-turn chat: {} turns, ~500-token system prompt, 1 slot, {threads} threads, {} tokens per answer, {} rounds (medians)",
        QUESTIONS.len(),
        args.tokens,
        args.rounds
    );
    println!(
        "{:<5} {:>8} {:>10} {:>10} {:>8} {:>16}",
        "turn", "prompt", "worker ms", "llama-s ms", "w/l", "worker cached"
    );
    for t in 0..QUESTIONS.len() {
        println!(
            "{:<5} {:>8.0} {:>10.1} {:>10.1} {:>8.2} {:>16.0}",
            t + 1,
            turn(&w, t, |r| f64::from(r.prompt_tokens)),
            turn(&w, t, |r| r.ttft_ms),
            turn(&l, t, |r| r.ttft_ms),
            paired(&w, &l, |c| c[t].ttft_ms),
            turn(&w, t, |r| f64::from(r.cached_tokens))
        );
    }
    let total = |c: &[Run]| c.iter().map(|r| r.ttft_ms).sum::<f64>();
    let last = QUESTIONS.len() - 1;
    println!(
        "total TTFT: worker {:.0} ms, llama-server {:.0} ms (medians); per-round w/l: total {:.2}, last turn {:.2} (targets: both <= 1.0)",
        median(&mut w.iter().map(|c| total(c)).collect::<Vec<_>>()),
        median(&mut l.iter().map(|c| total(c)).collect::<Vec<_>>()),
        paired(&w, &l, total),
        paired(&w, &l, |c| c[last].ttft_ms)
    );

    let pair = servers(&args, 4)?;
    let (w, l) = interleaved(&args, &pair, |url, round| shared(url, round, args.tokens))?;
    drop(pair);
    println!(
        "== shared system prompt: 4 conversations on 4 slots, each started while the others answer, {} rounds (medians)",
        args.rounds
    );
    println!(
        "{:<13} {:>10} {:>10} {:>8} {:>16}",
        "conversation", "worker ms", "llama-s ms", "w/l", "worker cached"
    );
    for c in 0..4 {
        println!(
            "{:<13} {:>10.1} {:>10.1} {:>8.2} {:>16.0}",
            c + 1,
            turn(&w, c, |r| r.ttft_ms),
            turn(&l, c, |r| r.ttft_ms),
            paired(&w, &l, |s| s[c].ttft_ms),
            turn(&w, c, |r| f64::from(r.cached_tokens))
        );
    }
    let later = |s: &[Run]| s[1..].iter().map(|r| r.ttft_ms).sum::<f64>();
    println!(
        "conversations 2-4, first-turn TTFT w/l: {:.2} (per-round ratio of their sums, median; target <= 0.3)",
        paired(&w, &l, later)
    );
    Ok(())
}
