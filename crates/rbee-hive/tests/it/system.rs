//! The hive under a real systemd *system* manager (a booted Debian container): the full
//! worker sandbox — DynamicUser, ProtectSystem, credentials, read-only model — and journald.

use std::time::Duration;

use rbee_test_support::container::rbee_container_or_skip;
use rbee_test_support::process::{free_port, worker_ports};
use serde_json::json;

use crate::common::*;

#[test]
fn under_the_system_manager_workers_run_sandboxed_with_their_key_as_a_credential() {
    let Some(model) = model() else { return };
    let Some(c) = rbee_container_or_skip(&model) else {
        return;
    };
    let port = free_port();
    let ports = worker_ports(20, port);
    // A system hive serves file:// models only from the directories its config names.
    let (ok, out) = c.exec(&[
        "sh",
        "-c",
        "mkdir -p /etc/rbee && echo 'model_dirs = [\"/models\"]' > /etc/rbee/hive.toml",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = c.exec(&[
        "systemd-run",
        "--unit=rbee-hive",
        "-p",
        "Type=notify",
        "-p",
        "StateDirectory=rbee",
        "/opt/rbee/rbee-hive",
        "--config",
        "/etc/rbee/hive.toml",
        "--supervisor",
        "systemd-system",
        "--port",
        &port.to_string(),
        "--worker-ports",
        &format!("{ports}-{}", ports + 20),
        "--worker-binary",
        "/opt/rbee/llm-worker-rbee",
    ]);
    assert!(ok, "{out}");
    let hive = format!("http://127.0.0.1:{port}");
    let name = model.file_name().unwrap().to_str().unwrap();
    let (id, unit, w) = spawn_ready(&hive, name);
    assert_eq!(w["supervisor"], "systemd-system");

    let (_, props) = c.systemctl(&[
        "show",
        "-p",
        "DynamicUser,ProtectSystem,ProtectHome,PrivateTmp,NoNewPrivileges,DevicePolicy,BindReadOnlyPaths,ProtectControlGroups,Slice,Type,ExecStart,Environment",
        &unit,
    ]);
    for expected in [
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "DevicePolicy=closed",
        "ProtectControlGroups=yes",
        "Type=notify",
        &format!("BindReadOnlyPaths=/models/{name}:/models/{name}"),
    ] {
        assert!(props.contains(expected), "{expected} missing in:\n{props}");
    }
    // The hive keeps worker keys in its state directory (the API does not hand them out).
    let (ok, key) = c.exec(&["cat", &format!("/var/lib/rbee/workers/{id}.key")]);
    assert!(ok, "{key}");
    let key = key.trim().to_owned();
    assert!(!key.is_empty());
    assert!(!props.contains(&key), "key visible in the unit");
    assert!(
        !props.contains("--api-key-file"),
        "the key comes as a credential"
    );
    // The worker runs as a dynamic (non-root) user.
    let pid = w["pid"].as_u64().unwrap().to_string();
    let (_, status) = c.exec(&["cat", &format!("/proc/{pid}/status")]);
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or("0");
    assert_ne!(uid, "0", "{status}");

    // The credential reached it: its key works, no key does not.
    assert_eq!(infer(&w, &key, "Bees").status, 200);
    let anon = rbee_test_support::http::post_json(
        &format!("{}/v1/inference", w["url"].as_str().unwrap()),
        &json!({"prompt": "x"}),
    );
    assert_eq!(anon.status, 401);

    // journald runs here: the logs come from the journal.
    let logs = rbee_test_support::http::get(&format!("{hive}/v1/workers/{id}/logs?lines=50"));
    assert!(logs.body.contains("model loaded"), "{}", logs.body);
    assert!(!state_has_log_file(&c, &id), "journal, not files");
    // Following the journal: lines written later arrive, and the stream ends with the worker.
    let mut follow = rbee_test_support::http::Sse::get(&format!(
        "{hive}/v1/workers/{id}/logs?follow=true&lines=5"
    ))
    .unwrap_or_else(|r| panic!("{}", r.body));
    let stopper = std::thread::spawn({
        let url = format!("{hive}/v1/workers/{id}/shutdown");
        move || {
            std::thread::sleep(Duration::from_millis(300));
            rbee_test_support::http::post_json(&url, &json!({}))
        }
    });
    let streamed: Vec<String> = follow
        .collect()
        .iter()
        .filter_map(|e| e["line"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(stopper.join().unwrap().status, 200);
    assert!(
        streamed.iter().any(|l| l.contains("draining")),
        "lines written after the stream opened: {streamed:?}"
    );
    // Spawn it again for the stop cascade below.
    let (_, unit, _) = spawn_ready(&hive, name);

    // Stopping the hive's unit stops the workers (SIGTERM cascade).
    let (ok, out) = c.systemctl(&["stop", "rbee-hive"]);
    assert!(ok, "{out}");
    let (active, _) = c.systemctl(&["is-active", &unit]);
    assert!(!active, "{unit} still active");
}

/// Spawns the model (bound at /models) and waits until its worker is idle: (id, unit, worker).
fn spawn_ready(hive: &str, name: &str) -> (String, String, serde_json::Value) {
    let r = rbee_test_support::http::post_json(
        &format!("{hive}/v1/workers/spawn"),
        &json!({ "model_ref": format!("file:///models/{name}") }),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.json()["worker"]["id"].as_str().unwrap().to_owned();
    let unit = r.json()["worker"]["unit"].as_str().unwrap().to_owned();
    let w = wait_idle(hive, &id);
    (id, unit, w)
}

fn wait_idle(hive: &str, id: &str) -> serde_json::Value {
    let until = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = rbee_test_support::http::get(&format!("{hive}/v1/workers/{id}"));
        if r.status == 200 && r.json()["worker"]["state"] == "idle" {
            return r.json()["worker"].clone();
        }
        assert!(std::time::Instant::now() < until, "{}", r.body);
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn state_has_log_file(c: &rbee_test_support::container::SystemContainer, id: &str) -> bool {
    c.exec(&["test", "-e", &format!("/var/lib/rbee/logs/{id}.log")])
        .0
}

#[test]
fn under_journald_each_line_has_its_priority_and_a_fatal_error_is_written_once() {
    let Some(model) = model() else { return };
    let Some(c) = rbee_container_or_skip(&model) else {
        return;
    };
    let port = free_port().to_string();
    let hive = |unit: &str| {
        c.exec(&[
            "systemd-run",
            &format!("--unit={unit}"),
            "-p",
            "Type=notify",
            "-p",
            &format!("StateDirectory={unit}"),
            "/opt/rbee/rbee-hive",
            "--supervisor",
            "process",
            "--port",
            &port,
        ])
    };
    let (ok, out) = hive("rbee-hive-a");
    assert!(ok, "{out}");
    // A second hive on the same port fails, saying why.
    let _ = hive("rbee-hive-b");
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while !c.systemctl(&["is-failed", "rbee-hive-b"]).0 {
        assert!(
            std::time::Instant::now() < until,
            "the second hive did not fail"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = c.exec(&["journalctl", "--sync"]);
    let journal = |args: &[&str]| {
        let mut all = vec!["journalctl", "--no-pager", "-o", "cat"];
        all.extend_from_slice(args);
        c.exec(&all).1
    };
    let errors = journal(&["-p", "err", "-u", "rbee-hive-b"]);
    assert_eq!(
        errors.matches(&format!("port {port} is in use")).count(),
        1,
        "the error once, at error priority:\n{errors}"
    );
    assert!(!errors.contains("supervisor chosen"), "{errors}");
    let info = journal(&["-p", "info..info", "-u", "rbee-hive-b"]);
    assert!(info.contains("supervisor chosen"), "{info}");
    // The running hive: info lines at info priority, nothing at error priority, and no
    // timestamp of its own (the journal has one).
    let running = journal(&["-u", "rbee-hive-a"]);
    assert!(running.contains("rbee-hive ready"), "{running}");
    assert!(
        !running
            .lines()
            .any(|l| l.starts_with("20") || l.starts_with('<')),
        "a timestamp or an unparsed priority in the message:\n{running}"
    );
    let running_errors = journal(&["-p", "err", "-u", "rbee-hive-a"]);
    assert!(
        !running_errors.contains("INFO") && !running_errors.contains("ready"),
        "info lines at error priority:\n{running_errors}"
    );
    let _ = c.systemctl(&["stop", "rbee-hive-a"]);
}
