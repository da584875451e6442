//! `rbee-keeper setup check --node NAME`: the layers between the keeper and a model, each
//! checked and shown with its figure — SSH (connection and key, latency over a session,
//! the `rbee-hive` binary and its version), then the hive (its API, its version against
//! the keeper's, its backends, its memory and disk). The first failure ends the check with
//! its next step.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::Instant;

use serde::Serialize;

use crate::config::Config;
use crate::node::Conn;
use crate::registry::{Node, Registry};
use crate::report::Failure;
use crate::ssh::Ssh;

/// Round trips timed over one SSH session.
const ROUND_TRIPS: usize = 5;
/// Above this median the latency is worth a warning: every token crosses it.
const SLOW_MS: f64 = 50.0;

/// One check that passed.
#[derive(Debug, Serialize)]
pub(crate) struct Passed {
    /// `ssh`, `latency`, `rbee-hive binary`, `hive API`, `version`, `backends`,
    /// `resources`.
    pub check: &'static str,
    /// What was found (`3 ms`, `rbee-hive 0.1.0 at /usr/local/bin/rbee-hive`).
    pub figure: String,
    /// Passed, but worth knowing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

fn keeper(msg: impl Into<String>) -> Failure {
    Failure::new("rbee-keeper", msg)
}

/// Where passed checks are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Show {
    /// `setup check`: one line each on stdout.
    Stdout,
    /// `setup check --json`: only in the document at the end.
    Json,
    /// Before an answer: progress lines on stderr.
    Stderr,
}

/// Shows a passed check and keeps it.
fn pass(done: &mut Vec<Passed>, show: Show, p: Passed) {
    let text = match &p.warning {
        Some(w) => format!("⚠️  {}: {} ({w})", p.check, p.figure),
        None => format!("✓ {}: {}", p.check, p.figure),
    };
    match show {
        Show::Stdout => println!("{}", crate::report::for_stdout(&text)),
        Show::Stderr => crate::say!("  {text}"),
        Show::Json => {}
    }
    done.push(p);
}

/// How long since the last contact before `run` and `infer` check the SSH layers first.
const STALE_SECS: u64 = 24 * 3600;

/// Before an answer on a registered node not reached for a day (or never): the SSH checks,
/// shown on stderr, so a broken layer is named before anything else is tried.
pub(crate) fn if_stale(node: &str, cfg: &Config, reg: &Registry) -> Result<(), Failure> {
    let Ok(Some(n)) = reg.get(node) else {
        return Ok(());
    };
    let last = n.last_connected_unix.unwrap_or(0);
    if rbee_types::now_unix().saturating_sub(last) < STALE_SECS {
        return Ok(());
    }
    crate::say!("{node} was not reached for a day or more; checking it first");
    let ssh = Ssh {
        options: cfg.ssh.options.clone(),
    };
    ssh_checks(&ssh, &n, &mut Vec::new(), Show::Stderr)
}

/// Runs every check of `node`; the checks that passed (printed as they pass), or the first
/// failure.
pub(crate) fn run(node: &str, json: bool, cfg: &Config, reg: &Registry) -> Result<(), Failure> {
    let mut done = Vec::new();
    let show = if json { Show::Json } else { Show::Stdout };
    if node != "localhost" {
        let n = reg
            .get(node)
            .map_err(|e| keeper(e.to_string()))?
            .ok_or_else(|| crate::registry::not_registered(node))?;
        let ssh = Ssh {
            options: cfg.ssh.options.clone(),
        };
        ssh_checks(&ssh, &n, &mut done, show)?;
    }
    hive_checks(node, cfg, reg, &mut done, show)?;
    if json {
        crate::report::print_json(&serde_json::json!({ "node": node, "checks": done }));
    }
    Ok(())
}

