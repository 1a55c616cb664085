//! sudog: one blocked operation (Go's `sudog` + `g.selectDone`), and the wait
//! queues of channels, semaphores and wait groups that hold it.
//!
//! # Parker
//!
//! A [`Parker`] is one blocked operation of one waiter: a plain send or
//! receive has one *case*, a select has one per case. It holds
//!
//! - `state`, the word every party races on: `PENDING`, then `CLAIMED(case)`
//!   while the winner works, then final: `OK(case)`, `CLOSED(case)` or
//!   `EXPIRED` (the owner gave up: a timeout, or a dropped await). Leaving `PENDING` is a CAS, so exactly one party wins the
//!   whole operation: that CAS *is* Go's `selectDone`, and a plain operation
//!   is a select of one case.
//! - `slots`, one value slot per case: a send case's value waits there for a
//!   receiver to take it; a receive case's value is put there by a sender.
//! - `notify`, how to wake the waiter: a G's [`Waker`] or, for synchronous
//!   callers (sync Gs, foreign threads), the blocked thread.
//!
//! # Who touches a slot, and when
//!
//! 1. The **owner** (the [`Op`]) fills send slots before the parker is
//!    published in any queue (under the lock of each queue it is pushed to).
//! 2. A **claimer** (a sender, receiver, `close`, `release` ... holding the
//!    lock of a queue that contains the parker) may touch slot `i` only
//!    after its CAS `PENDING → CLAIMED(i)` won, and only until it stores the
//!    final state (Release). A [`Claimed`] value is that permission.
//! 3. The **owner** touches slots again only after it loaded a final state
//!    (Acquire), or after its own CAS `PENDING → EXPIRED` won: from then on
//!    nobody else will.
//!
//! The wake (`notify`) is delivered after the final store and after the
//! claimer dropped its queue lock (Go readies Gs after unlocking).
//!
//! # Sharing
//!
//! The owner and every queue entry share the parker through a [`PRef`], a
//! counted pointer like `Arc` without the weak count nobody uses, its
//! count a `u32` in the parker beside the state: every G parked in a
//! channel has one parker, so its size counts per G (issue 14; 40 bytes
//! is a 48-byte malloc chunk, the `Arc`'s 64 an 80-byte one). Its count
//! pairs as `Arc`'s does: increments Relaxed (a new reference is
//! made from one held), the decrement Release, and the last one an Acquire
//! fence before the free, so every use through another reference happens
//! before the drop.
//!
//! # Wait queues
//!
//! A [`WaitQ`] is a FIFO of `(parker, case)` entries. Entries whose parker
//! left `PENDING` (a select won elsewhere, a timeout, a cancelled wait) are
//! *dead*: nobody unlinks them eagerly (Go's select pass 3); dequeue skips
//! them, and a push that finds the queue at twice the live size it had at
//! the last sweep sweeps it. So dead entries cost O(1) amortised, and a
//! queue never grows past twice the most entries it ever had live (or 32).

use std::collections::VecDeque;
use std::fmt;
#[cfg(not(loom))]
use std::time::Instant;

use crate::api::Waker;
use crate::loom::cell::UnsafeCell;
use std::mem::ManuallyDrop;
use std::ptr::NonNull;

use crate::loom::sync::atomic::{fence, AtomicU32, Ordering::*};
use crate::loom::thread;

const PENDING: u32 = 0;
/// Low bits: what happened; the rest: which case.
const KIND_BITS: u32 = 3;
const KIND_MASK: u32 = (1 << KIND_BITS) - 1;
const CLAIMED: u32 = 1;
const OK: u32 = 2;
const CLOSED: u32 = 3;
const EXPIRED: u32 = 4;

fn word(case: usize, kind: u32) -> u32 {
    debug_assert!(case < (1 << (32 - KIND_BITS)), "too many cases");
    ((case as u32) << KIND_BITS) | kind
}

fn is_final(w: u32) -> bool {
    w & KIND_MASK >= OK
}

/// How a finished operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Done {
    /// Case `.0` completed: its value was delivered or taken.
    Ok(usize),
    /// Case `.0` met a closed channel (a receive gets no value; a send's
    /// value is still in its slot).
    Closed(usize),
    /// Nobody completed it: the timeout passed or the owner gave up.
    Expired,
}

