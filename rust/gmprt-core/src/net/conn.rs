//! [`Conn`]: a TCP or Unix stream connection on the netpoller. Receive
//! into the caller's buffer, send straight from the caller's bytes,
//! half-close, addresses, and adopting a connected socket made elsewhere.
//!
//! Both kinds take the same path: `recv(2)` and `send(2)` on the fd, so the
//! kind (`kind::Stream`) is matched only to make a `Conn`, never per call.

use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::task::Poll;

use super::addr::Addr;
use super::kind::{self, Stream};
use super::sock::{LazyReg, Sock};
use super::wait::IoWait;
use crate::netpoll::Dir;
use crate::sched::Sched;

/// The most one [`Conn::poll_recv_vec`] reads, whatever the caller asked:
/// 1 MiB, the size the binding keeps its per-thread buffer at. A stream
/// read may always return less than asked; a bigger ask only sized an
/// allocation, so it is the one thing a peer could use to abort us.
pub const RECV_MAX: usize = 1 << 20;

/// A TCP or Unix stream connection, from
/// [`Listener::poll_accept`](super::Listener::poll_accept), a
/// [`Dial`](super::Dial), or [`Conn::from_fd`]. `TCP_NODELAY` is on for
/// TCP.
///
/// Any thread may use it; one G may receive while another sends. The
/// `poll_*` operations never block: they return `Pending` with the wait
/// recorded in the caller's [`IoWait`] (module docs, "The I/O path").
/// [`close`](Self::close) wakes the Gs parked on it, whose next poll
/// returns a [`Closed`](super::Closed) error, as does every later call.
pub struct Conn {
    sock: Sock<Stream>,
    unix: bool,
}

/// `recv(2)` of up to `len` bytes at `ptr`.
///
/// # Safety
/// `ptr` is valid for writes of `len` bytes.
unsafe fn recv_raw(s: &Stream, ptr: *mut u8, len: usize) -> io::Result<usize> {
    // SAFETY: the caller's contract; recv writes at most `len` bytes there
    // and returns how many, or -1.
    let k = unsafe { libc::recv(s.as_raw_fd(), ptr.cast(), len, 0) };
    if k < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(k as usize)
}

/// `send(2)` of `data`, with `MSG_NOSIGNAL`: a peer that is gone is an
/// `EPIPE` error, not a `SIGPIPE` that kills a process which did not ignore
/// it (std's `TcpStream::write` does the same; a `write(2)`, which std uses
/// for a `UnixStream`, would raise the signal).
fn send_raw(s: &Stream, data: &[u8]) -> io::Result<usize> {
    // SAFETY: `data` is valid for reads of `data.len()` bytes; send reads at
    // most that many and returns how many it took, or -1.
    let k = unsafe {
        libc::send(
            s.as_raw_fd(),
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_NOSIGNAL,
        )
    };
    if k < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(k as usize)
}

impl Conn {
    pub(crate) fn new(s: Stream, reg: LazyReg) -> Conn {
        if let Stream::Tcp(t) = &s {
            // Best effort: a socket that refuses NODELAY still works.
            let _ = t.set_nodelay(true);
        }
        Conn {
            unix: matches!(s, Stream::Unix(_)),
            sock: Sock::new(s, reg),
        }
    }

