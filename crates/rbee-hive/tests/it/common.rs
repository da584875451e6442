//! Starting the real `rbee-hive` (with the real worker and model) for tests.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use rbee_test_support::http::{send, Reply};
use rbee_test_support::model::TempDir;
use rbee_test_support::process::{free_port, wait_for_port, worker_ports, ChildGuard};
use rbee_test_support::systemd::UserManager;
use serde_json::{json, Value};

pub use rbee_test_support::model::{model_and_worker as model, worker_binary};
pub use rbee_test_support::systemd::user_manager_or_skip as user_manager;

/// The test model, a private user manager and a state directory for a hive, or `None`
/// after printing why the test skips.
pub fn setup() -> Option<(PathBuf, UserManager, TempDir)> {
    let model = model()?;
    let manager = user_manager()?;
    Some((model, manager, temp("hive-state")))
}

/// Writes an executable shell script (a stand-in worker binary) and returns its path. It
/// answers `--version` like the real worker (the hive checks that before it runs one).
pub fn script(dir: &TempDir, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'llm-worker-rbee 0.1.0 (backends: cpu)'; exit 0; fi\n{body}"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path
}

/// `file://` reference of a path.
pub fn file_ref(p: &Path) -> String {
    format!("file://{}", p.display())
}

/// How to start a hive.
#[derive(Clone)]
pub struct Opts {
    /// `systemd-user`, `process`, …
    pub supervisor: &'static str,
    /// Idle timeout, seconds.
    pub idle_timeout: u64,
    /// Health interval, seconds.
    pub health_interval: u64,
    /// API key, if any.
    pub key: Option<String>,
    /// More TOML (e.g. a `[limits]` table), appended.
    pub extra: String,
    /// The worker binary (a wrapper in some tests).
    pub worker_binary: PathBuf,
    /// Environment (the user manager's bus).
    pub env: Vec<(&'static str, String)>,
    /// A file the hive's log is appended to (default: the test's stderr).
    pub log: Option<PathBuf>,
}

impl Opts {
    /// Defaults for `supervisor`: long idle timeout, 1 s health checks, no key.
    pub fn new(supervisor: &'static str) -> Opts {
        Opts {
            supervisor,
            idle_timeout: 600,
            health_interval: 1,
            key: None,
            extra: String::new(),
            worker_binary: worker_binary(),
            env: vec![],
            log: None,
        }
    }

    /// The same, against a private user manager.
    pub fn systemd(manager: &UserManager) -> Opts {
        Opts {
            env: manager.env(),
            ..Opts::new("systemd-user")
        }
    }
}

/// A running hive; killed on drop.
pub struct Hive {
    /// The process.
    pub child: ChildGuard,
    /// Base URL.
    pub url: String,
    /// Port.
    pub port: u16,
    /// How it was started.
    pub opts: Opts,
    /// Its state directory.
    pub state: PathBuf,
}

impl Hive {
    /// Starts a hive on a fresh port with its state in `state` and waits for its API.
    pub fn start(opts: &Opts, state: &Path) -> Hive {
        let port = free_port();
        let ports_start = worker_ports(40, port);
        std::fs::create_dir_all(state).unwrap();
        let mut config = format!(
            "port = {port}\nstate_dir = {:?}\nsupervisor = {:?}\nidle_timeout_secs = {}\nhealth_interval_secs = {}\nworker_binary = {:?}\nworker_ports = \"{}-{}\"\nstop_timeout_secs = 15\n",
            state.display().to_string(),
            opts.supervisor,
            opts.idle_timeout,
            opts.health_interval,
            opts.worker_binary.display().to_string(),
            ports_start,
            ports_start + 40,
        );
        if let Some(key) = &opts.key {
            let key_file = state.join("api.key");
            std::fs::write(&key_file, key).unwrap();
            config.push_str(&format!(
                "api_key_file = {:?}\n",
                key_file.display().to_string()
            ));
        }
        if !opts.extra.contains("model_dirs") {
            // Tests keep fixture models in temporary directories.
            config.push_str(&format!(
                "model_dirs = [{:?}]\n",
                std::env::temp_dir().display().to_string()
            ));
        }
        config.push_str(&opts.extra);
        let config_file = state.join("hive.toml");
        std::fs::write(&config_file, config).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rbee-hive"));
        cmd.arg("--config")
            .arg(&config_file)
            .env("RBEE_LOG", "info");
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        if let Some(log) = &opts.log {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap();
            cmd.stderr(file);
        }
        let child = ChildGuard::spawn(&mut cmd);
        assert!(
            wait_for_port(port, Duration::from_secs(20)),
            "the hive did not listen on {port}"
        );
        Hive {
            child,
            url: format!("http://127.0.0.1:{port}"),
            port,
            opts: opts.clone(),
            state: state.to_owned(),
        }
    }

