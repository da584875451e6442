//! `rbee-keeper setup …`: register, change, list and remove nodes. A node is saved only
//! after an SSH round trip to it worked.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use rbee_types::now_unix;

use crate::registry::{Node, Registry};
use crate::report::{table, Failure};
use crate::ssh::{Ssh, BACKOFF_MS};

/// The `setup` commands.
#[derive(Debug, Subcommand)]
pub enum SetupCommand {
    /// Register a node: checks the key, then an SSH round trip (3 attempts), then saves it.
    AddNode(NodeArgs),
    /// Change a registered node (connection changes are checked over SSH first).
    UpdateNode(UpdateArgs),
    /// List registered nodes.
    ListNodes,
    /// Check every layer between this keeper and a node's models, one line per check with
    /// its figure: SSH (key, latency, the rbee-hive binary and version), then the hive
    /// (API, version, backends, memory and disk). Stops at the first failure with its fix.
    Check {
        /// The node [default: the config's `[defaults] node`, else localhost].
        #[arg(long)]
        node: Option<String>,
    },
    /// Forget a node (nothing on the node is touched).
    RemoveNode {
        /// The node's name.
        #[arg(long)]
        name: String,
    },
    /// Build and install rbee on a registered node over SSH: clone (or fetch) its
    /// repository and branch into its install path, `cargo build --release` there, install
    /// the binaries and the hive's user unit; the node's output is streamed.
    Install(crate::deploy::InstallNodeArgs),
}

/// How to reach a node.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// A short name for the node (letters, digits, `-`, `_`, `.`).
    #[arg(long)]
    pub name: String,
    /// Host name or address to SSH to.
    #[arg(long)]
    pub ssh_host: String,
    /// SSH port.
    #[arg(long, default_value_t = 22)]
    pub ssh_port: u16,
    /// SSH user.
    #[arg(long)]
    pub ssh_user: String,
    /// Private key (must be chmod 600).
    #[arg(long, value_name = "PATH")]
    pub ssh_key: PathBuf,
    /// Where `setup install` clones rbee from.
    #[arg(long, default_value = "https://github.com/rbee-project/rbee.git")]
    pub git_repo: String,
    /// Which branch.
    #[arg(long, default_value = "main")]
    pub git_branch: String,
    /// Where rbee's checkout lives on the node [default: `[remote] git_repo_dir` of the
    /// config, else ~/.local/share/rbee/src].
    #[arg(long)]
    pub install_path: Option<String>,
    /// The hive's port on the node.
    #[arg(long, default_value_t = 9200)]
    pub hive_port: u16,
    /// How to reach the hive: `ssh` (a port forward to the node's loopback, where the hive
    /// listens by default) or `direct` (HTTP to ssh-host:hive-port; needs an API key or a
    /// trusted network).
    #[arg(long, default_value = "ssh", value_parser = ["ssh", "direct"])]
    pub hive_access: String,
}

/// What to change on a node.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The node's name.
    #[arg(long)]
    pub name: String,
    /// New host.
    #[arg(long)]
    pub ssh_host: Option<String>,
    /// New port.
    #[arg(long)]
    pub ssh_port: Option<u16>,
    /// New user.
    #[arg(long)]
    pub ssh_user: Option<String>,
    /// New key.
    #[arg(long, value_name = "PATH")]
    pub ssh_key: Option<PathBuf>,
    /// New repository.
    #[arg(long)]
    pub git_repo: Option<String>,
    /// New branch.
    #[arg(long)]
    pub git_branch: Option<String>,
    /// New install path.
    #[arg(long)]
    pub install_path: Option<String>,
    /// New hive port.
    #[arg(long)]
    pub hive_port: Option<u16>,
    /// New hive access (`ssh` or `direct`).
    #[arg(long, value_parser = ["ssh", "direct"])]
    pub hive_access: Option<String>,
}

fn keeper(msg: impl Into<String>) -> Failure {
    Failure::new("rbee-keeper", msg)
}

