//! How workers run: transient systemd units over D-Bus, or child processes where there is
//! no systemd. Both report the same [`Event`]s, so the rest of the hive does not care.

use std::path::PathBuf;
use std::time::Duration;

use rbee_supervisor::properties::ManagerKind;
use rbee_supervisor::systemd::Systemd;
use tokio::sync::mpsc::UnboundedSender;

use crate::config::SupervisorChoice;
use crate::registry::WorkerSpec;

pub(crate) mod process;
pub(crate) mod systemd;

/// Everything needed to start one worker.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    /// The record (unit name, port, model…).
    pub spec: WorkerSpec,
    /// The worker binary.
    pub binary: PathBuf,
    /// Its arguments, built by the hive from validated values; the supervisor adds how the
    /// key reaches the worker.
    pub args: Vec<String>,
    /// The 0600 file holding the worker's API key.
    pub key_path: PathBuf,
    /// Memory limit, bytes.
    pub memory_max: Option<u64>,
    /// GPU device nodes the worker may open.
    pub devices: Vec<String>,
    /// How long loading may take.
    pub load_timeout: Duration,
    /// How long a stop may take before the worker is killed.
    pub stop_timeout: Duration,
}

/// How a worker ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Exit {
    /// `exited with status 4 (exit-code)`, `killed by signal 9 (signal)`.
    pub description: String,
    /// Exit status 0 (or stopped on request).
    pub clean: bool,
    /// The exit status when the process exited by itself.
    pub status: Option<i32>,
}

/// What supervisors report, by unit name.
#[derive(Debug, Clone)]
pub(crate) enum Event {
    /// The worker sent `READY=1` (its model is loaded).
    Ready {
        /// Unit.
        unit: String,
        /// Main PID.
        pid: Option<u32>,
    },
    /// The worker's process ended.
    Exited {
        /// Unit.
        unit: String,
        /// How.
        exit: Exit,
    },
}

/// Why a start failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    /// A unit of that name is running already (pick another instance).
    #[error("unit {0} exists already")]
    Exists(String),
    /// The disk of the state directory is full (the worker's record or log).
    #[error("no space left on the disk of the hive's state directory")]
    NoSpace,
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl StartError {
    /// An I/O error of `what`: `NoSpace` for a full disk.
    pub(crate) fn io(what: &str, e: &std::io::Error) -> StartError {
        if e.raw_os_error() == Some(libc::ENOSPC) {
            StartError::NoSpace
        } else {
            StartError::Other(format!("{what}: {e}"))
        }
    }
}

/// The supervisor in use.
pub(crate) enum Supervisor {
    /// systemd over D-Bus.
    Systemd(systemd::SystemdSupervisor),
    /// Child processes.
    Process(process::ProcessSupervisor),
}

impl Supervisor {
    /// `systemd-system`, `systemd-user` or `process`.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Supervisor::Systemd(s) => match s.kind() {
                ManagerKind::System => "systemd-system",
                ManagerKind::User => "systemd-user",
            },
            Supervisor::Process(_) => "process",
        }
    }

    /// Whether worker output can go to the journal.
    pub(crate) fn is_systemd(&self) -> bool {
        matches!(self, Supervisor::Systemd(_))
    }

    /// Starts a worker; readiness and its end come later as events.
    pub(crate) async fn start(&self, launch: &Launch) -> Result<Option<u32>, StartError> {
        match self {
            Supervisor::Systemd(s) => s.start(launch).await.map(|()| None),
            Supervisor::Process(p) => p.start(launch).map(Some),
        }
    }

    /// Stops a worker gracefully (SIGTERM, then SIGKILL after `timeout`) and waits for it.
    pub(crate) async fn stop(&self, unit: &str, timeout: Duration) -> Result<(), String> {
        match self {
            Supervisor::Systemd(s) => s.stop(unit, timeout).await,
            Supervisor::Process(p) => p.stop(unit, timeout).await,
        }
    }

    /// Whether the hive's own unit is being restarted by its systemd manager (workers then
    /// stay for the hive that comes back, which adopts them).
    pub(crate) async fn restarting_self(&self) -> bool {
        match self {
            Supervisor::Systemd(s) => s.restarting_self().await,
            Supervisor::Process(_) => false,
        }
    }

    /// Workers still running from an earlier hive (systemd only: child processes do not
    /// survive their hive). Each returned unit is watched from then on.
    pub(crate) async fn adoptable(&self) -> Vec<(String, Option<u32>, bool)> {
        match self {
            Supervisor::Systemd(s) => s.adoptable().await,
            Supervisor::Process(_) => vec![],
        }
    }

    /// Raises a running worker's memory limit (systemd only: a child process has none).
    pub(crate) async fn set_memory_max(&self, unit: &str, bytes: u64) -> Result<(), String> {
        match self {
            Supervisor::Systemd(s) => s.set_memory_max(unit, bytes).await,
            Supervisor::Process(_) => Ok(()),
        }
    }

    /// Starts watching an adopted unit (its end, and readiness when still loading).
    pub(crate) async fn watch_adopted(&self, unit: &str, loading: bool, load_timeout: Duration) {
        if let Supervisor::Systemd(s) = self {
            s.watch_adopted(unit, loading, load_timeout).await;
        }
    }
}

/// Picks the supervisor: the configured one, or for `auto` the first systemd manager that
/// answers over D-Bus (system first as root, the user's first otherwise), else processes.
/// Returns it with the reason, for the log.
pub(crate) async fn choose(
    choice: SupervisorChoice,
    events: UnboundedSender<Event>,
    runtime_dir: PathBuf,
) -> anyhow::Result<(Supervisor, String)> {
    let connect = |kind: ManagerKind| async move {
        tokio::time::timeout(Duration::from_secs(3), Systemd::connect(kind))
            .await
            .map_err(|_| "no answer within 3 s".to_owned())?
            .map_err(|e| e.to_string())
    };
    let systemd =
        |s: Systemd, events| Supervisor::Systemd(systemd::SystemdSupervisor::new(s, events));
    let process = |events| -> anyhow::Result<Supervisor> {
        Ok(Supervisor::Process(process::ProcessSupervisor::new(
            events,
            runtime_dir,
        )?))
    };
    match choice {
        SupervisorChoice::SystemdSystem | SupervisorChoice::SystemdUser => {
            let kind = if choice == SupervisorChoice::SystemdSystem {
                ManagerKind::System
            } else {
                ManagerKind::User
            };
            let s = connect(kind).await.map_err(|e| {
                anyhow::anyhow!(
                    "--supervisor {}: cannot reach the systemd manager over D-Bus: {e}",
                    if kind == ManagerKind::System {
                        "systemd-system"
                    } else {
                        "systemd-user"
                    }
                )
            })?;
            Ok((systemd(s, events), "configured".into()))
        }
        SupervisorChoice::Process => Ok((process(events)?, "configured".into())),
        SupervisorChoice::Auto => {
            // SAFETY: geteuid has no preconditions.
            let order = if unsafe { libc::geteuid() } == 0 {
                [ManagerKind::System, ManagerKind::User]
            } else {
                [ManagerKind::User, ManagerKind::System]
            };
            let mut why = vec![];
            for kind in order {
                match connect(kind).await {
                    Ok(s) => {
                        let reason = format!("auto: the {kind:?} manager answers over D-Bus");
                        return Ok((systemd(s, events), reason));
                    }
                    Err(e) => why.push(format!("{kind:?} manager: {e}")),
                }
            }
            let reason = format!("auto: no systemd manager reachable ({})", why.join("; "));
            Ok((process(events)?, reason))
        }
    }
}
