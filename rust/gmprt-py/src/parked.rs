//! The glue between gmprt-core's parked operations ([`Op`]) and Python:
//! one [`Blocking`] implementation per operation kind (a channel receive, a
//! select, a semaphore acquire ...) gives both forms of it:
//!
//! - `await x.op()`: a [`Token`] whose [`Wait`] is [`Await`]: `poll` tries
//!   the operation without queueing; the driver's `park` queues it with the
//!   G's waker (or completes it, if it became ready meanwhile); the poll
//!   after the wake reads the outcome.
//! - `x.op_blocking(timeout=None)`: [`block`], for sync Gs and foreign
//!   threads: queue with the calling thread as the waker, then wait inside
//!   `rt::block_in_g` (the M hands its P to another M and releases the
//!   GIL); on timeout, cancel, unless the operation completed first.
//!
//! # Locks and Python objects
//!
//! The `Mutex` around an await's state is only ever touched by the G that
//! awaits (it makes the state `Sync`); it is held for a swap, never across a
//! call into Python, a core operation or a drop. Python values leave the
//! core by value, so they are dropped (or handed to Python) with no Rust
//! lock held.

use std::sync::atomic::{AtomicU8, Ordering::*};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gmprt_core::WaitReason;
use gmprt_core::{Done, Notify, Op, Waker};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use crate::cancel::{self, Until};
use crate::errors::Timeout;
use crate::lock::{lock, unpoison};
use crate::rt;
use crate::time::ParkedTimer;
use crate::token::{Poll, Token, Wait};

/// One attempt at an operation.
pub(crate) enum Attempt<T> {
    /// Completed (or failed) at once.
    Ready(PyResult<Py<PyAny>>),
    /// Not possible now, and no waker was given (so nothing was queued).
    Wait,
    /// Queued with the given waker.
    Parked(Op<T>),
}

