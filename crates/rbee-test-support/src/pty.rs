//! A pseudo-terminal for a child's stdin and stdout, so a program that behaves differently
//! at a terminal (an interactive chat) can be driven by a test: lines typed into it, what
//! it prints collected.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The terminal's side the test holds.
pub struct Pty {
    master: File,
    screen: Arc<Mutex<String>>,
}

impl Pty {
    /// Starts `cmd` with a new pseudo-terminal as its stdin and stdout (stderr as the
    /// command says).
    pub fn spawn(cmd: &mut Command) -> (Child, Pty) {
        let (mut m, mut s) = (0, 0);
        // SAFETY: openpty writes two descriptors into the integers it is given.
        let rc = unsafe {
            libc::openpty(
                &mut m,
                &mut s,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened and are owned here alone.
        let (master, slave) = unsafe { (File::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
        let child = cmd
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave))
            .spawn()
            .unwrap();
        let screen = Arc::new(Mutex::new(String::new()));
        let (mut reader, seen) = (master.try_clone().unwrap(), screen.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once the child and every copy of the terminal's side are gone.
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                seen.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        (child, Pty { master, screen })
    }

    /// Types `line` and Enter.
    pub fn type_line(&mut self, line: &str) {
        self.master
            .write_all(format!("{line}\r").as_bytes())
            .unwrap();
    }

    /// Types raw bytes (`\x04` is Ctrl+D, `\x03` Ctrl+C).
    pub fn type_raw(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).unwrap();
    }

    /// Everything printed so far (with the terminal's echo of what was typed).
    pub fn screen(&self) -> String {
        self.screen.lock().unwrap().clone()
    }

    /// Waits until `pattern` appears `count` times on the screen; the screen, or a panic
    /// with it after `timeout`.
    pub fn wait_for(&self, pattern: &str, count: usize, timeout: Duration) -> String {
        let t0 = Instant::now();
        loop {
            let s = self.screen();
            if s.matches(pattern).count() >= count {
                return s;
            }
            assert!(
                t0.elapsed() < timeout,
                "{pattern:?} did not appear {count} times within {timeout:?}:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
