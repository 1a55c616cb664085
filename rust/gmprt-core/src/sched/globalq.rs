//! globalq: the global run queue (Go's `sched.runq`) and the injection of
//! a batch of readied Gs (Go's `injectglist`).
//!
//! # Who touches what
//!
//! - `Locked::runq`: any thread, under `Sched::lock`. Pushes come from a
//!   P's overflow, from Gs readied without a P, and from `inject`; pops
//!   from an M taking a batch for its P.
//! - `runq_size`: its length, stored (Release) under the lock after every
//!   change, read anywhere (Acquire) as a lock-free emptiness hint.
//! - `P::batch`: owner M only. A global batch is parked there and pushed
//!   to the local queue after the lock is dropped, because a local push may
//!   overflow into the global queue, which takes the lock.
//!
//! # Invariants
//!
//! - `runq_size == Locked::runq.len()` whenever `Sched::lock` is free.
//! - A stale `runq_size` only delays: an M rechecks `Locked::runq` under
//!   the lock before it gives up its P (`find_runnable`), and every push
//!   takes that lock, so no G is stranded here.
//! - A batch is at most `min(len, len/procs + 1, CAPACITY/2)` Gs (Go's
//!   `globrunqgetbatch`), one to run and the rest for the local queue.

use super::{Locked, Sched, P};
use crate::api::Waker;
use crate::g::{GPtr, Wake};
use crate::loom::lock;
use crate::loom::sync::atomic::Ordering::*;
use crate::loom::sync::Arc;
use crate::runq::{self, Overflow as _};
use crate::trace::{self, Kind};

/// How far a netpoll batch fills a P's local queue (half the ring, like a
/// global batch); see `Sched::inject`.
pub(super) const LOCAL_SHARE: usize = runq::CAPACITY as usize / 2;

/// Pushes a P's overflow to the global queue in one lock.
pub(super) struct GlobalOverflow<'a>(pub(super) &'a Sched);

impl runq::Overflow for GlobalOverflow<'_> {
    fn push_batch(&self, batch: &mut dyn Iterator<Item = GPtr>) {
        let mut l = lock(&self.0.lock);
        l.runq.extend(batch);
        // Release: pairs with the Acquire emptiness checks in findRunnable.
        self.0.runq_size.store(l.runq.len(), Release);
    }
}

impl Sched {
    /// Go's `injectglist`: readies what one netpoll batch (or a
    /// deregistration) woke. Gs whose wake is stale are skipped.
    ///
    /// - Without a P (`p` None: sysmon, a poller that found no idle P, any
    ///   thread): every G goes to the global queue under one lock, then one M
    ///   is started per G on idle Ps, while there are idle Ps.
    /// - With the caller's P: as many Gs as there are idle Ps go to the
    ///   global queue, with an M started for each; the rest go to `p`'s
    ///   local queue, up to half its ring like a global batch (the rest to
    ///   the global queue, keeping their order; all of them if the global
    ///   queue holds older work); then `wakep`.
    /// - `run_one` (with a P): the first G is returned, not queued, for the
    ///   caller to run at once (Go's steps 8 and 13).
    pub(crate) fn inject(
        self: &Arc<Self>,
        batch: Vec<Waker>,
        p: Option<&mut P>,
        run_one: bool,
    ) -> Option<GPtr> {
        debug_assert!(!run_one || p.is_some(), "run_one without a P");
        let mut gs = Vec::with_capacity(batch.len());
        for w in &batch {
            debug_assert!(Arc::ptr_eq(&w.sched, self), "a batch spans runtimes");
            if w.g.wake(w.gen) == Wake::Enqueue {
                gs.push(w.g);
            }
        }
        drop(batch);
        if trace::enabled() {
            trace::emit(Kind::Poll, gs.len() as u64, 0, 0);
            for g in &gs {
                trace::emit(Kind::Ready, g.id(), 0, 0);
            }
        }
        let mut gs = gs.into_iter();
        let first = if run_one { gs.next() } else { None };
        let n = gs.len();
        if n == 0 {
            return first;
        }
        let overflow = GlobalOverflow(self);
        match p {
            None => {
                overflow.push_batch(&mut gs);
                self.start_idle(n);
            }
            Some(p) => {
                // SeqCst: a P idle now gets its share through the global
                // queue; one released later checks that queue under the lock.
                let share = self.npidle.load(SeqCst).min(n);
                if share > 0 {
                    overflow.push_batch(&mut gs.by_ref().take(share));
                    self.start_idle(share);
                }
                // Readied Gs run in the order they were readied: behind
                // older work in the global queue if there is some, else on
                // the local queue, filled to half the ring like a global
                // batch (so the 61st-tick global check runs a G at most half
                // a ring ahead of its turn).
                let free = if self.runq_size.load(Acquire) > 0 {
                    0
                } else {
                    LOCAL_SHARE.saturating_sub(p.runq.len())
                };
                for g in gs.by_ref().take(free) {
                    p.runq.push(g, false, &overflow);
                }
                if gs.len() > 0 {
                    overflow.push_batch(&mut gs);
                }
                self.wakep();
            }
        }
        first
    }

    /// Takes a batch from the global queue: one G to run now, the rest into
    /// the P's local queue. `max = 0` means Go's batch size.
    pub(super) fn globrunqget(&self, p: &mut P, max: usize) -> Option<GPtr> {
        let mut l = lock(&self.lock);
        let g = self.globrunqget_locked(&mut l, p, max);
        drop(l);
        self.runqput_batch(p);
        g
    }

    /// Go's `globrunqgetbatch`: `min(len, len/procs + 1, CAPACITY/2)`. The
    /// batch is parked in `p.batch` and pushed after the lock is dropped
    /// (a local push may overflow into the global queue, which takes it).
    pub(super) fn globrunqget_locked(&self, l: &mut Locked, p: &mut P, max: usize) -> Option<GPtr> {
        let size = l.runq.len();
        let mut n = size
            .min(size / self.procs + 1)
            .min(runq::CAPACITY as usize / 2);
        if max > 0 {
            n = n.min(max);
        }
        let g = l.runq.pop_front();
        p.batch.extend(l.runq.drain(..n.saturating_sub(1)));
        // Release: pairs with the Acquire emptiness checks.
        self.runq_size.store(l.runq.len(), Release);
        g
    }

    /// Any thread (sysmon's `retake`): the length hint, Acquire.
    pub(crate) fn global_runq_len(&self) -> usize {
        self.runq_size.load(Acquire)
    }
}
