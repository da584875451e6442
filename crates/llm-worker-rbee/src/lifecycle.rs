//! The worker's life: check the model file, bind the port, load the model, tell systemd
//! and the hive, serve, and drain on SIGTERM or `/v1/admin/shutdown`.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::Context;
use rbee_gguf::GgufHeader;
use rbee_http::daemon::{block_termination_signals, notify, status_tick, wait_for_termination};
use rbee_types::env;
use rbee_types::exit;
use rbee_types::worker::{ctx_per_slot, ReadyCallback, WorkerInfo, DEFAULT_CTX_CAP};
use sd_notify::NotifyState;

use crate::app::{App, ShutdownCause};
use crate::cli::{compiled_in, Args, Backend};
use crate::engine::{metadata_from_header, Engine, EngineConfig};
use crate::http::{serve, LIMITS};
use crate::state::{Phase, Shared};
use rbee_llama::physical_cores;

/// Runs the worker; returns the process exit code (see [`rbee_types::exit`]).
pub fn run(args: Args) -> i32 {
    init_tracing();
    match run_inner(args) {
        Ok(code) => code,
        Err(e) => {
            rbee_http::logging::fatal("llm-worker-rbee: error", &format!("{e:#}"));
            exit::FAILURE
        }
    }
}

fn init_tracing() {
    rbee_http::logging::init("info,llama_cpp_2=warn,llama-cpp-2=warn");
    llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
}

/// The KV cache of `--slots` × `--ctx-size` fits in the memory available (CPU workers; a
/// GPU keeps it in VRAM). Without this check llama.cpp allocates the cache, clears it, and
/// the kernel kills the process once RAM runs out; the hive checks more (the model too)
/// before it starts a worker, this covers a worker run alone. Counts only what the
/// model's header gives.
fn fits_in_memory(args: &Args, header: &GgufHeader, available: u64) -> Result<(), String> {
    let trained = header
        .context_length()
        .map_or(DEFAULT_CTX_CAP, |c| u32::try_from(c).unwrap_or(u32::MAX));
    let ctx = ctx_per_slot(args.ctx_size, trained);
    let Some(kv) = header.kv_cache_bytes(args.slots, ctx) else {
        return Ok(());
    };
    // Only the cache must fit: llama.cpp writes all of it, while the model is mapped from
    // its file and can be paged (slowly) from there.
    if available == 0 || kv <= available {
        return Ok(());
    }
    let gib = |b: u64| format!("{:.2} GiB", b as f64 / f64::from(1u32 << 30));
    Err(format!(
        "not enough memory: {} slot{} of {ctx} tokens need {} of KV cache and {} is \
         available; use fewer --slots or a smaller --ctx-size",
        args.slots,
        if args.slots == 1 { "" } else { "s" },
        gib(kv),
        gib(available),
    ))
}

/// Prints a fatal error for a person (stderr, and journald through tracing) and returns
/// the exit code.
/// The message a panic carried.
fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

fn fatal(code: i32, msg: String) -> i32 {
    rbee_http::logging::fatal("llm-worker-rbee: error", &msg);
    code
}

