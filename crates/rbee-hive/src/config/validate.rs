//! Values that parse but cannot work, refused with the reason and the next step.

use super::{Config, ConfigError};

impl Config {
    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: String| Err(ConfigError(m));
        if self.port == 0 {
            return err("port must be between 1 and 65535".into());
        }
        let p = self.worker_ports;
        if p.start == 0 || p.start > p.end {
            return err(format!("worker_ports {p} is empty"));
        }
        if (p.start..=p.end).contains(&self.port) {
            return err(format!(
                "worker_ports {p} contains the hive's own port {}; choose a range without it",
                self.port
            ));
        }
        if self.health_interval_secs == 0 || self.health_interval_secs > 3600 {
            return err(format!(
                "health_interval_secs must be between 1 and 3600, not {}",
                self.health_interval_secs
            ));
        }
        if self.load_timeout_secs == 0 || self.stop_timeout_secs == 0 {
            return err("load_timeout_secs and stop_timeout_secs must be at least 1".into());
        }
        if !self.state_dir.is_absolute() {
            return err(format!(
                "state_dir must be an absolute path, not {}",
                self.state_dir.display()
            ));
        }
        if self.download_stall_secs == 0 || !(1..=20).contains(&self.download_attempts) {
            return err(
                "download_stall_secs must be at least 1 and download_attempts between 1 and 20"
                    .into(),
            );
        }
        for (name, path) in [
            ("api_key_file", &self.api_key_file),
            ("worker_binary", &self.worker_binary),
            ("models_dir", &self.models_dir),
        ] {
            if let Some(path) = path {
                if !path.is_absolute() {
                    return err(format!(
                        "{name} must be an absolute path, not {}",
                        path.display()
                    ));
                }
            }
        }
        if let Some(src) = &self.worker_source {
            rbee_binaries::source::validate(src).map_err(ConfigError)?;
        }
        if self.provision_sync && self.provision.is_empty() {
            return err(
                "provision_sync = true with an empty provision list would remove every model in \
                 the catalogue; list the models to keep in provision, or set provision_sync = \
                 false"
                    .into(),
            );
        }
        if !(1..=10_000).contains(&self.queue_max) || self.queue_timeout_secs == 0 {
            return err(format!(
                "queue_max must be between 1 and 10000 (not {}) and queue_timeout_secs at least 1",
                self.queue_max
            ));
        }
        for o in &self.cors_origins {
            rbee_http::cors::check_origin(o)
                .map_err(|e| ConfigError(format!("cors_origins: {e}")))?;
        }
        if let Some(d) = self.model_dirs.iter().find(|d| !d.is_absolute()) {
            return err(format!(
                "model_dirs: {} is not an absolute path",
                d.display()
            ));
        }
        for h in &self.allowed_hosts {
            let name = h.strip_prefix("*.").unwrap_or(h);
            let plain = !name.is_empty()
                && name.len() <= 253
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !plain {
                return err(format!(
                    "allowed_hosts: {h:?} is not a host name (e.g. \"rbee.lan\" or \"*.home.arpa\")"
                ));
            }
        }
        for (name, target) in &self.aliases {
            check_alias(name, target)
                .map_err(|why| ConfigError(format!("[aliases] {name:?}: {why}")))?;
        }
        Ok(())
    }
}

/// An alias is a plain name (not itself a reference) for a model id or a reference.
fn check_alias(name: &str, target: &str) -> Result<(), String> {
    let plain = |s: &str| {
        !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:-/@".contains(&b))
    };
    if !plain(name) || name.parse::<rbee_types::ModelRef>().is_ok() {
        return Err(
            "an alias is letters, digits and . _ : - / @ (at most 128), and not a model reference"
                .into(),
        );
    }
    if target.starts_with("hf:") || target.starts_with("file:") {
        return target
            .parse::<rbee_types::ModelRef>()
            .map(|_| ())
            .map_err(|e| e.to_string());
    }
    if plain(target) {
        Ok(())
    } else {
        Err(format!(
            "{target:?} is neither a model id (as GET /v1/models lists them) nor a reference"
        ))
    }
}
