//! `rbee-bench`: decode speed, time to first token, concurrent throughput and peak memory
//! of (a) a bare llama-cpp-2 greedy loop, (b) the worker over HTTP and (c) llama.cpp's
//! llama-server, side by side in one run on the same model and threads. Prints a Markdown
//! table (medians over `--rounds`) and the ratios the worker's targets are stated in.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use rbee_bench::harness::{default_llama_server, Server};
use rbee_bench::{greedy, Prompt};
use serde_json::{json, Value};

/// About 30 tokens of prompt, raw (no chat template), whose greedy continuation is long.
const PROMPT: &str = "The history of beekeeping goes back thousands of years. In ancient Egypt, beekeepers moved their hives along the Nile to follow the flowering seasons, and";

#[derive(Parser)]
#[command(about, long_about = None)]
struct Cli {
    /// GGUF model (default: the test model from scripts/fetch-test-model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Tokens to generate per request.
    #[arg(long, default_value_t = 128)]
    tokens: u32,
    /// CPU threads for every contender (default: physical cores).
    #[arg(long)]
    threads: Option<u32>,
    /// Rounds; the table shows medians.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// The worker binary (default: next to this one).
    #[arg(long)]
    worker: Option<PathBuf>,
    /// llama-server binary (default: what scripts/build-llama-server built). Without one,
    /// column (c) is skipped with the reason.
    #[arg(long)]
    llama_server: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Option<Sub>,
}

#[derive(Subcommand)]
enum Sub {
    /// Internal: run the bare batched loop (4 sequences) in this process and print JSON.
    Batched(LoopArgs),
    /// Internal: run the bare loop once in this process and print JSON.
    Bare(LoopArgs),
    /// Internal: time a prefill of the prompt for every line on stdin (see
    /// `rbee_bench::prefill_timer`).
    Prefill(LoopArgs),
}

/// Arguments of the internal subcommands.
#[derive(clap::Args)]
struct LoopArgs {
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    tokens: u32,
    #[arg(long)]
    threads: u32,
}

