//! The OS selector under the netpoller: mio's epoll, or, under loom, a model
//! of it.
//!
//! The netpoller needs four things of the OS: wait for events with a
//! timeout, register and deregister an fd, and break a waiter from another
//! thread (`mio::Waker`, an eventfd). Everything above this file is the
//! netpoller's own protocol (who polls, the timers, the registrations), and
//! loom must see all of it; but a real `epoll_wait` blocks its thread where
//! loom cannot see, and loom runs one thread at a time, so a model that
//! called it would hang. Under `cfg(loom)` this file therefore swaps epoll
//! for a model with the same contract ([`model`]): a poll waits on a loom
//! condvar until the waker fires or a test injects an event.
//!
//! # The contract both keep
//!
//! - `Selector::select` with `Some(ZERO)` never waits; with `None` it
//!   waits until a wake or an event; with a finite timeout it waits at most
//!   that long (the model returns at once: loom has no clock, and every
//!   caller treats an early return as a spurious wake-up and loops).
//! - A `Registry::wake` that lands before the wait is not lost: the
//!   eventfd (or the model's flag) stays set until a poll consumes it.
//! - Events are edge-triggered: `events` reports each change once.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// Bits that an event reports (same values as the netpoller's ready bits,
/// see `readiness`): errors and hang-ups count as both directions ready, so
/// the retried syscall reports them.
pub(super) const EV_READABLE: usize = 1;
pub(super) const EV_WRITABLE: usize = 2;
/// The peer shut down its side, or the socket failed: reading will not
/// block again, whatever a read returned (reported with `EV_READABLE`).
pub(super) const EV_READ_CLOSED: usize = 4;

#[cfg(not(loom))]
pub(super) use self::epoll::{new, Registry, Selector};
#[cfg(loom)]
pub(super) use self::model::{new, Registry, Selector};

#[cfg(not(loom))]
mod epoll {
    use super::*;
    use mio::unix::SourceFd;
    use mio::{Events, Interest, Poll, Token};

    /// Events per `epoll_wait`. Go uses 128, tokio 1024; the batch goes to
    /// the global queue in one lock, so a larger batch costs nothing extra.
    const EVENTS: usize = 1024;

    /// The token of the `mio::Waker`. Registration tokens never reach it:
    /// their generation is masked to 31 bits (`slab::GEN_MASK`).
    const WAKE_TOKEN: Token = Token(usize::MAX);

    /// The waiting half: owned by whoever holds the netpoller's `poller`
    /// lock.
    pub(in crate::netpoll) struct Selector {
        poll: Poll,
        events: Events,
    }

    /// The shared half: registrations and the waker, usable from any thread.
    pub(in crate::netpoll) struct Registry {
        registry: mio::Registry,
        waker: mio::Waker,
    }

    pub(in crate::netpoll) fn new() -> io::Result<(Selector, Registry)> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = mio::Waker::new(poll.registry(), WAKE_TOKEN)?;
        Ok((
            Selector {
                poll,
                events: Events::with_capacity(EVENTS),
            },
            Registry { registry, waker },
        ))
    }

    impl Selector {
        /// Waits up to `timeout` for events (see the module docs).
        pub(in crate::netpoll) fn select(&mut self, timeout: Option<Duration>) -> io::Result<()> {
            self.poll.poll(&mut self.events, timeout)
        }

        /// The last `select`'s events as `(token, bits)`, the waker's left
        /// out.
        pub(in crate::netpoll) fn events(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
            self.events
                .iter()
                .filter(|ev| ev.token() != WAKE_TOKEN)
                .map(|ev| {
                    let mut bits = 0;
                    if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                        bits |= EV_READABLE;
                    }
                    if ev.is_read_closed() || ev.is_error() {
                        bits |= EV_READ_CLOSED;
                    }
                    if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
                        bits |= EV_WRITABLE;
                    }
                    (ev.token().0, bits)
                })
        }
    }

    impl Registry {
        /// Registers `fd` for both directions, edge-triggered.
        pub(in crate::netpoll) fn register(&self, fd: RawFd, token: usize) -> io::Result<()> {
            self.registry.register(
                &mut SourceFd(&fd),
                Token(token),
                Interest::READABLE | Interest::WRITABLE,
            )
        }

        pub(in crate::netpoll) fn deregister(&self, fd: RawFd) -> io::Result<()> {
            self.registry.deregister(&mut SourceFd(&fd))
        }

        /// Breaks a `select` in progress, or the next one.
        pub(in crate::netpoll) fn wake(&self) -> io::Result<()> {
            self.waker.wake()
        }
    }
}

#[cfg(loom)]
pub(super) mod model {
    //! epoll as loom sees it: a wake flag and a list of injected events
    //! under one loom mutex, and a condvar the waiting poll sleeps on.

    use super::*;
    use crate::loom::lock;
    use crate::loom::sync::{Arc, Condvar, Mutex};

    #[derive(Default)]
    struct Os {
        woken: bool,
        events: Vec<(usize, usize)>,
        registered: Vec<(RawFd, usize)>,
    }

    struct Shared {
        os: Mutex<Os>,
        cv: Condvar,
    }

    pub(in crate::netpoll) struct Selector {
        shared: Arc<Shared>,
        events: Vec<(usize, usize)>,
    }

    /// The model's registry; [`Registry::inject`] plays the kernel.
    #[derive(Clone)]
    pub(crate) struct Registry(Arc<Shared>);

    pub(in crate::netpoll) fn new() -> io::Result<(Selector, Registry)> {
        let shared = Arc::new(Shared {
            os: Mutex::new(Os::default()),
            cv: Condvar::new(),
        });
        Ok((
            Selector {
                shared: shared.clone(),
                events: Vec::new(),
            },
            Registry(shared),
        ))
    }

    impl Selector {
        pub(in crate::netpoll) fn select(&mut self, timeout: Option<Duration>) -> io::Result<()> {
            let mut os = lock(&self.shared.os);
            if timeout.is_none() {
                while !os.woken && os.events.is_empty() {
                    os = crate::loom::unpoison(self.shared.cv.wait(os));
                }
            }
            os.woken = false;
            self.events = std::mem::take(&mut os.events);
            Ok(())
        }

        pub(in crate::netpoll) fn events(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
            self.events.iter().copied()
        }
    }

    impl Registry {
        pub(in crate::netpoll) fn register(&self, fd: RawFd, token: usize) -> io::Result<()> {
            lock(&self.0.os).registered.push((fd, token));
            Ok(())
        }

        pub(in crate::netpoll) fn deregister(&self, fd: RawFd) -> io::Result<()> {
            lock(&self.0.os).registered.retain(|r| r.0 != fd);
            Ok(())
        }

        pub(in crate::netpoll) fn wake(&self) -> io::Result<()> {
            lock(&self.0.os).woken = true;
            self.0.cv.notify_all();
            Ok(())
        }

        /// The kernel's part: `fd` became ready for `bits`. Ignored if `fd`
        /// is not registered (an event never outlives `EPOLL_CTL_DEL`
        /// here; the real race is covered by the slab's generations).
        pub(crate) fn inject(&self, fd: RawFd, bits: usize) {
            let mut os = lock(&self.0.os);
            if let Some(&(_, token)) = os.registered.iter().find(|r| r.0 == fd) {
                os.events.push((token, bits));
                drop(os);
                self.0.cv.notify_all();
            }
        }
    }
}
