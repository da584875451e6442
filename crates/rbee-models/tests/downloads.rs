//! Downloads against the test hub (a real HTTP server on loopback) with every fault.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rbee_models::hub::{partial_path, HubConfig};
use rbee_models::provisioner::{Ensured, Provisioner, Transfer};
use rbee_test_support::disk::SmallDisk;
use rbee_test_support::hub::{sha256_file, Faults, Hub};
use rbee_test_support::model::TempDir;
use rbee_types::hive::DownloadProgress as Progress;
use rbee_types::ErrorCode;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// A fixture of `mib` MiB: a GGUF header, then bytes whose content does not matter to the
/// transfer.
fn fixture(dir: &TempDir, name: &str, mib: usize) -> PathBuf {
    let p = dir.join(name);
    let mut data = rbee_test_support::model::tiny_gguf(1);
    let n = data.len();
    data.extend((n..mib << 20).map(|i| (i * 31 % 251) as u8));
    std::fs::write(&p, data).unwrap();
    p
}

struct Env {
    hub: Hub,
    prov: Arc<Provisioner>,
    models: PathBuf,
    src: PathBuf,
    dirs: (TempDir, TempDir),
}

fn env_with(attempts: u32, token: Option<&str>, models: Option<PathBuf>) -> Env {
    let fixtures = TempDir::new("hub-fixtures");
    let src = fixture(&fixtures, "smol-Q4_1.gguf", 8);
    let hub = Hub::start();
    hub.add_repo("org/smol", COMMIT, &[("smol-Q4_1.gguf", &src)]);
    let state = TempDir::new("prov-state");
    let models = models.unwrap_or_else(|| state.join("models"));
    let cfg = HubConfig {
        endpoint: hub.endpoint(),
        token: token.map(str::to_owned),
        stall: Duration::from_millis(700),
        attempts,
        backoff: Duration::from_millis(10),
        cache: None,
    };
    let prov = Arc::new(Provisioner::open(&state.0, &models, cfg).unwrap());
    Env {
        hub,
        prov,
        models,
        src,
        dirs: (fixtures, state),
    }
}

fn env() -> Env {
    env_with(6, None, None)
}

/// Follows a transfer to its end, collecting every event.
fn follow(t: &Transfer) -> Vec<Progress> {
    let mut seen = 0;
    let mut out = vec![];
    loop {
        let (g, p) = t.wait_newer(seen, Duration::from_secs(60));
        assert_ne!(g, seen, "no progress for 60 s");
        seen = g;
        out.push(p.clone());
        if p.is_final() {
            return out;
        }
    }
}

fn start(e: &Env, reference: &str) -> Arc<Transfer> {
    match e.prov.ensure(&reference.parse().unwrap()).unwrap() {
        Ensured::Downloading(t) => t,
        Ensured::Ready(m) => panic!("unexpectedly cached: {m:?}"),
    }
}

fn final_file(e: &Env) -> PathBuf {
    e.models
        .join("hf/org/smol")
        .join(COMMIT)
        .join("smol-Q4_1.gguf")
}

fn assert_monotonic(events: &[Progress]) {
    let mut last = 0;
    for p in events {
        if let Progress::Downloading {
            bytes_downloaded,
            bytes_total,
            ..
        } = p
        {
            assert!(*bytes_downloaded >= last, "bytes went back: {events:?}");
            assert!(bytes_downloaded <= bytes_total);
            last = *bytes_downloaded;
        }
    }
}

/// The stream ended in `complete` and the file at the final path is the hub's.
fn assert_complete(e: &Env, events: &[Progress]) {
    assert!(
        matches!(events.last(), Some(Progress::Complete { .. })),
        "{events:?}"
    );
    assert_eq!(sha256_file(&final_file(e)), sha256_file(&e.src));
}

