//! The HTTP API: health, info, readiness, SSE framing, stop strings, auth.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use rbee_test_support::http::{self, Sse};
use rbee_test_support::model::TempDir;
use serde_json::json;

use crate::common::{model, Worker};

#[test]
fn health_info_and_ready_describe_the_worker() {
    let Some(model) = model() else { return };
    let w = Worker::start(
        &model,
        &[
            "--slots",
            "3",
            "--worker-id",
            "w-test",
            "--model-ref",
            "hf:test/smol:Q4_1",
        ],
    );
    let h = w.get("/v1/health").json();
    assert_eq!(h["status"], "alive");
    assert_eq!(h["api_version"], "v1");
    let info = w.get("/v1/info").json();
    assert_eq!(info["id"], "w-test");
    assert_eq!(info["model_ref"], "hf:test/smol:Q4_1");
    assert_eq!(info["backend"], "cpu");
    assert_eq!(info["slots"], 3);
    assert_eq!(info["model"]["architecture"], "llama");
    assert_eq!(info["model"]["quantization"], "Q4_1");
    assert_eq!(info["model"]["layers"], 30);
    assert_eq!(info["model"]["vocab_size"], 49152);
    assert_eq!(info["model"]["context_length"], 8192);
    assert!(info["model"]["parameter_count"].as_u64().unwrap() > 100_000_000);
    assert!(!info["model"]["eog_token_ids"]
        .as_array()
        .unwrap()
        .is_empty());
    // Never the absolute path.
    assert!(!w
        .get("/v1/info")
        .body
        .contains(model.parent().unwrap().to_str().unwrap()));
    let r = w.get("/v1/ready").json();
    assert_eq!(
        r,
        json!({"ready": true, "state": "idle", "model_loaded": true})
    );
}

#[test]
fn loading_progress_streams_layers_then_ready() {
    let Some(model) = model() else { return };
    let w = Worker::spawn(&model, &[], |_| {});
    assert!(rbee_test_support::process::wait_for_port(
        w.port,
        std::time::Duration::from_secs(20)
    ));
    let mut sse = Sse::get(&format!("{}/v1/loading/progress", w.url)).expect("progress stream");
    let events = sse.collect();
    let last = events.last().expect("at least one event");
    assert_eq!(last["stage"], "ready", "{events:?}");
    assert_eq!(last["layers_total"], 30);
    assert_eq!(last["layers_loaded"], 30);
    for e in &events[..events.len() - 1] {
        assert!(e["stage"] == "loading_to_ram", "{e}");
    }
}

#[test]
fn sse_stream_has_the_documented_framing() {
    let Some(model) = model() else { return };
    let w = Worker::start(&model, &[]);
    let mut s = TcpStream::connect(("127.0.0.1", w.port)).unwrap();
    let body = json!({"prompt": "Bees make", "max_tokens": 5, "temperature": 0}).to_string();
    write!(
        s,
        "POST /v1/inference HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        head.push_str(&line.to_ascii_lowercase());
    }
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    assert!(head.contains("x-request-id: req-"), "{head}");
    // Dechunk the rest and check the event lines.
    let mut raw = String::new();
    loop {
        let mut size = String::new();
        r.read_line(&mut size).unwrap();
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            break;
        }
        let mut chunk = vec![0u8; n + 2];
        std::io::Read::read_exact(&mut r, &mut chunk).unwrap();
        raw.push_str(std::str::from_utf8(&chunk[..n]).unwrap());
    }
    let events: Vec<&str> = raw.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert!(events.iter().all(|e| e.starts_with("data: ")), "{raw}");
    assert!(events[0].contains("\"request_id\""), "{raw}");
    let first: serde_json::Value = serde_json::from_str(&events[1][6..]).unwrap();
    assert_eq!(first["index"], 0, "{first}");
    assert!(first["token"].is_string(), "{first}");
    assert_eq!(
        first.as_object().unwrap().len(),
        2,
        "token events carry token and index only"
    );
    assert!(
        events[events.len() - 2].starts_with(r#"data: {"done":true,"total_tokens":5,"#),
        "{raw}"
    );
    assert_eq!(*events.last().unwrap(), "data: [DONE]");
    assert_eq!(events.len(), 1 + 5 + 2, "{raw}");
}

