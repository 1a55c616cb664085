//! `gmprt.WaitGroup`, `gmprt.Mutex`, `gmprt.Semaphore`: gmprt-core's sync
//! primitives for Python Gs and threads, with the same naming rule as
//! channels (`await x.op()` in coroutines, `x.op_blocking(timeout=None)` in
//! synchronous code, `try_` never waits).

use std::time::Duration;

use gmprt_core::sync::{Mutex, NegativeCounter, NotLocked, OverRelease, Semaphore, WaitGroup};
use gmprt_core::WaitReason;
use gmprt_core::{Done, Notify, Op};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use crate::errors::{int_arg, int_or};
use crate::parked::{block, timeout_arg, Attempt, Await, Blocking};
use crate::token::{Poll, Token, Wait};

/// An awaitable that is already complete (``__aexit__``).
struct Ready;

impl Wait for Ready {
    fn poll(&self, py: Python<'_>) -> Poll {
        Poll::Ready(Ok(py.None()))
    }

    fn park(&self, _py: Python<'_>, _waker: gmprt_core::Waker) -> bool {
        false
    }

    fn describe(&self) -> String {
        "ready".into()
    }
}

/// Go's ``sync.WaitGroup``: wait for a collection of Gs to finish.
///
/// Call ``wg.add(n)`` before starting ``n`` Gs, ``wg.done()`` in each as it
/// finishes, and ``await wg.wait()`` (coroutines) or
/// ``wg.wait_blocking(timeout=None)`` (synchronous code) to wait until the
/// counter is back to zero.
#[pyclass(frozen, module = "gmprt", name = "WaitGroup")]
pub struct PyWaitGroup {
    wg: WaitGroup,
}

fn negative(e: NegativeCounter) -> PyErr {
    PyValueError::new_err(format!(
        "WaitGroup counter would go negative ({} {:+}): done() was called more times than add()",
        e.count, e.delta
    ))
}

#[pymethods]
impl PyWaitGroup {
    #[new]
    fn new() -> PyWaitGroup {
        PyWaitGroup {
            wg: WaitGroup::new(),
        }
    }

    /// Add ``n`` (may be negative) to the counter; at zero every waiter is
    /// released.
    ///
    /// Raises:
    ///     ValueError: the counter would go negative (it is left unchanged).
    #[pyo3(signature = (n=None), text_signature = "(self, /, n=1)")]
    fn add(&self, n: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let n = int_or(n, 1, "WaitGroup.add()'s n", -i64::MAX, i64::MAX)?;
        self.wg.add(n).map_err(negative)
    }

    /// ``add(-1)``: one G is done.
    fn done(&self) -> PyResult<()> {
        self.wg.add(-1).map_err(negative)
    }

    /// The counter now.
    #[getter]
    fn count(&self) -> i64 {
        self.wg.count()
    }

    /// Wait until the counter is zero, at most ``timeout`` seconds.
    ///
    /// Raises:
    ///     Timeout: the counter did not reach zero within ``timeout``.
    #[pyo3(signature = (timeout=None))]
    fn wait(slf: Bound<'_, Self>, timeout: Option<f64>) -> PyResult<Token> {
        Ok(Await::token_with(
            WgWait(slf.unbind()),
            timeout_arg(timeout)?,
        ))
    }

    /// ``wait`` for synchronous code: blocks until the counter is zero.
    /// While it waits, the M gives its P to another M and the GIL is
    /// released.
    ///
    /// Raises:
    ///     Timeout: the counter did not reach zero within ``timeout`` seconds.
    #[pyo3(signature = (timeout=None))]
    fn wait_blocking(slf: Bound<'_, Self>, timeout: Option<f64>) -> PyResult<()> {
        let timeout = timeout_arg(timeout)?;
        let py = slf.py();
        block(py, &WgWait(slf.unbind()), timeout).map(drop)
    }

    fn __repr__(&self) -> String {
        format!("<gmprt.WaitGroup count={}>", self.wg.count())
    }
}

struct WgWait(Py<PyWaitGroup>);

impl Blocking for WgWait {
    type T = ();

    fn attempt(&self, py: Python<'_>, notify: Option<Notify>) -> Attempt<()> {
        let wg = &self.0.get().wg;
        let Some(notify) = notify else {
            return if wg.count() == 0 {
                Attempt::Ready(Ok(py.None()))
            } else {
                Attempt::Wait
            };
        };
        match wg.wait_or_park(notify) {
            None => Attempt::Ready(Ok(py.None())),
            Some(op) => Attempt::Parked(op),
        }
    }

