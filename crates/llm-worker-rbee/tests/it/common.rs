//! Starting a worker for a test.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use rbee_test_support::http::{self, Sse};
use rbee_test_support::process::{free_port, ChildGuard};
use serde_json::{json, Value};

/// Path of the worker binary cargo built for these tests.
pub const WORKER_BIN: &str = env!("CARGO_BIN_EXE_llm-worker-rbee");

/// The test model, or `None` after printing why the test skips (fails under
/// RBEE_TEST_STRICT).
pub fn model() -> Option<PathBuf> {
    let m = rbee_test_support::model::test_model();
    if m.is_none() {
        let reason = "test model missing: run scripts/fetch-test-model (or set RBEE_TEST_MODEL)";
        if std::env::var_os(rbee_test_support::STRICT_ENV).is_some() {
            panic!("{reason}");
        }
        eprintln!("SKIPPED: {reason}");
    }
    m
}

/// A running worker on a free port, stopped when dropped.
pub struct Worker {
    /// The process.
    pub proc: ChildGuard,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// The port.
    pub port: u16,
    /// API key sent by `wait_ready`.
    pub key: Option<String>,
}

impl Worker {
    /// Starts the worker on `model` with `extra` arguments and waits until it is ready.
    pub fn start(model: &PathBuf, extra: &[&str]) -> Worker {
        Self::start_with(model, extra, |_| {})
    }

    /// Like [`Worker::start`], with a hook to change the command (environment).
    pub fn start_with(model: &PathBuf, extra: &[&str], f: impl FnOnce(&mut Command)) -> Worker {
        Self::start_keyed(model, extra, None, f)
    }

    /// Like [`Worker::start_with`] for a worker that needs the API key `key`.
    pub fn start_keyed(
        model: &PathBuf,
        extra: &[&str],
        key: Option<&str>,
        f: impl FnOnce(&mut Command),
    ) -> Worker {
        let mut w = Self::spawn(model, extra, f);
        w.key = key.map(str::to_owned);
        w.wait_ready(Duration::from_secs(60));
        w
    }

    /// Starts the worker without waiting for it.
    pub fn spawn(model: &PathBuf, extra: &[&str], f: impl FnOnce(&mut Command)) -> Worker {
        let port = free_port();
        let mut cmd = Command::new(WORKER_BIN);
        cmd.arg("--model")
            .arg(model)
            .args(["--port", &port.to_string()])
            .args(extra);
        f(&mut cmd);
        let proc = ChildGuard::spawn(&mut cmd);
        Worker {
            proc,
            url: format!("http://127.0.0.1:{port}"),
            port,
            key: None,
        }
    }

    /// Polls `/v1/ready` until it says ready.
    pub fn wait_ready(&self, timeout: Duration) {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            let mut req = ureq::get(&format!("{}/v1/ready", self.url));
            if let Some(k) = &self.key {
                req = req.set("Authorization", &format!("Bearer {k}"));
            }
            if let Ok(r) = req.call() {
                let v: Value = r.into_json().unwrap_or_default();
                if v["ready"] == true {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("worker on {} not ready after {timeout:?}", self.url);
    }

    /// `POST /v1/inference` as a stream.
    pub fn stream(&self, body: Value) -> Result<Sse, http::Reply> {
        Sse::post(&format!("{}/v1/inference", self.url), None, &body)
    }

    /// `POST /v1/inference` with a raw body.
    pub fn infer_raw(&self, body: &[u8]) -> http::Reply {
        http::send(
            "POST",
            &format!("{}/v1/inference", self.url),
            None,
            Some(body),
        )
    }

    /// `POST /v1/inference` with `stream: false`.
    pub fn complete(&self, mut body: Value) -> http::Reply {
        body["stream"] = json!(false);
        http::post_json(&format!("{}/v1/inference", self.url), &body)
    }

    /// GET a path.
    pub fn get(&self, path: &str) -> http::Reply {
        http::get(&format!("{}{path}", self.url))
    }

    /// Asserts that a short request is answered 200: the worker still serves.
    pub fn assert_serves(&self) {
        let r = self.complete(json!({"prompt": "hi", "max_tokens": 2}));
        assert_eq!(r.status, 200, "the worker no longer serves: {}", r.body);
    }

    /// Waits until a short request is accepted (a slot is free), at most `timeout`.
    pub fn slot_free_within(&self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if self.get("/v1/ready").json()["state"] == "idle" {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

/// A prompt that makes the model talk for a long time.
pub fn long_request(max_tokens: u32) -> Value {
    json!({"prompt": "Here is a very long story about a bee colony, told in great detail, chapter by chapter.\n\nChapter 1:", "max_tokens": max_tokens, "temperature": 0.8, "seed": 7})
}
