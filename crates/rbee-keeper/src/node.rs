//! Reaching a node's hive: the local one over loopback, a remote one over HTTP (`direct`)
//! or through an SSH port forward to the node's loopback (`ssh`, the default). Workers are
//! reached through their hive only.

use crate::config::Config;
use crate::registry::Registry;
use crate::report::Failure;
use crate::ssh::Ssh;
use crate::tunnel::Tunnel;
use rbee_client::HiveClient;

/// An open way to one node; its tunnels close when it is dropped.
pub struct Conn {
    /// The node's name.
    pub node: String,
    /// Its hive.
    pub hive: HiveClient,
    /// Whether it is this machine (the keeper may start its hive).
    pub local: bool,
    /// The forward to the hive, when the node is reached over SSH (closed when dropped).
    _tunnel: Option<Tunnel>,
}

impl Conn {
    /// Opens the way to `node`: `localhost` (no setup), or a registered node.
    pub fn open(node: &str, cfg: &Config, reg: &Registry) -> Result<Conn, Failure> {
        let node_cfg = cfg.nodes.get(node);
        let key = node_cfg.and_then(|n| n.api_key.clone());
        let configured_url = node_cfg.and_then(|n| n.hive_url.clone());
        if node == "localhost" {
            let url = configured_url.unwrap_or_else(|| "http://127.0.0.1:9200".into());
            return Ok(Conn::plain(node, HiveClient::new(&url, key), true));
        }
        let n = reg
            .get(node)
            .map_err(|e| Failure::new("rbee-keeper", e.to_string()))?
            .ok_or_else(|| crate::registry::not_registered(node))?;
        if let Some(url) = configured_url {
            return Ok(Conn::plain(node, HiveClient::new(&url, key), false));
        }
        if n.hive_access == "direct" {
            let url = format!("http://{}:{}", n.ssh_host, n.hive_port);
            return Ok(Conn::plain(node, HiveClient::new(&url, key), false));
        }
        let ssh = Ssh {
            options: cfg.ssh.options.clone(),
        };
        let target = n.ssh_target();
        let t = Tunnel::open(&ssh, node, &target, n.hive_port)?;
        let url = format!("http://127.0.0.1:{}", t.local_port);
        Ok(Conn {
            node: node.to_owned(),
            hive: HiveClient::new(&url, key),
            local: false,
            _tunnel: Some(t),
        })
    }

    fn plain(node: &str, hive: HiveClient, local: bool) -> Conn {
        Conn {
            node: node.to_owned(),
            hive,
            local,
            _tunnel: None,
        }
    }
}

/// A connection is used as its hive's client.
impl std::ops::Deref for Conn {
    type Target = HiveClient;

    fn deref(&self) -> &HiveClient {
        &self.hive
    }
}
