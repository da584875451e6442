//! Shell scripts run on a node — this machine (`sh -s`) or a registered one (`ssh … sh -s`)
//! — with their output streamed as it comes. Scripts report to the keeper with marker
//! lines on stderr: `rbee-error: …` (what failed), `rbee-hint: …` (what to do),
//! `rbee-done: …` (the result); the keeper turns them into its usual report.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use crate::config::Config;
use crate::registry::Registry;
use crate::report::Failure;
use crate::ssh::{Ssh, Target};

/// How many of the last output lines a failure shows.
const TAIL: usize = 8;

/// Where a script runs.
pub(crate) enum NodeShell {
    /// This machine.
    Local,
    /// A registered node, over SSH.
    Remote {
        /// The client.
        ssh: Ssh,
        /// The node's address.
        target: Target,
    },
}

/// What the script's output is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Output {
    /// Progress: every line to stderr, prefixed with `[<node>]`.
    Progress,
    /// Content (a log): its stdout to stdout, unchanged.
    Content,
}

/// How a script ended.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    /// Its exit status (`None`: killed by a signal).
    pub code: Option<i32>,
    /// The `rbee-done:` value, if it printed one.
    pub done: Option<String>,
    /// Its `rbee-error:` and `rbee-hint:` lines.
    pub error: Option<String>,
    /// Hints.
    pub hints: Vec<String>,
    /// The last lines it printed (besides markers).
    pub tail: Vec<String>,
}

/// Quotes `s` for a POSIX shell.
pub(crate) fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl NodeShell {
    /// The shell of `node`: `localhost`, or a registered node.
    pub(crate) fn open(node: &str, cfg: &Config, reg: &Registry) -> Result<NodeShell, Failure> {
        if node == "localhost" {
            return Ok(NodeShell::Local);
        }
        let n = reg
            .get(node)
            .map_err(|e| Failure::new("rbee-keeper", e.to_string()))?
            .ok_or_else(|| crate::registry::not_registered(node))?;
        Ok(NodeShell::Remote {
            ssh: Ssh {
                options: cfg.ssh.options.clone(),
            },
            target: n.ssh_target(),
        })
    }

    fn command(&self) -> Command {
        match self {
            NodeShell::Local => {
                let mut c = Command::new("sh");
                c.arg("-s");
                c
            }
            NodeShell::Remote { ssh, target } => ssh.command(target, "sh -s"),
        }
    }

    /// Runs `script` on the node, streaming its output as `out` says; `node` names it in
    /// prefixes and errors. A failure to reach the node is an error; the script's own
    /// failure is in the [`Outcome`].
    pub(crate) fn run(&self, node: &str, script: &str, out: Output) -> Result<Outcome, Failure> {
        let mut child = self
            .command()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Failure::new("rbee-keeper", format!("cannot run a shell: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A script that exits early closes its end: nothing to do about that here.
            let _ = stdin.write_all(script.as_bytes());
        }
        let (tx, rx) = mpsc::channel::<Line>();
        let readers = [
            child.stdout.take().map(|s| reader(s, false, tx.clone())),
            child.stderr.take().map(|s| reader(s, true, tx)),
        ];
        let mut outcome = Outcome {
            code: None,
            done: None,
            error: None,
            hints: vec![],
            tail: vec![],
        };
        let mut tail = VecDeque::new();
        let mut ssh_errors = String::new();
        for Line {
            is_err,
            text: line,
            redrawn,
        } in rx
        {
            // A meter redrawn in place (`\r`): only its final state is worth a line.
            if redrawn && out == Output::Progress {
                continue;
            }
            if let Some(m) = line.strip_prefix("rbee-error: ") {
                outcome.error = Some(m.to_owned());
            } else if let Some(m) = line.strip_prefix("rbee-hint: ") {
                outcome.hints.push(m.to_owned());
            } else if let Some(m) = line.strip_prefix("rbee-done: ") {
                outcome.done = Some(m.to_owned());
            } else {
                if is_err {
                    ssh_errors.push_str(&line);
                    ssh_errors.push('\n');
                }
                match out {
                    Output::Progress => eprintln!("[{node}] {line}"),
                    Output::Content if is_err => eprintln!("{line}"),
                    Output::Content => println!("{line}"),
                }
                if tail.len() == TAIL {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        }
        for r in readers.into_iter().flatten() {
            let _ = r.join();
        }
        let status = child
            .wait()
            .map_err(|e| Failure::new("rbee-keeper", format!("waiting for the shell: {e}")))?;
        outcome.code = status.code();
        outcome.tail = tail.into();
        if let NodeShell::Remote { target, .. } = self {
            if outcome.code == Some(255) && outcome.error.is_none() {
                let e = crate::ssh::classify(&ssh_errors);
                return Err(crate::ssh::failure(node, target, &e));
            }
        }
        Ok(outcome)
    }
}

impl Outcome {
    /// Success (exit 0 and `rbee-done`), else a failure of `component` saying `what`
    /// failed, with the script's own words and the last lines it printed.
    pub(crate) fn check(self, component: &'static str, what: &str) -> Result<String, Failure> {
        if self.code == Some(0) {
            if let Some(done) = self.done {
                return Ok(done);
            }
        }
        let message = match (&self.error, self.code) {
            (Some(e), _) => e.clone(),
            (None, Some(c)) => format!("{what} stopped with exit status {c}"),
            (None, None) => format!("{what} was killed by a signal"),
        };
        let mut f = Failure::new(component, message);
        // What the node printed last (not the script's own step lines): git's or the
        // compiler's own words.
        for l in self.tail.iter().filter(|l| !l.starts_with("==> ")) {
            f = f.detail(l.clone());
        }
        Err(f.suggest(self.hints))
    }
}

/// One line of a script's output.
struct Line {
    /// From its stderr.
    is_err: bool,
    /// The text, without its end.
    text: String,
    /// Ended by `\r`: a progress meter about to be redrawn.
    redrawn: bool,
}

/// Reads `from` line by line (a `\r` ends a line too: progress meters) into `tx`.
fn reader<R: Read + Send + 'static>(
    from: R,
    is_err: bool,
    tx: mpsc::Sender<Line>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut r = BufReader::new(from);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = read_line(&mut r, &mut buf);
            if n == 0 {
                break;
            }
            let redrawn = buf.last() == Some(&b'\r');
            let text = String::from_utf8_lossy(&buf).trim_end().to_owned();
            if !text.is_empty()
                && tx
                    .send(Line {
                        is_err,
                        text,
                        redrawn,
                    })
                    .is_err()
            {
                break;
            }
        }
    })
}

