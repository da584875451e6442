//! Model references a spawn request may name. Until the model catalogue lands, only local
//! files (`file:///abs/path.gguf`) are accepted; everything is checked before any I/O.

use std::path::{Path, PathBuf};

use rbee_types::{ApiError, ErrorCode};

/// Longest reference accepted.
pub const MAX_REF_LEN: usize = 4096;

const FORMATS: &str = "accepted: file:///absolute/path/model.gguf \
     (e.g. file:///var/lib/rbee/models/SmolLM2-135M-Instruct.Q4_1.gguf)";

/// A resolved local model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalModel {
    /// The file (absolute, symlinks resolved).
    pub path: PathBuf,
    /// The id used in the unit name: the file name without `.gguf`.
    pub model_id: String,
    /// File size.
    pub bytes: u64,
}

fn invalid(reference: &str, why: &str) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidModelRef,
        format!("invalid model reference: {why}; {FORMATS}"),
    )
    .detail("model_ref", reference.chars().take(200).collect::<String>())
}

/// Checks the shape of a reference (no I/O) and returns the path it names.
pub fn parse(reference: &str) -> Result<PathBuf, ApiError> {
    if reference.is_empty() {
        return Err(invalid(reference, "it is empty"));
    }
    if reference.len() > MAX_REF_LEN {
        return Err(invalid(
            reference,
            &format!("it is longer than {MAX_REF_LEN} bytes"),
        ));
    }
    if reference.chars().any(char::is_control) {
        return Err(invalid(
            reference,
            "it contains control characters (newline, NUL, …)",
        ));
    }
    if reference.starts_with("hf:") {
        return Err(ApiError::new(
            ErrorCode::InvalidModelRef,
            format!(
                "hf: references need the model catalogue, which this hive does not have yet; \
                 download the .gguf file and use {FORMATS}"
            ),
        )
        .detail("model_ref", reference));
    }
    let Some(path) = reference.strip_prefix("file://") else {
        return Err(invalid(reference, "unknown scheme"));
    };
    let path = Path::new(path);
    if !path.is_absolute() {
        return Err(invalid(reference, "the path must be absolute"));
    }
    // Path::components() drops `.` in the middle; the raw segments show it.
    if path
        .to_string_lossy()
        .split('/')
        .any(|seg| seg == "." || seg == "..")
    {
        return Err(invalid(
            reference,
            "the path must not contain `.` or `..` components",
        ));
    }
    Ok(path.to_path_buf())
}

/// Parses the reference and finds the file: it must exist and be a regular file.
pub fn resolve(reference: &str) -> Result<LocalModel, ApiError> {
    let path = parse(reference)?;
    let not_found = |why: String| {
        ApiError::new(
            ErrorCode::ModelNotFound,
            format!("model {reference}: {why}"),
        )
        .detail("model_ref", reference)
    };
    let real = std::fs::canonicalize(&path).map_err(|e| not_found(e.to_string()))?;
    let meta = std::fs::metadata(&real).map_err(|e| not_found(e.to_string()))?;
    if !meta.is_file() {
        return Err(not_found("not a regular file".into()));
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let model_id = name.strip_suffix(".gguf").unwrap_or(&name).to_owned();
    Ok(LocalModel {
        path: real,
        model_id,
        bytes: meta.len(),
    })
}

/// A short id for the API from a model id: lower-case letters, digits, `.`, `_`, `-`; other
/// characters become `-`; at most 48 characters.
pub fn slug(model_id: &str) -> String {
    let mut s: String = model_id
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
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
    fn bad_references_are_refused_before_any_io() {
        let long = format!("file:///{}", "a".repeat(5000));
        for (r, says) in [
            ("", "empty"),
            ("smol.gguf", "unknown scheme"),
            ("http://x/y.gguf", "unknown scheme"),
            ("file://relative/x.gguf", "absolute"),
            ("file:///models/../etc/passwd", "`..`"),
            ("file:///models/./x.gguf", "`..`"),
            ("file:///models/x\n.gguf", "control"),
            ("file:///models/x\0.gguf", "control"),
            (long.as_str(), "longer than"),
            ("hf:org/repo", "catalogue"),
        ] {
            let e = parse(r).expect_err(r);
            assert_eq!(e.error.code, ErrorCode::InvalidModelRef, "{r:?}");
            assert!(e.error.message.contains(says), "{r:?}: {}", e.error.message);
            assert!(
                e.error.message.contains("file:///"),
                "lists the accepted format"
            );
        }
    }

    #[test]
    fn a_missing_file_is_model_not_found() {
        let e = resolve("file:///nonexistent/rbee/model.gguf").unwrap_err();
        assert_eq!(e.error.code, ErrorCode::ModelNotFound);
        let e = resolve("file:///tmp").unwrap_err();
        assert_eq!(e.error.code, ErrorCode::ModelNotFound);
    }

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
