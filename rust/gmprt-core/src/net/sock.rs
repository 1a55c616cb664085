//! One owned socket: its lifetime, its lazy registration with the
//! netpoller of the runtime using it, and the readiness-retry loop every
//! operation on it runs. See "Ownership" in the module docs.

use crate::loom::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use crate::loom::{lock, unpoison};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::task::Poll;

use super::error::{closed, NetpollError};
use super::wait::IoWait;
use crate::api::Waker;
use crate::netpoll::{Dir, Netpoll, Registration};
use crate::sched::Sched;

pub(crate) type Reg = Registration<Waker>;

/// Registers `fd` with `np` (starting its epoll instance on first use).
/// `ready`: see [`Handle::register`](crate::netpoll::Handle::register).
pub(crate) fn register(np: &Netpoll<Waker>, fd: RawFd, ready: bool) -> io::Result<Reg> {
    let h = np
        .handle()
        .map_err(|e| NetpollError::Unavailable(e).into_io())?;
    h.register(fd, ready)
        .map_err(|e| NetpollError::Register(e).into_io())
}

/// A socket's registration with the netpoller of the runtime using it,
/// made on its first operation. A socket made before the runtime started,
/// or carried from one runtime to the next, is simply registered again.
#[derive(Default)]
pub(crate) struct LazyReg(Mutex<Option<Arc<Reg>>>);

impl LazyReg {
    /// Already registered (a dial registers the socket it connects).
    pub(crate) fn with(reg: Arc<Reg>) -> LazyReg {
        LazyReg(Mutex::new(Some(reg)))
    }

    /// Any thread: the registration with `np`, registering `fd` (again, for
    /// a new runtime, after removing the old one) if needed.
    fn get(&self, np: &Netpoll<Waker>, fd: RawFd) -> io::Result<Arc<Reg>> {
        let mut slot = lock(&self.0);
        if let Some(r) = slot.as_ref() {
            if np.owns(r) {
                return Ok(r.clone());
            }
        }
        if let Some(old) = slot.take() {
            old.deregister();
        }
        let reg = Arc::new(register(np, fd, true)?);
        *slot = Some(reg.clone());
        Ok(reg)
    }

    /// Deregisters (waking every G parked on the socket). The fd must still
    /// be open.
    fn close(&self) {
        if let Some(r) = lock(&self.0).take() {
            r.deregister();
        }
    }
}

/// One owned socket of type `S` (a mio listener or stream).
///
/// `io` is read-locked for every syscall (so one G can receive while
/// another sends) and write-locked only by [`close`](Self::close): the fd
/// is never closed, and its number reused, under a syscall in flight.
/// `None` once closed; never reopened.
pub(crate) struct Sock<S: AsRawFd> {
    io: RwLock<Option<S>>,
    reg: LazyReg,
    /// The fd, kept for registering and for `fileno()`; valid while `io`
    /// is `Some`.
    fd: RawFd,
}

impl<S: AsRawFd> Sock<S> {
    pub(crate) fn new(s: S, reg: LazyReg) -> Sock<S> {
        Sock {
            fd: s.as_raw_fd(),
            io: RwLock::new(Some(s)),
            reg,
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Option<S>> {
        unpoison(self.io.read())
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.read().is_none()
    }

    /// The fd, or None once closed.
    pub(crate) fn fd(&self) -> Option<RawFd> {
        self.read().as_ref().map(|_| self.fd)
    }

    /// The registration with `sched`'s netpoller; a [`closed`] error once
    /// closed.
    pub(crate) fn registration(&self, sched: &Sched) -> io::Result<Arc<Reg>> {
        if self.is_closed() {
            return Err(closed());
        }
        self.reg.get(sched.netpoll(), self.fd)
    }

    /// Runs `op` on the open socket under the shared lock; a [`closed`]
    /// error once closed.
    pub(crate) fn with<T>(&self, op: impl FnOnce(&S) -> io::Result<T>) -> io::Result<T> {
        match self.read().as_ref() {
            Some(s) => op(s),
            None => Err(closed()),
        }
    }

    /// Deregisters (waking the Gs parked on it: they find it closed), then
    /// closes the fd. False if it was closed already.
    pub(crate) fn close(&self) -> bool {
        let mut io = unpoison(self.io.write());
        let Some(s) = io.take() else {
            return false;
        };
        self.reg.close();
        drop(s);
        true
    }

    /// Tries `op` while `reg` says `dir` may be ready, retrying `EINTR`. On
    /// `WouldBlock` it clears the readiness with the tick read *before* the
    /// try, so an event that arrived meanwhile survives (netpoll module
    /// docs, "Readiness with ticks"), and returns `Pending`: the caller may
    /// park.
    pub(crate) fn attempt<T>(
        &self,
        reg: &Reg,
        dir: Dir,
        mut op: impl FnMut(&S) -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        loop {
            let ev = reg.readiness(dir);
            if !ev.ready {
                return Poll::Pending;
            }
            match self.with(&mut op) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    reg.clear_readiness(ev);
                    return Poll::Pending;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return Poll::Ready(r),
            }
        }
    }
}

impl<S: AsRawFd> Sock<S> {
    /// One operation in `dir` (the shape of every `poll_*` on a socket):
    /// resume the wait, get the registration, [`attempt`](Self::attempt)
    /// `op`, and on would-block check the deadline or record the wait
    /// (module docs, "The I/O path").
    pub(crate) fn poll_io<T>(
        &self,
        sched: &Sched,
        dir: Dir,
        wait: &mut IoWait,
        op: impl FnMut(&S) -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        wait.resume()?;
        let reg = self.registration(sched)?;
        match self.attempt(&reg, dir, op) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => wait.block(reg, dir),
        }
    }
}

impl<S: AsRawFd> Drop for Sock<S> {
    fn drop(&mut self) {
        self.close();
    }
}
