//! [`PacketConn`]: a UDP socket on the netpoller (Go's `net.UDPConn`).
//! Receive one datagram into the caller's buffer, send one straight from
//! the caller's bytes; bound (any peer) or connected (one peer).
//!
//! The I/O path, ownership and deadlines are those of every socket here
//! (module docs): one [`Sock`], registered lazily, closed under its write
//! lock, each operation a nonblocking attempt that parks its [`IoWait`].
//! What differs for datagrams:
//!
//! - **One datagram per call.** A receive returns exactly one datagram, and
//!   an empty one (0 bytes) is a datagram, not an end of stream: UDP has
//!   none. A datagram longer than the caller's `max` is **truncated** to
//!   `max` bytes and the rest is discarded by the kernel, as `recvfrom(2)`
//!   (and Go's `ReadFrom`) does, without telling.
//!   A send is all or nothing: the kernel takes the whole datagram or fails
//!   (`EMSGSIZE` if it is too big), never part of it.
//! - **`MSG_DONTWAIT` on every call**, rather than relying on `O_NONBLOCK`:
//!   [`from_fd`](PacketConn::from_fd) gets a dup of someone else's socket,
//!   and `O_NONBLOCK` lives in the open file description the two share, so
//!   setting it would change the blocking mode of the caller's own socket
//!   under it. The flag makes each call nonblocking whatever the fd's mode.
//!   That is also why the socket is a `socket2::Socket` rather than mio's
//!   `UdpSocket`: socket2 takes flags, and receives into uninitialised
//!   memory, so a reused `Vec`'s spare capacity is used as is.
//! - **Connected sockets and ICMP.** A connected socket (from
//!   [`connect`](PacketConn::connect), or a connected fd) only exchanges
//!   datagrams with its peer. On Linux an ICMP error for it (port
//!   unreachable: nothing listens there) sets the socket's pending error,
//!   which the netpoller reports as readiness in both directions; the next
//!   receive or send returns it (`ECONNREFUSED`) and clears it. A bound,
//!   unconnected socket never sees these errors (Linux reports them only
//!   with `IP_RECVERR`, which is not set).
//! - **`send_to` on a connected socket** to an address other than its peer
//!   fails with `EISCONN` (the BSD kernels' error, and Go's
//!   `ErrWriteToConnected`), checked here: Linux itself would send the
//!   datagram to the other address, and the connected socket would then
//!   drop the reply, so the mistake would show only as a timeout.

use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{OwnedFd, RawFd};
use std::task::Poll;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::sock::{LazyReg, Sock};
use super::wait::IoWait;
use crate::netpoll::Dir;
use crate::sched::Sched;

/// The most one receive reads, whatever the caller asked: 64 KiB. A UDP
/// datagram cannot be longer (its length field is 16 bits; an IPv4 payload
/// tops out at 65,507 bytes), so this truncates nothing and keeps a bigger
/// ask from sizing an allocation.
pub const DATAGRAM_MAX: usize = 1 << 16;

/// Every syscall's flags: nonblocking whatever the fd's `O_NONBLOCK`
/// (module docs).
const FLAGS: libc::c_int = libc::MSG_DONTWAIT;

/// A UDP socket, from [`bind`](Self::bind), [`connect`](Self::connect) or
/// [`from_fd`](Self::from_fd).
///
/// Any thread may use it; several Gs may receive (each datagram goes to
/// exactly one of them) while others send. The `poll_*` operations never
/// block: they return `Pending` with the wait recorded in the caller's
/// [`IoWait`] (module docs, "The I/O path"). [`close`](Self::close) wakes
/// the Gs parked on it, whose next poll returns a
/// [`Closed`](super::Closed) error, as does every later call.
pub struct PacketConn {
    sock: Sock<Socket>,
    /// The connected peer, read once when made: nothing here connects a
    /// socket later, so it never changes.
    peer: Option<SocketAddr>,
}

