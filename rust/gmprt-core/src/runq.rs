//! runq: a P's local run queue, Go's `runq` + `runnext` (proc.go).
//!
//! A bounded ring of [`CAPACITY`] G pointers indexed by free-running `u32`
//! counters, plus one `runnext` slot.
//!
//! # Who touches what
//!
//! - `tail` and the ring slots are written only by the owner P, through
//!   [`Local`] (which is `&mut self` and moves with the P between Ms).
//! - `head` is advanced by CAS, by the owner when it pops and by any thief
//!   when it steals ([`Stealer`], shared by every P).
//! - `runnext` is set to a G only by the owner; anyone may CAS it to null.
//!
//! # Why the slots are atomic
//!
//! A thief copies slots *before* its CAS on `head` claims them (Go's
//! `runqgrab`). The owner may be overwriting one of those slots at that moment
//! (it wrapped around after a concurrent pop), and the thief then discards the
//! copy when its CAS fails. With plain cells that racy read is undefined
//! behaviour in Rust; with `AtomicPtr` slots read Relaxed it is defined, and
//! the `head` CAS orders everything that matters. (tokio instead claims first
//! and allows one stealer per victim; we keep Go's copy-then-CAS and its
//! unlimited concurrent thieves.)
//!
//! Indices are u32: a thief preempted between its loads and its CAS cannot be
//! fooled by `head` wrapping (2^32 pops), the ABA that bit tokio with u16
//! (tokio#5041).

use std::ptr;

use crate::g::GPtr;
use crate::loom::sync::atomic::{AtomicPtr, AtomicU32, Ordering::*};
use crate::loom::sync::Arc;

/// Go's `len(p.runq)`. Under loom the ring shrinks so models stay small.
#[cfg(not(loom))]
pub const CAPACITY: u32 = 256;
#[cfg(loom)]
pub const CAPACITY: u32 = 4;

const MASK: u32 = CAPACITY - 1;

/// Where the owner's overflow goes: the global run queue in the scheduler, a
/// plain `Vec` in tests.
pub trait Overflow {
    /// Takes a batch (half the ring plus the pushed G) in one call, so the
    /// scheduler pays one lock per `CAPACITY / 2` Gs.
    fn push_batch(&self, batch: &mut dyn Iterator<Item = GPtr>);
}

/// The state every P can see.
struct Shared {
    /// Next slot to consume. CAS by the owner (pop) and thieves (steal).
    head: CachePadded<AtomicU32>,
    /// Next slot to fill. Stored only by the owner; loaded by thieves.
    tail: CachePadded<AtomicU32>,
    /// Go's `runnext`: the G readied last, to run before the ring.
    runnext: AtomicPtr<crate::g::G>,
    slots: Box<[AtomicPtr<crate::g::G>]>,
}

