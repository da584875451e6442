//! The hive with the systemd supervisor, against a private (cgroup-confined) user manager.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;

#[test]
fn a_spawned_worker_is_a_hardened_notify_unit_that_serves_and_stops_when_idle() {
    let Some((model, manager, state)) = setup() else {
        return;
    };
    let opts = Opts {
        idle_timeout: 4,
        ..Opts::systemd(&manager)
    };
    let hive = Hive::start(&opts, &state.0);

    let r = hive.spawn_model(&model);
    assert_eq!(r.status, 202, "{}", r.body);
    let w = r.json()["worker"].clone();
    assert_eq!(w["state"], "loading");
    let unit = w["unit"].as_str().unwrap().to_owned();
    assert!(unit.starts_with("rbee-worker@SmolLM2"), "{unit}");
    let id = w["id"].as_str().unwrap().to_owned();

    let w = hive.wait_state(&id, "idle", Duration::from_secs(60));
    let (ok, status) = manager.systemctl(&["status", &unit]);
    assert!(ok, "{status}");
    assert!(status.contains("active (running)"), "{status}");
    assert!(
        status.contains("slots busy"),
        "the worker's STATUS line: {status}"
    );

    // Hardening and the unit's shape, read back from the manager over D-Bus.
    let (_, props) = manager.systemctl(&[
        "show",
        "-p",
        "Type,NotifyAccess,Slice,NoNewPrivileges,RestrictAddressFamilies,WatchdogUSec,MemoryMax,CollectMode,ExecStart,Environment",
        &unit,
    ]);
    for expected in [
        "Type=notify",
        "NotifyAccess=main",
        "Slice=rbee-workers.slice",
        "NoNewPrivileges=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "WatchdogUSec=30s",
        "CollectMode=inactive-or-failed",
    ] {
        assert!(props.contains(expected), "{expected} missing in:\n{props}");
    }
    // The key never shows in the unit, the command line or the environment.
    let key = hive.worker_key(&w);
    assert!(!props.contains(&key), "key visible in the unit:\n{props}");
    let pid = w["pid"].as_u64().expect("pid listed") as u32;
    for f in ["cmdline", "environ"] {
        let text = std::fs::read(format!("/proc/{pid}/{f}")).unwrap();
        assert!(
            !String::from_utf8_lossy(&text).contains(&key),
            "key visible in /proc/{pid}/{f}"
        );
    }

    // Inference through the worker, with its key; without, refused.
    let answer = hive.infer(&w, "Bees are");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(!answer.json()["text"].as_str().unwrap().is_empty());
    let anon = rbee_test_support::http::post_json(
        &format!("{}/v1/inference", w["url"].as_str().unwrap()),
        &json!({"prompt": "x"}),
    );
    assert_eq!(anon.status, 401);

    // Idle for 4 s: shut down gracefully, the unit is gone.
    let took = hive.wait_gone(&id, Duration::from_secs(20));
    assert!(
        took >= Duration::from_secs(1),
        "stopped too early: {took:?}"
    );
    let (active, out) = manager.systemctl(&["is-active", &unit]);
    assert!(!active, "unit still active: {out}");
    // Its log stays readable through the hive.
    let logs = hive.get(&format!("/v1/workers/{id}/logs?lines=50"));
    assert_eq!(logs.status, 200, "{}", logs.body);
    assert!(logs.body.contains("model loaded"), "{}", logs.body);
    assert!(logs.body.contains("draining"), "{}", logs.body);
}

