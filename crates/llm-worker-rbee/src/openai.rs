//! OpenAI's routes on the worker: `GET /v1/models`, `GET /v1/models/{id}`,
//! `POST /v1/chat/completions` and `POST /v1/completions`. A request is translated into
//! the worker's own [`InferenceRequest`] and checked by the same [`validate`], then runs on
//! the same engine as `/v1/inference` (so greedy output is the same through either route);
//! only the answer's shape differs. Errors use OpenAI's envelope.

use std::time::Instant;

use rbee_http::Request;
use rbee_types::openai::{
    AnswerMessage, ChatChoice, ChatCompletion, ChatCompletionChunk, ChunkChoice, CompletionRequest,
    Content, Delta, ModelObject, ModelObjectList, OneOrMany, OpenAiError, RequestMessage,
    TextChoice, TextCompletion, Usage,
};
use rbee_types::worker::{ChatMessage, DoneEvent, FinishReason, InferenceRequest};
use rbee_types::{ApiError, ErrorCode};
use serde_json::Value;

use crate::app::{serving, start, tokens_for, App, Started};
use crate::engine::Event;
use crate::validate::validate;
use rbee_http::{header, json_response, read_body, SseWriter};

/// Which of the two completion routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `/v1/chat/completions`: `messages`, answers `chat.completion(.chunk)`.
    Chat,
    /// `/v1/completions`: `prompt`, answers `text_completion`.
    Text,
}

/// Seconds since the epoch, for `created`.
fn now() -> u64 {
    rbee_types::now_unix()
}

/// Answers `e` in OpenAI's envelope.
pub(crate) fn respond_error(request: Request, e: &ApiError) {
    rbee_http::respond_openai_error(request, e);
}

/// The id clients put in `model`: the model file's name without `.gguf` (or the catalogue
/// reference the hive started the worker for).
pub(crate) fn model_id(app: &App) -> String {
    let info = crate::state::lock(&app.shared.info);
    match &info.model_ref {
        Some(r) => r.to_string(),
        None => info
            .model_file
            .strip_suffix(".gguf")
            .unwrap_or(&info.model_file)
            .to_owned(),
    }
}

/// `GET /v1/models` and `GET /v1/models/{id}` (`which`).
pub(crate) fn models(app: &App, request: Request, which: Option<&str>) {
    let model = ModelObject {
        id: model_id(app),
        object: "model".into(),
        created: now().saturating_sub(app.shared.started.elapsed().as_secs()),
        owned_by: "rbee".into(),
        reference: None,
    };
    match which {
        None => rbee_http::respond_json(
            request,
            200,
            &ModelObjectList {
                object: "list".into(),
                data: vec![model],
            },
        ),
        Some(id) if id == model.id => rbee_http::respond_json(request, 200, &model),
        Some(id) => respond_error(
            request,
            &ApiError::new(
                ErrorCode::ModelNotFound,
                format!(
                    "this worker serves {}, not {id}; GET /v1/models lists it",
                    model.id
                ),
            )
            .detail("field", "model"),
        ),
    }
}

/// `POST /v1/chat/completions` or `/v1/completions`.
pub(crate) fn completion(app: &App, mut request: Request, kind: Kind) {
    let received = Instant::now();
    let admitted = serving(app).and_then(|prepared| {
        let body = read_body(&mut request, app.shared.max_body_bytes)?;
        let req = parse(&body)?;
        let options = Options::of(&req);
        let v = validate(&translate(req, kind)?, prepared.ctx_size)?;
        let tokens = tokens_for(prepared, &v)?;
        let id = request.header("X-Request-Id");
        Ok((start(app, v, tokens, received, id)?, options))
    });
    let (started, options) = match admitted {
        Ok(a) => a,
        Err(e) => return respond_error(request, &e),
    };
    let answer = Answer {
        id: format!(
            "{}-{}",
            if kind == Kind::Chat {
                "chatcmpl"
            } else {
                "cmpl"
            },
            started.request_id
        ),
        model: options.model.unwrap_or_else(|| model_id(app)),
        created: now(),
        kind,
    };
    if options.stream {
        stream(request, &started, &answer, options.include_usage);
    } else {
        complete(request, &started, &answer);
    }
}

/// The request's body, with a wrong type named by its parameter.
fn parse(body: &str) -> Result<CompletionRequest, ApiError> {
    rbee_http::parse_named(body)
}

/// What the answer needs from the request beyond generation.
struct Options {
    model: Option<String>,
    stream: bool,
    include_usage: bool,
}

