//! syscall: every step runs as a potential system call. The M lends its P
//! to a per-P slot for the step so that sysmon can take it from a step
//! that runs long; `blocking` is the eager form for a call known to block
//! (Go's `entersyscall`/`exitsyscall`, `entersyscallblock`, `handoffp`;
//! sysmon's side, `retake`, is in `sysmon`).
//!
//! # Who touches what
//!
//! - `PSlot::lent`: the lent P, a `Box<P>` as a raw pointer. Stored only
//!   by the M that owns the P (`lend_p`, and `with_current_p` putting it
//!   back); swapped out by that M (`reclaim_p`, `with_current_p`) or by
//!   sysmon (`take_lent`). Null between steps.
//! - `PSlot::q`: the P's queue as thieves see it (`runq::Stealer`), any
//!   thread.
//! - `PSlot::steps`, `PSlot::may_block`: written by the M that holds the P,
//!   before it lends it (and `may_block` again by `set_may_block`, mid-step);
//!   sampled by sysmon.
//! - `MSlot`: written by its M only; sampled by sysmon for the long-step
//!   report. `thread` is set once, when the M starts.
//! - `M::lent` (the slot this step's P was lent to) and `M::p`: the M's
//!   own thread.
//! - `Locked::pwait` and `npwait`: under `Sched::lock` (`idle.rs`).
//! - `nblocking`, `handoffs`: counters, any thread.

use std::ptr;

use super::worker::M;
use super::{Sched, P};
use crate::loom::lock;
use crate::loom::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering::*};
use crate::loom::sync::Arc;
use crate::runq;

/// The part of a P every thread can see (Go keeps it in `p` itself).
pub(crate) struct PSlot {
    /// The P's run queue, for thieves and stats.
    pub(crate) q: runq::Stealer,
    /// While the P's M runs a step: the P itself, lent so that sysmon can
    /// take it (Go's `retake` of a P whose G is in a syscall). Null between
    /// steps and while someone holds it. Whoever swaps a non-null pointer
    /// out owns the `Box<P>` (see "Lending the P").
    pub(crate) lent: AtomicPtr<P>,
    /// Steps started on this P. Written only by the M holding the P (one at
    /// a time; handovers go through `lent` or the lock); sysmon samples it
    /// (Go's `schedtick` as seen by `sysmontick`).
    pub(crate) steps: AtomicU64,
    /// The current step may block in a system call (`Body::may_block`).
    pub(crate) may_block: AtomicBool,
}

/// The part of an M sysmon watches for its long-step report. The P's slot
/// cannot serve: a step outlives the P's retake.
pub(crate) struct MSlot {
    /// Steps started and ended by this M: odd while inside a step. Written
    /// only by the M (Release), sampled by sysmon (Acquire).
    pub(crate) steps: AtomicU64,
    /// The G of the current step, and whether it may block. Relaxed:
    /// published by the Release store of `steps`.
    pub(crate) g: AtomicU64,
    pub(crate) may_block: AtomicBool,
    /// `pthread_self`, which Python reports as `threading.get_ident()`.
    pub(crate) thread: u64,
}

impl MSlot {
    pub(super) fn bump(&self) {
        self.steps
            .store(self.steps.load(Relaxed).wrapping_add(1), Release);
    }
}

impl Sched {
    /// Lends the M's P to its slot for the coming step.
    pub(super) fn lend_p(&self, m: &M, p: Box<P>, g: u64, may_block: bool) {
        let slot = &self.allp[p.id];
        slot.may_block.store(may_block, Relaxed);
        m.slot.g.store(g, Relaxed);
        m.slot.may_block.store(may_block, Relaxed);
        // We hold the P, so we are the only writer of `steps`. Release:
        // pairs with sysmon's Acquire sample.
        slot.steps
            .store(slot.steps.load(Relaxed).wrapping_add(1), Release);
        m.lent.set(Some(p.id));
        // Release: publishes the P to sysmon's swap (Acquire) in `retake`.
        slot.lent.store(Box::into_raw(p), Release);
    }

    /// Takes the lent P back at the end of a step. None if sysmon retook it.
    pub(super) fn reclaim_p(&self, m: &M) -> Option<Box<P>> {
        let slot = &self.allp[m.lent.take()?];
        // Acquire: pairs with the Release of `lend_p` or `with_current_p`.
        let raw = slot.lent.swap(ptr::null_mut(), Acquire);
        // SAFETY: a non-null pointer swapped out of `lent` is ours to own;
        // it came from Box::into_raw in `lend_p`.
        (!raw.is_null()).then(|| unsafe { Box::from_raw(raw) })
    }

