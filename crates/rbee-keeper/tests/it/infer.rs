//! `rbee-keeper infer` end to end: the real keeper, a real hive whose workers run under a
//! private systemd user manager, the real worker and model, the test Hugging Face hub.

use std::io::Read;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{text, Env};

/// The same greedy request for the model on the test hub.
fn haiku(env: &Env, extra: &[&str]) -> Output {
    let mut args = vec!["--max-tokens", "20", "--temperature", "0"];
    args.extend(extra);
    env.infer("hf:org/smol", "Write a haiku about bees", &args)
}

fn downloads(env: &Env) -> u64 {
    env.hub
        .counters
        .downloads
        .load(std::sync::atomic::Ordering::Relaxed)
}

#[test]
fn a_cold_start_downloads_starts_a_worker_and_streams_then_a_warm_one_reuses_it() {
    let Some(mut env) = Env::new() else { return };
    env.start_hive();
    let out = haiku(&env, &[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // Progress on stderr, in order: download, worker, loading, summary.
    let at = |s: &str| {
        stderr
            .find(s)
            .unwrap_or_else(|| panic!("no {s:?} in:\n{stderr}"))
    };
    assert!(at("downloading [") < at("model downloaded"));
    assert!(at("model downloaded") < at("started worker"));
    assert!(at("started worker") < at("20 tokens in"));
    assert!(stderr.contains("100%"), "{stderr}");
    // Only the answer on stdout.
    assert!(
        !stdout.trim().is_empty() && !stdout.contains("[rbee-keeper]"),
        "{stdout}"
    );
    assert_eq!(downloads(&env), 1);
    // Warm: the same worker, nothing downloaded, the same greedy answer.
    let again = haiku(&env, &[]);
    let stderr2 = text(&again.stderr);
    assert_eq!(again.status.code(), Some(0), "{stderr2}");
    assert!(stderr2.contains("reusing worker"), "{stderr2}");
    assert!(!stderr2.contains("downloading"), "{stderr2}");
    assert_eq!(text(&again.stdout), stdout);
    assert_eq!(env.workers().len(), 1);
    assert_eq!(downloads(&env), 1);
    // --json: one document.
    let j = haiku(&env, &["--json"]);
    assert_eq!(j.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).unwrap();
    assert_eq!(v["tokens"], 20);
    assert_eq!(v["text"].as_str().unwrap().trim(), stdout.trim());
}

/// Starts `infer` and waits until some of the answer is on its stdout.
fn started_answer(
    env: &Env,
    prompt: &str,
    extra: &[&str],
) -> (std::process::Child, std::thread::JoinHandle<String>) {
    let model = env.file_ref();
    let mut args = vec![
        "infer",
        "--model",
        &model,
        "--prompt",
        prompt,
        "--max-tokens",
        "3000",
        "--temperature",
        "0",
        // Raw text to continue: counting goes on for long.
        "--raw",
    ];
    args.extend(extra);
    let mut child = env
        .keeper(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
            let _ = tx.send(());
        }
        String::from_utf8_lossy(&all).into_owned()
    });
    rx.recv_timeout(Duration::from_secs(120))
        .expect("the answer started");
    (child, reader)
}

