//! A real systemd *system* manager for tests: a Debian container booted with
//! `systemd-nspawn`, its systemd as PID 1 — the manager NixOS and servers run, with the
//! system bus, `DynamicUser=`, credentials and journald.
//!
//! The root file system is built once by `scripts/build-test-container` (debootstrap,
//! cached); each container boots it with `--volatile=overlay`, so nothing a test writes
//! survives. Like the user manager, it starts in its own cgroup subtree and mount
//! namespace. It shares the host's network namespace: a daemon inside listening on
//! 127.0.0.1 is reachable from the test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::systemd::{spawn_confined, stop_confined};

/// The cached root file system: `$RBEE_CACHE_DIR/nspawn-bookworm` (else
/// `$XDG_CACHE_HOME/rbee/…`, else `~/.cache/rbee/…`), complete when it holds the marker
/// file.
pub fn rootfs() -> Option<PathBuf> {
    // The same lookup as scripts/build-test-container.
    let cache = std::env::var_os("RBEE_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|c| PathBuf::from(c).join("rbee")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/rbee")))?;
    let dir = cache.join("nspawn-bookworm");
    dir.join(".rbee-complete").is_file().then_some(dir)
}

/// A booted container; powered off and cleaned up on drop.
pub struct SystemContainer {
    nspawn: Child,
    leader: u32,
    cgroups: Vec<PathBuf>,
}

impl SystemContainer {
    /// Boots the container with `binds` (host path, container path) mounted read-only, or
    /// says why it cannot.
    pub fn boot(binds: &[(&Path, &str)]) -> Result<SystemContainer, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("a systemd-nspawn container needs root".into());
        }
        let root = rootfs().ok_or(
            "no container root file system: run scripts/build-test-container (scripts/setup does)",
        )?;
        if !Path::new("/usr/bin/systemd-nspawn").is_file() {
            return Err(
                "systemd-nspawn is not installed (apt-get install systemd-container)".into(),
            );
        }
        let mut inner = format!(
            "systemd-nspawn --quiet --directory={} --volatile=overlay --boot --register=no --keep-unit",
            root.display()
        );
        for (host, inside) in binds {
            let host = host.display().to_string();
            if host.contains(['\'', ':', ' ']) || inside.contains(['\'', ':', ' ']) {
                return Err(format!(
                    "cannot bind {host}: quote, colon or space in the path"
                ));
            }
            inner.push_str(&format!(" --bind-ro={host}:{inside}"));
        }
        let (nspawn, cgroups) = spawn_confined(&mut Command::new("sh"), &inner)?;
        let mut c = SystemContainer {
            nspawn,
            leader: 0,
            cgroups,
        };
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(st)) = c.nspawn.try_wait() {
                return Err(format!("systemd-nspawn exited: {st}"));
            }
            if c.leader == 0 {
                c.leader = first_child(c.nspawn.id()).unwrap_or(0);
            }
            if c.leader != 0 {
                let (_, state) = c.exec(&["systemctl", "is-system-running"]);
                if matches!(state.trim(), "running" | "degraded") {
                    return Ok(c);
                }
            }
            if Instant::now() > until {
                return Err("the container did not finish booting within 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs a command inside (all of the container's namespaces): (success, stdout + stderr).
    pub fn exec(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("nsenter")
            .args(["--all", "--target", &self.leader.to_string(), "--"])
            .args(args)
            .output();
        match out {
            Ok(o) => {
                let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&o.stderr));
                (o.status.success(), text)
            }
            Err(e) => (false, e.to_string()),
        }
    }

    /// `systemctl <args>` inside.
    pub fn systemctl(&self, args: &[&str]) -> (bool, String) {
        let mut all = vec!["systemctl"];
        all.extend_from_slice(args);
        self.exec(&all)
    }
}

impl Drop for SystemContainer {
    fn drop(&mut self) {
        // SIGRTMIN+3 asks systemd for a clean poweroff (units stopped, then PID 1 exits).
        if self.leader != 0 {
            // SAFETY: kill(2) on the container's PID 1, which this test booted.
            unsafe {
                libc::kill(self.leader as i32, libc::SIGRTMIN() + 3);
            }
        }
        stop_confined(&mut self.nspawn, 0, Duration::from_secs(30), &self.cgroups);
    }
}

fn first_child(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A booted container, or `None` after printing why the calling test skips (it fails
/// instead under `RBEE_TEST_STRICT`).
pub fn container_or_skip(binds: &[(&Path, &str)]) -> Option<SystemContainer> {
    let c = SystemContainer::boot(binds);
    if let Err(reason) = &c {
        crate::skip_unless!(false, "no systemd system-manager container: {reason}");
    }
    c.ok()
}

/// Where [`rbee_container_or_skip`] binds the release binaries and the model's directory.
pub const BUILD_DIR: &str = "/opt/rbee";
/// See [`BUILD_DIR`].
pub const MODELS_DIR: &str = "/models";

/// A booted container with this build's release binaries at [`BUILD_DIR`] and the
/// directory of `model` at [`MODELS_DIR`] (both read-only), or `None` after saying why.
pub fn rbee_container_or_skip(model: &Path) -> Option<SystemContainer> {
    let build = crate::model::worker_binary();
    let build = build.parent()?;
    let models = model.parent()?;
    container_or_skip(&[(build, BUILD_DIR), (models, MODELS_DIR)])
}
