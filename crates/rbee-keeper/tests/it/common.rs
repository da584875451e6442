//! A keeper, a hive (or two) whose workers run under a private systemd user manager, the
//! real worker and model, and the test Hugging Face hub.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use rbee_test_support::hub::Hub;
use rbee_test_support::model::{model_and_worker, worker_binary, TempDir};
use rbee_test_support::process::{free_port, wait_for_port, worker_ports, ChildGuard};
use rbee_test_support::systemd::{user_manager_or_skip, UserManager};

/// A hive on a free port, its hub, and a keeper configured for it as `localhost`.
pub struct Env {
    pub manager: UserManager,
    pub hub: Hub,
    pub hive_port: u16,
    pub dir: TempDir,
    pub hive: Option<ChildGuard>,
    pub model: PathBuf,
    /// More environment for every command started (the hive's too).
    pub extra_env: Vec<(String, PathBuf)>,
}

fn hive_binary() -> PathBuf {
    worker_binary().with_file_name("rbee-hive")
}

impl Env {
    /// Everything but the hive (see [`Env::start_hive`]).
    pub fn new() -> Option<Env> {
        let model = model_and_worker()?;
        rbee_test_support::skip_unless!(
            hive_binary().is_file(),
            "rbee-hive not built (cargo build --release)"
        );
        let manager = user_manager_or_skip()?;
        let hub = Hub::start();
        hub.add_repo(
            "org/smol",
            "c0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ff",
            &[("smol.Q4_1.gguf", &model)],
        );
        let dir = TempDir::new("keeper-e2e");
        let hive_port = free_port();
        std::fs::write(
            dir.join("config.toml"),
            format!("[nodes.localhost]\nhive_url = \"http://127.0.0.1:{hive_port}\"\n"),
        )
        .unwrap();
        Some(Env {
            manager,
            hub,
            hive_port,
            dir,
            hive: None,
            model,
            extra_env: vec![],
        })
    }

    pub fn env(&self, cmd: &mut Command) {
        for (k, v) in self.manager.env() {
            cmd.env(k, v);
        }
        cmd.env("HF_ENDPOINT", self.hub.endpoint())
            .env("XDG_STATE_HOME", self.dir.join("state"))
            .env("XDG_DATA_HOME", self.dir.join("data"))
            .env("RBEE_CONFIG", self.dir.join("config.toml"));
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
    }

    /// Starts the local node's hive.
    pub fn start_hive(&mut self) {
        self.hive = Some(self.hive_at(self.hive_port, "hive-state"));
    }

    /// Starts a hive on `port` with its state in `name` under the test's directory.
    pub fn hive_at(&self, port: u16, name: &str) -> ChildGuard {
        self.hive_with(port, name, "")
    }

    /// The same, with more TOML for its config (top-level keys, or tables when it starts
    /// with `[`).
    pub fn hive_with(&self, port: u16, name: &str, extra: &str) -> ChildGuard {
        let (top, tables) = if extra.starts_with('[') {
            ("", extra)
        } else {
            (extra, "")
        };
        let ports = worker_ports(20, port);
        let config = self.dir.join(&format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "{top}port = {port}\nstate_dir = {:?}\nsupervisor = \"systemd-user\"\nworker_ports = \"{ports}-{}\"\nworker_logs = \"file\"\n{tables}",
                self.dir.join(name).display().to_string(),
                ports + 20
            ),
        )
        .unwrap();
        let mut cmd = Command::new(hive_binary());
        cmd.arg("--config").arg(&config);
        self.env(&mut cmd);
        let hive = ChildGuard::spawn(&mut cmd);
        assert!(
            wait_for_port(port, Duration::from_secs(20)),
            "the hive did not listen on {port}"
        );
        hive
    }

    pub fn keeper(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rbee-keeper"));
        cmd.args(args);
        self.env(&mut cmd);
        cmd
    }

    /// Registers `name` as a node reached through `sshd`, its hive on `hive_port`.
    pub fn add_node(&self, name: &str, sshd: &rbee_test_support::sshd::Sshd, hive_port: u16) {
        let (port, user, hive_port) = (sshd.port.to_string(), sshd.user(), hive_port.to_string());
        let mut args = add_node_args(name, &port, &user, &sshd.client_key);
        args.extend(["--hive-port", &hive_port]);
        let out = self.keeper(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }

    pub fn infer(&self, model: &str, prompt: &str, extra: &[&str]) -> Output {
        let mut args = vec!["infer", "--model", model, "--prompt", prompt];
        args.extend(extra);
        self.keeper(&args).output().unwrap()
    }

    pub fn file_ref(&self) -> String {
        format!("file://{}", self.model.display())
    }

    pub fn workers(&self) -> Vec<serde_json::Value> {
        let r = rbee_test_support::http::get(&format!(
            "http://127.0.0.1:{}/v1/workers/list",
            self.hive_port
        ));
        r.json()["workers"].as_array().cloned().unwrap_or_default()
    }
}

/// `setup add-node` for a node on loopback's sshd.
fn add_node_args<'a>(name: &'a str, port: &'a str, user: &'a str, key: &'a Path) -> Vec<&'a str> {
    vec![
        "setup",
        "add-node",
        "--name",
        name,
        "--ssh-host",
        "127.0.0.1",
        "--ssh-port",
        port,
        "--ssh-user",
        user,
        "--ssh-key",
        key.to_str().unwrap(),
    ]
}

/// Bytes as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The keeper with a data directory and config of its own.
pub struct Keeper {
    pub dir: TempDir,
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Keeper {
    /// Trusts `known_hosts` only (never the user's real one).
    pub fn new(known_hosts: &Path) -> Keeper {
        let dir = TempDir::new("keeper");
        std::fs::write(
            dir.join("config.toml"),
            format!(
                "[ssh]\noptions = [\"UserKnownHostsFile={}\", \"StrictHostKeyChecking=yes\"]\n",
                known_hosts.display()
            ),
        )
        .unwrap();
        Keeper { dir }
    }

    pub fn run(&self, args: &[&str]) -> Out {
        let out = Command::new(env!("CARGO_BIN_EXE_rbee-keeper"))
            .args(args)
            .env("XDG_DATA_HOME", self.dir.join("data"))
            .env("RBEE_CONFIG", self.dir.join("config.toml"))
            .env_remove("SSH_AUTH_SOCK")
            .output()
            .unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn add(&self, name: &str, port: u16, user: &str, key: &Path) -> Out {
        self.add_with(name, port, user, key, &[])
    }

    /// `add-node` with more arguments.
    pub fn add_with(&self, name: &str, port: u16, user: &str, key: &Path, extra: &[&str]) -> Out {
        let port = port.to_string();
        let mut args = add_node_args(name, &port, user, key);
        args.extend(extra);
        self.run(&args)
    }

    pub fn names(&self) -> Vec<String> {
        let out = self.run(&["setup", "list-nodes", "--json"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|n| n["node_name"].as_str().unwrap().to_owned())
            .collect()
    }
}
