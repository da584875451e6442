//! The hive's API: bad input, auth, preflight codes, and `check-config`.

use std::process::Command;
use std::time::Duration;

use rbee_test_support::http::{send, send_with};
use serde_json::json;

use crate::common::*;

fn hive_with(extra: &str, key: Option<&str>) -> Option<(Hive, rbee_test_support::model::TempDir)> {
    model()?;
    let state = temp("hive-state");
    let opts = Opts {
        extra: extra.to_owned(),
        key: key.map(str::to_owned),
        ..Opts::new("process")
    };
    Some((Hive::start(&opts, &state.0), state))
}

#[test]
fn health_backends_and_resources_describe_the_node() {
    let Some((hive, _state)) = hive_with("", None) else {
        return;
    };
    let h = hive.get("/v1/health").json();
    assert_eq!(h["status"], "alive");
    assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(h["api_version"], "v1");
    let b = hive.get("/v1/backends").json();
    let cpu = &b["backends"][0];
    assert_eq!(
        (cpu["name"].as_str(), cpu["available"].as_bool()),
        (Some("cpu"), Some(true))
    );
    assert!(cpu["devices"][0]["memory_total_bytes"].as_u64().unwrap() > 0);
    let cuda = b["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "cuda")
        .unwrap();
    if cuda["available"] == false {
        assert!(
            cuda["reason"].as_str().unwrap().contains("NVIDIA"),
            "{cuda}"
        );
    } else {
        assert!(
            cuda["devices"][0]["memory_free_bytes"].as_u64().unwrap() > 0,
            "{cuda}"
        );
    }
    let r = hive.get("/v1/resources").json();
    assert!(r["memory"]["available_bytes"].as_u64().unwrap() > 0, "{r}");
    assert!(
        r["disk"]["space"]["available_bytes"].as_u64().unwrap() > 0,
        "{r}"
    );
    assert_eq!(
        hive.get("/v1/workers/list").json(),
        json!({"workers": [], "failures": []})
    );
}

#[test]
fn bad_requests_get_distinct_codes_and_start_nothing() {
    let Some(model) = model() else { return };
    let Some((hive, state)) = hive_with("", None) else {
        return;
    };
    let not_gguf = state.join("not-a-model.gguf");
    std::fs::write(&not_gguf, b"GGUF but not really").unwrap();
    let good = file_ref(&model);
    let cases = [
        (
            send(
                "POST",
                &format!("{}/v1/workers/spawn", hive.url),
                None,
                Some(b"{not json"),
            ),
            400,
            "INVALID_JSON",
        ),
        (
            send(
                "POST",
                &format!("{}/v1/workers/spawn", hive.url),
                None,
                Some(&[0xff, 0xfe][..]),
            ),
            400,
            "INVALID_UTF8",
        ),
        (
            hive.post("/v1/workers/spawn", &json!({})),
            400,
            "INVALID_JSON",
        ),
        (
            hive.post(
                "/v1/workers/spawn",
                &json!({"model_ref": good, "colour": "blue"}),
            ),
            400,
            "UNKNOWN_FIELD",
        ),
        (
            hive.post("/v1/workers/spawn", &json!({"model_ref": good, "slots": 0})),
            400,
            "INVALID_REQUEST",
        ),
        (
            hive.post(
                "/v1/workers/spawn",
                &json!({"model_ref": good, "slots": 65}),
            ),
            400,
            "INVALID_REQUEST",
        ),
        (
            hive.post(
                "/v1/workers/spawn",
                &json!({"model_ref": good, "device": -1}),
            ),
            400,
            "INVALID_JSON",
        ),
        (
            hive.post("/v1/workers/spawn", &json!({"model_ref": "smol.gguf"})),
            400,
            "INVALID_MODEL_REF",
        ),
        (
            hive.post(
                "/v1/workers/spawn",
                &json!({"model_ref": file_ref(&not_gguf)}),
            ),
            400,
            "MODEL_INVALID",
        ),
        (
            send(
                "POST",
                &format!("{}/v1/workers/spawn", hive.url),
                None,
                Some(&vec![b' '; 70_000]),
            ),
            413,
            "BODY_TOO_LARGE",
        ),
        (hive.get("/v1/nope"), 404, "NOT_FOUND"),
        (hive.get("/v1/workers/spawn"), 405, "METHOD_NOT_ALLOWED"),
        (
            hive.post("/v1/workers/nobody/shutdown", &json!({})),
            404,
            "WORKER_NOT_FOUND",
        ),
        (hive.get("/v1/workers/nobody"), 404, "WORKER_NOT_FOUND"),
        (hive.get("/v1/workers/nobody/logs"), 404, "WORKER_NOT_FOUND"),
        (
            hive.get("/v1/workers/..%2f..%2fetc/logs"),
            404,
            "WORKER_NOT_FOUND",
        ),
        (
            hive.post(
                "/v1/workers/ready",
                &json!({"worker_id": "nobody", "url": "http://x", "backend": "cpu", "device": 0}),
            ),
            404,
            "WORKER_NOT_FOUND",
        ),
    ];
    for (i, (reply, status, code)) in cases.iter().enumerate() {
        assert_eq!(
            (reply.status, reply.error_code().as_str()),
            (*status, *code),
            "case {i}: {}",
            reply.body
        );
        assert!(!reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .is_empty());
    }
    assert!(hive.workers().is_empty());
}

#[test]
fn an_api_key_guards_everything_but_health() {
    let Some((hive, _state)) = hive_with("", Some("hive-secret")) else {
        return;
    };
    let url = |p: &str| format!("{}{p}", hive.url);
    assert_eq!(send("GET", &url("/v1/health"), None, None).status, 200);
    for path in ["/v1/workers/list", "/v1/backends", "/v1/resources"] {
        let r = send("GET", &url(path), None, None);
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (401, "MISSING_API_KEY"),
            "{path}"
        );
        let r = send("GET", &url(path), Some("wrong"), None);
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (401, "INVALID_API_KEY"),
            "{path}"
        );
        assert_eq!(
            send("GET", &url(path), Some("hive-secret"), None).status,
            200,
            "{path}"
        );
    }
    let r = send("POST", &url("/v1/workers/spawn"), None, Some(b"{}"));
    assert_eq!(r.status, 401);
    // The scheme is case-insensitive (RFC 9110).
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let auth = format!("{scheme} hive-secret");
        let r = send_with(
            "GET",
            &url("/v1/workers/list"),
            &[("Authorization", &auth)],
            None,
        );
        assert_eq!(r.status, 200, "{scheme}: {}", r.body);
    }
    let r = send_with(
        "GET",
        &url("/v1/workers/list"),
        &[("Authorization", "Basic hive-secret")],
        None,
    );
    assert_eq!(r.status, 401, "{}", r.body);
}

