//! The netpoller's unit tests: real epoll, real sockets, a driver thread
//! that polls the way the Ms do.

use super::*;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;

/// A waiter that reports its id on a channel when readied.
#[derive(Debug)]
struct W(u32, mpsc::Sender<u32>);
impl Ready for W {
    fn ready_all(batch: Vec<W>) {
        for w in batch {
            let _ = w.1.send(w.0);
        }
    }
}

const LONG: Duration = Duration::from_secs(10);

/// Runs `test` on a fresh netpoller that another thread polls the way
/// the scheduler's Ms do: one blocking poll after another, readying each
/// batch before dropping it. Stops the netpoller afterwards.
fn driven(test: impl FnOnce(&Netpoll<W>)) {
    /// Ends the driver even when `test` panics: `thread::scope` joins
    /// it before the panic propagates, and it may block for an hour.
    struct Finish<'a>(&'a Netpoll<W>, &'a AtomicBool);
    impl Drop for Finish<'_> {
        fn drop(&mut self) {
            // Release: pairs with the driver's Acquire load.
            self.1.store(true, Release);
            self.0.stop();
        }
    }
    let np = Netpoll::<W>::new();
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Acquire) {
                match np.poll(None) {
                    Some(mut b) => W::ready_all(b.take()),
                    // Nothing to wait for (or not started, or stopped).
                    None => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        });
        let _finish = Finish(&np, &done);
        test(&np);
    });
}

