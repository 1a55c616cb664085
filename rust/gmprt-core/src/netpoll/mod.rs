//! netpoll: the netpoller and the timers (Go's netpoll_epoll.go + time.go).
//!
//! There is no netpoller thread. Whoever calls [`Netpoll::poll`] polls: it
//! waits in `epoll_wait` (mio), fires the expired timers and I/O deadlines,
//! and gets back everything that became ready as one [`Polled`] batch, which
//! it injects into the scheduler itself (Go's `netpoll` + `injectglist`).
//! The scheduler's Ms poll without blocking when they run out of local work
//! and every 61st schedtick, one M about to go idle blocks in the poll until
//! the next timer, and sysmon polls if nobody has for 10 ms (module docs of
//! `sched`, "Who polls the netpoller"). A batch is plain Rust waiters of
//! type `W`: polling never touches Python.
//!
//! The netpoller sits below the scheduler: it never imports `sched`. It
//! stores waiters of any type `W: Ready`; the scheduler implements
//! [`Ready`] for its `Waker` and injects [`Polled`] batches itself.
//!
//! # Files
//!
//! | file | mechanism |
//! |---|---|
//! | `mod.rs` | the face: [`Netpoll`], [`Handle`], [`Polled`], the counters |
//! | `poller.rs` | who polls and the blocker role, the timers, stopping |
//! | `registration.rs` | a registered fd: parking, deadlines, deregistering |
//! | `readiness.rs` | readiness with ticks: no edge is lost |
//! | `slab.rs` | tokens with a generation: no stale event wakes a new fd |
//! | `sys.rs` | epoll through mio; under loom, a model of it |
//!
//! # Who owns what
//!
//! - [`Netpoll`] lives in the scheduler and creates the epoll instance
//!   lazily ([`Netpoll::handle`]); the scheduler's stop stops it.
//! - `Inner` (`poller`) is shared (`Arc`) by the [`Netpoll`], every
//!   [`Handle`] and every [`Registration`]. Its locks: `poller` (the
//!   selector and its buffers, held for one poll), `timers` (the timer heap
//!   and the blocker's planned wake time), `ios` (the slab mapping mio
//!   tokens to registrations), and one `waiters` lock per registration.
//! - **Lock order**: `poller` → `ios` → a registration's `waiters` →
//!   `timers`. Nothing here calls [`Ready::ready_all`] or drops the last
//!   reference to anything while holding a netpoll lock that a `ready_all`
//!   could need; a [`Polled`] batch is handed out after every netpoll lock
//!   is released, so the caller injects it holding none. No netpoll lock is
//!   taken under the scheduler's lock except by `Netpoll::stop` (which the
//!   scheduler's stop calls holding `sched.lock`, and which never takes
//!   `poller`: a blocker holds that for as long as it sleeps).
//!
//! # Counters
//!
//! [`Netpoll::waiters`] and [`Netpoll::timers`] count Gs parked on I/O and
//! armed timers. They are exact for deadlock detection: a wait counts from
//! the moment it is stored until it is cancelled, or, when it fires, until
//! its [`Polled`] batch is dropped, which the caller does *after* injecting
//! the batch (its Gs are then runnable), so there is no instant where a
//! woken G is neither counted here nor runnable.

mod poller;
mod readiness;
mod registration;
mod slab;
mod sys;
#[cfg(test)]
mod tests;

use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use crate::loom::lock;
use crate::loom::sync::atomic::{AtomicUsize, Ordering::*};
use crate::loom::sync::{Arc, Mutex, OnceLock};
use crate::timer::TimerKey;

use self::poller::{Fire, Inner};
pub use self::readiness::{Dir, ReadyEvent};
pub use self::registration::{Registration, WaitId};

/// What the netpoller wakes. Implemented by the scheduler's `Waker`.
pub trait Ready: Send + 'static {
    /// Readies every waiter in `batch` (they come from one runtime).
    fn ready_all(batch: Vec<Self>)
    where
        Self: Sized;
}

/// Saturating decrement of a counter ("Counters"): after
/// [`Netpoll::stop`] zeroes it, the poller's late decrements must not wrap
/// it. SeqCst like every counter update: the deadlock check reads them in
/// one SeqCst snapshot with the scheduler's own counters.
pub(super) fn sub(n: &AtomicUsize, k: usize) {
    if k > 0 {
        let _ = n.fetch_update(SeqCst, SeqCst, |v| Some(v.saturating_sub(k)));
    }
}

