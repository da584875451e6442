//! Where a download's bytes go: a three-stage pipeline. The caller's thread only receives
//! from the socket into whole chunks; a writer thread puts each chunk into the partial file,
//! then a hashing thread feeds it to SHA-256 and returns the buffer to a small pool. Nothing
//! is copied or allocated per chunk, and the receiving thread never waits on the disk or the
//! hash while a free buffer is left.
//!
//! The writer uses direct I/O (`O_DIRECT`) on local disk filesystems ([`direct_io`]): the bytes go from
//! the chunk to the disk without a copy into the page cache, so a download costs little CPU
//! (on a small machine the hash, the copy and the sender compete for the same cores) and does
//! not push the running workers' model pages out of memory. Chunks that do not start and end
//! on a 4 KiB boundary (the head of a resumed file, the file's last bytes) and filesystems
//! without direct I/O go through the page cache, with writeback started every few MiB so the
//! final fsync finds little left to write.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

/// Bytes per chunk.
pub const CHUNK: usize = 1 << 20;

/// Direct I/O's alignment of offsets, lengths and memory.
pub const ALIGN: usize = 4096;

/// Chunks in flight (receiving, writing, hashing or waiting): the pipeline's memory.
const POOL: usize = 8;

/// Bytes written through the page cache are handed to the kernel's writeback this often.
const WRITEBACK_CHUNK: u64 = 8 << 20;

/// A chunk buffer: [`CHUNK`] bytes starting on an [`ALIGN`] boundary.
pub struct Buf {
    mem: Vec<u8>,
    start: usize,
}

impl Buf {
    fn new() -> Buf {
        let mem = vec![0u8; CHUNK + ALIGN];
        let start = mem.as_ptr().align_offset(ALIGN).min(ALIGN);
        Buf { mem, start }
    }

    /// The chunk's bytes, to receive into.
    pub fn as_mut(&mut self) -> &mut [u8] {
        &mut self.mem[self.start..self.start + CHUNK]
    }

    fn data(&self, n: usize) -> &[u8] {
        &self.mem[self.start..self.start + n]
    }
}

/// A buffer and how many of its bytes are data.
type Chunk = (Buf, usize);

/// The partial file, written at explicit offsets.
struct Writer {
    buffered: File,
    /// The same file opened with `O_DIRECT`, where the filesystem supports it.
    direct: Option<File>,
    end: u64,
    flushed: u64,
}