/// One contender's figures for one round.
#[derive(Default, Clone)]
struct Figures {
    decode_tok_s: f64,
    ttft_ms: f64,
    agg: [f64; 3],
    peak_rss_mib: f64,
    tokens: u32,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Sub::Batched(LoopArgs {
        model,
        tokens,
        threads,
    })) = &cli.cmd
    {
        let agg = rbee_bench::batched_tok_s(
            model,
            PROMPT,
            4,
            *tokens as usize,
            *threads as i32,
            2048,
            rbee_bench::KvLayout::PerSequence,
        )?;
        println!("{}", json!({"agg4_tok_s": agg.tok_s}));
        return Ok(());
    }
    if let Some(Sub::Prefill(LoopArgs { model, threads, .. })) = &cli.cmd {
        return rbee_bench::prefill_timer(
            model,
            PROMPT,
            *threads as i32,
            2048,
            std::io::stdin().lock(),
            std::io::stdout().lock(),
        );
    }
    if let Some(Sub::Bare(LoopArgs {
        model,
        tokens,
        threads,
    })) = cli.cmd
    {
        let run = greedy(
            &model,
            Prompt::Raw(PROMPT),
            tokens as usize,
            threads as i32,
            2048,
            true,
        )?;
        println!(
            "{}",
            json!({"prefill_ms": run.prefill_ms, "decode_tok_s": run.decode_tok_s,
                   "tokens": run.pieces.len(), "prompt_tokens": run.prompt_tokens,
                   "peak_rss_mib": peak_rss_mib(std::process::id())})
        );
        return Ok(());
    }
    let model = match cli
        .model
        .clone()
        .or_else(rbee_test_support::model::test_model)
    {
        Some(m) => m,
        None => bail!("no model: pass --model or run scripts/fetch-test-model"),
    };
    let threads = cli.threads.unwrap_or_else(rbee_llama::physical_cores);
    let me = std::env::current_exe()?;
    let worker_bin = cli
        .worker
        .clone()
        .unwrap_or_else(|| me.with_file_name("llm-worker-rbee"));
    let server_bin = cli.llama_server.clone().or_else(default_llama_server);

    eprintln!(
        "rbee-bench: model {}, {threads} threads, {} tokens, {} rounds",
        model.display(),
        cli.tokens,
        cli.rounds
    );
    let worker_port = rbee_test_support::process::free_port();
    let worker = Server::start(
        Command::new(&worker_bin).arg("--model").arg(&model).args([
            "--port",
            &worker_port.to_string(),
            "--slots",
            "4",
            "--ctx-size",
            "2048",
            "--threads",
            &threads.to_string(),
        ]),
        worker_port,
        "/v1/ready",
    )?;
    let server = match &server_bin {
        Some(bin) => {
            let port = rbee_test_support::process::free_port();
            Some(Server::start(
                Command::new(bin).arg("-m").arg(&model).args([
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "-np",
                    "4",
                    "-c",
                    "8192",
                    "-t",
                    &threads.to_string(),
                    "-tb",
                    &threads.to_string(),
                ]),
                port,
                "/health",
            )?)
        }
        None => {
            eprintln!(
                "rbee-bench: (c) llama-server skipped: not built; run scripts/build-llama-server"
            );
            None
        }
    };

    let mut prefill = PrefillTimer::start(&me, &model, threads)?;
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    let mut ttft = TtftDeltas::default();
    for round in 0..cli.rounds {
        eprintln!("rbee-bench: round {}/{}", round + 1, cli.rounds);
        let v = run_self(&me, "bare", &model, cli.tokens, threads)?;
        a.push(Figures {
            decode_tok_s: v["decode_tok_s"].as_f64().unwrap_or(0.0),
            ttft_ms: v["prefill_ms"].as_f64().unwrap_or(0.0),
            peak_rss_mib: v["peak_rss_mib"].as_f64().unwrap_or(0.0),
            tokens: v["tokens"].as_u64().unwrap_or(0) as u32,
            ..Figures::default()
        });
        let v = run_self(&me, "batched", &model, cli.tokens, threads)?;
        a.last_mut().expect("pushed above").agg[2] = v["agg4_tok_s"].as_f64().unwrap_or(0.0);
        let mut contenders = vec![(&worker, Api::Worker)];
        if let Some(s) = server.as_ref() {
            contenders.push((s, Api::LlamaServer));
        }
        if round % 2 == 1 {
            contenders.reverse();
        }
        let samples = ttft_samples(&mut prefill, &contenders)?;
        a.last_mut().expect("pushed above").ttft_ms = median_of(&samples.bare);
        ttft.add(&samples);
        for (i, ((_, api), mut f)) in contenders
            .iter()
            .zip(measure(&contenders, cli.tokens)?)
            .enumerate()
        {
            f.ttft_ms = median_of(&samples.servers[i]);
            eprintln!(
                "rbee-bench:   {:<12} decode {:6.1} tok/s, ttft {:6.1} ms, agg {:6.1} {:6.1} {:6.1} tok/s",
                api.name(),
                f.decode_tok_s,
                f.ttft_ms,
                f.agg[0],
                f.agg[1],
                f.agg[2]
            );
            match api {
                Api::Worker => b.push(f),
                Api::LlamaServer => c.push(f),
            }
        }
    }
    let ratios = Ratios::paired(&a, &b, &c, &ttft);
    let (a, b) = (median(&a), median(&b));
    let c = (!c.is_empty()).then(|| median(&c));
    print_table(&a, &b, c.as_ref(), threads, cli.tokens);
    ratios.print();
    Ok(())
}

