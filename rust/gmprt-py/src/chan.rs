//! `gmprt.Chan`, `gmprt.select` and their case objects: gmprt-core's
//! channels holding Python objects.
//!
//! Every operation exists twice, with one naming rule: `await ch.recv()` in
//! a coroutine G, `ch.recv_blocking(timeout=None)` in synchronous code (a
//! sync G or any thread; the M gives its P to another M and the GIL is
//! released while it waits). `try_` forms never wait.
//!
//! The channel's lock lives in the core and is never held while Python runs
//! or while a Python object is dropped: values come out of the core by value
//! and are released here, unlocked (see `parked`).

use std::sync::atomic::{AtomicPtr, Ordering::Relaxed};
use std::time::Duration;

use gmprt_core::chan::{
    select_done, select_or_park, select_try, AlreadyClosed, TryRecvError, TrySendError,
};
use gmprt_core::WaitReason;
use gmprt_core::{Case, Chan, Done, Notify, Op, RecvPark, SelectPark, Selected, SendPark};
use pyo3::exceptions::{PyStopAsyncIteration, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyTuple, PyType};

use crate::errors::{int_or, ChanClosed, ChanEmpty};
use crate::parked::{block, timeout_arg, Attempt, Await, Blocking};
use crate::token::Token;

/// A Go channel of Python objects.
///
/// ``Chan()`` is unbuffered: a send waits for a receiver and hands the value
/// straight over (the receiver runs next). ``Chan(n)`` buffers up to ``n``
/// values in FIFO order. ``close()`` wakes every waiting sender (they raise
/// ``ChanClosed``) and receiver; receivers still get the buffered values,
/// then ``ChanClosed``.
///
/// In a coroutine G::
///
///     await ch.send(v)          # waits for room or a receiver
///     v = await ch.recv()       # waits for a value; ChanClosed once closed and drained
///     async for v in ch: ...    # receives until closed and drained
///
/// In synchronous code (a plain-function G, or any thread), the same with
/// the ``_blocking`` suffix and an optional timeout (``gmprt.Timeout``)::
///
///     ch.send_blocking(v, timeout=None)
///     v = ch.recv_blocking(timeout=None)
///
/// Never waiting: ``ch.try_send(v) -> bool`` (False: no room and no
/// receiver), ``ch.try_recv()`` (raises ``gmprt.ChanEmpty`` when nothing is
/// ready). ``len(ch)`` is the number of buffered values, ``ch.capacity`` the
/// buffer size. For ``gmprt.select``: ``ch.recv_case()``, ``ch.send_case(v)``.
#[pyclass(frozen, module = "gmprt", name = "Chan")]
pub struct PyChan {
    ch: Chan<Py<PyAny>>,
}

fn closed_err(what: &str) -> PyErr {
    ChanClosed::new_err(format!("{what} on a closed channel"))
}

impl PyChan {
    fn chan(&self) -> &Chan<Py<PyAny>> {
        &self.ch
    }
}

#[pymethods]
impl PyChan {
    #[new]
    #[pyo3(signature = (capacity=None), text_signature = "(capacity=0)")]
    fn new(capacity: Option<&Bound<'_, PyAny>>) -> PyResult<PyChan> {
        // 0: unbuffered. The buffer grows as used, so a huge capacity
        // allocates nothing up front.
        let cap = int_or(capacity, 0, "channel capacity", 0, i64::MAX)? as usize;
        Ok(PyChan { ch: Chan::new(cap) })
    }

    /// ``Chan[int]`` in annotations.
    #[classmethod]
    fn __class_getitem__(cls: &Bound<'_, PyType>, _item: &Bound<'_, PyAny>) -> Py<PyType> {
        cls.clone().unbind()
    }

    /// How many values the buffer holds at most (0: unbuffered).
    #[getter]
    fn capacity(&self) -> usize {
        self.ch.capacity()
    }

