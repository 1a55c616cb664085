//! `gmprt.G`: the handle `go()` returns, holding the G's outcome.
//!
//! The outcome is written once, by the M that finishes the G. Waiters are
//! either Gs (a [`Waker`] each, from `await g`) or threads blocked in
//! `g.join()` (the condvar). The mutex is never held across a call into
//! Python or a drop of a Python object: either could switch the GIL to a
//! thread that then blocks on the same mutex while attached.

use std::sync::{Condvar, Mutex};
use std::time::Instant;

use gmprt_core::Waker;
use pyo3::exceptions::{PyRuntimeError, PyTimeoutError};
use pyo3::prelude::*;

use crate::lock::{lock, unpoison};
use crate::rt;
use crate::time::deadline;
use crate::token::{current_g, Poll, Token, Wait};

struct State {
    outcome: Option<Outcome>,
    waiters: Vec<Waker>,
    /// Someone saw the outcome (or it needs no report): an error is not
    /// reported as unobserved.
    observed: bool,
}

enum Outcome {
    Ok(Py<PyAny>),
    /// Boxed: a `PyErr` is ~64 bytes and every live G has a handle.
    Err(Box<PyErr>),
    /// The runtime stopped first; the G was closed.
    Cancelled,
}

/// A running or finished G, as returned by :func:`gmprt.go`.
///
/// ``await g`` waits for it and returns its result or raises its exception;
/// ``g.join(timeout=None)`` does the same from synchronous code (a sync G or
/// any thread). An exception that nobody observes this way is printed to
/// stderr with its traceback when the handle is collected.
#[pyclass(frozen, module = "gmprt", name = "G")]
pub struct GHandle {
    pub(crate) id: u64,
    /// What the G runs; its name is computed only when printed.
    func: Py<PyAny>,
    state: Mutex<State>,
    finished: Condvar,
}

impl GHandle {
    pub(crate) fn new(id: u64, func: Py<PyAny>) -> GHandle {
        GHandle {
            id,
            func,
            state: Mutex::new(State {
                outcome: None,
                waiters: Vec::new(),
                observed: false,
            }),
            finished: Condvar::new(),
        }
    }

    /// The G's function name, for reports.
    pub(crate) fn name(&self, py: Python<'_>) -> String {
        rt::describe(self.func.bind(py))
    }

    pub(crate) fn is_done(&self, _py: Python<'_>) -> bool {
        lock(&self.state).outcome.is_some()
    }

    /// Registers a G waiting in `await g`. False if the G already finished
    /// (the waiter then resumes at once).
    pub(crate) fn add_waiter(&self, w: Waker) -> bool {
        let mut st = lock(&self.state);
        if st.outcome.is_some() {
            return false;
        }
        st.waiters.push(w);
        true
    }

    /// The outcome, marking it observed. The G must have finished.
    pub(crate) fn outcome(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let mut st = lock(&self.state);
        st.observed = true;
        match st.outcome.as_ref().expect("outcome of a running G") {
            Outcome::Ok(v) => Ok(v.clone_ref(py)),
            Outcome::Err(e) => Err(e.clone_ref(py)),
            Outcome::Cancelled => Err(PyRuntimeError::new_err(format!(
                "G {} was cancelled: the runtime stopped before it finished",
                self.id
            ))),
        }
    }

    /// The finishing M: record the outcome, wake every waiter. An error that
    /// nobody can observe (the caller dropped the handle) is reported now.
    /// `surfaced`: the error already reaches the user another way (a
    /// KeyboardInterrupt that stops `run()`), so it is never reported.
    pub(crate) fn complete(slf: &Bound<'_, Self>, result: PyResult<Py<PyAny>>, surfaced: bool) {
        let py = slf.py();
        let me = slf.get();
        // The body holds one reference; a second one means a user still can
        // await or join this G.
        // SAFETY: reading the refcount of a live object while attached.
        let orphan = unsafe { pyo3::ffi::Py_REFCNT(slf.as_ptr()) } <= 1;
        let report = match &result {
            Err(e) if orphan && !surfaced => Some(e.clone_ref(py)),
            _ => None,
        };
        let outcome = match result {
            Ok(v) => Outcome::Ok(v),
            Err(e) => Outcome::Err(Box::new(e)),
        };
        me.finish_with(outcome, surfaced || report.is_some());
        if let Some(e) = report {
            rt::report_unobserved(py, me.id, &me.name(py), e);
        }
    }

