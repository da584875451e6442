//! The model catalogue: SQLite `models.db` in the hive's state directory.
//!
//! WAL, a busy timeout, migrations by `PRAGMA user_version`, and read-then-write in
//! `BEGIN IMMEDIATE`. A row is only ever written for a file that is complete, verified,
//! fsynced and in its final place.

use std::path::{Path, PathBuf};

use rbee_gguf::GgufHeader;
use rusqlite::{params, Row, TransactionBehavior};

/// Catalogue failures.
pub type CatalogError = rbee_sqlite::DbError;

pub use rbee_types::hive::{Model, ModelStatus};

/// A catalogue id from a name (`org--repo--file`).
pub(crate) fn slug(s: &str) -> String {
    rbee_types::model_ref::url_safe(s)
        .trim_matches(['-', '.'])
        .chars()
        .take(120)
        .collect()
}

/// The row of `path_in_repo` downloaded from hub repository `repo` at `commit` (asked for
/// as `revision`) to `local_path`; its id is `org--repo--<file name without .gguf>`. Its
/// metadata comes from `header`, the file's GGUF header as the caller checked it.
pub(crate) fn hf_model(
    repo: &str,
    revision: &str,
    commit: &str,
    path_in_repo: &str,
    local_path: PathBuf,
    size_bytes: u64,
    header: Option<&GgufHeader>,
) -> Model {
    let name = path_in_repo
        .rsplit('/')
        .next()
        .unwrap_or(path_in_repo)
        .to_owned();
    let id = slug(&format!(
        "{}--{}",
        repo.replace('/', "--"),
        name.trim_end_matches(".gguf")
    ));
    Model {
        repo: Some(repo.to_owned()),
        revision: Some(revision.to_owned()),
        commit_sha: Some(commit.to_owned()),
        ..model_for_file(
            id,
            "hf",
            format!("hf:{repo}/{path_in_repo}@{revision}"),
            name,
            local_path,
            size_bytes,
            header,
        )
    }
}

/// A ready row for a file recorded now, with the GGUF metadata (architecture, parameter
/// count, quantization, context length, vocabulary size) from `header`, the file's header
/// as the caller read it when checking the file (the header is read once per admission).
pub fn model_for_file(
    id: String,
    provider: &str,
    reference: String,
    file_name: String,
    local_path: PathBuf,
    size_bytes: u64,
    header: Option<&GgufHeader>,
) -> Model {
    let h = header;
    Model {
        id,
        provider: provider.to_owned(),
        reference,
        repo: None,
        revision: None,
        commit_sha: None,
        file_name,
        local_path,
        size_bytes,
        sha256: None,
        hub_verified: None,
        downloaded_at_unix: rbee_types::now_unix(),
        architecture: h.and_then(|h| h.architecture().map(str::to_owned)),
        parameter_count: h.map(|h| h.parameters),
        quantization: h.and_then(|h| h.quantization()),
        context_length: h.and_then(|h| h.context_length()),
        vocab_size: h.and_then(|h| h.vocab_size()),
        status: ModelStatus::Ready,
    }
}

/// Names the database in errors.
const WHAT: &str = "model catalogue";

const MIGRATIONS: &[&str] = &[
    // 1: the models table.
    "CREATE TABLE models (
        id TEXT PRIMARY KEY,
        provider TEXT NOT NULL CHECK (provider IN ('hf', 'file')),
        reference TEXT NOT NULL UNIQUE,
        repo TEXT,
        revision TEXT,
        commit_sha TEXT,
        file_name TEXT NOT NULL,
        local_path TEXT NOT NULL,
        size_bytes INTEGER NOT NULL,
        sha256 TEXT,
        downloaded_at_unix INTEGER NOT NULL,
        architecture TEXT,
        parameter_count INTEGER,
        quantization TEXT,
        context_length INTEGER,
        vocab_size INTEGER,
        status TEXT NOT NULL DEFAULT 'ready' CHECK (status IN ('ready', 'missing'))
    );
    CREATE INDEX models_provider ON models (provider);",
    // 2: whether the hash came from the hub (NULL: a local file, or recorded before).
    "ALTER TABLE models ADD COLUMN hub_verified INTEGER;",
];

/// The catalogue (one connection; callers serialise through a mutex).
pub struct Catalog {
    db: rbee_sqlite::Db,
}

const COLUMNS: &str =
    "id, provider, reference, repo, revision, commit_sha, file_name, local_path, \
     size_bytes, sha256, downloaded_at_unix, architecture, parameter_count, quantization, \
     context_length, vocab_size, status, hub_verified";

