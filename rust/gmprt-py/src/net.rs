//! `gmprt.net` and `gmprt.wait_readable` / `wait_writable`: the Python face
//! of gmprt-core's `net`, which owns the sockets, the readiness-retry loop,
//! accept backoff, dialing and the fd waits (its module docs: the I/O path,
//! ownership, deadlines).
//!
//! This file only converts. Each blocking method returns a token
//! (`token.rs`) whose `Wait` calls the core operation's `poll_*` and, after
//! a `Pending`, parks its `IoWait` with the G's waker. What must touch
//! Python stays here: the per-thread receive buffer that becomes one
//! `bytes`, sending straight from the caller's buffer (the buffer
//! protocol), `fileno()`, releasing the GIL around a blocking name lookup,
//! and turning core errors into Python exceptions (`error`, below).
//!
//! # Locks
//!
//! A token's `Mutex` around its core state is touched only by the G that
//! awaits it (it makes the state `Sync`). It is held across the core call,
//! which never calls back into Python, and never while Python runs.

use std::cell::Cell;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};
use std::task::Poll as IoPoll;

use gmprt_core::net::{self, IoWait, NetpollError};
use gmprt_core::netpoll::Dir;
use gmprt_core::{Sched, Waker};
use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::{int_arg, int_or, Timeout};
use crate::lock::lock;
use crate::rt;
use crate::time::deadline;
use crate::token::{Poll, Token, Wait};

/// Receive buffers up to this capacity are kept per thread between calls.
const RECV_BUF_KEEP: usize = gmprt_core::net::RECV_MAX;

const CONN: &str = "gmprt.net.Conn";
const LISTENER: &str = "gmprt.net.Listener";

// ===== errors =====

/// An `OSError` carrying `errno`, so Python picks the subclass
/// (`ConnectionRefusedError`, `ConnectionResetError`, `BrokenPipeError`...)
/// and `e.errno` works; the text names the operation.
fn os_error(e: &io::Error, what: &str) -> PyErr {
    match e.raw_os_error() {
        Some(code) => {
            let text = io::Error::from_raw_os_error(code).to_string();
            let suffix = format!(" (os error {code})");
            let text = text.strip_suffix(&suffix).unwrap_or(&text);
            PyOSError::new_err((code, format!("{text} ({what})")))
        }
        None => PyOSError::new_err(format!("{what}: {e}")),
    }
}

fn closed_error(what: &str, kind: &str) -> PyErr {
    PyOSError::new_err((libc::EBADF, format!("{what} on a closed {kind}")))
}

fn timeout_error(what: &str, timeout: Option<f64>) -> PyErr {
    Timeout::new_err(format!(
        "{what} timed out after {} s",
        timeout.unwrap_or_default()
    ))
}

/// A core `net` error as the exception of operation `what`: `OSError`
/// (EBADF) on a closed `on`, `gmprt.Timeout` for a deadline, `RuntimeError`
/// when the runtime's netpoller is gone, else an `OSError` with the errno.
/// `register` names what failed when the netpoller refused an fd.
fn error(e: &io::Error, what: &str, on: &str, register: &str, timeout: Option<f64>) -> PyErr {
    if net::is_closed(e) {
        return closed_error(what, on);
    }
    if net::is_timeout(e) {
        return timeout_error(what, timeout);
    }
    match NetpollError::of(e) {
        Some(NetpollError::Register(inner)) => os_error(inner, register),
        Some(_) => PyRuntimeError::new_err(e.to_string()),
        None => os_error(e, what),
    }
}

/// [`error`] for an operation on a `Conn` or `Listener`.
fn sock_error(e: &io::Error, what: &str, on: &str, timeout: Option<f64>) -> PyErr {
    error(e, what, on, "register with the netpoller", timeout)
}

/// The runtime of the calling G.
fn sched() -> PyResult<Arc<Sched>> {
    rt::sched().ok_or_else(|| PyRuntimeError::new_err("gmprt sockets need a running gmprt runtime"))
}

/// A core poll's outcome as a token's: `ok` builds the value, `err` the
/// exception.
fn finish<T>(
    r: IoPoll<io::Result<T>>,
    ok: impl FnOnce(T) -> PyResult<Py<PyAny>>,
    err: impl FnOnce(&io::Error) -> PyErr,
) -> Poll {
    match r {
        IoPoll::Ready(Ok(v)) => Poll::Ready(ok(v)),
        IoPoll::Ready(Err(e)) => Poll::Ready(Err(err(&e))),
        IoPoll::Pending => Poll::Pending,
    }
}

