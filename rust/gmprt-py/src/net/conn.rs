//! `gmprt.net.Conn`: receive into the per-thread buffer, send from the
//! caller's buffer.

use std::io;
use std::os::fd::RawFd;
use std::sync::Mutex;

use gmprt_core::net::{self, IoWait, ReadBuf};
use gmprt_core::WaitReason;
use gmprt_core::Waker;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use super::bufread::{with_pool, Read, Want};
use super::{
    adopt_error, adopt_fd, finish, put_buf, py_net_addr, sched, sock_error, take_buf, Data, CONN,
};
use crate::errors::{int_arg, int_or};
use crate::lock::lock;
use crate::time::deadline;
use crate::token::{Poll, Token, Wait};

/// A TCP or Unix stream connection, from :meth:`Listener.accept`,
/// :func:`gmprt.net.dial`, :func:`gmprt.net.dial_unix` or
/// :meth:`Conn.from_socket`.
///
/// Every blocking method returns an awaitable for a G::
///
///     while data := await conn.recv(65536):
///         await conn.sendall(data)
///
/// ``TCP_NODELAY`` is on for TCP. Each blocking method takes ``timeout=`` (seconds,
/// from the call; ``None`` waits forever) and raises :class:`gmprt.Timeout`
/// when it passes; the connection stays usable. A peer that reset the
/// connection raises ``ConnectionResetError`` (or ``BrokenPipeError`` on a
/// send); any method on a closed ``Conn`` raises ``OSError`` (EBADF).
/// ``close()`` wakes Gs blocked on the connection; they raise that
/// ``OSError``. Use as a context manager to close it on exit.
#[pyclass(frozen, module = "gmprt.net", name = "Conn")]
pub struct Conn {
    pub(super) conn: net::Conn,
    /// Bytes a buffered read (`readline`...) received past what it
    /// returned; `recv` returns them first (`bufread`).
    pub(super) rbuf: Mutex<ReadBuf>,
}

impl Conn {
    pub(super) fn new(conn: net::Conn) -> Conn {
        Conn {
            conn,
            rbuf: Mutex::default(),
        }
    }