/// Reads up to and including the next `\n` or `\r`; the number of bytes read (0 at the end).
fn read_line<R: BufRead>(r: &mut R, buf: &mut Vec<u8>) -> usize {
    let mut n = 0;
    loop {
        let (done, used) = match r.fill_buf() {
            Ok([]) | Err(_) => return n,
            Ok(avail) => match avail.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(i) => {
                    buf.extend_from_slice(&avail[..=i]);
                    (true, i + 1)
                }
                None => {
                    buf.extend_from_slice(avail);
                    (false, avail.len())
                }
            },
        };
        r.consume(used);
        n += used;
        if done {
            return n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_quotes_spaces_and_dollars() {
        let tricky = "it's a $HOME `x` \"y\" ~/z";
        let out = Command::new("sh")
            .args(["-c", &format!("printf %s {}", quote(tricky))])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), tricky);
    }

    #[test]
    fn markers_become_the_outcome_and_the_rest_is_streamed() {
        let o = NodeShell::Local
            .run(
                "localhost",
                "echo one; printf 'two\\rthree\\n'; echo 'rbee-hint: do this' >&2; echo 'rbee-error: it broke' >&2; exit 3",
                Output::Progress,
            )
            .unwrap();
        assert_eq!(o.code, Some(3));
        assert_eq!(
            o.tail,
            ["one", "three"],
            "a line redrawn in place is not kept"
        );
        let f = o.check("rbee-keeper", "the script").unwrap_err();
        assert_eq!(f.message, "it broke");
        assert_eq!(f.suggestions, ["do this"]);
        assert_eq!(f.details, ["one", "three"]);
        let ok = NodeShell::Local
            .run("localhost", "echo 'rbee-done: 42' >&2", Output::Progress)
            .unwrap();
        assert_eq!(ok.check("rbee-keeper", "x").unwrap(), "42");
    }
}