/// Waits for the keeper's exit; its status and stderr.
fn finished(child: &mut std::process::Child, timeout: Duration) -> (i32, String) {
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            return (s.code().unwrap_or(-1), stderr);
        }
        assert!(t0.elapsed() < timeout, "the keeper did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ctrl_c_mid_stream_cancels_the_generation_and_exits_130() {
    let Some(mut env) = Env::new() else { return };
    env.start_hive();
    let (mut child, reader) = started_answer(&env, "1, 2, 3, 4, 5, 6, 7, 8,", &[]);
    // SAFETY: a signal to the keeper this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let (code, stderr) = finished(&mut child, Duration::from_secs(10));
    assert_eq!(code, 130, "{stderr}");
    assert!(stderr.contains("interrupted after"), "{stderr}");
    assert!(!reader.join().unwrap().is_empty());
    // The slot is free again.
    let t0 = Instant::now();
    while env.workers()[0]["slots_busy"] != 0 {
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", env.workers());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_worker_killed_mid_stream_keeps_the_partial_answer() {
    let Some(mut env) = Env::new() else { return };
    env.start_hive();
    let (mut child, reader) = started_answer(&env, "1, 2, 3, 4, 5, 6, 7, 8,", &[]);
    let pid = env.workers()[0]["pid"].as_u64().unwrap();
    // SAFETY: the worker the test's hive started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let (code, stderr) = finished(&mut child, Duration::from_secs(20));
    assert_eq!(code, 1, "{stderr}");
    let printed = reader.join().unwrap();
    assert!(
        stderr.contains("[llm-worker-rbee] Error: the answer stopped after"),
        "{stderr}"
    );
    // The hive says the worker broke off, rather than leaving the stream hanging.
    assert!(
        stderr.contains("stopped in the middle of the answer"),
        "{stderr}"
    );
    let saved = stderr
        .split("saved in ")
        .nth(1)
        .and_then(|s| s.lines().next())
        .unwrap_or_else(|| panic!("no saved path in {stderr}"));
    let kept = std::fs::read_to_string(saved.trim()).unwrap();
    assert!(!kept.is_empty());
    assert_eq!(
        printed.trim_end(),
        kept.trim_end(),
        "the file has what was printed"
    );
}

#[test]
fn the_keeper_starts_the_local_hive_when_none_runs() {
    let Some(env) = Env::new() else { return };
    let out = env.infer(&env.file_ref(), "Bees", &["--max-tokens", "5"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "started rbee-hive as the user unit rbee-hive-{}.service",
            env.hive_port
        )),
        "{stderr}"
    );
    let (ok, status) = env
        .manager
        .systemctl(&["is-active", &format!("rbee-hive-{}.service", env.hive_port)]);
    assert!(ok, "{status}");
    // The next command finds it running.
    let again = env.infer(&env.file_ref(), "Bees", &["--max-tokens", "5"]);
    assert!(
        !text(&again.stderr).contains("starting one"),
        "{}",
        text(&again.stderr)
    );
    // `hive stop` finds that unit and stops it, its worker with it; `hive start` brings
    // one back the same way.
    let unit = format!("rbee-hive-{}.service", env.hive_port);
    let stop = env.keeper(&["hive", "stop"]).output().unwrap();
    assert_eq!(stop.status.code(), Some(0), "{}", text(&stop.stderr));
    assert!(
        text(&stop.stderr).contains(&format!("systemctl --user stop {unit}")),
        "{}",
        text(&stop.stderr)
    );
    assert!(!env.manager.systemctl(&["is-active", &unit]).0);
    let (_, workers) = env
        .manager
        .systemctl(&["list-units", "--no-legend", "rbee-worker@*"]);
    assert!(!workers.contains("rbee-worker@"), "{workers}");
    let start = env.keeper(&["hive", "start"]).output().unwrap();
    assert_eq!(start.status.code(), Some(0), "{}", text(&start.stderr));
    assert!(env.manager.systemctl(&["is-active", &unit]).0);
}

