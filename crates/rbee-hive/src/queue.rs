//! Admission to a model's workers: at most as many requests run as the workers have slots;
//! the rest wait in a FIFO per model, bounded in length and in time. A waiter that gives
//! up (its client left, its deadline passed) leaves the line without disturbing the order
//! of the others.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    /// `queue_max` requests wait already.
    #[error("{waiting} requests are already waiting for this model")]
    Full {
        /// How many wait.
        waiting: usize,
    },
    /// The request waited `queue_timeout_secs` without a free slot.
    #[error("no slot of this model came free within {0:?}")]
    TimedOut(Duration),
    /// The caller's `keep_waiting` said no (the client left).
    #[error("the client left while queued")]
    Abandoned,
}

#[derive(Default)]
struct Lane {
    running: u32,
    waiting: VecDeque<u64>,
}

/// The lines of every model (keyed by whatever names a model's workers).
#[derive(Default)]
pub(crate) struct Queues {
    lanes: Mutex<HashMap<String, Lane>>,
    changed: Condvar,
    next_ticket: std::sync::atomic::AtomicU64,
}

/// A running request's claim on a slot; dropping it lets the next waiter in.
pub(crate) struct Permit {
    queues: Arc<Queues>,
    key: String,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut lanes = self.queues.lock();
        if let Some(l) = lanes.get_mut(&self.key) {
            l.running = l.running.saturating_sub(1);
        }
        drop(lanes);
        self.queues.changed.notify_all();
    }
}

impl Queues {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Lane>> {
        self.lanes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Requests waiting now, per key that has had requests.
    pub(crate) fn depths(&self) -> Vec<(String, usize)> {
        self.lock()
            .iter()
            .map(|(k, l)| (k.clone(), l.waiting.len()))
            .collect()
    }

    /// Requests of `key` running and waiting now.
    pub(crate) fn load(&self, key: &str) -> (u32, usize) {
        self.lock()
            .get(key)
            .map_or((0, 0), |l| (l.running, l.waiting.len()))
    }

    /// Waits for a slot of `key`, whose workers have `capacity` slots in all (asked again
    /// on every wake-up: workers come and go). At most `max_waiting` wait at once; each
    /// waits at most `timeout`; `keep_waiting` is asked about once a second (false: the
    /// client left).
    pub(crate) fn enter(
        self: &Arc<Self>,
        key: &str,
        capacity: impl Fn() -> u32,
        max_waiting: usize,
        timeout: Duration,
        mut keep_waiting: impl FnMut() -> bool,
    ) -> Result<Permit, Refused> {
        let ticket = self
            .next_ticket
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let deadline = Instant::now() + timeout;
        let mut lanes = self.lock();
        let lane = lanes.entry(key.to_owned()).or_default();
        if lane.waiting.is_empty() && lane.running < capacity() {
            lane.running += 1;
            return Ok(self.permit(key));
        }
        if lane.waiting.len() >= max_waiting {
            return Err(Refused::Full {
                waiting: lane.waiting.len(),
            });
        }
        lane.waiting.push_back(ticket);
        loop {
            let now = Instant::now();
            let refused = if now >= deadline {
                Some(Refused::TimedOut(timeout))
            } else {
                None
            };
            let lane = lanes.entry(key.to_owned()).or_default();
            if refused.is_none()
                && lane.waiting.front() == Some(&ticket)
                && lane.running < capacity()
            {
                lane.waiting.pop_front();
                lane.running += 1;
                drop(lanes);
                // The next in line may fit too (several slots freed at once).
                self.changed.notify_all();
                return Ok(self.permit(key));
            }
            if let Some(r) = refused {
                lane.waiting.retain(|t| *t != ticket);
                drop(lanes);
                self.changed.notify_all();
                return Err(r);
            }
            let wait = (deadline - now).min(Duration::from_secs(1));
            let (guard, timed_out) = self
                .changed
                .wait_timeout(lanes, wait)
                .unwrap_or_else(|e| e.into_inner());
            lanes = guard;
            if timed_out.timed_out() {
                drop(lanes);
                let keep = keep_waiting();
                lanes = self.lock();
                if !keep {
                    let lane = lanes.entry(key.to_owned()).or_default();
                    lane.waiting.retain(|t| *t != ticket);
                    drop(lanes);
                    self.changed.notify_all();
                    return Err(Refused::Abandoned);
                }
            }
        }
    }

