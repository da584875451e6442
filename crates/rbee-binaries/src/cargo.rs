//! Running `cargo build` for the worker: finding cargo (and nvcc for CUDA), the build as a
//! child that dies with the hive, its output into a log file and to the caller line by
//! line, and the first compiler errors when it fails.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{BinaryError, CargoMissing};

/// The worker's binary (and package) name.
pub const WORKER: &str = "llm-worker-rbee";

/// The configured cargo, else `cargo` on PATH, in `$CARGO_HOME/bin` or `~/.cargo/bin`.
pub fn find_cargo(configured: Option<&Path>) -> Result<PathBuf, BinaryError> {
    if let Some(c) = configured {
        return if c.is_file() {
            Ok(c.to_path_buf())
        } else {
            Err(BinaryError::CargoNotFound(CargoMissing::Configured(
                c.to_path_buf(),
            )))
        };
    }
    let mut dirs = path_dirs();
    if let Some(h) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(h).join("bin"));
    }
    if let Some(h) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(h).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join("cargo"))
        .find(|c| c.is_file())
        .ok_or(BinaryError::CargoNotFound(CargoMissing::NotFound))
}

fn path_dirs() -> Vec<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default()
}

/// `rustc --version` of the toolchain next to `cargo` (else the one on PATH).
pub fn rust_version(cargo: &Path) -> Option<String> {
    let sibling = cargo.with_file_name("rustc");
    let rustc = if sibling.is_file() {
        sibling
    } else {
        PathBuf::from("rustc")
    };
    let out = Command::new(rustc).arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `nvcc` from `$CUDA_PATH`, `$CUDA_HOME`, PATH, or the usual install places.
pub fn find_nvcc() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = ["CUDA_PATH", "CUDA_HOME", "CUDA_TOOLKIT_ROOT_DIR"]
        .iter()
        .filter_map(std::env::var_os)
        .map(|d| PathBuf::from(d).join("bin"))
        .collect();
    dirs.extend(path_dirs());
    dirs.extend(["/usr/local/cuda/bin", "/opt/cuda/bin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join("nvcc"))
        .find(|p| p.is_file())
}

/// `CUDA_TOOLKIT_NOT_FOUND`, with where rbee looked and how to fix it.
pub fn cuda_missing(log: Option<&Path>) -> BinaryError {
    BinaryError::CudaToolkitNotFound {
        log_path: log.map(Path::to_path_buf),
    }
}

/// What one build needs.
pub struct BuildJob<'a> {
    /// cargo.
    pub cargo: &'a Path,
    /// The checkout (the workspace root).
    pub checkout: &'a Path,
    /// `CARGO_TARGET_DIR` (one per feature set, so builds never invalidate each other).
    pub target_dir: &'a Path,
    /// `--features` (empty: the CPU worker).
    pub features: &'a [String],
    /// Where the whole output goes.
    pub log_path: &'a Path,
}

/// Runs the build. Every output line goes to the log file and to `line`; `started`
/// gets the child's pid (its process group, for cancelling). Returns the built binary.
pub fn build(
    job: &BuildJob<'_>,
    started: &mut dyn FnMut(u32),
    line: &mut dyn FnMut(&str),
) -> Result<PathBuf, BinaryError> {
    let log_err = |source| BinaryError::BuildLog {
        path: job.log_path.to_path_buf(),
        source,
    };
    if let Some(d) = job.log_path.parent() {
        std::fs::create_dir_all(d).map_err(log_err)?;
    }
    let mut log = std::fs::File::create(job.log_path).map_err(log_err)?;
    let mut cmd = Command::new(job.cargo);
    cmd.args(["build", "--release", "--locked", "--bin", WORKER])
        .current_dir(job.checkout)
        .env("CARGO_TARGET_DIR", job.target_dir)
        .env("CARGO_TERM_COLOR", "never")
        .env("CARGO_TERM_PROGRESS_WHEN", "never")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if !job.features.is_empty() {
        cmd.args(["--features", &job.features.join(",")]);
    }
    crate::child::die_with_parent(&mut cmd);
    let _ = writeln!(
        log,
        "$ cargo build --release --locked --bin {WORKER} {}",
        features_arg(job.features)
    );
    let mut child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            BinaryError::CargoNotFound(CargoMissing::CannotRun(job.cargo.to_path_buf()))
        } else {
            BinaryError::CargoSpawn {
                cargo: job.cargo.to_path_buf(),
                source: e,
            }
        }
    })?;
    started(child.id());
    // stdout (rarely used by cargo) is copied by a helper thread; stderr line by line here.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take();
    let out_thread = std::thread::spawn(move || {
        if let Some(o) = stdout {
            for l in BufReader::new(o).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        }
    });
    let mut errors = ErrorLines::default();
    if let Some(err) = child.stderr.take() {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            for o in rx.try_iter() {
                let _ = writeln!(log, "{o}");
            }
            let _ = writeln!(log, "{l}");
            errors.push(&l);
            line(&l);
        }
    }
    let status = child.wait().map_err(BinaryError::CargoWait)?;
    let _ = out_thread.join();
    for o in rx.try_iter() {
        let _ = writeln!(log, "{o}");
    }
    let _ = writeln!(log, "# {status}");
    let _ = log.sync_all();
    if status.success() {
        return Ok(job.target_dir.join("release").join(WORKER));
    }
    let cuda = job.features.iter().any(|f| f == "cuda");
    if cuda && errors.mentions_missing_cuda {
        return Err(cuda_missing(Some(job.log_path)));
    }
    Err(BinaryError::BuildFailed {
        status,
        first_errors: errors.first,
        log_path: job.log_path.to_path_buf(),
    })
}

