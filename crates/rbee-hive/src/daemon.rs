//! The daemon's life: configuration → supervisor → listen → adopt → `READY=1` → serve and
//! watch → SIGTERM → `STOPPING=1` → stop workers (in parallel, bounded) → exit 0.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rbee_http::daemon::{block_termination_signals, notify, status_tick, wait_for_termination};
use rbee_types::exit;
use sd_notify::NotifyState;

use crate::config::{Config, WorkerLogs};
use crate::hive::Hive;
use crate::{api, monitor, supervisor};
use rbee_models::provisioner::Ensured;

/// Runs the daemon; returns the process exit code.
pub fn run(config: Config) -> i32 {
    block_termination_signals();
    match run_inner(config) {
        Ok(()) => exit::OK,
        Err(e) => {
            let code = if e.downcast_ref::<PortInUse>().is_some() {
                exit::PORT_IN_USE
            } else if e.downcast_ref::<Misconfigured>().is_some() {
                exit::USAGE
            } else {
                exit::FAILURE
            };
            rbee_http::logging::fatal("rbee-hive", &format!("{e:#}"));
            code
        }
    }
}

/// A `default_backend` this machine lacks fails every spawn that names no backend (all of
/// the front door's): the operator hears of it at start, not from the first client.
fn warn_if_default_backend_is_missing(config: &Config) {
    use crate::placement::DefaultBackend;
    let wanted = match config.default_backend {
        DefaultBackend::Cuda => rbee_types::Backend::Cuda,
        DefaultBackend::Metal => rbee_types::Backend::Metal,
        DefaultBackend::Auto | DefaultBackend::Cpu => return,
    };
    let Some(missing) = crate::resources::backends()
        .into_iter()
        .find(|b| b.name == wanted && !b.available)
    else {
        return;
    };
    let why = missing.reason.unwrap_or_else(|| "no device".into());
    tracing::warn!(
        default_backend = %wanted,
        "default_backend = \"{wanted}\", but {wanted} is not available here ({why}): every request that names no backend, all OpenAI ones included, will fail; set default_backend = \"auto\" or \"cpu\""
    );
}

#[derive(Debug, thiserror::Error)]
#[error("port {0} is in use: another rbee-hive may be running; choose another with --port")]
struct PortInUse(u16);

/// A failure of the configuration itself (a key file that is missing or empty, no worker
/// binary at the configured path): exit 2, which the packaged unit does not restart
/// (`RestartPreventExitStatus=2 3`) — it would fail the same way until the
/// configuration changes.
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
struct Misconfigured(anyhow::Error);

fn misconfigured(e: anyhow::Error) -> anyhow::Error {
    anyhow::Error::new(Misconfigured(e))
}

