//! A real OpenSSH server on loopback for tests: its own host key, config, authorized key
//! and port, started as a child of the test (needs root and `/usr/sbin/sshd`;
//! `scripts/setup` installs it without starting the system's own).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::model::TempDir;
use crate::process::{free_port, wait_for_port, ChildGuard};

/// The server binary.
pub const SSHD: &str = "/usr/sbin/sshd";

/// A running sshd; stopped on drop.
pub struct Sshd {
    _child: ChildGuard,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// A private key it accepts (for the user running the test).
    pub client_key: PathBuf,
    /// A private key it refuses.
    pub wrong_key: PathBuf,
    /// A `known_hosts` file with its host key.
    pub known_hosts: PathBuf,
    /// Its files (keys, config, log).
    pub dir: TempDir,
}

/// Writes a new ed25519 key pair without a passphrase: `path` and `path.pub`.
pub fn keygen(path: &Path) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "rbee-test", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen runs");
    assert!(st.success(), "ssh-keygen failed");
}

impl Sshd {
    /// Starts one, or prints why the calling test skips (fails it under
    /// `RBEE_TEST_STRICT`) and returns `None`.
    pub fn start_or_skip() -> Option<Sshd> {
        crate::skip_unless!(
            Path::new(SSHD).is_file(),
            "{SSHD} is not installed (scripts/setup installs openssh-server)"
        );
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        crate::skip_unless!(root, "sshd needs root to run here");
        Some(Sshd::start())
    }

    fn start() -> Sshd {
        let dir = TempDir::new("sshd");
        let host_key = dir.join("host_ed25519");
        let client_key = dir.join("client_ed25519");
        let wrong_key = dir.join("wrong_ed25519");
        for k in [&host_key, &client_key, &wrong_key] {
            keygen(k);
        }
        let authorized = dir.join("authorized_keys");
        std::fs::copy(client_key.with_extension("pub"), &authorized).unwrap();
        let port = free_port();
        let host_pub = std::fs::read_to_string(host_key.with_extension("pub")).unwrap();
        let known_hosts = dir.join("known_hosts");
        let host_pub: Vec<&str> = host_pub.split_whitespace().take(2).collect();
        std::fs::write(
            &known_hosts,
            format!("[127.0.0.1]:{port} {}\n", host_pub.join(" ")),
        )
        .unwrap();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                 PermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\nLogLevel VERBOSE\n\
                 PermitUserEnvironment yes\n",
                host_key.display(),
                dir.join("sshd.pid").display(),
                authorized.display(),
            ),
        )
        .unwrap();
        // Privilege separation wants this directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let log = std::fs::File::create(dir.join("sshd.log")).unwrap();
        let child = ChildGuard::spawn(
            Command::new(SSHD)
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        );
        assert!(
            wait_for_port(port, Duration::from_secs(10)),
            "sshd did not listen on {port}: {}",
            std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default()
        );
        Sshd {
            _child: child,
            port,
            client_key,
            wrong_key,
            known_hosts,
            dir,
        }
    }

    /// The user tests log in as (the one running them).
    pub fn user(&self) -> String {
        std::env::var("USER").unwrap_or_else(|_| "root".into())
    }

    /// Sets the environment of the next logins with the accepted key (an `environment=`
    /// option on its `authorized_keys` line, which sshd reads at each login): what a login
    /// on a real node gets from its profile and `pam_systemd` — `HOME`, `PATH`,
    /// `XDG_RUNTIME_DIR`.
    pub fn login_env(&self, vars: &[(&str, String)]) {
        let key = std::fs::read_to_string(self.client_key.with_extension("pub")).unwrap();
        let options: Vec<String> = vars
            .iter()
            .map(|(k, v)| {
                assert!(!v.contains('"'), "{k}={v}: no quotes in login variables");
                format!("environment=\"{k}={v}\"")
            })
            .collect();
        let line = if options.is_empty() {
            key
        } else {
            format!("{} {key}", options.join(","))
        };
        std::fs::write(self.dir.join("authorized_keys"), line).unwrap();
    }

    /// What the server logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }
}