fn run_inner(args: Args) -> anyhow::Result<i32> {
    block_termination_signals();
    // A key file that is missing or empty is a configuration error: exit 2, which the
    // packaged unit does not restart (RestartPreventExitStatus).
    let api_key = match load_api_key(&args) {
        Ok(k) => k,
        Err(e) => return Ok(fatal(exit::USAGE, format!("{e:#}"))),
    };
    if api_key.is_none() && !args.host.is_loopback() {
        tracing::warn!(host = %args.host, "listening beyond loopback without an API key: anyone who can reach the port can use the model; give --api-key-file or RBEE_WORKER_API_KEY");
    }

    if !compiled_in(args.backend) {
        return Ok(fatal(
            exit::BACKEND_UNAVAILABLE,
            format!(
                "backend {} is not available in this build; rebuild with `--features {}` or use --backend cpu",
                args.backend.as_str(),
                args.backend.as_str()
            ),
        ));
    }

    let model_file = args
        .model
        .file_name()
        .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned());
    let header = match rbee_gguf::read_header(&args.model) {
        Ok(h) => h,
        Err(e) => {
            return Ok(fatal(
                exit::MODEL_INVALID,
                format!("cannot use model {}: {e}", args.model.display()),
            ))
        }
    };

    if args.backend == Backend::Cpu {
        if let Err(msg) =
            fits_in_memory(&args, &header, rbee_metrics::host::memory().available_bytes)
        {
            return Ok(fatal(exit::INSUFFICIENT_MEMORY, msg));
        }
    }

    let server = match rbee_http::Server::bind(SocketAddr::new(args.host, args.port), LIMITS) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            let in_use = e.kind() == ErrorKind::AddrInUse;
            return Ok(if in_use {
                fatal(
                    exit::PORT_IN_USE,
                    format!(
                        "port {} on {} is already in use by another process; choose another --port",
                        args.port, args.host
                    ),
                )
            } else {
                fatal(
                    exit::FAILURE,
                    format!("cannot listen on {}:{}: {e}", args.host, args.port),
                )
            });
        }
    };
    let addr = server.local_addr();
    let base_url = format!("http://{addr}");
    tracing::info!(url = %base_url, model = %model_file, "listening");

    let worker_id = args
        .worker_id
        .clone()
        .unwrap_or_else(|| format!("worker-{}", std::process::id()));
    let info = WorkerInfo {
        id: worker_id.clone(),
        model_ref: args.model_ref.clone(),
        model_file,
        backend: args.backend,
        device: args.device,
        slots: args.slots,
        ctx_size: args.ctx_size.unwrap_or(0),
        version: env!("CARGO_PKG_VERSION").into(),
        model: Some(metadata_from_header(&header)),
    };
    let shared = Arc::new(Shared::new(
        info,
        api_key.clone(),
        base_url.clone(),
        args.max_body_bytes,
        server.connections(),
    ));
    shared.update_load(|l| l.layers_total = header.layers().unwrap_or(0));
    let engine = Engine::new();
    let (shutdown_tx, shutdown_rx) = mpsc::channel();
    let gpu = args.backend != Backend::Cpu;
    let app = Arc::new(App {
        shared: Arc::clone(&shared),
        engine: Arc::clone(&engine),
        shutdown: shutdown_tx.clone(),
        gpu,
        guard: rbee_http::guard::Guard::new(args.host, api_key.is_some(), &[], &[]),
        open_metrics: args.open_metrics,
    });

    spawn_signal_thread(shutdown_tx.clone());
    let http = {
        let (server, app) = (Arc::clone(&server), Arc::clone(&app));
        std::thread::Builder::new()
            .name("http-accept".into())
            .spawn(move || serve(&server, &app))?
    };
    if let Some(hive) = args.hive_url.clone() {
        let cb = ReadyCallback {
            worker_id,
            url: base_url,
            model_ref: args.model_ref.clone(),
            backend: args.backend,
            device: args.device,
        };
        let key = api_key.clone();
        std::thread::spawn(move || hive_callback(&hive, &cb, key.as_deref()));
    }

    let cfg = EngineConfig {
        model_path: args.model.clone(),
        backend: args.backend,
        device: args.device,
        slots: args.slots,
        ctx_size: args.ctx_size,
        threads: args.threads.unwrap_or_else(physical_cores),
        prompt_cache: !args.no_prompt_cache,
    };
    notify(&[NotifyState::Status(&format!(
        "loading model ({} layers)",
        header.layers().unwrap_or(0)
    ))]);
    let engine_thread = {
        let (engine, shared, tx) = (
            Arc::clone(&engine),
            Arc::clone(&shared),
            shutdown_tx.clone(),
        );
        std::thread::Builder::new()
            .name("engine".into())
            .spawn(move || {
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    engine.run(&cfg, &shared)
                }));
                let failed = match run {
                    Ok(Ok(())) => return,
                    Ok(Err(e)) => format!("{e:#}"),
                    // A panic must not leave the worker stuck in `loading` (or serving
                    // with no engine): it ends the worker at once, saying why.
                    Err(p) => format!(
                        "the engine stopped on an internal error: {}",
                        panic_message(&p)
                    ),
                };
                let loading = shared.phase() == Phase::Loading;
                tracing::error!(
                    "{}: {failed}",
                    if loading {
                        "model load failed"
                    } else {
                        "engine failed"
                    }
                );
                shared.update_load(|l| l.error = Some(failed.clone()));
                shared.set_phase(Phase::Failed);
                shared.cancel_all();
                let _ = tx.send(if loading {
                    ShutdownCause::LoadFailed
                } else {
                    ShutdownCause::EngineFailed
                });
            })?
    };
    let status_thread = spawn_status_thread(Arc::clone(&shared));

    let cause = shutdown_rx.recv().unwrap_or(ShutdownCause::Signal);
    if cause == ShutdownCause::LoadFailed {
        notify(&[NotifyState::Stopping]);
        server.unblock();
        let _ = engine_thread.join();
        return Ok(fatal(
            exit::MODEL_INVALID,
            format!(
                "llama.cpp could not load the model {}",
                args.model.display()
            ),
        ));
    }
    if cause == ShutdownCause::EngineFailed {
        notify(&[NotifyState::Stopping]);
        server.unblock();
        return Ok(fatal(
            exit::FAILURE,
            "the inference engine failed; the worker stops".into(),
        ));
    }
    tracing::info!(?cause, "draining");
    notify(&[NotifyState::Stopping, NotifyState::Status("draining")]);
    shared.set_phase(Phase::Draining);
    let deadline = Instant::now() + Duration::from_secs(args.drain_timeout);
    while shared.slots.busy() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if shared.slots.busy() > 0 {
        tracing::warn!(
            busy = shared.slots.busy(),
            "drain deadline reached; cancelling active requests"
        );
        shared.cancel_all();
    }
    engine.shutdown();
    let _ = engine_thread.join();
    // Let handler threads write their last events before the listener goes away.
    let until = Instant::now() + Duration::from_secs(2);
    while server.in_flight() > 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    server.unblock();
    let _ = http.join();
    drop(status_thread);
    tracing::info!("stopped");
    Ok(exit::OK)
}

