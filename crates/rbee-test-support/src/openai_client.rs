//! The official `openai` Python package as the client of rbee's OpenAI-compatible routes:
//! the contract is what that client reads, not our own reading of OpenAI's reference.
//! `scripts/fetch-openai-client` installs the pinned version into a virtual environment in
//! the cache directory.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

/// The virtual environment's python: `$RBEE_TEST_OPENAI_PYTHON`, else the one
/// `scripts/fetch-openai-client` makes. `None` (after printing why the calling test skips,
/// or failing it under `RBEE_TEST_STRICT`) when it is not there.
pub fn python() -> Option<PathBuf> {
    let p = std::env::var_os("RBEE_TEST_OPENAI_PYTHON")
        .map(PathBuf::from)
        .or_else(|| Some(crate::model::cache_dir()?.join("venv-openai/bin/python")))
        .filter(|p| p.is_file());
    crate::skip_unless!(
        p.is_some(),
        "the openai Python client is missing: run scripts/fetch-openai-client"
    );
    p
}

/// Runs `script` with `python`; the script gets `BASE_URL` and `API_KEY` in its
/// environment, a client `c` built from them (no retries), and prints one JSON document
/// per line. Returns those documents; panics with the script's stderr if it failed.
pub fn run(python: &PathBuf, base_url: &str, api_key: &str, script: &str) -> Vec<Value> {
    let prelude = "import json, os, sys, openai\n\
        from openai import OpenAI\n\
        c = OpenAI(base_url=os.environ['BASE_URL'], api_key=os.environ['API_KEY'], max_retries=0, timeout=60)\n\
        def out(**kw):\n    print(json.dumps(kw), flush=True)\n";
    let mut child = Command::new(python)
        .arg("-")
        .env("BASE_URL", base_url)
        .env("API_KEY", api_key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{prelude}{script}").as_bytes())
        .expect("write the script");
    let out = child.wait_with_output().expect("python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the openai client script failed ({}):\n{}\n{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}
