//! The Hugging Face hub: the file list of a repository (with LFS SHA-256) from its API, and
//! downloads from `/{repo}/resolve/{revision}/{file}` that resume, retry, detect stalls and
//! verify — a partial file never sits where a worker would load it.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;
use sha2::{Digest, Sha256};

pub use crate::error::{HubError, RetryCause};
pub use crate::repo::{RepoFile, RepoInfo};
pub use crate::sink::direct_io;
use crate::sink::Sink;
use rbee_types::model_ref::Selector;

/// Where the hub is and how patient to be with it.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Base URL (`HF_ENDPOINT`, default `https://huggingface.co`).
    pub endpoint: String,
    /// Bearer token (`HF_TOKEN`, or the token file of the official clients).
    pub token: Option<String>,
    /// No byte for this long counts as a failed attempt.
    pub stall: Duration,
    /// Attempts per download.
    pub attempts: u32,
    /// First backoff; doubled after each failed attempt.
    pub backoff: Duration,
    /// The Hugging Face cache to take models from before downloading them (read only;
    /// see [`crate::hf_cache`]).
    pub cache: Option<PathBuf>,
}

impl HubConfig {
    /// From the environment, as the official clients read it: `HF_ENDPOINT`, `HF_TOKEN`,
    /// else the file `HF_TOKEN_PATH`, else `$HF_HOME/token` (default
    /// `~/.cache/huggingface/token`); the cache from `HF_HUB_CACHE`, `HF_HOME`, ….
    pub fn from_env() -> HubConfig {
        let endpoint = std::env::var("HF_ENDPOINT")
            .ok()
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| "https://huggingface.co".into());
        let token = std::env::var("HF_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .or_else(|| {
                let path = std::env::var_os("HF_TOKEN_PATH")
                    .map(PathBuf::from)
                    .or_else(|| {
                        let home =
                            std::env::var_os("HF_HOME").map(PathBuf::from).or_else(|| {
                                std::env::var_os("HOME")
                                    .map(|h| PathBuf::from(h).join(".cache/huggingface"))
                            })?;
                        Some(home.join("token"))
                    })?;
                let t = std::fs::read_to_string(path).ok()?;
                Some(t.trim().to_owned()).filter(|t| !t.is_empty())
            });
        HubConfig {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            token,
            stall: Duration::from_secs(60),
            attempts: 6,
            backoff: Duration::from_secs(1),
            cache: crate::hf_cache::dir_from_env(),
        }
    }
}

#[derive(Deserialize)]
struct ApiRepo {
    sha: String,
    #[serde(default)]
    siblings: Vec<ApiSibling>,
}

#[derive(Deserialize)]
struct ApiSibling {
    rfilename: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    lfs: Option<ApiLfs>,
}

#[derive(Deserialize)]
struct ApiLfs {
    sha256: String,
    size: u64,
}

/// The hub's answer, checked before anything of it reaches a path: the commit must be 40
/// hex characters; files with names that could escape a directory are left out (logged).
fn checked(api: ApiRepo, repo: &str, reference: &str) -> Result<RepoInfo, HubError> {
    if !crate::models_dir::valid_commit(&api.sha) {
        return Err(HubError::BadCommit {
            repo: repo.to_owned(),
            reference: reference.to_owned(),
        });
    }
    let files = api
        .siblings
        .into_iter()
        .filter(|s| {
            let ok = crate::models_dir::valid_repo_path(&s.rfilename);
            if !ok {
                tracing::warn!(%repo, name = ?s.rfilename.chars().take(100).collect::<String>(), "the hub listed a file name that is not a plain path; ignored");
            }
            ok
        })
        .map(|s| RepoFile {
            size: s.lfs.as_ref().map(|l| l.size).or(s.size).unwrap_or(0),
            sha256: s.lfs.map(|l| l.sha256),
            path: s.rfilename,
        })
        .collect();
    Ok(RepoInfo {
        commit: api.sha.to_ascii_lowercase(),
        files,
    })
}

fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or("")
}

fn agent(cfg: &HubConfig) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(10))
        .timeout_read(cfg.stall)
        .timeout_write(Duration::from_secs(30))
        .redirects(0)
        .build()
}

/// What a request ended with.
enum Outcome {
    Response(Box<ureq::Response>),
    Status(u16, String),
    Transport(String),
}

