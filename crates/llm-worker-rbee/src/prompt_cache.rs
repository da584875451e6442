//! Which llama sequence a request gets, and how much of its prompt is already in the KV
//! cache.
//!
//! Every sequence remembers the tokens its KV cells hold. A sequence keeps them after its
//! request ends, so the next request that starts with the same tokens (the next turn of a
//! chat, the same system prompt) decodes only what follows. Prefixes are compared on
//! tokens, never on text.
//!
//! Which free sequence a request gets:
//! 1. one whose tokens are all a prefix of the prompt, so that nothing cached is lost (the
//!    conversation this request continues, or an empty sequence), the longest first;
//! 2. else the one sharing the longest prefix with the prompt (its diverging tail is
//!    dropped: an edited or regenerated turn);
//!
//! Ties, and no match at all: the one next to the most busy sequences (llama.cpp decodes
//! a run of consecutive sequence ids in one pass over the weights, and each gap costs
//! another pass), then the least recently used.
//!
//! When another sequence — busy or free — holds a longer prefix than the chosen one, it
//! is copied over first: a copy of the donor's KV stream (memory, no decoding), cut after
//! the shared prefix. So N conversations that open with the same system prompt decode it
//! once, and each keeps its own history in a sequence of its own while there are free
//! ones.
//!
//! This module only plans; the engine applies the plan to the llama context.

use llama_cpp_2::token::LlamaToken;
use rbee_types::worker::SlotCache;

/// What one sequence holds.
#[derive(Debug, Default)]
struct Sequence {
    /// The tokens in its KV cells, from position 0.
    tokens: Vec<LlamaToken>,
    /// A request runs on it.
    busy: bool,
    /// When it was last given to a request or given back (a counter).
    last_used: u64,
    /// Requests that reused some of it.
    hits: u64,
    /// Prompt tokens those requests did not have to decode.
    reused: u64,
}

/// How a request starts on its sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// The sequence it runs on.
    pub seq: i32,
    /// First copy positions `0..n` of this other sequence into `seq` (after clearing it).
    pub copy_from: Option<(i32, usize)>,
    /// Prompt tokens already in `seq`'s cells once the copy is done: decoding starts at
    /// this position, and the cells from here on are to be removed.
    pub reuse: usize,
}

/// The sequences of one llama context.
#[derive(Debug)]
pub(crate) struct PromptCache {
    seqs: Vec<Sequence>,
    clock: u64,
    enabled: bool,
}

