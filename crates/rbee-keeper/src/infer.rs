//! `rbee-keeper infer`: a prompt to a streamed answer on any node, starting what is
//! missing on the way (the local hive, the model's download, the worker), with progress on
//! stderr and nothing but the answer on stdout. Everything goes to the node's hive: the
//! answer through its OpenAI front door (which queues the request while the model's slots
//! are busy), so a remote node needs one tunnel, and worker keys stay on the node.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Args;
use rbee_client::{ClientError, HiveClient};
use rbee_types::hive::{BuildEvent, DownloadProgress, SpawnRequest, SpawnResponse, WorkerView};
use rbee_types::openai::{
    ChatCompletionChunk, CompletionRequest, Content, OneOrMany, RequestMessage, StreamItem,
    StreamOptions, TextCompletion, Usage,
};
use rbee_types::{ApiError, Backend, ErrorCode, ModelRef};
use serde::Serialize;

use crate::client::api_failure;
use crate::config::Config;
use crate::node::Conn;
use crate::progress::Bar;
use crate::registry::Registry;
use crate::report::Failure;

/// Exit status of an interrupted command.
pub const EXIT_INTERRUPTED: u8 = 130;

/// `infer`'s arguments.
#[derive(Debug, Args)]
pub struct InferArgs {
    /// The node (`localhost`, or a registered name) [default: the config's `[defaults]
    /// node`, else localhost].
    #[arg(long)]
    pub node: Option<String>,
    /// The model: hf:org/repo[:QUANT|/file.gguf][@revision] or file:///abs/path.gguf.
    #[arg(long)]
    pub model: ModelRef,
    /// The prompt.
    #[arg(long)]
    pub prompt: String,
    /// Most tokens to generate (1–32768).
    #[arg(long, default_value_t = 256)]
    pub max_tokens: u32,
    /// Sampling temperature (0 = greedy … 2).
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    /// cpu, cuda or metal [default: the config's `[defaults] backend`, else cpu].
    #[arg(long)]
    pub backend: Option<Backend>,
    /// GPU index.
    #[arg(long, default_value_t = 0)]
    pub device: u32,
    /// One JSON document on stdout instead of the streamed text.
    #[arg(long)]
    pub json: bool,
    /// Send the prompt as raw text to continue, instead of as a chat message rendered with
    /// the model's own template (the default, what instruct models expect).
    #[arg(long)]
    pub raw: bool,
    /// Seconds the model may take to load.
    #[arg(long, default_value_t = 300)]
    pub loading_timeout_secs: u64,
    /// Seconds without a token before the request is cancelled.
    #[arg(long, default_value_t = 60)]
    pub token_timeout_secs: u64,
}

impl InferArgs {
    /// Fills what was not given from the config's `[defaults]`.
    pub fn with_defaults(mut self, cfg: &Config) -> Result<InferArgs, Failure> {
        self.node = Some(cfg.node_or_default(self.node));
        if self.backend.is_none() {
            self.backend = cfg.default_backend()?;
        }
        Ok(self)
    }

    /// The node.
    pub fn node(&self) -> &str {
        self.node.as_deref().unwrap_or("localhost")
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.backend.unwrap_or_default()
    }
}

fn keeper(msg: impl Into<String>) -> Failure {
    Failure::new("rbee-keeper", msg)
}

/// Checks everything that needs no network.
pub fn validate(a: &InferArgs) -> Result<(), Failure> {
    if !(1..=32768).contains(&a.max_tokens) {
        return Err(keeper(format!(
            "--max-tokens must be between 1 and 32768, not {}",
            a.max_tokens
        ))
        .suggest(["e.g. --max-tokens 128".to_string()]));
    }
    if !a.temperature.is_finite() || !(0.0..=2.0).contains(&a.temperature) {
        return Err(keeper(format!(
            "--temperature must be between 0 and 2, not {}",
            a.temperature
        ))
        .suggest(["e.g. --temperature 0.7 (0 is greedy)".to_string()]));
    }
    if a.prompt.trim().is_empty() {
        return Err(keeper("the prompt is empty")
            .suggest(["e.g. --prompt \"Write a haiku about bees\"".to_string()]));
    }
    if a.loading_timeout_secs == 0 || a.token_timeout_secs == 0 {
        return Err(keeper(
            "--loading-timeout-secs and --token-timeout-secs must be at least 1",
        ));
    }
    Ok(())
}

/// `major.minor` of a version.
fn major_minor(v: &str) -> &str {
    match v.match_indices('.').nth(1) {
        Some((i, _)) => &v[..i],
        None => v,
    }
}

