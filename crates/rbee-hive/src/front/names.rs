//! What a request's `model` may say, and what `GET /v1/models` lists: every catalogued
//! model under a short id, models that running workers serve, and the aliases of the
//! hive's config. A name resolves to a model reference; anything that parses as a
//! reference (`hf:…`, `file://…`) is taken as one.
//!
//! The short id of a GGUF file is its name without `.gguf`, lower-cased, with a trailing
//! quantization (`.Q4_1`, `-Q4_K_M`, `-IQ3_XS`, `.F16`, `-BF16`) set off by a colon:
//! `SmolLM2-135M-Instruct.Q4_1.gguf` → `smollm2-135m-instruct:q4_1`. When two catalogued
//! models would get the same short id, each is listed under its catalogue id instead.

use std::collections::BTreeMap;

use rbee_types::hive::{Model, WorkerView};
use rbee_types::ModelRef;

/// One model a request can name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// What to put in `model`.
    pub(crate) id: String,
    /// The catalogue's id (`rbee-keeper models list`), which names it too.
    pub(crate) catalogue_id: Option<String>,
    /// What it stands for.
    pub(crate) model_ref: ModelRef,
    /// When it was downloaded or its worker started.
    pub(crate) created: u64,
    /// The Hugging Face organisation, or `local`.
    pub(crate) owned_by: String,
}

/// Whether `s` looks like a quantization name (`Q4_1`, `Q4_K_M`, `IQ3_XS`, `F16`, `BF16`).
fn is_quant(s: &str) -> bool {
    let u = s.to_ascii_uppercase();
    let body = u
        .strip_prefix("IQ")
        .or_else(|| u.strip_prefix('Q'))
        .filter(|b| b.starts_with(|c: char| c.is_ascii_digit()));
    match body {
        Some(b) => b
            .split('_')
            .all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_alphanumeric())),
        None => matches!(u.as_str(), "F16" | "BF16" | "F32"),
    }
}

/// The short id of a model file (see the module's documentation).
pub(crate) fn short_id(file_name: &str) -> String {
    let stem = file_name.strip_suffix(".gguf").unwrap_or(file_name);
    let split = stem
        .rfind(['.', '-'])
        .filter(|&i| i > 0 && is_quant(&stem[i + 1..]));
    match split {
        Some(i) => format!("{}:{}", &stem[..i], &stem[i + 1..]),
        None => stem.to_owned(),
    }
    .to_ascii_lowercase()
}

/// Every model a request can name: the catalogue's ready models, then models of running
/// workers that the catalogue does not list.
pub(crate) fn entries(models: &[Model], workers: &[WorkerView]) -> Vec<Entry> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for m in models {
        *counts.entry(short_id(&m.file_name)).or_default() += 1;
    }
    let mut out: Vec<Entry> = models
        .iter()
        .filter(|m| m.status == rbee_types::hive::ModelStatus::Ready)
        .filter_map(|m| {
            let model_ref = m.reference.parse().ok()?;
            let short = short_id(&m.file_name);
            Some(Entry {
                id: if counts[&short] == 1 {
                    short
                } else {
                    m.id.clone()
                },
                catalogue_id: Some(m.id.clone()),
                model_ref,
                created: m.downloaded_at_unix,
                owned_by: m
                    .repo
                    .as_deref()
                    .and_then(|r| r.split('/').next())
                    .unwrap_or("local")
                    .to_owned(),
            })
        })
        .collect();
    for w in workers {
        if !out.iter().any(|e| e.model_ref == w.model_ref) {
            out.push(Entry {
                id: w.id.clone(),
                catalogue_id: None,
                model_ref: w.model_ref.clone(),
                created: w.started_at_unix,
                owned_by: "local".into(),
            });
        }
    }
    out
}

