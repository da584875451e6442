//! The prompt cache: a slot keeps its tokens after a request, the next request that starts
//! with them decodes only the rest, a prefix held by another slot is copied over — and
//! greedy answers are token for token those of a worker that keeps nothing.
//!
//! Exact equality needs the same arithmetic with and without the cache, and llama.cpp's CPU
//! kernels are not batch-invariant: a batch of 64 or more prompt tokens takes the tiled
//! flash-attention kernel, one token over 512 or more KV cells the split one, and each rounds
//! differently from the row-by-row kernel that decodes a short suffix. So these tests keep
//! every prompt under 64 tokens and every worker under 512 KV cells (slots × context),
//! where both paths run the same kernels; a wrong position, a stale cell or a bad copy
//! still changes the answer. (At larger sizes a cached answer can differ from an uncached
//! one in late tokens, as with llama-server; see docs/architecture.md.)

use std::time::Duration;

use rbee_test_support::http;
use serde_json::{json, Value};

use crate::common::{model, Worker};

const SYSTEM: &str = "You are a kind bee expert. Answer briefly.";

/// A greedy chat request.
fn chat(messages: &[(&str, &str)], max_tokens: u32) -> Value {
    let messages: Vec<Value> = messages
        .iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    json!({"messages": messages, "max_tokens": max_tokens, "temperature": 0})
}

/// The answer's text and how many prompt tokens came from the cache.
fn ask(w: &Worker, body: &Value) -> (String, u64) {
    let r = w.complete(body.clone());
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    (
        v["text"].as_str().unwrap().to_owned(),
        v["cached_prompt_tokens"].as_u64().unwrap(),
    )
}

fn slots(w: &Worker) -> Value {
    w.get("/v1/slots").json()
}

/// Two workers on the same model, `slots` × `ctx` tokens: one with the cache, one without.
fn pair(slots: u32, ctx: u32) -> Option<(Worker, Worker)> {
    let model = model()?;
    let (slots, ctx) = (slots.to_string(), ctx.to_string());
    let args = ["--slots", slots.as_str(), "--ctx-size", ctx.as_str()];
    let cached = Worker::start(&model, &args);
    let mut off = args.to_vec();
    off.push("--no-prompt-cache");
    let plain = Worker::start(&model, &off);
    Some((cached, plain))
}

/// The prompt's length in tokens (asked of the worker).
fn prompt_tokens(w: &Worker, body: &Value) -> u64 {
    let mut one = body.clone();
    one["max_tokens"] = json!(1);
    one["cache_prompt"] = json!(false);
    w.complete(one).json()["prompt_tokens"].as_u64().unwrap()
}

#[test]
fn greedy_answers_with_the_cache_are_those_without_for_extended_shortened_and_diverging_prompts() {
    let Some((w, plain)) = pair(1, 256) else {
        return;
    };
    let same = |body: &Value| {
        let (text, cached) = ask(&w, body);
        let (expected, none) = ask(&plain, body);
        assert_eq!(text, expected, "{body}");
        assert_eq!(none, 0, "nothing is cached with --no-prompt-cache");
        cached
    };
    let turn1 = [("system", SYSTEM), ("user", "What does the queen do?")];
    assert_eq!(same(&chat(&turn1, 12)), 0, "an empty cache");
    let (answer, _) = ask(&plain, &chat(&turn1, 12));
    // The next turn: the history is read from the cache, only the new turn decoded.
    let turn2 = [
        turn1[0],
        turn1[1],
        ("assistant", answer.as_str()),
        ("user", "And the drones?"),
    ];
    let prompt = prompt_tokens(&plain, &chat(&turn2, 12));
    assert!(prompt < 64, "keep under the tiled kernel: {prompt}");
    let reused = same(&chat(&turn2, 12));
    assert!(
        reused > prompt / 2,
        "turn 2 reused {reused} of {prompt} tokens"
    );
    // A prompt that is a strict prefix of what is cached.
    let prefix = json!({"prompt": "<|im_start|>system\nYou are a kind bee", "max_tokens": 16, "temperature": 0});
    let reused = same(&prefix);
    assert!(reused > 3, "the shorter prompt reused {reused}");
    // Diverging at the first token, then half-way.
    assert_eq!(
        same(&json!({"prompt": "Bees are", "max_tokens": 16, "temperature": 0})),
        0
    );
    let reused =
        same(&json!({"prompt": "Bees are small insects that", "max_tokens": 16, "temperature": 0}));
    assert!(reused >= 2, "`Bees are` is shared: {reused}");
    // What the slots say.
    let v = slots(&w);
    assert_eq!(v["prompt_cache"], true);
    let s = &v["slots"][0];
    assert!(s["cached_tokens"].as_u64().unwrap() > 4, "{v}");
    assert!(s["hits"].as_u64().unwrap() >= 3, "{v}");
    assert!(s["tokens_reused"].as_u64().unwrap() > 10, "{v}");
    let off = slots(&plain);
    assert_eq!(off["prompt_cache"], false);
    assert_eq!(off["slots"][0]["cached_tokens"], 0, "{off}");
}

