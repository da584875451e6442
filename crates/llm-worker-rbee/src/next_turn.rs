//! A chat answer is followed, in the next turn's prompt, by tokens the chat template
//! decides: the end of the assistant's turn and the opening of the user's
//! (`<|im_end|>\n<|im_start|>user\n` for ChatML), and, for an answer cut at `max_tokens`,
//! its last token (sampled and sent, never decoded). They are known before the client
//! sends that turn, so an idle engine decodes them into the answer's sequence at once, and
//! the next turn decodes only the user's words and the assistant's opening.
//!
//! Which tokens: the conversation with the answer and a user message holding a marker is
//! rendered with the model's template and cut at the marker; whatever follows the
//! sequence's cached tokens is what to decode. A template or tokenization that does not
//! extend the cached tokens exactly gets nothing prepared; a guess that turns out wrong
//! costs only its decode (the next request's prefix match drops it).

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;
use rbee_types::worker::ChatMessage;

use crate::prepared::Prepared;
use crate::prompt_cache::PromptCache;

/// Stands in for the next user message; cut off before tokenizing.
const MARKER: &str = "\u{1F41D}rbee-next-turn\u{1F41D}";
/// More tokens than any template puts between two turns: something went wrong.
const MOST: usize = 32;

/// Tokens to decode into a free sequence after its cached ones.
#[derive(Debug)]
pub(crate) struct NextTurn {
    seq: i32,
    /// How many tokens the sequence holds when they were planned.
    after: usize,
    tokens: Vec<LlamaToken>,
}

impl NextTurn {
    /// What to decode after `answer` (the end of the conversation `messages`) in `seq`.
    pub(crate) fn plan(
        prepared: &Prepared,
        seqs: &PromptCache,
        seq: i32,
        messages: &[ChatMessage],
        answer: &str,
    ) -> Option<NextTurn> {
        let mut next = messages.to_vec();
        next.push(ChatMessage {
            role: "assistant".into(),
            content: answer.to_owned(),
        });
        next.push(ChatMessage {
            role: "user".into(),
            content: MARKER.into(),
        });
        let text = prepared.render(&next, false).ok()?;
        let head = &text[..text.find(MARKER)?];
        let tokens = prepared.tokenize(head);
        let cached = seqs.tokens(seq);
        let rest = tokens.strip_prefix(cached)?;
        (!rest.is_empty() && rest.len() <= MOST).then(|| NextTurn {
            seq,
            after: cached.len(),
            tokens: rest.to_vec(),
        })
    }

    /// Decodes the tokens into the sequence if it is still free and unchanged and they fit
    /// its context (`ctx_size`).
    pub(crate) fn apply(
        self,
        ctx: &mut LlamaContext<'_>,
        batch: &mut LlamaBatch,
        seqs: &mut PromptCache,
        ctx_size: u32,
    ) {
        let unchanged = seqs.is_free(self.seq) && seqs.tokens(self.seq).len() == self.after;
        if !unchanged || self.after + self.tokens.len() >= ctx_size as usize {
            return;
        }
        batch.clear();
        let last = self.tokens.len() - 1;
        for (i, t) in self.tokens.iter().enumerate() {
            if batch
                .add(*t, (self.after + i) as i32, &[self.seq], i == last)
                .is_err()
            {
                return;
            }
        }
        if ctx.decode(batch).is_ok() {
            for t in self.tokens {
                seqs.push(self.seq, t);
            }
        } else {
            // What the failed step left in the cells is unknown: drop them.
            let _ = ctx.clear_kv_cache_seq(Some(self.seq as u32), Some(self.after as u32), None);
            tracing::warn!(seq = self.seq, "decoding a chat's next-turn tokens failed");
        }
    }
}