fn wait_for(cond: impl Fn() -> bool) -> bool {
    let end = Instant::now() + LONG;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

#[test]
fn timers_fire_in_order_and_never_early() {
    driven(|np| {
        let h = np.handle().unwrap();
        let (tx, rx) = mpsc::channel();
        let start = Instant::now();
        let mut whens = Vec::new();
        for i in 0..200u32 {
            let when = start
                + Duration::from_millis(50)
                + Duration::from_micros(u64::from(i * 7919 % 200) * 250);
            whens.push(when);
            h.add_timer(when, W(i, tx.clone())).unwrap();
        }
        assert_eq!(np.timers(), 200);
        let mut last = Instant::now() - LONG;
        let mut last_when = start;
        for _ in 0..200 {
            let i = rx.recv_timeout(LONG).expect("a timer did not fire");
            let now = Instant::now();
            let when = whens[i as usize];
            assert!(now >= when, "timer {i} fired early");
            assert!(when >= last_when, "timer {i} out of order");
            assert!(now >= last);
            last = now;
            last_when = when;
        }
        assert!(wait_for(|| np.timers() == 0));
        np.stop();
    });
}

#[test]
fn an_earlier_timer_breaks_a_long_poll() {
    driven(|np| {
        let h = np.handle().unwrap();
        let (tx, rx) = mpsc::channel();
        h.add_timer(Instant::now() + Duration::from_secs(3600), W(0, tx.clone()))
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        h.add_timer(Instant::now() + Duration::from_millis(5), W(1, tx))
            .unwrap();
        assert_eq!(rx.recv_timeout(LONG), Ok(1));
        // The fired timer is uncounted once its batch drops, just after
        // it was readied.
        assert!(wait_for(|| np.timers() == 1));
        np.stop();
        assert_eq!(np.timers(), 0);
        assert!(
            np.handle().is_err(),
            "a stopped netpoller hands out no handle"
        );
    });
}

#[test]
fn cancelled_timers_never_fire() {
    driven(|np| {
        let h = np.handle().unwrap();
        let (tx, rx) = mpsc::channel();
        let soon = Instant::now() + Duration::from_millis(10);
        let k = h.add_timer(soon, W(0, tx.clone())).unwrap();
        h.add_timer(soon + Duration::from_millis(5), W(1, tx))
            .unwrap();
        assert!(h.cancel_timer(k));
        assert!(!h.cancel_timer(k));
        assert_eq!(rx.recv_timeout(LONG), Ok(1));
        assert!(rx.recv_timeout(Duration::from_millis(30)).is_err());
        assert!(wait_for(|| np.timers() == 0));
    });
}

#[test]
fn io_wakes_a_parked_waiter_and_ticks_protect_events() {
    driven(|np| {
        let h = np.handle().unwrap();
        let (mut a, b) = UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let reg = h.register(b.as_raw_fd(), true).unwrap();
        let (tx, rx) = mpsc::channel();

        // A read that would block clears readiness; parking then waits.
        let ev = reg.readiness(Dir::Read);
        assert!(ev.ready);
        assert_eq!(
            (&b).read(&mut [0; 8]).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        reg.clear_readiness(ev);
        assert!(!reg.readiness(Dir::Read).ready);
        let id = reg.park(Dir::Read, W(7, tx.clone()), None).unwrap();
        assert_eq!(np.waiters(), 1);
        a.write_all(b"x").unwrap();
        assert_eq!(rx.recv_timeout(LONG), Ok(7));
        assert!(wait_for(|| np.waiters() == 0));
        assert!(!reg.cancel(id), "already woken");

        // A stale clear (read before the event) must not erase it.
        let stale = reg.readiness(Dir::Read);
        a.write_all(b"y").unwrap();
        // Nobody waits, so the driver does not block in a poll: poll
        // without blocking to record the event.
        assert!(wait_for(|| {
            drop(np.poll(Some(Duration::ZERO)));
            reg.readiness(Dir::Read).tick != stale.tick
        }));
        reg.clear_readiness(stale);
        assert!(
            reg.readiness(Dir::Read).ready,
            "a stale clear erased an event"
        );
        // ... so parking now returns at once.
        assert!(reg.park(Dir::Read, W(8, tx), None).is_err());
        assert_eq!(np.waiters(), 0);
        drop(reg);
        np.stop();
    });
}

#[test]
fn deadline_fires_and_io_cancels_the_deadline() {
    driven(|np| {
        let h = np.handle().unwrap();
        let (mut a, b) = UnixStream::pair().unwrap();
        let reg = h.register(b.as_raw_fd(), false).unwrap();
        let (tx, rx) = mpsc::channel();

        let t0 = Instant::now();
        let d = t0 + Duration::from_millis(20);
        reg.park(Dir::Read, W(1, tx.clone()), Some(d)).unwrap();
        assert_eq!((np.waiters(), np.timers()), (1, 1));
        assert_eq!(rx.recv_timeout(LONG), Ok(1));
        assert!(Instant::now() >= d, "deadline fired early");
        assert!(wait_for(|| (np.waiters(), np.timers()) == (0, 0)));

        // The event wins: the deadline's timer goes with the waiter.
        reg.park(Dir::Read, W(2, tx.clone()), Some(Instant::now() + LONG))
            .unwrap();
        assert_eq!((np.waiters(), np.timers()), (1, 1));
        a.write_all(b"x").unwrap();
        assert_eq!(rx.recv_timeout(LONG), Ok(2));
        assert!(wait_for(|| (np.waiters(), np.timers()) == (0, 0)));

        // A cancelled park drops both.
        let ev = reg.readiness(Dir::Write);
        reg.clear_readiness(ev);
        let id = reg
            .park(Dir::Write, W(3, tx), Some(Instant::now() + LONG))
            .unwrap();
        assert!(reg.cancel(id));
        assert_eq!((np.waiters(), np.timers()), (0, 0));
        np.stop();
    });
}

#[test]
fn deregister_wakes_waiters_and_recycles_tokens_with_a_new_generation() {
    driven(|np| {
        let h = np.handle().unwrap();
        let (_a, b) = UnixStream::pair().unwrap();
        let reg = h.register(b.as_raw_fd(), false).unwrap();
        let (tx, rx) = mpsc::channel();
        reg.park(Dir::Read, W(1, tx.clone()), Some(Instant::now() + LONG))
            .unwrap();
        let old = reg.io.token;
        reg.deregister();
        assert_eq!(rx.recv_timeout(LONG), Ok(1));
        assert!(reg.is_closed());
        assert!(reg.park(Dir::Read, W(2, tx), None).is_err());
        assert_eq!((np.waiters(), np.timers()), (0, 0));
        let reg2 = h.register(b.as_raw_fd(), false).unwrap();
        assert_eq!(reg2.io.token as u32, old as u32, "slot reused");
        assert_ne!(reg2.io.token, old, "with a new generation");
        let ios = lock(&h.0.ios);
        assert!(ios.get(old).is_none(), "a stale token finds nothing");
        assert!(ios.get(reg2.io.token).is_some());
    });
}

#[test]
fn stop_drops_everything() {
    driven(|np| {
        let h = np.handle().unwrap();
        let (_a, b) = UnixStream::pair().unwrap();
        let reg = h.register(b.as_raw_fd(), false).unwrap();
        let (tx, rx) = mpsc::channel();
        reg.park(Dir::Read, W(1, tx.clone()), None).unwrap();
        h.add_timer(Instant::now() + LONG, W(2, tx.clone()))
            .unwrap();
        np.stop();
        assert_eq!((np.waiters(), np.timers()), (0, 0));
        assert!(reg.is_closed());
        assert!(h.is_stopped());
        assert!(h.add_timer(Instant::now(), W(3, tx.clone())).is_err());
        assert!(h.register(b.as_raw_fd(), true).is_err());
        drop(tx);
        // Every sender is gone: nothing was woken, everything was dropped.
        assert_eq!(
            rx.recv_timeout(LONG),
            Err(mpsc::RecvTimeoutError::Disconnected)
        );
    });
}

#[test]
fn one_blocker_at_a_time_and_counts_held_until_the_batch_drops() {
    let np = Netpoll::<W>::new();
    assert!(np.poll(None).is_none(), "no netpoller yet");
    let h = np.handle().unwrap();
    let (tx, rx) = mpsc::channel();
    assert!(np.poll(None).is_none(), "nothing to wait for: no block");
    assert!(!np.blocked());
    h.add_timer(Instant::now() + Duration::from_secs(3600), W(0, tx.clone()))
        .unwrap();
    std::thread::scope(|s| {
        let blocker = s.spawn(|| {
            let t0 = Instant::now();
            // The break itself returns an empty batch (the new timer is
            // not due yet); the next poll sleeps until it is.
            let mut b = loop {
                let b = np.poll(None).expect("the blocker polls");
                if !b.is_empty() {
                    break b;
                }
            };
            let ids: Vec<u32> = b.take().into_iter().map(|w| w.0).collect();
            // Fired, yet still counted until the batch drops.
            let counted = np.timers();
            drop(b);
            (ids, counted, np.timers(), t0.elapsed())
        });
        assert!(wait_for(|| np.blocked()));
        assert!(np.poll(None).is_none(), "a second blocker");
        assert!(
            np.poll(Some(Duration::ZERO)).is_none(),
            "a non-blocking poll beside a blocker"
        );
        assert_eq!(np.since_last_poll(), None);
        h.add_timer(Instant::now() + Duration::from_millis(5), W(1, tx))
            .unwrap();
        let (ids, counted, after, took) = blocker.join().unwrap();
        assert_eq!(ids, vec![1]);
        assert_eq!((counted, after), (2, 1));
        assert!(took < LONG, "the earlier timer did not break the poll");

        // `wake` breaks a blocker with nothing due: an empty batch.
        let blocker = s.spawn(|| np.poll(None).map(|b| b.is_empty()));
        assert!(wait_for(|| np.blocked()));
        np.wake();
        assert_eq!(blocker.join().unwrap(), Some(true));
    });
    assert!(!np.blocked());
    assert!(np.since_last_poll().is_some_and(|d| d < LONG));
    assert!(rx.try_recv().is_err(), "nothing was readied by the test");
    np.stop();
    assert!(np.poll(Some(Duration::ZERO)).is_none(), "stopped");
}
