//! The worker binaries catalogue: SQLite `workers.db` in the hive's state directory.
//!
//! Same durability rules as the model catalogue: a row is written only for a binary that
//! was built, verified, fsynced and renamed into its final place.

use std::path::{Path, PathBuf};

use rbee_sqlite::{Db, DbError};
use rusqlite::{params, Row};

pub use rbee_types::hive::{Binary, Origin};

/// Names the database in errors.
const WHAT: &str = "worker binaries catalogue";

const MIGRATIONS: &[&str] = &[
    // 1: the binaries table.
    "CREATE TABLE binaries (
        id TEXT PRIMARY KEY,
        worker_type TEXT NOT NULL,
        binary_path TEXT NOT NULL,
        features TEXT NOT NULL,
        origin TEXT NOT NULL CHECK (origin IN ('git', 'installed')),
        git_url TEXT,
        git_ref TEXT,
        git_commit TEXT,
        rust_version TEXT,
        version TEXT NOT NULL,
        built_at_unix INTEGER NOT NULL,
        build_secs REAL,
        sha256 TEXT NOT NULL
    );
    CREATE INDEX binaries_features ON binaries (features);",
];

const COLUMNS: &str = "id, worker_type, binary_path, features, origin, git_url, git_ref, \
     git_commit, rust_version, version, built_at_unix, build_secs, sha256";

fn from_row(r: &Row<'_>) -> rusqlite::Result<Binary> {
    let features: String = r.get(3)?;
    let origin: String = r.get(4)?;
    Ok(Binary {
        id: r.get(0)?,
        worker_type: r.get(1)?,
        binary_path: PathBuf::from(r.get::<_, String>(2)?),
        features: serde_json::from_str(&features).unwrap_or_default(),
        origin: if origin == "git" {
            Origin::Git
        } else {
            Origin::Installed
        },
        git_url: r.get(5)?,
        git_ref: r.get(6)?,
        git_commit: r.get(7)?,
        rust_version: r.get(8)?,
        version: r.get(9)?,
        built_at_unix: r.get::<_, i64>(10)? as u64,
        build_secs: r.get(11)?,
        sha256: r.get(12)?,
    })
}

/// The feature list as stored (a JSON array, sorted).
fn features_json(features: &[String]) -> String {
    serde_json::to_string(features).unwrap_or_else(|_| "[]".into())
}

/// The catalogue (one connection; callers serialise through a mutex).
pub struct Catalog {
    db: Db,
}

impl Catalog {
    /// Opens (creating and migrating) `path`.
    pub fn open(path: &Path) -> Result<Catalog, DbError> {
        Ok(Catalog {
            db: Db::open(path, WHAT, MIGRATIONS)?,
        })
    }

    /// Where the damaged database went, when this catalogue was created in its place.
    pub fn recovered(&self) -> Option<&Path> {
        self.db.recovered.as_deref()
    }

    /// Records a binary (replacing a row with the same id).
    pub fn insert(&mut self, b: &Binary) -> Result<(), DbError> {
        self.db
            .conn
            .execute(
                &format!(
                    "INSERT OR REPLACE INTO binaries ({COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
                ),
                params![
                    b.id,
                    b.worker_type,
                    b.binary_path.display().to_string(),
                    features_json(&b.features),
                    match b.origin {
                        Origin::Git => "git",
                        Origin::Installed => "installed",
                    },
                    b.git_url,
                    b.git_ref,
                    b.git_commit,
                    b.rust_version,
                    b.version,
                    b.built_at_unix as i64,
                    b.build_secs,
                    b.sha256,
                ],
            )
            .map_err(|e| self.db.err(e))?;
        Ok(())
    }

    fn query(&self, filter: &str, args: impl rusqlite::Params) -> Result<Vec<Binary>, DbError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM binaries {filter} ORDER BY built_at_unix DESC, rowid DESC"
        );
        let mut st = self
            .db
            .conn
            .prepare_cached(&sql)
            .map_err(|e| self.db.err(e))?;
        let rows = st
            .query_map(args, from_row)
            .and_then(|r| r.collect::<Result<Vec<_>, _>>());
        rows.map_err(|e| self.db.err(e))
    }

    /// Every binary, newest first.
    pub fn list(&self) -> Result<Vec<Binary>, DbError> {
        self.query("", [])
    }

    /// One binary by id.
    pub fn get(&self, id: &str) -> Result<Option<Binary>, DbError> {
        Ok(self.query("WHERE id = ?1", [id])?.into_iter().next())
    }

    /// The binaries built from git with exactly these (normalised) features, newest first.
    pub fn built_with(&self, features: &[String]) -> Result<Vec<Binary>, DbError> {
        self.query(
            "WHERE origin = 'git' AND features = ?1",
            [features_json(features)],
        )
    }

    /// Removes a row; whether there was one.
    pub fn remove(&mut self, id: &str) -> Result<bool, DbError> {
        self.db
            .conn
            .execute("DELETE FROM binaries WHERE id = ?1", [id])
            .map(|n| n > 0)
            .map_err(|e| self.db.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rbee_test_support::model::TempDir;

    fn binary(id: &str, features: &[&str], at: u64) -> Binary {
        Binary {
            id: id.into(),
            worker_type: "llm-worker-rbee".into(),
            binary_path: PathBuf::from(format!("/var/lib/rbee/worker-bin/{id}")),
            features: features.iter().map(|s| s.to_string()).collect(),
            origin: Origin::Git,
            git_url: Some("https://example.org/rbee.git".into()),
            git_ref: Some("main".into()),
            git_commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
            rust_version: Some("rustc 1.95.0".into()),
            version: "llm-worker-rbee 0.1.0 (backends: cpu)".into(),
            built_at_unix: at,
            build_secs: Some(12.5),
            sha256: "ab".repeat(32),
        }
    }

    #[test]
    fn records_survive_reopening_and_are_found_by_feature_set() {
        let dir = TempDir::new("workers-db");
        let path = dir.join("workers.db");
        let mut c = Catalog::open(&path).unwrap();
        c.insert(&binary("cpu-old", &[], 100)).unwrap();
        c.insert(&binary("cpu-new", &[], 200)).unwrap();
        c.insert(&binary("cuda", &["cuda"], 150)).unwrap();
        drop(c);
        let mut c = Catalog::open(&path).unwrap();
        assert_eq!(
            c.get("cuda").unwrap().unwrap(),
            binary("cuda", &["cuda"], 150)
        );
        let cpu: Vec<String> = c
            .built_with(&[])
            .unwrap()
            .into_iter()
            .map(|b| b.id)
            .collect();
        assert_eq!(cpu, ["cpu-new", "cpu-old"]);
        assert_eq!(c.list().unwrap().len(), 3);
        assert!(c.remove("cpu-old").unwrap());
        assert!(!c.remove("cpu-old").unwrap());
        assert_eq!(c.get("cpu-old").unwrap(), None);
    }
}
