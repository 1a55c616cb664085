//! [`Listener`]: a listening TCP socket (socket2 for the backlog and
//! `SO_REUSEPORT`), its accept, and the accept backoff that keeps a server
//! alive when the process runs out of file descriptors.
//!
//! # Accept backoff (Go's net/http `Serve`)
//!
//! An accept that fails for lack of descriptors or kernel memory (EMFILE,
//! ENFILE, ENOBUFS, ENOMEM: Go's "temporary" accept errors) does not fail:
//! the listener logs once per episode to stderr and every accepting G
//! sleeps on a timer, 5 ms doubling to 1 s, then retries. The first
//! successful accept ends the episode. A connection that died in the
//! backlog (ECONNABORTED, EPROTO) is skipped: accept the next one.

use crate::loom::sync::Mutex;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::task::Poll;
use std::time::{Duration, Instant};

use mio::net::TcpListener;

use super::conn::Conn;
use super::error::NetpollError;
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

/// A listening TCP socket. Any thread may use it; several Gs may accept on
/// it at once. [`close`](Self::close) wakes the Gs parked in accept, whose
/// next poll returns a [`Closed`](super::Closed) error.
pub struct Listener {
    sock: Sock<TcpListener>,
    addr: SocketAddr,
    backoff: Mutex<Backoff>,
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
        let std_ln: std::net::TcpListener = s.into();
        let bound = std_ln.local_addr()?;
        Ok(Listener {
            sock: Sock::new(TcpListener::from_std(std_ln), LazyReg::default()),
            addr: bound,
            backoff: Mutex::new(Backoff::default()),
        })
    }

    /// The address bound (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Accepts the next connection and its peer's address. Pending while
    /// none is waiting, or while backing off (module docs).
    pub fn poll_accept(
        &self,
        sched: &Sched,
        wait: &mut IoWait,
    ) -> Poll<io::Result<(Conn, SocketAddr)>> {
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

    /// Stops listening, waking the Gs parked in accept. False if it was
    /// closed already.
    pub fn close(&self) -> bool {
        self.sock.close()
    }

    pub fn is_closed(&self) -> bool {
        self.sock.is_closed()
    }

    /// The socket's fd, or None once closed.
    pub fn fd(&self) -> Option<RawFd> {
        self.sock.fd()
    }
}
