//! `gmprt._gmprt.TimerHeap`: a `gmprt.aio` loop's scheduled timers, in the
//! place of asyncio's `_scheduled` list.
//!
//! asyncio keeps its `TimerHandle`s in a Python list ordered by `heapq`,
//! and every comparison there is `TimerHandle.__lt__`, a Python call: about
//! log2(n) of them for each `call_at` and each timer that fires, with n the
//! timers pending (10,000 connections with a timeout each: ~14 calls per
//! `call_later`). Here the order is Rust's, on the key asyncio orders by
//! (`when`), with a sequence number below it, so timers due at the same
//! time run in the order they were scheduled (asyncio leaves that to the
//! heap's shape).
//!
//! # Invariants
//!
//! - An entry's handle has `_scheduled` true from `push` (the loop's
//!   `call_at` sets it) until it leaves the heap (`pop_due`, `next_when`,
//!   the purge), which sets it false. asyncio's `TimerHandle.cancel` tells
//!   the loop only while it is true, so `cancelled` counts exactly the
//!   entries whose handle was cancelled while in the heap (the loop's
//!   `_timer_handle_cancelled` calls [`TimerHeap::note_cancelled`]).
//! - When more than [`PURGE_MIN`] entries are pending and more than
//!   [`PURGE_FRACTION`] of them are cancelled, the heap is rebuilt without
//!   them (asyncio's `_MIN_SCHEDULED_TIMER_HANDLES` and
//!   `_MIN_CANCELLED_TIMER_HANDLES_FRACTION`), so a program that schedules
//!   and cancels timeouts keeps no dead handles alive.
//!
//! Only the loop's own code touches the heap (its G, one callback at a
//! time, attached): PyO3's borrow flag is its only lock.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyList;
use pyo3::{PyTraverseError, PyVisit};

/// asyncio's `base_events._MIN_SCHEDULED_TIMER_HANDLES`.
const PURGE_MIN: usize = 100;
/// asyncio's `base_events._MIN_CANCELLED_TIMER_HANDLES_FRACTION`.
const PURGE_FRACTION: f64 = 0.5;

/// One pending timer: asyncio's `TimerHandle` and its key.
struct Entry {
    when: f64,
    seq: u64,
    handle: Py<PyAny>,
}

impl Ord for Entry {
    /// Reversed, so that `BinaryHeap`'s top is the earliest (`total_cmp`:
    /// a NaN `when` sorts after every number instead of breaking the heap).
    fn cmp(&self, other: &Entry) -> Ordering {
        other
            .when
            .total_cmp(&self.when)
            .then(other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Entry) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Entry) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Entry {}

/// The pending timers of a `gmprt.aio` loop (module docs).
#[pyclass(module = "gmprt._gmprt")]
pub(crate) struct TimerHeap {
    heap: BinaryHeap<Entry>,
    /// The next entry's sequence number.
    seq: u64,
    /// Entries whose handle was cancelled while in the heap (module docs).
    cancelled: usize,
}

/// Whether `handle` (a `TimerHandle`) was cancelled.
fn is_cancelled(py: Python<'_>, handle: &Py<PyAny>) -> PyResult<bool> {
    handle
        .bind(py)
        .getattr(intern!(py, "_cancelled"))?
        .is_truthy()
}

/// Marks `handle` as out of the heap (module docs).
fn unschedule(py: Python<'_>, handle: &Py<PyAny>) -> PyResult<()> {
    handle.bind(py).setattr(intern!(py, "_scheduled"), false)
}

impl TimerHeap {
    /// Takes an entry that left the heap: unschedules it and returns its
    /// handle if it is still live.
    fn leave(&mut self, py: Python<'_>, e: Entry) -> PyResult<Option<Py<PyAny>>> {
        unschedule(py, &e.handle)?;
        if is_cancelled(py, &e.handle)? {
            self.cancelled = self.cancelled.saturating_sub(1);
            return Ok(None);
        }
        Ok(Some(e.handle))
    }

    /// Rebuilds the heap without its cancelled entries when they are many
    /// (module docs).
    fn maybe_purge(&mut self, py: Python<'_>) -> PyResult<()> {
        let n = self.heap.len();
        if n <= PURGE_MIN || (self.cancelled as f64) / (n as f64) <= PURGE_FRACTION {
            return Ok(());
        }
        let mut live = Vec::with_capacity(n - self.cancelled.min(n));
        for e in std::mem::take(&mut self.heap).into_vec() {
            if is_cancelled(py, &e.handle)? {
                unschedule(py, &e.handle)?;
            } else {
                live.push(e);
            }
        }
        self.heap = BinaryHeap::from(live);
        self.cancelled = 0;
        Ok(())
    }
}

#[pymethods]
impl TimerHeap {
    #[new]
    fn new() -> TimerHeap {
        TimerHeap {
            heap: BinaryHeap::new(),
            seq: 0,
            cancelled: 0,
        }
    }

    /// Schedules ``handle`` (a ``TimerHandle``) for ``when``, the loop's
    /// time.
    fn push(&mut self, when: f64, handle: Py<PyAny>) {
        self.seq += 1;
        self.heap.push(Entry {
            when,
            seq: self.seq,
            handle,
        });
    }

    /// A handle in the heap was cancelled (the loop's
    /// ``_timer_handle_cancelled``).
    fn note_cancelled(&mut self) {
        self.cancelled += 1;
    }

    /// Moves every timer due before ``end`` to ``ready`` (the loop's
    /// deque), in order, leaving out the cancelled ones: asyncio's
    /// ``_run_once`` step.
    fn pop_due(&mut self, py: Python<'_>, end: f64, ready: &Bound<'_, PyAny>) -> PyResult<()> {
        self.maybe_purge(py)?;
        let mut append = None;
        while self.heap.peek().is_some_and(|e| e.when < end) {
            let Some(e) = self.heap.pop() else { break };
            if let Some(h) = self.leave(py, e)? {
                let append = match &append {
                    Some(a) => a,
                    None => append.insert(ready.getattr(intern!(py, "append"))?),
                };
                append.call1((h,))?;
            }
        }
        Ok(())
    }

    /// When the earliest live timer is due, or None if none is pending;
    /// cancelled timers at the head leave the heap first (they would wake
    /// the loop for nothing).
    fn next_when(&mut self, py: Python<'_>) -> PyResult<Option<f64>> {
        loop {
            let Some(top) = self.heap.peek() else {
                return Ok(None);
            };
            if !is_cancelled(py, &top.handle)? {
                return Ok(Some(top.when));
            }
            if let Some(e) = self.heap.pop() {
                self.leave(py, e)?;
            }
        }
    }

    /// Drops every pending timer (the loop's ``close``).
    fn clear(&mut self) {
        self.heap.clear();
        self.cancelled = 0;
    }

    fn __len__(&self) -> usize {
        self.heap.len()
    }

    /// The pending handles, earliest first (for inspection).
    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let mut entries: Vec<&Entry> = self.heap.iter().collect();
        entries.sort_by(|a, b| b.cmp(a));
        PyList::new(py, entries.into_iter().map(|e| e.handle.clone_ref(py)))?
            .as_any()
            .try_iter()
            .map(Bound::into_any)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        for e in &self.heap {
            visit.call(&e.handle)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.clear();
    }
}
