//! `GET /v1/workers/{id}/logs`: a worker's log lines as text, or followed as SSE (the
//! reading itself is [`crate::worker_log`]'s).

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use rbee_http::Request;
use rbee_http::{respond_error, SseWriter};

use crate::hive::{worker_not_found, Hive};
use crate::registry::WorkerSpec;
use crate::worker_log::{journalctl, last_lines, tail_file};

/// Most lines a request may ask for.
pub(crate) const MAX_LINES: usize = 10_000;
/// How long a journal stream goes on after its worker has gone, for its last lines.
const JOURNAL_GRACE: Duration = Duration::from_secs(1);
/// Keep-alive (and client-gone check) while following.
const KEEPALIVE: Duration = Duration::from_secs(10);

/// `GET /v1/workers/{id}/logs[?lines=N][&follow=true]`: plain text, or with `follow` an
/// SSE stream of `{"line": …}` events that ends when the worker has gone.
pub(crate) fn serve(hive: &Hive, request: Request, id: &str, lines: usize, follow: bool) {
    let lines = lines.min(MAX_LINES);
    let spec = match hive.registry.get(id) {
        Some(w) => w.spec,
        None => {
            // A worker that has gone still has its log file.
            let path = hive.config.logs_dir().join(format!("{id}.log"));
            if !valid_id(id) || !path.is_file() {
                return respond_error(request, &worker_not_found(id));
            }
            return match tail_file(&path, lines) {
                Ok((l, _)) => respond_text(request, &l),
                Err(e) => respond_error(request, &read_error(&path, &e)),
            };
        }
    };
    match (&spec.log_file, follow) {
        (Some(path), false) => match tail_file(path, lines) {
            Ok((l, _)) => respond_text(request, &l),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => respond_text(request, &[]),
            Err(e) => respond_error(request, &read_error(path, &e)),
        },
        (Some(path), true) => follow_file(hive, request, id, path, lines),
        (None, false) => respond_text(request, &last_lines(hive.user_journal(), &spec, lines)),
        (None, true) => follow_journal(hive, request, &spec, lines),
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

fn read_error(path: &Path, e: &std::io::Error) -> rbee_types::ApiError {
    tracing::error!(path = %path.display(), error = %e, "worker log");
    rbee_types::ApiError::new(
        rbee_types::ErrorCode::Internal,
        format!("cannot read the worker's log file: {e}"),
    )
}

fn respond_text(request: Request, lines: &[String]) {
    let mut body = lines.join("\n");
    if !body.is_empty() {
        body.push('\n');
    }
    let _ = request.respond(rbee_http::Response::from_string(body));
}

fn send_line(sse: &mut SseWriter, line: &str) -> std::io::Result<()> {
    sse.json(&rbee_types::hive::LogLine {
        line: line.to_owned(),
    })
}

fn follow_file(hive: &Hive, request: Request, id: &str, path: &Path, lines: usize) {
    let (first, mut offset) = tail_file(path, lines).unwrap_or_default();
    let Ok(mut sse) = SseWriter::start(request, &[]) else {
        return;
    };
    for l in &first {
        if send_line(&mut sse, l).is_err() {
            return;
        }
    }
    let mut partial = String::new();
    let mut last_write = Instant::now();
    loop {
        let mut grew = false;
        if let Ok(mut f) = std::fs::File::open(path) {
            if f.seek(SeekFrom::Start(offset)).is_ok() {
                let mut buf = Vec::new();
                if let Ok(n) = f.read_to_end(&mut buf) {
                    offset += n as u64;
                    grew = n > 0;
                    partial.push_str(&String::from_utf8_lossy(&buf));
                }
            }
        }
        while let Some(i) = partial.find('\n') {
            let line: String = partial.drain(..=i).collect();
            if send_line(&mut sse, line.trim_end_matches('\n')).is_err() {
                return;
            }
            last_write = Instant::now();
        }
        if !grew && hive.registry.get(id).is_none() {
            let _ = sse.done();
            return;
        }
        if last_write.elapsed() >= KEEPALIVE {
            if sse.comment("keep-alive").is_err() {
                return;
            }
            last_write = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn follow_journal(hive: &Hive, request: Request, spec: &WorkerSpec, lines: usize) {
    let child = journalctl(hive.user_journal(), spec, lines, true)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            let err = rbee_types::ApiError::new(
                rbee_types::ErrorCode::Internal,
                format!("cannot run journalctl: {e}"),
            );
            return respond_error(request, &err);
        }
    };
    let Ok(mut sse) = SseWriter::start(request, &[]) else {
        let _ = child.kill();
        let _ = child.wait();
        return;
    };
    // journalctl -f never ends by itself: its lines come through a channel, and the stream
    // ends once the worker has left the registry and the journal has gone quiet.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    if let Some(out) = child.stdout.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    let mut last_write = Instant::now();
    let mut gone_at: Option<Instant> = None;
    loop {
        match rx.recv_timeout(Duration::from_millis(300)) {
            Ok(line) => {
                if send_line(&mut sse, &line).is_err() {
                    break;
                }
                last_write = Instant::now();
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let _ = sse.done();
                break;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                // journald delivers a stopped unit's last lines a little later.
                if hive.registry.get(&spec.id).is_none() {
                    let since = *gone_at.get_or_insert_with(Instant::now);
                    if since.elapsed() >= JOURNAL_GRACE && last_write.elapsed() >= JOURNAL_GRACE {
                        let _ = sse.done();
                        break;
                    }
                }
                if last_write.elapsed() >= KEEPALIVE {
                    if sse.comment("keep-alive").is_err() {
                        break;
                    }
                    last_write = Instant::now();
                }
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_is_the_last_complete_lines() {
        let dir = std::env::temp_dir().join(format!("rbee-logs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("w.log");
        std::fs::write(&p, "one\ntwo\nthree\npart").unwrap();
        let (lines, offset) = tail_file(&p, 2).unwrap();
        assert_eq!(lines, ["two", "three"]);
        assert_eq!(offset, "one\ntwo\nthree\n".len() as u64);
        std::fs::write(&p, "").unwrap();
        assert_eq!(tail_file(&p, 5).unwrap(), (vec![], 0));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn only_slug_ids_name_log_files() {
        assert!(valid_id("smollm2-135m-instruct.q4_1-2"));
        for bad in ["", "../x", ".hidden", "a/b", "A", "x\n", &"a".repeat(65)] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }
}
