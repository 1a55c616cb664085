//! `conn.readline()`, `readuntil(sep)`, `readexactly(n)`: gmprt-core's
//! [`ReadBuf`] (its module docs: the bounds, nothing lost) filled through
//! the connection's `poll_recv`, and its results as `bytes` or the
//! `gmprt._streams` errors.
//!
//! A connection holds a `ReadBuf` only while bytes are buffered: a drained
//! one gives its storage back to the calling M's pool, so an idle
//! connection that reads lines costs no more than one that calls `recv`.

use std::cell::Cell;
use std::io;
use std::sync::Mutex;
use std::task::Poll as IoPoll;

use gmprt_core::net::{IoWait, ReadBuf, Until, CHUNK};
use gmprt_core::WaitReason;
use gmprt_core::Waker;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyModule};

use super::conn::Conn;
use super::{sched, sock_error, CONN};
use crate::lock::lock;
use crate::token::{Poll, Wait};

thread_local! {
    /// Each M's spare read-buffer storage (initialised bytes, no Python).
    static POOL: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Storage bigger than this (a long line grew it) is freed, not pooled.
const POOL_KEEP: usize = CHUNK;

/// Runs `f` on `rb` with pooled storage lent for the call, and takes the
/// storage back if `f` left nothing buffered.
pub(super) fn with_pool<T>(rb: &mut ReadBuf, f: impl FnOnce(&mut ReadBuf) -> T) -> T {
    if !rb.has_storage() {
        rb.give_storage(POOL.with(|c| c.take()));
    }
    let out = f(rb);
    if let Some(v) = rb.take_storage() {
        if v.len() <= POOL_KEEP {
            POOL.with(|c| c.set(v));
        }
    }
    out
}

/// The first `n` buffered bytes as `bytes`, consumed.
fn take(py: Python<'_>, rb: &mut ReadBuf, n: usize) -> Py<PyAny> {
    let out = PyBytes::new(py, &rb.buffered()[..n]).into_any().unbind();
    rb.consume(n);
    out
}

/// `gmprt._streams`, imported on the first error.
fn streams(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static M: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    M.get_or_try_init(py, || Ok(PyModule::import(py, "gmprt._streams")?.unbind()))
        .map(|m| m.bind(py))
}

fn incomplete(py: Python<'_>, partial: Py<PyAny>, expected: Option<usize>) -> PyErr {
    match streams(py).and_then(|m| m.getattr("IncompleteReadError")?.call1((partial, expected))) {
        Ok(e) => PyErr::from_value(e),
        Err(e) => e,
    }
}

fn overrun(py: Python<'_>, found: bool, consumed: usize, limit: usize) -> PyErr {
    let msg = if found {
        format!("separator found {consumed} bytes in, past the limit of {limit}")
    } else {
        format!("no separator in {consumed} bytes, more than the limit of {limit}")
    };
    match streams(py).and_then(|m| m.getattr("LimitOverrunError")?.call1((msg, consumed))) {
        Ok(e) => PyErr::from_value(e),
        Err(e) => e,
    }
}

/// What a read waits for.
pub(super) enum Want {
    /// `readuntil(sep)`; `line`: `readline`, which returns the partial line
    /// at EOF instead of raising.
    Until {
        sep: Box<[u8]>,
        limit: usize,
        line: bool,
    },
    /// `readexactly(n)`.
    Exact(usize),
}

/// `await conn.readline()` / `readuntil(sep)` / `readexactly(n)`.
pub(super) struct Read {
    pub(super) wait: Mutex<IoWait>,
    pub(super) conn: Py<Conn>,
    pub(super) want: Want,
    pub(super) timeout: Option<f64>,
}

impl Read {
    fn what(&self) -> &'static str {
        match self.want {
            Want::Until { line: true, .. } => "readline",
            Want::Until { .. } => "readuntil",
            Want::Exact(_) => "readexactly",
        }
    }
}

impl Wait for Read {
    fn poll(&self, py: Python<'_>) -> Poll {
        let sched = match sched() {
            Ok(s) => s,
            Err(e) => return Poll::Ready(Err(e)),
        };
        let c = self.conn.get();
        let mut wait = lock(&self.wait);
        let mut rb = lock(&c.rbuf);
        let fill = |b: &mut [u8]| c.conn.poll_recv(&sched, b, &mut wait);
        let err = |e: &io::Error| sock_error(e, self.what(), CONN, self.timeout);
        with_pool(&mut rb, |rb| match &self.want {
            Want::Until { sep, limit, line } => match rb.poll_until(sep, *limit, fill) {
                IoPoll::Ready(Ok(Until::Found(n))) => Poll::Ready(Ok(take(py, rb, n))),
                IoPoll::Ready(Ok(Until::Eof)) => {
                    let partial = take(py, rb, rb.buffered().len());
                    Poll::Ready(if *line {
                        Ok(partial)
                    } else {
                        Err(incomplete(py, partial, None))
                    })
                }
                IoPoll::Ready(Ok(Until::Overrun(n))) => {
                    Poll::Ready(Err(overrun(py, n < rb.buffered().len(), n, *limit)))
                }
                IoPoll::Ready(Err(e)) => Poll::Ready(Err(err(&e))),
                IoPoll::Pending => Poll::Pending,
            },
            Want::Exact(n) => match rb.poll_exact(*n, fill) {
                IoPoll::Ready(Ok(true)) => Poll::Ready(Ok(take(py, rb, *n))),
                IoPoll::Ready(Ok(false)) => {
                    let partial = take(py, rb, rb.buffered().len());
                    Poll::Ready(Err(incomplete(py, partial, Some(*n))))
                }
                IoPoll::Ready(Err(e)) => Poll::Ready(Err(err(&e))),
                IoPoll::Pending => Poll::Pending,
            },
        })
    }

    fn park(&self, _py: Python<'_>, waker: Waker) -> bool {
        lock(&self.wait).park(waker)
    }

    fn describe(&self) -> String {
        format!("net {}", self.what())
    }

    fn reason(&self) -> WaitReason {
        WaitReason::IoWait
    }

    /// What arrived stays buffered for the next read.
    fn cancel(&self, _py: Python<'_>) -> bool {
        lock(&self.wait).cancel();
        true
    }
}
