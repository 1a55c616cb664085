//! Registrations (Go's `pollDesc`, tokio's `ScheduledIo`): one fd's
//! readiness and the Gs parked on it.
//!
//! A file descriptor is registered once, for both directions,
//! edge-triggered (see `readiness`: every operation retries until
//! `WouldBlock`, and a clear never erases a newer event). Its slot in the
//! netpoller's slab carries a generation (see `slab`).
//!
//! # Parking
//!
//! [`Registration::park`] re-checks readiness under the registration's
//! `waiters` lock; the poller sets readiness *before* taking that lock to
//! collect waiters ([`IoShared::fire`]). Either the parker sees the new bit
//! (and does not park) or the poller sees the waiter (and wakes it): a G
//! never sleeps through an event.
//!
//! # Deadlines
//!
//! An I/O deadline is a timer whose payload *points at* the parked waiter
//! (registration, direction, wait id), like Go's `pollDesc` read/write
//! timers: the waiter itself stays in exactly one place, the `waiters`
//! list. Whichever fires first (the event or the timer) removes it; an event
//! that wins cancels the timer. The timer is armed under `waiters` (lock
//! order `waiters` → `timers`), so it cannot fire before the waiter it
//! points at is stored.
//!
//! # Who owns what
//!
//! [`IoShared`] is shared by the [`Registration`] (the socket's owner), the
//! slab (until deregistered) and any deadline timer pointing at one of its
//! waiters. `waiters` is the only lock; `readiness` is one atomic word.

use std::io;
use std::os::fd::RawFd;
use std::time::Instant;

use crate::loom::lock;
use crate::loom::sync::atomic::{AtomicBool, Ordering::*};
use crate::loom::sync::{Arc, Mutex};
use crate::timer::TimerKey;

use super::poller::{Fire, Inner};
use super::readiness::{Dir, Readiness, ReadyEvent};
use super::{sub, Ready};

/// Identifies one park on a registration (for [`Registration::cancel`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitId {
    dir: Dir,
    id: u64,
}

pub(super) struct Waiter<W> {
    id: u64,
    pub(super) w: W,
    /// The deadline timer armed with this park, if any.
    timer: Option<TimerKey>,
}

pub(super) struct Waiters<W> {
    pub(super) read: Vec<Waiter<W>>,
    pub(super) write: Vec<Waiter<W>>,
    next_id: u64,
    /// Deregistered (or the netpoller stopped): nobody parks any more.
    pub(super) closed: bool,
}

impl<W> Waiters<W> {
    fn list(&mut self, dir: Dir) -> &mut Vec<Waiter<W>> {
        match dir {
            Dir::Read => &mut self.read,
            Dir::Write => &mut self.write,
        }
    }
}

/// The shared half of a registration (tokio's `ScheduledIo`).
pub(super) struct IoShared<W> {
    pub(super) token: usize,
    /// See `readiness`: set by the poller, cleared by operations.
    readiness: Readiness,
    pub(super) waiters: Mutex<Waiters<W>>,
}

impl<W> IoShared<W> {
    pub(super) fn new(token: usize, ready: bool) -> IoShared<W> {
        IoShared {
            token,
            readiness: Readiness::new(ready),
            waiters: Mutex::new(Waiters {
                read: Vec::new(),
                write: Vec::new(),
                next_id: 0,
                closed: false,
            }),
        }
    }

    /// The poller: record an event and take the waiters it readies. Returns
    /// how many it took. Readiness is set *before* taking `waiters`
    /// ("Parking").
    pub(super) fn fire(
        &self,
        bits: usize,
        batch: &mut Vec<W>,
        cancel: &mut Vec<TimerKey>,
    ) -> usize {
        self.readiness.set(bits);
        let mut ws = lock(&self.waiters);
        let mut n = 0;
        for dir in [Dir::Read, Dir::Write] {
            if bits & dir.bit() == 0 {
                continue;
            }
            for waiter in ws.list(dir).drain(..) {
                batch.push(waiter.w);
                cancel.extend(waiter.timer);
                n += 1;
            }
        }
        n
    }

    /// Removes the waiter parked as `id`, if it is still parked.
    pub(super) fn take(&self, id: WaitId) -> Option<Waiter<W>> {
        let mut ws = lock(&self.waiters);
        let list = ws.list(id.dir);
        let pos = list.iter().position(|x| x.id == id.id)?;
        Some(list.remove(pos))
    }
}

/// A file descriptor registered with the netpoller. Dropping it
/// deregisters the fd, which must still be open then.
pub struct Registration<W: Ready> {
    pub(super) inner: Arc<Inner<W>>,
    pub(super) io: Arc<IoShared<W>>,
    fd: RawFd,
    /// Cleared by the first `deregister`.
    registered: AtomicBool,
}

impl<W: Ready> Registration<W> {
    /// Any thread: the readiness of `dir` now.
    pub fn readiness(&self, dir: Dir) -> ReadyEvent {
        self.io.readiness.get(dir)
    }

    /// After a `WouldBlock`: mark the direction not ready, unless an event
    /// arrived since `ev` was read (then the next try may succeed).
    pub fn clear_readiness(&self, ev: ReadyEvent) {
        self.io.readiness.clear(ev);
    }

