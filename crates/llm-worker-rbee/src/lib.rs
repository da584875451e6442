//! `llm-worker-rbee`: loads one GGUF model with llama.cpp and serves token-streaming
//! inference over HTTP to several clients at once.
//!
//! - [`cli`]: command-line arguments.
//! - [`app`]: what handlers share, and a request's way to the engine (checks, slot).
//! - [`engine`]: the llama.cpp thread that decodes every slot in one batch; `step_plan`:
//!   which tokens go into each step.
//! - [`http`]: the API, a thread per connection ([`rbee_http::server`]); [`openai`]:
//!   OpenAI's routes on the same engine.
//! - [`metrics`]: the Prometheus metrics at `GET /metrics`.
//! - [`validate`]: range checks of inference requests.
//! - [`fault`]: injected faults for the tests of failure paths.
//! - [`output`]: UTF-8 joining and stop strings.
//! - [`prompt_cache`]: which sequence a request gets and how much of its prompt is cached;
//!   [`next_turn`]: a finished chat prepared for its next turn.
//! - [`lifecycle`]: startup, sd-notify, signals, the hive callback and draining.
//! - [`state`]: what the threads share.

pub mod app;
pub mod cli;
pub mod engine;
pub mod fault;
pub mod http;
pub mod lifecycle;
pub mod metrics;
pub mod next_turn;
pub mod openai;
pub mod output;
pub mod prompt_cache;
pub mod state;
mod step_plan;
pub mod validate;
