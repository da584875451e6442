//! One streamed OpenAI chat request, timed: what every server comparison is made of.

use std::io::{BufRead, BufReader};
use std::time::Instant;

use anyhow::Context;
use rbee_types::openai::ChatCompletionChunk;

/// One streamed answer: TTFT and the decode rate after the first token.
pub struct Run {
    /// Time to the first content chunk.
    pub ttft_ms: f64,
    /// Content chunks (one per token).
    pub tokens: u32,
    /// Tokens after the first, per second.
    pub decode_tok_s: f64,
    /// As the server counted them (its chat template decides).
    pub prompt_tokens: u32,
    /// Prompt tokens the server says came from its cache (when it says).
    pub cached_tokens: u32,
}

/// The streamed answer's text, with its timing.
pub struct Answer {
    /// Timing and counts.
    pub run: Run,
    /// The assistant's text.
    pub text: String,
}

/// Calls `f` with the payload of each `data:` line of an SSE stream until `[DONE]`, the
/// end of the stream, or `f` returning false.
pub fn sse_data(
    stream: impl std::io::Read,
    mut f: impl FnMut(&str) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    for line in BufReader::new(stream).lines() {
        let line = line?;
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" || !f(data)? {
            break;
        }
    }
    Ok(())
}

/// Posts `body` (a streamed chat request) to `{url}/v1/chat/completions` and times it.
pub fn stream_body(url: &str, key: Option<&str>, body: &serde_json::Value) -> anyhow::Result<Run> {
    stream_answer(url, key, body, || {}).map(|a| a.run)
}

/// Like [`stream_body`], keeping the text (for the next turn of a conversation);
/// `on_first` runs when the first content chunk arrives.
pub fn stream_answer(
    url: &str,
    key: Option<&str>,
    body: &serde_json::Value,
    on_first: impl FnOnce(),
) -> anyhow::Result<Answer> {
    let mut on_first = Some(on_first);
    let mut answer = String::new();
    let mut cached_tokens = 0;
    let mut req = ureq::post(&format!("{url}/v1/chat/completions"));
    if let Some(k) = key {
        req = req.set("Authorization", &format!("Bearer {k}"));
    }
    let t0 = Instant::now();
    let resp = req.send_string(&body.to_string())?;
    let (mut first, mut n, mut prompt_tokens) = (None, 0u32, 0);
    sse_data(resp.into_reader(), |data| {
        let chunk: ChatCompletionChunk = serde_json::from_str(data)?;
        if let Some(Some(u)) = &chunk.usage {
            prompt_tokens = u.prompt_tokens;
            cached_tokens = u.prompt_tokens_details.map_or(0, |d| d.cached_tokens);
        }
        let text = chunk
            .choices
            .first()
            .and_then(|c| c.delta.content.as_deref());
        if let Some(t) = text.filter(|t| !t.is_empty()) {
            n += 1;
            answer.push_str(t);
            first.get_or_insert_with(Instant::now);
            if let Some(f) = on_first.take() {
                f();
            }
        }
        Ok(true)
    })?;
    let first = first.context("no token")?;
    let decode = first.elapsed().as_secs_f64();
    Ok(Answer {
        run: Run {
            ttft_ms: (first - t0).as_secs_f64() * 1000.0,
            tokens: n,
            decode_tok_s: f64::from(n.saturating_sub(1)) / decode.max(1e-9),
            prompt_tokens,
            cached_tokens,
        },
        text: answer,
    })
}