    /// Adopts `fd`, a connected TCP or Unix stream socket made elsewhere
    /// (Go's `net.FileConn`, which dups; the caller dups here if it keeps
    /// its own): sets `O_NONBLOCK`, which every duplicate of `fd` shares,
    /// and `TCP_NODELAY` for TCP. Registered with the netpoller of the
    /// first runtime that uses it. An `InvalidInput` error, naming what it
    /// got, for anything else: not a socket, a datagram socket, a listening
    /// or an unconnected one.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Conn> {
        Ok(Conn::new(kind::adopt_stream(fd)?, LazyReg::default()))
    }

    /// Whether this is a Unix domain socket (else TCP).
    pub fn is_unix(&self) -> bool {
        self.unix
    }

    /// Receives into `buf` (not empty): the number of bytes, as soon as any
    /// are there; 0 once the peer has closed its sending side (EOF).
    pub fn poll_recv(
        &self,
        sched: &Sched,
        buf: &mut [u8],
        wait: &mut IoWait,
    ) -> Poll<io::Result<usize>> {
        self.sock.poll_io(sched, Dir::Read, wait, |s| {
            // SAFETY: `buf` is valid for `buf.len()` bytes.
            unsafe { recv_raw(s, buf.as_mut_ptr(), buf.len()) }
        })
    }

    /// As [`poll_recv`](Self::poll_recv), into `buf`'s spare capacity: `buf`
    /// is cleared, then holds the (up to `max`, and at most [`RECV_MAX`])
    /// bytes received. Nothing is zeroed first, so a reused `Vec` costs no
    /// more than the copy out of the kernel.
    pub fn poll_recv_vec(
        &self,
        sched: &Sched,
        buf: &mut Vec<u8>,
        max: usize,
        wait: &mut IoWait,
    ) -> Poll<io::Result<usize>> {
        // A length a peer sent (a length-prefixed protocol) must not size
        // an allocation: `recv(2**36)` would abort the process.
        let max = max.min(RECV_MAX);
        self.sock.poll_io(sched, Dir::Read, wait, |s| {
            buf.clear();
            buf.reserve(max);
            // SAFETY: `buf` has capacity for `max` bytes at `as_mut_ptr()`.
            let k = unsafe { recv_raw(s, buf.as_mut_ptr(), max) }?;
            // SAFETY: the kernel initialised the first `k <= max <= capacity`
            // bytes.
            unsafe { buf.set_len(k) };
            Ok(k)
        })
    }

    /// Sends some of `data`: how many bytes the kernel took, at least one
    /// unless `data` is empty; pending only while it takes none.
    pub fn poll_send(
        &self,
        sched: &Sched,
        data: &[u8],
        wait: &mut IoWait,
    ) -> Poll<io::Result<usize>> {
        let mut sent = 0;
        match self.send_from(sched, data, &mut sent, wait, false) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(sent)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Sends all of `data`, from `*sent` on (0 on the first poll), moving
    /// `*sent` along; ready once it reaches `data.len()`. On an error or a
    /// timeout, `data[..*sent]` went out.
    pub fn poll_send_all(
        &self,
        sched: &Sched,
        data: &[u8],
        sent: &mut usize,
        wait: &mut IoWait,
    ) -> Poll<io::Result<()>> {
        self.send_from(sched, data, sent, wait, true)
    }

    fn send_from(
        &self,
        sched: &Sched,
        data: &[u8],
        sent: &mut usize,
        wait: &mut IoWait,
        all: bool,
    ) -> Poll<io::Result<()>> {
        wait.resume()?;
        let reg = self.sock.registration(sched)?;
        loop {
            let rest = &data[(*sent).min(data.len())..];
            if rest.is_empty() {
                return Poll::Ready(Ok(()));
            }
            match self.sock.attempt(&reg, Dir::Write, |s| send_raw(s, rest)) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    *sent += n;
                    if !all {
                        return Poll::Ready(Ok(()));
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return wait.block(reg, Dir::Write),
            }
        }
    }

    /// Shuts down the sending side (a half-close, Go's `CloseWrite`):
    /// the peer reads EOF, and this side can still receive.
    pub fn close_write(&self) -> io::Result<()> {
        self.sock.with(|s| s.shutdown(Shutdown::Write))
    }

    /// Closes the connection, waking the Gs parked on it. False if it was
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

    /// This end's address: for a Unix socket usually
    /// [`Unnamed`](super::UnixAddr::Unnamed) on the dialing end.
    pub fn local_addr(&self) -> io::Result<Addr> {
        self.sock.with(|s| s.local_addr())
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<Addr> {
        self.sock.with(|s| s.peer_addr())
    }
}
