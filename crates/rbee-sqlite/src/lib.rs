//! Opening rbee's SQLite databases the same way everywhere: the file and its directory
//! created, WAL, a busy timeout (another process may hold the write lock for a moment),
//! `synchronous = FULL` (a committed row survives a power cut), and schema migrations by
//! `PRAGMA user_version`, applied in one `BEGIN IMMEDIATE` transaction.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

/// Why a database could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite said no.
    #[error("{what} {path}: {source}")]
    Sqlite {
        /// What the database is (`model catalogue`).
        what: &'static str,
        /// The database file.
        path: PathBuf,
        /// The error.
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by a newer rbee.
    #[error("{what} {path} has schema version {found}, newer than this rbee ({supported}); upgrade rbee")]
    TooNew {
        /// What the database is.
        what: &'static str,
        /// The database file.
        path: PathBuf,
        /// Its version.
        found: i64,
        /// Ours.
        supported: i64,
    },
}

/// An open database that names itself in errors. The fields are public so a caller can
/// hold a transaction on `conn` and still make errors with `name`.
pub struct Db {
    /// The connection (callers serialise access).
    pub conn: Connection,
    /// What and where it is.
    pub name: DbName,
}

/// A database's name in errors.
#[derive(Debug, Clone)]
pub struct DbName {
    what: &'static str,
    path: PathBuf,
}

impl DbName {
    /// A SQLite error of this database.
    pub fn err(&self, source: rusqlite::Error) -> DbError {
        DbError::Sqlite {
            what: self.what,
            path: self.path.clone(),
            source,
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Db {
    /// Opens (creating and migrating) the database at `path`; see [`open`].
    pub fn open(path: &Path, what: &'static str, migrations: &[&str]) -> Result<Db, DbError> {
        Ok(Db {
            conn: open(path, what, migrations)?,
            name: DbName {
                what,
                path: path.to_path_buf(),
            },
        })
    }

    /// A SQLite error of this database.
    pub fn err(&self, source: rusqlite::Error) -> DbError {
        self.name.err(source)
    }
}

/// Opens (creating and migrating) the database at `path`. `migrations[i]` brings the
/// schema from version `i` to `i + 1`; `what` names the database in errors.
pub fn open(path: &Path, what: &'static str, migrations: &[&str]) -> Result<Connection, DbError> {
    let err = |source| DbError::Sqlite {
        what,
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let mut conn = Connection::open(path).map_err(err)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(err)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(err)?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(err)?;
    let supported = migrations.len() as i64;
    if version > supported {
        return Err(DbError::TooNew {
            what,
            path: path.to_path_buf(),
            found: version,
            supported,
        });
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err)?;
    for (i, m) in migrations.iter().enumerate().skip(version as usize) {
        tx.execute_batch(m).map_err(err)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)
            .map_err(err)?;
    }
    tx.commit().map_err(err)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rbee_test_support::model::TempDir;

    const V1: &str = "CREATE TABLE t (a TEXT);";
    const V2: &str = "ALTER TABLE t ADD COLUMN b TEXT;";

    #[test]
    fn migrates_step_by_step_and_keeps_rows() {
        let dir = TempDir::new("sqlite");
        let path = dir.join("sub/x.db");
        let c = open(&path, "test db", &[V1]).unwrap();
        c.execute("INSERT INTO t (a) VALUES ('kept')", []).unwrap();
        drop(c);
        let c = open(&path, "test db", &[V1, V2]).unwrap();
        let (a, b): (String, Option<String>) = c
            .query_row("SELECT a, b FROM t", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        assert_eq!((a.as_str(), b), ("kept", None));
        let mode: String = c
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn refuses_a_newer_schema_without_touching_it() {
        let dir = TempDir::new("sqlite");
        let path = dir.join("x.db");
        drop(open(&path, "test db", &[V1, V2]).unwrap());
        let e = open(&path, "test db", &[V1]).unwrap_err();
        assert!(
            e.to_string()
                .contains("schema version 2, newer than this rbee (1)"),
            "{e}"
        );
        // Still usable by the newer version.
        assert!(open(&path, "test db", &[V1, V2]).is_ok());
    }
}
