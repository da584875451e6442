//! Server plumbing shared by rbee's daemons (the worker and the hive): the HTTP/1.1
//! [`server`], JSON and error-envelope responses, bounded UTF-8 bodies, Bearer auth in constant time, route
//! checks (404/405), server-sent events, and in [`daemon`] sd-notify and termination
//! signals; in [`logging`] logs with journald priorities.

use std::io::Read;

use rbee_types::{ApiError, ErrorCode};

pub mod cors;
pub mod daemon;
pub mod guard;
pub mod logging;
pub mod server;
pub mod sse;

pub use server::{
    ConnectionStats, Connections, Header, Limits, Method, Outcome, Request, Response, Server,
    Stream,
};
pub use sse::SseWriter;

/// Reads the body, at most `limit` bytes, as UTF-8.
pub fn read_body(request: &mut Request, limit: usize) -> Result<String, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorCode::BodyTooLarge,
            format!("the request body is larger than {limit} bytes"),
        )
        .detail("limit_bytes", limit)
    };
    if request.body_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut buf = Vec::new();
    request
        .body()
        .take(limit as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                format!("cannot read the request body: {e}"),
            )
        })?;
    if buf.len() > limit {
        return Err(too_large());
    }
    String::from_utf8(buf).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidUtf8,
            "the request body is not valid UTF-8",
        )
        .detail("byte_offset", e.utf8_error().valid_up_to())
    })
}

/// Resolves a request's route: answers 404 `NOT_FOUND` when `route` found none, 405
/// `METHOD_NOT_ALLOWED` (with `Allow`) when the method differs, and otherwise hands the
/// request and its route back.
pub fn check_route<R>(
    request: Request,
    path: &str,
    route: Option<(R, Method)>,
) -> Option<(Request, R)> {
    let Some((route, method)) = route else {
        let e = ApiError::new(ErrorCode::NotFound, format!("no such endpoint: {path}"))
            .detail("path", path);
        respond_error(request, &e);
        return None;
    };
    if *request.method() != method {
        let e = ApiError::new(
            ErrorCode::MethodNotAllowed,
            format!("{path} accepts {method} only, not {}", request.method()),
        )
        .detail("allow", method.as_str());
        let resp = error_response(&e).with_header(header("Allow", method.as_str()));
        let _ = request.respond(resp);
        return None;
    }
    Some((request, route))
}

/// Reads the body (at most `limit` bytes) and parses it as JSON into `T`; the error says
/// what was wrong (size, UTF-8, JSON, unknown field).
pub fn read_json<T: serde::de::DeserializeOwned>(
    request: &mut Request,
    limit: usize,
) -> Result<T, ApiError> {
    let body = read_body(request, limit)?;
    serde_json::from_str(&body).map_err(|e| json_error(&e))
}

/// The error for a body serde could not take: `UNKNOWN_FIELD` naming the field, the code of
/// a typed field that did not parse (`INVALID_MODEL_REF`, `BACKEND_UNAVAILABLE`), or
/// `INVALID_JSON` with the line and column.
pub fn json_error(e: &serde_json::Error) -> ApiError {
    let msg = e.to_string();
    if let Some(code) = rbee_types::error::code_of_parse_error(&msg) {
        ApiError::new(code, without_position(&msg).to_owned())
    } else if msg.starts_with("unknown field") {
        ApiError::new(
            ErrorCode::UnknownField,
            format!("invalid request body: {msg}"),
        )
    } else {
        ApiError::new(
            ErrorCode::InvalidJson,
            format!("invalid request body: {msg}"),
        )
        .detail("line", e.line())
        .detail("column", e.column())
    }
}

/// serde_json's message without its " at line L column C" (a value's error names its
/// field instead; the position only helps with broken syntax).
fn without_position(msg: &str) -> &str {
    match msg.rfind(" at line ") {
        Some(i)
            if msg[i + 9..]
                .split(" column ")
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) =>
        {
            &msg[..i]
        }
        _ => msg,
    }
}

/// Parses `body` as a `T`; a value of the wrong type is `INVALID_REQUEST` naming its field
/// (`field` detail: `max_tokens`, `messages[0].role`), bad syntax is `INVALID_JSON`.
pub fn parse_named<T: serde::de::DeserializeOwned>(body: &str) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_str(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let unknown = inner.to_string().starts_with("unknown field");
        if inner.is_syntax() || inner.is_eof() || path == "." || unknown {
            json_error(&inner)
        } else {
            ApiError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "invalid value for `{path}`: {}",
                    without_position(&inner.to_string())
                ),
            )
            .detail("field", path)
        }
    })
}

