//! OpenAI's wire format, as far as rbee serves it: `GET /v1/models`,
//! `POST /v1/chat/completions` and `POST /v1/completions` (streamed as SSE `data:` chunks
//! ending with `data: [DONE]`, or one document), and OpenAI's error envelope. The contract
//! is what the official `openai` client reads; the tests check it with that client.
//!
//! Requests keep parameters rbee does not implement (`n`, `tools`, `logprobs`, …) and any
//! unknown field, so that validation can refuse them by name instead of ignoring them.
//! (serde's `flatten` does not combine with `deny_unknown_fields`, hence `other`.)

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{ApiError, ErrorCode};

/// A string or a list of strings (`stop`, `prompt`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// A visitor for "a string, or a list of `T`" whose error says so: serde's message for an
/// `untagged` enum ("data did not match any variant of untagged enum") tells a client
/// nothing.
struct StrOrList<T, R> {
    expecting: &'static str,
    one: fn(String) -> R,
    many: fn(Vec<T>) -> R,
}

impl<'de, T: Deserialize<'de>, R> serde::de::Visitor<'de> for StrOrList<T, R> {
    type Value = R;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<R, E> {
        Ok((self.one)(v.to_owned()))
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<R, E> {
        Ok((self.one)(v))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<R, A::Error> {
        let mut all = Vec::new();
        while let Some(x) = seq.next_element::<T>()? {
            all.push(x);
        }
        Ok((self.many)(all))
    }
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrOrList {
            expecting: "a string or a list of strings (token ids are not taken)",
            one: OneOrMany::One,
            many: OneOrMany::Many,
        })
    }
}

impl OneOrMany {
    /// The strings, in order.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// `stream_options`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with `usage` (and `"usage": null` on the others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
}

/// One part of a message's content given as a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentPart {
    /// `text` (images, audio and files are refused by name).
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Anything else the part carries (`image_url`, …).
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// A message's content: a string, or a list of parts.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Parts (only `text` parts are accepted).
    Parts(Vec<ContentPart>),
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrOrList {
            expecting: r#"a string or a list of parts such as {"type": "text", "text": "…"}"#,
            one: Content::Text,
            many: Content::Parts,
        })
    }
}

/// One message of a chat request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestMessage {
    /// `system`, `developer`, `user` or `assistant`.
    pub role: String,
    /// The text (required; `null` only appears with tool calls, which rbee refuses).
    #[serde(default)]
    pub content: Option<Content>,
    /// A participant's name (accepted, not used by chat templates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Anything else (`tool_calls`, `audio`, …), refused by name.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `POST /v1/chat/completions` (with `messages`) and `POST /v1/completions` (with `prompt`):
/// one type, so both routes share every parameter; each route refuses the other's input.
/// Parameters are fields of their own (not flattened), so a server parsing with
/// `serde_path_to_error` names the one with a wrong type; ranges are checked after parsing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionRequest {
    /// The conversation (chat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<RequestMessage>>,
    /// The text to continue (completions): a string or a list of one string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<OneOrMany>,
    /// The model to use (an id from `/v1/models`, an alias or a reference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Most tokens to generate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<i64>,
    /// The same, newer name (chat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<i64>,
    /// 0 ..= 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// (0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// llama.cpp's extension, as llama-server takes it; 0 disables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<i64>,
    /// Sampler seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Strings that end generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<OneOrMany>,
    /// SSE chunks (default false, as in OpenAI's API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// `include_usage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// -2 ..= 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    /// -2 ..= 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    /// The end user (accepted, ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// llama-server's extension: reuse a cached prefix of the prompt (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_prompt: Option<bool>,
    /// Everything else: parameters rbee does not implement and unknown fields, refused by
    /// name unless they ask for what rbee does anyway (`n: 1`, `logprobs: false`, …).
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// Token counts of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt (after the chat template).
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
    /// The sum.
    pub total_tokens: u32,
    /// How many prompt tokens came from the prompt cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
}

/// `usage.prompt_tokens_details`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    /// Prompt tokens found in the cache (not decoded again).
    pub cached_tokens: u32,
}

/// The SSE comment (`: usage {json}`) that ends every OpenAI stream of a worker, whether or
/// not the client asked for usage: clients ignore comments; the hive's front door reads it
/// for its token metrics.
const USAGE_COMMENT: &str = "usage ";

