//! `gmprt.G`: the handle `go()` returns, holding the G's outcome.
//!
//! The outcome is written once, by the M that finishes the G. Waiters are
//! either Gs (a [`Waker`] each, from `await g`) or threads blocked in
//! `g.join()` (unparked). The mutex is never held across a call into
//! Python or a drop of a Python object: either could switch the GIL to a
//! thread that then blocks on the same mutex while attached.

use std::sync::Mutex;
use std::thread::Thread;
use std::time::Instant;

use gmprt_core::WaitReason;
use gmprt_core::Waker;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::cancel::{self, GCancel, Until};
use crate::errors::{self, Cancelled, Timeout};
use crate::lock::{lock, unpoison};
use crate::rt;
use crate::time::{deadline, ParkedTimer};
use crate::token::{current_g, Poll, Token, Wait};

/// What the handle knows of the G's end. Two words: every live G has a
/// handle, so its size counts per G (issue 14), and what only some Gs
/// need (waiters, a Group's callback) sits behind one pointer.
enum State {
    /// Still running; who waits for it, if anyone does.
    Running(Option<Box<Watchers>>),
    Ok(Py<PyAny>),
    /// Boxed: a `PyErr` is ~64 bytes. The flag: someone saw it (or it
    /// needs no report), so it is not reported as unobserved. Only an
    /// error can go unobserved, so only it carries the flag.
    Err(Box<PyErr>, bool),
    /// Ended by `gmprt.Cancelled` (or closed at shutdown): only the message
    /// is kept. The exception's traceback would hold the G's frames alive
    /// until the handle goes, and a mass cancel would leave the cyclic GC
    /// 100k of them to walk (measured: 40% of `benches/cancel.py`).
    Cancelled(Py<PyString>),
}

/// A running G's watchers, made by the first one.
#[derive(Default)]
struct Watchers {
    /// Gs in `await g` and threads blocked in `join()`.
    waiters: Vec<Waiter>,
    /// Called with the handle once the G finished (a Group's bookkeeping).
    on_done: Option<Py<PyAny>>,
}

enum Waiter {
    G(Waker),
    Thread(Thread),
}

/// How a G ended, as its body hands it to the handle.
enum Outcome {
    Ok(Py<PyAny>),
    Err(Box<PyErr>),
    Cancelled(Py<PyString>),
}

impl State {
    fn is_done(&self) -> bool {
        !matches!(self, State::Running(_))
    }

    /// The watchers, made now if there are none (the G is running).
    fn watchers(&mut self) -> Option<&mut Watchers> {
        match self {
            State::Running(w) => Some(w.get_or_insert_with(Box::default)),
            _ => None,
        }
    }
}

/// A running or finished G, as returned by :func:`gmprt.go`.
///
/// ``await g`` waits for it and returns its result or raises its exception;
/// ``g.join(timeout=None)`` does the same from synchronous code (a sync G or
/// any thread). An exception that nobody observes this way is printed to
/// stderr with its traceback when the handle is collected.
#[pyclass(frozen, module = "gmprt", name = "G")]
pub struct GHandle {
    /// What the G runs; its name is computed only when printed.
    func: Py<PyAny>,
    state: Mutex<State>,
    /// The G's cancel state (`cancel()`; the driver's checks).
    pub(crate) cancel: GCancel,
}

// Every live G has a handle (and `benches/chan.py`'s parked scenario pays
// for each): its Rust part is three words of state and the cancel state.
const _: () = assert!(std::mem::size_of::<GHandle>() <= 64);

impl GHandle {
    /// `on_done`: called with the handle once the G finished (a Group's).
    pub(crate) fn new(func: Py<PyAny>, cancel: GCancel, on_done: Option<Py<PyAny>>) -> GHandle {
        let watchers = on_done.map(|cb| {
            Box::new(Watchers {
                waiters: Vec::new(),
                on_done: Some(cb),
            })
        });
        GHandle {
            func,
            state: Mutex::new(State::Running(watchers)),
            cancel,
        }
    }

    /// The G's id, unique within one `gmprt.run()`.
    pub(crate) fn id(&self) -> u64 {
        self.cancel.id()
    }

    /// Marks the outcome as seen (a Group collected it).
    pub(crate) fn observe(&self) {
        if let State::Err(_, observed) = &mut *lock(&self.state) {
            *observed = true;
        }
    }

