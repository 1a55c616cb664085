//! The registrations' slab: mio tokens to registrations, with a generation
//! per slot so that a recycled token never wakes the wrong G.
//!
//! # Tokens carry a generation
//!
//! A registration's mio token is its slab index (low 32 bits) plus the
//! slot's generation (high bits). A slot's generation moves on when it is
//! freed, so an event still in flight for a deregistered fd (copied out of
//! the kernel before the `EPOLL_CTL_DEL`) is recognised as stale and never
//! wakes the G of a newer registration in the same slot.
//!
//! The slab lives under the netpoller's `ios` lock (`Inner::ios`); nothing
//! here is concurrent.

use crate::loom::sync::Arc;

use super::registration::IoShared;

/// Generations are masked to 31 bits, so no registration token is ever
/// `usize::MAX`, the `mio::Waker`'s token (`sys`).
const GEN_MASK: u32 = 0x7fff_ffff;

const _: () = assert!(
    usize::BITS == 64,
    "netpoll tokens pack 32-bit index + generation"
);

/// The slab of registrations, indexed by the low half of a token.
pub(super) struct Slab<W> {
    entries: Vec<SlabEntry<W>>,
    free: Vec<u32>,
}

struct SlabEntry<W> {
    gen: u32,
    io: Option<Arc<IoShared<W>>>,
}

impl<W> Slab<W> {
    pub(super) fn new() -> Slab<W> {
        Slab {
            entries: Vec::new(),
            free: Vec::new(),
        }
    }

    fn token(index: u32, gen: u32) -> usize {
        ((gen as usize) << 32) | index as usize
    }

    pub(super) fn insert(&mut self, ready: bool) -> Arc<IoShared<W>> {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                let i = u32::try_from(self.entries.len()).expect("more than 2^32 registrations");
                self.entries.push(SlabEntry { gen: 0, io: None });
                i
            }
        };
        let e = &mut self.entries[index as usize];
        let io = Arc::new(IoShared::new(Self::token(index, e.gen), ready));
        e.io = Some(io.clone());
        io
    }

    pub(super) fn get(&self, token: usize) -> Option<&Arc<IoShared<W>>> {
        let e = self.entries.get(token as u32 as usize)?;
        if Self::token(token as u32, e.gen) != token {
            return None;
        }
        e.io.as_ref()
    }

    /// Frees the slot of `token`, moving its generation on so that events
    /// still in flight for it are recognised as stale.
    pub(super) fn remove(&mut self, token: usize) -> Option<Arc<IoShared<W>>> {
        let index = token as u32;
        let e = self.entries.get_mut(index as usize)?;
        if Self::token(index, e.gen) != token {
            return None;
        }
        let io = e.io.take()?;
        e.gen = (e.gen + 1) & GEN_MASK;
        self.free.push(index);
        Some(io)
    }

    pub(super) fn drain(&mut self) -> Vec<Arc<IoShared<W>>> {
        let mut out = Vec::new();
        for (i, e) in self.entries.iter_mut().enumerate() {
            if let Some(io) = e.io.take() {
                e.gen = (e.gen + 1) & GEN_MASK;
                self.free.push(i as u32);
                out.push(io);
            }
        }
        out
    }
}
