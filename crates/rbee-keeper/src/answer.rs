//! Getting an answer from a node, shared by `infer` and `run`: the options both take,
//! making the model ready (the local hive started if none answers, the download, the
//! worker build, the worker and its loading, each with progress on stderr), and streaming
//! the answer through the hive's OpenAI front door (which queues the request while the
//! model's slots are busy), so a remote node needs one tunnel and worker keys stay there.

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
use crate::names::ModelArg;
use crate::node::Conn;
use crate::progress::Bar;
use crate::registry::Registry;
use crate::report::Failure;

/// Exit status of an interrupted command.
pub(crate) const EXIT_INTERRUPTED: u8 = 130;

/// The options of every command that generates an answer.
#[derive(Debug, Clone, Args)]
pub struct AnswerOptions {
    /// The node (`localhost`, or a registered name) [default: the config's `[defaults]
    /// node`, else localhost].
    #[arg(long)]
    pub node: Option<String>,
    /// Most tokens to generate per answer (1–32768, and at most the context of the
    /// model's worker: 4096 tokens unless the worker was started with more).
    #[arg(long, default_value_t = 256)]
    pub max_tokens: u32,
    /// Sampling temperature (0 = greedy … 2).
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    /// cpu, cuda or metal [default: the config's `[defaults] backend`, else the hive's
    /// choice: a GPU when the node has one its worker can use and the model fits, else cpu].
    #[arg(long)]
    pub backend: Option<Backend>,
    /// GPU index [default: the hive's choice].
    #[arg(long)]
    pub device: Option<u32>,
    /// Seconds the model may take to load.
    #[arg(long, default_value_t = 300)]
    pub loading_timeout_secs: u64,
    /// Seconds without a token before the request is cancelled.
    #[arg(long, default_value_t = 60)]
    pub token_timeout_secs: u64,
}

fn keeper(msg: impl Into<String>) -> Failure {
    Failure::new("rbee-keeper", msg)
}

impl AnswerOptions {
    /// Fills what was not given from the config's `[defaults]`, and checks the numbers.
    pub fn with_defaults(mut self, cfg: &Config) -> Result<AnswerOptions, Failure> {
        self.node = Some(cfg.node_or_default(self.node));
        if self.backend.is_none() {
            self.backend = cfg.default_backend()?;
        }
        self.validate()?;
        Ok(self)
    }

    /// The node.
    pub fn node(&self) -> &str {
        self.node.as_deref().unwrap_or("localhost")
    }

    /// Checks everything that needs no network.
    pub fn validate(&self) -> Result<(), Failure> {
        if !(1..=32768).contains(&self.max_tokens) {
            return Err(keeper(format!(
                "--max-tokens must be between 1 and 32768, not {}",
                self.max_tokens
            ))
            .suggest(["e.g. --max-tokens 128".to_string()]));
        }
        if !self.temperature.is_finite() || !(0.0..=2.0).contains(&self.temperature) {
            return Err(keeper(format!(
                "--temperature must be between 0 and 2, not {}",
                self.temperature
            ))
            .suggest(["e.g. --temperature 0.7 (0 is greedy)".to_string()]));
        }
        if self.loading_timeout_secs == 0 || self.token_timeout_secs == 0 {
            return Err(keeper(
                "--loading-timeout-secs and --token-timeout-secs must be at least 1",
            ));
        }
        Ok(())
    }
}

/// A prompt that is empty, as an error with an example.
pub(crate) fn check_prompt(prompt: &str, example: &str) -> Result<(), Failure> {
    if prompt.trim().is_empty() {
        return Err(keeper("the prompt is empty").suggest([example.to_string()]));
    }
    Ok(())
}

/// The model ready on its node: its reference and the worker that serves it.
pub(crate) struct Ready {
    /// What the model name stood for.
    pub model_ref: ModelRef,
    /// The worker.
    pub worker: WorkerView,
}

/// Makes `model` ready on the connection's node: the hive answering (started here when
/// it is the local one), the name resolved, the model downloaded, a worker loaded.
pub(crate) fn prepare(
    conn: &Conn,
    reg: &Registry,
    model: &ModelArg,
    o: &AnswerOptions,
) -> Result<Ready, Failure> {
    let hive = &conn.hive;
    check_hive(conn, o.node(), reg)?;
    let model_ref = model.resolve(hive, o.node())?;
    let spawn = SpawnRequest {
        backend: o.backend,
        device: o.device,
        ..SpawnRequest::placed_by_hive(model_ref.clone())
    };
    let worker = worker_for(hive, &spawn)?;
    wait_loaded(hive, &worker, o)?;
    Ok(Ready { model_ref, worker })
}

/// `major.minor` of a version.
pub(crate) fn major_minor(v: &str) -> &str {
    match v.match_indices('.').nth(1) {
        Some((i, _)) => &v[..i],
        None => v,
    }
}