/// GET with the token only towards the endpoint's host: redirects are followed by hand,
/// and one that leaves the host loses the token.
fn get(cfg: &HubConfig, agent: &ureq::Agent, url: &str, range: Option<u64>) -> Outcome {
    let endpoint_host = host_of(&cfg.endpoint).to_owned();
    let mut url = url.to_owned();
    for _ in 0..10 {
        let mut req = agent.get(&url);
        if host_of(&url) == endpoint_host {
            if let Some(t) = &cfg.token {
                req = req.set("Authorization", &format!("Bearer {t}"));
            }
        }
        if let Some(offset) = range {
            req = req.set("Range", &format!("bytes={offset}-"));
        }
        let resp = match req.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(code, r)) => {
                return Outcome::Status(code, r.into_string().unwrap_or_default())
            }
            Err(e) => return Outcome::Transport(e.to_string()),
        };
        if (300..400).contains(&resp.status()) {
            let Some(loc) = resp.header("Location") else {
                return Outcome::Status(resp.status(), "redirect without Location".into());
            };
            url = if loc.starts_with("http://") || loc.starts_with("https://") {
                loc.to_owned()
            } else {
                let base = &url[..url.find("://").map_or(0, |i| i + 3)];
                format!("{base}{}{loc}", host_of(&url))
            };
            continue;
        }
        return Outcome::Response(Box::new(resp));
    }
    Outcome::Transport("too many redirects".into())
}

/// The error for a status not worth retrying (404, 401/403, other 4xx) for `what`.
fn status_error(status: u16, what: String, reference: &str) -> HubError {
    match status {
        404 => HubError::NotFound {
            what,
            reference: reference.to_owned(),
        },
        401 | 403 => HubError::AccessDenied {
            what,
            status,
            reference: reference.to_owned(),
        },
        _ => HubError::Status { what, status },
    }
}

/// The repository's files at `revision`.
pub fn repo_info(
    cfg: &HubConfig,
    repo: &str,
    revision: &str,
    reference: &str,
) -> Result<RepoInfo, HubError> {
    let url = format!(
        "{}/api/models/{repo}/revision/{revision}?blobs=true",
        cfg.endpoint
    );
    let agent = agent(cfg);
    let mut last = String::new();
    for attempt in 0..cfg.attempts.min(3) {
        if attempt > 0 {
            std::thread::sleep(cfg.backoff * 2u32.pow(attempt - 1));
        }
        match get(cfg, &agent, &url, None) {
            Outcome::Response(r) => {
                let api: ApiRepo = r.into_json().map_err(|source| HubError::BadFileList {
                    repo: repo.to_owned(),
                    source,
                })?;
                return checked(api, repo, reference);
            }
            Outcome::Status(code, _) if code < 500 => {
                return Err(status_error(
                    code,
                    format!("repository {repo}@{revision}"),
                    reference,
                ))
            }
            Outcome::Status(code, body) => last = format!("{code}: {body}"),
            Outcome::Transport(e) => last = e,
        }
    }
    Err(HubError::Unreachable {
        endpoint: cfg.endpoint.clone(),
        repo: repo.to_owned(),
        last,
    })
}

/// The GGUF file a selector names.
pub fn choose(info: &RepoInfo, selector: &Selector, reference: &str) -> Result<RepoFile, HubError> {
    let ggufs: Vec<&RepoFile> = info
        .files
        .iter()
        .filter(|f| f.path.ends_with(".gguf"))
        .collect();
    let paths =
        |files: &[&RepoFile]| -> Vec<String> { files.iter().map(|f| f.path.clone()).collect() };
    let pick = |matches: Vec<&RepoFile>, what: String| match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(HubError::NoMatch {
            what,
            reference: reference.to_owned(),
            candidates: paths(&ggufs),
        }),
        several => Err(HubError::Ambiguous {
            what,
            reference: reference.to_owned(),
            candidates: paths(several),
        }),
    };
    match selector {
        Selector::Only if ggufs.len() > 1 => Err(HubError::Unchosen {
            reference: reference.to_owned(),
            candidates: paths(&ggufs),
        }),
        Selector::Only => pick(ggufs.clone(), "no GGUF file".into()),
        Selector::Quant(q) => {
            let q = q.to_ascii_lowercase();
            let m = ggufs
                .iter()
                .copied()
                .filter(|f| {
                    let name = f.path.rsplit('/').next().unwrap_or("").to_ascii_lowercase();
                    let stem = name.trim_end_matches(".gguf");
                    stem.split(['.', '-', '_'])
                        .collect::<Vec<_>>()
                        .windows(q.split('_').count())
                        .any(|w| w.join("_") == q)
                })
                .collect();
            pick(m, format!("no GGUF file of quantization {q}"))
        }
        Selector::File(f) => pick(
            ggufs.iter().copied().filter(|g| &g.path == f).collect(),
            format!("no file {f}"),
        ),
    }
}

