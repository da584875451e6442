//! The hive with the process supervisor (no systemd): the same behaviour where it can.

use std::time::{Duration, Instant};

use crate::common::*;

#[test]
fn a_process_worker_serves_and_stops_when_idle() {
    let Some(model) = model() else { return };
    let state = temp("hive-state");
    let opts = Opts {
        idle_timeout: 3,
        ..Opts::new("process")
    };
    let hive = Hive::start(&opts, &state.0);
    assert_eq!(hive.get("/v1/health").json()["supervisor"], "process");
    let t0 = Instant::now();
    let w = hive.ready_worker(&model);
    assert!(t0.elapsed() < Duration::from_secs(30));
    assert_eq!(w["supervisor"], "process");
    assert_eq!(hive.infer(&w, "Bees").status, 200);
    let pid = w["pid"].as_u64().unwrap() as u32;
    // Its own process group: a Ctrl+C at the hive's terminal does not reach it.
    // SAFETY: getpgid on a PID has no preconditions.
    assert_eq!(unsafe { libc::getpgid(pid as i32) }, pid as i32);
    hive.wait_gone(w["id"].as_str().unwrap(), Duration::from_secs(20));
    assert!(!alive(pid), "the idle worker's process ended");
}

#[test]
fn a_killed_process_worker_is_noticed_within_a_second() {
    let Some(model) = model() else { return };
    let state = temp("hive-state");
    let hive = Hive::start(&Opts::new("process"), &state.0);
    let w = hive.ready_worker(&model);
    // SAFETY: kill(2) on the worker the hive started for this test.
    unsafe { libc::kill(w["pid"].as_u64().unwrap() as i32, libc::SIGKILL) };
    let took = hive.wait_gone(w["id"].as_str().unwrap(), Duration::from_secs(5));
    assert!(took < Duration::from_secs(1), "{took:?}");
    let r = hive.spawn_model(&model);
    assert!(
        r.json()["previous_failure"]["exit"]
            .as_str()
            .unwrap()
            .contains("signal 9"),
        "{}",
        r.body
    );
}

#[test]
fn process_workers_die_with_a_killed_hive_and_are_not_adopted() {
    let Some(model) = model() else { return };
    let state = temp("hive-state");
    let opts = Opts::new("process");
    let hive = Hive::start(&opts, &state.0);
    let w = hive.ready_worker(&model);
    let pid = w["pid"].as_u64().unwrap() as u32;
    hive.kill();
    let until = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(pid), "worker {pid} outlived its killed hive");
    let hive = Hive::start(&opts, &state.0);
    assert!(hive.workers().is_empty());
    let records = std::fs::read_dir(state.join("workers")).unwrap().count();
    assert_eq!(records, 0, "stale records removed");
}

#[test]
fn sigterm_stops_process_workers_gracefully() {
    let Some(model) = model() else { return };
    let state = temp("hive-state");
    let mut hive = Hive::start(&Opts::new("process"), &state.0);
    let w = hive.ready_worker(&model);
    let pid = w["pid"].as_u64().unwrap() as u32;
    let status = hive.terminate(Duration::from_secs(30)).expect("exits");
    assert!(status.success(), "{status:?}");
    assert!(!alive(pid));
    let log =
        std::fs::read_to_string(state.join(&format!("logs/{}.log", w["id"].as_str().unwrap())))
            .unwrap();
    assert!(log.contains("draining") && log.contains("stopped"), "{log}");
}

#[test]
fn logs_follow_streams_lines_until_the_worker_is_gone() {
    let Some(model) = model() else { return };
    let state = temp("hive-state");
    let hive = Hive::start(&Opts::new("process"), &state.0);
    let w = hive.ready_worker(&model);
    let id = w["id"].as_str().unwrap().to_owned();
    let mut sse = rbee_test_support::http::Sse::get(&format!(
        "{}/v1/workers/{id}/logs?follow=true&lines=100",
        hive.url
    ))
    .unwrap_or_else(|r| panic!("{}", r.body));
    let first = sse.next_json().unwrap();
    assert!(first["line"].is_string(), "{first}");
    let stopper = std::thread::spawn({
        let (url, id) = (hive.url.clone(), id.clone());
        move || {
            std::thread::sleep(Duration::from_millis(300));
            rbee_test_support::http::post_json(
                &format!("{url}/v1/workers/{id}/shutdown"),
                &serde_json::json!({}),
            )
        }
    });
    let rest = sse.collect();
    let text: Vec<_> = rest.iter().filter_map(|e| e["line"].as_str()).collect();
    assert!(
        text.iter().any(|l| l.contains("stopped")),
        "the stream carries lines written after it opened, and ends: {text:?}"
    );
    assert_eq!(stopper.join().unwrap().status, 200);
}

#[test]
fn a_worker_that_fails_while_loading_is_reported_with_its_status_and_log() {
    let Some(model) = model() else { return };
    let state = temp("hive-state");
    let wrapper = script(
        &state,
        "failing-worker.sh",
        "echo 'error: could not load the model: out of memory' >&2\nexit 4\n",
    );
    let hive = Hive::start(
        &Opts {
            worker_binary: wrapper,
            ..Opts::new("process")
        },
        &state.0,
    );
    let r = hive.spawn_model(&model);
    assert_eq!(r.status, 202, "{}", r.body);
    hive.wait_gone(
        r.json()["worker"]["id"].as_str().unwrap(),
        Duration::from_secs(5),
    );
    // Counted as a failed model load.
    let metrics = hive.get("/metrics").body;
    assert!(
        metrics.contains("rbee_model_loads_total{result=\"failure\"} 1\n"),
        "{metrics}"
    );
    let failure = hive.spawn_model(&model).json()["previous_failure"].clone();
    assert_eq!(failure["exit"], "exited with status 4", "{failure}");
    assert_eq!(
        failure["last_log_lines"],
        serde_json::json!(["error: could not load the model: out of memory"])
    );
}

#[test]
fn a_worker_stuck_loading_is_stopped_after_the_load_timeout() {
    let Some(model) = model() else { return };
    let state = temp("hive-state");
    let wrapper = script(
        &state,
        "stuck-worker.sh",
        "echo 'loading forever' >&2\nexec sleep 600\n",
    );
    let hive = Hive::start(
        &Opts {
            worker_binary: wrapper,
            extra: "load_timeout_secs = 1\n".into(),
            ..Opts::new("process")
        },
        &state.0,
    );
    let r = hive.spawn_model(&model);
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.json()["worker"]["id"].as_str().unwrap().to_owned();
    let pid = r.json()["worker"]["pid"].as_u64().unwrap() as u32;
    hive.wait_gone(&id, Duration::from_secs(10));
    assert!(!alive(pid));
    let failure = hive.spawn_model(&model).json()["previous_failure"].clone();
    assert!(
        failure["exit"]
            .as_str()
            .unwrap()
            .contains("did not finish loading within 1 s"),
        "{failure}"
    );
}
