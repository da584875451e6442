//! SSH through the system's OpenSSH client: `BatchMode` (never a password prompt), a
//! connect timeout, the node's key and port; the user's `~/.ssh/config`, `known_hosts` and
//! agent keep working. Failures are sorted into what a person can act on.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Seconds `ssh` waits for the TCP connection.
pub const CONNECT_TIMEOUT_SECS: u32 = 10;
/// Waits before each attempt of a connection check.
pub const BACKOFF_MS: [u64; 3] = [0, 200, 400];

/// Where to connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// User.
    pub user: String,
    /// Private key (else the agent and `~/.ssh/config` decide).
    pub key: Option<PathBuf>,
}

/// What went wrong, sorted by what to do about it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SshError {
    /// The key file is not there.
    #[error("the SSH key {0} does not exist")]
    KeyMissing(PathBuf),
    /// The key file can be read by others (OpenSSH refuses it).
    #[error("the SSH key {path} is readable by others (mode {mode:o}); OpenSSH refuses such keys")]
    KeyPermissions {
        /// The key.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
    /// The server refused the key.
    #[error("the server refused the key: {0}")]
    Auth(String),
    /// The server's host key is unknown or changed.
    #[error("the server's host key could not be verified: {0}")]
    HostKey(String),
    /// No connection (refused, timed out, unknown host).
    #[error("cannot connect: {0}")]
    Unreachable(String),
    /// The connection worked but the command failed.
    #[error("{0}")]
    Other(String),
}

impl SshError {
    /// What the user can do about it.
    pub fn suggestions(&self, t: &Target) -> Vec<String> {
        let key = t
            .key
            .as_ref()
            .map(|k| k.display().to_string())
            .unwrap_or_else(|| "~/.ssh/id_ed25519".into());
        match self {
            SshError::KeyMissing(p) => vec![
                format!("check the path, or create a key: ssh-keygen -t ed25519 -f {}", p.display()),
            ],
            SshError::KeyPermissions { path, .. } => {
                vec![format!("chmod 600 {}", path.display())]
            }
            SshError::Auth(_) => vec![
                format!(
                    "install the public key on the node: ssh-copy-id -i {key}.pub -p {} {}@{}",
                    t.port, t.user, t.host
                ),
                format!("check the key's permissions: chmod 600 {key}"),
                format!("try it by hand: ssh -i {key} -p {} {}@{} echo ok", t.port, t.user, t.host),
            ],
            SshError::HostKey(_) => vec![format!(
                "check the node's host key fingerprint, then: ssh-keyscan -p {} {} >> ~/.ssh/known_hosts",
                t.port, t.host
            )],
            SshError::Unreachable(_) => vec![
                format!("is the node up and sshd listening on port {}?", t.port),
                "check the host name and the network (firewall, VPN)".into(),
            ],
            SshError::Other(_) => vec![],
        }
    }

    /// Worth another attempt (the network), or not (keys, host keys).
    pub fn transient(&self) -> bool {
        matches!(self, SshError::Unreachable(_))
    }
}

