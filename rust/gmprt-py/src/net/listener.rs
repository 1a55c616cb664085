//! `gmprt.net.Listener` and `listen`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::RawFd;
use std::sync::Mutex;

use gmprt_core::net::{self, IoWait};
use gmprt_core::WaitReason;
use gmprt_core::Waker;
use pyo3::prelude::*;

use super::{
    adopt_error, adopt_fd, finish, os_error, py_net_addr, resolve, sched, sock_error,
    unix_path_arg, Conn, LISTENER,
};
use crate::errors::{int_arg, int_or};
use crate::lock::lock;
use crate::time::deadline;
use crate::token::{Poll, Token, Wait};

/// A listening TCP or Unix stream socket, from :func:`gmprt.net.listen`,
/// :func:`gmprt.net.listen_unix` or :meth:`Listener.from_socket`.
///
/// ``await ln.accept()`` returns the next :class:`Conn`. When the process
/// runs out of file descriptors, ``accept`` logs once to stderr, waits
/// (5 ms, doubling up to 1 s) and retries, like Go's ``net/http``: the
/// listener survives and serves again once descriptors free up. Closing it
/// wakes Gs blocked in ``accept``; they raise ``OSError``. A listener that
/// ``listen_unix`` bound to a path removes its socket file when closed (or
/// collected), if the file there is still the one it made.
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

    /// The address the listener is bound to, as ``socket.getsockname()``
    /// gives it: ``(host, port)`` for TCP (the real port when ``listen`` was
    /// given port 0); for a Unix socket the path (``str``), or ``bytes``
    /// starting with ``b"\0"`` for an abstract name.
    #[getter]
    fn address(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        py_net_addr(py, self.ln.local_addr())
    }

    /// Adopt a listening TCP or Unix stream socket made elsewhere (Go's
    /// ``net.FileListener``): one made with ``socket.socket()``, ``bind``
    /// and ``listen``, or passed by systemd (``Listener.from_socket(3)``).
    ///
    /// ``sock`` is a ``socket.socket``, anything with ``fileno()``, or a
    /// file descriptor. Its descriptor is **duplicated**: the new
    /// ``Listener`` owns the duplicate, so closing it leaves ``sock`` open,
    /// and its socket file, if any, in place. The duplicate shares the open
    /// file, and so ``O_NONBLOCK``, which this sets: a ``sock`` used from
    /// Python afterwards should have a timeout, or a blocking ``accept``
    /// on it raises ``BlockingIOError``. Needs no running runtime.
    ///
    /// Raises:
    ///     ValueError: not a listening TCP or Unix stream socket; the
    ///         message names what it got.
    ///     OSError: not an open file descriptor.
    #[staticmethod]
    fn from_socket(sock: Bound<'_, PyAny>) -> PyResult<Listener> {
        let fd = adopt_fd(&sock)?;
        let ln = net::Listener::from_fd(fd).map_err(|e| adopt_error(&e, "Listener.from_socket"))?;
        Ok(Listener { ln })
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
        let kind = if self.ln.is_unix() { "unix " } else { "" };
        format!("<gmprt.net.Listener {kind}{}{state}>", self.ln.local_addr())
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
            |(conn, _peer)| Ok(Py::new(py, Conn::new(conn))?.into_any()),
            |e| sock_error(e, "accept", LISTENER, self.timeout),
        )
    }

    fn park(&self, _py: Python<'_>, waker: Waker) -> bool {
        lock(&self.wait).park(waker)
    }

    fn describe(&self) -> String {
        format!("net accept on {}", self.ln.get().ln.local_addr())
    }

    fn reason(&self) -> WaitReason {
        WaitReason::IoWait
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

/// Listen for connections on the Unix domain socket ``path``.
///
/// ``path`` is a ``str``, ``bytes`` or ``os.PathLike``; the bind creates a
/// socket file there. A leading ``"\0"`` (or ``b"\0"``) names Linux's
/// abstract namespace instead: no file, and the name goes away with the
/// socket. ``""`` binds an unused abstract name the kernel picks: read it
/// from :attr:`Listener.address`. Closing the listener removes its socket
/// file, unless something else has replaced it meanwhile. A stale file
/// left by a process that died is not removed for you: the bind fails,
/// as it does for Python's ``socket``. Needs no running runtime.
///
/// Raises:
///     OSError: the path exists (errno ``EADDRINUSE``), its directory is
///         missing (``FileNotFoundError``) or not writable
///         (``PermissionError``), or the path is too long.
///     ValueError: ``backlog < 0``, or a NUL byte inside a path.
///     TypeError: ``path`` is not a str, bytes or os.PathLike.
#[pyfunction]
#[pyo3(signature = (path, *, backlog=None), text_signature = "(path, *, backlog=1024)")]
pub(crate) fn listen_unix(
    path: &Bound<'_, PyAny>,
    backlog: Option<&Bound<'_, PyAny>>,
) -> PyResult<Listener> {
    let backlog = int_or(backlog, 1024, "backlog", 0, i64::from(i32::MAX))? as i32;
    let path = unix_path_arg(path)?;
    let shown = net::UnixAddr::new(&path);
    let ln = net::Listener::bind_unix(&path, backlog)
        .map_err(|e| os_error(&e, &format!("listen on {shown}")))?;
    Ok(Listener { ln })
}
