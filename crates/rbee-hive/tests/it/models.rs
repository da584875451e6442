//! The hive's models: Hugging Face downloads (from the test hub on loopback) with progress,
//! the catalogue, spawning a model that is not here yet, and a download surviving a
//! SIGKILL of the hive.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rbee_test_support::http::{send, Sse};
use rbee_test_support::hub::{sha256_file, Faults, Hub};
use serde_json::{json, Value};

use crate::common::*;

const COMMIT: &str = "feedfacefeedfacefeedfacefeedfacefeedface";

fn hub_with(model: &Path) -> Hub {
    let hub = Hub::start();
    hub.add_repo(
        "org/smol",
        COMMIT,
        &[("SmolLM2-135M-Instruct.Q4_1.gguf", model)],
    );
    // Two quantizations: naming neither is ambiguous.
    hub.add_repo(
        "org/multi",
        COMMIT,
        &[("m.Q4_1.gguf", model), ("m.Q8_0.gguf", model)],
    );
    hub
}

fn opts(hub: &Hub) -> Opts {
    Opts {
        env: vec![("HF_ENDPOINT", hub.endpoint())],
        extra: "download_stall_secs = 5\n".into(),
        ..Opts::new("process")
    }
}

fn assert_coherent(events: &[Value]) {
    let mut last = 0;
    for e in events {
        if e["stage"] == "downloading" {
            let b = e["bytes_downloaded"].as_u64().unwrap();
            assert!(b >= last, "bytes went back: {events:?}");
            assert!(b <= e["bytes_total"].as_u64().unwrap());
            last = b;
        }
    }
    let end = &events.last().expect("events")["stage"];
    assert!(end == "complete" || end == "error", "{events:?}");
}

#[test]
fn a_download_streams_progress_then_the_model_is_catalogued_served_and_removable() {
    let Some(model) = model() else { return };
    let hub = hub_with(&model);
    let state = temp("hive-state");
    let hive = Hive::start(&opts(&hub), &state.0);

    let r = hive.post(
        "/v1/models/download",
        &json!({"model_ref": "hf:org/smol:Q4_1"}),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let events = hive.follow(r.json()["progress_url"].as_str().unwrap());
    assert_coherent(&events);
    let done = events.last().unwrap();
    assert_eq!(done["stage"], "complete", "{events:?}");
    let path = done["local_path"].as_str().unwrap();
    assert!(
        path.starts_with(state.join("models").to_str().unwrap()),
        "{path}"
    );
    assert_eq!(sha256_file(Path::new(path)), sha256_file(&model));

    let models = hive.get("/v1/models").json()["models"].clone();
    let m = models
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["provider"] == "hf")
        .unwrap()
        .clone();
    assert_eq!(m["sha256"], sha256_file(&model));
    assert_eq!(m["commit_sha"], COMMIT);
    assert_eq!(m["architecture"], "llama");
    assert_eq!(m["quantization"], "Q4_1");
    assert!(m["parameter_count"].as_u64().unwrap() > 100_000_000, "{m}");
    assert_eq!(m["context_length"], 8192);

    // Asked again: already here.
    let again = hive.post("/v1/models/download", &json!({"model_ref": "hf:org/smol"}));
    assert_eq!(again.status, 200, "{}", again.body);

    // A worker of it starts at once; the model cannot be removed while it runs.
    let w = hive.ready_worker_ref("hf:org/smol:Q4_1");
    assert_eq!(hive.infer(&w, "Bees").status, 200);
    let id = m["id"].as_str().unwrap();
    let busy = hive.call("DELETE", &format!("/v1/models/{id}"), None);
    assert_eq!(
        (busy.status, busy.error_code().as_str()),
        (409, "MODEL_IN_USE"),
        "{}",
        busy.body
    );
    assert_eq!(
        hive.post(
            &format!("/v1/workers/{}/shutdown", w["id"].as_str().unwrap()),
            &json!({})
        )
        .status,
        200
    );
    let gone = hive.call("DELETE", &format!("/v1/models/{id}"), None);
    assert_eq!(gone.status, 200, "{}", gone.body);
    assert!(
        !Path::new(path).exists(),
        "the file is deleted with the row"
    );
    assert_eq!(hub.counters.downloads.load(Ordering::Relaxed), 1);
}

