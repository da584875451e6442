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

/// `systemd-analyze [--user] verify` of shipped units, with ExecStart pointed at the
/// binaries cargo built (verify checks they are executable).
fn verify_units(units: &[(&str, &str)], user: bool) {
    skip_unless!(have("systemd-analyze"), "systemd-analyze is not installed");
    let dir = TempDir::new("unit");
    let mut paths = vec![];
    for (source, name) in units {
        let mut unit = std::fs::read_to_string(repo().join(source)).unwrap();
        for bin in ["llm-worker-rbee", "rbee-hive"] {
            let built = repo().join("target/release").join(bin);
            skip_unless!(built.is_file(), "{bin} not built at {}", built.display());
            let built = built.to_str().unwrap().to_owned();
            unit = unit
                .replace(&format!("/usr/local/bin/{bin}"), &built)
                .replace(&format!("%h/.local/bin/{bin}"), &built);
        }
        let path = dir.join(name);
        std::fs::write(&path, unit).unwrap();
        paths.push(path);
    }
    let runtime = dir.join("runtime");
    std::fs::create_dir_all(&runtime).unwrap();
    let mut cmd = Command::new("systemd-analyze");
    if user {
        cmd.arg("--user").env("XDG_RUNTIME_DIR", &runtime);
    }
    let out = cmd.arg("verify").args(&paths).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify {units:?}: {stderr}"
    );
}

#[test]
fn standalone_worker_unit_passes_systemd_analyze_verify() {
    verify_units(
        &[(
            "systemd/llm-worker-rbee@.service",
            "llm-worker-rbee@smollm2.service",
        )],
        false,
    );
}

#[test]
fn hive_units_pass_systemd_analyze_verify() {
    verify_units(
        &[
            ("systemd/rbee-hive.service", "rbee-hive.service"),
            ("systemd/rbee-workers.slice", "rbee-workers.slice"),
        ],
        false,
    );
    verify_units(
        &[("systemd/user/rbee-hive.service", "rbee-hive.service")],
        true,
    );
}

/// The overall exposure `systemd-analyze security --offline` gives the shipped hive unit
/// (ExecStart pointed at the built binary).
#[test]
fn the_hive_unit_is_hardened_to_ok_by_systemd_analyze_security() {
    skip_unless!(have("systemd-analyze"), "systemd-analyze is not installed");
    let built = repo().join("target/release/rbee-hive");
    skip_unless!(
        built.is_file(),
        "rbee-hive not built at {}",
        built.display()
    );
    let dir = TempDir::new("unit");
    let unit = std::fs::read_to_string(repo().join("systemd/rbee-hive.service"))
        .unwrap()
        .replace("/usr/local/bin/rbee-hive", built.to_str().unwrap());
    let path = dir.join("rbee-hive.service");
    std::fs::write(&path, unit).unwrap();
    // --threshold: exit status 1 above 4.0 ("OK" and better), in tenths.
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager", "--threshold=40"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let level: f64 = text
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for rbee-hive.service: "))
        .and_then(|(_, v)| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level:\n{text}"));
    assert!(out.status.success() && level <= 4.0, "{level}:\n{text}");
}

#[test]
fn the_polkit_rule_only_grants_worker_units_to_the_rbee_user() {
    let rule = std::fs::read_to_string(repo().join("systemd/rbee-hive.polkit.rules")).unwrap();
    assert!(rule.contains(r#"subject.user === "rbee""#));
    assert!(rule.contains(r#"unit.indexOf("rbee-worker@") === 0"#));
    assert!(rule.contains("org.freedesktop.systemd1.manage-units"));
    // Balanced braces and parentheses: a typo would make polkitd drop the whole file.
    for (open, close) in [('{', '}'), ('(', ')'), ('[', ']')] {
        assert_eq!(
            rule.matches(open).count(),
            rule.matches(close).count(),
            "{open}{close}"
        );
    }
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
    // Every .nix file of the repository (outside build outputs).
    let mut files = vec![];
    let mut dirs = vec![repo()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() && !name.starts_with('.') && name != "target" {
                dirs.push(p);
            } else if name.ends_with(".nix") {
                files.push(p.strip_prefix(repo()).unwrap().to_path_buf());
            }
        }
    }
    for f in [
        "flake.nix",
        "nixos-module/default.nix",
        "nix/package.nix",
        "nix/tests/hive.nix",
    ] {
        assert!(
            files.iter().any(|p| p.as_path() == Path::new(f)),
            "{f} found"
        );
    }
    for f in &files {
        let out = Command::new("nix-instantiate")
            .arg("--parse")
            .arg(repo().join(f))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_grafana_dashboard_queries_are_valid_promql_over_documented_metrics() {
    skip_unless!(
        have("promtool"),
        "promtool is not installed (Debian: apt-get install prometheus)"
    );
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("docs/grafana-dashboard.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().replace("$job", ".+"))
        .collect();
    assert!(exprs.len() >= 8, "{exprs:?}");
    // Every metric a panel shows is one the daemons export (documented in observability.md).
    let documented = std::fs::read_to_string(repo().join("docs/observability.md")).unwrap();
    for e in &exprs {
        for name in e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if name.starts_with("rbee_") {
                let base = name
                    .trim_end_matches("_bucket")
                    .trim_end_matches("_sum")
                    .trim_end_matches("_count");
                assert!(
                    documented.contains(&format!("`{base}`")),
                    "{base} is not a documented metric"
                );
            }
        }
    }
    // promtool parses each query as a recording rule (a rules file in JSON, which is YAML).
    let rules: Vec<serde_json::Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| serde_json::json!({"record": format!("rbee:dashboard_{i}"), "expr": e}))
        .collect();
    let file = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let dir = TempDir::new("promql");
    let path = dir.join("rules.yml");
    std::fs::write(&path, file.to_string()).unwrap();
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
