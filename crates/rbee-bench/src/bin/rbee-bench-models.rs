//! `rbee-bench-models`: download throughput from the test hub on loopback against `curl`
//! fetching the same file from the same server (interleaved rounds), and catalogue lookup
//! latency with 1,000 models.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use rbee_bench::stats::{median, percentile as pct};
use rbee_models::catalog::{Catalog, Model};
use rbee_models::hub::{self, HubConfig, RepoFile};
use rbee_test_support::hub::{sha256_file, Hub};
use rbee_test_support::model::TempDir;

/// Measures rbee's model downloads and catalogue.
#[derive(Parser)]
struct Args {
    /// The file to serve (default: the test model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Download rounds.
    #[arg(long, default_value_t = 15)]
    rounds: usize,
    /// Catalogue rows.
    #[arg(long, default_value_t = 1000)]
    models: usize,
    /// Catalogue lookups.
    #[arg(long, default_value_t = 20_000)]
    lookups: usize,
}

/// Runs `script` with `sh -c` (`$1` the output file, `$2` the URL), pipefail on; its wall
/// time in seconds and the machine's CPU use meanwhile. The file is removed afterwards.
fn timed_shell(script: &str, out: &std::path::Path, url: &str) -> anyhow::Result<(f64, f64)> {
    settle();
    let cpu = CpuUse::start();
    let t0 = Instant::now();
    let st = Command::new("bash")
        .args(["-o", "pipefail", "-c", script, "sh"])
        .arg(out)
        .arg(url)
        .status()
        .context("bash runs")?;
    let secs = t0.elapsed().as_secs_f64();
    let busy = cpu.busy();
    if !st.success() {
        bail!("`{script}` failed: {st}");
    }
    std::fs::remove_file(out)?;
    Ok((secs, busy))
}

/// Every timed download starts alike: nothing left dirty by the one before (whose writeback
/// would otherwise land in the next one's time), after a short pause.
fn settle() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    std::thread::sleep(Duration::from_millis(100));
}

/// The whole machine's CPU use over an interval, from `/proc/stat` (all cores; iowait
/// counts as idle).
struct CpuUse {
    total: u64,
    idle: u64,
}

impl CpuUse {
    fn read() -> (u64, u64) {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let v: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
        (v.iter().sum(), idle)
    }

    fn start() -> CpuUse {
        let (total, idle) = Self::read();
        CpuUse { total, idle }
    }