fn py_addr(a: SocketAddr) -> (String, u16) {
    (a.ip().to_string(), a.port())
}

/// The addresses of `host`: a literal is parsed, a name resolved with
/// `getaddrinfo`, which blocks, so the calling M hands its P off and
/// releases the GIL meanwhile.
fn resolve(py: Python<'_>, host: &str, port: u16, what: &str) -> PyResult<Vec<SocketAddr>> {
    if let Some(a) = net::literal(host, port) {
        return Ok(vec![a]);
    }
    let mut found = None;
    rt::block_in_g(py, || found = Some(net::resolve(host, port)));
    match found {
        Some(Ok(addrs)) => Ok(addrs),
        Some(Err(e)) => Err(PyOSError::new_err(format!("{what}: {e}"))),
        None => Err(PyRuntimeError::new_err("address resolution did not run")),
    }
}

// ===== buffers =====

/// Bytes to send: a `bytes` object, or any C-contiguous buffer.
enum Data {
    Bytes(Py<PyBytes>),
    Buffer(PyUntypedBuffer),
}

impl Data {
    fn new(obj: &Bound<'_, PyAny>) -> PyResult<Data> {
        if let Ok(b) = obj.cast::<PyBytes>() {
            return Ok(Data::Bytes(b.clone().unbind()));
        }
        let buf = PyUntypedBuffer::get(obj).map_err(|_| {
            PyTypeError::new_err(format!(
                "a bytes-like object is required, not '{}'",
                obj.get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        })?;
        if !buf.is_c_contiguous() {
            return Err(PyValueError::new_err(
                "the buffer to send must be C-contiguous",
            ));
        }
        Ok(Data::Buffer(buf))
    }

    fn bytes<'a>(&'a self, py: Python<'a>) -> &'a [u8] {
        match self {
            Data::Bytes(b) => b.bind(py).as_bytes(),
            Data::Buffer(buf) => {
                let len = buf.len_bytes();
                if len == 0 {
                    return &[];
                }
                // SAFETY: the buffer export (held by `buf` until it drops)
                // keeps `len` contiguous bytes alive at `buf_ptr` and stops
                // a bytearray from resizing. Another thread writing into the
                // buffer meanwhile is the same race `socket.send` has.
                unsafe { std::slice::from_raw_parts(buf.buf_ptr() as *const u8, len) }
            }
        }
    }
}

thread_local! {
    /// Each M's receive buffer (a `Vec` holds no Python reference).
    static RECV_BUF: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// The calling thread's receive buffer (empty, any capacity). Taken out of
/// the thread-local, so a re-entrant call just gets a fresh one.
fn take_buf() -> Vec<u8> {
    RECV_BUF.with(|c| c.take())
}

fn put_buf(buf: Vec<u8>) {
    if buf.capacity() <= RECV_BUF_KEEP {
        RECV_BUF.with(|c| c.set(buf));
    }
}

// ===== Conn =====

/// A TCP connection, from :meth:`Listener.accept` or :func:`gmprt.net.dial`.
///
/// Every blocking method returns an awaitable for a G::
///
///     while data := await conn.recv(65536):
///         await conn.sendall(data)
///
/// ``TCP_NODELAY`` is on. Each blocking method takes ``timeout=`` (seconds,
/// from the call; ``None`` waits forever) and raises :class:`gmprt.Timeout`
/// when it passes; the connection stays usable. A peer that reset the
/// connection raises ``ConnectionResetError`` (or ``BrokenPipeError`` on a
/// send); any method on a closed ``Conn`` raises ``OSError`` (EBADF).
/// ``close()`` wakes Gs blocked on the connection; they raise that
/// ``OSError``. Use as a context manager to close it on exit.
#[pyclass(frozen, module = "gmprt.net", name = "Conn")]
pub struct Conn {
    conn: net::Conn,
}

impl Conn {
    fn addr(&self, peer: bool) -> PyResult<(String, u16)> {
        let (what, r) = if peer {
            ("remote_address", self.conn.peer_addr())
        } else {
            ("local_address", self.conn.local_addr())
        };
        r.map(py_addr).map_err(|e| sock_error(&e, what, CONN, None))
    }
}

#[pymethods]
impl Conn {
    /// Receive up to ``max_bytes`` bytes: ``await conn.recv()``. Returns as
    /// soon as any data is there; ``b""`` once the peer has closed its
    /// sending side (EOF). One call returns at most 1 MiB, however large
    /// ``max_bytes`` is, so a length read off the wire can be passed as is.
    ///
    /// Raises:
    ///     gmprt.Timeout: nothing arrived within ``timeout`` seconds.
    ///     ConnectionResetError: the peer reset the connection.
    ///     OSError: the connection is closed.
    ///     ValueError: ``max_bytes < 1``.
    #[pyo3(signature = (max_bytes=None, *, timeout=None), text_signature = "(self, /, max_bytes=65536, *, timeout=None)")]
    fn recv(
        slf: Bound<'_, Self>,
        max_bytes: Option<&Bound<'_, PyAny>>,
        timeout: Option<f64>,
    ) -> PyResult<Token> {
        let max_bytes = int_or(max_bytes, 65536, "max_bytes", 1, i64::MAX)? as usize;
        Ok(Token::wait(Recv {
            wait: Mutex::new(IoWait::new(deadline(timeout)?)),
            conn: slf.unbind(),
            max: max_bytes,
            timeout,
        }))
    }

    /// Send some of ``data`` (bytes or any contiguous buffer): ``await
    /// conn.send(data)`` returns how many bytes the kernel took (at least
    /// one, unless ``data`` is empty), waiting only while it takes none.
    ///
    /// Raises:
    ///     gmprt.Timeout: nothing could be sent within ``timeout`` seconds.
    ///     BrokenPipeError, ConnectionResetError: the peer is gone.
    ///     OSError: the connection is closed.
    #[pyo3(signature = (data, *, timeout=None))]
    fn send(slf: Bound<'_, Self>, data: Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<Token> {
        Send::token(slf, &data, timeout, false)
    }

    /// Send all of ``data``: ``await conn.sendall(data)``, waiting for the
    /// peer as needed. ``timeout`` bounds the whole call; on a timeout some
    /// prefix of ``data`` may have been sent.
    ///
    /// Raises:
    ///     gmprt.Timeout: the data was not all sent within ``timeout`` seconds.
    ///     BrokenPipeError, ConnectionResetError: the peer is gone.
    ///     OSError: the connection is closed.
    #[pyo3(signature = (data, *, timeout=None))]
    fn sendall(
        slf: Bound<'_, Self>,
        data: Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<Token> {
        Send::token(slf, &data, timeout, true)
    }

    /// Close the connection (idempotent). Gs blocked on it wake up and raise
    /// ``OSError``.
    fn close(&self) {
        self.conn.close();
    }

    /// Shut down the sending side (a TCP half-close, Go's ``CloseWrite``):
    /// the peer reads EOF, and this side can still receive.
    ///
    /// Raises:
    ///     OSError: the connection is closed or not connected.
    fn close_write(&self) -> PyResult<()> {
        self.conn
            .close_write()
            .map_err(|e| sock_error(&e, "close_write", CONN, None))
    }

    /// Whether :meth:`close` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.conn.is_closed()
    }

    /// The socket's file descriptor, or -1 once closed.
    fn fileno(&self) -> RawFd {
        self.conn.fd().unwrap_or(-1)
    }

    /// ``(host, port)`` of this end.
    #[getter]
    fn local_address(&self) -> PyResult<(String, u16)> {
        self.addr(false)
    }

    /// ``(host, port)`` of the peer.
    #[getter]
    fn remote_address(&self) -> PyResult<(String, u16)> {
        self.addr(true)
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, _exc: Bound<'_, pyo3::types::PyTuple>) {
        self.conn.close();
    }

    fn __repr__(&self) -> String {
        match (self.addr(false), self.addr(true)) {
            (Ok(l), Ok(r)) => format!("<gmprt.net.Conn {}:{} -> {}:{}>", l.0, l.1, r.0, r.1),
            _ if self.conn.is_closed() => "<gmprt.net.Conn closed>".into(),
            _ => "<gmprt.net.Conn>".into(),
        }
    }
}

/// `await conn.recv(n)`.
struct Recv {
    wait: Mutex<IoWait>,
    conn: Py<Conn>,
    max: usize,
    timeout: Option<f64>,
}

impl Wait for Recv {
    fn poll(&self, py: Python<'_>) -> Poll {
        let sched = match sched() {
            Ok(s) => s,
            Err(e) => return Poll::Ready(Err(e)),
        };
        let mut buf = take_buf();
        let conn = &self.conn.get().conn;
        let r = conn.poll_recv_vec(&sched, &mut buf, self.max, &mut lock(&self.wait));
        let out = finish(
            r,
            |_| Ok(PyBytes::new(py, &buf).into_any().unbind()),
            |e| sock_error(e, "recv", CONN, self.timeout),
        );
        put_buf(buf);
        out
    }

    fn park(&self, _py: Python<'_>, waker: Waker) -> bool {
        lock(&self.wait).park(waker)
    }

    fn describe(&self) -> String {
        "net recv".into()
    }

    /// Nothing was read yet: the bytes stay in the socket.
    fn cancel(&self, _py: Python<'_>) -> bool {
        lock(&self.wait).cancel();
        true
    }
}

/// `await conn.send(data)` and `await conn.sendall(data)` (`all`).
struct Send {
    /// The wait, and for sendall the bytes sent so far.
    st: Mutex<(IoWait, usize)>,
    conn: Py<Conn>,
    data: Data,
    all: bool,
    timeout: Option<f64>,
}

impl Send {
    fn token(
        conn: Bound<'_, Conn>,
        data: &Bound<'_, PyAny>,
        timeout: Option<f64>,
        all: bool,
    ) -> PyResult<Token> {
        Ok(Token::wait(Send {
            data: Data::new(data)?,
            st: Mutex::new((IoWait::new(deadline(timeout)?), 0)),
            conn: conn.unbind(),
            all,
            timeout,
        }))
    }

    fn what(&self) -> &'static str {
        if self.all {
            "sendall"
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
        let conn = &self.conn.get().conn;
        let data = self.data.bytes(py);
        let err = |e: &io::Error| sock_error(e, self.what(), CONN, self.timeout);
        if self.all {
            let r = {
                let (wait, sent) = &mut *lock(&self.st);
                conn.poll_send_all(&sched, data, sent, wait)
            };
            finish(r, |()| Ok(py.None()), err)
        } else {
            let r = conn.poll_send(&sched, data, &mut lock(&self.st).0);
            finish(r, |n| Ok(n.into_pyobject(py)?.into_any().unbind()), err)
        }
    }

    fn park(&self, _py: Python<'_>, waker: Waker) -> bool {
        lock(&self.st).0.park(waker)
    }

    /// What a sendall already sent stays sent (a cancelled sendall may have
    /// sent part of the data, as a timed-out one may).
    fn cancel(&self, _py: Python<'_>) -> bool {
        lock(&self.st).0.cancel();
        true
    }

    fn describe(&self) -> String {
        format!("net {}", self.what())
    }
}

// ===== Listener =====

/// A listening TCP socket, from :func:`gmprt.net.listen`.
///
/// ``await ln.accept()`` returns the next :class:`Conn`. When the process
/// runs out of file descriptors, ``accept`` logs once to stderr, waits
/// (5 ms, doubling up to 1 s) and retries, like Go's ``net/http``: the
/// listener survives and serves again once descriptors free up. Closing it
/// wakes Gs blocked in ``accept``; they raise ``OSError``.
#[pyclass(frozen, module = "gmprt.net", name = "Listener")]
pub struct Listener {
    ln: net::Listener,
}

#[pymethods]
impl Listener {
    /// Accept the next connection: ``conn = await ln.accept()``.
    ///
    /// Raises:
    ///     gmprt.Timeout: none arrived within ``timeout`` seconds.
    ///     OSError: the listener is closed.
    #[pyo3(signature = (*, timeout=None))]
    fn accept(slf: Bound<'_, Self>, timeout: Option<f64>) -> PyResult<Token> {
        Ok(Token::wait(Accept {
            wait: Mutex::new(IoWait::new(deadline(timeout)?)),
            ln: slf.unbind(),
            timeout,
        }))
    }

    /// ``(host, port)`` the listener is bound to (the real port when
    /// ``listen`` was given port 0).
    #[getter]
    fn address(&self) -> (String, u16) {
        py_addr(self.ln.local_addr())
    }

    /// Stop listening (idempotent). Gs blocked in ``accept`` raise
    /// ``OSError``.
    fn close(&self) {
        self.ln.close();
    }

    /// Whether :meth:`close` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.ln.is_closed()
    }

    /// The socket's file descriptor, or -1 once closed.
    fn fileno(&self) -> RawFd {
        self.ln.fd().unwrap_or(-1)
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, _exc: Bound<'_, pyo3::types::PyTuple>) {
        self.ln.close();
    }

    fn __repr__(&self) -> String {
        let state = if self.ln.is_closed() { " closed" } else { "" };
        format!("<gmprt.net.Listener {}{state}>", self.ln.local_addr())
    }
}

/// `await ln.accept()`.
struct Accept {
    wait: Mutex<IoWait>,
    ln: Py<Listener>,
    timeout: Option<f64>,
}

impl Wait for Accept {
    fn poll(&self, py: Python<'_>) -> Poll {
        let sched = match sched() {
            Ok(s) => s,
            Err(e) => return Poll::Ready(Err(e)),
        };
        let r = self.ln.get().ln.poll_accept(&sched, &mut lock(&self.wait));
        finish(
            r,
            |(conn, _peer)| Ok(Py::new(py, Conn { conn })?.into_any()),
            |e| sock_error(e, "accept", LISTENER, self.timeout),
        )
    }

    fn park(&self, _py: Python<'_>, waker: Waker) -> bool {
        lock(&self.wait).park(waker)
    }

    fn describe(&self) -> String {
        format!("net accept on {}", self.ln.get().ln.local_addr())
    }

    /// No connection was taken: it stays in the backlog.
    fn cancel(&self, _py: Python<'_>) -> bool {
        lock(&self.wait).cancel();
        true
    }
}

/// Listen for TCP connections on ``host``:``port``.
///
/// ``host`` is an IPv4 or IPv6 address (``"127.0.0.1"``, ``"::1"``,
/// ``"0.0.0.0"``, ``"::"``) or a name, resolved to its first address;
/// ``""`` means every IPv4 interface. ``port=0`` picks a free port: read it
/// from :attr:`Listener.address`. ``SO_REUSEADDR`` is set; ``reuse_port``
/// also sets ``SO_REUSEPORT`` so several listeners (processes) can share
/// the port. Needs no running runtime.
///
/// Raises:
///     OSError: the address is in use, or cannot be bound.
///     ValueError: ``port`` outside 0 to 65535, or ``backlog < 0``.
#[pyfunction]
#[pyo3(signature = (host, port, *, backlog=None, reuse_port=false), text_signature = "(host, port, *, backlog=1024, reuse_port=False)")]
pub(crate) fn listen(
    py: Python<'_>,
    host: &str,
    port: &Bound<'_, PyAny>,
    backlog: Option<&Bound<'_, PyAny>>,
    reuse_port: bool,
) -> PyResult<Listener> {
    let port = int_arg(port, "port", 0, 65535)? as u16;
    let backlog = int_or(backlog, 1024, "backlog", 0, i64::from(i32::MAX))? as i32;
    let addr = if host.is_empty() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)
    } else {
        resolve(py, host, port, "listen")?[0]
    };
    let ln = net::Listener::bind(addr, backlog, reuse_port)
        .map_err(|e| os_error(&e, &format!("listen on {addr}")))?;
    Ok(Listener { ln })
}

