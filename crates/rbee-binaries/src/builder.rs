//! The builder: which binary a backend's worker runs, and builds from the git source —
//! shared between requests, limited in number, each with a feed of progress events.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

pub use rbee_types::hive::BuildEvent;
use rbee_types::{now_unix, ApiError, Backend};
use sha2::{Digest, Sha256};

use crate::cargo::{self, WORKER};
use crate::catalog::{Binary, Catalog, Origin};
use crate::error::BinaryError;
use crate::features;
use crate::install;
use crate::source::{self, Source};
use rbee_types::watch::Feed;

/// Where the builder keeps things, and what it builds from.
#[derive(Debug, Clone)]
pub struct BuilderConfig {
    /// The hive's state directory: `workers.db`, `worker-build/` (checkouts, target
    /// directories, logs) and `worker-bin/` (the binaries).
    pub state_dir: PathBuf,
    /// The git source; without one the installed worker is used.
    pub source: Option<Source>,
    /// The worker installed next to the hive (used when there is no source).
    pub installed: Option<PathBuf>,
}

impl BuilderConfig {
    /// The catalogue database.
    pub fn db_path(&self) -> PathBuf {
        self.state_dir.join("workers.db")
    }

    /// Checkouts, target directories and logs.
    pub fn build_dir(&self) -> PathBuf {
        self.state_dir.join("worker-build")
    }

    /// Build logs.
    pub fn logs_dir(&self) -> PathBuf {
        self.build_dir().join("logs")
    }

    /// The recorded binaries.
    pub fn bin_dir(&self) -> PathBuf {
        self.state_dir.join("worker-bin")
    }
}

/// A running (or finished) build.
pub struct Build {
    /// `build-3`.
    pub id: String,
    /// The feature set.
    pub features: Vec<String>,
    /// The ref asked for.
    pub git_ref: String,
    feed: Feed<BuildEvent>,
    pid: Mutex<Option<u32>>,
}

impl Build {
    /// The events from index `from` on (waiting at most `timeout` for one), and whether
    /// the build has ended.
    pub fn events_since(&self, from: usize, timeout: Duration) -> (Vec<BuildEvent>, bool) {
        self.feed.since(from, timeout)
    }

    /// Blocks until the build ends: the binary, or the error its feed carried
    /// ([`BinaryError::Failed`]).
    pub fn wait(&self) -> Result<Binary, BinaryError> {
        let mut seen = 0;
        loop {
            let (events, done) = self.feed.since(seen, Duration::from_secs(3600));
            seen += events.len();
            if done {
                return match self.feed.last() {
                    Some(BuildEvent::Complete { binary, .. }) => Ok(*binary),
                    Some(BuildEvent::Error { error }) => Err(BinaryError::Failed(error)),
                    _ => Err(BinaryError::NoResult),
                };
            }
        }
    }

    /// The running cargo's pid (it leads its process group).
    pub fn pid(&self) -> Option<u32> {
        *self.pid.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Kills the running cargo and everything it started.
    pub fn cancel(&self) {
        if let Some(pid) = self.pid() {
            crate::child::signal_group(pid, libc::SIGKILL);
        }
    }
}

/// What [`Builder::resolve`] found for a backend.
pub enum Resolved {
    /// A recorded binary to run.
    Ready(Box<Binary>),
    /// None yet: this build makes one.
    Building(Arc<Build>),
}

type InUse = Box<dyn Fn(&Path) -> bool + Send + Sync>;

/// The catalogue and the builds.
pub struct Builder {
    cfg: BuilderConfig,
    catalog: Mutex<Catalog>,
    /// Unfinished builds by feature set and ref (requests for the same build share it).
    building: Mutex<HashMap<String, Arc<Build>>>,
    /// Recent builds by id, for progress readers.
    recent: Mutex<Vec<Arc<Build>>>,
    running: (Mutex<usize>, Condvar),
    checkout_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    next: AtomicU64,
    in_use: OnceLock<InUse>,
    /// The installed worker, verified (and its file's length and mtime when it was).
    installed: Mutex<Option<(u64, SystemTime, Binary)>>,
}

/// Catalogue rows for the binaries in `dir` (`<id>-<sha256[..12]>`), from the files
/// themselves: each must still run `--version`; what it lists gives the features.
fn rows_from_files(dir: &Path) -> Vec<Binary> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut rows = vec![];
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let (Ok(version), Ok(sha256)) = (install::verify(&path, &[]), install::sha256_file(&path))
        else {
            continue;
        };
        let features = install::backends(&version)
            .unwrap_or_default()
            .into_iter()
            .filter(|b| *b != "cpu")
            .map(str::to_owned)
            .collect();
        let id = match name.rsplit_once('-') {
            Some((id, hash)) if hash.len() == 12 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
                id.to_owned()
            }
            _ => name.clone(),
        };
        let built_at_unix = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        rows.push(Binary {
            id,
            worker_type: WORKER.into(),
            binary_path: path,
            features,
            origin: Origin::Git,
            git_url: None,
            git_ref: None,
            git_commit: None,
            rust_version: None,
            version,
            built_at_unix,
            build_secs: None,
            sha256,
        });
    }
    rows
}

