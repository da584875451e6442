//! A worker's log lines, read without HTTP: the end of its log file (process workers, and
//! systemd workers where there is no journald), or of its unit's journal (`journalctl`).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::registry::WorkerSpec;

/// How far back from the end a file is read for the last lines.
const TAIL_WINDOW: u64 = 4 << 20;

/// The last `n` lines of a file, and the offset where following should continue.
pub(crate) fn tail_file(path: &Path, n: usize) -> std::io::Result<(Vec<String>, u64)> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(TAIL_WINDOW);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.take(len - start).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let complete = text.rfind('\n').map_or("", |i| &text[..i]);
    let mut lines: Vec<String> = complete.lines().map(str::to_owned).collect();
    if start > 0 && !lines.is_empty() {
        lines.remove(0); // probably cut in the middle
    }
    let keep = lines.len().saturating_sub(n);
    let consumed = start + complete.len() as u64 + u64::from(!complete.is_empty());
    Ok((lines.split_off(keep), consumed))
}

/// `journalctl` for a worker's unit (`user`: in the user's journal).
pub(crate) fn journalctl(user: bool, spec: &WorkerSpec, n: usize, follow: bool) -> Command {
    let mut cmd = Command::new("journalctl");
    if user {
        cmd.arg("--user");
    }
    cmd.args([
        "--no-pager",
        "-o",
        "cat",
        "-n",
        &n.to_string(),
        "-u",
        &spec.unit,
    ]);
    if follow {
        cmd.arg("-f");
    }
    cmd
}

/// Lines read back to find what explains a failure.
const EXPLAIN_WINDOW: usize = 400;

/// The last `n` log lines of a worker (empty when there are none), preceded by the line
/// that explains a failure (a panic, an assert, the first error) and the one after it
/// when those are further back: the cause often scrolls out behind what follows it.
pub(crate) fn last_lines(user: bool, spec: &WorkerSpec, n: usize) -> Vec<String> {
    explained(read_last(user, spec, EXPLAIN_WINDOW), n)
}

/// The last `n` of `lines`, with the first explaining line (and the next) in front when
/// they fall before them.
fn explained(mut lines: Vec<String>, n: usize) -> Vec<String> {
    let cut = lines.len().saturating_sub(n);
    let cause = lines.iter().position(|l| {
        l.contains("panicked at")
            || l.contains("GGML_ASSERT")
            || l.contains(" ERROR ")
            || l.contains("error:")
    });
    let tail = lines.split_off(cut);
    match cause {
        Some(i) if i < cut => {
            let mut out: Vec<String> = lines[i..(i + 2).min(cut)].to_vec();
            out.extend(tail);
            out
        }
        _ => tail,
    }
}

fn read_last(user: bool, spec: &WorkerSpec, n: usize) -> Vec<String> {
    match &spec.log_file {
        Some(path) => tail_file(path, n).map(|(l, _)| l).unwrap_or_default(),
        None => journalctl(user, spec, n, false)
            .stderr(Stdio::null())
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_cause_is_kept_in_front_of_the_last_lines() {
        let mut log = lines(&[
            "loading",
            "thread 'engine' panicked at src/engine.rs:9:5:",
            "attempt to multiply with overflow",
        ]);
        log.extend((0..30).map(|i| format!("noise {i}")));
        let out = explained(log.clone(), 5);
        assert_eq!(out.len(), 7);
        assert!(out[0].contains("panicked at"));
        assert_eq!(out[1], "attempt to multiply with overflow");
        assert_eq!(out[6], "noise 29");
        // Within the last lines already: nothing added.
        let short = explained(log[..4].to_vec(), 5);
        assert_eq!(short, log[..4].to_vec());
        // No cause: just the tail.
        let plain = explained(lines(&["a", "b", "c"]), 2);
        assert_eq!(plain, lines(&["b", "c"]));
    }
}
