//! The hive's `GET /metrics`: Prometheus' own checker accepts it, and what passes through
//! the front door, the workers, downloads and model loads show in it.

use std::path::Path;

use rbee_test_support::http::{send, Sse};
use rbee_test_support::hub::Hub;
use rbee_test_support::metrics::promtool_check;
use serde_json::{json, Value};

use crate::common::{file_ref, model, temp, Hive, Opts};

const KEY: &str = "hive-metrics-key";

fn scrape(hive: &Hive, key: Option<&str>) -> String {
    let r = send("GET", &format!("{}/metrics", hive.url), key, None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.content_type.as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    r.body
}

/// The sum of the samples of `name` whose labels include every pair of `labels`.
fn total(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ')?;
        let (n, rest) = series.split_once('{').unwrap_or((series, ""));
        let all = labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        if n == name && all {
            *found.get_or_insert(0.0) += value.parse::<f64>().ok()?;
        }
    }
    found
}

fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    total(text, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{text}"))
}

#[test]
fn hive_metrics_pass_promtool_and_count_the_front_door() {
    let Some(model) = model() else { return };
    let state = temp("hive-metrics");
    let opts = Opts {
        key: Some(KEY.into()),
        ..Opts::new("process")
    };
    let hive = Hive::start(&opts, &state.0);
    let denied = send("GET", &format!("{}/metrics", hive.url), None, None);
    assert_eq!(
        (denied.status, denied.error_code().as_str()),
        (401, "MISSING_API_KEY")
    );
    let before = scrape(&hive, Some(KEY));
    let Some(checked) = promtool_check(&before) else {
        return;
    };
    checked.unwrap_or_else(|report| panic!("promtool: {report}\n{before}"));
    assert_eq!(value(&before, "rbee_workers", &[("state", "idle")]), 0.0);
    assert!(before.contains("rbee_build_info{component=\"rbee-hive\""));
    assert!(
        value(&before, "rbee_http_connections", &[]) >= 1.0,
        "{before}"
    );
    assert_eq!(
        value(
            &before,
            "rbee_http_connections_refused_total",
            &[("reason", "busy")]
        ),
        0.0
    );

    // One whole and one streamed answer through the front door; the first loads the model.
    let name = file_ref(&model);
    let url = format!("{}/v1/chat/completions", hive.url);
    let body = json!({"model": name, "max_tokens": 4, "temperature": 0,
                      "messages": [{"role": "user", "content": "Bees"}]});
    let whole = send("POST", &url, Some(KEY), Some(body.to_string().as_bytes()));
    assert_eq!(whole.status, 200, "{}", whole.body);
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let events = Sse::post(&url, Some(KEY), &streamed).unwrap().collect();
    let usage = events
        .iter()
        .find_map(|e| e.get("usage").filter(|u| !u.is_null()))
        .expect("a usage chunk")
        .clone();

    let after = scrape(&hive, Some(KEY));
    promtool_check(&after)
        .unwrap()
        .unwrap_or_else(|report| panic!("promtool: {report}\n{after}"));
    let m = ("model", name.as_str());
    let chat = [("route", "/v1/chat/completions"), m, ("status", "200")];
    assert_eq!(value(&after, "rbee_requests_total", &chat), 2.0);
    let whole_usage = &whole.json()["usage"];
    let tokens = |u: &Value, k: &str| u[k].as_f64().unwrap();
    assert_eq!(
        value(&after, "rbee_generated_tokens_total", &[m]),
        tokens(whole_usage, "completion_tokens") + tokens(&usage, "completion_tokens")
    );
    assert_eq!(
        value(&after, "rbee_prompt_tokens_total", &[m]),
        tokens(whole_usage, "prompt_tokens") + tokens(&usage, "prompt_tokens")
    );
    // Time to first token is for the stream only; both answers have a duration.
    assert_eq!(
        value(&after, "rbee_time_to_first_token_seconds_count", &[m]),
        1.0
    );
    assert_eq!(
        value(&after, "rbee_request_duration_seconds_count", &[m]),
        2.0
    );
    assert_eq!(
        value(&after, "rbee_model_loads_total", &[("result", "success")]),
        1.0
    );
    assert_eq!(value(&after, "rbee_queue_depth", &[m]), 0.0);
    assert_eq!(value(&after, "rbee_workers", &[("state", "idle")]), 1.0);
    let memory = value(&after, "rbee_worker_memory_bytes", &[m]);
    assert!(
        memory > 50e6,
        "a worker with the model loaded: {memory} bytes"
    );
    assert!(value(&after, "rbee_worker_cpu_seconds_total", &[m]) > 0.0);
    // Scrapes are counted too.
    assert!(
        value(
            &after,
            "rbee_requests_total",
            &[("route", "/metrics"), ("status", "200")]
        ) >= 1.0
    );
}

#[test]
fn downloads_are_counted_in_bytes_and_metrics_open_to_loopback_when_configured() {
    let Some(model) = model() else { return };
    let hub = Hub::start();
    let commit = "feedfacefeedfacefeedfacefeedfacefeedface";
    hub.add_repo("org/smol", commit, &[("Smol.Q4_1.gguf", &model)]);
    let state = temp("hive-metrics-dl");
    let opts = Opts {
        key: Some(KEY.into()),
        env: vec![("HF_ENDPOINT", hub.endpoint())],
        extra: "metrics_auth = false\n".into(),
        ..Opts::new("process")
    };
    let hive = Hive::start(&opts, &state.0);
    // Open without the key (loopback); everything else still needs it.
    let before = scrape(&hive, None);
    assert_eq!(value(&before, "rbee_downloads_bytes_total", &[]), 0.0);
    assert_eq!(
        send("GET", &format!("{}/v1/workers/list", hive.url), None, None).status,
        401
    );
    let r = send(
        "POST",
        &format!("{}/v1/models/download", hive.url),
        Some(KEY),
        Some(br#"{"model_ref": "hf:org/smol:Q4_1"}"#),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let progress = format!("{}{}", hive.url, r.json()["progress_url"].as_str().unwrap());
    let events = Sse::get_keyed(&progress, Some(KEY)).unwrap().collect();
    assert_eq!(events.last().unwrap()["stage"], "complete", "{events:?}");
    let after = scrape(&hive, None);
    let size = std::fs::metadata(Path::new(&model)).unwrap().len() as f64;
    assert_eq!(value(&after, "rbee_downloads_bytes_total", &[]), size);
}
