//! Slots: concurrent streams decode together, a full worker answers 503, cancellation by
//! DELETE and by disconnect frees the slot within a second.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use rbee_test_support::http;
use serde_json::json;

use crate::common::{long_request, model, Worker};

#[test]
fn two_slots_stream_together_and_a_third_request_gets_503() {
    let Some(model) = model() else { return };
    let w = Worker::start(&model, &["--slots", "2", "--ctx-size", "1024"]);
    let mut a = w.stream(long_request(150)).expect("first stream");
    a.next_json().unwrap();
    let first_a = a.next_json().unwrap();
    assert!(first_a["token"].is_string());
    // B joins while A is generating (continuous batching: B does not wait for A's end).
    let mut b = w.stream(long_request(150)).expect("second stream");
    b.next_json().unwrap();
    let first_b = b.next_json().unwrap();
    assert!(first_b["token"].is_string(), "{first_b}");
    let a_next = a.next_json().unwrap();
    assert!(
        a_next["token"].is_string(),
        "A ended before B started: {a_next}"
    );

    let busy = w.infer_raw(br#"{"prompt":"hi","max_tokens":3}"#);
    assert_eq!(busy.status, 503, "{}", busy.body);
    let e = busy.json();
    assert_eq!(e["error"]["code"], "ALL_SLOTS_BUSY");
    assert_eq!(e["error"]["slots_total"], 2);
    assert_eq!(e["error"]["slots_busy"], 2);
    assert!(e["error"]["message"].as_str().unwrap().contains("slots"));
    assert_eq!(w.get("/v1/ready").json()["state"], "busy");

    let done_a = a.collect();
    let done_b = b.collect();
    assert_eq!(done_a.last().unwrap()["done"], true);
    assert_eq!(done_b.last().unwrap()["done"], true);
    assert!(w.slot_free_within(Duration::from_secs(1)));
    w.assert_serves();
}

#[test]
fn sixteen_keep_alive_clients_all_stream_before_any_stream_ends() {
    // Clients that keep their connections open (the openai SDK, browsers, the hive's proxy)
    // arrive in bursts. Each must be served at once: a server that queued connections behind
    // busy ones (tiny_http's pool did, behind four threads) left most of them waiting until
    // other streams ended.
    const CLIENTS: usize = 16;
    let Some(model) = model() else { return };
    let w = Worker::start(&model, &["--slots", "16", "--ctx-size", "4096"]);
    let barrier = Barrier::new(CLIENTS);
    let t0 = Instant::now();
    let times: Vec<(Duration, Duration)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let (w, barrier) = (&w, &barrier);
                s.spawn(move || {
                    let agent = ureq::AgentBuilder::new()
                        .timeout_read(Duration::from_secs(60))
                        .build();
                    // The client's connection is open and kept for the next request.
                    agent.get(&format!("{}/v1/health", w.url)).call().unwrap();
                    barrier.wait();
                    let body = json!({"prompt": format!("Bee number {i} says"),
                        "temperature": 0, "max_tokens": 48, "stream": true});
                    let resp = agent
                        .post(&format!("{}/v1/inference", w.url))
                        .send_string(&body.to_string())
                        .unwrap();
                    let (mut first, mut end) = (None, None);
                    for line in BufReader::new(resp.into_reader()).lines() {
                        let line = line.unwrap();
                        if first.is_none() && line.contains("\"token\"") {
                            first = Some(t0.elapsed());
                        }
                        if line.contains("\"done\":true") {
                            end = Some(t0.elapsed());
                            break;
                        }
                    }
                    (first.expect("no token"), end.expect("no end"))
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let last_first = times.iter().map(|t| t.0).max().unwrap();
    let first_end = times.iter().map(|t| t.1).min().unwrap();
    assert!(
        last_first < first_end,
        "a client got its first token at {last_first:?}, after a stream ended at {first_end:?}"
    );
}

#[test]
fn concurrent_streams_keep_their_own_outputs() {
    let Some(model) = model() else { return };
    let w = Worker::start(&model, &["--slots", "3", "--ctx-size", "1024"]);
    let prompts = [
        "The capital of France is",
        "def fibonacci(n):",
        "Bees communicate by",
    ];
    let solo: Vec<String> = prompts
        .iter()
        .map(|p| {
            w.complete(json!({"prompt": p, "temperature": 0, "max_tokens": 24}))
                .json()["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let together: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = prompts
            .iter()
            .map(|p| {
                let w = &w;
                s.spawn(move || {
                    let mut sse = w
                        .stream(json!({"prompt": p, "temperature": 0, "max_tokens": 24}))
                        .unwrap();
                    http::text_of(&sse.collect())
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Greedy text of a request must not depend on what else is in the batch (allowing for
    // float reordering only after the first few tokens).
    for (alone, batched) in solo.iter().zip(&together) {
        let n = alone.chars().take(20).count();
        assert_eq!(
            alone.chars().take(n).collect::<String>(),
            batched.chars().take(n).collect::<String>()
        );
    }
}

#[test]
fn delete_cancels_and_frees_the_slot_and_is_idempotent() {
    let Some(model) = model() else { return };
    let w = Worker::start(&model, &["--slots", "1"]);
    let mut s = w.stream(long_request(2000)).expect("stream");
    let id = s.request_id.clone().expect("X-Request-Id");
    let start = s.next_json().unwrap();
    assert_eq!(start["request_id"], id.as_str());
    s.next_json().unwrap();
    let url = format!("{}/v1/inference/{id}", w.url);
    let t0 = Instant::now();
    assert_eq!(http::send("DELETE", &url, None, None).status, 204);
    let rest = s.collect();
    let done = rest.last().unwrap();
    assert_eq!(done["finish_reason"], "cancelled", "{done}");
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "cancel took {:?}",
        t0.elapsed()
    );
    assert!(w.slot_free_within(Duration::from_secs(1)));
    assert_eq!(http::send("DELETE", &url, None, None).status, 204);
    w.assert_serves();
}

#[test]
fn client_disconnect_cancels_and_frees_the_slot_within_a_second() {
    let Some(model) = model() else { return };
    let w = Worker::start(&model, &["--slots", "1"]);
    let body = long_request(2000).to_string();
    let mut s = TcpStream::connect(("127.0.0.1", w.port)).unwrap();
    write!(
        s,
        "POST /v1/inference HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut buf = [0u8; 4096];
    let mut got = 0;
    while got < 600 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the worker closed the stream after {got} bytes");
        got += n;
    }
    assert_eq!(w.get("/v1/ready").json()["state"], "busy");
    drop(s);
    assert!(
        w.slot_free_within(Duration::from_secs(1)),
        "slot still busy 1 s after the client left"
    );
}

/// Sends `body` to `path` on a raw connection and returns it once the worker is busy with
/// it (a whole answer: nothing comes back until it ends).
fn post_and_wait_busy(w: &Worker, path: &str, body: &serde_json::Value, id: &str) -> TcpStream {
    let body = body.to_string();
    let mut s = TcpStream::connect(("127.0.0.1", w.port)).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nX-Request-Id: {id}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while w.get("/v1/ready").json()["state"] != "busy" {
        assert!(Instant::now() < until, "the request never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300)); // generating
    s
}

#[test]
fn a_client_that_leaves_before_its_whole_answer_cancels_it_too() {
    let Some(model) = model() else { return };
    let w = Worker::start(&model, &["--slots", "1"]);
    let mut native = long_request(2000);
    native["stream"] = json!(false);
    let chat = json!({
        "messages": [{"role": "user", "content": "Tell me a very long story about bees."}],
        "max_tokens": 2000, "temperature": 0.8, "seed": 7
    });
    // An HTTP client's timeout, or a user's Ctrl+C: the connection closes unanswered.
    for (path, body) in [("/v1/inference", &native), ("/v1/chat/completions", &chat)] {
        let s = post_and_wait_busy(&w, path, body, "left-early");
        drop(s);
        assert!(
            w.slot_free_within(Duration::from_secs(1)),
            "{path}: slot still busy 1 s after the client left"
        );
    }
    w.assert_serves();
}

#[test]
fn a_request_keeps_the_id_its_client_chose_and_is_cancelled_by_it() {
    let Some(model) = model() else { return };
    let w = Worker::start(&model, &["--slots", "2"]);
    let mut native = long_request(2000);
    native["stream"] = json!(false);
    // The hive names the requests it forwards and cancels one by its name when its own
    // client leaves.
    let mut s = post_and_wait_busy(&w, "/v1/inference", &native, "hive-abc-1");
    let url = format!("{}/v1/inference/hive-abc-1", w.url);
    assert_eq!(http::send("DELETE", &url, None, None).status, 204);
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.contains("X-Request-Id: hive-abc-1"), "{answer}");
    assert!(
        answer.contains(r#""finish_reason":"cancelled""#),
        "{answer}"
    );
    assert!(w.slot_free_within(Duration::from_secs(1)));
    // An id that is not a plain token, or in the worker's own namespace (which a client
    // could guess), is replaced by the worker's own.
    for bad in ["has space", "../x", &"x".repeat(65), "req-5-1000"] {
        let r = http::send_with(
            "POST",
            &format!("{}/v1/inference", w.url),
            &[("X-Request-Id", bad)],
            Some(
                json!({"prompt": "Hi", "max_tokens": 2, "stream": false})
                    .to_string()
                    .as_bytes(),
            ),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let id = r.request_id.expect("an id");
        assert!(id.starts_with("req-") && id != bad, "{bad:?} gave {id}");
    }
}
