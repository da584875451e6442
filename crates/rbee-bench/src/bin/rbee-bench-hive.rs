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

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use rbee_bench::stats::{median, percentile as pct};
use rbee_test_support::model::TempDir;
use rbee_test_support::process::{free_port, wait_for_port};
use rbee_test_support::systemd::UserManager;
use serde_json::{json, Value};

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

fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let p = std::env::current_exe()?
        .parent()
        .context("no parent dir")?
        .join(name);
    if !p.is_file() {
        bail!("{} not built (cargo build --release)", p.display());
    }
    Ok(p)
}

struct Hive {
    child: Child,
    url: String,
    agent: ureq::Agent,
    _state: TempDir,
}

impl Hive {
    fn start(supervisor: &str, env: &[(&'static str, String)]) -> anyhow::Result<Hive> {
        let state = TempDir::new("bench-hive");
        let port = free_port();
        let ports = free_port().max(20_000);
        let config = state.join("hive.toml");
        std::fs::write(
            &config,
            format!(
                "port = {port}\nstate_dir = {:?}\nsupervisor = {supervisor:?}\nworker_binary = {:?}\nworker_ports = \"{ports}-{}\"\nhealth_interval_secs = 30\n",
                state.0.display().to_string(),
                sibling("llm-worker-rbee")?.display().to_string(),
                ports + 300
            ),
        )?;
        let child = Command::new(sibling("rbee-hive")?)
            .arg("--config")
            .arg(&config)
            .envs(env.iter().cloned())
            .env("RBEE_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()?;
        if !wait_for_port(port, Duration::from_secs(20)) {
            bail!("the hive did not start");
        }
        Ok(Hive {
            child,
            url: format!("http://127.0.0.1:{port}"),
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(60))
                .build(),
            _state: state,
        })
    }

    fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self
            .agent
            .get(&format!("{}{path}", self.url))
            .call()?
            .into_json()?)
    }

    fn get_text(&self, path: &str) -> anyhow::Result<String> {
        Ok(self
            .agent
            .get(&format!("{}{path}", self.url))
            .call()?
            .into_string()?)
    }

    fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let r = self
            .agent
            .post(&format!("{}{path}", self.url))
            .send_json(body.clone());
        match r {
            Ok(r) => Ok(r.into_json()?),
            Err(ureq::Error::Status(_, r)) => bail!("{}", r.into_string()?),
            Err(e) => Err(e.into()),
        }
    }

    /// Spawns and waits for `idle`; returns (elapsed, id).
    fn timed_spawn(&self, body: &Value) -> anyhow::Result<(Duration, String)> {
        let t0 = Instant::now();
        let r = self.post("/v1/workers/spawn", body)?;
        let id = r["worker"]["id"].as_str().context("no id")?.to_owned();
        loop {
            let w = self.get(&format!("/v1/workers/{id}"))?;
            if w["worker"]["state"] == "idle" {
                return Ok((t0.elapsed(), id));
            }
            if t0.elapsed() > Duration::from_secs(120) {
                bail!("worker {id} not ready after 120 s");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn stop_worker(&self, id: &str) -> anyhow::Result<()> {
        self.post(&format!("/v1/workers/{id}/shutdown"), &json!({}))?;
        Ok(())
    }

    fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id())
    }
}

impl Drop for Hive {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child; SIGTERM makes it stop its workers first.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The worker started directly, exec → `READY=1` on our own notify socket.
fn direct_start(worker: &Path, model: &Path) -> anyhow::Result<Duration> {
    let dir = TempDir::new("bench-notify");
    let sock_path = dir.join("n.sock");
    let sock = UnixDatagram::bind(&sock_path)?;
    sock.set_read_timeout(Some(Duration::from_secs(120)))?;
    let t0 = Instant::now();
    let mut child = Command::new(worker)
        .args([
            "--model",
            &model.display().to_string(),
            "--port",
            &free_port().to_string(),
            "--slots",
            "1",
        ])
        .env("NOTIFY_SOCKET", &sock_path)
        .env("RBEE_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()?;
    let mut buf = [0u8; 4096];
    let elapsed = loop {
        let n = sock.recv(&mut buf)?;
        if String::from_utf8_lossy(&buf[..n])
            .lines()
            .any(|l| l == "READY=1")
        {
            break t0.elapsed();
        }
    };
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait()?;
    Ok(elapsed)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
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
    let body = json!({ "model_ref": format!("file://{}", model.display()) });
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
                let r = proc_hive.post(
                    "/v1/workers/spawn",
                    &json!({ "model_ref": format!("file://{}", p.display()), "ctx_size": 16 }),
                )?;
                Ok(r["worker"]["id"].as_str().unwrap_or_default().to_owned())
            })
            .collect::<anyhow::Result<_>>()?;
        for id in &batch {
            let t0 = Instant::now();
            while proc_hive.get(&format!("/v1/workers/{id}"))?["worker"]["state"] != "idle" {
                if t0.elapsed() > Duration::from_secs(120) {
                    bail!("worker {id} not ready");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        started += batch.len();
    }
    let listed = proc_hive.get("/v1/workers/list")?["workers"]
        .as_array()
        .map_or(0, Vec::len);
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
