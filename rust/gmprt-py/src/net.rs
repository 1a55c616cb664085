//! `gmprt.net`: TCP listeners and connections on the netpoller, and
//! `gmprt.wait_readable` / `wait_writable` for any file descriptor.
//!
//! # The I/O path
//!
//! Every blocking operation returns a token (`token.rs`) whose `poll` does
//! the nonblocking syscall right here in Rust: `recv` copies into a
//! per-thread buffer and makes one `bytes`, `send` writes straight from the
//! caller's buffer. On `WouldBlock` it clears the registration's readiness
//! (with the tick it read before the syscall, so a newer event survives) and
//! the driver parks the G on the netpoller, with the operation's deadline
//! if it has one. Whichever M polls the netpoller (gmprt-core `netpoll`)
//! wakes the G's Rust `Waker`; no Python runs between the kernel and the G
//! that wakes.
//!
//! # Ownership
//!
//! [`Sock`] owns one socket. Its `RwLock` is taken shared for every syscall
//! (so one G can receive while another sends) and exclusively by `close`,
//! so the fd is never closed, and its number reused, under a syscall in
//! flight. Nothing calls into Python while holding it: a garbage collection
//! could run a finalizer that closes the same socket on the same thread.
//!
//! A socket is registered with the netpoller lazily, on its first
//! operation, by the runtime that performs it ([`Binding`]); a listener made
//! before `gmprt.run()`, or a connection carried from one `run()` to the
//! next, is simply registered again. Registrations are removed before the
//! fd is closed.
//!
//! # Deadlines
//!
//! Each blocking operation takes `timeout=` (seconds; None waits forever),
//! measured from the call. When it passes, the operation raises
//! `gmprt.Timeout` and the connection stays usable. `sendall` applies one
//! deadline to the whole call; `dial` to every address it tries.

use std::cell::Cell;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use gmprt_core::netpoll::{Dir, Registration, WaitId};
use gmprt_core::Waker;
use mio::net::{TcpListener as MioListener, TcpStream as MioStream};
use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::time::{deadline, expired, lock, netpoll, ParkedTimer};
use crate::token::{Poll, Token, Wait};
use crate::{runtime, Timeout};

type Reg = Registration<Waker>;

/// Go's net/http `Serve`: an accept that fails for lack of descriptors (or
/// buffers) sleeps 5 ms, doubling to 1 s, and retries.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Receive buffers up to this capacity are kept per thread between calls.
const RECV_BUF_KEEP: usize = 1 << 20;

// ===== errors =====