fn run_inner(config: Config) -> anyhow::Result<()> {
    let api_key = read_api_key(config.api_key_file.as_deref()).map_err(misconfigured)?;
    if api_key.is_none() && !config.host.is_loopback() {
        tracing::warn!(host = %config.host, "the API listens beyond loopback without an API key: anyone who can reach it can start workers");
    }
    warn_if_default_backend_is_missing(&config);
    // With a git source the hive builds its workers, and an installed one is optional.
    let installed = match find_worker_binary(config.worker_binary.as_deref()) {
        Ok(p) => Some(p),
        Err(_) if config.worker_source.is_some() && config.worker_binary.is_none() => None,
        Err(e) => return Err(misconfigured(e)),
    };
    writable_state_dir(&config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("rbee-hive-rt")
        .enable_all()
        .build()?;
    let (events_tx, mut events_rx) = tokio::sync::mpsc::unbounded_channel();
    let runtime_dir = config.state_dir.join("run");
    let (supervisor, reason) = rt.block_on(supervisor::choose(
        config.supervisor,
        events_tx,
        runtime_dir,
    ))?;
    tracing::info!(supervisor = supervisor.name(), %reason, "supervisor chosen");
    let journal = match config.worker_logs {
        WorkerLogs::File => false,
        WorkerLogs::Journal => supervisor.is_systemd(),
        WorkerLogs::Auto => {
            supervisor.is_systemd() && Path::new("/run/systemd/journal/socket").exists()
        }
    };

    let addr = SocketAddr::new(config.host, config.port);
    let server = Arc::new(listen(addr)?);
    let host = if config.host.is_unspecified() {
        "127.0.0.1".to_owned()
    } else if config.host.is_ipv6() {
        format!("[{}]", config.host)
    } else {
        config.host.to_string()
    };
    let hive_url = format!("http://{host}:{}", config.port);
    let mut hub = rbee_models::hub::HubConfig::from_env();
    hub.stall = Duration::from_secs(config.download_stall_secs);
    hub.attempts = config.download_attempts;
    tracing::info!(endpoint = %hub.endpoint, token = hub.token.is_some(), "Hugging Face hub");
    let system = supervisor.name() == "systemd-system";
    let models =
        rbee_models::provisioner::Provisioner::open(&config.state_dir, &config.models_dir(), hub)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .with_file_dirs(&config.file_model_dirs(system));
    let binaries = rbee_binaries::Builder::open(rbee_binaries::BuilderConfig {
        state_dir: config.state_dir.clone(),
        source: config.worker_source.clone(),
        installed,
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(src) = &config.worker_source {
        tracing::info!(git_url = %src.git_url, git_ref = %src.git_ref, "workers are built from git");
    }
    let hive = Arc::new(Hive::new(
        config,
        api_key,
        supervisor,
        rt.handle().clone(),
        binaries,
        hive_url.clone(),
        journal,
        Arc::new(models),
    ));
    let _ = hive.me.set(Arc::downgrade(&hive));
    let _ = hive.connections.set(server.connections());
    {
        let me = Arc::downgrade(&hive);
        hive.binaries
            .set_in_use(move |p| me.upgrade().is_some_and(|h| h.registry.uses_binary(p)));
    }
    hive.adopt();
    // Before the API opens: no request can start a worker for a model being removed.
    sync_models(&hive);

    {
        let hive = Arc::clone(&hive);
        std::thread::Builder::new()
            .name("events".into())
            .spawn(move || {
                while let Some(ev) = events_rx.blocking_recv() {
                    hive.handle(ev);
                }
            })?;
    }
    let http = {
        let (server, hive) = (Arc::clone(&server), Arc::clone(&hive));
        std::thread::Builder::new()
            .name("http-accept".into())
            .spawn(move || api::serve(&server, &hive))?
    };
    monitor::spawn(Arc::clone(&hive))?;
    notify(&[
        NotifyState::Ready,
        NotifyState::Status(&hive.registry.summary()),
    ]);
    tracing::info!(url = %hive_url, workers = hive.registry.all().len(), "rbee-hive ready");
    provision(&hive);
    spawn_status_thread(Arc::clone(&hive))?;

    let sig = wait_for_termination();
    tracing::info!(signal = sig, "termination signal received");
    notify(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping workers"),
    ]);
    hive.draining.store(true, Ordering::Release);
    if !hive.config.stop_workers_on_exit {
        tracing::info!("stop_workers_on_exit = false: workers keep running for the next hive");
    } else if rt.block_on(hive.supervisor.restarting_self()) {
        // systemctl restart, or nixos-rebuild switch with a changed unit: the next hive
        // adopts them. A stop (systemctl stop, shutdown) still stops them.
        tracing::info!("systemd restarts the hive: workers keep running for the next hive");
    } else {
        hive.stop_all("the hive is stopping");
    }
    server.unblock();
    let _ = http.join();
    tracing::info!("rbee-hive stopped");
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

fn read_api_key(path: Option<&Path>) -> anyhow::Result<Option<String>> {
    let Some(path) = path else { return Ok(None) };
    let key = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the API key file {}", path.display()))?;
    let key = key.trim().to_owned();
    anyhow::ensure!(
        !key.is_empty(),
        "the API key file {} is empty",
        path.display()
    );
    Ok(Some(key))
}

/// The configured binary, else `llm-worker-rbee` next to this executable, else on PATH.
fn find_worker_binary(configured: Option<&Path>) -> anyhow::Result<PathBuf> {
    const NAME: &str = "llm-worker-rbee";
    let candidate = match configured {
        Some(p) => p.to_path_buf(),
        None => {
            let beside = std::env::current_exe()
                .ok()
                .and_then(|e| Some(e.parent()?.join(NAME)))
                .filter(|p| p.is_file());
            let on_path = || {
                std::env::var_os("PATH").and_then(|paths| {
                    std::env::split_paths(&paths)
                        .map(|d| d.join(NAME))
                        .find(|p| p.is_file())
                })
            };
            beside.or_else(on_path).ok_or_else(|| {
                anyhow::anyhow!(
                    "cannot find {NAME} next to rbee-hive or on PATH; set worker_binary"
                )
            })?
        }
    };
    let meta = std::fs::metadata(&candidate)
        .with_context(|| format!("worker binary {}", candidate.display()))?;
    anyhow::ensure!(
        meta.is_file() && std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 != 0,
        "worker binary {} is not an executable file",
        candidate.display()
    );
    Ok(candidate)
}

fn listen(addr: SocketAddr) -> anyhow::Result<rbee_http::Server> {
    rbee_http::Server::bind(addr, api::LIMITS).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::Error::new(PortInUse(addr.port()))
        } else {
            anyhow::Error::new(e).context(format!("cannot listen on {addr}"))
        }
    })
}