impl Options {
    fn of(r: &CompletionRequest) -> Options {
        Options {
            model: r.model.clone(),
            stream: r.stream.unwrap_or(false),
            include_usage: r
                .stream_options
                .as_ref()
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
        }
    }
}

fn unsupported(param: &str, why: &str) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidRequest,
        format!("`{param}` is not supported by rbee: {why}"),
    )
    .detail("field", param)
}

/// Parameters rbee does not implement are refused by name, unless their value asks for
/// what rbee does anyway (`n: 1`, `logprobs: false`, `tools: []`, …).
fn check_other(other: &serde_json::Map<String, Value>) -> Result<(), ApiError> {
    for (name, value) in other {
        let neutral = value.is_null()
            || match name.as_str() {
                "n" | "best_of" => value.as_i64() == Some(1),
                "logprobs" | "echo" | "store" | "parallel_tool_calls" => {
                    value.as_bool() == Some(false)
                }
                "tools" | "functions" => value.as_array().is_some_and(Vec::is_empty),
                "tool_choice" | "function_call" => value.as_str() == Some("none"),
                "response_format" => value.get("type").and_then(Value::as_str) == Some("text"),
                "logit_bias" | "metadata" => value.as_object().is_some_and(|m| m.is_empty()),
                _ => false,
            };
        if !neutral {
            let why = match name.as_str() {
                "n" | "best_of" => "one choice per request (send several requests)",
                "tools" | "tool_choice" | "functions" | "function_call" | "parallel_tool_calls" => {
                    "no tool or function calling"
                }
                "logprobs" | "top_logprobs" => "no log probabilities",
                "logit_bias" => "no logit bias",
                "response_format" => "only plain text answers",
                _ => "unknown parameter",
            };
            return Err(unsupported(name, why));
        }
    }
    Ok(())
}

/// OpenAI's request as the worker's own: the same checks and the same engine follow.
fn translate(r: CompletionRequest, kind: Kind) -> Result<InferenceRequest, ApiError> {
    check_other(&r.other)?;
    let (prompt, messages) = match kind {
        Kind::Chat => {
            if r.prompt.is_some() {
                return Err(unsupported(
                    "prompt",
                    "chat takes `messages`; send `prompt` to /v1/completions",
                ));
            }
            let Some(messages) = r.messages else {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    "`messages` is required: a list of {\"role\", \"content\"}",
                )
                .detail("field", "messages"));
            };
            (None, Some(chat_messages(messages)?))
        }
        Kind::Text => {
            if r.messages.is_some() {
                return Err(unsupported(
                    "messages",
                    "completions take `prompt`; send `messages` to /v1/chat/completions",
                ));
            }
            let prompt = match r.prompt {
                Some(OneOrMany::One(p)) => p,
                Some(OneOrMany::Many(mut p)) if p.len() == 1 => p.remove(0),
                Some(OneOrMany::Many(_)) => {
                    return Err(unsupported("prompt", "one prompt per request"))
                }
                None => {
                    return Err(
                        ApiError::new(ErrorCode::InvalidRequest, "`prompt` is required")
                            .detail("field", "prompt"),
                    )
                }
            };
            (Some(prompt), None)
        }
    };
    let max_tokens = r.max_completion_tokens.or(r.max_tokens);
    Ok(InferenceRequest {
        prompt,
        messages,
        max_tokens,
        temperature: r.temperature,
        top_p: r.top_p,
        top_k: r.top_k,
        seed: r.seed.map(|s| s as u64),
        stop: r.stop.map(OneOrMany::into_vec),
        stream: Some(r.stream.unwrap_or(false)),
        presence_penalty: r.presence_penalty,
        frequency_penalty: r.frequency_penalty,
        cache_prompt: r.cache_prompt,
    })
}