/// Checks the hive answers (starting the local one when none does) and speaks our version.
fn check_hive(hive: &HiveClient, node: &str, local: bool) -> Result<(), Failure> {
    let health = match hive.health() {
        Ok(h) => h,
        Err(e) if local && crate::client::unreachable(&e) => {
            let port = hive
                .base()
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or(9200);
            eprintln!("[rbee-keeper] no hive answers on this machine; starting one");
            let how = crate::local::start_hive(port)?;
            eprintln!("[rbee-keeper] started rbee-hive {how}");
            return check_hive(hive, node, false);
        }
        Err(e) if crate::client::unreachable(&e) => {
            return Err(Failure::from(e).suggest([
                format!("is rbee-hive running on {node}? (systemctl status rbee-hive there)"),
                "check the node's address and port: rbee-keeper setup list-nodes".to_string(),
            ]))
        }
        Err(e) => return Err(e.into()),
    };
    let ours = env!("CARGO_PKG_VERSION");
    if major_minor(&health.version) != major_minor(ours) {
        return Err(keeper(format!(
            "VERSION_MISMATCH: rbee-keeper {ours} and rbee-hive {} on {node} differ in major.minor",
            health.version
        ))
        .code("VERSION_MISMATCH")
        .suggest([format!(
            "install the same rbee version on both (rbee-hive on {node}, or this rbee-keeper)"
        )]));
    }
    Ok(())
}

/// Follows a download's progress stream with a bar; the error, if it failed.
pub fn follow_download(hive: &HiveClient, url: &str) -> Result<(), Failure> {
    let events = hive
        .download_progress(url)
        .map_err(|_| keeper("the download's progress stream could not be opened"))?;
    let mut bar = Bar::new("downloading");
    let (t0, mut total) = (Instant::now(), 0);
    for e in events {
        match e? {
            DownloadProgress::Downloading {
                bytes_downloaded,
                bytes_total,
                speed_mbps,
                ..
            } => {
                total = bytes_total;
                bar.bytes(bytes_downloaded, total, speed_mbps)
            }
            DownloadProgress::Complete { .. } => {
                bar.finish(&format!(
                    "✅ model downloaded ({} in {:.1} s)",
                    crate::progress::bytes(total),
                    t0.elapsed().as_secs_f64()
                ));
                return Ok(());
            }
            DownloadProgress::Error { error } => {
                bar.finish("❌ download failed");
                return Err(api_failure("rbee-hive", &ApiError { error }));
            }
            DownloadProgress::Resolving => {}
        }
    }
    Err(keeper("the download's progress stream ended early"))
}

/// Follows a worker build, showing cargo's `Compiling` lines.
fn follow_build(hive: &HiveClient, url: &str) -> Result<(), Failure> {
    let events = hive
        .build_progress(url)
        .map_err(|_| keeper("the build's progress stream could not be opened"))?;
    eprintln!("[rbee-keeper] 🔨 building the worker on the node (minutes)");
    for e in events {
        match e? {
            BuildEvent::Building { line } if line.trim_start().starts_with("Compiling") => {
                eprintln!("[rbee-keeper]   {}", line.trim());
            }
            BuildEvent::Complete { .. } => {
                eprintln!("[rbee-keeper] ✅ worker built");
                return Ok(());
            }
            BuildEvent::Error { error } => {
                return Err(api_failure("rbee-hive", &ApiError { error }))
            }
            _ => {}
        }
    }
    Err(keeper("the build's progress stream ended early"))
}

fn spawn_request(a: &InferArgs) -> SpawnRequest {
    SpawnRequest::new(a.model.clone(), a.backend(), a.device)
}

/// Gets a worker for the model: reused or spawned, after its download or build.
fn worker_for(hive: &HiveClient, a: &InferArgs) -> Result<WorkerView, Failure> {
    // After a download or build the hive starts the worker itself: it is this run's.
    let mut waited = false;
    for _ in 0..4 {
        let (_, r) = hive.spawn(&spawn_request(a))?;
        let SpawnResponse {
            worker,
            reused,
            download,
            build,
            previous_failure,
        } = r;
        if let (Some(f), None, None, None) = (&previous_failure, &worker, &download, &build) {
            return Err(Failure::new(
                "rbee-hive",
                format!("the model's last worker failed: {}", f.exit),
            )
            .suggest([
                "see its log: the hive's /v1/workers/{id}/logs, or journalctl on the node"
                    .to_string(),
            ]));
        }
        if let Some(w) = worker {
            if reused && !waited {
                eprintln!("[rbee-keeper] ♻️  reusing worker {}", w.id);
            } else {
                eprintln!("[rbee-keeper] 🚀 started worker {}", w.id);
            }
            return Ok(w);
        }
        if let Some(d) = download {
            follow_download(hive, &d.progress_url)?;
        } else if let Some(b) = build {
            follow_build(hive, &b.progress_url)?;
        }
        waited = true;
    }
    Err(keeper("the hive did not start a worker for the model"))
}