/// `addr` as a `SocketAddr`; an error for a non-IP address (which a UDP
/// socket's kernel never returns).
fn ip(addr: SockAddr) -> io::Result<SocketAddr> {
    addr.as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an IP address"))
}

/// Receives one datagram into `buf`'s spare capacity with `recv` (`from`:
/// `recvfrom`, and the sender's address): `buf` is cleared, then holds the
/// (up to `max`) bytes received.
fn recv_into(
    s: &Socket,
    buf: &mut Vec<u8>,
    max: usize,
    from: bool,
) -> io::Result<(usize, Option<SockAddr>)> {
    buf.clear();
    buf.reserve(max);
    let spare: &mut [MaybeUninit<u8>] = &mut buf.spare_capacity_mut()[..max];
    let (k, addr) = if from {
        let (k, a) = s.recv_from_with_flags(spare, FLAGS)?;
        (k, Some(a))
    } else {
        (s.recv_with_flags(spare, FLAGS)?, None)
    };
    // SAFETY: the kernel initialised the first `k <= max <= capacity`
    // bytes of the spare capacity (recv returns at most the buffer's
    // length), which starts at `buf.len() == 0`.
    unsafe { buf.set_len(k) };
    Ok((k, addr))
}

impl PacketConn {
    fn new(s: Socket) -> io::Result<PacketConn> {
        // Belt and braces for a socket of our own (our calls pass
        // MSG_DONTWAIT anyway); `from_fd` leaves the caller's mode alone.
        s.set_nonblocking(true)?;
        Self::wrap(s)
    }

    fn wrap(s: Socket) -> io::Result<PacketConn> {
        let peer = match s.peer_addr() {
            Ok(a) => Some(ip(a)?),
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => None,
            Err(e) => return Err(e),
        };
        Ok(PacketConn {
            sock: Sock::new(s, LazyReg::default()),
            peer,
        })
    }

    fn socket(addr: &SocketAddr) -> io::Result<Socket> {
        let s = Socket::new(Domain::for_address(*addr), Type::DGRAM, Some(Protocol::UDP))?;
        // As Go does for every datagram socket: sending to a broadcast
        // address works without asking. Best effort.
        let _ = s.set_broadcast(true);
        Ok(s)
    }

    /// A socket bound to `addr` (port 0 picks a free port: see
    /// [`local_addr`](Self::local_addr)) that exchanges datagrams with any
    /// peer; `reuse_port` sets `SO_REUSEPORT`, so several sockets
    /// (processes) can share the port, the kernel spreading datagrams
    /// among them. Needs no running runtime: the socket is registered with
    /// the netpoller of whichever runtime uses it.
    pub fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<PacketConn> {
        let s = Self::socket(&addr)?;
        if reuse_port {
            s.set_reuse_port(true)?;
        }
        s.bind(&addr.into())?;
        Self::new(s)
    }