    /// The G's exception, if it finished with one.
    pub(crate) fn error(&self, py: Python<'_>) -> Option<PyErr> {
        let cancelled = match &*lock(&self.state) {
            State::Err(e, _) => return Some(e.clone_ref(py)),
            State::Cancelled(m) => m.clone_ref(py),
            _ => return None,
        };
        // A Group looks at it (`_exception`): made now (`errors::made`),
        // with the lock released (module docs).
        Some(errors::made(py, Cancelled::new_err(cancelled)))
    }

    /// What the G runs (`go()`'s `fn`): the body calls it from here.
    pub(crate) fn func(&self) -> &Py<PyAny> {
        &self.func
    }

    /// The G's function name, for reports.
    pub(crate) fn name(&self, py: Python<'_>) -> String {
        rt::describe(self.func.bind(py))
    }

    pub(crate) fn is_done(&self, _py: Python<'_>) -> bool {
        self.is_done_nogil()
    }

    fn is_done_nogil(&self) -> bool {
        lock(&self.state).is_done()
    }

    /// Registers a G waiting in `await g`. False if the G already finished
    /// (the waiter then resumes at once).
    pub(crate) fn add_waiter(&self, w: Waker) -> bool {
        match lock(&self.state).watchers() {
            Some(ws) => {
                ws.waiters.push(Waiter::G(w));
                true
            }
            None => false,
        }
    }

    /// The outcome, marking it observed. The G must have finished.
    pub(crate) fn outcome(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match &mut *lock(&self.state) {
            State::Ok(v) => Ok(v.clone_ref(py)),
            State::Err(e, observed) => {
                *observed = true;
                Err(e.clone_ref(py))
            }
            State::Cancelled(m) => Err(Cancelled::new_err(m.clone_ref(py))),
            State::Running(_) => unreachable!("outcome of a running G"),
        }
    }

    /// The finishing M: record the outcome, wake every waiter. An error that
    /// nobody can observe (the caller dropped the handle) is reported now.
    /// `surfaced`: the error already reaches the user another way (a
    /// KeyboardInterrupt that stops `run()`), so it is never reported.
    /// Returns the Group's callback, if the G has one, for the body to call.
    pub(crate) fn complete(
        slf: &Bound<'_, Self>,
        result: PyResult<Py<PyAny>>,
        surfaced: bool,
    ) -> Option<Py<PyAny>> {
        let py = slf.py();
        let me = slf.get();
        // The body holds one reference; a second one means a user still can
        // await or join this G.
        // SAFETY: reading the refcount of a live object while attached.
        let orphan = unsafe { pyo3::ffi::Py_REFCNT(slf.as_ptr()) } <= 1;
        // A cancelled G did what it was told: that is no failure to report.
        let report = match &result {
            Err(e) if orphan && !surfaced && !e.is_instance_of::<Cancelled>(py) => {
                Some(e.clone_ref(py))
            }
            _ => None,
        };
        let outcome = match result {
            Ok(v) => Outcome::Ok(v),
            Err(e) if e.is_instance_of::<Cancelled>(py) => {
                let msg = e.value(py).str();
                Outcome::Cancelled(msg.unwrap_or_else(|_| PyString::new(py, "")).unbind())
            }
            Err(e) => Outcome::Err(Box::new(e)),
        };
        let failed = matches!(&outcome, Outcome::Err(_));
        let on_done = me.finish_with(outcome, surfaced || report.is_some());
        // A Group observes its Gs' outcomes (its callback, which
        // `finish_with` counted as an observer): no report, no watch.
        let grouped = on_done.is_some();
        let report = report.filter(|_| !grouped);
        if failed && !surfaced && !grouped && report.is_none() {
            rt::note_failed(slf.clone().into_any().unbind());
        }
        if let Some(e) = report {
            rt::report_unobserved(py, me.id(), &me.name(py), e);
        }
        on_done
    }

    /// End of `run()`: a failure nobody awaited or joined is reported now
    /// (not only when the handle is collected, which may be never).
    pub(crate) fn report_if_unobserved(&self, py: Python<'_>) {
        let e = {
            match &mut *lock(&self.state) {
                State::Err(e, observed @ false) => {
                    *observed = true;
                    e.clone_ref(py)
                }
                _ => return,
            }
        };
        rt::report_unobserved(py, self.id(), &self.name(py), e);
    }

