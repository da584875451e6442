//! Workers as child processes, for machines without systemd (macOS, containers).
//!
//! - Readiness: each child gets its own `NOTIFY_SOCKET`, so the worker's `READY=1` reaches
//!   the hive exactly as it would reach systemd — no polling.
//! - No orphans: children run in their own process group (a Ctrl+C at the hive's terminal
//!   reaches only the hive, which then stops them gracefully) and get `SIGKILL` when the
//!   hive dies (`PR_SET_PDEATHSIG`). That signal follows the *thread* that forked, so every
//!   child is forked by one long-lived spawner thread.
//! - No adoption: a restarted hive starts with no workers (they died with the old one).

use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use super::{Event, Exit, Launch, StartError};

type SpawnJob = (Command, mpsc::Sender<std::io::Result<Child>>);

struct Running {
    pid: u32,
    exited: Arc<AtomicBool>,
}

/// Runs workers as children of the hive.
pub(crate) struct ProcessSupervisor {
    events: UnboundedSender<Event>,
    children: Arc<Mutex<HashMap<String, Running>>>,
    spawner: Mutex<mpsc::Sender<SpawnJob>>,
    runtime_dir: PathBuf,
    next_socket: AtomicU64,
}

impl ProcessSupervisor {
    /// A supervisor whose notify sockets live in `runtime_dir` (created 0700).
    pub(crate) fn new(
        events: UnboundedSender<Event>,
        runtime_dir: PathBuf,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(&runtime_dir)?;
        std::fs::set_permissions(
            &runtime_dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )?;
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })?;
        Ok(Self {
            events,
            children: Arc::default(),
            spawner: Mutex::new(tx),
            runtime_dir,
            next_socket: AtomicU64::new(0),
        })
    }

    /// Forks the worker; returns its PID.
    pub(crate) fn start(&self, l: &Launch) -> Result<u32, StartError> {
        let unit = l.spec.unit.clone();
        if self.lock().contains_key(&unit) {
            return Err(StartError::Exists(unit));
        }
        let other = |what: &str, e: std::io::Error| StartError::io(what, &e);
        let log = match &l.spec.log_file {
            Some(p) => open_log(p).map_err(|e| other("the worker's log file", e))?,
            None => return Err(StartError::Other("process workers need a log file".into())),
        };
        let n = self.next_socket.fetch_add(1, Ordering::Relaxed);
        let socket_path = self.runtime_dir.join(format!("notify-{n}.sock"));
        let _ = std::fs::remove_file(&socket_path);
        let socket = UnixDatagram::bind(&socket_path).map_err(|e| other("notify socket", e))?;

        let mut cmd = Command::new(&l.binary);
        cmd.args(&l.args)
            .arg("--api-key-file")
            .arg(&l.key_path)
            .env("NOTIFY_SOCKET", &socket_path)
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("LISTEN_FDS")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| other("log file", e))?)
            .stderr(log);
        rbee_binaries::child::die_with_parent(&mut cmd);
        let (tx, rx) = mpsc::channel();
        self.spawner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send((cmd, tx))
            .map_err(|_| StartError::Other("the spawner thread is gone".into()))?;
        let mut child = rx
            .recv()
            .map_err(|_| StartError::Other("the spawner thread is gone".into()))?
            .map_err(|e| other(&format!("cannot run {}", l.binary.display()), e))?;
        let pid = child.id();
        let exited = Arc::new(AtomicBool::new(false));
        self.lock().insert(
            unit.clone(),
            Running {
                pid,
                exited: Arc::clone(&exited),
            },
        );
        tracing::info!(%unit, pid, "worker process started");

        let (events, done) = (self.events.clone(), Arc::clone(&exited));
        let u = unit.clone();
        let sock_path = socket_path.clone();
        std::thread::Builder::new()
            .name("notify".into())
            .spawn(move || read_notify(&socket, &done, &events, &u, pid, &sock_path))
            .map_err(|e| other("thread", e))?;
        let (events, children) = (self.events.clone(), Arc::clone(&self.children));
        std::thread::Builder::new()
            .name("waiter".into())
            .spawn(move || {
                let exit = match child.wait() {
                    Ok(st) => match (st.code(), st.signal()) {
                        (Some(c), _) => Exit {
                            description: format!("exited with status {c}"),
                            clean: c == 0,
                            status: Some(c),
                        },
                        (None, Some(s)) => Exit {
                            description: format!("killed by signal {s}"),
                            clean: false,
                            status: None,
                        },
                        _ => Exit {
                            description: "ended".into(),
                            clean: false,
                            status: None,
                        },
                    },
                    Err(e) => Exit {
                        description: format!("cannot wait for it: {e}"),
                        clean: false,
                        status: None,
                    },
                };
                exited.store(true, Ordering::Release);
                children
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&unit);
                let _ = events.send(Event::Exited { unit, exit });
            })
            .map_err(|e| other("thread", e))?;
        Ok(pid)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.children.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// SIGTERM, then SIGKILL after `timeout`; waits for the end.
    pub(crate) async fn stop(&self, unit: &str, timeout: Duration) -> Result<(), String> {
        let Some((pid, exited)) = self
            .lock()
            .get(unit)
            .map(|r| (r.pid, Arc::clone(&r.exited)))
        else {
            return Ok(());
        };
        let signal = |sig| {
            if !exited.load(Ordering::Acquire) {
                // SAFETY: kill(2) on our own child, which has not been reaped yet.
                unsafe { libc::kill(pid as i32, sig) };
            }
        };
        signal(libc::SIGTERM);
        // A stopped (SIGSTOP) worker handles SIGTERM only once continued, as systemd does.
        signal(libc::SIGCONT);
        let deadline = Instant::now() + timeout;
        while !exited.load(Ordering::Acquire) {
            if Instant::now() >= deadline {
                tracing::warn!(%unit, pid, "worker did not stop in time; killing it");
                signal(libc::SIGKILL);
                let hard = Instant::now() + Duration::from_secs(5);
                while !exited.load(Ordering::Acquire) && Instant::now() < hard {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if exited.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(format!("worker {unit} (pid {pid}) survived SIGKILL"))
        }
    }
}

fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// Reads sd-notify datagrams until `READY=1` (reported) or the worker's end.
fn read_notify(
    socket: &UnixDatagram,
    exited: &AtomicBool,
    events: &UnboundedSender<Event>,
    unit: &str,
    pid: u32,
    path: &Path,
) {
    let _ = socket.set_read_timeout(Some(Duration::from_millis(250)));
    let mut buf = [0u8; 4096];
    while !exited.load(Ordering::Acquire) {
        let Ok(n) = socket.recv(&mut buf) else {
            continue;
        };
        let msg = String::from_utf8_lossy(&buf[..n]);
        if msg.lines().any(|l| l == "READY=1") {
            let _ = events.send(Event::Ready {
                unit: unit.to_owned(),
                pid: Some(pid),
            });
            break;
        }
    }
    let _ = std::fs::remove_file(path);
}
