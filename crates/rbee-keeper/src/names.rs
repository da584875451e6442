//! What the keeper takes wherever it takes a model: a reference (`hf:org/repo:Q4_K_M`,
//! `file:///path.gguf`), or a name the node's hive serves — a short id from its
//! `/v1/models` (`smollm2-135m-instruct:q4_1`), a catalogue id, or an alias of its config.
//! A reference is checked when the command line is parsed; a name is looked up on the hive.

use std::fmt;
use std::str::FromStr;

use rbee_client::{ClientError, HiveClient};
use rbee_types::hive::Model;
use rbee_types::{ErrorCode, ModelRef};

use crate::report::Failure;

/// The longest name the hive accepts for an alias.
const MAX_NAME: usize = 128;

/// A model as the user named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelArg {
    /// A reference, parsed.
    Ref(ModelRef),
    /// A name to look up on the node.
    Name(String),
}

impl FromStr for ModelArg {
    type Err = String;

    fn from_str(s: &str) -> Result<ModelArg, String> {
        if s.starts_with("hf:") || s.starts_with("file:") || s.contains("://") {
            return s.parse().map(ModelArg::Ref).map_err(|e| format!("{e}"));
        }
        let ok = !s.is_empty()
            && s.len() <= MAX_NAME
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:-/@".contains(&b));
        if ok {
            Ok(ModelArg::Name(s.to_owned()))
        } else {
            Err(format!(
                "{s:?} is neither a model name (letters, digits and . _ : - / @, as \
                 `rbee-keeper models list` shows them) nor a reference (hf:org/repo[:QUANT], \
                 file:///path.gguf)"
            ))
        }
    }
}

impl fmt::Display for ModelArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelArg::Ref(r) => r.fmt(f),
            ModelArg::Name(n) => f.write_str(n),
        }
    }
}

fn not_found(name: &str, node: &str) -> Failure {
    Failure::new("rbee-hive", format!("no model named {name:?} on {node}"))
        .code(ErrorCode::ModelNotFound.as_str())
        .detail(format!("code: {}", ErrorCode::ModelNotFound.as_str()))
        .suggest([
            format!("see the names it serves: rbee-keeper models list --node {node}"),
            "or give a reference, which is downloaded on demand: hf:org/repo:Q4_K_M".to_string(),
        ])
}

impl ModelArg {
    /// The reference: itself, or what the hive says the name stands for.
    pub fn resolve(&self, hive: &HiveClient, node: &str) -> Result<ModelRef, Failure> {
        let name = match self {
            ModelArg::Ref(r) => return Ok(r.clone()),
            ModelArg::Name(n) => n,
        };
        let listed = hive.openai_models()?;
        let lower = name.to_ascii_lowercase();
        let found = listed
            .data
            .iter()
            .find(|m| m.id == *name)
            .or_else(|| listed.data.iter().find(|m| m.id == lower));
        let object = match found {
            Some(m) => m.clone(),
            None if name.contains('/') => return Err(not_found(name, node)),
            None => match hive.openai_model(name) {
                Ok(m) => m,
                Err(ClientError::Api { status: 404, .. }) => return Err(not_found(name, node)),
                Err(e) => return Err(e.into()),
            },
        };
        object.reference.ok_or_else(|| {
            Failure::new(
                "rbee-hive",
                format!("the hive on {node} names {name:?} but not the model behind it"),
            )
            .suggest([format!(
                "the hive is older than this keeper: update rbee on {node}, or give the \
                 model's reference (rbee-keeper models list --node {node})"
            )])
        })
    }

    /// The catalogue entry it names on the node: by catalogue id, else by what it resolves
    /// to.
    pub fn catalogued(&self, hive: &HiveClient, node: &str) -> Result<Model, Failure> {
        let models = hive.models()?;
        if let ModelArg::Name(n) = self {
            if let Some(m) = models.iter().find(|m| m.id == *n) {
                return Ok(m.clone());
            }
        }
        let r = Some(self.resolve(hive, node)?);
        models
            .into_iter()
            .find(|m| m.reference.parse().ok() == r)
            .ok_or_else(|| not_found(&self.to_string(), node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_parsed_and_other_words_are_names() {
        assert!(matches!(
            "hf:org/repo:Q4_K_M".parse::<ModelArg>(),
            Ok(ModelArg::Ref(_))
        ));
        assert_eq!(
            "smollm2-135m-instruct:q4_1".parse::<ModelArg>(),
            Ok(ModelArg::Name("smollm2-135m-instruct:q4_1".into()))
        );
        for bad in ["hf:../x", "http://x/m.gguf"] {
            let e = bad.parse::<ModelArg>().unwrap_err();
            assert!(e.contains("invalid model reference"), "{bad}: {e}");
        }
        for bad in ["", "two words", "a;b", &"x".repeat(129)] {
            let e = bad.parse::<ModelArg>().unwrap_err();
            assert!(e.contains("neither a model name"), "{bad:?}: {e}");
        }
    }
}
