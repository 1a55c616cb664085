//! `gmprt.net.PacketConn`, `listen_udp` and `dial_udp`: UDP over the core's
//! `net::PacketConn` (its module docs: one datagram per call, truncation,
//! connected sockets and ICMP, why `MSG_DONTWAIT`). Receive into the
//! per-thread buffer, send from the caller's buffer, as `Conn` does.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::Mutex;

use gmprt_core::net::{self, IoWait};
use gmprt_core::WaitReason;
use gmprt_core::Waker;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::{finish, os_error, put_buf, py_addr, resolve, sched, sock_error, take_buf, Data};
use crate::errors::{int_arg, int_or};
use crate::lock::lock;
use crate::time::deadline;
use crate::token::{Poll, Token, Wait};

const PACKET_CONN: &str = "gmprt.net.PacketConn";

/// A UDP socket, from :func:`gmprt.net.listen_udp` (bound: any peer),
/// :func:`gmprt.net.dial_udp` (connected: one peer) or
/// :meth:`PacketConn.from_socket`.
///
/// Every blocking method returns an awaitable for a G::
///
///     while True:
///         data, addr = await pc.recvfrom()
///         await pc.sendto(data, addr)
///
/// Each receive returns one datagram (``b""`` is an empty datagram, not an
/// end of stream); one longer than ``max_bytes`` is truncated to
/// ``max_bytes`` and the rest discarded, as with ``socket.recvfrom``. Each
/// send sends one whole datagram or raises. Several Gs may receive on one
/// socket: each datagram goes to exactly one of them.
///
/// Each blocking method takes ``timeout=`` (seconds, from the call;
/// ``None`` waits forever) and raises :class:`gmprt.Timeout` when it
/// passes; the socket stays usable. On a connected socket, a datagram
/// refused by the peer's host (ICMP port unreachable: nothing listens
/// there) makes the next ``recv`` or ``send`` raise
/// ``ConnectionRefusedError`` (Linux semantics). Any method on a closed
/// ``PacketConn`` raises ``OSError`` (EBADF); ``close()`` wakes Gs blocked
/// on it with that error. Use as a context manager to close it on exit.
#[pyclass(frozen, module = "gmprt.net", name = "PacketConn")]
pub struct PacketConn {
    pc: net::PacketConn,
}

impl PacketConn {
    fn addr(&self, peer: bool) -> PyResult<(String, u16)> {
        let (what, r) = if peer {
            ("remote_address", self.pc.peer_addr())
        } else {
            ("local_address", self.pc.local_addr())
        };
        r.map(py_addr)
            .map_err(|e| sock_error(&e, what, PACKET_CONN, None))
    }

    fn recv_token(
        slf: Bound<'_, Self>,
        max_bytes: Option<&Bound<'_, PyAny>>,
        timeout: Option<f64>,
        from: bool,
    ) -> PyResult<Token> {
        let max = int_or(max_bytes, 65536, "max_bytes", 1, i64::MAX)? as usize;
        Ok(Token::wait(Recv {
            wait: Mutex::new(IoWait::new(deadline(timeout)?)),
            pc: slf.unbind(),
            max,
            from,
            timeout,
        }))
    }

    /// `addr`, a `(host, port)` tuple, as the address to send to: a literal
    /// at once, a name resolved (blocking, the P handed off), preferring an
    /// address of this socket's family.
    fn target(&self, py: Python<'_>, addr: &Bound<'_, PyAny>) -> PyResult<SocketAddr> {
        let (host, port) = addr
            .extract::<(String, Bound<'_, PyAny>)>()
            .map_err(|_| PyTypeError::new_err("addr must be a (host, port) tuple"))?;
        let port = int_arg(&port, "port", 1, 65535)? as u16;
        let host = if host.is_empty() { "localhost" } else { &host };
        let addrs = resolve(py, host, port, "sendto")?;
        let v6 = self.pc.local_addr().map(|a| a.is_ipv6()).unwrap_or(false);
        Ok(addrs
            .iter()
            .find(|a| a.is_ipv6() == v6)
            .copied()
            .unwrap_or(addrs[0]))
    }
}

#[pymethods]
impl PacketConn {
    /// Receive one datagram and its sender: ``data, (host, port) = await
    /// pc.recvfrom()``. A datagram longer than ``max_bytes`` is truncated
    /// to ``max_bytes`` (the rest is discarded); no datagram exceeds 64 KiB,
    /// so the default never truncates one.
    ///
    /// Raises:
    ///     gmprt.Timeout: nothing arrived within ``timeout`` seconds.
    ///     ConnectionRefusedError: (connected) the peer's port is closed.
    ///     OSError: the socket is closed.
    ///     ValueError: ``max_bytes < 1``.
    #[pyo3(signature = (max_bytes=None, *, timeout=None), text_signature = "(self, /, max_bytes=65536, *, timeout=None)")]
    fn recvfrom(
        slf: Bound<'_, Self>,
        max_bytes: Option<&Bound<'_, PyAny>>,
        timeout: Option<f64>,
    ) -> PyResult<Token> {
        Self::recv_token(slf, max_bytes, timeout, true)
    }

