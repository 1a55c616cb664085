//! [`FdWait`]: park a G until any file descriptor is readable or writable
//! (interop with sockets made elsewhere).
//!
//! The fd is not ours. The wait registers a private duplicate
//! (`F_DUPFD_CLOEXEC`), so it never removes someone else's registration
//! nor races the owner closing the number, and drops it when the wait ends.
//! Each poll asks `poll(2)` first, so a ready fd costs no registration.
//!
//! [`FdWatch`]: the same, for a watcher that waits on one fd again and
//! again (a `gmprt.aio` reader or writer). The watchers of one fd share
//! its [`FdReg`], which registers the fd *itself*, once, for as long as
//! it is watched: a duplicate per watched fd would double the fds a
//! `gmprt.aio` server holds, and 10,000 connections would need 20,000.
//! The price is the rule asyncio's own selector loop already sets its
//! fds' owners: stop watching before closing (see [`FdReg`]). A watch asks
//! `poll(2)` only when the registration cannot answer (see its docs).

use crate::loom::lock;
use crate::loom::sync::{Arc, Mutex};
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

/// The registration of an fd that is not ours, for as long as its owner
/// watches it: shared by the [`FdWatch`]es of its two directions, made by
/// the first wait that blocks, removed by [`deregister`](Self::deregister)
/// (or the drop), for good.
///
/// The fd itself is registered (module docs), so the owner must
/// deregister *before* closing it, as asyncio's selector loop has its
/// transports remove their readers before closing their sockets: after
/// the close the number may name another file, perhaps a gmprt socket
/// registered with the same netpoller, and an `EPOLL_CTL_DEL` by number
/// would remove that one. An owner that broke the rule is caught: the
/// deregister compares the fd's file (`fstat`'s device and inode) with
/// the one registered and, when they differ or the fd is closed, only
/// forgets the registration ([`Registration::forget`]). (What no check can
/// catch is another thread reusing the number between that `fstat` and
/// the `DEL`, after such a close.) An fd already in the netpoller's epoll
/// set (a gmprt socket's own fd, watched from asyncio) cannot be
/// registered twice; it is watched through a private duplicate, as
/// [`FdWait`] watches.
///
/// [`Registration::forget`]: crate::netpoll::Registration::forget
pub struct FdReg {
    fd: RawFd,
    slot: Mutex<Slot>,
}

enum Slot {
    Unregistered,
    Registered {
        reg: Arc<Reg>,
        how: Registered,
    },
    /// Deregistered: never registered again.
    Gone,
}

enum Registered {
    /// The fd itself, which was this file when registered.
    Fd(FileId),
    /// A private duplicate, deregistered then closed.
    Dup(OwnedFd),
}

/// A file's identity: `fstat`'s device and inode (a socket's inode is
/// unique while it lives).
#[derive(PartialEq, Eq, Clone, Copy)]
struct FileId(libc::dev_t, libc::ino_t);

fn file_id(fd: RawFd) -> Option<FileId> {
    // SAFETY: all zeroes is a valid `stat` (plain integers).
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes one `stat` into the buffer we own; a bad fd
    // just fails with EBADF.
    let ok = unsafe { libc::fstat(fd, &mut st) } == 0;
    ok.then_some(FileId(st.st_dev, st.st_ino))
}

impl FdReg {
    pub fn new(fd: RawFd) -> FdReg {
        FdReg {
            fd,
            slot: Mutex::new(Slot::Unregistered),
        }
    }