fn error_code(events: &[Progress]) -> ErrorCode {
    match events.last() {
        Some(Progress::Error { error }) => error.code,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn nothing_left(e: &Env) {
    let dest = final_file(e);
    assert!(!dest.exists(), "no file at the final path");
    assert!(
        e.prov.catalog().list().unwrap().is_empty(),
        "no catalogue row"
    );
}

/// The share of `path`'s pages in the page cache (mincore), or `None` where its filesystem
/// gets no direct I/O (downloads go through the page cache there).
fn resident_share(path: &std::path::Path) -> Option<f64> {
    use std::os::fd::AsRawFd;
    if !rbee_models::hub::direct_io(path) {
        return None;
    }
    let f = std::fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len() as usize;
    let page = 4096;
    let mut vec = vec![0u8; len.div_ceil(page)];
    // SAFETY: a read-only shared mapping of a file we keep open, unmapped before returning;
    // mincore only reports on it.
    unsafe {
        let addr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(addr, libc::MAP_FAILED);
        assert_eq!(libc::mincore(addr, len, vec.as_mut_ptr()), 0);
        libc::munmap(addr, len);
    }
    let resident = vec.iter().filter(|b| **b & 1 == 1).count();
    eprintln!("{resident} of {} pages in the page cache", vec.len());
    Some(resident as f64 / vec.len() as f64)
}

#[test]
fn a_clean_download_is_verified_catalogued_and_then_served_from_the_catalogue() {
    let e = env();
    let events = follow(&start(&e, "hf:org/smol"));
    assert_monotonic(&events);
    let Some(Progress::Complete {
        local_path,
        model_id,
    }) = events.last()
    else {
        panic!("{events:?}")
    };
    assert_eq!(local_path, &final_file(&e));
    // Written with direct I/O: the model did not go through the page cache, where it would
    // have pushed out the pages of running workers' models.
    match resident_share(local_path) {
        Some(share) => assert!(
            share < 0.5,
            "{:.0} % of the downloaded file sits in the page cache",
            share * 100.0
        ),
        None => eprintln!("SKIP (page cache check): no direct I/O on this filesystem"),
    }
    assert_eq!(sha256_file(local_path), sha256_file(&e.src));
    assert!(!partial_path(local_path).exists());
    let row = e.prov.catalog().get(model_id).unwrap().unwrap();
    assert_eq!(row.sha256.as_deref(), Some(sha256_file(&e.src).as_str()));
    assert_eq!(row.hub_verified, Some(true), "the hub's hash matched");
    assert_eq!(row.commit_sha.as_deref(), Some(COMMIT));
    assert_eq!(row.reference, "hf:org/smol/smol-Q4_1.gguf@main");
    // Asked again, by quantization or by file: no transfer.
    for r in [
        "hf:org/smol",
        "hf:org/smol:Q4_1",
        "hf:org/smol/smol-Q4_1.gguf",
    ] {
        assert!(
            matches!(
                e.prov.ensure(&r.parse().unwrap()).unwrap(),
                Ensured::Ready(_)
            ),
            "{r}"
        );
    }
    assert_eq!(e.hub.counters.downloads.load(Ordering::Relaxed), 1);
}

#[test]
fn a_cut_connection_resumes_with_range_and_keeps_progress_monotonic() {
    let e = env();
    e.hub.set_faults(Faults {
        cut_at: Some((0.4, 1)),
        ..Default::default()
    });
    let events = follow(&start(&e, "hf:org/smol"));
    assert!(
        matches!(events.last(), Some(Progress::Complete { .. })),
        "{events:?}"
    );
    assert_monotonic(&events);
    assert_eq!(
        e.hub.counters.downloads.load(Ordering::Relaxed),
        2,
        "one retry"
    );
    let size = std::fs::metadata(&e.src).unwrap().len();
    assert_eq!(
        e.hub.counters.bytes.load(Ordering::Relaxed),
        size,
        "no byte sent twice"
    );
    assert_eq!(sha256_file(&final_file(&e)), sha256_file(&e.src));
}

#[test]
fn a_server_ignoring_range_makes_the_download_start_over_and_still_verify() {
    let e = env();
    e.hub.set_faults(Faults {
        cut_at: Some((0.4, 1)),
        ignore_range: true,
        ..Default::default()
    });
    let events = follow(&start(&e, "hf:org/smol"));
    assert_complete(&e, &events);
}

#[test]
fn a_wrong_checksum_is_retried_then_refused_leaving_nothing_behind() {
    // Six attempts allowed, but a whole file that does not match is fetched three times.
    let e = env_with(6, None, None);
    e.hub.set_faults(Faults {
        wrong_sha: true,
        ..Default::default()
    });
    let events = follow(&start(&e, "hf:org/smol"));
    assert_eq!(error_code(&events), ErrorCode::ChecksumMismatch);
    assert_eq!(
        e.hub.counters.downloads.load(Ordering::Relaxed),
        rbee_models::hub::CHECKSUM_ATTEMPTS as u64,
        "three whole downloads, not six"
    );
    let Some(Progress::Error { error }) = events.last() else {
        panic!("{events:?}")
    };
    assert!(
        error.message.contains("after 3 attempts")
            && error.message.contains("nothing of it is kept"),
        "{}",
        error.message
    );
    nothing_left(&e);
    assert!(
        !partial_path(&final_file(&e)).exists(),
        "a bad file is deleted"
    );
}

#[test]
fn a_stall_counts_as_a_failed_attempt_and_ends_in_download_timeout() {
    let e = env_with(2, None, None);
    e.hub.set_faults(Faults {
        stall_at: Some((0.5, 2)),
        ..Default::default()
    });
    let events = follow(&start(&e, "hf:org/smol"));
    assert_eq!(
        error_code(&events),
        ErrorCode::DownloadTimeout,
        "{events:?}"
    );
    assert_eq!(e.hub.counters.downloads.load(Ordering::Relaxed), 2);
    nothing_left(&e);
    // The partial file stays for the next request, which resumes it.
    assert!(partial_path(&final_file(&e)).exists());
    let events = follow(&start(&e, "hf:org/smol"));
    assert_complete(&e, &events);
}

#[test]
fn missing_repositories_and_files_are_model_not_found_without_retries() {
    let e = env();
    let events = follow(&start(&e, "hf:org/nope"));
    assert_eq!(error_code(&events), ErrorCode::ModelNotFound);
    let events = follow(&start(&e, "hf:org/smol:Q8_0"));
    assert_eq!(error_code(&events), ErrorCode::ModelNotFound);
    if let Some(Progress::Error { error }) = events.last() {
        assert!(
            error.message.contains("smol-Q4_1.gguf"),
            "lists what there is: {}",
            error.message
        );
    }
    e.hub.set_faults(Faults {
        resolve_status: Some(404),
        ..Default::default()
    });
    let events = follow(&start(&e, "hf:org/smol"));
    assert_eq!(error_code(&events), ErrorCode::ModelNotFound);
    assert_eq!(
        e.hub.counters.downloads.load(Ordering::Relaxed),
        1,
        "404 is final"
    );
    nothing_left(&e);
    assert!(
        !partial_path(&final_file(&e)).exists(),
        "no empty partial file after a 404"
    );
}

#[test]
fn a_gated_repository_needs_the_token_and_the_token_never_leaves_the_hub() {
    for (token, ok) in [
        (None, false),
        (Some("wrong"), false),
        (Some("hf_good"), true),
    ] {
        let e = env_with(6, token, None);
        e.hub.set_faults(Faults {
            token: Some("hf_good".into()),
            redirect: true,
            ..Default::default()
        });
        let events = follow(&start(&e, "hf:org/smol"));
        if ok {
            assert!(
                matches!(events.last(), Some(Progress::Complete { .. })),
                "{events:?}"
            );
        } else {
            assert_eq!(
                error_code(&events),
                ErrorCode::ModelAccessDenied,
                "{token:?}"
            );
            let Some(Progress::Error { error }) = events.last() else {
                unreachable!()
            };
            assert!(error.message.contains("HF_TOKEN"), "{}", error.message);
            nothing_left(&e);
        }
        assert_eq!(
            e.hub.counters.token_leaks.load(Ordering::Relaxed),
            0,
            "token sent to the CDN"
        );
    }
}

#[test]
fn a_slow_trickle_still_completes() {
    let e = env();
    e.hub.set_faults(Faults {
        trickle: Some(16 << 20),
        ..Default::default()
    });
    let events = follow(&start(&e, "hf:org/smol"));
    assert!(
        matches!(events.last(), Some(Progress::Complete { .. })),
        "{events:?}"
    );
    let downloading = events
        .iter()
        .filter(|p| matches!(p, Progress::Downloading { .. }))
        .count();
    assert!(downloading >= 2, "progress along the way: {events:?}");
}

#[test]
fn progress_moves_on_a_slow_link_before_the_first_mib_is_in() {
    let e = env();
    // 256 KiB/s: the first 1 MiB chunk takes four seconds.
    e.hub.set_faults(Faults {
        trickle: Some(256 << 10),
        ..Default::default()
    });
    let t = start(&e, "hf:org/smol");
    let (mut seen, mut below_a_mib) = (0, vec![]);
    let until = std::time::Instant::now() + Duration::from_millis(2500);
    while std::time::Instant::now() < until {
        let (g, p) = t.wait_newer(seen, Duration::from_millis(500));
        seen = g;
        if let Progress::Downloading {
            bytes_downloaded, ..
        } = p
        {
            if bytes_downloaded > 0 && bytes_downloaded < 1 << 20 {
                below_a_mib.push(bytes_downloaded);
            }
        }
    }
    below_a_mib.dedup();
    assert!(
        below_a_mib.len() >= 3 && below_a_mib.windows(2).all(|w| w[0] < w[1]),
        "the bar should move every fraction of a second, saw {below_a_mib:?}"
    );
}

#[test]
fn eight_concurrent_requests_share_one_transfer() {
    let e = env();
    e.hub.set_faults(Faults {
        trickle: Some(32 << 20),
        ..Default::default()
    });
    let transfers: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|_| s.spawn(|| start(&e, "hf:org/smol")))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ids: std::collections::BTreeSet<_> = transfers.iter().map(|t| t.id.clone()).collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    for t in &transfers {
        t.wait().unwrap();
    }
    assert_eq!(e.hub.counters.downloads.load(Ordering::Relaxed), 1);
}

#[test]
fn too_little_disk_is_refused_before_starting_with_the_numbers() {
    let outer = TempDir::new("small-disk");
    let Some(disk) = SmallDisk::mount(&outer.join("models"), 4 << 20) else {
        return;
    };
    let e = env_with(6, None, Some(disk.0.clone()));
    let events = follow(&start(&e, "hf:org/smol"));
    assert_eq!(error_code(&events), ErrorCode::InsufficientDisk);
    let Some(Progress::Error { error }) = events.last() else {
        unreachable!()
    };
    assert_eq!(error.details["required_bytes"], 8u64 << 20);
    assert!(error.details["free_up_bytes"].as_u64().unwrap() > 0);
    assert_eq!(
        e.hub.counters.downloads.load(Ordering::Relaxed),
        0,
        "no byte fetched"
    );
    nothing_left(&e);
}

#[test]
fn a_disk_that_fills_up_mid_way_leaves_no_partial_file_and_says_so() {
    let outer = TempDir::new("small-disk");
    let Some(disk) = SmallDisk::mount(&outer.join("models"), 12 << 20) else {
        return;
    };
    let e = env_with(6, None, Some(disk.0.clone()));
    e.hub.set_faults(Faults {
        trickle: Some(8 << 20),
        ..Default::default()
    });
    let t = start(&e, "hf:org/smol");
    // Once the transfer is under way, something else takes the space.
    let (mut seen, mut hog) = (0, None);
    while hog.is_none() {
        let (g, p) = t.wait_newer(seen, Duration::from_secs(30));
        seen = g;
        if let Progress::Downloading {
            bytes_downloaded, ..
        } = p
        {
            if bytes_downloaded > 1 << 20 {
                let filler = disk.0.join("hog");
                let _ = std::fs::write(&filler, vec![0u8; 6 << 20]);
                hog = Some(filler);
            }
        }
        assert!(!p.is_final(), "{p:?}");
    }
    let events = follow(&t);
    assert_eq!(error_code(&events), ErrorCode::InsufficientDisk);
    assert!(
        !partial_path(&final_file(&e)).exists(),
        "partial file removed"
    );
    nothing_left(&e);
}

#[test]
fn a_download_the_hub_gives_no_hash_for_is_recorded_with_its_own_hash_as_unverified() {
    let e = env();
    e.hub.set_faults(Faults {
        no_lfs: true,
        ..Default::default()
    });
    let events = follow(&start(&e, "hf:org/smol"));
    assert_complete(&e, &events);
    let row = &e.prov.catalog().list().unwrap()[0];
    assert_eq!(row.sha256.as_deref(), Some(sha256_file(&e.src).as_str()));
    assert_eq!(row.hub_verified, Some(false), "{row:?}");
    // Reopened (as after a restart), the flag is still there.
    let again = rbee_models::catalog::Catalog::open(&e.dirs.1.join("models.db")).unwrap();
    assert_eq!(
        again.get(&row.id).unwrap().unwrap().hub_verified,
        Some(false)
    );
}

#[test]
fn a_file_that_is_not_a_gguf_model_is_not_catalogued_even_when_the_hub_vouches_for_it() {
    let e = env();
    let junk = e.src.with_file_name("junk.gguf");
    std::fs::write(&junk, vec![0x42u8; 100]).unwrap();
    e.hub.add_repo("org/junk", COMMIT, &[("junk.gguf", &junk)]);
    let empty = e.src.with_file_name("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    e.hub
        .add_repo("org/empty", COMMIT, &[("empty.gguf", &empty)]);
    for reference in ["hf:org/junk", "hf:org/empty"] {
        let events = follow(&start(&e, reference));
        assert_eq!(
            error_code(&events),
            ErrorCode::ModelInvalid,
            "{reference}: {events:?}"
        );
    }
    assert!(
        e.prov.catalog().list().unwrap().is_empty(),
        "nothing catalogued"
    );
    let leftovers: Vec<_> = walk(&e.models);
    assert!(leftovers.is_empty(), "no file kept: {leftovers:?}");
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A Hugging Face cache in huggingface_hub's layout holding `file` of `repo` at `COMMIT`
/// (`main` points at it) in a blob named `blob`.
fn hf_cache(dir: &TempDir, repo: &str, file: &std::path::Path, blob: &str) -> PathBuf {
    let root = dir
        .join("hub")
        .join(format!("models--{}", repo.replace('/', "--")));
    let snap = root.join("snapshots").join(COMMIT);
    std::fs::create_dir_all(root.join("refs")).unwrap();
    std::fs::create_dir_all(root.join("blobs")).unwrap();
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::write(root.join("refs/main"), COMMIT).unwrap();
    std::fs::copy(file, root.join("blobs").join(blob)).unwrap();
    let name = file.file_name().unwrap();
    std::os::unix::fs::symlink(format!("../../blobs/{blob}"), snap.join(name)).unwrap();
    snap.join(name)
}

#[test]
fn a_model_in_the_hugging_face_cache_is_verified_and_used_in_place_without_the_hub() {
    let fixtures = TempDir::new("hf-cache-fixtures");
    let src = fixture(&fixtures, "smol-Q4_1.gguf", 4);
    let hub = Hub::start();
    hub.add_repo("org/smol", COMMIT, &[("smol-Q4_1.gguf", &src)]);
    hub.add_repo("org/bad", COMMIT, &[("smol-Q4_1.gguf", &src)]);
    let cache = TempDir::new("hf-cache");
    let good = hf_cache(&cache, "org/smol", &src, &sha256_file(&src));
    // A blob whose content is not what its name says (a damaged cache).
    let bad = hf_cache(&cache, "org/bad", &src, &"0".repeat(64));
    let state = TempDir::new("prov-state");
    let cfg = HubConfig {
        endpoint: hub.endpoint(),
        token: None,
        stall: Duration::from_millis(700),
        attempts: 2,
        backoff: Duration::from_millis(10),
        cache: Some(cache.join("hub")),
    };
    let prov = Arc::new(Provisioner::open(&state.0, &state.join("models"), cfg).unwrap());
    let from_cache = |reference: &str| match prov.ensure(&reference.parse().unwrap()).unwrap() {
        Ensured::Downloading(t) => follow(&t),
        Ensured::Ready(m) => vec![Progress::Complete {
            local_path: m.local_path,
            model_id: m.id,
        }],
    };
    let events = from_cache("hf:org/smol:Q4_1");
    let Some(Progress::Complete {
        local_path,
        model_id,
    }) = events.last()
    else {
        panic!("{events:?}")
    };
    assert_eq!(local_path, &good, "used in place");
    assert_eq!(
        hub.counters.requests.load(Ordering::Relaxed),
        0,
        "the hub was asked"
    );
    let row = prov.catalog().get(model_id).unwrap().unwrap();
    assert_eq!(row.hub_verified, Some(true));
    assert_eq!(row.commit_sha.as_deref(), Some(COMMIT));
    // Asked again: from the catalogue.
    assert!(matches!(
        prov.ensure(&"hf:org/smol".parse().unwrap()).unwrap(),
        Ensured::Ready(_)
    ));
    // Removing it from the catalogue leaves the cache as it was.
    prov.remove(model_id).unwrap();
    assert_eq!(
        sha256_file(&good),
        sha256_file(&src),
        "the cache's file was touched"
    );
    // The damaged blob is not used: the model comes from the hub, the cache is untouched.
    let events = from_cache("hf:org/bad");
    let Some(Progress::Complete { local_path, .. }) = events.last() else {
        panic!("{events:?}")
    };
    assert_ne!(local_path, &bad);
    assert!(
        local_path.starts_with(state.join("models")),
        "{}",
        local_path.display()
    );
    assert_eq!(hub.counters.downloads.load(Ordering::Relaxed), 1);
    assert!(bad.exists());
}
