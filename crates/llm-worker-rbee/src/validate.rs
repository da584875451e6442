//! Checks an inference request before it takes a slot: every field in range, and each
//! error naming the field, the accepted range and the value received.

use rbee_types::worker::{ChatMessage, InferenceRequest};
use rbee_types::{ApiError, ErrorCode};

use crate::sampling::Sampling;

/// Default `max_tokens`.
pub(crate) const DEFAULT_MAX_TOKENS: u32 = 256;
/// Most stop strings per request.
pub(crate) const MAX_STOPS: usize = 16;

/// A request whose every field is in range.
#[derive(Debug, Clone)]
pub(crate) struct Valid {
    /// Raw prompt (exclusive with `messages`).
    pub prompt: Option<String>,
    /// Chat messages.
    pub messages: Option<Vec<ChatMessage>>,
    /// Tokens to generate at most.
    pub max_tokens: u32,
    /// Sampling.
    pub sampling: Sampling,
    /// Stop strings.
    pub stop: Vec<String>,
    /// SSE or one document.
    pub stream: bool,
    /// Reuse a cached prefix of the prompt.
    pub cache_prompt: bool,
}

fn bad(field: &str, msg: String, got: impl Into<serde_json::Value>) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, format!("`{field}` {msg}"))
        .detail("field", field)
        .detail("received", got)
}

/// Validates `r` for a worker whose slots hold `ctx_size` tokens.
pub(crate) fn validate(r: &InferenceRequest, ctx_size: u32) -> Result<Valid, ApiError> {
    match (&r.prompt, &r.messages) {
        (Some(_), Some(_)) => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "send either `prompt` or `messages`, not both",
            ))
        }
        (None, None) => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                r#"the request needs a `prompt` (raw text) or `messages` (chat), e.g. {"prompt": "Write a haiku about bees"}"#,
            ))
        }
        (None, Some(m)) if m.is_empty() => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "`messages` is empty",
            ))
        }
        _ => {}
    }
    if let Some(m) = &r.messages {
        if let Some(bad_role) = m
            .iter()
            .find(|m| !matches!(m.role.as_str(), "system" | "user" | "assistant"))
        {
            return Err(bad(
                "messages[].role",
                "must be one of system, user, assistant (and developer on the OpenAI routes)"
                    .into(),
                bad_role.role.clone(),
            ));
        }
    }
    let max_tokens = match r.max_tokens {
        None => DEFAULT_MAX_TOKENS.min(ctx_size - 1),
        Some(n) if n < 1 => {
            return Err(bad("max_tokens", format!("must be between 1 and {ctx_size} (the slot's context)"), n))
        }
        Some(n) if n > i64::from(ctx_size) => {
            return Err(bad(
                "max_tokens",
                format!("is beyond the slot's context of {ctx_size} tokens: ask for at most {ctx_size} (a worker started with a larger context takes more: --ctx-size, or ctx_size when the hive spawns it)"),
                n,
            )
            .detail("ctx_size", ctx_size))
        }
        Some(n) => n as u32,
    };
    let temperature = r.temperature.unwrap_or(0.7);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(bad(
            "temperature",
            "must be between 0 (greedy) and 2".into(),
            temperature,
        ));
    }
    let top_p = r.top_p.unwrap_or(0.95);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(bad(
            "top_p",
            "must be greater than 0 and at most 1".into(),
            top_p,
        ));
    }
    let top_k = r.top_k.unwrap_or(40);
    if !(0..=100_000).contains(&top_k) {
        return Err(bad(
            "top_k",
            "must be between 0 (disabled) and 100000".into(),
            top_k,
        ));
    }
    let stop = r.stop.clone().unwrap_or_default();
    if stop.len() > MAX_STOPS || stop.iter().any(|s| s.len() > 256) {
        return Err(bad(
            "stop",
            format!("takes at most {MAX_STOPS} strings of at most 256 bytes"),
            stop.len(),
        ));
    }
    let mut penalties = [0.0f32; 2];
    for (i, (name, p)) in [
        ("presence_penalty", r.presence_penalty),
        ("frequency_penalty", r.frequency_penalty),
    ]
    .into_iter()
    .enumerate()
    {
        let p = p.unwrap_or(0.0);
        if !(-2.0..=2.0).contains(&p) {
            return Err(bad(name, "must be between -2 and 2".into(), p));
        }
        penalties[i] = p as f32;
    }
    let seed = match r.seed {
        Some(s) => (s & 0xffff_ffff) as u32,
        None => random_seed(),
    };
    Ok(Valid {
        prompt: r.prompt.clone(),
        messages: r.messages.clone(),
        max_tokens,
        sampling: Sampling {
            temperature: temperature as f32,
            top_p: top_p as f32,
            top_k: top_k as i32,
            seed,
            presence_penalty: penalties[0],
            frequency_penalty: penalties[1],
        },
        stop,
        stream: r.stream.unwrap_or(true),
        cache_prompt: r.cache_prompt.unwrap_or(true),
    })
}

fn random_seed() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(f: impl FnOnce(&mut InferenceRequest)) -> InferenceRequest {
        let mut r = InferenceRequest {
            prompt: Some("hi".into()),
            ..Default::default()
        };
        f(&mut r);
        r
    }

    fn err(r: InferenceRequest) -> String {
        validate(&r, 2048).unwrap_err().error.message
    }

    #[test]
    fn ranges_are_enforced_with_the_field_named() {
        assert!(err(req(|r| r.max_tokens = Some(0))).contains("max_tokens"));
        assert!(err(req(|r| r.max_tokens = Some(-5))).contains("max_tokens"));
        assert!(err(req(|r| r.max_tokens = Some(4096))).contains("context"));
        assert!(err(req(|r| r.temperature = Some(2.5))).contains("temperature"));
        assert!(err(req(|r| r.temperature = Some(-0.1))).contains("temperature"));
        assert!(err(req(|r| r.top_p = Some(0.0))).contains("top_p"));
        assert!(err(req(|r| r.top_p = Some(1.01))).contains("top_p"));
        assert!(err(req(|r| r.prompt = None)).contains("prompt"));
        assert!(err(req(|r| r.presence_penalty = Some(2.5))).contains("presence_penalty"));
        assert!(err(req(|r| r.frequency_penalty = Some(-3.0))).contains("frequency_penalty"));
    }

    #[test]
    fn defaults_fit_the_context() {
        let v = validate(&req(|_| {}), 64).unwrap();
        assert_eq!(v.max_tokens, 63);
        assert!(v.stream);
    }
}