#[test]
fn a_killed_worker_is_noticed_within_a_second_and_reported_on_the_next_spawn() {
    let Some((model, manager, state)) = setup() else {
        return;
    };
    let hive = Hive::start(&Opts::systemd(&manager), &state.0);
    let w = hive.ready_worker(&model);
    let id = w["id"].as_str().unwrap();
    let pid = w["pid"].as_u64().unwrap() as i32;

    // SAFETY: kill(2) on the worker the test's own manager runs.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let took = hive.wait_gone(id, Duration::from_secs(5));
    assert!(took < Duration::from_secs(1), "noticed after {took:?}");

    let r = hive.spawn_model(&model);
    assert_eq!(r.status, 202, "{}", r.body);
    let failure = &r.json()["previous_failure"];
    assert!(
        failure["exit"].as_str().unwrap().contains("signal 9"),
        "{failure}"
    );
    let lines = failure["last_log_lines"].as_array().unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.as_str().unwrap().contains("model loaded")),
        "{failure}"
    );
    // Reported once.
    let again = hive.spawn_model(&model).json();
    assert!(again.get("previous_failure").is_none(), "{again}");
    // The list of recent failures (the status page's) keeps it.
    let list = hive.get("/v1/workers/list").json();
    let recent = &list["failures"][0];
    assert_eq!(recent["model_ref"], file_ref(&model), "{list}");
    assert_eq!(recent["worker_id"], id, "{list}");
    assert!(
        recent["exit"].as_str().unwrap().contains("signal 9"),
        "{list}"
    );
}

#[test]
fn a_restarted_hive_adopts_the_running_worker_instead_of_restarting_it() {
    let Some((model, manager, state)) = setup() else {
        return;
    };
    let opts = Opts::systemd(&manager);
    let hive = Hive::start(&opts, &state.0);
    let w = hive.ready_worker(&model);
    let (id, unit, pid) = (
        w["id"].as_str().unwrap().to_owned(),
        w["unit"].as_str().unwrap().to_owned(),
        w["pid"].as_u64().unwrap(),
    );
    hive.kill();
    let (active, _) = manager.systemctl(&["is-active", &unit]);
    assert!(
        active,
        "the worker must outlive a killed hive under systemd"
    );

    let hive = Hive::start(&opts, &state.0);
    let adopted = hive.worker(&id).expect("adopted on start");
    assert_eq!(
        adopted["pid"].as_u64(),
        Some(pid),
        "same process: {adopted}"
    );
    assert_eq!(adopted["state"], "idle");
    assert_eq!(hive.infer(&adopted, "Hello").status, 200);
    let r = hive.spawn_model(&model);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["reused"], true);
    assert_eq!(r.json()["worker"]["pid"].as_u64(), Some(pid));
}

#[test]
fn sigterm_stops_every_worker_gracefully_and_the_hive_exits_0() {
    let Some((model, manager, state)) = setup() else {
        return;
    };
    // A second model file: a second worker.
    let copy = state.join("second-model.gguf");
    std::fs::copy(&model, &copy).unwrap();
    let mut hive = Hive::start(&Opts::systemd(&manager), &state.0);
    let a = hive.ready_worker(&model);
    let b = hive.ready_worker(&copy);
    assert_ne!(a["unit"], b["unit"]);

    let t0 = Instant::now();
    let status = hive
        .terminate(Duration::from_secs(40))
        .expect("the hive exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    for w in [&a, &b] {
        let unit = w["unit"].as_str().unwrap();
        let (active, _) = manager.systemctl(&["is-active", unit]);
        assert!(!active, "{unit} still active");
        let log =
            std::fs::read_to_string(state.join(&format!("logs/{}.log", w["id"].as_str().unwrap())))
                .unwrap();
        // Drained and stopped by itself, not killed.
        assert!(log.contains("draining") && log.contains("stopped"), "{log}");
    }
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
}