#[test]
fn spawning_a_model_that_is_not_here_downloads_it_then_starts_the_worker() {
    let Some(model) = model() else { return };
    let hub = hub_with(&model);
    let state = temp("hive-state");
    let hive = Hive::start(&opts(&hub), &state.0);
    let r = hive.post("/v1/workers/spawn", &json!({"model_ref": "hf:org/smol"}));
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(r.json()["worker"].is_null());
    let events = hive.follow(r.json()["download"]["progress_url"].as_str().unwrap());
    assert_coherent(&events);
    assert_eq!(events.last().unwrap()["stage"], "complete");
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let ws = hive.workers();
        if ws
            .iter()
            .any(|w| w["model_ref"] == "hf:org/smol" && w["state"] == "idle")
        {
            break;
        }
        assert!(Instant::now() < until, "{ws:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_download_interrupted_by_a_killed_hive_resumes_after_the_restart() {
    let Some(model) = model() else { return };
    let hub = hub_with(&model);
    // ~2 s for the whole file: time to kill the hive part-way.
    hub.set_faults(Faults {
        trickle: Some(48 << 20),
        ..Default::default()
    });
    let state = temp("hive-state");
    let o = opts(&hub);
    let hive = Hive::start(&o, &state.0);
    let r = hive.post("/v1/models/download", &json!({"model_ref": "hf:org/smol"}));
    let mut sse = Sse::get(&format!(
        "{}{}",
        hive.url,
        r.json()["progress_url"].as_str().unwrap()
    ))
    .unwrap();
    let size = std::fs::metadata(&model).unwrap().len();
    loop {
        let e = sse.next_json().expect("progress");
        if e["stage"] == "downloading" && e["bytes_downloaded"].as_u64().unwrap() > size / 3 {
            break;
        }
    }
    hive.kill();
    let sent_before = hub.counters.bytes.load(Ordering::Relaxed);
    assert!(sent_before < size, "killed part-way");

    hub.set_faults(Faults::default());
    let hive = Hive::start(&o, &state.0);
    assert!(
        hive.get("/v1/models").json()["models"]
            .as_array()
            .unwrap()
            .is_empty(),
        "no row for a partial file"
    );
    let r = hive.post("/v1/models/download", &json!({"model_ref": "hf:org/smol"}));
    let events = hive.follow(r.json()["progress_url"].as_str().unwrap());
    let first = events.iter().find(|e| e["stage"] == "downloading").unwrap();
    assert!(
        first["bytes_downloaded"].as_u64().unwrap() > 0,
        "resumed, not restarted: {first}"
    );
    let done = events.last().unwrap();
    assert_eq!(done["stage"], "complete", "{events:?}");
    assert_eq!(
        sha256_file(Path::new(done["local_path"].as_str().unwrap())),
        sha256_file(&model)
    );
    let total = hub.counters.bytes.load(Ordering::Relaxed);
    assert!(
        total < size + size / 2,
        "resumed: {total} bytes sent for a {size}-byte file"
    );
}

#[test]
fn model_errors_are_clear_and_leave_nothing_behind() {
    let Some(model) = model() else { return };
    let hub = hub_with(&model);
    let state = temp("hive-state");
    let hive = Hive::start(&opts(&hub), &state.0);
    let url = |p: &str| format!("{}{p}", hive.url);
    for (body, code) in [
        (
            json!({"model_ref": "hf:../../etc/passwd"}),
            "INVALID_MODEL_REF",
        ),
        (
            json!({"model_ref": "hf:org/smol/../../x.gguf"}),
            "INVALID_MODEL_REF",
        ),
        (
            json!({"model_ref": "s3://bucket/model.gguf"}),
            "INVALID_MODEL_REF",
        ),
        (json!({"model_ref": "hf:org/smol\n"}), "INVALID_MODEL_REF"),
        (json!({"model_ref": "hf:org/smol", "x": 1}), "UNKNOWN_FIELD"),
        (json!({}), "INVALID_JSON"),
    ] {
        for path in ["/v1/models/download", "/v1/workers/spawn"] {
            let r = hive.post(path, &body);
            assert_eq!(r.error_code(), code, "{path} {body}: {}", r.body);
        }
    }
    // Known only once the hub answered: errors arrive on the progress stream.
    for (reference, code, says) in [
        ("hf:org/absent", "MODEL_NOT_FOUND", "hf:org/absent"),
        ("hf:org/multi", "INVALID_MODEL_REF", "m.Q8_0.gguf"),
        (
            "hf:org/smol:Q2_K",
            "MODEL_NOT_FOUND",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
    ] {
        let r = hive.post("/v1/models/download", &json!({ "model_ref": reference }));
        assert_eq!(r.status, 202, "{}", r.body);
        let events = hive.follow(r.json()["progress_url"].as_str().unwrap());
        let end = events.last().unwrap();
        assert_eq!(end["stage"], "error", "{events:?}");
        assert_eq!(end["error"]["code"], code, "{reference}: {end}");
        assert!(
            end["error"]["message"].as_str().unwrap().contains(says),
            "{end}"
        );
    }
    let p = send(
        "GET",
        &url("/v1/models/download/progress?id=dl-999"),
        None,
        None,
    );
    assert_eq!(p.status, 404);
    let d = hive.call("DELETE", "/v1/models/nope", None);
    assert_eq!(d.error_code(), "MODEL_NOT_FOUND");
    assert!(hive.get("/v1/models").json()["models"]
        .as_array()
        .unwrap()
        .is_empty());
    assert!(hive.workers().is_empty());
}

#[test]
fn provisioned_models_are_there_after_start_without_a_request() {
    let Some(model) = model() else { return };
    let hub = hub_with(&model);
    let state = temp("hive-state");
    let hive = Hive::start(
        &Opts {
            extra: format!(
                "download_stall_secs = 5\nprovision = [\"hf:org/smol\", {:?}]\n",
                file_ref(&model)
            ),
            ..opts(&hub)
        },
        &state.0,
    );
    let until = Instant::now() + Duration::from_secs(60);
    let models = loop {
        let models = hive.get("/v1/models").json()["models"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if models.len() == 2 || Instant::now() > until {
            break models;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let refs: Vec<&str> = models
        .iter()
        .filter_map(|m| m["reference"].as_str())
        .collect();
    assert_eq!(models.len(), 2, "{models:?}");
    assert!(
        refs.iter().any(|r| r.starts_with("hf:org/smol")),
        "{refs:?}"
    );
    assert_eq!(
        hub.counters.downloads.load(Ordering::Relaxed),
        1,
        "the hub file was fetched once"
    );
    // Already there at the next start: nothing fetched again.
    drop(hive);
    let _again = Hive::start(
        &Opts {
            extra: "provision = [\"hf:org/smol\"]\n".into(),
            ..opts(&hub)
        },
        &state.0,
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        hub.counters.downloads.load(Ordering::Relaxed),
        1,
        "a present model is not fetched again"
    );
}

/// The catalogue's model ids, once `count` are listed (or after 60 s).
fn catalogue_ids(hive: &Hive, count: usize) -> Vec<String> {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let ids: Vec<String> = hive.get("/v1/models").json()["models"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| m["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if ids.len() == count || Instant::now() > until {
            return ids;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn provision_sync_removes_models_no_longer_provisioned_but_keeps_served_ones_and_local_files() {
    let Some((model, manager, state)) = setup() else {
        return;
    };
    let hub = hub_with(&model);
    hub.add_repo("org/other", COMMIT, &[("other.Q4_1.gguf", &model)]);
    let local = temp("sync-local");
    let local_model = local.join("local.gguf");
    std::fs::copy(&model, &local_model).unwrap();
    let mut env = manager.env();
    env.push(("HF_ENDPOINT", hub.endpoint()));
    let log = state.join("hive.log");
    let opts = |extra: String| Opts {
        env: env.clone(),
        log: Some(log.clone()),
        extra: format!("download_stall_secs = 5\n{extra}"),
        ..Opts::systemd(&manager)
    };
    let hive = Hive::start(
        &opts(format!(
            "provision = [\"hf:org/smol\", \"hf:org/other\", {:?}]\n",
            file_ref(&local_model)
        )),
        &state.0,
    );
    let ids = catalogue_ids(&hive, 3);
    assert_eq!(ids.len(), 3, "{ids:?}");
    let id_of = |part: &str| ids.iter().find(|i| i.contains(part)).cloned().unwrap();
    let (smol, other, local_id) = (id_of("smol"), id_of("other"), id_of("local"));
    let other_file = hive.get("/v1/models").json()["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == other.as_str())
        .and_then(|m| m["local_path"].as_str())
        .map(std::path::PathBuf::from)
        .expect("local_path");
    // A worker serves org/other and outlives the hive (systemd).
    let w = hive.ready_worker_ref("hf:org/other");
    let worker_id = w["id"].as_str().unwrap().to_owned();
    hive.kill();

    // provision now names only org/smol: the local file's row goes (the file stays), the
    // served model stays.
    let synced = opts("provision = [\"hf:org/smol\"]\nprovision_sync = true\n".into());
    let hive = Hive::start(&synced, &state.0);
    let mut ids = catalogue_ids(&hive, 2);
    ids.sort();
    let mut want = vec![smol.clone(), other.clone()];
    want.sort();
    assert_eq!(ids, want, "{local_id} removed, {other} kept while served");
    assert!(
        local_model.is_file(),
        "a file:// model's file is never deleted"
    );
    assert!(other_file.is_file());
    assert!(hive.worker(&worker_id).is_some(), "the worker was adopted");
    let r = hive.post(&format!("/v1/workers/{worker_id}/shutdown"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    hive.wait_gone(&worker_id, Duration::from_secs(30));
    hive.kill();

    // Unused now: the next start removes it and deletes the file it downloaded.
    let hive = Hive::start(&synced, &state.0);
    assert_eq!(catalogue_ids(&hive, 1), vec![smol]);
    assert!(
        !other_file.exists(),
        "the downloaded file of a removed model is deleted"
    );
    assert_eq!(
        hub.counters.downloads.load(Ordering::Relaxed),
        2,
        "the model provision names was not fetched again"
    );
    drop(hive);
    let log = std::fs::read_to_string(&log).unwrap();
    for (model, what) in [
        (&local_id, "removed"),
        (&other, "kept until"),
        (&other, "removed"),
    ] {
        assert!(
            log.lines().any(|l| l.contains("provision_sync")
                && l.contains(what)
                && l.contains(model.as_str())),
            "the log says {model} was {what}:\n{log}"
        );
    }
}

#[test]
fn a_hostile_hub_cannot_write_or_delete_outside_the_models_directory() {
    let Some(model) = model() else { return };
    let state = temp("hive-state");
    // A file outside the models directory (state/models) that a hostile hub aims at.
    let outside = state.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let victim = outside.join("victim.gguf");
    std::fs::write(&victim, b"precious").unwrap();
    let hub = Hub::start();
    let absolute = outside.display().to_string();
    // models/hf/org/cN/<commit>/victim.gguf with these commits: state/outside/victim.gguf.
    let commits = [
        absolute.as_str(),
        "../../../../outside",
        "..%2F..%2F..%2F..%2Foutside",
        "feedfacefeedfacefeedfacefeedfacefeedface00",
        "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
    ];
    for (i, commit) in commits.iter().enumerate() {
        hub.add_repo(&format!("org/c{i}"), commit, &[("victim.gguf", &model)]);
    }
    let names = [
        "../../../../../outside/victim.gguf",
        "sub/../../victim.gguf",
        "/victim.gguf",
        "a\\..\\victim.gguf",
    ];
    for (i, name) in names.iter().enumerate() {
        hub.add_repo(&format!("org/n{i}"), COMMIT, &[(name, &model)]);
    }
    let hive = Hive::start(&opts(&hub), &state.0);
    let repos = (0..commits.len())
        .map(|i| format!("hf:org/c{i}"))
        .chain((0..names.len()).map(|i| format!("hf:org/n{i}")));
    for reference in repos {
        let r = hive.post("/v1/models/download", &json!({ "model_ref": reference }));
        assert_eq!(r.status, 202, "{reference}: {}", r.body);
        let events = hive.follow(r.json()["progress_url"].as_str().unwrap());
        let end = events.last().unwrap();
        assert_eq!(end["stage"], "error", "{reference}: {events:?}");
        let code = end["error"]["code"].as_str().unwrap();
        assert!(
            code == "DOWNLOAD_FAILED" || code == "MODEL_NOT_FOUND",
            "{reference}: {end}"
        );
        assert!(!end.to_string().contains(&absolute), "{end}");
    }
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        1,
        "nothing new outside"
    );
    assert!(hive.get("/v1/models").json()["models"]
        .as_array()
        .unwrap()
        .is_empty());

    // A catalogue row pointing outside (a database from an older rbee, or edited): DELETE
    // removes the row and keeps the file.
    hive.kill();
    {
        let mut cat = rbee_models::catalog::Catalog::open(&state.join("models.db")).unwrap();
        let row = rbee_models::catalog::model_for_file(
            "org--evil--victim".into(),
            "hf",
            format!("hf:org/evil/victim.gguf@{COMMIT}"),
            "victim.gguf".into(),
            victim.clone(),
            8,
            None,
        );
        cat.insert(&row).unwrap();
    }
    let hive = Hive::start(&opts(&hub), &state.0);
    let d = hive.call("DELETE", "/v1/models/org--evil--victim", None);
    assert_eq!(d.status, 200, "{}", d.body);
    assert_eq!(d.json()["file_deleted"], false, "{}", d.body);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
}

#[test]
fn damaged_databases_are_set_aside_and_rebuilt_from_the_files_and_the_hive_serves() {
    let Some(model) = model() else { return };
    let hub = hub_with(&model);
    let state = temp("hive-state");
    let hive = Hive::start(&opts(&hub), &state.0);
    let r = hive.post("/v1/models/download", &json!({"model_ref": "hf:org/smol"}));
    let done = hive.follow(r.json()["progress_url"].as_str().unwrap());
    assert_eq!(done.last().unwrap()["stage"], "complete", "{done:?}");
    hive.kill();
    // A worker binary kept from an earlier build (a copy of the real worker).
    let bin_dir = state.join("worker-bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let kept = bin_dir.join("llm-worker-rbee-cpu-0123456789ab");
    std::fs::copy(worker_binary(), &kept).unwrap();
    // Both databases overwritten with garbage, their write-ahead logs gone.
    for db in ["models.db", "workers.db"] {
        std::fs::write(state.join(db), vec![0x5a; 8192]).unwrap();
        for side in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(state.join(&format!("{db}{side}")));
        }
    }

    let hive = Hive::start(&opts(&hub), &state.0);
    assert_eq!(hive.get("/v1/health").status, 200);
    for db in ["models.db", "workers.db"] {
        let aside = std::fs::read_dir(&state.0).unwrap().flatten().any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{db}.corrupt-"))
        });
        assert!(aside, "{db} kept aside for inspection");
    }
    // The download is catalogued again from models_dir, and serves.
    let models = hive.get("/v1/models").json()["models"].clone();
    let m = &models[0];
    assert_eq!(m["repo"], "org/smol", "{models}");
    assert_eq!(m["status"], "ready", "{models}");
    assert_eq!(m["commit_sha"], COMMIT);
    let reference = m["reference"].as_str().unwrap().to_owned();
    let w = hive.ready_worker_ref(&reference);
    assert_eq!(hive.infer(&w, "Bees").status, 200);
    // The binary is listed again, not swept away as an orphan.
    assert!(kept.is_file(), "the kept binary is still there");
    let bins = hive.get("/v1/worker-binaries").json();
    assert!(
        bins["binaries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["binary_path"] == kept.to_str().unwrap()),
        "{bins}"
    );
}

#[test]
fn file_models_outside_the_model_dirs_get_the_answer_of_a_missing_file() {
    let Some(model) = model() else { return };
    let state = temp("hive-state");
    let allowed = state.join("models-here");
    std::fs::create_dir_all(&allowed).unwrap();
    let inside = allowed.join("m.Q4_1.gguf");
    if std::fs::hard_link(&model, &inside).is_err() {
        std::fs::copy(&model, &inside).unwrap();
    }
    // A link inside the allowed directory to the model outside it.
    std::os::unix::fs::symlink(&model, allowed.join("link.gguf")).unwrap();
    let home = state.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let log = state.join("hive.log");
    let opts = Opts {
        log: Some(log.clone()),
        extra: format!("model_dirs = [{:?}]\n", allowed.display().to_string()),
        // The hive's user's home is allowed too: make it one without models.
        env: vec![("HOME", home.display().to_string())],
        ..Opts::new("process")
    };
    let hive = Hive::start(&opts, &state.0);
    let outside = [
        "file:///etc/passwd".to_owned(),
        "file:///proc/self/environ".to_owned(),
        "file:///no/such/model.gguf".to_owned(),
        file_ref(&model),
        format!("file://{}/link.gguf", allowed.display()),
        format!("file://{}", allowed.display()),
    ];
    let mut messages = vec![];
    for reference in &outside {
        for path in ["/v1/models/download", "/v1/workers/spawn"] {
            let r = hive.post(path, &json!({ "model_ref": reference }));
            assert_eq!(
                r.error_code(),
                "MODEL_NOT_FOUND",
                "{path} {reference}: {}",
                r.body
            );
            assert!(!r.body.contains("root:"), "no file contents: {}", r.body);
            assert!(!r.body.contains("os error"), "no system error: {}", r.body);
            let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
            messages.push(message.replace(reference.as_str(), "REF"));
        }
    }
    messages.dedup();
    assert_eq!(messages.len(), 1, "one answer for all: {messages:?}");
    // `..` never gets that far: the reference itself is refused.
    let dots = format!("file://{}/../../{}", allowed.display(), model.display());
    let r = hive.post("/v1/models/download", &json!({ "model_ref": dots }));
    assert_eq!(r.error_code(), "INVALID_MODEL_REF", "{}", r.body);
    assert!(messages[0].contains("model_dirs"), "{}", messages[0]);
    // The operator's log says which it was; the client's answer does not.
    let log = std::fs::read_to_string(&log).unwrap();
    let line = |model: &str, why: &str| {
        log.lines()
            .any(|l| l.contains("file:// model refused") && l.contains(model) && l.contains(why))
    };
    assert!(
        line("/etc/passwd", "outside models_dir and model_dirs"),
        "{log}"
    );
    assert!(line("/no/such/model.gguf", "no such file"), "{log}");
    assert!(hive.workers().is_empty());
    // Inside: served.
    let w = hive.ready_worker_ref(&file_ref(&inside));
    assert_eq!(hive.infer(&w, "Bees").status, 200);
}