    fn addr(&self, peer: bool) -> PyResult<net::Addr> {
        let (what, r) = if peer {
            ("remote_address", self.conn.peer_addr())
        } else {
            ("local_address", self.conn.local_addr())
        };
        r.map_err(|e| sock_error(&e, what, CONN, None))
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

    /// Receive one line: ``line = await conn.readline()``, the bytes up to
    /// and including ``b"\n"``. At EOF it returns the partial last line,
    /// then ``b""``.
    ///
    /// Raises:
    ///     gmprt.net.LimitOverrunError: no ``b"\n"`` within ``limit``
    ///         bytes; they stay buffered (``recv`` returns them).
    ///     gmprt.Timeout: no full line within ``timeout`` seconds (what
    ///         arrived stays buffered).
    ///     ConnectionResetError, OSError: as for :meth:`recv`.
    #[pyo3(signature = (*, limit=None, timeout=None), text_signature = "(self, /, *, limit=65536, timeout=None)")]
    fn readline(
        slf: Bound<'_, Self>,
        limit: Option<&Bound<'_, PyAny>>,
        timeout: Option<f64>,
    ) -> PyResult<Token> {
        let limit = int_or(limit, 65536, "limit", 1, i64::MAX)? as usize;
        read(
            slf,
            Want::Until {
                sep: Box::new(*b"\n"),
                limit,
                line: true,
            },
            timeout,
        )
    }

    /// Receive up to and including ``separator``: ``await
    /// conn.readuntil(b"\r\n\r\n")``. The buffer never holds more than
    /// ``limit`` bytes before a separator, whatever the peer sends.
    ///
    /// Raises:
    ///     gmprt.net.IncompleteReadError: EOF first (``.partial`` holds the
    ///         bytes that came; they are consumed).
    ///     gmprt.net.LimitOverrunError: no separator within ``limit``
    ///         bytes; they stay buffered.
    ///     gmprt.Timeout: not found within ``timeout`` seconds (what
    ///         arrived stays buffered).
    ///     ValueError: an empty separator, or ``limit < 1``.
    #[pyo3(signature = (separator=None, *, limit=None, timeout=None), text_signature = "(self, /, separator=b'\\n', *, limit=65536, timeout=None)")]
    fn readuntil(
        slf: Bound<'_, Self>,
        separator: Option<&Bound<'_, PyAny>>,
        limit: Option<&Bound<'_, PyAny>>,
        timeout: Option<f64>,
    ) -> PyResult<Token> {
        let limit = int_or(limit, 65536, "limit", 1, i64::MAX)? as usize;
        let sep: Box<[u8]> = match separator {
            Some(d) => Data::new(d)?.bytes(slf.py()).into(),
            None => Box::new(*b"\n"),
        };
        if sep.is_empty() {
            return Err(PyValueError::new_err("the separator must not be empty"));
        }
        read(
            slf,
            Want::Until {
                sep,
                limit,
                line: false,
            },
            timeout,
        )
    }

    /// Receive exactly ``n`` bytes: ``await conn.readexactly(n)``. Memory
    /// grows only as bytes arrive, so a length read off the wire can be
    /// passed as is.
    ///
    /// Raises:
    ///     gmprt.net.IncompleteReadError: EOF first (``.partial`` holds the
    ///         bytes that came, ``.expected`` is ``n``).
    ///     gmprt.Timeout: not all there within ``timeout`` seconds (what
    ///         arrived stays buffered).
    ///     ValueError: ``n < 0``.
    #[pyo3(signature = (n, *, timeout=None))]
    fn readexactly(
        slf: Bound<'_, Self>,
        n: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<Token> {
        let n = int_arg(n, "n", 0, i64::MAX)? as usize;
        read(slf, Want::Exact(n), timeout)
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

    /// Shut down the sending side (a half-close, Go's ``CloseWrite``):
    /// the peer reads EOF, and this side can still receive.
    ///
    /// Raises:
    ///     OSError: the connection is closed or not connected.
    fn close_write(&self) -> PyResult<()> {
        self.conn
            .close_write()
            .map_err(|e| sock_error(&e, "close_write", CONN, None))
    }

    /// Upgrade to TLS (STARTTLS): ``tls = await conn.start_tls(ctx)``, with
    /// ``ctx`` an ``ssl.SSLContext``. Runs the handshake (bounded by
    /// ``timeout``) and returns a :class:`gmprt.net.TLSConn`; from then on
    /// this ``Conn`` belongs to it (and is closed if the handshake fails).
    /// ``server_side=True`` for the server's end; a client checks the
    /// certificate against ``server_hostname``.
    ///
    /// Raises:
    ///     ssl.SSLCertVerificationError: the peer's certificate did not verify.
    ///     ssl.SSLError: a TLS alert or a protocol error.
    ///     gmprt.Timeout: the handshake was not done within ``timeout`` seconds.
    #[pyo3(signature = (ctx, *, server_side=false, server_hostname=None, timeout=None))]
    fn start_tls<'py>(
        slf: Bound<'py, Self>,
        ctx: Bound<'py, PyAny>,
        server_side: bool,
        server_hostname: Option<Bound<'py, PyAny>>,
        timeout: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let kwargs = PyDict::new(py);
        kwargs.set_item("server_side", server_side)?;
        kwargs.set_item("server_hostname", server_hostname)?;
        kwargs.set_item("timeout", timeout)?;
        py.import("gmprt._tls")?
            .getattr("start_tls")?
            .call((slf, ctx), Some(&kwargs))
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

    /// This end's address, as ``socket.getsockname()`` gives it: ``(host,
    /// port)`` for TCP; for a Unix socket the path (``str``), ``""`` when
    /// unnamed (the dialing end, usually), or ``bytes`` starting with
    /// ``b"\0"`` for an abstract name.
    #[getter]
    fn local_address(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        py_net_addr(py, &self.addr(false)?)
    }

    /// The peer's address, as ``socket.getpeername()`` gives it (see
    /// :attr:`local_address`).
    #[getter]
    fn remote_address(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        py_net_addr(py, &self.addr(true)?)
    }

    /// Adopt a connected TCP or Unix stream socket made elsewhere (Go's
    /// ``net.FileConn``): ``conn = gmprt.net.Conn.from_socket(sock)``.
    ///
    /// ``sock`` is a ``socket.socket``, anything with ``fileno()``, or a
    /// file descriptor. Its descriptor is **duplicated**: the new ``Conn``
    /// owns the duplicate, so closing it leaves ``sock`` open (close
    /// ``sock`` yourself when done with it). The duplicate shares the open
    /// file, and so ``O_NONBLOCK``, which this sets: a ``sock`` used from
    /// Python afterwards should have a timeout (``sock.settimeout(...)``),
    /// or a blocking call on it raises ``BlockingIOError``. Needs no running
    /// runtime.
    ///
    /// Raises:
    ///     ValueError: not a connected TCP or Unix stream socket (a UDP or
    ///         listening socket, say); the message names what it got.
    ///     OSError: not an open file descriptor.
    #[staticmethod]
    fn from_socket(sock: Bound<'_, PyAny>) -> PyResult<Conn> {
        let fd = adopt_fd(&sock)?;
        let conn = net::Conn::from_fd(fd).map_err(|e| adopt_error(&e, "Conn.from_socket"))?;
        Ok(Conn::new(conn))
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, _exc: Bound<'_, pyo3::types::PyTuple>) {
        self.conn.close();
    }

    fn __repr__(&self) -> String {
        let kind = if self.conn.is_unix() { "unix " } else { "" };
        match (self.addr(false), self.addr(true)) {
            (Ok(l), Ok(r)) => format!("<gmprt.net.Conn {kind}{l} -> {r}>"),
            _ if self.conn.is_closed() => "<gmprt.net.Conn closed>".into(),
            _ => "<gmprt.net.Conn>".into(),
        }
    }
}

fn read(conn: Bound<'_, Conn>, want: Want, timeout: Option<f64>) -> PyResult<Token> {
    Ok(Token::wait(Read {
        wait: Mutex::new(IoWait::new(deadline(timeout)?)),
        conn: conn.unbind(),
        want,
        timeout,
    }))
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
        let c = self.conn.get();
        {
            let mut rb = lock(&c.rbuf);
            if !rb.is_empty() {
                let n = rb.buffered().len().min(self.max);
                let out = PyBytes::new(py, &rb.buffered()[..n]).into_any().unbind();
                rb.consume(n);
                with_pool(&mut rb, |_| ());
                return Poll::Ready(Ok(out));
            }
        }
        let mut buf = take_buf();
        let conn = &c.conn;
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
        match self.conn.get().conn.peer_addr() {
            Ok(a) => format!("net recv from {a}"),
            Err(_) => "net recv".into(),
        }
    }

    fn reason(&self) -> WaitReason {
        WaitReason::IoWait
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
        match self.conn.get().conn.peer_addr() {
            Ok(a) => format!("net {} to {a}", self.what()),
            Err(_) => format!("net {}", self.what()),
        }
    }

    fn reason(&self) -> WaitReason {
        WaitReason::IoWait
    }
}
