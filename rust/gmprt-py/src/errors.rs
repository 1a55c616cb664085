//! The exceptions of `gmprt`: each says which rule the caller broke or
//! what the runtime saw. Raised from every file of the binding; `lib`
//! registers them on the module.

use pyo3::create_exception;
use pyo3::exceptions::{
    PyBaseException, PyException, PyOverflowError, PyRuntimeError, PyTimeoutError, PyTypeError,
    PyValueError,
};
use pyo3::prelude::*;

/// `e` with its exception object made now, without letting go of the GIL.
///
/// PyO3 makes a lazy error's object (`new_err`) the first time Rust looks
/// at it (`value`, `into_value`, `is_instance_of`), and does it with the
/// GIL released (pyo3 issue 4764, against a deadlock of its `Once`): any M
/// waiting for the GIL takes it, and this M waits to get it back. On the
/// cancel path, where every cancelled G is thrown an error made in Rust,
/// that was a context switch every few Gs (12,000 for 100,000 cancels, a
/// third of the time). Raising the error and fetching it back makes the
/// object in place. Errors that came out of Python are made already.
pub(crate) fn made(py: Python<'_>, e: PyErr) -> PyErr {
    e.restore(py);
    PyErr::fetch(py)
}

create_exception!(
    gmprt,
    Deadlock,
    PyRuntimeError,
    "Raised by gmprt.run() when every G is asleep and nothing can wake one."
);
create_exception!(
    gmprt,
    Timeout,
    PyTimeoutError,
    "A gmprt operation's deadline passed (a TimeoutError)."
);
create_exception!(
    gmprt,
    Cancelled,
    PyBaseException,
    "Raised at a G's park point (an await, or a _blocking call) once it is cancelled: by \
     g.cancel(), by its gmprt.Group, by a deadline scope, or at shutdown. A BaseException, \
     so that `except Exception` does not swallow it; let it propagate."
);
create_exception!(
    gmprt,
    ChanClosed,
    PyException,
    "Send on a closed channel, or receive on one that is closed and drained."
);
create_exception!(
    gmprt,
    ChanEmpty,
    PyException,
    "Chan.try_recv() found nothing to receive (no buffered value, no waiting sender)."
);

/// `obj` as an integer in `lo..=hi`, or an error that names the argument
/// and the accepted range: ValueError when out of range (however far, even
/// past 64 bits), TypeError when not an integer. PyO3's own conversion
/// says only "out of range integral type conversion attempted".
pub(crate) fn int_arg(obj: &Bound<'_, PyAny>, what: &str, lo: i64, hi: i64) -> PyResult<i64> {
    let range = || format!("{what} must be an integer from {lo} to {hi}");
    match obj.extract::<i64>() {
        Ok(v) => int_in(v, what, lo, hi),
        Err(e) if e.is_instance_of::<PyOverflowError>(obj.py()) => {
            Err(PyValueError::new_err(format!("{}, got {obj}", range())))
        }
        Err(_) => Err(PyTypeError::new_err(format!(
            "{}, got {}",
            range(),
            obj.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))),
    }
}

/// As [`int_arg`], for an optional argument with a default: PyO3 would
/// convert it itself and say only "out of range integral type conversion
/// attempted" for a number past 64 bits.
pub(crate) fn int_or(
    obj: Option<&Bound<'_, PyAny>>,
    default: i64,
    what: &str,
    lo: i64,
    hi: i64,
) -> PyResult<i64> {
    match obj {
        None => Ok(default),
        Some(o) => int_arg(o, what, lo, hi),
    }
}

/// As [`int_arg`], for an argument PyO3 already made an `i64`.
pub(crate) fn int_in(v: i64, what: &str, lo: i64, hi: i64) -> PyResult<i64> {
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(PyValueError::new_err(format!(
            "{what} must be an integer from {lo} to {hi}, got {v}"
        )))
    }
}
