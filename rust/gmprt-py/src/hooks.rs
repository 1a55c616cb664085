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

/// Each M is attached to the interpreter for its whole life and detached
/// around every wait (`pyo3-engineering.md` §2: ~60 ns, against ~10 µs for a
/// fresh attach per step on 3.11+). The sysmon-side hooks only record and
/// signal; the thread in `run()` does the Python part.
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

    fn blocking(&self, wait: &mut dyn FnMut()) {
        let wait = OnThisThread(wait);
        Python::attach(|py| py.detach(move || wait.call()));
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
