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

use super::{Sched, P};
use crate::g::GPtr;
use crate::loom::lock;

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
        let g = GPtr::alloc();
        lock(&self.allgs).push(g);
        g
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