    /// The registration, registering the fd on first use; a [`closed`]
    /// error once deregistered.
    ///
    /// [`closed`]: super::error::closed
    fn get(&self, sched: &Sched) -> io::Result<Arc<Reg>> {
        let mut slot = lock(&self.slot);
        match &*slot {
            Slot::Registered { reg, .. } => return Ok(reg.clone()),
            Slot::Gone => return Err(super::error::closed()),
            Slot::Unregistered => {}
        }
        let id = file_id(self.fd).ok_or_else(io::Error::last_os_error)?;
        // Registered not ready: the callers just saw poll(2) say so, and
        // epoll reports the state at registration as an event, so nothing
        // is missed.
        let (reg, how) = match register(sched.netpoll(), self.fd, false) {
            Ok(reg) => (Arc::new(reg), Registered::Fd(id)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let (reg, dup) = register_dup(sched, self.fd)?;
                (reg, Registered::Dup(dup))
            }
            Err(e) => return Err(e),
        };
        *slot = Slot::Registered {
            reg: reg.clone(),
            how,
        };
        Ok(reg)
    }

    /// Removes the registration (waking the watchers parked on it: they
    /// find it closed), for good. Call it before closing the fd (type
    /// docs). Idempotent.
    pub fn deregister(&self) {
        let Slot::Registered { reg, how } = std::mem::replace(&mut *lock(&self.slot), Slot::Gone)
        else {
            return;
        };
        match how {
            Registered::Fd(id) if file_id(self.fd) == Some(id) => reg.deregister(),
            Registered::Fd(_) => reg.forget(),
            Registered::Dup(dup) => release(&mut Some((reg, dup))),
        }
    }
}

impl Drop for FdReg {
    fn drop(&mut self) {
        self.deregister();
    }
}

/// A watch of one direction of an fd that is not ours, waited on again and
/// again: a `gmprt.aio` loop's reader or writer.
///
/// The fd's [`FdReg`] stays registered from the first wait that blocks
/// until its owner deregisters it, so a wait costs no `epoll_ctl`.
/// Readiness comes from the registration (edge-triggered: set by every
/// event, cleared only by us after seeing the fd not ready), so `poll(2)`
/// is asked only when an event arrived since the last clear and the
/// watcher must *know* the fd is ready (`confirm`: `select` semantics for
/// a callback that may not handle `EAGAIN`) or must find out whether a
/// callback left it ready. An owner that handles `EAGAIN` and reports when
/// it drained the fd ([`drained`](Self::drained)) makes no `poll(2)` at
/// all.
pub struct FdWatch {
    shared: Arc<FdReg>,
    dir: Dir,
    /// `shared`'s registration, once a wait blocked: kept here so a poll
    /// takes no lock.
    reg: Option<Arc<Reg>>,
    wait: IoWait,
    /// The readiness the last `Ready` was based on (None: `poll(2)`'s
    /// answer before registering), for `drained`.
    last: Option<ReadyEvent>,
}

impl FdWatch {
    pub fn new(shared: Arc<FdReg>, dir: Dir) -> FdWatch {
        FdWatch {
            shared,
            dir,
            reg: None,
            wait: IoWait::new(None),
            last: None,
        }
    }

    /// Ready when the fd may be (`confirm`: when `poll(2)` says it is); an
    /// error (EBADF) if it is not an open fd, a closed error once its
    /// [`FdReg`] is deregistered. Readable includes EOF and errors, as for
    /// `select`. Nothing is read or written.
    pub fn poll(&mut self, sched: &Sched, confirm: bool) -> Poll<io::Result<()>> {
        self.wait.resume()?;
        let fd = self.shared.fd;
        let Some(reg) = &self.reg else {
            if ready_now(fd, self.dir)? {
                self.last = None;
                return Poll::Ready(Ok(()));
            }
            let reg = self.shared.get(sched)?;
            self.reg = Some(reg.clone());
            return self.wait.block(reg, self.dir);
        };
        let reg = reg.clone();
        if reg.is_closed() {
            // Deregistered under us: by the owner, or the netpoller stopped.
            return Poll::Ready(Err(super::error::closed()));
        }
        // Read before poll(2): a clear below then never erases an event
        // that arrived after it.
        let ev = reg.readiness(self.dir);
        if ev.ready {
            if !confirm || ready_now(fd, self.dir)? {
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
        if let (Some(reg), Some(ev)) = (&self.reg, self.last.take()) {
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
    }
}