    /// Receive one datagram: ``data = await pc.recv()``, as
    /// :meth:`recvfrom` without the sender (for a connected socket, whose
    /// datagrams all come from its peer).
    ///
    /// Raises:
    ///     gmprt.Timeout: nothing arrived within ``timeout`` seconds.
    ///     ConnectionRefusedError: (connected) the peer's port is closed.
    ///     OSError: the socket is closed.
    ///     ValueError: ``max_bytes < 1``.
    #[pyo3(signature = (max_bytes=None, *, timeout=None), text_signature = "(self, /, max_bytes=65536, *, timeout=None)")]
    fn recv(
        slf: Bound<'_, Self>,
        max_bytes: Option<&Bound<'_, PyAny>>,
        timeout: Option<f64>,
    ) -> PyResult<Token> {
        Self::recv_token(slf, max_bytes, timeout, false)
    }

    /// Send ``data`` (bytes or any contiguous buffer) as one datagram to
    /// ``addr``, a ``(host, port)`` tuple: ``await pc.sendto(data, addr)``
    /// returns ``len(data)``. A host name is resolved at the call (to an
    /// address of this socket's family if it has one).
    ///
    /// Raises:
    ///     gmprt.Timeout: the send buffer stayed full for ``timeout`` seconds.
    ///     OSError: ``EISCONN`` on a connected socket when ``addr`` is not
    ///         its peer; ``EMSGSIZE`` for a datagram too long; the socket is
    ///         closed; the name does not resolve.
    ///     TypeError: ``addr`` is not a ``(host, port)`` tuple.
    ///     ValueError: ``port`` outside 1 to 65535.
    #[pyo3(signature = (data, addr, *, timeout=None))]
    fn sendto(
        slf: Bound<'_, Self>,
        data: Bound<'_, PyAny>,
        addr: Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<Token> {
        let to = slf.get().target(slf.py(), &addr)?;
        Send::token(slf, &data, Some(to), timeout)
    }

    /// Send ``data`` as one datagram to the connected peer: ``await
    /// pc.send(data)`` returns ``len(data)``.
    ///
    /// Raises:
    ///     gmprt.Timeout: the send buffer stayed full for ``timeout`` seconds.
    ///     ConnectionRefusedError: the peer's port is closed (a refusal of
    ///         an earlier datagram).
    ///     OSError: ``EDESTADDRREQ`` on a socket that is not connected;
    ///         ``EMSGSIZE`` for a datagram too long; the socket is closed.
    #[pyo3(signature = (data, *, timeout=None))]
    fn send(slf: Bound<'_, Self>, data: Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<Token> {
        Send::token(slf, &data, None, timeout)
    }

    /// Close the socket (idempotent). Gs blocked on it wake up and raise
    /// ``OSError``.
    fn close(&self) {
        self.pc.close();
    }

    /// Whether :meth:`close` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.pc.is_closed()
    }

    /// The socket's file descriptor, or -1 once closed.
    fn fileno(&self) -> RawFd {
        self.pc.fd().unwrap_or(-1)
    }

    /// ``(host, port)`` of this end (the real port when bound to port 0).
    #[getter]
    fn local_address(&self) -> PyResult<(String, u16)> {
        self.addr(false)
    }

    /// ``(host, port)`` of the connected peer.
    ///
    /// Raises:
    ///     OSError: ``ENOTCONN`` if the socket is not connected; the socket
    ///         is closed.
    #[getter]
    fn remote_address(&self) -> PyResult<(String, u16)> {
        self.addr(true)
    }

