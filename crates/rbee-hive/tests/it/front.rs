//! The hive's OpenAI front door, driven by the official `openai` Python client against the
//! real hive, worker and model: names, load on demand, the queue, streaming, errors.

use std::time::{Duration, Instant};

use rbee_test_support::openai_client;
use serde_json::{json, Value};

use crate::common::{file_ref, model, script, temp, Hive, Opts};

/// A hive (child-process workers) with `extra` config, its state dir kept alive.
fn hive(extra: &str, key: Option<&str>) -> (Hive, rbee_test_support::model::TempDir) {
    let state = temp("front");
    let opts = Opts {
        key: key.map(str::to_owned),
        extra: extra.to_owned(),
        ..Opts::new("process")
    };
    (Hive::start(&opts, &state.0), state)
}

/// Asks the worker itself (with its key) until it says idle; fails after `within`: its
/// generation goes on for a client that left.
fn assert_worker_idle_within(hive: &Hive, w: &Value, within: Duration) {
    let t0 = Instant::now();
    loop {
        let r = rbee_test_support::http::send(
            "GET",
            &format!("{}/v1/ready", w["url"].as_str().unwrap()),
            Some(&hive.worker_key(w)),
            None,
        );
        if r.json()["state"] == "idle" {
            return;
        }
        assert!(
            t0.elapsed() < within,
            "the worker still generates after its clients left: {}",
            r.body
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run(hive: &Hive, key: &str, script: &str) -> Vec<Value> {
    let py = openai_client::python().expect("checked by the caller");
    openai_client::run(&py, &format!("{}/v1", hive.url), key, script)
}

#[test]
fn the_official_client_reaches_every_model_by_name_and_loads_on_demand() {
    let Some(model) = model() else { return };
    if openai_client::python().is_none() {
        return;
    }
    let (hive, _state) = hive(
        "[aliases]\nsmol = \"smollm2-135m-instruct:q4_1\"\nghost = \"hf:org/ghost:Q4_K_M\"\n",
        Some("k"),
    );
    let reference = file_ref(&model);
    let out = run(
        &hive,
        "k",
        &format!(
            r#"
out(before=[m.id for m in c.models.list()])
msgs = [{{"role": "user", "content": "Write a haiku about bees"}}]
r = c.chat.completions.create(model="{reference}", messages=msgs, temperature=0, max_tokens=16)
out(text=r.choices[0].message.content, usage=r.usage.model_dump(exclude_none=True), object=r.object)
out(after=[m.id for m in c.models.list()], alias=c.models.retrieve("smol").id)
text, usage = "", None
for ch in c.chat.completions.create(model="smol", messages=msgs, temperature=0, max_tokens=16,
                                     stream=True, stream_options={{"include_usage": True}}):
    if ch.choices: text += ch.choices[0].delta.content or ""
    if ch.usage: usage = ch.usage.model_dump(exclude_none=True)
out(text=text, usage=usage)
t = c.completions.create(model="smollm2-135m-instruct:q4_1", prompt="Once upon a time", temperature=0, max_tokens=8)
out(text=t.choices[0].text, object=t.object)
for name, call in [("unknown", lambda: c.chat.completions.create(model="gpt-4", messages=msgs)),
                   ("no_model", lambda: c.chat.completions.create(model="", messages=msgs)),
                   ("n", lambda: c.chat.completions.create(model="smol", messages=msgs, n=3)),
                   ("tools", lambda: c.chat.completions.create(model="smol", messages=msgs, tools=[{{"type": "function", "function": {{"name": "f", "parameters": {{}}}}}}])),
                   ("empty", lambda: c.chat.completions.create(model="smol", messages=[])),
                   ("no_content", lambda: c.chat.completions.create(model="smol", messages=[{{"role": "user"}}])),
                   ("max_tokens", lambda: c.chat.completions.create(model="smol", messages=msgs, max_tokens="9")),
                   ("temperature", lambda: c.chat.completions.create(model="smol", messages=msgs, temperature=9)),
                   ("too_long", lambda: c.chat.completions.create(model="smol", messages=[{{"role": "user", "content": "bees " * 5000}}])),
                   ("key", lambda: OpenAI(base_url=os.environ['BASE_URL'], api_key="wrong", max_retries=0).models.list())]:
    try:
        call()
        out(name=name, raised=None)
    except openai.APIStatusError as e:
        out(name=name, raised=type(e).__name__, status=e.status_code, param=(e.body or {{}}).get("param"),
            code=(e.body or {{}}).get("code"))
"#
        ),
    );
    assert_eq!(
        out[0]["before"],
        json!(["ghost"]),
        "nothing catalogued yet; an alias of a reference is listed (downloaded when named)"
    );
    let chat = &out[1];
    assert_eq!(chat["object"], "chat.completion");
    assert_eq!(chat["usage"]["completion_tokens"], 16);
    let text = chat["text"].as_str().unwrap();
    assert!(text.len() > 10, "{chat}");
    assert_eq!(
        out[2]["after"],
        json!(["smollm2-135m-instruct:q4_1", "ghost", "smol"]),
        "the short id and the aliases"
    );
    assert_eq!(out[2]["alias"], "smol");
    assert_eq!(
        out[3]["text"], text,
        "greedy: streamed through the alias == not streamed"
    );
    for key in ["prompt_tokens", "completion_tokens", "total_tokens"] {
        assert_eq!(out[3]["usage"][key], chat["usage"][key]);
    }
    // The second time, the worker read the prompt from its cache (through the hive too).
    let prompt = chat["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(
        out[3]["usage"]["prompt_tokens_details"]["cached_tokens"],
        prompt - 1,
        "{}",
        out[3]
    );
    assert_eq!(out[4]["object"], "text_completion");
    let by_name = |n: &str| out.iter().find(|o| o["name"] == n).unwrap().clone();
    let unknown = by_name("unknown");
    assert_eq!(unknown["raised"], "NotFoundError", "{unknown}");
    assert_eq!(unknown["code"], "model_not_found");
    for (name, param) in [
        ("no_model", "model"),
        ("n", "n"),
        ("tools", "tools"),
        ("empty", "messages"),
        ("no_content", "messages[0].content"),
        ("max_tokens", "max_tokens"),
        ("temperature", "temperature"),
    ] {
        let o = by_name(name);
        assert_eq!(o["raised"], "BadRequestError", "{name}: {o}");
        assert_eq!(o["param"], param, "{name}: {o}");
    }
    assert_eq!(by_name("too_long")["code"], "context_length_exceeded");
    assert_eq!(by_name("key")["raised"], "AuthenticationError");

    // Worker keys stay inside the hive: the worker list shows none.
    let list = hive.get("/v1/workers/list");
    let w = &list.json()["workers"][0];
    assert!(w.get("api_key").is_none(), "{}", list.body);
    assert!(!list.body.contains(&hive.worker_key(w)), "{}", list.body);

    // The worker stopped: the next request starts another.
    let id = hive.workers()[0]["id"].as_str().unwrap().to_owned();
    let r = hive.post(&format!("/v1/workers/{id}/shutdown"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    hive.wait_gone(&id, Duration::from_secs(30));
    let again = run(
        &hive,
        "k",
        r#"
r = c.chat.completions.create(model="smol", messages=[{"role": "user", "content": "Write a haiku about bees"}], temperature=0, max_tokens=16)
out(text=r.choices[0].message.content)
"#,
    );
    assert_eq!(again[0]["text"], text, "loaded again on demand");
    assert_eq!(hive.workers().len(), 1);
}

#[test]
fn an_alias_named_like_a_listed_id_is_listed_once_as_the_alias() {
    let Some(model) = model() else { return };
    let (hive, _state) = hive(
        "[aliases]\n\"smollm2-135m-instruct:q4_1\" = \"hf:org/ghost:Q4_K_M\"\n",
        None,
    );
    // The file model is catalogued under the same short id.
    let r = hive.post(
        "/v1/models/download",
        &json!({"model_ref": file_ref(&model)}),
    );
    assert!(matches!(r.status, 200 | 202), "{}", r.body);
    let list = hive.get("/v1/models").json();
    let same: Vec<&Value> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["id"] == "smollm2-135m-instruct:q4_1")
        .collect();
    assert_eq!(same.len(), 1, "{list}");
    // What a request naming it gets: the alias's model.
    assert!(
        same[0]["reference"].as_str().unwrap().contains("org/ghost"),
        "{list}"
    );
}

#[test]
fn a_workers_loading_progress_comes_through_the_hive() {
    let Some(model) = model() else { return };
    let (hive, _state) = hive("", None);
    let r = hive.spawn_model(&model);
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.json()["worker"]["id"].as_str().unwrap().to_owned();
    let url = format!("{}/v1/workers/{id}/loading/progress", hive.url);
    // Until the worker listens the hive says it is loading; then it relays the stream.
    let t0 = Instant::now();
    let events = loop {
        match rbee_test_support::http::Sse::get(&url) {
            Ok(mut sse) => break sse.collect(),
            Err(r) => {
                assert_eq!(r.json()["error"]["code"], "MODEL_LOADING", "{}", r.body);
                assert!(t0.elapsed() < Duration::from_secs(30), "{}", r.body);
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    };
    let last = events.last().unwrap_or_else(|| panic!("no events"));
    assert_eq!(last["stage"], "ready", "{events:?}");
    assert!(last["layers_total"].as_u64().unwrap_or(0) > 0, "{events:?}");
    let gone = hive.get("/v1/workers/nope/loading/progress");
    assert_eq!(gone.status, 404, "{}", gone.body);
    assert_eq!(gone.json()["error"]["code"], "WORKER_NOT_FOUND");
}

#[test]
fn eight_streams_on_a_one_slot_model_wait_their_turn_and_all_finish() {
    let Some(model) = model() else { return };
    if openai_client::python().is_none() {
        return;
    }
    let (hive, _state) = hive("queue_max = 16\n", None);
    hive.ready_worker(&model);
    let out = run(
        &hive,
        "none",
        &format!(
            r#"
from concurrent.futures import ThreadPoolExecutor
def one(i):
    s = c.chat.completions.create(model="{}", messages=[{{"role": "user", "content": f"Count to {{i}}"}}],
                                  temperature=0, max_tokens=12, stream=True)
    return "".join(ch.choices[0].delta.content or "" for ch in s if ch.choices)
with ThreadPoolExecutor(8) as pool:
    texts = list(pool.map(one, range(8)))
out(texts=texts)
"#,
            file_ref(&model)
        ),
    );
    let texts = out[0]["texts"].as_array().unwrap();
    assert_eq!(texts.len(), 8);
    assert!(
        texts
            .iter()
            .all(|t| t.as_str().is_some_and(|t| !t.is_empty())),
        "every queued stream got its answer: {texts:?}"
    );
    assert_eq!(
        hive.workers().len(),
        1,
        "one worker, one slot, eight answers"
    );
}

#[test]
fn a_full_queue_answers_429_and_clients_that_leave_free_their_place() {
    let Some(model) = model() else { return };
    if openai_client::python().is_none() {
        return;
    }
    let (hive, _state) = hive("queue_max = 1\nqueue_timeout_secs = 60\n", None);
    let w = hive.ready_worker(&model);
    let reference = file_ref(&model);
    let out = run(
        &hive,
        "none",
        &format!(
            r#"
import threading, time
long = dict(model="{reference}", messages=[{{"role": "user", "content": "Tell a very long story"}}], max_tokens=400, stream=True)
# Counting goes on for thousands of tokens: the one slot stays busy for the whole test.
running = c.completions.create(model="{reference}", prompt="1, 2, 3, 4, 5, 6, 7, 8,", max_tokens=3000,
                               temperature=0, stream=True)
next(iter(running))                      # holds the one slot
def queued():
    try:
        c.with_options(timeout=1.5).chat.completions.create(**long)
        out(queued="answered")
    except openai.APITimeoutError:
        out(queued="gave up")
t = threading.Thread(target=queued); t.start()
time.sleep(0.5)                          # the first waiter is in line
try:
    c.chat.completions.create(**long)
    out(third="admitted")
except openai.RateLimitError as e:
    out(third=type(e).__name__, status=e.status_code, retry_after=e.response.headers.get("retry-after"), code=e.body.get("code"))
t.join()
time.sleep(2.5)                          # the hive notices the leaver within a second or two
try:
    c.with_options(timeout=1.5).chat.completions.create(**long)
    out(fourth="answered")
except openai.APITimeoutError:
    out(fourth="queued, not refused")
except openai.RateLimitError:
    out(fourth="refused")
running.close()                          # leave mid-stream
out(closed=True)
"#
        ),
    );
    let get = |k: &str| {
        out.iter()
            .find_map(|o| o.get(k).cloned())
            .unwrap_or(Value::Null)
    };
    assert_eq!(get("third"), "RateLimitError", "{out:?}");
    assert_eq!(
        out.iter().find(|o| o.get("third").is_some()).unwrap()["retry_after"],
        "1"
    );
    assert_eq!(get("queued"), "gave up");
    assert_eq!(
        get("fourth"),
        "queued, not refused",
        "the client that gave up left the queue: {out:?}"
    );
    // The stream that was closed mid-way frees the worker's slot within a second.
    assert_worker_idle_within(&hive, &w, Duration::from_secs(3));
}

#[test]
fn a_client_that_times_out_before_a_whole_answer_frees_the_workers_slot() {
    let Some(model) = model() else { return };
    if openai_client::python().is_none() {
        return;
    }
    let (hive, _state) = hive("", None);
    let w = hive.ready_worker(&model);
    let reference = file_ref(&model);
    // Counting goes on for thousands of tokens (a minute here); the client gives up first.
    let out = run(
        &hive,
        "none",
        &format!(
            r#"
try:
    c.with_options(timeout=1.5, max_retries=0).completions.create(
        model="{reference}", prompt="1, 2, 3, 4, 5, 6, 7, 8,", max_tokens=3000, temperature=0)
    out(answered=True)
except openai.APITimeoutError:
    out(timed_out=True)
"#
        ),
    );
    assert_eq!(out[0]["timed_out"], true, "{out:?}");
    assert_worker_idle_within(&hive, &w, Duration::from_secs(2));
    // The hive's view follows: its worker is idle again, and the next request is served.
    let out = run(
        &hive,
        "none",
        &format!(
            r#"
r = c.completions.create(model="{reference}", prompt="Hello", max_tokens=3)
out(tokens=r.usage.completion_tokens)
"#
        ),
    );
    assert_eq!(out[0]["tokens"], 3, "{out:?}");
}

#[test]
fn a_model_that_fails_to_load_fails_every_waiting_request() {
    let Some(model) = model() else { return };
    if openai_client::python().is_none() {
        return;
    }
    let state = temp("front-broken");
    let broken = script(
        &state,
        "broken-worker.sh",
        "sleep 1\necho 'llama: cannot load the model' >&2\nexit 4\n",
    );
    let opts = Opts {
        worker_binary: broken,
        ..Opts::new("process")
    };
    let hive = Hive::start(&opts, &state.0.join("hive"));
    let t0 = Instant::now();
    let out = run(
        &hive,
        "none",
        &format!(
            r#"
from concurrent.futures import ThreadPoolExecutor
def one(i):
    try:
        c.chat.completions.create(model="{}", messages=[{{"role": "user", "content": "hi"}}])
        return "answered"
    except openai.APIStatusError as e:
        return [type(e).__name__, e.body.get("code"), e.body.get("message")]
with ThreadPoolExecutor(3) as pool:
    out(results=list(pool.map(one, range(3))))
"#,
            file_ref(&model)
        ),
    );
    let results = out[0]["results"].as_array().unwrap();
    for r in results {
        assert_eq!(r[0], "InternalServerError", "{results:?}");
        assert_eq!(r[1], "model_load_failed", "{results:?}");
        assert!(
            r[2].as_str().unwrap().contains("exited with status 4"),
            "the reason: {r}"
        );
    }
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "no hang: {:?}",
        t0.elapsed()
    );
}

#[test]
fn the_front_door_places_workers_where_default_backend_says() {
    let Some(model) = model() else { return };
    if openai_client::python().is_none() {
        return;
    }
    let reference = file_ref(&model);
    let chat = format!(
        r#"
try:
    r = c.chat.completions.create(model="{reference}", messages=[{{"role": "user", "content": "hi"}}], max_tokens=4)
    out(answered=r.choices[0].message.content)
except openai.APIStatusError as e:
    out(error=[type(e).__name__, e.body.get("code"), e.body.get("message")])
"#
    );
    // auto (the default), on a machine whose worker has no GPU backend: the CPU.
    let (auto, _state) = hive("", None);
    let out = run(&auto, "none", &chat);
    assert!(out[0]["answered"].is_string(), "{out:?}");
    let workers = auto.workers();
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0]["backend"], "cpu", "{workers:?}");

    // cuda where there is none: the operator hears of it at start; the client learns why,
    // and that the hive's setting chose it.
    let state = temp("front");
    let log = state.0.join("hive.log");
    let opts = Opts {
        extra: "default_backend = \"cuda\"\ndefault_device = 1\n".into(),
        log: Some(log.clone()),
        ..Opts::new("process")
    };
    let cuda = Hive::start(&opts, &state.0);
    let start_log = std::fs::read_to_string(&log).unwrap();
    assert!(
        start_log.contains("WARN")
            && start_log.contains("default_backend = \"cuda\", but cuda is not available here")
            && start_log.contains("set default_backend = \"auto\" or \"cpu\""),
        "{start_log}"
    );
    let out = run(&cuda, "none", &chat);
    let e = &out[0]["error"];
    assert_eq!(e[0], "BadRequestError", "{out:?}");
    assert_eq!(e[1], "backend_unavailable", "{out:?}");
    let msg = e[2].as_str().unwrap();
    assert!(
        msg.contains("cuda") && msg.contains("default_backend = \"cuda\""),
        "{msg}"
    );
    // A spawn that names its backend is not overruled (nor moved to the GPUs'
    // default_device).
    let r = cuda.post(
        "/v1/workers/spawn",
        &json!({"model_ref": reference, "backend": "cpu"}),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json()["worker"]["backend"], "cpu");
}

#[test]
fn raw_bad_bodies_get_openai_errors_from_the_hive() {
    let Some(_model) = model() else { return };
    let (hive, _state) = hive("", None);
    let url = format!("{}/v1/chat/completions", hive.url);
    for (body, status) in [
        (b"{\"messages\": [".to_vec(), 400),
        (vec![b' '; 5 << 20], 413),
        (br#"{"model": "x", "messages": "hi"}"#.to_vec(), 400),
    ] {
        let r = rbee_test_support::http::send("POST", &url, None, Some(&body));
        assert_eq!(r.status, status, "{}", r.body);
        assert!(
            r.json()["error"]["type"].is_string(),
            "OpenAI's envelope: {}",
            r.body
        );
    }
    // curl shows the wire format through the hive.
    let out = std::process::Command::new("curl")
        .args(["-sN", "-H", "Content-Type: application/json", "-d"])
        .arg(r#"{"model": "does-not-exist", "messages": [{"role": "user", "content": "hi"}], "stream": true}"#)
        .arg(&url)
        .output()
        .expect("curl");
    let body: Value = serde_json::from_slice(&out.stdout).expect("one JSON error document");
    assert_eq!(body["error"]["code"], "model_not_found");
}

/// `curl -i` with an `Origin`: the status line and the headers, lower-cased.
fn with_origin(url: &str, method: &str, origin: &str, body: Option<&str>) -> (u16, String) {
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-s", "-i", "-m", "30", "-X", method, "-H"])
        .arg(format!("Origin: {origin}"))
        .args(["-H", "Access-Control-Request-Method: POST"]);
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "-d", b]);
    }
    let out = cmd.arg(url).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let head = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    (status, head)
}

#[test]
fn browser_uis_get_cors_only_from_the_origins_the_config_lists() {
    let Some(model) = model() else { return };
    let (closed, _s1) = hive("", None);
    let (open, _s2) = hive("cors_origins = [\"http://localhost:3000\"]\n", None);
    let (status, head) = with_origin(
        &format!("{}/v1/models", closed.url),
        "OPTIONS",
        "http://localhost:3000",
        None,
    );
    assert_eq!(status, 403, "no cors_origins: preflights refused\n{head}");
    let (status, head) = with_origin(
        &format!("{}/v1/models", closed.url),
        "GET",
        "http://localhost:3000",
        None,
    );
    assert_eq!(status, 200);
    assert!(!head.contains("access-control-allow-origin"), "{head}");

    let (status, head) = with_origin(
        &format!("{}/v1/chat/completions", open.url),
        "OPTIONS",
        "http://localhost:3000",
        None,
    );
    assert_eq!(status, 204, "{head}");
    assert!(
        head.contains("access-control-allow-origin: http://localhost:3000"),
        "{head}"
    );
    assert!(
        head.contains("access-control-allow-headers: authorization, content-type"),
        "{head}"
    );
    assert!(head.contains("post"), "{head}");
    let (status, head) = with_origin(
        &format!("{}/v1/chat/completions", open.url),
        "OPTIONS",
        "http://evil.example",
        None,
    );
    assert_eq!(status, 403, "{head}");
    let body = format!(
        r#"{{"model": "{}", "messages": [{{"role": "user", "content": "hi"}}], "max_tokens": 2, "stream": true}}"#,
        file_ref(&model)
    );
    let (status, head) = with_origin(
        &format!("{}/v1/chat/completions", open.url),
        "POST",
        "http://localhost:3000",
        Some(&body),
    );
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("text/event-stream")
            && head.contains("access-control-allow-origin: http://localhost:3000"),
        "{head}"
    );
    let (_, head) = with_origin(
        &format!("{}/v1/models", open.url),
        "GET",
        "http://evil.example",
        None,
    );
    assert!(
        !head.contains("access-control-allow-origin"),
        "other origins get no CORS header\n{head}"
    );
}

#[test]
fn under_systemd_the_front_door_runs_one_worker_unit_per_model() {
    let Some((model, manager, state)) = crate::common::setup() else {
        return;
    };
    // A second model: the same weights under another name.
    let other = state.join("Other-135M.Q4_1.gguf");
    if std::fs::hard_link(&model, &other).is_err() {
        std::fs::copy(&model, &other).unwrap();
    }
    let hive = Hive::start(&Opts::systemd(&manager), &state.0.join("hive"));
    // Three requests at once for each model, nothing loaded yet.
    let threads: Vec<_> = [&model, &other]
        .into_iter()
        .flat_map(|m| std::iter::repeat_n(file_ref(m), 3))
        .map(|name| {
            let url = format!("{}/v1/chat/completions", hive.url);
            std::thread::spawn(move || {
                let body = json!({"model": name, "max_tokens": 4, "temperature": 0,
                                  "messages": [{"role": "user", "content": "Bees"}]});
                rbee_test_support::http::post_json(&url, &body)
            })
        })
        .collect();
    for t in threads {
        let r = t.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["usage"]["completion_tokens"], 4, "{}", r.body);
    }
    let (_, units) = manager.systemctl(&["list-units", "--no-legend", "--plain", "rbee-worker@*"]);
    let running: Vec<&str> = units
        .lines()
        .filter(|l| l.contains("rbee-worker@") && l.contains("running"))
        .collect();
    assert_eq!(running.len(), 2, "one unit per model:\n{units}");
    // Each unit's memory and CPU time, from systemd's accounting (or the main process).
    let metrics = rbee_test_support::http::get(&format!("{}/metrics", hive.url)).body;
    for m in [&model, &other] {
        let series = |name: &str| {
            metrics
                .lines()
                .find(|l| l.starts_with(name) && l.contains(&format!("model=\"{}\"", file_ref(m))))
                .and_then(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("no {name} for {}:\n{metrics}", m.display()))
        };
        assert!(series("rbee_worker_memory_bytes") > 50e6, "{metrics}");
        assert!(series("rbee_worker_cpu_seconds_total") > 0.0, "{metrics}");
    }
    assert!(
        running.iter().any(|l| l.contains("SmolLM2"))
            && running.iter().any(|l| l.contains("Other")),
        "{units}"
    );
    assert_eq!(hive.workers().len(), 2);
}