#[test]
fn a_full_disk_at_spawn_is_insufficient_disk_not_internal() {
    let Some(model) = model() else { return };
    let state = temp("hive-state");
    let Some(_disk) = rbee_test_support::disk::SmallDisk::mount(&state.join("full"), 4 << 20)
    else {
        return;
    };
    let opts = Opts {
        extra: "[limits]\nmin_free_disk_bytes = 0\n".into(),
        ..Opts::new("process")
    };
    let hive = Hive::start(&opts, &state.join("full"));
    // Fill what is left of the disk.
    let filler = state.join("full/filler");
    let _ = std::fs::write(&filler, vec![0u8; 8 << 20]);
    let r = hive.spawn_model(&model);
    assert_eq!(r.error_code(), "INSUFFICIENT_DISK", "{}", r.body);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("free some space"));
    assert!(
        !r.body.contains(&state.0.display().to_string()),
        "no path: {}",
        r.body
    );
    std::fs::remove_file(&filler).unwrap();
    let r = hive.spawn_model(&model);
    assert_eq!(r.status, 202, "with room again: {}", r.body);
}

#[test]
fn preflight_failures_have_distinct_codes_with_numbers() {
    let Some(model) = model() else { return };
    let size = std::fs::metadata(&model).unwrap().len();
    let Some((low_ram, _s1)) = hive_with("[limits]\nram_bytes = 1000\n", None) else {
        return;
    };
    let r = low_ram.spawn_model(&model);
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (507, "INSUFFICIENT_RAM"),
        "{}",
        r.body
    );
    let d = &r.json()["error"]["details"];
    assert_eq!(d["available_bytes"], 1000);
    assert_eq!(d["model_bytes"], size);
    assert!(d["required_bytes"].as_u64().unwrap() >= size * 6 / 5, "{d}");
    assert!(
        r.body.contains("smaller quantization"),
        "a suggestion: {}",
        r.body
    );

    let Some((no_disk, _s2)) =
        hive_with("[limits]\nmin_free_disk_bytes = 1000000000000000\n", None)
    else {
        return;
    };
    let r = no_disk.spawn_model(&model);
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (507, "INSUFFICIENT_DISK"),
        "{}",
        r.body
    );
    assert!(r.json()["error"]["details"]["available_bytes"]
        .as_u64()
        .is_some());

    let Some((hive, _s3)) = hive_with("[limits]\nvram_bytes = 1000\n", None) else {
        return;
    };
    let m = file_ref(&model);
    let r = hive.post("/v1/workers/spawn", &json!({"model_ref": m, "device": 3}));
    assert_eq!(r.error_code(), "DEVICE_NOT_FOUND", "{}", r.body);
    assert_eq!(r.json()["error"]["details"]["valid_devices"], json!([0]));
    let r = hive.post(
        "/v1/workers/spawn",
        &json!({"model_ref": m, "backend": "rocm"}),
    );
    assert_eq!(r.error_code(), "BACKEND_UNAVAILABLE", "{}", r.body);
    assert!(r.json()["error"]["details"]["available"]
        .as_array()
        .unwrap()
        .contains(&json!("cpu")));
    let r = hive.post(
        "/v1/workers/spawn",
        &json!({"model_ref": m, "backend": "cuda"}),
    );
    if hive.get("/v1/backends").body.contains("\"name\":\"cuda\"")
        && r.error_code() != "BACKEND_UNAVAILABLE"
    {
        // A GPU machine: the 1000-byte VRAM limit fails fast instead.
        assert_eq!(r.error_code(), "INSUFFICIENT_VRAM", "{}", r.body);
    } else {
        assert!(r.body.contains("available: cpu"), "{}", r.body);
    }
    for h in [&low_ram, &no_disk, &hive] {
        assert!(h.workers().is_empty(), "nothing started");
    }
}