fn from_row(r: &Row<'_>) -> rusqlite::Result<Model> {
    let status: String = r.get(16)?;
    Ok(Model {
        id: r.get(0)?,
        provider: r.get(1)?,
        reference: r.get(2)?,
        repo: r.get(3)?,
        revision: r.get(4)?,
        commit_sha: r.get(5)?,
        file_name: r.get(6)?,
        local_path: PathBuf::from(r.get::<_, String>(7)?),
        size_bytes: r.get::<_, i64>(8)? as u64,
        sha256: r.get(9)?,
        downloaded_at_unix: r.get::<_, i64>(10)? as u64,
        architecture: r.get(11)?,
        parameter_count: r.get::<_, Option<i64>>(12)?.map(|v| v as u64),
        quantization: r.get(13)?,
        context_length: r.get::<_, Option<i64>>(14)?.map(|v| v as u64),
        vocab_size: r.get::<_, Option<i64>>(15)?.map(|v| v as u64),
        status: if status == "missing" {
            ModelStatus::Missing
        } else {
            ModelStatus::Ready
        },
        hub_verified: r.get(17)?,
    })
}

impl Catalog {
    /// Opens (creating and migrating) `path`.
    pub fn open(path: &Path) -> Result<Catalog, CatalogError> {
        Ok(Catalog {
            db: rbee_sqlite::Db::open(path, WHAT, MIGRATIONS)?,
        })
    }

    fn err(&self, source: rusqlite::Error) -> CatalogError {
        self.db.err(source)
    }

    /// Records a model (replacing a row of the same reference).
    pub fn insert(&mut self, m: &Model) -> Result<(), CatalogError> {
        let tx = self
            .db
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.db.name.err(e))?;
        let r = tx
            .execute("DELETE FROM models WHERE reference = ?1 OR id = ?2", params![m.reference, m.id])
            .and_then(|_| {
                tx.execute(
                    &format!("INSERT INTO models ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"),
                    params![
                        m.id,
                        m.provider,
                        m.reference,
                        m.repo,
                        m.revision,
                        m.commit_sha,
                        m.file_name,
                        m.local_path.display().to_string(),
                        m.size_bytes as i64,
                        m.sha256,
                        m.downloaded_at_unix as i64,
                        m.architecture,
                        m.parameter_count.map(|v| v as i64),
                        m.quantization,
                        m.context_length.map(|v| v as i64),
                        m.vocab_size.map(|v| v as i64),
                        match m.status {
                            ModelStatus::Ready => "ready",
                            ModelStatus::Missing => "missing",
                        },
                        m.hub_verified,
                    ],
                )
            })
            .and_then(|_| tx.commit());
        r.map_err(|e| self.err(e))
    }

    fn query(&self, filter: &str, arg: Option<&str>) -> Result<Vec<Model>, CatalogError> {
        let sql = format!("SELECT {COLUMNS} FROM models {filter} ORDER BY id");
        let mut stmt = self.db.conn.prepare_cached(&sql).map_err(|e| self.err(e))?;
        let rows = match arg {
            Some(a) => stmt.query_map([a], from_row),
            None => stmt.query_map([], from_row),
        }
        .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// By id.
    pub fn get(&self, id: &str) -> Result<Option<Model>, CatalogError> {
        Ok(self.query("WHERE id = ?1", Some(id))?.into_iter().next())
    }

    /// By canonical reference.
    pub fn by_reference(&self, reference: &str) -> Result<Option<Model>, CatalogError> {
        Ok(self
            .query("WHERE reference = ?1", Some(reference))?
            .into_iter()
            .next())
    }

    /// Every model of a provider (`hf`, `file`).
    pub fn by_provider(&self, provider: &str) -> Result<Vec<Model>, CatalogError> {
        self.query("WHERE provider = ?1", Some(provider))
    }

    /// Every model.
    pub fn list(&self) -> Result<Vec<Model>, CatalogError> {
        self.query("", None)
    }

    /// Deletes a row; returns it.
    pub fn remove(&mut self, id: &str) -> Result<Option<Model>, CatalogError> {
        let found = self.get(id)?;
        if found.is_some() {
            self.db
                .conn
                .execute("DELETE FROM models WHERE id = ?1", [id])
                .map_err(|e| self.err(e))?;
        }
        Ok(found)
    }

    /// Marks rows whose file vanished `missing` (and found ones `ready` again); returns
    /// the ids now missing.
    pub fn reconcile(&mut self) -> Result<Vec<String>, CatalogError> {
        let mut missing = vec![];
        for m in self.list()? {
            let present = std::fs::metadata(&m.local_path).is_ok_and(|md| md.is_file());
            let status = if present { "ready" } else { "missing" };
            if !present {
                missing.push(m.id.clone());
            }
            self.db
                .conn
                .execute(
                    "UPDATE models SET status = ?1 WHERE id = ?2",
                    params![status, m.id],
                )
                .map_err(|e| self.err(e))?;
        }
        Ok(missing)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        self.db.name.path()
    }

    /// Where the damaged database went, when this catalogue was created in its place.
    pub fn recovered(&self) -> Option<&Path> {
        self.db.recovered.as_deref()
    }

    /// Records the downloads found under `models_dir` (`hf/<org>/<repo>/<commit>/<file>.gguf`,
    /// after a damaged catalogue was replaced); how many. Their hub hash is unknown until
    /// they are downloaded again, so they are recorded without one.
    pub fn rebuild_from(&mut self, models_dir: &Path) -> Result<usize, CatalogError> {
        let mut found = 0;
        for (repo, commit, path) in downloads_under(&models_dir.join("hf")) {
            let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
                continue;
            };
            let size = std::fs::metadata(&path).map_or(0, |m| m.len());
            let header = rbee_gguf::read_header(&path).ok();
            let model = hf_model(&repo, &commit, &commit, &name, path, size, header.as_ref());
            self.insert(&model)?;
            found += 1;
        }
        Ok(found)
    }
}