/// Runs one of the internal subcommands in a fresh process (so its peak RSS is its own)
/// and parses the JSON it prints.
fn run_self(
    me: &std::path::Path,
    sub: &str,
    model: &std::path::Path,
    tokens: u32,
    threads: u32,
) -> anyhow::Result<Value> {
    let out = Command::new(me)
        .args([sub, "--model"])
        .arg(model)
        .args([
            "--tokens",
            &tokens.to_string(),
            "--threads",
            &threads.to_string(),
        ])
        .stderr(Stdio::null())
        .output()?;
    serde_json::from_slice(&out.stdout).with_context(|| format!("output of rbee-bench {sub}"))
}

#[derive(Clone, Copy)]
enum Api {
    Worker,
    LlamaServer,
}

impl Api {
    fn name(self) -> &'static str {
        match self {
            Api::Worker => "worker",
            Api::LlamaServer => "llama-server",
        }
    }
}

/// One streamed request: (tokens, ttft, decode seconds after the first token).
fn one_stream(port: u16, api: Api, tokens: u32) -> anyhow::Result<(u32, f64, f64)> {
    let (path, body) = match api {
        Api::Worker => (
            "/v1/inference",
            json!({"prompt": PROMPT, "max_tokens": tokens, "temperature": 0, "cache_prompt": false}),
        ),
        Api::LlamaServer => (
            "/completion",
            json!({"prompt": PROMPT, "n_predict": tokens, "temperature": 0, "stream": true, "cache_prompt": false}),
        ),
    };
    let t0 = Instant::now();
    let resp =
        ureq::post(&format!("http://127.0.0.1:{port}{path}")).send_string(&body.to_string())?;
    let (mut n, mut first, mut last) = (0u32, None, t0);
    rbee_bench::openai_stream::sse_data(resp.into_reader(), |data| {
        let v: Value = serde_json::from_str(data)?;
        let is_token = match api {
            Api::Worker => v.get("token").is_some(),
            Api::LlamaServer => {
                v["content"].as_str().is_some_and(|c| !c.is_empty())
                    || v.get("tokens")
                        .is_some_and(|t| t.as_array().is_some_and(|a| !a.is_empty()))
            }
        };
        if is_token {
            n += 1;
            let now = Instant::now();
            first.get_or_insert(now);
            last = now;
        }
        let ended = v["stop"] == true || v["done"] == true;
        Ok(!(ended && matches!(api, Api::LlamaServer)))
    })?;
    let first = first.context("no token streamed")?;
    Ok((
        n,
        (first - t0).as_secs_f64() * 1e3,
        (last - first).as_secs_f64(),
    ))
}

/// Concurrent streams: total tokens over wall time.
fn aggregate(port: u16, api: Api, streams: usize, tokens: u32) -> f64 {
    let t0 = Instant::now();
    let total: u32 = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..streams)
            .map(|_| sc.spawn(|| one_stream(port, api, tokens)))
            .collect();
        hs.into_iter()
            .map(|h| match h.join().expect("stream thread") {
                Ok(r) => r.0,
                Err(e) => {
                    eprintln!("rbee-bench: a stream failed: {e:#}");
                    0
                }
            })
            .sum()
    });
    f64::from(total) / t0.elapsed().as_secs_f64()
}

/// Measures every contender, one metric at a time and back to back, so that the machine's
/// noise at any moment hits all of them alike.
fn measure(servers: &[(&Server, Api)], tokens: u32) -> anyhow::Result<Vec<Figures>> {
    let mut out = vec![Figures::default(); servers.len()];
    for (s, api) in servers {
        // Warm-up (first request pays for page faults of the weights).
        one_stream(s.port, *api, 8)?;
    }
    for ((s, api), f) in servers.iter().zip(out.iter_mut()) {
        let (n, ttft, decode_s) = one_stream(s.port, *api, tokens)?;
        f.decode_tok_s = f64::from(n.saturating_sub(1)) / decode_s.max(1e-9);
        f.ttft_ms = ttft;
        f.tokens = n;
    }
    for (i, streams) in [1usize, 2, 4].into_iter().enumerate() {
        for ((s, api), f) in servers.iter().zip(out.iter_mut()) {
            f.agg[i] = aggregate(s.port, *api, streams, tokens);
        }
    }
    for ((s, _), f) in servers.iter().zip(out.iter_mut()) {
        f.peak_rss_mib = peak_rss_mib(s.child.id());
    }
    Ok(out)
}