    /// Shutdown closed this G before it finished.
    pub(crate) fn cancel(&self) {
        self.finish_with(Outcome::Cancelled, true);
    }

    fn finish_with(&self, outcome: Outcome, observed: bool) {
        let mut st = lock(&self.state);
        if st.outcome.is_some() {
            return;
        }
        st.outcome = Some(outcome);
        st.observed |= observed;
        let waiters = std::mem::take(&mut st.waiters);
        drop(st);
        self.finished.notify_all();
        for w in waiters {
            w.wake();
        }
    }
}

#[pymethods]
impl GHandle {
    /// The G's id, unique within one `gmprt.run()`.
    #[getter]
    fn id(&self) -> u64 {
        self.id
    }

    /// Whether the G has finished (returned, raised, or was cancelled).
    fn done(&self, py: Python<'_>) -> bool {
        self.is_done(py)
    }

    fn __await__(slf: Bound<'_, Self>) -> Token {
        Token::wait(Join(slf.unbind()))
    }

    /// Blocks until the G finishes; returns its result or raises its
    /// exception. For synchronous code: a sync G or any thread (inside a
    /// coroutine G use ``await g``). While it waits, the calling M gives its
    /// P to another M and releases the GIL, so the runtime keeps running.
    ///
    /// Raises:
    ///     TimeoutError: the G did not finish within ``timeout`` seconds.
    ///     RuntimeError: a G joins itself.
    #[pyo3(signature = (timeout=None))]
    fn join(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        // Capped far in the future (`time::after`): `timeout=1e20` or
        // `inf` waits without limit instead of overflowing a Duration.
        let deadline = deadline(timeout)?;
        if current_g() == Some(self.id) {
            return Err(PyRuntimeError::new_err(format!(
                "G {} cannot join itself",
                self.id
            )));
        }
        if !self.is_done(py) {
            let wait = || {
                let mut st = lock(&self.state);
                while st.outcome.is_none() {
                    st = match deadline {
                        None => unpoison(self.finished.wait(st)),
                        Some(d) => {
                            let left = d.saturating_duration_since(Instant::now());
                            if left.is_zero() {
                                break;
                            }
                            unpoison(self.finished.wait_timeout(st, left)).0
                        }
                    };
                }
            };
            rt::block_in_g(py, wait);
            if !self.is_done(py) {
                return Err(PyTimeoutError::new_err(format!(
                    "G {} did not finish within {} s",
                    self.id,
                    timeout.unwrap_or_default()
                )));
            }
        }
        self.outcome(py)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let state = if self.is_done(py) { "done" } else { "running" };
        format!("<gmprt.G {} {} {}>", self.id, self.name(py), state)
    }
}

/// `await g`.
struct Join(Py<GHandle>);

impl Wait for Join {
    fn poll(&self, py: Python<'_>) -> Poll {
        let h = self.0.get();
        if h.is_done(py) {
            Poll::Ready(h.outcome(py))
        } else if current_g() == Some(h.id) {
            // It would wait for itself forever.
            Poll::Ready(Err(PyRuntimeError::new_err(format!(
                "G {} cannot await itself",
                h.id
            ))))
        } else {
            Poll::Pending
        }
    }

    fn park(&self, _py: Python<'_>, waker: Waker) -> bool {
        self.0.get().add_waiter(waker)
    }

    fn describe(&self) -> String {
        format!("join G {}", self.0.get().id)
    }
}

impl Drop for GHandle {
    fn drop(&mut self) {
        let st = unpoison(self.state.get_mut());
        if st.observed {
            return;
        }
        if let Some(Outcome::Err(e)) = st.outcome.take() {
            let id = self.id;
            // Dealloc runs attached; try_attach only refuses during
            // interpreter finalization, when there is nobody to tell. The
            // dealloc may run in the middle of an unwind (a frame clearing
            // while GeneratorExit propagates): keep that exception intact.
            Python::try_attach(|py| {
                let unwinding = PyErr::take(py);
                let name = self.name(py);
                rt::report_unobserved(py, id, &name, *e);
                if let Some(u) = unwinding {
                    u.restore(py);
                }
            });
        }
    }
}