    /// Wakes waiters after a model's capacity changed (a worker became ready or left).
    pub(crate) fn capacity_changed(&self) {
        self.changed.notify_all();
    }

    fn permit(self: &Arc<Self>, key: &str) -> Permit {
        Permit {
            queues: Arc::clone(self),
            key: key.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    const LONG: Duration = Duration::from_secs(10);

    #[test]
    fn requests_beyond_the_slots_wait_in_order() {
        let q = Arc::new(Queues::default());
        let first = q.enter("m", || 1, 8, LONG, || true).unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for i in 0..4 {
            let (q2, order) = (Arc::clone(&q), Arc::clone(&order));
            threads.push(std::thread::spawn(move || {
                let _p = q2.enter("m", || 1, 8, LONG, || true).unwrap();
                order.lock().unwrap().push(i);
                std::thread::sleep(Duration::from_millis(5));
            }));
            // Each thread is in line before the next one starts.
            while q.load("m").1 < i + 1 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        assert_eq!(q.load("m"), (1, 4));
        drop(first);
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            [0, 1, 2, 3],
            "first come, first served"
        );
        assert_eq!(q.load("m"), (0, 0));
    }

    #[test]
    fn a_full_line_and_a_deadline_refuse_and_leave_no_trace() {
        let q = Arc::new(Queues::default());
        let _running = q.enter("m", || 1, 1, LONG, || true).unwrap();
        let q2 = Arc::clone(&q);
        let waiter = std::thread::spawn(move || {
            q2.enter("m", || 1, 1, Duration::from_millis(300), || true)
                .err()
        });
        while q.load("m").1 < 1 {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            q.enter("m", || 1, 1, LONG, || true).err(),
            Some(Refused::Full { waiting: 1 })
        );
        assert!(matches!(waiter.join().unwrap(), Some(Refused::TimedOut(_))));
        assert_eq!(q.load("m"), (1, 0), "the timed-out waiter left the line");
        assert!(
            q.enter("other", || 1, 1, LONG, || true).is_ok(),
            "models have separate lines"
        );
    }

    #[test]
    fn a_waiter_whose_client_left_gives_up_its_place() {
        let q = Arc::new(Queues::default());
        let _running = q.enter("m", || 1, 4, LONG, || true).unwrap();
        let asked = AtomicU32::new(0);
        let t0 = Instant::now();
        let r = q.enter(
            "m",
            || 1,
            4,
            LONG,
            || asked.fetch_add(1, Ordering::Relaxed) < 1,
        );
        assert_eq!(r.err(), Some(Refused::Abandoned));
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
        assert_eq!(q.load("m"), (1, 0));
    }

    #[test]
    fn more_capacity_lets_waiters_in() {
        let q = Arc::new(Queues::default());
        let cap = Arc::new(AtomicU32::new(1));
        let _a = q
            .enter("m", || cap.load(Ordering::Relaxed), 4, LONG, || true)
            .unwrap();
        let (q2, cap2) = (Arc::clone(&q), Arc::clone(&cap));
        let waiter = std::thread::spawn(move || {
            q2.enter("m", || cap2.load(Ordering::Relaxed), 4, LONG, || true)
                .map(|_| ())
        });
        while q.load("m").1 < 1 {
            std::thread::sleep(Duration::from_millis(1));
        }
        cap.store(2, Ordering::Relaxed);
        q.capacity_changed();
        assert!(waiter.join().unwrap().is_ok());
    }
}
