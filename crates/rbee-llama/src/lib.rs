//! What the worker and the benchmarks share on top of llama-cpp-2, so that both render and
//! run a model the same way without depending on each other:
//!
//! - [`chat_template`]: a model's chat template rendered as llama-server renders it.
//! - [`greedy`]: greedy picking without llama.cpp's copy of the vocabulary.
//! - [`threads`]: the default thread count (physical cores).

pub mod chat_template;
pub mod greedy;
pub mod threads;

pub use threads::physical_cores;
