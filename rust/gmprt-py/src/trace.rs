//! `gmprt.trace`'s native half: starts and stops gmprt-core's tracer and
//! hands its Chrome trace-event JSON to `python/gmprt/trace.py`, which
//! owns the files, the flight recorder object and the command line.
//!
//! The tracer is process-wide (one session at a time, as Go's
//! `trace.Start`), so these functions work with or without a running
//! `gmprt.run()`; events come only from runtimes that run meanwhile.

use std::time::Duration;

use gmprt_core::trace::{self, Mode};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// Starts recording. `per_thread` caps each thread's ring (events, 40
/// bytes each); `window` keeps only the last that many seconds (the
/// flight recorder).
#[pyfunction]
#[pyo3(signature = (per_thread, window=None))]
pub(crate) fn _trace_start(per_thread: usize, window: Option<f64>) -> PyResult<()> {
    if per_thread == 0 {
        return Err(PyValueError::new_err("per_thread must be at least 1"));
    }
    let window = match window {
        None => None,
        Some(w) if w.is_finite() && w > 0.0 => Some(Duration::from_secs_f64(w)),
        Some(w) => {
            return Err(PyValueError::new_err(format!(
                "the window must be a positive number of seconds, got {w}"
            )))
        }
    };
    trace::start(Mode { per_thread, window }).map_err(|e| PyRuntimeError::new_err(e.to_string()))
}

/// Stops recording; the JSON of what was kept, or None if nothing was
/// being recorded.
#[pyfunction]
pub(crate) fn _trace_stop(py: Python<'_>) -> PyResult<Option<Bound<'_, PyBytes>>> {
    let snap = py.detach(trace::stop);
    snap.map(|s| json(py, &s)).transpose()
}

/// The JSON of what the recording session kept so far; it goes on
/// recording. None if nothing is being recorded.
#[pyfunction]
pub(crate) fn _trace_snapshot(py: Python<'_>) -> PyResult<Option<Bound<'_, PyBytes>>> {
    let snap = py.detach(trace::snapshot);
    snap.map(|s| json(py, &s)).transpose()
}

/// Whether a session records.
#[pyfunction]
pub(crate) fn _trace_enabled() -> bool {
    trace::enabled()
}

fn json<'py>(py: Python<'py>, snap: &trace::Snapshot) -> PyResult<Bound<'py, PyBytes>> {
    let mut out = Vec::new();
    py.detach(|| trace::write_chrome(snap, &mut out))
        .map_err(|e| PyRuntimeError::new_err(format!("writing the trace: {e}")))?;
    Ok(PyBytes::new(py, &out))
}