#[test]
fn concurrent_spawns_of_one_model_start_one_unit() {
    let Some((model, manager, state)) = setup() else {
        return;
    };
    let hive = Hive::start(&Opts::systemd(&manager), &state.0);
    let replies: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..6)
            .map(|_| s.spawn(|| hive.spawn_model(&model)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let created = replies.iter().filter(|r| r.status == 202).count();
    let reused = replies.iter().filter(|r| r.status == 200).count();
    assert_eq!((created, reused), (1, 5), "{replies:?}");
    let ids: std::collections::BTreeSet<_> = replies
        .iter()
        .map(|r| r.json()["worker"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 1);
    let (_, units) = manager.systemctl(&["list-units", "--plain", "--no-legend", "rbee-worker@*"]);
    assert_eq!(units.lines().count(), 1, "{units}");
}

#[test]
fn hostile_model_names_get_safe_unit_names_or_clear_errors() {
    let Some((model, manager, state)) = setup() else {
        return;
    };
    let hive = Hive::start(&Opts::systemd(&manager), &state.0);

    // Spaces, @, quotes, $() and a very long name: a valid, bounded unit name.
    let dir = temp("hostile");
    let long = format!("{}.gguf", "x@ y".repeat(60));
    for name in ["bad @name;$(rm -rf x) 'q'.gguf", long.as_str()] {
        let link = dir.join(name);
        std::os::unix::fs::symlink(&model, &link).unwrap();
        let r = hive.spawn_model(&link);
        assert_eq!(r.status, 202, "{name}: {}", r.body);
        let w = r.json()["worker"].clone();
        let unit = w["unit"].as_str().unwrap();
        assert!(unit.len() <= 255, "{unit}");
        assert!(
            unit.starts_with("rbee-worker@bad\\x20\\x40name")
                || unit.starts_with("rbee-worker@x\\x40"),
            "{unit}"
        );
        let id = w["id"].as_str().unwrap();
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)),
            "{id}"
        );
        hive.wait_state(id, "idle", Duration::from_secs(60));
        let (ok, status) = manager.systemctl(&["status", unit]);
        assert!(ok, "{status}");
        assert_eq!(
            hive.post(&format!("/v1/workers/{id}/shutdown"), &json!({}))
                .status,
            200
        );
    }
    // Traversal, control characters, over-long references: refused, nothing started.
    let too_long = format!("file:///{}", "a/".repeat(2100));
    for (reference, code) in [
        ("file:///tmp/../etc/passwd", "INVALID_MODEL_REF"),
        ("file:///tmp/x\n.gguf", "INVALID_MODEL_REF"),
        ("../../etc/passwd", "INVALID_MODEL_REF"),
        (too_long.as_str(), "INVALID_MODEL_REF"),
        ("file:///tmp/rbee-no-such-model.gguf", "MODEL_NOT_FOUND"),
    ] {
        let r = hive.post("/v1/workers/spawn", &json!({ "model_ref": reference }));
        assert_eq!(r.error_code(), code, "{reference:?}: {}", r.body);
    }
    assert!(hive.workers().is_empty());
}

