//! The socket kinds a [`Conn`](super::Conn) or [`Listener`](super::Listener)
//! may own, TCP or Unix stream, and the checks that let one adopt a socket
//! made elsewhere (Go's `net.FileConn` / `net.FileListener`).
//!
//! The kind is an enum of mio types, matched where the kinds differ
//! (accept, `TCP_NODELAY`), never on the hot path: a receive or a send is
//! the same `recv(2)`/`send(2)` on the fd for either kind (`conn`), and the
//! addresses of either come from the same `getsockname`/`getpeername`.

use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use socket2::{Domain, SockRef, Socket, Type};

use super::addr::{Addr, UnixAddr};

/// A connected stream socket.
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// A listening stream socket.
pub(crate) enum Lst {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl AsRawFd for Stream {
    #[inline]
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
        }
    }
}

impl AsRawFd for Lst {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Lst::Tcp(l) => l.as_raw_fd(),
            Lst::Unix(l) => l.as_raw_fd(),
        }
    }
}

impl AsFd for Lst {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Lst::Tcp(l) => l.as_fd(),
            Lst::Unix(l) => l.as_fd(),
        }
    }
}

impl Stream {
    pub(crate) fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        SockRef::from(self).shutdown(how)
    }

    pub(crate) fn local_addr(&self) -> io::Result<Addr> {
        Addr::from_sockaddr(&SockRef::from(self).local_addr()?)
    }

    pub(crate) fn peer_addr(&self) -> io::Result<Addr> {
        Addr::from_sockaddr(&SockRef::from(self).peer_addr()?)
    }
}

impl Lst {
    /// One `accept4` (nonblocking, close-on-exec), the new socket of the
    /// listener's kind.
    pub(crate) fn accept(&self) -> io::Result<(Stream, Addr)> {
        match self {
            Lst::Tcp(l) => l.accept().map(|(s, a)| (Stream::Tcp(s), Addr::Inet(a))),
            Lst::Unix(l) => l
                .accept()
                .map(|(s, a)| (Stream::Unix(s), Addr::Unix(UnixAddr::from(&a)))),
        }
    }

    pub(crate) fn local_addr(&self) -> io::Result<Addr> {
        Addr::from_sockaddr(&SockRef::from(self).local_addr()?)
    }
}

// ===== adopting a socket =====

/// Which family an adopted socket belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    Inet,
    Unix,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn domain_name(d: Domain) -> String {
    match d {
        Domain::IPV4 => "AF_INET".into(),
        Domain::IPV6 => "AF_INET6".into(),
        Domain::UNIX => "AF_UNIX".into(),
        d => format!("address family {}", i32::from(d)),
    }
}

fn type_name(t: Type) -> String {
    match t {
        Type::STREAM => "SOCK_STREAM".into(),
        Type::DGRAM => "SOCK_DGRAM".into(),
        Type::SEQPACKET => "SOCK_SEQPACKET".into(),
        Type::RAW => "SOCK_RAW".into(),
        t => format!("socket type {}", i32::from(t)),
    }
}

/// Checks that `s` is a stream socket of a family `net` serves (IPv4, IPv6,
/// Unix), listening if `listening` and not otherwise, from `SO_TYPE`,
/// `SO_DOMAIN` and `SO_ACCEPTCONN`; a connection must also have a peer.
/// Any mismatch, a descriptor that is not a socket included, is an
/// `InvalidInput` error that names what it got.
fn check(s: &Socket, listening: bool) -> io::Result<Family> {
    let want = if listening {
        "a listening TCP or Unix stream socket"
    } else {
        "a connected TCP or Unix stream socket"
    };
    let ty = match s.r#type() {
        Ok(t) => t,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSOCK) => {
            return Err(invalid(format!(
                "expected {want}, got a file descriptor that is not a socket"
            )));
        }
        Err(e) => return Err(e),
    };
    let domain = s.domain()?;
    let family = match domain {
        Domain::IPV4 | Domain::IPV6 => Family::Inet,
        Domain::UNIX => Family::Unix,
        _ => {
            return Err(invalid(format!(
                "expected {want}, got a {} {} socket",
                domain_name(domain),
                type_name(ty)
            )))
        }
    };
    if ty != Type::STREAM {
        return Err(invalid(format!(
            "expected {want}, got a {} {} socket",
            domain_name(domain),
            type_name(ty)
        )));
    }
    let is_listener = s.is_listener()?;
    if listening && !is_listener {
        return Err(invalid(format!(
            "expected {want}, got a {} stream socket that is not listening",
            domain_name(domain)
        )));
    }
    if !listening {
        if is_listener {
            return Err(invalid(format!(
                "expected {want}, got a listening {} socket (adopt it as a Listener)",
                domain_name(domain)
            )));
        }
        match s.peer_addr() {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
                return Err(invalid(format!(
                    "expected {want}, got a {} stream socket that is not connected",
                    domain_name(domain)
                )));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(family)
}

/// `fd` as a [`Stream`], nonblocking, if it is a connected TCP or Unix
/// stream socket (see [`check`]). `O_NONBLOCK` is a property of the open
/// file description, so every duplicate of `fd` becomes nonblocking too.
pub(crate) fn adopt_stream(fd: OwnedFd) -> io::Result<Stream> {
    let s = Socket::from(fd);
    let family = check(&s, false)?;
    s.set_nonblocking(true)?;
    let fd = OwnedFd::from(s);
    Ok(match family {
        Family::Inet => Stream::Tcp(TcpStream::from(fd)),
        Family::Unix => Stream::Unix(UnixStream::from(fd)),
    })
}

/// `fd` as a [`Lst`], nonblocking, if it is a listening TCP or Unix stream
/// socket. As [`adopt_stream`].
pub(crate) fn adopt_listener(fd: OwnedFd) -> io::Result<Lst> {
    let s = Socket::from(fd);
    let family = check(&s, true)?;
    s.set_nonblocking(true)?;
    let fd = OwnedFd::from(s);
    Ok(match family {
        Family::Inet => Lst::Tcp(TcpListener::from(fd)),
        Family::Unix => Lst::Unix(UnixListener::from(fd)),
    })
}