    /// [`Cx::set_may_block`](crate::Cx::set_may_block): the running step's
    /// `may_block` changed; tell sysmon through the M's slot and, while it
    /// is lent, the P's.
    pub(crate) fn set_may_block(&self, may_block: bool) {
        self.with_current(|m| {
            m.slot.may_block.store(may_block, Relaxed);
            if let Some(id) = m.lent.get() {
                self.allp[id].may_block.store(may_block, Relaxed);
            }
        });
    }

    /// sysmon: take a P lent to its slot, if it still is.
    pub(crate) fn take_lent(&self, slot: &PSlot) -> Option<Box<P>> {
        // Acquire: pairs with the Release in `lend_p`/`with_current_p`.
        let raw = slot.lent.swap(ptr::null_mut(), Acquire);
        // SAFETY: a non-null pointer swapped out of `lent` is owned by the
        // swapper; it came from Box::into_raw in `lend_p`.
        (!raw.is_null()).then(|| unsafe { Box::from_raw(raw) })
    }

    /// Go's `entersyscallblock` … `exitsyscall` around `f`: the calling M
    /// hands its P to another M for the duration (so the other Gs keep
    /// running), then waits for a P to finish its step. Off an M, just `f()`.
    ///
    /// Counted as a blocking call for deadlock detection either way: a
    /// thread blocked here may wake Gs when it returns.
    pub fn blocking<R>(&self, f: impl FnOnce() -> R) -> R {
        self.nblocking.fetch_add(1, SeqCst);
        let on_m = self.with_current(|m| {
            let sched = m.sched.clone();
            if m.lent.get().is_some() {
                let g = (m.slot.g.load(Relaxed), m.slot.may_block.load(Relaxed));
                if let Some(p) = self.reclaim_p(m) {
                    sched.handoffp(p);
                }
                Some((sched, g))
            } else {
                None
            }
        });
        let r = f();
        if let Some((sched, g)) = on_m.flatten() {
            sched.exitsyscall(g);
        }
        self.nblocking.fetch_sub(1, SeqCst);
        r
    }

    /// Go's `handoffp`: give a P whose M is about to block to another M if
    /// there is work for it, otherwise to the idle list.
    pub(crate) fn handoffp(self: &Arc<Self>, p: Box<P>) {
        self.handoffs.fetch_add(1, Relaxed);
        let mut l = lock(&self.lock);
        if !p.runq.is_empty() || !l.runq.is_empty() {
            return self.startm(l, p, false);
        }
        // No work now: if nobody is spinning or idle, start a spinner so
        // work readied later is not left to the blocked M (Go's rule).
        if self.nmspinning.load(SeqCst) + self.npidle.load(SeqCst) == 0
            && self
                .nmspinning
                .compare_exchange(0, 1, SeqCst, SeqCst)
                .is_ok()
        {
            return self.startm(l, p, true);
        }
        // Go: the last running P with nobody polling gets an M, which will
        // poll for the Gs that wait on I/O or a timer.
        if self.npidle.load(SeqCst) + 1 == self.procs
            && !self.netpoll.blocked()
            && self.netpoll.pending()
        {
            return self.startm(l, p, false);
        }
        self.pidleput(&mut l, p);
    }

    /// Go's `exitsyscall`: get a P back, from the idle list or by waiting
    /// for the next one released. Returns without one only when stopping.
    /// The P is lent again for the rest of the step (G `g`).
    fn exitsyscall(&self, (g, may_block): (u64, bool)) {
        self.with_current(|m| {
            let mut l = lock(&self.lock);
            if let Some(p) = l.pidle.pop() {
                self.npidle.fetch_sub(1, SeqCst);
                drop(l);
                self.lend_p(m, p, g, may_block);
                return;
            }
            if self.stopping.load(Acquire) {
                return;
            }
            l.pwait.push_back(m.note.clone());
            // Release: pairs with the Acquire check in `schedule`.
            self.npwait.fetch_add(1, Release);
            drop(l);
            if self.park_m(m) {
                let p = m.p.borrow_mut().take().expect("woken without a P");
                self.lend_p(m, p, g, may_block);
            }
        });
    }
}
