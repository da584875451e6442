//! `rbee-keeper infer`: a prompt to a streamed answer on any node, starting what is
//! missing on the way (the local hive, the model's download, the worker), with progress on
//! stderr and nothing but the answer on stdout.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Value};

use crate::client::{Answer, Client};
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
    pub model: String,
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
    pub backend: Option<String>,
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
    /// Whether the backend came from the config (for error messages).
    #[arg(skip)]
    pub backend_from_config: bool,
}

impl InferArgs {
    /// Fills what was not given from the config's `[defaults]`.
    pub fn with_defaults(mut self, cfg: &Config) -> InferArgs {
        self.node = Some(cfg.node_or_default(self.node));
        if self.backend.is_none() {
            self.backend_from_config = cfg.defaults.backend.is_some();
            self.backend = cfg.defaults.backend.clone();
        }
        self
    }

    /// The node.
    pub fn node(&self) -> &str {
        self.node.as_deref().unwrap_or("localhost")
    }

    /// The backend.
    pub fn backend(&self) -> &str {
        self.backend.as_deref().unwrap_or("cpu")
    }
}

fn keeper(msg: impl Into<String>) -> Failure {
    Failure::new("rbee-keeper", msg)
}

/// Checks everything that needs no network.
pub fn validate(a: &InferArgs) -> Result<(), Failure> {
    if let Err(e) = rbee_models::reference::ModelRef::parse(&a.model) {
        return Err(keeper(e.error.message).suggest([
            "e.g. --model hf:HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:Q4_K_M".to_string(),
            "or   --model file:///models/smollm2.gguf".to_string(),
        ]));
    }
    if !["cpu", "cuda", "metal"].contains(&a.backend()) {
        let origin = if a.backend_from_config {
            " ([defaults] backend in the config)"
        } else {
            ""
        };
        return Err(keeper(format!("unknown backend {:?}{origin}", a.backend()))
            .detail("accepted: cpu, cuda, metal")
            .suggest(["e.g. --backend cuda --device 0".to_string()]));
    }
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
fn check_hive(hive: &Client, node: &str, local: bool) -> Result<(), Failure> {
    let health = match hive.call("GET", "/v1/health", None) {
        Ok(Answer::Ok(_, v)) => v,
        Ok(Answer::Err(_, e)) => return Err(hive.failure(&e)),
        Err(_) if local => {
            let port = hive
                .base
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or(9200);
            eprintln!("[rbee-keeper] no hive answers on this machine; starting one");
            let how = crate::local::start_hive(port)?;
            eprintln!("[rbee-keeper] started rbee-hive {how}");
            return check_hive(hive, node, false);
        }
        Err(f) => {
            return Err(f.suggest([
                format!("is rbee-hive running on {node}? (systemctl status rbee-hive there)"),
                "check the node's address and port: rbee-keeper setup list-nodes".to_string(),
            ]))
        }
    };
    let theirs = health["version"].as_str().unwrap_or("?");
    let ours = env!("CARGO_PKG_VERSION");
    if major_minor(theirs) != major_minor(ours) {
        return Err(keeper(format!(
            "VERSION_MISMATCH: rbee-keeper {ours} and rbee-hive {theirs} on {node} differ in major.minor"
        ))
        .code("VERSION_MISMATCH")
        .suggest([format!("install the same rbee version on both (rbee-hive on {node}, or this rbee-keeper)")]));
    }
    Ok(())
}

/// Follows a download's progress stream with a bar; the error, if it failed.
pub fn follow_download(hive: &Client, url: &str) -> Result<(), Failure> {
    let mut events = hive
        .stream(url, None)
        .map_err(|_| keeper("the download's progress stream could not be opened"))?;
    let mut bar = Bar::new("downloading");
    let (t0, mut total) = (Instant::now(), 0);
    while let Some(e) = events.next_json() {
        match e["stage"].as_str() {
            Some("downloading") => {
                total = e["bytes_total"].as_u64().unwrap_or(0);
                bar.bytes(
                    e["bytes_downloaded"].as_u64().unwrap_or(0),
                    total,
                    e["speed_mbps"].as_f64().unwrap_or(0.0),
                )
            }
            Some("complete") => {
                bar.finish(&format!(
                    "✅ model downloaded ({} in {:.1} s)",
                    crate::progress::bytes(total),
                    t0.elapsed().as_secs_f64()
                ));
                return Ok(());
            }
            Some("error") => {
                bar.finish("❌ download failed");
                return Err(from_error_value(hive, &e["error"]));
            }
            _ => {}
        }
    }
    Err(keeper("the download's progress stream ended early"))
}

/// Follows a worker build, showing cargo's `Compiling` lines.
fn follow_build(hive: &Client, url: &str) -> Result<(), Failure> {
    let mut events = hive
        .stream(url, None)
        .map_err(|_| keeper("the build's progress stream could not be opened"))?;
    eprintln!("[rbee-keeper] 🔨 building the worker on the node (minutes)");
    while let Some(e) = events.next_json() {
        match e["stage"].as_str() {
            Some("building") => {
                if let Some(l) = e["line"]
                    .as_str()
                    .filter(|l| l.trim_start().starts_with("Compiling"))
                {
                    eprintln!("[rbee-keeper]   {}", l.trim());
                }
            }
            Some("complete") => {
                eprintln!("[rbee-keeper] ✅ worker built");
                return Ok(());
            }
            Some("error") => return Err(from_error_value(hive, &e["error"])),
            _ => {}
        }
    }
    Err(keeper("the build's progress stream ended early"))
}

fn from_error_value(c: &Client, e: &Value) -> Failure {
    match serde_json::from_value::<rbee_types::ErrorBody>(e.clone()) {
        Ok(body) => c.failure(&rbee_types::ApiError { error: body }),
        Err(_) => Failure::new(c.component, e.to_string()),
    }
}

/// Gets a worker for the model: reused or spawned, after its download or build.
fn worker_for(hive: &Client, a: &InferArgs) -> Result<Value, Failure> {
    let body = json!({"model_ref": a.model, "backend": a.backend(), "device": a.device});
    // After a download or build the hive starts the worker itself: it is this run's.
    let mut waited = false;
    for _ in 0..4 {
        let (_, r) = hive.json("POST", "/v1/workers/spawn", Some(&body))?;
        if let Some(f) = r.get("previous_failure").filter(|f| !f.is_null()) {
            if r["worker"].is_null() && r["download"].is_null() && r["build"].is_null() {
                return Err(Failure::new(
                    "rbee-hive",
                    format!(
                        "the model's last worker failed: {}",
                        f["exit"].as_str().unwrap_or("?")
                    ),
                )
                .suggest([
                    "see its log: the hive's /v1/workers/{id}/logs, or journalctl on the node"
                        .to_string(),
                ]));
            }
        }
        if !r["worker"].is_null() {
            if r["reused"] == true && !waited {
                eprintln!(
                    "[rbee-keeper] ♻️  reusing worker {}",
                    r["worker"]["id"].as_str().unwrap_or("?")
                );
            } else {
                eprintln!(
                    "[rbee-keeper] 🚀 started worker {}",
                    r["worker"]["id"].as_str().unwrap_or("?")
                );
            }
            return Ok(r["worker"].clone());
        }
        if let Some(url) = r["download"]["progress_url"].as_str() {
            follow_download(hive, url)?;
        } else if let Some(url) = r["build"]["progress_url"].as_str() {
            follow_build(hive, url)?;
        }
        waited = true;
    }
    Err(keeper("the hive did not start a worker for the model"))
}

/// Waits until the hive reports the worker ready, showing the layers it loads (from the
/// worker's own progress stream once it listens).
fn wait_loaded(hive: &Client, w: &Client, worker: &Value, a: &InferArgs) -> Result<(), Failure> {
    let id = worker["id"].as_str().unwrap_or("");
    let mut bar = Bar::new("loading");
    let t0 = Instant::now();
    let mut layers = (0u64, 0u64);
    let mut shown = false;
    loop {
        let state = match hive.call("GET", &format!("/v1/workers/{id}"), None)? {
            Answer::Ok(_, v) => v["worker"]["state"].as_str().unwrap_or("").to_owned(),
            Answer::Err(404, _) => {
                // It ended while loading: the next spawn says how.
                let (_, r) = hive.json(
                    "POST",
                    "/v1/workers/spawn",
                    Some(
                        &json!({"model_ref": a.model, "backend": a.backend(), "device": a.device}),
                    ),
                )?;
                let f = &r["previous_failure"];
                let mut failure = Failure::new(
                    "llm-worker-rbee",
                    format!(
                        "worker {id} failed while loading: {}",
                        f["exit"].as_str().unwrap_or("it is gone")
                    ),
                );
                for l in f["last_log_lines"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                {
                    failure = failure.detail(l);
                }
                return Err(failure);
            }
            Answer::Err(_, e) => return Err(hive.failure(&e)),
        };
        if state == "idle" || state == "busy" {
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
        // The worker's own stream, while it lasts (it ends when the model is loaded).
        if let Ok(mut events) = w.stream("/v1/loading/progress", None) {
            while let Some(e) = events.next_json() {
                if e["stage"] == "ready" {
                    break;
                }
                layers = (
                    e["layers_loaded"].as_u64().unwrap_or(0),
                    e["layers_total"].as_u64().unwrap_or(0),
                );
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

enum Msg {
    Event(Value),
    End,
}

/// Runs `infer`; the exit status.
pub fn run(a: &InferArgs, cfg: &Config, reg: &Registry) -> Result<u8, Failure> {
    validate(a)?;
    let conn = Conn::open(a.node(), cfg, reg)?;
    let hive = &conn.hive;
    check_hive(hive, a.node(), conn.local)?;
    let worker = worker_for(hive, a)?;
    let wclient = conn.worker(
        worker["url"].as_str().unwrap_or(""),
        worker["api_key"].as_str().map(str::to_owned),
    )?;
    wait_loaded(hive, &wclient, &worker, a)?;
    let mut body =
        json!({"max_tokens": a.max_tokens, "temperature": a.temperature, "stream": true});
    if a.raw {
        body["prompt"] = json!(a.prompt);
    } else {
        body["messages"] = json!([{"role": "user", "content": a.prompt}]);
    }
    // Busy: three retries, after 1, 2 and 4 s.
    let mut events = None;
    for (i, wait) in [0u64, 1, 2, 4].iter().enumerate() {
        if *wait > 0 {
            eprintln!("[rbee-keeper] ⏳ every slot of the worker is busy; retry {i}/3 in {wait} s");
            std::thread::sleep(Duration::from_secs(*wait));
        }
        match wclient.stream("/v1/inference", Some(&body)) {
            Ok(ev) => {
                events = Some(ev);
                break;
            }
            Err(Answer::Err(503, e)) if e.error.code == rbee_types::ErrorCode::AllSlotsBusy => {
                continue
            }
            Err(Answer::Err(_, e)) => return Err(wclient.failure(&e)),
            Err(Answer::Ok(..)) => unreachable!("stream errors are errors"),
        }
    }
    let Some(mut events) = events else {
        return Err(Failure::new(
            "llm-worker-rbee",
            "every slot of the worker stayed busy (retried after 1, 2 and 4 s)",
        )
        .code("ALL_SLOTS_BUSY")
        .suggest([
            "try again in a moment".to_string(),
            "or start the worker with more slots (POST /v1/workers/spawn with \"slots\")"
                .to_string(),
        ]));
    };
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        while let Some(e) = events.next_json() {
            if tx.send(Msg::Event(e)).is_err() {
                return;
            }
        }
        let _ = tx.send(Msg::End);
    });
    let (mut text, mut tokens, mut request_id, mut done) =
        (String::new(), 0u64, None::<String>, None::<Value>);
    let mut last = Instant::now();
    let mut out = std::io::stdout().lock();
    let mut cancel_sent: Option<Instant> = None;
    let mut why_cancelled = "";
    loop {
        if cancel_sent.is_none() {
            let timed_out = last.elapsed() > Duration::from_secs(a.token_timeout_secs);
            if INTERRUPTED.load(Ordering::SeqCst) || timed_out {
                why_cancelled = if timed_out { "timeout" } else { "interrupt" };
                // Both the cancel and the end of the stream within 5 s of starting it.
                cancel_sent = Some(Instant::now());
                if let Some(id) = &request_id {
                    let _ = wclient.with_timeout(Duration::from_secs(5)).call(
                        "DELETE",
                        &format!("/v1/inference/{id}"),
                        None,
                    );
                }
            }
        } else if cancel_sent.is_some_and(|t| t.elapsed() > Duration::from_secs(5)) {
            break;
        }
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Msg::Event(e)) => {
                if let Some(id) = e["request_id"].as_str() {
                    request_id = Some(id.to_owned());
                } else if let Some(t) = e["token"].as_str() {
                    text.push_str(t);
                    tokens += 1;
                    last = Instant::now();
                    if !a.json {
                        let _ = out.write_all(t.as_bytes());
                        let _ = out.flush();
                    }
                } else if e["done"] == true {
                    done = Some(e);
                } else if !e["error"].is_null() {
                    drop(out);
                    return Err(from_error_value(&wclient, &e["error"]));
                }
            }
            Ok(Msg::End) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    if !a.json && !text.is_empty() {
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    }
    drop(out);
    match (why_cancelled, &done) {
        ("interrupt", _) => {
            eprintln!("[rbee-keeper] ⏹  interrupted after {tokens} tokens; the request was cancelled on the worker");
            if a.json {
                println!("{}", json!({"text": text, "tokens": tokens, "finish_reason": "interrupted"}));
            }
            Ok(EXIT_INTERRUPTED)
        }
        ("timeout", _) => Err(Failure::new("llm-worker-rbee", format!("no token for {} s; the request was cancelled", a.token_timeout_secs))
            .code("TOKEN_TIMEOUT")
            .detail(format!("{tokens} tokens received before"))
            .suggest(["see the worker's health on the hive: rbee-keeper workers list (or GET /v1/workers/list)".to_string()])),
        (_, Some(d)) => {
            let ms = d["duration_ms"].as_u64().unwrap_or(0);
            eprintln!(
                "[rbee-keeper] ✅ {tokens} tokens in {:.2} s on worker {} ({})",
                ms as f64 / 1000.0,
                worker["id"].as_str().unwrap_or("?"),
                d["finish_reason"].as_str().unwrap_or("?")
            );
            if a.json {
                println!(
                    "{}",
                    json!({"text": text, "tokens": tokens, "finish_reason": d["finish_reason"], "duration_ms": ms,
                           "worker_id": worker["id"], "node": a.node(), "model_ref": a.model})
                );
            }
            Ok(0)
        }
        _ => {
            let saved = save_partial(&text);
            Err(Failure::new("llm-worker-rbee", format!("the answer stopped after {tokens} tokens: the connection to the worker ended (did it crash?)"))
                .code("STREAM_ENDED")
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
