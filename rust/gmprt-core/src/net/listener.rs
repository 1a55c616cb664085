//! [`Listener`]: a listening TCP or Unix stream socket (socket2 for the
//! backlog and `SO_REUSEPORT`), its accept, the accept backoff that keeps a
//! server alive when the process runs out of file descriptors, and the
//! socket file a Unix listener removes when it closes.
//!
//! # Accept backoff (Go's net/http `Serve`)
//!
//! An accept that fails for lack of descriptors or kernel memory (EMFILE,
//! ENFILE, ENOBUFS, ENOMEM: Go's "temporary" accept errors) does not fail:
//! the listener logs once per episode to stderr and every accepting G
//! sleeps on a timer, 5 ms doubling to 1 s, then retries. The first
//! successful accept ends the episode. A connection that died in the
//! backlog (ECONNABORTED, EPROTO) is skipped: accept the next one. Both
//! kinds share this: a Unix accept needs a descriptor as much as a TCP one.
//!
//! # The socket file (Go's `UnixListener` unlink-on-close)
//!
//! Binding a path creates a socket file that outlives the socket, and a
//! later bind to the path fails with EADDRINUSE while it exists. So a
//! listener that bound a path removes the file when it closes (or drops),
//! but only if the file there is still the one its bind made: same
//! `st_dev`/`st_ino`, taken by `lstat` right after the bind. Another
//! process (or a later listener of ours) that removed it and bound the path
//! again, or any file put in its place, is left alone; Go removes whatever
//! is there. A check-then-unlink can still race with a replacement made in
//! between; no unlink(2) variant closes that. Abstract names have no file,
//! and an adopted listener's file belongs to whoever bound it (systemd, a
//! parent process), so neither removes anything.

use crate::loom::sync::Mutex;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::task::Poll;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, UnixListener};

use super::addr::{unix_sockaddr, Addr};
use super::conn::Conn;
use super::error::NetpollError;
use super::kind::{self, Lst};
use super::sock::{LazyReg, Sock};
use super::wait::IoWait;
use crate::loom::lock;
use crate::netpoll::Dir;
use crate::sched::Sched;

/// Go's net/http `Serve`: 5 ms, doubling to 1 s.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Backoff {
    /// Current delay; zero when accepts succeed.
    delay: Duration,
    until: Option<Instant>,
    /// This out-of-descriptors episode was logged.
    logged: bool,
}

/// A listening TCP or Unix stream socket. Any thread may use it; several
/// Gs may accept on it at once. [`close`](Self::close) (or the drop) wakes
/// the Gs parked in accept, whose next poll returns a
/// [`Closed`](super::Closed) error, and removes the socket file a
/// [`bind_unix`](Self::bind_unix) made (module docs).
pub struct Listener {
    sock: Sock<Lst>,
    addr: Addr,
    backoff: Mutex<Backoff>,
    /// The socket file to remove on close.
    file: Option<SocketFile>,
}