impl Writer {
    fn open(path: &Path, end: u64) -> io::Result<Writer> {
        let buffered = OpenOptions::new().write(true).open(path)?;
        Ok(Writer {
            buffered,
            direct: open_direct(path),
            end,
            flushed: end,
        })
    }

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let end = self.end + data.len() as u64;
        if self.write_direct(data)? {
            self.flushed = end;
        } else {
            self.buffered.write_all_at(data, self.end)?;
            if end - self.flushed >= WRITEBACK_CHUNK {
                start_writeback(&self.buffered, self.flushed, end - self.flushed);
                self.flushed = end;
            }
        }
        self.end = end;
        Ok(())
    }

    /// Writes `data` with direct I/O if it can; `false` when it must go through the page
    /// cache (no direct I/O here, or not on 4 KiB boundaries).
    fn write_direct(&mut self, data: &[u8]) -> io::Result<bool> {
        let Some(d) = &self.direct else {
            return Ok(false);
        };
        if self.end % ALIGN as u64 != 0 || data.len() % ALIGN != 0 {
            return Ok(false);
        }
        match d.write_all_at(data, self.end) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                // The device wants a larger alignment: the page cache from here on.
                tracing::debug!("direct I/O refused ({e}); writing through the page cache");
                self.direct = None;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

/// The write-and-hash pipeline of one download attempt.
pub struct Sink {
    to_writer: Option<SyncSender<Chunk>>,
    pool: Receiver<Buf>,
    writer: Option<JoinHandle<io::Result<()>>>,
    hasher: Option<JoinHandle<Sha256>>,
}

impl Sink {
    /// Starts the pipeline on the partial file at `path`, which holds `written` bytes already
    /// (`hasher` has seen them); pushed chunks follow them.
    pub fn new(path: &Path, written: u64, hasher: Sha256) -> io::Result<Sink> {
        Ok(Self::start(Writer::open(path, written)?, hasher))
    }

    fn start(mut out: Writer, mut hasher: Sha256) -> Sink {
        let (to_writer, writer_rx) = sync_channel::<Chunk>(POOL);
        let (to_hasher, hasher_rx) = sync_channel::<Chunk>(POOL);
        let (back, pool) = channel::<Buf>();
        for _ in 0..POOL {
            let _ = back.send(Buf::new());
        }
        let writer = std::thread::Builder::new()
            .name("download-write".into())
            .spawn(move || -> io::Result<()> {
                for (buf, n) in writer_rx {
                    out.write(buf.data(n))?;
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
                    hasher.update(buf.data(n));
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

    /// How many bytes to receive into the next chunk when `offset` bytes of the file are
    /// there: a whole chunk, or less after a resumed head so later chunks stay aligned.
    pub fn next_len(offset: u64) -> usize {
        CHUNK - (offset % ALIGN as u64) as usize
    }

    /// A free buffer; waits while all are in flight. `None` once the writer has stopped on
    /// an error ([`Sink::finish`] returns it).
    pub fn buffer(&self) -> Option<Buf> {
        self.pool.recv().ok()
    }

    /// Hands the first `n` bytes of `buf` on to be written and hashed. `false` once the
    /// writer has stopped on an error.
    pub fn push(&self, buf: Buf, n: usize) -> bool {
        self.to_writer
            .as_ref()
            .is_some_and(|tx| tx.send((buf, n)).is_ok())
    }

    /// Waits until everything pushed is written and hashed; the hash, or the writer's error.
    /// (The caller still fsyncs the file.)
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

/// Local disk filesystems whose direct I/O goes straight to the device (`linux/magic.h`):
/// ext2/3/4, XFS, Btrfs, F2FS, bcachefs. Elsewhere direct I/O is slower than the page cache
/// (NFS and SMB send every write synchronously), means nothing (tmpfs) or is not there.
const DIRECT_IO_FILESYSTEMS: [u64; 5] =
    [0xEF53, 0x5846_5342, 0x9123_683E, 0xF2F5_2010, 0xCA45_1A4E];

/// Whether downloads into `dir` bypass the page cache: a local disk filesystem that accepts
/// `O_DIRECT` (Linux only).
pub fn direct_io(dir: &Path) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
            return false;
        };
        // SAFETY: statfs writes into the zeroed struct; the path is a valid C string.
        let f_type = unsafe {
            let mut s: libc::statfs = std::mem::zeroed();
            if libc::statfs(c.as_ptr(), &mut s) != 0 {
                return false;
            }
            s.f_type as u64 & 0xffff_ffff
        };
        DIRECT_IO_FILESYSTEMS.contains(&f_type)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        false
    }
}

/// `path` opened for direct I/O, or `None` where [`direct_io`] says no or the open fails.
fn open_direct(path: &Path) -> Option<File> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        if !direct_io(path) {
            return None;
        }
        match OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
        {
            Ok(f) => return Some(f),
            Err(e) => tracing::debug!(path = %path.display(), "no direct I/O here ({e})"),
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = path;
    None
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

    /// Pushes `data` as the receiver does; false once the pipeline refuses.
    fn pushed(sink: &Sink, mut offset: u64, mut data: &[u8]) -> bool {
        while !data.is_empty() {
            let n = Sink::next_len(offset).min(data.len());
            let Some(mut buf) = sink.buffer() else {
                return false;
            };
            buf.as_mut()[..n].copy_from_slice(&data[..n]);
            if !sink.push(buf, n) {
                return false;
            }
            (offset, data) = (offset + n as u64, &data[n..]);
        }
        true
    }

    /// A resumed file (a head of 1,000 bytes) completed by the pipeline, directly or through
    /// the page cache.
    fn resume_and_complete(direct: bool) {
        let dir = std::env::temp_dir().join(format!("rbee-sink-{}-{direct}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.partial");
        let data: Vec<u8> = (0..(3 * CHUNK + 12_345))
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let (head, tail) = data.split_at(1000);
        std::fs::write(&path, head).unwrap();
        let mut out = Writer::open(&path, head.len() as u64).unwrap();
        if !direct {
            out.direct = None;
        } else if out.direct.is_none() {
            eprintln!("SKIP: no direct I/O in {}", dir.display());
            return;
        }
        let sink = Sink::start(out, Sha256::new_with_prefix(head));
        assert!(pushed(&sink, head.len() as u64, tail));
        let got = sink.finish().unwrap().finalize();
        assert_eq!(got, Sha256::digest(&data));
        assert_eq!(std::fs::read(&path).unwrap(), data);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_resumed_file_is_completed_in_order_and_hashed_with_what_was_there() {
        resume_and_complete(true);
    }

    #[test]
    fn without_direct_io_the_page_cache_path_writes_the_same_bytes() {
        resume_and_complete(false);
    }

    #[test]
    fn direct_io_only_on_local_disk_filesystems() {
        // /dev/shm is tmpfs (direct I/O means nothing there); /proc is not a disk either.
        assert!(!direct_io(Path::new("/dev/shm")));
        assert!(!direct_io(Path::new("/proc")));
        assert!(!direct_io(Path::new("/no/such/dir")));
    }

    #[test]
    fn a_write_error_stops_the_pipeline_and_comes_back_from_finish() {
        // /dev/full fails every write with ENOSPC, as a full disk does.
        let sink = Sink::new(Path::new("/dev/full"), 0, Sha256::new()).unwrap();
        // More than the pool holds: pushing must notice the dead writer, not block forever.
        let data = vec![7u8; (POOL + 4) * CHUNK];
        assert!(
            !pushed(&sink, 0, &data),
            "pushing went on after the writer failed"
        );
        let err = sink.finish().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    }
}
