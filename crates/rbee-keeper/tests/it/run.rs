//! `rbee-keeper run MODEL [PROMPT]` end to end: a prompt as an argument or on stdin, a
//! model by reference, short id or alias, and an interactive chat through a terminal.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use rbee_test_support::pty::Pty;

use crate::common::{text, Env};

const PROMPT: &str = "Write a haiku about bees";

fn greedy<'a>(model: &'a str, prompt: Option<&'a str>) -> Vec<&'a str> {
    let mut args = vec!["run", model];
    args.extend(prompt);
    args.extend(["--max-tokens", "16", "--temperature", "0"]);
    args
}

#[test]
fn run_answers_a_prompt_from_its_argument_or_stdin_for_a_reference_a_short_id_or_an_alias() {
    let Some(mut env) = Env::new() else { return };
    env.hive = Some(env.hive_with(
        env.hive_port,
        "hive-state",
        "[aliases]\nbees = \"hf:org/smol\"\n",
    ));
    let out = env
        .keeper(&greedy("hf:org/smol", Some(PROMPT)))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let answer = text(&out.stdout);
    assert!(!answer.trim().is_empty());
    assert!(
        text(&out.stderr).contains("16 tokens in"),
        "{}",
        text(&out.stderr)
    );
    // The same model by the short id the hive lists, and by the config's alias.
    for name in ["smol:q4_1", "bees"] {
        let out = env.keeper(&greedy(name, Some(PROMPT))).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), answer, "{name}");
    }
    // The prompt from stdin (the newline `echo` adds is not part of it).
    let mut child = env
        .keeper(&greedy("smol:q4_1", None))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{PROMPT}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), answer);
    // --json: one document.
    let mut args = greedy("bees", Some(PROMPT));
    args.push("--json");
    let out = env.keeper(&args).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["text"].as_str().unwrap().trim(), answer.trim());
    // The alias stands for the catalogued file of hf:org/smol.
    assert_eq!(v["model_ref"], "hf:org/smol/smol.Q4_1.gguf");
    // A name the hive does not serve: the error says where to find the names.
    let out = env.keeper(&greedy("gpt-4", Some(PROMPT))).output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no model named \"gpt-4\" on localhost"),
        "{stderr}"
    );
    assert!(
        stderr.contains("rbee-keeper models list --node localhost"),
        "{stderr}"
    );
    // Empty stdin is an empty prompt, said before anything starts.
    let out = env
        .keeper(&greedy("bees", None))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("the prompt is empty"),
        "{}",
        text(&out.stderr)
    );
}

/// The `prompt N tokens` of each `--verbose` summary line.
fn prompt_tokens(stderr: &str) -> Vec<u64> {
    stderr
        .lines()
        .filter_map(|l| l.split("(prompt ").nth(1)?.split(' ').next()?.parse().ok())
        .collect()
}

#[test]
fn in_a_terminal_run_is_a_chat_that_keeps_the_conversation_until_bye() {
    let Some(mut env) = Env::new() else { return };
    env.start_hive();
    let model = env.file_ref();
    let mut cmd = env.keeper(&greedy(&model, None));
    cmd.arg("--verbose").stderr(Stdio::piped());
    let (child, mut pty) = Pty::spawn(&mut cmd);
    let long = Duration::from_secs(120);
    pty.wait_for(">>> ", 1, long);
    pty.type_line("My name is Ada. Say hello to me.");
    pty.wait_for(">>> ", 2, long);
    pty.type_line("What is my name?");
    pty.wait_for(">>> ", 3, long);
    pty.type_line("/clear");
    pty.wait_for(">>> ", 4, long);
    pty.type_line("What is my name?");
    pty.wait_for(">>> ", 5, long);
    pty.type_line("/bye");
    let out = child.wait_with_output().unwrap();
    let (screen, stderr) = (pty.screen(), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}\n{screen}");
    assert!(stderr.contains("/bye or Ctrl+D leaves"), "{stderr}");
    // Turn 2 carries turn 1 (its prompt is longer than turn 1's prompt and answer); after
    // /clear the same question is asked alone, so its prompt is much shorter.
    let p = prompt_tokens(&stderr);
    assert_eq!(p.len(), 3, "{stderr}");
    assert!(
        p[1] > p[0] + 10,
        "turn 2 did not carry turn 1: {p:?}\n{stderr}"
    );
    assert!(p[2] < p[1], "/clear did not forget: {p:?}");
    assert!(screen.contains("the conversation is forgotten"), "{screen}");

    // Ctrl+C during an answer stops that answer and the chat goes on; Ctrl+D at the
    // start of a line ends it.
    let mut args = greedy(&model, None);
    let at = args.iter().position(|a| *a == "16").unwrap();
    args[at] = "3000";
    let mut cmd = env.keeper(&args);
    cmd.stderr(Stdio::piped());
    let (mut child, mut pty) = Pty::spawn(&mut cmd);
    pty.wait_for(">>> ", 1, long);
    let before = pty.screen().len();
    pty.type_line("Write a long story about a bee named Ada.");
    let t0 = std::time::Instant::now();
    while pty.screen().len() < before + 120 {
        assert!(t0.elapsed() < long, "no answer:\n{}", pty.screen());
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: SIGINT (what Ctrl+C at its terminal sends) to the keeper this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    pty.wait_for(">>> ", 2, Duration::from_secs(5));
    pty.type_raw(b"\x04");
    let t0 = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "Ctrl+D did not end the chat"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("stopped"), "{stderr}");
}

