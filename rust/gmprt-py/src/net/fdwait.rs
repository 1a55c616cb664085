//! `gmprt.wait_readable` / `wait_writable`: park a G on any fd.

use std::os::fd::RawFd;
use std::sync::Mutex;

use gmprt_core::net::{self};
use gmprt_core::netpoll::Dir;
use gmprt_core::WaitReason;
use gmprt_core::Waker;
use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::prelude::*;

use super::{error, finish};
use crate::lock::lock;
use crate::rt;
use crate::time::deadline;
use crate::token::{Poll, Token, Wait};

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

    fn reason(&self) -> WaitReason {
        WaitReason::IoWait
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