/// Builds kept for progress readers after they end.
const RECENT: usize = 32;

impl Builder {
    /// Opens the catalogue and tidies up after a crash: rows whose file vanished are
    /// removed, and so are files in `worker-bin/` no row names (an interrupted build).
    pub fn open(cfg: BuilderConfig) -> Result<Arc<Builder>, rbee_sqlite::DbError> {
        let mut catalog = Catalog::open(&cfg.db_path())?;
        if let Some(aside) = catalog.recovered().map(Path::to_path_buf) {
            // Without this the sweep below would take every binary for an orphan.
            let rows = rows_from_files(&cfg.bin_dir());
            for b in &rows {
                catalog.insert(b)?;
            }
            tracing::error!(moved_to = %aside.display(), binaries = rows.len(), "the worker binary catalogue was damaged and is rebuilt from worker-bin/ (their git provenance is lost)");
        }
        let rows = catalog.list()?;
        for b in &rows {
            if b.origin == Origin::Git && !b.binary_path.is_file() {
                tracing::warn!(id = %b.id, path = %b.binary_path.display(), "worker binary vanished; removed from the catalogue");
                catalog.remove(&b.id)?;
            }
        }
        if let Ok(entries) = std::fs::read_dir(cfg.bin_dir()) {
            for e in entries.flatten() {
                let p = e.path();
                if !rows.iter().any(|b| b.binary_path == p) {
                    tracing::info!(path = %p.display(), "removing a worker binary no catalogue row names (an interrupted build)");
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
        Ok(Arc::new(Builder {
            cfg,
            catalog: Mutex::new(catalog),
            building: Mutex::new(HashMap::new()),
            recent: Mutex::new(Vec::new()),
            running: (Mutex::new(0), Condvar::new()),
            checkout_locks: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            in_use: OnceLock::new(),
            installed: Mutex::new(None),
        }))
    }

    /// Tells the builder which binaries running workers use (they are never removed).
    pub fn set_in_use(&self, f: impl Fn(&Path) -> bool + Send + Sync + 'static) {
        let _ = self.in_use.set(Box::new(f));
    }

    fn used(&self, path: &Path) -> bool {
        self.in_use.get().is_some_and(|f| f(path))
    }

    /// The configuration.
    pub fn config(&self) -> &BuilderConfig {
        &self.cfg
    }

    fn catalog(&self) -> std::sync::MutexGuard<'_, Catalog> {
        self.catalog.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every recorded binary, newest first.
    pub fn list(&self) -> Result<Vec<Binary>, BinaryError> {
        Ok(self.catalog().list()?)
    }

    /// A build by id (running, or recently ended).
    pub fn build_by_id(&self, id: &str) -> Option<Arc<Build>> {
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|b| b.id == id)
            .cloned()
    }

    /// Whether a worker of `backend` can start without a build: a binary built for it
    /// (with a source), or the installed worker, whose `--version` lists it.
    pub fn ready_for(&self, backend: Backend) -> bool {
        if self.cfg.source.is_some() {
            let features = features::for_backend(backend);
            return self
                .catalog()
                .built_with(&features)
                .is_ok_and(|built| self.pick(&built).is_some());
        }
        self.installed(backend)
            .is_ok_and(|b| !backend.is_gpu() || b.features.iter().any(|f| f == backend.as_str()))
    }

    /// The binary a worker of `backend` runs: the newest one built for its feature set,
    /// else a build (with a source), else the installed worker (without one).
    pub fn resolve(self: &Arc<Self>, backend: Backend) -> Result<Resolved, BinaryError> {
        let features = features::for_backend(backend);
        if self.cfg.source.is_none() {
            return self
                .installed(backend)
                .map(|b| Resolved::Ready(Box::new(b)));
        }
        let built = self.catalog().built_with(&features)?;
        if let Some(b) = self.pick(&built) {
            return Ok(Resolved::Ready(Box::new(b.clone())));
        }
        self.build(&features, None).map(Resolved::Building)
    }

    /// Of the binaries built for one feature set (newest first), the one new workers run:
    /// the newest from the configured repository — of the pinned commit, when `git_ref`
    /// is one.
    fn pick<'a>(&self, built: &'a [Binary]) -> Option<&'a Binary> {
        let src = self.cfg.source.as_ref()?;
        built.iter().find(|b| {
            b.binary_path.is_file()
                && b.git_url.as_deref() == Some(src.git_url.as_str())
                && (!source::is_commit(&src.git_ref)
                    || b.git_commit.as_deref() == Some(src.git_ref.as_str()))
        })
    }

