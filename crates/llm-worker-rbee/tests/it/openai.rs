//! The worker's OpenAI-compatible routes, driven by the official `openai` Python client
//! (pinned in scripts/fetch-openai-client) against the real worker and model.

use std::time::{Duration, Instant};

use rbee_test_support::openai_client;
use serde_json::json;

use crate::common::{model, Worker};

const HAIKU: &str = "[{'role': 'user', 'content': 'Write a haiku about bees'}]";

#[test]
fn the_official_client_lists_chats_and_completes_streamed_or_not() {
    let Some(model) = model() else { return };
    let Some(py) = openai_client::python() else {
        return;
    };
    let w = Worker::start(&model, &["--slots", "2"]);
    let out = openai_client::run(
        &py,
        &format!("{}/v1", w.url),
        "unused",
        &format!(
            r#"
ids = [m.id for m in c.models.list()]
out(ids=ids, retrieved=c.models.retrieve(ids[0]).id)
r = c.chat.completions.create(model=ids[0], messages={HAIKU}, temperature=0, max_tokens=24)
out(text=r.choices[0].message.content, finish=r.choices[0].finish_reason, role=r.choices[0].message.role,
    object=r.object, usage=r.usage.model_dump(exclude_none=True), model=r.model)
text, chunks, usage, roles = "", 0, None, []
for ch in c.chat.completions.create(model=ids[0], messages={HAIKU}, temperature=0, max_tokens=24,
                                     stream=True, stream_options={{"include_usage": True}}):
    chunks += 1
    if ch.choices:
        text += ch.choices[0].delta.content or ""
        roles += [ch.choices[0].delta.role] if ch.choices[0].delta.role else []
        finish = ch.choices[0].finish_reason or None
    if ch.usage: usage = ch.usage.model_dump(exclude_none=True)
out(text=text, chunks=chunks, usage=usage, roles=roles)
t = c.completions.create(model=ids[0], prompt="Once upon a time", temperature=0, max_tokens=12)
out(text=t.choices[0].text, object=t.object, usage=t.usage.model_dump(exclude_none=True))
st = "".join(ch.choices[0].text for ch in c.completions.create(model=ids[0], prompt=["Once upon a time"],
                                                                temperature=0, max_tokens=12, stream=True) if ch.choices)
out(text=st)
p = c.chat.completions.create(model=ids[0], messages={HAIKU}, temperature=0, max_tokens=24, frequency_penalty=2.0, presence_penalty=1.0)
out(text=p.choices[0].message.content)
"#
        ),
    );
    assert_eq!(out[0]["ids"], json!(["SmolLM2-135M-Instruct.Q4_1"]));
    assert_eq!(out[0]["retrieved"], "SmolLM2-135M-Instruct.Q4_1");
    let (chat, streamed) = (&out[1], &out[2]);
    assert_eq!(chat["object"], "chat.completion");
    assert_eq!(chat["role"], "assistant");
    assert_eq!(chat["finish"], "length");
    assert_eq!(chat["usage"]["completion_tokens"], 24);
    let prompt_tokens = chat["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(prompt_tokens > 5, "{chat}");
    assert_eq!(chat["usage"]["total_tokens"], prompt_tokens + 24);
    let text = chat["text"].as_str().unwrap();
    assert!(text.len() > 20, "real text: {text:?}");
    assert_eq!(streamed["text"], text, "greedy: streamed == not streamed");
    // The same prompt again: all but its last token come from the prompt cache.
    assert_eq!(
        streamed["usage"]["prompt_tokens_details"]["cached_tokens"],
        prompt_tokens - 1,
        "{streamed}"
    );
    for key in ["prompt_tokens", "completion_tokens", "total_tokens"] {
        assert_eq!(
            streamed["usage"][key], chat["usage"][key],
            "the last chunk carries usage"
        );
    }
    assert_eq!(
        streamed["roles"],
        json!(["assistant"]),
        "role on the first chunk only"
    );
    assert!(streamed["chunks"].as_u64().unwrap() > 10, "token by token");
    // The same engine as rbee's own route: identical greedy text.
    let own = w.complete(
        json!({"messages": [{"role": "user", "content": "Write a haiku about bees"}],
                                "temperature": 0, "max_tokens": 24}),
    );
    assert_eq!(own.json()["text"], text);
    assert_eq!(out[3]["object"], "text_completion");
    assert_eq!(out[3]["usage"]["completion_tokens"], 12);
    assert_eq!(
        out[4]["text"], out[3]["text"],
        "streamed completion == not streamed"
    );
}

#[test]
fn each_bad_request_is_the_sdk_exception_that_names_it() {
    let Some(model) = model() else { return };
    let Some(py) = openai_client::python() else {
        return;
    };
    let w = Worker::start_keyed(
        &model,
        &["--slots", "1", "--ctx-size", "64"],
        Some("sesame"),
        |c| {
            c.env("RBEE_WORKER_API_KEY", "sesame");
        },
    );
    let out = openai_client::run(
        &py,
        &format!("{}/v1", w.url),
        "sesame",
        &format!(
            r#"
cases = [
  ("n", dict(messages={HAIKU}, n=3)),
  ("tools", dict(messages={HAIKU}, tools=[{{"type": "function", "function": {{"name": "f", "parameters": {{}}}}}}])),
  ("logprobs", dict(messages={HAIKU}, logprobs=True)),
  ("empty", dict(messages=[])),
  ("no_content", dict(messages=[{{"role": "user"}}])),
  ("image", dict(messages=[{{"role": "user", "content": [{{"type": "image_url", "image_url": {{"url": "http://x/y.png"}}}}]}}])),
  ("max_tokens_type", dict(messages={HAIKU}, max_tokens="9")),
  ("temperature", dict(messages={HAIKU}, temperature=9)),
  ("stop", dict(messages={HAIKU}, stop=["a"] * 20)),
  ("presence_penalty", dict(messages={HAIKU}, presence_penalty=3)),
  ("too_long", dict(messages=[{{"role": "user", "content": "bees " * 200}}])),
]
for name, kw in cases:
    try:
        c.chat.completions.create(model="m", **kw)
        out(name=name, raised=None)
    except openai.APIStatusError as e:
        out(name=name, raised=type(e).__name__, status=e.status_code, param=e.body.get("param"),
            code=e.body.get("code"), message=e.body.get("message"))
bad = OpenAI(base_url=os.environ['BASE_URL'], api_key="wrong", max_retries=0)
try:
    bad.models.list()
except openai.AuthenticationError as e:
    out(name="key", raised=type(e).__name__, status=e.status_code)
try:
    c.models.retrieve("gpt-4")
except openai.NotFoundError as e:
    out(name="unknown_model", raised=type(e).__name__, status=e.status_code)
"#
        ),
    );
    let by_name = |n: &str| {
        out.iter()
            .find(|o| o["name"] == n)
            .unwrap_or_else(|| panic!("no result for {n}: {out:?}"))
            .clone()
    };
    for (name, param) in [
        ("n", "n"),
        ("tools", "tools"),
        ("logprobs", "logprobs"),
        ("empty", "messages"),
        ("no_content", "messages[0].content"),
        ("image", "messages[0].content[0].type"),
        ("max_tokens_type", "max_tokens"),
        ("temperature", "temperature"),
        ("stop", "stop"),
        ("presence_penalty", "presence_penalty"),
    ] {
        let o = by_name(name);
        assert_eq!(o["raised"], "BadRequestError", "{o}");
        assert_eq!(o["param"], param, "{o}");
        assert!(!o["message"].as_str().unwrap_or("").is_empty(), "{o}");
    }
    let o = by_name("too_long");
    assert_eq!(o["raised"], "BadRequestError", "{o}");
    assert_eq!(o["code"], "context_length_exceeded", "{o}");
    assert_eq!(by_name("key")["status"], 401);
    assert_eq!(by_name("unknown_model")["raised"], "NotFoundError");
    // Nothing stuck: the worker still serves.
    let r = rbee_test_support::http::send(
        "POST",
        &format!("{}/v1/chat/completions", w.url),
        Some("sesame"),
        Some(br#"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn invalid_json_and_oversized_bodies_get_openai_errors() {
    let Some(model) = model() else { return };
    let w = Worker::start(&model, &["--max-body-bytes", "4096"]);
    let url = format!("{}/v1/chat/completions", w.url);
    let r = rbee_test_support::http::send("POST", &url, None, Some(b"{\"messages\": ["));
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"]["type"],
        "invalid_request_error",
        "{}",
        r.body
    );
    let big = format!(
        r#"{{"messages": [{{"role": "user", "content": "{}"}}]}}"#,
        "a".repeat(8000)
    );
    let r = rbee_test_support::http::send("POST", &url, None, Some(big.as_bytes()));
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.json()["error"]["message"].is_string(), "{}", r.body);
}

#[test]
fn a_client_that_leaves_mid_stream_frees_its_slot_within_a_second() {
    let Some(model) = model() else { return };
    let Some(py) = openai_client::python() else {
        return;
    };
    let w = Worker::start(&model, &["--slots", "1"]);
    let out = openai_client::run(
        &py,
        &format!("{}/v1", w.url),
        "unused",
        r#"
s = c.chat.completions.create(model="m", messages=[{"role": "user", "content": "Tell a very long story"}],
                              max_tokens=2000, stream=True)
n = 0
for ch in s:
    n += 1
    if n == 5: break
s.close()
out(chunks=n)
"#,
    );
    assert_eq!(out[0]["chunks"], 5);
    let t0 = Instant::now();
    assert!(
        w.slot_free_within(Duration::from_secs(1)),
        "slot still busy {:?} after the client left",
        t0.elapsed()
    );
}

#[test]
fn curl_sees_openais_wire_format() {
    let Some(model) = model() else { return };
    let w = Worker::start(&model, &[]);
    let out = std::process::Command::new("curl")
        .args(["-sN", "-H", "Content-Type: application/json", "-d"])
        .arg(r#"{"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "temperature": 0, "stream": true}"#)
        .arg(format!("{}/v1/chat/completions", w.url))
        .output()
        .expect("curl");
    let body = String::from_utf8_lossy(&out.stdout);
    let events: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{body}");
    let first: serde_json::Value = serde_json::from_str(events[0]).unwrap();
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    let last: serde_json::Value = serde_json::from_str(events[events.len() - 2]).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "length", "{body}");
    assert!(
        events[..events.len() - 1]
            .iter()
            .all(|e| e.contains(r#""id":"chatcmpl-"#)),
        "{body}"
    );
}

#[test]
fn chats_are_rendered_by_the_models_own_jinja_template_default_system_message_included() {
    let Some(model) = model() else { return };
    let Some(py) = openai_client::python() else {
        return;
    };
    let w = Worker::start(&model, &[]);
    // SmolLM2's template opens with its own system message when the chat has none, as
    // transformers and llama-server render it: the two chats are the same prompt.
    let out = openai_client::run(
        &py,
        &format!("{}/v1", w.url),
        "unused",
        r#"
default = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
for msgs in ([{"role": "user", "content": "Name a flower."}],
             [{"role": "system", "content": default}, {"role": "user", "content": "Name a flower."}],
             [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Name a flower."}]):
    r = c.chat.completions.create(model="m", messages=msgs, temperature=0, max_tokens=12,
                                  extra_body={"cache_prompt": False})
    out(text=r.choices[0].message.content, prompt_tokens=r.usage.prompt_tokens)
"#,
    );
    assert_eq!(out.len(), 3, "{out:?}");
    assert_eq!(
        out[0], out[1],
        "no system message = the template's default one"
    );
    assert_ne!(
        out[0]["prompt_tokens"], out[2]["prompt_tokens"],
        "a system message of one's own replaces the default: {out:?}"
    );
}
