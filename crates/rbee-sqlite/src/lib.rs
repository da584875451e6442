//! Opening rbee's SQLite databases the same way everywhere: the file and its directory
//! created, WAL, a busy timeout (another process may hold the write lock for a moment),
//! `synchronous = FULL` (a committed row survives a power cut), and schema migrations by
//! `PRAGMA user_version`, applied in one `BEGIN IMMEDIATE` transaction. A file that is not
//! a database, or fails `PRAGMA integrity_check`, is moved aside to
//! `<name>.corrupt-<unix seconds>` (with its `-wal` and `-shm`), logged as an error, and
//! replaced by a fresh database; the caller rebuilds what it can from disk.

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
    /// Where a damaged file was moved when this one was created in its place.
    pub recovered: Option<PathBuf>,
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
        let (conn, recovered) = open_recovering(path, what, migrations)?;
        Ok(Db {
            conn,
            name: DbName {
                what,
                path: path.to_path_buf(),
            },
            recovered,
        })
    }

    /// A SQLite error of this database.
    pub fn err(&self, source: rusqlite::Error) -> DbError {
        self.name.err(source)
    }
}

/// Opens (creating and migrating) the database at `path`. `migrations[i]` brings the
/// schema from version `i` to `i + 1`; `what` names the database in errors. A damaged file
/// is replaced, as the crate's documentation says.
pub fn open(path: &Path, what: &'static str, migrations: &[&str]) -> Result<Connection, DbError> {
    open_recovering(path, what, migrations).map(|(c, _)| c)
}

/// [`open`], and where a damaged file went.
fn open_recovering(
    path: &Path,
    what: &'static str,
    migrations: &[&str],
) -> Result<(Connection, Option<PathBuf>), DbError> {
    match open_once(path, what, migrations) {
        Err(DbError::Sqlite { source, .. }) if damaged(&source) => {
            let aside = move_aside(path).map_err(|e| DbError::Sqlite {
                what,
                path: path.to_path_buf(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
            tracing::error!(
                database = what,
                path = %path.display(),
                moved_to = %aside.display(),
                error = %source,
                "the database is damaged: moved aside, starting a fresh one"
            );
            Ok((open_once(path, what, migrations)?, Some(aside)))
        }
        other => other.map(|c| (c, None)),
    }
}

/// Whether SQLite's error says the file is not a database or is corrupt.
fn damaged(e: &rusqlite::Error) -> bool {
    use rusqlite::ffi::ErrorCode::{DatabaseCorrupt, NotADatabase};
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if matches!(f.code, NotADatabase | DatabaseCorrupt))
}

/// Renames `path` (and its `-wal`, `-shm`) to `<path>.corrupt-<unix seconds>`.
fn move_aside(path: &Path) -> std::io::Result<PathBuf> {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let with = |suffix: &str| {
        let mut s = path.as_os_str().to_owned();
        s.push(suffix);
        PathBuf::from(s)
    };
    let aside = with(&format!(".corrupt-{ts}"));
    std::fs::rename(path, &aside)?;
    for side in ["-wal", "-shm"] {
        let mut to = aside.as_os_str().to_owned();
        to.push(side);
        let _ = std::fs::rename(with(side), PathBuf::from(to));
    }
    Ok(aside)
}

/// One attempt at opening: the file, its settings, an integrity check, the migrations.
fn open_once(path: &Path, what: &'static str, migrations: &[&str]) -> Result<Connection, DbError> {
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
    let check: String = conn
        .pragma_query_value(None, "integrity_check", |r| r.get(0))
        .map_err(err)?;
    if check != "ok" {
        return Err(err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            Some(check),
        )));
    }
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

    #[test]
    fn a_damaged_file_is_moved_aside_and_replaced() {
        let dir = TempDir::new("sqlite");
        let path = dir.join("x.db");
        std::fs::write(
            &path,
            b"this is not a database, but it is long enough to look like one",
        )
        .unwrap();
        let db = Db::open(&path, "test db", &[V1]).unwrap();
        let aside = db.recovered.clone().expect("recovered");
        assert!(
            aside.to_string_lossy().contains("x.db.corrupt-"),
            "{aside:?}"
        );
        assert!(std::fs::read(&aside).unwrap().starts_with(b"this is not"));
        db.conn
            .execute("INSERT INTO t (a) VALUES ('new')", [])
            .unwrap();
        drop(db);
        // A healthy file is opened as it is.
        let db = Db::open(&path, "test db", &[V1]).unwrap();
        assert!(db.recovered.is_none());
        // A real database with a page overwritten mid-file: the integrity check finds it.
        let path = dir.join("y.db");
        let c = open(&path, "test db", &[V1]).unwrap();
        for i in 0..2000 {
            c.execute(
                "INSERT INTO t (a) VALUES (?1)",
                [format!("row {i} {}", "x".repeat(100))],
            )
            .unwrap();
        }
        c.pragma_update(None, "wal_checkpoint", "TRUNCATE").unwrap();
        drop(c);
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid..mid + 4096].fill(0x5a);
        std::fs::write(&path, &bytes).unwrap();
        let db = Db::open(&path, "test db", &[V1]).unwrap();
        assert!(db.recovered.is_some(), "an overwritten page is found");
        let n: i64 = db
            .conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0, "a fresh database");
    }
}
