//! The local node needs no setup: when no hive answers on it, the keeper starts one — as
//! a transient unit of the user's systemd manager when one is reachable (so `systemctl
//! --user status rbee-hive` and `journalctl --user -u rbee-hive` work), else as a
//! background process logging to a file.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::report::Failure;
use rbee_client::HiveClient;

/// The hive binary: next to this keeper, else on PATH.
pub(crate) fn hive_binary() -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.join("rbee-hive")))
        .filter(|p| p.is_file());
    beside.or_else(|| {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|d| d.join("rbee-hive"))
            .find(|p| p.is_file())
    })
}

/// The caller's settings a hive started for them should see (a unit does not inherit the
/// keeper's environment): where state lives, the hub and its token, logging.
fn passed_env() -> Vec<String> {
    [
        "XDG_STATE_HOME",
        "HF_ENDPOINT",
        "HF_TOKEN",
        "HF_TOKEN_PATH",
        "HF_HOME",
        "RBEE_LOG",
    ]
    .iter()
    .filter_map(|k| Some(format!("--setenv={k}={}", std::env::var(k).ok()?)))
    .collect()
}

/// Whether `systemctl --user` reaches a manager.
pub(crate) fn user_manager_reachable() -> bool {
    Command::new("systemctl")
        .args(["--user", "show", "--property=Version"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts a hive listening on `port` of loopback and waits (at most 20 s) until it answers.
/// Returns how it was started, for the user.
pub(crate) fn start_hive(port: u16) -> Result<String, Failure> {
    let Some(bin) = hive_binary() else {
        return Err(Failure::new("rbee-keeper", "no hive answers on this machine, and rbee-hive is not installed next to rbee-keeper or on PATH")
            .suggest(["install it: rbee-keeper install (or cargo build --release -p rbee-hive)".to_string()]));
    };
    let how = if user_manager_reachable() {
        let unit = format!("rbee-hive-{port}");
        let out = Command::new("systemd-run")
            .args(["--user", "--collect", "--quiet", "--property=Type=notify"])
            .arg(format!("--unit={unit}"))
            .arg("--description=rbee-hive (started by rbee-keeper)")
            .args(passed_env())
            .arg(&bin)
            .args(["--port", &port.to_string()])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Failure::new("rbee-keeper", format!("cannot run systemd-run: {e}")))?;
        if !out.status.success() {
            return Err(Failure::new(
                "rbee-keeper",
                format!(
                    "systemd-run could not start the hive: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            )
            .suggest([format!("journalctl --user -u {unit}")]));
        }
        format!("as the user unit {unit}.service (journalctl --user -u {unit})")
    } else {
        let log_path = background_log();
        if let Some(dir) = log_path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| Failure::new("rbee-keeper", format!("{}: {e}", log_path.display())))?;
        let mut cmd = Command::new(&bin);
        cmd.args(["--port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .map_err(|e| Failure::new("rbee-keeper", e.to_string()))?,
            )
            .stderr(log);
        // Its own session: it outlives this command and a Ctrl+C at the terminal.
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| {
            Failure::new(
                "rbee-keeper",
                format!("cannot start {}: {e}", bin.display()),
            )
        })?;
        format!(
            "as a background process (pid {}, log {})",
            child.id(),
            log_path.display()
        )
    };
    let hive = HiveClient::new(&format!("http://127.0.0.1:{port}"), None);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20) {
        if hive.health().is_ok() {
            return Ok(how);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut f = Failure::new(
        "rbee-keeper",
        format!("started rbee-hive {how}, but it did not answer within 20 s"),
    );
    // What it said before it died (a background process; a unit's is in the journal).
    if how.contains("background") {
        let text = std::fs::read_to_string(background_log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        for l in &lines[lines.len().saturating_sub(5)..] {
            f = f.detail(l.to_string());
        }
    }
    Err(f)
}

/// Where a hive the keeper starts as a background process writes its log.
pub(crate) fn background_log() -> PathBuf {
    crate::paths::data_dir().join("rbee-hive.log")
}
