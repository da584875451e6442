//! `setup` commands: registering nodes over real SSH, every way it can fail.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rbee_test_support::model::TempDir;
use rbee_test_support::process::free_port;
use rbee_test_support::sshd::Sshd;

use crate::common::Keeper;

/// A real sshd and a keeper that trusts it, or `None` after saying why the test skips.
fn sshd_and_keeper() -> Option<(Sshd, Keeper)> {
    let sshd = Sshd::start_or_skip()?;
    let k = Keeper::new(&sshd.known_hosts);
    Some((sshd, k))
}

fn copy_key(from: &Path, to: PathBuf, mode: u32) -> PathBuf {
    std::fs::copy(from, &to).unwrap();
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode)).unwrap();
    to
}

#[test]
fn a_reachable_node_is_saved_listed_and_not_added_twice() {
    let Some((sshd, k)) = sshd_and_keeper() else {
        return;
    };
    let out = k.add("bee1", sshd.port, &sshd.user(), &sshd.client_key);
    assert_eq!(out.code, 0, "{}\n{}", out.stderr, sshd.log());
    assert!(out.stderr.contains("attempt 1/3: ok"), "{}", out.stderr);
    assert!(
        out.stderr.contains("node bee1 registered"),
        "{}",
        out.stderr
    );
    let list = k.run(&["setup", "list-nodes"]);
    assert_eq!(list.code, 0);
    let lines: Vec<&str> = list.stdout.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("LAST CONNECTED"),
        "{}",
        list.stdout
    );
    assert!(lines[1].starts_with("bee1"), "{}", list.stdout);
    assert!(
        lines[1].contains(&format!("@127.0.0.1:{}", sshd.port)),
        "{}",
        list.stdout
    );
    assert!(
        lines[1].contains("reachable") && lines[1].contains("s ago"),
        "{}",
        list.stdout
    );
    // The same name again: refused before any connection, with the ways out.
    let again = k.add("bee1", sshd.port, &sshd.user(), &sshd.client_key);
    assert_eq!(again.code, 1);
    assert!(
        again
            .stderr
            .starts_with("[rbee-keeper] Error: a node named bee1 is registered already"),
        "{}",
        again.stderr
    );
    assert!(
        again.stderr.contains("setup update-node --name bee1"),
        "{}",
        again.stderr
    );
    assert!(
        again.stderr.contains("setup remove-node --name bee1"),
        "{}",
        again.stderr
    );
    assert!(!again.stderr.contains("attempt"), "{}", again.stderr);
    // Changes that need no connection are saved as they are; remove, then remove again.
    let out = k.run(&[
        "setup",
        "update-node",
        "--name",
        "bee1",
        "--install-path",
        "/opt/rbee",
        "--json",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["install_path"], "/opt/rbee", "{v}");
    assert!(k.run(&["setup", "list-nodes"]).stdout.contains("/opt/rbee"));
    // A change to a port where nothing listens is checked, refused, and not saved.
    let closed = free_port().to_string();
    let out = k.run(&[
        "setup",
        "update-node",
        "--name",
        "bee1",
        "--ssh-port",
        &closed,
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let list = k.run(&["setup", "list-nodes"]).stdout;
    assert!(list.contains(&format!(":{}", sshd.port)), "{list}");
    let out = k.run(&["setup", "remove-node", "--name", "bee1", "--json"]);
    assert_eq!(out.code, 0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["removed"], "bee1");
    assert!(k.names().is_empty());
    let out = k.run(&["setup", "remove-node", "--name", "bee1"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("no node named bee1 is registered"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("setup list-nodes"), "{}", out.stderr);
}

#[test]
fn a_key_the_server_refuses_is_explained_and_nothing_is_saved() {
    let Some((sshd, k)) = sshd_and_keeper() else {
        return;
    };
    let out = k.add("bee2", sshd.port, &sshd.user(), &sshd.wrong_key);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("[ssh] Error: cannot reach node bee2: the server refused the key"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("ssh-copy-id -i"), "{}", out.stderr);
    assert!(out.stderr.contains("chmod 600"), "{}", out.stderr);
    // Another attempt cannot fix a refused key: one attempt only.
    assert!(
        out.stderr.contains("attempt 1/3") && !out.stderr.contains("attempt 2/3"),
        "{}",
        out.stderr
    );
    assert!(k.names().is_empty());
}

#[test]
fn a_key_readable_by_others_or_missing_is_refused_before_connecting() {
    let Some((sshd, k)) = sshd_and_keeper() else {
        return;
    };
    let open = copy_key(&sshd.client_key, k.dir.join("open_key"), 0o644);
    let out = k.add("bee3", sshd.port, &sshd.user(), &open);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("is readable by others (mode 644)"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains(&format!("chmod 600 {}", open.display())),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("attempt"), "{}", out.stderr);
    let missing = k.dir.join("no_such_key");
    let out = k.add("bee3", sshd.port, &sshd.user(), &missing);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains(&format!("the SSH key {} does not exist", missing.display())),
        "{}",
        out.stderr
    );
    assert!(k.names().is_empty());
}

#[test]
fn a_closed_port_is_tried_three_times_then_reported() {
    let Some((sshd, k)) = sshd_and_keeper() else {
        return;
    };
    let closed = free_port();
    let out = k.add("bee4", closed, &sshd.user(), &sshd.client_key);
    assert_eq!(out.code, 1);
    for i in 1..=3 {
        assert!(
            out.stderr.contains(&format!("attempt {i}/3")),
            "{}",
            out.stderr
        );
    }
    assert!(out.stderr.contains("Connection refused"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("sshd listening on port {closed}")),
        "{}",
        out.stderr
    );
    assert!(k.names().is_empty());
}

#[test]
fn an_unknown_host_key_is_refused_with_how_to_trust_it() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    let empty = TempDir::new("known-hosts");
    let k = Keeper::new(&empty.join("known_hosts"));
    let out = k.add("bee5", sshd.port, &sshd.user(), &sshd.client_key);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("host key could not be verified"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains(&format!("ssh-keyscan -p {} 127.0.0.1", sshd.port)),
        "{}",
        out.stderr
    );
    assert!(k.names().is_empty());
}

#[test]
fn bad_arguments_are_refused_before_any_connection() {
    let k = Keeper::new(Path::new("/dev/null"));
    let key = "/nonexistent/key";
    for (args, says) in [
        (
            vec![
                "--name=-x",
                "--ssh-host",
                "h",
                "--ssh-user",
                "u",
                "--ssh-key",
                key,
            ],
            "is not a node name",
        ),
        (
            vec![
                "--name",
                "a b",
                "--ssh-host",
                "h",
                "--ssh-user",
                "u",
                "--ssh-key",
                key,
            ],
            "is not a node name",
        ),
        (
            vec![
                "--name",
                "n",
                "--ssh-host=-oProxyCommand=sh",
                "--ssh-user",
                "u",
                "--ssh-key",
                key,
            ],
            "is not a host name",
        ),
        (
            vec![
                "--name",
                "n",
                "--ssh-host",
                "h",
                "--ssh-user",
                "u;id",
                "--ssh-key",
                key,
            ],
            "is not a user name",
        ),
        (
            vec![
                "--name",
                "n",
                "--ssh-host",
                "h",
                "--ssh-user",
                "u",
                "--ssh-key",
                key,
                "--ssh-port",
                "70000",
            ],
            "70000",
        ),
        (
            vec!["--name", "n", "--ssh-host", "h", "--ssh-key", key],
            "--ssh-user",
        ),
    ] {
        let mut all = vec!["setup", "add-node"];
        all.extend(args.iter());
        let out = k.run(&all);
        assert_eq!(out.code, 1, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.starts_with("[rbee-keeper] Error:"),
            "{args:?}: {}",
            out.stderr
        );
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
        assert!(!out.stderr.contains("attempt"), "{args:?}: {}", out.stderr);
    }
    let help = k.run(&["setup", "add-node", "--help"]);
    assert_eq!(help.code, 0);
    assert!(help.stdout.contains("--ssh-key"), "{}", help.stdout);
}

#[test]
fn a_damaged_node_registry_is_set_aside_and_said_loudly() {
    let k = Keeper::new(Path::new("/dev/null"));
    let db = k.dir.join("data/rbee/beehives.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    std::fs::write(&db, vec![0x5a; 8192]).unwrap();
    let out = k.run(&["setup", "list-nodes"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("the node registry") && out.stderr.contains("was damaged"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("setup add-node"), "{}", out.stderr);
    let kept = std::fs::read_dir(db.parent().unwrap())
        .unwrap()
        .flatten()
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("beehives.db.corrupt-")
        });
    assert!(kept, "the damaged file is kept for inspection");
    // The next run finds a healthy registry and says nothing.
    let again = k.run(&["setup", "list-nodes"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(!again.stderr.contains("damaged"), "{}", again.stderr);
}
