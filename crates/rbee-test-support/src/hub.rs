//! A small Hugging-Face-compatible hub for tests (a real HTTP server on loopback): the
//! repository API with LFS SHA-256, and `resolve` with `Range`, serving real files — with
//! faults that can be switched on: a connection cut part-way, 200 instead of 206 on
//! resume, a wrong SHA-256, a stall, 404, 403, a slow trickle, and a redirect to another
//! host (which must not receive the token).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

/// Faults the next requests meet.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Cut the connection after this fraction of the *file* has been sent in total, this
    /// many times.
    pub cut_at: Option<(f64, u32)>,
    /// Answer 200 with the whole file even when a `Range` is asked for.
    pub ignore_range: bool,
    /// Report this SHA-256 in the API instead of the real one.
    pub wrong_sha: bool,
    /// Stop sending (without closing) after this fraction of the file, this many times.
    pub stall_at: Option<(f64, u32)>,
    /// Answer `resolve` requests with this status.
    pub resolve_status: Option<u16>,
    /// Send at most this many bytes per second.
    pub trickle: Option<u64>,
    /// Redirect `resolve` to `http://localhost:<port>/cdn/…` (another host name).
    pub redirect: bool,
    /// Publish no LFS entry (hash and size) for the files, as for a file not kept in LFS.
    pub no_lfs: bool,
    /// Repositories that need this token (401 without, 403 with another).
    pub token: Option<String>,
}

/// What the hub saw.
#[derive(Debug, Default)]
pub struct Counters {
    /// Every request, of any kind.
    pub requests: AtomicU64,
    /// `resolve` (and CDN) requests.
    pub downloads: AtomicU64,
    /// Body bytes sent.
    pub bytes: AtomicU64,
    /// Requests to the CDN host that carried an Authorization header (must stay 0).
    pub token_leaks: AtomicU64,
}

struct RepoFileSrc {
    path: PathBuf,
    size: u64,
    sha256: String,
}

struct State {
    repos: HashMap<String, (String, Vec<(String, RepoFileSrc)>)>,
    faults: Faults,
}

