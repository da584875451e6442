//! `rbee-keeper setup check`: every layer to a node, against the test sshd and a real
//! hive, then with that hive down.

use rbee_test_support::process::free_port;
use rbee_test_support::sshd::Sshd;

use crate::common::{text, Env};

#[test]
fn setup_check_shows_each_layer_with_its_figure_and_names_the_first_that_fails() {
    let Some(mut env) = Env::new() else { return };
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    // A login on the node finds rbee-hive on its PATH, as an installed node's does.
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_rbee-keeper"))
        .parent()
        .unwrap()
        .to_path_buf();
    sshd.login_env(&[(
        "PATH",
        format!("{}:/usr/local/bin:/usr/bin:/bin", bin_dir.display()),
    )]);
    let port = free_port();
    env.hive = Some(env.hive_at(port, "node-state"));
    std::fs::write(
        env.dir.join("config.toml"),
        format!(
            "[ssh]\noptions = [\"UserKnownHostsFile={}\", \"StrictHostKeyChecking=yes\"]\n",
            sshd.known_hosts.display()
        ),
    )
    .unwrap();
    env.add_node("bee1", &sshd, port);
    let out = env
        .keeper(&["setup", "check", "--node", "bee1"])
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}\n{stdout}");
    let line = |check: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{check}: ")))
            .unwrap_or_else(|| panic!("no {check} line in:\n{stdout}"))
            .to_owned()
    };
    assert!(line("ssh").contains(&format!("@127.0.0.1:{}, key accepted", sshd.port)));
    let ms: f64 = line("latency")
        .trim_start_matches("latency: ")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert!((0.0..1000.0).contains(&ms), "{stdout}");
    assert!(
        line("rbee-hive binary").contains(&format!("rbee-hive {}", env!("CARGO_PKG_VERSION"))),
        "{stdout}"
    );
    assert!(line("hive API").contains(&format!("127.0.0.1:{port} (through SSH) answers in")));
    assert!(line("version").contains(env!("CARGO_PKG_VERSION")));
    assert!(line("backends").contains("cpu"), "{stdout}");
    assert!(line("resources").contains("memory "), "{stdout}");
    // The same as one JSON document.
    let out = env
        .keeper(&["setup", "check", "--node", "bee1", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["checks"].as_array().unwrap().len(), 7, "{v}");
    // A node not reached for a day is checked before an answer is asked of it.
    let db = env.dir.join("data/rbee/beehives.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute("UPDATE beehives SET last_connected_unix = 0", [])
        .unwrap();
    let m = env.file_ref();
    let out = env
        .keeper(&["run", "--node", "bee1", &m, "Bees", "--max-tokens", "2"])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("bee1 was not reached for a day or more; checking it first"),
        "{stderr}"
    );
    assert!(stderr.contains("latency: "), "{stderr}");
    let again = env
        .keeper(&["run", "--node", "bee1", &m, "Bees", "--max-tokens", "2"])
        .output()
        .unwrap();
    assert!(
        !text(&again.stderr).contains("checking it first"),
        "reached just now"
    );
    // The hive down: the SSH layers pass, the hive's is named with what to do.
    drop(env.hive.take());
    let out = env
        .keeper(&["setup", "check", "--node", "bee1"])
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("rbee-hive binary: "), "{stdout}");
    assert!(!stdout.contains("hive API: "), "{stdout}");
    assert!(
        stderr.contains(&format!(
            "cannot reach the hive of node bee1 at 127.0.0.1:{port} (through SSH)"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("rbee-keeper hive start --node bee1"),
        "{stderr}"
    );
}