    /// Whether ``close()`` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.ch.is_closed()
    }

    /// Values buffered now (not counting blocked senders), like Go's len(ch).
    fn __len__(&self) -> usize {
        self.ch.len()
    }

    /// Send ``value``, waiting for a receiver or for buffer room, at most
    /// ``timeout`` seconds (None or ``math.inf``: no limit).
    ///
    /// Raises:
    ///     ChanClosed: the channel is closed, or was closed while waiting.
    ///     Timeout: not sent within ``timeout`` (the value was not sent).
    ///     Cancelled: the G was cancelled meanwhile (the value was not sent).
    #[pyo3(signature = (value, timeout=None))]
    fn send(slf: Bound<'_, Self>, value: Py<PyAny>, timeout: Option<f64>) -> PyResult<Py<Token>> {
        let timeout = timeout_arg(timeout)?;
        let py = slf.py();
        Await::token_with(
            SendOp {
                ch: slf.unbind(),
                value,
            },
            timeout,
        )
        .into_object(py)
    }

    /// Receive a value, waiting for one at most ``timeout`` seconds (None or
    /// ``math.inf``: no limit).
    ///
    /// Raises:
    ///     ChanClosed: the channel is closed and its buffer drained.
    ///     Timeout: nothing arrived within ``timeout``.
    ///     Cancelled: the G was cancelled meanwhile (no value was taken).
    #[pyo3(signature = (timeout=None))]
    fn recv(slf: Bound<'_, Self>, timeout: Option<f64>) -> PyResult<Py<Token>> {
        let timeout = timeout_arg(timeout)?;
        let py = slf.py();
        Await::token_with(
            RecvOp {
                ch: slf.unbind(),
                iter: false,
            },
            timeout,
        )
        .into_object(py)
    }

    /// Close the channel: waiting receivers and senders are woken (senders
    /// raise ChanClosed); buffered values can still be received.
    ///
    /// Raises:
    ///     ChanClosed: the channel was already closed.
    fn close(&self) -> PyResult<()> {
        self.ch
            .close()
            .map_err(|AlreadyClosed| ChanClosed::new_err("close of a closed channel"))
    }

    /// Send without waiting. True if sent (to a waiting receiver or into the
    /// buffer), False if that would have to wait.
    ///
    /// Raises:
    ///     ChanClosed: the channel is closed.
    fn try_send(&self, value: Py<PyAny>) -> PyResult<bool> {
        match self.ch.try_send(value) {
            Ok(()) => Ok(true),
            Err(TrySendError::Full(_)) => Ok(false),
            Err(TrySendError::Closed(_)) => Err(closed_err("send")),
        }
    }

    /// Receive without waiting.
    ///
    /// Raises:
    ///     ChanEmpty: no value is buffered and no sender is waiting.
    ///     ChanClosed: the channel is closed and drained.
    fn try_recv(&self) -> PyResult<Py<PyAny>> {
        match self.ch.try_recv() {
            Ok(v) => Ok(v),
            Err(TryRecvError::Empty) => Err(ChanEmpty::new_err(
                "nothing to receive: the buffer is empty and no sender is waiting",
            )),
            Err(TryRecvError::Closed) => Err(closed_err("receive")),
        }
    }

    /// ``send`` for synchronous code (a plain-function G or any thread):
    /// blocks until sent. While it waits, the M gives its P to another M and
    /// the GIL is released.
    ///
    /// Raises:
    ///     ChanClosed: the channel is closed, or was closed while waiting.
    ///     Timeout: not sent within ``timeout`` seconds (the value was not sent).
    #[pyo3(signature = (value, timeout=None))]
    fn send_blocking(
        slf: Bound<'_, Self>,
        value: Py<PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<Py<PyAny>> {
        let timeout = timeout_arg(timeout)?;
        let py = slf.py();
        block(
            py,
            &SendOp {
                ch: slf.unbind(),
                value,
            },
            timeout,
        )
    }

    /// ``recv`` for synchronous code (a plain-function G or any thread):
    /// blocks until a value arrives. While it waits, the M gives its P to
    /// another M and the GIL is released.
    ///
    /// Raises:
    ///     ChanClosed: the channel is closed and drained.
    ///     Timeout: nothing arrived within ``timeout`` seconds.
    #[pyo3(signature = (timeout=None))]
    fn recv_blocking(slf: Bound<'_, Self>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        let timeout = timeout_arg(timeout)?;
        let py = slf.py();
        block(
            py,
            &RecvOp {
                ch: slf.unbind(),
                iter: false,
            },
            timeout,
        )
    }

    /// A receive case for ``gmprt.select``.
    fn recv_case(slf: Bound<'_, Self>) -> RecvCase {
        RecvCase { ch: slf.unbind() }
    }

    /// A case for ``gmprt.select`` that sends ``value``.
    fn send_case(slf: Bound<'_, Self>, value: Py<PyAny>) -> SendCase {
        SendCase {
            ch: slf.unbind(),
            value,
        }
    }

    fn __aiter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// The next value; StopAsyncIteration once closed and drained.
    fn __anext__(slf: Bound<'_, Self>) -> PyResult<Py<Token>> {
        let py = slf.py();
        Await::token(RecvOp {
            ch: slf.unbind(),
            iter: true,
        })
        .into_object(py)
    }

    fn __repr__(&self) -> String {
        format!(
            "<gmprt.Chan capacity={} len={}{}>",
            self.ch.capacity(),
            self.ch.len(),
            if self.ch.is_closed() { " closed" } else { "" }
        )
    }
}