// ===== dial =====

/// `await gmprt.net.dial(host, port)`.
struct Dial {
    dial: Mutex<net::Dial>,
    target: String,
    timeout: Option<f64>,
}

impl Wait for Dial {
    fn poll(&self, py: Python<'_>) -> Poll {
        let sched = match sched() {
            Ok(s) => s,
            Err(e) => return Poll::Ready(Err(e)),
        };
        let r = lock(&self.dial).poll(&sched);
        finish(
            r,
            |conn| Ok(Py::new(py, Conn { conn })?.into_any()),
            |e| {
                let what = format!("dial {}", self.target);
                error(e, &what, CONN, &what, self.timeout)
            },
        )
    }

    fn park(&self, _py: Python<'_>, waker: Waker) -> bool {
        lock(&self.dial).park(waker)
    }

    fn describe(&self) -> String {
        format!("net dial {}", self.target)
    }

    fn cancel(&self, _py: Python<'_>) -> bool {
        lock(&self.dial).cancel();
        true
    }
}

/// Connect to ``host``:``port`` over TCP: ``conn = await
/// gmprt.net.dial(host, port)``.
///
/// A name that resolves to several addresses is tried address by address
/// until one connects; ``timeout`` (seconds) bounds the whole dial.
///
/// Raises:
///     ConnectionRefusedError: nothing listens there.
///     gmprt.Timeout: not connected within ``timeout`` seconds.
///     OSError: the name does not resolve, or another connect error.
///     ValueError: ``port`` outside 1 to 65535.
#[pyfunction]
#[pyo3(signature = (host, port, *, timeout=None))]
pub(crate) fn dial(
    py: Python<'_>,
    host: &str,
    port: &Bound<'_, PyAny>,
    timeout: Option<f64>,
) -> PyResult<Token> {
    let port = int_arg(port, "port", 1, 65535)? as u16;
    let deadline = deadline(timeout)?;
    let target = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let host = if host.is_empty() { "localhost" } else { host };
    let addrs = resolve(py, host, port, &format!("dial {target}"))?;
    Ok(Token::wait(Dial {
        dial: Mutex::new(net::Dial::new(addrs, deadline)),
        target,
        timeout,
    }))
}

