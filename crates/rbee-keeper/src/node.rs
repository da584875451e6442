//! Reaching a node's hive and its workers: the local hive over loopback, a remote one over
//! HTTP (`direct`) or through SSH port forwards to the node's loopback (`ssh`, the default).

use std::sync::Mutex;

use crate::config::Config;
use crate::registry::Registry;
use crate::report::Failure;
use crate::ssh::{Ssh, Target};
use crate::tunnel::Tunnel;
use rbee_client::{HiveClient, WorkerClient};

/// An open way to one node; its tunnels close when it is dropped.
pub struct Conn {
    /// The node's name.
    pub node: String,
    /// Its hive.
    pub hive: HiveClient,
    /// Whether it is this machine (the keeper may start its hive).
    pub local: bool,
    /// SSH route, when the node is reached through forwards.
    route: Option<(Ssh, Target)>,
    tunnels: Mutex<Vec<Tunnel>>,
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
            route: Some((ssh, target)),
            tunnels: Mutex::new(vec![t]),
        })
    }

    fn plain(node: &str, hive: HiveClient, local: bool) -> Conn {
        Conn {
            node: node.to_owned(),
            hive,
            local,
            route: None,
            tunnels: Mutex::new(vec![]),
        }
    }

    /// A client for a worker at `url` (as its hive reports it); through its own forward
    /// when the node is reached over SSH (workers listen on the node's loopback too).
    pub fn worker(&self, url: &str, key: Option<String>) -> Result<WorkerClient, Failure> {
        let Some((ssh, target)) = &self.route else {
            return Ok(WorkerClient::new(url, key));
        };
        let port: u16 = url
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .ok_or_else(|| {
                Failure::new(
                    "rbee-keeper",
                    format!("the hive reported a worker URL without a port: {url}"),
                )
            })?;
        let t = Tunnel::open(ssh, &self.node, target, port)?;
        let local = format!("http://127.0.0.1:{}", t.local_port);
        self.tunnels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(t);
        Ok(WorkerClient::new(&local, key))
    }
}

/// A connection is used as its hive's client.
impl std::ops::Deref for Conn {
    type Target = HiveClient;

    fn deref(&self) -> &HiveClient {
        &self.hive
    }
}