    /// Shutdown closed this G before it finished. Returns the Group's
    /// callback, as [`complete`](Self::complete) does.
    pub(crate) fn closed(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        let msg = format!(
            "G {} was cancelled: the runtime stopped before it finished",
            self.id()
        );
        self.finish_with(Outcome::Cancelled(PyString::new(py, &msg).unbind()), true)
    }

    /// Records the outcome and wakes the waiters; hands back the Group's
    /// callback. A no-op (None) if the G already finished.
    fn finish_with(&self, outcome: Outcome, observed: bool) -> Option<Py<PyAny>> {
        let mut st = lock(&self.state);
        let State::Running(watchers) = &mut *st else {
            // Already finished; the outcome is dropped once the lock is
            // (module docs).
            drop(st);
            drop(outcome);
            return None;
        };
        // A Group's callback observes the outcome.
        let observed = observed || watchers.as_ref().is_some_and(|w| w.on_done.is_some());
        let watchers = watchers.take();
        *st = match outcome {
            Outcome::Ok(v) => State::Ok(v),
            Outcome::Err(e) => State::Err(e, observed),
            Outcome::Cancelled(m) => State::Cancelled(m),
        };
        drop(st);
        let Watchers { waiters, on_done } = *watchers?;
        for w in waiters {
            match w {
                Waiter::G(w) => {
                    w.wake();
                }
                Waiter::Thread(t) => t.unpark(),
            }
        }
        on_done
    }
}

#[pymethods]
impl GHandle {
    /// The G's id, unique within one `gmprt.run()`.
    #[getter(id)]
    fn py_id(&self) -> u64 {
        self.id()
    }

    /// Whether the G has finished (returned, raised, or was cancelled).
    fn done(&self, py: Python<'_>) -> bool {
        self.is_done(py)
    }

    fn __await__(slf: Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        // Asyncio code of a gmprt loop awaits an asyncio future instead
        // (`aio`): a gmprt token would reach asyncio's Task, not a driver.
        if let Some(fut) = crate::aio::await_g(py, slf.as_any())? {
            return Ok(fut.call_method0(pyo3::intern!(py, "__await__"))?.unbind());
        }
        Ok(Token::wait(Join::new(slf.unbind()))
            .into_object(py)?
            .into_any())
    }

    /// Blocks until the G finishes; returns its result or raises its
    /// exception. For synchronous code: a sync G or any thread (inside a
    /// coroutine G use ``await g``). While it waits, the calling M gives its
    /// P to another M and releases the GIL, so the runtime keeps running.
    ///
    /// Raises:
    ///     gmprt.Timeout: the G did not finish within ``timeout`` seconds
    ///         (None or ``math.inf``: no limit).
    ///     gmprt.Cancelled: the G was cancelled, or the caller was while
    ///         it waited.
    ///     RuntimeError: a G joins itself.
    #[pyo3(signature = (timeout=None))]
    fn join(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        let deadline = deadline(timeout)?;
        if current_g() == Some(self.id()) {
            return Err(PyRuntimeError::new_err(format!(
                "G {} cannot join itself",
                self.id()
            )));
        }
        if !self.is_done(py) {
            let task = cancel::current();
            let what = format!("join G {}", self.id());
            let wait = || {
                if let Some(ws) = lock(&self.state).watchers() {
                    ws.waiters.push(Waiter::Thread(std::thread::current()));
                }
                cancel::wait_until(&task, &what, deadline, || self.is_done_nogil())
            };
            let until = if deadline.is_none() && task.deadline().is_none() {
                rt::block_asleep(py, wait)
            } else {
                rt::block_in_g(py, wait)
            };
            match until {
                Until::Done => {}
                Until::TimedOut => {
                    return Err(Timeout::new_err(format!(
                        "G {} did not finish within {} s",
                        self.id(),
                        timeout.unwrap_or_default()
                    )))
                }
                Until::Cancelled(scope) => return Err(scope.exception()),
            }
        }
        self.outcome(py)
    }