/// 128-byte alignment keeps `head` and `tail` on separate cache lines (and
/// separate adjacent-line prefetch pairs on x86), so thieves hammering
/// `head` do not slow the owner's `tail` stores.
#[repr(align(128))]
struct CachePadded<T>(T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Creates one queue: the owner's end and the end every thief clones.
pub fn new() -> (Local, Stealer) {
    let shared = Arc::new(Shared {
        head: CachePadded(AtomicU32::new(0)),
        tail: CachePadded(AtomicU32::new(0)),
        runnext: AtomicPtr::new(ptr::null_mut()),
        slots: (0..CAPACITY)
            .map(|_| AtomicPtr::new(ptr::null_mut()))
            .collect(),
    });
    (Local { q: shared.clone() }, Stealer { q: shared })
}

/// The owner P's end. `&mut self` on every method: one M at a time.
pub struct Local {
    q: Arc<Shared>,
}

/// Any P's end, for stealing and for looking.
#[derive(Clone)]
pub struct Stealer {
    q: Arc<Shared>,
}

impl Shared {
    fn slot(&self, i: u32) -> &AtomicPtr<crate::g::G> {
        &self.slots[(i & MASK) as usize]
    }

    fn len(&self) -> u32 {
        // Acquire on both: a racy snapshot, but one where tail - head is at
        // most CAPACITY unless head moved in between (then it is 'huge' and
        // we clamp; callers only use it as a hint).
        let h = self.head.load(Acquire);
        let t = self.tail.load(Acquire);
        t.wrapping_sub(h).min(CAPACITY)
    }
}

impl Local {
    /// Go's `runqput`. With `next`, `g` takes the runnext slot and the G it
    /// displaces goes to the tail; otherwise `g` goes to the tail. A full ring
    /// moves half of itself plus the G to `overflow`.
    ///
    /// Returns false when `g` went into an empty runnext slot and nothing
    /// else moved (the ring did not grow: `Sched::ready` wakes nobody for
    /// that), true otherwise.
    pub fn push(&mut self, g: GPtr, next: bool, overflow: &dyn Overflow) -> bool {
        let mut g = g;
        if next {
            // Only the owner stores a non-null runnext, so a swap cannot race
            // another setter; a thief may CAS it to null concurrently, and
            // then we simply get null back. AcqRel: Release publishes `g` to
            // the thief whose CAS takes it; Acquire sees the old G fully.
            let old = self.q.runnext.swap(g.as_ptr(), AcqRel);
            if old.is_null() {
                return false;
            }
            // SAFETY: non-null runnext values are G pointers we stored.
            g = unsafe { GPtr::from_ptr(old) };
        }
        loop {
            // Acquire: pairs with the Release CAS of thieves/pops, so slots
            // they consumed are free to overwrite.
            let h = self.q.head.load(Acquire);
            let t = self.q.tail.load(Relaxed); // only we store tail
            if t.wrapping_sub(h) < CAPACITY {
                self.q.slot(t).store(g.as_ptr(), Relaxed);
                // Release: publishes the slot; pairs with Acquire of tail in
                // pop and steal.
                self.q.tail.store(t.wrapping_add(1), Release);
                return true;
            }
            if self.push_slow(g, h, t, overflow) {
                return true;
            }
            // A thief took some Gs meanwhile: there is room now.
        }
    }

    /// Go's `runqputslow`: move the older half plus `g` to the global queue.
    fn push_slow(&mut self, g: GPtr, h: u32, t: u32, overflow: &dyn Overflow) -> bool {
        let n = t.wrapping_sub(h) / 2;
        debug_assert_eq!(n, CAPACITY / 2, "push_slow on a queue that is not full");
        let mut batch: Vec<GPtr> = Vec::with_capacity(n as usize + 1);
        for i in 0..n {
            let p = self.q.slot(h.wrapping_add(i)).load(Relaxed);
            // SAFETY: slots in [h, t) hold G pointers we stored.
            batch.push(unsafe { GPtr::from_ptr(p) });
        }
        // Release: commits the consume, like a pop; pairs with the Acquire
        // load of head in steal and push.
        if self
            .q
            .head
            .compare_exchange(h, h.wrapping_add(n), Release, Relaxed)
            .is_err()
        {
            return false;
        }
        batch.push(g);
        overflow.push_batch(&mut batch.into_iter());
        true
    }

    /// Go's `runqget`. Returns the G and whether it came from runnext (it
    /// then inherits the current time slice: Go's `inheritTime`).
    ///
    /// `take_runnext = false` skips the slot, for the caller's cap on
    /// consecutive runnext runs (the slot is still taken if the ring is empty).
    pub fn pop(&mut self, take_runnext: bool) -> Option<(GPtr, bool)> {
        if take_runnext {
            if let Some(g) = self.take_runnext() {
                return Some((g, true));
            }
        }
        loop {
            let h = self.q.head.load(Acquire); // pairs with thieves' Release CAS
            let t = self.q.tail.load(Relaxed); // only we store tail
            if t == h {
                break;
            }
            let p = self.q.slot(h).load(Relaxed);
            // Release: commits the consume; a thief that loads the new head
            // (Acquire) will not copy this slot.
            if self
                .q
                .head
                .compare_exchange_weak(h, h.wrapping_add(1), Release, Relaxed)
                .is_ok()
            {
                // SAFETY: slot h was in [head, tail), so it holds a G we stored.
                return Some((unsafe { GPtr::from_ptr(p) }, false));
            }
        }
        if !take_runnext {
            return self.take_runnext().map(|g| (g, true));
        }
        None
    }

    fn take_runnext(&mut self) -> Option<GPtr> {
        let next = self.q.runnext.load(Acquire);
        if next.is_null() {
            return None;
        }
        // A failed CAS means a thief took it: Go does not retry either.
        // Acquire: pairs with the Release half of the swap that stored it.
        match self
            .q
            .runnext
            .compare_exchange(next, ptr::null_mut(), Acquire, Relaxed)
        {
            // SAFETY: non-null runnext values are G pointers we stored.
            Ok(_) => Some(unsafe { GPtr::from_ptr(next) }),
            Err(_) => None,
        }
    }

    /// Go's `runqempty`, owner's view.
    pub fn is_empty(&self) -> bool {
        Stealer { q: self.q.clone() }.is_empty()
    }

    pub fn len(&self) -> usize {
        self.q.len() as usize + usize::from(!self.q.runnext.load(Relaxed).is_null())
    }

    pub fn stealer(&self) -> Stealer {
        Stealer { q: self.q.clone() }
    }

    /// Go's `runqsteal`: steal half of `victim` into our ring; return one of
    /// the stolen Gs to run now. Owner of `self` only, and only while our ring
    /// is empty (findRunnable calls it after `pop` found nothing), which is
    /// what guarantees room for half of another ring.
    pub fn steal_from(&mut self, victim: &Stealer, steal_runnext: bool) -> Option<(GPtr, u32)> {
        let t = self.q.tail.load(Relaxed); // only we store our tail
        let n = victim.grab(&self.q, t, steal_runnext);
        if n == 0 {
            return None;
        }
        let n = n - 1;
        let p = self.q.slot(t.wrapping_add(n)).load(Relaxed);
        // SAFETY: grab wrote G pointers into [t, t+n].
        let g = unsafe { GPtr::from_ptr(p) };
        if n > 0 {
            let h = self.q.head.load(Acquire);
            assert!(
                t.wrapping_sub(h).wrapping_add(n) < CAPACITY,
                "runqsteal: runq overflow (t={t} h={h} n={n})"
            );
            // Release: publishes the copied slots to our own pops and thieves.
            self.q.tail.store(t.wrapping_add(n), Release);
        }
        Some((g, n + 1))
    }
}

impl Stealer {
    /// Go's `runqgrab`: copy half of this queue into `dst` starting at
    /// `dst_tail`, then claim them with a CAS on our head. Returns how many.
    fn grab(&self, dst: &Shared, dst_tail: u32, steal_runnext: bool) -> u32 {
        loop {
            // Acquire on both: head pairs with other consumers' Release CAS,
            // tail with the owner's Release store that published the slots.
            let h = self.q.head.load(Acquire);
            let t = self.q.tail.load(Acquire);
            let size = t.wrapping_sub(h);
            let n = size - size / 2;
            if n == 0 {
                if steal_runnext {
                    let next = self.q.runnext.load(Acquire);
                    if !next.is_null() {
                        // The owner has probably just readied this G and is
                        // about to block and run it; Go sleeps 3 µs (~50× a
                        // channel hand-off) before taking it. Yielding the
                        // thread is our coarser equivalent.
                        crate::loom::thread::yield_now();
                        // Acquire: pairs with the owner's Release swap.
                        if self
                            .q
                            .runnext
                            .compare_exchange(next, ptr::null_mut(), Acquire, Relaxed)
                            .is_err()
                        {
                            continue;
                        }
                        dst.slot(dst_tail).store(next, Relaxed);
                        return 1;
                    }
                }
                return 0;
            }
            if n > CAPACITY / 2 {
                // h and t were read at different times: inconsistent, retry.
                continue;
            }
            for i in 0..n {
                let p = self.q.slot(h.wrapping_add(i)).load(Relaxed);
                dst.slot(dst_tail.wrapping_add(i)).store(p, Relaxed);
            }
            // Release: commits the consume (pairs with the owner's Acquire of
            // head before it overwrites these slots). If it fails, another
            // consumer took some of them and the copies are discarded.
            if self
                .q
                .head
                .compare_exchange_weak(h, h.wrapping_add(n), Release, Relaxed)
                .is_ok()
            {
                return n;
            }
        }
    }

    /// Go's `runqempty`: re-reads tail so a runnext kick racing with the read
    /// cannot make a non-empty queue look empty.
    pub fn is_empty(&self) -> bool {
        loop {
            let h = self.q.head.load(Acquire);
            let t = self.q.tail.load(Acquire);
            let next = self.q.runnext.load(Acquire);
            if self.q.tail.load(Acquire) == t {
                return h == t && next.is_null();
            }
        }
    }

    /// Length hint for stats (ring plus runnext).
    pub fn len(&self) -> usize {
        self.q.len() as usize + usize::from(!self.q.runnext.load(Relaxed).is_null())
    }
}