    /// Parks `w` until `dir` becomes ready or `deadline` passes (whichever
    /// first readies `w`, once). Gives `w` back without parking when the
    /// direction is ready already, the deadline has passed, or the
    /// registration is closed: the caller then retries its operation (which
    /// reports the timeout or the closed fd).
    pub fn park(&self, dir: Dir, w: W, deadline: Option<Instant>) -> Result<WaitId, W> {
        let mut ws = lock(&self.io.waiters);
        if ws.closed || self.readiness(dir).ready {
            return Err(w);
        }
        let id = WaitId {
            dir,
            id: ws.next_id,
        };
        let mut wake = false;
        let timer = match deadline {
            None => None,
            Some(d) if d <= Instant::now() => return Err(w),
            // Armed under `waiters` (lock order: waiters → timers): the
            // deadline cannot fire before the waiter it points at is stored.
            Some(d) => match self.inner.add_timer(d, Fire::Io(self.io.clone(), id)) {
                Ok((key, must_wake)) => {
                    wake = must_wake;
                    Some(key)
                }
                Err(_) => return Err(w),
            },
        };
        ws.next_id += 1;
        let list = ws.list(dir);
        // Almost every fd has at most one waiter per direction (its G). A
        // first push reserves four, Vec's minimum for small elements: 224
        // bytes held by every idle connection for good, since `fire`
        // drains but keeps the buffer. Reserve one; a second waiter grows
        // it as usual.
        if list.capacity() == 0 {
            list.reserve_exact(1);
        }
        list.push(Waiter {
            id: id.id,
            w,
            timer,
        });
        self.inner.nwaiters.fetch_add(1, SeqCst);
        drop(ws);
        if wake {
            self.inner.wake_poller();
        }
        Ok(id)
    }

    /// Withdraws a park that was not woken (its G gave up waiting): drops
    /// the waiter and its deadline. False if it was already woken.
    pub fn cancel(&self, id: WaitId) -> bool {
        let Some(waiter) = self.io.take(id) else {
            return false;
        };
        sub(&self.inner.nwaiters, 1);
        if let Some(k) = waiter.timer {
            self.inner.cancel_timer(k);
        }
        true
    }

    /// Closed: deregistered, or its netpoller stopped.
    pub fn is_closed(&self) -> bool {
        lock(&self.io.waiters).closed
    }

    /// Removes the fd from the poll set and wakes every G parked on it (their
    /// operations then find the fd closed). Idempotent. Call it before
    /// closing the fd: a closed fd number can be reused by a new
    /// registration, which the `EPOLL_CTL_DEL` would then remove.
    pub fn deregister(&self) {
        self.remove(true);
    }

    /// What [`deregister`](Self::deregister) does, without the
    /// `EPOLL_CTL_DEL`: for an fd its owner closed under the registration.
    /// The kernel dropped the epoll item with the file's last reference,
    /// and the number may name another file now, whose registration a
    /// `DEL` would remove. Should the old file live on elsewhere (a
    /// duplicate), its events carry a token whose generation is retired
    /// here (`slab`), and wake nobody.
    pub fn forget(&self) {
        self.remove(false);
    }

    fn remove(&self, del: bool) {
        // AcqRel swap: exactly one caller (an explicit deregister or the
        // drop) goes on; pairs with the same swap in any other caller.
        if !self.registered.swap(false, AcqRel) {
            return;
        }
        if del {
            // Errors only mean the netpoller's epoll fd already forgot the
            // fd.
            let _ = self.inner.registry.deregister(self.fd);
        }
        let removed = lock(&self.inner.ios).remove(self.io.token);
        let mut batch = Vec::new();
        let mut cancel = Vec::new();
        {
            let mut guard = lock(&self.io.waiters);
            let ws = &mut *guard;
            ws.closed = true;
            for waiter in ws.read.drain(..).chain(ws.write.drain(..)) {
                batch.push(waiter.w);
                cancel.extend(waiter.timer);
            }
        }
        for k in cancel {
            self.inner.cancel_timer(k);
        }
        let n = batch.len();
        if n > 0 {
            W::ready_all(batch);
            sub(&self.inner.nwaiters, n);
        }
        drop(removed);
    }

    /// The registered fd.
    pub fn fd(&self) -> RawFd {
        self.fd
    }
}

impl<W: Ready> Drop for Registration<W> {
    fn drop(&mut self) {
        self.deregister();
    }
}

impl<W: Ready> Registration<W> {
    /// Registers `fd` with `inner` (see [`Handle::register`](super::Handle::register)).
    pub(super) fn new(
        inner: &Arc<Inner<W>>,
        fd: RawFd,
        ready: bool,
    ) -> io::Result<Registration<W>> {
        let io = {
            let mut ios = lock(&inner.ios);
            // Acquire: pairs with the Release store in `Inner::stop`, which
            // then drains `ios` under this lock: either it sees this
            // registration, or we see the flag.
            if inner.stopped.load(Acquire) {
                return Err(super::stopped_err());
            }
            ios.insert(ready)
        };
        if let Err(e) = inner.registry.register(fd, io.token) {
            lock(&inner.ios).remove(io.token);
            return Err(e);
        }
        Ok(Registration {
            inner: inner.clone(),
            io,
            fd,
            registered: AtomicBool::new(true),
        })
    }
}
