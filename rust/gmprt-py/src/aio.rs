//! The native half of `gmprt.aio`: what the driver and `await g` need to
//! meet asyncio.
//!
//! `gmprt.aio` (Python) installs two hooks here when it is imported
//! ([`_set_aio_hooks`]):
//!
//! - `bridge(fut)`: the driver found an asyncio future yielded by a G
//!   (`_asyncio_future_blocking`). The hook checks that the future belongs
//!   to a running gmprt loop and returns a token made by
//!   [`_future_wait`]: the G parks on it like on any gmprt wait, and the
//!   future's done callback (run by the loop G) wakes it. A cancel of the
//!   parked G withdraws the wait and calls `on_cancel`, which cancels the
//!   future on its loop.
//! - `await_g(handle)`: `await g` ran in asyncio code (a callback or task
//!   of a gmprt loop, where asyncio's running loop is set). It returns an
//!   asyncio future of that loop, completed when the G ends, whose
//!   `__await__` replaces the G's own token; None to keep the token.
//!
//! Without the hooks (nobody imported `gmprt.aio`), no gmprt loop can be
//! running, and the driver's `TypeError` stays.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use gmprt_core::Waker;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyTuple;

use crate::lock::lock;
use crate::token::{current_g, Poll, Token, Wait};

struct Hooks {
    bridge: Py<PyAny>,
    await_g: Py<PyAny>,
}

static HOOKS: PyOnceLock<Hooks> = PyOnceLock::new();

/// The id of the running `gmprt.aio` loop's G while it runs asyncio code
/// (callbacks and task steps, not its own waits), or 0. One loop runs per
/// runtime, and one runtime per process.
static LOOP_G: AtomicU64 = AtomicU64::new(0);

/// `gmprt.aio`: its loop G starts running callbacks (its id) or stops (0).
#[pyfunction]
pub(crate) fn _set_aio_loop_g(id: u64) {
    LOOP_G.store(id, Relaxed);
}

/// Whether G `id` is the running `gmprt.aio` loop's G: the code it runs is
/// asyncio's (callbacks and task steps), whose awaits reach asyncio's Task,
/// not the driver.
pub(crate) fn is_loop_g(id: u64) -> bool {
    LOOP_G.load(Relaxed) == id
}
static GET_RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `gmprt.aio` registers its bridge (see the module docs). Once per process:
/// a second call is ignored (a re-imported module keeps the first hooks,
/// whose loop class is the one its loops are instances of).
#[pyfunction]
pub(crate) fn _set_aio_hooks(py: Python<'_>, bridge: Py<PyAny>, await_g: Py<PyAny>) {
    let _ = HOOKS.set(py, Hooks { bridge, await_g });
}

/// The G the caller is stepping, or None (a foreign thread, or the thread in
/// `run()`). `gmprt.aio` uses it to tell its loop G from every other caller.
#[pyfunction]
pub(crate) fn _current_g() -> Option<u64> {
    current_g()
}

/// Called by the loop G when it starts (`on`) and ends: sysmon then
/// reports a callback or task step that keeps the loop for over 100 ms,
/// even one that sleeps in a C call (core `Sched::set_watched_g`).
#[pyfunction]
pub(crate) fn _watch_loop_g(on: bool) -> PyResult<()> {
    let id = if on { current_g().unwrap_or(0) } else { 0 };
    crate::rt::sched()
        .ok_or_else(|| pyo3::exceptions::PyRuntimeError::new_err("no gmprt runtime is running"))?
        .set_watched_g(id);
    Ok(())
}

/// Whether G `g` is the watched asyncio loop G (its long steps are worded
/// as a stalled loop): the runtime's own record, not a copy.
pub(crate) fn is_watched(g: u64) -> bool {
    g != 0 && crate::rt::sched().is_some_and(|s| s.watched_g() == g)
}

/// `func()` on the thread in `gmprt.run()` (the main thread, where `run()`
/// was called there), from a G or any thread; blocks until it ran and
/// returns its result or raises its exception. `gmprt.aio` sets signal
/// handlers with it from the loop G (`rt::call_in_run_thread`).
#[pyfunction]
pub(crate) fn _call_in_run_thread(py: Python<'_>, func: Py<PyAny>) -> PyResult<Py<PyAny>> {
    crate::rt::call_in_run_thread(py, func)
}