/// The token of an `Authorization: Bearer <token>` header, if any.
pub fn bearer_token(request: &Request) -> Option<String> {
    request.header("Authorization").map(|v| {
        // The scheme is case-insensitive (RFC 9110): `bearer` and `BEARER` too.
        let v = v.trim();
        match v.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                token.trim().to_owned()
            }
            _ => String::new(),
        }
    })
}

/// Checks the request's Bearer token against `key` (no key: everything passes). `who`
/// names the server in the messages (`this worker`).
pub fn check_bearer(request: &Request, key: Option<&str>, who: &str) -> Result<(), ApiError> {
    let Some(key) = key else {
        return Ok(());
    };
    let Some(token) = bearer_token(request) else {
        return Err(ApiError::new(
            ErrorCode::MissingApiKey,
            format!("{who} needs an API key: send `Authorization: Bearer <key>`"),
        ));
    };
    if constant_time_eq(token.as_bytes(), key.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidApiKey,
            format!("the API key is not valid for {who}"),
        ))
    }
}

/// Compares without an early exit, so timing does not reveal how much of a key matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

/// A header from static strings.
pub fn header(k: &str, v: &str) -> Header {
    Header::new(k, v).expect("header names are tokens and values have no line breaks")
}

/// A JSON response.
pub fn json_response(status: u16, body: &impl serde::Serialize) -> Response {
    let data = serde_json::to_vec(body).unwrap_or_default();
    cors::decorate(
        Response::from_data(data)
            .with_status_code(status)
            .with_header(header("Content-Type", "application/json")),
    )
}

/// Answers with JSON.
pub fn respond_json(request: Request, status: u16, body: &impl serde::Serialize) {
    let _ = request.respond(json_response(status, body));
}

/// The error envelope as a response.
pub fn error_response(e: &ApiError) -> Response {
    json_response(e.http_status(), e)
}

/// Answers with the error envelope (logged at a level that fits its status).
pub fn respond_error(request: Request, e: &ApiError) {
    match e.http_status() {
        // Busy and draining answers are part of normal operation under load.
        503 => tracing::debug!(code = %e.error.code.as_str(), "{}", e.error.message),
        s if s >= 500 => tracing::warn!(code = %e.error.code.as_str(), "{}", e.error.message),
        _ => tracing::debug!(code = %e.error.code.as_str(), "{}", e.error.message),
    }
    let _ = request.respond(error_response(e));
}

/// Answers `e` in OpenAI's envelope (`{"error": {"message", "type", "param", "code"}}`),
/// with `Retry-After` where retrying soon can help (busy, loading, queue full).
pub fn respond_openai_error(request: Request, e: &ApiError) {
    let (status, body) = rbee_types::openai::OpenAiError::from_api(e);
    tracing::debug!(code = %e.error.code.as_str(), status, "{}", e.error.message);
    let mut resp = json_response(status, &body);
    if matches!(
        e.error.code,
        ErrorCode::AllSlotsBusy
            | ErrorCode::Overloaded
            | ErrorCode::ModelLoading
            | ErrorCode::QueueFull
    ) {
        resp = resp.with_header(header("Retry-After", "1"));
    }
    let _ = request.respond(resp);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_whole_keys() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Body {
        max_tokens: Option<u32>,
        model_ref: Option<rbee_types::ModelRef>,
    }

    #[test]
    fn a_bad_value_is_named_by_its_field_not_by_its_position() {
        let e = parse_named::<Body>(r#"{"max_tokens": "nine"}"#).unwrap_err();
        assert_eq!(e.error.code, ErrorCode::InvalidRequest);
        let msg = &e.error.message;
        assert!(
            msg.starts_with("invalid value for `max_tokens`: invalid type: string"),
            "{msg}"
        );
        assert!(!msg.contains("line"), "{msg}");
        let e =
            json_error(&serde_json::from_str::<Body>(r#"{"model_ref": "smol.gguf"}"#).unwrap_err());
        assert_eq!(e.error.code, ErrorCode::InvalidModelRef, "{e}");
        assert!(
            !e.error.message.contains(" at line "),
            "{}",
            e.error.message
        );
        // Broken syntax keeps its position: that is where to look.
        let e = parse_named::<Body>("{\"max_tokens\": }").unwrap_err();
        assert_eq!(e.error.code, ErrorCode::InvalidJson);
        assert!(
            e.error.message.contains("line 1 column"),
            "{}",
            e.error.message
        );
        assert_eq!(without_position("x at line 1 column 19"), "x");
        assert_eq!(without_position("x at line one"), "x at line one");
    }
}
