//! `rbee-keeper infer`: a prompt to a streamed answer on any node, every input a flag (for
//! scripts; `run` is the same for people). Progress on stderr, nothing but the answer on
//! stdout.

use clap::Args;

use crate::answer::{self, AnswerOptions, Input};
use crate::config::Config;
use crate::names::ModelArg;
use crate::node::Conn;
use crate::registry::Registry;
use crate::report::Failure;

/// `infer`'s arguments.
#[derive(Debug, Args)]
pub struct InferArgs {
    /// The model: a name the node's hive serves (an id or alias from `models list`), or a
    /// reference: hf:org/repo[:QUANT|/file.gguf][@revision] or file:///abs/path.gguf.
    #[arg(long)]
    pub model: ModelArg,
    /// The prompt.
    #[arg(long)]
    pub prompt: String,
    /// Send the prompt as raw text to continue, instead of as a chat message rendered with
    /// the model's own template (the default, what instruct models expect).
    #[arg(long)]
    pub raw: bool,
    /// Where and how to generate.
    #[command(flatten)]
    pub options: AnswerOptions,
}

/// Runs `infer`; the exit status.
pub fn run(mut a: InferArgs, json: bool, cfg: &Config, reg: &Registry) -> Result<u8, Failure> {
    a.options = a.options.with_defaults(cfg)?;
    answer::check_prompt(&a.prompt, "e.g. --prompt \"Write a haiku about bees\"")?;
    let o = &a.options;
    crate::check::if_stale(o.node(), cfg, reg)?;
    let conn = Conn::open(o.node(), cfg, reg)?;
    let ready = answer::prepare(&conn, reg, &a.model, o)?;
    let input = if a.raw {
        Input::Raw(a.prompt.clone())
    } else {
        Input::Chat(vec![answer::message("user", &a.prompt)])
    };
    let req = answer::request(&ready.model_ref, input, o);
    let s = answer::stream_answer(&conn.hive, req, a.raw, !json, o)?;
    answer::conclude(&s, &ready, o, json)
}