/// A running hub; stops with the test.
pub struct Hub {
    server: Arc<tiny_http::Server>,
    state: Arc<Mutex<State>>,
    /// What it saw.
    pub counters: Arc<Counters>,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> String {
    use sha2::Digest;
    let mut f = File::open(path).expect("file to hash");
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl Hub {
    /// Starts an empty hub on a free loopback port.
    pub fn start() -> Hub {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("hub listens"));
        let port = server.server_addr().to_ip().map(|a| a.port()).unwrap_or(0);
        let state = Arc::new(Mutex::new(State {
            repos: HashMap::new(),
            faults: Faults::default(),
        }));
        let counters = Arc::new(Counters::default());
        for _ in 0..4 {
            let (server, state, counters) = (
                Arc::clone(&server),
                Arc::clone(&state),
                Arc::clone(&counters),
            );
            std::thread::spawn(move || {
                for req in server.incoming_requests() {
                    let (state, counters) = (Arc::clone(&state), Arc::clone(&counters));
                    std::thread::spawn(move || handle(req, &state, &counters, port));
                }
            });
        }
        Hub {
            server,
            state,
            counters,
            port,
        }
    }

    /// `http://127.0.0.1:<port>` (what `HF_ENDPOINT` is set to).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Adds a repository `org/repo` at commit `commit` whose files are `(name, local file)`.
    pub fn add_repo(&self, repo: &str, commit: &str, files: &[(&str, &Path)]) {
        let files = files
            .iter()
            .map(|(name, path)| {
                let size = std::fs::metadata(path).expect("fixture").len();
                (
                    (*name).to_owned(),
                    RepoFileSrc {
                        path: path.to_path_buf(),
                        size,
                        sha256: sha256_file(path),
                    },
                )
            })
            .collect();
        self.lock()
            .repos
            .insert(repo.to_owned(), (commit.to_owned(), files));
    }

    /// Replaces the faults.
    pub fn set_faults(&self, f: Faults) {
        self.lock().faults = f;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

fn respond_json(req: tiny_http::Request, status: u16, v: &serde_json::Value) {
    let resp = tiny_http::Response::from_string(v.to_string())
        .with_status_code(status)
        .with_header(header("Content-Type", "application/json"));
    let _ = req.respond(resp);
}

fn header(k: &str, v: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()).expect("header")
}

fn auth_of(req: &tiny_http::Request) -> Option<String> {
    req.headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .map(|h| h.value.as_str().trim_start_matches("Bearer ").to_owned())
}

fn handle(req: tiny_http::Request, state: &Mutex<State>, counters: &Counters, port: u16) {
    counters.requests.fetch_add(1, Ordering::Relaxed);
    let url = req.url().to_owned();
    let path = url.split('?').next().unwrap_or("").to_owned();
    let faults = state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .faults
        .clone();
    let is_cdn = path.starts_with("/cdn/");
    if is_cdn && auth_of(&req).is_some() {
        counters.token_leaks.fetch_add(1, Ordering::Relaxed);
    }
    // Gated: the API and resolve need the token (the CDN is reached by a signed redirect).
    if let (Some(tok), false) = (&faults.token, is_cdn) {
        match auth_of(&req) {
            None => {
                return respond_json(
                    req,
                    401,
                    &json!({"error": "Access to this repository is restricted"}),
                )
            }
            Some(t) if &t != tok => {
                return respond_json(req, 403, &json!({"error": "Invalid credentials"}))
            }
            _ => {}
        }
    }
    if let Some(rest) = path.strip_prefix("/api/models/") {
        // {org}/{repo}/revision/{rev}
        let parts: Vec<&str> = rest.splitn(4, '/').collect();
        if parts.len() == 4 && parts[2] == "revision" {
            let repo = format!("{}/{}", parts[0], parts[1]);
            let st = state.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((commit, files)) = st.repos.get(&repo) {
                let siblings: Vec<_> = files
                    .iter()
                    .map(|(name, f)| {
                        let sha = if faults.wrong_sha { "0".repeat(64) } else { f.sha256.clone() };
                        if faults.no_lfs {
                            json!({"rfilename": name, "size": f.size})
                        } else {
                            json!({"rfilename": name, "size": f.size, "lfs": {"sha256": sha, "size": f.size, "pointerSize": 134}})
                        }
                    })
                    .chain(std::iter::once(json!({"rfilename": "README.md", "size": 12})))
                    .collect();
                let body = json!({"id": repo, "sha": commit, "siblings": siblings});
                drop(st);
                return respond_json(req, 200, &body);
            }
        }
        return respond_json(req, 404, &json!({"error": "Repository not found"}));
    }
    // /{org}/{repo}/resolve/{rev}/{file} or /cdn/{org}/{repo}/{file}
    let (repo, file) = if let Some(rest) = path.strip_prefix("/cdn/") {
        let parts: Vec<&str> = rest.splitn(3, '/').collect();
        if parts.len() != 3 {
            return respond_json(req, 404, &json!({"error": "not found"}));
        }
        (format!("{}/{}", parts[0], parts[1]), parts[2].to_owned())
    } else {
        let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
        if parts.len() != 5 || parts[2] != "resolve" {
            return respond_json(req, 404, &json!({"error": "not found"}));
        }
        (format!("{}/{}", parts[0], parts[1]), parts[4].to_owned())
    };
    counters.downloads.fetch_add(1, Ordering::Relaxed);
    if let Some(code) = faults.resolve_status {
        return respond_json(req, code, &json!({"error": format!("status {code}")}));
    }
    let (src_path, size, sha) = {
        let st = state.lock().unwrap_or_else(|e| e.into_inner());
        match st
            .repos
            .get(&repo)
            .and_then(|(_, fs)| fs.iter().find(|(n, _)| *n == file))
        {
            Some((_, f)) => (f.path.clone(), f.size, f.sha256.clone()),
            None => {
                drop(st);
                return respond_json(req, 404, &json!({"error": "Entry not found"}));
            }
        }
    };
    if faults.redirect && !is_cdn {
        let location = format!("http://localhost:{port}/cdn/{repo}/{file}");
        let resp = tiny_http::Response::empty(302).with_header(header("Location", &location));
        let _ = req.respond(resp);
        return;
    }
    let range_start = req
        .headers()
        .iter()
        .find(|h| h.field.equiv("Range"))
        .and_then(|h| {
            h.value
                .as_str()
                .strip_prefix("bytes=")?
                .split('-')
                .next()?
                .parse::<u64>()
                .ok()
        });
    let start = if faults.ignore_range {
        0
    } else {
        range_start.unwrap_or(0)
    };
    if start > size {
        return respond_json(req, 416, &json!({"error": "range not satisfiable"}));
    }
    let mut f = File::open(&src_path).expect("fixture opens");
    f.seek(SeekFrom::Start(start)).expect("seek");
    // Faults that fire once per count: take one use now.
    let mut limit = None;
    let mut stall = false;
    {
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((frac, n)) = st.faults.cut_at {
            if n > 0 {
                limit = Some(((size as f64 * frac) as u64).saturating_sub(start));
                st.faults.cut_at = Some((frac, n - 1));
            }
        }
        if let Some((frac, n)) = st.faults.stall_at {
            if n > 0 && limit.is_none() {
                limit = Some(((size as f64 * frac) as u64).saturating_sub(start));
                stall = true;
                st.faults.stall_at = Some((frac, n - 1));
            }
        }
    }
    let status = if range_start.is_some() && !faults.ignore_range {
        206
    } else {
        200
    };
    let mut headers = vec![
        header("Accept-Ranges", "bytes"),
        header("ETag", &format!("\"{sha}\"")),
        header("X-Linked-Etag", &format!("\"{sha}\"")),
        header("X-Linked-Size", &size.to_string()),
        header("Content-Type", "application/octet-stream"),
    ];
    if status == 206 {
        headers.push(header(
            "Content-Range",
            &format!("bytes {start}-{}/{size}", size.saturating_sub(1)),
        ));
    }
    if limit.is_none() && faults.trickle.is_none() {
        return send_file(req, status, &headers, f, size - start, counters);
    }
    let body = Body {
        file: f,
        left_before_fault: limit,
        stall,
        trickle: faults.trickle,
    };
    let counted = CountingBody {
        inner: body,
        counters,
    };
    let resp = tiny_http::Response::new(
        tiny_http::StatusCode(status),
        headers,
        counted,
        Some((size - start) as usize),
        None,
    );
    let _ = req.respond(resp);
}

/// The body without faults, as a file server (or the hub's CDN) sends it: a
/// `Content-Length` and the file in 1 MiB writes. (tiny_http's own copy sends a large
/// response chunked, 8 KiB at a time: on a 2-core machine that server took as much CPU as
/// the client being measured.)
fn send_file(
    req: tiny_http::Request,
    status: u16,
    headers: &[tiny_http::Header],
    mut file: File,
    len: u64,
    counters: &Counters,
) {
    let reason = if status == 206 {
        "Partial Content"
    } else {
        "OK"
    };
    let mut head = format!("HTTP/1.1 {status} {reason}\r\nContent-Length: {len}\r\n");
    for h in headers {
        head.push_str(&format!("{}: {}\r\n", h.field, h.value));
    }
    head.push_str("\r\n");
    let mut w = req.into_writer();
    let mut buf = vec![0u8; 1 << 20];
    let mut sent = 0u64;
    let result = (|| -> std::io::Result<()> {
        w.write_all(head.as_bytes())?;
        while sent < len {
            let want = buf.len().min((len - sent) as usize);
            let n = file.read(&mut buf[..want])?;
            if n == 0 {
                break;
            }
            w.write_all(&buf[..n])?;
            sent += n as u64;
            counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
        w.flush()
    })();
    // A client that hangs up mid-way is not the hub's error.
    let _ = result;
}

struct Body {
    file: File,
    left_before_fault: Option<u64>,
    stall: bool,
    trickle: Option<u64>,
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut want = buf.len().min(64 << 10);
        if let Some(rate) = self.trickle {
            // Paced: each chunk waits as long as it takes at `rate` bytes per second.
            want = want.min((rate / 20).max(1) as usize);
            std::thread::sleep(Duration::from_secs_f64(want as f64 / rate as f64));
        }
        if let Some(left) = self.left_before_fault {
            if left == 0 {
                if self.stall {
                    // Hold the connection open, sending nothing.
                    std::thread::sleep(Duration::from_secs(120));
                }
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "fault: cut",
                ));
            }
            want = want.min(left as usize);
        }
        let n = self.file.read(&mut buf[..want])?;
        if let Some(left) = self.left_before_fault.as_mut() {
            *left -= n as u64;
        }
        Ok(n)
    }
}

struct CountingBody<'a> {
    inner: Body,
    counters: &'a Counters,
}

impl Read for CountingBody<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}
