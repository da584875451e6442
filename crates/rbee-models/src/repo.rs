//! A hub repository's files at a commit, as the hub's API lists them or the Hugging Face
//! cache holds them.

/// One file of a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoFile {
    /// Path in the repository.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// LFS SHA-256 (hex), when the file is in LFS.
    pub sha256: Option<String>,
}

/// A repository at a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoInfo {
    /// The commit the revision resolved to.
    pub commit: String,
    /// Its files.
    pub files: Vec<RepoFile>,
}
