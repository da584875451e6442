//! Hostile model files: the real model's GGUF header mutated field by field (counts,
//! lengths, value and tensor types, dimensions, offsets, the hyperparameters llama.cpp
//! asserts on), each given to the real worker. None may kill it with a signal or leave it
//! loading: each is refused with exit 4 and a message, or loads. Plus files that are not
//! files. Bounded: a fixed set of cases from a fixed seed, each with a time limit.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rbee_test_support::model::TempDir;
use rbee_test_support::process::free_port;

use crate::common::{model, WORKER_BIN};

/// What a field of the header is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Count,
    StrLen,
    ValueType,
    ArrayType,
    ArrayLen,
    Dims,
    Dim,
    TensorType,
    TensorOffset,
    /// A numeric metadata value (its key's index in `keys`).
    Number(usize),
}

/// One field: where it is, how wide (4 or 8 bytes), what it is.
#[derive(Debug, Clone, Copy)]
struct Field {
    at: usize,
    width: usize,
    kind: Kind,
}

/// Walks a GGUF header, recording every field; the fields, the metadata keys and where
/// the header ends.
fn fields(b: &[u8]) -> (Vec<Field>, Vec<String>, usize) {
    let mut at = 8;
    let mut out = vec![];
    let mut keys = vec![];
    let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let field = |out: &mut Vec<Field>, at: &mut usize, width: usize, kind: Kind| {
        out.push(Field {
            at: *at,
            width,
            kind,
        });
        *at += width;
    };
    let tensors = u64_at(at);
    field(&mut out, &mut at, 8, Kind::Count);
    let kvs = u64_at(at);
    field(&mut out, &mut at, 8, Kind::Count);
    let string = |out: &mut Vec<Field>, at: &mut usize, record: bool| -> String {
        let n = u64_at(*at) as usize;
        if record {
            out.push(Field {
                at: *at,
                width: 8,
                kind: Kind::StrLen,
            });
        }
        let s = String::from_utf8_lossy(&b[*at + 8..*at + 8 + n]).into_owned();
        *at += 8 + n;
        s
    };
    let scalar_width = |t: u32| match t {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        _ => 0,
    };
    for _ in 0..kvs {
        let key = string(&mut out, &mut at, true);
        let t = u32_at(at);
        field(&mut out, &mut at, 4, Kind::ValueType);
        match t {
            8 => {
                string(&mut out, &mut at, true);
            }
            9 => {
                let et = u32_at(at);
                field(&mut out, &mut at, 4, Kind::ArrayType);
                let n = u64_at(at);
                field(&mut out, &mut at, 8, Kind::ArrayLen);
                for i in 0..n {
                    if et == 8 {
                        // Thousands of token strings: record a few lengths only.
                        string(&mut out, &mut at, i % 4096 == 7);
                    } else {
                        at += scalar_width(et);
                    }
                }
            }
            t => {
                let w = scalar_width(t);
                if w == 4 || w == 8 {
                    out.push(Field {
                        at,
                        width: w,
                        kind: Kind::Number(keys.len()),
                    });
                }
                at += w;
            }
        }
        keys.push(key);
    }
    for _ in 0..tensors {
        string(&mut out, &mut at, true);
        let dims = u32_at(at);
        field(&mut out, &mut at, 4, Kind::Dims);
        for _ in 0..dims {
            field(&mut out, &mut at, 8, Kind::Dim);
        }
        field(&mut out, &mut at, 4, Kind::TensorType);
        field(&mut out, &mut at, 8, Kind::TensorOffset);
    }
    (out, keys, at)
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn set(b: &mut [u8], f: Field, v: u64) {
    match f.width {
        4 => b[f.at..f.at + 4].copy_from_slice(&(v as u32).to_le_bytes()),
        _ => b[f.at..f.at + 8].copy_from_slice(&v.to_le_bytes()),
    }
}

fn get(b: &[u8], f: Field) -> u64 {
    match f.width {
        4 => u64::from(u32::from_le_bytes(b[f.at..f.at + 4].try_into().unwrap())),
        _ => u64::from_le_bytes(b[f.at..f.at + 8].try_into().unwrap()),
    }
}

/// How a worker ended on a file.
#[derive(Debug)]
enum Outcome {
    /// Exited with this status; its stderr.
    Exited(i32, String),
    /// Loaded the model and answered ready (then stopped by the test).
    Loaded,
}

/// Runs the worker on `file`: it must exit or become ready within `limit`, never die by a
/// signal.
fn run_worker(file: &Path, limit: Duration, what: &str) -> Outcome {
    let port = free_port();
    let mut child = Command::new(WORKER_BIN)
        .arg("--model")
        .arg(file)
        .args([
            "--port",
            &port.to_string(),
            "--slots",
            "1",
            "--ctx-size",
            "256",
        ])
        .env("RBEE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err);
            assert!(
                status.signal().is_none(),
                "{what}: the worker died by signal {:?}\n{err}",
                status.signal()
            );
            return Outcome::Exited(status.code().unwrap_or(-1), err);
        }
        let ready = ureq::get(&format!("http://127.0.0.1:{port}/v1/ready"))
            .timeout(Duration::from_millis(200))
            .call()
            .ok()
            .and_then(|r| r.into_json::<serde_json::Value>().ok())
            .is_some_and(|v| v["ready"] == true);
        if ready {
            // SAFETY: the worker this function started.
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            let _ = child.wait();
            return Outcome::Loaded;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: the worker neither loaded nor exited within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A model file of the original's size: `header` then zeros (sparse; llama.cpp maps it).
fn write_model(dir: &TempDir, header: &[u8], size: u64) -> PathBuf {
    let path = dir.join("m.gguf");
    std::fs::write(&path, header).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(size)
        .unwrap();
    path
}

#[test]
fn mutated_gguf_headers_are_refused_with_exit_4_never_a_signal_or_a_hang() {
    let Some(model) = model() else { return };
    let bytes = std::fs::read(&model).unwrap();
    let size = bytes.len() as u64;
    let (all, keys, end) = fields(&bytes);
    let header = &bytes[..end.div_ceil(32) * 32];
    let dir = TempDir::new("gguf-mutations");
    let mut rng = Rng(0x0005_eed0_fb33);
    let key_of = |k: Kind| match k {
        Kind::Number(i) => keys[i].as_str(),
        _ => "",
    };
    // The hyperparameters llama.cpp asserts on, at values it cannot take.
    let mut cases: Vec<(String, Vec<u8>)> = vec![];
    for f in all.iter().filter(|f| {
        [
            "block_count",
            "context_length",
            "embedding_length",
            "head_count",
        ]
        .iter()
        .any(|k| key_of(f.kind).ends_with(k))
    }) {
        for v in [0, 513, u64::from(u32::MAX), u64::MAX] {
            let mut h = header.to_vec();
            set(&mut h, *f, v);
            cases.push((format!("{} = {v}", key_of(f.kind)), h));
        }
    }
    // Random fields at hostile values.
    while cases.len() < 300 {
        let f = all[rng.below(all.len())];
        let old = get(header, f);
        let v = match rng.below(8) {
            0 => 0,
            1 => u64::MAX,
            2 => u64::from(u32::MAX),
            3 => old.wrapping_add(1),
            4 => old.wrapping_sub(1),
            5 => old.wrapping_mul(2),
            6 => 1 << 31,
            _ => rng.next(),
        };
        if v == old {
            continue;
        }
        let mut h = header.to_vec();
        set(&mut h, f, v);
        cases.push((format!("{:?} at {} {old} -> {v}", f.kind, f.at), h));
    }
    let t0 = Instant::now();
    let (mut refused, mut loaded) = (0, 0);
    for (what, h) in &cases {
        let file = write_model(&dir, h, size);
        match run_worker(&file, Duration::from_secs(20), what) {
            Outcome::Exited(4, err) => {
                assert!(
                    err.contains("error:") && err.lines().count() <= 20,
                    "{what}: a clear message, not a dump:\n{err}"
                );
                refused += 1;
            }
            Outcome::Exited(code, err) => panic!("{what}: exit {code}, not 4:\n{err}"),
            Outcome::Loaded => loaded += 1,
        }
    }
    eprintln!(
        "{} cases in {:.1} s: {refused} refused with exit 4, {loaded} loaded",
        cases.len(),
        t0.elapsed().as_secs_f64()
    );
    assert!(
        refused > cases.len() / 2,
        "most mutations are refused: {refused}"
    );
}

#[test]
fn a_fifo_a_directory_and_a_device_are_refused_at_once() {
    if model().is_none() {
        return;
    }
    let dir = TempDir::new("gguf-special");
    let fifo = dir.join("fifo.gguf");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let sub = dir.join("dir.gguf");
    std::fs::create_dir(&sub).unwrap();
    for (what, path) in [
        ("fifo", fifo),
        ("directory", sub),
        ("device", PathBuf::from("/dev/zero")),
    ] {
        match run_worker(&path, Duration::from_secs(5), what) {
            Outcome::Exited(4, err) => {
                assert!(err.contains("not a regular file"), "{what}: {err}")
            }
            other => panic!("{what}: {other:?}"),
        }
    }
}
