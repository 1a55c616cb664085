//! Readiness with ticks: what the netpoller knows about one fd's two
//! directions, and the rule that keeps an edge from being lost.
//!
//! Readiness is edge-triggered (mio always is on Linux): an event says
//! "something changed", never "still ready", so an operation retries its
//! syscall until `WouldBlock` and only then marks the direction not ready.
//! The danger is the event that lands between the syscall's `WouldBlock`
//! and that clear: erase it and the G sleeps on an fd that is ready.
//!
//! So the word packs a *tick*, bumped by every event, above the ready bits.
//! An operation reads a snapshot ([`ReadyEvent`]) *before* its syscall and
//! clears the bit only if the tick has not moved ([`Readiness::clear`]):
//! a CAS that fails when an event arrived since the snapshot. The poller
//! sets bits with one RMW that bumps the tick ([`Readiness::set`]).
//!
//! A third bit, *read closed*, is sticky: set by the event that reports
//! the peer's shutdown (or an error), never cleared. An owner that treats a
//! short read as "drained" checks it first: the hang-up that arrived with
//! the data it read leaves the fd readable (EOF) with no further event.
//!
//! Who writes: the poller sets (any thread holding the `poller` lock, or a
//! model test playing the kernel); operations clear (any thread). Both are
//! RMWs on the one word, so neither can undo the other's newer write.

use crate::loom::sync::atomic::{AtomicUsize, Ordering::*};

use super::sys::{EV_READABLE, EV_READ_CLOSED, EV_WRITABLE};

pub(super) const READABLE: usize = EV_READABLE;
pub(super) const WRITABLE: usize = EV_WRITABLE;
const READ_CLOSED: usize = EV_READ_CLOSED;
const READY_MASK: usize = READABLE | WRITABLE;
const BITS_MASK: usize = READY_MASK | READ_CLOSED;
const TICK_SHIFT: u32 = 3;

/// Which half of a registration an operation waits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Read,
    Write,
}

impl Dir {
    pub(super) fn bit(self) -> usize {
        match self {
            Dir::Read => READABLE,
            Dir::Write => WRITABLE,
        }
    }
}

/// A readiness snapshot: pass it back to
/// [`Registration::clear_readiness`](super::Registration::clear_readiness)
/// after a `WouldBlock`.
#[derive(Clone, Copy, Debug)]
pub struct ReadyEvent {
    pub(super) tick: usize,
    bit: usize,
    /// The direction may be ready: try the syscall.
    pub ready: bool,
    /// An event reported the read side closed (module docs): a read will
    /// not block again.
    pub read_closed: bool,
}

/// `tick << TICK_SHIFT | read-closed and ready bits`, for both directions
/// of one fd.
pub(super) struct Readiness(AtomicUsize);

impl Readiness {
    /// `ready`: both directions start ready (a fresh socket: try first) or
    /// not (the caller just saw `WouldBlock`).
    pub(super) fn new(ready: bool) -> Readiness {
        Readiness(AtomicUsize::new(if ready { READY_MASK } else { 0 }))
    }

    /// Any thread: the readiness of `dir` now.
    pub(super) fn get(&self, dir: Dir) -> ReadyEvent {
        // Acquire: pairs with the AcqRel RMW in `set`, so a syscall made
        // after seeing the bit sees what the event announced.
        let cur = self.0.load(Acquire);
        ReadyEvent {
            tick: cur >> TICK_SHIFT,
            bit: dir.bit(),
            ready: cur & dir.bit() != 0,
            read_closed: cur & READ_CLOSED != 0,
        }
    }

    /// The poller: an event reported `bits`. Bumps the tick, so a clear
    /// based on an older snapshot fails.
    pub(super) fn set(&self, bits: usize) {
        // AcqRel: Release publishes the event to `get`'s Acquire; Acquire
        // orders us after the last clear.
        let _ = self.0.fetch_update(AcqRel, Acquire, |cur| {
            let tick = (cur >> TICK_SHIFT).wrapping_add(1);
            Some((tick << TICK_SHIFT) | (cur & BITS_MASK) | (bits & BITS_MASK))
        });
    }

    /// After a `WouldBlock`: mark the direction not ready, unless an event
    /// arrived since `ev` was read (then the next try may succeed).
    pub(super) fn clear(&self, ev: ReadyEvent) {
        let mut cur = self.0.load(Acquire);
        loop {
            if cur >> TICK_SHIFT != ev.tick || cur & ev.bit == 0 {
                return;
            }
            // AcqRel CAS: fails if `set` moved the tick meanwhile (pairs
            // with its RMW), so a newer event is never erased.
            match self
                .0
                .compare_exchange_weak(cur, cur & !ev.bit, AcqRel, Acquire)
            {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }
}