    /// A ``PacketConn`` on a duplicate of ``sock``'s file descriptor (Go's
    /// ``net.FilePacketConn``): a UDP ``socket.socket`` (bound or
    /// connected), anything with ``fileno()``, or an fd number. ``sock``
    /// stays open and is still the caller's to close; its blocking mode is
    /// left as it is.
    ///
    /// Raises:
    ///     ValueError: not an IPv4 or IPv6 UDP socket.
    ///     OSError: the descriptor cannot be duplicated.
    #[staticmethod]
    fn from_socket(sock: &Bound<'_, PyAny>) -> PyResult<PacketConn> {
        // SAFETY: attached; `sock` is live. Returns -1 with an exception
        // set for an object that is neither an int nor has fileno().
        let fd = unsafe { ffi::PyObject_AsFileDescriptor(sock.as_ptr()) };
        if fd < 0 {
            return Err(PyErr::fetch(sock.py()));
        }
        // SAFETY: the fd is only borrowed for the dup right below, as
        // `os.dup(sock.fileno())` would: the caller's socket keeps it open
        // for that long (if it does not, the dup fails with EBADF).
        let owned = unsafe { BorrowedFd::borrow_raw(fd) }
            .try_clone_to_owned()
            .map_err(|e| os_error(&e, "from_socket: dup"))?;
        match net::PacketConn::from_fd(owned) {
            Ok(pc) => Ok(PacketConn { pc }),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                Err(PyValueError::new_err(format!("from_socket: {e}")))
            }
            Err(e) => Err(os_error(&e, "from_socket")),
        }
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, _exc: Bound<'_, pyo3::types::PyTuple>) {
        self.pc.close();
    }

    fn __repr__(&self) -> String {
        let show = |a: (String, u16)| {
            if a.0.contains(':') {
                format!("[{}]:{}", a.0, a.1)
            } else {
                format!("{}:{}", a.0, a.1)
            }
        };
        match (self.addr(false), self.addr(true)) {
            (Ok(l), Ok(r)) => format!("<gmprt.net.PacketConn {} -> {}>", show(l), show(r)),
            (Ok(l), Err(_)) => format!("<gmprt.net.PacketConn {}>", show(l)),
            _ if self.pc.is_closed() => "<gmprt.net.PacketConn closed>".into(),
            _ => "<gmprt.net.PacketConn>".into(),
        }
    }
}

/// `await pc.recvfrom(n)` (`from`) and `await pc.recv(n)`.
struct Recv {
    wait: Mutex<IoWait>,
    pc: Py<PacketConn>,
    max: usize,
    from: bool,
    timeout: Option<f64>,
}

impl Wait for Recv {
    fn poll(&self, py: Python<'_>) -> Poll {
        let sched = match sched() {
            Ok(s) => s,
            Err(e) => return Poll::Ready(Err(e)),
        };
        let mut buf = take_buf();
        let pc = &self.pc.get().pc;
        // The wait's lock is released before any Python object is made
        // (module docs, "Locks").
        let out = if self.from {
            let r = pc.poll_recv_from(&sched, &mut buf, self.max, &mut lock(&self.wait));
            finish(
                r,
                |(_, addr)| {
                    let data = PyBytes::new(py, &buf);
                    Ok((data, py_addr(addr)).into_pyobject(py)?.into_any().unbind())
                },
                |e| sock_error(e, "recvfrom", PACKET_CONN, self.timeout),
            )
        } else {
            let r = pc.poll_recv(&sched, &mut buf, self.max, &mut lock(&self.wait));
            finish(
                r,
                |_| Ok(PyBytes::new(py, &buf).into_any().unbind()),
                |e| sock_error(e, "recv", PACKET_CONN, self.timeout),
            )
        };
        put_buf(buf);
        out
    }

    fn park(&self, _py: Python<'_>, waker: Waker) -> bool {
        lock(&self.wait).park(waker)
    }

    fn describe(&self) -> String {
        let what = if self.from { "recvfrom" } else { "recv" };
        match self.pc.get().pc.local_addr() {
            Ok(a) => format!("net udp {what} on {a}"),
            Err(_) => format!("net udp {what}"),
        }
    }

    fn reason(&self) -> WaitReason {
        WaitReason::IoWait
    }

    /// Nothing was read yet: the datagram stays in the socket.
    fn cancel(&self, _py: Python<'_>) -> bool {
        lock(&self.wait).cancel();
        true
    }
}

/// `await pc.sendto(data, addr)` (`to`) and `await pc.send(data)`.
struct Send {
    wait: Mutex<IoWait>,
    pc: Py<PacketConn>,
    data: Data,
    to: Option<SocketAddr>,
    timeout: Option<f64>,
}

impl Send {
    fn token(
        pc: Bound<'_, PacketConn>,
        data: &Bound<'_, PyAny>,
        to: Option<SocketAddr>,
        timeout: Option<f64>,
    ) -> PyResult<Token> {
        Ok(Token::wait(Send {
            data: Data::new(data)?,
            wait: Mutex::new(IoWait::new(deadline(timeout)?)),
            pc: pc.unbind(),
            to,
            timeout,
        }))
    }