/// Waits (at most 2 s) until the only slot holds more than `held` tokens; how many.
fn prepared_beyond(w: &Worker, held: u64) -> u64 {
    (0..100)
        .find_map(|_| {
            let n = slots(w)["slots"][0]["cached_tokens"].as_u64().unwrap();
            std::thread::sleep(Duration::from_millis(20));
            (n > held).then_some(n)
        })
        .expect("the next turn's opening decoded within 2 s")
}

#[test]
fn a_finished_chat_answer_is_prepared_for_the_next_turn() {
    let Some((w, plain)) = pair(1, 256) else {
        return;
    };
    let mut turns = vec![("system", "Answer in one word.".to_owned())];
    // An answer that ends on its own, then one cut at max_tokens (whose last token was sent
    // but never decoded): once idle, the worker decodes what the template puts before the
    // next user message, and the next turn uses all of it.
    let first = "Reply with one word: yes or no?";
    for (question, max_tokens, finish) in [(first, 40, "stop"), ("Thanks!", 1, "length")] {
        turns.push(("user", question.to_owned()));
        let messages: Vec<(&str, &str)> = turns.iter().map(|(r, c)| (*r, c.as_str())).collect();
        let body = chat(&messages, max_tokens);
        assert!(prompt_tokens(&plain, &body) < 64);
        let r = w.complete(body.clone()).json();
        assert_eq!(r["finish_reason"], finish, "{r}");
        assert_eq!(r["text"], ask(&plain, &body).0, "the same answer");
        let cells = r["prompt_tokens"].as_u64().unwrap() + r["total_tokens"].as_u64().unwrap();
        let prepared = prepared_beyond(&w, cells);
        turns.push(("assistant", r["text"].as_str().unwrap().to_owned()));
        turns.push(("user", "Bye.".to_owned()));
        let messages: Vec<(&str, &str)> = turns.iter().map(|(r, c)| (*r, c.as_str())).collect();
        let next = chat(&messages, 6);
        assert!(prompt_tokens(&plain, &next) < 64);
        turns.pop();
        let (text, cached) = ask(&w, &next);
        assert_eq!(cached, prepared, "every prepared token was used");
        assert_eq!(
            text,
            ask(&plain, &next).0,
            "after {question:?}: the same answer"
        );
    }
}

