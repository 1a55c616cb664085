//! [`FdWait`]: park a G until any file descriptor is readable or writable
//! (interop with sockets made elsewhere).
//!
//! The fd is not ours. The wait registers a private duplicate
//! (`F_DUPFD_CLOEXEC`), so it never removes someone else's registration
//! nor races the owner closing the number, and drops it when the wait ends.
//! Each poll asks `poll(2)` first, so a ready fd costs no registration.
//!
//! [`FdWatch`]: the same, for a watcher that waits on one fd again and
//! again (a `gmprt.aio` reader): it keeps its duplicate registered for its
//! whole life, and asks `poll(2)` only when the registration cannot answer
//! (see its docs).

use crate::loom::sync::Arc;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::task::Poll;
use std::time::Instant;

use super::sock::{register, Reg};
use super::wait::IoWait;
use crate::api::Waker;
use crate::netpoll::Dir;
use crate::netpoll::ReadyEvent;
use crate::sched::Sched;

/// A wait for `fd` to be ready in one direction. "Readable" includes EOF
/// and errors, as for `select`. Nothing is read or written.
pub struct FdWait {
    fd: RawFd,
    dir: Dir,
    /// The registered duplicate, once a poll found the fd not ready.
    reg: Option<(Arc<Reg>, OwnedFd)>,
    wait: IoWait,
}

impl FdWait {
    pub fn new(fd: RawFd, dir: Dir, deadline: Option<Instant>) -> FdWait {
        FdWait {
            fd,
            dir,
            reg: None,
            wait: IoWait::new(deadline),
        }
    }

    pub fn fd(&self) -> RawFd {
        self.fd
    }

    pub fn dir(&self) -> Dir {
        self.dir
    }

    /// Ready once `fd` is; an error (EBADF) if it is not an open fd.
    pub fn poll(&mut self, sched: &Sched) -> Poll<io::Result<()>> {
        let r = self.poll_inner(sched);
        if r.is_ready() {
            self.release();
        }
        r
    }

    fn poll_inner(&mut self, sched: &Sched) -> Poll<io::Result<()>> {
        self.wait.resume()?;
        // Read before poll(2): a clear below then never erases an event
        // that arrived after it.
        let ev = self.reg.as_ref().map(|(r, _)| r.readiness(self.dir));
        if self.ready_now()? {
            return Poll::Ready(Ok(()));
        }
        if self.wait.expired() {
            return Poll::Ready(Err(super::error::deadline_exceeded()));
        }
        if let (Some((reg, _)), Some(ev)) = (&self.reg, ev) {
            reg.clear_readiness(ev);
        }
        if self.reg.is_none() {
            self.reg = Some(register_dup(sched, self.fd)?);
        }
        let reg = self.reg.as_ref().expect("registered above").0.clone();
        self.wait.block(reg, self.dir)
    }

    /// Right after `poll` returned `Pending`: see [`IoWait::park`].
    pub fn park(&mut self, w: Waker) -> bool {
        self.wait.park(w)
    }

    /// Withdraws the park (its G gives up waiting): see [`IoWait::cancel`].
    pub fn cancel(&mut self) {
        self.wait.cancel();
    }

    fn ready_now(&self) -> io::Result<bool> {
        ready_now(self.fd, self.dir)
    }

    /// Deregisters the duplicate, then closes it.
    fn release(&mut self) {
        release(&mut self.reg);
    }
}

impl Drop for FdWait {
    fn drop(&mut self) {
        self.wait.cancel();
        self.release();
    }
}

/// Registers a private duplicate of `fd` (module docs): its registration,
/// and the duplicate to close after deregistering it.
fn register_dup(sched: &Sched, fd: RawFd) -> io::Result<(Arc<Reg>, OwnedFd)> {
    // SAFETY: F_DUPFD_CLOEXEC on an fd number; a bad fd just fails with
    // EBADF.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `dup` is a new fd that nobody else owns.
    let dup = unsafe { OwnedFd::from_raw_fd(dup) };
    // Registered not ready: the callers just saw poll(2) say so, and epoll
    // reports the state at registration as an event, so nothing is missed.
    let reg = register(sched.netpoll(), dup.as_raw_fd(), false)?;
    Ok((Arc::new(reg), dup))
}

