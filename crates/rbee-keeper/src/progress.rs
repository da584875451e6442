//! Progress on stderr: a bar redrawn in place on a terminal, a line per step elsewhere.

use std::io::{IsTerminal, Write};
use std::time::Instant;

/// A progress display for one long step.
pub(crate) struct Bar {
    tty: bool,
    label: String,
    last_line: Instant,
    last_percent: u64,
}

/// `1.2 GB`, `512.0 MB`.
pub(crate) fn bytes(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.1} GB", n / 1e9)
    } else {
        format!("{:.1} MB", n / 1e6)
    }
}

impl Bar {
    /// A bar for `label` (`downloading`).
    pub(crate) fn new(label: &str) -> Bar {
        Bar {
            tty: std::io::stderr().is_terminal(),
            label: label.to_owned(),
            last_line: Instant::now(),
            last_percent: 0,
        }
    }

    /// Shows `done` of `total` bytes at `speed_mbps`.
    pub(crate) fn bytes(&mut self, done: u64, total: u64, speed_mbps: f64) {
        let pct = (done * 100).checked_div(total).unwrap_or(0);
        let eta = if speed_mbps > 0.0 {
            let s = (total.saturating_sub(done)) as f64 / (speed_mbps * 1e6);
            format!("ETA {}s", s.ceil() as u64)
        } else {
            "ETA –".into()
        };
        let filled = (pct / 5) as usize;
        let text = format!(
            "[rbee-keeper] {} [{}{}] {pct:>3}% {} / {} {speed_mbps:.1} MB/s {eta}",
            self.label,
            "#".repeat(filled),
            "-".repeat(20 - filled.min(20)),
            bytes(done),
            bytes(total),
        );
        self.show(pct, &text);
    }

    /// Shows `done` of `total` steps (layers).
    pub(crate) fn steps(&mut self, done: u64, total: u64, unit: &str) {
        let pct = (done * 100).checked_div(total).unwrap_or(0);
        let text = format!(
            "[rbee-keeper] {} {done}/{total} {unit} ({pct}%)",
            self.label
        );
        self.show(pct, &text);
    }

    fn show(&mut self, pct: u64, text: &str) {
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{text}");
            let _ = err.flush();
        } else if pct >= self.last_percent + 10 || self.last_line.elapsed().as_secs() >= 5 {
            let _ = writeln!(err, "{text}");
            self.last_percent = pct - pct % 10;
            self.last_line = Instant::now();
        }
    }

    /// Ends the bar's line.
    pub(crate) fn finish(&mut self, text: &str) {
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = writeln!(err, "\r\x1b[2K[rbee-keeper] {text}");
        } else {
            let _ = writeln!(err, "[rbee-keeper] {}", crate::report::for_stderr(text));
        }
    }
}
