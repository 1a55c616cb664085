//! The poller: who polls, who blocks, the timers, and stopping (Go's
//! `netpoll` + `findRunnable`'s poll steps + `time.go`).
//!
//! # Who polls (Go's `lastpoll` and `pollingNet`)
//!
//! - **One poll at a time.** The selector sits in the `poller` mutex. A
//!   non-blocking poll (`timeout = Some(0)`) only `try_lock`s it and gives
//!   up if anyone else polls: the other poll will deliver the same events.
//! - **At most one blocking poller** (the *blocker role*). A blocking poll
//!   first claims the `blocked` flag (Go's `lastpoll.Swap(0)`); a second
//!   would-be blocker gets `None` and parks its M instead. While `blocked`
//!   is set, non-blocking polls give up at once. The claimed blocker then
//!   `lock`s the mutex, so a non-blocking poll that is already inside
//!   (microseconds) delays it but never makes it give up: a thread that
//!   wanted to block and found the poll busy is never left without a
//!   blocker.
//! - **A blocker needs a reason.** After claiming `blocked` it re-reads the
//!   counters and returns `None` if no G waits on I/O or a timer (nothing
//!   could end the wait but a break). The claim comes first, SeqCst, so a
//!   deadlock check that saw the counters reach zero also sees the blocker
//!   ([`Netpoll::blocked`](super::Netpoll::blocked), used by the
//!   scheduler's deadlock check).
//! - **Breaking the blocker.** An adder whose timer is earlier than the
//!   blocker's planned wake time breaks the poll with the selector's waker
//!   (`sys`), and so do [`Inner::stop`] and
//!   [`Netpoll::wake`](super::Netpoll::wake) (the scheduler uses it when
//!   work is stranded with no other M to run it).
//!
//! # Timers
//!
//! A sleep is a timer whose payload is the G's waiter ([`Fire::Wake`]); an
//! I/O deadline one whose payload points at a parked waiter ([`Fire::Io`],
//! see `registration`, "Deadlines"). Timers fire inside a poll, whichever
//! kind: a blocker sleeps until the earliest deadline, and every poll pops
//! what is due. An adder whose deadline is earlier than the blocker's
//! planned wake time (`poll_until`) breaks the poll (de-duplicated: the
//! planned time is lowered at once, so later adders with later deadlines do
//! not wake it again; Go's `netpollWakeSig`). With no blocker there is
//! nothing to break: the planned time reads 0 and whoever polls next (an M
//! going idle, a busy P's 61st tick, sysmon) sees the new timer. Resolution
//! is the epoll timeout's, 1 ms, rounded up: a timer never fires early.
//!
//! The race this settles, modelled in `loom_tests::netpoll`: the blocker
//! computes its wake time under `timers`, and an adder compares against it
//! under the same lock. Either the adder comes first (the blocker sees the
//! timer and sleeps no later than it) or second (the adder sees the planned
//! time, finds its timer earlier, and wakes the selector, whose wake is not
//! lost even if the blocker has not started waiting yet).
//!
//! # Stopping
//!
//! [`Inner::stop`] sets `stopped` under `timers`, the lock the blocker holds
//! while it plans its wait: either the blocker sees the flag and does not
//! wait, or the stop's wake reaches its wait. Then it drains every timer
//! and every registration's waiters, dropping them unreadied.

use std::io;
use std::time::{Duration, Instant};

use crate::loom::lock;
use crate::loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use crate::loom::sync::{Arc, Mutex, MutexGuard, TryLockError};
use crate::timer::{TimerKey, Timers};

use super::registration::{IoShared, WaitId};
use super::slab::Slab;
use super::{sub, sys, Polled, Ready};

/// What a timer does when it fires.
pub(super) enum Fire<W> {
    /// A sleep: ready the waiter.
    Wake(W),
    /// An I/O deadline: ready the waiter parked as `id` on `io`, if it is
    /// still parked.
    Io(Arc<IoShared<W>>, WaitId),
}

pub(super) struct TimerState<W> {
    heap: Timers<Fire<W>>,
    /// When the blocker will next look at the timers, in clock nanoseconds:
    /// `u64::MAX` while it sleeps with no timeout, 0 while nobody blocks
    /// (whoever polls next recomputes, so adders need not wake anyone).
    poll_until: u64,
}