/// Deregisters the duplicate, then closes it.
fn release(reg: &mut Option<(Arc<Reg>, OwnedFd)>) {
    if let Some((reg, dup)) = reg.take() {
        reg.deregister();
        drop(dup);
    }
}

/// `poll(2)` with no wait: whether `fd` is ready in `dir` now.
fn ready_now(fd: RawFd, dir: Dir) -> io::Result<bool> {
    let events = match dir {
        Dir::Read => libc::POLLIN,
        Dir::Write => libc::POLLOUT,
    };
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd, zero timeout.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        if n >= 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    if pfd.revents & libc::POLLNVAL != 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    Ok(pfd.revents & (events | libc::POLLERR | libc::POLLHUP) != 0)
}

/// A watch of one direction of an fd that is not ours, waited on again and
/// again: a `gmprt.aio` loop's reader or writer.
///
/// Its duplicate stays registered from the first wait that blocks until
/// the drop, so a wait costs no `fcntl`/`epoll_ctl`/`close`. Readiness comes
/// from the registration (edge-triggered: set by every event, cleared only
/// by us after seeing the fd not ready), so `poll(2)` is asked only when an
/// event arrived since the last clear and the watcher must *know* the fd
/// is ready (`confirm`: `select` semantics for a callback that may not
/// handle `EAGAIN`) or must find out whether a callback left it ready. An
/// owner that handles `EAGAIN` and reports when it drained the fd
/// ([`drained`](Self::drained)) makes no `poll(2)` at all.
pub struct FdWatch {
    fd: RawFd,
    dir: Dir,
    reg: Option<(Arc<Reg>, OwnedFd)>,
    wait: IoWait,
    /// The readiness the last `Ready` was based on (None: `poll(2)`'s
    /// answer before registering), for `drained`.
    last: Option<ReadyEvent>,
}

impl FdWatch {
    pub fn new(fd: RawFd, dir: Dir) -> FdWatch {
        FdWatch {
            fd,
            dir,
            reg: None,
            wait: IoWait::new(None),
            last: None,
        }
    }

    /// Ready when `fd` may be (`confirm`: when `poll(2)` says it is); an
    /// error (EBADF) if it is not an open fd. Readable includes EOF and
    /// errors, as for `select`. Nothing is read or written.
    pub fn poll(&mut self, sched: &Sched, confirm: bool) -> Poll<io::Result<()>> {
        self.wait.resume()?;
        let Some((reg, _)) = &self.reg else {
            if ready_now(self.fd, self.dir)? {
                self.last = None;
                return Poll::Ready(Ok(()));
            }
            let (reg, dup) = register_dup(sched, self.fd)?;
            self.reg = Some((reg.clone(), dup));
            return self.wait.block(reg, self.dir);
        };
        let reg = reg.clone();
        if reg.is_closed() {
            // Deregistered under us: the netpoller stopped.
            return Poll::Ready(Err(super::error::closed()));
        }
        // Read before poll(2): a clear below then never erases an event
        // that arrived after it.
        let ev = reg.readiness(self.dir);
        if ev.ready {
            if !confirm || ready_now(self.fd, self.dir)? {
                self.last = Some(ev);
                return Poll::Ready(Ok(()));
            }
            reg.clear_readiness(ev);
        }
        self.wait.block(reg, self.dir)
    }

    /// The owner drained the fd after the last `Ready`: its read (or
    /// write) returned `EAGAIN` (`would_block`), or a read returned less
    /// than it asked for. The fd is then not ready until the next event,
    /// unless one arrived since that `Ready` (the next `poll` says ready)
    /// or, after a short read, the peer's shutdown was reported: a short
    /// read proves nothing then (the next read returns EOF, and no event
    /// will say so).
    pub fn drained(&mut self, would_block: bool) {
        if let (Some((reg, _)), Some(ev)) = (&self.reg, self.last.take()) {
            if would_block || !ev.read_closed {
                reg.clear_readiness(ev);
            }
        }
    }

    /// Right after `poll` returned `Pending`: see [`IoWait::park`].
    pub fn park(&mut self, w: Waker) -> bool {
        self.wait.park(w)
    }

    /// Withdraws the park (its G gives up waiting): see [`IoWait::cancel`].
    pub fn cancel(&mut self) {
        self.wait.cancel();
    }
}

impl Drop for FdWatch {
    fn drop(&mut self) {
        self.wait.cancel();
        release(&mut self.reg);
    }
}
