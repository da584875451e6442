//! "Is the model here?" answered from the catalogue; what is missing is fetched once, however
//! many requests want it, with progress anyone can follow.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rbee_types::ApiError;

use crate::catalog::{hf_model, model_for_file, slug, Catalog, Model, ModelStatus};
pub use crate::error::ProvisionError;
use crate::hub::{self, HubConfig};
use crate::models_dir::ModelsDir;
use rbee_types::hive::DownloadProgress;
use rbee_types::model_ref::{ModelRef, Selector};
use rbee_types::watch::Watched;

/// A download in flight (or finished), shared by everyone who asked for it.
pub struct Transfer {
    /// Its id (`dl-3`).
    pub id: String,
    /// The reference it was started for.
    pub reference: String,
    progress: Watched<DownloadProgress>,
}

impl Transfer {
    fn set(&self, p: DownloadProgress) {
        self.progress.update(|now| *now = p);
    }

    /// The latest progress and its version.
    pub fn current(&self) -> (u64, DownloadProgress) {
        self.progress.read(|v, p| (v, p.clone()))
    }

    /// Waits (at most `timeout`) for progress newer than version `seen`.
    pub fn wait_newer(&self, seen: u64, timeout: Duration) -> (u64, DownloadProgress) {
        self.progress.newer_than(seen, timeout)
    }

    /// Blocks until the transfer ends; the model, or the error its feed ended with
    /// ([`ProvisionError::Failed`]).
    pub fn wait(&self) -> Result<String, ProvisionError> {
        let mut seen = 0;
        loop {
            let (g, p) = self.wait_newer(seen, Duration::from_secs(3600));
            seen = g;
            match p {
                DownloadProgress::Complete { model_id, .. } => return Ok(model_id),
                DownloadProgress::Error { error } => return Err(ProvisionError::Failed(error)),
                _ => {}
            }
        }
    }
}

/// What [`Provisioner::ensure`] found.
pub enum Ensured {
    /// In the catalogue, file present.
    Ready(Box<Model>),
    /// Being downloaded.
    Downloading(Arc<Transfer>),
}

/// The catalogue and the downloads.
pub struct Provisioner {
    catalog: Mutex<Catalog>,
    models_dir: ModelsDir,
    /// Directories `file://` references may point into (canonical).
    file_dirs: Vec<PathBuf>,
    hub: HubConfig,
    transfers: Mutex<HashMap<String, Arc<Transfer>>>,
    next: AtomicU64,
    downloaded: AtomicU64,
}

impl Provisioner {
    /// Opens `models.db` in `state_dir`, reconciles it with the files, and keeps models in
    /// `models_dir`.
    pub fn open(
        state_dir: &Path,
        models_dir: &Path,
        hub: HubConfig,
    ) -> Result<Provisioner, ProvisionError> {
        let mut catalog =
            Catalog::open(&state_dir.join("models.db")).map_err(ProvisionError::Open)?;
        let models_dir =
            ModelsDir::open(models_dir).map_err(|source| ProvisionError::ModelsDir {
                dir: models_dir.to_path_buf(),
                source,
            })?;
        if let Some(aside) = catalog.recovered().map(Path::to_path_buf) {
            let n = catalog
                .rebuild_from(models_dir.root())
                .map_err(ProvisionError::Open)?;
            tracing::error!(
                moved_to = %aside.display(),
                models = n,
                "the model catalogue was damaged and is rebuilt from the files in models_dir (file:// models are recorded again when next asked for)"
            );
        }
        let missing = catalog.reconcile().map_err(ProvisionError::Open)?;
        for id in missing {
            tracing::warn!(%id, "catalogued model's file is gone; marked missing (it is fetched again when asked for)");
        }
        remove_stale_partials(models_dir.root(), STALE_PARTIAL);
        Ok(Provisioner {
            file_dirs: vec![models_dir.root().to_path_buf()],
            catalog: Mutex::new(catalog),
            models_dir,
            hub,
            transfers: Mutex::default(),
            next: AtomicU64::new(1),
            downloaded: AtomicU64::new(0),
        })
    }

    /// The catalogue (short critical sections only).
    pub fn catalog(&self) -> MutexGuard<'_, Catalog> {
        self.catalog.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A transfer by id.
    pub fn transfer(&self, id: &str) -> Option<Arc<Transfer>> {
        self.transfers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .find(|t| t.id == id)
            .cloned()
    }