fn features_arg(features: &[String]) -> String {
    if features.is_empty() {
        String::new()
    } else {
        format!("--features {}", features.join(","))
    }
}

/// The first compiler errors of a build's output: each `error…` headline with the lines
/// that follow it up to the next blank line, at most [`ErrorLines::MAX`] lines in all.
#[derive(Default)]
pub struct ErrorLines {
    /// The lines kept.
    pub first: Vec<String>,
    in_block: bool,
    /// Whether the output says the CUDA toolkit is missing.
    pub mentions_missing_cuda: bool,
}

impl ErrorLines {
    /// Lines kept at most.
    pub const MAX: usize = 40;

    /// Looks at one line of output.
    pub fn push(&mut self, l: &str) {
        let lower = l.to_ascii_lowercase();
        if lower.contains("no cmake_cuda_compiler could be found")
            || lower.contains("could not find nvcc")
            || lower.contains("cuda toolkit not found")
            || lower.contains("failed to find nvcc")
        {
            self.mentions_missing_cuda = true;
        }
        if l.starts_with("error") {
            self.in_block = true;
        } else if l.trim().is_empty() {
            self.in_block = false;
        }
        if self.in_block && self.first.len() < Self::MAX {
            self.first.push(l.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_compiler_error_blocks_and_spots_a_missing_cuda_toolkit() {
        let out = "   Compiling x v0.1.0\nerror[E0308]: mismatched types\n --> src/main.rs:2:18\n  |\n2 |     let x: u8 = \"no\";\n\nwarning: unused\n\nerror: could not compile `x` (bin \"x\") due to 1 previous error\n";
        let mut e = ErrorLines::default();
        out.lines().for_each(|l| e.push(l));
        assert_eq!(
            e.first,
            [
                "error[E0308]: mismatched types",
                " --> src/main.rs:2:18",
                "  |",
                "2 |     let x: u8 = \"no\";",
                "error: could not compile `x` (bin \"x\") due to 1 previous error",
            ]
        );
        assert!(!e.mentions_missing_cuda);
        e.push("  -- No CMAKE_CUDA_COMPILER could be found.");
        assert!(e.mentions_missing_cuda);
    }

    #[test]
    fn a_configured_cargo_that_is_not_there_is_named() {
        let e = find_cargo(Some(Path::new("/nonexistent/cargo"))).unwrap_err();
        assert_eq!(e.code(), rbee_types::ErrorCode::CargoNotFound);
        assert!(e.to_string().contains("/nonexistent/cargo"), "{e}");
    }
}
