//! Where a download's bytes go: a three-stage pipeline. The caller's thread only receives
//! from the socket into whole chunks; a writer thread appends each chunk to the partial file
//! (and starts its writeback), then a hashing thread feeds it to SHA-256 and returns the
//! buffer to a small pool. Nothing is copied or allocated per chunk, and the receiving thread
//! never waits on the disk or the hash while a free buffer is left, so the sender on the
//! other end of the socket is never held up by them either.

use std::fs::File;
use std::io::{self, Write};
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

/// Bytes per chunk.
pub const CHUNK: usize = 1 << 20;

/// Chunks in flight (receiving, writing, hashing or waiting): the pipeline's memory.
const POOL: usize = 8;

/// Written bytes handed to the kernel's writeback this often, so the final fsync finds
/// little left to write (it was the slowest part of a download on loopback).
const WRITEBACK_CHUNK: u64 = 8 << 20;

/// A chunk buffer and how many of its bytes are data.
type Chunk = (Vec<u8>, usize);

/// The write-and-hash pipeline of one download attempt.
pub struct Sink {
    to_writer: Option<SyncSender<Chunk>>,
    pool: Receiver<Vec<u8>>,
    writer: Option<JoinHandle<io::Result<()>>>,
    hasher: Option<JoinHandle<Sha256>>,
}

impl Sink {
    /// Starts the pipeline: `file` is appended to (it holds `written` bytes already, which
    /// `hasher` has seen).
    pub fn new(mut file: File, written: u64, mut hasher: Sha256) -> Sink {
        let (to_writer, writer_rx) = sync_channel::<Chunk>(POOL);
        let (to_hasher, hasher_rx) = sync_channel::<Chunk>(POOL);
        let (back, pool) = channel::<Vec<u8>>();
        for _ in 0..POOL {
            let _ = back.send(vec![0u8; CHUNK]);
        }
        let writer = std::thread::Builder::new()
            .name("download-write".into())
            .spawn(move || -> io::Result<()> {
                let (mut end, mut flushed) = (written, written);
                for (buf, n) in writer_rx {
                    file.write_all(&buf[..n])?;
                    end += n as u64;
                    if end - flushed >= WRITEBACK_CHUNK {
                        start_writeback(&file, flushed, end - flushed);
                        flushed = end;
                    }
                    if to_hasher.send((buf, n)).is_err() {
                        break;
                    }
                }
                Ok(())
            })
            .expect("spawning the download's writer thread");
        let hasher = std::thread::Builder::new()
            .name("download-sha256".into())
            .spawn(move || {
                for (buf, n) in hasher_rx {
                    hasher.update(&buf[..n]);
                    let _ = back.send(buf);
                }
                hasher
            })
            .expect("spawning the download's hashing thread");
        Sink {
            to_writer: Some(to_writer),
            pool,
            writer: Some(writer),
            hasher: Some(hasher),
        }
    }

    /// A free buffer of [`CHUNK`] bytes; waits while all are in flight. `None` once the
    /// writer has stopped on an error ([`Sink::finish`] returns it).
    pub fn buffer(&self) -> Option<Vec<u8>> {
        self.pool.recv().ok()
    }

    /// Hands the first `n` bytes of `buf` on to be written and hashed. `false` once the
    /// writer has stopped on an error.
    pub fn push(&self, buf: Vec<u8>, n: usize) -> bool {
        self.to_writer
            .as_ref()
            .is_some_and(|tx| tx.send((buf, n)).is_ok())
    }

    /// Waits until everything pushed is written and hashed; the hash, or the writer's error.
    pub fn finish(mut self) -> io::Result<Sha256> {
        self.to_writer = None;
        let written = self.writer.take().map_or(Ok(()), |h| {
            h.join()
                .unwrap_or_else(|_| Err(io::Error::other("the writer thread panicked")))
        });
        let hash = self.hasher.take().and_then(|h| h.join().ok());
        written?;
        hash.ok_or_else(|| io::Error::other("the hashing thread panicked"))
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        // An attempt that fails part-way: let both threads drain and end.
        self.to_writer = None;
        if let Some(h) = self.writer.take() {
            let _ = h.join();
        }
        if let Some(h) = self.hasher.take() {
            let _ = h.join();
        }
    }
}

/// Starts writing back a range of the file without waiting (Linux; elsewhere a no-op).
fn start_writeback(f: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain syscall on an open descriptor; it only schedules I/O.
        unsafe {
            libc::sync_file_range(
                f.as_raw_fd(),
                offset as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (f, offset, len);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pushed(sink: &Sink, data: &[u8]) -> bool {
        for part in data.chunks(CHUNK / 2 + 7) {
            let Some(mut buf) = sink.buffer() else {
                return false;
            };
            buf[..part.len()].copy_from_slice(part);
            if !sink.push(buf, part.len()) {
                return false;
            }
        }
        true
    }

    #[test]
    fn what_is_pushed_is_appended_in_order_and_hashed_with_what_was_there() {
        let dir = std::env::temp_dir().join(format!("rbee-sink-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.partial");
        let data: Vec<u8> = (0..(3 * CHUNK + 12_345))
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let (head, tail) = data.split_at(1000);
        std::fs::write(&path, head).unwrap();
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        let sink = Sink::new(file, head.len() as u64, Sha256::new_with_prefix(head));
        assert!(pushed(&sink, tail));
        let got = sink.finish().unwrap().finalize();
        assert_eq!(got, Sha256::digest(&data));
        assert_eq!(std::fs::read(&path).unwrap(), data);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_write_error_stops_the_pipeline_and_comes_back_from_finish() {
        // /dev/full fails every write with ENOSPC, as a full disk does.
        let Ok(file) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
            eprintln!("SKIP: no /dev/full here");
            return;
        };
        let sink = Sink::new(file, 0, Sha256::new());
        // More than the pool holds: pushing must notice the dead writer, not block forever.
        let data = vec![7u8; (POOL + 4) * CHUNK];
        assert!(
            !pushed(&sink, &data),
            "pushing went on after the writer failed"
        );
        let err = sink.finish().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    }
}
