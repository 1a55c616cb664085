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
//! An await's state is only ever touched by the G that awaits, one phase
//! at a time ([`Await`]: the phase word's `BUSY` is the only lock, and it
//! is held for a swap, never across a core operation or a wait). Python
//! values leave the core by value, so they are dropped (or handed to
//! Python) with no Rust lock held.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::time::{Duration, Instant};

use gmprt_core::WaitReason;
use gmprt_core::{Done, Notify, Op, Waker};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use crate::cancel::{self, Until};
use crate::errors::Timeout;
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

/// `Await::word`'s low byte: the phase.
const PHASE_MASK: u64 = 0xff;
const PHASE_BITS: u32 = 8;
/// The await's `timeout=` in the word's other 56 bits, in nanoseconds,
/// all ones for none. 2^56 ns (2.28 years) and more count as none: no G
/// waits that long on purpose, and the word is one of the three of an
/// `Await<RecvOp>` (a parked G keeps one, so its size counts per G).
const NO_TIMEOUT: u64 = u64::MAX >> PHASE_BITS;

fn timeout_bits(t: Option<Duration>) -> u64 {
    t.map_or(NO_TIMEOUT, |d| {
        u64::try_from(d.as_nanos()).map_or(NO_TIMEOUT, |n| n.min(NO_TIMEOUT))
    })
}

/// `Await::word`'s phase: not queued; the awaiting G is inside
/// `poll`/`park`.
const FRESH: u8 = 0;
/// Someone holds `st` ([`StGuard`]): the awaiting G, between two phases.
const BUSY: u8 = 1;
/// Completed without queueing.
const FINISHED: u8 = 2;
/// Queued (or completed by the park): `st` says how it stands, and
/// nobody holds it.
const QUEUED: u8 = 3;

/// An `await` of a [`Blocking`] operation.
///
/// The fast path (no queueing) takes no lock: the phase is claimed by CAS,
/// so even a token wrongly polled from two threads at once cannot run the
/// operation twice. A queued operation's state sits in `st`, which only
/// the holder of the `BUSY` phase touches (a CAS from `QUEUED` or `FRESH`
/// takes it, [`StGuard`]'s drop gives it back): no mutex, whose word and
/// padding would make a parked G's `Await<RecvOp>` a 64-byte malloc chunk
/// instead of a 48-byte one (issue 14).
pub(crate) struct Await<B: Blocking> {
    b: B,
    /// The phase (low [`PHASE_BITS`]) and the await's `timeout=` above it
    /// (else the operation's own, a select's), which never changes.
    word: AtomicU64,
    st: UnsafeCell<St<B::T>>,
}

// SAFETY: `st` is reached only through an `StGuard`, made by the one
// thread whose CAS moved the phase to `BUSY` (Acquire, pairing with the
// guard's Release store of the previous holder), or through `&mut self`
// (drop). So no two threads touch it at once, and each sees the last
// holder's writes. Everything else in `Await` is `Sync` by itself.
unsafe impl<B: Blocking> Sync for Await<B> {}

/// Exclusive use of an `Await`'s `st`: its phase is `BUSY` and ours. The
/// drop stores `QUEUED` (Release: the next holder's Acquire CAS sees what
/// we wrote).
struct StGuard<'a, B: Blocking> {
    a: &'a Await<B>,
}

impl<B: Blocking> StGuard<'_, B> {
    fn st(&mut self) -> &mut St<B::T> {
        // SAFETY: the guard holds the `BUSY` phase (type docs), so nobody
        // else reaches `st` until it drops; `&mut self` makes this borrow
        // the guard's only one.
        unsafe { &mut *self.a.st.get() }
    }

    fn take(&mut self) -> St<B::T> {
        std::mem::replace(self.st(), St::Done(None))
    }

    fn put(&mut self, st: St<B::T>) {
        *self.st() = st;
    }
}

