//! `rbee-bench-keeper`: what `rbee-keeper infer` costs, each figure next to its baseline in
//! one run.
//!
//! 1. Warm: `rbee-keeper infer` of a ~30-token prompt with 20 output tokens (greedy), run
//!    as a process end to end (through the hive's front door), against `curl` sending the
//!    same streamed chat request straight to the worker's `/v1/chat/completions`;
//!    interleaved round by round; medians. Target: keeper ≤ 1.1 × curl + 30 ms.
//! 2. Cold, with the model in the catalogue and no worker running: the same `infer`, against
//!    the worker's own load time (started directly, exec → `READY=1`). Target: ≤ load time
//!    + 300 ms.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use rbee_bench::harness::{direct_start, ms, sibling, Hive};
use rbee_bench::stats::median;
use rbee_test_support::model::TempDir;

/// Measures rbee-keeper infer against curl to the worker, warm and cold.
#[derive(Parser)]
struct Args {
    /// GGUF model (default: the test model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Warm rounds (each: keeper, then curl).
    #[arg(long, default_value_t = 9)]
    rounds: usize,
    /// Cold rounds (each: keeper with the worker stopped, then the worker started directly).
    #[arg(long, default_value_t = 5)]
    cold_rounds: usize,
}

const PROMPT: &str = "Write a short poem about honey bees collecting nectar from the flowers in a quiet garden on a warm summer morning.";
const TOKENS: u32 = 20;

struct Keeper {
    bin: PathBuf,
    dir: TempDir,
    model_ref: String,
}

impl Keeper {
    fn infer(&self) -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        let out = Command::new(&self.bin)
            .args([
                "infer",
                "--model",
                &self.model_ref,
                "--prompt",
                PROMPT,
                "--temperature",
                "0",
            ])
            .args(["--max-tokens", &TOKENS.to_string()])
            .env("RBEE_CONFIG", self.dir.join("config.toml"))
            .env("XDG_DATA_HOME", self.dir.join("data"))
            .stdin(Stdio::null())
            .output()?;
        let took = t0.elapsed();
        if !out.status.success() {
            bail!(
                "rbee-keeper failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(took)
    }
}

/// The request `infer` sends (a chat turn through the hive's front door), sent by curl
/// straight to the worker's own chat route: the same prompt, template and tokens.
fn curl(url: &str, key: &str, model: &str) -> anyhow::Result<Duration> {
    let body = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": TOKENS, "temperature": 0, "stream": true,
        "stream_options": {"include_usage": true},
    });
    let t0 = Instant::now();
    let out = Command::new("curl")
        .args([
            "-sSfN",
            "-o",
            "/dev/null",
            "-H",
            &format!("Authorization: Bearer {key}"),
        ])
        .args([
            "-H",
            "Content-Type: application/json",
            "-d",
            &serde_json::to_string(&body)?,
        ])
        .arg(format!("{url}/v1/chat/completions"))
        .output()?;
    let took = t0.elapsed();
    if !out.status.success() {
        bail!("curl failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(took)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let model: PathBuf = match args.model.or_else(rbee_test_support::model::test_model) {
        Some(m) => m,
        None => bail!("no model: pass --model or run scripts/fetch-test-model"),
    };
    let hive = Hive::start("process", &[])?;
    let dir = TempDir::new("bench-keeper");
    std::fs::write(
        dir.join("config.toml"),
        format!("[nodes.localhost]\nhive_url = {:?}\n", hive.url),
    )?;
    let keeper = Keeper {
        bin: sibling("rbee-keeper")?,
        dir,
        model_ref: format!("file://{}", model.display()),
    };
    keeper.infer().context("the first (warming) run")?;
    let w = hive
        .client
        .workers()?
        .into_iter()
        .next()
        .context("no worker after the first run")?;
    let key = hive.worker_key(&w.id)?;
    let url = w.url;
    println!(
        "== warm: rbee-keeper infer vs curl to the worker ({} rounds, interleaved; {TOKENS} tokens, greedy)",
        args.rounds
    );
    let (mut k, mut c) = (vec![], vec![]);
    for _ in 0..args.rounds {
        k.push(ms(keeper.infer()?));
        c.push(ms(curl(&url, &key, &keeper.model_ref)?));
    }
    let (km, cm) = (median(&mut k), median(&mut c));
    println!("{:<52} {:>9}", "median", "ms");
    println!(
        "{:<52} {cm:>9.1}",
        "curl, straight to the worker (baseline)"
    );
    println!(
        "{:<52} {km:>9.1}",
        "rbee-keeper infer (process, end to end)"
    );
    println!(
        "keeper = {:.2} × curl; {:+.1} ms against the target 1.1 × curl + 30 ms = {:.1} ms",
        km / cm,
        km - (1.1 * cm + 30.0),
        1.1 * cm + 30.0
    );
    let worker_bin = sibling("llm-worker-rbee")?;
    println!(
        "\n== cold: the model catalogued, no worker running ({} rounds)",
        args.cold_rounds
    );
    let (mut cold, mut load) = (vec![], vec![]);
    for _ in 0..args.cold_rounds {
        stop_all(&hive)?;
        cold.push(ms(keeper.infer()?));
        load.push(ms(direct_start(&worker_bin, &model)?));
    }
    let (coldm, loadm) = (median(&mut cold), median(&mut load));
    println!("{:<52} {:>9}", "median", "ms");
    println!(
        "{:<52} {loadm:>9.1}",
        "worker load, exec → READY=1 (baseline)"
    );
    println!(
        "{:<52} {coldm:>9.1}",
        "rbee-keeper infer, cold (spawn, load, 20 tokens)"
    );
    println!(
        "cold − load = {:.1} ms (target ≤ 300 ms; includes generating the {TOKENS} tokens)",
        coldm - loadm
    );
    Ok(())
}

/// Stops every worker of the hive and waits until none is listed.
fn stop_all(hive: &Hive) -> anyhow::Result<()> {
    for w in hive.client.workers()? {
        hive.stop_worker(&w.id)?;
    }
    let t0 = Instant::now();
    while !hive.client.workers()?.is_empty() {
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("workers still listed after 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
