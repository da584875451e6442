//! SSH port forwards to a node's loopback: how the keeper reaches a hive (and its workers)
//! that listen only on 127.0.0.1 there — the safer default, nothing exposed on the network.
//! Each forward is an `ssh -N -L` child of the keeper, closed when the command ends.

use std::net::TcpListener;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::report::Failure;
use crate::ssh::{Ssh, Target};

/// An open forward: `127.0.0.1:<local_port>` here reaches `127.0.0.1:<remote_port>` there.
pub(crate) struct Tunnel {
    child: Child,
    /// The port on this machine.
    pub local_port: u16,
}

impl Tunnel {
    /// Opens a forward through `ssh` and waits (at most 15 s) until it carries connections.
    pub(crate) fn open(
        ssh: &Ssh,
        node: &str,
        t: &Target,
        remote_port: u16,
    ) -> Result<Tunnel, Failure> {
        let local_port = TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| Failure::new("rbee-keeper", format!("no free local port: {e}")))?;
        let mut child = ssh
            .forward(t, local_port, remote_port)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Failure::new("rbee-keeper", format!("cannot run ssh: {e}")))?;
        let t0 = Instant::now();
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", local_port)).is_ok() {
                return Ok(Tunnel { child, local_port });
            }
            if let Ok(Some(_)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                let e = crate::ssh::classify(&err);
                return Err(crate::ssh::failure(node, t, &e).detail(format!(
                    "while forwarding to port {remote_port} on the node"
                )));
            }
            if t0.elapsed() > Duration::from_secs(15) {
                let _ = child.kill();
                return Err(Failure::new(
                    "ssh",
                    format!("the SSH port forward to {node} did not open within 15 s"),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