impl<B: Blocking> Drop for StGuard<'_, B> {
    fn drop(&mut self) {
        self.a.set_phase(QUEUED);
    }
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
        let timeout = timeout_bits(timeout.or_else(|| b.timeout()));
        Token::wait(Await {
            b,
            word: AtomicU64::new((timeout << PHASE_BITS) | u64::from(FRESH)),
            st: UnsafeCell::new(St::Done(None)),
        })
    }

    fn timeout(&self) -> Option<Duration> {
        let t = self.word.load(Relaxed) >> PHASE_BITS;
        (t != NO_TIMEOUT).then(|| Duration::from_nanos(t))
    }

    /// Release: whoever moves the phase on next (an Acquire CAS) sees
    /// what we did before.
    fn set_phase(&self, phase: u8) {
        let t = self.word.load(Relaxed) & !PHASE_MASK;
        self.word.store(t | u64::from(phase), Release);
    }

    /// CAS `from → BUSY`; on failure, the phase found.
    fn claim(&self, from: u8) -> Result<(), u8> {
        let t = self.word.load(Relaxed) & !PHASE_MASK;
        self.word
            .compare_exchange(t | u64::from(from), t | u64::from(BUSY), Acquire, Acquire)
            .map(|_| ())
            .map_err(|w| (w & PHASE_MASK) as u8)
    }

    /// `st`, from a `QUEUED` phase; else the phase found.
    fn hold(&self) -> Result<StGuard<'_, B>, u8> {
        self.claim(QUEUED).map(|()| StGuard { a: self })
    }

    /// Queues the operation with `waker` (the driver's park) into `g`'s
    /// state: the caller holds the `BUSY` phase, which `g` gives back
    /// (`QUEUED`) when it drops.
    fn queue(&self, py: Python<'_>, mut g: StGuard<'_, B>, waker: Waker) -> bool {
        let timeout = self
            .timeout()
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
        // The guard's drop publishes `st` (`QUEUED`, Release) to a poll
        // on another M after the wake.
        g.put(st);
        parked
    }
}

impl<B: Blocking> Wait for Await<B> {
    fn poll(&self, py: Python<'_>) -> Poll {
        match self.claim(FRESH) {
            Ok(()) => {
                return match self.b.attempt(py, None) {
                    Attempt::Ready(r) => {
                        self.set_phase(FINISHED);
                        Poll::Ready(r)
                    }
                    Attempt::Wait => {
                        self.set_phase(FRESH);
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
        let mut g = match self.hold() {
            Ok(g) => g,
            Err(phase) => return Poll::Ready(Err(misuse(phase))),
        };
        match g.take() {
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
                    drop(g);
                    drop(deadline);
                    drop(op.take_all());
                    return Poll::Ready(self.b.timed_out(py, self.timeout().unwrap_or_default()));
                }
                match done {
                    Some(d) => {
                        drop(g);
                        if let Some(dl) = deadline {
                            dl.timer.cancel();
                        }
                        Poll::Ready(self.b.complete(py, &mut op, d))
                    }
                    None => {
                        g.put(St::Parked(op, deadline));
                        Poll::Pending
                    }
                }
            }
            St::Done(Some(r)) => Poll::Ready(*r),
            St::Done(None) => Poll::Ready(Err(misuse(FINISHED))),
        }
    }

    fn park(&self, py: Python<'_>, waker: Waker) -> bool {
        match self.claim(FRESH) {
            Ok(()) => return self.queue(py, StGuard { a: self }, waker),
            Err(QUEUED) => {}
            // Misuse: resume at once; the poll reports it.
            Err(_) => return false,
        }
        let Ok(mut g) = self.hold() else {
            return false;
        };
        match g.take() {
            St::Parked(mut op, deadline) => {
                // Queued by an earlier park whose wake has not come: only a
                // driver that parks twice gets here. The old waker is stale
                // now, so re-queue with the new one unless it finished.
                if op.done().is_some() || op.cancel() != Done::Expired {
                    g.put(St::Parked(op, deadline));
                    return false;
                }
                drop(deadline);
                drop(op.take_all());
                self.queue(py, g, waker)
            }
            st => {
                g.put(st);
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
        if self.timeout().is_some() || self.b.timeout().is_some() {
            return None;
        }
        self.b.chans(py)
    }

    fn cancel(&self, py: Python<'_>) -> bool {
        // Never queued: nothing happened, nothing to undo. (Held by
        // another thread: the misuse its poll reports.)
        let Ok(mut g) = self.hold() else {
            return true;
        };
        match g.take() {
            St::Parked(mut op, deadline) => {
                drop(deadline);
                // The one CAS that decides between a claimer and us (the
                // sudog protocol): Expired means nobody touched it.
                match op.done().unwrap_or_else(|| op.cancel()) {
                    Done::Expired => {
                        drop(g);
                        // An unsent value comes back here, and goes.
                        drop(op.take_all());
                        true
                    }
                    d => {
                        let r = self.b.complete(py, &mut op, d);
                        g.put(St::Done(Some(Box::new(r))));
                        false
                    }
                }
            }
            St::Done(Some(r)) => {
                g.put(St::Done(Some(r)));
                false
            }
            St::Done(None) => true,
        }
    }
}

impl<B: Blocking> Drop for Await<B> {
    fn drop(&mut self) {
        let st = std::mem::replace(self.st.get_mut(), St::Done(None));
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