/// Waits until the hive reports the worker ready, showing the layers it loads (from the
/// worker's own progress stream, which the hive relays once the worker listens).
fn wait_loaded(hive: &HiveClient, worker: &WorkerView, a: &InferArgs) -> Result<(), Failure> {
    let id = &worker.id;
    let mut bar = Bar::new("loading");
    let t0 = Instant::now();
    let mut layers = (0u64, 0u64);
    let mut shown = false;
    loop {
        let state = match hive.worker(id) {
            Ok(v) => v.state,
            Err(ClientError::Api { status: 404, .. }) => {
                // It ended while loading: the next spawn says how.
                let (_, r) = hive.spawn(&spawn_request(a))?;
                let f = r.previous_failure;
                let mut failure = Failure::new(
                    "llm-worker-rbee",
                    format!(
                        "worker {id} failed while loading: {}",
                        f.as_ref().map_or("it is gone", |f| f.exit.as_str())
                    ),
                );
                for l in f.into_iter().flat_map(|f| f.last_log_lines) {
                    failure = failure.detail(l);
                }
                return Err(failure);
            }
            Err(e) => return Err(e.into()),
        };
        if state.ready() {
            if shown {
                bar.finish("✅ model loaded");
            }
            return Ok(());
        }
        if t0.elapsed() > Duration::from_secs(a.loading_timeout_secs) {
            return Err(keeper(format!(
                "LOADING_TIMEOUT: the model is still loading after {} s, at layer {} of {}",
                a.loading_timeout_secs, layers.0, layers.1
            ))
            .code("LOADING_TIMEOUT")
            .suggest([format!(
                "read the worker's log: rbee-keeper logs --node {} --worker {id}",
                a.node()
            )]));
        }
        // The worker's own stream through the hive, while it lasts (it ends when the model
        // is loaded; until the worker listens, the hive refuses it).
        if let Ok(events) = hive.loading_progress(id) {
            for e in events.flatten() {
                if e.stage == "ready" || e.stage == "failed" {
                    break;
                }
                layers = (e.layers_loaded.unwrap_or(0), e.layers_total.unwrap_or(0));
                bar.steps(layers.0, layers.1, "layers");
                shown = true;
                if t0.elapsed() > Duration::from_secs(a.loading_timeout_secs) {
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// `infer --json`'s document.
#[derive(Serialize)]
struct JsonAnswer<'a> {
    text: &'a str,
    tokens: u64,
    finish_reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    worker_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_ref: Option<&'a ModelRef>,
}

/// The request for the hive's front door: the prompt as a chat message (or, with `--raw`,
/// as text to continue), streamed with the token counts at the end.
fn completion_request(a: &InferArgs) -> CompletionRequest {
    let (prompt, messages) = if a.raw {
        (Some(OneOrMany::One(a.prompt.clone())), None)
    } else {
        let m = RequestMessage {
            role: "user".into(),
            content: Some(Content::Text(a.prompt.clone())),
            name: None,
            other: Default::default(),
        };
        (None, Some(vec![m]))
    };
    CompletionRequest {
        model: Some(a.model.to_string()),
        prompt,
        messages,
        max_tokens: Some(a.max_tokens.into()),
        temperature: Some(a.temperature.into()),
        stream: Some(true),
        stream_options: Some(StreamOptions {
            include_usage: Some(true),
        }),
        ..CompletionRequest::default()
    }
}

/// What the stream thread tells the printing loop.
enum Msg {
    /// The hive answered: the request has a slot.
    Opened,
    /// New text.
    Text(String),
    /// Why generation ended (`stop`, `length`).
    Finish(String),
    /// The token counts.
    Usage(Usage),
    /// The request or the stream failed.
    Failed(Failure),
    /// The stream ended.
    End,
}

/// A chunk of either route, read the same way.
trait Chunk {
    /// Its text, finish reason and token counts.
    fn parts(self) -> (Option<String>, Option<String>, Option<Usage>);
}

impl Chunk for ChatCompletionChunk {
    fn parts(self) -> (Option<String>, Option<String>, Option<Usage>) {
        let usage = self.usage.flatten();
        match self.choices.into_iter().next() {
            Some(c) => (c.delta.content, c.finish_reason, usage),
            None => (None, None, usage),
        }
    }
}

impl Chunk for TextCompletion {
    fn parts(self) -> (Option<String>, Option<String>, Option<Usage>) {
        let usage = self.usage.flatten();
        match self.choices.into_iter().next() {
            Some(c) => (Some(c.text), c.finish_reason, usage),
            None => (None, None, usage),
        }
    }
}

/// Opens the stream (a full queue is retried three times, after 2, 4 and 8 s) and passes
/// its chunks on until it ends or the receiver is gone.
fn relay<T: Chunk + serde::de::DeserializeOwned>(
    open: impl Fn() -> Result<rbee_client::Events<StreamItem<T>>, rbee_client::ClientError>,
    tx: &mpsc::Sender<Msg>,
) {
    let mut events = None;
    for (i, wait) in [0u64, 2, 4, 8].iter().enumerate() {
        if *wait > 0 {
            eprintln!(
                "[rbee-keeper] ⏳ the model's queue on the hive is full; retry {i}/3 in {wait} s"
            );
            std::thread::sleep(Duration::from_secs(*wait));
        }
        match open() {
            Ok(e) => {
                events = Some(e);
                break;
            }
            Err(e) if e.code() == Some(ErrorCode::QueueFull) && i < 3 => continue,
            Err(e) => {
                let _ = tx.send(Msg::Failed(e.into()));
                return;
            }
        }
    }
    let Some(events) = events else { return };
    if tx.send(Msg::Opened).is_err() {
        return;
    }
    for item in events {
        let msgs = match item {
            Ok(StreamItem::Chunk(c)) => {
                let (text, finish, usage) = c.parts();
                let text = text.filter(|t| !t.is_empty()).map(Msg::Text);
                [text, finish.map(Msg::Finish), usage.map(Msg::Usage)]
            }
            Ok(StreamItem::Error(e)) => [
                Some(Msg::Failed(api_failure("llm-worker-rbee", &e.to_api()))),
                None,
                None,
            ],
            Err(e) => [Some(Msg::Failed(e.into())), None, None],
        };
        for m in msgs.into_iter().flatten() {
            if tx.send(m).is_err() {
                return;
            }
        }
    }
    let _ = tx.send(Msg::End);
}

/// What the stream brought.
#[derive(Default)]
struct Streamed {
    text: String,
    /// Pieces of text received (the token count when the counts did not come).
    pieces: u64,
    finish: Option<String>,
    usage: Option<Usage>,
    /// From the answer's start to its end.
    duration: Duration,
    /// `interrupt` (Ctrl+C) or `timeout` (no token for too long), when cut short.
    cancelled: &'static str,
    /// Why the stream broke off after some of the answer had come.
    broken: Option<Failure>,
}

impl Streamed {
    fn tokens(&self) -> u64 {
        self.usage
            .as_ref()
            .map_or(self.pieces, |u| u.completion_tokens.into())
    }
}

/// Sends the request through the hive's front door and prints the answer as it arrives
/// (unless `--json`) until it ends, Ctrl+C, or no token for `--token-timeout-secs`. In the
/// last two cases the keeper leaves, which closes the connection: the hive then cancels
/// the generation on the worker (or takes the request out of the model's queue).
fn stream_answer(hive: &HiveClient, a: &InferArgs) -> Result<Streamed, Failure> {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
    }
    let (tx, rx) = mpsc::channel();
    let (hive, req, raw) = (hive.clone(), completion_request(a), a.raw);
    std::thread::spawn(move || {
        if raw {
            relay(|| hive.completion_stream(&req), &tx);
        } else {
            relay(|| hive.chat_stream(&req), &tx);
        }
    });
    let mut s = Streamed::default();
    let t0 = Instant::now();
    let (mut opened, mut waiting_said) = (None::<Instant>, false);
    let mut last = Instant::now();
    let mut out = std::io::stdout().lock();
    loop {
        if INTERRUPTED.load(Ordering::SeqCst) {
            s.cancelled = "interrupt";
            break;
        }
        if opened.is_some() && last.elapsed() > Duration::from_secs(a.token_timeout_secs) {
            s.cancelled = "timeout";
            break;
        }
        if opened.is_none() && !waiting_said && t0.elapsed() > Duration::from_secs(1) {
            eprintln!(
                "[rbee-keeper] ⏳ every slot of the model is busy; waiting in the hive's queue"
            );
            waiting_said = true;
        }
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Msg::Opened) => {
                opened = Some(Instant::now());
                last = Instant::now();
            }
            Ok(Msg::Text(t)) => {
                s.text.push_str(&t);
                s.pieces += 1;
                last = Instant::now();
                if !a.json {
                    let _ = out.write_all(t.as_bytes());
                    let _ = out.flush();
                }
            }
            Ok(Msg::Finish(f)) => s.finish = Some(f),
            Ok(Msg::Usage(u)) => s.usage = Some(u),
            Ok(Msg::Failed(f)) if !s.text.is_empty() => {
                s.broken = Some(f);
                break;
            }
            Ok(Msg::Failed(f)) => return Err(f),
            Ok(Msg::End) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    s.duration = opened.map_or(Duration::ZERO, |t| t.elapsed());
    if !a.json && !s.text.is_empty() {
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    }
    Ok(s)
}

/// Runs `infer`; the exit status.
pub fn run(a: &InferArgs, cfg: &Config, reg: &Registry) -> Result<u8, Failure> {
    validate(a)?;
    let conn = Conn::open(a.node(), cfg, reg)?;
    let hive = &conn.hive;
    check_hive(hive, a.node(), conn.local)?;
    let worker = worker_for(hive, a)?;
    wait_loaded(hive, &worker, a)?;
    let s = stream_answer(hive, a)?;
    let tokens = s.tokens();
    match (s.cancelled, &s.finish) {
        ("interrupt", _) => {
            eprintln!("[rbee-keeper] ⏹  interrupted after {tokens} tokens; the request was cancelled");
            if a.json {
                let j = JsonAnswer {
                    text: &s.text,
                    tokens,
                    finish_reason: "interrupted",
                    duration_ms: None,
                    worker_id: None,
                    node: None,
                    model_ref: None,
                };
                println!("{}", serde_json::to_string(&j).unwrap_or_default());
            }
            Ok(EXIT_INTERRUPTED)
        }
        ("timeout", _) => Err(Failure::new("llm-worker-rbee", format!("no token for {} s; the request was cancelled", a.token_timeout_secs))
            .code("TOKEN_TIMEOUT")
            .detail(format!("{tokens} tokens received before"))
            .suggest(["see the worker's health on the hive: rbee-keeper workers list (or GET /v1/workers/list)".to_string()])),
        (_, Some(reason)) => {
            let secs = s.duration.as_secs_f64();
            eprintln!(
                "[rbee-keeper] ✅ {tokens} tokens in {secs:.2} s on worker {} ({reason})",
                worker.id,
            );
            if a.json {
                let j = JsonAnswer {
                    text: &s.text,
                    tokens,
                    finish_reason: reason,
                    duration_ms: Some(s.duration.as_millis() as u64),
                    worker_id: Some(&worker.id),
                    node: Some(a.node()),
                    model_ref: Some(&a.model),
                };
                println!("{}", serde_json::to_string(&j).unwrap_or_default());
            }
            Ok(0)
        }
        _ => {
            let saved = save_partial(&s.text);
            let why = s.broken.map_or_else(
                || "the stream ended without an end".to_string(),
                |f| format!("{}: {}", f.component, f.message),
            );
            Err(Failure::new("llm-worker-rbee", format!("the answer stopped after {tokens} tokens: the connection to the worker ended (did it crash?)"))
                .code("STREAM_ENDED")
                .detail(why)
                .detail(match saved {
                    Some(p) => format!("what arrived is saved in {}", p.display()),
                    None => "what arrived could not be saved".into(),
                })
                .suggest(["see why: the hive's GET /v1/workers/list, then run the same command again (the hive reports how the worker ended)".to_string()]))
        }
    }
}

/// Keeps a partial answer in the data directory; its path.
fn save_partial(text: &str) -> Option<std::path::PathBuf> {
    let dir = crate::paths::data_dir().join("partial");
    std::fs::create_dir_all(&dir).ok()?;
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let p = dir.join(format!("answer-{ts}.txt"));
    std::fs::write(&p, text).ok()?;
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_by_major_and_minor() {
        assert_eq!(major_minor("0.1.0"), "0.1");
        assert_eq!(major_minor("1.12.3-rc1"), "1.12");
        assert_eq!(major_minor("2"), "2");
    }
}
