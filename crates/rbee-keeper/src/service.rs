//! A node's hive as a service: `hive start`, `hive stop` and the hive's log, through
//! `systemctl` and `journalctl` on the node (over SSH, or here for `localhost`).
//!
//! The unit is found the way it was installed: the user's `rbee-hive.service` (`rbee-keeper
//! install`, `setup install`), else the transient `rbee-hive-<port>.service` the keeper
//! starts on this machine, else the system's `rbee-hive.service` (`install --system`, the
//! NixOS module). Without any unit, `localhost` falls back to what `infer` does: a
//! transient unit or a background process started by the keeper, stopped by its pid.

use std::time::{Duration, Instant};

use crate::config::Config;
use crate::node::Conn;
use crate::registry::Registry;
use crate::report::Failure;
use crate::shell::{quote, NodeShell, Output};

/// How long `hive start` waits for the hive to answer.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The exit status of the scripts when no unit is found.
const NO_UNIT: i32 = 4;

/// Finds the unit (`scope`, `unit`), else exits `NO_UNIT` with a hint.
const FIND_UNIT: &str = r#"set -u
if systemctl --user cat rbee-hive.service >/dev/null 2>&1; then
    scope=--user unit=rbee-hive.service
elif systemctl --user cat "rbee-hive-$port.service" >/dev/null 2>&1; then
    scope=--user unit="rbee-hive-$port.service"
elif systemctl --system cat rbee-hive.service >/dev/null 2>&1; then
    scope=--system unit=rbee-hive.service
else
    echo "rbee-error: node $node has no rbee-hive unit (neither the user's nor the system's)" >&2
    echo "rbee-hint: install rbee there: rbee-keeper setup install --node $node" >&2
    echo "rbee-hint: a hive started by hand, not as a unit, logs where it was started; its workers' logs: rbee-keeper logs --worker ID --node $node" >&2
    exit 4
fi
"#;

const CONTROL: &str = r#"if ! systemctl $scope --no-ask-password "$action" "$unit"; then
    echo "rbee-error: systemctl $scope $action $unit failed on node $node" >&2
    if [ "$scope" = --system ]; then
        echo "rbee-hint: the system's unit needs root or a polkit rule: sudo systemctl $action rbee-hive (on $node)" >&2
    fi
    echo "rbee-hint: see why: rbee-keeper logs --node $node" >&2
    exit 3
fi
echo "rbee-done: systemctl $scope $action $unit" >&2
"#;

const JOURNAL: &str = r#"if [ ! -S /run/systemd/journal/socket ]; then
    echo "rbee-error: journald does not run on node $node, so the hive's log is not kept there" >&2
    echo "rbee-hint: a hive started by rbee-keeper without systemd logs to ~/.local/share/rbee/rbee-hive.log" >&2
    exit 3
fi
if [ "$follow" = yes ]; then
    exec journalctl $scope -u "$unit" -n "$lines" --no-pager -f
fi
journalctl $scope -u "$unit" -n "$lines" --no-pager || exit 3
echo "rbee-done: ok" >&2
"#;

fn vars(node: &str, port: u16) -> String {
    format!("node={} port={port}\n", quote(node))
}

/// The port of the hive a connection points at.
fn port_of(conn: &Conn, cfg: &Config, reg: &Registry) -> u16 {
    if !conn.local {
        if let Ok(Some(n)) = reg.get(&conn.node) {
            return n.hive_port;
        }
    }
    let configured = cfg
        .nodes
        .get(&conn.node)
        .and_then(|n| n.hive_url.clone())
        .unwrap_or_else(|| conn.base().to_owned());
    configured
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(9200)
}

/// The hive's `/v1/health`, if it answers.
fn health(conn: &Conn) -> Option<rbee_types::hive::HiveHealth> {
    conn.health().ok()
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    done()
}

/// `hive start --node`.
pub(crate) fn start(node: &str, cfg: &Config, reg: &Registry) -> Result<(), Failure> {
    let conn = Conn::open(node, cfg, reg)?;
    if let Some(h) = health(&conn) {
        crate::say!(
            "✅ the hive on {node} runs already (rbee-hive {}, {})",
            h.version,
            conn.base()
        );
        return Ok(());
    }
    let port = port_of(&conn, cfg, reg);
    let shell = NodeShell::open(node, cfg, reg)?;
    let script = format!("{}action=start\n{FIND_UNIT}{CONTROL}", vars(node, port));
    let outcome = shell.run(node, &script, Output::Progress)?;
    let how = if outcome.code == Some(NO_UNIT) && conn.local {
        crate::local::start_hive(port)?
    } else {
        outcome.check("rbee-keeper", &format!("starting the hive on {node}"))?
    };
    if !wait_until(START_TIMEOUT, || health(&conn).is_some()) {
        return Err(Failure::new(
            "rbee-hive",
            format!(
                "the hive on {node} was started ({how}) but does not answer at {} after {} s",
                conn.base(),
                START_TIMEOUT.as_secs()
            ),
        )
        .suggest([format!("read its log: rbee-keeper logs --node {node}")]));
    }
    crate::say!("✅ the hive on {node} runs ({how}), at {}", conn.base());
    Ok(())
}

