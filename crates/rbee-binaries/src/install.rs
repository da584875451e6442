//! Checking a worker binary and putting it into the catalogue directory under a
//! content-addressed name, so a running worker's executable is never overwritten.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::error::{BinaryError, VerifyFailure};

/// How long `--version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

fn failed(path: &Path, why: VerifyFailure) -> BinaryError {
    BinaryError::Unverified {
        path: path.to_path_buf(),
        why,
        log_path: None,
    }
}

/// Checks that `path` is an executable file whose `--version` runs and names the worker,
/// and that it was built with every one of `features`. Returns what `--version` printed.
pub fn verify(path: &Path, features: &[String]) -> Result<String, BinaryError> {
    let meta = std::fs::metadata(path).map_err(|e| failed(path, VerifyFailure::CannotRead(e)))?;
    if !meta.is_file() {
        return Err(failed(path, VerifyFailure::NotAFile));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        let mode = meta.permissions().mode() & 0o7777;
        return Err(failed(path, VerifyFailure::NotExecutable { mode }));
    }
    let mut child = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(path, VerifyFailure::CannotRun(e)))?;
    let t0 = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if t0.elapsed() < VERSION_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(20))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(failed(path, VerifyFailure::Hung(VERSION_TIMEOUT)));
            }
        }
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let version = out.trim().to_owned();
    if !status.success() {
        let stderr = err.trim().to_owned();
        return Err(failed(
            path,
            VerifyFailure::VersionFailed { status, stderr },
        ));
    }
    if !version.starts_with(crate::cargo::WORKER) {
        return Err(failed(path, VerifyFailure::NotTheWorker { version }));
    }
    if let Some(backends) = backends(&version) {
        if let Some(missing) = features.iter().find(|f| !backends.contains(&f.as_str())) {
            let feature = missing.clone();
            return Err(failed(
                path,
                VerifyFailure::MissingFeature { feature, version },
            ));
        }
    }
    Ok(version)
}

/// The backends a worker's `--version` lists (`… (backends: cpu, cuda)`), if it lists any.
pub fn backends(version: &str) -> Option<Vec<&str>> {
    let rest = version.split_once("(backends: ")?.1;
    let list = rest.split_once(')')?.0;
    Some(list.split(',').map(str::trim).collect())
}

/// SHA-256 (hex) of a file.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Copies `built` into `dir` as `<prefix>-<sha256[..12]>` (written to a temporary name,
/// fsynced, made executable, renamed, the directory fsynced). Returns the path and the
/// SHA-256. A file of that name is the same content and is kept as it is.
pub fn install(built: &Path, dir: &Path, prefix: &str) -> Result<(PathBuf, String), BinaryError> {
    let io = |path: &Path, source: std::io::Error| {
        if source.raw_os_error() == Some(libc::ENOSPC) {
            BinaryError::NoSpace {
                dir: dir.to_path_buf(),
            }
        } else {
            BinaryError::Install {
                path: path.to_path_buf(),
                source,
            }
        }
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let tmp = dir.join(format!(".{prefix}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut src = std::fs::File::open(built).map_err(|e| io(built, e))?;
        let mut dst = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = src.read(&mut buf).map_err(|e| io(built, e))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            dst.write_all(&buf[..n]).map_err(|e| io(&tmp, e))?;
        }
        dst.set_permissions(std::fs::Permissions::from_mode(0o755))
            .map_err(|e| io(&tmp, e))?;
        dst.sync_all().map_err(|e| io(&tmp, e))?;
        let sha = hex(&h.finalize());
        let dest = dir.join(format!("{prefix}-{}", &sha[..12]));
        if !dest.is_file() {
            std::fs::rename(&tmp, &dest).map_err(|e| io(&dest, e))?;
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok((dest, sha))
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use rbee_test_support::model::TempDir;

    fn script(dir: &TempDir, name: &str, body: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn verification_names_what_is_wrong() {
        let dir = TempDir::new("verify");
        let ok = script(
            &dir,
            "ok",
            "echo 'llm-worker-rbee 0.1.0 (backends: cpu, cuda)'",
            0o755,
        );
        assert_eq!(
            verify(&ok, &["cuda".into()]).unwrap(),
            "llm-worker-rbee 0.1.0 (backends: cpu, cuda)"
        );
        let cases = [
            (
                script(&dir, "noexec", "echo llm-worker-rbee 0.1.0", 0o644),
                vec![],
                "is not executable (mode 644)",
            ),
            (
                script(&dir, "fails", "echo boom >&2; exit 3", 0o755),
                vec![],
                "boom",
            ),
            (
                script(&dir, "other", "echo something 1.0", 0o755),
                vec![],
                "not llm-worker-rbee's version",
            ),
            (
                ok.clone(),
                vec!["metal".to_string()],
                "was built without metal",
            ),
            (dir.join("absent"), vec![], "cannot be read"),
        ];
        for (path, features, expect) in cases {
            let e = verify(&path, &features).unwrap_err();
            assert_eq!(e.code(), rbee_types::ErrorCode::BinaryVerificationFailed);
            assert!(e.to_string().contains(expect), "{expect}: {e}");
        }
    }

    #[test]
    fn install_names_the_copy_by_its_content() {
        let dir = TempDir::new("install");
        let built = script(&dir, "built", "echo v1", 0o755);
        let (p1, sha1) = install(&built, &dir.join("bin"), "llm-worker-rbee-cpu").unwrap();
        assert_eq!(sha1, sha256_file(&built).unwrap());
        assert!(p1.ends_with(format!("llm-worker-rbee-cpu-{}", &sha1[..12])));
        assert_eq!(
            std::fs::metadata(&p1).unwrap().permissions().mode() & 0o777,
            0o755
        );
        std::fs::write(&built, "#!/bin/sh\necho v2\n").unwrap();
        let (p2, _) = install(&built, &dir.join("bin"), "llm-worker-rbee-cpu").unwrap();
        assert_ne!(
            p1, p2,
            "a new build never replaces the file a worker may run"
        );
        assert!(p1.is_file());
        let files = std::fs::read_dir(dir.join("bin")).unwrap().count();
        assert_eq!(files, 2, "no temporary file is left behind");
    }
}