/// An `OSError` carrying `errno`, so Python picks the subclass
/// (`ConnectionRefusedError`, `ConnectionResetError`, `BrokenPipeError`...)
/// and `e.errno` works; the text names the operation.
pub(crate) fn os_error(e: &io::Error, what: &str) -> PyErr {
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

fn py_addr(a: SocketAddr) -> (String, u16) {
    (a.ip().to_string(), a.port())
}

// ===== sockets =====

/// A socket's registration with the netpoller of the runtime using it.
#[derive(Default)]
struct Binding(Mutex<Option<Arc<Reg>>>);

impl Binding {
    fn with(reg: Arc<Reg>) -> Binding {
        Binding(Mutex::new(Some(reg)))
    }

    /// The registration with the calling G's runtime, registering `fd` (or
    /// registering it again, for a new runtime) if needed.
    fn get(&self, fd: RawFd) -> PyResult<Arc<Reg>> {
        let sched = runtime::sched()
            .ok_or_else(|| PyRuntimeError::new_err("gmprt sockets need a running gmprt runtime"))?;
        let mut slot = lock(&self.0);
        if let Some(r) = slot.as_ref() {
            if sched.netpoll().owns(r) {
                return Ok(r.clone());
            }
        }
        if let Some(old) = slot.take() {
            old.deregister();
        }
        let h = sched
            .netpoll()
            .handle()
            .map_err(|e| PyRuntimeError::new_err(format!("gmprt netpoller: {e}")))?;
        let reg = h
            .register(fd, true)
            .map_err(|e| os_error(&e, "register with the netpoller"))?;
        let reg = Arc::new(reg);
        *slot = Some(reg.clone());
        Ok(reg)
    }

    fn close(&self) {
        if let Some(r) = lock(&self.0).take() {
            r.deregister();
        }
    }
}

/// One owned socket; see "Ownership" in the module docs.
struct Sock<S: AsRawFd> {
    io: RwLock<Option<S>>,
    binding: Binding,
    fd: RawFd,
    /// "gmprt.net.Conn" or "gmprt.net.Listener", for error texts.
    kind: &'static str,
}

impl<S: AsRawFd> Sock<S> {
    fn new(s: S, binding: Binding, kind: &'static str) -> Sock<S> {
        Sock {
            fd: s.as_raw_fd(),
            io: RwLock::new(Some(s)),
            binding,
            kind,
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Option<S>> {
        self.io.read().unwrap_or_else(|p| p.into_inner())
    }

    fn is_closed(&self) -> bool {
        self.read().is_none()
    }

    /// The netpoller registration, for an operation called `what`.
    fn reg(&self, what: &str) -> PyResult<Arc<Reg>> {
        if self.is_closed() {
            return Err(closed_error(what, self.kind));
        }
        self.binding.get(self.fd)
    }

    /// Runs `op` on the open socket (shared lock); None once closed.
    fn with<T>(&self, op: impl FnOnce(&S) -> T) -> Option<T> {
        self.read().as_ref().map(op)
    }

    /// Deregisters, then closes the fd. False if already closed.
    fn close(&self) -> bool {
        let mut io = self.io.write().unwrap_or_else(|p| p.into_inner());
        let Some(s) = io.take() else {
            return false;
        };
        self.binding.close();
        drop(s);
        true
    }
}

impl<S: AsRawFd> Drop for Sock<S> {
    fn drop(&mut self) {
        self.close();
    }
}

/// What one attempt at a syscall gave.
enum Io<T> {
    Done(io::Result<T>),
    /// Would block: readiness is cleared, the caller may park.
    Blocked,
    Closed,
}

/// Tries `op` while the registration says `dir` may be ready; on
/// `WouldBlock` clears readiness with the tick read before the try.
fn attempt<S: AsRawFd, T>(
    sock: &Sock<S>,
    reg: &Reg,
    dir: Dir,
    mut op: impl FnMut(&S) -> io::Result<T>,
) -> Io<T> {
    loop {
        let ev = reg.readiness(dir);
        if !ev.ready {
            return Io::Blocked;
        }
        match sock.with(&mut op) {
            None => return Io::Closed,
            Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                reg.clear_readiness(ev);
                return Io::Blocked;
            }
            Some(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            Some(r) => return Io::Done(r),
        }
    }
}

/// A G's park on a registration, for one token.
#[derive(Default)]
struct IoPark {
    /// The registration `poll` last found blocked, for `park`.
    pending: Mutex<Option<Arc<Reg>>>,
    parked: Mutex<Option<(Arc<Reg>, WaitId)>>,
}

impl IoPark {
    fn pending(&self, reg: Arc<Reg>) {
        *lock(&self.pending) = Some(reg);
    }

    /// Driver: park `w` on the registration `poll` found blocked. False if
    /// it became ready (or closed, or the deadline passed) meanwhile.
    fn park(&self, dir: Dir, w: Waker, deadline: Option<Instant>) -> bool {
        let Some(reg) = lock(&self.pending).take() else {
            return false;
        };
        match reg.park(dir, w, deadline) {
            Ok(id) => {
                *lock(&self.parked) = Some((reg, id));
                true
            }
            Err(_) => false,
        }
    }

    /// `poll` again: the G was woken (the netpoller removed its waiter
    /// first) or never parked; there is nothing to withdraw.
    fn woken(&self) {
        lock(&self.parked).take();
    }
}

impl Drop for IoPark {
    fn drop(&mut self) {
        // The token died parked (its G was closed at shutdown).
        if let Some((reg, id)) = lock(&self.parked).take() {
            reg.cancel(id);
        }
    }
}

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

/// `recv(2)` of up to `n` bytes into `buf`'s spare capacity (no zeroing:
/// the kernel initialises what it writes).
fn recv_into(s: &MioStream, buf: &mut Vec<u8>, n: usize) -> io::Result<usize> {
    buf.clear();
    buf.reserve(n);
    // SAFETY: `buf` has capacity for `n` bytes at `as_mut_ptr()`; recv
    // writes at most `n` bytes there and returns how many, or -1.
    let k = unsafe { libc::recv(s.as_raw_fd(), buf.as_mut_ptr().cast(), n, 0) };
    if k < 0 {
        return Err(io::Error::last_os_error());
    }
    let k = k as usize;
    // SAFETY: the kernel initialised the first `k <= n <= capacity` bytes.
    unsafe { buf.set_len(k) };
    Ok(k)
}

/// The addresses of `host`: a literal is parsed, a name resolved with
/// `getaddrinfo`, which blocks, so the calling M hands its P off meanwhile.
fn resolve(py: Python<'_>, host: &str, port: u16, what: &str) -> PyResult<Vec<SocketAddr>> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let mut found = None;
    let name = bare.to_string();
    runtime::block_in_g(py, || {
        found = Some(
            (name.as_str(), port)
                .to_socket_addrs()
                .map(|a| a.collect::<Vec<_>>()),
        );
    });
    match found {
        Some(Ok(addrs)) if !addrs.is_empty() => Ok(addrs),
        Some(Ok(_)) => Err(PyOSError::new_err(format!(
            "{what}: no address found for {host:?}"
        ))),
        Some(Err(e)) => Err(PyOSError::new_err(format!(
            "{what}: cannot resolve {host:?}: {e}"
        ))),
        None => Err(PyRuntimeError::new_err("address resolution did not run")),
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
    sock: Sock<MioStream>,
}

impl Conn {
    fn new(s: MioStream, binding: Binding) -> Conn {
        // Best effort: a socket that refuses NODELAY still works.
        let _ = s.set_nodelay(true);
        Conn {
            sock: Sock::new(s, binding, "gmprt.net.Conn"),
        }
    }

    fn addr(&self, peer: bool) -> PyResult<(String, u16)> {
        let what = if peer {
            "remote_address"
        } else {
            "local_address"
        };
        let r = self
            .sock
            .with(|s| if peer { s.peer_addr() } else { s.local_addr() })
            .ok_or_else(|| closed_error(what, "gmprt.net.Conn"))?;
        r.map(py_addr).map_err(|e| os_error(&e, what))
    }
}

#[pymethods]
impl Conn {
    /// Receive up to ``max_bytes`` bytes: ``await conn.recv()``. Returns as
    /// soon as any data is there; ``b""`` once the peer has closed its
    /// sending side (EOF).
    ///
    /// Raises:
    ///     gmprt.Timeout: nothing arrived within ``timeout`` seconds.
    ///     ConnectionResetError: the peer reset the connection.
    ///     OSError: the connection is closed.
    ///     ValueError: ``max_bytes < 1``.
    #[pyo3(signature = (max_bytes=65536, *, timeout=None))]
    fn recv(slf: Bound<'_, Self>, max_bytes: usize, timeout: Option<f64>) -> PyResult<Token> {
        if max_bytes == 0 {
            return Err(PyValueError::new_err("max_bytes must be >= 1, got 0"));
        }
        Ok(Token::wait(Recv {
            io: IoPark::default(),
            conn: slf.unbind(),
            max: max_bytes,
            deadline: deadline(timeout)?,
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
        Ok(Token::wait(Send {
            io: IoPark::default(),
            data: Data::new(&data)?,
            conn: slf.unbind(),
            deadline: deadline(timeout)?,
            timeout,
            sent: None,
        }))
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
        Ok(Token::wait(Send {
            io: IoPark::default(),
            data: Data::new(&data)?,
            conn: slf.unbind(),
            deadline: deadline(timeout)?,
            timeout,
            sent: Some(AtomicUsize::new(0)),
        }))
    }

    /// Close the connection (idempotent). Gs blocked on it wake up and raise
    /// ``OSError``.
    fn close(&self) {
        self.sock.close();
    }

    /// Shut down the sending side (a TCP half-close, Go's ``CloseWrite``):
    /// the peer reads EOF, and this side can still receive.
    ///
    /// Raises:
    ///     OSError: the connection is closed or not connected.
    fn close_write(&self) -> PyResult<()> {
        let r = self
            .sock
            .with(|s| s.shutdown(Shutdown::Write))
            .ok_or_else(|| closed_error("close_write", "gmprt.net.Conn"))?;
        r.map_err(|e| os_error(&e, "close_write"))
    }

    /// Whether :meth:`close` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.sock.is_closed()
    }

    /// The socket's file descriptor, or -1 once closed.
    fn fileno(&self) -> RawFd {
        if self.sock.is_closed() {
            -1
        } else {
            self.sock.fd
        }
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
        self.sock.close();
    }

    fn __repr__(&self) -> String {
        match (self.addr(false), self.addr(true)) {
            (Ok(l), Ok(r)) => format!("<gmprt.net.Conn {}:{} -> {}:{}>", l.0, l.1, r.0, r.1),
            _ if self.sock.is_closed() => "<gmprt.net.Conn closed>".into(),
            _ => "<gmprt.net.Conn>".into(),
        }
    }
}

/// `await conn.recv(n)`.
struct Recv {
    io: IoPark,
    conn: Py<Conn>,
    max: usize,
    deadline: Option<Instant>,
    timeout: Option<f64>,
}

impl Wait for Recv {
    fn poll(&self, py: Python<'_>) -> Poll {
        self.io.woken();
        let sock = &self.conn.get().sock;
        let reg = match sock.reg("recv") {
            Ok(r) => r,
            Err(e) => return Poll::Ready(Err(e)),
        };
        let mut buf = take_buf();
        let r = attempt(sock, &reg, Dir::Read, |s| recv_into(s, &mut buf, self.max));
        let out = match r {
            Io::Done(Ok(_)) => Poll::Ready(Ok(PyBytes::new(py, &buf).into_any().unbind())),
            Io::Done(Err(e)) => Poll::Ready(Err(os_error(&e, "recv"))),
            Io::Closed => Poll::Ready(Err(closed_error("recv", sock.kind))),
            Io::Blocked if expired(self.deadline) => {
                Poll::Ready(Err(timeout_error("recv", self.timeout)))
            }
            Io::Blocked => {
                self.io.pending(reg);
                Poll::Pending
            }
        };
        put_buf(buf);
        out
    }

    fn park(&self, _py: Python<'_>, waker: Waker) -> bool {
        self.io.park(Dir::Read, waker, self.deadline)
    }

    fn describe(&self) -> String {
        "net recv".into()
    }
}

/// `await conn.send(data)` (`sent` is None) and `await conn.sendall(data)`.
struct Send {
    io: IoPark,
    conn: Py<Conn>,
    data: Data,
    deadline: Option<Instant>,
    timeout: Option<f64>,
    /// sendall: bytes sent so far.
    sent: Option<AtomicUsize>,
}

impl Send {
    fn what(&self) -> &'static str {
        if self.sent.is_some() {
            "sendall"
        } else {
            "send"
        }
    }
}

impl Wait for Send {
    fn poll(&self, py: Python<'_>) -> Poll {
        self.io.woken();
        let sock = &self.conn.get().sock;
        let what = self.what();
        let reg = match sock.reg(what) {
            Ok(r) => r,
            Err(e) => return Poll::Ready(Err(e)),
        };
        let data = self.data.bytes(py);
        loop {
            // The G that owns this token is the only one touching `sent`.
            let from = self.sent.as_ref().map_or(0, |s| s.load(Relaxed));
            let rest = &data[from..];
            if rest.is_empty() {
                return Poll::Ready(Ok(match self.sent {
                    Some(_) => py.None(),
                    None => 0usize
                        .into_pyobject(py)
                        .map_or_else(|_| py.None(), |v| v.into_any().unbind()),
                }));
            }
            match attempt(sock, &reg, Dir::Write, |mut s| s.write(rest)) {
                Io::Done(Ok(0)) => {
                    let e = io::Error::from(io::ErrorKind::WriteZero);
                    return Poll::Ready(Err(os_error(&e, what)));
                }
                Io::Done(Ok(n)) => match &self.sent {
                    Some(s) => {
                        s.store(from + n, Relaxed);
                    }
                    None => {
                        return Poll::Ready(
                            n.into_pyobject(py)
                                .map(|v| v.into_any().unbind())
                                .map_err(Into::into),
                        );
                    }
                },
                Io::Done(Err(e)) => return Poll::Ready(Err(os_error(&e, what))),
                Io::Closed => return Poll::Ready(Err(closed_error(what, sock.kind))),
                Io::Blocked if expired(self.deadline) => {
                    return Poll::Ready(Err(timeout_error(what, self.timeout)));
                }
                Io::Blocked => {
                    self.io.pending(reg);
                    return Poll::Pending;
                }
            }
        }
    }

    fn park(&self, _py: Python<'_>, waker: Waker) -> bool {
        self.io.park(Dir::Write, waker, self.deadline)
    }

    fn describe(&self) -> String {
        format!("net {}", self.what())
    }
}

// ===== Listener =====

#[derive(Default)]
struct Backoff {
    /// Current delay; zero when accepts succeed.
    delay: Duration,
    until: Option<Instant>,
    /// This out-of-descriptors episode was logged.
    logged: bool,
}

/// A listening TCP socket, from :func:`gmprt.net.listen`.
///
/// ``await ln.accept()`` returns the next :class:`Conn`. When the process
/// runs out of file descriptors, ``accept`` logs once to stderr, waits
/// (5 ms, doubling up to 1 s) and retries, like Go's ``net/http``: the
/// listener survives and serves again once descriptors free up. Closing it
/// wakes Gs blocked in ``accept``; they raise ``OSError``.
#[pyclass(frozen, module = "gmprt.net", name = "Listener")]
pub struct Listener {
    sock: Sock<MioListener>,
    addr: SocketAddr,
    backoff: Mutex<Backoff>,
}

impl Listener {
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
            io: IoPark::default(),
            timer: ParkedTimer::default(),
            failed: Mutex::new(None),
            ln: slf.unbind(),
            deadline: deadline(timeout)?,
            timeout,
        }))
    }

    /// ``(host, port)`` the listener is bound to (the real port when
    /// ``listen`` was given port 0).
    #[getter]
    fn address(&self) -> (String, u16) {
        py_addr(self.addr)
    }

    /// Stop listening (idempotent). Gs blocked in ``accept`` raise
    /// ``OSError``.
    fn close(&self) {
        self.sock.close();
    }

    /// Whether :meth:`close` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.sock.is_closed()
    }

    /// The socket's file descriptor, or -1 once closed.
    fn fileno(&self) -> RawFd {
        if self.sock.is_closed() {
            -1
        } else {
            self.sock.fd
        }
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, _exc: Bound<'_, pyo3::types::PyTuple>) {
        self.sock.close();
    }

    fn __repr__(&self) -> String {
        let state = if self.sock.is_closed() { " closed" } else { "" };
        format!("<gmprt.net.Listener {}{state}>", self.addr)
    }
}

