//! Lifecycle: sd-notify, draining by API and by SIGTERM, the drain deadline, the hive
//! callback.

use std::os::unix::net::UnixDatagram;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rbee_test_support::model::TempDir;
use rbee_test_support::process::free_port;
use serde_json::{json, Value};

use crate::common::{long_request, model, Worker};

#[test]
fn sd_notify_ready_arrives_only_after_the_model_is_loaded() {
    let Some(model) = model() else { return };
    let dir = TempDir::new("notify");
    let sock_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut w = Worker::spawn(&model, &[], |c| {
        c.env("NOTIFY_SOCKET", &sock_path)
            .env("WATCHDOG_USEC", "2000000");
    });
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        let n = sock.recv(&mut buf).expect("notify message");
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        if msg.lines().any(|l| l == "READY=1") {
            // At the moment READY=1 is sent, the model answers.
            let ready = w.get("/v1/ready").json();
            assert_eq!(
                ready["ready"], true,
                "READY=1 before the model was loaded: {ready}"
            );
            assert!(msg.contains("STATUS=idle, 0/1 slots busy"), "{msg}");
            assert!(msg.contains("0 tokens cached"), "{msg}");
            break;
        }
        seen.push(msg);
    }
    assert!(seen.iter().all(|m| !m.contains("READY=1")));
    assert!(
        seen.iter().any(|m| m.contains("STATUS=loading model")),
        "{seen:?}"
    );
    // The watchdog is fed.
    let mut watchdog = false;
    for _ in 0..10 {
        let n = sock.recv(&mut buf).unwrap();
        if String::from_utf8_lossy(&buf[..n]).contains("WATCHDOG=1") {
            watchdog = true;
            break;
        }
    }
    assert!(watchdog, "no WATCHDOG=1 with WATCHDOG_USEC set");
    w.proc.signal(libc::SIGTERM);
    let mut stopping = false;
    while let Ok(n) = sock.recv(&mut buf) {
        if String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1") {
            stopping = true;
            break;
        }
    }
    assert!(stopping, "no STOPPING=1 on SIGTERM");
    assert_eq!(
        w.proc
            .wait_timeout(Duration::from_secs(10))
            .and_then(|s| s.code()),
        Some(0)
    );
}

fn drain_lets_active_requests_finish(trigger: impl FnOnce(&Worker)) {
    let Some(model) = model() else { return };
    let mut w = Worker::start(&model, &["--slots", "2"]);
    let mut s = w
        .stream(json!({"prompt": "Once upon a time", "max_tokens": 60, "temperature": 0}))
        .unwrap();
    s.next_json().unwrap();
    s.next_json().unwrap();
    trigger(&w);
    std::thread::sleep(Duration::from_millis(100));
    let refused = w.infer_raw(br#"{"prompt":"hi"}"#);
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (503, "DRAINING"),
        "{}",
        refused.body
    );
    assert_eq!(w.get("/v1/ready").json()["state"], "draining");
    let rest = s.collect();
    let done = rest.last().unwrap();
    assert_eq!(done["done"], true);
    assert_ne!(
        done["finish_reason"], "cancelled",
        "an active request was cut by the drain: {done}"
    );
    let status = w
        .proc
        .wait_timeout(Duration::from_secs(10))
        .expect("worker exits after draining");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn admin_shutdown_drains_then_exits_0() {
    drain_lets_active_requests_finish(|w| {
        let r = rbee_test_support::http::send(
            "POST",
            &format!("{}/v1/admin/shutdown", w.url),
            None,
            None,
        );
        assert_eq!(r.status, 202);
        assert_eq!(r.json()["state"], "draining");
    });
}

#[test]
fn sigterm_drains_like_admin_shutdown() {
    drain_lets_active_requests_finish(|w| w.proc.signal(libc::SIGTERM));
}

#[test]
fn drain_deadline_cancels_what_is_still_running() {
    let Some(model) = model() else { return };
    let mut w = Worker::start(&model, &["--slots", "1", "--drain-timeout", "1"]);
    let mut s = w.stream(long_request(3000)).unwrap();
    s.next_json().unwrap();
    s.next_json().unwrap();
    let t0 = Instant::now();
    w.proc.signal(libc::SIGTERM);
    let rest = s.collect();
    assert_eq!(rest.last().unwrap()["finish_reason"], "cancelled");
    let status = w.proc.wait_timeout(Duration::from_secs(10)).expect("exit");
    assert_eq!(status.code(), Some(0));
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "drain took {:?}",
        t0.elapsed()
    );
}

#[test]
fn hive_callback_reports_where_the_worker_listens() {
    let Some(model) = model() else { return };
    let hive_port = free_port();
    let hive = tiny_http::Server::http(("127.0.0.1", hive_port)).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        if let Ok(Some(mut rq)) = hive.recv_timeout(Duration::from_secs(30)) {
            let mut body = String::new();
            rq.as_reader().read_to_string(&mut body).unwrap();
            let _ = tx.send((rq.method().to_string(), rq.url().to_owned(), body));
            let _ = rq.respond(tiny_http::Response::empty(200));
        }
    });
    let hive_url = format!("http://127.0.0.1:{hive_port}");
    let w = Worker::start(
        &model,
        &[
            "--hive-url",
            &hive_url,
            "--worker-id",
            "w-42",
            "--model-ref",
            "file:///m.gguf",
        ],
    );
    let (method, path, body) = rx.recv_timeout(Duration::from_secs(30)).expect("callback");
    assert_eq!(
        (method.as_str(), path.as_str()),
        ("POST", "/v1/workers/ready")
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["worker_id"], "w-42");
    assert_eq!(v["url"], w.url.as_str());
    assert_eq!(v["model_ref"], "file:///m.gguf");
    assert_eq!(v["backend"], "cpu");
    assert_eq!(v["device"], 0);
}
