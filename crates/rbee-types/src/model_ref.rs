//! Model references, checked before any I/O:
//!
//! - `hf:org/repo` — the repository's one GGUF file;
//! - `hf:org/repo:Q4_K_M` — the GGUF file of that quantization;
//! - `hf:org/repo/file.gguf` — that file;
//! - any of these with `@revision` (branch, tag or commit; default `main`);
//! - `file:///absolute/path.gguf` — a local file, recorded in place.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Longest reference accepted.
pub const MAX_REF_LEN: usize = 1024;

/// The accepted formats, for error messages.
pub const FORMATS: &str = "accepted: hf:org/repo, hf:org/repo:QUANT (e.g. \
     hf:bartowski/SmolLM2-135M-Instruct-GGUF:Q4_K_M), hf:org/repo/file.gguf, each with an \
     optional @revision, or file:///absolute/path/model.gguf";

/// Which GGUF file of a repository.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Selector {
    /// The only GGUF file (an error lists them when there are several).
    Only,
    /// The file whose name carries this quantization (`Q4_K_M`).
    Quant(String),
    /// This file (may be in a folder of the repository).
    File(String),
}

/// A parsed reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ModelRef {
    /// A file of a Hugging Face repository.
    Hf {
        /// `org/repo`.
        repo: String,
        /// Which file.
        selector: Selector,
        /// Branch, tag or commit.
        revision: String,
    },
    /// A local file.
    File {
        /// Absolute path.
        path: PathBuf,
    },
}

/// Beginning of the message of every [`ModelRefError`]; servers map it to
/// `INVALID_MODEL_REF` (the error module's `code_of_parse_error`).
pub const MODEL_REF_ERROR_PREFIX: &str = "invalid model reference";

/// A reference that does not parse: why, and the accepted formats.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{MODEL_REF_ERROR_PREFIX}: {why}; {FORMATS}")]
pub struct ModelRefError {
    /// The reference (at most 200 characters of it).
    pub reference: String,
    /// What is wrong with it.
    pub why: String,
}

fn invalid(reference: &str, why: &str) -> ModelRefError {
    ModelRefError {
        reference: reference.chars().take(200).collect(),
        why: why.to_owned(),
    }
}

/// One name of `org/repo` or a path segment: letters, digits, `.`, `_`, `-`; not `.`/`..`,
/// not starting with `.` or `-`.
fn valid_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && !s.starts_with(['.', '-'])
        && !s.contains("..")
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl ModelRef {
    /// Parses and checks a reference (the same as `str::parse`).
    pub fn parse(reference: &str) -> Result<ModelRef, ModelRefError> {
        let r = reference;
        if r.is_empty() {
            return Err(invalid(r, "it is empty"));
        }
        if r.len() > MAX_REF_LEN {
            return Err(invalid(
                r,
                &format!("it is longer than {MAX_REF_LEN} bytes"),
            ));
        }
        if r.chars().any(char::is_control) {
            return Err(invalid(
                r,
                "it contains control characters (newline, NUL, …)",
            ));
        }
        if let Some(path) = r.strip_prefix("file://") {
            return parse_file(r, path);
        }
        let Some(body) = r.strip_prefix("hf:") else {
            return Err(invalid(r, "unknown scheme"));
        };
        let (body, revision) = match body.split_once('@') {
            Some((b, rev)) => {
                let ok = !rev.is_empty()
                    && rev.len() <= 128
                    && !rev.contains("..")
                    && !rev.starts_with(['/', '.', '-'])
                    && rev
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b));
                if !ok {
                    return Err(invalid(
                        r,
                        "the revision must be a branch, tag or commit name",
                    ));
                }
                (b, rev.to_owned())
            }
            None => (body, "main".to_owned()),
        };
        let (body, quant) = match body.split_once(':') {
            Some((b, q)) => {
                let ok = !q.is_empty()
                    && q.len() <= 32
                    && q.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !ok {
                    return Err(invalid(
                        r,
                        "a quantization is letters, digits and _ (Q4_K_M)",
                    ));
                }
                (b, Some(q.to_owned()))
            }
            None => (body, None),
        };
        let mut parts = body.split('/');
        let (org, repo) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        if !valid_name(org, 96) || !valid_name(repo, 96) {
            return Err(invalid(
                r,
                "the repository must be org/repo (letters, digits, . _ -)",
            ));
        }
        let rest: Vec<&str> = parts.collect();
        let selector = match (rest.is_empty(), quant) {
            (true, None) => Selector::Only,
            (true, Some(q)) => Selector::Quant(q),
            (false, Some(_)) => {
                return Err(invalid(r, "give a file name or a :QUANT suffix, not both"))
            }
            (false, None) => {
                if !rest.iter().all(|s| valid_name(s, 200)) {
                    return Err(invalid(r, "the file path has an invalid segment"));
                }
                let file = rest.join("/");
                if !file.ends_with(".gguf") {
                    return Err(invalid(r, "the file must be a .gguf file"));
                }
                Selector::File(file)
            }
        };
        Ok(ModelRef::Hf {
            repo: format!("{org}/{repo}"),
            selector,
            revision,
        })
    }
}

/// `s` lower-cased, with every character but ASCII letters, digits, `.` and `_` turned into
/// `-`: safe in URLs and file names (ids of models and workers are built on it).
pub fn url_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn parse_file(r: &str, path: &str) -> Result<ModelRef, ModelRefError> {
    let p = std::path::Path::new(path);
    if !p.is_absolute() {
        return Err(invalid(r, "the path must be absolute"));
    }
    // Path::components() drops `.` in the middle; the raw segments show it.
    if path.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(invalid(
            r,
            "the path must not contain `.` or `..` components",
        ));
    }
    Ok(ModelRef::File {
        path: p.to_path_buf(),
    })
}

