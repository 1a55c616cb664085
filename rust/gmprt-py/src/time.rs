//! Timed waits: `gmprt.sleep`, and the deadline helpers every operation
//! with a `timeout=` shares.
//!
//! A sleep is one timer on the netpoller (gmprt-core `netpoll`), armed by
//! the driver when the G parks (never from `__next__`, so the timer cannot
//! fire before the G is parked) and carrying the G's `Waker`. Timers fire
//! within about a millisecond after their deadline, never before.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use gmprt_core::netpoll::Handle;
use gmprt_core::timer::TimerKey;
use gmprt_core::WaitReason;
use gmprt_core::Waker;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use crate::cancel;
use crate::lock::lock;
use crate::rt;
use crate::token::{Op, Poll, Token, Wait};

/// Far enough to mean "never" for an infinite (or overflowing) timeout,
/// near enough that `Instant` arithmetic cannot overflow.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The instant `seconds` from now. `what` names the argument in errors.
/// Through the one parser (`cancel::seconds`); `inf` sleeps "forever".
pub(crate) fn after(seconds: f64, what: &str) -> PyResult<Instant> {
    let d = cancel::seconds(seconds, what)?
        .unwrap_or(FOREVER)
        .min(FOREVER);
    Ok(Instant::now() + d)
}

/// A `timeout=` argument (seconds, or None or `inf` for no limit) as a
/// deadline.
pub(crate) fn deadline(timeout: Option<f64>) -> PyResult<Option<Instant>> {
    match timeout {
        None => Ok(None),
        Some(t) => Ok(cancel::deadline_in(cancel::seconds(t, "timeout")?)),
    }
}

/// The netpoller of the runtime the calling G belongs to.
pub(crate) fn netpoll() -> PyResult<Handle<Waker>> {
    let sched = rt::sched().ok_or_else(|| {
        PyRuntimeError::new_err("gmprt timers and sockets need a running gmprt runtime")
    })?;
    let h = sched.netpoll().handle();
    h.map_err(|e| PyRuntimeError::new_err(format!("gmprt netpoller: {e}")))
}

/// A timer armed for a parked G; disarmed if the wait is abandoned.
#[derive(Default)]
pub(crate) struct ParkedTimer(Mutex<Option<(Handle<Waker>, TimerKey)>>);

impl ParkedTimer {
    /// Arms a timer that wakes `w` at `when`. False (nothing armed) if the
    /// runtime is stopping; the error says why.
    pub(crate) fn arm(&self, when: Instant, w: Waker) -> Result<(), PyErr> {
        let h = netpoll()?;
        match h.add_timer(when, w) {
            Ok(key) => {
                *lock(&self.0) = Some((h, key));
                Ok(())
            }
            Err(_) => Err(PyRuntimeError::new_err(
                "the gmprt runtime is stopping; no new timers",
            )),
        }
    }

    /// The G was woken: its timer fired (or another wake won and the G
    /// will re-arm if it waits again), so there is nothing to cancel.
    pub(crate) fn forget(&self) -> bool {
        lock(&self.0).take().is_some()
    }

    /// Disarms the timer, if armed.
    pub(crate) fn cancel(&self) {
        if let Some((h, key)) = lock(&self.0).take() {
            h.cancel_timer(key);
        }
    }
}

impl Drop for ParkedTimer {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// `await gmprt.sleep(seconds)` for `seconds > 0`.
pub(crate) struct Sleep {
    until: Instant,
    timer: ParkedTimer,
    /// Why the timer could not be armed (the runtime is stopping).
    failed: Mutex<Option<PyErr>>,
}

impl Sleep {
    pub(crate) fn new(until: Instant) -> Sleep {
        Sleep {
            until,
            timer: ParkedTimer::default(),
            failed: Mutex::new(None),
        }
    }
}

impl Wait for Sleep {
    fn poll(&self, py: Python<'_>) -> Poll {
        // Only the timer holds this G's waker, so a wake means it fired.
        self.timer.forget();
        if let Some(e) = lock(&self.failed).take() {
            return Poll::Ready(Err(e));
        }
        if Instant::now() >= self.until {
            Poll::Ready(Ok(py.None()))
        } else {
            Poll::Pending
        }
    }

    fn park(&self, _py: Python<'_>, waker: Waker) -> bool {
        match self.timer.arm(self.until, waker) {
            Ok(()) => true,
            Err(e) => {
                *lock(&self.failed) = Some(e);
                false
            }
        }
    }

    fn describe(&self) -> String {
        "sleep".into()
    }

    fn reason(&self) -> WaitReason {
        WaitReason::Sleep
    }

    fn cancel(&self, _py: Python<'_>) -> bool {
        self.timer.cancel();
        true
    }
}

/// ``await _gmprt._gosched()``: ``sleep(0)``, but, while Gs wait in the
/// global run queue, to its tail, behind the Gs an M without a P readied
/// (`Sched::gosched`). Private to ``gmprt.aio``: its loop G yields so
/// between iterations.
#[pyfunction]
pub(crate) fn _gosched() -> Token {
    if let Some(sched) = crate::rt::sched() {
        sched.gosched();
    }
    Token::new(Op::Yield)
}

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
pub(crate) fn sleep(py: Python<'_>, seconds: f64) -> PyResult<Py<Token>> {
    let until = after(seconds, "sleep length")?;
    if seconds == 0.0 {
        return Token::new(Op::Yield).into_object(py);
    }
    Token::wait(Sleep::new(until)).into_object(py)
}