/// Length of the common prefix.
fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl PromptCache {
    /// `slots` sequences, empty; `enabled = false` keeps nothing between requests.
    pub(crate) fn new(slots: u32, enabled: bool) -> PromptCache {
        PromptCache {
            seqs: (0..slots).map(|_| Sequence::default()).collect(),
            clock: 0,
            enabled,
        }
    }

    /// Whether sequences keep their tokens between requests.
    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Picks a free sequence for `prompt` and marks it busy; `None` when all are busy.
    /// With `use_cache` false (or the cache off) the least recently used free sequence is
    /// taken and nothing is reused.
    pub(crate) fn start(&mut self, prompt: &[LlamaToken], use_cache: bool) -> Option<Plan> {
        let use_cache = use_cache && self.enabled;
        let prefix = |s: &Sequence| {
            if use_cache {
                common_prefix(&s.tokens, prompt)
            } else {
                0
            }
        };
        // Nothing lost first, then the longest shared prefix, then the most busy
        // neighbours, then least recently used.
        let busy = |i: usize| self.seqs.get(i).is_some_and(|s| s.busy);
        let (seq, own) = self
            .seqs
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.busy)
            .min_by_key(|(i, s)| {
                let n = prefix(s);
                let neighbours = usize::from(*i > 0 && busy(i - 1)) + usize::from(busy(i + 1));
                (
                    std::cmp::Reverse(n == s.tokens.len()),
                    std::cmp::Reverse(n),
                    std::cmp::Reverse(neighbours),
                    s.last_used,
                )
            })
            .map(|(i, s)| (i, prefix(s)))?;
        // A longer prefix anywhere else is copied over.
        let donor = self
            .seqs
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != seq)
            .map(|(i, s)| (i, prefix(s)))
            .filter(|(_, n)| *n > own)
            .min_by_key(|(_, n)| std::cmp::Reverse(*n));
        let (copy_from, have) = match donor {
            Some((d, n)) => (Some((d as i32, n)), n),
            None => (None, own),
        };
        // The last prompt token is always decoded again: its logits give the first token.
        let reuse = have.min(prompt.len().saturating_sub(1));
        let now = self.tick();
        let tokens: Vec<LlamaToken> = match copy_from {
            Some((d, n)) => self.seqs[d as usize].tokens[..n].to_vec(),
            None => std::mem::take(&mut self.seqs[seq].tokens),
        };
        let s = &mut self.seqs[seq];
        s.tokens = tokens;
        s.tokens.truncate(reuse);
        s.busy = true;
        s.last_used = now;
        if reuse > 0 {
            s.hits += 1;
            s.reused += reuse as u64;
        }
        Some(Plan {
            seq: seq as i32,
            copy_from,
            reuse,
        })
    }

    /// The tokens in `seq`'s cells.
    pub(crate) fn tokens(&self, seq: i32) -> &[LlamaToken] {
        &self.seqs[seq as usize].tokens
    }

    /// No request runs on `seq`.
    pub(crate) fn is_free(&self, seq: i32) -> bool {
        !self.seqs[seq as usize].busy
    }

    /// Records that `token` went into `seq`'s cells at the next position.
    pub(crate) fn push(&mut self, seq: i32, token: LlamaToken) {
        self.seqs[seq as usize].tokens.push(token);
    }

    /// The request on `seq` ended. With `keep` (and the cache on) its cells stay for the
    /// next request; otherwise the caller clears them and so is the record here. Returns
    /// whether the cells are to be cleared.
    pub(crate) fn finish(&mut self, seq: i32, keep: bool) -> bool {
        let now = self.tick();
        let enabled = self.enabled;
        let s = &mut self.seqs[seq as usize];
        s.busy = false;
        s.last_used = now;
        if keep && enabled {
            false
        } else {
            s.tokens.clear();
            true
        }
    }

    /// The cells of `seq` are gone from position `from` on (a partial removal failed and
    /// the engine cleared more than planned).
    pub(crate) fn truncate(&mut self, seq: i32, from: usize) {
        self.seqs[seq as usize].tokens.truncate(from);
    }

    /// Tokens held by each sequence, and what reusing them saved, for `/v1/slots`.
    pub(crate) fn view(&self) -> Vec<SlotCache> {
        self.seqs
            .iter()
            .enumerate()
            .map(|(i, s)| SlotCache {
                id: i as u32,
                busy: s.busy,
                cached_tokens: s.tokens.len() as u64,
                hits: s.hits,
                tokens_reused: s.reused,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ids: &[i32]) -> Vec<LlamaToken> {
        ids.iter().map(|&i| LlamaToken::new(i)).collect()
    }

    /// Runs `prompt` to the end on the planned sequence, leaving `prompt ++ answer` there.
    fn run(c: &mut PromptCache, prompt: &[i32], answer: &[i32]) -> Plan {
        let p = c.start(&t(prompt), true).unwrap();
        for &tok in &prompt[p.reuse..] {
            c.push(p.seq, LlamaToken::new(tok));
        }
        for &tok in answer {
            c.push(p.seq, LlamaToken::new(tok));
        }
        c.finish(p.seq, true);
        p
    }

    #[test]
    fn the_next_turn_reuses_the_conversation_so_far() {
        let mut c = PromptCache::new(1, true);
        let first = run(&mut c, &[1, 2, 3], &[4, 5]);
        assert_eq!(first.reuse, 0);
        let second = run(&mut c, &[1, 2, 3, 4, 5, 6, 7], &[8]);
        assert_eq!((second.seq, second.reuse, second.copy_from), (0, 5, None));
        // A prompt that is the cache's strict prefix still decodes its last token.
        let shorter = run(&mut c, &[1, 2, 3], &[]);
        assert_eq!(shorter.reuse, 2);
        // Diverging at the first token: nothing reused.
        assert_eq!(run(&mut c, &[9, 2, 3], &[]).reuse, 0);
        let v = c.view();
        assert_eq!((v[0].hits, v[0].tokens_reused), (2, 7));
    }

    #[test]
    fn the_free_sequence_with_the_longest_prefix_wins_else_the_least_recently_used() {
        let mut c = PromptCache::new(3, true);
        run(&mut c, &[1, 1, 1], &[]); // seq 0
        let b = c.start(&t(&[2, 2, 2]), true).unwrap(); // busy on seq 1
        assert_eq!((b.seq, b.reuse), (1, 0));
        for x in [2, 2, 2] {
            c.push(b.seq, LlamaToken::new(x));
        }
        // No match among the free ones: an empty sequence, not the one holding [1, 1, 1].
        let other = c.start(&t(&[7, 7]), true).unwrap();
        assert_eq!((other.seq, other.reuse), (2, 0));
        c.finish(other.seq, true);
        c.finish(b.seq, true);
        // [1, 1, 1, 5] goes where [1, 1, 1] is.
        assert_eq!(c.start(&t(&[1, 1, 1, 5]), true).unwrap().seq, 0);
    }

    #[test]
    fn an_edited_turn_goes_to_an_empty_sequence_else_replaces_its_own_tail() {
        let mut c = PromptCache::new(2, true);
        run(&mut c, &[1, 2, 3, 4], &[]);
        let p = c.start(&t(&[1, 2, 9]), true).unwrap();
        assert_eq!((p.seq, p.copy_from, p.reuse), (1, Some((0, 2)), 2));
        c.finish(p.seq, true);
        let mut full = PromptCache::new(2, true);
        run(&mut full, &[1, 2, 3, 4], &[]);
        run(&mut full, &[7, 7], &[]);
        let p = full.start(&t(&[1, 2, 9]), true).unwrap();
        assert_eq!((p.seq, p.copy_from, p.reuse), (0, None, 2));
        // With no prefix anywhere: the least recently used.
        full.finish(p.seq, true);
        assert_eq!(full.start(&t(&[5]), true).unwrap().seq, 1);
    }

    #[test]
    fn with_no_prefix_to_reuse_a_sequence_next_to_a_busy_one_wins_over_an_older_one() {
        let mut c = PromptCache::new(4, true);
        for x in 1..=4 {
            assert_eq!(run(&mut c, &[x], &[]).seq, x - 1);
        }
        let busy = c.start(&t(&[3, 9]), true).unwrap();
        assert_eq!(busy.seq, 2);
        // Seq 0 is the least recently used, but seqs 1 and 3 sit next to the busy seq 2
        // (one decoding pass instead of two); of those, 1 is the older.
        assert_eq!(c.start(&t(&[7]), true).unwrap().seq, 1);
        // Requests fill the sequences in order; a gap between two busy ones is filled
        // before the older sequence at the end.
        let mut gap = PromptCache::new(4, true);
        let seqs: Vec<i32> = (0..3)
            .map(|_| gap.start(&t(&[5]), false).unwrap().seq)
            .collect();
        assert_eq!(seqs, [0, 1, 2]);
        gap.finish(1, true);
        assert_eq!(gap.start(&t(&[6]), false).unwrap().seq, 1);
    }

    #[test]
    fn a_prefix_in_another_sequence_is_copied_even_from_a_busy_one() {
        let mut c = PromptCache::new(2, true);
        let system = [10, 11, 12, 13];
        let a = c.start(&t(&system), true).unwrap();
        for x in system {
            c.push(a.seq, LlamaToken::new(x));
        }
        // While `a` still runs, a second conversation opens with the same system prompt.
        let b = c.start(&t(&[10, 11, 12, 13, 20, 21]), true).unwrap();
        assert_eq!(b.seq, 1);
        assert_eq!(b.copy_from, Some((0, 4)));
        assert_eq!(b.reuse, 4);
    }

    #[test]
    fn opting_out_reuses_nothing_and_a_disabled_cache_keeps_nothing() {
        let mut c = PromptCache::new(1, true);
        run(&mut c, &[1, 2, 3], &[]);
        let p = c.start(&t(&[1, 2, 3, 4]), false).unwrap();
        assert_eq!((p.reuse, p.copy_from), (0, None));
        c.finish(p.seq, true);
        let mut off = PromptCache::new(1, false);
        let p = off.start(&t(&[1, 2]), true).unwrap();
        off.push(p.seq, LlamaToken::new(1));
        assert!(off.finish(p.seq, true), "cells cleared");
        assert_eq!(off.view()[0].cached_tokens, 0);
        assert!(c.start(&t(&[1]), true).is_some());
        assert!(
            c.start(&t(&[1]), true).is_none(),
            "the only sequence is busy"
        );
    }
}
