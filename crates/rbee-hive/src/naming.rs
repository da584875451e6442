//! Worker ids: short, URL-safe names derived from model ids.

/// A short id for the API from a model id: lower-case letters, digits, `.`, `_`, `-`; other
/// characters become `-`; at most 48 characters.
pub(crate) fn slug(model_id: &str) -> String {
    let mut s = rbee_types::model_ref::url_safe(model_id);
    while s.contains("--") {
        s = s.replace("--", "-");
    }
    let s: String = s.trim_matches(['-', '.']).chars().take(48).collect();
    if s.is_empty() {
        "model".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_short_and_url_safe() {
        assert_eq!(
            slug("SmolLM2-135M-Instruct.Q4_1"),
            "smollm2-135m-instruct.q4_1"
        );
        assert_eq!(slug("../x @y\nz"), "x-y-z");
        assert_eq!(slug("@@@"), "model");
        assert_eq!(slug(&"z".repeat(300)).len(), 48);
    }
}
