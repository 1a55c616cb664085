//! The M hooks: how the scheduler's threads meet the interpreter.
//!
//! sysmon's hooks (long steps, the thread cap, a suspected deadlock) never
//! touch Python: they record the event in the runtime's `Events` and wake
//! the thread in `run()`, which does the Python part.

use std::sync::atomic::Ordering::Release;
use std::sync::Arc;
use std::time::Duration;

use gmprt_core::Hooks;
use pyo3::prelude::*;

use crate::lock::lock;
use crate::rt::Events;

/// Each M keeps one thread state for its whole life (`m_main`: a fresh
/// attach costs ~10 µs on 3.11+, a detach and re-attach ~60 ns;
/// `pyo3-engineering.md` §2) but holds the GIL only to step Python Gs:
/// its scheduling loop runs detached (`detached`), and it attaches for a
/// run of Python steps (`attached`; the core's `worker` module docs,
/// "Attached only to step"). So an M that finds work, waits or runs a
/// Rust-native G (a `gmprt.aio` fd watcher) never queues for the GIL
/// behind the M running Python. A `Py` dropped detached is a bug the
/// tested wheel aborts on (`lib` docs); only Python Gs' steps touch
/// Python. The sysmon-side hooks only record and signal; the thread in
/// `run()` does the Python part.
pub(crate) struct PyHooks {
    ev: Arc<Events>,
}

impl PyHooks {
    pub(crate) fn new(ev: Arc<Events>) -> PyHooks {
        PyHooks { ev }
    }
}

/// Lets a closure that runs synchronously on this very thread cross
/// `Python::detach`'s `Send` bound.
struct OnThisThread<F>(F);
// SAFETY: `detach` runs its closure on the calling thread before returning;
// the wrapped closure never reaches another thread.
unsafe impl<F> Send for OnThisThread<F> {}
impl<F: FnOnce()> OnThisThread<F> {
    fn call(self) {
        (self.0)()
    }
}

impl Hooks for PyHooks {
    fn m_main(&self, run: &mut dyn FnMut()) {
        // None only while the interpreter finalizes: then the M must not run
        // Python at all, and it exits at once.
        let _ = Python::try_attach(|py| {
            // So that, if `run()` abandons this M mid-step, the M parks
            // rather than run Python again (`exit` module docs).
            crate::exit::enter_m(self.ev.abandoned.clone());
            run();
            crate::exit::leave_m();
            // The M's shared empty context (`body`, "Borrowed contexts"),
            // released while still attached.
            let ctx = crate::token::shared_ctx().replace(std::ptr::null_mut());
            if !ctx.is_null() {
                // SAFETY: attached; the slot held this strong reference.
                drop(unsafe { Bound::from_owned_ptr(py, ctx) });
            }
        });
    }

    fn detached(&self, run: &mut dyn FnMut()) {
        let run = OnThisThread(run);
        // Inside `m_main`'s attach: this only releases the GIL.
        Python::attach(|py| py.detach(move || run.call()));
    }

    fn blocking(&self, wait: &mut dyn FnMut()) {
        // Inside a Python G's step the GIL is held and must be released for
        // the wait; inside a Rust-native one it is not held at all. (Where
        // CPython disables the check it answers 1: the attach then takes
        // the GIL first, slower but still right.)
        // SAFETY: PyGILState_Check may be called without the GIL.
        if unsafe { pyo3::ffi::PyGILState_Check() } == 1 {
            let wait = OnThisThread(wait);
            Python::attach(|py| py.detach(move || wait.call()));
        } else {
            wait();
        }
    }

    fn attached(&self, steps: &mut dyn FnMut()) {
        // Inside `detached`: re-takes the GIL with the M's own thread
        // state (PyGILState_Ensure finds it), and releases it after.
        Python::attach(|_| steps());
    }

    fn long_step(&self, g: u64, thread: u64, held: Duration, ran: Duration) {
        lock(&self.ev.long_steps).push((g, thread, held, ran));
        self.ev.wake();
    }

    fn fatal(&self, msg: String) {
        lock(&self.ev.broken).get_or_insert(msg);
        self.ev.wake();
    }

    fn deadlock(&self) {
        self.ev.deadlock.store(true, Release);
        self.ev.wake();
    }
}