/// OpenAI's messages as chat messages for the model's template: `developer` is a system
/// message; text parts are joined by newlines; anything but text is refused by name.
fn chat_messages(messages: Vec<RequestMessage>) -> Result<Vec<ChatMessage>, ApiError> {
    if messages.is_empty() {
        return Err(
            ApiError::new(ErrorCode::InvalidRequest, "`messages` is empty")
                .detail("field", "messages"),
        );
    }
    messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            if let Some(key) = m.other.keys().next() {
                return Err(unsupported(
                    &format!("messages[{i}].{key}"),
                    "messages carry a role, a content and a name only",
                ));
            }
            let role = match m.role.as_str() {
                "developer" => "system".to_owned(),
                r => r.to_owned(),
            };
            let content = match m.content {
                Some(Content::Text(t)) => t,
                Some(Content::Parts(parts)) => {
                    let mut texts = Vec::with_capacity(parts.len());
                    for (j, p) in parts.into_iter().enumerate() {
                        match (p.kind.as_str(), p.text) {
                            ("text", Some(t)) => texts.push(t),
                            (kind, _) => {
                                return Err(unsupported(
                                    &format!("messages[{i}].content[{j}].type"),
                                    &format!("only text parts are accepted, not {kind:?}"),
                                ))
                            }
                        }
                    }
                    texts.join("\n")
                }
                None => {
                    return Err(ApiError::new(
                        ErrorCode::InvalidRequest,
                        format!("messages[{i}] has no `content`"),
                    )
                    .detail("field", format!("messages[{i}].content")))
                }
            };
            Ok(ChatMessage { role, content })
        })
        .collect()
}

/// The parts every answer and chunk of one request share.
struct Answer {
    id: String,
    model: String,
    created: u64,
    kind: Kind,
}

fn finish_reason(r: FinishReason) -> String {
    match r {
        FinishReason::Length | FinishReason::ContextFull => "length",
        FinishReason::Stop | FinishReason::Cancelled => "stop",
    }
    .into()
}