    fn complete(&self, py: Python<'_>, _op: &mut Op<()>, done: Done) -> PyResult<Py<PyAny>> {
        match done {
            Done::Expired => self.timed_out(py, Duration::ZERO),
            _ => Ok(py.None()),
        }
    }

    fn describe(&self) -> String {
        "WaitGroup.wait".into()
    }

    fn reason(&self) -> WaitReason {
        WaitReason::WaitGroup
    }
}

/// A lock for Gs (Go's ``sync.Mutex``). Waiters get the lock in FIFO order.
/// Like Go's, it is not owned by a G: any G (or thread) may unlock it.
///
/// In a coroutine G::
///
///     async with mu:          # or: await mu.lock() ... mu.unlock()
///         ...
///
/// In synchronous code (a plain-function G or any thread)::
///
///     with mu:                # or: mu.lock_blocking(timeout=None) ... mu.unlock()
///         ...
#[pyclass(frozen, module = "gmprt", name = "Mutex")]
pub struct PyMutex {
    mu: Mutex,
}

fn not_locked(NotLocked: NotLocked) -> PyErr {
    PyRuntimeError::new_err("unlock of an unlocked gmprt.Mutex")
}

#[pymethods]
impl PyMutex {
    #[new]
    fn new() -> PyMutex {
        PyMutex { mu: Mutex::new() }
    }

    /// Wait for the lock (at most ``timeout`` seconds) and take it. A
    /// cancelled or timed-out lock never leaves the mutex held.
    ///
    /// Raises:
    ///     Timeout: not locked within ``timeout``.
    #[pyo3(signature = (timeout=None))]
    fn lock(slf: Bound<'_, Self>, timeout: Option<f64>) -> PyResult<Token> {
        Ok(Await::token_with(
            Acquire::Mutex(slf.unbind()),
            timeout_arg(timeout)?,
        ))
    }

    /// Release the lock (to the longest waiter, if any).
    ///
    /// Raises:
    ///     RuntimeError: the mutex is not locked.
    fn unlock(&self) -> PyResult<()> {
        self.mu.unlock().map_err(not_locked)
    }

    /// Take the lock if it is free; never waits.
    fn try_lock(&self) -> bool {
        self.mu.try_lock()
    }

    /// Whether some G or thread holds the lock now.
    fn locked(&self) -> bool {
        self.mu.is_locked()
    }

    /// ``lock`` for synchronous code: blocks until the lock is taken. While
    /// it waits, the M gives its P to another M and the GIL is released.
    ///
    /// Raises:
    ///     Timeout: not locked within ``timeout`` seconds.
    #[pyo3(signature = (timeout=None))]
    fn lock_blocking(slf: Bound<'_, Self>, timeout: Option<f64>) -> PyResult<()> {
        let timeout = timeout_arg(timeout)?;
        let py = slf.py();
        block(py, &Acquire::Mutex(slf.unbind()), timeout).map(drop)
    }

    fn __aenter__(slf: Bound<'_, Self>) -> Token {
        Await::token(Acquire::Mutex(slf.unbind()))
    }