/// The runtime stopped: nothing can be parked or registered any more.
pub(super) fn stopped_err() -> io::Error {
    io::Error::other("the gmprt netpoller has stopped (the runtime is stopping)")
}

/// One runtime's netpoller and timers.
pub struct Netpoll<W: Ready> {
    inner: OnceLock<Arc<Inner<W>>>,
    /// Serialises the lazy start with `stop`; true once stopped.
    stopped: Mutex<bool>,
}

impl<W: Ready> Netpoll<W> {
    pub(crate) fn new() -> Netpoll<W> {
        Netpoll {
            inner: OnceLock::new(),
            stopped: Mutex::new(false),
        }
    }

    /// Gs parked on a file descriptor now (deadlock detection: a G waiting
    /// on I/O can be woken from outside). See "Counters" in the module docs.
    pub fn waiters(&self) -> usize {
        self.inner.get().map_or(0, |i| i.nwaiters.load(SeqCst))
    }

    /// Armed timers now (sleeps and I/O deadlines).
    pub fn timers(&self) -> usize {
        self.inner.get().map_or(0, |i| i.ntimers.load(SeqCst))
    }

    /// Whether some G waits on the netpoller (I/O or a timer): only then is
    /// a poll worth making (Go's `netpollAnyWaiters`, plus our timers).
    pub fn pending(&self) -> bool {
        self.inner.get().is_some_and(|i| i.pending())
    }

    /// Whether a thread has claimed the blocking poll (Go's `lastpoll ==
    /// 0`). SeqCst: read with the counters in one deadlock snapshot (module
    /// docs, "Who polls").
    pub fn blocked(&self) -> bool {
        self.inner.get().is_some_and(|i| i.blocked.load(SeqCst))
    }

    /// How long since the last poll ended; None while a blocker polls (or
    /// before the netpoller exists). sysmon polls when this passes 10 ms.
    pub fn since_last_poll(&self) -> Option<Duration> {
        let i = self.inner.get()?;
        if i.blocked.load(SeqCst) {
            return None;
        }
        // Relaxed: a staleness hint; a wrong guess costs one extra poll.
        let last = i.last_poll.load(Relaxed);
        Some(Duration::from_nanos(i.now().saturating_sub(last)))
    }

    /// Polls: waits for I/O for up to `timeout` (`None`: until an event or
    /// the next timer; `Some(ZERO)`: not at all), fires the expired timers
    /// and I/O deadlines, and returns every waiter that became ready. The
    /// caller readies them and then drops the batch (module docs,
    /// "Counters").
    ///
    /// None, without waiting, when another thread polls (a non-blocking poll
    /// gives way to any poll, a blocking one to another blocker), when a
    /// blocking poll would have nothing to wait for (no waiter, no timer),
    /// or when the netpoller does not run. A non-blocking poll is made
    /// whatever [`pending`](Self::pending) says (it still records readiness
    /// for registrations nobody waits on); callers on hot paths check it
    /// first. See "Who polls" in the module docs.
    pub fn poll(&self, timeout: Option<Duration>) -> Option<Polled<'_, W>> {
        self.inner.get()?.poll(timeout)
    }

    /// Breaks a blocking poll, if one is in progress (Go's `netpollBreak`).
    pub fn wake(&self) {
        if let Some(i) = self.inner.get() {
            if i.blocked.load(SeqCst) {
                i.wake_poller();
            }
        }
    }

    /// A handle to the netpoller, creating its epoll instance on first use.
    /// Fails once the netpoller stopped, or if the OS refuses an epoll fd.
    pub fn handle(&self) -> io::Result<Handle<W>> {
        if let Some(i) = self.inner.get() {
            // Acquire: pairs with the Release store in `Inner::stop`.
            if i.stopped.load(Acquire) {
                return Err(stopped_err());
            }
            return Ok(Handle(i.clone()));
        }
        let stopped = lock(&self.stopped);
        if *stopped {
            return Err(stopped_err());
        }
        if let Some(i) = self.inner.get() {
            return Ok(Handle(i.clone()));
        }
        let inner = Inner::start()?;
        let _ = self.inner.set(inner.clone());
        drop(stopped);
        Ok(Handle(inner))
    }

    /// Whether `reg` belongs to this netpoller (and it still runs).
    pub fn owns(&self, reg: &Registration<W>) -> bool {
        self.inner
            .get()
            .is_some_and(|i| Arc::ptr_eq(i, &reg.inner) && !i.stopped.load(Acquire))
    }

    /// Stops the netpoller, breaking a blocking poll, and drops every waiter
    /// and timer (their Gs are never woken; the runtime is stopping). Later
    /// registrations and timers are refused, and every existing registration
    /// reads as closed.
    pub(crate) fn stop(&self) {
        let mut stopped = lock(&self.stopped);
        *stopped = true;
        drop(stopped);
        if let Some(i) = self.inner.get() {
            i.stop();
        }
    }
}

