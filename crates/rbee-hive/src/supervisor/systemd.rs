//! Workers as transient units `rbee-worker@<model>.service` of a systemd manager.

use std::time::Duration;

use rbee_supervisor::properties::{ManagerKind, WorkerUnit};
use rbee_supervisor::systemd::{Systemd, SystemdError, UnitExit, UnitWatch};
use rbee_types::env::API_KEY_CREDENTIAL;
use tokio::sync::mpsc::UnboundedSender;

use super::{Event, Exit, Launch, StartError};

/// The worker's watchdog: it pings every 2 s; systemd kills it after this much silence.
const WATCHDOG: Duration = Duration::from_secs(30);

/// Runs workers through one manager.
pub(crate) struct SystemdSupervisor {
    systemd: Systemd,
    events: UnboundedSender<Event>,
}

fn exit_of(e: &UnitExit) -> Exit {
    Exit {
        description: e.describe(),
        clean: e.clean(),
        status: (e.code == 1).then_some(e.status),
    }
}

/// Sends `Exited` when the watched unit ends.
fn report_end(watch: UnitWatch, events: UnboundedSender<Event>) {
    tokio::spawn(async move {
        let exit = watch.ended().await;
        let _ = events.send(Event::Exited {
            unit: exit.unit.clone(),
            exit: exit_of(&exit),
        });
    });
}

impl SystemdSupervisor {
    /// A supervisor on a connected manager.
    pub(crate) fn new(systemd: Systemd, events: UnboundedSender<Event>) -> Self {
        Self { systemd, events }
    }

    /// System or user manager.
    pub(crate) fn kind(&self) -> ManagerKind {
        self.systemd.kind()
    }

    /// Whether systemd is restarting the hive's own unit (a `restart` job on it), as
    /// opposed to stopping it.
    pub(crate) async fn restarting_self(&self) -> bool {
        let job = self.systemd.job_of_pid(std::process::id()).await;
        tracing::debug!(?job, "the job on the hive's own unit");
        matches!(
            job.as_ref().map(|j| j.as_deref()),
            Ok(Some("restart" | "try-restart"))
        )
    }

    /// What a worker's unit uses, as systemd accounts it (`None`: no such unit).
    pub(crate) async fn usage(&self, unit: &str) -> Option<rbee_supervisor::systemd::Usage> {
        self.systemd.usage(unit).await.ok().flatten()
    }

    fn unit(&self, l: &Launch) -> WorkerUnit {
        let mut args = l.args.clone();
        let mut credentials = vec![];
        match self.kind() {
            // The unit runs as a dynamic user who cannot read the hive's files: systemd
            // copies the key into the unit's private credentials directory.
            ManagerKind::System => {
                credentials.push((API_KEY_CREDENTIAL.to_owned(), l.key_path.clone()))
            }
            // Same user as the hive: the 0600 file is readable, and credentials do not work
            // under a user manager (systemd 252).
            ManagerKind::User => {
                args.push("--api-key-file".into());
                args.push(l.key_path.display().to_string());
            }
        }
        let s = &l.spec;
        WorkerUnit {
            name: s.unit.clone(),
            description: format!(
                "rbee worker: {} on {}:{} at {}",
                s.model_ref,
                s.backend,
                s.device,
                s.url()
            ),
            binary: l.binary.clone(),
            args,
            model_path: s.model_path.clone(),
            environment: vec![],
            memory_max: l.memory_max,
            watchdog_usec: WATCHDOG.as_micros() as u64,
            stop_timeout_usec: l.stop_timeout.as_micros() as u64,
            devices: l.devices.clone(),
            log_file: s.log_file.clone(),
            credentials,
        }
    }