    /// A worker's key, from the record the hive keeps in its state directory (the API does
    /// not hand worker keys out).
    pub fn worker_key(&self, worker: &Value) -> String {
        let id = worker["id"].as_str().unwrap();
        let path = self.state.join("workers").join(format!("{id}.key"));
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim()
            .to_owned()
    }

    /// A short greedy answer from one of its workers, through the worker's own API.
    pub fn infer(&self, worker: &Value, prompt: &str) -> Reply {
        infer(worker, &self.worker_key(worker), prompt)
    }

    /// A request with the hive's key (if it has one).
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        let body = body.map(|b| b.to_string().into_bytes());
        send(
            method,
            &format!("{}{path}", self.url),
            self.opts.key.as_deref(),
            body.as_deref(),
        )
    }

    /// GET with the key.
    pub fn get(&self, path: &str) -> Reply {
        self.call("GET", path, None)
    }

    /// POST JSON with the key.
    pub fn post(&self, path: &str, body: &Value) -> Reply {
        self.call("POST", path, Some(body))
    }

    /// Spawns a worker for `model`; returns the reply (any status).
    pub fn spawn_model(&self, model: &Path) -> Reply {
        self.post(
            "/v1/workers/spawn",
            &json!({ "model_ref": file_ref(model) }),
        )
    }

    /// Every worker the hive lists.
    pub fn workers(&self) -> Vec<Value> {
        let r = self.get("/v1/workers/list");
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["workers"].as_array().cloned().unwrap_or_default()
    }

    /// The worker `id`, if listed.
    pub fn worker(&self, id: &str) -> Option<Value> {
        self.workers().into_iter().find(|w| w["id"] == id)
    }

    /// Waits until worker `id` is in `state`; returns it.
    pub fn wait_state(&self, id: &str, state: &str, timeout: Duration) -> Value {
        let until = Instant::now() + timeout;
        loop {
            let w = self.worker(id);
            if let Some(w) = &w {
                if w["state"] == state {
                    return w.clone();
                }
            }
            assert!(
                Instant::now() < until,
                "worker {id} not {state} within {timeout:?}: {w:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until worker `id` is no longer listed; returns how long that took.
    pub fn wait_gone(&self, id: &str, timeout: Duration) -> Duration {
        let t0 = Instant::now();
        while self.worker(id).is_some() {
            assert!(
                t0.elapsed() < timeout,
                "worker {id} still listed after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        t0.elapsed()
    }

    /// Spawns and waits until the worker is idle; returns it.
    pub fn ready_worker(&self, model: &Path) -> Value {
        self.ready_worker_ref(&file_ref(model))
    }

    /// Spawns a model reference and waits until its worker is idle; returns it.
    pub fn ready_worker_ref(&self, reference: &str) -> Value {
        let r = self.post("/v1/workers/spawn", &json!({ "model_ref": reference }));
        assert!(r.status == 202 || r.status == 200, "{}", r.body);
        let id = r.json()["worker"]["id"].as_str().unwrap().to_owned();
        self.wait_state(&id, "idle", Duration::from_secs(120))
    }

    /// Follows a progress stream (download, build) to its end; the events without `[DONE]`.
    pub fn follow(&self, progress_url: &str) -> Vec<Value> {
        let mut sse = rbee_test_support::http::Sse::get(&format!("{}{progress_url}", self.url))
            .unwrap_or_else(|r| panic!("{}", r.body));
        sse.collect()
    }

    /// SIGKILL, and reap.
    pub fn kill(mut self) {
        self.child.signal(libc::SIGKILL);
        self.child.wait_timeout(Duration::from_secs(10));
    }

    /// SIGTERM; waits for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.child.signal(libc::SIGTERM);
        self.child.wait_timeout(timeout)
    }
}

/// A short greedy answer from a worker, through its own API with its key.
pub fn infer(worker: &Value, key: &str, prompt: &str) -> Reply {
    send(
        "POST",
        &format!("{}/v1/inference", worker["url"].as_str().unwrap()),
        Some(key),
        Some(
            json!({"prompt": prompt, "max_tokens": 8, "temperature": 0.0, "stream": false})
                .to_string()
                .as_bytes(),
        ),
    )
}

/// Whether a process exists.
pub fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

/// A fresh temporary directory.
pub fn temp(tag: &str) -> TempDir {
    TempDir::new(tag)
}