#[test]
fn the_hive_shows_a_slot_busy_while_an_answer_streams_and_free_as_soon_as_it_ends() {
    let Some(mut env) = Env::new() else { return };
    // No health poll during the test: what the list shows comes from the request itself.
    env.hive = Some(env.hive_with(env.hive_port, "hive-state", "health_interval_secs = 600\n"));
    let model = env.file_ref();
    let mut args = greedy(&model, Some("Count from 1 to 1000, one number per line."));
    let at = args.iter().position(|a| *a == "16").unwrap();
    args[at] = "3000";
    let mut child = env
        .keeper(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = [0u8; 1];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
    let w = &env.workers()[0];
    assert_eq!(
        (w["slots_busy"].as_u64(), w["state"].as_str()),
        (Some(1), Some("busy")),
        "{w}"
    );
    // SAFETY: SIGINT to the keeper this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert_eq!(child.wait().unwrap().code(), Some(130));
    let t0 = std::time::Instant::now();
    loop {
        let w = &env.workers()[0];
        if w["slots_busy"] == 0 && w["state"] == "idle" {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(3), "still busy: {w}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_model_in_the_hugging_face_cache_is_used_in_place_without_asking_the_hub() {
    let Some(mut env) = Env::new() else { return };
    // huggingface_hub's layout: refs/main → a commit, snapshots/<commit>/file → blobs/<sha256>.
    let cache = env.dir.join("hf-hub");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let repo = cache.join("models--org--cached");
    let sha = rbee_test_support::hub::sha256_file(&env.model);
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join("snapshots").join(commit)).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    std::fs::copy(&env.model, repo.join("blobs").join(&sha)).unwrap();
    let file = repo.join("snapshots").join(commit).join("cached.Q4_1.gguf");
    std::os::unix::fs::symlink(format!("../../blobs/{sha}"), &file).unwrap();
    env.extra_env.push(("HF_HUB_CACHE".into(), cache.clone()));
    env.start_hive();
    let out = env
        .keeper(&greedy("hf:org/cached:Q4_1", Some(PROMPT)))
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!text(&out.stdout).trim().is_empty());
    let requests = env
        .hub
        .counters
        .requests
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(requests, 0, "the hub was asked");
    let out = env.keeper(&["models", "list", "--json"]).output().unwrap();
    let models: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        models[0]["local_path"],
        file.display().to_string(),
        "{models}"
    );
    assert_eq!(models[0]["hub_verified"], true);
    // Removed from the hive's catalogue, the cache keeps its file.
    let out = env
        .keeper(&["models", "rm", "cached:q4_1"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "its worker runs: {}",
        text(&out.stderr)
    );
    env.keeper(&["workers", "shutdown", "cached:q4_1"])
        .output()
        .unwrap();
    let out = env
        .keeper(&["models", "rm", "cached:q4_1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(rbee_test_support::hub::sha256_file(&file), sha);
}