    /// The model a reference names: from the catalogue, imported (file), or a download
    /// started — or joined, when one for the same reference runs.
    pub fn ensure(self: &Arc<Self>, model_ref: &ModelRef) -> Result<Ensured, ProvisionError> {
        let reference = &model_ref.to_string();
        match model_ref.clone() {
            ModelRef::File { path } => self
                .import(reference, &path)
                .map(|m| Ensured::Ready(Box::new(m))),
            ModelRef::Hf {
                repo,
                selector,
                revision,
            } => {
                if let Some(m) = self.cached(&repo, &revision, &selector) {
                    return Ok(Ensured::Ready(Box::new(m)));
                }
                let key = format!("{repo}\n{revision}\n{selector:?}");
                let mut transfers = self.transfers.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(t) = transfers.get(&key) {
                    if !t.current().1.is_final() {
                        return Ok(Ensured::Downloading(Arc::clone(t)));
                    }
                }
                let t = Arc::new(Transfer {
                    id: format!("dl-{}", self.next.fetch_add(1, Ordering::Relaxed)),
                    reference: reference.to_owned(),
                    progress: Watched::new(DownloadProgress::Resolving),
                });
                transfers.insert(key, Arc::clone(&t));
                drop(transfers);
                let (me, t2) = (Arc::clone(self), Arc::clone(&t));
                let reference = reference.to_owned();
                std::thread::Builder::new()
                    .name("download".into())
                    .spawn(move || {
                        let result = me.fetch(&reference, &repo, &revision, &selector, &t2);
                        t2.set(match result {
                            Ok(m) => {
                                tracing::info!(model = %m.id, path = %m.local_path.display(), "model downloaded and verified");
                                DownloadProgress::Complete {
                                    local_path: m.local_path,
                                    model_id: m.id,
                                }
                            }
                            Err(e) => {
                                tracing::error!(%reference, code = %e.code().as_str(), "download failed: {e}");
                                DownloadProgress::Error {
                                    error: ApiError::from(e).error,
                                }
                            }
                        });
                    })
                    .map_err(ProvisionError::Thread)?;
                Ok(Ensured::Downloading(t))
            }
        }
    }

    /// Where the model a reference names is on disk, when it is here already (nothing is
    /// downloaded or imported to find out). Two references that name the same file (`hf:org/
    /// repo` and `hf:org/repo:Q4_1`) give the same path.
    pub fn local_path(&self, model_ref: &ModelRef) -> Option<std::path::PathBuf> {
        match model_ref {
            ModelRef::File { path } => Some(path.clone()),
            ModelRef::Hf {
                repo,
                selector,
                revision,
            } => self.cached(repo, revision, selector).map(|m| m.local_path),
        }
    }

