//! Worker binaries through the real hive: spawning builds the worker from git first, the
//! build API and its progress stream, bad input, a hive killed mid-build, and (slow) the
//! real worker built from this repository's own checkout.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rbee_test_support::worker_repo::{Variant, WorkerRepo};
use serde_json::{json, Value};

use crate::common::*;

/// Hive options with `[worker_source]` at `url` (ref `main` unless given).
fn with_source(mut opts: Opts, url: &str, git_ref: &str) -> Opts {
    opts.extra.push_str(&format!(
        "[worker_source]\ngit_url = {url:?}\ngit_ref = {git_ref:?}\n"
    ));
    opts
}

fn lines_of(events: &[Value]) -> String {
    events
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits until worker `id` appears and is idle (spawned by the hive after a build).
fn wait_listed_idle(hive: &Hive, timeout: Duration) -> Value {
    let t0 = Instant::now();
    loop {
        if let Some(w) = hive.workers().into_iter().find(|w| w["state"] == "idle") {
            return w;
        }
        assert!(
            t0.elapsed() < timeout,
            "no idle worker after {timeout:?}: {:?}",
            hive.workers()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn spawning_builds_the_worker_from_git_first_then_runs_it_as_a_unit() {
    let Some((model, manager, state)) = setup() else {
        return;
    };
    let repo = WorkerRepo::new();
    let hive = Hive::start(
        &with_source(Opts::systemd(&manager), &repo.url(), "main"),
        &state.0,
    );
    let r = hive.spawn_model(&model);
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(r.json()["worker"].is_null(), "{}", r.body);
    let events = hive.follow(r.json()["build"]["progress_url"].as_str().unwrap());
    let text = lines_of(&events);
    assert!(text.contains(r#""stage":"fetching""#), "{text}");
    assert!(text.contains("Compiling llm-worker-rbee"), "{text}");
    let last = events.last().unwrap();
    assert_eq!(last["stage"], "complete", "{text}");
    let binary = &last["binary"];
    let path = binary["binary_path"].as_str().unwrap().to_owned();
    assert!(
        path.starts_with(state.join("worker-bin").to_str().unwrap()),
        "{path}"
    );
    // The hive starts the worker once the build is done, with the built binary.
    let w = wait_listed_idle(&hive, Duration::from_secs(120));
    assert_eq!(w["binary"], path.as_str());
    let unit = w["unit"].as_str().unwrap();
    let (_, exec) = manager.systemctl(&["show", "-p", "ExecStart", unit]);
    assert!(exec.contains(&path), "{exec}");
    let a = hive.infer(&w, "The capital of France is");
    assert_eq!(a.status, 200, "{}", a.body);
    // Listed with its provenance.
    let list = hive.get("/v1/worker-binaries").json();
    let b = &list["binaries"][0];
    assert_eq!(b["git_url"], repo.url().as_str());
    assert_eq!(b["git_commit"].as_str().unwrap().len(), 40);
    assert_eq!(b["features"], json!([]));
    assert_eq!(list["source"]["git_ref"], "main");
    // In use: not deletable; once the worker is gone, it is.
    let id = b["id"].as_str().unwrap();
    let r = hive.call("DELETE", &format!("/v1/worker-binaries/{id}"), None);
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (409, "BINARY_IN_USE"),
        "{}",
        r.body
    );
    let wid = w["id"].as_str().unwrap();
    assert_eq!(
        hive.post(&format!("/v1/workers/{wid}/shutdown"), &json!({}))
            .status,
        200
    );
    let r = hive.call("DELETE", &format!("/v1/worker-binaries/{id}"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!Path::new(&path).exists());
}

#[test]
fn the_build_api_refuses_bad_input_and_streams_failures() {
    let Some(_) = model() else { return };
    let repo = WorkerRepo::new();
    let state = temp("hive-state");
    let hive = Hive::start(
        &with_source(Opts::new("process"), &repo.url(), "main"),
        &state.0,
    );
    for (body, status, code) in [
        (json!({"features": ["rocm"]}), 400, "INVALID_REQUEST"),
        (json!({"ref": "a..b"}), 400, "INVALID_REQUEST"),
        (json!({"ref": "--upload-pack=x"}), 400, "INVALID_REQUEST"),
        (json!({"features": "cuda"}), 400, "INVALID_JSON"),
        (json!({"branch": "main"}), 400, "UNKNOWN_FIELD"),
    ] {
        let r = hive.post("/v1/worker-binaries/build", &body);
        assert_eq!(
            (r.status, r.error_code()),
            (status, code.to_owned()),
            "{body}: {}",
            r.body
        );
    }
    let r = hive.get("/v1/worker-binaries/build/progress?id=build-999");
    assert_eq!((r.status, r.error_code().as_str()), (404, "NOT_FOUND"));
    let r = hive.call("DELETE", "/v1/worker-binaries/nope", None);
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (404, "BINARY_NOT_FOUND")
    );
    // Failures arrive as the stream's last event, with their code.
    let r = hive.post(
        "/v1/worker-binaries/build",
        &json!({"ref": "no-such-branch"}),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let events = hive.follow(r.json()["progress_url"].as_str().unwrap());
    let last = events.last().unwrap();
    assert_eq!(last["stage"], "error");
    assert_eq!(last["error"]["code"], "GIT_REF_NOT_FOUND", "{last}");
    repo.commit(&Variant::Broken, "broken");
    let r = hive.post("/v1/worker-binaries/build", &json!({"features": ["cpu"]}));
    let events = hive.follow(r.json()["progress_url"].as_str().unwrap());
    let last = events.last().unwrap();
    assert_eq!(last["error"]["code"], "WORKER_BUILD_FAILED", "{last}");
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("error[E0308]"),
        "{last}"
    );
    assert!(lines_of(&events).contains("mismatched types"));
    assert_eq!(
        hive.get("/v1/worker-binaries").json()["binaries"],
        json!([])
    );
    // A spawn that needs the broken build: 202, then the next spawn says why it failed.
    let model = model().unwrap();
    let r = hive.spawn_model(&model);
    assert_eq!(r.status, 202, "{}", r.body);
    let events = hive.follow(r.json()["build"]["progress_url"].as_str().unwrap());
    assert_eq!(events.last().unwrap()["stage"], "error");
    let t0 = Instant::now();
    let failure = loop {
        let r = hive.spawn_model(&model);
        if !r.json()["previous_failure"].is_null() {
            break r.json()["previous_failure"].clone();
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{}", r.body);
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        failure["exit"]
            .as_str()
            .unwrap()
            .contains("worker binary build failed"),
        "{failure}"
    );
}

#[test]
fn a_hive_without_a_source_refuses_builds_and_lists_its_installed_worker() {
    let Some(model) = model() else { return };
    let state = temp("hive-state");
    let hive = Hive::start(&Opts::new("process"), &state.0);
    let r = hive.post("/v1/worker-binaries/build", &json!({}));
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (409, "NO_WORKER_SOURCE"),
        "{}",
        r.body
    );
    hive.ready_worker(&model);
    let list = hive.get("/v1/worker-binaries").json();
    assert_eq!(list["binaries"][0]["origin"], "installed", "{list}");
    assert_eq!(
        list["binaries"][0]["binary_path"],
        worker_binary().display().to_string()
    );
    assert!(list["source"].is_null());
}

/// Processes named `cargo` whose working directory is under `dir`.
fn cargos_under(dir: &Path) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "cargo")
                && std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|c| c.starts_with(dir))
        })
        .collect()
}

