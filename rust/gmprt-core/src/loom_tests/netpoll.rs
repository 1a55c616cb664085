//! Models of the netpoller's blocker role and its readiness rule (netpoll
//! module docs, "Who polls" and "Timers" in `poller.rs`; `readiness.rs`).
//!
//! Under loom the netpoller runs on `sys::model`, whose blocking poll sleeps
//! on a loom condvar until the waker fires or an event is injected. A
//! blocker that nobody wakes therefore leaves every thread blocked, and
//! loom reports the deadlock: the lost-wakeup bugs these models look for
//! fail loudly rather than hang.

use std::time::{Duration, Instant};

use super::check;
use crate::loom::lock;
use crate::loom::sync::atomic::{AtomicUsize, Ordering::*};
use crate::loom::sync::{Arc, Mutex};
use crate::netpoll::{Dir, Netpoll, Ready};
use ::loom::thread;

/// A waiter that counts how often it is readied, per slot of a tally.
#[derive(Debug)]
struct Tw(Arc<[AtomicUsize; 2]>, usize);

impl Ready for Tw {
    fn ready_all(batch: Vec<Tw>) {
        for w in batch {
            w.0[w.1].fetch_add(1, SeqCst);
        }
    }
}

fn tally() -> Arc<[AtomicUsize; 2]> {
    Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)])
}

/// A made-up fd: the model's registry never touches the OS.
const FD: i32 = 1000;

/// One blocker polls while another thread adds a timer that is already due
/// (so earlier than any wake the blocker planned). Whichever comes first,
/// the blocker returns with the timer fired, exactly once, and never sleeps
/// through it; a G parked on I/O (the blocker's reason to block) is left
/// alone.
#[test]
fn an_earlier_timer_wakes_the_blocker() {
    check("netpoll: earlier timer vs blocker", None, || {
        let np = Arc::new(Netpoll::<Tw>::new());
        let h = np.handle().unwrap();
        let seen = tally();
        // The reason to block: one G parked on a registration nobody fires.
        let reg = h.register(FD, false).unwrap();
        let id = reg.park(Dir::Read, Tw(seen.clone(), 1), None);
        assert!(id.is_ok(), "an fd that was never ready parks");

        let blocker = {
            let (np, seen) = (np.clone(), seen.clone());
            thread::spawn(move || {
                // Each poll returns only on a wake or with a finite timeout
                // (then at once, in the model): two polls always suffice.
                for _ in 0..2 {
                    if let Some(mut b) = np.poll(None) {
                        Tw::ready_all(b.take());
                    }
                    if seen[0].load(SeqCst) > 0 {
                        return;
                    }
                }
            })
        };
        h.add_timer(Instant::now(), Tw(seen.clone(), 0))
            .map_err(|_| ())
            .unwrap();
        blocker.join().unwrap();

        assert_eq!(seen[0].load(SeqCst), 1, "the timer fired once");
        assert_eq!(seen[1].load(SeqCst), 0, "the I/O waiter was not woken");
        assert_eq!(np.timers(), 0);
        assert!(reg.cancel(id.unwrap()));
        drop(reg);
        np.stop();
    });
}

/// `stop` while a blocker sleeps (or is about to) with nothing that would
/// ever end its wait: the stop must break it, and the parked waiter is
/// dropped, never readied.
#[test]
fn stop_breaks_the_blocker() {
    check("netpoll: stop vs blocker", None, || {
        let np = Arc::new(Netpoll::<Tw>::new());
        let h = np.handle().unwrap();
        let seen = tally();
        let reg = h.register(FD, false).unwrap();
        assert!(reg.park(Dir::Read, Tw(seen.clone(), 0), None).is_ok());

        let blocker = {
            let np = np.clone();
            thread::spawn(move || {
                if let Some(mut b) = np.poll(None) {
                    Tw::ready_all(b.take());
                }
            })
        };
        np.stop();
        blocker.join().unwrap();

        assert_eq!(seen[0].load(SeqCst), 0, "a stopped netpoller wakes nobody");
        assert!(reg.is_closed());
        assert!(np.poll(None).is_none());
        assert!(h.add_timer(Instant::now(), Tw(seen.clone(), 1)).is_err());
    });
}

/// Readiness with ticks against the poller: a G tries its syscall, finds
/// nothing, clears readiness and parks, while the kernel delivers data and
/// another thread polls. Exactly one of two things happens: the G's own
/// retry gets the data, or the poll wakes the parked G. Never both, never
/// neither (the lost edge: a clear that erased the newer event).
#[test]
fn an_event_is_never_lost_between_wouldblock_and_park() {
    check("netpoll: readiness clear vs event", None, || {
        let np = Arc::new(Netpoll::<Tw>::new());
        let h = np.handle().unwrap();
        let seen = tally();
        // The kernel's socket buffer: whether data waits to be read. A
        // mutex, as in the kernel (and because loom 0.7 gets an atomic
        // `swap` that writes the value it read wrong: see the closing note
        // of issue 9).
        let data = Arc::new(Mutex::new(false));
        let reg = h.register(FD, true).unwrap();

        let kernel = {
            let (np, data) = (np.clone(), data.clone());
            let model = h.model();
            thread::spawn(move || {
                *lock(&data) = true;
                model.inject(FD, 1);
                if let Some(mut b) = np.poll(Some(Duration::ZERO)) {
                    Tw::ready_all(b.take());
                }
            })
        };

        // The G's operation: read until WouldBlock, then park.
        let mut got = false;
        let mut parked = None;
        for _ in 0..3 {
            let ev = reg.readiness(Dir::Read);
            if ev.ready && std::mem::take(&mut *lock(&data)) {
                got = true;
                break;
            }
            reg.clear_readiness(ev);
            match reg.park(Dir::Read, Tw(seen.clone(), 0), None) {
                Ok(id) => {
                    parked = Some(id);
                    break;
                }
                Err(_) => continue,
            }
        }
        kernel.join().unwrap();

        let woken = seen[0].load(SeqCst);
        match parked {
            Some(id) => {
                assert_eq!(woken, 1, "a parked G is woken by the event");
                assert!(!reg.cancel(id), "and only once");
            }
            None => {
                assert!(got, "the retry loop ended without data or a park");
                assert_eq!(woken, 0);
            }
        }
        drop(reg);
        np.stop();
    });
}
