//! How a slot picks its next token from the logits a decode step left for it.
//!
//! Greedy requests take the first highest logit straight from the context's logits
//! ([`rbee_llama::greedy`]); anything else (penalties, temperature) runs llama.cpp's
//! sampler chain.

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;

/// How to pick the next token.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sampling {
    /// 0 = greedy.
    pub temperature: f32,
    /// Nucleus.
    pub top_p: f32,
    /// Top-k; 0 disables.
    pub top_k: i32,
    /// Sampler seed.
    pub seed: u32,
    /// OpenAI's presence penalty over the last [`PENALTY_WINDOW`] generated tokens.
    pub presence_penalty: f32,
    /// OpenAI's frequency penalty over the same window.
    pub frequency_penalty: f32,
}

/// Generated tokens the penalties look back on (llama.cpp's default).
const PENALTY_WINDOW: i32 = 64;

/// A slot's token picker.
pub(crate) enum Picker {
    /// The first highest logit, read in place.
    Greedy,
    /// llama.cpp's chain: penalties (when asked for) first, then greedy, or top-k, top-p,
    /// temperature and a seeded draw.
    Chain(LlamaSampler),
}

impl Picker {
    /// The picker for a request's sampling parameters over a vocabulary of `n_vocab`.
    pub(crate) fn new(p: &Sampling, n_vocab: i32) -> Picker {
        let penalties = p.presence_penalty != 0.0 || p.frequency_penalty != 0.0;
        if p.temperature <= 0.0 && !penalties {
            return Picker::Greedy;
        }
        let mut chain = Vec::new();
        if penalties {
            chain.push(LlamaSampler::penalties(
                n_vocab,
                PENALTY_WINDOW,
                1.0,
                p.frequency_penalty,
                p.presence_penalty,
            ));
        }
        if p.temperature <= 0.0 {
            chain.push(LlamaSampler::greedy());
        } else {
            if p.top_k > 0 {
                chain.push(LlamaSampler::top_k(p.top_k));
            }
            chain.push(LlamaSampler::top_p(p.top_p, 1));
            chain.push(LlamaSampler::temp(p.temperature));
            chain.push(LlamaSampler::dist(p.seed));
        }
        Picker::Chain(LlamaSampler::chain_simple(chain))
    }

    /// The next token from the logits at batch index `idx` of the last decode.
    pub(crate) fn pick(&mut self, ctx: &LlamaContext<'_>, idx: i32) -> LlamaToken {
        match self {
            Picker::Greedy => rbee_llama::greedy::pick(ctx, idx),
            Picker::Chain(s) => s.sample(ctx, idx),
        }
    }
}
