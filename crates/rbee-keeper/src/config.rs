//! The keeper's config file (TOML; see [`crate::paths::config_file`]).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How SSH is run.
    pub ssh: SshConfig,
    /// Per node: `[nodes.<name>] api_key = "…"`.
    pub nodes: BTreeMap<String, NodeConfig>,
    /// Where `setup install` puts rbee on nodes.
    pub remote: RemoteConfig,
    /// What commands use when not told.
    pub defaults: Defaults,
}

/// `[defaults]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Defaults {
    /// The node of commands given no `--node` (else `localhost`).
    pub node: Option<String>,
    /// The backend of `infer` given no `--backend` (else `cpu`).
    pub backend: Option<String>,
}

impl Config {
    /// `[defaults] backend`, checked: the backend of commands given no `--backend`.
    pub(crate) fn default_backend(
        &self,
    ) -> Result<Option<rbee_types::Backend>, crate::report::Failure> {
        let Some(b) = &self.defaults.backend else {
            return Ok(None);
        };
        b.parse().map(Some).map_err(|_| {
            crate::report::Failure::new(
                "rbee-keeper",
                format!("unknown backend {b:?} ([defaults] backend in the config)"),
            )
            .detail("accepted: cpu, cuda, metal")
            .suggest(["e.g. --backend cuda --device 0".to_string()])
        })
    }
}

/// `[remote]`: paths on nodes (`~/` is the SSH user's home there).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteConfig {
    /// Where `setup install` installs the binaries (default `~/.local/bin`).
    pub binary_path: String,
    /// The checkout a node gets when `add-node` is not given `--install-path` (default
    /// `~/.local/share/rbee/src`).
    pub git_repo_dir: String,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        RemoteConfig {
            binary_path: "~/.local/bin".into(),
            git_repo_dir: "~/.local/share/rbee/src".into(),
        }
    }
}

/// `[ssh]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SshConfig {
    /// Extra `-o` options for every ssh call (`"UserKnownHostsFile=/path"`); the user's
    /// own `~/.ssh/config` and agent apply as well.
    pub options: Vec<String>,
}

/// `[nodes.<name>]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// The hive's API key on that node.
    pub api_key: Option<String>,
    /// The hive's URL, when not `http://<ssh_host>:<hive_port>` (for `localhost`: where
    /// the local hive listens, default `http://127.0.0.1:9200`).
    pub hive_url: Option<String>,
}

impl Config {
    /// `--node`, else `[defaults] node`, else `localhost`.
    pub fn node_or_default(&self, given: Option<String>) -> String {
        given
            .or_else(|| self.defaults.node.clone())
            .unwrap_or_else(|| "localhost".into())
    }

    /// Reads the config file, if there is one.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read the config {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))
    }
}