    /// The installed worker, verified (again only when the file changed) and recorded.
    fn installed(&self, backend: Backend) -> Result<Binary, BinaryError> {
        let Some(path) = &self.cfg.installed else {
            return Err(BinaryError::NoWorker);
        };
        let meta = std::fs::metadata(path).ok();
        let stamp = meta
            .as_ref()
            .and_then(|m| Some((m.len(), m.modified().ok()?)));
        let mut cache = self.installed.lock().unwrap_or_else(|e| e.into_inner());
        let binary = match (&*cache, stamp) {
            (Some((len, mtime, b)), Some((l, m))) if *len == l && *mtime == m => b.clone(),
            _ => {
                let version = install::verify(path, &[])?;
                let sha256 = install::sha256_file(path).map_err(|source| BinaryError::Hash {
                    path: path.clone(),
                    source,
                })?;
                let features = install::backends(&version)
                    .map(|b| {
                        b.into_iter()
                            .filter(|f| *f != "cpu")
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default();
                let b = Binary {
                    id: format!("{WORKER}-installed"),
                    worker_type: WORKER.into(),
                    binary_path: path.clone(),
                    features,
                    origin: Origin::Installed,
                    git_url: None,
                    git_ref: None,
                    git_commit: None,
                    rust_version: None,
                    version,
                    built_at_unix: now_unix(),
                    build_secs: None,
                    sha256,
                };
                self.catalog().insert(&b)?;
                if let Some((l, m)) = stamp {
                    *cache = Some((l, m, b.clone()));
                }
                b
            }
        };
        drop(cache);
        if backend.is_gpu()
            && install::backends(&binary.version).is_some()
            && !binary.features.iter().any(|f| f == backend.as_str())
        {
            return Err(BinaryError::InstalledLacksBackend {
                path: path.clone(),
                version: binary.version,
                backend,
            });
        }
        Ok(binary)
    }

    /// Starts (or joins) a build of `features` at `git_ref` (default: the configured ref).
    pub fn build(
        self: &Arc<Self>,
        features: &[String],
        git_ref: Option<&str>,
    ) -> Result<Arc<Build>, BinaryError> {
        let Some(src) = &self.cfg.source else {
            return Err(BinaryError::NoWorkerSource);
        };
        let features = features::normalize(features)?;
        let git_ref = git_ref.unwrap_or(&src.git_ref).to_owned();
        source::check_ref(&git_ref)?;
        let key = format!("{}@{git_ref}", features::key(&features));
        let mut building = self.building.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = building.get(&key) {
            return Ok(b.clone());
        }
        let build = Arc::new(Build {
            id: format!("build-{}", self.next.fetch_add(1, Ordering::Relaxed)),
            features,
            git_ref,
            feed: Feed::default(),
            pid: Mutex::new(None),
        });
        building.insert(key.clone(), build.clone());
        drop(building);
        {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            recent.push(build.clone());
            let excess = recent.len().saturating_sub(RECENT);
            recent.drain(..excess);
        }
        tracing::info!(id = %build.id, features = ?build.features, git_ref = %build.git_ref, "worker build starts");
        let me = self.clone();
        let b = build.clone();
        std::thread::Builder::new()
            .name(b.id.clone())
            .spawn(move || {
                let result = me.run(&b);
                me.building
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&key);
                match result {
                    Ok((binary, already_built)) => {
                        tracing::info!(id = %b.id, binary = %binary.id, "worker build complete");
                        b.feed.finish(BuildEvent::Complete {
                            binary: Box::new(binary),
                            already_built,
                        });
                        me.collect_garbage();
                    }
                    Err(e) => {
                        let e = ApiError::from(e);
                        tracing::error!(id = %b.id, code = %e.error.code.as_str(), "worker build failed: {}", e.error.message);
                        b.feed.finish(BuildEvent::Error { error: e.error });
                    }
                }
            })
            .map_err(BinaryError::Thread)?;
        Ok(build)
    }

    /// One build from start to record. The catalogue changes only at its very end.
    fn run(&self, b: &Build) -> Result<(Binary, bool), BinaryError> {
        let src = self.cfg.source.clone().expect("builds need a source");
        let _slot = self.slot(b, src.max_concurrent_builds.max(1));
        let fkey = features::key(&b.features);
        let lock = self
            .checkout_locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(fkey.clone())
            .or_default()
            .clone();
        let _checkout = lock.lock().unwrap_or_else(|e| e.into_inner());
        let t0 = Instant::now();
        let dir = self
            .cfg
            .build_dir()
            .join(&fkey)
            .join(format!("src-{}", short_hash(&src.git_url)));
        let checkout = source::checkout(&src, &b.git_ref, &dir, &mut |m| {
            b.feed.push(BuildEvent::Fetching { message: m })
        })?;
        let commit12 = &checkout.commit[..12];
        let id = format!("{WORKER}-{fkey}-{commit12}");
        if let Some(old) = self.catalog().get(&id)? {
            if old.binary_path.is_file() {
                return Ok((old, true));
            }
        }
        let cargo = cargo::find_cargo(src.cargo.as_deref())?;
        if b.features.iter().any(|f| f == "cuda") && cargo::find_nvcc().is_none() {
            return Err(cargo::cuda_missing(None));
        }
        let log_path = self
            .cfg
            .logs_dir()
            .join(format!("{fkey}-{commit12}-{}.log", now_unix()));
        b.feed.push(BuildEvent::Building {
            line: format!(
                "building {WORKER} ({fkey}) at {commit12}; log: {}",
                log_path.display()
            ),
        });
        let target_dir = self.cfg.build_dir().join(&fkey).join("target");
        let built = cargo::build(
            &cargo::BuildJob {
                cargo: &cargo,
                checkout: &checkout.dir,
                target_dir: &target_dir,
                features: &b.features,
                log_path: &log_path,
            },
            &mut |pid| *b.pid.lock().unwrap_or_else(|e| e.into_inner()) = Some(pid),
            &mut |l| b.feed.push(BuildEvent::Building { line: l.to_owned() }),
        );
        *b.pid.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let built = built?;
        b.feed.push(BuildEvent::Verifying {
            message: format!("checking {}", built.display()),
        });
        let version = install::verify(&built, &b.features).map_err(|e| e.in_build(&log_path))?;
        let (path, sha256) = install::install(&built, &self.cfg.bin_dir(), &id)?;
        let binary = Binary {
            id,
            worker_type: WORKER.into(),
            binary_path: path,
            features: b.features.clone(),
            origin: Origin::Git,
            git_url: Some(src.git_url.clone()),
            git_ref: Some(b.git_ref.clone()),
            git_commit: Some(checkout.commit.clone()),
            rust_version: cargo::rust_version(&cargo),
            version,
            built_at_unix: now_unix(),
            build_secs: Some(t0.elapsed().as_secs_f64()),
            sha256,
        };
        self.catalog().insert(&binary)?;
        Ok((binary, false))
    }

    /// Waits for a free build slot (announcing the wait in the build's feed).
    fn slot(&self, b: &Build, max: usize) -> SlotGuard<'_> {
        let (lock, cv) = &self.running;
        let mut n = lock.lock().unwrap_or_else(|e| e.into_inner());
        if *n >= max {
            b.feed.push(BuildEvent::Queued {
                message: format!("waiting: {max} build(s) already running (max_concurrent_builds)"),
            });
        }
        while *n >= max {
            n = cv.wait(n).unwrap_or_else(|e| e.into_inner());
        }
        *n += 1;
        SlotGuard(self)
    }

