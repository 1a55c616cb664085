//! Tokens: the awaitables every gmprt operation returns.
//!
//! `__await__` returns the token itself. Its first `__next__` tries the
//! operation without blocking; if it must wait, it yields *itself* up the
//! await chain to the driver (`body.rs`), which registers the wait after
//! `PyIter_Send` returns (Go's `gopark` discipline: a wake can never find the
//! G still running without the state word knowing). On resume the driver
//! sends `None` and the second `__next__` returns the result: `None` through a
//! bare NULL (no StopIteration object), any other value through StopIteration.

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering::*};

use pyo3::exceptions::{PyRuntimeError, PyStopIteration};
use pyo3::prelude::*;

use crate::handle::GHandle;

/// What a token waits for.
pub(crate) enum Op {
    /// `await gmprt.sleep(0)`: go to the back of the run queue.
    Yield,
    /// `await g`: until G `g` finishes.
    Join(Py<GHandle>),
}

const FRESH: u8 = 0;
const YIELDED: u8 = 1;
const DONE: u8 = 2;

/// A gmprt awaitable. Await it once, inside a G.
#[pyclass(frozen, module = "gmprt._gmprt", name = "Awaitable")]
pub struct Token {
    pub(crate) op: Op,
    state: AtomicU8,
}

thread_local! {
    /// The id of the G this thread is stepping, or 0. Set by the driver
    /// around every step; tokens use it to refuse to run outside a G.
    static CURRENT_G: Cell<u64> = const { Cell::new(0) };
}

/// Marks the calling thread as stepping G `id` until dropped.
pub(crate) struct InG(u64);

impl InG {
    pub(crate) fn enter(id: u64) -> InG {
        InG(CURRENT_G.with(|c| c.replace(id)))
    }
}

impl Drop for InG {
    fn drop(&mut self) {
        CURRENT_G.with(|c| c.set(self.0));
    }
}

/// The G the calling thread is stepping, if any.
pub(crate) fn current_g() -> Option<u64> {
    Some(CURRENT_G.with(|c| c.get())).filter(|&id| id != 0)
}

impl Token {
    pub(crate) fn new(op: Op) -> Token {
        Token {
            op,
            state: AtomicU8::new(FRESH),
        }
    }

    /// The result once the wait is over.
    fn result(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match &self.op {
            Op::Yield => Ok(None),
            Op::Join(h) => h.get().outcome(py).map(Some),
        }
    }

    /// Whether the operation can complete without waiting.
    fn ready(&self, py: Python<'_>) -> bool {
        match &self.op {
            Op::Yield => false,
            Op::Join(h) => h.get().is_done(py),
        }
    }
}

/// Turns a result into what `__next__` returns: `None` as a bare NULL, any
/// other value through StopIteration.
fn finish(py: Python<'_>, r: PyResult<Option<Py<PyAny>>>) -> PyResult<Option<Py<PyAny>>> {
    match r? {
        Some(v) if !v.is_none(py) => Err(PyStopIteration::new_err((v,))),
        _ => Ok(None),
    }
}

#[pymethods]
impl Token {
    fn __await__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __next__(slf: &Bound<'_, Self>) -> PyResult<Option<Py<PyAny>>> {
        let py = slf.py();
        let tok = slf.get();
        // Each token is awaited once, by the one G that made it; the atomics
        // only keep a shared token from being resumed twice.
        match tok.state.load(Acquire) {
            FRESH => {
                if current_g().is_none() {
                    return Err(PyRuntimeError::new_err(
                        "a gmprt awaitable was awaited outside a gmprt G; gmprt operations \
                         work only in code run by gmprt.run() or gmprt.go(), not under asyncio \
                         or another event loop",
                    ));
                }
                if tok.ready(py) {
                    tok.state.store(DONE, Release);
                    return finish(py, tok.result(py));
                }
                tok.state.store(YIELDED, Release);
                Ok(Some(slf.clone().into_any().unbind()))
            }
            YIELDED => {
                tok.state.store(DONE, Release);
                finish(py, tok.result(py))
            }
            _ => Err(PyRuntimeError::new_err(
                "this gmprt awaitable was already awaited",
            )),
        }
    }
}
