//! Dialing: resolve a host, then [`Dial`] connects to its addresses one
//! after another until one accepts, all under one deadline; or connect to
//! a Unix socket, retrying while its listener's backlog is full.
//!
//! # A Unix connect (Linux, unix(7) and `unix_stream_connect`)
//!
//! A nonblocking `connect` to a Unix stream socket never returns
//! EINPROGRESS: it connects at once (the connection waits in the
//! listener's backlog, so it can be used before the accept), or fails:
//! ENOENT (no such file), ECONNREFUSED (a socket file nobody listens on,
//! or a name nobody bound), or EAGAIN when the listener's backlog is full.
//! A blocking connect would sleep on the listener until the backlog has
//! room; the dialing socket gets no readiness event for that (it is
//! "writable" all along), so EAGAIN is retried on a timer instead, 1 ms
//! doubling to 100 ms, under the dial's deadline. The socket stays
//! unconnected after EAGAIN, so the same one is retried.

use crate::loom::sync::Arc;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::task::Poll;
use std::time::{Duration, Instant};

use mio::net::{TcpStream, UnixStream};
use socket2::{Domain, SockAddr, Socket, Type};

use super::addr::unix_sockaddr;
use super::conn::Conn;
use super::error::NetpollError;
use super::kind::Stream;
use super::sock::{register, LazyReg, Reg};
use super::wait::IoWait;
use crate::api::Waker;
use crate::netpoll::Dir;
use crate::sched::Sched;

/// `host` as a literal address (`"127.0.0.1"`, `"::1"`, `"[::1]"`), or
/// None for a name. Never blocks.
pub fn literal(host: &str, port: u16) -> Option<SocketAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, port))
}

/// The addresses of `host`: a [`literal`] at once, a name through
/// `getaddrinfo`, which **blocks**: from a G, call it inside
/// [`Sched::blocking`] so the M hands its P off meanwhile. Never empty when
/// Ok.
pub fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    if let Some(a) = literal(host, port) {
        return Ok(vec![a]);
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    match (bare, port).to_socket_addrs() {
        Ok(a) => {
            let addrs: Vec<_> = a.collect();
            if addrs.is_empty() {
                Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no address found for {host:?}"),
                ))
            } else {
                Ok(addrs)
            }
        }
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot resolve {host:?}: {e}"),
        )),
    }
}

/// A connect in progress, TCP or Unix.
///
/// TCP is over a list of addresses (Go's `dialSerial`): each is tried in
/// turn until one connects; the last error is returned if none does. A
/// Unix dial retries while the listener's backlog is full (module docs).
/// One deadline, in the `IoWait`, bounds the whole dial.
///
/// Poll it, and park it after each `Pending`, like any operation (module
/// docs, "The I/O path"). Dropping it abandons the connect in flight.
pub struct Dial {
    to: To,
    wait: IoWait,
}

enum To {
    Tcp(TcpDial),
    Unix(UnixDial),
}

struct TcpDial {
    addrs: Vec<SocketAddr>,
    next: usize,
    /// The connect in flight and its registration.
    cur: Option<(TcpStream, Arc<Reg>)>,
    last: Option<io::Error>,
}

struct UnixDial {
    addr: SockAddr,
    /// The socket being connected, made on the first poll.
    sock: Option<Socket>,
    /// The next wait after an EAGAIN; zero before the first.
    delay: Duration,
}

/// The retry of a Unix connect to a full backlog: 1 ms doubling to 100 ms.
const UNIX_RETRY_MIN: Duration = Duration::from_millis(1);
const UNIX_RETRY_MAX: Duration = Duration::from_millis(100);

impl Dial {
    /// A TCP dial to `addrs`, in order.
    pub fn new(addrs: Vec<SocketAddr>, deadline: Option<Instant>) -> Dial {
        Dial {
            to: To::Tcp(TcpDial {
                addrs,
                next: 0,
                cur: None,
                last: None,
            }),
            wait: IoWait::new(deadline),
        }
    }

    /// A dial to the Unix stream socket at `path`: a filesystem path or,
    /// with a leading NUL byte, an abstract name. InvalidInput for a path
    /// no `sockaddr_un` can hold.
    pub fn unix(path: impl AsRef<Path>, deadline: Option<Instant>) -> io::Result<Dial> {
        Ok(Dial {
            to: To::Unix(UnixDial {
                addr: unix_sockaddr(path.as_ref())?,
                sock: None,
                delay: Duration::ZERO,
            }),
            wait: IoWait::new(deadline),
        })
    }

