//! `rbee-bench-hive`: what the hive costs, each figure next to its baseline in one run.
//!
//! 1. Spawn overhead: `POST /v1/workers/spawn` → the hive lists the worker `idle` (it got
//!    `READY=1`), minus the same worker binary started directly by this program and timed
//!    from exec to its `READY=1` (the worker's own start and model load). Process and
//!    systemd supervisors, interleaved round by round; the overhead is the median of the
//!    paired differences.
//! 2. Idle RSS of a hive with no workers (and with `--workers` of them).
//! 3. `GET /v1/workers/list` latency with `--workers` registered workers (real workers of
//!    hard links to the test model, 16-token contexts), against `GET /v1/health` on the
//!    same hive as the floor of the HTTP path; interleaved, p50 and p99.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use rbee_bench::harness::{direct_start, file_ref, ms, sibling, Hive};
use rbee_bench::stats::{median, percentile as pct};
use rbee_test_support::systemd::UserManager;
use rbee_types::hive::SpawnRequest;
use rbee_types::Backend;

/// Measures rbee-hive's spawn overhead, idle RSS and list latency.
#[derive(Parser)]
struct Args {
    /// GGUF model (default: the test model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Spawn rounds per supervisor.
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// Workers registered for the list benchmark.
    #[arg(long, default_value_t = 100)]
    workers: usize,
    /// Requests per endpoint in the list benchmark.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let model = match args.model.or_else(rbee_test_support::model::test_model) {
        Some(m) => m,
        None => bail!("no model: pass --model or run scripts/fetch-test-model"),
    };
    let worker = sibling("llm-worker-rbee")?;
    let manager = match UserManager::start() {
        Ok(m) => Some(m),
        Err(e) => {
            eprintln!("no private systemd user manager ({e}): systemd figures left out");
            None
        }
    };

    // Idle RSS before anything ran.
    let proc_hive = Hive::start("process", &[])?;
    std::thread::sleep(Duration::from_millis(500));
    let idle_rss = proc_hive.rss_kib();
    let sd_hive = match &manager {
        Some(m) => Some(Hive::start("systemd-user", &m.env())?),
        None => None,
    };
    std::thread::sleep(Duration::from_millis(500));
    let idle_rss_sd = sd_hive.as_ref().map(Hive::rss_kib);

    println!("== spawn → READY ({} rounds, interleaved)", args.rounds);
    let body = SpawnRequest::new(file_ref(&model)?, Backend::Cpu, 0);
    let (mut direct, mut proc_t, mut sd_t) = (vec![], vec![], vec![]);
    let (mut proc_over, mut sd_over) = (vec![], vec![]);
    for round in 0..args.rounds {
        let d = ms(direct_start(&worker, &model)?);
        let (p, id) = proc_hive.timed_spawn(&body)?;
        proc_hive.stop_worker(&id)?;
        direct.push(d);
        proc_t.push(ms(p));
        proc_over.push(ms(p) - d);
        if let Some(h) = &sd_hive {
            let (s, id) = h.timed_spawn(&body)?;
            h.stop_worker(&id)?;
            sd_t.push(ms(s));
            sd_over.push(ms(s) - d);
        }
        eprintln!(
            "round {round}: direct {d:.1} ms, process {:.1} ms, systemd {}",
            ms(p),
            sd_t.last().map_or("-".into(), |s| format!("{s:.1} ms"))
        );
    }
    println!("{:<44} {:>10}", "median", "ms");
    println!(
        "{:<44} {:>10.1}",
        "worker started directly (exec → READY=1)",
        median(&mut direct)
    );
    println!(
        "{:<44} {:>10.1}",
        "hive, process supervisor (spawn → idle)",
        median(&mut proc_t)
    );
    if !sd_t.is_empty() {
        println!(
            "{:<44} {:>10.1}",
            "hive, systemd supervisor (spawn → idle)",
            median(&mut sd_t)
        );
    }
    println!(
        "{:<44} {:>10.1}",
        "overhead, process (paired median)",
        median(&mut proc_over)
    );
    if !sd_over.is_empty() {
        println!(
            "{:<44} {:>10.1}",
            "overhead, systemd (paired median)",
            median(&mut sd_over)
        );
    }
    drop(sd_hive);

    println!(
        "\n== list latency with {} workers ({} requests each, interleaved)",
        args.workers, args.requests
    );
    // Hard links: distinct paths (so distinct workers), one page cache.
    let link_dir = model
        .parent()
        .context("model dir")?
        .join(format!(".bench-links-{}", std::process::id()));
    std::fs::create_dir_all(&link_dir)?;
    let _cleanup = scopeguard(link_dir.clone());
    let mut started = 0;
    while started < args.workers {
        let batch: Vec<String> = (started..(started + 4).min(args.workers))
            .map(|i| -> anyhow::Result<String> {
                let p = link_dir.join(format!("m{i:03}.gguf"));
                std::fs::hard_link(&model, &p)?;
                proc_hive.spawn(&SpawnRequest {
                    ctx_size: Some(16),
                    ..SpawnRequest::new(file_ref(&p)?, Backend::Cpu, 0)
                })
            })
            .collect::<anyhow::Result<_>>()?;
        for id in &batch {
            proc_hive.wait_idle(id, Instant::now(), Duration::from_millis(20))?;
        }
        started += batch.len();
    }
    let listed = proc_hive.client.workers()?.len();
    let (mut health, mut list) = (vec![], vec![]);
    for _ in 0..args.requests {
        // Timed to the last byte of the body; parsing it is the client's business.
        for (path, out) in [("/v1/health", &mut health), ("/v1/workers/list", &mut list)] {
            let t0 = Instant::now();
            let body = proc_hive.get_text(path)?;
            out.push(ms(t0.elapsed()));
            std::hint::black_box(body);
        }
    }
    println!(
        "{:<44} {:>8} {:>8}",
        format!("({listed} workers listed)"),
        "p50 ms",
        "p99 ms"
    );
    println!(
        "{:<44} {:>8.3} {:>8.3}",
        "GET /v1/health (baseline)",
        pct(&mut health, 0.5),
        pct(&mut health, 0.99)
    );
    println!(
        "{:<44} {:>8.3} {:>8.3}",
        "GET /v1/workers/list",
        pct(&mut list, 0.5),
        pct(&mut list, 0.99)
    );

    println!("\n== hive RSS");
    println!(
        "{:<44} {:>8.1} MiB",
        "idle, process supervisor, 0 workers",
        idle_rss as f64 / 1024.0
    );
    if let Some(r) = idle_rss_sd {
        println!(
            "{:<44} {:>8.1} MiB",
            "idle, systemd supervisor, 0 workers",
            r as f64 / 1024.0
        );
    }
    println!(
        "{:<44} {:>8.1} MiB",
        format!("process supervisor, {listed} workers"),
        proc_hive.rss_kib() as f64 / 1024.0
    );
    Ok(())
}

/// Removes the hard links when dropped.
fn scopeguard(dir: PathBuf) -> impl Drop {
    struct G(PathBuf);
    impl Drop for G {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    G(dir)
}
