//! Where the keeper keeps things (XDG base directories).

use std::path::PathBuf;

fn home() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/".into()))
}

fn xdg(var: &str, fallback: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => PathBuf::from(v).join("rbee"),
        _ => home().join(fallback).join("rbee"),
    }
}

/// `$XDG_DATA_HOME/rbee`, else `~/.local/share/rbee`: the node registry.
pub fn data_dir() -> PathBuf {
    xdg("XDG_DATA_HOME", ".local/share")
}

/// The registry database.
pub fn registry_db() -> PathBuf {
    data_dir().join("beehives.db")
}

/// The config file: `$RBEE_CONFIG`, else `$XDG_CONFIG_HOME/rbee/config.toml`, else
/// `/etc/rbee/config.toml` (the first that exists; `None` when none does).
pub fn config_file() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RBEE_CONFIG") {
        return Some(PathBuf::from(p));
    }
    [
        xdg("XDG_CONFIG_HOME", ".config").join("config.toml"),
        PathBuf::from("/etc/rbee/config.toml"),
    ]
    .into_iter()
    .find(|p| p.is_file())
}