fn decode(w: u32) -> Done {
    let case = (w >> KIND_BITS) as usize;
    match w & KIND_MASK {
        OK => Done::Ok(case),
        CLOSED => Done::Closed(case),
        EXPIRED => Done::Expired,
        k => unreachable!("not a final state: kind {k}"),
    }
}

/// How a blocked waiter is woken.
pub enum Notify {
    /// A parked G (a coroutine awaiting a token).
    G(Waker),
    /// A thread blocked in a synchronous call: a sync G's M, or a thread
    /// that is no M at all.
    Thread(thread::Thread),
}

impl Notify {
    /// The calling thread.
    pub fn current_thread() -> Notify {
        Notify::Thread(thread::current())
    }

    fn wake(&self) {
        match self {
            Notify::G(w) => {
                w.wake();
            }
            Notify::Thread(t) => t.unpark(),
        }
    }
}

impl fmt::Debug for Notify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notify::G(w) => write!(f, "G {}", w.g_id()),
            Notify::Thread(t) => write!(f, "thread {:?}", t.id()),
        }
    }
}

/// The value slots: one inline (a plain send or receive), or a select's
/// boxed slice (behind a second box, so that the pointer is thin). Which
/// one is active is [`MANY`] in the parker's `refs`, fixed when it is
/// made: a tag of its own would cost a word per parker.
union Slots<T> {
    one: ManuallyDrop<Slot<T>>,
    many: ManuallyDrop<Box<Box<[Slot<T>]>>>,
}

type Slot<T> = UnsafeCell<Option<T>>;

/// `Parker::refs`: set for a parker with more than one slot (`Slots`);
/// the count is in the bits below.
const MANY: u32 = 1 << 31;

/// One blocked operation, and its reference count: one allocation
/// (module docs, "Sharing"). See the module docs for the protocol.
pub(crate) struct Parker<T> {
    /// [`PRef`]s to it, and [`MANY`].
    refs: AtomicU32,
    state: AtomicU32,
    notify: Notify,
    slots: Slots<T>,
}

// SAFETY: `state` and `refs` are atomic and `notify` is Sync; the slots
// are reached only under the protocol in the module docs (one claimer, or
// the owner once the state is final), so no two threads touch one slot at
// once. Values of `T` move between threads, hence `T: Send`.
unsafe impl<T: Send> Sync for Parker<T> {}

impl<T> Parker<T> {
    fn new(notify: Notify, cases: usize) -> Parker<T> {
        let (slots, many) = if cases == 1 {
            let one = ManuallyDrop::new(UnsafeCell::new(None));
            (Slots { one }, 0)
        } else {
            let all: Box<[_]> = (0..cases).map(|_| UnsafeCell::new(None)).collect();
            let many = ManuallyDrop::new(Box::new(all));
            (Slots { many }, MANY)
        };
        Parker {
            refs: AtomicU32::new(1 | many),
            state: AtomicU32::new(PENDING),
            notify,
            slots,
        }
    }

    fn is_many(&self) -> bool {
        // Relaxed: the bit is set before the parker is shared and no
        // count change touches it, so every value of `refs` carries it.
        self.refs.load(Relaxed) & MANY != 0
    }

    fn slot(&self, i: usize) -> &Slot<T> {
        if self.is_many() {
            // SAFETY: `MANY` says `many` is the field `new` wrote, and no
            // one ever changes it.
            unsafe { &self.slots.many[i] }
        } else {
            debug_assert_eq!(i, 0, "a one-case parker has one slot");
            // SAFETY: no `MANY`: `one` is the field `new` wrote.
            unsafe { &self.slots.one }
        }
    }

    fn len(&self) -> usize {
        if self.is_many() {
            // SAFETY: as in `slot`.
            unsafe { self.slots.many.len() }
        } else {
            1
        }
    }

    fn is_pending(&self) -> bool {
        self.state.load(Acquire) == PENDING
    }

    /// The wake, after the final state is stored and every lock dropped.
    fn wake(&self) {
        self.notify.wake();
    }
}

