//! Greedy picking in place: the first highest logit, read straight from the context.
//!
//! llama.cpp's greedy sampler picks the same token, but first copies the whole vocabulary
//! into a fresh candidate array (~0.6 MB for a 49k vocabulary): about 0.1 ms per sequence
//! per step, a few percent of a step at 8 streams. The worker and the benchmark's batched
//! loop pick this way; the benchmark's single-sequence reference keeps llama.cpp's sampler,
//! so that the worker's greedy output is checked against llama.cpp's own.

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::token::LlamaToken;

/// The token greedy decoding takes from the logits at batch index `idx` of the last decode.
pub fn pick(ctx: &LlamaContext<'_>, idx: i32) -> LlamaToken {
    LlamaToken(first_max(ctx.get_logits_ith(idx)) as i32)
}

/// The index llama.cpp's greedy sampler selects: it starts at 0 and moves to every later
/// logit strictly greater than the one selected, so the first of equal maxima wins and a
/// NaN is never moved to (and, at index 0, never moved from).
pub fn first_max(logits: &[f32]) -> usize {
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
