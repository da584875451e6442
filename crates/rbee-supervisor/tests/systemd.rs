//! The supervisor against a real systemd user manager (private, cgroup-confined) running
//! the real worker on the real model.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rbee_supervisor::properties::{ManagerKind, WorkerUnit, WORKERS_SLICE};
use rbee_supervisor::systemd::{unit_object_path, Systemd, SystemdError};
use rbee_supervisor::unit_name::worker_unit;
use rbee_test_support::process::free_port;
use rbee_test_support::systemd::UserManager;
use zbus::zvariant::OwnedValue;

use rbee_test_support::model::worker_binary;

struct Env {
    manager: UserManager,
    systemd: Systemd,
    model: PathBuf,
}

/// A private manager and a client, or `None` after printing why the test skips.
async fn env() -> Option<Env> {
    let model = rbee_test_support::model::model_and_worker()?;
    let manager = rbee_test_support::systemd::user_manager_or_skip()?;
    let systemd = Systemd::connect_address(&manager.bus_address(), ManagerKind::User)
        .await
        .expect("connect to the private manager");
    Some(Env {
        manager,
        systemd,
        model,
    })
}

fn unit_for(model: &std::path::Path, model_id: &str, port: u16) -> WorkerUnit {
    WorkerUnit {
        name: worker_unit(model_id, 0),
        description: format!("rbee worker for {model_id}"),
        binary: worker_binary(),
        args: vec![
            "--model".into(),
            model.display().to_string(),
            "--port".into(),
            port.to_string(),
            // The worker parses its reference (a bad one is a usage error, exit 2): the
            // model's own file reference; the hostile id goes into the unit name only.
            "--model-ref".into(),
            format!("file://{}", model.display()),
        ],
        model_path: model.to_path_buf(),
        environment: vec!["RBEE_LOG=info".into()],
        memory_max: Some(2 << 30),
        watchdog_usec: 30_000_000,
        stop_timeout_usec: 20_000_000,
        devices: vec![],
        log_file: None,
        credentials: vec![],
    }
}

/// Starts the unit and waits until the worker is ready.
async fn start_ready(env: &Env, unit: &WorkerUnit) {
    let job = env.systemd.start(unit).await.expect("StartTransientUnit");
    job.wait(&env.systemd, Duration::from_secs(60))
        .await
        .expect("start job done (READY=1)");
}

fn u64_of(v: &OwnedValue) -> u64 {
    u64::try_from(v).unwrap_or_else(|e| panic!("{v:?}: {e}"))
}

