//! The errors `net` makes itself. Everything else is the kernel's
//! `io::Error`, errno and all.
//!
//! Each of these is an `io::Error` too, with a payload that says which
//! (`is_closed`, `is_timeout`, [`NetpollError::of`]), so a caller can tell
//! "the socket is closed" or "the deadline passed" from a syscall error of
//! the same kind, and the Python binding can map each to its exception.
//! They are made only on the way out of an operation, never on a hot path.

use std::error::Error;
use std::fmt;
use std::io;

/// An operation on a closed [`Conn`](super::Conn) or
/// [`Listener`](super::Listener) (Go's `net.ErrClosed`), including one that
/// was parked when another thread closed it. Kind `NotConnected`.
#[derive(Debug)]
pub struct Closed;

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("use of a closed socket")
    }
}
impl Error for Closed {}

pub(crate) fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, Closed)
}

/// Whether `e` says the socket was closed (see [`Closed`]).
pub fn is_closed(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|p| p.is::<Closed>())
}

/// The operation's deadline passed while it would have blocked (Go's
/// `os.ErrDeadlineExceeded`). Kind `TimedOut`; unlike a kernel
/// `ETIMEDOUT` it has no errno. The socket stays usable.
#[derive(Debug)]
pub struct DeadlineExceeded;

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("i/o deadline exceeded")
    }
}
impl Error for DeadlineExceeded {}

pub(crate) fn deadline_exceeded() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, DeadlineExceeded)
}

/// Whether `e` says the operation's deadline passed (see
/// [`DeadlineExceeded`]).
pub fn is_timeout(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|p| p.is::<DeadlineExceeded>())
}

/// The runtime's netpoller could not take a socket or a timer: a fault of
/// the runtime (it is stopping), not of the socket. Carried in an
/// `io::Error` of the inner error's kind (`Other` for `NoTimers`).
#[derive(Debug)]
pub enum NetpollError {
    /// No netpoller: it stopped (the runtime is stopping) or its epoll
    /// instance could not be made.
    Unavailable(io::Error),
    /// The netpoller refused the fd (`epoll_ctl`, or it stopped meanwhile).
    Register(io::Error),
    /// The netpoller takes no new timers: the runtime is stopping.
    NoTimers,
}

impl NetpollError {
    /// The `NetpollError` inside `e`, if it is one.
    pub fn of(e: &io::Error) -> Option<&NetpollError> {
        e.get_ref()?.downcast_ref()
    }

    pub(crate) fn into_io(self) -> io::Error {
        let kind = match &self {
            NetpollError::Unavailable(e) | NetpollError::Register(e) => e.kind(),
            NetpollError::NoTimers => io::ErrorKind::Other,
        };
        io::Error::new(kind, self)
    }
}

impl fmt::Display for NetpollError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetpollError::Unavailable(e) => write!(f, "gmprt netpoller: {e}"),
            NetpollError::Register(e) => write!(f, "register with the netpoller: {e}"),
            NetpollError::NoTimers => f.write_str("the gmprt runtime is stopping; no new timers"),
        }
    }
}

impl Error for NetpollError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            NetpollError::Unavailable(e) | NetpollError::Register(e) => Some(e),
            NetpollError::NoTimers => None,
        }
    }
}