    /// The model from the Hugging Face cache, used in place, when the file is there at
    /// this revision and its SHA-256 is the one its blob is named by (the hub's LFS hash);
    /// `None` sends the caller to the hub. Nothing is asked of the hub.
    fn in_hf_cache(
        &self,
        reference: &str,
        repo: &str,
        revision: &str,
        selector: &Selector,
    ) -> Result<Option<Model>, ProvisionError> {
        let Some(cache) = &self.hub.cache else {
            return Ok(None);
        };
        let Some((info, dir)) = crate::hf_cache::snapshot(cache, repo, revision) else {
            return Ok(None);
        };
        let Ok(file) = hub::choose(&info, selector, reference) else {
            return Ok(None);
        };
        let Some(expected) = file.sha256.clone() else {
            return Ok(None); // not an LFS blob: nothing to check it against
        };
        let path = dir.join(&file.path);
        match crate::hf_cache::sha256_file(&path) {
            Ok(got) if got == expected => {}
            Ok(got) => {
                tracing::warn!(path = %path.display(), %expected, %got, "a file in the Hugging Face cache does not match its hash; downloading instead");
                return Ok(None);
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot read a file in the Hugging Face cache ({e}); downloading instead");
                return Ok(None);
            }
        }
        let header = match rbee_gguf::read_header(&path) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(path = %path.display(), "the Hugging Face cache's file is not a usable GGUF model ({e}); downloading instead");
                return Ok(None);
            }
        };
        let model = Model {
            sha256: Some(expected),
            hub_verified: Some(true),
            ..hf_model(
                repo,
                revision,
                &info.commit,
                &file.path,
                path,
                file.size,
                Some(&header),
            )
        };
        self.catalog().insert(&model).map_err(catalog_error)?;
        tracing::info!(model = %model.id, path = %model.local_path.display(), "found in the Hugging Face cache and verified; used in place");
        Ok(Some(model))
    }

    /// A ready catalogue row for this repository, revision and selector.
    fn cached(&self, repo: &str, revision: &str, selector: &Selector) -> Option<Model> {
        let all = self.catalog().by_provider("hf").ok()?;
        let mut m: Vec<Model> = all
            .into_iter()
            .filter(|m| {
                m.status == ModelStatus::Ready
                    && m.repo.as_deref() == Some(repo)
                    && (m.revision.as_deref() == Some(revision)
                        || m.commit_sha.as_deref() == Some(revision))
                    && std::fs::metadata(&m.local_path).is_ok_and(|md| md.len() == m.size_bytes)
            })
            .collect();
        m.retain(|m| match selector {
            Selector::Only => true,
            Selector::File(f) => m.reference.contains(&format!("/{f}@")),
            Selector::Quant(q) => {
                let info = hub::RepoInfo {
                    commit: String::new(),
                    files: vec![hub::RepoFile {
                        path: m.file_name.clone(),
                        size: 0,
                        sha256: None,
                    }],
                };
                hub::choose(&info, &Selector::Quant(q.clone()), "").is_ok()
            }
        });
        (m.len() == 1).then(|| m.remove(0))
    }

    fn fetch(
        &self,
        reference: &str,
        repo: &str,
        revision: &str,
        selector: &Selector,
        t: &Transfer,
    ) -> Result<Model, ProvisionError> {
        if let Some(m) = self.in_hf_cache(reference, repo, revision, selector)? {
            return Ok(m);
        }
        let info = hub::repo_info(&self.hub, repo, revision, reference)?;
        let file = hub::choose(&info, selector, reference)?;
        let name = file
            .path
            .rsplit('/')
            .next()
            .unwrap_or(&file.path)
            .to_owned();
        let dest = self
            .models_dir
            .download_path(repo, &info.commit, &name)
            .map_err(|source| ProvisionError::DownloadPath {
                reference: reference.to_owned(),
                source,
            })?;
        let mut last_bytes = 0;
        let sha = hub::download(
            &self.hub,
            repo,
            &info.commit,
            &file,
            &dest,
            reference,
            |tick| {
                if let Some(reason) = &tick.retrying {
                    return t.set(DownloadProgress::Retrying {
                        attempt: tick.attempt,
                        attempts: self.hub.attempts,
                        reason: reason.clone(),
                        bytes_downloaded: tick.bytes,
                        bytes_total: tick.total,
                    });
                }
                // Progress is cumulative per attempt (a resumed attempt starts from the
                // bytes already on disk): count growth only.
                let grew = tick.bytes.saturating_sub(last_bytes);
                last_bytes = last_bytes.max(tick.bytes);
                self.downloaded.fetch_add(grew, Ordering::Relaxed);
                t.set(DownloadProgress::Downloading {
                    bytes_downloaded: tick.bytes,
                    bytes_total: tick.total,
                    speed_mbps: (tick.speed_mbps * 100.0).round() / 100.0,
                    attempt: tick.attempt,
                })
            },
        )?;
        // Ready only once it passes the check the worker runs before llama.cpp: a hub that
        // gives no hash can send anything.
        let header = match rbee_gguf::read_header(&dest) {
            Ok(h) => h,
            Err(source) => {
                self.models_dir.remove(&dest);
                return Err(ProvisionError::DownloadedNotGguf {
                    reference: reference.to_owned(),
                    source,
                });
            }
        };
        let model = Model {
            sha256: Some(sha),
            hub_verified: Some(file.sha256.is_some()),
            ..hf_model(
                repo,
                revision,
                &info.commit,
                &file.path,
                dest,
                file.size,
                Some(&header),
            )
        };
        self.catalog().insert(&model).map_err(catalog_error)?;
        Ok(model)
    }

    /// Lets `file://` references point into `dirs` too (besides `models_dir`); directories
    /// that do not exist are left out.
    pub fn with_file_dirs(mut self, dirs: &[PathBuf]) -> Provisioner {
        for d in dirs {
            match std::fs::canonicalize(d) {
                Ok(real) if !self.file_dirs.contains(&real) => self.file_dirs.push(real),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(dir = %d.display(), error = %e, "a model directory of the config is not usable; file:// models there are refused")
                }
            }
        }
        tracing::info!(dirs = ?self.file_dirs, "file:// models are served from these directories");
        self
    }

    /// Records a local file in place (no copy). A file outside the allowed directories, a
    /// missing one and an unreadable one get the same answer, which names only the
    /// reference: a client cannot probe which files the hive can read.
    fn import(&self, reference: &str, path: &Path) -> Result<Model, ProvisionError> {
        // The client hears one answer; the operator's log says which it was.
        let refused = |why: &str| {
            tracing::info!(model = reference, why, "file:// model refused");
            ProvisionError::FileRefused {
                reference: reference.to_owned(),
            }
        };
        let real = std::fs::canonicalize(path).map_err(|_| refused("no such file"))?;
        if !self.file_dirs.iter().any(|d| real.starts_with(d)) {
            return Err(refused(
                "outside models_dir and model_dirs (add its directory to model_dirs)",
            ));
        }
        let meta = std::fs::metadata(&real).map_err(|_| refused("unreadable"))?;
        if !meta.is_file() || std::fs::File::open(&real).is_err() {
            return Err(refused("not a regular file, or not readable by the hive"));
        }
        let header = rbee_gguf::read_header(&real).map_err(|source| ProvisionError::NotGguf {
            reference: reference.to_owned(),
            source,
        })?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Two files of one name in different folders are two models.
        let id = slug(&format!(
            "file--{}-{:08x}",
            name.trim_end_matches(".gguf"),
            fnv32(reference)
        ));
        let model = model_for_file(
            id,
            "file",
            reference.to_owned(),
            name,
            real,
            meta.len(),
            Some(&header),
        );
        let mut cat = self.catalog();
        let existing = cat.by_reference(reference).ok().flatten();
        match existing {
            Some(m) if m.local_path == model.local_path && m.size_bytes == model.size_bytes => {
                Ok(m)
            }
            _ => {
                cat.insert(&model).map_err(catalog_error)?;
                Ok(model)
            }
        }
    }

    /// Bytes of model files downloaded from the hub since the hive started.
    pub fn downloaded_bytes(&self) -> u64 {
        self.downloaded.load(Ordering::Relaxed)
    }

    /// Deletes a model's row and (for downloaded models) its file, never a file outside the
    /// models directory; the model and whether its file was deleted.
    pub fn remove(&self, id: &str) -> Result<(Model, bool), ProvisionError> {
        let m = self
            .catalog()
            .remove(id)
            .map_err(catalog_error)?
            .ok_or_else(|| ProvisionError::NoSuchModel { id: id.to_owned() })?;
        let deleted = m.provider == "hf" && self.models_dir.remove(&m.local_path);
        Ok((m, deleted))
    }
}

