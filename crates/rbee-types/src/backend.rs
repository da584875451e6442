//! Where a worker runs its layers: `cpu`, `cuda` or `metal`.

use std::fmt;
use std::str::FromStr;

/// A compute backend. On the wire, on command lines and in configs it is its lower-case
/// name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Backend {
    /// llama.cpp on the CPU (every build has it).
    #[default]
    Cpu,
    /// NVIDIA GPUs (a build with the `cuda` feature).
    Cuda,
    /// Apple GPUs (a build with the `metal` feature).
    Metal,
}

/// Beginning of the message of every [`BackendError`]; servers map it to
/// `BACKEND_UNAVAILABLE` (the error module's `code_of_parse_error`).
pub const BACKEND_ERROR_PREFIX: &str = "unknown backend";

impl Backend {
    /// Every backend, in the order they are listed to people.
    pub const ALL: [Backend; 3] = [Backend::Cpu, Backend::Cuda, Backend::Metal];

    /// The lower-case name (`cpu`).
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Cuda => "cuda",
            Backend::Metal => "metal",
        }
    }

    /// Whether the layers run on a GPU (device nodes, VRAM).
    pub fn is_gpu(self) -> bool {
        self != Backend::Cpu
    }
}

/// A name that is not a backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{BACKEND_ERROR_PREFIX} {name:?}; accepted: cpu, cuda, metal")]
pub struct BackendError {
    /// What was given (at most 64 characters of it).
    pub name: String,
}

impl FromStr for Backend {
    type Err = BackendError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Backend::ALL
            .into_iter()
            .find(|b| b.as_str() == s)
            .ok_or_else(|| BackendError {
                name: s.chars().take(64).collect(),
            })
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

crate::serde_via_str!(Backend);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_from_str_display_and_serde() {
        for b in Backend::ALL {
            assert_eq!(b.to_string().parse::<Backend>().unwrap(), b);
            let json = serde_json::to_string(&b).unwrap();
            assert_eq!(json, format!("\"{b}\""));
            assert_eq!(serde_json::from_str::<Backend>(&json).unwrap(), b);
        }
    }

    #[test]
    fn unknown_names_are_refused_with_the_choices() {
        for bad in ["rocm", "CPU", "", "cpu "] {
            let e = bad.parse::<Backend>().unwrap_err().to_string();
            assert!(e.starts_with(BACKEND_ERROR_PREFIX), "{e}");
            assert!(e.contains("cpu, cuda, metal"), "{e}");
        }
        let e = serde_json::from_str::<Backend>("\"rocm\"").unwrap_err();
        assert!(e.to_string().starts_with(BACKEND_ERROR_PREFIX), "{e}");
    }
}