/// Whether `pid` has exited (gone, or a zombie its new parent has not reaped yet).
fn gone_within(pid: i32, limit: Duration) -> bool {
    let t0 = std::time::Instant::now();
    loop {
        let gone = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        };
        if gone || t0.elapsed() > limit {
            return gone;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn without_a_user_manager_hive_start_and_stop_use_a_background_process() {
    let Some(env) = Env::new() else { return };
    let keeper = |args: &[&str]| {
        let mut cmd = env.keeper(args);
        cmd.env_remove("XDG_RUNTIME_DIR")
            .env_remove("DBUS_SESSION_BUS_ADDRESS");
        cmd.output().unwrap()
    };
    let start = keeper(&["hive", "start", "--json"]);
    let stderr = text(&start.stderr);
    assert_eq!(start.status.code(), Some(0), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&start.stdout).unwrap();
    assert_eq!(v["hive"], "running", "{v}");
    assert!(stderr.contains("as a background process (pid"), "{stderr}");
    let health =
        rbee_test_support::http::get(&format!("http://127.0.0.1:{}/v1/health", env.hive_port))
            .json();
    let pid = health["pid"].as_i64().expect("the hive says its pid") as i32;
    // Its log is the file it was started with, shown by `logs` like a journal would be.
    let logs = keeper(&["logs", "--lines", "50"]);
    let (stdout, stderr) = (text(&logs.stdout), text(&logs.stderr));
    assert_eq!(logs.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("rbee-hive ready"), "{stdout}");
    assert!(stderr.contains("rbee-hive.log"), "{stderr}");
    let stop = keeper(&["hive", "stop", "--json"]);
    let stderr = text(&stop.stderr);
    // Whatever happened, the hive this test started does not outlive it.
    let alive = !gone_within(pid, Duration::from_secs(10));
    if alive {
        // SAFETY: SIGKILL to the hive this test started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    assert_eq!(stop.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("SIGTERM to pid {pid}")),
        "{stderr}"
    );
    assert!(!alive, "the hive (pid {pid}) still runs after hive stop");
    let v: serde_json::Value = serde_json::from_slice(&stop.stdout).unwrap();
    assert_eq!(v["hive"], "stopped", "{v}");
    let again = keeper(&["hive", "stop"]);
    assert_eq!(again.status.code(), Some(0));
    assert!(text(&again.stderr).contains("no hive runs on localhost"));
}

#[test]
fn bad_input_is_refused_before_any_network_with_the_accepted_values() {
    let Some(env) = Env::new() else { return };
    // No hive runs: an error from the network would say "cannot reach".
    let m = env.file_ref();
    for (args, says) in [
        (
            vec!["--model", "hf:../x", "--prompt", "p"],
            "invalid model reference",
        ),
        (
            vec!["--model", "http://x/m.gguf", "--prompt", "p"],
            "hf:org/repo",
        ),
        (
            vec!["--model", &m, "--prompt", "p", "--backend", "rocm"],
            "accepted: cpu, cuda, metal",
        ),
        (
            vec!["--model", &m, "--prompt", "p", "--max-tokens", "0"],
            "between 1 and 32768",
        ),
        (
            vec!["--model", &m, "--prompt", "p", "--temperature", "3"],
            "between 0 and 2",
        ),
        (vec!["--model", &m, "--prompt", "  "], "the prompt is empty"),
        (
            vec!["--model", &m, "--prompt", "p", "--max-tokens", "many"],
            "invalid value 'many'",
        ),
        (
            vec!["--model", &m, "--prompt", "p", "--node", "nowhere"],
            "rbee-keeper setup add-node --name nowhere",
        ),
    ] {
        let mut all = vec!["infer"];
        all.extend(args.iter().copied());
        let out = env.keeper(&all).output().unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("[rbee-keeper] Error:"),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("cannot reach") && !stderr.contains("starting one"),
            "{args:?}: {stderr}"
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn a_hive_of_another_version_is_refused_naming_both() {
    let Some(env) = Env::new() else { return };
    let server = tiny_http::Server::http(("127.0.0.1", env.hive_port)).unwrap();
    let t = std::thread::spawn(move || {
        if let Ok(Some(r)) = server.recv_timeout(Duration::from_secs(20)) {
            let _ = r.respond(tiny_http::Response::from_string(
                r#"{"status":"alive","version":"9.4.0","api_version":"v1"}"#,
            ));
        }
    });
    let out = env.infer(&env.file_ref(), "Bees", &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("VERSION_MISMATCH"), "{stderr}");
    assert!(
        stderr.contains(&format!("rbee-keeper {}", env!("CARGO_PKG_VERSION"))),
        "{stderr}"
    );
    assert!(stderr.contains("rbee-hive 9.4.0 on localhost"), "{stderr}");
    t.join().unwrap();
}

#[test]
fn a_busy_model_queues_the_request_on_the_hive_until_its_slot_frees() {
    let Some(mut env) = Env::new() else { return };
    env.start_hive();
    // A worker with one slot, ready.
    let warm = env.infer(&env.file_ref(), "Bees", &["--max-tokens", "2"]);
    assert_eq!(warm.status.code(), Some(0), "{}", text(&warm.stderr));
    let w = env.workers()[0].clone();
    assert_eq!(w["slots"], 1);
    // Someone else holds the slot for a while, through the same front door.
    let url = format!("http://127.0.0.1:{}/v1/completions", env.hive_port);
    let body = serde_json::json!({"model": env.file_ref(), "prompt": "1, 2, 3, 4, 5, 6, 7, 8,",
                                  "max_tokens": 150, "temperature": 0});
    let holder = std::thread::spawn(move || {
        rbee_test_support::http::send("POST", &url, None, Some(body.to_string().as_bytes()))
    });
    // The worker's own health (the hive's list is only as fresh as its health checks).
    let health = format!("{}/v1/health", w["url"].as_str().unwrap());
    let t0 = Instant::now();
    while rbee_test_support::http::get(&health).json()["slots_busy"] != 1 {
        assert!(!holder.is_finished(), "the holding request ended early");
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the slot never got busy"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = env.infer(&env.file_ref(), "Bees", &["--max-tokens", "4"]);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("every slot of the model is busy; waiting in the hive's queue"),
        "{stderr}"
    );
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!text(&out.stdout).trim().is_empty());
    let held = holder.join().unwrap();
    assert_eq!(held.status, 200, "{}", held.body);
    assert!(
        held.json()["usage"]["completion_tokens"].as_u64().unwrap() > 20,
        "the slot was held long enough: {}",
        held.body
    );
}

#[test]
fn in_a_terminal_the_progress_bar_redraws_in_place() {
    let Some(mut env) = Env::new() else { return };
    env.start_hive();
    // util-linux `script` gives the keeper a pseudo-terminal for stdout and stderr.
    let log = env.dir.join("typescript");
    let line = format!(
        "{} infer --model hf:org/smol --prompt Bees --max-tokens 5 --temperature 0",
        env!("CARGO_BIN_EXE_rbee-keeper")
    );
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qec", &line]).arg(&log);
    env.env(&mut cmd);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let screen = std::fs::read_to_string(&log).unwrap();
    // Redrawn in place (carriage return, clear line), not one line per update.
    assert!(
        screen.contains("\r\x1b[2K[rbee-keeper] downloading ["),
        "{screen:?}"
    );
    assert!(
        screen.contains("\r\x1b[2K[rbee-keeper] ✅ model downloaded"),
        "{screen:?}"
    );
    assert_eq!(
        screen.matches("\n[rbee-keeper] downloading [").count(),
        0,
        "{screen:?}"
    );
    assert!(screen.contains("✅ 5 tokens in"), "{screen:?}");
    // NO_COLOR: the same terminal, no pictographs.
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qec", &line]).arg(&log).env("NO_COLOR", "1");
    env.env(&mut cmd);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let screen = std::fs::read_to_string(&log).unwrap();
    assert!(screen.contains("] 5 tokens in"), "{screen:?}");
    assert!(
        !screen.contains('✅') && !screen.contains('♻'),
        "{screen:?}"
    );
}

#[test]
fn a_worker_that_stops_sending_tokens_is_cancelled_after_the_token_timeout() {
    let Some(mut env) = Env::new() else { return };
    env.start_hive();
    let (mut child, _reader) = started_answer(
        &env,
        "1, 2, 3, 4, 5, 6, 7, 8,",
        &["--token-timeout-secs", "2"],
    );
    let pid = env.workers()[0]["pid"].as_u64().unwrap() as i32;
    // SAFETY: the worker the test's hive started; continued below.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let t0 = Instant::now();
    let (code, stderr) = finished(&mut child, Duration::from_secs(20));
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("no token for 2 s; the request was cancelled"),
        "{stderr}"
    );
    // The token timeout, plus at most 5 s for a cancel the stopped worker cannot answer.
    assert!(t0.elapsed() < Duration::from_secs(12), "{:?}", t0.elapsed());
}

#[test]
fn a_model_that_never_finishes_loading_is_a_loading_timeout_with_what_to_read() {
    let Some(mut env) = Env::new() else { return };
    // A stand-in worker that answers --version like the real one, then never gets ready.
    let stuck = env.dir.join("stuck-worker.sh");
    std::fs::write(
        &stuck,
        "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'llm-worker-rbee 0.1.0 (backends: cpu)'; exit 0; fi\nexec sleep 60\n",
    )
    .unwrap();
    std::fs::set_permissions(&stuck, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    env.hive = Some(env.hive_with(
        env.hive_port,
        "hive-state",
        &format!("worker_binary = {:?}\n", stuck.display().to_string()),
    ));
    let t0 = Instant::now();
    let out = env.infer(
        &env.file_ref(),
        "Bees",
        &["--loading-timeout-secs", "2", "--json"],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("LOADING_TIMEOUT: the model is still loading after 2 s"),
        "{stderr}"
    );
    assert!(
        stderr.contains("rbee-keeper logs --node localhost --worker "),
        "{stderr}"
    );
    // With --json, the same error on stdout for a program to read.
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["error"]["code"], "LOADING_TIMEOUT", "{v}");
    assert_eq!(v["error"]["component"], "rbee-keeper", "{v}");
    assert!(v["error"]["suggestions"][0]
        .as_str()
        .is_some_and(|s| s.contains("rbee-keeper logs")));
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
}

#[test]
fn the_config_chooses_node_and_backend_when_not_given_and_bad_config_is_named() {
    let k = crate::common::Keeper::new(std::path::Path::new("/dev/null"));
    let config = k.dir.join("config.toml");
    std::fs::write(
        &config,
        "[defaults]\nnode = \"elsewhere\"\nbackend = \"rocm\"\n",
    )
    .unwrap();
    let m = "file:///models/m.gguf";
    let out = k.run(&["infer", "--model", m, "--prompt", "p"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("unknown backend \"rocm\" ([defaults] backend in the config)"),
        "{}",
        out.stderr
    );
    let out = k.run(&["infer", "--model", m, "--prompt", "p", "--backend", "cpu"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("no node named elsewhere is registered"),
        "{}",
        out.stderr
    );
    let out = k.run(&["hive", "status"]);
    assert!(
        out.stderr.contains("no node named elsewhere is registered"),
        "{}",
        out.stderr
    );
    // The command line wins.
    let out = k.run(&["setup", "install", "--node", "other"]);
    assert!(
        out.stderr.contains("no node named other is registered"),
        "{}",
        out.stderr
    );
    // A key the keeper does not know: the file and the key are named, nothing runs.
    std::fs::write(&config, "[defaults]\nnod = \"x\"\n").unwrap();
    let out = k.run(&["workers", "list"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains(&config.display().to_string()),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("unknown field `nod`"), "{}", out.stderr);
}