    /// A socket connected to the first of `addrs` that takes it (Go's
    /// `DialUDP`), bound to an ephemeral port. A UDP connect sends nothing:
    /// it only fixes the peer (and the route), so it never blocks, and a
    /// peer that is not there shows only later, as `ECONNREFUSED` (module
    /// docs). The last error if none does.
    pub fn connect(addrs: &[SocketAddr]) -> io::Result<PacketConn> {
        let mut last = None;
        for addr in addrs {
            let s = match Self::socket(addr) {
                Ok(s) => s,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            match s.connect(&(*addr).into()) {
                Ok(()) => return Self::new(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no address")))
    }

    /// Takes ownership of `fd`, which must be an IPv4 or IPv6 UDP socket
    /// (an `InvalidInput` error otherwise), bound or connected. Its
    /// `O_NONBLOCK` is left as it is (module docs), so a dup of a caller's
    /// socket (Go's `FilePacketConn`) changes nothing for the caller.
    pub fn from_fd(fd: OwnedFd) -> io::Result<PacketConn> {
        let s = Socket::from(fd);
        let not_udp = |what: String| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("not a UDP socket: {what}"),
            )
        };
        let ty = s.r#type()?;
        if ty != Type::DGRAM {
            return Err(not_udp(format!("{ty:?}")));
        }
        let domain = s.domain()?;
        if domain != Domain::IPV4 && domain != Domain::IPV6 {
            return Err(not_udp(format!("{domain:?}")));
        }
        // A datagram socket of another protocol (ICMP "ping" sockets).
        match s.protocol()? {
            Some(p) if p != Protocol::UDP => return Err(not_udp(format!("{p:?}"))),
            _ => {}
        }
        Self::wrap(s)
    }

    /// Receives one datagram into `buf`'s spare capacity, and the address
    /// it came from: `buf` is cleared, then holds its (up to `max`, and at
    /// most [`DATAGRAM_MAX`]) bytes; the rest of a longer one is discarded
    /// (module docs). Nothing is zeroed first, so a reused `Vec` costs no
    /// more than the copy out of the kernel. `max` may be 0 (the datagram
    /// is consumed, its bytes dropped).
    pub fn poll_recv_from(
        &self,
        sched: &Sched,
        buf: &mut Vec<u8>,
        max: usize,
        wait: &mut IoWait,
    ) -> Poll<io::Result<(usize, SocketAddr)>> {
        let max = max.min(DATAGRAM_MAX);
        self.sock.poll_io(sched, Dir::Read, wait, |s| {
            let (k, addr) = recv_into(s, buf, max, true)?;
            let addr = addr.expect("recvfrom returns an address");
            Ok((k, ip(addr)?))
        })
    }

    /// As [`poll_recv_from`](Self::poll_recv_from), without the sender's
    /// address: for a connected socket, whose datagrams all come from its
    /// peer. On one that is not connected it receives from anyone.
    pub fn poll_recv(
        &self,
        sched: &Sched,
        buf: &mut Vec<u8>,
        max: usize,
        wait: &mut IoWait,
    ) -> Poll<io::Result<usize>> {
        let max = max.min(DATAGRAM_MAX);
        self.sock.poll_io(sched, Dir::Read, wait, |s| {
            Ok(recv_into(s, buf, max, false)?.0)
        })
    }

    /// Sends `data` as one datagram to `addr`: `data.len()` once the kernel
    /// took it (module docs: all or nothing); pending only while the send
    /// buffer is full. `EISCONN` on a connected socket when `addr` is not
    /// its peer (module docs).
    pub fn poll_send_to(
        &self,
        sched: &Sched,
        data: &[u8],
        addr: SocketAddr,
        wait: &mut IoWait,
    ) -> Poll<io::Result<usize>> {
        if let Some(peer) = self.peer {
            if peer != addr {
                return Poll::Ready(Err(io::Error::from_raw_os_error(libc::EISCONN)));
            }
        }
        let to = SockAddr::from(addr);
        self.sock.poll_io(sched, Dir::Write, wait, |s| {
            s.send_to_with_flags(data, &to, FLAGS)
        })
    }

    /// Sends `data` as one datagram to the connected peer, as
    /// [`poll_send_to`](Self::poll_send_to) does; `EDESTADDRREQ` on a
    /// socket that is not connected.
    pub fn poll_send(
        &self,
        sched: &Sched,
        data: &[u8],
        wait: &mut IoWait,
    ) -> Poll<io::Result<usize>> {
        self.sock
            .poll_io(sched, Dir::Write, wait, |s| s.send_with_flags(data, FLAGS))
    }

    /// Whether the socket is connected to one peer.
    pub fn is_connected(&self) -> bool {
        self.peer.is_some()
    }

    /// Closes the socket, waking the Gs parked on it. False if it was
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

    /// The address bound (with the real port when bound to port 0, or
    /// picked by a connect).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.with(|s| ip(s.local_addr()?))
    }

    /// The connected peer; `ENOTCONN` if not connected.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.sock.with(|_| {
            self.peer
                .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOTCONN))
        })
    }
}