    #[pyo3(signature = (*_exc))]
    fn __aexit__(&self, _exc: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<Token> {
        self.unlock()?;
        Ok(Token::wait(Ready))
    }

    fn __enter__(slf: Bound<'_, Self>) -> PyResult<()> {
        Self::lock_blocking(slf, None)
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, _exc: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<()> {
        self.unlock()
    }

    fn __repr__(&self) -> String {
        let st = if self.mu.is_locked() {
            "locked"
        } else {
            "unlocked"
        };
        format!("<gmprt.Mutex {st} waiting={}>", self.mu.waiting())
    }
}

/// A counting semaphore for Gs: at most ``permits`` holders at a time, the
/// tool to bound concurrency. Waiters get permits in FIFO order.
///
/// In a coroutine G::
///
///     async with sem:          # or: await sem.acquire() ... sem.release()
///         ...
///
/// In synchronous code (a plain-function G or any thread)::
///
///     with sem:                # or: sem.acquire_blocking(timeout=None) ... sem.release()
///         ...
#[pyclass(frozen, module = "gmprt", name = "Semaphore")]
pub struct PySemaphore {
    sem: Semaphore,
}

fn over_release(OverRelease: OverRelease) -> PyErr {
    PyValueError::new_err("gmprt.Semaphore released more times than it was acquired")
}

#[pymethods]
impl PySemaphore {
    /// Raises:
    ///     ValueError: ``permits`` < 1.
    #[new]
    fn new(permits: &Bound<'_, PyAny>) -> PyResult<PySemaphore> {
        let permits = int_arg(permits, "permits", 1, i64::MAX)?;
        Ok(PySemaphore {
            sem: Semaphore::new(permits as usize),
        })
    }

    /// Wait for a permit (at most ``timeout`` seconds) and take it. A
    /// cancelled or timed-out acquire never keeps a permit.
    ///
    /// Raises:
    ///     Timeout: no permit within ``timeout``.
    #[pyo3(signature = (timeout=None))]
    fn acquire(slf: Bound<'_, Self>, timeout: Option<f64>) -> PyResult<Token> {
        Ok(Await::token_with(
            Acquire::Semaphore(slf.unbind()),
            timeout_arg(timeout)?,
        ))
    }

    /// Give a permit back (to the longest waiter, if any).
    ///
    /// Raises:
    ///     ValueError: every permit is already free.
    fn release(&self) -> PyResult<()> {
        self.sem.release().map_err(over_release)
    }

    /// Take a permit if one is free; never waits.
    fn try_acquire(&self) -> bool {
        self.sem.try_acquire()
    }

    /// ``acquire`` for synchronous code: blocks until a permit is taken.
    /// While it waits, the M gives its P to another M and the GIL is
    /// released.
    ///
    /// Raises:
    ///     Timeout: no permit within ``timeout`` seconds.
    #[pyo3(signature = (timeout=None))]
    fn acquire_blocking(slf: Bound<'_, Self>, timeout: Option<f64>) -> PyResult<()> {
        let timeout = timeout_arg(timeout)?;
        let py = slf.py();
        block(py, &Acquire::Semaphore(slf.unbind()), timeout).map(drop)
    }

    /// Permits free now.
    #[getter]
    fn value(&self) -> usize {
        self.sem.available()
    }

    /// The number of permits it was created with.
    #[getter]
    fn permits(&self) -> usize {
        self.sem.permits()
    }

    fn __aenter__(slf: Bound<'_, Self>) -> Token {
        Await::token(Acquire::Semaphore(slf.unbind()))
    }

    #[pyo3(signature = (*_exc))]
    fn __aexit__(&self, _exc: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<Token> {
        self.release()?;
        Ok(Token::wait(Ready))
    }

    fn __enter__(slf: Bound<'_, Self>) -> PyResult<()> {
        Self::acquire_blocking(slf, None)
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, _exc: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<()> {
        self.release()
    }

    fn __repr__(&self) -> String {
        format!(
            "<gmprt.Semaphore value={}/{} waiting={}>",
            self.sem.available(),
            self.sem.permits(),
            self.sem.waiting()
        )
    }
}

/// Taking a mutex or a semaphore permit.
enum Acquire {
    Mutex(Py<PyMutex>),
    Semaphore(Py<PySemaphore>),
}

impl Acquire {
    fn try_take(&self) -> bool {
        match self {
            Acquire::Mutex(m) => m.get().mu.try_lock(),
            Acquire::Semaphore(s) => s.get().sem.try_acquire(),
        }
    }

    fn take_or_park(&self, notify: Notify) -> Option<Op<()>> {
        match self {
            Acquire::Mutex(m) => m.get().mu.lock_or_park(notify),
            Acquire::Semaphore(s) => s.get().sem.acquire_or_park(notify),
        }
    }

    fn give_back(&self) {
        let _ = match self {
            Acquire::Mutex(m) => m.get().mu.unlock().map_err(drop),
            Acquire::Semaphore(s) => s.get().sem.release().map_err(drop),
        };
    }
}

impl Blocking for Acquire {
    type T = ();

    fn attempt(&self, py: Python<'_>, notify: Option<Notify>) -> Attempt<()> {
        let Some(notify) = notify else {
            return if self.try_take() {
                Attempt::Ready(Ok(py.None()))
            } else {
                Attempt::Wait
            };
        };
        match self.take_or_park(notify) {
            None => Attempt::Ready(Ok(py.None())),
            Some(op) => Attempt::Parked(op),
        }
    }

    fn complete(&self, py: Python<'_>, _op: &mut Op<()>, done: Done) -> PyResult<Py<PyAny>> {
        match done {
            Done::Expired => self.timed_out(py, Duration::ZERO),
            _ => Ok(py.None()),
        }
    }

    /// The await was dropped: a permit handed over meanwhile goes on to the
    /// next waiter instead of leaking.
    fn abandon(&self, mut op: Op<()>) {
        if op.cancel() != Done::Expired {
            self.give_back();
        }
    }

    fn describe(&self) -> String {
        match self {
            Acquire::Mutex(_) => "Mutex.lock".into(),
            Acquire::Semaphore(_) => "Semaphore.acquire".into(),
        }
    }

    fn reason(&self) -> WaitReason {
        match self {
            Acquire::Mutex(_) => WaitReason::Mutex,
            Acquire::Semaphore(_) => WaitReason::Semaphore,
        }
    }
}