    /// The busy share (0–1) since `start`.
    fn busy(&self) -> f64 {
        let (total, idle) = Self::read();
        let dt = total.saturating_sub(self.total).max(1) as f64;
        1.0 - idle.saturating_sub(self.idle) as f64 / dt
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let model = match args.model.or_else(rbee_test_support::model::test_model) {
        Some(m) => m,
        None => bail!("no model: pass --model or run scripts/fetch-test-model"),
    };
    let size = std::fs::metadata(&model)?.len();
    let sha = sha256_file(&model);
    let hub = Hub::start();
    hub.add_repo(
        "org/bench",
        "c0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ff",
        &[("m.gguf", &model)],
    );
    let url = format!(
        "{}/org/bench/resolve/c0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ff/m.gguf",
        hub.endpoint()
    );
    let cfg = HubConfig {
        endpoint: hub.endpoint(),
        token: None,
        stall: Duration::from_secs(30),
        attempts: 1,
        backoff: Duration::from_millis(10),
        cache: None,
    };
    let file = RepoFile {
        path: "m.gguf".into(),
        size,
        sha256: Some(sha.clone()),
    };
    let dir = TempDir::new("bench-dl");
    println!(
        "== download of {:.1} MB from the test hub on loopback ({} rounds, interleaved)",
        size as f64 / 1e6,
        args.rounds
    );
    let (mut curl, mut curl_sync, mut rbee, mut ratio, mut ratio_sync) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut rbee_transfer, mut ratio_transfer) = (vec![], vec![]);
    let (mut curl_hash, mut ratio_hash) = (vec![], vec![]);
    let (mut curl_busy, mut rbee_busy) = (vec![], vec![]);
    let out = dir.join("curl.gguf");
    for round in 0..args.rounds {
        let (c, cb) = timed_shell("curl -sSf -o \"$1\" \"$2\"", &out, &url)?;
        // The same durability as rbee's download: the file fsynced before it counts.
        let (cs, _) = timed_shell("curl -sSf -o \"$1\" \"$2\" && sync \"$1\"", &out, &url)?;
        // The same work but the fsync: written and hashed while it arrives.
        let (ch, _) = timed_shell(
            "curl -sSf \"$2\" | tee \"$1\" | openssl dgst -sha256 > /dev/null",
            &out,
            &url,
        )?;
        let dest = dir.join("rbee.gguf");
        settle();
        let cpu = CpuUse::start();
        let t0 = Instant::now();
        let mut last_byte = None;
        let got = hub::download(
            &cfg,
            "org/bench",
            "c0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ff",
            &file,
            &dest,
            "bench",
            |t| {
                if t.bytes == t.total && last_byte.is_none() {
                    last_byte = Some(t0.elapsed().as_secs_f64());
                }
            },
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let r = t0.elapsed().as_secs_f64();
        rbee_busy.push(cpu.busy() * 100.0);
        curl_busy.push(cb * 100.0);
        let transfer = last_byte.unwrap_or(r);
        if got != sha {
            bail!("hash mismatch");
        }
        std::fs::remove_file(&dest)?;
        let (cm, csm, chm, rm) = (
            size as f64 / c / 1e6,
            size as f64 / cs / 1e6,
            size as f64 / ch / 1e6,
            size as f64 / r / 1e6,
        );
        eprintln!(
            "round {round}: curl {cm:.0} MB/s, curl+sync {csm:.0} MB/s, curl|tee|openssl {chm:.0} MB/s, rbee {rm:.0} MB/s"
        );
        curl_hash.push(chm);
        curl.push(cm);
        curl_sync.push(csm);
        rbee.push(rm);
        ratio.push(rm / cm);
        ratio_sync.push(rm / csm);
        let tm = size as f64 / transfer / 1e6;
        rbee_transfer.push(tm);
        ratio_transfer.push(tm / cm);
        ratio_hash.push(tm / chm);
    }
    println!("{:<58} {:>8}", "median", "MB/s");
    println!(
        "{:<58} {:>8.0}",
        "curl -o (no hash, no fsync)",
        median(&mut curl)
    );
    println!(
        "{:<58} {:>8.0}",
        "curl | tee FILE | openssl sha256 (hashed while written)",
        median(&mut curl_hash)
    );
    println!(
        "{:<58} {:>8.0}",
        "rbee download (SHA-256 while writing, fsync, rename)",
        median(&mut rbee)
    );
    println!(
        "{:<58} {:>8.0}",
        "rbee, to the last byte hashed and written (before fsync)",
        median(&mut rbee_transfer)
    );
    println!(
        "rbee / curl (median of per-round ratios) = {:.3}, quartiles {:.2}–{:.2} (target >= 0.9)",
        median(&mut ratio),
        pct(&mut ratio, 0.25),
        pct(&mut ratio, 0.75)
    );
    println!(
        "rbee to the last byte / curl = {:.3} (the transfer with hashing, without fsync)",
        median(&mut ratio_transfer)
    );
    println!(
        "rbee to the last byte / (curl | tee | openssl sha256) = {:.3} (the same work, no fsync)",
        median(&mut ratio_hash)
    );
    println!(
        "rbee / (curl + sync) = {:.3} (the same durability)",
        median(&mut ratio_sync)
    );
    println!(
        "machine CPU busy, median: curl {:.0} %, rbee {:.0} % (of {} cores, the hub included)",
        median(&mut curl_busy),
        median(&mut rbee_busy),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    println!("\n== catalogue lookups with {} models", args.models);
    let state = TempDir::new("bench-cat");
    let mut cat = Catalog::open(&state.join("models.db")).map_err(|e| anyhow::anyhow!("{e}"))?;
    for i in 0..args.models {
        cat.insert(&Model {
            repo: Some(format!("org/repo{i}")),
            revision: Some("main".into()),
            ..rbee_models::catalog::model_for_file(
                format!("org--repo{i}--m"),
                "hf",
                format!("hf:org/repo{i}/m.gguf@main"),
                "m.gguf".into(),
                format!("/models/{i}.gguf").into(),
                1,
                None,
            )
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let (mut by_id, mut by_ref) = (vec![], vec![]);
    for n in 0..args.lookups {
        let i = (n * 7919) % args.models;
        let t0 = Instant::now();
        let m = cat
            .get(&format!("org--repo{i}--m"))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        by_id.push(t0.elapsed().as_secs_f64() * 1e3);
        let t0 = Instant::now();
        let r = cat
            .by_reference(&format!("hf:org/repo{i}/m.gguf@main"))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        by_ref.push(t0.elapsed().as_secs_f64() * 1e3);
        if m.is_none() || r.is_none() {
            bail!("lookup {i} missed");
        }
    }
    println!("{:<30} {:>9} {:>9}", "", "p50 ms", "p99 ms");
    println!(
        "{:<30} {:>9.4} {:>9.4}",
        "by id",
        pct(&mut by_id, 0.5),
        pct(&mut by_id, 0.99)
    );
    println!(
        "{:<30} {:>9.4} {:>9.4}",
        "by reference",
        pct(&mut by_ref, 0.5),
        pct(&mut by_ref, 0.99)
    );
    Ok(())
}