impl<W: Ready> Drop for Netpoll<W> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A cloneable handle to a running netpoller: timers and registrations.
pub struct Handle<W: Ready>(Arc<Inner<W>>);

impl<W: Ready> Clone for Handle<W> {
    fn clone(&self) -> Self {
        Handle(self.0.clone())
    }
}

impl<W: Ready> Handle<W> {
    /// Arms a timer that readies `w` at `when` (at the earliest; within about
    /// a millisecond after). Gives `w` back if the netpoller stopped.
    pub fn add_timer(&self, when: Instant, w: W) -> Result<TimerKey, W> {
        let (key, wake) = match self.0.add_timer(when, Fire::Wake(w)) {
            Ok(kw) => kw,
            Err(Fire::Wake(w)) => return Err(w),
            Err(Fire::Io(..)) => unreachable!("add_timer returned another payload"),
        };
        if wake {
            self.0.wake_poller();
        }
        Ok(key)
    }

    /// Disarms a timer from [`add_timer`](Self::add_timer). True if it was
    /// still armed (its waiter is dropped, never woken).
    pub fn cancel_timer(&self, key: TimerKey) -> bool {
        self.0.cancel_timer(key)
    }

    /// Registers `fd` for both directions. `ready` is the initial readiness
    /// of both: true makes the first operation try its syscall (right for a
    /// fresh socket), false makes it wait for the first event (right when the
    /// caller just saw the fd not ready; epoll reports the state at
    /// registration as an event, so nothing is missed).
    ///
    /// The caller keeps `fd` open until it drops or
    /// [`deregisters`](Registration::deregister) the registration.
    pub fn register(&self, fd: RawFd, ready: bool) -> io::Result<Registration<W>> {
        Registration::new(&self.0, fd, ready)
    }

    /// Whether the netpoller has stopped.
    pub fn is_stopped(&self) -> bool {
        self.0.stopped.load(Acquire)
    }

    /// Loom models play the kernel through the model selector's registry.
    #[cfg(loom)]
    pub(crate) fn model(&self) -> sys::model::Registry {
        self.0.registry.clone()
    }
}

/// What one [`Netpoll::poll`] readied. Take the waiters out
/// ([`take`](Self::take)), ready them, then drop the batch: only the drop
/// uncounts them ("Counters").
#[must_use = "ready the waiters, then drop the batch"]
pub struct Polled<'a, W: Ready> {
    ready: Vec<W>,
    /// Waiters and timers this batch took off the counters' books.
    io: usize,
    timers: usize,
    inner: &'a Inner<W>,
}

impl<W: Ready> Polled<'_, W> {
    /// The waiters to ready, in the order they became ready (timers in
    /// deadline order, after the I/O events).
    pub fn take(&mut self) -> Vec<W> {
        std::mem::take(&mut self.ready)
    }

    pub fn is_empty(&self) -> bool {
        self.ready.is_empty()
    }
}

impl<W: Ready> Drop for Polled<'_, W> {
    fn drop(&mut self) {
        // Any waiters not taken are dropped unreadied first (the runtime is
        // stopping); then, and only then, the counts go.
        drop(std::mem::take(&mut self.ready));
        sub(&self.inner.nwaiters, self.io);
        sub(&self.inner.ntimers, self.timers);
    }
}
