//! Integration tests of `llm-worker-rbee`: the real binary, the real SmolLM2 model, real
//! HTTP over loopback.

mod common;

mod api;
mod bad_input;
mod gguf_mutations;
mod haiku;
mod lifecycle;
mod metrics;
mod openai;
mod prompt_cache;
mod slots;