impl Usage {
    /// The text of the usage comment (without the leading `: `).
    pub fn comment(&self) -> String {
        format!(
            "{USAGE_COMMENT}{}",
            serde_json::to_string(self).unwrap_or_default()
        )
    }

    /// The usage in an SSE comment line (`: usage {…}`), if it is one.
    pub fn from_comment(line: &str) -> Option<Usage> {
        let json = line
            .strip_prefix(':')?
            .trim_start()
            .strip_prefix(USAGE_COMMENT)?;
        serde_json::from_str(json).ok()
    }

    /// Counts with their sum; `cached` of the prompt tokens came from the prompt cache.
    pub fn new(prompt_tokens: u32, completion_tokens: u32, cached: u32) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: Some(PromptTokensDetails {
                cached_tokens: cached,
            }),
        }
    }
}

/// An assistant's message in a non-streamed chat answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerMessage {
    /// Always `assistant`.
    pub role: String,
    /// The generated text.
    pub content: String,
}

/// One choice of a non-streamed chat answer (rbee always answers one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatChoice {
    /// 0.
    pub index: u32,
    /// The answer.
    pub message: AnswerMessage,
    /// Always `null` (log probabilities are not offered).
    pub logprobs: Option<Value>,
    /// `stop` or `length`.
    pub finish_reason: Option<String>,
}

/// The answer to a non-streamed chat request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    /// `chatcmpl-…`.
    pub id: String,
    /// `chat.completion`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The model's id.
    pub model: String,
    /// One choice.
    pub choices: Vec<ChatChoice>,
    /// Token counts.
    pub usage: Usage,
}

/// What a chunk adds to the message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// `assistant`, on the first chunk only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// New text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// One choice of a chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    /// 0.
    pub index: u32,
    /// The new text.
    pub delta: Delta,
    /// Always `null`.
    pub logprobs: Option<Value>,
    /// Set on the last chunk with text: `stop` or `length`.
    pub finish_reason: Option<String>,
}

/// One SSE event of a streamed chat answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    /// The same id on every chunk of a stream.
    pub id: String,
    /// `chat.completion.chunk`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The model's id.
    pub model: String,
    /// One choice, or none on the usage chunk.
    pub choices: Vec<ChunkChoice>,
    /// With `include_usage`: `null` on every chunk but the last, which has no choices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
}

/// One choice of a text completion (streamed or not).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextChoice {
    /// The generated text (new text, when streamed).
    pub text: String,
    /// 0.
    pub index: u32,
    /// Always `null`.
    pub logprobs: Option<Value>,
    /// `stop` or `length` (on the last chunk when streamed).
    pub finish_reason: Option<String>,
}

/// The answer to `POST /v1/completions`, and each chunk of its stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextCompletion {
    /// `cmpl-…`.
    pub id: String,
    /// `text_completion`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The model's id.
    pub model: String,
    /// One choice, or none on the usage chunk.
    pub choices: Vec<TextChoice>,
    /// Token counts (non-streamed; streamed only with `include_usage`, see
    /// [`ChatCompletionChunk::usage`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
}

/// One model of `GET /v1/models`, and `GET /v1/models/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelObject {
    /// What to put in a request's `model`.
    pub id: String,
    /// `model`.
    pub object: String,
    /// Unix seconds (when it was downloaded or loaded).
    pub created: u64,
    /// `rbee`, or the Hugging Face organisation.
    pub owned_by: String,
    /// rbee's own field (clients ignore it): the model reference the id stands for, so a
    /// name can be turned into what the hive's management API takes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<crate::ModelRef>,
}

/// `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelObjectList {
    /// `list`.
    pub object: String,
    /// The models.
    pub data: Vec<ModelObject>,
}

/// The inner object of OpenAI's error envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenAiErrorBody {
    /// For a person: what went wrong and what to do.
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `not_found_error`,
    /// `rate_limit_error`, `server_error`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// The request parameter at fault, if one is.
    pub param: Option<String>,
    /// A machine-readable code (`model_not_found`, `context_length_exceeded`, rbee's own
    /// codes in lower case).
    pub code: Option<String>,
}

/// `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenAiError {
    /// The error.
    pub error: OpenAiErrorBody,
}