fn median(v: &[Figures]) -> Figures {
    let pick = |f: &dyn Fn(&Figures) -> f64| median_of(&v.iter().map(f).collect::<Vec<_>>());
    Figures {
        decode_tok_s: pick(&|f| f.decode_tok_s),
        ttft_ms: pick(&|f| f.ttft_ms),
        agg: [
            pick(&|f| f.agg[0]),
            pick(&|f| f.agg[1]),
            pick(&|f| f.agg[2]),
        ],
        peak_rss_mib: pick(&|f| f.peak_rss_mib),
        tokens: v.last().map_or(0, |f| f.tokens),
    }
}

fn print_table(a: &Figures, b: &Figures, c: Option<&Figures>, threads: u32, tokens: u32) {
    println!("| contender | decode tok/s (1 stream) | TTFT ms (~30-token prompt) | agg tok/s 1 | agg tok/s 2 | agg tok/s 4 | peak RSS MiB |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| (a) bare llama-cpp-2 loop (agg 4: 4 sequences per batch) | {:.1} | {:.1} (prefill) | – | – | {:.1} | {:.0} |",
        a.decode_tok_s, a.ttft_ms, a.agg[2], a.peak_rss_mib
    );
    let row = |name: &str, f: &Figures| {
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} |",
            f.decode_tok_s, f.ttft_ms, f.agg[0], f.agg[1], f.agg[2], f.peak_rss_mib
        );
    };
    row("(b) llm-worker-rbee over HTTP, 4 slots", b);
    match c {
        Some(c) => row("(c) llama-server -np 4", c),
        None => println!(
            "| (c) llama-server | skipped: not built (scripts/build-llama-server) | | | | | |"
        ),
    }
    println!();
    println!(
        "threads {threads}, {tokens} tokens per request (worker streamed {}, bare {}).",
        b.tokens, a.tokens
    );
}

/// The targets' ratios, computed within each round (contenders measured minutes apart
/// drift on a shared machine) and then the median over rounds.
struct Ratios {
    decode: f64,
    /// Worker TTFT minus the bare prefill timed just before it, median over all samples.
    ttft_delta_ms: f64,
    /// The same for llama-server.
    server_ttft_delta_ms: Option<f64>,
    agg4_vs_bare: f64,
    agg4_vs_server: Option<f64>,
}

impl Ratios {
    fn paired(a: &[Figures], b: &[Figures], c: &[Figures], ttft: &TtftDeltas) -> Ratios {
        let med = |xs: Vec<f64>| median_of(&xs);
        let pairs = || a.iter().zip(b);
        Ratios {
            decode: med(pairs()
                .map(|(a, b)| b.decode_tok_s / a.decode_tok_s)
                .collect()),
            ttft_delta_ms: median_of(&ttft.worker),
            server_ttft_delta_ms: (!ttft.server.is_empty()).then(|| median_of(&ttft.server)),
            agg4_vs_bare: med(pairs().map(|(a, b)| b.agg[2] / a.agg[2]).collect()),
            agg4_vs_server: (!c.is_empty())
                .then(|| med(b.iter().zip(c).map(|(b, c)| b.agg[2] / c.agg[2]).collect())),
        }
    }