/// `await ch.send(v)` / `ch.send_blocking(v)`.
struct SendOp {
    ch: Py<PyChan>,
    value: Py<PyAny>,
}

impl Blocking for SendOp {
    type T = Py<PyAny>;

    fn attempt(&self, py: Python<'_>, notify: Option<Notify>) -> Attempt<Self::T> {
        let ch = self.ch.get().chan();
        let v = self.value.clone_ref(py);
        let Some(notify) = notify else {
            return match ch.try_send(v) {
                Ok(()) => Attempt::Ready(Ok(py.None())),
                Err(TrySendError::Full(_)) => Attempt::Wait,
                Err(TrySendError::Closed(_)) => Attempt::Ready(Err(closed_err("send"))),
            };
        };
        match ch.send_or_park(v, notify) {
            SendPark::Sent => Attempt::Ready(Ok(py.None())),
            SendPark::Closed(_) => Attempt::Ready(Err(closed_err("send"))),
            SendPark::Parked(op) => Attempt::Parked(op),
        }
    }

    fn complete(&self, py: Python<'_>, op: &mut Op<Self::T>, done: Done) -> PyResult<Py<PyAny>> {
        drop(op.take_all());
        match done {
            Done::Ok(_) => Ok(py.None()),
            Done::Closed(_) => Err(ChanClosed::new_err(
                "send on a closed channel: it was closed while the send waited",
            )),
            Done::Expired => self.timed_out(py, Duration::ZERO),
        }
    }

    fn describe(&self) -> String {
        "chan send".into()
    }

    fn reason(&self) -> WaitReason {
        WaitReason::ChanSend
    }

    fn chans(&self, py: Python<'_>) -> Option<Vec<Py<PyAny>>> {
        Some(vec![self.ch.clone_ref(py).into_any()])
    }
}

/// `await ch.recv()` / `ch.recv_blocking()` / `async for`.
struct RecvOp {
    ch: Py<PyChan>,
    /// `__anext__`: closed ends the iteration instead of raising ChanClosed.
    iter: bool,
}

// A G parked in `await ch.recv()` keeps one (boxed in its token): 40
// bytes is a 48-byte malloc chunk, one word more would be 64.
const _: () = assert!(std::mem::size_of::<Await<RecvOp>>() <= 40);

impl RecvOp {
    fn closed(&self) -> PyErr {
        if self.iter {
            PyStopAsyncIteration::new_err(())
        } else {
            closed_err("receive")
        }
    }
}

impl Blocking for RecvOp {
    type T = Py<PyAny>;

    fn attempt(&self, _py: Python<'_>, notify: Option<Notify>) -> Attempt<Self::T> {
        let ch = self.ch.get().chan();
        let Some(notify) = notify else {
            return match ch.try_recv() {
                Ok(v) => Attempt::Ready(Ok(v)),
                Err(TryRecvError::Empty) => Attempt::Wait,
                Err(TryRecvError::Closed) => Attempt::Ready(Err(self.closed())),
            };
        };
        match ch.recv_or_park(notify) {
            RecvPark::Received(v) => Attempt::Ready(Ok(v)),
            RecvPark::Closed => Attempt::Ready(Err(self.closed())),
            RecvPark::Parked(op) => Attempt::Parked(op),
        }
    }

