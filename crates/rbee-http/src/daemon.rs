//! What every rbee daemon does around its HTTP server: sd-notify messages, the watchdog
//! tick, and SIGTERM/SIGINT taken synchronously with sigwait.

use std::time::Duration;

use sd_notify::NotifyState;

/// Sends sd-notify states; a no-op outside systemd (no `NOTIFY_SOCKET`).
pub fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// Whether systemd wants watchdog pings, and how often to send status and pings: half the
/// watchdog interval, at most every 2 s.
pub fn status_tick() -> (bool, Duration) {
    let watchdog = sd_notify::watchdog_enabled();
    let tick = watchdog.map_or(Duration::from_secs(2), |w| {
        (w / 2).min(Duration::from_secs(2))
    });
    (watchdog.is_some(), tick)
}

fn termination_set() -> libc::sigset_t {
    // SAFETY: plain libc calls on a stack-allocated, initialised sigset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        set
    }
}

/// Blocks SIGTERM and SIGINT in this thread and every thread spawned after it, so that
/// only [`wait_for_termination`] receives them. Call it first thing in `main`.
pub fn block_termination_signals() {
    let set = termination_set();
    // SAFETY: the set is initialised.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Waits for SIGTERM or SIGINT; returns the signal number.
pub fn wait_for_termination() -> i32 {
    let set = termination_set();
    let mut sig: libc::c_int = 0;
    loop {
        // SAFETY: sigwait writes the received signal into `sig`.
        if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
            return sig;
        }
    }
}
