//! `rbee-keeper install`: for the user, for the system (staged under a root), and without
//! the binaries next to it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use rbee_test_support::model::TempDir;

use crate::common::text;

fn keeper() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rbee-keeper"))
}

fn install(bin: &Path, home: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin)
        .arg("install")
        .args(args)
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_DATA_HOME")
        .env_remove("RBEE_CONFIG")
        .output()
        .unwrap()
}

fn siblings_built() -> bool {
    let dir = keeper().parent().unwrap().to_path_buf();
    ["rbee-hive", "llm-worker-rbee"]
        .iter()
        .all(|b| dir.join(b).is_file())
}

#[test]
fn a_user_install_puts_binaries_config_and_unit_in_place_and_keeps_edits() {
    rbee_test_support::skip_unless!(
        siblings_built(),
        "rbee-hive and llm-worker-rbee not built (cargo build --release)"
    );
    let home = TempDir::new("install-home");
    let out = install(&keeper(), &home.0, &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let done: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        done["done"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().contains("rbee-hive.service")),
        "{done}"
    );
    let here = keeper().parent().unwrap().to_path_buf();
    for name in ["rbee-keeper", "rbee-hive", "llm-worker-rbee"] {
        let dest = home.join(".local/bin").join(name);
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755, "{name}");
        assert_eq!(
            std::fs::read(&dest).unwrap(),
            std::fs::read(here.join(name)).unwrap(),
            "{name}"
        );
        let v = Command::new(&dest).arg("--version").output().unwrap();
        assert!(
            text(&v.stdout).starts_with(name),
            "{name}: {}",
            text(&v.stdout)
        );
    }
    let unit =
        std::fs::read_to_string(home.join(".config/systemd/user/rbee-hive.service")).unwrap();
    assert!(
        unit.contains("ExecStart=%h/.local/bin/rbee-hive --config %E/rbee/hive.toml"),
        "{unit}"
    );
    // The hive's own config, which its own check accepts.
    let check = Command::new(keeper().with_file_name("rbee-hive"))
        .arg("check-config")
        .arg(home.join(".config/rbee/hive.toml"))
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stderr));
    assert!(home.join(".local/share/rbee").is_dir());
    let config = home.join(".config/rbee/config.toml");
    assert!(std::fs::read_to_string(&config)
        .unwrap()
        .contains("[nodes.localhost]"));
    assert!(text(&out.stderr).contains("systemctl --user enable --now rbee-hive"));
    // A second install keeps what the user changed.
    std::fs::write(&config, "[ssh]\noptions = []\n").unwrap();
    let again = install(&keeper(), &home.0, &[]);
    assert_eq!(again.status.code(), Some(0));
    assert!(text(&again.stderr).contains("(already there)"));
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        "[ssh]\noptions = []\n"
    );
}

#[test]
fn a_system_install_stages_units_polkit_sysusers_and_a_valid_hive_config() {
    rbee_test_support::skip_unless!(
        siblings_built(),
        "rbee-hive and llm-worker-rbee not built (cargo build --release)"
    );
    let home = TempDir::new("install-home");
    let root = TempDir::new("install-root");
    let out = install(
        &keeper(),
        &home.0,
        &["--system", "--root", root.0.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for name in ["rbee-keeper", "rbee-hive", "llm-worker-rbee"] {
        assert!(root.join("usr/local/bin").join(name).is_file(), "{name}");
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../systemd");
    for (staged, source) in [
        ("etc/systemd/system/rbee-hive.service", "rbee-hive.service"),
        (
            "etc/systemd/system/rbee-workers.slice",
            "rbee-workers.slice",
        ),
        (
            "etc/polkit-1/rules.d/50-rbee-hive.rules",
            "rbee-hive.polkit.rules",
        ),
        ("etc/sysusers.d/rbee.conf", "rbee.sysusers"),
        ("etc/tmpfiles.d/rbee.conf", "rbee.tmpfiles"),
    ] {
        assert_eq!(
            std::fs::read_to_string(root.join(staged)).unwrap(),
            std::fs::read_to_string(repo.join(source)).unwrap(),
            "{staged}"
        );
    }
    // The hive's default config passes the hive's own check.
    let hive = keeper().with_file_name("rbee-hive");
    let check = Command::new(hive)
        .arg("check-config")
        .arg(root.join("etc/rbee/hive.toml"))
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stderr));
    assert!(text(&out.stderr).contains("systemd-sysusers"));
    // Nothing went to the user's home.
    assert!(!home.join(".local/bin").exists());
}

#[test]
fn another_bin_dir_and_port_reach_the_units_and_the_hive_config() {
    rbee_test_support::skip_unless!(
        siblings_built(),
        "rbee-hive and llm-worker-rbee not built (cargo build --release)"
    );
    let home = TempDir::new("install-home");
    let out = install(
        &keeper(),
        &home.0,
        &[
            "--bin-dir",
            "/opt/rbee/bin",
            "--hive-port",
            "9444",
            "--root",
            home.0.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let staged_home = home.0.join(home.0.strip_prefix("/").unwrap());
    assert!(home.join("opt/rbee/bin/rbee-hive").is_file());
    let unit = std::fs::read_to_string(staged_home.join(".config/systemd/user/rbee-hive.service"))
        .unwrap();
    assert!(
        unit.contains("ExecStart=/opt/rbee/bin/rbee-hive "),
        "{unit}"
    );
    let config = std::fs::read_to_string(staged_home.join(".config/rbee/hive.toml")).unwrap();
    assert!(config.contains("port = 9444"), "{config}");
    // The keeper's config points at that port, so `run` and `hive status` find the hive.
    let keeper_config =
        std::fs::read_to_string(staged_home.join(".config/rbee/config.toml")).unwrap();
    assert!(
        keeper_config.contains("[nodes.localhost]\nhive_url = \"http://127.0.0.1:9444\""),
        "{keeper_config}"
    );
    let system_root = TempDir::new("install-root");
    let out = install(
        &keeper(),
        &home.0,
        &[
            "--system",
            "--bin-dir",
            "/opt/rbee/bin",
            "--root",
            system_root.0.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let unit =
        std::fs::read_to_string(system_root.join("etc/systemd/system/rbee-hive.service")).unwrap();
    assert!(unit.contains("ExecStart=/opt/rbee/bin/rbee-hive"), "{unit}");
    assert!(!unit.contains("/usr/local/bin/"), "{unit}");
    // A relative directory is refused before anything is written.
    let empty = TempDir::new("install-root");
    let out = install(
        &keeper(),
        &home.0,
        &["--bin-dir", "bin", "--root", empty.0.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--bin-dir bin is not an absolute path"));
    assert_eq!(std::fs::read_dir(&empty.0).unwrap().count(), 0);
}

#[test]
fn without_the_other_binaries_next_to_it_install_says_what_to_build() {
    let dir = TempDir::new("lonely-keeper");
    let lonely = dir.join("rbee-keeper");
    std::fs::copy(keeper(), &lonely).unwrap();
    let home = TempDir::new("install-home");
    let out = install(&lonely, &home.0, &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&dir.join("rbee-hive").display().to_string()),
        "{stderr}"
    );
    assert!(stderr.contains("cargo build --release"), "{stderr}");
    assert!(stderr.starts_with("[rbee-keeper] Error:"), "{stderr}");
    // Nothing half-done: not even the keeper was copied.
    assert!(!home.join(".local/bin").exists());
}
