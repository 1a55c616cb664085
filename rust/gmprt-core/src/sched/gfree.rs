//! gfree: the G free lists (Go's `gfget`/`gfput` and `sched.gFree`).
//!
//! A finished G is kept for reuse, never freed while its `Sched` lives
//! (`g` module docs): a stale waker may still point at it.
//!
//! # Who touches what
//!
//! - `P::gfree`: the per-P cache, owner M only, no lock. It spills 32 Gs to
//!   the global list at 64, and refills up to 32 from it when empty.
//! - `Sched::gfree`: the global list, under its own mutex (not
//!   `Sched::lock`), any thread: a spawn from outside an M, a G that
//!   finishes on an M whose P was retaken, and the per-P spills and
//!   refills.
//! - `Sched::allgs`: every G ever allocated, under its own mutex. Only
//!   `galloc` pushes to it, so it holds each G once, which is what lets
//!   `Sched`'s drop free every G exactly once through it (never through
//!   the free lists).
//!
//! # Slabs
//!
//! Since no G is freed before its `Sched`, Gs need no allocation of their
//! own: [`AllGs`] hands them out of slabs (Boxed slices, 16 Gs doubling to
//! 1,024), which *are* the list of every G. That saves each G a malloc
//! header and its rounding (a 40-byte G took a 48-byte chunk) and the
//! `Vec<GPtr>` that listed them (8 bytes a G, up to 16 while it doubles):
//! every parked G counts (issue 14). A slab's Gs never move: the `Vec` of
//! slabs reallocates only the boxes' pointers, not what they point at.
//! Loom builds use slabs of one, so models see the Gs they always did.

use super::{Sched, P};
use crate::g::{GPtr, G};
use crate::loom::lock;

#[cfg(not(loom))]
const SLAB_MIN: usize = 16;
#[cfg(not(loom))]
const SLAB_MAX: usize = 1024;
#[cfg(loom)]
const SLAB_MIN: usize = 1;
#[cfg(loom)]
const SLAB_MAX: usize = 1;

/// Every G ever allocated (Go's `allgs`), in the slabs they live in
/// (module docs, "Slabs"). Under `Sched::allgs`'s mutex.
pub(crate) struct AllGs {
    slabs: Vec<Box<[G]>>,
    /// How many Gs of the last slab are handed out.
    used: usize,
}

impl AllGs {
    pub(crate) const fn new() -> AllGs {
        AllGs {
            slabs: Vec::new(),
            used: 0,
        }
    }

    /// A new idle G, from the last slab or a new one.
    fn alloc(&mut self) -> GPtr {
        let full = self.slabs.last().is_none_or(|s| self.used == s.len());
        if full {
            let n = self
                .slabs
                .last()
                .map_or(SLAB_MIN, |s| (2 * s.len()).min(SLAB_MAX));
            self.slabs.push((0..n).map(|_| G::new()).collect());
            self.used = 0;
        }
        let slab = self
            .slabs
            .last()
            .expect("a slab with room was just ensured");
        let g = GPtr::in_slab(&slab[self.used]);
        self.used += 1;
        g
    }

    /// Every G handed out, in allocation order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = GPtr> + '_ {
        let last = self.slabs.len().saturating_sub(1);
        self.slabs.iter().enumerate().flat_map(move |(i, s)| {
            let n = if i == last { self.used } else { s.len() };
            s[..n].iter().map(GPtr::in_slab)
        })
    }

    /// [`iter`](Self::iter), collected: to look at the Gs without the lock.
    pub(crate) fn snapshot(&self) -> Vec<GPtr> {
        self.iter().collect()
    }
}

/// Go's per-P free-list cache: at 64 idle Gs, move 32 to the global list.
const GFREE_LOCAL_MAX: usize = 64;
const GFREE_BATCH: usize = 32;

impl Sched {
    /// Go's `gfget`: a recycled G from the P's cache, refilled from the global
    /// free list, or a new one.
    pub(super) fn gfget(&self, p: &mut P) -> GPtr {
        if p.gfree.is_empty() {
            let mut global = lock(&self.gfree);
            let take = global.len().min(GFREE_BATCH);
            let at = global.len() - take;
            p.gfree.extend(global.drain(at..));
        }
        p.gfree.pop().unwrap_or_else(|| self.galloc())
    }

    pub(super) fn gfget_global(&self) -> GPtr {
        let g = lock(&self.gfree).pop();
        g.unwrap_or_else(|| self.galloc())
    }

    fn galloc(&self) -> GPtr {
        lock(&self.allgs).alloc()
    }

    /// Go's `gfput`.
    pub(super) fn gfput(&self, p: &mut P, g: GPtr) {
        p.gfree.push(g);
        if p.gfree.len() >= GFREE_LOCAL_MAX {
            let at = p.gfree.len() - GFREE_BATCH;
            lock(&self.gfree).extend(p.gfree.drain(at..));
        }
    }
}
