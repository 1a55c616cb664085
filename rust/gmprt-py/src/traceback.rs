//! traceback: the binding's half of a goroutine dump. The core walks every
//! live G and holds each runnable or parked one still for a moment
//! (`Sched::for_each_g`); here that moment is spent taking references
//! (`PyBody::snapshot`) and nothing else, and the references are turned
//! into Python values after every G is let go. `gmprt.goroutines()` (in
//! python/gmprt/_traceback.py) walks the coroutines' await chains and
//! formats the dump from what this returns.
//!
//! # Why nothing more happens while a G is held
//!
//! Its wakers spin until it is let go. Running Python code there (a
//! `__repr__`, a finalizer run by an allocation that triggers the cyclic
//! GC) could drop the GIL to an M whose wake of this very G would then
//! spin holding the GIL the dumper needs back. Reference increments,
//! `PyCode_Addr2Line` and Rust allocations do not release the GIL.

use std::sync::{Mutex, OnceLock};

use gmprt_core::{GState, WaitReason};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use crate::body::{PyBody, Snap};
use crate::rt::sched;

/// One G as the core saw it, with what was taken from its body.
struct Seen {
    id: u64,
    state: GState,
    reason: WaitReason,
    wait_us: u64,
    thread: Option<u64>,
    snap: Option<Snap>,
}

/// `_gmprt._goroutines()`: every live G of the running runtime (empty when
/// none runs), as tuples ``(id, state, wait, wait_seconds, thread, handle,
/// coro, creator, origin_code, origin_line, chans)``, where ``chans`` is
/// what a parked G's wait can only end through (`Wait::chans`: a list of
/// channels, or None). For the Python wrapper.
#[pyfunction]
pub(crate) fn _goroutines(py: Python<'_>) -> PyResult<Bound<'_, PyList>> {
    let out = PyList::empty(py);
    let Some(sched) = sched() else {
        return Ok(out);
    };
    let mut seen = Vec::new();
    sched.for_each_g(|v| {
        let snap = v
            .body
            .and_then(|b| b.as_any())
            .and_then(|a| a.downcast_ref::<PyBody>())
            .map(|b| b.snapshot(py));
        seen.push(Seen {
            id: v.id,
            state: v.state,
            reason: v.reason,
            wait_us: v.wait_us,
            thread: v.thread,
            snap,
        });
    });
    // A sync G inside a `_blocking` call says what it waits on through
    // its cancel registration ("G 4 [chan receive, in a sync G]").
    let blocked: Vec<(u64, String)> = crate::cancel::blocked_sync_gs()
        .into_iter()
        .filter_map(|line| {
            let rest = line.strip_prefix("G ")?;
            let (id, rest) = rest.split_once(" [")?;
            let what = rest.strip_suffix(", in a sync G]")?;
            Some((id.parse().ok()?, what.to_string()))
        })
        .collect();
    for s in seen {
        let waiting = s.state == GState::Waiting;
        let wait = match (&s.snap, waiting) {
            (Some(Snap { token: Some(t), .. }), true) => Some(t.get().describe()),
            (_, true) => Some(s.reason.as_str().to_string()),
            _ if s.state == GState::Syscall => blocked
                .iter()
                .find(|(id, _)| *id == s.id)
                .map(|(_, w)| w.clone()),
            _ => None,
        };
        let wait_seconds = waiting.then(|| s.wait_us as f64 / 1e6);
        let chans = match (&s.snap, waiting) {
            (Some(Snap { token: Some(t), .. }), true) => t.get().chans(py),
            _ => None,
        };
        let (handle, coro, creator, code, line) = match s.snap {
            Some(sn) => (
                Some(sn.handle),
                sn.coro,
                sn.creator,
                sn.origin_code,
                sn.origin_line,
            ),
            None => (None, None, None, None, None),
        };
        let t = PyTuple::new(
            py,
            [
                s.id.into_pyobject(py)?.into_any(),
                s.state.as_str().into_pyobject(py)?.into_any(),
                wait.into_pyobject(py)?.into_any(),
                wait_seconds.into_pyobject(py)?.into_any(),
                s.thread.into_pyobject(py)?.into_any(),
                handle.into_pyobject(py)?.into_any(),
                coro.into_pyobject(py)?.into_any(),
                creator.into_pyobject(py)?.into_any(),
                code.into_pyobject(py)?.into_any(),
                line.into_pyobject(py)?.into_any(),
                chans.into_pyobject(py)?.into_any(),
            ],
        )?;
        out.append(t)?;
    }
    Ok(out)
}

/// The Python half (`gmprt._traceback`), registered once at import: the
/// runtime calls its `_on_sigquit` and `_stacks` without importing a
/// module above it.
static HOOKS: OnceLock<Py<PyAny>> = OnceLock::new();

/// `_gmprt._set_traceback(module)`: called by `gmprt._traceback` at import.
#[pyfunction]
pub(crate) fn _set_traceback(module: Py<PyAny>) {
    let _ = HOOKS.set(module);
}

/// Each live G's formatted stack by id (`_traceback._stacks`), for the
/// Deadlock message; empty if the hooks are missing or fail.
pub(crate) fn stacks(py: Python<'_>) -> Vec<(u64, String)> {
    let got = || -> PyResult<Vec<(u64, String)>> {
        let Some(m) = HOOKS.get() else {
            return Ok(Vec::new());
        };
        let d = m.bind(py).call_method0("_stacks")?;
        d.cast::<PyDict>()?
            .iter()
            .map(|(k, v)| Ok((k.extract()?, v.extract()?)))
            .collect()
    };
    got().unwrap_or_default()
}

/// `kill -QUIT` prints the dump during `run()` (`_traceback._on_sigquit`):
/// the handler is installed for the life of `run()`, restored after. Only
/// on the main thread (the only one that may set handlers), and only over
/// the default action: a program's own SIGQUIT handler stays.
pub(crate) struct SigQuit<'py> {
    py: Python<'py>,
    installed: bool,
}

