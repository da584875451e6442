//! `rbee-keeper install [--system]`: puts the three binaries where a shell finds them,
//! creates the config and data directories, writes a default config (never over an
//! existing one), and with `--system` installs the systemd units from `systemd/`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use clap::Args;

use crate::report::Failure;

/// `install`'s arguments.
#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Install for the whole machine: /usr/local/bin, /etc/rbee, the system units, the polkit
    /// rule and the `rbee` system user (as root).
    #[arg(long)]
    pub system: bool,
    /// Stage everything under this directory instead of `/` (packaging, tests).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
}

/// The binaries installed.
pub const BINARIES: [&str; 3] = ["rbee-keeper", "rbee-hive", "llm-worker-rbee"];

const SYSTEM_FILES: [(&str, &str); 5] = [
    (
        "etc/systemd/system/rbee-hive.service",
        include_str!("../../../systemd/rbee-hive.service"),
    ),
    (
        "etc/systemd/system/rbee-workers.slice",
        include_str!("../../../systemd/rbee-workers.slice"),
    ),
    (
        "etc/systemd/system/llm-worker-rbee@.service",
        include_str!("../../../systemd/llm-worker-rbee@.service"),
    ),
    (
        "etc/polkit-1/rules.d/50-rbee-hive.rules",
        include_str!("../../../systemd/rbee-hive.polkit.rules"),
    ),
    (
        "etc/sysusers.d/rbee.conf",
        include_str!("../../../systemd/rbee.sysusers"),
    ),
];

const USER_UNIT: &str = include_str!("../../../systemd/user/rbee-hive.service");

const DEFAULT_KEEPER_CONFIG: &str = "\
# rbee-keeper's configuration (see `rbee-keeper --help`).
# [ssh]
# options = [\"UserKnownHostsFile=~/.ssh/known_hosts\"]
# [nodes.localhost]
# hive_url = \"http://127.0.0.1:9200\"
# [nodes.workstation]
# api_key = \"…\"
";

const DEFAULT_HIVE_CONFIG: &str = "\
# rbee-hive's configuration: `rbee-hive --help` lists every option, and
# `rbee-hive check-config /etc/rbee/hive.toml` checks this file.
host = \"127.0.0.1\"
port = 9200
";

fn fail(what: &Path, e: std::io::Error) -> Failure {
    let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
        vec!["run it as root (sudo) for --system".to_string()]
    } else {
        vec![]
    };
    Failure::new("rbee-keeper", format!("{}: {e}", what.display())).suggest(hint)
}

/// `root` joined with an absolute path.
fn under(root: &Path, abs: &Path) -> PathBuf {
    root.join(abs.strip_prefix("/").unwrap_or(abs))
}

/// Writes `content` to `path` (temporary name, then rename), with `mode`.
fn put(path: &Path, content: &[u8], mode: u32) -> Result<(), Failure> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| fail(d, e))?;
    }
    let tmp = path.with_extension("rbee-new");
    std::fs::write(&tmp, content).map_err(|e| fail(&tmp, e))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .map_err(|e| fail(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| fail(path, e))
}

/// Writes a config file only where none is.
fn put_once(path: &Path, content: &str, done: &mut Vec<String>) -> Result<(), Failure> {
    if path.exists() {
        done.push(format!("kept    {} (already there)", path.display()));
        return Ok(());
    }
    put(path, content.as_bytes(), 0o644)?;
    done.push(format!("wrote   {}", path.display()));
    Ok(())
}

/// Runs `install`.
pub fn run(a: &InstallArgs) -> Result<(), Failure> {
    let root = a.root.clone().unwrap_or_else(|| PathBuf::from("/"));
    let here = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
        .ok_or_else(|| Failure::new("rbee-keeper", "cannot tell where rbee-keeper runs from"))?;
    let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()));
    let bin_dir = if a.system {
        under(&root, Path::new("/usr/local/bin"))
    } else {
        under(&root, &home.join(".local/bin"))
    };
    // All three read before anything is written: a missing one leaves nothing half-done.
    let mut binaries = Vec::new();
    for name in BINARIES {
        let src = here.join(name);
        let bytes = std::fs::read(&src).map_err(|e| {
            fail(&src, e).suggest([format!(
                "build all three first: cargo build --release (then run {} install)",
                here.join("rbee-keeper").display()
            )])
        })?;
        binaries.push((name, bytes));
    }
    let mut done = Vec::new();
    for (name, bytes) in binaries {
        let dest = bin_dir.join(name);
        put(&dest, &bytes, 0o755)?;
        done.push(format!("copied  {}", dest.display()));
    }
    if a.system {
        for (path, content) in SYSTEM_FILES {
            let dest = root.join(path);
            put(&dest, content.as_bytes(), 0o644)?;
            done.push(format!("wrote   {}", dest.display()));
        }
        put_once(
            &root.join("etc/rbee/hive.toml"),
            DEFAULT_HIVE_CONFIG,
            &mut done,
        )?;
    } else {
        let config_home = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .unwrap_or_else(|| home.join(".config"));
        put_once(
            &under(&root, &config_home.join("rbee/config.toml")),
            DEFAULT_KEEPER_CONFIG,
            &mut done,
        )?;
        let unit = under(&root, &config_home.join("systemd/user/rbee-hive.service"));
        put(&unit, USER_UNIT.as_bytes(), 0o644)?;
        done.push(format!("wrote   {}", unit.display()));
        let data = under(&root, &crate::paths::data_dir());
        std::fs::create_dir_all(&data).map_err(|e| fail(&data, e))?;
        done.push(format!("created {}", data.display()));
    }
    for d in &done {
        eprintln!("[rbee-keeper] {d}");
    }
    eprintln!("[rbee-keeper] ✅ installed. Next:");
    if a.system {
        for step in [
            "systemd-sysusers                      # creates the rbee user",
            "systemctl daemon-reload",
            "systemctl enable --now rbee-hive      # the hive, on 127.0.0.1:9200",
            "rbee-keeper infer --model … --prompt …",
        ] {
            eprintln!("    {step}");
        }
    } else {
        eprintln!("    make sure {} is on your PATH, then:", bin_dir.display());
        for step in [
            "rbee-keeper infer --model … --prompt …   # starts a hive when none runs",
            "systemctl --user enable --now rbee-hive  # or keep one running as a user service",
        ] {
            eprintln!("    {step}");
        }
    }
    Ok(())
}