#[test]
fn a_worker_that_cannot_bind_its_port_is_moved_to_the_next_one() {
    let Some((model, manager, state)) = setup() else {
        return;
    };
    // A worker binary that, like the real one, exits with status 3 (port in use) on the
    // first port it is given — the hive's bind probe cannot see a race it loses.
    let marker = state.join("first-port-taken");
    let wrapper = script(
        &state,
        "worker-wrapper.sh",
        &format!(
            "if [ ! -e '{m}' ]; then : > '{m}'; exit 3; fi\nexec '{w}' \"$@\"\n",
            m = marker.display(),
            w = worker_binary().display()
        ),
    );
    let opts = Opts {
        worker_binary: wrapper,
        ..Opts::systemd(&manager)
    };
    let hive = Hive::start(&opts, &state.0);
    let r = hive.post(
        "/v1/workers/spawn",
        &json!({ "model_ref": file_ref(&model), "ctx_size": 256 }),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let first_url = r.json()["worker"]["url"].as_str().unwrap().to_owned();
    let id = r.json()["worker"]["id"].as_str().unwrap().to_owned();
    let w = hive.wait_state(&id, "idle", Duration::from_secs(60));
    assert_ne!(
        w["url"].as_str().unwrap(),
        first_url,
        "moved to another port"
    );
    assert_eq!(hive.infer(&w, "Hi").status, 200);
    // The worker on the new port is the one asked for, context size included.
    let info = rbee_test_support::http::send(
        "GET",
        &format!("{}/v1/info", w["url"].as_str().unwrap()),
        Some(&hive.worker_key(&w)),
        None,
    );
    assert_eq!(info.json()["ctx_size"], 256, "{}", info.body);
}

#[test]
fn auto_picks_the_reachable_manager_and_falls_back_to_processes() {
    let Some((_model, manager, state)) = setup() else {
        return;
    };
    let with_bus = Hive::start(
        &Opts {
            supervisor: "auto",
            ..Opts::systemd(&manager)
        },
        &state.join("a"),
    );
    assert_eq!(
        with_bus.get("/v1/health").json()["supervisor"],
        "systemd-user"
    );
    let empty_runtime = temp("no-bus");
    let without = Hive::start(
        &Opts {
            supervisor: "auto",
            env: vec![
                (
                    "DBUS_SESSION_BUS_ADDRESS",
                    "unix:path=/nonexistent/rbee/bus".into(),
                ),
                (
                    "DBUS_SYSTEM_BUS_ADDRESS",
                    "unix:path=/nonexistent/rbee/system_bus".into(),
                ),
                ("XDG_RUNTIME_DIR", empty_runtime.0.display().to_string()),
            ],
            ..Opts::new("auto")
        },
        &state.join("b"),
    );
    assert_eq!(without.get("/v1/health").json()["supervisor"], "process");
}

#[test]
fn the_hive_is_a_notify_service_with_a_status_line_and_stops_its_workers_with_its_unit() {
    let Some((model, manager, state)) = setup() else {
        return;
    };
    let port = rbee_test_support::process::free_port();
    let ports = rbee_test_support::process::worker_ports(20, port);
    let config = state.join("hive.toml");
    std::fs::write(
        &config,
        format!(
            "port = {port}\nstate_dir = {:?}\nsupervisor = \"systemd-user\"\nworker_binary = {:?}\nworker_ports = \"{ports}-{}\"\n",
            state.0.display().to_string(),
            worker_binary().display().to_string(),
            ports + 20
        ),
    )
    .unwrap();
    // systemd-run waits for the start job: with Type=notify, that is READY=1.
    let hive_bin = env!("CARGO_BIN_EXE_rbee-hive");
    let (ok, out) = manager.systemd_run(&[
        "--unit=rbee-hive-test",
        "-p",
        "Type=notify",
        "-p",
        "WatchdogSec=10",
        hive_bin,
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    let (_, status) = manager.systemctl(&["status", "rbee-hive-test"]);
    assert!(status.contains("active (running)"), "{status}");
    assert!(status.contains("Status: \"0 workers\""), "{status}");
    let url = format!("http://127.0.0.1:{port}");
    let r = rbee_test_support::http::post_json(
        &format!("{url}/v1/workers/spawn"),
        &json!({ "model_ref": file_ref(&model) }),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let unit = r.json()["worker"]["unit"].as_str().unwrap().to_owned();
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, status) = manager.systemctl(&["status", "rbee-hive-test"]);
        if status.contains("1 worker: 1 idle") {
            break;
        }
        assert!(Instant::now() < until, "{status}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (ok, out) = manager.systemctl(&["stop", "rbee-hive-test"]);
    assert!(ok, "{out}");
    let (active, _) = manager.systemctl(&["is-active", &unit]);
    assert!(!active, "the worker stops with the hive");
}

#[test]
fn a_worker_that_stops_answering_is_marked_unhealthy_then_stopped() {
    let Some((model, manager, state)) = setup() else {
        return;
    };
    let hive = Hive::start(&Opts::systemd(&manager), &state.0);
    let w = hive.ready_worker(&model);
    let (id, unit) = (w["id"].as_str().unwrap(), w["unit"].as_str().unwrap());
    // Frozen, not dead: systemd still sees it running; only the health checks can tell.
    // SAFETY: kill(2) on the worker the test's own manager runs.
    unsafe { libc::kill(w["pid"].as_u64().unwrap() as i32, libc::SIGSTOP) };
    let seen = hive.wait_state(id, "unhealthy", Duration::from_secs(15));
    assert_eq!(seen["id"], id);
    hive.wait_gone(id, Duration::from_secs(30));
    let (active, _) = manager.systemctl(&["is-active", unit]);
    assert!(!active, "the unhealthy worker's unit was stopped");
    let r = hive.spawn_model(&model);
    let exit = r.json()["previous_failure"]["exit"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(exit.contains("missed 3 health checks"), "{}", r.body);
}

#[test]
fn a_workers_memory_limit_leaves_room_for_the_kv_cache_of_its_slots() {
    let Some((model, manager, state)) = setup() else {
        return;
    };
    let hive = Hive::start(&Opts::systemd(&manager), &state.0);
    // 32 slots of 4096 tokens: 3 GB of KV cache for a 98 MB model.
    let r = hive.post(
        "/v1/workers/spawn",
        &json!({"model_ref": file_ref(&model), "slots": 32}),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.json()["worker"]["id"].as_str().unwrap().to_owned();
    let w = hive.wait_state(&id, "idle", Duration::from_secs(120));
    let unit = w["unit"].as_str().unwrap();
    let (_, max) = manager.systemctl(&["show", "-p", "MemoryMax", "--value", unit]);
    let max: u64 = max.trim().parse().expect("a byte count");
    let pid = w["pid"].as_u64().expect("pid listed");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM");
    assert!(
        peak_kib * 1024 > 2 << 30,
        "the cache is really allocated: {peak_kib} KiB"
    );
    assert!(
        max > peak_kib * 1024,
        "MemoryMax={max} is below what the worker uses ({peak_kib} KiB): the kernel would kill it"
    );
}

#[test]
fn a_worker_adopted_from_an_older_hives_record_gets_its_kv_cache_counted_and_room_for_it() {
    let Some((model, manager, state)) = setup() else {
        return;
    };
    let opts = Opts::systemd(&manager);
    let hive = Hive::start(&opts, &state.0);
    let r = hive.post(
        "/v1/workers/spawn",
        &json!({"model_ref": file_ref(&model), "slots": 4}),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.json()["worker"]["id"].as_str().unwrap().to_owned();
    let w = hive.wait_state(&id, "idle", Duration::from_secs(60));
    let unit = w["unit"].as_str().unwrap().to_owned();
    hive.kill();

    // What a hive from before 2026-12 left: no KV cache in the record, a memory limit
    // without room for it.
    let record = state.join(&format!("workers/{id}.json"));
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    let kv = 23_040u64 * 4096 * 4; // SmolLM2-135M: 23040 bytes a token; 4 slots of 4096
    assert_eq!(spec["kv_bytes"], kv, "{spec}");
    spec.as_object_mut().unwrap().remove("kv_bytes");
    std::fs::write(&record, serde_json::to_vec(&spec).unwrap()).unwrap();
    let model_bytes = std::fs::metadata(&model).unwrap().len();
    let old_max = 2 * model_bytes + (2 << 30);
    let (ok, out) = manager.systemctl(&[
        "set-property",
        "--runtime",
        &unit,
        &format!("MemoryMax={old_max}"),
    ]);
    assert!(ok, "{out}");

    let hive = Hive::start(&opts, &state.0);
    let adopted = hive.worker(&id).expect("adopted on start");
    assert_eq!(adopted["state"], "idle", "{adopted}");
    let (_, max) = manager.systemctl(&["show", "-p", "MemoryMax", "--value", &unit]);
    assert_eq!(
        max.trim().parse::<u64>().expect("a byte count"),
        old_max + kv,
        "the limit leaves room for the cache"
    );
    let spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    assert_eq!(spec["kv_bytes"], kv, "saved again: {spec}");
    assert_eq!(hive.infer(&adopted, "Hello").status, 200);
}
