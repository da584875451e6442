//! What the keeper prints on stderr: errors in one shape — the component that failed in
//! brackets, what went wrong, the numbers, then what to do — progress lines, and tables.
//!
//! Symbols (✅, ❌, ⏳ …) are for a person at a terminal: when stderr is not one (a file, a
//! pipe, journald) or `NO_COLOR` is set, they are left out.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::sync::OnceLock;

/// Whether stderr gets plain text: not a terminal, or `NO_COLOR` set (to anything but "").
pub fn plain() -> bool {
    static PLAIN: OnceLock<bool> = OnceLock::new();
    *PLAIN.get_or_init(|| {
        std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
            || !std::io::stderr().is_terminal()
    })
}

/// Whether `c` is one of the pictographs the keeper decorates lines with.
fn pictograph(c: char) -> bool {
    matches!(c as u32,
        0x2300..=0x23FF | 0x2600..=0x27BF | 0x2B00..=0x2BFF | 0xFE0F | 0x1F300..=0x1FAFF)
}

/// `text` without pictographs (and the spaces after each).
pub fn strip_pictographs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut after = false;
    for c in text.chars() {
        if pictograph(c) {
            after = true;
        } else if after && c == ' ' {
        } else {
            after = false;
            out.push(c);
        }
    }
    out
}

/// `text` as stderr should get it (see [`plain`]).
pub fn for_stderr(text: &str) -> std::borrow::Cow<'_, str> {
    if plain() {
        strip_pictographs(text).into()
    } else {
        text.into()
    }
}

/// `text` as stdout should get it: without pictographs when stdout is not a terminal or
/// `NO_COLOR` is set.
pub fn for_stdout(text: &str) -> std::borrow::Cow<'_, str> {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    if no_color || !std::io::stdout().is_terminal() {
        strip_pictographs(text).into()
    } else {
        text.into()
    }
}

/// Prints one `[rbee-keeper] …` line on stderr.
pub fn say_line(text: &str) {
    eprintln!("[rbee-keeper] {}", for_stderr(text));
}

/// `say!("…", args)`: one `[rbee-keeper] …` line on stderr, plain when it is not a terminal.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => { $crate::report::say_line(&format!($($arg)*)) };
}

/// An error for a person.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Failure {
    /// `rbee-keeper`, `rbee-hive`, `llm-worker-rbee`, `ssh`.
    pub component: &'static str,
    /// What went wrong.
    pub message: String,
    /// Numbers and names, one per line.
    pub details: Vec<String>,
    /// What to do.
    pub suggestions: Vec<String>,
    /// The error code (`INSUFFICIENT_RAM`, `LOADING_TIMEOUT`, …), when there is one.
    pub code: Option<String>,
}

impl Failure {
    /// A failure of `component`.
    pub fn new(component: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            component,
            message: message.into(),
            details: vec![],
            suggestions: vec![],
            code: None,
        }
    }

    /// Sets the error code.
    pub fn code(mut self, code: impl Into<String>) -> Failure {
        self.code = Some(code.into());
        self
    }

    /// The failure for `--json`: `{"error": {"component", "code", "message", "details",
    /// "suggestions"}}`.
    pub fn to_json(&self) -> String {
        #[derive(serde::Serialize)]
        struct Envelope<'a> {
            error: &'a Failure,
        }
        serde_json::to_string(&Envelope { error: self }).unwrap_or_default()
    }

    /// Adds a detail line.
    pub fn detail(mut self, d: impl Into<String>) -> Failure {
        self.details.push(d.into());
        self
    }

    /// Adds suggestions.
    pub fn suggest(mut self, s: impl IntoIterator<Item = String>) -> Failure {
        self.suggestions.extend(s);
        self
    }

    /// The text, as printed.
    pub fn render(&self) -> String {
        let mut out = format!("[{}] ❌ Error: {}\n", self.component, self.message);
        for d in &self.details {
            let _ = writeln!(out, "    {d}");
        }
        if !self.suggestions.is_empty() {
            out.push_str("  To fix:\n");
            for s in &self.suggestions {
                let _ = writeln!(out, "    • {s}");
            }
        }
        out
    }
}

/// As stderr gets it (plain when it is not a terminal).
impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&for_stderr(&self.render()))
    }
}

impl std::error::Error for Failure {}

/// Prints `doc` as the one JSON document of `--json` on stdout.
pub fn print_json(doc: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(doc).unwrap_or_default());
}

/// A plain-text table: a header row, then the rows, columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                let _ = write!(s, "{c:<w$}  ", w = width[i]);
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_component_then_say_what_to_do() {
        let f = Failure::new("rbee-hive", "Insufficient RAM on workstation")
            .detail("required: 4.0 GiB, available: 2.5 GiB")
            .suggest(["stop an idle worker".to_string()]);
        assert_eq!(
            f.render(),
            "[rbee-hive] ❌ Error: Insufficient RAM on workstation\n    required: 4.0 GiB, available: 2.5 GiB\n  To fix:\n    • stop an idle worker\n"
        );
    }

    #[test]
    fn plain_text_has_no_pictographs() {
        assert_eq!(
            strip_pictographs("[rbee-keeper] ✅ 20 tokens; ♻️  reusing; ⏳ wait • x"),
            "[rbee-keeper] 20 tokens; reusing; wait • x"
        );
        assert_eq!(strip_pictographs("[x] ❌ Error: é"), "[x] Error: é");
    }

    #[test]
    fn tables_pad_columns() {
        let t = table(
            &["NAME", "HOST"],
            &[
                vec!["a".into(), "x".into()],
                vec!["long-name".into(), "y".into()],
            ],
        );
        assert_eq!(t, "NAME       HOST\na          x\nlong-name  y\n");
    }
}