    fn complete(&self, py: Python<'_>, op: &mut Op<Self::T>, done: Done) -> PyResult<Py<PyAny>> {
        match done {
            Done::Ok(_) => Ok(op.take(0).expect("a completed receive holds its value")),
            Done::Closed(_) => Err(self.closed()),
            Done::Expired => self.timed_out(py, Duration::ZERO),
        }
    }

    fn describe(&self) -> String {
        "chan receive".into()
    }

    fn reason(&self) -> WaitReason {
        WaitReason::ChanReceive
    }

    fn chans(&self, py: Python<'_>) -> Option<Vec<Py<PyAny>>> {
        Some(vec![self.ch.clone_ref(py).into_any()])
    }
}

/// A receive case for :func:`gmprt.select`, from ``ch.recv_case()``. Cases
/// are immutable and may be reused across selects.
#[pyclass(frozen, module = "gmprt", name = "RecvCase")]
pub struct RecvCase {
    ch: Py<PyChan>,
}

#[pymethods]
impl RecvCase {
    /// The channel this case receives from.
    #[getter]
    fn chan(&self, py: Python<'_>) -> Py<PyChan> {
        self.ch.clone_ref(py)
    }

    fn __repr__(&self) -> String {
        format!("<gmprt.RecvCase {}>", self.ch.get().__repr__())
    }
}

/// A send case for :func:`gmprt.select`, from ``ch.send_case(value)``.
/// Cases are immutable and may be reused across selects.
#[pyclass(frozen, module = "gmprt", name = "SendCase")]
pub struct SendCase {
    ch: Py<PyChan>,
    value: Py<PyAny>,
}

#[pymethods]
impl SendCase {
    /// The channel this case sends on.
    #[getter]
    fn chan(&self, py: Python<'_>) -> Py<PyChan> {
        self.ch.clone_ref(py)
    }

    /// The value it sends.
    #[getter]
    fn value(&self, py: Python<'_>) -> Py<PyAny> {
        self.value.clone_ref(py)
    }

    fn __repr__(&self) -> String {
        format!("<gmprt.SendCase {}>", self.ch.get().__repr__())
    }
}

/// The type of :data:`gmprt.CLOSED`.
#[pyclass(frozen, module = "gmprt", name = "ClosedType")]
pub struct ClosedType;

#[pymethods]
impl ClosedType {
    fn __repr__(&self) -> &'static str {
        "gmprt.CLOSED"
    }

    fn __bool__(&self) -> bool {
        false
    }
}

static CLOSED: PyOnceLock<Py<ClosedType>> = PyOnceLock::new();

/// `gmprt.CLOSED`: what a select's receive case yields when its channel is
/// closed and drained (Go's `v, ok := <-ch` with `ok == false`).
pub(crate) fn closed_sentinel(py: Python<'_>) -> PyResult<&Py<ClosedType>> {
    CLOSED.get_or_try_init(py, || Py::new(py, ClosedType))
}

struct SelCase {
    ch: Py<PyChan>,
    /// Some for a send case.
    send: Option<Py<PyAny>>,
}

/// `await gmprt.select(...)` / `gmprt.select_blocking(...)`.
struct SelectOp {
    cases: Vec<SelCase>,
    /// Return `(None, None)` at once when no case is ready.
    default: bool,
    timeout: Option<Duration>,
}

