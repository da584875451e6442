//! The shipped systemd units and scripts, checked with the real tools.

use std::path::{Path, PathBuf};
use std::process::Command;

use rbee_test_support::model::TempDir;
use rbee_test_support::skip_unless;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn standalone_worker_unit_passes_systemd_analyze_verify() {
    skip_unless!(have("systemd-analyze"), "systemd-analyze is not installed");
    let dir = TempDir::new("unit");
    let unit = std::fs::read_to_string(repo().join("systemd/llm-worker-rbee@.service")).unwrap();
    // Point ExecStart at the binary cargo built so verify can check it is executable.
    let worker = repo().join("target/release/llm-worker-rbee");
    skip_unless!(worker.is_file(), "worker not built at {}", worker.display());
    let unit = unit.replace("/usr/local/bin/llm-worker-rbee", worker.to_str().unwrap());
    let path = dir.join("llm-worker-rbee@smollm2.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {stderr}"
    );
}

fn fetch_into(cache: &TempDir) -> std::process::Output {
    Command::new(repo().join("scripts/fetch-test-model"))
        .env("RBEE_CACHE_DIR", &cache.0)
        .output()
        .unwrap()
}

fn seeded_cache() -> Option<(TempDir, PathBuf)> {
    let model = rbee_test_support::model::test_model()?;
    let cache = TempDir::new("cache");
    let dest = cache.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::copy(&model, &dest).unwrap();
    Some((cache, dest))
}

#[test]
fn fetch_test_model_reuses_a_verified_cached_file() {
    let seeded = seeded_cache();
    skip_unless!(
        seeded.is_some(),
        "test model missing: run scripts/fetch-test-model"
    );
    let (cache, dest) = seeded.unwrap();
    let out = fetch_into(&cache);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        dest.to_str().unwrap()
    );
    assert!(
        out.stderr.is_empty(),
        "a verified cached file must not be fetched again"
    );
}

#[test]
fn fetch_test_model_replaces_a_corrupted_cached_file() {
    let seeded = seeded_cache();
    skip_unless!(
        seeded.is_some(),
        "test model missing: run scripts/fetch-test-model"
    );
    let (cache, dest) = seeded.unwrap();
    // Flip one byte in the middle: same size, wrong hash.
    let mut bytes = std::fs::read(&dest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&dest, &bytes).unwrap();
    let out = fetch_into(&cache);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fixed = std::fs::read(&dest).unwrap();
    assert_eq!(fixed.len(), bytes.len());
    assert_ne!(
        fixed[mid], bytes[mid],
        "the corrupted file was handed out again"
    );
}

#[test]
fn every_nix_file_parses() {
    skip_unless!(
        have("nix-instantiate"),
        "nix-instantiate is not installed (apt-get install nix-bin)"
    );
    let files = ["flake.nix", "nix/package.nix", "nixos-module/default.nix"];
    for f in files {
        let out = Command::new("nix-instantiate")
            .arg("--parse")
            .arg(repo().join(f))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{f}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
