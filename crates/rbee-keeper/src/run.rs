//! `rbee-keeper run MODEL [PROMPT]`, as `ollama run` works: with a prompt, one answer
//! streamed; without one, the prompt is read from stdin, or — when stdin is a terminal —
//! an interactive chat that keeps the conversation (`/bye` or Ctrl+D leaves, `/clear`
//! forgets, Ctrl+C stops the answer being written and nothing else).

use std::io::{BufRead, IsTerminal, Read, Write};

use clap::Args;
use rbee_types::openai::RequestMessage;

use crate::answer::{self, AnswerOptions, Input, Ready};
use crate::config::Config;
use crate::names::ModelArg;
use crate::node::Conn;
use crate::registry::Registry;
use crate::report::Failure;

/// `run`'s arguments.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The model: a name the node's hive serves (an id or alias from `models list`), or a
    /// reference (hf:org/repo[:QUANT], file:///abs/path.gguf), downloaded if missing.
    pub model: ModelArg,
    /// The prompt. Without it: read from stdin, or a chat when stdin is a terminal.
    pub prompt: Option<String>,
    /// A system prompt put before the conversation.
    #[arg(long)]
    pub system: Option<String>,
    /// After each answer, its token counts and speed on stderr (always shown outside a
    /// chat).
    #[arg(long)]
    pub verbose: bool,
    /// Where and how to generate.
    #[command(flatten)]
    pub options: AnswerOptions,
}

/// The most a prompt read from stdin may be.
const MAX_STDIN: u64 = 16 << 20;

/// Runs `run`; the exit status.
pub fn run(mut a: RunArgs, json: bool, cfg: &Config, reg: &Registry) -> Result<u8, Failure> {
    a.options = a.options.with_defaults(cfg)?;
    let prompt = match a.prompt.take() {
        Some(p) => Some(p),
        None if std::io::stdin().is_terminal() => None,
        None => Some(read_stdin()?),
    };
    if let Some(p) = &prompt {
        answer::check_prompt(p, "e.g. rbee-keeper run MODEL \"Write a haiku about bees\"")?;
    } else if json {
        return Err(Failure::new(
            "rbee-keeper",
            "--json needs a prompt (an argument or stdin); a chat is for a terminal",
        ));
    }
    let o = &a.options;
    crate::check::if_stale(o.node(), cfg, reg)?;
    let conn = Conn::open(o.node(), cfg, reg)?;
    let ready = answer::prepare(&conn, reg, &a.model, o)?;
    let mut history: Vec<RequestMessage> = a
        .system
        .iter()
        .map(|s| answer::message("system", s))
        .collect();
    match prompt {
        Some(p) => {
            history.push(answer::message("user", &p));
            let req = answer::request(&ready.model_ref, Input::Chat(history), o);
            let s = answer::stream_answer(&conn.hive, req, false, !json, o)?;
            answer::conclude(&s, &ready, o, json)
        }
        None => chat(&conn, &ready, history, &a),
    }
}

fn read_stdin() -> Result<String, Failure> {
    let mut text = String::new();
    std::io::stdin()
        .take(MAX_STDIN + 1)
        .read_to_string(&mut text)
        .map_err(|e| {
            Failure::new(
                "rbee-keeper",
                format!("cannot read the prompt from stdin: {e}"),
            )
            .suggest(["stdin must be UTF-8 text".to_string()])
        })?;
    if text.len() as u64 > MAX_STDIN {
        return Err(Failure::new(
            "rbee-keeper",
            format!("the prompt on stdin is longer than {} MiB", MAX_STDIN >> 20),
        ));
    }
    // What `echo … |` adds is not part of the prompt.
    let kept = text.trim_end().len();
    text.truncate(kept);
    Ok(text)
}

/// What a line typed in a chat asks for.
#[derive(Debug, PartialEq, Eq)]
enum Line<'a> {
    /// Leave.
    Bye,
    /// Forget the conversation (the system prompt stays).
    Clear,
    /// The commands.
    Help,
    /// Nothing typed.
    Empty,
    /// A `/word` that is none of the above.
    Unknown(&'a str),
    /// A message.
    Say(&'a str),
}

fn parse_line(line: &str) -> Line<'_> {
    let t = line.trim();
    match t {
        "" => Line::Empty,
        "/bye" | "/exit" | "/quit" => Line::Bye,
        "/clear" => Line::Clear,
        "/?" | "/help" => Line::Help,
        _ if t.starts_with('/') && !t.contains(char::is_whitespace) => Line::Unknown(t),
        _ => Line::Say(t),
    }
}

const HELP: &str = "/bye or Ctrl+D leaves, /clear forgets the conversation, Ctrl+C stops an answer";

/// The interactive chat: a prompt (`>>> `), the answer streamed, again.
fn chat(
    conn: &Conn,
    ready: &Ready,
    mut history: Vec<RequestMessage>,
    a: &RunArgs,
) -> Result<u8, Failure> {
    let o = &a.options;
    let system = history.len();
    crate::say!("chatting with {} on {} ({HELP})", a.model, o.node());
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    loop {
        {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(b">>> ");
            let _ = out.flush();
        }
        let mut line = String::new();
        match input.read_line(&mut line) {
            Ok(0) => {
                println!();
                return Ok(0);
            }
            Ok(_) => {}
            Err(e) => {
                return Err(Failure::new(
                    "rbee-keeper",
                    format!("cannot read from the terminal: {e}"),
                ))
            }
        }
        match parse_line(&line) {
            Line::Bye => return Ok(0),
            Line::Empty => continue,
            Line::Help => println!("{HELP}"),
            Line::Clear => {
                history.truncate(system);
                println!("(the conversation is forgotten)");
            }
            Line::Unknown(w) => println!("unknown command {w}; {HELP}"),
            Line::Say(text) => {
                history.push(answer::message("user", text));
                let req = answer::request(&ready.model_ref, Input::Chat(history.clone()), o);
                match answer::stream_answer(&conn.hive, req, false, true, o) {
                    Ok(s) if s.finish.is_some() || s.cancelled == "interrupt" => {
                        if s.cancelled == "interrupt" {
                            crate::say!("⏹  stopped");
                        } else if a.verbose {
                            let prompt = s.usage.as_ref().map_or(0, |u| u.prompt_tokens);
                            crate::say!(
                                "{} tokens in {:.2} s (prompt {prompt} tokens)",
                                s.tokens(),
                                s.duration.as_secs_f64()
                            );
                        }
                        history.push(answer::message("assistant", &s.text));
                    }
                    Ok(s) => {
                        history.pop();
                        eprint!("{}", answer::broken_off(&s, o));
                    }
                    Err(f) => {
                        history.pop();
                        eprint!("{f}");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_lines_are_commands_or_messages() {
        assert_eq!(parse_line("/bye\n"), Line::Bye);
        assert_eq!(parse_line("  /clear "), Line::Clear);
        assert_eq!(parse_line("\n"), Line::Empty);
        assert_eq!(parse_line("/nope"), Line::Unknown("/nope"));
        assert_eq!(
            parse_line("/usr/bin is a path\n"),
            Line::Say("/usr/bin is a path")
        );
        assert_eq!(parse_line("hello\n"), Line::Say("hello"));
    }
}
