//! The hive's status page at `/`, loaded in headless Chromium (Debian's `chromium`, installed
//! by `scripts/setup`) as a person would open it: the page runs its script, calls the API
//! with the key and shows the node.

use std::path::{Path, PathBuf};
use std::process::Command;

use rbee_test_support::skip_unless;
use serde_json::json;

use crate::common::{file_ref, model, temp, Hive, Opts};

const KEY: &str = "status-page-key";

/// Where a test keeps what a person would look at (not committed: under `target/`).
fn artefacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artefacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Headless Chromium on `url` with `extra` arguments; its stdout. The page's timers run
/// on virtual time, so a few polls pass in well under a second.
fn chromium(url: &str, extra: &[&str]) -> Option<String> {
    let profile = temp("chromium-profile");
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=6000",
        ])
        .arg(format!("--user-data-dir={}", profile.0.display()))
        .args(extra)
        .arg(url)
        .output();
    skip_unless!(
        out.is_ok(),
        "chromium is not installed (Debian: apt-get install chromium)"
    );
    let out = out.ok()?;
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn the_status_page_shows_the_node_in_a_real_browser_and_asks_for_the_key() {
    let Some(model) = model() else { return };
    let state = temp("status-page");
    let opts = Opts {
        key: Some(KEY.into()),
        ..Opts::new("process")
    };
    let hive = Hive::start(&opts, &state.0);
    let w = hive.ready_worker(&model);
    let id = w["id"].as_str().unwrap().to_owned();
    let chat = json!({"model": file_ref(&model), "max_tokens": 8,
                      "messages": [{"role": "user", "content": "Bees"}]});
    assert_eq!(hive.post("/v1/chat/completions", &chat).status, 200);

    // The page itself is public and holds no data; it is one self-contained document.
    let page = rbee_test_support::http::get(&format!("{}/", hive.url));
    assert_eq!(page.status, 200);
    assert_eq!(
        page.content_type.as_deref(),
        Some("text/html; charset=utf-8")
    );
    assert!(!page.body.contains("src=\"http"), "external assets");
    assert!(!page.body.contains(KEY));

    // With the key (passed in the address, moved into the tab's storage by the page).
    let Some(dom) = chromium(&format!("{}/#key={KEY}", hive.url), &["--dump-dom"]) else {
        return;
    };
    for expected in [
        id.as_str(),
        file_ref(&model).as_str(),
        "state-idle",
        "0 / 1",
        "tokens/s through the front door",
        "supervisor process",
    ] {
        assert!(
            dom.contains(expected),
            "{expected:?} not on the page:\n{dom}"
        );
    }
    // The memory column shows the worker's memory from /metrics, in MiB.
    assert!(dom.contains(" MiB<"), "no worker memory:\n{dom}");
    assert!(!dom.contains("API key needed</div>"), "{dom}");

    // A screenshot for people to look at, kept with the test artefacts.
    let shot = artefacts().join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        &format!("{}/#key={KEY}", hive.url),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,1000",
        ],
    );
    let png = std::fs::read(&shot).expect("the screenshot was written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );

    // Without the key the page asks for it and shows nothing of the node.
    let dom = chromium(&format!("{}/", hive.url), &["--dump-dom"]).unwrap();
    assert!(dom.contains("API key needed</div>"), "{dom}");
    assert!(
        dom.contains("id=\"keyform\" style=\"display: block;\""),
        "{dom}"
    );
    assert!(!dom.contains(&id), "{dom}");
}