    fn what(&self) -> &'static str {
        if self.to.is_some() {
            "sendto"
        } else {
            "send"
        }
    }
}

impl Wait for Send {
    fn poll(&self, py: Python<'_>) -> Poll {
        let sched = match sched() {
            Ok(s) => s,
            Err(e) => return Poll::Ready(Err(e)),
        };
        let pc = &self.pc.get().pc;
        let data = self.data.bytes(py);
        let r = {
            let wait = &mut *lock(&self.wait);
            match self.to {
                Some(to) => pc.poll_send_to(&sched, data, to, wait),
                None => pc.poll_send(&sched, data, wait),
            }
        };
        finish(
            r,
            |n| Ok(n.into_pyobject(py)?.into_any().unbind()),
            |e| sock_error(e, self.what(), PACKET_CONN, self.timeout),
        )
    }

    fn park(&self, _py: Python<'_>, waker: Waker) -> bool {
        lock(&self.wait).park(waker)
    }

    /// Nothing was sent: a datagram goes whole or not at all.
    fn cancel(&self, _py: Python<'_>) -> bool {
        lock(&self.wait).cancel();
        true
    }

    fn describe(&self) -> String {
        match self.to {
            Some(to) => format!("net udp sendto {to}"),
            None => "net udp send".into(),
        }
    }

    fn reason(&self) -> WaitReason {
        WaitReason::IoWait
    }
}

/// A UDP socket bound to ``host``:``port`` that exchanges datagrams with
/// any peer: ``pc = gmprt.net.listen_udp("127.0.0.1", 0)``.
///
/// ``host`` is an IPv4 or IPv6 address (``"127.0.0.1"``, ``"::1"``,
/// ``"0.0.0.0"``, ``"::"``) or a name, resolved to its first address;
/// ``""`` means every IPv4 interface. ``port=0`` picks a free port: read it
/// from :attr:`PacketConn.local_address`. ``reuse_port`` sets
/// ``SO_REUSEPORT``, so several sockets (processes) can share the port,
/// the kernel spreading datagrams among them. ``SO_BROADCAST`` is on, as
/// in Go. Needs no running runtime.
///
/// Raises:
///     OSError: the address is in use, or cannot be bound.
///     ValueError: ``port`` outside 0 to 65535.
#[pyfunction]
#[pyo3(signature = (host, port, *, reuse_port=false))]
pub(crate) fn listen_udp(
    py: Python<'_>,
    host: &str,
    port: &Bound<'_, PyAny>,
    reuse_port: bool,
) -> PyResult<PacketConn> {
    let port = int_arg(port, "port", 0, 65535)? as u16;
    let addr = if host.is_empty() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)
    } else {
        resolve(py, host, port, "listen_udp")?[0]
    };
    let pc = net::PacketConn::bind(addr, reuse_port)
        .map_err(|e| os_error(&e, &format!("listen_udp on {addr}")))?;
    Ok(PacketConn { pc })
}

/// A UDP socket connected to ``host``:``port``, bound to an ephemeral
/// port: ``pc = gmprt.net.dial_udp(host, port)``; then ``await
/// pc.send(data)`` and ``await pc.recv()``.
///
/// Not awaited: a UDP connect sends nothing, it only fixes the peer, so it
/// does not block (a name is resolved first, which may; the P is handed
/// off meanwhile). A name that resolves to several addresses takes the
/// first one a socket can connect to. Nothing listening there shows only
/// later, as ``ConnectionRefusedError`` from ``recv`` or ``send``.
///
/// Raises:
///     OSError: the name does not resolve, or no address can be connected
///         to (``ENETUNREACH``...).
///     ValueError: ``port`` outside 1 to 65535.
#[pyfunction]
#[pyo3(signature = (host, port))]
pub(crate) fn dial_udp(
    py: Python<'_>,
    host: &str,
    port: &Bound<'_, PyAny>,
) -> PyResult<PacketConn> {
    let port = int_arg(port, "port", 1, 65535)? as u16;
    let target = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let host = if host.is_empty() { "localhost" } else { host };
    let addrs = resolve(py, host, port, &format!("dial_udp {target}"))?;
    let pc = net::PacketConn::connect(&addrs)
        .map_err(|e| os_error(&e, &format!("dial_udp {target}")))?;
    Ok(PacketConn { pc })
}
