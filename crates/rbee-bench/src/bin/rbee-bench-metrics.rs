//! `rbee-bench-metrics`: what scraping `/metrics` costs decoding, next to its baseline in
//! one run. A hive (child-process workers) with one worker of the model; rounds of
//! streamed greedy chat answers through the front door, alternately with nothing else
//! running and with a scraper that fetches the hive's and the worker's `/metrics` every
//! `--interval-ms` (default 1000, fifteen times as often as Prometheus' usual 15 s). Figures: decode
//! speed (tokens after the first, per second) medians, the median of per-round ratios
//! scraped / quiet, scrapes made and the mean time of one scrape pair.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Parser;
use rbee_bench::harness::{file_ref, Hive};
use rbee_bench::openai_stream::stream_body;
use rbee_bench::stats::median;
use rbee_types::hive::SpawnRequest;
use rbee_types::Backend;

/// Measures the cost of metrics scrapes on decoding.
#[derive(Parser)]
struct Args {
    /// GGUF model (default: the test model).
    #[arg(long)]
    model: Option<std::path::PathBuf>,
    /// Rounds; each has one quiet and one scraped answer, in alternating order.
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// Tokens per answer (long enough for several scrapes each).
    #[arg(long, default_value_t = 384)]
    tokens: u32,
    /// Time between scrapes, ms.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let Some(model) = args
        .model
        .clone()
        .or_else(rbee_test_support::model::test_model)
    else {
        bail!("no model: pass --model or run scripts/fetch-test-model");
    };
    let reference = file_ref(&model)?;
    let hive = Hive::start("process", &[])?;
    let id = hive.spawn(&SpawnRequest::new(reference.clone(), Backend::Cpu, 0))?;
    hive.wait_idle(&id, Instant::now(), Duration::from_millis(20))?;
    let worker = hive.client.worker(&id)?;
    let key = hive.worker_key(&id)?;
    let name = reference.to_string();
    let body = serde_json::json!({
        "model": name,
        "messages": [{"role": "user", "content": "Tell a long story about a bee colony."}],
        "temperature": 0, "max_tokens": args.tokens, "stream": true,
    });
    let answer = || stream_body(&hive.url, None, &body).map(|r| r.decode_tok_s);
    answer()?; // warm-up: page faults of the weights
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    let scrape = || -> anyhow::Result<usize> {
        let h = agent
            .get(&format!("{}/metrics", hive.url))
            .call()?
            .into_string()?;
        let w = agent
            .get(&format!("{}/metrics", worker.url))
            .set("Authorization", &format!("Bearer {key}"))
            .call()?
            .into_string()?;
        Ok(h.len() + w.len())
    };
    eprintln!(
        "rbee-bench-metrics: {} rounds of {} tokens, a scrape of the hive and the worker every {} ms while scraped; metrics text {} bytes",
        args.rounds,
        args.tokens,
        args.interval_ms,
        scrape()?
    );
    let (mut quiet, mut scraped, mut ratios) = (vec![], vec![], vec![]);
    let (mut scrapes, mut scrape_time) = (0u32, Duration::ZERO);
    for round in 0..args.rounds {
        let q_first = round % 2 == 0;
        let mut q = 0.0;
        if q_first {
            q = answer()?;
        }
        let stop = AtomicBool::new(false);
        let (s, (n, t)) = std::thread::scope(|sc| -> anyhow::Result<_> {
            let scraper = sc.spawn(|| {
                let (mut n, mut t) = (0u32, Duration::ZERO);
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    if scrape().is_ok() {
                        n += 1;
                        t += t0.elapsed();
                    }
                    let next = Instant::now() + Duration::from_millis(args.interval_ms);
                    while !stop.load(Ordering::Relaxed) && Instant::now() < next {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                (n, t)
            });
            let s = answer();
            stop.store(true, Ordering::Relaxed);
            Ok((s?, scraper.join().unwrap_or_default()))
        })?;
        if !q_first {
            q = answer()?;
        }
        scrapes += n;
        scrape_time += t;
        eprintln!(
            "rbee-bench-metrics: round {}: quiet {q:.1} tok/s, scraped {s:.1} tok/s ({n} scrapes)",
            round + 1
        );
        quiet.push(q);
        scraped.push(s);
        ratios.push(s / q);
    }
    println!(
        "| decode, tokens after the first | tok/s (median of {}) |",
        args.rounds
    );
    println!("|---|---|");
    println!("| quiet | {:.1} |", median(&mut quiet));
    println!(
        "| scraped every {} ms (hive and worker) | {:.1} |",
        args.interval_ms,
        median(&mut scraped)
    );
    println!(
        "- scraped / quiet = {:.3} (median of per-round ratios; target >= 0.99)",
        median(&mut ratios)
    );
    println!(
        "- {scrapes} scrape pairs, {:.2} ms each on average",
        scrape_time.as_secs_f64() * 1e3 / f64::from(scrapes.max(1))
    );
    Ok(())
}