    /// Removes a binary (and its file, if the hive built it); refused while a worker runs it.
    pub fn remove(&self, id: &str) -> Result<Binary, BinaryError> {
        let mut cat = self.catalog();
        let Some(b) = cat.get(id)? else {
            return Err(BinaryError::BinaryNotFound { id: id.into() });
        };
        if self.used(&b.binary_path) {
            return Err(BinaryError::BinaryInUse { id: id.into() });
        }
        cat.remove(id)?;
        drop(cat);
        if b.origin == Origin::Git {
            let _ = std::fs::remove_file(&b.binary_path);
        } else {
            *self.installed.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        tracing::info!(%id, "worker binary removed");
        Ok(b)
    }

    /// Removes built binaries that no worker runs and that are neither the newest of
    /// their feature set nor the one new workers get (a newer build replaced them).
    pub fn collect_garbage(&self) {
        let Ok(all) = self.list() else { return };
        let mut sets: HashMap<Vec<String>, Vec<Binary>> = HashMap::new();
        for b in all.into_iter().filter(|b| b.origin == Origin::Git) {
            // Still newest first within each set.
            sets.entry(b.features.clone()).or_default().push(b);
        }
        for built in sets.values() {
            let newest = built.first().map(|b| b.id.as_str());
            let picked = self.pick(built).map(|b| b.id.as_str());
            for b in built {
                let id = Some(b.id.as_str());
                if id != newest && id != picked && !self.used(&b.binary_path) {
                    tracing::info!(id = %b.id, "removing a replaced worker binary no worker runs");
                    let _ = self.remove(&b.id);
                }
            }
        }
    }
}

/// A taken build slot; given back on drop.
struct SlotGuard<'a>(&'a Builder);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        let (lock, cv) = &self.0.running;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        cv.notify_all();
    }
}

fn short_hash(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}