    /// Starts or continues the connect: the connection once one address
    /// accepts it.
    pub fn poll(&mut self, sched: &Sched) -> Poll<io::Result<Conn>> {
        self.wait.resume()?;
        match &mut self.to {
            To::Tcp(d) => d.poll(sched, &mut self.wait),
            To::Unix(d) => d.poll(sched, &mut self.wait),
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

impl TcpDial {
    fn poll(&mut self, sched: &Sched, wait: &mut IoWait) -> Poll<io::Result<Conn>> {
        loop {
            if self.cur.is_none() {
                let Some(&addr) = self.addrs.get(self.next) else {
                    let e = self
                        .last
                        .take()
                        .unwrap_or_else(|| io::Error::other("no address"));
                    return Poll::Ready(Err(e));
                };
                self.next += 1;
                let started = TcpStream::connect(addr).and_then(|s| {
                    let reg = register(sched.netpoll(), s.as_raw_fd(), true)?;
                    Ok((s, Arc::new(reg)))
                });
                match started {
                    Ok(cur) => self.cur = Some(cur),
                    Err(e) => {
                        self.last = Some(e);
                        continue;
                    }
                }
            }
            let (s, reg) = self.cur.as_ref().expect("a connect in flight");
            let ev = reg.readiness(Dir::Write);
            if ev.ready {
                // mio's recipe: SO_ERROR first, then whether a peer exists.
                let outcome = match s.take_error() {
                    Ok(Some(e)) | Err(e) => Err(e),
                    Ok(None) => match s.peer_addr() {
                        Ok(_) => Ok(true),
                        Err(e)
                            if e.kind() == io::ErrorKind::NotConnected
                                || e.raw_os_error() == Some(libc::EINPROGRESS) =>
                        {
                            reg.clear_readiness(ev);
                            Ok(false)
                        }
                        Err(e) => Err(e),
                    },
                };
                match outcome {
                    Ok(true) => {
                        let (s, reg) = self.cur.take().expect("a connect in flight");
                        return Poll::Ready(Ok(Conn::new(Stream::Tcp(s), LazyReg::with(reg))));
                    }
                    Ok(false) => {}
                    Err(e) => {
                        self.drop_cur();
                        self.last = Some(e);
                        continue;
                    }
                }
            }
            let reg = self.cur.as_ref().expect("a connect in flight").1.clone();
            let blocked = wait.block(reg, Dir::Write);
            if blocked.is_ready() {
                self.drop_cur();
            }
            return blocked;
        }
    }

    /// Abandons the connect in flight (deregister, then close).
    fn drop_cur(&mut self) {
        if let Some((s, reg)) = self.cur.take() {
            reg.deregister();
            drop(s);
        }
    }
}

impl UnixDial {
    fn poll(&mut self, sched: &Sched, wait: &mut IoWait) -> Poll<io::Result<Conn>> {
        loop {
            let sock = match &mut self.sock {
                Some(s) => s,
                None => {
                    self.sock
                        .insert(Socket::new(Domain::UNIX, Type::STREAM.nonblocking(), None)?)
                }
            };
            match sock.connect(&self.addr) {
                Ok(()) => {
                    let s = self.sock.take().expect("the socket just connected");
                    let s = UnixStream::from(OwnedFd::from(s));
                    // Not registered yet: nothing waited on it. The first
                    // operation registers it.
                    return Poll::Ready(Ok(Conn::new(Stream::Unix(s), LazyReg::default())));
                }
                // The listener's backlog is full (module docs).
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                    self.delay = if self.delay.is_zero() {
                        UNIX_RETRY_MIN
                    } else {
                        (self.delay * 2).min(UNIX_RETRY_MAX)
                    };
                    return match sched.netpoll().handle() {
                        Ok(h) => wait.sleep(h, Instant::now() + self.delay),
                        Err(e) => Poll::Ready(Err(NetpollError::Unavailable(e).into_io())),
                    };
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl Drop for Dial {
    fn drop(&mut self) {
        // Withdraw the park first, then deregister and close.
        self.wait.cancel();
        if let To::Tcp(d) = &mut self.to {
            d.drop_cur();
        }
    }
}
