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
//!   report. `thread` and `cpu` are set once, when the M starts.
//! - `M::lent` (the slot this step's P was lent to) and `M::p`: the M's
//!   own thread.
//! - `Locked::pwait` and `npwait`: under `Sched::lock` (`idle.rs`).
//! - `nblocking`, `nasleep`, `handoffs`: counters, any thread.
//!
//! # Lending the P
//!
//! **The problem.** A step cannot be preempted: a Python coroutine runs
//! until it yields, a C call until it returns. Go's M, entering a
//! syscall, leaves its P where sysmon's `retake` can take it and hand it
//! to another M; here any step may turn out to be that call. So sysmon
//! must be able to take the P of a running step without the M's help,
//! while the M, whose step is nearly always short, must get its P back at
//! the end without a lock. And mid-step the M still uses its P: a spawn or
//! a wake from inside the step goes to the P's runnext.
//!
//! **The protocol.** The P itself moves through one `AtomicPtr` per P,
//! `PSlot::lent`. Whoever swaps a non-null pointer out of it owns the
//! `Box<P>`; that single rule is what every case below relies on. (Go
//! CASes a status word, `_Psyscall` to `_Pidle`; moving the box itself
//! keeps "one owner" a fact of the type across the handover.) Between
//! steps the P sits in `M::p` and the slot is null.
//!
//! 1. **Lend** (`execute` → `lend_p`, at the start of a step). The M bumps
//!    `MSlot::steps` to odd, stores `may_block` (for the P and the M) and
//!    the G's id, increments `PSlot::steps` (Release), notes the slot in
//!    `M::lent`, and stores `Box::into_raw(p)` into `lent` (Release). From
//!    here the M does not hold its P.
//! 2. **Borrow** (`with_current_p`, inside the step: `spawn`, a wake). The
//!    M swaps the P out (Acquire), uses it, and stores it back (Release).
//!    Meanwhile sysmon reads null and leaves the slot alone this look.
//! 3. **Retake** (sysmon's `retake` → `take_lent` → `handoffp`). sysmon
//!    samples `PSlot::steps` (Acquire) on every look. Once the count has
//!    stood still for `sysmon::FORCE_PREEMPT` (10 ms), or for
//!    `sysmon::SYSCALL_RETAKE` (20 µs) when the step may block
//!    (`Body::may_block`: a plain function run as a G), while the slot is
//!    non-null and work waits (the P's local queue or the global queue is
//!    non-empty), it swaps the P out (Acquire) and gives it to `handoffp`,
//!    which starts an M for the work (if it is still there).
//! 4. **Reclaim** (`execute` → `reclaim_p`, at the end of the step; Go's
//!    `exitsyscallfast`). The M swaps the slot to null (Acquire). A
//!    non-null pointer is its P, back at the cost of one swap and no lock;
//!    the M bumps `MSlot::steps` to even and requeues, parks or recycles
//!    the G on its P as usual.
//! 5. **Gone** (the swap read null; Go's `exitsyscall0`). sysmon has the
//!    P (or, while stopping, `blocking` found no P to come back to). The M
//!    finishes the step's bookkeeping without one: a yielding G goes on
//!    the global queue (and `wakep`), so does a G woken during its own
//!    step, a parked G stays parked, a finished G goes to the global free
//!    list. Then `schedule` finds the M without a P and sends it to
//!    `stopm`, where it parks until handed one.
//!
//! `blocking` (Go's `entersyscallblock`) is the eager form, for a call
//! known to block: it does sysmon's part itself, at once. It reclaims its
//! P (as in step 4) and hands it off (`handoffp`, as in step 3; if sysmon
//! took the P first, there is nothing to hand off), runs the call, and then
//! needs a P to finish the step (`exitsyscall`): an idle one, or else it
//! queues on `pwait` and parks until a P released by `pidleput`, or given
//! up between steps by another M (`give_p_to_waiter`), is handed to it. It
//! lends that P again for the rest of the step, so step 4 then finds a P
//! as usual. `pwait` is served before the idle list because the waiter's
//! G is mid-step: no other M can run it.
//!
//! **Race cases.**
//!
//! - *sysmon takes the P just as the step returns.* `take_lent` and
//!   `reclaim_p` both `swap(null)` the same `lent`. Swaps on one atomic are
//!   totally ordered and each reads the value the previous one wrote, so
//!   exactly one side gets the pointer: the P never has two owners, and
//!   the loser takes the null branch (the M: step 5; sysmon: nothing to
//!   hand off). The winner's Acquire pairs with the Release store that
//!   lent the P (`lend_p`, or `with_current_p` putting it back), so it
//!   sees the P as the M last left it.
//! - *The M reclaims just as sysmon swaps.* The same race won by the M:
//!   `take_lent` returns None and `retake` hands nothing off. What sysmon
//!   read before the swap (the Relaxed `lent` null check, the step count,
//!   the queues) is a hint, and tolerated as racy, like Go's `retake`: the
//!   M may even have reclaimed and lent the P again for a new step in
//!   between, and then sysmon retakes the P of a step that has only just
//!   begun. That is harmless: work was waiting for a P, and the new step
//!   ends at step 5.
//! - *A borrow meets a retake.* If sysmon swaps first, the M's borrow reads
//!   null and `with_current_p` returns None: the spawn or wake goes to the
//!   global queue instead (`spawn_with`, `ready`). If the M swaps first,
//!   sysmon reads null and looks again next time; the M's Release
//!   store-back pairs with sysmon's later Acquire swap, so that swap sees
//!   what the M pushed to the P's queue.
//! - *Handoff while stopping.* `stop` sets `stopping` and drains `midle`
//!   and `pwait` (each woken with `Handoff::Exit`) under `Sched::lock`;
//!   `exitsyscall` reads `stopping` under the same lock before it queues
//!   on `pwait`. So an M back from a blocking call that finds no idle P
//!   either sees the flag and returns without one (its step ends at step
//!   5, and `stopm`, which refuses when stopping, lets it exit) or is on
//!   `pwait` when `stop` drains it. One that finds an idle P takes it,
//!   stopping or not, and exits from `find_runnable` after the step. The
//!   lock, not an atomic, resolves this case; `stopping` is stored with
//!   Release and read with Acquire for the lock-free checks elsewhere. A P
//!   that `handoffp` gives out meanwhile goes to the idle list or to an M
//!   (a new one, since `midle` is drained) whose `find_runnable` sees
//!   `stopping` and exits.
//! - *The M's step count.* `MSlot::steps` goes odd before the lend and
//!   even after the reclaim, each time a Relaxed load and a Release store
//!   (`MSlot::bump`: the M is the only writer, so no read-modify-write is
//!   needed); sysmon's Acquire load in `report_long_steps` pairs with it.
//!   It sits on the M, not the P, because a step outlives the retake of
//!   its P: after a retake `PSlot::steps` counts the new M's steps while
//!   the long step still runs here, and the report follows the step. The
//!   parity says "inside a step" whether or not a P is held, and the
//!   count, unlike a flag, differs for each step, so two long steps in a
//!   row are not taken for one and each is reported once (sysmon's `Tick`
//!   resets when the count moves). `PSlot::steps` is a count for the same
//!   reason (Go's `sysmontick.schedtick`). Not ordered: `lend_p` stores
//!   `MSlot::g` and `MSlot::may_block` (Relaxed) after the odd bump, so
//!   that Release does not publish them to a sample of that very count.
//!   sysmon reports only after the count has stood still for
//!   `sysmon::LONG_STEP` (100 ms), by when it reads the current values in
//!   practice, and the report is diagnostics only.
//! - *Drop.* A P still lent when the `Sched` drops is freed there (no M
//!   runs by then: each holds an `Arc<Sched>`).

