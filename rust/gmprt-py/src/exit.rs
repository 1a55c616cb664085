//! Ending a runtime with Gs still inside a step, and keeping every thread
//! of ours out of Python once the interpreter finalizes.
//!
//! When `run()` ends (main returned, Ctrl-C, an exception, interpreter
//! exit) the scheduler is stopped, so no G starts a new step; but an M may
//! be inside one, in one of three places:
//!
//! 1. **Running Python** (a coroutine that never awaits, a CPU-bound sync
//!    G). It would run forever. [`stop_running_steps`] raises
//!    [`Shutdown`] in it with `PyThreadState_SetAsyncExc`: CPython raises
//!    it at the thread's next bytecode boundary (the eval breaker, which
//!    loops check on every back edge), the G's `except`/`finally` blocks
//!    run, and the step ends within a GIL switch interval (1 ms while
//!    `run()` runs).
//! 2. **Blocked in C** with the GIL released (`time.sleep`, a C extension,
//!    a blocking gmprt call such as `recv_blocking`). Nothing can interrupt
//!    it; the pending `Shutdown` fires when the call returns. `run()` waits
//!    for it, bounded by [`STOP_WAIT`], then *abandons* the runtime and
//!    returns.
//! 3. **Parked or between steps**: nothing to do; the M exits at once.
//!
//! # Abandoned Ms never run Python again
//!
//! An M abandoned in C outlives `run()`. When its call returns it must not
//! resume the G (whose `run()` is over), and after the interpreter starts
//! finalizing it must not even take the GIL: CPython < 3.14 then calls
//! `pthread_exit` in `take_gil`, whose forced unwind through Rust frames
//! aborts (`catch_unwind` on a foreign exception: "FATAL: exception not
//! rethrown") or runs destructors without the GIL (`PyContext_Exit`,
//! decrefs: `PYTHONMALLOC=debug` aborts there). So:
//!
//! - **Before finalization**, the call returns into CPython, which retakes
//!   the GIL and raises the pending `Shutdown` at once. Instantiating it
//!   runs `Shutdown.__new__` (Rust, below) on that thread, before any
//!   `except`/`finally` of the G: on an abandoned M it releases the GIL and
//!   parks the thread for good ([`park_if_abandoned`]). `run()` raises
//!   `Shutdown` again in every step it abandons, so a G that caught the
//!   first one and kept going is stopped the same way. (CPython 3.11
//!   instantiates an exception lazily, at the first handler or when Rust
//!   reads it; the wrappers below check the same flag when the G's call
//!   returns, so one that propagates uninstantiated parks there.)
//! - **During finalization**, `take_gil` calls `pthread_exit`. The unwind
//!   leaves CPython's C frames into the call a G step made into Python:
//!   [`iter_send`] and [`call`], declared `"C-unwind"`, each with a
//!   [`ParkOnForcedUnwind`] guard right at the call, which parks the
//!   thread before any Rust destructor or `catch_unwind` sees the unwind
//!   (PyO3 0.29 does the same inside `PyEval_RestoreThread` and
//!   `PyGILState_Ensure`, so the Ms' own waits, `py.detach`, hang there
//!   instead of unwinding). CPython's own daemon threads die in
//!   `pthread_exit` there; ours, which cannot unwind, sleep until the
//!   process exits.
//!
//! A parked M holds no GIL and no lock, and is freed with the process. The
//! cost is what a daemon thread costs: a G abandoned in C never runs its
//! `finally` blocks.
//!
//! # Interpreter exit
//!
//! `run()` on the main thread always returns before the interpreter
//! finalizes. One in another thread may not: the atexit hook [`at_exit`]
//! (registered at import, so it runs before finalization starts) stops it
//! as Ctrl-C would and waits for it to return.

use std::cell::RefCell;
use std::os::raw::c_long;
use std::sync::atomic::{AtomicBool, Ordering::*};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gmprt_core::sched::ParkOnForcedUnwind;
use pyo3::exceptions::PyBaseException;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::rt::{self, RunState};

/// How long `run()` waits, after stopping the scheduler, for Ms still
/// inside a step (interrupted, or blocked in C) before it abandons them and
/// returns. Documented in the README ("Shutdown") and DESIGN §3.
pub(crate) const STOP_WAIT: Duration = Duration::from_millis(100);

/// How long a step may go on by itself after the stop before `Shutdown` is
/// raised in it: an ordinary step ends in microseconds (sysmon calls one
/// of 10 ms long), so only a step that would not end gets the exception.
const SETTLE: Duration = Duration::from_millis(10);

/// How long the atexit hook waits for a `run()` in another thread.
const EXIT_WAIT: Duration = Duration::from_secs(2);