/// The socket file a Unix bind made: its path, as bound, and its identity
/// then.
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    /// The file at `path` now (`lstat`: a symlink put there is not it).
    fn at(path: &Path) -> Option<SocketFile> {
        let m = std::fs::symlink_metadata(path).ok()?;
        Some(SocketFile {
            path: path.to_path_buf(),
            dev: m.dev(),
            ino: m.ino(),
        })
    }

    /// Removes the file if it is still the one bound (module docs). Best
    /// effort: a file already gone, or a directory we may not write, is
    /// not the close's failure.
    fn remove(&self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if m.dev() == self.dev && m.ino() == self.ino {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Out of descriptors or kernel memory: back off and retry (Go's
/// `isTemporary` accept errors).
fn exhausted(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// The connection died in the backlog: just accept the next one.
fn aborted(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::ConnectionAborted || e.raw_os_error() == Some(libc::EPROTO)
}

impl Listener {
    /// Listens on `addr` (port 0 picks a free port: see
    /// [`local_addr`](Self::local_addr)) with `SO_REUSEADDR`, and
    /// `SO_REUSEPORT` if `reuse_port`, so several listeners (processes) can
    /// share the port. Needs no running runtime: the socket is registered
    /// with the netpoller of whichever runtime accepts on it.
    pub fn bind(addr: SocketAddr, backlog: i32, reuse_port: bool) -> io::Result<Listener> {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        if reuse_port {
            s.set_reuse_port(true)?;
        }
        s.bind(&addr.into())?;
        s.listen(backlog)?;
        s.set_nonblocking(true)?;
        let ln = Lst::Tcp(TcpListener::from(OwnedFd::from(s)));
        Listener::new(ln, None)
    }

    /// Listens on the Unix socket `path`: a filesystem path, where the bind
    /// creates a socket file (EADDRINUSE if anything exists there, a stale
    /// socket file included: remove it first), or, with a leading NUL
    /// byte, the rest of the bytes as a name in Linux's abstract namespace.
    /// The empty path binds an unused abstract name the kernel picks
    /// (autobind; read it from [`local_addr`](Self::local_addr)). Closing
    /// the listener removes the socket file if it is still the one bound
    /// (module docs). Needs no running runtime.
    pub fn bind_unix(path: impl AsRef<Path>, backlog: i32) -> io::Result<Listener> {
        use socket2::{Domain, Socket, Type};
        let path = path.as_ref();
        let sa = unix_sockaddr(path)?;
        let s = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        s.bind(&sa)?;
        // Right after the bind, before anyone else could replace the file.
        let file = sa.as_pathname().and_then(SocketFile::at);
        let ready = s.listen(backlog).and_then(|()| s.set_nonblocking(true));
        if let Err(e) = ready {
            // Not listening: the file it made is of no use to anyone.
            if let Some(f) = &file {
                f.remove();
            }
            return Err(e);
        }
        let ln = Lst::Unix(UnixListener::from(OwnedFd::from(s)));
        Listener::new(ln, file)
    }

    /// Adopts `fd`, a listening TCP or Unix stream socket made elsewhere
    /// (Go's `net.FileListener`; a socket systemd passed, or one made with
    /// Python's `socket`): sets `O_NONBLOCK`, which every duplicate of `fd`
    /// shares. Its socket file, if any, is left in place on close. An
    /// `InvalidInput` error, naming what it got, for anything else: not a
    /// socket, not a stream socket, or one that is not listening.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Listener> {
        Listener::new(kind::adopt_listener(fd)?, None)
    }

    fn new(ln: Lst, file: Option<SocketFile>) -> io::Result<Listener> {
        let addr = match ln.local_addr() {
            Ok(a) => a,
            Err(e) => {
                if let Some(f) = &file {
                    f.remove();
                }
                return Err(e);
            }
        };
        Ok(Listener {
            sock: Sock::new(ln, LazyReg::default()),
            addr,
            backoff: Mutex::new(Backoff::default()),
            file,
        })
    }

    /// The address bound (with the real port when bound to port 0, the
    /// name the kernel picked for a Unix autobind).
    pub fn local_addr(&self) -> &Addr {
        &self.addr
    }

    /// The TCP address bound, for a TCP listener.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.addr.inet()
    }

    /// Whether this is a Unix domain socket (else TCP).
    pub fn is_unix(&self) -> bool {
        matches!(self.addr, Addr::Unix(_))
    }

    /// Accepts the next connection and its peer's address. Pending while
    /// none is waiting, or while backing off (module docs).
    pub fn poll_accept(&self, sched: &Sched, wait: &mut IoWait) -> Poll<io::Result<(Conn, Addr)>> {
        wait.resume()?;
        loop {
            if self.sock.is_closed() {
                return Poll::Ready(Err(super::error::closed()));
            }
            if let Some(until) = self.backing_off() {
                return match sched.netpoll().handle() {
                    Ok(h) => wait.sleep(h, until),
                    Err(e) => Poll::Ready(Err(NetpollError::Unavailable(e).into_io())),
                };
            }
            let reg = self.sock.registration(sched)?;
            match self.sock.attempt(&reg, Dir::Read, |l| l.accept()) {
                Poll::Ready(Ok((s, peer))) => {
                    self.accepted();
                    return Poll::Ready(Ok((Conn::new(s, LazyReg::default()), peer)));
                }
                Poll::Ready(Err(e)) if aborted(&e) => continue,
                Poll::Ready(Err(e)) if exhausted(&e) => self.start_backoff(&e),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return wait.block(reg, Dir::Read),
            }
        }
    }

    /// Whether accepts are backing off now, out of descriptors (module
    /// docs).
    pub fn is_backing_off(&self) -> bool {
        self.backing_off().is_some()
    }

    /// The end of the current backoff, if one is running.
    fn backing_off(&self) -> Option<Instant> {
        lock(&self.backoff).until.filter(|&u| Instant::now() < u)
    }

    fn start_backoff(&self, e: &io::Error) {
        let mut b = lock(&self.backoff);
        b.delay = if b.delay.is_zero() {
            ACCEPT_BACKOFF_MIN
        } else {
            (b.delay * 2).min(ACCEPT_BACKOFF_MAX)
        };
        b.until = Some(Instant::now() + b.delay);
        if !b.logged {
            b.logged = true;
            eprintln!(
                "gmprt: accept on {}: {e}; retrying with backoff ({} ms doubling up to {} ms) \
                 until descriptors free up",
                self.addr,
                ACCEPT_BACKOFF_MIN.as_millis(),
                ACCEPT_BACKOFF_MAX.as_millis()
            );
        }
    }

    fn accepted(&self) {
        let mut b = lock(&self.backoff);
        if b.logged || !b.delay.is_zero() {
            *b = Backoff::default();
        }
    }

    /// Stops listening, waking the Gs parked in accept, and removes the
    /// socket file this listener bound, if it is still there (module
    /// docs). False if it was closed already.
    pub fn close(&self) -> bool {
        // The file goes after the fd: until then a dialer still finds the
        // socket, and while the file exists nobody else can bind the path,
        // so the identity check cannot be fooled by a bind in between.
        let closed = self.sock.close();
        if closed {
            if let Some(f) = &self.file {
                f.remove();
            }
        }
        closed
    }

    pub fn is_closed(&self) -> bool {
        self.sock.is_closed()
    }

    /// The socket's fd, or None once closed.
    pub fn fd(&self) -> Option<RawFd> {
        self.sock.fd()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.close();
    }
}