/// `STATUS=3 workers: 2 idle, 1 busy` every 2 s (when it changes) and the watchdog ping.
fn spawn_status_thread(hive: Arc<Hive>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("status".into())
        .spawn(move || {
            let (watchdog, tick) = status_tick();
            let mut last = String::new();
            while !hive.draining.load(Ordering::Acquire) {
                let status = hive.registry.summary();
                if status != last {
                    notify(&[NotifyState::Status(&status)]);
                    last = status;
                }
                if watchdog {
                    notify(&[NotifyState::Watchdog]);
                }
                std::thread::sleep(tick);
            }
        })
        .map(|_| ())
}

/// With `provision_sync`, removes every catalogued model that `provision` does not name,
/// keeping those a running (adopted) worker serves; each removal and each kept model is
/// logged. The provisioner deletes only files it downloaded into the models directory.
fn sync_models(hive: &Hive) {
    if !hive.config.provision_sync {
        return;
    }
    let declared: Vec<PathBuf> = hive
        .config
        .provision
        .iter()
        .filter_map(|r| hive.models.local_path(r))
        .collect();
    let models = match hive.models.catalog().list() {
        Ok(models) => models,
        Err(e) => {
            tracing::error!(error = %e, "provision_sync: cannot read the catalogue; nothing removed");
            return;
        }
    };
    for m in models {
        if declared.iter().any(|d| same_file(d, &m.local_path)) {
            continue;
        }
        let users = hive.registry.users_of_model(&m.local_path);
        if !users.is_empty() {
            tracing::warn!(model = %m.id, workers = %users.join(", "), "provision_sync: not in provision but served by running workers; kept until a start finds it unused");
            continue;
        }
        match hive.models.remove(&m.id) {
            Ok((m, file_deleted)) => {
                tracing::info!(model = %m.id, reference = %m.reference, file_deleted, "provision_sync: removed a model that provision does not name");
            }
            Err(e) => {
                tracing::error!(model = %m.id, error = %e, "provision_sync: cannot remove");
            }
        }
    }
}

/// Whether two paths name one file (as written, or after resolving links).
fn same_file(a: &Path, b: &Path) -> bool {
    a == b
        || matches!(
            (std::fs::canonicalize(a), std::fs::canonicalize(b)),
            (Ok(x), Ok(y)) if x == y
        )
}

/// Makes the configured `provision` models present: each missing one downloads (or is
/// imported) in the background, its outcome logged.
fn provision(hive: &Arc<Hive>) {
    for reference in hive.config.provision.clone() {
        match hive.models.ensure(&reference) {
            Ok(Ensured::Ready(m)) => {
                tracing::info!(%reference, id = %m.id, "provisioned model is present");
            }
            Ok(Ensured::Downloading(t)) => {
                tracing::info!(%reference, download = %t.id, "provisioning model");
                let spawned =
                    std::thread::Builder::new()
                        .name("provision".into())
                        .spawn(move || match t.wait() {
                            Ok(path) => tracing::info!(%reference, %path, "provisioned model"),
                            Err(e) => {
                                tracing::error!(%reference, error = %e, "provisioning failed")
                            }
                        });
                if let Err(e) = spawned {
                    tracing::error!(error = %e, "cannot start a provisioning thread");
                }
            }
            Err(e) => {
                tracing::error!(%reference, error = %e, code = e.code().as_str(), "provisioning failed");
            }
        }
    }
}

/// Creates the state directory's parts and checks that it takes a file, so that a read-only
/// or foreign directory stops the start with its path and what to do, not a later request.
fn writable_state_dir(config: &Config) -> anyhow::Result<()> {
    let next = "rbee-hive keeps its catalogue, worker keys and logs there: give it a writable \
                directory with --state-dir (or state_dir in the config; under systemd the \
                unit's StateDirectory= makes one)";
    for dir in [config.workers_dir(), config.logs_dir()] {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}; {next}", dir.display()))?;
    }
    let probe = config
        .state_dir
        .join(format!(".write-check-{}", std::process::id()));
    std::fs::write(&probe, b"").with_context(|| {
        format!(
            "the state directory {} is not writable; {next}",
            config.state_dir.display()
        )
    })?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}