impl SelectOp {
    fn from_args(
        cases: &Bound<'_, PyTuple>,
        default: bool,
        timeout: Option<f64>,
    ) -> PyResult<SelectOp> {
        let timeout = timeout_arg(timeout)?;
        if default && timeout.is_some() {
            return Err(PyValueError::new_err(
                "select() takes default=True (never wait) or a timeout, not both",
            ));
        }
        let cases = cases
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if let Ok(r) = c.cast::<RecvCase>() {
                    return Ok(SelCase {
                        ch: r.get().ch.clone_ref(c.py()),
                        send: None,
                    });
                }
                if let Ok(s) = c.cast::<SendCase>() {
                    let s = s.get();
                    return Ok(SelCase {
                        ch: s.ch.clone_ref(c.py()),
                        send: Some(s.value.clone_ref(c.py())),
                    });
                }
                Err(PyTypeError::new_err(format!(
                    "select() case {i} must be ch.recv_case() or ch.send_case(value), got {}",
                    c.get_type()
                        .name()
                        .map(|n| n.to_string())
                        .unwrap_or_default()
                )))
            })
            .collect::<PyResult<Vec<_>>>()?;
        if cases.is_empty() && !default && timeout.is_none() {
            return Err(PyValueError::new_err(
                "select() with no cases, no default and no timeout would wait forever",
            ));
        }
        Ok(SelectOp {
            cases,
            default,
            timeout,
        })
    }

    fn core_cases(&self, py: Python<'_>) -> Vec<Case<'_, Py<PyAny>>> {
        self.cases
            .iter()
            .map(|c| match &c.send {
                None => Case::Recv(c.ch.get().chan()),
                Some(v) => Case::Send(c.ch.get().chan(), Some(v.clone_ref(py))),
            })
            .collect()
    }

    fn result(&self, py: Python<'_>, s: Selected<Py<PyAny>>) -> PyResult<Py<PyAny>> {
        let (i, v) = match s {
            Selected::Recv(i, Some(v)) => (i, v),
            Selected::Recv(i, None) => (i, closed_sentinel(py)?.clone_ref(py).into_any()),
            Selected::Sent(i) => (i, py.None()),
            Selected::SendClosed(i) => {
                return Err(ChanClosed::new_err(format!(
                    "send on a closed channel (select case {i})"
                )))
            }
        };
        Ok(
            PyTuple::new(py, [i.into_pyobject(py)?.into_any().unbind(), v])?
                .into_any()
                .unbind(),
        )
    }

    fn nothing(py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(PyTuple::new(py, [py.None(), py.None()])?
            .into_any()
            .unbind())
    }
}

impl Blocking for SelectOp {
    type T = Py<PyAny>;

    fn attempt(&self, py: Python<'_>, notify: Option<Notify>) -> Attempt<Self::T> {
        let mut cases = self.core_cases(py);
        let never_wait = self.default || self.timeout == Some(Duration::ZERO);
        match notify {
            Some(notify) if !never_wait => match select_or_park(&mut cases, notify) {
                SelectPark::Selected(s) => Attempt::Ready(self.result(py, s)),
                SelectPark::Parked(op) => Attempt::Parked(op),
            },
            _ => match select_try(&mut cases) {
                Some(s) => Attempt::Ready(self.result(py, s)),
                None if never_wait => Attempt::Ready(Self::nothing(py)),
                None => Attempt::Wait,
            },
        }
    }

    fn complete(&self, py: Python<'_>, op: &mut Op<Self::T>, done: Done) -> PyResult<Py<PyAny>> {
        let r = match select_done(op, done, |i| self.cases[i].send.is_some()) {
            Ok(s) => self.result(py, s),
            Err(_) => Self::nothing(py),
        };
        drop(op.take_all());
        r
    }

    fn describe(&self) -> String {
        if self.cases.is_empty() {
            "select (no cases)".into()
        } else {
            "select".into()
        }
    }

    fn reason(&self) -> WaitReason {
        if self.cases.is_empty() {
            WaitReason::SelectNoCases
        } else {
            WaitReason::Select
        }
    }

    fn chans(&self, py: Python<'_>) -> Option<Vec<Py<PyAny>>> {
        if self.default {
            return None;
        }
        Some(
            self.cases
                .iter()
                .map(|c| c.ch.clone_ref(py).into_any())
                .collect(),
        )
    }

    fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    fn timed_out(&self, py: Python<'_>, _timeout: Duration) -> PyResult<Py<PyAny>> {
        Self::nothing(py)
    }
}

