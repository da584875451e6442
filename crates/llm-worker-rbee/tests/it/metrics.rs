//! `GET /metrics`: Prometheus' own checker accepts it, and the counters and histograms
//! move by exactly what the requests made.

use rbee_test_support::http::{self, Sse};
use rbee_test_support::metrics::{promtool_check, sample};
use serde_json::json;

use crate::common::{model, Worker};

const KEY: &str = "metrics-key";

fn scrape(w: &Worker) -> String {
    let r = http::send("GET", &format!("{}/metrics", w.url), Some(KEY), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.content_type.as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    r.body
}

fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

#[test]
fn metrics_pass_promtool_and_count_what_was_served() {
    let Some(model) = model() else { return };
    let w = Worker::start_keyed(&model, &["--slots", "2"], Some(KEY), |c| {
        c.env(rbee_types::env::WORKER_API_KEY, KEY);
    });
    let before = scrape(&w);
    let Some(checked) = promtool_check(&before) else {
        return;
    };
    checked.unwrap_or_else(|report| panic!("promtool: {report}\n{before}"));
    assert_eq!(value(&before, "rbee_generated_tokens_total"), 0.0);
    assert_eq!(
        value(&before, "rbee_time_to_first_token_seconds_count"),
        0.0
    );
    assert_eq!(value(&before, r#"rbee_slots{state="idle"}"#), 2.0);
    // The scrape's own connection is open; nothing was refused or closed to make room.
    assert!(value(&before, "rbee_http_connections") >= 1.0, "{before}");
    for series in [
        r#"rbee_http_connections_refused_total{reason="busy"}"#,
        r#"rbee_http_connections_refused_total{reason="per_address"}"#,
        "rbee_http_connections_closed_idle_total",
    ] {
        assert_eq!(value(&before, series), 0.0, "{series}");
    }
    assert!(before.contains("rbee_build_info{component=\"llm-worker-rbee\""));

    // One streamed and one whole answer on rbee's route, one OpenAI chat completion.
    let url = format!("{}/v1/inference", w.url);
    let body = json!({"prompt": "Bees are", "max_tokens": 5, "temperature": 0});
    let events = Sse::post(&url, Some(KEY), &body).unwrap().collect();
    let done = events.iter().find(|e| e["done"] == true).unwrap();
    let mut whole = body.clone();
    whole["stream"] = json!(false);
    let r = http::send("POST", &url, Some(KEY), Some(whole.to_string().as_bytes()));
    assert_eq!(r.status, 200, "{}", r.body);
    let chat = json!({"model": "m", "max_tokens": 3,
        "messages": [{"role": "user", "content": "Hi"}]});
    let c = http::send(
        "POST",
        &format!("{}/v1/chat/completions", w.url),
        Some(KEY),
        Some(chat.to_string().as_bytes()),
    );
    assert_eq!(c.status, 200, "{}", c.body);
    let unauthorised = w.get("/v1/info");
    assert_eq!(unauthorised.status, 401);

    let after = scrape(&w);
    promtool_check(&after)
        .unwrap()
        .unwrap_or_else(|report| panic!("promtool: {report}\n{after}"));
    let inference = r#"rbee_requests_total{route="/v1/inference",status="200"}"#;
    assert_eq!(value(&after, inference), 2.0);
    let chats = r#"rbee_requests_total{route="/v1/chat/completions",status="200"}"#;
    assert_eq!(value(&after, chats), 1.0);
    assert_eq!(
        value(
            &after,
            r#"rbee_requests_total{route="/v1/info",status="401"}"#
        ),
        1.0
    );
    // Three generations: each histogram counted each once.
    assert_eq!(value(&after, "rbee_time_to_first_token_seconds_count"), 3.0);
    assert_eq!(value(&after, "rbee_request_duration_seconds_count"), 3.0);
    assert_eq!(
        value(&after, r#"rbee_request_duration_seconds_bucket{le="+Inf"}"#),
        3.0
    );
    let generated = value(&after, "rbee_generated_tokens_total");
    let usage = c.json()["usage"].clone();
    let streamed = done["total_tokens"].as_f64().unwrap();
    let whole_tokens = r.json()["total_tokens"].as_f64().unwrap();
    assert_eq!(
        generated,
        streamed + whole_tokens + usage["completion_tokens"].as_f64().unwrap()
    );
    let prompt = value(&after, "rbee_prompt_tokens_total");
    assert_eq!(
        prompt,
        done["prompt_tokens"].as_f64().unwrap()
            + r.json()["prompt_tokens"].as_f64().unwrap()
            + usage["prompt_tokens"].as_f64().unwrap()
    );
    // The second identical prompt came from the prompt cache.
    assert!(value(&after, "rbee_prompt_cache_tokens_reused_total") > 0.0);
    assert!(value(&after, "rbee_time_to_first_token_seconds_sum") > 0.0);
}

#[test]
fn metrics_need_the_key_unless_opened_to_loopback() {
    let Some(model) = model() else { return };
    let keyed = Worker::start_keyed(&model, &[], Some(KEY), |c| {
        c.env(rbee_types::env::WORKER_API_KEY, KEY);
    });
    let r = keyed.get("/metrics");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (401, "MISSING_API_KEY")
    );
    drop(keyed);
    let open = Worker::start_keyed(&model, &["--open-metrics"], Some(KEY), |c| {
        c.env(rbee_types::env::WORKER_API_KEY, KEY);
    });
    let r = open.get("/metrics");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains("rbee_slots{state=\"idle\"} 1"),
        "{}",
        r.body
    );
    // Only /metrics opens: everything else still needs the key.
    assert_eq!(open.get("/v1/info").status, 401);
}