/// `(org/repo, commit, file)` of every complete `.gguf` under `hf_dir`, links not followed.
fn downloads_under(hf_dir: &Path) -> Vec<(String, String, PathBuf)> {
    let dirs = |p: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(p)
            .map(|r| {
                r.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    };
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let mut out = vec![];
    for org in dirs(hf_dir) {
        for repo in dirs(&org) {
            for commit in dirs(&repo) {
                let Ok(files) = std::fs::read_dir(&commit) else {
                    continue;
                };
                for f in files.flatten() {
                    let file = f.path();
                    let plain = f.file_type().is_ok_and(|t| t.is_file());
                    let n = name(&file);
                    if plain && n.ends_with(".gguf") && !n.starts_with('.') {
                        out.push((
                            format!("{}/{}", name(&org), name(&repo)),
                            name(&commit),
                            file,
                        ));
                    }
                }
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn model(id: &str, path: &Path) -> Model {
        Model {
            id: id.into(),
            provider: "hf".into(),
            reference: format!("hf:org/{id}/m.gguf@main"),
            repo: Some(format!("org/{id}")),
            revision: Some("main".into()),
            commit_sha: Some("abc".into()),
            file_name: "m.gguf".into(),
            local_path: path.to_path_buf(),
            size_bytes: 3,
            sha256: Some("00".into()),
            hub_verified: Some(true),
            downloaded_at_unix: 1,
            architecture: Some("llama".into()),
            parameter_count: Some(135_000_000),
            quantization: Some("Q4_1".into()),
            context_length: Some(8192),
            vocab_size: Some(49152),
            status: ModelStatus::Ready,
        }
    }

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rbee-cat-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn rows_round_trip_and_survive_reopening() {
        let d = tmp("rt");
        let f = d.join("m.gguf");
        std::fs::write(&f, b"abc").unwrap();
        let db = d.join("models.db");
        let mut c = Catalog::open(&db).unwrap();
        c.insert(&model("a", &f)).unwrap();
        c.insert(&Model {
            provider: "file".into(),
            reference: "file:///b".into(),
            ..model("b", &f)
        })
        .unwrap();
        drop(c);
        let c = Catalog::open(&db).unwrap();
        assert_eq!(c.get("a").unwrap(), Some(model("a", &f)));
        assert_eq!(
            c.by_reference("hf:org/a/m.gguf@main").unwrap().unwrap().id,
            "a"
        );
        assert_eq!(c.by_provider("file").unwrap().len(), 1);
        assert_eq!(c.list().unwrap().len(), 2);
        let mode: String =
            c.db.conn
                .pragma_query_value(None, "journal_mode", |r| r.get(0))
                .unwrap();
        assert_eq!(mode, "wal");
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_vanished_file_is_marked_missing_and_found_again() {
        let d = tmp("rc");
        let f = d.join("m.gguf");
        std::fs::write(&f, b"abc").unwrap();
        let mut c = Catalog::open(&d.join("models.db")).unwrap();
        c.insert(&model("a", &f)).unwrap();
        std::fs::remove_file(&f).unwrap();
        assert_eq!(c.reconcile().unwrap(), ["a"]);
        assert_eq!(c.get("a").unwrap().unwrap().status, ModelStatus::Missing);
        std::fs::write(&f, b"abc").unwrap();
        assert!(c.reconcile().unwrap().is_empty());
        assert_eq!(c.get("a").unwrap().unwrap().status, ModelStatus::Ready);
        assert!(c.remove("a").unwrap().is_some());
        assert!(c.get("a").unwrap().is_none());
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_database_from_a_newer_rbee_is_refused() {
        let d = tmp("new");
        let db = d.join("models.db");
        rusqlite::Connection::open(&db)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let e = Catalog::open(&db).err().unwrap().to_string();
        assert!(e.contains("schema version 99"), "{e}");
        std::fs::remove_dir_all(d).unwrap();
    }
}
