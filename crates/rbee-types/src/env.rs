//! Environment variables read by rbee binaries, documented in one place.

/// The worker's API key (alternative to `--api-key-file`; never pass a key on the command
/// line, where `ps` shows it to every user).
pub const WORKER_API_KEY: &str = "RBEE_WORKER_API_KEY";
/// Directory where the test model and other downloaded artefacts are cached.
pub const CACHE_DIR: &str = "RBEE_CACHE_DIR";
/// Path of the test model (SmolLM2-135M-Instruct Q4_1); set by `scripts/fetch-test-model`.
pub const TEST_MODEL: &str = "RBEE_TEST_MODEL";
/// `tracing` filter for every rbee binary (e.g. `info`, `llm_worker_rbee=debug`).
pub const LOG: &str = "RBEE_LOG";

/// Name of the systemd credential (`LoadCredential=`) holding a worker's API key.
pub const API_KEY_CREDENTIAL: &str = "rbee-worker-api-key";