    /// Starts the unit; a task reports `Ready` when its start job ends (the worker sent
    /// `READY=1`), another `Exited` when the unit ends.
    pub(crate) async fn start(&self, l: &Launch) -> Result<(), StartError> {
        let unit = self.unit(l);
        let other = |e: SystemdError| StartError::Other(e.to_string());
        let watch = self.systemd.watch(&unit.name, false).await.map_err(other)?;
        let job = match self.systemd.start(&unit).await {
            Err(SystemdError::UnitExists(_)) => {
                // A failed unit of that name may linger; a running one means "taken".
                self.systemd.reset_failed(&unit.name).await.map_err(other)?;
                match self.systemd.start(&unit).await {
                    Err(SystemdError::UnitExists(n)) => return Err(StartError::Exists(n)),
                    r => r.map_err(other)?,
                }
            }
            r => r.map_err(other)?,
        };
        let (systemd, events, name) = (self.systemd.clone(), self.events.clone(), unit.name);
        let timeout = l.load_timeout;
        tokio::spawn(async move {
            match job.wait(&systemd, timeout).await {
                Ok(()) => {
                    let pid = systemd
                        .state(&name)
                        .await
                        .ok()
                        .flatten()
                        .map(|s| s.main_pid);
                    let _ = events.send(Event::Ready { unit: name, pid });
                }
                Err(SystemdError::Timeout(..)) => {
                    tracing::warn!(unit = %name, ?timeout, "worker did not finish loading in time; stopping it");
                    let _ = systemd.stop(&name, Duration::from_secs(60)).await;
                }
                // The unit's end is reported by its watch.
                Err(e) => tracing::debug!(unit = %name, error = %e, "start job did not finish"),
            }
        });
        report_end(watch, self.events.clone());
        Ok(())
    }

    /// StopUnit, waiting for the stop job (systemd SIGKILLs after the unit's stop timeout).
    pub(crate) async fn stop(&self, unit: &str, timeout: Duration) -> Result<(), String> {
        match self
            .systemd
            .stop(unit, timeout + Duration::from_secs(5))
            .await
        {
            Ok(()) | Err(SystemdError::NoSuchUnit(_)) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// SetUnitProperties(MemoryMax) for the unit's life.
    pub(crate) async fn set_memory_max(&self, unit: &str, bytes: u64) -> Result<(), String> {
        self.systemd
            .set_memory_max(unit, bytes)
            .await
            .map_err(|e| e.to_string())
    }

    /// Running or loading `rbee-worker@*` units: (name, main PID, still loading).
    pub(crate) async fn adoptable(&self) -> Vec<(String, Option<u32>, bool)> {
        let names = match self.systemd.list_workers().await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list worker units; adopting none");
                return vec![];
            }
        };
        let mut out = vec![];
        for name in names {
            if let Ok(Some(s)) = self.systemd.state(&name).await {
                match s.active.as_str() {
                    "active" | "reloading" => out.push((name, Some(s.main_pid), false)),
                    "activating" => out.push((name, Some(s.main_pid), true)),
                    _ => {}
                }
            }
        }
        out
    }

    /// Watches an adopted unit: `Exited` when it ends, `Ready` when a loading one is up.
    pub(crate) async fn watch_adopted(&self, unit: &str, loading: bool, load_timeout: Duration) {
        let watch = match self.systemd.watch(unit, true).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(%unit, error = %e, "cannot watch adopted unit");
                return;
            }
        };
        report_end(watch, self.events.clone());
        if loading {
            let (systemd, events, unit) =
                (self.systemd.clone(), self.events.clone(), unit.to_owned());
            tokio::spawn(async move {
                let states = ["active", "failed", "inactive", "gone"];
                if let Ok(s) = systemd
                    .wait_active_state(&unit, &states, load_timeout)
                    .await
                {
                    if s == "active" {
                        let pid = systemd
                            .state(&unit)
                            .await
                            .ok()
                            .flatten()
                            .map(|s| s.main_pid);
                        let _ = events.send(Event::Ready { unit, pid });
                    }
                }
            });
        }
    }
}
