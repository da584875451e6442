//! Where the test model is.

use std::path::PathBuf;

/// SHA-256 of SmolLM2-135M-Instruct Q4_1, the model every test and benchmark uses.
pub const TEST_MODEL_SHA256: &str =
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// The test model: `$RBEE_TEST_MODEL`, else the file `scripts/fetch-test-model` puts in the
/// cache. `None` when it is not there (run `scripts/fetch-test-model`).
pub fn test_model() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RBEE_TEST_MODEL") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    Some(cache_dir()?.join("models/SmolLM2-135M-Instruct.Q4_1.gguf")).filter(|p| p.is_file())
}

/// rbee's cache directory as the scripts choose it: `$RBEE_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/rbee`, else `~/.cache/rbee`.
pub fn cache_dir() -> Option<PathBuf> {
    std::env::var_os("RBEE_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|c| PathBuf::from(c).join("rbee")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/rbee")))
}

/// The release build of the worker in this workspace (what the hive and supervisor tests
/// run; `cargo build --release` makes it).
pub fn worker_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/release/llm-worker-rbee")
}

/// The test model, when it and the release worker exist; otherwise prints why the calling
/// test skips (or fails it under `RBEE_TEST_STRICT`) and returns `None`.
pub fn model_and_worker() -> Option<PathBuf> {
    let model = test_model();
    crate::skip_unless!(
        model.is_some(),
        "test model missing: run scripts/fetch-test-model"
    );
    let bin = worker_binary();
    crate::skip_unless!(
        bin.is_file(),
        "worker not built at {} (cargo build --release)",
        bin.display()
    );
    model
}

/// A fresh temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates `rbee-<tag>-<pid>-<n>` under the system temp dir.
    pub fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "rbee-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&p).expect("create temp dir");
        Self(p)
    }

    /// A path inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A minimal GGUF model file: `layers` transformer layers, two tokens, one 16-element F32
/// tensor and its 64 bytes of data. It passes the header check; llama.cpp cannot run it.
pub fn tiny_gguf(layers: u32) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    let s = |b: &mut Vec<u8>, s: &str| {
        b.extend_from_slice(&(s.len() as u64).to_le_bytes());
        b.extend_from_slice(s.as_bytes());
    };
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes()); // tensors
    b.extend_from_slice(&3u64.to_le_bytes()); // metadata
    s(&mut b, "general.architecture");
    b.extend_from_slice(&8u32.to_le_bytes());
    s(&mut b, "llama");
    s(&mut b, "llama.block_count");
    b.extend_from_slice(&4u32.to_le_bytes());
    b.extend_from_slice(&layers.to_le_bytes());
    s(&mut b, "tokenizer.ggml.tokens");
    b.extend_from_slice(&9u32.to_le_bytes());
    b.extend_from_slice(&8u32.to_le_bytes());
    b.extend_from_slice(&2u64.to_le_bytes());
    s(&mut b, "a");
    s(&mut b, "b");
    s(&mut b, "w");
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&16u64.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes()); // F32
    b.extend_from_slice(&0u64.to_le_bytes());
    b.resize(b.len().div_ceil(32) * 32, 0);
    b.extend_from_slice(&[0u8; 64]);
    b
}
