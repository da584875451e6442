//! Honest errors: a hive that answers garbage, a hive that cannot be reached (three
//! attempts, the node's address named), and the hive's errors each relayed with a
//! concrete next step.

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rbee_test_support::model::TempDir;
use rbee_test_support::process::free_port;

use crate::common::{text, Env};

/// A keeper whose `localhost` is `url`.
fn keeper_at(dir: &TempDir, url: &str, args: &[&str]) -> (i32, String, String) {
    std::fs::write(
        dir.join("config.toml"),
        format!("[nodes.localhost]\nhive_url = \"{url}\"\n"),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rbee-keeper"))
        .args(args)
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("RBEE_CONFIG", dir.join("config.toml"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

#[test]
fn a_usage_error_with_json_is_one_json_document_too() {
    let dir = TempDir::new("usage-json");
    for args in [
        &["--json", "frobnicate"][..],
        &["models", "list", "--colour", "--json"],
    ] {
        let (code, stdout, stderr) = keeper_at(&dir, "http://127.0.0.1:9", args);
        assert_eq!(code, 1, "{args:?}: {stderr}");
        assert!(stderr.contains("Error:"), "for a person too: {stderr}");
        let doc: serde_json::Value =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"));
        assert_eq!(doc["error"]["code"], "USAGE", "{doc}");
        assert!(
            doc["error"]["message"]
                .as_str()
                .unwrap()
                .contains("unexpected argument")
                || doc["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("unrecognized subcommand"),
            "{doc}"
        );
    }
    // Without --json, nothing on stdout.
    let (_, stdout, _) = keeper_at(&dir, "http://127.0.0.1:9", &["frobnicate"]);
    assert!(stdout.is_empty(), "{stdout}");
}

#[test]
fn a_hive_answering_garbage_is_an_invalid_answer_and_exit_1() {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let port = server.server_addr().to_ip().unwrap().port();
    std::thread::spawn(move || {
        for r in server.incoming_requests() {
            let _ = r.respond(tiny_http::Response::from_string("<html>not rbee</html>"));
        }
    });
    let dir = TempDir::new("garbage");
    for args in [
        &["workers", "list"][..],
        &["models", "list"],
        &["hive", "status"],
    ] {
        let (code, stdout, stderr) = keeper_at(&dir, &format!("http://127.0.0.1:{port}"), args);
        assert_eq!(code, 1, "{args:?}: {stderr}");
        assert!(
            stderr.contains("invalid answer from the hive on localhost"),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("/v1/health: "), "what was wrong: {stderr}");
        assert!(!stderr.contains("no workers running"), "{stderr}");
        assert!(stdout.is_empty(), "{stdout}");
    }
}

#[test]
fn an_unreachable_hive_is_tried_three_times_and_its_address_named() {
    // Accepts and hangs up at once: nothing answers, and every attempt is counted.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let attempts = Arc::new(AtomicUsize::new(0));
    let counted = attempts.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(s);
        }
    });
    let dir = TempDir::new("unreachable");
    let (code, _, stderr) = keeper_at(
        &dir,
        &format!("http://127.0.0.1:{port}"),
        &["workers", "list", "--node", "localhost"],
    );
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(attempts.load(Ordering::SeqCst), 3, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot reach the hive of node localhost at 127.0.0.1:{port}"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("3 attempts"), "{stderr}");
    assert!(stderr.contains("rbee-keeper hive start"), "{stderr}");
    // Nothing listening at all: the same, at once.
    let closed = free_port();
    let (code, _, stderr) = keeper_at(
        &dir,
        &format!("http://127.0.0.1:{closed}"),
        &["models", "list"],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("at 127.0.0.1:{closed}")),
        "{stderr}"
    );
}

#[test]
fn errors_relayed_from_the_hive_end_with_a_next_step() {
    let Some(mut env) = Env::new() else { return };
    let key = env.dir.join("hive.key");
    std::fs::write(&key, "s3cret-key-for-the-test-hive\n").unwrap();
    env.hive = Some(env.hive_with(
        env.hive_port,
        "hive-state",
        &format!("api_key_file = {:?}\n", key.display().to_string()),
    ));
    let run = |args: &[&str]| {
        let out = env.keeper(args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        text(&out.stderr)
    };
    // No key in the keeper's config.
    let e = run(&["models", "list"]);
    assert!(e.contains("MISSING_API_KEY"), "{e}");
    assert!(e.contains("[nodes.localhost] api_key"), "{e}");
    // With the key: a backend this machine cannot run, a device it does not have, a model
    // it does not have.
    std::fs::write(
        env.dir.join("config.toml"),
        format!(
            "[nodes.localhost]\nhive_url = \"http://127.0.0.1:{}\"\napi_key = \"s3cret-key-for-the-test-hive\"\n",
            env.hive_port
        ),
    )
    .unwrap();
    let m = env.file_ref();
    let e = run(&["run", &m, "hi", "--backend", "cuda"]);
    assert!(e.contains("BACKEND_UNAVAILABLE"), "{e}");
    assert!(
        e.contains("rbee-keeper setup check --node localhost"),
        "where backends are shown: {e}"
    );
    let e = run(&["run", &m, "hi", "--backend", "cpu", "--device", "7"]);
    assert!(e.contains("DEVICE_NOT_FOUND"), "{e}");
    assert!(
        e.contains("--device") && e.contains("rbee-keeper setup check --node localhost"),
        "{e}"
    );
    let e = run(&["models", "rm", "no-such-model"]);
    assert!(e.contains("MODEL_NOT_FOUND"), "{e}");
    assert!(
        e.contains("rbee-keeper models list --node localhost"),
        "{e}"
    );
}

#[test]
fn a_worker_that_fails_to_load_is_reported_from_its_only_launch() {
    let Some(mut env) = Env::new() else { return };
    let launches = env.dir.join("launches");
    let script = env.dir.join("failing-worker.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = --version ] && {{ echo 'llm-worker-rbee {}'; exit 0; }}\necho launched >> {}\necho 'llama: cannot load the model: bad tensor' >&2\nsleep 0.5\nexit 4\n",
            env!("CARGO_PKG_VERSION"),
            launches.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    env.hive = Some(env.hive_with(
        env.hive_port,
        "hive-state",
        &format!("worker_binary = {:?}\n", script.display().to_string()),
    ));
    let out = env
        .keeper(&["run", &env.file_ref(), "hi"])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("failed while loading: exited with status 4"),
        "{stderr}"
    );
    assert!(
        stderr.contains("cannot load the model: bad tensor"),
        "{stderr}"
    );
    assert!(
        stderr.contains("rbee-keeper logs --node localhost"),
        "{stderr}"
    );
    let n = std::fs::read_to_string(&launches).unwrap().lines().count();
    assert_eq!(n, 1, "the worker was launched {n} times");
}

#[test]
fn a_download_retry_is_shown_as_it_happens() {
    let Some(mut env) = Env::new() else { return };
    env.start_hive();
    env.hub.set_faults(rbee_test_support::hub::Faults {
        cut_at: Some((0.4, 1)),
        ..Default::default()
    });
    let out = env
        .keeper(&["models", "download", "hf:org/smol"])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("retrying 2/6"))
        .unwrap_or_else(|| panic!("no retry shown:\n{stderr}"));
    assert!(line.contains("the connection closed at byte"), "{line}");
    let pct: u64 = line
        .split(" %, retrying")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!((35..=45).contains(&pct), "{line}");
    assert!(stderr.contains("model downloaded"), "{stderr}");
}
