//! Backends and the cargo features that build them.

use rbee_types::Backend;

use crate::error::BinaryError;

/// The worker's optional cargo features (CPU is always built in).
pub const KNOWN: &[&str] = &["cuda", "metal"];

/// The features for a backend (`cpu` → none; the others are their own feature).
pub fn for_backend(backend: Backend) -> Vec<String> {
    match backend {
        Backend::Cpu => vec![],
        gpu => vec![gpu.to_string()],
    }
}

/// Checks, sorts and de-duplicates requested features (`cpu` means none).
pub fn normalize(features: &[String]) -> Result<Vec<String>, BinaryError> {
    let mut out = Vec::new();
    for f in features {
        let f = f.trim();
        if f == "cpu" {
            continue;
        }
        if !KNOWN.contains(&f) {
            return Err(BinaryError::UnknownFeature {
                feature: f.into(),
                known: KNOWN,
            });
        }
        out.push(f.to_owned());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// A short name for a feature set, used in ids and directory names (`cpu`, `cuda`).
pub fn key(features: &[String]) -> String {
    if features.is_empty() {
        "cpu".into()
    } else {
        features.join("+")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn normalizes_and_names_feature_sets() {
        assert_eq!(
            normalize(&v(&["cuda", "cpu", "cuda"])).unwrap(),
            v(&["cuda"])
        );
        assert_eq!(key(&normalize(&v(&["cpu"])).unwrap()), "cpu");
        assert_eq!(key(&v(&["cuda", "metal"])), "cuda+metal");
        let e = normalize(&v(&["rocm"])).unwrap_err();
        assert_eq!(e.code(), rbee_types::ErrorCode::InvalidRequest);
        assert!(e.to_string().contains("cuda, metal"), "{e}");
        assert_eq!(for_backend(Backend::Cuda), v(&["cuda"]));
        assert!(for_backend(Backend::Cpu).is_empty());
    }
}