/// Go's ``select``: wait until one of ``cases`` can proceed, do it, and
/// return ``(index, value)``.
///
/// Each case is ``ch.recv_case()`` or ``ch.send_case(value)``. When several
/// are ready, one is chosen uniformly at random; exactly one case ever
/// happens. ``index`` is the position of the case that fired; ``value`` is
/// the value received (``gmprt.CLOSED`` if that channel is closed and
/// drained), or ``None`` for a send.
///
/// With ``default=True`` it never waits: ``(None, None)`` when no case is
/// ready. With ``timeout=seconds`` it waits at most that long, then returns
/// ``(None, None)``::
///
///     i, v = await gmprt.select(jobs.recv_case(), results.send_case(r), timeout=1.0)
///     if i is None: ...           # timed out
///     elif i == 0: handle(v)      # v is gmprt.CLOSED once jobs is closed
///     else: ...                   # r was sent
///
/// Raises:
///     ChanClosed: the case chosen sends on a closed channel.
///     TypeError: a case is not a recv/send case.
///     ValueError: both default and timeout, a negative timeout, or no
///         cases with neither (that would wait forever).
#[pyfunction]
#[pyo3(signature = (*cases, default=false, timeout=None))]
pub(crate) fn select(
    cases: &Bound<'_, PyTuple>,
    default: bool,
    timeout: Option<f64>,
) -> PyResult<Token> {
    Ok(Await::token(SelectOp::from_args(cases, default, timeout)?))
}

/// ``select`` for synchronous code (a plain-function G or any thread):
/// blocks until a case fires; ``(None, None)`` when ``default=True`` and
/// nothing is ready, or when ``timeout`` seconds pass. While it waits, the M
/// gives its P to another M and the GIL is released.
#[pyfunction]
#[pyo3(signature = (*cases, default=false, timeout=None))]
pub(crate) fn select_blocking(
    py: Python<'_>,
    cases: &Bound<'_, PyTuple>,
    default: bool,
    timeout: Option<f64>,
) -> PyResult<Py<PyAny>> {
    let op = SelectOp::from_args(cases, default, timeout)?;
    if op.default || op.timeout == Some(Duration::ZERO) {
        return match op.attempt(py, None) {
            Attempt::Ready(r) => r,
            _ => SelectOp::nothing(py),
        };
    }
    let timeout = op.timeout;
    block(py, &op, timeout)
}

// ---- the hot methods' calls ----------------------------------------------
//
// `await ch.send(v)` and `await ch.recv()` inside a G cost a PyO3 method
// call each (a trampoline, then argument parsing for the optional timeout)
// on top of the operation, as much again as making the token. Their method
// descriptors are re-pointed at `send_fast`/`recv_fast`, which handle the
// common call (positional value, no timeout, inside a step: PyO3 counts the
// thread attached) directly and pass every other call, unchanged, to PyO3's
// own entry point.

/// PyO3's entry points for `Chan.send` and `Chan.recv`, saved by
/// [`install_fast_methods`] (set once at module init, before any call).
static SEND_ORIG: AtomicPtr<()> = AtomicPtr::new(std::ptr::null_mut());
static RECV_ORIG: AtomicPtr<()> = AtomicPtr::new(std::ptr::null_mut());

type FastCall = unsafe extern "C" fn(
    *mut ffi::PyObject,
    *const *mut ffi::PyObject,
    ffi::Py_ssize_t,
    *mut ffi::PyObject,
) -> *mut ffi::PyObject;

/// Calls the entry point saved in `orig`.
///
/// # Safety
/// `orig` holds a `FastCall` saved by `install_fast_methods`; the other
/// arguments are a METH_FASTCALL|METH_KEYWORDS call's.
unsafe fn call_orig(
    orig: &AtomicPtr<()>,
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: only `install_fast_methods` stores here, a `FastCall`, before
    // it points a descriptor at the function calling us.
    let f: FastCall = unsafe { std::mem::transmute(orig.load(Relaxed)) };
    // SAFETY: the caller's contract.
    unsafe { f(slf, args, nargs, kwnames) }
}

/// A token made on the fast path, as a new reference (NULL with an
/// exception set on failure).
fn token_ptr(py: Python<'_>, make: impl FnOnce() -> PyResult<Py<Token>>) -> *mut ffi::PyObject {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(make)).unwrap_or_else(|_| {
        Err(pyo3::panic::PanicException::new_err(
            "gmprt internal error: a channel call panicked (please file a bug)",
        ))
    });
    match r {
        Ok(t) => t.into_ptr(),
        Err(e) => {
            e.restore(py);
            std::ptr::null_mut()
        }
    }
}