impl<T> Drop for Parker<T> {
    fn drop(&mut self) {
        if self.is_many() {
            // SAFETY: `many` is the active field (`slot`), dropped once:
            // this is the parker's drop.
            unsafe { ManuallyDrop::drop(&mut self.slots.many) }
        } else {
            // SAFETY: `one` is the active field, dropped once, as above.
            unsafe { ManuallyDrop::drop(&mut self.slots.one) }
        }
    }
}

// A one-case parker of a pointer-sized value (a Python object, in the
// binding) fits a 48-byte malloc chunk (module docs, "Sharing").
#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<Parker<Box<u8>>>() <= 40);

/// A counted reference to a parker (module docs, "Sharing").
pub(crate) struct PRef<T>(NonNull<Parker<T>>);

// SAFETY: a `PRef` only gives shared access to the `Parker`, which is
// `Sync` for `T: Send` (above), and the last reference may drop it on any
// thread, which moves the `T`s in its slots there: `T: Send` covers both.
unsafe impl<T: Send> Send for PRef<T> {}
// SAFETY: as above; `&PRef` reaches only `&Parker` and the atomic count.
unsafe impl<T: Send> Sync for PRef<T> {}

impl<T> PRef<T> {
    fn new(parker: Parker<T>) -> PRef<T> {
        PRef(NonNull::from(Box::leak(Box::new(parker))))
    }

    #[cfg(all(test, not(loom)))]
    fn ptr_eq(a: &PRef<T>, b: &PRef<T>) -> bool {
        a.0 == b.0
    }
}

impl<T> Clone for PRef<T> {
    fn clone(&self) -> PRef<T> {
        // Relaxed: made from a reference we hold, so the count is at least
        // one and nothing is published through the increment (`Arc`'s rule).
        let old = self.refs.fetch_add(1, Relaxed) & !MANY;
        debug_assert!(old > 0 && old < MANY / 2, "parker count {old}");
        PRef(self.0)
    }
}

impl<T> std::ops::Deref for PRef<T> {
    type Target = Parker<T>;
    fn deref(&self) -> &Parker<T> {
        // SAFETY: the allocation lives while any `PRef` to it does, and
        // `self` is one.
        unsafe { self.0.as_ref() }
    }
}

impl<T> Drop for PRef<T> {
    fn drop(&mut self) {
        // Release: our uses of the parker happen before the free; pairs
        // with the Acquire fence of whoever drops the last reference.
        if self.refs.fetch_sub(1, Release) & !MANY != 1 {
            return;
        }
        fence(Acquire);
        // SAFETY: that was the last reference (the count reached zero, and
        // no new one can be made without holding one), so nobody else can
        // reach the allocation; it came from `Box::leak` in `new`.
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

/// The owner's side of a blocked operation: created by a park call of a
/// channel, semaphore or wait group, polled until it is done.
pub struct Op<T> {
    p: PRef<T>,
}

impl<T> Op<T> {
    /// A parker with `cases` slots; `fill` gives each slot its initial value
    /// (a send case's value) before anyone else can see it.
    pub(crate) fn new(
        notify: Notify,
        cases: usize,
        mut fill: impl FnMut(usize) -> Option<T>,
    ) -> Op<T> {
        let p = Parker::new(notify, cases);
        for i in 0..cases {
            let v = fill(i);
            if v.is_some() {
                // SAFETY: the parker is not shared yet (module docs, rule 1).
                p.slot(i).with_mut(|s| unsafe { *s = v });
            }
        }
        Op { p: PRef::new(p) }
    }

    /// A queue entry for case `case`.
    pub(crate) fn entry(&self, case: usize) -> Entry<T> {
        Entry {
            p: self.p.clone(),
            case: case as u32,
        }
    }

    /// How it ended, once it has (Acquire: pairs with the final store, so
    /// the slots written before it are visible). None while pending or
    /// while a claimer is still at work.
    pub fn done(&self) -> Option<Done> {
        let w = self.p.state.load(Acquire);
        is_final(w).then(|| decode(w))
    }

    /// Takes the value in slot `case`: the received value of a receive case
    /// that completed, or a send case's value that nobody took. None before
    /// the operation is done.
    pub fn take(&mut self, case: usize) -> Option<T> {
        self.done()?;
        // SAFETY: the state is final (rule 3: nobody else touches slots now)
        // and `&mut self` excludes the owner itself.
        self.p.slot(case).with_mut(|s| unsafe { (*s).take() })
    }

    /// Takes every value left in the slots (send values nobody took). Call
    /// once the operation is done; empty before.
    pub fn take_all(&mut self) -> Vec<T> {
        (0..self.p.len()).filter_map(|i| self.take(i)).collect()
    }

    /// Gives up waiting: the operation ends `Expired` unless a claimer got
    /// there first, in which case this waits out the claimer's (short,
    /// lock-held, non-blocking) work and returns what it did.
    pub fn cancel(&mut self) -> Done {
        match self
            .p
            .state
            .compare_exchange(PENDING, EXPIRED, AcqRel, Acquire)
        {
            Ok(_) => Done::Expired,
            Err(_) => loop {
                if let Some(d) = self.done() {
                    return d;
                }
                thread::yield_now();
            },
        }
    }

    /// Thread waiters (`Notify::Thread`): blocks until the operation is done
    /// or `deadline` passes. Returns whether it is done. Parking may wake
    /// spuriously; the state decides.
    #[cfg(not(loom))]
    pub fn wait(&self, deadline: Option<Instant>) -> bool {
        loop {
            if self.done().is_some() {
                return true;
            }
            match deadline {
                None => thread::park(),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    std::thread::park_timeout(left);
                }
            }
        }
    }

    /// Loom models: block until done.
    #[cfg(loom)]
    pub(crate) fn wait(&self) {
        while self.done().is_none() {
            thread::park();
        }
    }
}

impl<T> fmt::Debug for Op<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Op")
            .field("state", &self.p.state.load(Relaxed))
            .field("notify", &self.p.notify)
            .finish()
    }
}

