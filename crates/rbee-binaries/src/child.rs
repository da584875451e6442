//! Child processes that never outlive the hive: their own process group, signals
//! unblocked (the hive blocks SIGTERM in every thread), and `PR_SET_PDEATHSIG`.
//!
//! That signal follows the *thread* that forked, so the thread that spawns the child must
//! live as long as the child (a thread that waits for it, or one long-lived spawner).

use std::os::unix::process::CommandExt;
use std::process::Command;

/// Prepares `cmd` so the child leads its own process group and gets SIGKILL when the
/// spawning thread (and so the hive) ends.
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            libc::setpgid(0, 0);
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent died between fork and prctl: do not run as an orphan.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// Sends `signal` to the process group `pgid` leads (the child and what it started).
pub fn signal_group(pgid: u32, signal: i32) {
    // SAFETY: kill has no memory-safety preconditions; a negative pid names a group.
    unsafe {
        libc::kill(-(pgid as i32), signal);
    }
}