/// Checks the hive answers (starting the local one when none does) and speaks our version.
fn check_hive(conn: &Conn, node: &str, reg: &Registry) -> Result<(), Failure> {
    let hive = &conn.hive;
    let health = match conn.reach(reg) {
        Ok(h) => h,
        Err(e) if conn.local && e.is_unreachable() => {
            let port = hive
                .base()
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or(9200);
            crate::say!("no hive answers on this machine; starting one");
            let how = crate::local::start_hive(port)?;
            crate::say!("started rbee-hive {how}");
            hive.health()?
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

/// Follows a download's progress stream with a bar: the model's catalogue id, or the error.
pub(crate) fn follow_download(hive: &HiveClient, url: &str) -> Result<String, Failure> {
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
            DownloadProgress::Complete { model_id, .. } => {
                bar.finish(&format!(
                    "✅ model downloaded ({} in {:.1} s)",
                    crate::progress::bytes(total),
                    t0.elapsed().as_secs_f64()
                ));
                return Ok(model_id);
            }
            DownloadProgress::Error { error } => {
                bar.finish("❌ download failed");
                return Err(api_failure("rbee-hive", &ApiError { error }));
            }
            DownloadProgress::Retrying {
                attempt,
                attempts,
                reason,
                bytes_downloaded,
                bytes_total,
            } => {
                let pct = (bytes_downloaded * 100)
                    .checked_div(bytes_total)
                    .unwrap_or(0);
                bar.finish(&format!(
                    "⚠️  {reason} at {pct} %, retrying {attempt}/{attempts}"
                ));
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
    crate::say!("🔨 building the worker on the node (minutes)");
    for e in events {
        match e? {
            BuildEvent::Building { line } if line.trim_start().starts_with("Compiling") => {
                crate::say!("  {}", line.trim());
            }
            BuildEvent::Complete { .. } => {
                crate::say!("✅ worker built");
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

/// Gets a worker for the model: reused or spawned, after its download or build.
fn worker_for(hive: &HiveClient, spawn: &SpawnRequest) -> Result<WorkerView, Failure> {
    // After a download or build the hive starts the worker itself: it is this run's.
    let mut waited = false;
    for _ in 0..4 {
        let (_, r) = hive.spawn(spawn)?;
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
                crate::say!("♻️  reusing worker {}", w.id);
            } else {
                crate::say!("🚀 started worker {}", w.id);
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
fn wait_loaded(hive: &HiveClient, worker: &WorkerView, a: &AnswerOptions) -> Result<(), Failure> {
    let id = &worker.id;
    let mut bar = Bar::new("loading");
    let t0 = Instant::now();
    let mut layers = (0u64, 0u64);
    let mut shown = false;
    loop {
        let state = match hive.worker(id) {
            Ok(v) => v.state,
            Err(ClientError::Api { status: 404, .. }) => {
                // It ended while loading: the hive's recent failures say how (asking the
                // spawn route would launch it again).
                let f = hive
                    .worker_list()?
                    .failures
                    .into_iter()
                    .find(|f| f.failure.worker_id == *id)
                    .map(|f| f.failure);
                let mut failure = Failure::new(
                    "llm-worker-rbee",
                    format!(
                        "worker {id} failed while loading: {}",
                        f.as_ref().map_or("it is gone", |f| f.exit.as_str())
                    ),
                )
                .code("MODEL_LOAD_FAILED");
                for l in f.into_iter().flat_map(|f| f.last_log_lines) {
                    failure = failure.detail(l);
                }
                return Err(failure.suggest([format!(
                    "the hive's log around it: rbee-keeper logs --node {}",
                    a.node()
                )]));
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
            crate::say!("⏳ the model's queue on the hive is full; retry {i}/3 in {wait} s");
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
pub(crate) struct Streamed {
    /// The answer.
    pub text: String,
    /// Pieces of text received (the token count when the counts did not come).
    pieces: u64,
    /// Why generation ended (`stop`, `length`).
    pub finish: Option<String>,
    /// The token counts.
    pub usage: Option<Usage>,
    /// From the answer's start to its end.
    pub duration: Duration,
    /// `interrupt` (Ctrl+C) or `timeout` (no token for too long), when cut short.
    pub cancelled: &'static str,
    /// Why the stream broke off after some of the answer had come.
    pub broken: Option<Failure>,
}

impl Streamed {
    /// Tokens generated.
    pub(crate) fn tokens(&self) -> u64 {
        self.usage
            .as_ref()
            .map_or(self.pieces, |u| u.completion_tokens.into())
    }
}

/// Sends the request through the hive's front door and prints the answer as it arrives
/// (when `print`) until it ends, Ctrl+C, or no token for `--token-timeout-secs`. In the
/// last two cases the keeper leaves, which closes the connection: the hive then cancels
/// the generation on the worker (or takes the request out of the model's queue).
pub(crate) fn stream_answer(
    hive: &HiveClient,
    req: CompletionRequest,
    raw: bool,
    print: bool,
    a: &AnswerOptions,
) -> Result<Streamed, Failure> {
    INTERRUPTED.store(false, Ordering::SeqCst);
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
    }
    let (tx, rx) = mpsc::channel();
    let hive = hive.clone();
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
            crate::say!("⏳ every slot of the model is busy; waiting in the hive's queue");
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
                if print {
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
    if print && !s.text.is_empty() {
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    }
    Ok(s)
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

/// A chat message.
pub(crate) fn message(role: &str, text: &str) -> RequestMessage {
    RequestMessage {
        role: role.into(),
        content: Some(Content::Text(text.to_owned())),
        name: None,
        other: Default::default(),
    }
}

/// What to send: a conversation, or raw text to continue.
pub(crate) enum Input {
    /// Chat messages, rendered with the model's own template on the worker.
    Chat(Vec<RequestMessage>),
    /// Text to continue.
    Raw(String),
}

/// The request for the hive's front door, streamed with the token counts at the end.
pub(crate) fn request(model_ref: &ModelRef, input: Input, o: &AnswerOptions) -> CompletionRequest {
    let (prompt, messages) = match input {
        Input::Raw(text) => (Some(OneOrMany::One(text)), None),
        Input::Chat(messages) => (None, Some(messages)),
    };
    CompletionRequest {
        model: Some(model_ref.to_string()),
        prompt,
        messages,
        max_tokens: Some(o.max_tokens.into()),
        temperature: Some(o.temperature.into()),
        stream: Some(true),
        stream_options: Some(StreamOptions {
            include_usage: Some(true),
        }),
        ..CompletionRequest::default()
    }
}

/// `--json`'s document for one answer.
#[derive(Serialize)]
struct JsonAnswer<'a> {
    text: &'a str,
    tokens: u64,
    finish_reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    worker_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_ref: Option<&'a ModelRef>,
}

/// How one answer ended, for the user: a summary on stderr (the document on stdout with
/// `json`), and the exit status — 0, 130 after Ctrl+C, or the failure.
pub(crate) fn conclude(
    s: &Streamed,
    ready: &Ready,
    o: &AnswerOptions,
    json: bool,
) -> Result<u8, Failure> {
    let tokens = s.tokens();
    let prompt_tokens = s.usage.as_ref().map(|u| u.prompt_tokens);
    match (s.cancelled, &s.finish) {
        ("interrupt", _) => {
            crate::say!("⏹  interrupted after {tokens} tokens; the request was cancelled");
            if json {
                let j = JsonAnswer {
                    text: &s.text,
                    tokens,
                    finish_reason: "interrupted",
                    prompt_tokens: None,
                    duration_ms: None,
                    worker_id: None,
                    node: None,
                    model_ref: None,
                };
                println!("{}", serde_json::to_string(&j).unwrap_or_default());
            }
            Ok(EXIT_INTERRUPTED)
        }
        ("timeout", _) => Err(Failure::new("llm-worker-rbee", format!("no token for {} s; the request was cancelled", o.token_timeout_secs))
            .code("TOKEN_TIMEOUT")
            .detail(format!("{tokens} tokens received before"))
            .suggest([format!("see the worker's health and log: rbee-keeper workers list --node {0}, then rbee-keeper logs --node {0} --worker {1}", o.node(), ready.worker.id)])),
        (_, Some(reason)) => {
            let secs = s.duration.as_secs_f64();
            crate::say!(
                "✅ {tokens} tokens in {secs:.2} s on worker {} ({reason})",
                ready.worker.id,
            );
            if json {
                let j = JsonAnswer {
                    text: &s.text,
                    tokens,
                    finish_reason: reason,
                    prompt_tokens,
                    duration_ms: Some(s.duration.as_millis() as u64),
                    worker_id: Some(&ready.worker.id),
                    node: Some(o.node()),
                    model_ref: Some(&ready.model_ref),
                };
                println!("{}", serde_json::to_string(&j).unwrap_or_default());
            }
            Ok(0)
        }
        _ => Err(broken_off(s, o)),
    }
}

/// An answer that stopped without an end (the worker crashed or the connection broke):
/// what arrived is saved, the error says where.
pub(crate) fn broken_off(s: &Streamed, o: &AnswerOptions) -> Failure {
    let tokens = s.tokens();
    let saved = save_partial(&s.text);
    let why = s.broken.as_ref().map_or_else(
        || "the stream ended without an end".to_string(),
        |f| format!("{}: {}", f.component, f.message),
    );
    Failure::new("llm-worker-rbee", format!("the answer stopped after {tokens} tokens: the connection to the worker ended (did it crash?)"))
        .code("STREAM_ENDED")
        .detail(why)
        .detail(match saved {
            Some(p) => format!("what arrived is saved in {}", p.display()),
            None => "what arrived could not be saved".into(),
        })
        .suggest([format!("see why: rbee-keeper workers list --node {}, then run the same command again (the hive reports how the worker ended)", o.node())])
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
