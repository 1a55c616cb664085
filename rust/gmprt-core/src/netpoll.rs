//! netpoll: the netpoller and the timers (Go's netpoll_epoll.go + time.go).
//!
//! Interface only, for now: the implementation (one thread owning
//! `mio::Poll` and a timer heap, edge-triggered registrations with
//! generations, ready waiters handed back in batches) lands with issue 3.
//!
//! The netpoller sits below the scheduler: it never calls into `sched`. It
//! stores waiters of any type `W: Ready` and hands the ready ones back in one
//! batch; `sched` implements [`Ready`] for its `Waker` (an `injectglist`).

use crate::loom::sync::atomic::{AtomicUsize, Ordering::*};

/// What the netpoller wakes. Implemented by `sched::Waker`.
pub trait Ready: Send + 'static {
    /// Readies every waiter in `batch` (they come from one runtime).
    fn ready_all(batch: Vec<Self>)
    where
        Self: Sized;
}

/// One runtime's netpoller and timers.
pub struct Netpoll<W: Ready> {
    /// Gs parked on a file descriptor.
    waiters: AtomicUsize,
    /// Armed timers (sleeps and deadlines).
    timers: AtomicUsize,
    _w: std::marker::PhantomData<fn(W)>,
}

impl<W: Ready> Netpoll<W> {
    pub(crate) fn new() -> Netpoll<W> {
        Netpoll {
            waiters: AtomicUsize::new(0),
            timers: AtomicUsize::new(0),
            _w: std::marker::PhantomData,
        }
    }

    /// Gs parked on a file descriptor now (deadlock detection: a G waiting
    /// on I/O can be woken from outside).
    pub fn waiters(&self) -> usize {
        self.waiters.load(Relaxed)
    }

    /// Armed timers now.
    pub fn timers(&self) -> usize {
        self.timers.load(Relaxed)
    }

    /// Stops the netpoller thread, if it runs, and drops every waiter.
    pub(crate) fn stop(&self) {}
}