/// A catalogue error, logged with where the database is (the error's message leaves that
/// out).
fn catalog_error(e: crate::catalog::CatalogError) -> ProvisionError {
    tracing::error!(error = %e, "model catalogue");
    ProvisionError::Catalog(e)
}

/// Partial downloads untouched this long are removed on start (younger ones are resumed
/// when their model is asked for again).
pub const STALE_PARTIAL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Removes `.…partial` files under `dir` not written for `age`.
fn remove_stale_partials(dir: &Path, age: Duration) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        // Not followed: a link may point anywhere.
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            remove_stale_partials(&path, age);
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        let old = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|a| a >= age);
        if name.starts_with('.') && name.ends_with(".partial") && old {
            tracing::info!(path = %path.display(), "removing a stale partial download");
            let _ = std::fs::remove_file(&path);
        }
    }
}

fn fnv32(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_stale_partial_files_are_removed() {
        let d = std::env::temp_dir().join(format!("rbee-partials-{}", std::process::id()));
        let sub = d.join("hf/org/repo/c");
        std::fs::create_dir_all(&sub).unwrap();
        for f in [".m.gguf.partial", "m.gguf", ".x.partial"] {
            std::fs::write(sub.join(f), b"x").unwrap();
        }
        remove_stale_partials(&d, Duration::from_secs(3600));
        assert!(
            sub.join(".m.gguf.partial").exists(),
            "a fresh partial is kept for resuming"
        );
        remove_stale_partials(&d, Duration::ZERO);
        assert!(!sub.join(".m.gguf.partial").exists());
        assert!(!sub.join(".x.partial").exists());
        assert!(sub.join("m.gguf").exists(), "complete files stay");
        std::fs::remove_dir_all(d).unwrap();
    }
}
