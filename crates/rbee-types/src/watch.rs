//! How the progress of a shared job (a download, a build) is followed by every thread that
//! asked for it: [`Watched`], a value whose every change wakes its waiters, and [`Feed`],
//! the events of a job in order on top of it. A download's followers want the latest
//! progress (`Watched<DownloadProgress>`); a build's want every line (`Feed<BuildEvent>`).

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// A value and how many times it has changed (its version), shared by threads.
pub struct Watched<S> {
    state: Mutex<(u64, S)>,
    changed: Condvar,
}

impl<S> Watched<S> {
    /// A value at version 1: a follower that has seen nothing (version 0) reads it at once.
    pub fn new(value: S) -> Self {
        Self {
            state: Mutex::new((1, value)),
            changed: Condvar::new(),
        }
    }

    /// Changes the value, counts a new version and wakes every waiter.
    pub fn update<R>(&self, change: impl FnOnce(&mut S) -> R) -> R {
        let mut s = self.lock();
        s.0 += 1;
        let r = change(&mut s.1);
        drop(s);
        self.changed.notify_all();
        r
    }

    /// Reads the version and the value.
    pub fn read<R>(&self, look: impl FnOnce(u64, &S) -> R) -> R {
        let s = self.lock();
        look(s.0, &s.1)
    }

    /// Waits at most `timeout` until `ready(version, value)` holds, then reads (whether it
    /// holds or the time is up).
    pub fn wait_until<R>(
        &self,
        timeout: Duration,
        mut ready: impl FnMut(u64, &S) -> bool,
        look: impl FnOnce(u64, &S) -> R,
    ) -> R {
        let guard = self.lock();
        let (s, _) = self
            .changed
            .wait_timeout_while(guard, timeout, |s| !ready(s.0, &s.1))
            .unwrap_or_else(|e| e.into_inner());
        look(s.0, &s.1)
    }

    fn lock(&self) -> MutexGuard<'_, (u64, S)> {
        // A panic while a value was being changed leaves a value still worth reading.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<S: Clone> Watched<S> {
    /// The version and the value once it is newer than version `seen` (or now, when
    /// `timeout` passes first).
    pub fn newer_than(&self, seen: u64, timeout: Duration) -> (u64, S) {
        self.wait_until(timeout, |v, _| v != seen, |v, s| (v, s.clone()))
    }
}

/// Events in order, plus whether the last one has come: several readers follow it at their
/// own pace (the lines of a build, streamed to every client that asked for it).
pub struct Feed<T>(Watched<(Vec<T>, bool)>);

impl<T> Default for Feed<T> {
    fn default() -> Self {
        Self(Watched::new((Vec::new(), false)))
    }
}

impl<T: Clone> Feed<T> {
    /// Appends an event.
    pub fn push(&self, event: T) {
        self.0.update(|(events, _)| events.push(event));
    }

    /// Appends the last event; readers stop after it.
    pub fn finish(&self, event: T) {
        self.0.update(|(events, ended)| {
            events.push(event);
            *ended = true;
        });
    }

    /// The events from index `from` on, waiting at most `timeout` for one to arrive; and
    /// whether the feed has ended.
    pub fn since(&self, from: usize, timeout: Duration) -> (Vec<T>, bool) {
        self.0.wait_until(
            timeout,
            |_, (events, ended)| events.len() > from || *ended,
            |_, (events, ended)| {
                let new = events.get(from..).map(<[T]>::to_vec).unwrap_or_default();
                (new, *ended)
            },
        )
    }

    /// The last event, if any.
    pub fn last(&self) -> Option<T> {
        self.0.read(|_, (events, _)| events.last().cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_late_reader_gets_everything_and_the_end() {
        let f = Arc::new(Feed::default());
        let g = f.clone();
        let t = std::thread::spawn(move || {
            let mut seen = vec![];
            loop {
                let (new, done) = g.since(seen.len(), Duration::from_secs(5));
                seen.extend(new);
                if done {
                    return seen;
                }
            }
        });
        for i in 0..100 {
            f.push(i);
        }
        f.finish(100);
        assert_eq!(t.join().unwrap(), (0..=100).collect::<Vec<_>>());
        assert_eq!(f.since(200, Duration::ZERO), (vec![], true));
        assert_eq!(f.last(), Some(100));
    }

    #[test]
    fn a_watcher_wakes_on_a_change_and_gets_the_latest_value() {
        let w = Arc::new(Watched::new("queued"));
        // A follower that has seen nothing gets the first value at once.
        assert_eq!(w.newer_than(0, Duration::from_secs(5)), (1, "queued"));
        let w2 = w.clone();
        let t = std::thread::spawn(move || w2.newer_than(1, Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(20));
        w.update(|s| *s = "half");
        w.update(|s| *s = "done");
        let (v, s) = t.join().unwrap();
        assert!(v >= 2 && (s == "half" || s == "done"), "{v} {s}");
        assert_eq!(w.newer_than(1, Duration::ZERO), (3, "done"));
        // Nothing newer: the time is up and the value is the current one.
        assert_eq!(w.newer_than(3, Duration::from_millis(10)), (3, "done"));
    }
}