/// Checks a key file before any connection: there, and private.
pub fn check_key(path: &Path) -> Result<(), SshError> {
    let meta = std::fs::metadata(path).map_err(|_| SshError::KeyMissing(path.to_path_buf()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SshError::KeyPermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Sorts ssh's stderr (exit status 255) into an error.
pub fn classify(stderr: &str) -> SshError {
    let text = stderr.trim().to_owned();
    let lower = text.to_ascii_lowercase();
    if lower.contains("permission denied") || lower.contains("too many authentication failures") {
        SshError::Auth(text)
    } else if lower.contains("host key verification failed")
        || lower.contains("remote host identification has changed")
    {
        SshError::HostKey(text)
    } else if lower.contains("unprotected private key") || lower.contains("bad permissions") {
        SshError::Auth(text)
    } else {
        SshError::Unreachable(text)
    }
}

/// The ssh client with the keeper's options.
#[derive(Debug, Clone, Default)]
pub struct Ssh {
    /// Extra `-o` options (from the config).
    pub options: Vec<String>,
}

impl Ssh {
    /// `ssh … user@host -- <remote>`.
    pub fn command(&self, t: &Target, remote: &str) -> Command {
        self.build(t, &[], Some(remote))
    }

    /// `ssh -N -L 127.0.0.1:<local>:127.0.0.1:<remote_port> … user@host`: a port forward to
    /// the node's loopback, and nothing else.
    pub fn forward(&self, t: &Target, local: u16, remote_port: u16) -> Command {
        let spec = format!("127.0.0.1:{local}:127.0.0.1:{remote_port}");
        let extra = [
            "-N",
            "-o",
            "ExitOnForwardFailure=yes",
            "-o",
            "ServerAliveInterval=15",
            "-L",
            &spec,
        ];
        self.build(t, &extra, None)
    }

    fn build(&self, t: &Target, extra: &[&str], remote: Option<&str>) -> Command {
        let mut c = Command::new("ssh");
        c.args(["-o", "BatchMode=yes"])
            .args(["-o", &format!("ConnectTimeout={CONNECT_TIMEOUT_SECS}")])
            .args(["-p", &t.port.to_string()]);
        if let Some(k) = &t.key {
            c.args(["-o", "IdentitiesOnly=yes", "-i"]).arg(k);
        }
        for o in &self.options {
            c.args(["-o", o]);
        }
        c.args(extra).arg(format!("{}@{}", t.user, t.host));
        if let Some(r) = remote {
            c.arg("--").arg(r);
        }
        c
    }

    /// Runs `remote`; its stdout, or the sorted failure.
    pub fn run(&self, t: &Target, remote: &str) -> Result<String, SshError> {
        let out = self
            .command(t, remote)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| {
                SshError::Other(format!("cannot run ssh: {e} (install openssh-client)"))
            })?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
            Some(255) | None => Err(classify(&stderr)),
            Some(c) => Err(SshError::Other(format!(
                "`{remote}` exited with status {c}: {}",
                stderr.trim()
            ))),
        }
    }

    /// An `echo` round trip: up to three attempts (waiting 0, 200, 400 ms before each),
    /// stopping at an error another attempt cannot fix. `attempt` hears about each one.
    pub fn check(
        &self,
        t: &Target,
        attempt: &mut dyn FnMut(usize, &Result<(), SshError>),
    ) -> Result<(), SshError> {
        if let Some(k) = &t.key {
            check_key(k)?;
        }
        let mut last = Err(SshError::Other("no attempt".into()));
        for (i, wait) in BACKOFF_MS.iter().enumerate() {
            std::thread::sleep(Duration::from_millis(*wait));
            last = match self.run(t, "echo rbee-ok") {
                Ok(out) if out.trim() == "rbee-ok" => Ok(()),
                Ok(out) => Err(SshError::Other(format!(
                    "the node answered {:?} instead of rbee-ok",
                    out.trim()
                ))),
                Err(e) => Err(e),
            };
            attempt(i + 1, &last);
            match &last {
                Ok(()) => return Ok(()),
                Err(e) if !e.transient() => break,
                Err(_) => {}
            }
        }
        last
    }
}

/// An SSH error as a [`Failure`].
pub fn failure(node: &str, t: &Target, e: &SshError) -> crate::report::Failure {
    let what = match e {
        SshError::KeyMissing(_) | SshError::KeyPermissions { .. } => "rbee-keeper",
        _ => "ssh",
    };
    crate::report::Failure::new(what, format!("cannot reach node {node}: {e}"))
        .detail(format!("{}@{}:{}", t.user, t.host, t.port))
        .suggest(e.suggestions(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_failures_are_sorted_by_what_to_do() {
        assert!(matches!(
            classify("root@127.0.0.1: Permission denied (publickey)."),
            SshError::Auth(_)
        ));
        assert!(matches!(
            classify("Host key verification failed."),
            SshError::HostKey(_)
        ));
        let e = classify("ssh: connect to host 127.0.0.1 port 1: Connection refused");
        assert!(matches!(e, SshError::Unreachable(_)) && e.transient());
    }

    #[test]
    fn the_command_never_takes_a_password_and_bounds_the_connect() {
        let ssh = Ssh {
            options: vec!["UserKnownHostsFile=/k".into()],
        };
        let t = Target {
            host: "node1".into(),
            port: 2222,
            user: "bee".into(),
            key: Some("/keys/id".into()),
        };
        let c = ssh.command(&t, "echo hi");
        let args: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let line = args.join(" ");
        assert!(
            line.starts_with("-o BatchMode=yes -o ConnectTimeout=10 -p 2222"),
            "{line}"
        );
        assert!(
            line.ends_with("-i /keys/id -o UserKnownHostsFile=/k bee@node1 -- echo hi"),
            "{line}"
        );
    }
}