/// `Chan.send`'s METH_FASTCALL|METH_KEYWORDS entry ("the hot methods").
///
/// # Safety
/// Installed by `install_fast_methods` as `Chan.send`'s method: CPython
/// calls it attached, with `slf` a `Chan` (the method descriptor checks
/// it) and `args` holding `nargs` live objects.
unsafe extern "C" fn send_fast(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    if nargs == 1 && kwnames.is_null() && crate::token::in_step() {
        // SAFETY: inside a step PyO3 counts the thread attached
        // (`token::in_step`); `slf` is a Chan and `args[0]` a live object
        // (this function's contract).
        unsafe {
            let py = Python::assume_attached();
            let ch = Bound::from_borrowed_ptr(py, slf).cast_into_unchecked::<PyChan>();
            let value = Bound::from_borrowed_ptr(py, *args).unbind();
            return token_ptr(py, || {
                Await::token_with(
                    SendOp {
                        ch: ch.unbind(),
                        value,
                    },
                    None,
                )
                .into_object(py)
            });
        }
    }
    // SAFETY: PyO3's own entry, with the call as we got it.
    unsafe { call_orig(&SEND_ORIG, slf, args, nargs, kwnames) }
}

/// `Chan.recv`'s METH_FASTCALL|METH_KEYWORDS entry ("the hot methods").
///
/// # Safety
/// As [`send_fast`].
unsafe extern "C" fn recv_fast(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    if nargs == 0 && kwnames.is_null() && crate::token::in_step() {
        // SAFETY: as in `send_fast`.
        unsafe {
            let py = Python::assume_attached();
            let ch = Bound::from_borrowed_ptr(py, slf).cast_into_unchecked::<PyChan>();
            return token_ptr(py, || {
                Await::token_with(
                    RecvOp {
                        ch: ch.unbind(),
                        iter: false,
                    },
                    None,
                )
                .into_object(py)
            });
        }
    }
    // SAFETY: PyO3's own entry, with the call as we got it.
    unsafe { call_orig(&RECV_ORIG, slf, args, nargs, kwnames) }
}

/// Points `Chan.send` and `Chan.recv` at their fast entries ("the hot
/// methods"), each only if PyO3 made it the expected METH_FASTCALL |
/// METH_KEYWORDS method descriptor; otherwise it stays PyO3's.
pub(crate) fn install_fast_methods(py: Python<'_>) -> PyResult<()> {
    let tp = py.get_type::<PyChan>();
    let fast: [(&str, FastCall, &AtomicPtr<()>); 2] = [
        ("send", send_fast, &SEND_ORIG),
        ("recv", recv_fast, &RECV_ORIG),
    ];
    for (name, f, orig) in fast {
        // On the type, a method descriptor's __get__ returns itself.
        let d = tp.getattr(name)?;
        // SAFETY: attached; the type check comes first, so the cast reads
        // a `PyMethodDescrObject`, whose method def PyO3 made for good
        // (it lives as long as the type). The new def is leaked the same
        // way, and `orig` is stored before the descriptor points at `f`.
        unsafe {
            let raw = d.as_ptr();
            if ffi::Py_TYPE(raw) != &raw mut ffi::PyMethodDescr_Type {
                continue;
            }
            let descr = raw.cast::<ffi::PyMethodDescrObject>();
            let def = (*descr).d_method;
            if def.is_null() || (*def).ml_flags != ffi::METH_FASTCALL | ffi::METH_KEYWORDS {
                continue;
            }
            let old: FastCall = (*def).ml_meth.PyCFunctionFastWithKeywords;
            orig.store(old as *mut (), Relaxed);
            let new = Box::leak(Box::new(ffi::PyMethodDef {
                ml_meth: ffi::PyMethodDefPointer {
                    PyCFunctionFastWithKeywords: f,
                },
                ..*def
            }));
            (*descr).d_method = new;
        }
    }
    Ok(())
}