impl ModelRef {
    /// `hf` or `file`: the catalogue's provider column.
    pub fn provider(&self) -> &'static str {
        match self {
            ModelRef::Hf { .. } => "hf",
            ModelRef::File { .. } => "file",
        }
    }
}

impl FromStr for ModelRef {
    type Err = ModelRefError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ModelRef::parse(s)
    }
}

/// The reference in its shortest form: `@main` is left out, everything else is kept, so
/// that parsing what is displayed gives the same reference.
impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelRef::File { path } => write!(f, "file://{}", path.display()),
            ModelRef::Hf {
                repo,
                selector,
                revision,
            } => {
                write!(f, "hf:{repo}")?;
                match selector {
                    Selector::Only => {}
                    Selector::Quant(q) => write!(f, ":{q}")?,
                    Selector::File(file) => write!(f, "/{file}")?,
                }
                if revision != "main" {
                    write!(f, "@{revision}")?;
                }
                Ok(())
            }
        }
    }
}

crate::serde_via_str!(ModelRef);

#[cfg(test)]
mod tests {
    use super::*;

    fn hf(repo: &str, selector: Selector, revision: &str) -> ModelRef {
        ModelRef::Hf {
            repo: repo.into(),
            selector,
            revision: revision.into(),
        }
    }

    #[test]
    fn every_accepted_form_parses() {
        assert_eq!(
            ModelRef::parse("hf:org/repo").unwrap(),
            hf("org/repo", Selector::Only, "main")
        );
        assert_eq!(
            ModelRef::parse("hf:org/repo:Q4_K_M").unwrap(),
            hf("org/repo", Selector::Quant("Q4_K_M".into()), "main")
        );
        assert_eq!(
            ModelRef::parse("hf:org/repo/sub/model-Q4_1.gguf@v1.0").unwrap(),
            hf(
                "org/repo",
                Selector::File("sub/model-Q4_1.gguf".into()),
                "v1.0"
            )
        );
        assert_eq!(
            ModelRef::parse("hf:org/repo:Q8_0@refs/pr/1").unwrap(),
            hf("org/repo", Selector::Quant("Q8_0".into()), "refs/pr/1")
        );
        assert_eq!(
            ModelRef::parse("file:///models/m.gguf").unwrap(),
            ModelRef::File {
                path: "/models/m.gguf".into()
            }
        );
    }

    #[test]
    fn bad_references_are_refused_with_the_accepted_formats() {
        let long = format!("hf:org/{}", "r".repeat(2000));
        for (r, says) in [
            ("", "empty"),
            ("smol.gguf", "unknown scheme"),
            ("https://huggingface.co/org/repo", "unknown scheme"),
            ("hf:", "org/repo"),
            ("hf:org", "org/repo"),
            ("hf:org/", "org/repo"),
            ("hf:../etc/passwd", "org/repo"),
            ("hf:org/..", "org/repo"),
            ("hf:/abs/path", "org/repo"),
            ("hf:org/repo/../../x.gguf", "invalid segment"),
            ("hf:org/repo/x.bin", ".gguf"),
            ("hf:org/repo/x.gguf:Q4_0", "not both"),
            ("hf:org/repo:Q4 K", "quantization"),
            ("hf:org/repo:", "quantization"),
            ("hf:org/repo@", "revision"),
            ("hf:org/repo@../x", "revision"),
            ("hf:org/re\0po", "control"),
            ("hf:org/repo\n", "control"),
            ("hf:org rep/o", "org/repo"),
            (long.as_str(), "longer than"),
            ("file://relative.gguf", "absolute"),
            ("file:///a/../b.gguf", "`..`"),
        ] {
            let e = r.parse::<ModelRef>().expect_err(r).to_string();
            assert!(e.starts_with(MODEL_REF_ERROR_PREFIX), "{r:?}: {e}");
            assert!(e.contains(says), "{r:?}: {e}");
            assert!(e.contains("hf:org/repo:QUANT"), "lists the formats");
            let json = serde_json::to_string(r).unwrap();
            let e = serde_json::from_str::<ModelRef>(&json).expect_err(r);
            assert!(e.to_string().contains(says), "through serde {r:?}: {e}");
        }
    }

    #[test]
    fn references_round_trip_through_display_and_serde() {
        for r in [
            "hf:org/repo",
            "hf:org/repo:Q4_K_M",
            "hf:org/repo/sub/model-Q4_1.gguf@v1.0",
            "hf:org/repo:Q8_0@refs/pr/1",
            "file:///models/m.gguf",
        ] {
            let parsed: ModelRef = r.parse().unwrap();
            assert_eq!(parsed.to_string(), r);
            let json = serde_json::to_string(&parsed).unwrap();
            assert_eq!(json, format!("\"{r}\""));
            assert_eq!(serde_json::from_str::<ModelRef>(&json).unwrap(), parsed);
        }
        // `@main` is the default, so it is left out and parses back the same.
        let main: ModelRef = "hf:org/repo:Q4_0@main".parse().unwrap();
        assert_eq!(main.to_string(), "hf:org/repo:Q4_0");
        assert_eq!(main.to_string().parse::<ModelRef>().unwrap(), main);
    }
}