/// One kind of operation that may have to wait.
pub(crate) trait Blocking: Send + Sync + 'static {
    /// What the core operation carries (a Python value, or nothing).
    type T: Send + 'static;

    /// Completes the operation now if it can; otherwise queues it with
    /// `notify` if given, or reports [`Attempt::Wait`].
    fn attempt(&self, py: Python<'_>, notify: Option<Notify>) -> Attempt<Self::T>;

    /// The result of a queued operation that finished (any `Done`).
    fn complete(&self, py: Python<'_>, op: &mut Op<Self::T>, done: Done) -> PyResult<Py<PyAny>>;

    /// A queued operation nobody will wait for any more (its await was
    /// dropped: a G closed at shutdown). Undoes what completed meanwhile.
    fn abandon(&self, mut op: Op<Self::T>) {
        op.cancel();
        drop(op.take_all());
    }

    /// What a G parked here waits on, Go-style ("chan receive").
    fn describe(&self) -> String;

    /// The core's kind of this wait ([`Wait::reason`]).
    fn reason(&self) -> WaitReason {
        WaitReason::Other
    }

    /// The channels this operation waits on ([`Wait::chans`], without the
    /// timeout check, which `Await` makes).
    fn chans(&self, py: Python<'_>) -> Option<Vec<Py<PyAny>>> {
        let _ = py;
        None
    }

    /// The timeout of an `await`: the queued operation expires after it.
    fn timeout(&self) -> Option<Duration> {
        None
    }

    /// What a `_blocking` call that timed out returns (default: raise
    /// `gmprt.Timeout`).
    fn timed_out(&self, py: Python<'_>, timeout: Duration) -> PyResult<Py<PyAny>> {
        let _ = py;
        Err(Timeout::new_err(format!(
            "{} timed out after {} s",
            self.describe(),
            timeout.as_secs_f64()
        )))
    }
}

/// The timeout of a queued operation: a netpoller timer holding a clone of
/// the G's waker. Whichever wakes the G first (a completion, or the timer)
/// wins; the poll that follows expires the operation once `when` passed.
/// Boxed: only selects with a timeout have one.
struct Deadline {
    when: Instant,
    /// Disarmed as soon as the operation is over (and on drop), so armed
    /// timers count only real waits (deadlock detection).
    timer: ParkedTimer,
}

/// Two variants, so that the tag hides in the `Op`'s non-null pointer
/// (16 bytes: a parked G keeps this state, so its size counts per G).
enum St<T> {
    Parked(Op<T>, Option<Box<Deadline>>),
    /// Some: completed while the driver tried to park it. Boxed (a `PyErr`
    /// is ~64 bytes). None: nothing (not queued yet, or the result went to
    /// the awaiting G).
    Done(Option<Box<PyResult<Py<PyAny>>>>),
}

const _: () = assert!(std::mem::size_of::<St<Py<PyAny>>>() == 16);

/// An await's `timeout=` in one word: nanoseconds, [`NO_TIMEOUT`] for
/// none. 584 years and more count as none: no deadline that far can be
/// armed anyway (`Instant::checked_add` fails first on most clocks).
#[derive(Clone, Copy)]
struct AwaitTimeout(u64);

const NO_TIMEOUT: u64 = u64::MAX;

impl AwaitTimeout {
    fn new(t: Option<Duration>) -> AwaitTimeout {
        AwaitTimeout(t.map_or(NO_TIMEOUT, |d| {
            u64::try_from(d.as_nanos()).map_or(NO_TIMEOUT, |n| n.min(NO_TIMEOUT - 1))
        }))
    }

    fn get(self) -> Option<Duration> {
        (self.0 != NO_TIMEOUT).then(|| Duration::from_nanos(self.0))
    }
}

/// `Await::phase`: not queued; the awaiting G is inside `poll`/`park`.
const FRESH: u8 = 0;
const BUSY: u8 = 1;
/// Completed without queueing.
const FINISHED: u8 = 2;
/// Queued (or completed by the park): `st` says how it stands.
const QUEUED: u8 = 3;

/// An `await` of a [`Blocking`] operation.
///
/// The fast path (no queueing) takes no lock: `phase` is claimed by CAS, so
/// even a token wrongly polled from two threads at once cannot run the
/// operation twice. A queued operation's state sits in `st`, locked once by
/// the park that stores it and once by the poll that takes it.
pub(crate) struct Await<B: Blocking> {
    b: B,
    /// The await's `timeout=` (else the operation's own, a select's).
    timeout: AwaitTimeout,
    phase: AtomicU8,
    st: Mutex<St<B::T>>,
}

fn misuse(phase: u8) -> PyErr {
    PyRuntimeError::new_err(if phase == BUSY {
        "this gmprt awaitable is being awaited by another thread at the same time"
    } else {
        "this gmprt awaitable already completed"
    })
}

impl<B: Blocking> Await<B> {
    pub(crate) fn token(b: B) -> Token {
        Self::token_with(b, None)
    }

    /// An await that gives up with `gmprt.Timeout` after `timeout`.
    pub(crate) fn token_with(b: B, timeout: Option<Duration>) -> Token {
        let timeout = AwaitTimeout::new(timeout.or_else(|| b.timeout()));
        Token::wait(Await {
            b,
            timeout,
            phase: AtomicU8::new(FRESH),
            st: Mutex::new(St::Done(None)),
        })
    }

    fn take(&self) -> St<B::T> {
        std::mem::replace(&mut *lock(&self.st), St::Done(None))
    }

    fn put(&self, st: St<B::T>) {
        *lock(&self.st) = st;
    }

    /// Queues the operation with `waker` (the driver's park); the caller
    /// holds the `BUSY` phase (or `QUEUED`, re-queueing).
    fn queue(&self, py: Python<'_>, waker: Waker) -> bool {
        let timeout = self
            .timeout
            .get()
            .and_then(|t| Instant::now().checked_add(t))
            .map(|when| (when, waker.clone()));
        let (st, parked) = match self.b.attempt(py, Some(Notify::G(waker))) {
            Attempt::Ready(r) => (St::Done(Some(Box::new(r))), false),
            Attempt::Parked(op) => {
                let deadline = timeout.map(|(when, w)| {
                    let d = Box::new(Deadline {
                        when,
                        timer: ParkedTimer::default(),
                    });
                    // Fails only while the runtime stops; its Gs are
                    // closed then, and the wait never needs to expire.
                    let _ = d.timer.arm(when, w);
                    d
                });
                (St::Parked(op, deadline), true)
            }
            Attempt::Wait => unreachable!("an attempt with a waker queues"),
        };
        self.put(st);
        // Release: a poll on another M (after the wake) sees `st`.
        self.phase.store(QUEUED, Release);
        parked
    }
}

impl<B: Blocking> Wait for Await<B> {
    fn poll(&self, py: Python<'_>) -> Poll {
        match self.phase.compare_exchange(FRESH, BUSY, Acquire, Acquire) {
            Ok(_) => {
                return match self.b.attempt(py, None) {
                    Attempt::Ready(r) => {
                        self.phase.store(FINISHED, Release);
                        Poll::Ready(r)
                    }
                    Attempt::Wait => {
                        self.phase.store(FRESH, Release);
                        Poll::Pending
                    }
                    Attempt::Parked(_) => {
                        unreachable!("an attempt without a waker never queues")
                    }
                }
            }
            Err(QUEUED) => {}
            Err(phase) => return Poll::Ready(Err(misuse(phase))),
        }
        match self.take() {
            St::Parked(mut op, deadline) => {
                let done = match op.done() {
                    Some(d) => Some(d),
                    // Woken by the timer: give up, unless a case won the
                    // race (then `cancel` reports it).
                    None if deadline.as_ref().is_some_and(|d| Instant::now() >= d.when) => {
                        Some(op.cancel())
                    }
                    None => None,
                };
                if done == Some(Done::Expired) {
                    drop(deadline);
                    drop(op.take_all());
                    return Poll::Ready(
                        self.b.timed_out(py, self.timeout.get().unwrap_or_default()),
                    );
                }
                match done {
                    Some(d) => {
                        if let Some(dl) = deadline {
                            dl.timer.cancel();
                        }
                        Poll::Ready(self.b.complete(py, &mut op, d))
                    }
                    None => {
                        self.put(St::Parked(op, deadline));
                        Poll::Pending
                    }
                }
            }
            St::Done(Some(r)) => Poll::Ready(*r),
            St::Done(None) => Poll::Ready(Err(misuse(FINISHED))),
        }
    }

    fn park(&self, py: Python<'_>, waker: Waker) -> bool {
        match self.phase.compare_exchange(FRESH, BUSY, Acquire, Acquire) {
            Ok(_) => return self.queue(py, waker),
            Err(QUEUED) => {}
            // Misuse: resume at once; the poll reports it.
            Err(_) => return false,
        }
        match self.take() {
            St::Parked(mut op, deadline) => {
                // Queued by an earlier park whose wake has not come: only a
                // driver that parks twice gets here. The old waker is stale
                // now, so re-queue with the new one unless it finished.
                if op.done().is_some() || op.cancel() != Done::Expired {
                    self.put(St::Parked(op, deadline));
                    return false;
                }
                drop(deadline);
                drop(op.take_all());
                self.queue(py, waker)
            }
            st => {
                self.put(st);
                false
            }
        }
    }

    fn describe(&self) -> String {
        self.b.describe()
    }

    fn reason(&self) -> WaitReason {
        self.b.reason()
    }

    fn chans(&self, py: Python<'_>) -> Option<Vec<Py<PyAny>>> {
        if self.timeout.get().is_some() || self.b.timeout().is_some() {
            return None;
        }
        self.b.chans(py)
    }

    fn cancel(&self, py: Python<'_>) -> bool {
        if self.phase.load(Acquire) != QUEUED {
            // Never queued: nothing happened, nothing to undo.
            return true;
        }
        match self.take() {
            St::Parked(mut op, deadline) => {
                drop(deadline);
                // The one CAS that decides between a claimer and us (the
                // sudog protocol): Expired means nobody touched it.
                match op.done().unwrap_or_else(|| op.cancel()) {
                    Done::Expired => {
                        // An unsent value comes back here, and goes.
                        drop(op.take_all());
                        true
                    }
                    d => {
                        let r = self.b.complete(py, &mut op, d);
                        self.put(St::Done(Some(Box::new(r))));
                        false
                    }
                }
            }
            St::Done(Some(r)) => {
                self.put(St::Done(Some(r)));
                false
            }
            St::Done(None) => true,
        }
    }
}

impl<B: Blocking> Drop for Await<B> {
    fn drop(&mut self) {
        let st = std::mem::replace(unpoison(self.st.get_mut()), St::Done(None));
        if let St::Parked(op, deadline) = st {
            drop(deadline);
            self.b.abandon(op);
        }
    }
}

/// The `_blocking` form: runs `b` to completion on the calling thread,
/// waiting at most `timeout`, or until the calling task is cancelled (its
/// scopes' deadlines included).
pub(crate) fn block<B: Blocking>(
    py: Python<'_>,
    b: &B,
    timeout: Option<Duration>,
) -> PyResult<Py<PyAny>> {
    // A ready operation completes without looking at cancellation, as an
    // await's fast path does.
    match b.attempt(py, None) {
        Attempt::Ready(r) => return r,
        Attempt::Wait => {}
        Attempt::Parked(_) => unreachable!("an attempt without a waker never queues"),
    }
    // It must wait: a park point. A cancelled caller raises here, before it
    // queues (the driver's rule for an await). Checking only once queued
    // is not enough: under contention a counterpart completes the queued
    // operation before the wait loop looks, every time, and the cancel
    // never lands.
    let task = cancel::current();
    if let Some(scope) = task.check() {
        return Err(scope.exception());
    }
    let mut op = match b.attempt(py, Some(Notify::current_thread())) {
        Attempt::Ready(r) => return r,
        Attempt::Parked(op) => op,
        Attempt::Wait => unreachable!("an attempt with a waker queues"),
    };
    let until = if timeout == Some(Duration::ZERO) {
        Until::TimedOut
    } else {
        let deadline = cancel::deadline_in(timeout);
        let waiting = &op;
        let what = b.describe();
        let wait = || cancel::wait_until(&task, &what, deadline, || waiting.done().is_some());
        if deadline.is_none() && task.deadline().is_none() {
            rt::block_asleep(py, wait)
        } else {
            rt::block_in_g(py, wait)
        }
    };
    // The one CAS that decides between a claimer and us: a completion that
    // won is delivered even if we timed out or were cancelled.
    let done = match op.done() {
        Some(d) => d,
        None => op.cancel(),
    };
    if done == Done::Expired {
        drop(op.take_all());
        return match until {
            Until::Cancelled(scope) => Err(scope.exception()),
            _ => b.timed_out(py, timeout.unwrap_or_default()),
        };
    }
    b.complete(py, &mut op, done)
}

/// A `timeout=` argument: None (wait forever) or seconds >= 0.
/// Through the one parser (`cancel::seconds`): `inf` is no limit.
pub(crate) fn timeout_arg(timeout: Option<f64>) -> PyResult<Option<Duration>> {
    match timeout {
        None => Ok(None),
        Some(t) => cancel::seconds(t, "timeout"),
    }
}