/// One case of one parker, waiting in one queue.
pub(crate) struct Entry<T> {
    p: PRef<T>,
    case: u32,
}

/// The exclusive right to complete one parker through one case: the holder
/// won the CAS out of `PENDING` (rule 2 of the module docs).
pub(crate) struct Claimed<T> {
    p: PRef<T>,
    case: u32,
}

impl<T> Claimed<T> {
    /// Puts a value into the claimed case's slot (a receiver's value).
    pub(crate) fn put(&self, v: T) {
        // SAFETY: the claim gives this holder the slot until `finish`.
        self.p
            .slot(self.case as usize)
            .with_mut(|s| unsafe { *s = Some(v) });
    }

    /// Takes the value from the claimed case's slot (a sender's value).
    pub(crate) fn take(&self) -> Option<T> {
        // SAFETY: as in `put`.
        self.p
            .slot(self.case as usize)
            .with_mut(|s| unsafe { (*s).take() })
    }

    /// Ends the operation: `closed` says the case met a closed channel.
    /// Returns the wake to deliver once the caller's lock is dropped.
    pub(crate) fn finish(self, closed: bool) -> Wake<T> {
        let kind = if closed { CLOSED } else { OK };
        // Release: publishes the slot write to the owner's Acquire load.
        self.p.state.store(word(self.case as usize, kind), Release);
        Wake(self.p)
    }
}

/// A wake to deliver after unlocking.
#[must_use = "a claimed waiter must be woken"]
pub(crate) struct Wake<T>(PRef<T>);

impl<T> Wake<T> {
    pub(crate) fn wake(self) {
        self.0.wake();
    }
}

/// Wakes every waiter in `ws` (after the caller dropped its lock).
pub(crate) fn wake_all<T>(ws: impl IntoIterator<Item = Wake<T>>) {
    for w in ws {
        w.wake();
    }
}

/// Minimum queue length before a sweep of dead entries is considered.
const SWEEP_MIN: usize = 32;

/// A FIFO of waiting cases (Go's `waitq`). Owned by the lock of whatever it
/// belongs to.
pub(crate) struct WaitQ<T> {
    q: VecDeque<Entry<T>>,
    /// Sweep dead entries when a push finds this many.
    sweep_at: usize,
}

impl<T> WaitQ<T> {
    pub(crate) const fn new() -> WaitQ<T> {
        WaitQ {
            q: VecDeque::new(),
            sweep_at: SWEEP_MIN,
        }
    }

