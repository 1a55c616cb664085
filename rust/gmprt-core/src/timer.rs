//! timer: the timer set, a 4-ary min-heap with lazy cancellation (Go's
//! `timerHeapN = 4` heap, time.go).
//!
//! # Ownership
//!
//! A [`Timers`] is plain data with no locking of its own: the netpoller keeps
//! it under one mutex (`netpoll::Inner::timers`), and only a netpoll poll
//! fires it (whichever thread polls). Anyone holding that mutex may add or
//! cancel.
//!
//! # Layout and invariants
//!
//! - `slots` holds each armed timer's payload (what to wake), indexed by slot.
//!   A slot is free when it holds `None`; free slots are chained in `free`.
//! - `heap` holds one [`Entry`] per timer ever added and not yet popped or
//!   compacted away: `(when, id, slot)`, ordered by `(when, id)`. `id` is a
//!   sequence number unique to one add, so equal deadlines fire in the order
//!   they were added, and it doubles as the slot's generation: an entry is
//!   *live* iff `slots[slot]` holds the same `id`.
//! - Cancelling frees the slot at once (so its payload, a G's waker, is
//!   released at once) and leaves the heap entry behind as garbage, counted
//!   in `dead`. Popping skips dead entries. When `dead` exceeds half the
//!   heap, [`Timers::compact`] drops them all in O(n): the heap never holds
//!   more than twice the armed timers (plus one), however many deadlines are
//!   set and cancelled. Go's `adjust` has the same shape (zombies > len/4).
//!
//! Every operation is O(log₄ n) except compaction, which is O(n) and runs at
//! most once per n/2 cancellations: amortised O(1) per cancel.
//!
//! Times are nanoseconds on the netpoller's clock (`u64`, from an `Instant`
//! base), which keeps entries at 24 bytes.

/// A timer's handle: cancel it with [`Timers::cancel`]. Stale keys (the
/// timer fired or was cancelled, its slot reused) are recognised by `id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerKey {
    slot: u32,
    id: u64,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    when: u64,
    id: u64,
    slot: u32,
}

impl Entry {
    fn key(&self) -> (u64, u64) {
        (self.when, self.id)
    }
}

struct Slot<T> {
    /// The id of the timer that occupies the slot (meaningless when free).
    id: u64,
    item: Option<T>,
}

/// Go's `timerHeapN`: a 4-ary heap is shallower than a binary one and its
/// four children share a cache line.
const ARITY: usize = 4;

/// A set of timers carrying payloads of type `T`.
pub struct Timers<T> {
    heap: Vec<Entry>,
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    /// Heap entries whose timer was cancelled (see the module docs).
    dead: usize,
    next_id: u64,
}

impl<T> Default for Timers<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Timers<T> {
    pub fn new() -> Timers<T> {
        Timers {
            heap: Vec::new(),
            slots: Vec::new(),
            free: Vec::new(),
            dead: 0,
            next_id: 0,
        }
    }

