//! gmprt._gmprt: the Python face of gmprt-core.
//!
//! Thin by design: `runtime` owns `run()`/`go()` and the M hooks, `body`
//! steps Python Gs, `token` is the awaitable protocol, `handle` is `gmprt.G`,
//! `time` is `sleep` and deadlines, `net` is `gmprt.net` and the fd waits,
//! `chan` is `gmprt.Chan`/`select` and `sync` the WaitGroup, Mutex and
//! Semaphore, both on `parked` (await or block on one core operation).
//! The scheduler and the netpoller live in gmprt-core and know nothing of
//! Python.

mod body;
mod chan;
mod handle;
mod net;
mod parked;
mod runtime;
mod sync;
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
create_exception!(
    gmprt,
    ChanEmpty,
    PyException,
    "Chan.try_recv() found nothing to receive (no buffered value, no waiting sender)."
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
    token::install_am_send(py);
    m.add("Deadlock", py.get_type::<Deadlock>())?;
    m.add("Timeout", py.get_type::<Timeout>())?;
    m.add("ChanClosed", py.get_type::<ChanClosed>())?;
    m.add("ChanEmpty", py.get_type::<ChanEmpty>())?;
    m.add_class::<chan::PyChan>()?;
    m.add_class::<chan::RecvCase>()?;
    m.add_class::<chan::SendCase>()?;
    m.add_class::<chan::ClosedType>()?;
    m.add("CLOSED", chan::closed_sentinel(py)?.clone_ref(py))?;
    m.add_function(wrap_pyfunction!(chan::select, m)?)?;
    m.add_function(wrap_pyfunction!(chan::select_blocking, m)?)?;
    m.add_class::<sync::PyWaitGroup>()?;
    m.add_class::<sync::PyMutex>()?;
    m.add_class::<sync::PySemaphore>()?;
    Ok(())
}