impl OpenAiError {
    /// rbee's error in OpenAI's shape, with the HTTP status the official clients map to
    /// their exception classes (400 `BadRequestError`, 401 `AuthenticationError`, 404
    /// `NotFoundError`, 429 `RateLimitError`, 5xx `InternalServerError`). The parameter at
    /// fault comes from the `field` detail; the code is rbee's, in lower case
    /// (`context_length_exceeded` for a prompt too long, as OpenAI names it).
    pub fn from_api(e: &ApiError) -> (u16, OpenAiError) {
        let status = e.http_status();
        let kind = match status {
            400 | 413 | 422 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            _ => "server_error",
        };
        let code = match e.error.code {
            ErrorCode::PromptTooLong => "context_length_exceeded".to_owned(),
            ErrorCode::InvalidApiKey | ErrorCode::MissingApiKey => "invalid_api_key".to_owned(),
            c => c.as_str().to_ascii_lowercase(),
        };
        let param = e
            .error
            .details
            .get("field")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let body = OpenAiErrorBody {
            message: e.error.message.clone(),
            kind: kind.into(),
            param,
            code: Some(code),
        };
        (status, OpenAiError { error: body })
    }

    /// The error as rbee's own: the code parsed back (`context_length_exceeded` and
    /// `invalid_api_key` included; an unknown code is `INTERNAL`), the message, and the
    /// parameter at fault as the `field` detail.
    pub fn to_api(&self) -> ApiError {
        let code = match self.error.code.as_deref() {
            Some("context_length_exceeded") => ErrorCode::PromptTooLong,
            Some("invalid_api_key") => ErrorCode::InvalidApiKey,
            Some(c) => serde_json::from_value(Value::String(c.to_ascii_uppercase()))
                .unwrap_or(ErrorCode::Internal),
            None => ErrorCode::Internal,
        };
        let e = ApiError::new(code, self.error.message.clone());
        match &self.error.param {
            Some(p) => e.detail("field", p.as_str()),
            None => e,
        }
    }
}

