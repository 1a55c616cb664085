//! gmprt._gmprt: the Python face of gmprt-core.
//!
//! Thin by design: `runtime` owns `run()`/`go()` and the M hooks, `body`
//! steps Python Gs, `token` is the awaitable protocol, `handle` is `gmprt.G`.
//! The scheduler itself lives in gmprt-core and knows nothing of Python.

mod body;
mod handle;
mod runtime;
mod token;

use pyo3::create_exception;
use pyo3::exceptions::{
    PyException, PyNotImplementedError, PyRuntimeError, PyTimeoutError, PyValueError,
};
use pyo3::prelude::*;

use token::{Op, Token};

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
    ChanClosed,
    PyException,
    "Send on a closed channel, or receive on one that is closed and drained."
);

/// Suspend the calling G for ``seconds``; ``await gmprt.sleep(0)`` yields to
/// the other runnable Gs and resumes after them.
///
/// Raises:
///     ValueError: ``seconds`` is negative or NaN.
#[pyfunction]
fn sleep(seconds: f64) -> PyResult<Token> {
    if seconds.is_nan() || seconds < 0.0 {
        return Err(PyValueError::new_err(format!(
            "sleep length must be >= 0, got {seconds}"
        )));
    }
    if seconds == 0.0 {
        return Ok(Token::new(Op::Yield));
    }
    Err(PyNotImplementedError::new_err(
        "timed sleep arrives with the netpoller and timers",
    ))
}

#[pymodule(gil_used = false)]
fn _gmprt(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_function(wrap_pyfunction!(runtime::run, m)?)?;
    m.add_function(wrap_pyfunction!(runtime::go, m)?)?;
    m.add_function(wrap_pyfunction!(runtime::stats, m)?)?;
    m.add_function(wrap_pyfunction!(sleep, m)?)?;
    m.add_class::<handle::GHandle>()?;
    m.add_class::<Token>()?;
    m.add("Deadlock", py.get_type::<Deadlock>())?;
    m.add("Timeout", py.get_type::<Timeout>())?;
    m.add("ChanClosed", py.get_type::<ChanClosed>())?;
    Ok(())
}
