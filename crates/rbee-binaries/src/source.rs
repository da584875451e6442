//! The worker's git source: clone or fetch with git2, resolve the ref to a commit, check
//! it out. One checkout per feature set (builds of different feature sets may run at once).

use std::path::{Path, PathBuf};

use git2::{build::CheckoutBuilder, Cred, CredentialType, FetchOptions, Oid, RemoteCallbacks};

use crate::error::BinaryError;

/// Where workers are built from (`[worker_source]` in the hive's config).
pub use rbee_types::hive::WorkerSource as Source;

/// Checks values of a source that parse but cannot work (the hive's `check-config` runs
/// this).
pub fn validate(src: &Source) -> Result<(), String> {
    let url = src.git_url.trim();
    if url.is_empty() || url.starts_with('-') || url.contains(char::is_control) {
        return Err(format!(
            "[worker_source] git_url {:?} is not a repository URL (https://…, ssh://…, git@host:org/repo.git, /abs/path or file:///abs/path)",
            src.git_url
        ));
    }
    check_ref(&src.git_ref).map_err(|e| format!("[worker_source] git_ref: {e}"))?;
    for (name, path) in [("ssh_key", &src.ssh_key), ("cargo", &src.cargo)] {
        if let Some(p) = path {
            if !p.is_absolute() {
                return Err(format!(
                    "[worker_source] {name} must be an absolute path, not {}",
                    p.display()
                ));
            }
        }
    }
    if !(1..=16).contains(&src.max_concurrent_builds) {
        return Err(format!(
            "[worker_source] max_concurrent_builds must be between 1 and 16, not {}",
            src.max_concurrent_builds
        ));
    }
    Ok(())
}

/// A checked-out commit.
#[derive(Debug, Clone)]
pub struct Checkout {
    /// The work tree.
    pub dir: PathBuf,
    /// The full commit sha.
    pub commit: String,
}

/// Whether `r` is a full commit sha (a pinned build).
pub fn is_commit(r: &str) -> bool {
    r.len() == 40 && r.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Checks a ref name before any git work: no empty names, no option-like or path-escaping
/// names, nothing git itself would refuse.
pub fn check_ref(r: &str) -> Result<(), BinaryError> {
    let bad = r.is_empty()
        || r.len() > 200
        || r.starts_with('-')
        || r.contains("..")
        || r.chars().any(|c| c.is_control() || " ~^:?*[\\".contains(c))
        || !git2::Reference::is_valid_name(&format!("refs/heads/{r}"));
    if bad {
        return Err(BinaryError::BadRef { git_ref: r.into() });
    }
    Ok(())
}

/// Clones or fetches `src.git_url` into `dir`, then checks out `git_ref` (detached).
/// `log` receives lines a person can follow.
pub fn checkout(
    src: &Source,
    git_ref: &str,
    dir: &Path,
    log: &mut dyn FnMut(String),
) -> Result<Checkout, BinaryError> {
    check_ref(git_ref)?;
    let url = &src.git_url;
    let repo = match git2::Repository::open(dir) {
        Ok(r) => r,
        Err(_) => {
            let _ = std::fs::remove_dir_all(dir);
            std::fs::create_dir_all(dir).map_err(|e| internal(dir, &e.to_string()))?;
            git2::Repository::init(dir).map_err(|e| internal(dir, e.message()))?
        }
    };
    log(format!("fetching {url}"));
    {
        let mut remote = repo
            .remote_anonymous(url)
            .map_err(|e| fetch_error(url, e))?;
        let mut fo = FetchOptions::new();
        fo.remote_callbacks(callbacks(src, log));
        fo.download_tags(git2::AutotagOption::All);
        remote
            .fetch(
                &[
                    "+refs/heads/*:refs/remotes/origin/*",
                    "+refs/tags/*:refs/tags/*",
                ],
                Some(&mut fo),
                None,
            )
            .map_err(|e| fetch_error(url, e))?;
    }
    let oid = resolve(&repo, url, git_ref)?;
    let commit = repo
        .find_commit(oid)
        .map_err(|_| ref_not_found(&repo, url, git_ref))?;
    repo.checkout_tree(
        commit.as_object(),
        Some(CheckoutBuilder::new().force().remove_untracked(true)),
    )
    .map_err(|e| internal(dir, e.message()))?;
    repo.set_head_detached(oid)
        .map_err(|e| internal(dir, e.message()))?;
    let commit = oid.to_string();
    log(format!("checked out {git_ref} at {commit}"));
    Ok(Checkout {
        dir: dir.to_path_buf(),
        commit,
    })
}

/// The commit `git_ref` names: a full sha, a branch of the remote, or a tag.
fn resolve(repo: &git2::Repository, url: &str, git_ref: &str) -> Result<Oid, BinaryError> {
    if is_commit(git_ref) {
        let oid = Oid::from_str(git_ref).map_err(|_| ref_not_found(repo, url, git_ref))?;
        return repo
            .find_commit(oid)
            .map(|c| c.id())
            .map_err(|_| ref_not_found(repo, url, git_ref));
    }
    for name in [
        format!("refs/remotes/origin/{git_ref}"),
        format!("refs/tags/{git_ref}"),
    ] {
        if let Ok(c) = repo.find_reference(&name).and_then(|r| r.peel_to_commit()) {
            return Ok(c.id());
        }
    }
    Err(ref_not_found(repo, url, git_ref))
}

/// Credentials: the configured key or the SSH agent for SSH, git's credential helpers
/// for HTTPS. Each kind is tried once, so a refused key ends in an error, not a loop.
fn callbacks<'a>(src: &'a Source, log: &'a mut dyn FnMut(String)) -> RemoteCallbacks<'a> {
    let mut cb = RemoteCallbacks::new();
    let mut tried = CredentialType::empty();
    cb.credentials(move |url, username, allowed| {
        let user = username.unwrap_or("git");
        if allowed.contains(CredentialType::SSH_KEY) && !tried.contains(CredentialType::SSH_KEY) {
            tried |= CredentialType::SSH_KEY;
            return match &src.ssh_key {
                Some(key) => Cred::ssh_key(user, None, key, None),
                None => Cred::ssh_key_from_agent(user),
            };
        }
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT)
            && !tried.contains(CredentialType::USER_PASS_PLAINTEXT)
        {
            tried |= CredentialType::USER_PASS_PLAINTEXT;
            let config = git2::Config::open_default()?;
            return Cred::credential_helper(&config, url, username);
        }
        if allowed.contains(CredentialType::USERNAME) && !tried.contains(CredentialType::USERNAME) {
            tried |= CredentialType::USERNAME;
            return Cred::username(user);
        }
        Err(git2::Error::new(
            git2::ErrorCode::Auth,
            git2::ErrorClass::Net,
            "authentication failed: no accepted credentials",
        ))
    });
    let mut last_decile = 0;
    cb.transfer_progress(move |p| {
        let total = p.total_objects().max(1);
        let decile = p.received_objects() * 10 / total;
        if decile > last_decile {
            last_decile = decile;
            log(format!(
                "received {}/{} objects ({} KiB)",
                p.received_objects(),
                p.total_objects(),
                p.received_bytes() / 1024
            ));
        }
        true
    });
    cb
}

