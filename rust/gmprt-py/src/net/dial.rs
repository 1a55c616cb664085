//! `gmprt.net.dial` and `gmprt.net.dial_unix`.

use std::sync::Mutex;

use gmprt_core::net::{self};
use gmprt_core::WaitReason;
use gmprt_core::Waker;
use pyo3::prelude::*;

use super::{error, finish, os_error, resolve, sched, unix_path_arg, Conn, CONN};
use crate::errors::int_arg;
use crate::lock::lock;
use crate::time::deadline;
use crate::token::{Poll, Token, Wait};

/// `await gmprt.net.dial(host, port)` and `await gmprt.net.dial_unix(path)`.
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
            |conn| Ok(Py::new(py, Conn::new(conn))?.into_any()),
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

    fn reason(&self) -> WaitReason {
        WaitReason::IoWait
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

/// Connect to the Unix domain socket ``path``: ``conn = await
/// gmprt.net.dial_unix(path)``.
///
/// ``path`` is a ``str``, ``bytes`` or ``os.PathLike``; a leading ``"\0"``
/// names Linux's abstract namespace. When the listener's backlog is full
/// the dial waits, retrying, until an accept makes room (a blocking
/// ``connect`` would wait too) or ``timeout`` (seconds) passes.
///
/// Raises:
///     FileNotFoundError: no socket file at ``path``.
///     ConnectionRefusedError: nothing listens there (a stale socket file,
///         or an abstract name nobody bound).
///     PermissionError: the socket file or its directory is not
///         accessible.
///     gmprt.Timeout: not connected within ``timeout`` seconds.
///     OSError: the path is too long, or another connect error.
///     ValueError: a NUL byte inside a path.
///     TypeError: ``path`` is not a str, bytes or os.PathLike.
#[pyfunction]
#[pyo3(signature = (path, *, timeout=None))]
pub(crate) fn dial_unix(path: &Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<Token> {
    let deadline = deadline(timeout)?;
    let path = unix_path_arg(path)?;
    let target = format!("unix {}", net::UnixAddr::new(&path));
    let dial =
        net::Dial::unix(&path, deadline).map_err(|e| os_error(&e, &format!("dial {target}")))?;
    Ok(Token::wait(Dial {
        dial: Mutex::new(dial),
        target,
        timeout,
    }))
}