fn str_of(v: &OwnedValue) -> String {
    <&str>::try_from(v)
        .map(str::to_owned)
        .unwrap_or_else(|e| panic!("{v:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_runs_as_a_notify_unit_that_is_active_only_once_loaded() {
    let Some(env) = env().await else { return };
    let port = free_port();
    let unit = unit_for(&env.model, "hf:test/smol:Q4_1", port);
    start_ready(&env, &unit).await;

    // Type=notify: "active" means the model is loaded, so the worker answers at once.
    let ready: serde_json::Value = ureq::get(&format!("http://127.0.0.1:{port}/v1/ready"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(ready["ready"], true, "{ready}");
    let state = env
        .systemd
        .state(&unit.name)
        .await
        .unwrap()
        .expect("unit known");
    assert_eq!(
        (state.active.as_str(), state.sub.as_str()),
        ("active", "running")
    );
    assert!(state.main_pid > 0);
    assert!(state.status_text.contains("slots busy"), "{state:?}");

    // What a person sees.
    let (ok, status) = env.manager.systemctl(&["status", "--no-pager", &unit.name]);
    assert!(ok, "{status}");
    assert!(
        status.contains("rbee-worker@hf:test-smol:Q4_1.service"),
        "{status}"
    );
    assert!(
        status.contains("Status: \"idle, 0/1 slots busy"),
        "{status}"
    );

    // Inference through the worker the unit runs.
    let answer: serde_json::Value = ureq::post(&format!("http://127.0.0.1:{port}/v1/inference"))
        .send_string(r#"{"prompt":"Bees make","max_tokens":4,"stream":false}"#)
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(answer["total_tokens"], 4, "{answer}");

    // The properties, read back from the manager.
    let props = env.systemd.service_properties(&unit.name).await.unwrap();
    assert_eq!(str_of(&props["Type"]), "notify");
    assert_eq!(str_of(&props["NotifyAccess"]), "main");
    assert_eq!(str_of(&props["Slice"]), WORKERS_SLICE);
    assert_eq!(u64_of(&props["TimeoutStopUSec"]), 20_000_000);
    assert_eq!(u64_of(&props["WatchdogUSec"]), 30_000_000);
    assert_eq!(u64_of(&props["MemoryMax"]), 2 << 30);
    let exec = format!("{:?}", props["ExecStart"]);
    assert!(
        exec.contains("--model-ref") && exec.contains("llm-worker-rbee"),
        "{exec}"
    );

    // A second start of the same name is refused by name, not by message text.
    match env.systemd.start(&unit).await {
        Err(SystemdError::UnitExists(name)) => assert_eq!(name, unit.name),
        Err(other) => panic!("expected UnitExists, got {other}"),
        Ok(_) => panic!("expected UnitExists, the unit started twice"),
    }
    assert_eq!(
        env.systemd.list_workers().await.unwrap(),
        vec![unit.name.clone()]
    );

    // Stop: graceful, then the unit is collected.
    env.systemd
        .stop(&unit.name, Duration::from_secs(30))
        .await
        .expect("stop job done");
    assert_eq!(env.systemd.state(&unit.name).await.unwrap(), None);
    assert!(env.systemd.list_workers().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_is_noticed_within_a_second() {
    let Some(env) = env().await else { return };
    let unit = unit_for(&env.model, "smol-kill", free_port());
    start_ready(&env, &unit).await;
    let watch = env.systemd.watch(&unit.name, true).await.unwrap();
    let pid = env
        .systemd
        .state(&unit.name)
        .await
        .unwrap()
        .unwrap()
        .main_pid;
    let t0 = Instant::now();
    // SAFETY: kill(2) on the worker's main PID, which the test's own manager started.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    let state = env
        .systemd
        .wait_active_state(
            &unit.name,
            &["failed", "inactive", "gone"],
            Duration::from_secs(1),
        )
        .await
        .expect("the manager reports the death within a second");
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert!(
        ["failed", "inactive", "gone"].contains(&state.as_str()),
        "{state}"
    );
    let exit = tokio::time::timeout(Duration::from_secs(1), watch.ended())
        .await
        .expect("the watch ends with the unit");
    assert_eq!((exit.code, exit.status), (2, libc::SIGKILL), "{exit:?}");
    assert_eq!(exit.result, "signal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_fails_while_loading_fails_its_start_job_with_its_exit_status() {
    let Some(env) = env().await else { return };
    let dir = rbee_test_support::model::TempDir::new("badmodel");
    let bad = dir.join("bad.gguf");
    std::fs::write(&bad, b"not a model").unwrap();
    let mut unit = unit_for(&bad, "bad-model", free_port());
    // Keep the failed unit around so its result can be read.
    unit.name = worker_unit("bad-model", 0);
    let watch = env.systemd.watch(&unit.name, false).await.unwrap();
    let err = env
        .systemd
        .start(&unit)
        .await
        .unwrap()
        .wait(&env.systemd, Duration::from_secs(30))
        .await
        .unwrap_err();
    match err {
        SystemdError::JobFailed { verb, result, .. } => {
            assert_eq!((verb, result.as_str()), ("start", "failed"))
        }
        other => panic!("expected a failed start job, got {other}"),
    }
    let exit = watch.ended().await;
    assert_eq!(exit.result, "exit-code", "{exit:?}");
    assert_eq!(
        (exit.code, exit.status),
        (1, rbee_types::exit::MODEL_INVALID),
        "{}",
        exit.describe()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_model_id_becomes_a_unit_name_systemd_accepts() {
    let Some(env) = env().await else { return };
    let hostile = format!("../../etc/passwd @x\n{}", "z".repeat(300));
    let unit = unit_for(&env.model, &hostile, free_port());
    assert!(unit.name.len() <= 255);
    start_ready(&env, &unit).await;
    let (ok, status) = env.manager.systemctl(&["is-active", &unit.name]);
    assert!(ok && status.trim() == "active", "{status}");
    // The object path computed before the start is the one systemd uses.
    let (_, path) = env
        .manager
        .systemctl(&["show", "-P", "ControlGroup", &unit.name]);
    assert!(!path.is_empty());
    let conn = zbus::connection::Builder::address(env.manager.bus_address().as_str())
        .unwrap()
        .build()
        .await
        .unwrap();
    let reply = conn
        .call_method(
            Some("org.freedesktop.systemd1"),
            "/org/freedesktop/systemd1",
            Some("org.freedesktop.systemd1.Manager"),
            "GetUnit",
            &(unit.name.as_str(),),
        )
        .await
        .unwrap();
    let got: zbus::zvariant::OwnedObjectPath = reply.body().deserialize().unwrap();
    assert_eq!(got.as_str(), unit_object_path(&unit.name));
    env.systemd
        .stop(&unit.name, Duration::from_secs(30))
        .await
        .unwrap();
}
