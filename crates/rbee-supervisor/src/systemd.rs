//! The systemd D-Bus client: `StartTransientUnit` and friends on the system bus (system
//! manager) or the session bus (a user's manager). Errors are matched by their D-Bus error
//! *names*, never by message text, and state changes are followed through signals.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};
use zbus::Connection;

use crate::properties::{worker_properties, ManagerKind, Prop, WorkerUnit};
use crate::unit_name::WORKER_PREFIX;

/// What can go wrong talking to systemd.
#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    /// A unit of that name already exists (`org.freedesktop.systemd1.UnitExists`).
    #[error("unit {0} already exists")]
    UnitExists(String),
    /// No such unit (`org.freedesktop.systemd1.NoSuchUnit`).
    #[error("unit {0} does not exist")]
    NoSuchUnit(String),
    /// The start or stop job ended with a result other than `done`.
    #[error("{verb} job of {unit} ended with result {result:?}")]
    JobFailed {
        /// `start` or `stop`.
        verb: &'static str,
        /// The unit.
        unit: String,
        /// systemd's job result (`failed`, `timeout`, `canceled`, …).
        result: String,
    },
    /// Nothing happened within the allowed time.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
    /// Any other D-Bus failure.
    #[error("D-Bus: {0}")]
    Dbus(#[from] zbus::Error),
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
trait Manager {
    fn start_transient_unit(
        &self,
        name: &str,
        mode: &str,
        properties: &[(&str, Value<'_>)],
        aux: &[(&str, Vec<(&str, Value<'_>)>)],
    ) -> zbus::Result<OwnedObjectPath>;
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn get_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    #[zbus(name = "GetUnitByPID")]
    fn get_unit_by_pid(&self, pid: u32) -> zbus::Result<OwnedObjectPath>;
    fn kill_unit(&self, name: &str, whom: &str, signal: i32) -> zbus::Result<()>;
    fn reset_failed_unit(&self, name: &str) -> zbus::Result<()>;
    fn set_unit_properties(
        &self,
        name: &str,
        runtime: bool,
        properties: &[(&str, Value<'_>)],
    ) -> zbus::Result<()>;
    #[allow(clippy::type_complexity)]
    fn list_units_by_patterns(
        &self,
        states: &[&str],
        patterns: &[&str],
    ) -> zbus::Result<
        Vec<(
            String,
            String,
            String,
            String,
            String,
            String,
            OwnedObjectPath,
            u32,
            String,
            OwnedObjectPath,
        )>,
    >;
    fn subscribe(&self) -> zbus::Result<()>;
    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: OwnedObjectPath,
        unit: String,
        result: String,
    ) -> zbus::Result<()>;
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1"
)]
trait Unit {
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn sub_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn job(&self) -> zbus::Result<(u32, OwnedObjectPath)>;
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Job",
    default_service = "org.freedesktop.systemd1"
)]
trait Job {
    #[zbus(property)]
    fn job_type(&self) -> zbus::Result<String>;
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Service",
    default_service = "org.freedesktop.systemd1"
)]
trait Service {
    #[zbus(property, name = "MainPID")]
    fn main_pid(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn result(&self) -> zbus::Result<String>;
    #[zbus(property, name = "ExecMainStatus")]
    fn exec_main_status(&self) -> zbus::Result<i32>;
    #[zbus(property, name = "ExecMainCode")]
    fn exec_main_code(&self) -> zbus::Result<i32>;
    #[zbus(property, name = "StatusText")]
    fn status_text(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn memory_current(&self) -> zbus::Result<u64>;
    #[zbus(property, name = "CPUUsageNSec")]
    fn cpu_usage_nsec(&self) -> zbus::Result<u64>;
}

/// What a unit's processes use, as systemd accounts it (cgroup); `None` where systemd does
/// not account it (accounting off, or a controller not delegated to a user manager).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Memory of the unit's cgroup, bytes (`MemoryCurrent`).
    pub memory_bytes: Option<u64>,
    /// CPU time of the unit's processes, nanoseconds (`CPUUsageNSec`).
    pub cpu_nsec: Option<u64>,
}

/// A unit's state as systemd reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitState {
    /// `active`, `activating`, `deactivating`, `inactive`, `failed`.
    pub active: String,
    /// `running`, `start`, `dead`, `failed`, …
    pub sub: String,
    /// Main PID (0 when none).
    pub main_pid: u32,
    /// `success`, `exit-code`, `signal`, `timeout`, `watchdog`, `oom-kill`, …
    pub result: String,
    /// Exit status or signal number of the main process.
    pub exit_status: i32,
    /// `CLD_EXITED` (1), `CLD_KILLED` (2), `CLD_DUMPED` (3), or 0 while it runs.
    pub exit_code: i32,
    /// The worker's `STATUS=` line.
    pub status_text: String,
}

/// A started unit whose start job can be awaited.
pub struct StartJob {
    job: OwnedObjectPath,
    unit: String,
    signals: JobRemovedStream,
}

impl StartJob {
    /// Waits until the start job finishes: for a `Type=notify` worker that is when it sent
    /// `READY=1`, i.e. its model is loaded. The job's end comes as a `JobRemoved` signal;
    /// as a safety net against a lost signal, a unit found `failed` or gone (checked once a
    /// second) also ends the wait.
    pub async fn wait(mut self, systemd: &Systemd, timeout: Duration) -> Result<(), SystemdError> {
        let unit = self.unit.clone();
        let signal = wait_job(&mut self.signals, &self.job, "start", &unit, timeout);
        let net = async {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                match systemd.state(&unit).await {
                    Ok(Some(s)) if s.active == "failed" => break "failed".to_owned(),
                    Ok(None) => break "unit gone".to_owned(),
                    _ => {}
                }
            }
        };
        tokio::select! {
            r = signal => r,
            result = net => Err(SystemdError::JobFailed { verb: "start", unit, result }),
        }
    }

    /// The unit's name.
    pub fn unit(&self) -> &str {
        &self.unit
    }
}

/// A connection to one systemd manager.
#[derive(Clone)]
pub struct Systemd {
    conn: Connection,
    kind: ManagerKind,
}

impl Systemd {
    /// The system manager (system bus) or the user's manager (session bus).
    pub async fn connect(kind: ManagerKind) -> Result<Systemd, SystemdError> {
        let conn = match kind {
            ManagerKind::System => Connection::system().await?,
            ManagerKind::User => Connection::session().await?,
        };
        Self::with_connection(conn, kind).await
    }

    /// A manager reached at a D-Bus address (`unix:path=…`).
    pub async fn connect_address(
        address: &str,
        kind: ManagerKind,
    ) -> Result<Systemd, SystemdError> {
        let conn = zbus::connection::Builder::address(address)?.build().await?;
        Self::with_connection(conn, kind).await
    }

    async fn with_connection(conn: Connection, kind: ManagerKind) -> Result<Systemd, SystemdError> {
        // Without Subscribe() the manager sends no job or unit signals.
        ManagerProxy::new(&conn).await?.subscribe().await?;
        Ok(Systemd { conn, kind })
    }

    /// Which manager this is.
    pub fn kind(&self) -> ManagerKind {
        self.kind
    }

    async fn manager(&self) -> Result<ManagerProxy<'_>, SystemdError> {
        Ok(ManagerProxy::new(&self.conn).await?)
    }

    /// Starts the worker's transient unit (mode `fail`: never replaces a running unit).
    pub async fn start(&self, unit: &WorkerUnit) -> Result<StartJob, SystemdError> {
        let manager = self.manager().await?;
        // Listen before starting, so the job's end cannot be missed.
        let signals = manager.receive_job_removed().await?;
        let props = worker_properties(unit, self.kind);
        let values: Vec<(&str, Value<'_>)> = props.iter().map(|(k, v)| (*k, to_value(v))).collect();
        let job = manager
            .start_transient_unit(&unit.name, "fail", &values, &[])
            .await
            .map_err(|e| map_err(e, &unit.name))?;
        tracing::info!(unit = %unit.name, "transient unit started");
        Ok(StartJob {
            job,
            unit: unit.name.clone(),
            signals,
        })
    }

    /// Stops a unit and waits for it to be stopped (graceful: SIGTERM, then systemd's own
    /// SIGKILL after the unit's stop timeout).
    pub async fn stop(&self, name: &str, timeout: Duration) -> Result<(), SystemdError> {
        let manager = self.manager().await?;
        let mut signals = manager.receive_job_removed().await?;
        let job = manager
            .stop_unit(name, "replace")
            .await
            .map_err(|e| map_err(e, name))?;
        wait_job(&mut signals, &job, "stop", name, timeout).await
    }

    /// Sends `signal` to the unit's main process.
    pub async fn kill(&self, name: &str, signal: i32) -> Result<(), SystemdError> {
        self.manager()
            .await?
            .kill_unit(name, "main", signal)
            .await
            .map_err(|e| map_err(e, name))
    }

    /// Changes a running unit's memory limit (`MemoryMax=`), until the unit ends.
    pub async fn set_memory_max(&self, name: &str, bytes: u64) -> Result<(), SystemdError> {
        self.manager()
            .await?
            .set_unit_properties(name, true, &[("MemoryMax", Value::from(bytes))])
            .await
            .map_err(|e| map_err(e, name))
    }

    /// Forgets a failed unit, so its name can be used again.
    pub async fn reset_failed(&self, name: &str) -> Result<(), SystemdError> {
        match self.manager().await?.reset_failed_unit(name).await {
            Ok(()) => Ok(()),
            Err(e) => match map_err(e, name) {
                SystemdError::NoSuchUnit(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    /// Starts following a unit's state changes. Call it *before* starting the unit (so no
    /// change is missed), or with `adopted` for a unit that may already have ended.
    pub async fn watch(&self, name: &str, adopted: bool) -> Result<UnitWatch, SystemdError> {
        let props = zbus::fdo::PropertiesProxy::builder(&self.conn)
            .destination("org.freedesktop.systemd1")?
            .path(unit_object_path(name))?
            .build()
            .await?;
        let changes = props.receive_properties_changed().await?;
        let mut already = None;
        if adopted {
            // Subscribed first, then asked: an end cannot fall between the two.
            let mut exit = UnitExit {
                unit: name.to_owned(),
                active: "gone".into(),
                result: String::new(),
                code: 0,
                status: 0,
            };
            match self.state(name).await? {
                None => already = Some(exit),
                Some(s) if s.active == "failed" || s.active == "inactive" => {
                    exit.active = s.active;
                    exit.result = s.result;
                    exit.code = s.exit_code;
                    exit.status = s.exit_status;
                    already = Some(exit);
                }
                Some(_) => {}
            }
        }
        Ok(UnitWatch {
            unit: name.to_owned(),
            adopted,
            already,
            changes,
        })
    }

    /// Names of every loaded `rbee-worker@*.service` unit.
    pub async fn list_workers(&self) -> Result<Vec<String>, SystemdError> {
        let pattern = format!("{WORKER_PREFIX}*.service");
        let units = self
            .manager()
            .await?
            .list_units_by_patterns(&[], &[&pattern])
            .await?;
        Ok(units.into_iter().map(|u| u.0).collect())
    }

    /// The unit's object path, or `None` when systemd does not know it (never started, or
    /// collected after it stopped).
    async fn unit_path(&self, name: &str) -> Result<Option<OwnedObjectPath>, SystemdError> {
        match self.manager().await?.get_unit(name).await {
            Ok(p) => Ok(Some(p)),
            Err(e) => match map_err(e, name) {
                SystemdError::NoSuchUnit(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    /// The unit's state, or `None` when systemd does not know it (never started, or
    /// collected after it stopped).
    pub async fn state(&self, name: &str) -> Result<Option<UnitState>, SystemdError> {
        let Some(path) = self.unit_path(name).await? else {
            return Ok(None);
        };
        let unit = UnitProxy::builder(&self.conn)
            .path(path.clone())?
            .build()
            .await?;
        let service = ServiceProxy::builder(&self.conn)
            .path(path)?
            .build()
            .await?;
        Ok(Some(UnitState {
            active: unit.active_state().await?,
            sub: unit.sub_state().await?,
            main_pid: service.main_pid().await?,
            result: service.result().await?,
            exit_status: service.exec_main_status().await?,
            exit_code: service.exec_main_code().await?,
            status_text: service.status_text().await?,
        }))
    }

    /// The type of the job systemd runs on the unit of process `pid` now (`stop`,
    /// `restart`, …); `None` when there is none or the process is in no unit of this
    /// manager. A service told to stop asks this to learn whether it comes back at once.
    pub async fn job_of_pid(&self, pid: u32) -> Result<Option<String>, SystemdError> {
        let path = match self.manager().await?.get_unit_by_pid(pid).await {
            Ok(p) => p,
            Err(_) => return Ok(None),
        };
        let unit = UnitProxy::builder(&self.conn)
            .path(path)?
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await?;
        let (id, job) = unit.job().await?;
        if id == 0 {
            return Ok(None);
        }
        let job = JobProxy::builder(&self.conn)
            .path(job)?
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await?;
        Ok(job.job_type().await.ok())
    }

    /// What the unit uses now; `None` when systemd does not know the unit.
    pub async fn usage(&self, name: &str) -> Result<Option<Usage>, SystemdError> {
        let Some(path) = self.unit_path(name).await? else {
            return Ok(None);
        };
        let service = ServiceProxy::builder(&self.conn)
            .path(path)?
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await?;
        // systemd answers u64::MAX ("[not set]") for what it does not account.
        let known = |v: u64| (v != u64::MAX).then_some(v);
        Ok(Some(Usage {
            memory_bytes: known(service.memory_current().await?),
            cpu_nsec: known(service.cpu_usage_nsec().await?),
        }))
    }

    /// Waits, through `PropertiesChanged` signals, until the unit's `ActiveState` is one of
    /// `states` (or it disappears, when `states` contains `"gone"`).
    pub async fn wait_active_state(
        &self,
        name: &str,
        states: &[&str],
        timeout: Duration,
    ) -> Result<String, SystemdError> {
        let path = match self.manager().await?.get_unit(name).await {
            Ok(p) => p,
            Err(e) => match map_err(e, name) {
                SystemdError::NoSuchUnit(_) if states.contains(&"gone") => return Ok("gone".into()),
                other => return Err(other),
            },
        };
        let unit = UnitProxy::builder(&self.conn)
            .path(path)?
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await?;
        let mut changes = unit.receive_active_state_changed().await;
        let fut = async {
            // The state may already be there; then every change is checked.
            loop {
                match unit.active_state().await {
                    Ok(s) if states.contains(&s.as_str()) => return Ok(s),
                    Ok(_) => {}
                    Err(_) if states.contains(&"gone") => return Ok("gone".to_owned()),
                    Err(e) => return Err(SystemdError::from(e)),
                }
                if changes.next().await.is_none() {
                    return Ok("gone".to_owned());
                }
            }
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| SystemdError::Timeout(timeout, format!("{name} to become {states:?}")))?
    }

    /// Every property of the unit's `Service` interface (for tests and diagnostics).
    pub async fn service_properties(
        &self,
        name: &str,
    ) -> Result<HashMap<String, OwnedValue>, SystemdError> {
        let path = self
            .manager()
            .await?
            .get_unit(name)
            .await
            .map_err(|e| map_err(e, name))?;
        let props = zbus::fdo::PropertiesProxy::builder(&self.conn)
            .destination("org.freedesktop.systemd1")?
            .path(path)?
            .build()
            .await?;
        let iface = zbus::names::InterfaceName::from_static_str_unchecked(
            "org.freedesktop.systemd1.Service",
        );
        Ok(props.get_all(iface).await.map_err(zbus::Error::from)?)
    }
}

/// How a unit ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitExit {
    /// The unit.
    pub unit: String,
    /// `failed`, `inactive`, or `gone` (collected before its end could be read).
    pub active: String,
    /// systemd's `Result`: `success`, `exit-code`, `signal`, `oom-kill`, `watchdog`, …
    pub result: String,
    /// `ExecMainCode` (`CLD_EXITED` 1, `CLD_KILLED` 2, `CLD_DUMPED` 3; 0 unknown).
    pub code: i32,
    /// Exit status, or the signal number when killed.
    pub status: i32,
}

impl UnitExit {
    /// `exit status 3`, `killed by signal 9`, or systemd's result.
    pub fn describe(&self) -> String {
        match self.code {
            1 => format!("exited with status {} ({})", self.status, self.result),
            2 | 3 => format!("killed by signal {} ({})", self.status, self.result),
            _ => format!("{} ({})", self.active, self.result),
        }
    }

    /// Whether the process exited normally with status 0.
    pub fn clean(&self) -> bool {
        self.result == "success" && (self.code == 0 || (self.code == 1 && self.status == 0))
    }
}

/// Follows one unit until it ends (see [`Systemd::watch`]).
pub struct UnitWatch {
    unit: String,
    adopted: bool,
    already: Option<UnitExit>,
    changes: zbus::fdo::PropertiesChangedStream,
}

const UNIT_IFACE: &str = "org.freedesktop.systemd1.Unit";
const SERVICE_IFACE: &str = "org.freedesktop.systemd1.Service";

impl UnitWatch {
    /// Resolves when the unit is `failed`, `inactive` or unloaded, with how it ended. The
    /// values come from the `PropertiesChanged` signals themselves: with
    /// `CollectMode=inactive-or-failed` the unit may be gone before anyone could ask.
    pub async fn ended(mut self) -> UnitExit {
        let mut exit = UnitExit {
            unit: self.unit.clone(),
            active: "gone".into(),
            result: String::new(),
            code: 0,
            status: 0,
        };
        if let Some(exit) = self.already.take() {
            return exit;
        }
        let mut ended = false;
        let mut started = self.adopted;
        loop {
            let next = if ended {
                // The Service interface's values may follow the Unit's in a separate signal.
                match tokio::time::timeout(Duration::from_millis(50), self.changes.next()).await {
                    Ok(n) => n,
                    Err(_) => return exit,
                }
            } else {
                self.changes.next().await
            };
            let Some(signal) = next else { return exit };
            let Ok(args) = signal.args() else { continue };
            let changed = args.changed_properties();
            let str_of = |k: &str| {
                changed
                    .get(k)
                    .and_then(|v| String::try_from(v.try_clone().ok()?).ok())
            };
            let int_of = |k: &str| changed.get(k).and_then(|v| i32::try_from(v).ok());
            match args.interface_name().as_str() {
                SERVICE_IFACE => {
                    if let Some(r) = str_of("Result") {
                        exit.result = r;
                    }
                    if let Some(c) = int_of("ExecMainCode") {
                        exit.code = c;
                    }
                    if let Some(s) = int_of("ExecMainStatus") {
                        exit.status = s;
                    }
                }
                UNIT_IFACE => match str_of("ActiveState").as_deref() {
                    // A new transient unit is first announced as loaded and inactive:
                    // only an `inactive` after it ran is an end. `failed` always is.
                    Some("inactive") if started => {
                        exit.active = "inactive".into();
                        ended = true;
                    }
                    Some("failed") => {
                        exit.active = "failed".into();
                        ended = true;
                    }
                    Some("inactive") | None => {}
                    Some(_) => started = true,
                },
                _ => {}
            }
            if ended && !exit.result.is_empty() && exit.code != 0 {
                return exit;
            }
        }
    }
}

/// The object path systemd gives a unit (`sd_bus_path_encode`): every byte that is not an
/// ASCII letter (or a digit after the first byte) becomes `_xx`. Computable before the unit
/// exists, so its signals can be subscribed to before it is started.
pub fn unit_object_path(name: &str) -> String {
    let mut out = String::from("/org/freedesktop/systemd1/unit/");
    for (i, b) in name.bytes().enumerate() {
        if b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit()) {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

async fn wait_job(
    signals: &mut JobRemovedStream,
    job: &OwnedObjectPath,
    verb: &'static str,
    unit: &str,
    timeout: Duration,
) -> Result<(), SystemdError> {
    let fut = async {
        while let Some(signal) = signals.next().await {
            let Ok(args) = signal.args() else { continue };
            if args.job.as_str() == job.as_str() {
                return if args.result == "done" {
                    Ok(())
                } else {
                    Err(SystemdError::JobFailed {
                        verb,
                        unit: unit.to_owned(),
                        result: args.result.clone(),
                    })
                };
            }
        }
        Err(SystemdError::JobFailed {
            verb,
            unit: unit.to_owned(),
            result: "connection closed".into(),
        })
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| SystemdError::Timeout(timeout, format!("the {verb} job of {unit}")))?
}

fn map_err(e: zbus::Error, unit: &str) -> SystemdError {
    if let zbus::Error::MethodError(name, _, _) = &e {
        match name.as_str() {
            "org.freedesktop.systemd1.UnitExists" => {
                return SystemdError::UnitExists(unit.to_owned())
            }
            "org.freedesktop.systemd1.NoSuchUnit" => {
                return SystemdError::NoSuchUnit(unit.to_owned())
            }
            _ => {}
        }
    }
    SystemdError::Dbus(e)
}

fn to_value(p: &Prop) -> Value<'_> {
    match p {
        Prop::Str(s) => Value::from(s.as_str()),
        Prop::Bool(b) => Value::from(*b),
        Prop::U64(n) => Value::from(*n),
        Prop::I32(n) => Value::from(*n),
        Prop::U32(n) => Value::from(*n),
        Prop::List(allow, v) => Value::from((*allow, v.clone())),
        Prop::Binds(v) => Value::from(v.clone()),
        Prop::Devices(v) => Value::from(v.clone()),
        Prop::Strs(v) => Value::from(v.clone()),
        Prop::Exec(v) => Value::from(v.clone()),
        Prop::Pairs(v) => Value::from(v.clone()),
    }
}
