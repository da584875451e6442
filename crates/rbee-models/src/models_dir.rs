//! The models directory, the one place that decides where downloaded files may be written
//! and which files may be deleted: every path is built from checked parts and must lie
//! inside the directory once `..` and the symbolic links of its existing ancestors are
//! resolved. What a hub sends (a commit, a file name) is hostile until checked here.

use std::path::{Component, Path, PathBuf};

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The hub's commit id is not 40 hexadecimal characters.
    #[error("the hub answered a commit id that is not 40 hexadecimal characters")]
    Commit,
    /// A file name from the hub could escape the directory or is not a plain name.
    #[error("the hub listed a file name that is not a plain file name")]
    FileName,
    /// The path lies outside the models directory.
    #[error("the path lies outside the models directory")]
    Outside,
}

/// A commit id as the hub gives it: 40 hexadecimal characters (it becomes a directory).
pub fn valid_commit(commit: &str) -> bool {
    commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A path inside a repository as the hub lists it: relative, `/`-separated segments that
/// are not empty, `.` or `..`, without backslashes, NUL or control characters.
pub fn valid_repo_path(path: &str) -> bool {
    !path.is_empty() && path.len() <= 1024 && path.split('/').all(valid_file_name)
}

/// One plain file name: not empty, `.` or `..`, at most 255 bytes, no `/`, `\`, NUL or
/// control characters.
pub fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control())
}

/// The models directory (canonical).
#[derive(Debug, Clone)]
pub struct ModelsDir {
    root: PathBuf,
}

impl ModelsDir {
    /// Creates the directory if needed.
    pub fn open(dir: &Path) -> std::io::Result<ModelsDir> {
        std::fs::create_dir_all(dir)?;
        Ok(ModelsDir {
            root: std::fs::canonicalize(dir)?,
        })
    }

    /// Its canonical path.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a file of a hub repository goes: `hf/<org>/<repo>/<commit>/<file name>`.
    pub fn download_path(&self, repo: &str, commit: &str, file: &str) -> Result<PathBuf, Refused> {
        if !valid_commit(commit) {
            return Err(Refused::Commit);
        }
        if !valid_file_name(file) {
            return Err(Refused::FileName);
        }
        if !valid_repo_path(repo) {
            return Err(Refused::Outside);
        }
        let path = self.root.join("hf").join(repo).join(commit).join(file);
        self.check(&path)?;
        Ok(path)
    }

    /// `Ok` when `path` lies inside the directory: its existing ancestors resolved (symbolic
    /// links followed), what does not exist yet made of plain names only.
    pub fn check(&self, path: &Path) -> Result<(), Refused> {
        let mut existing = path.parent();
        let mut rest = vec![path.file_name().ok_or(Refused::Outside)?];
        while let Some(dir) = existing {
            if let Ok(real) = std::fs::canonicalize(dir) {
                let plain = rest.iter().all(|n| {
                    let mut c = Path::new(n).components();
                    matches!((c.next(), c.next()), (Some(Component::Normal(_)), None))
                });
                return if plain && real.starts_with(&self.root) {
                    Ok(())
                } else {
                    Err(Refused::Outside)
                };
            }
            rest.push(dir.file_name().ok_or(Refused::Outside)?);
            existing = dir.parent();
        }
        Err(Refused::Outside)
    }

    /// Deletes a downloaded file, only when it lies inside the directory (a symbolic link
    /// is removed itself, never its target). Returns whether a file was removed; a path
    /// outside is kept and logged.
    pub fn remove(&self, path: &Path) -> bool {
        if self.check(path).is_err() {
            tracing::warn!(
                path = %path.display(),
                "not deleting a file outside the models directory"
            );
            return false;
        }
        std::fs::remove_file(path).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn hub_commits_and_names_are_plain_or_refused() {
        assert!(valid_commit(C));
        for bad in [
            "",
            "c0ffee",
            "../../../../tmp/x",
            "/etc",
            "..%2f..%2fx",
            &"g".repeat(40),
            &"a".repeat(41),
        ] {
            assert!(!valid_commit(bad), "{bad}");
        }
        assert!(valid_repo_path("sub/m.Q4_K_M.gguf"));
        for bad in [
            "",
            "../m.gguf",
            "/abs.gguf",
            "a//b",
            "a\\b",
            "m\0.gguf",
            "m\n.gguf",
            ".",
        ] {
            assert!(!valid_repo_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn paths_outside_the_directory_are_refused_even_through_links() {
        let base = std::env::temp_dir().join(format!("rbee-models-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let outside = base.join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        let dir = ModelsDir::open(&base.join("models")).unwrap();
        let inside = dir.download_path("org/repo", C, "m.gguf").unwrap();
        assert!(inside.starts_with(dir.root()));
        assert_eq!(
            dir.download_path("org/repo", "../../../../outside", "m.gguf"),
            Err(Refused::Commit)
        );
        assert_eq!(
            dir.download_path("org/repo", C, "../m.gguf"),
            Err(Refused::FileName)
        );
        assert_eq!(dir.check(&outside.join("x.gguf")), Err(Refused::Outside));
        assert_eq!(
            dir.check(&dir.root().join("hf/../../outside/x.gguf")),
            Err(Refused::Outside)
        );
        // A link inside pointing out: what lies behind it is outside.
        std::os::unix::fs::symlink(&outside, dir.root().join("hf-link")).unwrap();
        let through = dir.root().join("hf-link").join("x.gguf");
        std::fs::write(outside.join("x.gguf"), b"keep").unwrap();
        assert_eq!(dir.check(&through), Err(Refused::Outside));
        assert!(!dir.remove(&through));
        assert!(outside.join("x.gguf").exists(), "the outside file stays");
        // A file inside is removed.
        std::fs::write(dir.root().join("in.gguf"), b"x").unwrap();
        assert!(dir.remove(&dir.root().join("in.gguf")));
        let _ = std::fs::remove_dir_all(&base);
    }
}