#[test]
fn a_hive_killed_mid_build_leaves_no_cargo_and_no_record_and_builds_again() {
    let Some(_) = model() else { return };
    let repo = WorkerRepo::new();
    let state = temp("hive-state");
    let flag = state.join("hold");
    std::fs::write(&flag, "").unwrap();
    repo.commit(
        &Variant::Slow {
            mark: 5,
            flag: flag.clone(),
        },
        "slow",
    );
    let opts = with_source(Opts::new("process"), &repo.url(), "main");
    let hive = Hive::start(&opts, &state.0);
    let r = hive.post("/v1/worker-binaries/build", &json!({}));
    assert_eq!(r.status, 202, "{}", r.body);
    let mut sse = rbee_test_support::http::Sse::get(&format!(
        "{}{}",
        hive.url,
        r.json()["progress_url"].as_str().unwrap()
    ))
    .unwrap();
    while let Some(e) = sse.next_json() {
        if e["line"]
            .as_str()
            .is_some_and(|l| l.contains("Compiling llm-worker-rbee"))
        {
            break;
        }
    }
    assert_eq!(cargos_under(&state.0).len(), 1, "cargo runs");
    hive.kill();
    let t0 = Instant::now();
    while !cargos_under(&state.0).is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "cargo outlived the hive"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::remove_file(&flag).unwrap();
    let hive = Hive::start(&opts, &state.0);
    assert_eq!(
        hive.get("/v1/worker-binaries").json()["binaries"],
        json!([])
    );
    let r = hive.post("/v1/worker-binaries/build", &json!({}));
    let events = hive.follow(r.json()["progress_url"].as_str().unwrap());
    let last = events.last().unwrap();
    assert_eq!(last["stage"], "complete", "{}", lines_of(&events));
    assert!(last["binary"]["version"]
        .as_str()
        .unwrap()
        .contains("fake.5"));
}

/// The root of this repository's git checkout, and its HEAD commit.
fn this_checkout() -> Option<(PathBuf, String)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let repo = git2::Repository::open(&root).ok()?;
    let head = repo.head().ok()?.target()?.to_string();
    Some((root.canonicalize().ok()?, head))
}

/// Slow (a full release build of the worker and llama.cpp, minutes): run in CI.
#[test]
fn slow_the_real_worker_is_built_from_this_repository_and_serves() {
    let Some((model, manager, state)) = setup() else {
        return;
    };
    let checkout = this_checkout();
    rbee_test_support::skip_unless!(checkout.is_some(), "this source tree is not a git checkout");
    let (root, head) = checkout.unwrap();
    let hive = Hive::start(
        &with_source(Opts::systemd(&manager), &root.display().to_string(), &head),
        &state.0,
    );
    let r = hive.spawn_model(&model);
    assert_eq!(r.status, 202, "{}", r.body);
    let events = hive.follow(r.json()["build"]["progress_url"].as_str().unwrap());
    let last = events.last().unwrap();
    assert_eq!(
        last["stage"],
        "complete",
        "{}",
        lines_of(&events[events.len().saturating_sub(40)..])
    );
    assert_eq!(last["binary"]["git_commit"], head.as_str());
    assert!(lines_of(&events).contains("Compiling llama-cpp-sys-2"));
    let version = last["binary"]["version"].as_str().unwrap();
    assert!(
        version.starts_with("llm-worker-rbee 0.1.0 (backends: cpu"),
        "{version}"
    );
    let w = wait_listed_idle(&hive, Duration::from_secs(120));
    assert_eq!(w["binary"], last["binary"]["binary_path"]);
    let a = hive.infer(&w, "Write a haiku about bees");
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(
        !a.json()["text"].as_str().unwrap_or("").is_empty(),
        "{}",
        a.body
    );
}
