//! [`Conn`]: a TCP connection on the netpoller. Receive into the caller's
//! buffer, send straight from the caller's bytes, half-close, addresses.

use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::task::Poll;

use mio::net::TcpStream;

use super::sock::{LazyReg, Sock};
use super::wait::IoWait;
use crate::netpoll::Dir;
use crate::sched::Sched;

/// The most one [`Conn::poll_recv_vec`] reads, whatever the caller asked:
/// 1 MiB, the size the binding keeps its per-thread buffer at. A stream
/// read may always return less than asked; a bigger ask only sized an
/// allocation, so it is the one thing a peer could use to abort us.
pub const RECV_MAX: usize = 1 << 20;

/// A TCP connection, from [`Listener::poll_accept`](super::Listener::poll_accept)
/// or a [`Dial`](super::Dial). `TCP_NODELAY` is on.
///
/// Any thread may use it; one G may receive while another sends. The
/// `poll_*` operations never block: they return `Pending` with the wait
/// recorded in the caller's [`IoWait`] (module docs, "The I/O path").
/// [`close`](Self::close) wakes the Gs parked on it, whose next poll
/// returns a [`Closed`](super::Closed) error, as does every later call.
pub struct Conn {
    sock: Sock<TcpStream>,
}

/// `recv(2)` of up to `len` bytes at `ptr`.
///
/// # Safety
/// `ptr` is valid for writes of `len` bytes.
unsafe fn recv_raw(s: &TcpStream, ptr: *mut u8, len: usize) -> io::Result<usize> {
    // SAFETY: the caller's contract; recv writes at most `len` bytes there
    // and returns how many, or -1.
    let k = unsafe { libc::recv(s.as_raw_fd(), ptr.cast(), len, 0) };
    if k < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(k as usize)
}

impl Conn {
    pub(crate) fn new(s: TcpStream, reg: LazyReg) -> Conn {
        // Best effort: a socket that refuses NODELAY still works.
        let _ = s.set_nodelay(true);
        Conn {
            sock: Sock::new(s, reg),
        }
    }

    /// Receives into `buf` (not empty): the number of bytes, as soon as any
    /// are there; 0 once the peer has closed its sending side (EOF).
    pub fn poll_recv(
        &self,
        sched: &Sched,
        buf: &mut [u8],
        wait: &mut IoWait,
    ) -> Poll<io::Result<usize>> {
        self.poll_io(sched, Dir::Read, wait, |s| {
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
        self.poll_io(sched, Dir::Read, wait, |s| {
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
            match self.sock.attempt(&reg, Dir::Write, |mut s| s.write(rest)) {
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

    /// One operation in `dir`: registration, the attempt, and on
    /// would-block the deadline check or the wait recorded.
    fn poll_io<T>(
        &self,
        sched: &Sched,
        dir: Dir,
        wait: &mut IoWait,
        op: impl FnMut(&TcpStream) -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        wait.resume()?;
        let reg = self.sock.registration(sched)?;
        match self.sock.attempt(&reg, dir, op) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => wait.block(reg, dir),
        }
    }

    /// Shuts down the sending side (a TCP half-close, Go's `CloseWrite`):
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

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.with(|s| s.local_addr())
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.sock.with(|s| s.peer_addr())
    }
}
