//! `beehives.db`: the nodes the keeper knows, and how to reach them.

use std::path::{Path, PathBuf};

use rbee_sqlite::{Db, DbError};
use rusqlite::{OptionalExtension, Row, ToSql};
use serde::Serialize;

/// One registered node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Node {
    /// Its name (`workstation`).
    pub node_name: String,
    /// Host name or address for SSH.
    pub ssh_host: String,
    /// SSH port.
    pub ssh_port: u16,
    /// SSH user.
    pub ssh_user: String,
    /// The private key.
    pub ssh_key_path: PathBuf,
    /// Where `setup install` clones rbee from.
    pub git_repo_url: String,
    /// Which branch.
    pub git_branch: String,
    /// Where rbee lives on the node.
    pub install_path: String,
    /// The hive's port on the node.
    pub hive_port: u16,
    /// When an SSH round trip last worked.
    pub last_connected_unix: Option<u64>,
    /// `reachable` or `unreachable` (as of the last check).
    pub status: String,
    /// How the keeper reaches the node's hive: `ssh` (a port forward to its loopback, the
    /// default) or `direct` (HTTP to `ssh_host:hive_port`).
    pub hive_access: String,
}

const WHAT: &str = "node registry";

const MIGRATIONS: &[&str] = &[
    "CREATE TABLE beehives (
        node_name TEXT PRIMARY KEY,
        ssh_host TEXT NOT NULL,
        ssh_port INTEGER NOT NULL,
        ssh_user TEXT NOT NULL,
        ssh_key_path TEXT NOT NULL,
        git_repo_url TEXT NOT NULL,
        git_branch TEXT NOT NULL,
        install_path TEXT NOT NULL,
        hive_port INTEGER NOT NULL,
        last_connected_unix INTEGER,
        status TEXT NOT NULL
    );",
    "ALTER TABLE beehives ADD COLUMN hive_access TEXT NOT NULL DEFAULT 'ssh';",
];

const COLUMNS: &str = "node_name, ssh_host, ssh_port, ssh_user, ssh_key_path, git_repo_url, \
     git_branch, install_path, hive_port, last_connected_unix, status, hive_access";

fn from_row(r: &Row<'_>) -> rusqlite::Result<Node> {
    Ok(Node {
        node_name: r.get(0)?,
        ssh_host: r.get(1)?,
        ssh_port: r.get::<_, i64>(2)? as u16,
        ssh_user: r.get(3)?,
        ssh_key_path: PathBuf::from(r.get::<_, String>(4)?),
        git_repo_url: r.get(5)?,
        git_branch: r.get(6)?,
        install_path: r.get(7)?,
        hive_port: r.get::<_, i64>(8)? as u16,
        last_connected_unix: r.get::<_, Option<i64>>(9)?.map(|v| v as u64),
        status: r.get(10)?,
        hive_access: r.get(11)?,
    })
}

/// The registry.
pub struct Registry {
    db: Db,
}

impl Node {
    /// Where SSH reaches the node.
    pub fn ssh_target(&self) -> crate::ssh::Target {
        crate::ssh::Target {
            host: self.ssh_host.clone(),
            port: self.ssh_port,
            user: self.ssh_user.clone(),
            key: Some(self.ssh_key_path.clone()),
        }
    }

    /// The row's values, in [`COLUMNS`] order.
    fn values(&self) -> [Box<dyn ToSql + '_>; 12] {
        [
            Box::new(&self.node_name),
            Box::new(&self.ssh_host),
            Box::new(self.ssh_port as i64),
            Box::new(&self.ssh_user),
            Box::new(self.ssh_key_path.display().to_string()),
            Box::new(&self.git_repo_url),
            Box::new(&self.git_branch),
            Box::new(&self.install_path),
            Box::new(self.hive_port as i64),
            Box::new(self.last_connected_unix.map(|v| v as i64)),
            Box::new(&self.status),
            Box::new(&self.hive_access),
        ]
    }
}

impl Registry {
    /// Opens (creating) the registry at `path`.
    pub fn open(path: &Path) -> Result<Registry, DbError> {
        let db = Db::open(path, WHAT, MIGRATIONS)?;
        if let Some(aside) = &db.recovered {
            crate::say!("⚠️  the node registry {} was damaged and is kept as {}; a new, empty one is in its place: register your nodes again (rbee-keeper setup add-node)",
                path.display(),
                aside.display()
            );
        }
        Ok(Registry { db })
    }

    /// Adds a node; `false` when one of that name exists (nothing is changed then).
    pub fn add(&mut self, n: &Node) -> Result<bool, DbError> {
        self.db
            .conn
            .execute(
                &format!(
                    "INSERT OR IGNORE INTO beehives ({COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
                ),
                rusqlite::params_from_iter(n.values()),
            )
            .map(|rows| rows == 1)
            .map_err(|e| self.db.err(e))
    }

    /// Replaces a node's row; `false` when there is none of that name.
    pub fn update(&mut self, n: &Node) -> Result<bool, DbError> {
        self.db
            .conn
            .execute(
                "UPDATE beehives SET ssh_host = ?2, ssh_port = ?3, ssh_user = ?4, \
                 ssh_key_path = ?5, git_repo_url = ?6, git_branch = ?7, install_path = ?8, \
                 hive_port = ?9, last_connected_unix = ?10, status = ?11, hive_access = ?12 \
                 WHERE node_name = ?1",
                rusqlite::params_from_iter(n.values()),
            )
            .map(|rows| rows == 1)
            .map_err(|e| self.db.err(e))
    }

    /// Records a successful contact with a node now: `last_connected_unix` and status
    /// `reachable` (nothing when it is not registered, e.g. `localhost`).
    pub fn touch(&self, name: &str) -> Result<(), DbError> {
        self.db
            .conn
            .execute(
                "UPDATE beehives SET last_connected_unix = ?2, status = 'reachable' WHERE node_name = ?1",
                rusqlite::params![name, rbee_types::now_unix() as i64],
            )
            .map(|_| ())
            .map_err(|e| self.db.err(e))
    }

    /// One node by name.
    pub fn get(&self, name: &str) -> Result<Option<Node>, DbError> {
        self.db
            .conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM beehives WHERE node_name = ?1"),
                [name],
                from_row,
            )
            .optional()
            .map_err(|e| self.db.err(e))
    }

    /// Every node, by name.
    pub fn list(&self) -> Result<Vec<Node>, DbError> {
        let mut st = self
            .db
            .conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM beehives ORDER BY node_name"
            ))
            .map_err(|e| self.db.err(e))?;
        let rows = st
            .query_map([], from_row)
            .and_then(|r| r.collect::<Result<Vec<_>, _>>());
        rows.map_err(|e| self.db.err(e))
    }

    /// Removes a node; whether there was one.
    pub fn remove(&mut self, name: &str) -> Result<bool, DbError> {
        self.db
            .conn
            .execute("DELETE FROM beehives WHERE node_name = ?1", [name])
            .map(|n| n > 0)
            .map_err(|e| self.db.err(e))
    }
}

/// The error for a node name the registry does not have.
pub fn not_registered(name: &str) -> crate::report::Failure {
    crate::report::Failure::new("rbee-keeper", format!("no node named {name} is registered")).suggest([
        "see the registered ones: rbee-keeper setup list-nodes".to_string(),
        format!("register it: rbee-keeper setup add-node --name {name} --ssh-host HOST --ssh-user USER --ssh-key ~/.ssh/id_ed25519"),
    ])
}