fn fetch_error(url: &str, source: git2::Error) -> BinaryError {
    let msg = source.message();
    let auth = source.code() == git2::ErrorCode::Auth
        || msg.contains("authentication")
        || msg.contains("credentials")
        || msg.contains("Permission denied");
    let url = url.to_owned();
    if msg.contains("hostkey") || msg.contains("host key") {
        BinaryError::UnknownHostKey { url, source }
    } else if auth {
        BinaryError::GitAuth { url, source }
    } else {
        BinaryError::GitFetch { url, source }
    }
}

fn ref_not_found(repo: &git2::Repository, url: &str, git_ref: &str) -> BinaryError {
    let mut known: Vec<String> = repo
        .references()
        .map(|refs| {
            refs.flatten()
                .filter_map(|r| r.name().map(str::to_owned))
                .filter_map(|n| {
                    n.strip_prefix("refs/remotes/origin/")
                        .or_else(|| n.strip_prefix("refs/tags/"))
                        .map(str::to_owned)
                })
                .filter(|n| n != "HEAD")
                .collect()
        })
        .unwrap_or_default();
    known.sort();
    known.truncate(20);
    BinaryError::RefNotFound {
        url: url.into(),
        git_ref: git_ref.into(),
        known,
    }
}

fn internal(dir: &Path, msg: &str) -> BinaryError {
    BinaryError::Checkout {
        dir: dir.to_path_buf(),
        message: msg.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_names_are_checked_before_any_git_work() {
        for ok in ["main", "v0.1.0", "release/1.2", &"a".repeat(40)] {
            assert!(check_ref(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-x",
            "a..b",
            "a b",
            "x~1",
            "HEAD^",
            "a:b",
            "\0",
            &"x".repeat(201),
        ] {
            let e = check_ref(bad).unwrap_err();
            assert_eq!(e.code(), rbee_types::ErrorCode::InvalidRequest, "{bad:?}");
        }
        assert!(is_commit(&"0a".repeat(20)));
        assert!(!is_commit("main"));
    }
}
