//! `llm-worker-rbee`: loads one GGUF model with llama.cpp and serves token-streaming
//! inference over HTTP to several clients at once.
//!
//! - [`cli`]: command-line arguments.
//! - `app`: what handlers share, and a request's way to the engine (checks, slot).
//! - `engine`: the llama.cpp thread that decodes every slot in one batch; `step_plan`:
//!   which tokens go into each step; `prepared`: the loaded model as HTTP threads use it
//!   (chat templates, tokenising).
//! - `http`: the API, a thread per connection ([`rbee_http::server`]); `openai`:
//!   OpenAI's routes on the same engine.
//! - `metrics`: the Prometheus metrics at `GET /metrics`.
//! - `validate`: range checks of inference requests.
//! - `fault`: injected faults for the tests of failure paths.
//! - `output`: UTF-8 joining and stop strings; `sampling`: picking each next token.
//! - `prompt_cache`: which sequence a request gets and how much of its prompt is cached;
//!   `next_turn`: a finished chat prepared for its next turn.
//! - [`lifecycle`]: startup, sd-notify, signals, the hive callback and draining.
//! - `state`: what the threads share.

// Everything but what main.rs calls is crate-private; the lint keeps it that way.
#![warn(unreachable_pub)]

mod app;
pub mod cli;
mod engine;
mod fault;
mod http;
pub mod lifecycle;
mod metrics;
mod next_turn;
mod openai;
mod output;
mod prepared;
mod prompt_cache;
mod sampling;
mod state;
mod step_plan;
mod validate;