/// Where a download stands (sent to progress streams).
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    /// Bytes received so far (all written and hashed when it equals `total`).
    pub bytes: u64,
    /// File size.
    pub total: u64,
    /// Current attempt (1-based).
    pub attempt: u32,
    /// Recent speed, MB/s.
    pub speed_mbps: f64,
    /// Why the last attempt failed, when this tick says the next one is about to start.
    pub retrying: Option<String>,
}

/// Reads until `buf` is full, the stream ends, or an error; returns the bytes read and how
/// it stopped (`Ok` for full or end of stream). Bytes read before an error are returned
/// first; the error comes back on the next call. `on_read` hears the bytes so far after
/// every read (a chunk can take long on a slow link).
fn fill(
    r: &mut impl Read,
    buf: &mut [u8],
    mut on_read: impl FnMut(usize),
) -> (usize, std::io::Result<()>) {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => {
                n += k;
                on_read(n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return (n, if n == 0 { Err(e) } else { Ok(()) }),
        }
    }
    (n, Ok(()))
}

/// Progress ticks, at most every 200 ms, with the speed over the last few seconds.
struct Meter {
    total: u64,
    attempt: u32,
    last: Instant,
    window: (Instant, u64),
    speed: f64,
}

impl Meter {
    fn new(total: u64, attempt: u32, from: u64) -> Meter {
        let now = Instant::now();
        Meter {
            total,
            attempt,
            last: now,
            window: (now, from),
            speed: 0.0,
        }
    }

    /// A tick for `bytes` received, when the last one is 200 ms old.
    fn due(&mut self, bytes: u64) -> Option<Tick> {
        (self.last.elapsed() >= Duration::from_millis(200)).then(|| self.tick(bytes))
    }

    /// A tick for `bytes` received, now.
    fn tick(&mut self, bytes: u64) -> Tick {
        let secs = self.window.0.elapsed().as_secs_f64();
        if secs > 0.05 {
            self.speed = bytes.saturating_sub(self.window.1) as f64 / secs / 1e6;
        }
        if secs > 2.0 {
            self.window = (Instant::now(), bytes);
        }
        self.last = Instant::now();
        Tick {
            bytes,
            total: self.total,
            attempt: self.attempt,
            speed_mbps: self.speed,
            retrying: None,
        }
    }
}

/// A failed write to the partial file: a full disk says how much more room it needs.
fn write_failure(partial: &Path, e: std::io::Error, left: u64) -> Failure {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        Failure::Final(disk_full(partial, left))
    } else {
        Failure::Final(io_error(partial, e))
    }
}

/// What went wrong in one attempt.
enum Failure {
    /// Retry (transport error, 5xx, cut connection, checksum mismatch): why, and how.
    Retry(String, RetryCause),
    /// Give up now (404, 401/403, disk full).
    Final(HubError),
}

/// Free bytes for unprivileged users on the filesystem of `dir`.
pub fn available_bytes(dir: &Path) -> u64 {
    // Unknown space does not stop a download; running out is handled when it happens.
    crate::space::space(dir).map_or(u64::MAX, |(_, available)| available)
}

/// Too little room for the `required` bytes of `dest`, with the room there is.
fn disk_full(dest: &Path, required: u64) -> HubError {
    let dir = dest.parent().unwrap_or(Path::new("/"));
    HubError::DiskFull {
        dest: dest.to_path_buf(),
        required,
        available: available_bytes(dir),
    }
}

/// Whole downloads whose hash did not match before giving up.
pub const CHECKSUM_ATTEMPTS: usize = 3;

/// The partial file a download of `dest` writes into.
pub fn partial_path(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.partial"))
}