    /// Wait for the G to finish, at most ``timeout`` seconds: ``await
    /// g.wait(timeout=1.0)`` returns its result or raises its exception,
    /// like ``await g``.
    ///
    /// Raises:
    ///     gmprt.Timeout: the G did not finish in time (it keeps running).
    #[pyo3(signature = (timeout=None))]
    fn wait(slf: Bound<'_, Self>, timeout: Option<f64>) -> PyResult<Token> {
        let until = deadline(timeout)?;
        Ok(Token::wait(Join {
            g: slf.unbind(),
            until,
            timeout: timeout.unwrap_or_default(),
            timer: ParkedTimer::default(),
        }))
    }

    /// Cancel the G: :class:`gmprt.Cancelled` is raised at the await (or
    /// ``_blocking`` call) it is parked in, at once, or at its next one if
    /// it is running. A sync G inside a C call gets it at its next gmprt
    /// call. The G may catch it to clean up (``with gmprt.shield():`` to
    /// await during cleanup); ``await g`` then raises ``Cancelled`` unless
    /// the G returned a value anyway. Works from any thread.
    ///
    /// Returns:
    ///     False if the G had already finished, else True.
    #[pyo3(signature = (msg=None))]
    fn cancel(&self, py: Python<'_>, msg: Option<String>) -> bool {
        if self.is_done(py) {
            return false;
        }
        let msg = msg.unwrap_or_else(|| format!("G {} was cancelled", self.id()));
        self.cancel.cancel(msg);
        true
    }

    /// The exception the G finished with, or None (for a Group).
    fn _exception(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.error(py).map(|e| e.into_value(py).into_any())
    }

    /// Whether the G finished by being cancelled (it ended with
    /// :class:`gmprt.Cancelled`, or the runtime stopped before it ended).
    fn cancelled(&self, _py: Python<'_>) -> bool {
        matches!(*lock(&self.state), State::Cancelled(_))
    }

    /// The G's function, by its ``__qualname__`` (what dumps print).
    #[getter(name)]
    fn py_name(&self, py: Python<'_>) -> String {
        self.name(py)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let state = if self.is_done(py) { "done" } else { "running" };
        format!("<gmprt.G {} {} {}>", self.id(), self.name(py), state)
    }
}

/// `await g` and `await g.wait(timeout)`.
struct Join {
    g: Py<GHandle>,
    until: Option<Instant>,
    /// For the message.
    timeout: f64,
    timer: ParkedTimer,
}

impl Join {
    pub(crate) fn new(g: Py<GHandle>) -> Join {
        Join {
            g,
            until: None,
            timeout: 0.0,
            timer: ParkedTimer::default(),
        }
    }
}

impl Wait for Join {
    fn poll(&self, py: Python<'_>) -> Poll {
        let h = self.g.get();
        if h.is_done(py) {
            self.timer.cancel();
            Poll::Ready(h.outcome(py))
        } else if current_g() == Some(h.id()) {
            // It would wait for itself forever.
            Poll::Ready(Err(PyRuntimeError::new_err(format!(
                "G {} cannot await itself",
                h.id()
            ))))
        } else if self.until.is_some_and(|u| Instant::now() >= u) {
            Poll::Ready(Err(Timeout::new_err(format!(
                "G {} did not finish within {} s",
                h.id(),
                self.timeout
            ))))
        } else {
            Poll::Pending
        }
    }

    fn park(&self, _py: Python<'_>, waker: Waker) -> bool {
        if let Some(u) = self.until {
            // Fails only while the runtime stops.
            let _ = self.timer.arm(u, waker.clone());
        }
        self.g.get().add_waiter(waker)
    }

    fn describe(&self) -> String {
        format!("join G {}", self.g.get().id())
    }

    fn reason(&self) -> WaitReason {
        WaitReason::Join
    }

    fn cancel(&self, _py: Python<'_>) -> bool {
        self.timer.cancel();
        true
    }
}

impl Drop for GHandle {
    fn drop(&mut self) {
        let st = unpoison(self.state.get_mut());
        if let State::Err(e, false) = std::mem::replace(st, State::Running(None)) {
            let id = self.id();
            // Dealloc runs attached; try_attach only refuses during
            // interpreter finalization, when there is nobody to tell. The
            // dealloc may run in the middle of an unwind (a frame clearing
            // while GeneratorExit propagates): keep that exception intact.
            Python::try_attach(|py| {
                if e.is_instance_of::<Cancelled>(py) {
                    return;
                }
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
