//! A node put to work over real SSH: `setup install` clones a stand-in of this repository
//! (three binaries that `exec` the real release ones, so it builds in seconds) and builds it
//! with the node's own cargo; `hive start` starts the installed user unit under the node's
//! systemd user manager (a private one, with the node's own home); `infer` answers through
//! it; a second install upgrades and restarts it; `hive stop` stops it and its workers.
//! Then each way an install or a start fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use rbee_test_support::model::{model_and_worker, worker_binary, TempDir};
use rbee_test_support::process::free_port;
use rbee_test_support::sshd::Sshd;
use rbee_test_support::systemd::UserManager;
use rbee_test_support::worker_repo::{Variant, WorkerRepo};

use crate::common::{Keeper, Out};

/// The node's toolchain directory (cargo and rustc themselves, no rustup proxy: the
/// node's login has a home of its own).
fn toolchain_bin() -> PathBuf {
    let out = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .expect("rustc runs");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("bin")
}

const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A node: sshd logging in to a home of its own; a keeper that trusts it.
struct Node {
    sshd: Sshd,
    home: TempDir,
    keeper: Keeper,
    repo: WorkerRepo,
    hive_port: u16,
}

impl Node {
    fn new() -> Option<Node> {
        rbee_test_support::skip_unless!(
            ["rbee-hive", "rbee-keeper"]
                .iter()
                .all(|b| worker_binary().with_file_name(b).is_file()),
            "rbee-hive and rbee-keeper not built (cargo build --release)"
        );
        let sshd = Sshd::start_or_skip()?;
        let home = TempDir::new("node-home");
        let keeper = Keeper::new(&sshd.known_hosts);
        let repo = WorkerRepo::new();
        repo.commit(&Variant::AllBinaries { mark: 2 }, "all three binaries");
        Some(Node {
            sshd,
            home,
            keeper,
            repo,
            hive_port: free_port(),
        })
    }

    /// The login environment: the node's home, a PATH with (or without) cargo, and the
    /// user manager's runtime directory when there is one.
    fn login(&self, with_cargo: bool, manager: Option<&UserManager>) {
        let path = if with_cargo {
            format!("{}:{SYSTEM_PATH}", toolchain_bin().display())
        } else {
            SYSTEM_PATH.to_owned()
        };
        let mut vars = vec![("HOME", self.home.0.display().to_string()), ("PATH", path)];
        if let Some(m) = manager {
            vars.extend(m.env());
        }
        self.sshd.login_env(&vars);
    }

    fn register(&self) {
        let port = self.hive_port.to_string();
        let out = self.keeper.add_with(
            "gpu1",
            self.sshd.port,
            &self.sshd.user(),
            &self.sshd.client_key,
            &[
                "--git-repo",
                &self.repo.url(),
                "--git-branch",
                "main",
                "--install-path",
                "~/rbee-src",
                "--hive-port",
                &port,
            ],
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
    }

    fn run(&self, args: &[&str]) -> Out {
        self.keeper.run(args)
    }

    fn ok(&self, args: &[&str]) -> Out {
        let out = self.run(args);
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        out
    }

    fn path(&self, p: &str) -> PathBuf {
        self.home.join(p)
    }
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn setup_install_builds_on_the_node_then_its_hive_starts_answers_upgrades_and_stops() {
    let Some(model) = model_and_worker() else {
        return;
    };
    let Some(node) = Node::new() else { return };
    let manager = match UserManager::start_with_home(&node.home.0) {
        Ok(m) => m,
        Err(reason) => {
            rbee_test_support::skip_unless!(false, "no private systemd user manager: {reason}");
            return;
        }
    };
    node.login(true, Some(&manager));
    node.register();

    // Install: clone, build, install — every step streamed with the node's name.
    let out = node.ok(&["setup", "install", "--node", "gpu1"]);
    for expected in [
        "[gpu1] ==> cloning",
        "[gpu1] ==> building rbee-hive, llm-worker-rbee (cpu) and rbee-keeper",
        "Compiling llm-worker-rbee",
        "[gpu1] ==> installing into",
        "installed on gpu1",
        "rbee-keeper hive start --node gpu1",
    ] {
        assert!(
            out.stderr.contains(expected),
            "{expected:?} in:\n{}",
            out.stderr
        );
    }
    assert!(out.stdout.is_empty(), "stdout: {}", out.stdout);
    // What was built there is what was installed, and the hive's config has its port.
    let installed = node.path(".local/bin/rbee-hive");
    assert_eq!(
        read(&installed),
        read(&node.path("rbee-src/target/release/rbee-hive"))
    );
    let worker_v = Command::new(node.path(".local/bin/llm-worker-rbee"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&worker_v.stdout).contains("0.1.0-fake.2"));
    let config = String::from_utf8(read(&node.path(".config/rbee/hive.toml"))).unwrap();
    assert!(
        config.contains(&format!("port = {}", node.hive_port)),
        "{config}"
    );
    assert!(node
        .path(".config/systemd/user/rbee-hive.service")
        .is_file());
    let listed = node.ok(&["setup", "list-nodes"]).stdout;
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("gpu1") && l.contains("installed")),
        "{listed}"
    );