/// Checks names before anything else: nothing that could be read as an ssh option or
/// break a command line.
fn check_names(name: &str, host: &str, user: &str) -> Result<(), Failure> {
    let ok_name = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !ok_name {
        return Err(keeper(format!("{name:?} is not a node name"))
            .detail(
                "use letters, digits, '-', '_' and '.', up to 63, starting with a letter or digit",
            )
            .suggest(["e.g. --name workstation".to_string()]));
    }
    let ok_host = !host.is_empty()
        && host.len() <= 253
        && !host.starts_with('-')
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]_".contains(c));
    if !ok_host {
        return Err(keeper(format!("{host:?} is not a host name or address"))
            .suggest(["e.g. --ssh-host workstation.lan or --ssh-host 192.168.1.20".to_string()]));
    }
    let ok_user = !user.is_empty()
        && user.len() <= 32
        && !user.starts_with('-')
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !ok_user {
        return Err(keeper(format!("{user:?} is not a user name"))
            .suggest(["e.g. --ssh-user bee".to_string()]));
    }
    Ok(())
}

/// The SSH round trip, each attempt shown on stderr.
fn check_ssh(ssh: &Ssh, n: &Node) -> Result<(), Failure> {
    let t = n.ssh_target();
    crate::say!(
        "🔌 checking SSH to {}@{}:{} with {}",
        t.user,
        t.host,
        t.port,
        n.ssh_key_path.display()
    );
    let result = ssh.check(&t, &mut |i, r| match r {
        Ok(()) => crate::say!("  attempt {i}/{}: ok", BACKOFF_MS.len()),
        Err(e) => crate::say!("  attempt {i}/{}: {e}", BACKOFF_MS.len()),
    });
    result.map_err(|e| crate::ssh::failure(&n.node_name, &t, &e))
}

/// Runs one `setup` command.
pub fn run(
    cmd: SetupCommand,
    json: bool,
    cfg: &crate::config::Config,
    reg: &mut Registry,
    ssh: &Ssh,
) -> Result<(), Failure> {
    let db = |e: rbee_sqlite::DbError| keeper(e.to_string());
    match cmd {
        SetupCommand::AddNode(a) => {
            check_names(&a.name, &a.ssh_host, &a.ssh_user)?;
            if reg.get(&a.name).map_err(db)?.is_some() {
                return Err(
                    keeper(format!("a node named {} is registered already", a.name)).suggest([
                        format!(
                            "change it: rbee-keeper setup update-node --name {} --ssh-host …",
                            a.name
                        ),
                        format!(
                            "or remove it first: rbee-keeper setup remove-node --name {}",
                            a.name
                        ),
                    ]),
                );
            }
            let mut node = Node {
                node_name: a.name,
                ssh_host: a.ssh_host,
                ssh_port: a.ssh_port,
                ssh_user: a.ssh_user,
                ssh_key_path: absolute(a.ssh_key),
                git_repo_url: a.git_repo,
                git_branch: a.git_branch,
                install_path: a
                    .install_path
                    .unwrap_or_else(|| cfg.remote.git_repo_dir.clone()),
                hive_port: a.hive_port,
                last_connected_unix: None,
                status: "unknown".into(),
                hive_access: a.hive_access,
            };
            check_ssh(ssh, &node)?;
            node.last_connected_unix = Some(now_unix());
            node.status = "reachable".into();
            if !reg.add(&node).map_err(db)? {
                return Err(keeper(format!(
                    "a node named {} was registered meanwhile",
                    node.node_name
                )));
            }
            crate::say!("✅ node {} registered", node.node_name);
            if json {
                crate::report::print_json(&node);
            }
            Ok(())
        }
        SetupCommand::UpdateNode(u) => {
            let Some(mut n) = reg.get(&u.name).map_err(db)? else {
                return Err(crate::registry::not_registered(&u.name));
            };
            let reconnect = u.ssh_host.is_some()
                || u.ssh_port.is_some()
                || u.ssh_user.is_some()
                || u.ssh_key.is_some();
            n.ssh_host = u.ssh_host.unwrap_or(n.ssh_host);
            n.ssh_port = u.ssh_port.unwrap_or(n.ssh_port);
            n.ssh_user = u.ssh_user.unwrap_or(n.ssh_user);
            n.ssh_key_path = u.ssh_key.map(absolute).unwrap_or(n.ssh_key_path);
            n.git_repo_url = u.git_repo.unwrap_or(n.git_repo_url);
            n.git_branch = u.git_branch.unwrap_or(n.git_branch);
            n.install_path = u.install_path.unwrap_or(n.install_path);
            n.hive_port = u.hive_port.unwrap_or(n.hive_port);
            n.hive_access = u.hive_access.unwrap_or(n.hive_access);
            check_names(&n.node_name, &n.ssh_host, &n.ssh_user)?;
            if reconnect {
                check_ssh(ssh, &n)?;
                n.last_connected_unix = Some(now_unix());
                n.status = "reachable".into();
            }
            reg.update(&n).map_err(db)?;
            crate::say!("✅ node {} updated", n.node_name);
            if json {
                crate::report::print_json(&n);
            }
            Ok(())
        }
        SetupCommand::ListNodes => {
            let nodes = reg.list().map_err(db)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&nodes).unwrap_or_default()
                );
                return Ok(());
            }
            if nodes.is_empty() {
                crate::say!("no nodes registered; add one with: rbee-keeper setup add-node --name … --ssh-host … --ssh-user … --ssh-key …");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = nodes
                .iter()
                .map(|n| {
                    vec![
                        n.node_name.clone(),
                        format!("{}@{}:{}", n.ssh_user, n.ssh_host, n.ssh_port),
                        n.status.clone(),
                        n.last_connected_unix
                            .map(when)
                            .unwrap_or_else(|| "never".into()),
                        n.install_path.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &["NAME", "HOST", "STATUS", "LAST CONNECTED", "INSTALL PATH"],
                    &rows
                )
            );
            Ok(())
        }
        SetupCommand::Check { node } => {
            crate::check::run(&cfg.node_or_default(node), json, cfg, reg)
        }
        SetupCommand::Install(a) => {
            let commit = crate::deploy::run(&a, cfg, reg)?;
            if json {
                crate::report::print_json(&serde_json::json!({
                    "node": a.node,
                    "commit": commit,
                    "binary_path": cfg.remote.binary_path,
                }));
            }
            Ok(())
        }
        SetupCommand::RemoveNode { name } => {
            if !reg.remove(&name).map_err(db)? {
                return Err(crate::registry::not_registered(&name));
            }
            crate::say!("✅ node {name} removed from the registry");
            if json {
                crate::report::print_json(&serde_json::json!({ "removed": name }));
            }
            Ok(())
        }
    }
}