    pub(crate) fn push(&mut self, e: Entry<T>) {
        if self.q.len() >= self.sweep_at {
            self.q.retain(|e| e.p.is_pending());
            self.sweep_at = (2 * self.q.len()).max(SWEEP_MIN);
        }
        self.q.push_back(e);
    }

    /// Go's `dequeue`: the first entry whose parker this call wins, skipping
    /// (and dropping) dead ones. Acquire on the CAS: the slot values written
    /// by the owner before it published the entry (also ordered by the queue
    /// lock).
    pub(crate) fn claim(&mut self) -> Option<Claimed<T>> {
        while let Some(e) = self.q.pop_front() {
            let won =
                e.p.state
                    .compare_exchange(PENDING, word(e.case as usize, CLAIMED), AcqRel, Relaxed)
                    .is_ok();
            if won {
                return Some(Claimed {
                    p: e.p,
                    case: e.case,
                });
            }
        }
        None
    }

    /// Claims every live entry, in order (a close, a wait group reaching 0).
    pub(crate) fn claim_all(&mut self) -> Vec<Claimed<T>> {
        let mut out = Vec::new();
        while let Some(c) = self.claim() {
            out.push(c);
        }
        self.sweep_at = SWEEP_MIN;
        out
    }

    /// Entries still pending (a hint: a select may be won elsewhere at any
    /// moment).
    pub(crate) fn waiting(&self) -> usize {
        self.q.iter().filter(|e| e.p.is_pending()).count()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn thread_op<T>(cases: usize) -> Op<T> {
        Op::new(Notify::current_thread(), cases, |_| None)
    }

    #[test]
    fn claim_finish_take() {
        let mut op: Op<u32> = thread_op(1);
        let mut q = WaitQ::new();
        q.push(op.entry(0));
        assert_eq!(op.done(), None);
        let c = q.claim().expect("one live entry");
        c.put(7);
        assert_eq!(op.done(), None, "claimed is not final");
        c.finish(false).wake();
        assert_eq!(op.done(), Some(Done::Ok(0)));
        assert_eq!(op.take(0), Some(7));
        assert!(q.claim().is_none());
    }

    #[test]
    fn dead_entries_are_skipped_and_swept() {
        let mut q = WaitQ::new();
        let mut ops: Vec<Op<u32>> = (0..1000).map(|_| thread_op(1)).collect();
        for op in &ops {
            q.push(op.entry(0));
        }
        for op in &mut ops[..999] {
            assert_eq!(op.cancel(), Done::Expired);
        }
        // Pushing up to the sweep mark sweeps the dead ones out.
        assert_eq!(q.sweep_at, 1024);
        let live: Vec<Op<u32>> = (0..30).map(|_| thread_op(1)).collect();
        for op in &live {
            q.push(op.entry(0));
        }
        assert_eq!(q.q.len(), 1 + 24 + 6, "swept at the 25th push");
        let c = q.claim().expect("the live one");
        assert!(PRef::ptr_eq(&c.p, &ops[999].p));
        c.finish(false).wake();
        assert_eq!(q.waiting(), 30);
    }

    #[test]
    fn select_parker_is_won_once() {
        let mut op: Op<u32> = thread_op(3);
        let mut qs: Vec<WaitQ<u32>> = (0..3).map(|_| WaitQ::new()).collect();
        for (i, q) in qs.iter_mut().enumerate() {
            q.push(op.entry(i));
        }
        let c = qs[1].claim().expect("first claim wins");
        assert!(qs[0].claim().is_none(), "a second case cannot win");
        c.put(5);
        c.finish(false).wake();
        assert!(qs[2].claim().is_none());
        assert_eq!(op.done(), Some(Done::Ok(1)));
        assert_eq!(op.take(1), Some(5));
        assert_eq!(
            op.cancel(),
            Done::Ok(1),
            "cancel after completion reports it"
        );
    }

    #[test]
    fn cancel_gives_send_values_back() {
        let mut op: Op<u32> = Op::new(Notify::current_thread(), 1, |_| Some(9));
        assert_eq!(op.cancel(), Done::Expired);
        assert_eq!(op.cancel(), Done::Expired, "cancel is idempotent");
        assert_eq!(op.take_all(), vec![9], "the unsent value comes back");
    }
}