    // Start: the installed unit, under the node's manager.
    let out = node.ok(&["hive", "start", "--node", "gpu1"]);
    assert!(
        out.stderr
            .contains("systemctl --user start rbee-hive.service"),
        "{}",
        out.stderr
    );
    assert_eq!(
        manager
            .systemctl(&["is-active", "rbee-hive.service"])
            .1
            .trim(),
        "active"
    );
    let again = node.ok(&["hive", "start", "--node", "gpu1"]);
    assert!(again.stderr.contains("runs already"), "{}", again.stderr);
    let status = node.ok(&["hive", "status", "--node", "gpu1"]).stdout;
    assert!(status.contains("systemd-user"), "{status}");

    // A prompt through it: the worker is a unit of the node's manager.
    // A user's hive serves file:// models from that user's home: the node's.
    let in_home = node.path("SmolLM2-135M-Instruct.Q4_1.gguf");
    if std::fs::hard_link(&model, &in_home).is_err() {
        std::fs::copy(&model, &in_home).unwrap();
    }
    let m = format!("file://{}", in_home.display());
    let out = node.run(&[
        "infer",
        "--node",
        "gpu1",
        "--model",
        &m,
        "--prompt",
        "Bees",
        "--max-tokens",
        "4",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stdout.trim().is_empty());
    let (_, units) = manager.systemctl(&["list-units", "--no-legend", "rbee-worker@*"]);
    assert!(units.contains("rbee-worker@"), "{units}");

    // A new commit: fetched, rebuilt, installed, the running hive restarted onto it.
    node.repo.commit(&Variant::AllBinaries { mark: 3 }, "next");
    let out = node.ok(&["setup", "install", "--node", "gpu1", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["node"], "gpu1", "{v}");
    assert_eq!(v["commit"].as_str().map(str::len), Some(40), "{v}");
    for expected in ["[gpu1] ==> fetching main", "restarting the running hive"] {
        assert!(
            out.stderr.contains(expected),
            "{expected:?} in:\n{}",
            out.stderr
        );
    }
    assert!(
        out.stderr.contains("kept") && out.stderr.contains("hive.toml"),
        "{}",
        out.stderr
    );
    let worker_v = Command::new(node.path(".local/bin/llm-worker-rbee"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&worker_v.stdout).contains("0.1.0-fake.3"));
    node.ok(&["hive", "status", "--node", "gpu1"]);

    // Stop: the unit and its workers.
    let out = node.ok(&["hive", "stop", "--node", "gpu1"]);
    assert!(out.stderr.contains("stopped"), "{}", out.stderr);
    assert_ne!(
        manager
            .systemctl(&["is-active", "rbee-hive.service"])
            .1
            .trim(),
        "active"
    );
    let (_, units) = manager.systemctl(&["list-units", "--no-legend", "rbee-worker@*"]);
    assert!(!units.contains("rbee-worker@"), "{units}");
    let down = node.run(&["hive", "status", "--node", "gpu1"]);
    assert_eq!(down.code, 1, "{}", down.stderr);

    // The hive's journal: this machine runs no journald, and says so.
    let out = node.run(&["logs", "--node", "gpu1"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("journald does not run on node gpu1"),
        "{}",
        out.stderr
    );
}

impl Node {
    /// `setup update-node --name gpu1 --<flag> <value>`.
    fn set(&self, flag: &str, value: &str) {
        self.ok(&["setup", "update-node", "--name", "gpu1", flag, value]);
    }

    /// `args` fails with exit 1, saying each of `expected`.
    fn fails(&self, args: &[&str], expected: &[&str]) {
        let out = self.run(args);
        assert_eq!(out.code, 1, "{args:?}: {}", out.stderr);
        for e in expected {
            assert!(out.stderr.contains(e), "{e:?} in:\n{}", out.stderr);
        }
    }
}

#[test]
fn install_and_start_failures_say_what_to_do_and_change_nothing() {
    let Some(node) = Node::new() else { return };
    node.login(true, None);
    node.register();
    let install = ["setup", "install", "--node", "gpu1"];

    node.fails(
        &["setup", "install", "--node", "nope"],
        &["no node named nope is registered"],
    );
    node.fails(
        &["setup", "install", "--node", "gpu1", "--backend", "vulkan"],
        &["[possible values: cpu, cuda, metal]"],
    );

    // No cargo on the node: said before anything is cloned.
    node.login(false, None);
    node.fails(
        &install,
        &[
            "[rbee-keeper] Error: cargo is not on the PATH of an SSH login on node gpu1",
            "sh.rustup.rs",
        ],
    );
    assert!(!node.path("rbee-src").exists());
    node.login(true, None);

    // CUDA asked for, no toolkit on the node.
    let nvcc = Command::new("sh")
        .args(["-c", "command -v nvcc || test -x /usr/local/cuda/bin/nvcc"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !nvcc {
        node.fails(
            &["setup", "install", "--node", "gpu1", "--backend", "cuda"],
            &[
                "the CUDA toolkit (nvcc) is not installed on node gpu1",
                "--backend cpu",
            ],
        );
    }

    // A branch the repository does not have: git's own words, and how to change it.
    node.set("--git-branch", "nope");
    node.fails(
        &install,
        &[
            "cannot clone branch nope of",
            "nope not found",
            "setup update-node --name gpu1",
        ],
    );
    node.set("--git-branch", "main");

    // An install path that holds something else: left alone.
    std::fs::create_dir_all(node.path("occupied")).unwrap();
    std::fs::write(node.path("occupied/notes.txt"), "mine").unwrap();
    node.set("--install-path", "~/occupied");
    node.fails(
        &install,
        &["is not empty and not a git checkout; nothing was changed"],
    );
    assert_eq!(read(&node.path("occupied/notes.txt")), b"mine");
    node.set("--install-path", "~/rbee-src");

    // Code that does not compile: the compiler's words, nothing installed.
    node.repo.commit(&Variant::Broken, "broken");
    node.fails(
        &install,
        &[
            "failed on node gpu1 (the compiler's messages are above)",
            "    error: could not compile",
        ],
    );
    assert!(!node.path(".local/bin/rbee-hive").exists());
    assert!(!node.path(".config/systemd/user").exists());

    // Nothing installed, so nothing to start.
    node.fails(
        &["hive", "start", "--node", "gpu1"],
        &[
            "node gpu1 has no rbee-hive unit",
            "rbee-keeper setup install --node gpu1",
            "a hive started by hand, not as a unit, logs where it was started",
        ],
    );
    let listed = node.ok(&["setup", "list-nodes"]).stdout;
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("gpu1") && l.contains("reachable")),
        "{listed}"
    );
}
