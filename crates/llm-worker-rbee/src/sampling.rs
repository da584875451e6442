//! How a slot picks its next token from the logits a decode step left for it.
//!
//! Greedy requests take the first highest logit straight from the context's logits.
//! llama.cpp's greedy sampler does the same, but first copies the whole vocabulary into a
//! fresh candidate array (~0.6 MB for a 49k vocabulary): about 0.1 ms per slot per step, a
//! few percent of a step at 8 streams. Anything else (penalties, temperature) runs
//! llama.cpp's sampler chain.

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
            Picker::Greedy => LlamaToken(first_max(ctx.get_logits_ith(idx)) as i32),
            Picker::Chain(s) => s.sample(ctx, idx),
        }
    }
}

/// The index llama.cpp's greedy sampler selects: it starts at 0 and moves to every later
/// logit strictly greater than the one selected, so the first of equal maxima wins and a
/// NaN is never moved to (and, at index 0, never moved from).
fn first_max(logits: &[f32]) -> usize {
    match logits.first() {
        None => 0,
        Some(l0) if l0.is_nan() => 0,
        Some(_) => {
            // Two plain passes over the slice: the largest value (`f32::max` skips NaN),
            // then where it first occurs.
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            logits.iter().position(|&l| l == max).unwrap_or(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::first_max;

    /// llama.cpp's greedy selection, written as it is there.
    fn reference(logits: &[f32]) -> usize {
        let mut selected = 0;
        for i in 1..logits.len() {
            if logits[i] > logits[selected] {
                selected = i;
            }
        }
        selected
    }

    #[test]
    fn picks_what_llama_cpp_greedy_picks() {
        let nan = f32::NAN;
        let (inf, ninf) = (f32::INFINITY, f32::NEG_INFINITY);
        let cases: &[&[f32]] = &[
            &[1.0],
            &[1.0, 3.0, 2.0],
            &[3.0, 3.0, 1.0, 3.0], // ties: the first
            &[0.5, 2.0, 2.0],      // ties after the start
            &[ninf, ninf, ninf],   // all impossible: the first
            &[ninf, -1e30, ninf],  // all but one impossible
            &[nan, 5.0, 7.0],      // NaN first: stays there
            &[1.0, nan, 0.5, nan], // NaN later: skipped
            &[-2.0, -1.0, -3.0],   // all negative
            &[0.0, -0.0, 0.0],     // signed zeros compare equal
            &[1.0, inf, 2.0, inf], // infinities
        ];
        for c in cases {
            assert_eq!(first_max(c), reference(c), "{c:?}");
        }
        assert_eq!(first_max(&[]), 0);
    }

    #[test]
    fn agrees_on_a_vocabulary_of_pseudo_random_logits() {
        // A 49k-entry vocabulary like the test model's, values from a fixed LCG, then
        // copies of the maximum planted after and before it.
        let mut x: u32 = 12345;
        let mut logits: Vec<f32> = (0..49_152)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (x >> 8) as f32 / 65_536.0 - 128.0
            })
            .collect();
        assert_eq!(first_max(&logits), reference(&logits));
        let top = reference(&logits);
        let later = top + (logits.len() - top) / 2;
        logits[later] = logits[top];
        assert_eq!(first_max(&logits), top, "a later equal maximum");
        logits[top / 2] = logits[top];
        assert_eq!(first_max(&logits), top / 2, "an earlier equal maximum");
        assert_eq!(first_max(&logits), reference(&logits));
    }
}
