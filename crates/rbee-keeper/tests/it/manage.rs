//! `workers`, `models`, `logs`, `hive` across two hives on one machine (two state dirs, two
//! ports): the local one and one registered as a node over real SSH.

use rbee_test_support::process::{free_port, ChildGuard};
use rbee_test_support::sshd::Sshd;
use serde_json::Value;

use crate::common::{text, Env};

fn ok(env: &Env, args: &[&str]) -> (String, String) {
    let out = env.keeper(args).output().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    (stdout, stderr)
}

#[test]
fn workers_models_and_logs_across_two_hives() {
    let Some(mut env) = Env::new() else { return };
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    env.start_hive();
    let second_port = free_port();
    let second = env.hive_at(second_port, "second-state");
    // The second hive is a registered node (its SSH checked for real).
    std::fs::write(
        env.dir.join("config.toml"),
        format!(
            "[ssh]\noptions = [\"UserKnownHostsFile={}\", \"StrictHostKeyChecking=yes\"]\n[nodes.localhost]\nhive_url = \"http://127.0.0.1:{}\"\n",
            sshd.known_hosts.display(),
            env.hive_port
        ),
    )
    .unwrap();
    env.add_node("second", &sshd, second_port);
    let last_connected = || {
        let (nodes, _) = ok(&env, &["setup", "list-nodes", "--json"]);
        let v: Value = serde_json::from_str(&nodes).unwrap();
        v[0]["last_connected_unix"].as_u64().unwrap()
    };
    let registered = last_connected();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let m = env.file_ref();
    for node in ["localhost", "second"] {
        let out = env.infer(&m, "Bees", &["--node", node, "--max-tokens", "4"]);
        assert_eq!(out.status.code(), Some(0), "{node}: {}", text(&out.stderr));
    }
    // Every contact moves the node's last contact; the list shows it as a local time.
    assert!(last_connected() > registered);
    let (nodes, _) = ok(&env, &["setup", "list-nodes"]);
    let shape: String = nodes
        .lines()
        .nth(1)
        .and_then(|row| row.split("  ").find(|c| c.contains(" ago)")))
        .unwrap_or_else(|| panic!("{nodes}"))
        .trim()
        .chars()
        .take(16)
        .map(|c| if c.is_ascii_digit() { 'd' } else { c })
        .collect();
    assert_eq!(shape, "dddd-dd-dd dd:dd", "{nodes}");
    // Every node at once: a table a person reads, and JSON without keys.
    let (table, _) = ok(&env, &["workers", "list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("NODE") && lines[0].contains("STATE"),
        "{table}"
    );
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("localhost ") && l.contains("idle")),
        "{table}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("second ") && l.contains("cpu:0")),
        "{table}"
    );
    let (json, _) = ok(&env, &["workers", "list", "--json"]);
    let all: Vec<Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|w| w.get("api_key").is_none()), "{json}");
    let (one, _) = ok(&env, &["workers", "list", "--node", "second"]);
    assert_eq!(one.lines().count(), 2, "{one}");
    // Models and logs of the local node. A download the hub published no hash for says so.
    env.hub.set_faults(rbee_test_support::hub::Faults {
        no_lfs: true,
        ..Default::default()
    });
    ok(&env, &["models", "download", "hf:org/smol"]);
    let (models, _) = ok(&env, &["models", "list"]);
    let row = |needle: &str| {
        models
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle} in\n{models}"))
    };
    assert!(
        row("hf:org/smol").contains("ready, unverified by the hub"),
        "{models}"
    );
    let local = row("file://");
    assert!(
        local.contains("ready") && !local.contains("unverified"),
        "{models}"
    );
    let id = all.iter().find(|w| w["node"] == "localhost").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (log, _) = ok(&env, &["logs", "--worker", &id, "--lines", "20"]);
    assert!(!log.trim().is_empty(), "the worker's log");
    // Following it: lines come, and Ctrl+C ends it with 130.
    let mut follow = ChildGuard::spawn(
        env.keeper(&["logs", "--worker", &id, "--lines", "5", "--follow"])
            .stdout(std::process::Stdio::piped()),
    );
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(follow.child.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    assert!(!first.trim().is_empty(), "a line of the followed log");
    follow.signal(libc::SIGINT);
    let ended = follow.wait_timeout(std::time::Duration::from_secs(5));
    assert_eq!(
        ended.and_then(|s| s.code()),
        Some(130),
        "Ctrl+C ends a follow with 130"
    );
    // Reached through an SSH port forward (the default): not at the hive's own port.
    let (status, _) = ok(&env, &["hive", "status", "--node", "second"]);
    assert!(
        status.contains(&format!("rbee-hive {}", env!("CARGO_PKG_VERSION"))),
        "{status}"
    );
    // Memory and disk, as `hive status --help` promises.
    assert!(
        status.contains("memory:") && status.contains("disk:") && status.contains(" free of "),
        "{status}"
    );
    assert!(!status.contains(&format!(":{second_port})")), "{status}");
    // Direct HTTP when asked for.
    ok(
        &env,
        &[
            "setup",
            "update-node",
            "--name",
            "second",
            "--hive-access",
            "direct",
        ],
    );
    let (status, _) = ok(&env, &["hive", "status", "--node", "second"]);
    assert!(
        status.contains(&format!("(http://127.0.0.1:{second_port})")),
        "{status}"
    );
    // One hive gone: the other is still listed, and the missing one is named.
    drop(second);
    let (table, warn) = ok(&env, &["workers", "list"]);
    assert!(
        warn.contains(&format!(
            "second: cannot reach the hive of node second at 127.0.0.1:{second_port}"
        )),
        "{warn}"
    );
    assert_eq!(table.lines().count(), 2, "{table}");
    // Stop the local worker.
    ok(&env, &["workers", "shutdown", &id]);
    assert!(env.workers().is_empty());
    let out = env.keeper(&["workers", "shutdown", &id]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("[rbee-hive] Error: no worker"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("code: WORKER_NOT_FOUND"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn every_command_takes_model_names_and_prints_one_json_document() {
    let Some(mut env) = Env::new() else { return };
    env.hive = Some(env.hive_with(
        env.hive_port,
        "hive-state",
        "[aliases]\nbees = \"hf:org/smol\"\n",
    ));
    let j = |args: &[&str]| -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = env.keeper(&all).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&out.stdout)))
    };
    // An alias whose model is not here yet is downloaded by it.
    let d = j(&["models", "download", "bees"]);
    assert_eq!(d["model"]["status"], "ready", "{d}");
    let list = j(&["models", "list"]);
    assert_eq!(list[0]["name"], "smol:q4_1", "{list}");
    assert_eq!(list[0]["id"], d["model"]["id"]);
    // The short id everywhere a model goes.
    let r = j(&[
        "run",
        "smol:q4_1",
        "Hi",
        "--max-tokens",
        "4",
        "--temperature",
        "0",
    ]);
    assert_eq!(r["tokens"], 4, "{r}");
    // The catalogue id `models list` shows names it too.
    let catalogue_id = d["model"]["id"].as_str().unwrap().to_owned();
    let r = j(&["run", &catalogue_id, "Hi", "--max-tokens", "2"]);
    assert_eq!(r["tokens"], 2, "{r}");
    let w = j(&["workers", "list"]);
    assert_eq!(w.as_array().unwrap().len(), 1, "{w}");
    let id = w[0]["id"].as_str().unwrap().to_owned();
    let h = j(&["workers", "health"]);
    assert_eq!(h["workers"][0]["id"], id.as_str(), "{h}");
    let s = j(&["hive", "status"]);
    assert_eq!(s["health"]["version"], env!("CARGO_PKG_VERSION"), "{s}");
    assert!(
        s["resources"]["memory"]["total_bytes"].as_u64().unwrap() > 0,
        "{s}"
    );
    let l = j(&["logs", "--worker", &id, "--lines", "5"]);
    assert!(!l["lines"].as_array().unwrap().is_empty(), "{l}");
    let nodes = j(&["setup", "list-nodes"]);
    assert!(nodes.as_array().unwrap().is_empty(), "{nodes}");
    // Stopping by the model's alias stops its worker.
    let st = j(&["workers", "shutdown", "bees"]);
    assert_eq!(st["stopped"], serde_json::json!([id]), "{st}");
    assert!(env.workers().is_empty());
    let rm = j(&["models", "rm", "smol:q4_1"]);
    assert_eq!(rm["removed"], d["model"]["id"], "{rm}");
    assert_eq!(j(&["models", "list"]), serde_json::json!([]));
    // A file:// model is catalogued at once: added the first time, there the second.
    for expect in [
        "added to the catalogue of localhost",
        "is on localhost already",
    ] {
        let (_, said) = ok(&env, &["models", "download", &env.file_ref()]);
        assert!(said.contains(expect), "{expect}: {said}");
    }
    // A failure with --json: the error document on stdout, exit 1.
    let out = env
        .keeper(&["models", "rm", "smol:q4_1", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(e["error"]["code"], "MODEL_NOT_FOUND", "{e}");
    assert!(
        e["error"]["suggestions"][0]
            .as_str()
            .unwrap()
            .contains("rbee-keeper models list --node localhost"),
        "{e}"
    );
}

#[test]
fn a_restarted_hive_unit_keeps_its_workers_and_adopts_them_while_a_stop_stops_them() {
    let Some(env) = Env::new() else { return };
    let out = env.keeper(&["hive", "start"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let hive_unit = format!("rbee-hive-{}.service", env.hive_port);
    assert!(env.manager.systemctl(&["is-active", &hive_unit]).0);
    let m = env.file_ref();
    let out = env.infer(&m, "Bees", &["--max-tokens", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let unit = env.workers()[0]["unit"].as_str().unwrap().to_owned();
    let pid = |unit: &str| {
        env.manager
            .systemctl(&["show", "-p", "MainPID", "--value", unit])
            .1
            .trim()
            .to_owned()
    };
    let before = pid(&unit);
    assert_ne!(before, "0");
    // systemctl restart (what nixos-rebuild does to a changed unit): the worker stays, the
    // new hive adopts it and serves with it.
    let (ok, out) = env.manager.systemctl(&["restart", &hive_unit]);
    assert!(ok, "{out}");
    assert!(rbee_test_support::process::wait_for_port(
        env.hive_port,
        std::time::Duration::from_secs(20)
    ));
    assert_eq!(pid(&unit), before, "the worker was restarted");
    let t0 = std::time::Instant::now();
    while env.workers().is_empty() {
        assert!(t0.elapsed().as_secs() < 20, "the worker was not adopted");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = env.infer(&m, "Bees", &["--max-tokens", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("reusing worker"),
        "{}",
        text(&out.stderr)
    );
    // A stop stops them.
    let out = env.keeper(&["hive", "stop"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        !env.manager.systemctl(&["is-active", &unit]).0,
        "{unit} outlived a stop"
    );
}
