//! Dialing: resolve a host, then [`Dial`] connects to its addresses one
//! after another until one accepts, all under one deadline.

use crate::loom::sync::Arc;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::task::Poll;
use std::time::Instant;

use mio::net::TcpStream;

use super::conn::Conn;
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

/// A TCP connect in progress, over a list of addresses (Go's `dialSerial`):
/// each is tried in turn until one connects; the last error is returned if
/// none does. One deadline, in the `IoWait`, bounds the whole dial.
///
/// Poll it, and park it after each `Pending`, like any operation (module
/// docs, "The I/O path"). Dropping it abandons the connect in flight.
pub struct Dial {
    addrs: Vec<SocketAddr>,
    next: usize,
    /// The connect in flight and its registration.
    cur: Option<(TcpStream, Arc<Reg>)>,
    last: Option<io::Error>,
    wait: IoWait,
}

impl Dial {
    pub fn new(addrs: Vec<SocketAddr>, deadline: Option<Instant>) -> Dial {
        Dial {
            addrs,
            next: 0,
            cur: None,
            last: None,
            wait: IoWait::new(deadline),
        }
    }

    /// Starts or continues the connect: the connection once one address
    /// accepts it.
    pub fn poll(&mut self, sched: &Sched) -> Poll<io::Result<Conn>> {
        self.wait.resume()?;
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
                        return Poll::Ready(Ok(Conn::new(s, LazyReg::with(reg))));
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
            let blocked = self.wait.block(reg, Dir::Write);
            if blocked.is_ready() {
                self.drop_cur();
            }
            return blocked;
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

    /// Abandons the connect in flight (deregister, then close).
    fn drop_cur(&mut self) {
        if let Some((s, reg)) = self.cur.take() {
            reg.deregister();
            drop(s);
        }
    }
}

impl Drop for Dial {
    fn drop(&mut self) {
        // Withdraw the park first, then deregister and close.
        self.wait.cancel();
        self.drop_cur();
    }
}