/// `hive stop --node`: its workers stop with it (they are its units' or its children).
pub(crate) fn stop(node: &str, cfg: &Config, reg: &Registry) -> Result<(), Failure> {
    let conn = Conn::open(node, cfg, reg)?;
    let port = port_of(&conn, cfg, reg);
    let shell = NodeShell::open(node, cfg, reg)?;
    let script = format!("{}action=stop\n{FIND_UNIT}{CONTROL}", vars(node, port));
    let outcome = shell.run(node, &script, Output::Progress)?;
    let how = if outcome.code == Some(NO_UNIT) && conn.local {
        let Some(pid) = health(&conn).map(|h| i64::from(h.pid)) else {
            crate::say!("no hive runs on {node}");
            return Ok(());
        };
        // SAFETY: kill(2) has no memory-safety preconditions.
        if unsafe { libc::kill(pid as i32, libc::SIGTERM) } != 0 {
            return Err(Failure::new(
                "rbee-keeper",
                format!(
                    "cannot stop the hive on {node} (pid {pid}): {}",
                    std::io::Error::last_os_error()
                ),
            ));
        }
        format!("SIGTERM to pid {pid}")
    } else {
        outcome.check("rbee-keeper", &format!("stopping the hive on {node}"))?
    };
    if !wait_until(Duration::from_secs(95), || health(&conn).is_none()) {
        return Err(Failure::new(
            "rbee-hive",
            format!("the hive on {node} still answers after {how}"),
        ));
    }
    crate::say!("✅ the hive on {node} stopped ({how})");
    Ok(())
}

/// The last `lines` lines of `path`, then (with `follow`) what is appended, until Ctrl+C.
fn print_file(path: &std::path::Path, lines: usize, follow: bool) -> Result<(), Failure> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let fail = |e: std::io::Error| Failure::new("rbee-keeper", format!("{}: {e}", path.display()));
    let mut f = std::fs::File::open(path).map_err(fail)?;
    let mut text = String::new();
    f.read_to_string(&mut text).map_err(fail)?;
    let all: Vec<&str> = text.lines().collect();
    crate::say!(
        "the hive on this machine runs as a background process; its log is {}",
        path.display()
    );
    let mut out = std::io::stdout().lock();
    for l in &all[all.len().saturating_sub(lines)..] {
        let _ = writeln!(out, "{l}");
    }
    let _ = out.flush();
    if !follow {
        return Ok(());
    }
    let mut at = f.stream_position().map_err(fail)?;
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let len = std::fs::metadata(path).map_err(fail)?.len();
        if len < at {
            at = 0;
        }
        if len > at {
            f.seek(SeekFrom::Start(at)).map_err(fail)?;
            let mut more = Vec::new();
            f.read_to_end(&mut more).map_err(fail)?;
            at += more.len() as u64;
            let _ = out.write_all(&more);
            let _ = out.flush();
        }
    }
}

/// `logs --node` without `--worker`: the hive's journal on its node, or on this machine
/// the log file of a hive the keeper started as a background process.
pub(crate) fn journal(
    node: &str,
    lines: usize,
    follow: bool,
    cfg: &Config,
    reg: &Registry,
) -> Result<(), Failure> {
    let port = if node == "localhost" {
        Conn::open(node, cfg, reg).map(|c| port_of(&c, cfg, reg))?
    } else {
        reg.get(node)
            .map_err(|e| Failure::new("rbee-keeper", e.to_string()))?
            .ok_or_else(|| crate::registry::not_registered(node))?
            .hive_port
    };
    let shell = NodeShell::open(node, cfg, reg)?;
    let script = format!(
        "{}lines={lines} follow={}\n{FIND_UNIT}{JOURNAL}",
        vars(node, port),
        if follow { "yes" } else { "no" }
    );
    let outcome = shell.run(node, &script, Output::Content)?;
    if follow && outcome.code == Some(0) {
        return Ok(());
    }
    let background = crate::local::background_log();
    if node == "localhost" && outcome.code == Some(NO_UNIT) && background.is_file() {
        return print_file(&background, lines, follow);
    }
    outcome
        .check("rbee-keeper", &format!("reading the hive's log on {node}"))
        .map(|_| ())
}
