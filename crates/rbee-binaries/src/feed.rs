//! An append-only list of events that several readers follow at their own pace (the
//! lines of a build, streamed to every client that asked for it).

use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Events in order, plus whether the last one has been pushed.
pub struct Feed<T> {
    state: Mutex<(Vec<T>, bool)>,
    changed: Condvar,
}

impl<T: Clone> Default for Feed<T> {
    fn default() -> Self {
        Self {
            state: Mutex::new((Vec::new(), false)),
            changed: Condvar::new(),
        }
    }
}

impl<T: Clone> Feed<T> {
    /// Appends an event.
    pub fn push(&self, event: T) {
        self.lock().0.push(event);
        self.changed.notify_all();
    }

    /// Appends the last event; readers stop after it.
    pub fn finish(&self, event: T) {
        let mut s = self.lock();
        s.0.push(event);
        s.1 = true;
        drop(s);
        self.changed.notify_all();
    }

    /// The events from index `from` on, waiting at most `timeout` for one to arrive; and
    /// whether the feed has ended.
    pub fn since(&self, from: usize, timeout: Duration) -> (Vec<T>, bool) {
        let guard = self.lock();
        let (s, _) = self
            .changed
            .wait_timeout_while(guard, timeout, |s| s.0.len() <= from && !s.1)
            .unwrap_or_else(|e| e.into_inner());
        (s.0.get(from..).map(<[T]>::to_vec).unwrap_or_default(), s.1)
    }

    /// The last event, if any.
    pub fn last(&self) -> Option<T> {
        self.lock().0.last().cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Vec<T>, bool)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
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
}
