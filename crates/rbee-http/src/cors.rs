//! Cross-origin requests from browser UIs: the origin a request came from, once the server
//! has allowed it, for the answer's `Access-Control-Allow-Origin`. Each request runs on its
//! own thread, so the allowed origin is kept per thread and every response this crate
//! builds (JSON, errors, SSE) carries it; a server sets it at the start of each request.

use std::cell::RefCell;

use crate::{header, Header, Response};

thread_local! {
    static ALLOWED: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Sets (or clears) the allowed origin of the request this thread handles.
pub fn allow(origin: Option<&str>) {
    ALLOWED.with(|a| *a.borrow_mut() = origin.map(str::to_owned));
}

/// The allowed origin of this thread's request, if any.
pub fn allowed() -> Option<String> {
    ALLOWED.with(|a| a.borrow().clone())
}

/// The headers an answer to an allowed origin carries (none otherwise).
pub fn headers() -> Vec<(String, String)> {
    match allowed() {
        Some(o) => vec![
            ("Access-Control-Allow-Origin".into(), o),
            ("Vary".into(), "Origin".into()),
        ],
        None => vec![],
    }
}

/// `resp` with this request's CORS headers.
pub fn decorate(mut resp: Response) -> Response {
    for (k, v) in headers() {
        resp = resp.with_header(header(&k, &v));
    }
    resp
}

/// The answer to an allowed preflight (`OPTIONS` with `Access-Control-Request-Method`).
pub fn preflight() -> Response {
    let extra: [Header; 3] = [
        header("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS"),
        header(
            "Access-Control-Allow-Headers",
            "Authorization, Content-Type",
        ),
        header("Access-Control-Max-Age", "600"),
    ];
    let mut resp = decorate(Response::empty(204));
    for h in extra {
        resp = resp.with_header(h);
    }
    resp
}

/// Whether `origin` is one of `allowed` (`*` allows every origin).
pub fn matches(origin: &str, allowed: &[String]) -> bool {
    allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
}

/// Checks an entry of a `cors_origins` list: `*`, or `http(s)://host[:port]` without a path.
pub fn check_origin(o: &str) -> Result<(), String> {
    if o == "*" {
        return Ok(());
    }
    let rest = o
        .strip_prefix("http://")
        .or_else(|| o.strip_prefix("https://"))
        .ok_or_else(|| format!("{o:?} is not an origin: it starts with http:// or https://"))?;
    let ok = !rest.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{o:?} is not an origin: scheme://host[:port], no path (e.g. http://localhost:3000)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked_and_matched() {
        for good in [
            "*",
            "http://localhost:3000",
            "https://ui.example.org",
            "http://[::1]:8080",
        ] {
            assert!(check_origin(good).is_ok(), "{good}");
        }
        for bad in [
            "localhost:3000",
            "http://x/path",
            "ftp://x",
            "http://",
            "http://a b",
        ] {
            assert!(check_origin(bad).is_err(), "{bad}");
        }
        let list = vec!["http://localhost:3000".to_owned()];
        assert!(matches("http://localhost:3000", &list));
        assert!(!matches("http://evil.example", &list));
        assert!(matches("http://evil.example", &["*".to_owned()]));
    }

    #[test]
    fn only_this_threads_request_carries_the_origin() {
        allow(Some("http://a"));
        assert_eq!(headers().len(), 2);
        std::thread::spawn(|| assert!(headers().is_empty()))
            .join()
            .unwrap();
        allow(None);
        assert!(headers().is_empty());
    }
}
