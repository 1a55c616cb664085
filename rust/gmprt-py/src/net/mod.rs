//! `gmprt.net` and `gmprt.wait_readable` / `wait_writable`: the Python face
//! of gmprt-core's `net`, which owns the sockets (TCP and Unix), the
//! readiness-retry loop, accept backoff, dialing, adopting sockets and the
//! fd waits (its module docs: the I/O path, ownership, deadlines).
//!
//! These files only convert. Each blocking method returns a token
//! (`token.rs`) whose `Wait` calls the core operation's `poll_*` and, after
//! a `Pending`, parks its `IoWait` with the G's waker. What must touch
//! Python stays here: the per-thread receive buffer that becomes one
//! `bytes`, sending straight from the caller's buffer (the buffer
//! protocol), `fileno()`, releasing the GIL around a blocking name lookup,
//! addresses as Python's `socket` spells them (`py_net_addr`), paths
//! through `os.fsencode`, the dup that `from_socket` adopts (`adopt_fd`),
//! and turning core errors into Python exceptions (`error`, below).
//!
//! Files: this one (the errors, the shared helpers and the receive
//! buffers), `conn` (`Conn`), `bufread` (its `readline` / `readuntil` /
//! `readexactly`), `listener` (`Listener`, `listen`, `listen_unix`),
//! `dial` (`dial`, `dial_unix`), `udp` (`PacketConn`, `listen_udp`,
//! `dial_udp`), `fdwait` (`wait_readable` / `wait_writable`).
//!
//! # Locks
//!
//! A token's `Mutex` around its core state is touched only by the G that
//! awaits it (it makes the state `Sync`). It is held across the core call,
//! which never calls back into Python, and never while Python runs.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::task::Poll as IoPoll;

use gmprt_core::net::{self, Addr, NetpollError, UnixAddr};
use gmprt_core::Sched;
use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use crate::errors::Timeout;
use crate::rt;
use crate::token::Poll;

/// Receive buffers up to this capacity are kept per thread between calls.
const RECV_BUF_KEEP: usize = gmprt_core::net::RECV_MAX;

const CONN: &str = "gmprt.net.Conn";
const LISTENER: &str = "gmprt.net.Listener";

mod bufread;
mod conn;
mod dial;
mod fdwait;
mod listener;
mod udp;

use conn::Conn;
use listener::Listener;

/// Adds `gmprt.net`'s functions and classes (and the fd waits) to `m`.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(listener::listen, m)?)?;
    m.add_function(wrap_pyfunction!(listener::listen_unix, m)?)?;
    m.add_function(wrap_pyfunction!(dial::dial, m)?)?;
    m.add_function(wrap_pyfunction!(dial::dial_unix, m)?)?;
    m.add_function(wrap_pyfunction!(fdwait::wait_readable, m)?)?;
    m.add_function(wrap_pyfunction!(fdwait::wait_writable, m)?)?;
    m.add_class::<Listener>()?;
    m.add_class::<Conn>()?;
    m.add_function(wrap_pyfunction!(udp::listen_udp, m)?)?;
    m.add_function(wrap_pyfunction!(udp::dial_udp, m)?)?;
    m.add_class::<udp::PacketConn>()?;
    Ok(())
}

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

/// `a` as Python's `socket.getsockname()` gives it: `(host, port)` for
/// TCP; for a Unix socket the path as a `str` (decoded as `os.fsdecode`
/// does, so undecodable bytes round-trip), `""` for an unnamed end, and
/// `bytes` with the leading NUL for an abstract name.
fn py_net_addr(py: Python<'_>, a: &Addr) -> PyResult<Py<PyAny>> {
    Ok(match a {
        Addr::Inet(a) => py_addr(*a).into_pyobject(py)?.into_any().unbind(),
        Addr::Unix(UnixAddr::Unnamed) => PyString::new(py, "").into_any().unbind(),
        // `&OsStr`, not `&Path`: PyO3 makes a `pathlib.Path` of a path.
        Addr::Unix(UnixAddr::Path(p)) => p.as_os_str().into_pyobject(py)?.into_any().unbind(),
        Addr::Unix(u @ UnixAddr::Abstract(_)) => {
            PyBytes::new(py, &u.to_bytes()).into_any().unbind()
        }
    })
}

/// A Unix socket path argument (`str`, `bytes` or `os.PathLike`) as the
/// kernel's bytes, through `os.fsencode` as Python's `socket` does (a
/// leading NUL names the abstract namespace). `TypeError` for anything
/// else, from `os.fsencode`; `ValueError` for a NUL inside a filesystem
/// path, as `os` functions raise (the kernel would cut the path there).
fn unix_path_arg(path: &Bound<'_, PyAny>) -> PyResult<PathBuf> {
    let py = path.py();
    let raw = py.import("os")?.getattr("fsencode")?.call1((path,))?;
    let bytes = raw.cast::<PyBytes>()?.as_bytes();
    if bytes.first().is_some_and(|&b| b != 0) && bytes.contains(&0) {
        return Err(PyValueError::new_err(
            "embedded null byte in a Unix socket path",
        ));
    }
    Ok(net::unix_path(bytes).to_path_buf())
}

/// What `from_socket` adopts: a duplicate of the fd of `obj` (an `int`, or
/// anything with `fileno()`, such as a `socket.socket`), close-on-exec,
/// owned by the new object, so that closing it leaves `obj` open (Go's
/// `net.FileConn`). `OSError` (EBADF) for a descriptor that is not open.
fn adopt_fd(obj: &Bound<'_, PyAny>) -> PyResult<OwnedFd> {
    // SAFETY: attached; `obj` is live. Returns -1 with an exception set for
    // an object that is neither an int nor has fileno().
    let fd = unsafe { ffi::PyObject_AsFileDescriptor(obj.as_ptr()) };
    if fd < 0 {
        return Err(PyErr::fetch(obj.py()));
    }
    // SAFETY: F_DUPFD_CLOEXEC reads no memory; it makes a new descriptor
    // (the lowest free one, >= 0) for the same open file, or fails.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(os_error(&io::Error::last_os_error(), "from_socket"));
    }
    // SAFETY: `dup` is a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(dup) })
}

/// A `from_socket` refusal: the core's InvalidInput (the wrong kind of
/// socket, naming what it got) as `ValueError`, a syscall's failure as
/// `OSError`.
fn adopt_error(e: &io::Error, what: &str) -> PyErr {
    if e.kind() == io::ErrorKind::InvalidInput && e.raw_os_error().is_none() {
        PyValueError::new_err(format!("{what}: {e}"))
    } else {
        os_error(e, what)
    }
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
