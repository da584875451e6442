//! What the benchmarks share: a real hive started on a free port with its own state, and
//! the worker started directly (the baseline of every hive and keeper figure).

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rbee_client::HiveClient;
use rbee_test_support::model::TempDir;
use rbee_test_support::process::{free_port, wait_for_port, worker_ports};
use rbee_types::hive::{SpawnRequest, WorkerState};

/// A binary next to this benchmark (`target/release/<name>`).
pub fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let p = std::env::current_exe()?
        .parent()
        .context("no parent dir")?
        .join(name);
    if !p.is_file() {
        bail!("{} not built (cargo build --release)", p.display());
    }
    Ok(p)
}

/// `file://<p>` as a model reference.
pub fn file_ref(p: &Path) -> anyhow::Result<rbee_types::ModelRef> {
    Ok(format!("file://{}", p.display()).parse()?)
}

/// A hive started by a benchmark; stopped (SIGTERM, its workers with it) on drop.
pub struct Hive {
    /// The process.
    pub child: Child,
    /// Its base URL.
    pub url: String,
    /// A client of its API.
    pub client: HiveClient,
    agent: ureq::Agent,
    state: TempDir,
}

impl Hive {
    /// Starts a hive (`process` or `systemd-user`) on a free port with its own state.
    pub fn start(supervisor: &str, env: &[(&'static str, String)]) -> anyhow::Result<Hive> {
        let state = TempDir::new("bench-hive");
        let port = free_port();
        let ports = worker_ports(300, port);
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
        let url = format!("http://127.0.0.1:{port}");
        Ok(Hive {
            child,
            client: HiveClient::new(&url, None).with_timeout(Duration::from_secs(60)),
            url,
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(60))
                .build(),
            state,
        })
    }

    /// Worker `id`'s key, from the record the hive keeps in its state directory (the API
    /// does not hand worker keys out; a benchmark calling a worker directly reads it there).
    pub fn worker_key(&self, id: &str) -> anyhow::Result<String> {
        let path = self.state.join("workers").join(format!("{id}.key"));
        let key = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
        Ok(key.trim().to_owned())
    }

    /// GET text, unparsed (timed to the last byte of the body).
    pub fn get_text(&self, path: &str) -> anyhow::Result<String> {
        Ok(self
            .agent
            .get(&format!("{}{path}", self.url))
            .call()?
            .into_string()?)
    }

    /// Spawns and waits for `idle`; returns (elapsed, id).
    pub fn timed_spawn(&self, req: &SpawnRequest) -> anyhow::Result<(Duration, String)> {
        let t0 = Instant::now();
        let id = self.spawn(req)?;
        self.wait_idle(&id, t0, Duration::from_millis(2))?;
        Ok((t0.elapsed(), id))
    }

    /// Asks for a worker; its id.
    pub fn spawn(&self, req: &SpawnRequest) -> anyhow::Result<String> {
        let (_, r) = self.client.spawn(req)?;
        Ok(r.worker.context("the spawn answered without a worker")?.id)
    }

    /// Polls worker `id` every `every` until it is idle (at most 120 s after `t0`).
    pub fn wait_idle(&self, id: &str, t0: Instant, every: Duration) -> anyhow::Result<()> {
        while self.client.worker(id)?.state != WorkerState::Idle {
            if t0.elapsed() > Duration::from_secs(120) {
                bail!("worker {id} not ready after 120 s");
            }
            std::thread::sleep(every);
        }
        Ok(())
    }

    /// Drains and stops a worker.
    pub fn stop_worker(&self, id: &str) -> anyhow::Result<()> {
        self.client.stop_worker(id)?;
        Ok(())
    }

    /// Its resident memory, KiB.
    pub fn rss_kib(&self) -> u64 {
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

/// Resident memory of a process, KiB.
pub fn rss_kib(pid: u32) -> u64 {
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
pub fn direct_start(worker: &Path, model: &Path) -> anyhow::Result<Duration> {
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

/// Milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A server process (killed on drop) and its port.
pub struct Server {
    /// The process.
    pub child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Server {
    /// Starts `cmd` (listening on `port`) and waits until `ready_path` says it is ready
    /// (`"ready": true` or `"status": "ok"`), at most 120 s.
    pub fn start(cmd: &mut Command, port: u16, ready_path: &str) -> anyhow::Result<Server> {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        let s = Server { child, port };
        let until = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(r) = ureq::get(&format!("http://127.0.0.1:{port}{ready_path}")).call() {
                let v: serde_json::Value = r.into_json().unwrap_or_default();
                if v["ready"] == true || v["status"] == "ok" {
                    return Ok(s);
                }
            }
            if Instant::now() > until {
                bail!("{cmd:?} not ready after 120 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `llm-worker-rbee` and `llama-server` (binary `llama_server`) on `model`, both with
/// `slots` slots of `ctx` tokens and `threads` threads, ready. (llama-server divides its
/// `-c` among its slots.)
pub fn worker_and_llama_server(
    model: &Path,
    llama_server: &Path,
    slots: u32,
    ctx: u32,
    threads: &str,
) -> anyhow::Result<(Server, Server)> {
    let wport = free_port();
    let worker = Server::start(
        Command::new(sibling("llm-worker-rbee")?)
            .arg("--model")
            .arg(model)
            .args(["--port", &wport.to_string(), "--slots", &slots.to_string()])
            .args(["--ctx-size", &ctx.to_string(), "--threads", threads]),
        wport,
        "/v1/ready",
    )?;
    let lport = free_port();
    let server = Server::start(
        Command::new(llama_server)
            .arg("-m")
            .arg(model)
            .args(["--host", "127.0.0.1", "--port", &lport.to_string()])
            .args(["-np", &slots.to_string(), "-c", &(ctx * slots).to_string()])
            .args(["-t", threads, "-tb", threads]),
        lport,
        "/health",
    )?;
    Ok((worker, server))
}

/// The newest llama-server built by scripts/build-llama-server in the cache.
pub fn default_llama_server() -> Option<PathBuf> {
    let cache = std::env::var_os("RBEE_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/rbee")))?;
    std::fs::read_dir(&cache)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path().join("build/bin/llama-server"))
        .find(|p| p.is_file())
}
