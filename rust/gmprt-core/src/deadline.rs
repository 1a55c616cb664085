//! deadline: one process-wide thread that runs callbacks at deadlines, for
//! the timeouts of parked operations (`select(..., timeout=)`).
//!
//! A stopgap until the netpoller's timers (issue 3) land: then a select's
//! timeout should become a netpoll timer, and this module go. It is kept
//! deliberately small: a binary heap under one mutex, a condvar the thread
//! sleeps on until the earliest deadline, lazy cancellation (a callback that
//! finds its operation already done does nothing; the entry just waits for
//! its deadline). Callbacks run on the timer thread with no lock held, and
//! must not block: they expire an operation and wake its waiter.
//!
//! [`pending`] counts armed entries, for deadlock detection: a G in a select
//! with a timeout is not deadlocked while its timer is armed.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicUsize, Ordering::*};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Instant;

type Callback = Box<dyn FnOnce() + Send>;

struct Entry {
    when: Instant,
    seq: u64,
    fire: Callback,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        (self.when, self.seq) == (o.when, o.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    /// Reversed: `BinaryHeap` is a max-heap and we want the earliest first.
    fn cmp(&self, o: &Self) -> CmpOrdering {
        (o.when, o.seq).cmp(&(self.when, self.seq))
    }
}

struct Timers {
    heap: Mutex<(BinaryHeap<Entry>, u64)>,
    cv: Condvar,
    armed: AtomicUsize,
}

static TIMERS: OnceLock<Timers> = OnceLock::new();

fn timers() -> &'static Timers {
    TIMERS.get_or_init(|| {
        std::thread::Builder::new()
            .name("gmprt-deadline".into())
            .spawn(run)
            .expect("cannot start the gmprt deadline thread");
        Timers {
            heap: Mutex::new((BinaryHeap::new(), 0)),
            cv: Condvar::new(),
            armed: AtomicUsize::new(0),
        }
    })
}

/// Runs `fire` on the deadline thread at (or soon after) `when`.
pub fn after(when: Instant, fire: impl FnOnce() + Send + 'static) {
    let t = timers();
    let mut h = t.heap.lock().unwrap_or_else(|p| p.into_inner());
    let seq = h.1;
    h.1 += 1;
    let earliest = h.0.peek().is_none_or(|e| when < e.when);
    h.0.push(Entry {
        when,
        seq,
        fire: Box::new(fire),
    });
    t.armed.fetch_add(1, Relaxed);
    drop(h);
    if earliest {
        t.cv.notify_one();
    }
}

/// Armed deadlines (including ones whose operation finished early: they
/// stay until their time comes).
pub fn pending() -> usize {
    TIMERS.get().map_or(0, |t| t.armed.load(Relaxed))
}

fn run() {
    let t = timers();
    let mut h = t.heap.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let now = Instant::now();
        match h.0.peek() {
            Some(e) if e.when <= now => {
                let e = h.0.pop().expect("peeked");
                drop(h);
                (e.fire)();
                t.armed.fetch_sub(1, Relaxed);
                h = t.heap.lock().unwrap_or_else(|p| p.into_inner());
            }
            Some(e) => {
                let left = e.when - now;
                h =
                    t.cv.wait_timeout(h, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
            }
            None => h = t.cv.wait(h).unwrap_or_else(|p| p.into_inner()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn fires_in_deadline_order() {
        let (tx, rx) = mpsc::channel();
        let now = Instant::now();
        for (i, ms) in [30u64, 10, 20].into_iter().enumerate() {
            let tx = tx.clone();
            after(now + Duration::from_millis(ms), move || tx.send(i).unwrap());
        }
        let got: Vec<usize> = (0..3)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        assert_eq!(got, vec![1, 2, 0]);
    }
}