#[test]
fn stop_strings_end_generation_and_are_not_sent() {
    let Some(model) = model() else { return };
    let w = Worker::start(&model, &[]);
    let base = json!({"prompt": "1, 2, 3, 4, 5,", "temperature": 0, "max_tokens": 30});
    let full = w.complete(base.clone()).json()["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(full.contains(" 8"), "expected counting: {full:?}");
    let mut with_stop = base;
    with_stop["stop"] = json!([" 8"]);
    let v = w.complete(with_stop).json();
    assert_eq!(v["finish_reason"], "stop");
    let cut = v["text"].as_str().unwrap();
    assert_eq!(cut, &full[..full.find(" 8").unwrap()]);
}

#[test]
fn api_key_is_required_everywhere_but_health() {
    let Some(model) = model() else { return };
    let dir = TempDir::new("key");
    let key_file = dir.join("key");
    std::fs::write(&key_file, "s3cret-key\n").unwrap();
    let w = Worker::start_keyed(
        &model,
        &["--api-key-file", key_file.to_str().unwrap()],
        Some("s3cret-key"),
        |_| {},
    );
    assert_eq!(w.get("/v1/health").status, 200);
    let missing = w.get("/v1/info");
    assert_eq!(
        (missing.status, missing.error_code().as_str()),
        (401, "MISSING_API_KEY")
    );
    let url = format!("{}/v1/info", w.url);
    let wrong = http::send("GET", &url, Some("s3cret-kez"), None);
    assert_eq!(
        (wrong.status, wrong.error_code().as_str()),
        (401, "INVALID_API_KEY")
    );
    assert!(!wrong.body.contains("s3cret"), "{}", wrong.body);
    assert_eq!(
        http::send("GET", &url, Some("s3cret-key"), None).status,
        200
    );
    let denied = w.infer_raw(br#"{"prompt":"hi","max_tokens":2}"#);
    assert_eq!(denied.status, 401);
    let mut sse = Sse::post(
        &format!("{}/v1/inference", w.url),
        Some("s3cret-key"),
        &json!({"prompt": "hi", "max_tokens": 2}),
    )
    .expect("authorised stream");
    assert!(sse.collect().iter().any(|e| e["done"] == true));
    // The key is never on the command line.
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", w.proc.pid())).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains("s3cret"));
}

#[test]
fn api_key_from_the_environment() {
    let Some(model) = model() else { return };
    let w = Worker::start_keyed(&model, &[], Some("env-key"), |c| {
        c.env(rbee_types::env::WORKER_API_KEY, "env-key");
    });
    assert_eq!(w.get("/v1/ready").status, 401);
    let r = http::send("GET", &format!("{}/v1/ready", w.url), Some("env-key"), None);
    assert_eq!(r.status, 200);
}

#[test]
fn rebound_host_names_and_cross_site_pages_are_refused() {
    let Some(model) = model() else { return };
    let w = Worker::start(&model, &[]);
    let url = |p: &str| format!("{}{p}", w.url);
    let r = http::send_with(
        "GET",
        &url("/v1/info"),
        &[("Host", "attacker.example")],
        None,
    );
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (403, "FORBIDDEN"),
        "{}",
        r.body
    );
    let r = http::send_with(
        "POST",
        &url("/v1/completions"),
        &[
            ("Content-Type", "text/plain"),
            ("Origin", "https://evil.example"),
        ],
        Some(br#"{"prompt": "hi", "max_tokens": 2}"#),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["error"]["type"], "permission_error", "{}", r.body);
    let r = http::send_with(
        "POST",
        &url("/v1/admin/shutdown"),
        &[("Origin", "https://evil.example")],
        None,
    );
    assert_eq!(r.status, 403, "{}", r.body);
    // Still serving; a client without an Origin is answered.
    let r = http::send_with("GET", &url("/v1/info"), &[("Host", "localhost")], None);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = http::send_with(
        "POST",
        &url("/v1/completions"),
        &[("Content-Type", "application/json")],
        Some(br#"{"prompt": "hi", "max_tokens": 2}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
}
