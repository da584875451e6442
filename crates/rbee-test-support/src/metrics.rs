//! Prometheus' own tools on a scrape: `promtool check metrics` (Debian's `prometheus`
//! package, installed by `scripts/setup`) and sample lookups for assertions.

use std::io::Write;
use std::process::{Command, Stdio};

/// Environment variable naming the `promtool` binary (default: `promtool` on `PATH`).
pub const PROMTOOL_ENV: &str = "RBEE_TEST_PROMTOOL";

/// Runs `promtool check metrics` on `text`: `Some(Ok)` when it passes, `Some(Err(report))`
/// when it finds problems. Without promtool the calling test skips (fails under
/// `RBEE_TEST_STRICT`) and this returns `None`.
pub fn promtool_check(text: &str) -> Option<Result<(), String>> {
    let bin = std::env::var(PROMTOOL_ENV).unwrap_or_else(|_| "promtool".into());
    let child = Command::new(&bin)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    crate::skip_unless!(
        child.is_ok(),
        "{bin} not found (Debian: apt-get install prometheus; or set {PROMTOOL_ENV})"
    );
    let mut child = child.ok()?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(text.as_bytes())
        .expect("promtool reads its input");
    let out = child.wait_with_output().expect("promtool runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(if out.status.success() {
        Ok(())
    } else {
        Err(report)
    })
}

/// The value of the sample written exactly as `series` (name and labels as the server
/// writes them, e.g. `rbee_slots{state="busy"}`), if present.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}