#[test]
fn check_config_validates_a_file_and_says_why_not() {
    let dir = temp("check-config");
    let run = |text: &str| {
        let f = dir.join("hive.toml");
        std::fs::write(&f, text).unwrap();
        Command::new(env!("CARGO_BIN_EXE_rbee-hive"))
            .arg("check-config")
            .arg(&f)
            .output()
            .unwrap()
    };
    let ok = run("port = 9200\nidle_timeout_secs = 60\n[limits]\nram_bytes = 1\n");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    for (text, says) in [
        ("prot = 9200", "unknown field `prot`"),
        ("worker_ports = \"9300-9200\"", "invalid port range"),
        ("port = 9300", "contains the hive's own port"),
        ("supervisor = \"docker\"", "unknown variant"),
    ] {
        let out = run(text);
        assert_eq!(out.status.code(), Some(2), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{text}: {err}");
    }
    let missing = Command::new(env!("CARGO_BIN_EXE_rbee-hive"))
        .args(["check-config", "/nonexistent/rbee/hive.toml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read"));
}

#[test]
fn a_read_only_state_dir_stops_the_start_naming_the_directory_and_what_to_do() {
    if model().is_none() {
        return;
    }
    let dir = temp("ro-state");
    let Some(disk) = rbee_test_support::disk::SmallDisk::mount(&dir.join("disk"), 1 << 20) else {
        return;
    };
    // Once with a state directory that is yet to be made, once with one made before.
    std::fs::create_dir_all(disk.0.join("made/workers")).unwrap();
    std::fs::create_dir_all(disk.0.join("made/logs")).unwrap();
    disk.read_only();
    for state in [disk.0.join("new"), disk.0.join("made")] {
        let out = Command::new(env!("CARGO_BIN_EXE_rbee-hive"))
            .args([
                "--supervisor",
                "process",
                "--port",
                &rbee_test_support::process::free_port().to_string(),
            ])
            .arg("--state-dir")
            .arg(&state)
            .arg("--worker-binary")
            .arg(worker_binary())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(&state.display().to_string()), "{err}");
        assert!(err.contains("Read-only file system"), "{err}");
        assert!(err.contains("--state-dir"), "the next step: {err}");
    }
}

