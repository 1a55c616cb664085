//! The exceptions of `gmprt`: each says which rule the caller broke or
//! what the runtime saw. Raised from every file of the binding; `lib`
//! registers them on the module.

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyRuntimeError, PyTimeoutError};

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