/// The selector and the buffers of one poll; held for the whole poll.
pub(super) struct PollState<W> {
    selector: sys::Selector,
    cancel: Vec<TimerKey>,
    deadlines: Vec<(Arc<IoShared<W>>, WaitId)>,
}

/// One netpoller's shared state (see the parent module, "Who owns what").
pub(super) struct Inner<W> {
    /// Registrations and the waker that breaks a blocking poll.
    pub(super) registry: sys::Registry,
    /// Clock origin for timer nanoseconds.
    base: Instant,
    /// See "Who polls" in the module docs.
    pub(super) poller: Mutex<PollState<W>>,
    /// A thread claimed the blocking poll (Go's `lastpoll == 0`). SeqCst
    /// throughout: it is part of the deadlock snapshot.
    pub(super) blocked: AtomicBool,
    /// When the last poll ended, in clock nanoseconds (sysmon's 10 ms rule).
    /// Relaxed: a hint.
    pub(super) last_poll: AtomicU64,
    pub(super) timers: Mutex<TimerState<W>>,
    pub(super) ios: Mutex<Slab<W>>,
    /// See "Counters" in the module docs. SeqCst throughout (see `sub`):
    /// a decrement after `ready_all` must not be seen before the run-queue
    /// push that `ready_all` made.
    pub(super) nwaiters: AtomicUsize,
    pub(super) ntimers: AtomicUsize,
    /// Set once by `stop` (Release); read with Acquire by the poller and by
    /// everyone refusing new work.
    pub(super) stopped: AtomicBool,
}

impl<W: Ready> Inner<W> {
    pub(super) fn start() -> io::Result<Arc<Inner<W>>> {
        let (selector, registry) = sys::new()?;
        Ok(Arc::new(Inner {
            registry,
            base: Instant::now(),
            poller: Mutex::new(PollState {
                selector,
                cancel: Vec::new(),
                deadlines: Vec::new(),
            }),
            blocked: AtomicBool::new(false),
            last_poll: AtomicU64::new(0),
            timers: Mutex::new(TimerState {
                heap: Timers::new(),
                poll_until: 0,
            }),
            ios: Mutex::new(Slab::new()),
            nwaiters: AtomicUsize::new(0),
            ntimers: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
        }))
    }

    /// Some G waits on I/O or a timer. SeqCst: see "Who polls".
    pub(super) fn pending(&self) -> bool {
        self.nwaiters.load(SeqCst) > 0 || self.ntimers.load(SeqCst) > 0
    }

    /// Nanoseconds on the timer clock.
    fn at(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    pub(super) fn now(&self) -> u64 {
        self.at(Instant::now())
    }

    /// Arms a timer. Returns whether the poller must be woken (call
    /// `wake_poller` after releasing every lock). Gives the payload back if
    /// stopped.
    pub(super) fn add_timer(
        &self,
        when: Instant,
        fire: Fire<W>,
    ) -> Result<(TimerKey, bool), Fire<W>> {
        let when = self.at(when);
        let mut t = lock(&self.timers);
        if self.stopped.load(Acquire) {
            return Err(fire);
        }
        let key = t.heap.add(when, fire);
        self.ntimers.fetch_add(1, SeqCst);
        let wake = when < t.poll_until;
        if wake {
            t.poll_until = when;
        }
        Ok((key, wake))
    }

    pub(super) fn cancel_timer(&self, key: TimerKey) -> bool {
        let fire = lock(&self.timers).heap.cancel(key);
        let found = fire.is_some();
        if found {
            sub(&self.ntimers, 1);
        }
        // The payload (a waiter, or a registration reference) drops here,
        // outside the lock.
        drop(fire);
        found
    }

    pub(super) fn wake_poller(&self) {
        if let Err(e) = self.registry.wake() {
            eprintln!("gmprt: cannot wake the netpoller: {e}");
        }
    }

    /// [`Netpoll::poll`](super::Netpoll::poll): one poll, as a non-blocking
    /// poller or as the blocker ("Who polls").
    pub(super) fn poll(&self, timeout: Option<Duration>) -> Option<Polled<'_, W>> {
        if timeout == Some(Duration::ZERO) {
            // Relaxed: only a hint to skip a poll a blocker would make
            // anyway; the `try_lock` below is what keeps polls one at a time.
            if self.blocked.load(Relaxed) {
                return None;
            }
            let st = match self.poller.try_lock() {
                Ok(st) => st,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => return None,
            };
            return self.poll_locked(st, timeout);
        }
        if !self.pending() {
            return None;
        }
        // SeqCst swap: the claim is ordered before the `pending` re-read
        // below, against the counters' SeqCst decrements ("Who polls": a deadlock check that saw zero also sees the claim).
        if self.blocked.swap(true, SeqCst) {
            return None;
        }
        let polled = if self.pending() {
            self.poll_locked(lock(&self.poller), timeout)
        } else {
            None
        };
        // SeqCst: pairs with the claim; the batch still holds its counts.
        self.blocked.store(false, SeqCst);
        polled
    }