/// Whether a gmprt runtime is running (`gmprt.go()` would work).
#[pyfunction]
pub(crate) fn _in_runtime() -> bool {
    crate::rt::sched().is_some()
}

/// The driver, for an object a G yielded that is not a gmprt token: the
/// token to park on instead, if it is an asyncio future and `gmprt.aio`
/// bridges it. `Ok(None)`: not a future, or no bridge (the caller raises
/// its `TypeError`); `Err`: the bridge refused it (a future of no running
/// gmprt loop), to be thrown into the G.
pub(crate) fn bridge<'py>(
    py: Python<'py>,
    obj: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, Token>>> {
    let Some(hooks) = HOOKS.get(py) else {
        return Ok(None);
    };
    if !obj.hasattr(pyo3::intern!(py, "_asyncio_future_blocking"))? {
        return Ok(None);
    }
    let tok = hooks.bridge.bind(py).call1((obj,))?;
    Ok(Some(tok.cast_into::<Token>()?))
}

/// `GHandle.__await__`: asyncio's replacement awaitable when asyncio code
/// of a gmprt loop awaits `handle`, else None.
pub(crate) fn await_g<'py>(
    py: Python<'py>,
    handle: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let Some(hooks) = HOOKS.get(py) else {
        return Ok(None);
    };
    // One C call on the path every `await g` of every G takes: asyncio's
    // running loop is set only while a loop G runs callbacks.
    let get = GET_RUNNING_LOOP.get_or_try_init(py, || {
        PyResult::Ok(py.import("asyncio")?.getattr("_get_running_loop")?.unbind())
    })?;
    if get.bind(py).call0()?.is_none() {
        return Ok(None);
    }
    let r = hooks.await_g.bind(py).call1((handle,))?;
    Ok((!r.is_none()).then_some(r))
}

#[derive(Default)]
struct Shared {
    /// The future's done callback ran.
    done: bool,
    /// The parked G.
    waker: Option<Waker>,
}

/// A G parked on an asyncio future (see the module docs).
struct FutureWait {
    shared: Arc<Mutex<Shared>>,
    /// Called (attached) when the parked G is cancelled before the future
    /// is done: cancels the future on its loop, thread-safely.
    on_cancel: Py<PyAny>,
    what: String,
}

impl Wait for FutureWait {
    fn poll(&self, py: Python<'_>) -> Poll {
        if lock(&self.shared).done {
            Poll::Ready(Ok(py.None()))
        } else {
            Poll::Pending
        }
    }

    fn park(&self, _py: Python<'_>, waker: Waker) -> bool {
        let mut s = lock(&self.shared);
        if s.done {
            return false;
        }
        s.waker = Some(waker);
        true
    }

    fn describe(&self) -> String {
        self.what.clone()
    }

    fn cancel(&self, py: Python<'_>) -> bool {
        {
            let mut s = lock(&self.shared);
            if s.done {
                // Its result is there: delivered, the cancel lands later.
                return false;
            }
            s.waker = None;
        }
        // The lock is released: this calls into Python (lock module docs).
        if let Err(e) = self.on_cancel.call0(py) {
            e.write_unraisable(py, Some(self.on_cancel.bind(py)));
        }
        true
    }
}

/// The done callback of an asyncio future a G awaits: wakes the G. Called
/// by the loop G (any thread may call it).
#[pyclass(frozen, module = "gmprt._gmprt")]
pub(crate) struct FutureWake {
    shared: Arc<Mutex<Shared>>,
}

#[pymethods]
impl FutureWake {
    #[pyo3(signature = (*_args))]
    fn __call__(&self, _args: &Bound<'_, PyTuple>) {
        let waker = {
            let mut s = lock(&self.shared);
            s.done = true;
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// A token for a G to park on until the returned callback is called, and
/// that callback (`gmprt.aio`'s bridge adds it as the future's done
/// callback). ``on_cancel()`` runs if the G is cancelled first; ``what``
/// names the wait in deadlock reports.
#[pyfunction]
pub(crate) fn _future_wait(on_cancel: Py<PyAny>, what: String) -> (Token, FutureWake) {
    let shared = Arc::new(Mutex::new(Shared::default()));
    let tok = Token::wait(FutureWait {
        shared: shared.clone(),
        on_cancel,
        what,
    });
    // Only the driver ever parks on it; no coroutine awaits it, so it must
    // not warn that it was never awaited.
    tok.forget();
    (tok, FutureWake { shared })
}