/// One `data:` event of a streamed answer: a chunk, or the error that ended the stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StreamItem<T> {
    /// The error (sent in place of a chunk, then `[DONE]`).
    Error(OpenAiError),
    /// A chunk.
    Chunk(T),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_travels_in_an_sse_comment() {
        let u = Usage::new(12, 5, 4);
        let line = format!(": {}", u.comment());
        assert_eq!(Usage::from_comment(&line), Some(u));
        assert_eq!(Usage::from_comment(": keep-alive"), None);
        assert_eq!(Usage::from_comment("data: {}"), None);
        assert_eq!(Usage::from_comment(": usage {broken"), None);
    }

    #[test]
    fn stop_and_prompt_take_a_string_or_strings_and_say_so_otherwise() {
        let one: OneOrMany = serde_json::from_str(r#""a""#).unwrap();
        assert_eq!(one, OneOrMany::One("a".into()));
        let many: OneOrMany = serde_json::from_str(r#"["a","b"]"#).unwrap();
        assert_eq!(many.into_vec(), ["a", "b"]);
        for bad in ["5", "[1,2]", r#"["a",3]"#, "{}", "null"] {
            let e = serde_json::from_str::<OneOrMany>(bad)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("string") && !e.contains("untagged"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn content_is_a_string_or_parts_and_says_so_otherwise() {
        let t: Content = serde_json::from_str(r#""hi""#).unwrap();
        assert_eq!(t, Content::Text("hi".into()));
        let p: Content = serde_json::from_str(r#"[{"type":"text","text":"hi"}]"#).unwrap();
        assert!(matches!(p, Content::Parts(v) if v[0].text.as_deref() == Some("hi")));
        for bad in ["5", "{}", "true"] {
            let e = serde_json::from_str::<Content>(bad)
                .unwrap_err()
                .to_string();
            assert!(e.contains("a string or a list of parts"), "{bad}: {e}");
        }
    }

    #[test]
    fn known_parameters_are_typed_and_the_rest_kept_by_name() {
        let r: CompletionRequest = serde_json::from_str(
            r#"{"model":"smollm2","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],
                "temperature":0,"stop":"\n","stream":true,"stream_options":{"include_usage":true},
                "n":1,"tools":[],"frobnicate":true}"#,
        )
        .unwrap();
        assert_eq!(r.model.as_deref(), Some("smollm2"));
        assert_eq!(r.temperature, Some(0.0));
        assert_eq!(r.stop, Some(OneOrMany::One("\n".into())));
        assert_eq!(r.stream_options.and_then(|o| o.include_usage), Some(true));
        let mut rest: Vec<&str> = r.other.keys().map(String::as_str).collect();
        rest.sort_unstable();
        assert_eq!(rest, ["frobnicate", "n", "tools"]);
        let messages = r.messages.unwrap();
        assert!(
            matches!(&messages[0].content, Some(Content::Parts(p)) if p[0].text.as_deref() == Some("hi"))
        );
    }

    #[test]
    fn answers_have_openais_shape() {
        let chunk = ChatCompletionChunk {
            id: "chatcmpl-1".into(),
            object: "chat.completion.chunk".into(),
            created: 1,
            model: "m".into(),
            choices: vec![],
            usage: Some(Some(Usage::new(3, 2, 0))),
        };
        let v = serde_json::to_value(&chunk).unwrap();
        assert_eq!(v["usage"]["total_tokens"], 5);
        let no_usage = ChatCompletionChunk {
            usage: Some(None),
            ..chunk.clone()
        };
        assert!(serde_json::to_value(&no_usage).unwrap()["usage"].is_null());
        let back: ChatCompletionChunk =
            serde_json::from_value(serde_json::to_value(&chunk).unwrap()).unwrap();
        assert_eq!(back, chunk);
        let e = OpenAiError {
            error: OpenAiErrorBody {
                message: "no".into(),
                kind: "invalid_request_error".into(),
                param: Some("n".into()),
                code: None,
            },
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(v["error"]["code"].is_null());
    }

    #[test]
    fn rbee_errors_map_to_the_statuses_the_sdk_knows() {
        let e = ApiError::new(ErrorCode::InvalidRequest, "`temperature` must be …")
            .detail("field", "temperature");
        let (status, o) = OpenAiError::from_api(&e);
        assert_eq!(status, 400);
        assert_eq!(o.error.kind, "invalid_request_error");
        assert_eq!(o.error.param.as_deref(), Some("temperature"));
        for (code, status, kind) in [
            (ErrorCode::InvalidApiKey, 401, "authentication_error"),
            (ErrorCode::ModelNotFound, 404, "not_found_error"),
            (ErrorCode::AllSlotsBusy, 503, "server_error"),
            (ErrorCode::Internal, 500, "server_error"),
        ] {
            let (s, o) = OpenAiError::from_api(&ApiError::new(code, "x"));
            assert_eq!((s, o.error.kind.as_str()), (status, kind), "{code:?}");
        }
        let (_, o) = OpenAiError::from_api(&ApiError::new(ErrorCode::PromptTooLong, "x"));
        assert_eq!(o.error.code.as_deref(), Some("context_length_exceeded"));
    }

    #[test]
    fn openai_errors_read_back_as_rbees_own_and_end_a_stream() {
        for code in [
            ErrorCode::PromptTooLong,
            ErrorCode::InvalidApiKey,
            ErrorCode::QueueFull,
            ErrorCode::ModelLoadFailed,
        ] {
            let e = ApiError::new(code, "why").detail("field", "max_tokens");
            let back = OpenAiError::from_api(&e).1.to_api();
            assert_eq!(back.error.code, code);
            assert_eq!(back.error.message, "why");
            assert_eq!(back.error.details["field"], "max_tokens");
        }
        let strange: OpenAiError = serde_json::from_str(
            r#"{"error":{"message":"m","type":"server_error","param":null,"code":"whatever"}}"#,
        )
        .unwrap();
        assert_eq!(strange.to_api().error.code, ErrorCode::Internal);
        let item: StreamItem<ChatCompletionChunk> = serde_json::from_str(
            r#"{"error":{"message":"m","type":"server_error","param":null,"code":"inference_failed"}}"#,
        )
        .unwrap();
        assert!(
            matches!(item, StreamItem::Error(e) if e.to_api().error.code == ErrorCode::InferenceFailed)
        );
        let item: StreamItem<ChatCompletionChunk> = serde_json::from_str(
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[]}"#,
        )
        .unwrap();
        assert!(matches!(item, StreamItem::Chunk(c) if c.id == "c"));
    }
}