    /// One poll, holding the `poller` lock `st`.
    /// A blocking poll (`timeout != Some(0)`) plans its wake time for the
    /// adders; a non-blocking one leaves it at 0.
    fn poll_locked(
        &self,
        mut st: MutexGuard<'_, PollState<W>>,
        timeout: Option<Duration>,
    ) -> Option<Polled<'_, W>> {
        let st = &mut *st;
        let blocking = timeout != Some(Duration::ZERO);
        let timeout = if blocking {
            let mut t = lock(&self.timers);
            // Under `timers`, which `stop` takes to set the flag: either we
            // see it here, or its wake reaches the poll below.
            if self.stopped.load(Acquire) {
                return None;
            }
            let now = self.now();
            let limit =
                timeout.map(|d| now.saturating_add(d.as_nanos().try_into().unwrap_or(u64::MAX)));
            let until = match (t.heap.next_when(), limit) {
                (None, None) => u64::MAX,
                (w, l) => w.unwrap_or(u64::MAX).min(l.unwrap_or(u64::MAX)),
            };
            t.poll_until = until;
            // mio rounds up to whole milliseconds: never early.
            (until != u64::MAX).then(|| Duration::from_nanos(until.saturating_sub(now)))
        } else {
            timeout
        };
        if let Err(e) = st.selector.select(timeout) {
            if e.kind() != io::ErrorKind::Interrupted {
                eprintln!("gmprt: netpoll: epoll_wait failed: {e}");
                if blocking {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        if self.stopped.load(Acquire) {
            if blocking {
                lock(&self.timers).poll_until = 0;
            }
            return None;
        }
        let mut batch = Vec::new();
        let mut woken_io = 0;
        let mut events = st.selector.events().peekable();
        if events.peek().is_some() {
            let ios = lock(&self.ios);
            for (token, bits) in events {
                // A stale token (generation moved on) finds nothing.
                if let Some(io) = ios.get(token) {
                    woken_io += io.fire(bits, &mut batch, &mut st.cancel);
                }
            }
        }
        let mut woken_timers = 0;
        {
            let mut t = lock(&self.timers);
            for k in st.cancel.drain(..) {
                if t.heap.cancel(k).is_some() {
                    sub(&self.ntimers, 1);
                }
            }
            let now = self.now();
            while let Some(f) = t.heap.pop_due(now) {
                woken_timers += 1;
                match f {
                    Fire::Wake(w) => batch.push(w),
                    Fire::Io(io, id) => st.deadlines.push((io, id)),
                }
            }
            if blocking {
                t.poll_until = 0;
            }
            // Relaxed: a hint for sysmon (`since_last_poll`).
            self.last_poll.store(now, Relaxed);
        }
        for (io, id) in st.deadlines.drain(..) {
            if let Some(waiter) = io.take(id) {
                batch.push(waiter.w);
                woken_io += 1;
            }
        }
        Some(Polled {
            ready: batch,
            io: woken_io,
            timers: woken_timers,
            inner: self,
        })
    }

    pub(super) fn stop(&self) {
        let timers = {
            // Under `timers`, so no adder slips in after the drain.
            let mut t = lock(&self.timers);
            // Release: pairs with the Acquire loads refusing new work.
            self.stopped.store(true, Release);
            self.ntimers.store(0, SeqCst);
            t.heap.drain()
        };
        self.wake_poller();
        let ios = lock(&self.ios).drain();
        let mut dropped = Vec::new();
        for io in &ios {
            let mut ws = lock(&io.waiters);
            ws.closed = true;
            dropped.append(&mut ws.read);
            dropped.append(&mut ws.write);
        }
        self.nwaiters.store(0, SeqCst);
        drop(timers);
        drop(dropped);
        drop(ios);
    }
}
