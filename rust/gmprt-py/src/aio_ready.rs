//! `gmprt._gmprt.CallSoon`: a `gmprt.aio` loop's `call_soon`, without
//! Python frames.
//!
//! asyncio's `call_soon` is five Python frames (`call_soon`,
//! `_check_closed`, `_call_soon`, `Handle.__init__`, `get_debug`), and
//! everything asyncio does goes through it: each future's done callbacks,
//! each task wakeup, each new task's first step (three per request of an
//! aiohttp server). Set on the loop as an instance attribute (it shadows
//! the method, as `SockIO` does a transport's), this makes the same
//! `asyncio.Handle` asyncio's would — allocated with `object.__new__` and
//! its slots set as `Handle.__init__` sets them — and appends it to the
//! loop's ready deque. In debug mode it calls asyncio's own `call_soon`,
//! whose thread and callback checks and source tracebacks debug mode is
//! for.
//!
//! The loop holds this object and this object the loop: a cycle the
//! collector sees (`__traverse__`).

use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

/// The slots of `asyncio.Handle` that `Handle.__init__` sets, in the order
/// [`CallSoon::offsets`] holds their offsets.
const SLOTS: [&str; 7] = [
    "_context",
    "_loop",
    "_callback",
    "_args",
    "_cancelled",
    "_repr",
    "_source_traceback",
];

/// A `gmprt.aio` loop's `call_soon` (module docs).
#[pyclass(module = "gmprt._gmprt")]
pub(crate) struct CallSoon {
    event_loop: Option<Py<PyAny>>,
    /// The loop's ``_ready.append``.
    append: Option<Py<PyAny>>,
    /// ``asyncio.Handle``.
    handle_type: Option<Py<PyAny>>,
    /// asyncio's own ``call_soon``, bound to the loop (debug mode).
    base: Option<Py<PyAny>>,
    /// Where in a `Handle` each of [`SLOTS`] lives, found by [`probe`]; None
    /// if that failed (the slots are then set by name).
    offsets: Option<[isize; SLOTS.len()]>,
}

/// What [`CallSoon`] was cleared of by the collector: only reachable from
/// a loop being collected, which nothing calls.
fn cleared() -> PyErr {
    PyRuntimeError::new_err("gmprt.aio: call_soon of a collected loop")
}

/// A new `handle_type` instance, no `__init__` run (`object.__new__`).
fn alloc<'py>(py: Python<'py>, handle_type: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let object_new = py
        .get_type::<pyo3::types::PyAny>()
        .getattr(intern!(py, "__new__"))?;
    object_new.call1((handle_type,))
}

/// The offsets of [`SLOTS`] in a `handle_type` instance: each slot set, by
/// name, to an object of its own, then the instance's words searched for
/// it. `__slots__` members are object pointers stored in the instance,
/// so each is found exactly once; anything else (a type whose instances
/// vary in size, a slot not found, or found twice) gives None.
fn probe(py: Python<'_>, handle_type: &Bound<'_, PyAny>) -> PyResult<Option<[isize; SLOTS.len()]>> {
    let h = alloc(py, handle_type)?;
    let marks: Vec<Bound<'_, PyAny>> = SLOTS
        .iter()
        .map(|_| py.get_type::<pyo3::types::PyAny>().call0())
        .collect::<PyResult<_>>()?;
    for (name, mark) in SLOTS.iter().zip(&marks) {
        h.setattr(*name, mark)?;
    }
    let tp = handle_type.as_ptr().cast::<ffi::PyTypeObject>();
    // SAFETY: `handle_type` is a type (`object.__new__` accepted it).
    let (size, itemsize) = unsafe { ((*tp).tp_basicsize, (*tp).tp_itemsize) };
    if itemsize != 0 {
        return Ok(None);
    }
    let word = std::mem::size_of::<*mut ffi::PyObject>() as isize;
    let head = std::mem::size_of::<ffi::PyObject>() as isize;
    let mut offsets = [0isize; SLOTS.len()];
    for (i, mark) in marks.iter().enumerate() {
        let found: Vec<isize> = (head / word..size / word)
            .map(|w| w * word)
            // SAFETY: every offset read is inside the instance
            // (`tp_basicsize` bytes, fixed: no items), word-aligned.
            .filter(|&off| unsafe {
                *h.as_ptr()
                    .cast::<u8>()
                    .offset(off)
                    .cast::<*mut ffi::PyObject>()
                    == mark.as_ptr()
            })
            .collect();
        let [off] = found[..] else {
            return Ok(None);
        };
        offsets[i] = off;
    }
    Ok(Some(offsets))
}