/// Raised inside a G that is still running Python when ``gmprt.run()``
/// ends (main returned, Ctrl-C, an exception): at its next bytecode, so
/// its ``finally`` blocks run. A ``BaseException``, so ``except
/// Exception`` does not swallow it. A G that swallows it anyway, or is
/// blocked in a C call for more than 100 ms, is abandoned: its thread
/// never runs Python again.
#[pyclass(extends = PyBaseException, module = "gmprt", frozen, subclass)]
pub(crate) struct Shutdown;

#[pymethods]
impl Shutdown {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(
        py: Python<'_>,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) -> Shutdown {
        // The trap: CPython instantiates the pending exception on the G's
        // own thread before any handler of the G runs (module docs).
        park_if_abandoned(py);
        Shutdown
    }
}

std::thread_local! {
    /// On an M: its runtime's `Events::abandoned`, for the M's whole life
    /// ([`enter_m`]). A plain flag, no Python object: TLS outlives the
    /// thread state.
    static ABANDONED: RefCell<Option<Arc<AtomicBool>>> = const { RefCell::new(None) };
}

/// The calling thread is an M of the runtime whose flag this is, from now
/// until [`leave_m`] (`PyHooks::m_main`).
pub(crate) fn enter_m(abandoned: Arc<AtomicBool>) {
    ABANDONED.with(|a| *a.borrow_mut() = Some(abandoned));
}

pub(crate) fn leave_m() {
    ABANDONED.with(|a| a.borrow_mut().take());
}

/// On an M whose `run()` abandoned it: release the GIL and sleep forever,
/// so that the G it was stepping never runs again (module docs). Anywhere
/// else, nothing.
pub(crate) fn park_if_abandoned(py: Python<'_>) {
    // Acquire: pairs with the Release in `stop_running_steps`.
    let abandoned = ABANDONED.with(|a| a.borrow().as_ref().is_some_and(|f| f.load(Acquire)));
    if abandoned {
        py.detach(|| loop {
            std::thread::park();
        });
    }
}

/// The CPython calls a G step makes into Python, with the `"C-unwind"`
/// ABI: pyo3-ffi declares them `"C"`, and a forced unwind out of a `"C"`
/// call is undefined behaviour (in practice it aborts, finding no landing
/// pad for the call). The only unwind that can leave them is CPython's
/// thread exit (module docs); the wrappers stop it at once.
///
/// Called through an opaque pointer, not a second `extern "C-unwind"`
/// declaration of the same symbol: LLVM keeps one declaration per symbol,
/// and where pyo3-ffi's `"C"` one (nounwind) was the one kept, the call
/// lost its landing pad and with it the guard. The forced unwind then
/// reached the step's `catch_unwind` ("FATAL: exception not rethrown"),
/// depending on what else the codegen unit held (tests/test_shutdown.py's
/// `fin` shape, after an unrelated change).
mod unwinding {
    use pyo3::ffi::{self, PyObject, PySendResult};

    type IterSend = unsafe extern "C-unwind" fn(
        *mut PyObject,
        *mut PyObject,
        *mut *mut PyObject,
    ) -> PySendResult;
    type Call =
        unsafe extern "C-unwind" fn(*mut PyObject, *mut PyObject, *mut PyObject) -> *mut PyObject;

    /// # Safety
    /// As `PyIter_Send`.
    pub(super) unsafe fn iter_send(
        iter: *mut PyObject,
        arg: *mut PyObject,
        presult: *mut *mut PyObject,
    ) -> PySendResult {
        // SAFETY: the same function, whose only unwind is CPython's thread
        // exit, which the caller's guard stops; black_box keeps LLVM from
        // turning the call back into one to the nounwind declaration.
        let f: IterSend = std::hint::black_box(unsafe {
            std::mem::transmute::<
                unsafe extern "C" fn(
                    *mut PyObject,
                    *mut PyObject,
                    *mut *mut PyObject,
                ) -> PySendResult,
                IterSend,
            >(ffi::PyIter_Send)
        });
        // SAFETY: the caller's contract.
        unsafe { f(iter, arg, presult) }
    }

    /// # Safety
    /// As `PyObject_Call`.
    pub(super) unsafe fn call(
        callable: *mut PyObject,
        args: *mut PyObject,
        kwargs: *mut PyObject,
    ) -> *mut PyObject {
        // SAFETY: as in `iter_send`.
        let f: Call = std::hint::black_box(unsafe {
            std::mem::transmute::<
                unsafe extern "C" fn(*mut PyObject, *mut PyObject, *mut PyObject) -> *mut PyObject,
                Call,
            >(ffi::PyObject_Call)
        });
        // SAFETY: the caller's contract.
        unsafe { f(callable, args, kwargs) }
    }
}