/// `await ln.accept()`.
struct Accept {
    io: IoPark,
    /// The backoff sleep, while descriptors are exhausted.
    timer: ParkedTimer,
    failed: Mutex<Option<PyErr>>,
    ln: Py<Listener>,
    deadline: Option<Instant>,
    timeout: Option<f64>,
}

impl Wait for Accept {
    fn poll(&self, py: Python<'_>) -> Poll {
        self.io.woken();
        self.timer.forget();
        if let Some(e) = lock(&self.failed).take() {
            return Poll::Ready(Err(e));
        }
        let ln = self.ln.get();
        loop {
            if ln.sock.is_closed() {
                return Poll::Ready(Err(closed_error("accept", ln.sock.kind)));
            }
            if ln.backing_off().is_some() {
                if expired(self.deadline) {
                    return Poll::Ready(Err(timeout_error("accept", self.timeout)));
                }
                return Poll::Pending;
            }
            let reg = match ln.sock.reg("accept") {
                Ok(r) => r,
                Err(e) => return Poll::Ready(Err(e)),
            };
            match attempt(&ln.sock, &reg, Dir::Read, |l| l.accept()) {
                Io::Done(Ok((s, _peer))) => {
                    ln.accepted();
                    let conn = Py::new(py, Conn::new(s, Binding::default()));
                    return Poll::Ready(conn.map(|c| c.into_any()));
                }
                Io::Done(Err(e)) if aborted(&e) => continue,
                Io::Done(Err(e)) if exhausted(&e) => ln.start_backoff(&e),
                Io::Done(Err(e)) => return Poll::Ready(Err(os_error(&e, "accept"))),
                Io::Closed => return Poll::Ready(Err(closed_error("accept", ln.sock.kind))),
                Io::Blocked if expired(self.deadline) => {
                    return Poll::Ready(Err(timeout_error("accept", self.timeout)));
                }
                Io::Blocked => {
                    self.io.pending(reg);
                    return Poll::Pending;
                }
            }
        }
    }

