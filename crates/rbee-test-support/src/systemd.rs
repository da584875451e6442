//! A private systemd *user* manager for tests, on machines whose PID 1 is not systemd.
//!
//! How (see docs/testing.md): the manager runs in a private mount namespace with a tmpfs on
//! `/run/systemd` (it refuses to start without `/run/systemd/system`), and — first of all —
//! inside its own cgroup subtree: a user manager started in the root cgroup would move every
//! process of the machine, PID 1 included, into its own scope. The subtree is a child of
//! the current cgroup in every hierarchy (`cpuset` skipped; only real cgroup filesystems
//! touched), so the memory hierarchy's subtree stays under the session's own limit.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::model::TempDir;

/// A running private user manager; stopped and cleaned up on drop.
pub struct UserManager {
    child: Child,
    runtime_dir: TempDir,
    cgroups: Vec<PathBuf>,
}

const SYSTEMD: &str = "/lib/systemd/systemd";

/// A private user manager, or `None` after printing why the calling test skips (it fails
/// instead under `RBEE_TEST_STRICT`).
pub fn user_manager_or_skip() -> Option<UserManager> {
    let m = UserManager::start();
    if let Err(reason) = &m {
        crate::skip_unless!(false, "no private systemd user manager: {reason}");
    }
    m.ok()
}

impl UserManager {
    /// Starts a manager, or says why it cannot run here.
    pub fn start() -> Result<UserManager, String> {
        UserManager::start_in(None)
    }

    /// Starts a manager whose user's home is `home` (`%h`, `~/.config/systemd/user`,
    /// `%S`): a test's own node without touching the machine's real home.
    pub fn start_with_home(home: &Path) -> Result<UserManager, String> {
        UserManager::start_in(Some(home))
    }

    fn start_in(home: Option<&Path>) -> Result<UserManager, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("a private systemd manager needs root (mount namespace, cgroups)".into());
        }
        if !Path::new(SYSTEMD).is_file() {
            return Err(format!(
                "{SYSTEMD} is not installed (apt-get install systemd)"
            ));
        }
        for tool in ["unshare", "dbus-daemon"] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success());
            if !found {
                return Err(format!("{tool} is not installed"));
            }
        }
        let runtime_dir = TempDir::new("xdg-runtime");
        std::fs::set_permissions(
            &runtime_dir.0,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .map_err(|e| e.to_string())?;
        let mut cmd = Command::new("sh");
        cmd.env("XDG_RUNTIME_DIR", &runtime_dir.0)
            .env_remove("DBUS_SESSION_BUS_ADDRESS");
        if let Some(home) = home {
            cmd.env("HOME", home);
            for k in [
                "XDG_CONFIG_HOME",
                "XDG_STATE_HOME",
                "XDG_DATA_HOME",
                "XDG_CACHE_HOME",
            ] {
                cmd.env_remove(k);
            }
        }
        let (child, cgroups) = spawn_confined(&mut cmd, &format!("{SYSTEMD} --user"))
            .map_err(|e| format!("cannot start the user manager: {e}"))?;
        let mut m = UserManager {
            child,
            runtime_dir,
            cgroups,
        };
        let until = Instant::now() + Duration::from_secs(20);
        while !m.runtime_dir.join("bus").exists() || !m.runtime_dir.join("systemd/private").exists()
        {
            if let Ok(Some(st)) = m.child.try_wait() {
                return Err(format!("the user manager exited at start: {st}"));
            }
            if Instant::now() > until {
                return Err("the user manager did not create its bus within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(m)
    }

    /// `unix:path=…/bus`: the session bus the manager serves.
    pub fn bus_address(&self) -> String {
        format!("unix:path={}", self.runtime_dir.join("bus").display())
    }

    /// The environment `systemctl --user` and `systemd-run --user` need.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("XDG_RUNTIME_DIR", self.runtime_dir.0.display().to_string()),
            ("DBUS_SESSION_BUS_ADDRESS", self.bus_address()),
        ]
    }

    /// `systemctl --user <args>` against this manager: (success, stdout + stderr).
    pub fn systemctl(&self, args: &[&str]) -> (bool, String) {
        self.tool("systemctl", args)
    }

    /// Runs `systemd-run --user <args>` against this manager; (success, stdout + stderr).
    pub fn systemd_run(&self, args: &[&str]) -> (bool, String) {
        self.tool("systemd-run", args)
    }

    fn tool(&self, tool: &str, args: &[&str]) -> (bool, String) {
        let out = Command::new(tool)
            .arg("--user")
            .args(args)
            .envs(self.env())
            .output()
            .unwrap_or_else(|e| panic!("{tool} runs: {e}"));
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    /// The manager's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for UserManager {
    fn drop(&mut self) {
        // SIGTERM makes the manager stop its units; then it exits.
        stop_confined(
            &mut self.child,
            libc::SIGTERM,
            Duration::from_secs(10),
            &self.cgroups,
        );
    }
}

/// Starts `inner` (a shell command line without single quotes) confined the way docs/testing.md
/// says: in a new cgroup subtree of every hierarchy (the shell moves itself there first, so
/// what it becomes starts inside), in a private mount namespace with a tmpfs on
/// `/run/systemd`. Returns the child and the subtree to remove once it has gone.
pub(crate) fn spawn_confined(
    cmd: &mut Command,
    inner: &str,
) -> Result<(std::process::Child, Vec<PathBuf>), String> {
    let tag = format!("rbee-test-{}-{}", std::process::id(), unique());
    let cgroups = create_cgroups(&tag)?;
    let moves: String = cgroups
        .iter()
        .map(|d| format!("echo $$ > '{}/cgroup.procs' && ", d.display()))
        .collect();
    let script = format!(
        "{moves}exec unshare -m -- sh -c 'mount -t tmpfs tmpfs /run/systemd && mkdir -p /run/systemd/system && exec {inner}'"
    );
    match cmd
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => Ok((child, cgroups)),
        Err(e) => {
            remove_cgroups(&cgroups);
            Err(e.to_string())
        }
    }
}