/// Downloads `file` of `repo` at `commit` to `dest`: into the partial file (resumed when
/// present), hashed while written, verified, fsynced, renamed. Returns the SHA-256 (hex).
pub fn download(
    cfg: &HubConfig,
    repo: &str,
    commit: &str,
    file: &RepoFile,
    dest: &Path,
    reference: &str,
    mut progress: impl FnMut(&Tick),
) -> Result<String, HubError> {
    let dir = dest.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    let partial = partial_path(dest);
    let have = std::fs::metadata(&partial).map_or(0, |m| m.len());
    if available_bytes(dir) < file.size.saturating_sub(have) {
        return Err(disk_full(dest, file.size.saturating_sub(have)));
    }
    let url = format!("{}/{repo}/resolve/{commit}/{}", cfg.endpoint, file.path);
    let agent = agent(cfg);
    let mut last = (String::new(), RetryCause::Transfer);
    let (mut attempts, mut mismatches) = (0, 0);
    for attempt in 1..=cfg.attempts {
        attempts = attempt;
        if attempt > 1 {
            let wait = cfg.backoff * 2u32.pow((attempt - 2).min(10));
            tracing::warn!(%reference, attempt, error = %last.0, ?wait, "download attempt failed; retrying");
            progress(&Tick {
                bytes: std::fs::metadata(&partial).map_or(0, |m| m.len()),
                total: file.size,
                attempt,
                speed_mbps: 0.0,
                retrying: Some(last.0.clone()),
            });
            std::thread::sleep(wait);
        }
        let this = Attempt {
            cfg,
            agent: &agent,
            url: &url,
            file,
            partial: &partial,
            number: attempt,
            reference,
        };
        match this.run(&mut progress) {
            Ok(sha) => {
                std::fs::rename(&partial, dest).map_err(|e| io_error(dest, e))?;
                if let Ok(d) = File::open(dir) {
                    let _ = d.sync_all();
                }
                return Ok(sha);
            }
            Err(Failure::Final(e)) => {
                let empty = std::fs::metadata(&partial).is_ok_and(|m| m.len() == 0);
                if matches!(e, HubError::DiskFull { .. }) || empty {
                    let _ = std::fs::remove_file(&partial);
                }
                return Err(e);
            }
            Err(Failure::Retry(why, cause)) => {
                last = (why, cause);
                // A whole file fetched again each time: a few tries only.
                mismatches += usize::from(cause == RetryCause::Checksum);
                if mismatches >= CHECKSUM_ATTEMPTS {
                    break;
                }
            }
        }
    }
    let (last, cause) = last;
    Err(HubError::Exhausted {
        reference: reference.to_owned(),
        attempts,
        cause,
        last,
    })
}

/// A file error for a client: the file's name in the models directory, not its path (the
/// log has that).
fn io_error(p: &Path, e: std::io::Error) -> HubError {
    tracing::error!(path = %p.display(), error = %e, "models directory");
    HubError::Io {
        path: p.to_path_buf(),
        source: e,
    }
}

/// One attempt of a download: what it fetches and where it writes.
struct Attempt<'a> {
    cfg: &'a HubConfig,
    agent: &'a ureq::Agent,
    url: &'a str,
    file: &'a RepoFile,
    partial: &'a Path,
    /// 1-based.
    number: u32,
    reference: &'a str,
}