use std::ptr;

use super::worker::M;
use super::{Sched, P};
use crate::cpuclock::CpuClock;
use crate::loom::lock;
use crate::loom::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::*};
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
    /// published by the Release store of `steps` (loosely: `lend_p` stores
    /// them after the odd bump; see "Lending the P", the M's step count).
    pub(crate) g: AtomicU64,
    pub(crate) may_block: AtomicBool,
    /// Inside `blocking` (Go's `_Gsyscall` for the step's G), for dumps and
    /// schedtrace. Written by the M only; Relaxed: diagnostics, which may
    /// read a call that just ended.
    pub(crate) in_call: AtomicBool,
    /// `pthread_self`, which Python reports as `threading.get_ident()`.
    pub(crate) thread: u64,
    /// The M's thread's CPU clock (None where the platform has none), so
    /// sysmon can tell a step that runs from one whose thread waits.
    pub(crate) cpu: Option<CpuClock>,
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
        self.blocking_counted(&self.nblocking, f)
    }

    /// [`blocking`](Self::blocking) for a wait on one of the runtime's own
    /// primitives with no deadline (a sync G in `recv_blocking()`): such an
    /// M sleeps until a G (or a foreign thread, which the embedder
    /// accounts for) wakes it, so for deadlock detection it is asleep, as a
    /// parked G is, rather than busy in a call that may return by itself.
    /// Off an M it is a plain `blocking`.
    pub fn blocking_asleep<R>(&self, f: impl FnOnce() -> R) -> R {
        let on_m = self.with_current(|_| ()).is_some();
        let counter = if on_m { &self.nasleep } else { &self.nblocking };
        self.blocking_counted(counter, f)
    }

    fn blocking_counted<R>(&self, counter: &AtomicUsize, f: impl FnOnce() -> R) -> R {
        counter.fetch_add(1, SeqCst);
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
        // Relaxed: read only by dumps and schedtrace, which may see a call
        // that just began or ended (`MSlot::in_call`); nothing pairs.
        self.with_current(|m| m.slot.in_call.store(true, Relaxed));
        let r = f();
        self.with_current(|m| m.slot.in_call.store(false, Relaxed));
        // Before exitsyscall: a returning M is busy again, so it must not
        // read as asleep while it waits for a P (`dead` would misjudge).
        counter.fetch_sub(1, SeqCst);
        if let Some((sched, g)) = on_m.flatten() {
            sched.exitsyscall(g);
        }
        r
    }

    /// Go's `handoffp`: give a P whose M is about to block to another M if
    /// there is work for it, otherwise to the idle list.
    pub(crate) fn handoffp(self: &Arc<Self>, p: Box<P>) {
        self.handoffs.fetch_add(1, Relaxed);
        crate::trace::emit(crate::trace::Kind::Handoff, p.id as u64, 0, 0);
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
            // Mid-step, maybe attached (the step's G is embedded): the wait
            // goes through `Hooks::blocking`, unlike an idle M's.
            let mut handoff = None;
            self.hooks.blocking(&mut || handoff = Some(m.note.sleep()));
            if m.take_handoff(handoff.expect("note sleep returned nothing")) {
                let p = m.p.borrow_mut().take().expect("woken without a P");
                self.lend_p(m, p, g, may_block);
            }
        });
    }
}
