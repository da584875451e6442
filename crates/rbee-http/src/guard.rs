//! What a web page may make a browser do to a server on this machine. A page cannot read
//! answers from another origin, but it can send requests: to `localhost` directly, or to a
//! name of its own that it re-points at 127.0.0.1 (DNS rebinding). So, before anything else:
//!
//! - the `Host` header must name this machine: `localhost`, `*.localhost`, an IP address,
//!   the machine's hostname (and `<hostname>.local`), or a name in `allowed_hosts`. A server
//!   bound beyond loopback *with* a key answers any `Host` (clients use whatever name
//!   reaches it; the key is the guard).
//! - a state-changing request (`POST`, `DELETE`, `PUT`, `PATCH`) from a page — it carries an
//!   `Origin`, or `Sec-Fetch-Site: cross-site` — is refused unless the origin is allowed:
//!   listed in `cors_origins`, or the server's own (the origin's host and port are the
//!   request's `Host`). Browsers send `Origin` with every cross-origin POST, including the
//!   `text/plain` and form posts they send without a preflight; curl, the keeper and scripts
//!   send none and are not affected.

use std::net::IpAddr;

use crate::{Method, Request};
use rbee_types::{ApiError, ErrorCode};

/// The rules of one server.
#[derive(Debug, Clone)]
pub struct Guard {
    any_host: bool,
    hosts: Vec<String>,
    origins: Vec<String>,
}

impl Guard {
    /// The rules for a server bound to `bind`, with a key or not, the configured extra host
    /// names (`name` or `*.suffix`) and allowed browser origins.
    pub fn new(
        bind: IpAddr,
        keyed: bool,
        allowed_hosts: &[String],
        cors_origins: &[String],
    ) -> Guard {
        let mut hosts = vec!["localhost".to_owned(), "*.localhost".to_owned()];
        if let Some(h) = hostname() {
            hosts.push(format!("{h}.local"));
            hosts.push(h);
        }
        hosts.extend(allowed_hosts.iter().map(|h| h.to_ascii_lowercase()));
        Guard {
            any_host: keyed && !bind.is_loopback(),
            hosts,
            origins: cors_origins.to_vec(),
        }
    }

    /// Whether a `Host` header value (`name[:port]`, `[v6]:port`) names this machine.
    pub fn host_allowed(&self, host: &str) -> bool {
        if self.any_host {
            return true;
        }
        let name = host_name(host).to_ascii_lowercase();
        if name.parse::<IpAddr>().is_ok() {
            // An address cannot be rebound; reaching it is what the bind decides.
            return true;
        }
        let name = name.trim_end_matches('.');
        self.hosts.iter().any(|h| match h.strip_prefix("*.") {
            Some(suffix) => name == suffix || name.ends_with(&format!(".{suffix}")),
            None => h == name,
        })
    }

    /// Whether a page of `origin` may change state here (`host`: the request's `Host`).
    pub fn origin_allowed(&self, origin: &str, host: Option<&str>) -> bool {
        if crate::cors::matches(origin, &self.origins) {
            return true;
        }
        let own = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        matches!((own, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h) && self.host_allowed(h))
    }

    /// Checks a request against the rules; 403 `FORBIDDEN` saying which rule, otherwise.
    pub fn check(&self, request: &Request) -> Result<(), ApiError> {
        let host = value(request, "Host");
        if let Some(h) = &host {
            if !self.host_allowed(h) {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    "this server does not answer to that Host name (protection against DNS \
                     rebinding); use localhost or an IP address (a hive also answers to the \
                     names in its allowed_hosts setting)",
                )
                .detail("host", h.chars().take(100).collect::<String>()));
            }
        }
        let changes = matches!(
            request.method(),
            Method::Post | Method::Delete | Method::Put | Method::Patch
        );
        if !changes {
            return Ok(());
        }
        let cross_site = value(request, "Sec-Fetch-Site").is_some_and(|v| v == "cross-site");
        match value(request, "Origin") {
            Some(o) if self.origin_allowed(&o, host.as_deref()) => Ok(()),
            Some(o) => Err(ApiError::new(
                ErrorCode::Forbidden,
                "requests from web pages of other origins may not change anything here; \
                 list the page's origin in cors_origins to allow it",
            )
            .detail("origin", o.chars().take(100).collect::<String>())),
            None if cross_site => Err(ApiError::new(
                ErrorCode::Forbidden,
                "cross-site requests from web pages may not change anything here",
            )),
            None => Ok(()),
        }
    }
}

fn value(request: &Request, name: &'static str) -> Option<String> {
    request.header(name).map(str::to_owned)
}

/// `name` of `name:port`, `v6` of `[v6]:port`.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// The machine's hostname, lower case.
fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or
    // truncates, and the last byte is kept 0.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback(extra: &[&str], origins: &[&str]) -> Guard {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        Guard::new(IpAddr::from([127, 0, 0, 1]), false, &s(extra), &s(origins))
    }

    #[test]
    fn hosts_must_name_this_machine_unless_bound_wide_with_a_key() {
        let g = loopback(&["rbee.lan", "*.home.arpa"], &[]);
        for ok in [
            "localhost",
            "localhost:9200",
            "LOCALHOST.",
            "ui.localhost:3000",
            "127.0.0.1:9200",
            "[::1]:9200",
            "10.0.0.7",
            "rbee.lan:9200",
            "box.home.arpa",
        ] {
            assert!(g.host_allowed(ok), "{ok}");
        }
        if let Some(h) = hostname() {
            assert!(g.host_allowed(&format!("{h}:9200")));
        }
        for bad in [
            "attacker.example",
            "localhost.attacker.example",
            "rbee.lan.evil",
            "x",
        ] {
            assert!(!g.host_allowed(bad), "{bad}");
        }
        let wide = Guard::new(IpAddr::from([0, 0, 0, 0]), true, &[], &[]);
        assert!(wide.host_allowed("attacker.example"));
        let wide_no_key = Guard::new(IpAddr::from([0, 0, 0, 0]), false, &[], &[]);
        assert!(!wide_no_key.host_allowed("attacker.example"));
    }

    #[test]
    fn origins_are_allowed_when_listed_or_the_servers_own() {
        let g = loopback(&[], &["http://localhost:3000"]);
        assert!(g.origin_allowed("http://localhost:3000", Some("127.0.0.1:9200")));
        assert!(g.origin_allowed("http://127.0.0.1:9200", Some("127.0.0.1:9200")));
        assert!(!g.origin_allowed("http://127.0.0.1:9300", Some("127.0.0.1:9200")));
        assert!(!g.origin_allowed("https://evil.example", Some("127.0.0.1:9200")));
        assert!(!g.origin_allowed("null", Some("127.0.0.1:9200")));
        // A rebound name is not the server's own even when Host and Origin agree.
        assert!(!g.origin_allowed("http://evil.example:9200", Some("evil.example:9200")));
    }
}