/// Stops a confined child: `signal` first, SIGKILL after `grace`, then removes its cgroups.
pub(crate) fn stop_confined(
    child: &mut std::process::Child,
    signal: i32,
    grace: Duration,
    cgroups: &[PathBuf],
) {
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
    let until = Instant::now() + grace;
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    remove_cgroups(cgroups);
}

fn unique() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

/// Creates `<current cgroup>/<tag>` in every usable hierarchy; returns them.
fn create_cgroups(tag: &str) -> Result<Vec<PathBuf>, String> {
    // Read it whole first: it changes under us once processes move.
    let listing = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
    let mut dirs = Vec::new();
    for line in listing.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), Some(c)) => (a, b, c),
            _ => continue,
        };
        let mount = match controllers {
            "" => "unified".to_owned(),
            c if c.split(',').any(|x| x == "cpuset") => continue,
            c => c.strip_prefix("name=").unwrap_or(c).to_owned(),
        };
        let mut base = PathBuf::from("/sys/fs/cgroup").join(&mount);
        if !base.is_dir() && controllers.is_empty() {
            base = PathBuf::from("/sys/fs/cgroup");
        }
        if !is_cgroupfs(&base) {
            continue;
        }
        let dir = base.join(path.trim_start_matches('/')).join(tag);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        dirs.push(dir);
    }
    if dirs.is_empty() {
        return Err("no writable cgroup hierarchy found".into());
    }
    Ok(dirs)
}

fn is_cgroupfs(p: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs on a NUL-terminated path into a zeroed struct.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        if libc::statfs(c.as_ptr(), &mut st) != 0 {
            return false;
        }
        // CGROUP_SUPER_MAGIC, CGROUP2_SUPER_MAGIC
        st.f_type == 0x27e0eb || st.f_type == 0x63677270
    }
}

/// Removes the subtrees deepest first, retrying while their last processes exit.
fn remove_cgroups(dirs: &[PathBuf]) {
    let until = Instant::now() + Duration::from_secs(10);
    for dir in dirs {
        loop {
            let mut all: Vec<PathBuf> = walk(dir);
            all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
            let ok = all
                .iter()
                .all(|d| std::fs::remove_dir(d).is_ok() || !d.exists());
            if ok || Instant::now() > until {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(walk(&e.path()));
            }
        }
    }
    out
}
