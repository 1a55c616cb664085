//! deadline: one process-wide thread that runs callbacks at deadlines, for
//! the timeouts of parked operations (`select(..., timeout=)`).
//!
//! A stopgap until the netpoller's timers (issue 3) land: then a select's
//! timeout should become a netpoll timer, and this module go. It is kept
//! deliberately small: a binary heap under one mutex, a condvar the thread
//! sleeps on until the earliest deadline. Callbacks run on the timer thread
//! with no lock held, and must not block: they expire an operation and wake
//! its waiter.
//!
//! [`pending`] counts armed timers, for deadlock detection: a G in a select
//! with a timeout is not deadlocked while its timer is armed. So the count
//! must be exact: [`Timer::cancel`] (called when the operation finishes
//! first) disarms at once and the heap entry is dropped lazily, and a
//! firing timer is disarmed before its callback runs (the G it wakes runs
//! afterwards, and only then can the runtime go idle and check).

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Instant;

type Callback = Box<dyn FnOnce() + Send>;

struct Entry {
    when: Instant,
    seq: u64,
    /// Set by whoever disarms the timer first: a cancel, or the firing.
    disarmed: Arc<AtomicBool>,
    fire: Callback,
}

/// An armed timer (see [`after`]).
#[derive(Debug)]
pub struct Timer(Arc<AtomicBool>);

impl Timer {
    /// Disarms the timer: its callback will not run. Returns false if it
    /// already ran (or is running) or was cancelled.
    pub fn cancel(&self) -> bool {
        let won = !self.0.swap(true, AcqRel);
        if won {
            if let Some(t) = TIMERS.get() {
                t.armed.fetch_sub(1, SeqCst);
            }
        }
        won
    }
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

/// Runs `fire` on the deadline thread at (or soon after) `when`, unless the
/// returned timer is cancelled first.
pub fn after(when: Instant, fire: impl FnOnce() + Send + 'static) -> Timer {
    let t = timers();
    let disarmed = Arc::new(AtomicBool::new(false));
    t.armed.fetch_add(1, SeqCst);
    let mut h = t.heap.lock().unwrap_or_else(|p| p.into_inner());
    let seq = h.1;
    h.1 += 1;
    let earliest = h.0.peek().is_none_or(|e| when < e.when);
    h.0.push(Entry {
        when,
        seq,
        disarmed: disarmed.clone(),
        fire: Box::new(fire),
    });
    drop(h);
    if earliest {
        t.cv.notify_one();
    }
    Timer(disarmed)
}

/// Armed timers now: neither fired nor cancelled.
pub fn pending() -> usize {
    TIMERS.get().map_or(0, |t| t.armed.load(SeqCst))
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
                if !e.disarmed.swap(true, AcqRel) {
                    t.armed.fetch_sub(1, SeqCst);
                    (e.fire)();
                }
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
    fn cancelled_timers_do_not_fire_and_are_not_pending() {
        let (tx, rx) = mpsc::channel();
        let t = after(Instant::now() + Duration::from_millis(10), move || {
            tx.send(()).unwrap()
        });
        assert!(t.cancel());
        assert!(!t.cancel());
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
    }

    #[test]
    fn fires_in_deadline_order() {
        let (tx, rx) = mpsc::channel();
        let now = Instant::now();
        for (i, ms) in [30u64, 10, 20].into_iter().enumerate() {
            let tx = tx.clone();
            let _ = after(now + Duration::from_millis(ms), move || tx.send(i).unwrap());
        }
        let got: Vec<usize> = (0..3)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        assert_eq!(got, vec![1, 2, 0]);
    }
}
