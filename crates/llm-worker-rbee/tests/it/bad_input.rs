//! Bad input gets a clear error and a distinct exit code or status; never a crash, a hang,
//! or a leaked path or key.

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};
use std::time::Duration;

use rbee_test_support::model::TempDir;
use rbee_types::exit;

use crate::common::{model, Worker, WORKER_BIN};

fn run_worker(model: &std::path::Path, extra: &[&str]) -> Output {
    run_worker_env(model, extra, &[])
}

fn run_worker_env(model: &std::path::Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(WORKER_BIN)
        .arg("--model")
        .arg(model)
        .args(extra)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: a worker that hangs on bad input fails the test instead of blocking it.
    for _ in 0..300 {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("worker did not exit within 15 s on bad input");
}

fn assert_model_rejected(path: &std::path::Path, expect: &str) {
    let port = rbee_test_support::process::free_port().to_string();
    let out = run_worker(path, &["--port", &port]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        None,
        "killed by a signal (crash?): {stderr}"
    );
    assert_eq!(out.status.code(), Some(exit::MODEL_INVALID), "{stderr}");
    assert!(stderr.contains(expect), "expected {expect:?} in: {stderr}");
}

#[test]
fn bad_model_files_are_refused_with_a_clear_error() {
    let dir = TempDir::new("badmodel");
    assert_model_rejected(&dir.join("missing.gguf"), "No such file");
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::File::create(&p).unwrap().write_all(bytes).unwrap();
        p
    };
    assert_model_rejected(&write("empty.gguf", b""), "empty");
    assert_model_rejected(&write("magic.gguf", b"GGUF"), "truncated");
    let random: Vec<u8> = (0..65536u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    assert_model_rejected(&write("random.gguf", &random), "not a GGUF model");
    assert_model_rejected(&dir.0, "");
}

#[test]
fn truncated_real_model_is_refused() {
    let Some(model) = model() else { return };
    let dir = TempDir::new("trunc");
    let bytes = std::fs::read(&model).unwrap();
    let p = dir.join("half.gguf");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    assert_model_rejected(&p, "truncated");
}

#[test]
fn port_in_use_exits_with_its_own_code_and_names_the_port() {
    let Some(model) = model() else { return };
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port().to_string();
    let out = run_worker(&model, &["--port", &port]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(exit::PORT_IN_USE), "{stderr}");
    assert!(stderr.contains(&format!("port {port}")), "{stderr}");
}

#[test]
fn unavailable_backend_is_refused() {
    let Some(model) = model() else { return };
    if cfg!(feature = "cuda") {
        eprintln!("SKIPPED: this build has CUDA, the refusal cannot be observed");
        return;
    }
    let out = run_worker(&model, &["--backend", "cuda"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(exit::BACKEND_UNAVAILABLE),
        "{stderr}"
    );
    assert!(stderr.contains("--features cuda"), "{stderr}");
}

#[test]
fn a_context_beyond_a_million_tokens_per_slot_is_refused_before_loading() {
    let out = Command::new(WORKER_BIN)
        .args(["--model", "/nonexistent.gguf", "--ctx-size", "2000000"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--ctx-size") && stderr.contains("1048576"),
        "{stderr}"
    );
}

#[test]
fn slots_whose_kv_cache_exceeds_the_memory_are_refused_before_anything_is_allocated() {
    let Some(model) = model() else { return };
    // 64 slots of a million tokens: 1.5 TB of KV cache for SmolLM2-135M.
    let port = rbee_test_support::process::free_port();
    let out = run_worker(
        &model,
        &[
            "--slots",
            "64",
            "--ctx-size",
            "1048576",
            "--port",
            &port.to_string(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(exit::INSUFFICIENT_MEMORY),
        "{stderr}"
    );
    assert!(
        stderr.contains("1440.00 GiB of KV cache")
            && stderr.contains("64 slots of 1048576 tokens")
            && stderr.contains("fewer --slots or a smaller --ctx-size"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("listening"),
        "refused before the port: {stderr}"
    );
    // What fits still starts: the same slots with a small context.
    let worker = Worker::start(&model, &["--slots", "64", "--ctx-size", "128"]);
    assert_eq!(worker.get("/v1/health").status, 200);
}

#[test]
fn a_missing_or_empty_key_file_is_a_configuration_error_exit_2() {
    let Some(model) = model() else { return };
    let dir = TempDir::new("worker-key");
    let empty = dir.join("empty.key");
    std::fs::write(&empty, "  \n").unwrap();
    for (file, named) in [
        (
            std::path::PathBuf::from("/nonexistent/worker.key"),
            "cannot read --api-key-file",
        ),
        (empty, "the API key is empty"),
    ] {
        let out = run_worker(&model, &["--api-key-file", file.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(exit::USAGE), "{stderr}");
        assert!(stderr.contains(named), "{stderr}");
    }
}

#[test]
fn listening_beyond_loopback_without_a_key_is_warned_about() {
    let Some(model) = model() else { return };
    // 192.0.2.1 (TEST-NET-1) is on no interface here: the warning comes, then the bind
    // fails; nothing listens beyond loopback.
    let out = run_worker(&model, &["--host", "192.0.2.1", "--port", "9"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("WARN") && stderr.contains("without an API key"),
        "{stderr}"
    );
    assert_ne!(out.status.code(), Some(0), "{stderr}");
}

#[test]
fn help_explains_every_option() {
    let out = Command::new(WORKER_BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--model",
        "--backend",
        "--device",
        "--host",
        "--port",
        "--api-key-file",
        "--slots",
        "--ctx-size",
        "--threads",
        "--worker-id",
        "--hive-url",
        "--model-ref",
    ] {
        assert!(help.contains(opt), "--help lacks {opt}");
    }
    assert!(help.contains("RBEE_WORKER_API_KEY"));
}

#[test]
fn invalid_requests_get_400_with_the_field_named() {
    let Some(model) = model() else { return };
    let w = Worker::start(&model, &["--ctx-size", "64", "--max-body-bytes", "4096"]);
    let cases: Vec<(Vec<u8>, u16, &str, &str)> = vec![
        (
            b"{not json".to_vec(),
            400,
            "INVALID_JSON",
            "invalid request body",
        ),
        (
            b"{\"prompt\": \"\xff\xfe\"}".to_vec(),
            400,
            "INVALID_UTF8",
            "UTF-8",
        ),
        (
            br#"{"prompt":"hi","colour":"red"}"#.to_vec(),
            400,
            "UNKNOWN_FIELD",
            "colour",
        ),
        (
            br#"{"prompt":"hi","max_tokens":0}"#.to_vec(),
            400,
            "INVALID_REQUEST",
            "max_tokens",
        ),
        (
            br#"{"prompt":"hi","max_tokens":-3}"#.to_vec(),
            400,
            "INVALID_REQUEST",
            "max_tokens",
        ),
        (
            br#"{"prompt":"hi","max_tokens":100000}"#.to_vec(),
            400,
            "INVALID_REQUEST",
            "context",
        ),
        (
            br#"{"prompt":"hi","temperature":2.5}"#.to_vec(),
            400,
            "INVALID_REQUEST",
            "temperature",
        ),
        (
            br#"{"prompt":"hi","top_p":0}"#.to_vec(),
            400,
            "INVALID_REQUEST",
            "top_p",
        ),
        (
            br#"{"prompt":"hi","top_p":1.5}"#.to_vec(),
            400,
            "INVALID_REQUEST",
            "top_p",
        ),
        (
            br#"{"max_tokens":4}"#.to_vec(),
            400,
            "INVALID_REQUEST",
            "prompt",
        ),
        (
            br#"{"messages":[{"role":"wizard","content":"x"}]}"#.to_vec(),
            400,
            "INVALID_REQUEST",
            "role",
        ),
        (
            format!(r#"{{"prompt":"{}"}}"#, "bees buzz ".repeat(100)).into_bytes(),
            400,
            "PROMPT_TOO_LONG",
            "--ctx-size",
        ),
        (
            format!(r#"{{"prompt":"{}"}}"#, "x".repeat(5000)).into_bytes(),
            413,
            "BODY_TOO_LARGE",
            "4096",
        ),
    ];
    for (body, status, code, needle) in cases {
        let r = w.infer_raw(&body);
        let shown = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
        assert_eq!(r.status, status, "{shown}: {}", r.body);
        assert_eq!(r.error_code(), code, "{shown}: {}", r.body);
        let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(
            msg.contains(needle),
            "{shown}: message {msg:?} lacks {needle:?}"
        );
        assert!(
            !r.body.contains(model.parent().unwrap().to_str().unwrap()),
            "path leaked: {}",
            r.body
        );
    }
    // The worker still serves after all of that.
    w.assert_serves();
}

#[test]
fn wrong_method_and_unknown_path() {
    let Some(model) = model() else { return };
    let w = Worker::start(&model, &[]);
    let r = w.get("/v1/inference");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (405, "METHOD_NOT_ALLOWED")
    );
    assert_eq!(r.allow.as_deref(), Some("POST"));
    let r = rbee_test_support::http::send("DELETE", &format!("{}/v1/health", w.url), None, None);
    assert_eq!(r.status, 405);
    let r = w.get("/v2/whatever");
    assert_eq!((r.status, r.error_code().as_str()), (404, "NOT_FOUND"));
}

#[test]
fn a_thousand_concurrent_requests_on_one_slot_are_all_answered() {
    let Some(model) = model() else { return };
    let w = Worker::start(&model, &["--slots", "1"]);
    let rss = |pid: u32| -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 1024
    };
    let before = rss(w.proc.pid());
    let url = format!("{}/v1/inference", w.url);
    let statuses: Vec<(u16, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..1000)
            .map(|_| {
                let url = url.clone();
                std::thread::Builder::new()
                    .stack_size(128 * 1024)
                    .spawn_scoped(s, move || {
                        let agent = ureq::AgentBuilder::new()
                            .timeout(Duration::from_secs(60))
                            .build();
                        match agent
                            .post(&url)
                            .send_string(r#"{"prompt":"Bees","max_tokens":2,"stream":false}"#)
                        {
                            Ok(r) => (r.status(), String::new()),
                            Err(ureq::Error::Status(c, r)) => {
                                let v: serde_json::Value = r.into_json().unwrap_or_default();
                                (c, v["error"]["code"].as_str().unwrap_or("").to_owned())
                            }
                            Err(e) => (0, e.to_string()),
                        }
                    })
                    .unwrap()
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = statuses.iter().filter(|(s, _)| *s == 200).count();
    let busy = statuses
        .iter()
        .filter(|(s, c)| *s == 503 && (c == "ALL_SLOTS_BUSY" || c == "OVERLOADED"))
        .count();
    let other: Vec<_> = statuses
        .iter()
        .filter(|(s, _)| *s != 200 && *s != 503)
        .take(5)
        .collect();
    assert_eq!(ok + busy, 1000, "unanswered or unexpected: {other:?}");
    assert!(ok >= 1, "no request got through");
    let after = rss(w.proc.pid());
    assert!(
        after < before + 256 * 1024 * 1024,
        "RSS grew from {before} to {after} bytes"
    );
    // Still healthy, slot free.
    assert!(w.slot_free_within(Duration::from_secs(2)));
    w.assert_serves();
}

#[test]
fn a_panic_in_the_engine_ends_the_worker_at_once_saying_why() {
    let Some(model) = model() else { return };
    // While loading: the load fails (exit 4) instead of staying in `loading`.
    let port = rbee_test_support::process::free_port().to_string();
    let out = run_worker_env(
        &model,
        &["--port", &port],
        &[("RBEE_WORKER_FAULT", "panic-loading")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), None, "{stderr}");
    assert_eq!(out.status.code(), Some(exit::MODEL_INVALID), "{stderr}");
    assert!(
        stderr
            .contains("model load failed: the engine stopped on an internal error: injected fault"),
        "{stderr}"
    );
    // While serving: the request in flight ends with an error, the worker exits 1 at once.
    let mut w = Worker::start_with(&model, &[], |c| {
        c.env("RBEE_WORKER_FAULT", "panic-serving")
            .stderr(std::process::Stdio::piped());
    });
    let mut stderr_pipe = w.proc.child.stderr.take().unwrap();
    let reply = w.complete(serde_json::json!({"prompt": "hi", "max_tokens": 4}));
    assert!(reply.status >= 500, "{} {}", reply.status, reply.body);
    let status = w
        .proc
        .wait_timeout(Duration::from_secs(5))
        .expect("the worker exits within 5 s of the panic");
    assert_eq!(status.code(), Some(exit::FAILURE), "{status:?}");
    let mut log = String::new();
    std::io::Read::read_to_string(&mut stderr_pipe, &mut log).unwrap();
    assert!(
        log.contains("engine failed: the engine stopped on an internal error: injected fault"),
        "{log}"
    );
}