impl Attempt<'_> {
    /// Resumes (or starts) the partial file, receives the rest, fsyncs and verifies it.
    fn run(&self, progress: &mut impl FnMut(&Tick)) -> Result<String, Failure> {
        let (out, mut offset) = self.open_partial()?;
        let mut hasher = self.hash_head(offset)?;
        if offset < self.file.size {
            let resp = self.request(offset, &out)?;
            if resp.status() == 200 && offset > 0 {
                // The server ignored the Range: start over from byte 0.
                tracing::info!(reference = %self.reference, "the server sent the whole file instead of the rest; starting over");
                out.set_len(0).map_err(|e| self.io_failure(e))?;
                offset = 0;
                hasher = Sha256::new();
            }
            hasher = self.receive(resp.into_reader(), offset, hasher, progress)?;
        }
        out.sync_all()
            .map_err(|e| write_failure(self.partial, e, self.file.size))?;
        self.verify(hasher)
    }

    /// The partial file, opened for its length and the final fsync (the bytes go in
    /// through the [`Sink`]), and where to resume; one longer than the file is emptied.
    fn open_partial(&self) -> Result<(File, u64), Failure> {
        let out = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(self.partial)
            .map_err(|e| self.io_failure(e))?;
        let mut offset = out.metadata().map(|m| m.len()).unwrap_or(0);
        if offset > self.file.size {
            out.set_len(0).map_err(|e| self.io_failure(e))?;
            offset = 0;
        }
        Ok((out, offset))
    }

    /// A hasher that has seen the first `offset` bytes of the partial file (resuming).
    fn hash_head(&self, offset: u64) -> Result<Sha256, Failure> {
        let mut hasher = Sha256::new();
        if offset > 0 {
            let mut f = File::open(self.partial).map_err(|e| self.io_failure(e))?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut buf).map_err(|e| self.io_failure(e))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
        }
        Ok(hasher)
    }

    /// GETs the file from byte `offset`; a status is a failure to retry or give up on.
    fn request(&self, offset: u64, out: &File) -> Result<Box<ureq::Response>, Failure> {
        match get(
            self.cfg,
            self.agent,
            self.url,
            (offset > 0).then_some(offset),
        ) {
            Outcome::Response(r) => Ok(r),
            Outcome::Status(416, _) => {
                // Our partial is not a prefix the server can continue: start over.
                let _ = out.set_len(0);
                Err(Failure::Retry(
                    "the server refused the range (416)".into(),
                    RetryCause::Transfer,
                ))
            }
            Outcome::Status(code, _) if code < 500 && code != 408 && code != 429 => {
                Err(Failure::Final(status_error(
                    code,
                    format!("file {}", self.file.path),
                    self.reference,
                )))
            }
            Outcome::Status(code, _) => {
                Err(Failure::Retry(format!("HTTP {code}"), RetryCause::Transfer))
            }
            Outcome::Transport(e) => {
                let cause = if e.contains("timed out") {
                    RetryCause::Stalled
                } else {
                    RetryCause::Transfer
                };
                Err(Failure::Retry(e, cause))
            }
        }
    }

    /// Streams `body` into the partial file from byte `offset` to the end, written and
    /// hashed on the [`Sink`]'s threads, with progress ticks; the hasher of the whole file.
    fn receive(
        &self,
        mut body: impl Read,
        mut offset: u64,
        hasher: Sha256,
        progress: &mut impl FnMut(&Tick),
    ) -> Result<Sha256, Failure> {
        let size = self.file.size;
        // This thread only receives; writing and hashing run on threads of their own.
        let sink = Sink::new(self.partial, offset, hasher).map_err(|e| self.io_failure(e))?;
        let mut meter = Meter::new(size, self.number, offset);
        progress(&meter.tick(offset));
        while offset < size {
            // Whole 1 MiB chunks (the socket yields a few KiB per read): one write and one
            // hand-over to the hashing thread per MiB instead of per packet, on 4 KiB
            // boundaries of the file (direct I/O).
            let Some(mut buf) = sink.buffer() else {
                return Err(self.writer_stopped(sink, offset));
            };
            let want = Sink::next_len(offset).min((size - offset) as usize);
            // Ticks while the chunk fills, short of the last byte (whose tick means written
            // and hashed).
            let (n, end) = fill(&mut body, &mut buf.as_mut()[..want], |got| {
                let bytes = offset + got as u64;
                if bytes < size {
                    if let Some(t) = meter.due(bytes) {
                        progress(&t);
                    }
                }
            });
            if n == 0 {
                return Err(self.cut(offset, end));
            }
            if !sink.push(buf, n) {
                return Err(self.writer_stopped(sink, offset));
            }
            offset += n as u64;
        }
        let hasher = sink
            .finish()
            .map_err(|e| write_failure(self.partial, e, size - offset))?;
        progress(&meter.tick(offset));
        Ok(hasher)
    }

    /// Why the body ended at `offset`, short of the file's end: closed, stalled or failed.
    fn cut(&self, offset: u64, end: std::io::Result<()>) -> Failure {
        let e = match end {
            Err(e) => e,
            Ok(()) => {
                return Failure::Retry(
                    format!(
                        "the connection closed at byte {offset} of {}",
                        self.file.size
                    ),
                    RetryCause::Transfer,
                )
            }
        };
        // ureq reports its read timeout as an io error whose kind varies.
        let stalled = matches!(
            e.kind(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
        ) || e.to_string().contains("timed out");
        if stalled {
            Failure::Retry(
                format!("no data for {:?} at byte {offset}", self.cfg.stall),
                RetryCause::Stalled,
            )
        } else {
            Failure::Retry(
                format!("read failed at byte {offset}: {e}"),
                RetryCause::Transfer,
            )
        }
    }

    /// The writer stopped on an error: the sink's finish hands it back.
    fn writer_stopped(&self, sink: Sink, offset: u64) -> Failure {
        let e = sink
            .finish()
            .err()
            .unwrap_or_else(|| std::io::Error::other("the writer stopped"));
        write_failure(self.partial, e, self.file.size - offset)
    }

    /// The SHA-256 (hex) of the whole file, checked against the hub's; a mismatch deletes
    /// the partial file.
    fn verify(&self, hasher: Sha256) -> Result<String, Failure> {
        let sha: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if let Some(expected) = &self.file.sha256 {
            if !sha.eq_ignore_ascii_case(expected) {
                let _ = std::fs::remove_file(self.partial);
                return Err(Failure::Retry(
                    format!("checksum mismatch: got {sha}, the hub says {expected}"),
                    RetryCause::Checksum,
                ));
            }
        }
        Ok(sha)
    }

    /// A file error of the partial file that ends the download.
    fn io_failure(&self, e: std::io::Error) -> Failure {
        Failure::Final(io_error(self.partial, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rbee_types::ErrorCode;

    fn info(names: &[&str]) -> RepoInfo {
        RepoInfo {
            commit: "c".into(),
            files: names
                .iter()
                .map(|n| RepoFile {
                    path: (*n).into(),
                    size: 1,
                    sha256: None,
                })
                .collect(),
        }
    }

    #[test]
    fn the_selector_picks_one_gguf_or_lists_the_candidates() {
        let one = info(&["README.md", "m-Q4_1.gguf"]);
        assert_eq!(
            choose(&one, &Selector::Only, "hf:o/r").unwrap().path,
            "m-Q4_1.gguf"
        );
        let many = info(&[
            "m-Q4_K_M.gguf",
            "m-Q8_0.gguf",
            "m.Q4_K_S.gguf",
            "config.json",
        ]);
        let e = choose(&many, &Selector::Only, "hf:o/r").unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidModelRef);
        let message = e.to_string();
        assert!(message.contains("m-Q8_0.gguf") && message.contains(":QUANT"));
        let q = |s: &str| choose(&many, &Selector::Quant(s.into()), "hf:o/r");
        assert_eq!(q("Q4_K_M").unwrap().path, "m-Q4_K_M.gguf");
        assert_eq!(q("q8_0").unwrap().path, "m-Q8_0.gguf");
        assert_eq!(q("Q4_K_S").unwrap().path, "m.Q4_K_S.gguf");
        assert_eq!(q("Q2_K").unwrap_err().code(), ErrorCode::ModelNotFound);
        assert_eq!(q("K").unwrap_err().code(), ErrorCode::InvalidModelRef);
        let f = choose(&many, &Selector::File("m-Q8_0.gguf".into()), "hf:o/r").unwrap();
        assert_eq!(f.path, "m-Q8_0.gguf");
        let e = choose(&many, &Selector::File("x.gguf".into()), "hf:o/r").unwrap_err();
        assert_eq!(e.code(), ErrorCode::ModelNotFound);
        assert!(e.to_string().contains("m-Q4_K_M.gguf"));
    }

    #[test]
    fn the_token_comes_from_hf_token_else_the_token_file() {
        // nextest runs each test in its own process: the environment is ours.
        let d = std::env::temp_dir().join(format!("rbee-hf-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("token"), "hf_from_file\n").unwrap();
        std::env::remove_var("HF_TOKEN");
        std::env::remove_var("HF_TOKEN_PATH");
        std::env::set_var("HF_HOME", &d);
        std::env::set_var("HF_ENDPOINT", "http://127.0.0.1:9/");
        let c = HubConfig::from_env();
        assert_eq!(c.token.as_deref(), Some("hf_from_file"));
        assert_eq!(c.endpoint, "http://127.0.0.1:9");
        std::env::set_var("HF_TOKEN", "hf_env");
        assert_eq!(HubConfig::from_env().token.as_deref(), Some("hf_env"));
        std::env::remove_var("HF_ENDPOINT");
        assert_eq!(HubConfig::from_env().endpoint, "https://huggingface.co");
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn hosts_are_compared_without_scheme_or_path() {
        assert_eq!(host_of("https://huggingface.co/api/x"), "huggingface.co");
        assert_eq!(host_of("http://127.0.0.1:9000/a?b"), "127.0.0.1:9000");
    }
}