    fn park(&self, _py: Python<'_>, waker: Waker) -> bool {
        let Some(until) = self.ln.get().backing_off() else {
            return self.io.park(Dir::Read, waker, self.deadline);
        };
        let when = self.deadline.map_or(until, |d| d.min(until));
        match self.timer.arm(when, waker) {
            Ok(()) => true,
            Err(e) => {
                *lock(&self.failed) = Some(e);
                false
            }
        }
    }

    fn describe(&self) -> String {
        format!("net accept on {}", self.ln.get().addr)
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
///     ValueError: ``backlog < 0``.
#[pyfunction]
#[pyo3(signature = (host, port, *, backlog=1024, reuse_port=false))]
pub(crate) fn listen(
    py: Python<'_>,
    host: &str,
    port: u16,
    backlog: i32,
    reuse_port: bool,
) -> PyResult<Listener> {
    if backlog < 0 {
        return Err(PyValueError::new_err(format!(
            "backlog must be >= 0, got {backlog}"
        )));
    }
    let addr = if host.is_empty() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)
    } else {
        resolve(py, host, port, "listen")?[0]
    };
    let what = format!("listen on {addr}");
    let bind = || -> io::Result<socket2::Socket> {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        if reuse_port {
            s.set_reuse_port(true)?;
        }
        s.bind(&addr.into())?;
        s.listen(backlog)?;
        s.set_nonblocking(true)?;
        Ok(s)
    };
    let s = bind().map_err(|e| os_error(&e, &what))?;
    let std_ln: std::net::TcpListener = s.into();
    let bound = std_ln.local_addr().map_err(|e| os_error(&e, &what))?;
    Ok(Listener {
        sock: Sock::new(
            MioListener::from_std(std_ln),
            Binding::default(),
            "gmprt.net.Listener",
        ),
        addr: bound,
        backoff: Mutex::new(Backoff::default()),
    })
}