#[test]
fn a_prefix_in_another_slot_is_copied_and_answers_stay_the_same() {
    let Some((w, plain)) = pair(4, 120) else {
        return;
    };
    // Four conversations with the same system prompt, one after the other: the first
    // decodes it, the others copy it from the slot that has it.
    let questions = [
        "What does the queen do?",
        "Why do bees dance?",
        "How is honey made?",
        "What do drones do?",
    ];
    let mut system_tokens = 0;
    for (i, q) in questions.iter().enumerate() {
        let body = chat(&[("system", SYSTEM), ("user", q)], 12);
        let (text, cached) = ask(&w, &body);
        assert_eq!(text, ask(&plain, &body).0, "{q}");
        if i == 0 {
            assert_eq!(cached, 0);
        } else {
            assert!(cached > 10, "{q}: {cached} tokens reused");
            // At least the system prompt's part of the template, whichever slot it came from.
            system_tokens = if system_tokens == 0 {
                cached
            } else {
                system_tokens.min(cached)
            };
        }
    }
    // Each conversation went to a slot of its own (least recently used), and each holds it.
    let v = slots(&w);
    let held: Vec<u64> = v["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["cached_tokens"].as_u64().unwrap())
        .collect();
    assert!(held.iter().all(|&n| n > system_tokens), "{v}");
}

#[test]
fn requests_racing_for_the_slot_with_the_best_prefix_both_reuse_it() {
    let Some((w, plain)) = pair(2, 200) else {
        return;
    };
    let first = chat(&[("system", SYSTEM), ("user", "Hello")], 8);
    ask(&w, &first);
    let bodies: Vec<Value> = ["Tell me about wax.", "Tell me about pollen."]
        .iter()
        .map(|q| chat(&[("system", SYSTEM), ("user", q)], 16))
        .collect();
    let answers: Vec<(String, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = bodies.iter().map(|b| s.spawn(|| ask(&w, b))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (body, (text, cached)) in bodies.iter().zip(&answers) {
        assert_eq!(text, &ask(&plain, body).0);
        assert!(*cached > 10, "{cached} tokens reused");
    }
}

#[test]
fn an_evicted_slot_decodes_again_and_a_cancelled_answer_stays_usable() {
    let Some((w, plain)) = pair(2, 200) else {
        return;
    };
    let a = chat(
        &[("system", SYSTEM), ("user", "What does the queen do?")],
        16,
    );
    let b = json!({"prompt": "Once upon a time, in a hive far away,", "max_tokens": 16, "temperature": 0});
    let c = json!({"prompt": "The weather today is", "max_tokens": 100, "temperature": 0});
    ask(&w, &a);
    ask(&w, &b);
    // A third prompt, matching neither, takes the least recently used slot: `a`'s.
    let (text, cached) = ask(&w, &c);
    assert_eq!((text.as_str(), cached), (ask(&plain, &c).0.as_str(), 0));
    assert!(ask(&w, &b).1 > 5, "b's slot kept it");
    let (text, cached) = ask(&w, &a);
    assert_eq!(cached, 0, "evicted");
    assert_eq!(text, ask(&plain, &a).0);
    // A cancelled request leaves its prompt and partial answer in the cache; the same
    // prompt then reuses it and still answers as without a cache.
    let long = json!({"prompt": "Here is a long story about a bee colony.\n\nChapter 1:", "max_tokens": 150, "temperature": 0});
    let mut s = w.stream(long.clone()).expect("stream");
    let id = s.request_id.clone().expect("X-Request-Id");
    for _ in 0..6 {
        s.next_json().unwrap();
    }
    let url = format!("{}/v1/inference/{id}", w.url);
    assert_eq!(http::send("DELETE", &url, None, None).status, 204);
    let rest = s.collect();
    assert_eq!(rest.last().unwrap()["finish_reason"], "cancelled");
    assert!(w.slot_free_within(Duration::from_secs(1)));
    let shorter = json!({"prompt": long["prompt"], "max_tokens": 12, "temperature": 0});
    let (text, cached) = ask(&w, &shorter);
    assert!(cached > 5, "{cached}");
    assert_eq!(text, ask(&plain, &shorter).0);
}

#[test]
fn cache_prompt_false_reuses_nothing_and_a_wrong_type_is_refused_by_name() {
    let Some(model) = model() else { return };
    let w = Worker::start(&model, &[]);
    let body = json!({"prompt": "The honey bee", "max_tokens": 8, "temperature": 0});
    let (text, _) = ask(&w, &body);
    let mut off = body.clone();
    off["cache_prompt"] = json!(false);
    let (again, cached) = ask(&w, &off);
    assert_eq!((again.as_str(), cached), (text.as_str(), 0));
    assert!(ask(&w, &body).1 > 0, "cached again after the opt-out");
    for (path, body) in [
        (
            "/v1/inference",
            json!({"prompt": "hi", "cache_prompt": "yes"}),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "hi"}], "cache_prompt": 1}),
        ),
    ] {
        let r = http::post_json(&format!("{}{path}", w.url), &body);
        assert_eq!(r.status, 400, "{path}: {}", r.body);
        assert!(r.body.contains("cache_prompt"), "{path}: {}", r.body);
    }
}
