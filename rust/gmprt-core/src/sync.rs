//! sync: `WaitGroup`, `Semaphore` and `Mutex` for Gs (Go's sync package and
//! x/sync/semaphore), on the same parkers and wait queues as channels.
//!
//! Each type has one lock over its counter and its wait queue; like a
//! channel's, it is held for a few moves only and never while waking.
//! Permits are handed to waiters directly, in FIFO order: a released permit
//! (or mutex) goes to the longest waiter, never to a newcomer that barges
//! in, so no waiter starves.
//!
//! A waiter that gives up (timeout, cancel) may lose the race to a release
//! that already handed it the permit: [`Op::cancel`] then reports
//! `Done::Ok`, and the caller owns the permit (and must release it if it no
//! longer wants it).

use crate::loom::sync::{Mutex as Lock, MutexGuard};
use crate::sudog::{wake_all, Notify, Op, WaitQ, Wake};

/// A counting semaphore with a fixed number of permits.
pub struct Semaphore {
    permits: usize,
    st: Lock<SemState>,
}

struct SemState {
    /// Permits not held by anyone. Zero whenever a live waiter is queued.
    free: usize,
    waiters: WaitQ<()>,
}

/// Released more than was acquired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverRelease;

impl Semaphore {
    pub fn new(permits: usize) -> Semaphore {
        Semaphore {
            permits,
            st: Lock::new(SemState {
                free: permits,
                waiters: WaitQ::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SemState> {
        crate::loom::lock(&self.st)
    }

    pub fn permits(&self) -> usize {
        self.permits
    }

    /// Permits free now.
    pub fn available(&self) -> usize {
        self.lock().free
    }

    /// Waiters queued now (a hint).
    pub fn waiting(&self) -> usize {
        self.lock().waiters.waiting()
    }

    pub fn try_acquire(&self) -> bool {
        let mut st = self.lock();
        if st.free > 0 {
            st.free -= 1;
            true
        } else {
            false
        }
    }

    /// Takes a permit now (None), or queues for one: the permit is the
    /// caller's once the operation ends `Done::Ok`.
    pub fn acquire_or_park(&self, notify: Notify) -> Option<Op<()>> {
        let mut st = self.lock();
        if st.free > 0 {
            st.free -= 1;
            return None;
        }
        let op = Op::new(notify, 1, |_| None);
        st.waiters.push(op.entry(0));
        Some(op)
    }

    /// Returns a permit: to the first waiter if there is one, else to the
    /// pool. Err if every permit is already free.
    pub fn release(&self) -> Result<(), OverRelease> {
        let mut st = self.lock();
        if let Some(w) = st.waiters.claim() {
            let w = w.finish(false);
            drop(st);
            w.wake();
            return Ok(());
        }
        if st.free >= self.permits {
            return Err(OverRelease);
        }
        st.free += 1;
        Ok(())
    }
}

/// A mutual-exclusion lock for Gs: a semaphore of one permit. Like Go's
/// `sync.Mutex`, it is not tied to the G that locked it.
pub struct Mutex(Semaphore);

/// Unlock of an unlocked mutex.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotLocked;

impl Default for Mutex {
    fn default() -> Self {
        Mutex::new()
    }
}

impl Mutex {
    pub fn new() -> Mutex {
        Mutex(Semaphore::new(1))
    }

    pub fn is_locked(&self) -> bool {
        self.0.available() == 0
    }

    pub fn waiting(&self) -> usize {
        self.0.waiting()
    }

    pub fn try_lock(&self) -> bool {
        self.0.try_acquire()
    }

    /// Locks now (None) or queues (the lock is the caller's once the
    /// operation ends `Done::Ok`).
    pub fn lock_or_park(&self, notify: Notify) -> Option<Op<()>> {
        self.0.acquire_or_park(notify)
    }

    /// Unlocks, handing the lock to the first waiter if any.
    pub fn unlock(&self) -> Result<(), NotLocked> {
        self.0.release().map_err(|OverRelease| NotLocked)
    }
}

/// Go's `sync.WaitGroup`.
pub struct WaitGroup {
    st: Lock<WgState>,
}

struct WgState {
    count: i64,
    waiters: WaitQ<()>,
}

/// `add` would make the counter negative (it is left unchanged).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NegativeCounter {
    pub count: i64,
    pub delta: i64,
}

impl Default for WaitGroup {
    fn default() -> Self {
        WaitGroup::new()
    }
}

impl WaitGroup {
    pub fn new() -> WaitGroup {
        WaitGroup {
            st: Lock::new(WgState {
                count: 0,
                waiters: WaitQ::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, WgState> {
        crate::loom::lock(&self.st)
    }

    pub fn count(&self) -> i64 {
        self.lock().count
    }

    pub fn waiting(&self) -> usize {
        self.lock().waiters.waiting()
    }

    /// Adds `delta` (may be negative); at zero every waiter is released.
    pub fn add(&self, delta: i64) -> Result<(), NegativeCounter> {
        let mut st = self.lock();
        let count = st.count;
        let new = count
            .checked_add(delta)
            .filter(|n| *n >= 0)
            .ok_or(NegativeCounter { count, delta })?;
        st.count = new;
        if new > 0 {
            return Ok(());
        }
        let wakes: Vec<Wake<()>> = st
            .waiters
            .claim_all()
            .into_iter()
            .map(|w| w.finish(false))
            .collect();
        drop(st);
        wake_all(wakes);
        Ok(())
    }

    /// Returns None if the counter is zero, else queues until it is.
    pub fn wait_or_park(&self, notify: Notify) -> Option<Op<()>> {
        let mut st = self.lock();
        if st.count == 0 {
            return None;
        }
        let op = Op::new(notify, 1, |_| None);
        st.waiters.push(op.entry(0));
        Some(op)
    }
}