// ===== dial =====

struct Dialing {
    addrs: Vec<SocketAddr>,
    next: usize,
    /// The connect in flight and its registration.
    cur: Option<(MioStream, Arc<Reg>)>,
    last: Option<io::Error>,
}

impl Dialing {
    /// Abandons the connect in flight (deregister, then close).
    fn drop_cur(&mut self) {
        if let Some((s, reg)) = self.cur.take() {
            reg.deregister();
            drop(s);
        }
    }
}

impl Drop for Dialing {
    fn drop(&mut self) {
        self.drop_cur();
    }
}

/// `await gmprt.net.dial(host, port)`. Field order: `io` drops (withdraws
/// a park) before `st` closes the socket.
struct Dial {
    io: IoPark,
    st: Mutex<Dialing>,
    target: String,
    deadline: Option<Instant>,
    timeout: Option<f64>,
}

impl Wait for Dial {
    fn poll(&self, py: Python<'_>) -> Poll {
        self.io.woken();
        let what = format!("dial {}", self.target);
        let mut st = lock(&self.st);
        loop {
            if st.cur.is_none() {
                let Some(&addr) = st.addrs.get(st.next) else {
                    let e = st
                        .last
                        .take()
                        .unwrap_or_else(|| io::Error::other("no address"));
                    return Poll::Ready(Err(os_error(&e, &what)));
                };
                st.next += 1;
                let started = MioStream::connect(addr).and_then(|s| {
                    let h = netpoll().map_err(|e| io::Error::other(e.to_string()))?;
                    let reg = h.register(s.as_raw_fd(), true)?;
                    Ok((s, Arc::new(reg)))
                });
                match started {
                    Ok(cur) => st.cur = Some(cur),
                    Err(e) => {
                        st.last = Some(e);
                        continue;
                    }
                }
            }
            let (s, reg) = st.cur.as_ref().expect("a connect in flight");
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
                        let (s, reg) = st.cur.take().expect("a connect in flight");
                        let conn = Conn::new(s, Binding::with(reg));
                        return Poll::Ready(Py::new(py, conn).map(|c| c.into_any()));
                    }
                    Ok(false) => {}
                    Err(e) => {
                        st.drop_cur();
                        st.last = Some(e);
                        continue;
                    }
                }
            }
            if expired(self.deadline) {
                st.drop_cur();
                return Poll::Ready(Err(timeout_error(&what, self.timeout)));
            }
            let reg = st.cur.as_ref().expect("a connect in flight").1.clone();
            self.io.pending(reg);
            return Poll::Pending;
        }
    }

    fn park(&self, _py: Python<'_>, waker: Waker) -> bool {
        self.io.park(Dir::Write, waker, self.deadline)
    }

    fn describe(&self) -> String {
        format!("net dial {}", self.target)
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
#[pyfunction]
#[pyo3(signature = (host, port, *, timeout=None))]
pub(crate) fn dial(py: Python<'_>, host: &str, port: u16, timeout: Option<f64>) -> PyResult<Token> {
    let deadline = deadline(timeout)?;
    let target = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let host = if host.is_empty() { "localhost" } else { host };
    let addrs = resolve(py, host, port, &format!("dial {target}"))?;
    Ok(Token::wait(Dial {
        io: IoPark::default(),
        st: Mutex::new(Dialing {
            addrs,
            next: 0,
            cur: None,
            last: None,
        }),
        target,
        deadline,
        timeout,
    }))
}

// ===== wait_readable / wait_writable =====

/// `await gmprt.wait_readable(fd)` / `wait_writable(fd)`. The fd is not
/// ours: we register a private duplicate for the wait (so we never remove
/// someone else's registration, nor race the owner closing the number) and
/// drop it when the wait ends.
struct FdWait {
    io: IoPark,
    fd: RawFd,
    dir: Dir,
    deadline: Option<Instant>,
    timeout: Option<f64>,
    reg: Mutex<Option<(Arc<Reg>, OwnedFd)>>,
    failed: Mutex<Option<PyErr>>,
}

impl FdWait {
    fn what(&self) -> &'static str {
        match self.dir {
            Dir::Read => "wait_readable",
            Dir::Write => "wait_writable",
        }
    }

    /// `poll(2)` with no wait: whether the fd is ready now.
    fn ready_now(&self) -> io::Result<bool> {
        let events = match self.dir {
            Dir::Read => libc::POLLIN,
            Dir::Write => libc::POLLOUT,
        };
        let mut pfd = libc::pollfd {
            fd: self.fd,
            events,
            revents: 0,
        };
        loop {
            // SAFETY: one valid pollfd, zero timeout.
            let n = unsafe { libc::poll(&mut pfd, 1, 0) };
            if n >= 0 {
                break;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        if pfd.revents & libc::POLLNVAL != 0 {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        Ok(pfd.revents & (events | libc::POLLERR | libc::POLLHUP) != 0)
    }

    /// Deregisters the duplicate, then closes it.
    fn release(&self) {
        if let Some((reg, dup)) = lock(&self.reg).take() {
            reg.deregister();
            drop(dup);
        }
    }
}

impl Drop for FdWait {
    fn drop(&mut self) {
        if let Some((reg, id)) = lock(&self.io.parked).take() {
            reg.cancel(id);
        }
        self.release();
    }
}

impl Wait for FdWait {
    fn poll(&self, py: Python<'_>) -> Poll {
        self.io.woken();
        if let Some(e) = lock(&self.failed).take() {
            self.release();
            return Poll::Ready(Err(e));
        }
        let ev = lock(&self.reg)
            .as_ref()
            .map(|(r, _)| (r.clone(), r.readiness(self.dir)));
        match self.ready_now() {
            Ok(true) => {
                self.release();
                return Poll::Ready(Ok(py.None()));
            }
            Ok(false) => {}
            Err(e) => {
                self.release();
                return Poll::Ready(Err(os_error(&e, self.what())));
            }
        }
        if expired(self.deadline) {
            self.release();
            return Poll::Ready(Err(timeout_error(self.what(), self.timeout)));
        }
        if let Some((reg, ev)) = ev {
            reg.clear_readiness(ev);
        }
        Poll::Pending
    }

    fn park(&self, _py: Python<'_>, waker: Waker) -> bool {
        let mut slot = lock(&self.reg);
        if slot.is_none() {
            let registered = (|| -> PyResult<(Arc<Reg>, OwnedFd)> {
                // SAFETY: F_DUPFD_CLOEXEC on an fd number; a bad fd just
                // fails with EBADF.
                let dup = unsafe { libc::fcntl(self.fd, libc::F_DUPFD_CLOEXEC, 0) };
                if dup < 0 {
                    return Err(os_error(&io::Error::last_os_error(), self.what()));
                }
                // SAFETY: `dup` is a new fd that nobody else owns.
                let dup = unsafe { OwnedFd::from_raw_fd(dup) };
                let reg = netpoll()?
                    .register(dup.as_raw_fd(), false)
                    .map_err(|e| os_error(&e, self.what()))?;
                Ok((Arc::new(reg), dup))
            })();
            match registered {
                Ok(r) => *slot = Some(r),
                Err(e) => {
                    *lock(&self.failed) = Some(e);
                    return false;
                }
            }
        }
        let reg = slot.as_ref().expect("registered above").0.clone();
        drop(slot);
        self.io.pending(reg);
        self.io.park(self.dir, waker, self.deadline)
    }

    fn describe(&self) -> String {
        format!("{} fd {}", self.what(), self.fd)
    }
}

fn fd_wait(obj: &Bound<'_, PyAny>, dir: Dir, timeout: Option<f64>) -> PyResult<Token> {
    // SAFETY: attached; `obj` is live. Returns -1 with an exception set for
    // an object that is neither an int nor has fileno().
    let fd = unsafe { ffi::PyObject_AsFileDescriptor(obj.as_ptr()) };
    if fd < 0 {
        return Err(PyErr::fetch(obj.py()));
    }
    Ok(Token::wait(FdWait {
        io: IoPark::default(),
        fd,
        dir,
        deadline: deadline(timeout)?,
        timeout,
        reg: Mutex::new(None),
        failed: Mutex::new(None),
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