/// `PyIter_Send(iter, None, out)` for a G step: a forced unwind out of it
/// parks the thread, and on an M abandoned meanwhile the step goes no
/// further (module docs).
///
/// # Safety
/// As `PyIter_Send`: attached, `iter` a live iterator, `out` writable.
pub(crate) unsafe fn iter_send(
    py: Python<'_>,
    iter: *mut ffi::PyObject,
    out: *mut *mut ffi::PyObject,
) -> ffi::PySendResult {
    let guard = ParkOnForcedUnwind::arm();
    // SAFETY: the caller's contract; the declaration is pyo3-ffi's, with
    // the unwind ABI.
    let r = unsafe { unwinding::iter_send(iter, ffi::Py_None(), out) };
    guard.disarm();
    park_if_abandoned(py);
    r
}

/// `f(*args, **kwargs)` for a G step, guarded as [`iter_send`].
pub(crate) fn call<'py>(
    f: &Bound<'py, PyAny>,
    args: &Bound<'py, PyTuple>,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = f.py();
    let kwargs = kwargs.map_or(std::ptr::null_mut(), |k| k.as_ptr());
    let guard = ParkOnForcedUnwind::arm();
    // SAFETY: attached (we hold `py`); every pointer is a live object or
    // NULL for no kwargs; the declaration is pyo3-ffi's, with the unwind ABI.
    let r = unsafe { unwinding::call(f.as_ptr(), args.as_ptr(), kwargs) };
    guard.disarm();
    park_if_abandoned(py);
    // SAFETY: a new reference, or NULL with an exception set.
    unsafe { Bound::from_owned_ptr_or_err(py, r) }
}

/// `obj.name(arg)` for a G step, guarded as [`iter_send`].
pub(crate) fn call_method1<'py>(
    obj: &Bound<'py, PyAny>,
    name: &Bound<'py, pyo3::types::PyString>,
    arg: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let method = obj.getattr(name)?;
    call(&method, &PyTuple::new(obj.py(), [arg])?, None)
}

/// Raises `Shutdown` in every step in progress; returns them.
fn interrupt(py: Python<'_>, rs: &RunState) -> Vec<(u64, u64)> {
    let steps = rs.sched.running_steps();
    let exc = py.get_type::<Shutdown>();
    for &(_, thread) in &steps {
        // SAFETY: attached; `exc` is a live exception class (CPython
        // instantiates it on the target thread, which is what the trap in
        // `Shutdown::new` relies on). An id with no thread state changes
        // nothing. The cast keeps the bits of `pthread_self`, which is
        // what CPython stores as the thread id.
        unsafe { ffi::PyThreadState_SetAsyncExc(thread as c_long, exc.as_ptr()) };
    }
    steps
}

/// Stops what is still running when `run()` ends: stops the scheduler,
/// lets steps in progress end by themselves for [`SETTLE`], raises
/// [`Shutdown`] in those that did not, and waits for every M until `wait`
/// has passed since the call. Ms still inside a step then are abandoned
/// (module docs), each reported on stderr. True when every M exited and
/// was joined.
///
/// The one place that ends running steps: a gentler shutdown (cancelling
/// Gs with a grace period) runs before it and calls it last.
pub(crate) fn stop_running_steps(py: Python<'_>, rs: &RunState, wait: Duration) -> bool {
    let start = Instant::now();
    rs.sched.stop();
    let sched = rs.sched.clone();
    if py.detach(move || sched.join(SETTLE.min(wait))) {
        return true;
    }
    interrupt(py, rs);
    let sched = rs.sched.clone();
    let left = wait.saturating_sub(start.elapsed());
    if py.detach(move || sched.join(left)) {
        return true;
    }
    // Release: pairs with the Acquire in `park_if_abandoned`. Set before
    // the second raise, so that its `Shutdown` traps.
    rs.ev.abandoned.store(true, Release);
    for (g, thread) in interrupt(py, rs) {
        report_abandoned(py, g, thread, wait);
    }
    false
}

fn report_abandoned(py: Python<'_>, g: u64, thread: u64, wait: Duration) {
    let _ = (|| -> PyResult<()> {
        let sys = py.import("sys")?;
        let stack = match sys.call_method0("_current_frames")?.get_item(thread) {
            Ok(frame) => py
                .import("traceback")?
                .call_method1("format_stack", (frame,))?
                .extract::<Vec<String>>()?
                .concat(),
            Err(_) => "  (no Python frame)\n".to_string(),
        };
        let msg = format!(
            "gmprt: G {g} was still inside a step {} ms after run() stopped the runtime \
             (blocked in a call that did not return, or it caught gmprt.Shutdown); it is \
             abandoned: its thread never runs Python again (it sleeps once the call returns) \
             and the G's finally blocks do not run. It is at:\n{stack}",
            wait.as_millis()
        );
        sys.getattr("stderr")?.call_method1("write", (msg,))?;
        Ok(())
    })();
}

/// The atexit hook (registered at import): a `run()` still running in
/// another thread is stopped before the interpreter finalizes (module
/// docs, "Interpreter exit").
#[pyfunction]
pub(crate) fn at_exit(py: Python<'_>) {
    rt::stop_for_exit(py, EXIT_WAIT);
}