fn ssh_checks(ssh: &Ssh, n: &Node, done: &mut Vec<Passed>, show: Show) -> Result<(), Failure> {
    let t = n.ssh_target();
    let fail = |e: &crate::ssh::SshError| crate::ssh::failure(&n.node_name, &t, e);
    ssh.run(&t, "true").map_err(|e| fail(&e))?;
    pass(
        done,
        show,
        Passed {
            check: "ssh",
            figure: format!("{}@{}:{}, key accepted", t.user, t.host, t.port),
            warning: None,
        },
    );
    let ms = latency(ssh, &t).map_err(|why| {
        keeper(format!(
            "the SSH session to {} broke off: {why}",
            n.node_name
        ))
        .suggest([format!(
            "try it by hand: ssh -p {} {}@{}",
            t.port, t.user, t.host
        )])
    })?;
    pass(
        done,
        show,
        Passed {
            check: "latency",
            figure: format!("{ms:.0} ms"),
            warning: (ms > SLOW_MS)
                .then(|| format!("above {SLOW_MS:.0} ms: each streamed token waits for it")),
        },
    );
    let script = "b=$(command -v rbee-hive || echo \"$HOME/.local/bin/rbee-hive\"); \
                  [ -x \"$b\" ] || exit 3; printf '%s ' \"$b\"; \"$b\" --version";
    let out = ssh.run(&t, script).map_err(|_| {
        keeper(format!("rbee-hive is not installed on {}", n.node_name))
            .code("HIVE_NOT_INSTALLED")
            .suggest([format!(
                "install it there: rbee-keeper setup install --node {}",
                n.node_name
            )])
    })?;
    let (path, version) = out.trim().split_once(' ').unwrap_or((out.trim(), ""));
    pass(
        done,
        show,
        Passed {
            check: "rbee-hive binary",
            figure: format!("{} at {path}", version.trim()),
            warning: None,
        },
    );
    Ok(())
}

/// The median of [`ROUND_TRIPS`] line echoes over one SSH session, in ms.
fn latency(ssh: &Ssh, t: &crate::ssh::Target) -> Result<f64, String> {
    let mut child = ssh
        .command(t, "cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut input = child.stdin.take().ok_or("no stdin")?;
    let mut output = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let mut times = Vec::new();
    // The first echo waits for the session to be set up; it is not a round trip.
    for i in 0..=ROUND_TRIPS {
        let t0 = Instant::now();
        writeln!(input, "ping {i}").map_err(|e| e.to_string())?;
        input.flush().map_err(|e| e.to_string())?;
        let mut line = String::new();
        if output.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Err("the session ended".into());
        }
        if i > 0 {
            times.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
    }
    drop(input);
    let _ = child.wait();
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn hive_checks(
    node: &str,
    cfg: &Config,
    reg: &Registry,
    done: &mut Vec<Passed>,
    show: Show,
) -> Result<(), Failure> {
    let conn = Conn::open(node, cfg, reg)?;
    let t0 = Instant::now();
    let health = conn.reach(reg).map_err(Failure::from)?;
    pass(
        done,
        show,
        Passed {
            check: "hive API",
            figure: format!(
                "{} answers in {} ms",
                conn.address,
                t0.elapsed().as_millis()
            ),
            warning: None,
        },
    );
    let ours = env!("CARGO_PKG_VERSION");
    if crate::answer::major_minor(&health.version) != crate::answer::major_minor(ours) {
        return Err(keeper(format!(
            "rbee-hive {} on {node} and rbee-keeper {ours} differ in major.minor",
            health.version
        ))
        .code("VERSION_MISMATCH")
        .suggest([format!(
            "install the same rbee version on both: rbee-keeper setup install --node {node}"
        )]));
    }
    pass(
        done,
        show,
        Passed {
            check: "version",
            figure: format!(
                "rbee-hive {} ({}), rbee-keeper {ours}",
                health.version, health.supervisor
            ),
            warning: None,
        },
    );
    let backends = conn.backends()?.backends;
    let figure: Vec<String> = backends
        .iter()
        .map(|b| match (&b.available, &b.reason) {
            (true, _) if b.devices.is_empty() => b.name.to_string(),
            (true, _) => format!("{} ({} devices)", b.name, b.devices.len()),
            (false, Some(r)) => format!("{} unavailable: {r}", b.name),
            (false, None) => format!("{} unavailable", b.name),
        })
        .collect();
    if !backends.iter().any(|b| b.available) {
        return Err(keeper(format!("no backend can run workers on {node}"))
            .detail(figure.join("; "))
            .suggest([format!(
                "see the hive's log: rbee-keeper logs --node {node}"
            )]));
    }
    pass(
        done,
        show,
        Passed {
            check: "backends",
            figure: figure.join("; "),
            warning: None,
        },
    );
    let r = conn.resources()?;
    let bytes = crate::progress::bytes;
    pass(
        done,
        show,
        Passed {
            check: "resources",
            figure: format!(
                "memory {} available of {}, disk {} free of {} at {}",
                bytes(r.memory.available_bytes),
                bytes(r.memory.total_bytes),
                bytes(r.disk.space.available_bytes),
                bytes(r.disk.space.total_bytes),
                r.disk.path.display()
            ),
            warning: None,
        },
    );
    Ok(())
}