    fn print(&self) {
        println!("Ratios (median over rounds of each round's ratio):");
        println!(
            "- worker decode / bare decode = {:.3} (target >= 0.97)",
            self.decode
        );
        println!(
            "- worker TTFT - bare prefill = {:+.1} ms (target <= +5 ms; median over every pair, {TTFT_SAMPLES} a round)",
            self.ttft_delta_ms
        );
        if let Some(d) = self.server_ttft_delta_ms {
            println!("- llama-server TTFT - bare prefill = {d:+.1} ms");
        }
        println!(
            "- worker 4-stream aggregate / bare 4-sequence batch = {:.3}",
            self.agg4_vs_bare
        );
        if let Some(r) = self.agg4_vs_server {
            println!("- worker 4-stream aggregate / llama-server -np 4 = {r:.3} (target >= 1.0)");
        }
    }
}

/// Time-to-first-token samples a round takes of each contender, alternating with the bare
/// prefill: one TTFT from a single request is mostly the noise of one prefill (the bare
/// loop's own spread 77-122 ms on this machine).
const TTFT_SAMPLES: usize = 5;

/// The bare loop's prefill, timed on demand by a `rbee-bench prefill` child process that
/// stays loaded for the whole run.
struct PrefillTimer {
    child: std::process::Child,
    requests: std::process::ChildStdin,
    replies: std::io::BufReader<std::process::ChildStdout>,
}

impl PrefillTimer {
    fn start(me: &std::path::Path, model: &std::path::Path, threads: u32) -> anyhow::Result<Self> {
        let mut child = Command::new(me)
            .args(["prefill", "--model"])
            .arg(model)
            .args(["--tokens", "1", "--threads", &threads.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting rbee-bench prefill")?;
        let requests = child.stdin.take().context("prefill stdin")?;
        let replies = std::io::BufReader::new(child.stdout.take().context("prefill stdout")?);
        let mut timer = PrefillTimer {
            child,
            requests,
            replies,
        };
        // Loaded and warm before the first round measures anything.
        timer
            .time()
            .context("the first prefill of rbee-bench prefill")?;
        Ok(timer)
    }

    /// Milliseconds of one prefill and first-token sample.
    fn time(&mut self) -> anyhow::Result<f64> {
        use std::io::{BufRead, Write};
        writeln!(self.requests).context("rbee-bench prefill has ended")?;
        let mut line = String::new();
        self.replies.read_line(&mut line)?;
        line.trim()
            .parse()
            .with_context(|| format!("rbee-bench prefill answered {line:?}"))
    }
}

impl Drop for PrefillTimer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One round's TTFT samples: the bare prefill's, and each contender's in `contenders` order.
struct TtftSamples {
    bare: Vec<f64>,
    servers: Vec<Vec<f64>>,
    apis: Vec<Api>,
}

/// [`TTFT_SAMPLES`] times: a bare prefill, then a one-token request to each contender.
fn ttft_samples(
    prefill: &mut PrefillTimer,
    contenders: &[(&Server, Api)],
) -> anyhow::Result<TtftSamples> {
    let mut out = TtftSamples {
        bare: Vec::new(),
        servers: vec![Vec::new(); contenders.len()],
        apis: contenders.iter().map(|(_, api)| *api).collect(),
    };
    for _ in 0..TTFT_SAMPLES {
        out.bare.push(prefill.time()?);
        for ((s, api), v) in contenders.iter().zip(out.servers.iter_mut()) {
            v.push(one_stream(s.port, *api, 1)?.1);
        }
    }
    Ok(out)
}

/// Every sample's TTFT minus the bare prefill timed just before it, over the whole run.
#[derive(Default)]
struct TtftDeltas {
    worker: Vec<f64>,
    server: Vec<f64>,
}

impl TtftDeltas {
    fn add(&mut self, s: &TtftSamples) {
        for (api, v) in s.apis.iter().zip(&s.servers) {
            let into = match api {
                Api::Worker => &mut self.worker,
                Api::LlamaServer => &mut self.server,
            };
            into.extend(v.iter().zip(&s.bare).map(|(t, b)| t - b));
        }
    }
}

fn median_of(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    rbee_bench::stats::median(&mut xs.to_vec())
}

fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|k| k.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kib| kib / 1024.0)
}