#[test]
fn a_missing_worker_binary_or_key_file_is_a_configuration_error_exit_2() {
    let dir = temp("misconfigured");
    let empty_key = dir.join("empty.key");
    std::fs::write(&empty_key, "\n").unwrap();
    let cases: [(&str, &std::path::Path, &str); 3] = [
        (
            "--worker-binary",
            std::path::Path::new("/nonexistent/llm-worker-rbee"),
            "/nonexistent/llm-worker-rbee",
        ),
        (
            "--api-key-file",
            std::path::Path::new("/nonexistent/hive.key"),
            "/nonexistent/hive.key",
        ),
        ("--api-key-file", &empty_key, "empty"),
    ];
    for (flag, path, named) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_rbee-hive"))
            .args(["--supervisor", "process", "--port"])
            .arg(rbee_test_support::process::free_port().to_string())
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg(flag)
            .arg(path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(rbee_types::exit::USAGE),
            "{flag}: {err}"
        );
        assert!(err.contains(named), "{flag}: {err}");
    }
}

#[test]
fn a_second_hive_on_the_same_port_exits_with_port_in_use() {
    let Some((hive, state)) = hive_with("", None) else {
        return;
    };
    let out = Command::new(env!("CARGO_BIN_EXE_rbee-hive"))
        .args(["--supervisor", "process", "--port", &hive.port.to_string()])
        .arg("--state-dir")
        .arg(state.join("second"))
        .arg("--worker-binary")
        .arg(worker_binary())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(rbee_types::exit::PORT_IN_USE));
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"));
}

#[test]
fn rebound_host_names_and_cross_site_pages_are_refused() {
    let Some((hive, _state)) = hive_with("allowed_hosts = [\"rbee.lan\"]\n", None) else {
        return;
    };
    let url = |p: &str| format!("{}{p}", hive.url);
    let download = br#"{"model_ref": "hf:org/smol"}"#;
    let refused = |r: rbee_test_support::http::Reply, what: &str| {
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (403, "FORBIDDEN"),
            "{what}: {}",
            r.body
        );
    };
    // DNS rebinding: a page's own name pointed at 127.0.0.1.
    for path in ["/v1/workers/list", "/v1/models", "/v1/health"] {
        let r = send_with(
            "GET",
            &url(path),
            &[("Host", "attacker.example:9200")],
            None,
        );
        refused(r, path);
    }
    let r = send_with(
        "POST",
        &url("/v1/chat/completions"),
        &[("Host", "attacker.example")],
        Some(br#"{"model": "x", "messages": []}"#),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(
        r.json()["error"]["type"],
        "permission_error",
        "OpenAI's shape: {}",
        r.body
    );
    // A text/plain POST from a foreign page (browsers send it without a preflight).
    let r = send_with(
        "POST",
        &url("/v1/models/download"),
        &[
            ("Content-Type", "text/plain"),
            ("Origin", "https://evil.example"),
        ],
        Some(download),
    );
    refused(r, "text/plain from a foreign origin");
    let r = send_with(
        "POST",
        &url("/v1/models/download"),
        &[
            ("Content-Type", "text/plain"),
            ("Sec-Fetch-Site", "cross-site"),
        ],
        Some(download),
    );
    refused(r, "cross-site without an Origin");
    let r = send_with("DELETE", &url("/v1/models/x"), &[("Origin", "null")], None);
    refused(r, "a sandboxed page");
    // Nothing was started by any of them.
    assert!(hive.get("/v1/models").json()["models"]
        .as_array()
        .unwrap()
        .is_empty());
    let p = send(
        "GET",
        &url("/v1/models/download/progress?id=dl-1"),
        None,
        None,
    );
    assert_eq!(p.status, 404, "no download began: {}", p.body);

    // What stays fine: names of this machine, its own pages, clients without an Origin.
    for host in [
        "localhost:9200",
        "127.0.0.1",
        "[::1]:9200",
        "rbee.lan",
        "ui.localhost",
    ] {
        let r = send_with("GET", &url("/v1/workers/list"), &[("Host", host)], None);
        assert_eq!(r.status, 200, "{host}: {}", r.body);
    }
    let own = hive.url.trim_start_matches("http://").to_owned();
    let r = send_with(
        "DELETE",
        &url("/v1/models/nope"),
        &[("Origin", &format!("http://{own}"))],
        None,
    );
    assert_eq!(
        r.error_code(),
        "MODEL_NOT_FOUND",
        "the hive's own page: {}",
        r.body
    );
    let r = send_with("DELETE", &url("/v1/models/nope"), &[], None);
    assert_eq!(r.error_code(), "MODEL_NOT_FOUND", "curl: {}", r.body);
}