fn load_api_key(args: &Args) -> anyhow::Result<Option<String>> {
    let key = match &args.api_key_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --api-key-file {}", path.display()))?,
        ),
        None => match std::env::var(env::WORKER_API_KEY) {
            Ok(key) => Some(key),
            // systemd's LoadCredential= (how rbee-hive hands the key to a system unit).
            Err(_) => match std::env::var_os("CREDENTIALS_DIRECTORY") {
                Some(dir) => {
                    let path = std::path::Path::new(&dir).join(env::API_KEY_CREDENTIAL);
                    match std::fs::read_to_string(&path) {
                        Ok(key) => Some(key),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                        Err(e) => {
                            return Err(e)
                                .with_context(|| format!("cannot read {}", path.display()))
                        }
                    }
                }
                None => None,
            },
        },
    };
    let key = key.map(|k| k.trim().to_owned());
    if key.as_deref() == Some("") {
        anyhow::bail!(
            "the API key is empty; put the key in the file or unset {}",
            env::WORKER_API_KEY
        );
    }
    Ok(key)
}

/// READY=1 once the model is in, then STATUS= every 2 s and WATCHDOG=1 when asked for.
fn spawn_status_thread(shared: Arc<Shared>) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("status".into())
        .spawn(move || {
            let (watchdog, tick) = status_tick();
            let mut told_ready = false;
            let (mut last_tokens, mut last_at) = (0u64, Instant::now());
            loop {
                let phase = shared.phase();
                let status = match phase {
                    Phase::Loading => {
                        let l = crate::state::lock(&shared.load).clone();
                        format!(
                            "loading model: {}/{} layers",
                            l.layers_loaded, l.layers_total
                        )
                    }
                    Phase::Ready => {
                        let tokens = shared.tokens_generated.load(Ordering::Relaxed);
                        let rate = (tokens - last_tokens) as f64
                            / last_at.elapsed().as_secs_f64().max(1e-3);
                        (last_tokens, last_at) = (tokens, Instant::now());
                        let busy = shared.slots.busy();
                        let cached: u64 = crate::state::lock(&shared.cache)
                            .slots
                            .iter()
                            .map(|s| s.cached_tokens)
                            .sum();
                        format!(
                            "{}, {busy}/{} slots busy, {rate:.0} tok/s, {cached} tokens cached",
                            if busy == 0 { "idle" } else { "busy" },
                            shared.slots.total()
                        )
                    }
                    Phase::Draining => "draining".to_owned(),
                    Phase::Failed => return,
                };
                if phase == Phase::Ready && !told_ready {
                    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
                    told_ready = true;
                } else {
                    notify(&[NotifyState::Status(&status)]);
                }
                if watchdog {
                    notify(&[NotifyState::Watchdog]);
                }
                // Wake at once when the phase changes: READY=1 must not wait for a tick
                // (the hive measures spawn latency up to it).
                let guard = crate::state::lock(&shared.load);
                let _ = shared
                    .changed
                    .wait_timeout_while(guard, tick, |_| shared.phase() == phase);
            }
        })
        .expect("spawning the status thread")
}

fn spawn_signal_thread(tx: mpsc::Sender<ShutdownCause>) {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            let sig = wait_for_termination();
            tracing::info!(signal = sig, "termination signal received");
            let _ = tx.send(ShutdownCause::Signal);
        })
        .expect("spawning the signal thread");
}

/// Tells the hive where this worker listens; retried a few times, never fatal.
/// The worker's own key is its credential towards the hive.
fn hive_callback(hive: &str, cb: &ReadyCallback, key: Option<&str>) {
    let url = format!("{}/v1/workers/ready", hive.trim_end_matches('/'));
    for attempt in 1..=5u32 {
        let mut req = ureq::post(&url).timeout(Duration::from_secs(5));
        if let Some(key) = key {
            req = req.set("Authorization", &format!("Bearer {key}"));
        }
        match req.send_json(serde_json::to_value(cb).unwrap_or_default()) {
            Ok(_) => {
                tracing::info!(%url, "registered with the hive");
                return;
            }
            Err(e) => {
                tracing::warn!(%url, attempt, error = %e, "hive callback failed");
                std::thread::sleep(Duration::from_millis(200 * u64::from(attempt)));
            }
        }
    }
}
