//! Reaching a node's hive: the local one over loopback, a remote one over HTTP (`direct`)
//! or through an SSH port forward to the node's loopback (`ssh`, the default). Workers are
//! reached through their hive only.

use crate::config::Config;
use crate::registry::Registry;
use crate::report::Failure;
use crate::ssh::Ssh;
use crate::tunnel::Tunnel;
use std::time::Duration;

use rbee_client::{ClientError, HiveClient};
use rbee_types::hive::HiveHealth;

/// How long to wait before each attempt to reach a hive.
const ATTEMPT_WAITS_MS: [u64; 3] = [0, 200, 400];
/// How many attempts reach a hive.
pub(crate) const ATTEMPTS: usize = ATTEMPT_WAITS_MS.len();

/// `host:port` of a URL.
fn address_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.trim_end_matches('/')
}

/// An open way to one node; its tunnels close when it is dropped.
pub(crate) struct Conn {
    /// The node's name.
    pub node: String,
    /// Its hive.
    pub hive: HiveClient,
    /// Whether it is this machine (the keeper may start its hive).
    pub local: bool,
    /// The hive's address as the user knows it (`gpu1.lan:9200 (through SSH)`).
    pub address: String,
    /// The forward to the hive, when the node is reached over SSH (closed when dropped).
    _tunnel: Option<Tunnel>,
}

impl Conn {
    /// Opens the way to `node`: `localhost` (no setup), or a registered node.
    pub(crate) fn open(node: &str, cfg: &Config, reg: &Registry) -> Result<Conn, Failure> {
        let node_cfg = cfg.nodes.get(node);
        let key = node_cfg.and_then(|n| n.api_key.clone());
        let configured_url = node_cfg.and_then(|n| n.hive_url.clone());
        let client =
            |url: &str, address: &str| HiveClient::new(url, key.clone()).at_node(node, address);
        if node == "localhost" {
            let url = configured_url.unwrap_or_else(|| "http://127.0.0.1:9200".into());
            let address = address_of(&url);
            return Ok(Conn::plain(node, client(&url, address), address, true));
        }
        let n = reg
            .get(node)
            .map_err(|e| Failure::new("rbee-keeper", e.to_string()))?
            .ok_or_else(|| crate::registry::not_registered(node))?;
        if let Some(url) = configured_url {
            let address = address_of(&url);
            return Ok(Conn::plain(node, client(&url, address), address, false));
        }
        let address = format!("{}:{}", n.ssh_host, n.hive_port);
        if n.hive_access == "direct" {
            let url = format!("http://{address}");
            return Ok(Conn::plain(node, client(&url, &address), &address, false));
        }
        let ssh = Ssh {
            options: cfg.ssh.options.clone(),
        };
        let target = n.ssh_target();
        let t = Tunnel::open(&ssh, node, &target, n.hive_port)?;
        let url = format!("http://127.0.0.1:{}", t.local_port);
        let address = format!("{address} (through SSH)");
        Ok(Conn {
            node: node.to_owned(),
            hive: client(&url, &address),
            local: false,
            address,
            _tunnel: Some(t),
        })
    }

    /// The hive's health, asked up to [`ATTEMPTS`] times (each at most 10 s, waiting
    /// 0, 200 and 400 ms before them) while nothing answers; an answer that is an error,
    /// or the last attempt's failure, is returned as it is.
    /// An answer counts as a contact: the node's `last_connected` moves.
    pub(crate) fn reach(&self, reg: &Registry) -> Result<HiveHealth, ClientError> {
        let probe = self.hive.with_timeout(Duration::from_secs(10));
        let mut last = None;
        for wait in ATTEMPT_WAITS_MS {
            std::thread::sleep(Duration::from_millis(wait));
            match probe.health() {
                Err(e) if e.is_unreachable() => last = Some(e),
                Ok(h) => {
                    if let Err(e) = reg.touch(&self.node) {
                        crate::say!("⚠️  the contact with {} is not recorded: {e}", self.node);
                    }
                    return Ok(h);
                }
                other => return other,
            }
        }
        Err(last.expect("at least one attempt"))
    }

    fn plain(node: &str, hive: HiveClient, address: &str, local: bool) -> Conn {
        Conn {
            node: node.to_owned(),
            hive,
            local,
            address: address.to_owned(),
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