fn absolute(p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        p
    } else {
        std::env::current_dir().map(|d| d.join(&p)).unwrap_or(p)
    }
}

/// `12 s ago`, `5 min ago`, `3 h ago`, `2 d ago`.
/// `2026-12-04 05:40 (3 min ago)`: the local time, then how long ago.
fn when(t: u64) -> String {
    let s = now_unix().saturating_sub(t);
    let ago = match s {
        0..=59 => format!("{s} s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=86_399 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    };
    format!("{} ({ago})", local_time(t))
}

/// `YYYY-MM-DD HH:MM` in the local time zone (the C library's, which reads `TZ`).
fn local_time(t: u64) -> String {
    let secs = t as libc::time_t;
    // SAFETY: localtime_r only writes the `tm` it is given.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&secs, &mut tm).is_null() {
            return format!("@{t}");
        }
        tm
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_local_and_absolute() {
        std::env::set_var("TZ", "UTC");
        assert_eq!(local_time(1_796_360_000), "2026-12-04 04:53");
        assert!(when(now_unix() - 120).ends_with("(2 min ago)"));
    }

    #[test]
    fn names_that_could_reach_ssh_as_options_are_refused() {
        assert!(check_names("workstation", "192.168.1.2", "bee").is_ok());
        assert!(check_names("gpu-1.lan", "[::1]", "bee_2").is_ok());
        for (n, h, u) in [
            ("", "h", "u"),
            ("-x", "h", "u"),
            ("a b", "h", "u"),
            ("n", "-oProxyCommand=x", "u"),
            ("n", "h;rm", "u"),
            ("n", "h", "-l"),
            ("n", "h", "u@x"),
        ] {
            assert!(check_names(n, h, u).is_err(), "{n:?} {h:?} {u:?}");
        }
    }
}
