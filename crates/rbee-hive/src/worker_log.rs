//! A worker's log lines, read without HTTP: the end of its log file (process workers, and
//! systemd workers where there is no journald), or of its unit's journal (`journalctl`).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::registry::WorkerSpec;

/// How far back from the end a file is read for the last lines.
const TAIL_WINDOW: u64 = 4 << 20;

/// The last `n` lines of a file, and the offset where following should continue.
pub fn tail_file(path: &Path, n: usize) -> std::io::Result<(Vec<String>, u64)> {
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
pub fn journalctl(user: bool, spec: &WorkerSpec, n: usize, follow: bool) -> Command {
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

/// The last `n` log lines of a worker (empty when there are none).
pub fn last_lines(user: bool, spec: &WorkerSpec, n: usize) -> Vec<String> {
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
