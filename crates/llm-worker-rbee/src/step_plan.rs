//! What goes into the next decode step: how many prompt tokens each active slot reads, and
//! in which order the slots' tokens go into the batch. Arithmetic only, so it is tested
//! without a model.

/// Once a step holds this many prompt tokens, the prompts behind them wait for the next
/// step: a crowd of short prompts gets its first tokens in waves rather than all at the
/// end of one long step (at 16 concurrent streams the median time to first token drops by
/// about a fifth, docs/benchmarks.md), while one long prompt still reads up to the whole
/// batch a step.
pub(crate) const PROMPT_WAVE_TOKENS: usize = 128;

/// One active slot, as the planner sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Want {
    /// Its llama sequence id.
    pub seq: i32,
    /// It has a sampled token to decode (it is past its prompt).
    pub decoding: bool,
    /// Prompt tokens it has still to read.
    pub prompt_left: usize,
}

/// The plan of one step over the active slots (indices into them).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct StepPlan {
    /// Prompt tokens each slot reads.
    pub take: Vec<usize>,
    /// The slots in the order their tokens go into the batch.
    pub order: Vec<usize>,
}

/// Plans a step of at most `budget` tokens: one token for every decoding slot, then prompt
/// chunks first come first served (`wants` in arrival order), up to about
/// [`PROMPT_WAVE_TOKENS`] of them.
///
/// The order is by sequence id: with a KV stream per sequence, llama.cpp computes a batch
/// as one pass per run of consecutive sequence ids it finds in that order, and every pass
/// reads all the weights again.
pub(crate) fn plan(wants: &[Want], budget: usize) -> StepPlan {
    let mut budget = budget.saturating_sub(wants.iter().filter(|w| w.decoding).count());
    let mut prompt_tokens = 0;
    let take = wants
        .iter()
        .map(|w| {
            if w.decoding || prompt_tokens >= PROMPT_WAVE_TOKENS {
                return 0;
            }
            let n = w.prompt_left.min(budget);
            budget -= n;
            prompt_tokens += n;
            n
        })
        .collect();
    let mut order: Vec<usize> = (0..wants.len()).collect();
    order.sort_unstable_by_key(|&i| wants[i].seq);
    StepPlan { take, order }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(seq: i32, left: usize) -> Want {
        Want {
            seq,
            decoding: false,
            prompt_left: left,
        }
    }

    fn decoding(seq: i32) -> Want {
        Want {
            seq,
            decoding: true,
            prompt_left: 0,
        }
    }

    #[test]
    fn sixteen_short_prompts_are_read_in_waves_in_arrival_order() {
        let wants: Vec<Want> = (0..16).map(|s| prompt(15 - s, 30)).collect();
        let p = plan(&wants, 512);
        // 30-token prompts: the wave closes once it holds 128 tokens (the fifth prompt).
        assert_eq!(p.take[..5], [30; 5]);
        assert!(p.take[5..].iter().all(|&n| n == 0), "{:?}", p.take);
    }

    #[test]
    fn one_long_prompt_reads_the_whole_batch_less_the_decoding_slots() {
        let wants = [decoding(0), prompt(1, 2000), decoding(2)];
        assert_eq!(plan(&wants, 512).take, [0, 510, 0]);
        // A prompt shorter than the budget is read whole, with the next one behind it.
        let wants = [prompt(0, 100), prompt(1, 1000), prompt(2, 5)];
        assert_eq!(plan(&wants, 512).take, [100, 412, 0]);
    }

    #[test]
    fn tokens_go_into_the_batch_in_sequence_order() {
        let wants = [decoding(3), prompt(0, 4), decoding(2), decoding(1)];
        assert_eq!(plan(&wants, 512).order, [1, 3, 2, 0]);
    }
}
