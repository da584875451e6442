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
    /// Where the three binaries are taken from [default: the directory of this rbee-keeper].
    #[arg(long, value_name = "DIR")]
    pub from: Option<PathBuf>,
    /// Where the binaries go [default: ~/.local/bin, or /usr/local/bin with --system]; the
    /// units installed start the hive from there.
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Report what was done, not the next steps (`setup install` runs it on a node).
    #[arg(long, hide = true)]
    pub no_next_steps: bool,
    /// The port a newly written hive config gives the hive (an existing config is kept).
    #[arg(long, default_value_t = 9200, value_name = "PORT")]
    pub hive_port: u16,
}

/// The binaries installed.
pub const BINARIES: [&str; 3] = ["rbee-keeper", "rbee-hive", "llm-worker-rbee"];

const SYSTEM_FILES: [(&str, &str); 6] = [
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
    (
        "etc/tmpfiles.d/rbee.conf",
        include_str!("../../../systemd/rbee.tmpfiles"),
    ),
];

/// The polkit rule for systemd before v257, which names no unit for StartTransientUnit.
const PRE_257_RULE: (&str, &str) = (
    "etc/polkit-1/rules.d/49-rbee-hive-systemd-pre257.rules",
    include_str!("../../../systemd/rbee-hive-systemd-pre257.polkit.rules"),
);

/// The version of the systemd running here (`systemctl --version`), if any.
fn systemd_version() -> Option<u32> {
    let out = std::process::Command::new("systemctl")
        .arg("--version")
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

const USER_UNIT: &str = include_str!("../../../systemd/user/rbee-hive.service");

/// The keeper's config: all commented out, except where the local hive listens when that
/// is not the default port.
fn default_keeper_config(hive_port: u16) -> String {
    let local = if hive_port == 9200 {
        "# [nodes.localhost]\n# hive_url = \"http://127.0.0.1:9200\"".to_owned()
    } else {
        format!("[nodes.localhost]\nhive_url = \"http://127.0.0.1:{hive_port}\"")
    };
    format!(
        "# rbee-keeper's configuration (see `rbee-keeper --help`).\n\
         # [ssh]\n\
         # options = [\"UserKnownHostsFile=~/.ssh/known_hosts\"]\n\
         {local}\n\
         # [nodes.workstation]\n\
         # api_key = \"…\"\n"
    )
}

/// A hive config listening on loopback at `port`.
fn default_hive_config(port: u16, path: &str) -> String {
    format!(
        "# rbee-hive's configuration: `rbee-hive --help` lists every option, and\n\
         # `rbee-hive check-config {path}` checks this file.\n\
         host = \"127.0.0.1\"\nport = {port}\n"
    )
}

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
/// Runs `install`; what it did, one line each (also said on stderr).
pub fn run(a: &InstallArgs) -> Result<Vec<String>, Failure> {
    let root = a.root.clone().unwrap_or_else(|| PathBuf::from("/"));
    let here = match &a.from {
        Some(d) => d.clone(),
        None => std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_path_buf))
            .ok_or_else(|| {
                Failure::new("rbee-keeper", "cannot tell where rbee-keeper runs from")
            })?,
    };
    let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()));
    let default_bin = if a.system {
        PathBuf::from("/usr/local/bin")
    } else {
        home.join(".local/bin")
    };
    let chosen_bin = a.bin_dir.clone().unwrap_or_else(|| default_bin.clone());
    if !chosen_bin.is_absolute() {
        return Err(Failure::new(
            "rbee-keeper",
            format!("--bin-dir {} is not an absolute path", chosen_bin.display()),
        ));
    }
    let bin_dir = under(&root, &chosen_bin);
    // The units name the binaries by path: point them at where they went.
    let unit_text = |text: &str| -> String {
        if chosen_bin == default_bin {
            return text.to_owned();
        }
        let dir = format!("{}/", chosen_bin.display());
        text.replace("%h/.local/bin/", &dir)
            .replace("/usr/local/bin/", &dir)
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
            put(&dest, unit_text(content).as_bytes(), 0o644)?;
            done.push(format!("wrote   {}", dest.display()));
        }
        // Only a real install asks which systemd runs here; staging (--root) cannot know.
        if let Some(v) = systemd_version().filter(|v| a.root.is_none() && *v < 257) {
            let dest = root.join(PRE_257_RULE.0);
            put(&dest, PRE_257_RULE.1.as_bytes(), 0o644)?;
            done.push(format!(
                "wrote   {} (systemd {v} names no unit to polkit for transient units: \
                 this rule lets rbee start any transient unit; see the file)",
                dest.display()
            ));
        }
        put_once(
            &root.join("etc/rbee/hive.toml"),
            &default_hive_config(a.hive_port, "/etc/rbee/hive.toml"),
            &mut done,
        )?;
    } else {
        let config_home = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .unwrap_or_else(|| home.join(".config"));
        put_once(
            &under(&root, &config_home.join("rbee/config.toml")),
            &default_keeper_config(a.hive_port),
            &mut done,
        )?;
        let hive_config = config_home.join("rbee/hive.toml");
        put_once(
            &under(&root, &hive_config),
            &default_hive_config(a.hive_port, &hive_config.display().to_string()),
            &mut done,
        )?;
        let unit = under(&root, &config_home.join("systemd/user/rbee-hive.service"));
        put(&unit, unit_text(USER_UNIT).as_bytes(), 0o644)?;
        done.push(format!("wrote   {}", unit.display()));
        if a.root.is_none() && crate::local::user_manager_reachable() {
            let reloaded = std::process::Command::new("systemctl")
                .args(["--user", "daemon-reload"])
                .stdin(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if reloaded {
                done.push("reloaded your systemd user manager".into());
            }
        }
        let data = under(&root, &crate::paths::data_dir());
        std::fs::create_dir_all(&data).map_err(|e| fail(&data, e))?;
        done.push(format!("created {}", data.display()));
    }
    for d in &done {
        crate::say!("{d}");
    }
    if a.no_next_steps {
        return Ok(done);
    }
    crate::say!("✅ installed. Next:");
    if a.system {
        for step in [
            "systemd-sysusers                      # creates the rbee user",
            "systemd-tmpfiles --create rbee.conf   # /etc/rbee, /var/lib/rbee",
            "systemctl daemon-reload",
            "systemctl enable --now rbee-hive      # the hive, on 127.0.0.1:9200",
            "rbee-keeper run MODEL \"…\"",
        ] {
            eprintln!("    {step}");
        }
    } else {
        eprintln!("    make sure {} is on your PATH, then:", bin_dir.display());
        for step in [
            "rbee-keeper run MODEL \"…\"             # starts a hive when none runs",
            "systemctl --user enable --now rbee-hive  # or keep one running as a user service",
        ] {
            eprintln!("    {step}");
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keeper_config_written_is_valid_and_names_a_hive_port_other_than_the_default() {
        let parse = |port| -> crate::config::Config {
            toml::from_str(&default_keeper_config(port)).unwrap()
        };
        assert!(parse(9200).nodes.is_empty());
        let c = parse(9444);
        assert_eq!(
            c.nodes["localhost"].hive_url.as_deref(),
            Some("http://127.0.0.1:9444")
        );
    }
}
