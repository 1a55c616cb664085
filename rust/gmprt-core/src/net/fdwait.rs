//! [`FdWait`]: park a G until any file descriptor is readable or writable
//! (interop with sockets made elsewhere).
//!
//! The fd is not ours. The wait registers a private duplicate
//! (`F_DUPFD_CLOEXEC`), so it never removes someone else's registration
//! nor races the owner closing the number, and drops it when the wait ends.
//! Each poll asks `poll(2)` first, so a ready fd costs no registration.

use crate::loom::sync::Arc;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::task::Poll;
use std::time::Instant;

use super::sock::{register, Reg};
use super::wait::IoWait;
use crate::api::Waker;
use crate::netpoll::Dir;
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
            // SAFETY: F_DUPFD_CLOEXEC on an fd number; a bad fd just fails
            // with EBADF.
            let dup = unsafe { libc::fcntl(self.fd, libc::F_DUPFD_CLOEXEC, 0) };
            if dup < 0 {
                return Poll::Ready(Err(io::Error::last_os_error()));
            }
            // SAFETY: `dup` is a new fd that nobody else owns.
            let dup = unsafe { OwnedFd::from_raw_fd(dup) };
            // Not ready: poll(2) just said so, and epoll reports the state
            // at registration as an event, so nothing is missed.
            let reg = register(sched.netpoll(), dup.as_raw_fd(), false)?;
            self.reg = Some((Arc::new(reg), dup));
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

    /// `poll(2)` with no wait: whether the fd is ready now.
    fn ready_now(&self) -> io::Result<bool> {
        let events = match self.dir {
            Dir::Read => libc::POLLIN,
            Dir::Write => libc::POLLOUT,
        };
        let mut pfd = libc::pollfd {
            fd: self.fd,
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

    /// Deregisters the duplicate, then closes it.
    fn release(&mut self) {
        if let Some((reg, dup)) = self.reg.take() {
            reg.deregister();
            drop(dup);
        }
    }
}

impl Drop for FdWait {
    fn drop(&mut self) {
        self.wait.cancel();
        self.release();
    }
}