impl Answer {
    /// A `text_completion` (the whole answer, or a chunk of its stream).
    fn text(
        &self,
        text: String,
        finish: Option<String>,
        usage: Option<Option<Usage>>,
    ) -> TextCompletion {
        TextCompletion {
            id: self.id.clone(),
            object: "text_completion".into(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![TextChoice {
                text,
                index: 0,
                logprobs: None,
                finish_reason: finish,
            }],
            usage,
        }
    }

    /// A chunk of the stream: new `text` (or the role on the first), the finish reason on
    /// the last; `usage` is `Some(None)` on every chunk when the client asked for usage.
    fn chunk(
        &self,
        text: Option<String>,
        first: bool,
        finish: Option<String>,
        usage: Option<Option<Usage>>,
    ) -> Value {
        let v = match self.kind {
            Kind::Chat => serde_json::to_value(ChatCompletionChunk {
                id: self.id.clone(),
                object: "chat.completion.chunk".into(),
                created: self.created,
                model: self.model.clone(),
                choices: vec![ChunkChoice {
                    index: 0,
                    delta: Delta {
                        role: first.then(|| "assistant".into()),
                        content: text,
                    },
                    logprobs: None,
                    finish_reason: finish,
                }],
                usage,
            }),
            Kind::Text => serde_json::to_value(self.text(text.unwrap_or_default(), finish, usage)),
        };
        v.unwrap_or(Value::Null)
    }

    /// The last chunk of a stream with `include_usage`: no choices, the counts.
    fn usage_chunk(&self, usage: Usage) -> Value {
        let mut v = self.chunk(None, false, None, Some(Some(usage)));
        v["choices"] = Value::Array(vec![]);
        v
    }

    /// The whole answer of a non-streamed request.
    fn document(&self, text: String, done: &DoneEvent) -> Value {
        let usage = Usage::new(
            done.prompt_tokens,
            done.total_tokens,
            done.cached_prompt_tokens,
        );
        let finish = Some(finish_reason(done.finish_reason));
        let v = match self.kind {
            Kind::Chat => serde_json::to_value(ChatCompletion {
                id: self.id.clone(),
                object: "chat.completion".into(),
                created: self.created,
                model: self.model.clone(),
                choices: vec![ChatChoice {
                    index: 0,
                    message: AnswerMessage {
                        role: "assistant".into(),
                        content: text,
                    },
                    logprobs: None,
                    finish_reason: finish,
                }],
                usage,
            }),
            Kind::Text => serde_json::to_value(self.text(text, finish, Some(Some(usage)))),
        };
        v.unwrap_or(Value::Null)
    }
}

/// SSE chunks as tokens arrive, one flushed HTTP chunk each, then `[DONE]`.
fn stream(request: Request, started: &Started, answer: &Answer, include_usage: bool) {
    let usage_field = include_usage.then_some(None);
    let Ok(mut sse) = SseWriter::start(request, &[("X-Request-Id", &started.request_id)]) else {
        return started.client_gone("head");
    };
    let mut first = true;
    if answer.kind == Kind::Chat {
        let c = answer.chunk(Some(String::new()), true, None, usage_field);
        if sse.json(&c).is_err() {
            return started.client_gone("start");
        }
        first = false;
    }
    loop {
        let sent = match started.events.recv() {
            Ok(Event::Token(t)) if t.is_empty() => Ok(()),
            Ok(Event::Token(t)) => {
                let c = answer.chunk(Some(t), first, None, usage_field);
                first = false;
                sse.json(&c)
            }
            Ok(Event::Done(done)) => {
                let last = answer.chunk(
                    None,
                    first,
                    Some(finish_reason(done.finish_reason)),
                    usage_field,
                );
                let u = Usage::new(
                    done.prompt_tokens,
                    done.total_tokens,
                    done.cached_prompt_tokens,
                );
                let _ = sse.json(&last).and_then(|()| {
                    if include_usage {
                        sse.json(&answer.usage_chunk(u))?;
                    }
                    sse.comment(&u.comment())?;
                    sse.done()
                });
                return;
            }
            Ok(Event::Error(e)) => {
                let _ = sse
                    .json(&OpenAiError::from_api(&e).1)
                    .and_then(|()| sse.done());
                return;
            }
            Err(_) => {
                let e = ApiError::new(ErrorCode::Internal, "the engine stopped");
                let _ = sse
                    .json(&OpenAiError::from_api(&e).1)
                    .and_then(|()| sse.done());
                return;
            }
        };
        if sent.is_err() {
            return started.client_gone("write");
        }
    }
}

/// One JSON document once generation ends.
fn complete(request: Request, started: &Started, answer: &Answer) {
    match started.collect(&request.disconnect_probe()) {
        Ok((text, done)) => {
            let body = answer.document(text, &done);
            let resp =
                json_response(200, &body).with_header(header("X-Request-Id", &started.request_id));
            let _ = request.respond(resp);
        }
        Err(e) => respond_error(request, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: &str) -> Result<InferenceRequest, ApiError> {
        translate(parse(body)?, Kind::Chat)
    }

    fn param(r: Result<InferenceRequest, ApiError>) -> String {
        let e = r.expect_err("refused");
        assert_eq!(e.error.code, ErrorCode::InvalidRequest, "{e}");
        e.error.details["field"].as_str().unwrap_or("").to_owned()
    }

    #[test]
    fn chat_requests_become_inference_requests() {
        let r = chat(
            r#"{"model":"x","messages":[{"role":"developer","content":"be brief"},
                {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],
                "max_completion_tokens":9,"max_tokens":3,"stop":"\n","seed":-1,"n":1,"logprobs":false}"#,
        )
        .unwrap();
        let m = r.messages.unwrap();
        assert_eq!(
            (m[0].role.as_str(), m[0].content.as_str()),
            ("system", "be brief")
        );
        assert_eq!(m[1].content, "a\nb");
        assert_eq!(r.max_tokens, Some(9), "max_completion_tokens wins");
        assert_eq!(r.stop, Some(vec!["\n".to_owned()]));
        assert_eq!(r.stream, Some(false), "OpenAI's default");
    }

    #[test]
    fn what_rbee_does_not_do_is_refused_by_name() {
        for (body, name) in [
            (
                r#"{"messages":[{"role":"user","content":"hi"}],"n":3}"#,
                "n",
            ),
            (
                r#"{"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function"}]}"#,
                "tools",
            ),
            (
                r#"{"messages":[{"role":"user","content":"hi"}],"logprobs":true}"#,
                "logprobs",
            ),
            (
                r#"{"messages":[{"role":"user","content":"hi"}],"logit_bias":{"1":5}}"#,
                "logit_bias",
            ),
            (
                r#"{"messages":[{"role":"user","content":"hi"}],"frobnicate":1}"#,
                "frobnicate",
            ),
            (
                r#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}"#,
                "messages[0].content[0].type",
            ),
            (r#"{"messages":[{"role":"user"}]}"#, "messages[0].content"),
            (r#"{"messages":[]}"#, "messages"),
            (
                r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":"9"}"#,
                "max_tokens",
            ),
            (
                r#"{"messages":[{"role":"user","content":"hi"}],"temperature":"hot"}"#,
                "temperature",
            ),
            (r#"{"prompt":"hi"}"#, "prompt"),
        ] {
            assert_eq!(param(chat(body)), name, "{body}");
        }
        let e = translate(parse(r#"{"prompt":["a","b"]}"#).unwrap(), Kind::Text);
        assert_eq!(param(e), "prompt");
    }

    #[test]
    fn invalid_json_keeps_its_code() {
        let e = parse("{\"messages\": [").unwrap_err();
        assert_eq!(e.error.code, ErrorCode::InvalidJson);
    }
}
