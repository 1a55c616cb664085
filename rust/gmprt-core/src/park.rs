//! park: how an idle M sleeps and how it is handed a P (Go's `m.park` note
//! plus `m.nextp`).
//!
//! An M that finds no work puts itself on the idle list and sleeps on its
//! [`Note`]. Whoever takes it off the list (`startm`, or shutdown) hands it its
//! next P *through the note*, under the note's lock, so the P cannot be seen by
//! anyone before the M owns it and a wakeup can never be lost: a `wakeup` that
//! comes before `sleep` leaves the handoff in the slot and `sleep` returns at
//! once.
//!
//! An idle M sleeps with a deadline ([`Note::sleep_timeout`]): an M nobody
//! needs for `Config::idle_keepalive` retires. Timing out only says that no
//! handoff had arrived *yet*; whether one is on its way is decided under
//! `Sched::lock` by whether the M is still listed idle (`sched/idle.rs`,
//! "Retiring idle Ms").

use std::time::{Duration, Instant};

use crate::loom::sync::{Condvar, Mutex};

/// What a sleeping M is woken with.
pub(crate) enum Handoff<P> {
    /// Run with this P; `spinning` says the waker already counted this M in
    /// `nmspinning` (Go's `startm(pp, spinning=true)`).
    Run { p: P, spinning: bool },
    /// The scheduler is stopping: exit.
    Exit,
}

pub(crate) struct Note<P> {
    slot: Mutex<Option<Handoff<P>>>,
    cv: Condvar,
}

impl<P> Note<P> {
    pub(crate) fn new() -> Self {
        Note {
            slot: Mutex::new(None),
            cv: Condvar::new(),
        }
    }

    /// Any thread: give the M its handoff. One handoff per sleep: the M is on
    /// the idle list exactly once, and whoever pops it is the only waker.
    pub(crate) fn wakeup(&self, h: Handoff<P>) {
        let mut slot = crate::loom::lock(&self.slot);
        debug_assert!(slot.is_none(), "two handoffs for one idle M");
        *slot = Some(h);
        drop(slot);
        self.cv.notify_one();
    }

    /// Takes back a handoff nobody slept for (a thread that failed to start).
    pub(crate) fn take(&self) -> Option<Handoff<P>> {
        crate::loom::lock(&self.slot).take()
    }

    /// The M itself: sleep until handed something.
    pub(crate) fn sleep(&self) -> Handoff<P> {
        let mut slot = crate::loom::lock(&self.slot);
        loop {
            if let Some(h) = slot.take() {
                return h;
            }
            slot = crate::loom::unpoison(self.cv.wait(slot));
        }
    }

    /// The M itself: sleep until handed something, or `timeout` passes with
    /// nothing handed (None). A handoff that arrives at the deadline is
    /// still returned: the slot is checked under its lock before giving up.
    pub(crate) fn sleep_timeout(&self, timeout: Duration) -> Option<Handoff<P>> {
        let deadline = Instant::now().checked_add(timeout);
        let mut slot = crate::loom::lock(&self.slot);
        loop {
            if let Some(h) = slot.take() {
                return Some(h);
            }
            // loom's `wait_timeout` never times out; a model instead times
            // out at once whenever the slot is empty, the earliest a real
            // timeout could fire, so it explores the timeout racing every
            // step of a handoff (`loom_tests::idle`).
            if cfg!(loom) {
                return None;
            }
            // No deadline (a keep-alive too large for `Instant`): untimed.
            let Some(deadline) = deadline else {
                slot = crate::loom::unpoison(self.cv.wait(slot));
                continue;
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            slot = crate::loom::unpoison(self.cv.wait_timeout(slot, left)).0;
        }
    }
}