/// The reference `name` stands for: an alias (whose target is an id or a reference), an
/// id (as `/v1/models` lists it, or the catalogue's), or a reference itself. `None`:
/// nothing by that name.
pub(crate) fn resolve(
    name: &str,
    entries: &[Entry],
    aliases: &BTreeMap<String, String>,
) -> Option<ModelRef> {
    let name = aliases.get(name).map_or(name, String::as_str);
    let lower = name.to_ascii_lowercase();
    let named = |e: &&Entry| e.id == lower || e.catalogue_id.as_deref() == Some(name);
    if let Some(e) = entries.iter().find(named) {
        return Some(e.model_ref.clone());
    }
    name.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rbee_types::hive::ModelStatus;

    fn model(id: &str, file: &str, reference: &str, repo: Option<&str>) -> Model {
        Model {
            id: id.into(),
            provider: if repo.is_some() { "hf" } else { "file" }.into(),
            reference: reference.into(),
            repo: repo.map(Into::into),
            revision: None,
            commit_sha: None,
            file_name: file.into(),
            local_path: format!("/m/{file}").into(),
            size_bytes: 1,
            sha256: None,
            hub_verified: None,
            downloaded_at_unix: 7,
            architecture: None,
            parameter_count: None,
            quantization: None,
            context_length: None,
            vocab_size: None,
            status: ModelStatus::Ready,
        }
    }

    #[test]
    fn short_ids_set_the_quantization_off_with_a_colon() {
        for (file, id) in [
            (
                "SmolLM2-135M-Instruct.Q4_1.gguf",
                "smollm2-135m-instruct:q4_1",
            ),
            (
                "Llama-3.2-1B-Instruct-Q4_K_M.gguf",
                "llama-3.2-1b-instruct:q4_k_m",
            ),
            (
                "qwen2.5-0.5b-instruct-iq3_xs.gguf",
                "qwen2.5-0.5b-instruct:iq3_xs",
            ),
            ("phi-3-mini.F16.gguf", "phi-3-mini:f16"),
            ("tinyllama-1.1b.gguf", "tinyllama-1.1b"),
            ("Q4_0.gguf", "q4_0"),
        ] {
            assert_eq!(short_id(file), id, "{file}");
        }
    }

    #[test]
    fn names_resolve_through_aliases_ids_and_references() {
        let models = [
            model(
                "org--smol",
                "SmolLM2-135M-Instruct.Q4_1.gguf",
                "hf:org/smol/SmolLM2-135M-Instruct.Q4_1.gguf@main",
                Some("org/smol"),
            ),
            model(
                "file--a",
                "same.Q8_0.gguf",
                "file:///a/same.Q8_0.gguf",
                None,
            ),
            model(
                "file--b",
                "same.Q8_0.gguf",
                "file:///b/same.Q8_0.gguf",
                None,
            ),
        ];
        let e = entries(&models, &[]);
        let ids: Vec<&str> = e.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["smollm2-135m-instruct:q4_1", "file--a", "file--b"]);
        assert_eq!(e[0].owned_by, "org");
        let aliases = BTreeMap::from([
            ("smol".to_owned(), "smollm2-135m-instruct:q4_1".to_owned()),
            ("b".to_owned(), "file:///b/same.Q8_0.gguf".to_owned()),
        ]);
        let smol = models[0].reference.parse::<ModelRef>().unwrap();
        assert_eq!(resolve("smol", &e, &aliases), Some(smol.clone()));
        assert_eq!(
            resolve("SmolLM2-135M-Instruct:Q4_1", &e, &aliases),
            Some(smol.clone())
        );
        assert_eq!(
            resolve("org--smol", &e, &aliases),
            Some(smol),
            "the catalogue's id, as `models list` shows it"
        );
        assert_eq!(
            resolve("b", &e, &aliases).map(|r| r.to_string()),
            Some("file:///b/same.Q8_0.gguf".into())
        );
        assert_eq!(
            resolve("hf:other/repo", &e, &aliases).map(|r| r.to_string()),
            Some("hf:other/repo".into()),
            "a reference not here yet (load on demand downloads it)"
        );
        assert_eq!(resolve("gpt-4", &e, &aliases), None);
    }
}
