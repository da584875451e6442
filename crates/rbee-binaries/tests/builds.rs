//! The builder against real git repositories (git2 on a local path) and real cargo
//! builds of a stand-in worker crate (`rbee_test_support::worker_repo`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rbee_binaries::builder::{BuildEvent, Builder, BuilderConfig, Resolved};
use rbee_binaries::catalog::Origin;
use rbee_binaries::Source;
use rbee_test_support::model::TempDir;
use rbee_test_support::worker_repo::{Variant, WorkerRepo};
use rbee_types::{ApiError, Backend, ErrorCode};

fn builder(state: &TempDir, source: Option<Source>) -> Arc<Builder> {
    Builder::open(BuilderConfig {
        state_dir: state.0.clone(),
        source,
        installed: None,
    })
    .unwrap()
}

fn events(b: &rbee_binaries::Build) -> Vec<BuildEvent> {
    b.events_since(0, Duration::ZERO).0
}

fn lines(b: &rbee_binaries::Build) -> String {
    events(b)
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits until the build's cargo runs its (held) build script.
fn wait_for_cargo(b: &rbee_binaries::Build) -> u32 {
    let t0 = Instant::now();
    loop {
        if let Some(pid) = b.pid() {
            if lines(b).contains("Compiling llm-worker-rbee") {
                return pid;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "cargo never started: {}",
            lines(b)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A repository whose head builds only once the returned flag file is removed.
fn held_repo(state: &TempDir, mark: u32) -> (WorkerRepo, PathBuf) {
    let repo = WorkerRepo::new();
    let flag = state.join("hold");
    std::fs::write(&flag, "").unwrap();
    repo.commit(
        &Variant::Slow {
            mark,
            flag: flag.clone(),
        },
        "slow",
    );
    (repo, flag)
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[test]
fn a_build_is_cloned_built_verified_and_recorded_with_its_provenance() {
    let repo = WorkerRepo::new();
    let state = TempDir::new("builds");
    let b = builder(&state, Some(Source::new(repo.url(), "main")));
    let build = b.build(&[], None).unwrap();
    let bin = build
        .wait()
        .unwrap_or_else(|e| panic!("{e:?}\n{}", lines(&build)));
    let head = git2::Repository::open(repo.url())
        .unwrap()
        .head()
        .unwrap()
        .target()
        .unwrap()
        .to_string();
    assert_eq!(bin.git_commit.as_deref(), Some(head.as_str()));
    assert_eq!(bin.id, format!("llm-worker-rbee-cpu-{}", &head[..12]));
    assert_eq!(bin.git_url.as_deref(), Some(repo.url().as_str()));
    assert_eq!(bin.git_ref.as_deref(), Some("main"));
    assert_eq!(bin.origin, Origin::Git);
    assert!(bin.features.is_empty());
    assert!(
        bin.version.starts_with("llm-worker-rbee 0.1.0-fake.1"),
        "{}",
        bin.version
    );
    assert!(bin
        .rust_version
        .as_deref()
        .unwrap_or("")
        .starts_with("rustc "));
    assert!(bin.build_secs.unwrap() > 0.0);
    assert!(bin.binary_path.starts_with(state.join("worker-bin")));
    let mode = std::fs::metadata(&bin.binary_path)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111);
    assert_eq!(
        rbee_binaries::install::sha256_file(&bin.binary_path).unwrap(),
        bin.sha256
    );
    // Progress: fetching, cargo's lines, then complete, in that order.
    let ev = lines(&build);
    let f = ev.find(r#""stage":"fetching""#).expect(&ev);
    let c = ev.find("Compiling llm-worker-rbee").expect(&ev);
    let done = ev.rfind(r#""stage":"complete""#).expect(&ev);
    assert!(f < c && c < done, "{ev}");
    // The log has cargo's output.
    let logs = files_in(&state.join("worker-build/logs"));
    assert_eq!(logs.len(), 1);
    assert!(std::fs::read_to_string(&logs[0])
        .unwrap()
        .contains("Finished"));
    // Durable: a new builder (a hive restart) finds it; the same commit is not rebuilt.
    drop(b);
    let b = builder(&state, Some(Source::new(repo.url(), "main")));
    assert_eq!(b.list().unwrap(), vec![bin.clone()]);
    match b.resolve(Backend::Cpu).unwrap() {
        Resolved::Ready(r) => assert_eq!(*r, bin),
        Resolved::Building(_) => panic!("a recorded binary is used, not rebuilt"),
    }
    let again = b.build(&["cpu".into()], None).unwrap();
    assert_eq!(again.wait().unwrap(), bin);
    assert!(lines(&again).contains(r#""already_built":true"#));
}

#[test]
fn a_new_commit_builds_a_new_binary_and_the_old_one_stays_until_unused() {
    let repo = WorkerRepo::new();
    let state = TempDir::new("builds");
    let b = builder(&state, Some(Source::new(repo.url(), "main")));
    let old = b.build(&[], None).unwrap().wait().unwrap();
    // A worker runs the old binary.
    let running = Arc::new(std::sync::Mutex::new(Some(old.binary_path.clone())));
    let r = running.clone();
    b.set_in_use(move |p| r.lock().unwrap().as_deref() == Some(p));
    repo.commit(&Variant::Working { mark: 2 }, "second");
    let new = b.build(&[], None).unwrap().wait().unwrap();
    assert_ne!(new.id, old.id);
    assert_ne!(new.binary_path, old.binary_path);
    assert!(new.version.contains("fake.2"), "{}", new.version);
    let ids: Vec<String> = b.list().unwrap().into_iter().map(|b| b.id).collect();
    assert_eq!(
        ids,
        [new.id.clone(), old.id.clone()],
        "the old one is kept while used"
    );
    assert!(old.binary_path.is_file());
    match b.resolve(Backend::Cpu).unwrap() {
        Resolved::Ready(r) => assert_eq!(r.id, new.id, "new workers get the new binary"),
        Resolved::Building(_) => panic!("no build expected"),
    }
    // Deleting it by hand is refused while used.
    let e = b.remove(&old.id).unwrap_err();
    assert_eq!(e.code(), ErrorCode::BinaryInUse);
    // The worker stops: the old binary goes.
    *running.lock().unwrap() = None;
    b.collect_garbage();
    let ids: Vec<String> = b.list().unwrap().into_iter().map(|b| b.id).collect();
    assert_eq!(ids, [new.id.as_str()]);
    assert!(!old.binary_path.exists());
    assert!(new.binary_path.is_file());
}

#[test]
fn a_pinned_commit_or_tag_builds_exactly_that_commit() {
    let repo = WorkerRepo::new();
    let first = repo.commit(&Variant::Working { mark: 7 }, "seven");
    repo.tag("v7");
    repo.commit(&Variant::Working { mark: 8 }, "eight");
    let state = TempDir::new("builds");
    let b = builder(&state, Some(Source::new(repo.url(), first.clone())));
    let pinned = b.build(&[], None).unwrap().wait().unwrap();
    assert_eq!(pinned.git_commit.as_deref(), Some(first.as_str()));
    assert!(pinned.version.contains("fake.7"), "{}", pinned.version);
    // A tag, asked for per build.
    let tagged = b.build(&[], Some("v7")).unwrap().wait().unwrap();
    assert_eq!(tagged.git_commit.as_deref(), Some(first.as_str()));
    // The branch moves on: its head is what a branch build gets.
    let head = b.build(&[], Some("main")).unwrap().wait().unwrap();
    assert!(head.version.contains("fake.8"), "{}", head.version);
    // Newer, but the configuration pins the first commit: new workers still get that one,
    // and neither is thrown away.
    match b.resolve(Backend::Cpu).unwrap() {
        Resolved::Ready(r) => assert_eq!(r.id, pinned.id),
        Resolved::Building(_) => panic!("the pinned build is recorded"),
    }
    b.collect_garbage();
    assert_eq!(b.list().unwrap().len(), 2);
}

#[test]
fn bad_refs_and_sources_fail_with_their_own_codes_and_record_nothing() {
    let repo = WorkerRepo::new();
    let state = TempDir::new("builds");
    let b = builder(&state, Some(Source::new(repo.url(), "main")));
    let e = b
        .build(&[], Some("no-such-branch"))
        .unwrap()
        .wait()
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::GitRefNotFound, "{e:?}");
    assert!(e.to_string().contains("known: main"), "{}", e);
    let e = b
        .build(&[], Some(&"0".repeat(40)))
        .unwrap()
        .wait()
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::GitRefNotFound, "{e:?}");
    // Checked before any git work.
    for bad in ["a..b", "-rf", "x y", ""] {
        let e = b.build(&[], Some(bad)).err().expect(bad);
        assert_eq!(e.code(), ErrorCode::InvalidRequest, "{bad:?}");
    }
    let e = b.build(&["rocm".into()], None).err().unwrap();
    assert_eq!(e.code(), ErrorCode::InvalidRequest);
    // An unreachable repository.
    let gone = builder(&state, Some(Source::new("/nonexistent/rbee.git", "main")));
    let e = gone.build(&[], None).unwrap().wait().unwrap_err();
    assert_eq!(e.code(), ErrorCode::GitFetchFailed, "{e:?}");
    assert!(e.to_string().contains("/nonexistent/rbee.git"));
    let e = builder(
        &state,
        Some(Source::new("https://127.0.0.1:1/rbee.git", "main")),
    )
    .build(&[], None)
    .unwrap()
    .wait()
    .unwrap_err();
    assert_eq!(e.code(), ErrorCode::GitFetchFailed, "{e:?}");
    // No cargo.
    let mut src = Source::new(repo.url(), "main");
    src.cargo = Some("/nonexistent/cargo".into());
    let e = builder(&state, Some(src))
        .build(&[], None)
        .unwrap()
        .wait()
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::CargoNotFound, "{e:?}");
    assert!(e.to_string().contains("rustup"), "{}", e);
    assert!(b.list().unwrap().is_empty());
    assert!(files_in(&state.join("worker-bin")).is_empty());
}

#[test]
fn a_commit_that_does_not_compile_reports_the_compiler_errors_and_the_log() {
    let repo = WorkerRepo::new();
    let state = TempDir::new("builds");
    let b = builder(&state, Some(Source::new(repo.url(), "main")));
    let good = b.build(&[], None).unwrap().wait().unwrap();
    repo.commit(&Variant::Broken, "broken");
    let build = b.build(&[], None).unwrap();
    let e = build.wait().unwrap_err();
    assert_eq!(e.code(), ErrorCode::WorkerBuildFailed, "{e:?}");
    assert!(
        e.to_string().contains("error[E0308]: mismatched types"),
        "{}",
        e
    );
    assert!(e.to_string().contains("src/main.rs"), "{}", e);
    // The details are on the wire envelope the hive answers with.
    let e = ApiError::from(e);
    let log = PathBuf::from(e.error.details["log_path"].as_str().unwrap());
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("error[E0308]"));
    let first = e.error.details["first_errors"].as_array().unwrap();
    assert!(first[0].as_str().unwrap().starts_with("error[E0308]"));
    // The stream carried the same lines, then the error.
    let ev = lines(&build);
    assert!(ev.contains("error[E0308]") && ev.ends_with("}}}"), "{ev}");
    // The catalogue is as it was: spawns keep using the good build.
    assert_eq!(b.list().unwrap(), vec![good]);
}

#[test]
fn a_binary_that_fails_verification_is_not_recorded() {
    let repo = WorkerRepo::new();
    repo.commit(&Variant::BadVersion, "bad version");
    let state = TempDir::new("builds");
    let b = builder(&state, Some(Source::new(repo.url(), "main")));
    let e = b.build(&[], None).unwrap().wait().unwrap_err();
    assert_eq!(e.code(), ErrorCode::BinaryVerificationFailed, "{e:?}");
    assert!(e.to_string().contains("this worker is broken"), "{}", e);
    assert!(b.list().unwrap().is_empty());
    assert!(files_in(&state.join("worker-bin")).is_empty());
}

#[test]
fn a_killed_build_fails_cleanly_and_the_next_one_works() {
    let state = TempDir::new("builds");
    let (repo, flag) = held_repo(&state, 3);
    let b = builder(&state, Some(Source::new(repo.url(), "main")));
    let build = b.build(&[], None).unwrap();
    let pid = wait_for_cargo(&build);
    // SAFETY: a plain syscall on the cargo this test's builder started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let e = build.wait().unwrap_err();
    assert_eq!(e.code(), ErrorCode::WorkerBuildFailed);
    assert!(e.to_string().contains("killed by signal 9"), "{}", e);
    assert!(b.list().unwrap().is_empty());
    std::fs::remove_file(&flag).unwrap();
    let bin = b.build(&[], None).unwrap().wait().unwrap();
    assert!(bin.version.contains("fake.3"));
}

#[test]
fn concurrent_requests_for_one_build_share_it_and_builds_queue_for_a_slot() {
    let state = TempDir::new("builds");
    let (repo, flag) = held_repo(&state, 4);
    let b = builder(&state, Some(Source::new(repo.url(), "main")));
    let builds: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|_| s.spawn(|| b.build(&[], None).unwrap()))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        builds.iter().all(|x| x.id == builds[0].id),
        "one build for eight requests"
    );
    wait_for_cargo(&builds[0]);
    // Another feature set waits for the one slot (max_concurrent_builds = 1).
    let cuda = b.build(&["cuda".into()], None).unwrap();
    let t0 = Instant::now();
    while !lines(&cuda).contains(r#""stage":"queued""#) {
        assert!(t0.elapsed() < Duration::from_secs(30), "{}", lines(&cuda));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !lines(&cuda).contains("fetching"),
        "it has not started: {}",
        lines(&cuda)
    );
    std::fs::remove_file(&flag).unwrap();
    let bins: Vec<_> = builds.iter().map(|x| x.wait().unwrap()).collect();
    assert!(bins.iter().all(|x| *x == bins[0]));
    assert_eq!(
        files_in(&state.join("worker-build/logs")).len(),
        1,
        "cargo ran once"
    );
    // Then the CUDA build runs, and here (no nvcc) says what is missing.
    let r = cuda.wait();
    if rbee_binaries::cargo::find_nvcc().is_none() {
        let e = r.unwrap_err();
        assert_eq!(e.code(), ErrorCode::CudaToolkitNotFound, "{e:?}");
        assert!(e.to_string().contains("nvcc"));
    }
}

#[test]
fn without_a_source_the_installed_worker_is_verified_and_recorded() {
    let state = TempDir::new("builds");
    let installed = rbee_test_support::model::worker_binary();
    rbee_test_support::skip_unless!(
        installed.is_file(),
        "no release worker at {}",
        installed.display()
    );
    let b = Builder::open(BuilderConfig {
        state_dir: state.0.clone(),
        source: None,
        installed: Some(installed.clone()),
    })
    .unwrap();
    let Resolved::Ready(bin) = b.resolve(Backend::Cpu).unwrap() else {
        panic!("the installed worker is ready")
    };
    assert_eq!(bin.origin, Origin::Installed);
    assert_eq!(bin.binary_path, installed);
    assert!(
        bin.version
            .starts_with("llm-worker-rbee 0.1.0 (backends: cpu"),
        "{}",
        bin.version
    );
    assert_eq!(b.list().unwrap().len(), 1);
    // A CPU-only build asked for CUDA: said before any worker starts.
    if !bin.features.iter().any(|f| f == "cuda") {
        let e = b.resolve(Backend::Cuda).err().unwrap();
        assert_eq!(e.code(), ErrorCode::BackendUnavailable);
        assert!(e.to_string().contains("[worker_source]"), "{}", e);
    }
    // Building needs a source.
    let e = b.build(&[], None).err().unwrap();
    assert_eq!(e.code(), ErrorCode::NoWorkerSource);
    // Removing the record never deletes the installed file.
    b.remove(&bin.id).unwrap();
    assert!(installed.is_file());
    let e = b.remove(&bin.id).unwrap_err();
    assert_eq!(e.code(), ErrorCode::BinaryNotFound);
}

#[test]
fn an_installed_worker_that_is_not_executable_is_refused() {
    let state = TempDir::new("builds");
    let fake = state.join("llm-worker-rbee");
    std::fs::write(&fake, "#!/bin/sh\necho llm-worker-rbee 0.1.0\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o644)).unwrap();
    let b = Builder::open(BuilderConfig {
        state_dir: state.0.clone(),
        source: None,
        installed: Some(fake.clone()),
    })
    .unwrap();
    let e = b.resolve(Backend::Cpu).err().unwrap();
    assert_eq!(e.code(), ErrorCode::BinaryVerificationFailed);
    assert!(e.to_string().contains("not executable"), "{}", e);
    // Fixed on disk: picked up without a restart.
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(matches!(
        b.resolve(Backend::Cpu).unwrap(),
        Resolved::Ready(_)
    ));
}

#[test]
fn reopening_tidies_what_a_crash_left() {
    let repo = WorkerRepo::new();
    let state = TempDir::new("builds");
    let b = builder(&state, Some(Source::new(repo.url(), "main")));
    let bin = b.build(&[], None).unwrap().wait().unwrap();
    drop(b);
    // A binary a killed build installed but never recorded, and a vanished recorded one.
    let stray = state.join("worker-bin/llm-worker-rbee-cpu-stray");
    std::fs::write(&stray, "x").unwrap();
    std::fs::remove_file(&bin.binary_path).unwrap();
    let b = builder(&state, Some(Source::new(repo.url(), "main")));
    assert!(!stray.exists());
    assert!(
        b.list().unwrap().is_empty(),
        "the row of a vanished file is gone"
    );
    // And the next spawn builds again.
    assert!(matches!(
        b.resolve(Backend::Cpu).unwrap(),
        Resolved::Building(_)
    ));
}

#[test]
fn an_ssh_source_uses_the_configured_key_and_known_hosts() {
    let Some(sshd) = rbee_test_support::sshd::Sshd::start_or_skip() else {
        return;
    };
    // libgit2 reads ~/.ssh/known_hosts: a home of this test's own (nextest runs each test
    // in its own process).
    let home = TempDir::new("ssh-home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::env::set_var("HOME", &home.0);
    std::env::remove_var("SSH_AUTH_SOCK");
    let repo = WorkerRepo::new();
    let url = format!(
        "ssh://{}@127.0.0.1:{}{}",
        sshd.user(),
        sshd.port,
        repo.url()
    );
    let state = TempDir::new("builds");
    let source = |key: &Path| Source {
        ssh_key: Some(key.to_path_buf()),
        ..Source::new(url.clone(), "main")
    };
    // The server is not in known_hosts yet: refused, with what to do.
    let e = builder(&state, Some(source(&sshd.client_key)))
        .build(&[], None)
        .unwrap()
        .wait()
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::GitFetchFailed, "{e:?}");
    assert!(e.to_string().contains("known_hosts"), "{}", e);
    std::fs::copy(&sshd.known_hosts, home.join(".ssh/known_hosts")).unwrap();
    // A key the server does not accept.
    let e = builder(&state, Some(source(&sshd.wrong_key)))
        .build(&[], None)
        .unwrap()
        .wait()
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::GitAuthFailed, "{e:?}\n{}", sshd.log());
    assert!(e.to_string().contains("ssh_key"), "{}", e);
    // The right one.
    let b = builder(&state, Some(source(&sshd.client_key)));
    let bin = b
        .build(&[], None)
        .unwrap()
        .wait()
        .unwrap_or_else(|e| panic!("{e:?}\n{}", sshd.log()));
    assert_eq!(bin.git_url.as_deref(), Some(url.as_str()));
    assert!(bin.version.contains("fake.1"));
}

#[test]
fn a_full_disk_when_installing_the_binary_is_insufficient_disk_and_records_nothing() {
    let repo = WorkerRepo::new();
    let state = TempDir::new("builds");
    // The build itself has room; the binaries directory does not.
    let Some(_disk) =
        rbee_test_support::disk::SmallDisk::mount(&state.join("worker-bin"), 64 << 10)
    else {
        return;
    };
    let b = builder(&state, Some(Source::new(repo.url(), "main")));
    let e = b.build(&[], None).unwrap().wait().unwrap_err();
    assert_eq!(e.code(), ErrorCode::InsufficientDisk, "{e:?}");
    assert!(e.to_string().contains("worker-bin"), "{}", e);
    assert!(b.list().unwrap().is_empty());
    assert!(
        files_in(&state.join("worker-bin")).is_empty(),
        "no partial copy is left"
    );
}
