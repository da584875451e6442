//! The haiku test: the worker's streamed greedy answer is the model's own, token for
//! token the same as an in-process llama-cpp-2 greedy decode of the same prompt.

use rbee_bench::{greedy, Prompt};
use serde_json::json;

use crate::common::{model, Worker};

const PROMPT: &str = "Write a haiku about bees";

#[test]
fn haiku_streams_the_same_tokens_as_an_in_process_greedy_decode() {
    let Some(model) = model() else { return };
    let threads = rbee_llama::physical_cores();
    let w = Worker::start(&model, &["--slots", "1", "--ctx-size", "4096"]);
    let mut sse = w
        .stream(json!({"messages": [{"role": "user", "content": PROMPT}], "temperature": 0, "max_tokens": 64}))
        .expect("stream opens");
    let start = sse.next_json().expect("start event");
    assert!(start["request_id"].is_string(), "{start}");
    let events = sse.collect();
    let (done, tokens) = events.split_last().expect("events");
    assert_eq!(done["done"], true, "{done}");
    let streamed: Vec<String> = tokens
        .iter()
        .map(|e| e["token"].as_str().unwrap().to_owned())
        .collect();
    let text: String = streamed.concat();
    eprintln!("haiku from the worker:\n{text}");

    let reference = greedy(
        &model,
        Prompt::Chat(PROMPT),
        64,
        threads as i32,
        4096,
        false,
    )
    .expect("reference decode");
    assert!(
        reference.pieces.len() >= 10,
        "the model said almost nothing: {:?}",
        reference.text
    );
    assert_eq!(
        streamed, reference.pieces,
        "worker tokens differ from the in-process greedy decode"
    );
    assert_eq!(done["total_tokens"], reference.pieces.len());
    assert_eq!(done["prompt_tokens"], reference.prompt_tokens);
    // One event per token, in order.
    for (i, e) in tokens.iter().enumerate() {
        assert_eq!(e["index"], i, "{e}");
    }
}

#[test]
fn raw_prompt_greedy_matches_too_and_stream_false_returns_one_document() {
    let Some(model) = model() else { return };
    let threads = rbee_llama::physical_cores();
    let w = Worker::start(&model, &["--slots", "2", "--ctx-size", "2048"]);
    let prompt = "The three most important things about honey bees are";
    let r = w.complete(json!({"prompt": prompt, "temperature": 0, "max_tokens": 40}));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["request_id"].as_str(), r.request_id.as_deref());
    let reference = greedy(&model, Prompt::Raw(prompt), 40, threads as i32, 2048, false).unwrap();
    assert_eq!(v["text"], reference.text);
    assert_eq!(v["total_tokens"], reference.pieces.len());
}