// ===== wait_readable / wait_writable =====

/// `await gmprt.wait_readable(fd)` / `wait_writable(fd)`.
struct FdWait {
    op: Mutex<net::FdWait>,
    what: &'static str,
    fd: RawFd,
    timeout: Option<f64>,
}

impl Wait for FdWait {
    fn poll(&self, py: Python<'_>) -> Poll {
        let Some(sched) = rt::sched() else {
            return Poll::Ready(Err(PyRuntimeError::new_err(
                "gmprt timers and sockets need a running gmprt runtime",
            )));
        };
        let r = lock(&self.op).poll(&sched);
        finish(
            r,
            |()| Ok(py.None()),
            |e| error(e, self.what, "fd", self.what, self.timeout),
        )
    }

    fn park(&self, _py: Python<'_>, waker: Waker) -> bool {
        lock(&self.op).park(waker)
    }

    fn describe(&self) -> String {
        format!("{} fd {}", self.what, self.fd)
    }

    fn cancel(&self, _py: Python<'_>) -> bool {
        lock(&self.op).cancel();
        true
    }
}

fn fd_wait(obj: &Bound<'_, PyAny>, dir: Dir, timeout: Option<f64>) -> PyResult<Token> {
    // SAFETY: attached; `obj` is live. Returns -1 with an exception set for
    // an object that is neither an int nor has fileno().
    let fd = unsafe { ffi::PyObject_AsFileDescriptor(obj.as_ptr()) };
    if fd < 0 {
        return Err(PyErr::fetch(obj.py()));
    }
    let what = match dir {
        Dir::Read => "wait_readable",
        Dir::Write => "wait_writable",
    };
    Ok(Token::wait(FdWait {
        op: Mutex::new(net::FdWait::new(fd, dir, deadline(timeout)?)),
        what,
        fd,
        timeout,
    }))
}

/// Wait until ``fd`` (a file descriptor, or any object with ``fileno()``,
/// such as a ``socket.socket``) is readable: ``await
/// gmprt.wait_readable(sock)``. Returns at once if it already is. The G
/// parks on the netpoller meanwhile; the fd stays yours (nothing is read).
/// "Readable" includes EOF and errors, as for ``select``.
///
/// Raises:
///     gmprt.Timeout: not readable within ``timeout`` seconds.
///     OSError: ``fd`` is not an open file descriptor.
#[pyfunction]
#[pyo3(signature = (fd, timeout=None))]
pub(crate) fn wait_readable(fd: Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<Token> {
    fd_wait(&fd, Dir::Read, timeout)
}

/// Wait until ``fd`` (a file descriptor or an object with ``fileno()``) is
/// writable: ``await gmprt.wait_writable(sock)``. See :func:`wait_readable`.
///
/// Raises:
///     gmprt.Timeout: not writable within ``timeout`` seconds.
///     OSError: ``fd`` is not an open file descriptor.
#[pyfunction]
#[pyo3(signature = (fd, timeout=None))]
pub(crate) fn wait_writable(fd: Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<Token> {
    fd_wait(&fd, Dir::Write, timeout)
}
