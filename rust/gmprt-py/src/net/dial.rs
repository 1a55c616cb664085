//! `gmprt.net.dial`.

use std::sync::Mutex;

use gmprt_core::net::{self};
use gmprt_core::Waker;
use pyo3::prelude::*;

use super::{error, finish, resolve, sched, Conn, CONN};
use crate::errors::int_arg;
use crate::lock::lock;
use crate::time::deadline;
use crate::token::{Poll, Token, Wait};

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