    /// Armed timers.
    pub fn len(&self) -> usize {
        self.heap.len() - self.dead
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Heap entries, live and dead (for the compaction bound in tests).
    pub fn heap_len(&self) -> usize {
        self.heap.len()
    }

    /// Arms a timer that fires at `when`.
    pub fn add(&mut self, when: u64, item: T) -> TimerKey {
        let id = self.next_id;
        self.next_id += 1;
        let slot = match self.free.pop() {
            Some(s) => {
                let sl = &mut self.slots[s as usize];
                debug_assert!(sl.item.is_none(), "free slot {s} is occupied");
                sl.id = id;
                sl.item = Some(item);
                s
            }
            None => {
                let s = u32::try_from(self.slots.len()).expect("more than 2^32 armed timers");
                self.slots.push(Slot {
                    id,
                    item: Some(item),
                });
                s
            }
        };
        self.heap.push(Entry { when, id, slot });
        self.sift_up(self.heap.len() - 1);
        TimerKey { slot, id }
    }

    /// Disarms a timer, returning its payload; None if it already fired or
    /// was cancelled. The heap entry is left behind (lazy cancellation).
    pub fn cancel(&mut self, key: TimerKey) -> Option<T> {
        let sl = self.slots.get_mut(key.slot as usize)?;
        if sl.id != key.id {
            return None;
        }
        let item = sl.item.take()?;
        self.free.push(key.slot);
        self.dead += 1;
        if self.dead > self.heap.len() / 2 {
            self.compact();
        }
        Some(item)
    }

    /// The earliest armed deadline.
    pub fn next_when(&mut self) -> Option<u64> {
        self.clean_head();
        self.heap.first().map(|e| e.when)
    }

    /// Removes and returns the earliest timer if it is due at `now`.
    pub fn pop_due(&mut self, now: u64) -> Option<T> {
        self.clean_head();
        let top = *self.heap.first()?;
        if top.when > now {
            return None;
        }
        self.pop_top();
        let sl = &mut self.slots[top.slot as usize];
        let item = sl.item.take().expect("live heap entry without a payload");
        self.free.push(top.slot);
        Some(item)
    }

    /// Drops every timer, returning the payloads.
    pub fn drain(&mut self) -> Vec<T> {
        self.heap.clear();
        self.free.clear();
        self.dead = 0;
        let items = self.slots.drain(..).filter_map(|s| s.item).collect();
        items
    }

    /// Pops dead entries off the top, so the top is live (or the heap empty).
    fn clean_head(&mut self) {
        while let Some(top) = self.heap.first() {
            if self.is_live(top) {
                return;
            }
            self.pop_top();
            self.dead -= 1;
        }
    }

    fn is_live(&self, e: &Entry) -> bool {
        let sl = &self.slots[e.slot as usize];
        sl.id == e.id && sl.item.is_some()
    }

    fn pop_top(&mut self) {
        let last = self.heap.pop().expect("pop from an empty heap");
        if !self.heap.is_empty() {
            self.heap[0] = last;
            self.sift_down(0);
        }
    }

    /// Drops every dead entry and rebuilds the heap (Floyd, O(n)).
    fn compact(&mut self) {
        let mut heap = std::mem::take(&mut self.heap);
        heap.retain(|e| self.is_live(e));
        self.heap = heap;
        self.dead = 0;
        if self.heap.len() > 1 {
            for i in (0..=(self.heap.len() - 2) / ARITY).rev() {
                self.sift_down(i);
            }
        }
    }

    fn sift_up(&mut self, mut i: usize) {
        let e = self.heap[i];
        while i > 0 {
            let parent = (i - 1) / ARITY;
            if self.heap[parent].key() <= e.key() {
                break;
            }
            self.heap[i] = self.heap[parent];
            i = parent;
        }
        self.heap[i] = e;
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.heap.len();
        let e = self.heap[i];
        loop {
            let first = i * ARITY + 1;
            if first >= n {
                break;
            }
            let mut min = first;
            for c in first + 1..(first + ARITY).min(n) {
                if self.heap[c].key() < self.heap[min].key() {
                    min = c;
                }
            }
            if e.key() <= self.heap[min].key() {
                break;
            }
            self.heap[i] = self.heap[min];
            i = min;
        }
        self.heap[i] = e;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64, deterministic.
    fn rng(seed: &mut u64) -> u64 {
        let mut x = *seed;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *seed = x;
        x
    }

    #[test]
    fn fires_in_deadline_order_fifo_on_ties() {
        let mut t = Timers::new();
        let mut seed = 0x1234_5678_9abc_def0;
        let mut want = Vec::new();
        for i in 0..10_000u64 {
            let when = rng(&mut seed) % 500;
            t.add(when, (when, i));
            want.push((when, i));
        }
        want.sort();
        assert_eq!(t.len(), 10_000);
        let mut got = Vec::new();
        let mut now = 0;
        while !t.is_empty() {
            while let Some(x) = t.pop_due(now) {
                assert!(x.0 <= now, "fired early: {x:?} at {now}");
                got.push(x);
            }
            now += 7;
        }
        assert_eq!(got, want);
        assert_eq!(t.pop_due(u64::MAX), None);
    }

    #[test]
    fn not_due_stays() {
        let mut t = Timers::new();
        t.add(100, 'a');
        assert_eq!(t.pop_due(99), None);
        assert_eq!(t.next_when(), Some(100));
        assert_eq!(t.pop_due(100), Some('a'));
        assert_eq!(t.next_when(), None);
    }

    #[test]
    fn cancel_removes_and_stale_keys_are_ignored() {
        let mut t = Timers::new();
        let a = t.add(10, 'a');
        let b = t.add(20, 'b');
        let c = t.add(5, 'c');
        assert_eq!(t.cancel(c), Some('c'));
        assert_eq!(t.cancel(c), None, "double cancel");
        assert_eq!(t.len(), 2);
        assert_eq!(t.next_when(), Some(10));
        assert_eq!(t.pop_due(15), Some('a'));
        assert_eq!(t.cancel(a), None, "cancel after fire");
        // `a`'s slot is reused; the old key must not cancel the new timer.
        let d = t.add(30, 'd');
        assert_eq!(t.cancel(a), None);
        assert_eq!(t.cancel(b), Some('b'));
        assert_eq!(t.pop_due(100), Some('d'));
        assert_eq!(t.cancel(d), None);
        assert!(t.is_empty());
    }

    #[test]
    fn compaction_bounds_garbage() {
        let mut t = Timers::new();
        let mut seed = 42;
        let mut keys = Vec::new();
        // A long-lived timer and a churn of deadlines set and cancelled, the
        // way per-operation deadlines behave on a busy server.
        t.add(u64::MAX, 0u64);
        for i in 0..200_000u64 {
            keys.push(t.add(1_000 + rng(&mut seed) % 1_000_000, i));
            if keys.len() > 100 {
                let k = keys.swap_remove((rng(&mut seed) % keys.len() as u64) as usize);
                assert!(t.cancel(k).is_some());
            }
            assert!(
                t.heap_len() <= 2 * t.len() + 1,
                "garbage grew: heap {} for {} armed",
                t.heap_len(),
                t.len()
            );
        }
        assert_eq!(t.len(), keys.len() + 1);
        // Slots are reused, not grown per add.
        assert!(t.slots.len() <= 2 * (keys.len() + 1) + 1);
        let mut n = 0;
        while t.pop_due(u64::MAX - 1).is_some() {
            n += 1;
        }
        assert_eq!(n, keys.len());
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn cancel_everything_then_reuse() {
        let mut t = Timers::new();
        let keys: Vec<_> = (0..1000).map(|i| t.add(i, i)).collect();
        for k in keys {
            t.cancel(k).unwrap();
        }
        assert!(t.is_empty());
        assert!(t.heap_len() <= 1);
        assert_eq!(t.next_when(), None);
        t.add(3, 3);
        assert_eq!(t.pop_due(3), Some(3));
    }

    #[test]
    fn a_million_timers() {
        let mut t = Timers::new();
        let mut seed = 7;
        for _ in 0..1_000_000u64 {
            let when = rng(&mut seed) % 10_000_000;
            t.add(when, when);
        }
        let mut last = 0;
        let mut n = 0;
        let mut now = 0;
        while n < 1_000_000 {
            now += 10_000;
            while let Some(when) = t.pop_due(now) {
                assert!(
                    when >= last && when <= now,
                    "out of order: {when} after {last}"
                );
                last = when;
                n += 1;
            }
        }
        assert!(t.is_empty());
    }
}