#[test]
fn the_kv_cache_of_many_slots_counts_against_the_ram_budget() {
    let Some(model) = model() else { return };
    // 1 GiB for workers: the 98 MB model with one slot's cache (4096 tokens, 94 MB) fits;
    // with 64 slots the cache alone is 6 GB.
    let Some((hive, _state)) = hive_with("[limits]\nram_bytes = 1073741824\n", None) else {
        return;
    };
    let m = file_ref(&model);
    let r = hive.post("/v1/workers/spawn", &json!({"model_ref": m, "slots": 64}));
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (507, "INSUFFICIENT_RAM"),
        "{}",
        r.body
    );
    let e = &r.json()["error"];
    // SmolLM2-135M keeps 23040 bytes a token (30 layers, 3 KV heads of 64, F16).
    assert_eq!(e["details"]["kv_cache_bytes"], 23_040u64 * 4096 * 64, "{e}");
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains("of KV cache for 64 slots of 4096 tokens")
            && msg.contains("fewer slots or a smaller ctx_size"),
        "{msg}"
    );
    // A context beyond what a worker takes is a bad request, named.
    let r = hive.post(
        "/v1/workers/spawn",
        &json!({"model_ref": m, "ctx_size": 2_000_000}),
    );
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "INVALID_REQUEST")
    );
    assert_eq!(
        r.json()["error"]["details"]["field"],
        "ctx_size",
        "{}",
        r.body
    );
    // With a smaller context per slot the same 64 slots fit.
    let r = hive.post(
        "/v1/workers/spawn",
        &json!({"model_ref": m, "slots": 64, "ctx_size": 128}),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.json()["worker"]["id"].as_str().unwrap().to_owned();
    hive.wait_state(&id, "idle", Duration::from_secs(60));
    // A running worker of the model is reused, but a bad size is still a bad request.
    for (bad, field) in [
        (json!({"model_ref": m, "slots": 0}), "slots"),
        (json!({"model_ref": m, "slots": 100}), "slots"),
        (json!({"model_ref": m, "ctx_size": 8}), "ctx_size"),
    ] {
        let r = hive.post("/v1/workers/spawn", &bad);
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (400, "INVALID_REQUEST"),
            "{bad}: {}",
            r.body
        );
        assert_eq!(r.json()["error"]["details"]["field"], field);
    }
    let r = hive.post("/v1/workers/spawn", &json!({"model_ref": m}));
    assert_eq!((r.status, r.json()["reused"].as_bool()), (200, Some(true)));
}