impl<'py> SigQuit<'py> {
    pub(crate) fn install(py: Python<'py>) -> SigQuit<'py> {
        let installed = (|| -> PyResult<bool> {
            let Some(m) = HOOKS.get() else {
                return Ok(false);
            };
            let signal = py.import("signal")?;
            let quit = signal.getattr("SIGQUIT")?;
            if !signal
                .call_method1("getsignal", (&quit,))?
                .eq(signal.getattr("SIG_DFL")?)?
            {
                return Ok(false);
            }
            signal.call_method1("signal", (quit, m.bind(py).getattr("_on_sigquit")?))?;
            Ok(true)
        })()
        .unwrap_or(false);
        SigQuit { py, installed }
    }
}

impl Drop for SigQuit<'_> {
    fn drop(&mut self) {
        if self.installed {
            let _ = self.py.import("signal").and_then(|s| {
                s.call_method1("signal", (s.getattr("SIGQUIT")?, s.getattr("SIG_DFL")?))
            });
        }
    }
}

/// What the last `_schedtrace()` line saw of which runtime (its address):
/// the "since the last line" fields of the debug endpoint's line.
static LAST_TRACE: Mutex<Option<(usize, gmprt_core::TraceDelta)>> = Mutex::new(None);

/// `_gmprt._schedtrace(detail=False)`: the schedtrace line now (None when
/// no runtime runs); handoffs and steals count since the previous call.
#[pyfunction]
#[pyo3(signature = (detail=false))]
pub(crate) fn _schedtrace(py: Python<'_>, detail: bool) -> Option<String> {
    let sched = sched()?;
    let key = std::sync::Arc::as_ptr(&sched) as usize;
    py.detach(|| {
        let mut last = crate::lock::lock(&LAST_TRACE);
        if last.as_ref().is_none_or(|(k, _)| *k != key) {
            *last = Some((key, gmprt_core::TraceDelta::default()));
        }
        let (_, prev) = last.as_mut().expect("just set");
        Some(sched.schedtrace(sched.uptime(), prev, detail))
    })
}
