//! gmprt._gmprt: the Python face of gmprt-core.
//!
//! Thin by design: `runtime` owns `run()`/`go()` and the M hooks, `body`
//! steps Python Gs, `token` is the awaitable protocol, `handle` is `gmprt.G`,
//! `time` is `sleep` and deadlines, `net` is `gmprt.net` and the fd waits.
//! The scheduler and the netpoller live in gmprt-core and know nothing of
//! Python.

mod body;
mod handle;
mod net;
mod runtime;
mod time;
mod token;

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyRuntimeError, PyTimeoutError};
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

/// Suspend the calling G for ``seconds``: ``await gmprt.sleep(0.5)``.
///
/// The G parks on a timer of the netpoller and costs no thread while it
/// sleeps (a million sleeping Gs are fine). It wakes no earlier than
/// ``seconds`` after the call, usually within a millisecond after.
/// ``await gmprt.sleep(0)`` just yields: the G goes behind the other
/// runnable Gs and resumes after them.
///
/// Raises:
///     ValueError: ``seconds`` is negative or NaN.
#[pyfunction]
fn sleep(seconds: f64) -> PyResult<Token> {
    let until = time::after(seconds, "sleep length")?;
    if seconds == 0.0 {
        return Ok(Token::new(Op::Yield));
    }
    Ok(Token::wait(time::Sleep::new(until)))
}

#[pymodule(gil_used = false)]
fn _gmprt(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_function(wrap_pyfunction!(runtime::run, m)?)?;
    m.add_function(wrap_pyfunction!(runtime::go, m)?)?;
    m.add_function(wrap_pyfunction!(runtime::stats, m)?)?;
    m.add_function(wrap_pyfunction!(sleep, m)?)?;
    m.add_function(wrap_pyfunction!(net::listen, m)?)?;
    m.add_function(wrap_pyfunction!(net::dial, m)?)?;
    m.add_function(wrap_pyfunction!(net::wait_readable, m)?)?;
    m.add_function(wrap_pyfunction!(net::wait_writable, m)?)?;
    m.add_class::<net::Listener>()?;
    m.add_class::<net::Conn>()?;
    m.add_class::<handle::GHandle>()?;
    m.add_class::<Token>()?;
    m.add("Deadlock", py.get_type::<Deadlock>())?;
    m.add("Timeout", py.get_type::<Timeout>())?;
    m.add("ChanClosed", py.get_type::<ChanClosed>())?;
    Ok(())
}
