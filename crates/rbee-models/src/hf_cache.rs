//! The Hugging Face cache that the official clients fill (`huggingface-cli download`,
//! `transformers`, llama.cpp's `-hf`): a model already there is used in place instead of
//! being downloaded again. It is only read, never written.
//!
//! Layout (huggingface_hub's): `<cache>/models--<org>--<repo>/refs/<revision>` holds the
//! commit a branch or tag points at; `snapshots/<commit>/<path>` are symlinks into
//! `blobs/<etag>`, and an LFS file's etag is its SHA-256 — which is how a file found here is
//! verified without asking the hub anything.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::repo::{RepoFile, RepoInfo};

/// The cache directory, as huggingface_hub finds it: `HF_HUB_CACHE`, else `$HF_HOME/hub`,
/// else `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.
pub fn dir_from_env() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("HF_HUB_CACHE")
        .or_else(|| var("HF_HOME").map(|h| h.join("hub")))
        .or_else(|| var("XDG_CACHE_HOME").map(|c| c.join("huggingface/hub")))
        .or_else(|| var("HOME").map(|h| h.join(".cache/huggingface/hub")))
}

/// Whether `s` is a commit hash.
fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A repository's snapshot in the cache: the commit `revision` resolves to, its GGUF files
/// (with their SHA-256 from the blob names), and the directory they are in.
pub fn snapshot(cache: &Path, repo: &str, revision: &str) -> Option<(RepoInfo, PathBuf)> {
    let (org, name) = repo.split_once('/')?;
    let root = cache.join(format!("models--{org}--{name}"));
    let commit = if is_commit(revision) {
        revision.to_owned()
    } else {
        let c = std::fs::read_to_string(root.join("refs").join(revision)).ok()?;
        let c = c.trim().to_owned();
        is_commit(&c).then_some(c)?
    };
    let dir = root.join("snapshots").join(&commit);
    let mut files = Vec::new();
    collect(&dir, &dir, &mut files);
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Some((RepoInfo { commit, files }, dir))
}

/// The GGUF files under `dir` (at most 4 levels deep), relative to `top`.
fn collect(top: &Path, dir: &Path, out: &mut Vec<RepoFile>) {
    if dir.strip_prefix(top).map_or(0, |p| p.components().count()) > 4 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(meta) = std::fs::metadata(&path) else {
            continue; // a dangling link: the blob is gone
        };
        if meta.is_dir() {
            collect(top, &path, out);
            continue;
        }
        let Some(rel) = path.strip_prefix(top).ok().and_then(|p| p.to_str()) else {
            continue;
        };
        if !rel.ends_with(".gguf") {
            continue;
        }
        // The blob's name is the file's SHA-256 when it is an LFS file.
        let sha256 = std::fs::read_link(&path)
            .ok()
            .and_then(|t| Some(t.file_name()?.to_str()?.to_ascii_lowercase()))
            .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()));
        out.push(RepoFile {
            path: rel.to_owned(),
            size: meta.len(),
            sha256,
        });
    }
}

/// The SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_lists_its_gguf_files_with_the_hash_of_their_blob() {
        let d = std::env::temp_dir().join(format!("hf-cache-{}", std::process::id()));
        let root = d.join("models--org--repo");
        let commit = "a".repeat(40);
        let sha = "b".repeat(64);
        std::fs::create_dir_all(root.join("refs")).unwrap();
        std::fs::create_dir_all(root.join("blobs")).unwrap();
        std::fs::create_dir_all(root.join("snapshots").join(&commit).join("sub")).unwrap();
        std::fs::write(root.join("refs/main"), format!("{commit}\n")).unwrap();
        std::fs::write(root.join("blobs").join(&sha), b"GGUF").unwrap();
        let snap = root.join("snapshots").join(&commit);
        std::os::unix::fs::symlink(
            format!("../../../blobs/{sha}"),
            snap.join("sub/m.Q4_1.gguf"),
        )
        .unwrap();
        std::os::unix::fs::symlink("../../blobs/missing", snap.join("gone.gguf")).unwrap();
        std::fs::write(snap.join("README.md"), b"x").unwrap();
        let (info, dir) = snapshot(&d, "org/repo", "main").unwrap();
        assert_eq!(dir, snap);
        assert_eq!(info.commit, commit);
        assert_eq!(
            info.files,
            vec![RepoFile {
                path: "sub/m.Q4_1.gguf".into(),
                size: 4,
                sha256: Some(sha),
            }]
        );
        assert!(
            snapshot(&d, "org/repo", "v2").is_none(),
            "an unknown branch"
        );
        assert!(snapshot(&d, "org/other", "main").is_none());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