#[pymethods]
impl CallSoon {
    #[new]
    fn new(
        py: Python<'_>,
        event_loop: Py<PyAny>,
        append: Py<PyAny>,
        handle_type: Py<PyAny>,
        base: Py<PyAny>,
    ) -> PyResult<CallSoon> {
        let offsets = probe(py, handle_type.bind(py))?;
        Ok(CallSoon {
            event_loop: Some(event_loop),
            append: Some(append),
            handle_type: Some(handle_type),
            base: Some(base),
            offsets,
        })
    }

    /// ``loop.call_soon(callback, *args, context=None)``: asyncio's. A
    /// method (a fast call), which the loop keeps bound.
    #[pyo3(signature = (callback, *args, context=None))]
    fn call<'py>(
        &self,
        py: Python<'py>,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        context: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (Some(lp), Some(append), Some(handle_type), Some(base)) = (
            &self.event_loop,
            &self.append,
            &self.handle_type,
            &self.base,
        ) else {
            return Err(cleared());
        };
        let lp = lp.bind(py);
        if lp.getattr(intern!(py, "_closed"))?.is_truthy()? {
            return Err(PyRuntimeError::new_err("Event loop is closed"));
        }
        if lp.getattr(intern!(py, "_debug"))?.is_truthy()? {
            let mut call = Vec::with_capacity(args.len() + 1);
            call.push(callback);
            call.extend(args.iter());
            let kw = PyDict::new(py);
            kw.set_item(intern!(py, "context"), context)?;
            return base.bind(py).call(PyTuple::new(py, call)?, Some(&kw));
        }
        let context = match context {
            Some(c) if !c.is_none() => c,
            // SAFETY: attached; a new reference, or NULL with an exception.
            _ => unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyContext_CopyCurrent())? },
        };
        // The slots as `Handle.__init__` sets them with debug off.
        let values: [Bound<'py, PyAny>; SLOTS.len()] = [
            context,
            lp.clone(),
            callback,
            args.into_any(),
            pyo3::types::PyBool::new(py, false).to_owned().into_any(),
            py.None().into_bound(py),
            py.None().into_bound(py),
        ];
        let handle_type = handle_type.bind(py);
        let h = match &self.offsets {
            Some(offsets) => {
                let tp = handle_type.as_ptr().cast::<ffi::PyTypeObject>();
                // SAFETY: attached; `tp` is the type `probe` measured, whose
                // `tp_alloc` returns a zeroed instance (a new reference) or
                // NULL with an exception set.
                let h = unsafe {
                    let alloc = (*tp).tp_alloc.unwrap_or(ffi::PyType_GenericAlloc);
                    Bound::from_owned_ptr_or_err(py, alloc(tp, 0))?
                };
                for (off, v) in offsets.iter().zip(values) {
                    // SAFETY: `off` is a slot's place in such an instance
                    // (`probe`), still NULL in the fresh one; it takes our
                    // reference to `v`.
                    unsafe {
                        *h.as_ptr()
                            .cast::<u8>()
                            .offset(*off)
                            .cast::<*mut ffi::PyObject>() = v.into_ptr();
                    }
                }
                h
            }
            None => {
                let h = alloc(py, handle_type)?;
                for (name, v) in SLOTS.iter().zip(values) {
                    h.setattr(*name, v)?;
                }
                h
            }
        };
        append.bind(py).call1((&h,))?;
        Ok(h)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.event_loop)?;
        visit.call(&self.append)?;
        visit.call(&self.handle_type)?;
        visit.call(&self.base)
    }

    fn __clear__(&mut self) {
        self.event_loop = None;
        self.append = None;
        self.handle_type = None;
        self.base = None;
    }
}
