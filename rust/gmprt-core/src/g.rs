//! G: the header of one goroutine, and the state word that makes parking safe.
//!
//! # Ownership
//!
//! A G is allocated once and never freed while its scheduler lives: finished
//! Gs go back to a free list (Go's `gfree`), and `Sched` frees them all when it
//! drops. Memory that stays a `G` for the scheduler's whole life is what lets a
//! stale [`GPtr`] (a timer that lost to a channel, say) still be dereferenced:
//! the state word, not the pointer, decides whether a wake is current.
//!
//! At any instant exactly one party *owns* a live G: the run queue it sits in,
//! the M that runs it, or, while it is parked, nobody but the state word. Only
//! the owner touches `body`.
//!
//! # State word
//!
//! `state` packs a status (low 3 bits), the [`SCAN`] bit and a generation
//! (the bits above [`STATUS_BITS`]). The generation goes up each time an M
//! takes the G off a run queue, so the wake that one park handed out can
//! ready that park and nothing later.
//!
//! | status     | meaning                                         | who leaves it            |
//! |------------|-------------------------------------------------|--------------------------|
//! | `IDLE`     | free list, or finished                          | spawner (→ RUNNABLE)     |
//! | `RUNNABLE` | in some run queue                               | the M that pops it       |
//! | `RUNNING`  | an M is stepping the body                       | that M; a waker (→ NOTIFIED) |
//! | `NOTIFIED` | still running, but its wait is already over     | that M (→ RUNNABLE)      |
//! | `PARKED`   | waiting; one waker of this generation may ready | the winning waker        |
//!
//! The driver registers a wait *before* the M commits the park (Go's
//! `gopark(unlockf)`), so a wake can arrive while the G still runs. It then
//! lands as `NOTIFIED` and the M, whose `RUNNING → PARKED` CAS fails, requeues
//! the G itself: the wake is never lost and the G never runs on two Ms.
//!
//! # Interrupts
//!
//! A cancel must reach a G whatever it is doing, without knowing which park
//! (if any) it is in: [`G::interrupt`] wakes the *current* generation, or,
//! for a G that is runnable or notified, only touches the word. The
//! canceller first writes its request (a cancel scope's flag, in the
//! binding), then interrupts; the G reads the request in its next step.
//! That is the store-buffer pattern (write A, read B / write B, read A), and
//! it holds because every transition of a live G's word is a read-modify-
//! write: RMWs on one atomic are totally ordered, each reads the latest
//! value, so either the interrupt comes first and the G's next RMW
//! (`start_running`, `commit_park`) acquires the request with it, or the
//! interrupt comes after and finds `RUNNING`/`PARKED` of the very generation
//! that must not sleep, and wakes it. A plain store anywhere in a live G's
//! life would break the release sequence and lose the request; `prepare`
//! (the G is not live yet) is the only one.
//!
//! # Scanning (Go's `_Gscan`)
//!
//! A goroutine dump (`traceback`) must read the body of a G that nobody
//! runs, to say what it waits on and where, while other Ms wake, run and
//! finish Gs. It borrows the body the way Go's `castogscanstatus` does: a
//! CAS from `RUNNABLE(gen)` or `PARKED(gen)` to the same word with [`SCAN`]
//! set ([`G::try_scan`]) makes the scanner the body's owner, and a
//! `fetch_and` clearing the bit ([`G::unscan`], Release) gives it back.
//! While the bit is set:
//!
//! - a waker or an interrupter (`wake`, `interrupt`) spins until it clears,
//!   then retries its CAS (a CAS from the word without the bit would fail
//!   anyway, and one from the word with it would lose the bit);
//! - an M that pops the G still does its `fetch_add` (`start_running`),
//!   which carries the bit into `RUNNING(gen + 1)`, and then waits for it
//!   to clear (Acquire, pairing with `unscan`) before it touches the body;
//! - `kill` spins as the wakers do.
//!
//! Nothing else meets the bit: it is never set on `RUNNING`, `NOTIFIED` or
//! `IDLE`, and the M's own transitions (`commit_park`, `yield_now`,
//! `finish`) start from `RUNNING`, which it reaches only after the bit has
//! cleared. A scan lasts as long as the scanner's closure (a few field
//! reads and reference increments): spinning is cheaper than a lock, and
//! the hot path pays one branch on a value it already has.
//!
//! # Park info
//!
//! `park` holds why and since when the G waits: its [`WaitReason`] in the
//! top byte and a coarse monotonic clock in microseconds below, stored by
//! the M (Relaxed) just before `commit_park`, whose Release publishes it
//! with the park. One clock read per park (`CLOCK_MONOTONIC_COARSE`, a
//! vDSO read of a few nanoseconds, a few ms of resolution: enough for
//! "[chan receive, 2 minutes]"). Go's `waitsince` is lazier still (the GC
//! stamps it); a dump is diagnostics, read Relaxed, and may be a park old.

use std::fmt;
use std::ptr::NonNull;

use crate::api::BoxBody;
use crate::loom::cell::UnsafeCell;
use crate::loom::sync::atomic::{AtomicU64, Ordering::*};

/// The status, and the [`SCAN`] bit above it: the generation starts here.
pub(crate) const STATUS_BITS: u32 = 4;
const STATUS_MASK: u64 = 0b111;
/// Set by a scanner that borrowed a runnable or parked G's body (module
/// docs, "Scanning").
pub(crate) const SCAN: u64 = 0b1000;

/// Why a parked G waits (Go's `waitReason`), as the body told its step
/// ([`Cx::set_wait_reason`](crate::Cx::set_wait_reason)). The core only
/// stores and counts it: the text a dump shows comes from the body, which
/// knows more ("net accept on 127.0.0.1:8080").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum WaitReason {
    /// A body that did not say.
    Other = 0,
    ChanReceive = 1,
    ChanSend = 2,
    Select = 3,
    SelectNoCases = 4,
    Sleep = 5,
    /// A socket or any fd in the netpoller (Go's "IO wait").
    IoWait = 6,
    Mutex = 7,
    WaitGroup = 8,
    Semaphore = 9,
    /// Awaiting another G's end.
    Join = 10,
}

impl WaitReason {
    pub const ALL: [WaitReason; 11] = [
        WaitReason::Other,
        WaitReason::ChanReceive,
        WaitReason::ChanSend,
        WaitReason::Select,
        WaitReason::SelectNoCases,
        WaitReason::Sleep,
        WaitReason::IoWait,
        WaitReason::Mutex,
        WaitReason::WaitGroup,
        WaitReason::Semaphore,
        WaitReason::Join,
    ];

    /// Go's wording where Go has the reason.
    pub fn as_str(self) -> &'static str {
        match self {
            WaitReason::Other => "waiting",
            WaitReason::ChanReceive => "chan receive",
            WaitReason::ChanSend => "chan send",
            WaitReason::Select => "select",
            WaitReason::SelectNoCases => "select (no cases)",
            WaitReason::Sleep => "sleep",
            WaitReason::IoWait => "IO wait",
            WaitReason::Mutex => "Mutex.lock",
            WaitReason::WaitGroup => "WaitGroup.wait",
            WaitReason::Semaphore => "Semaphore.acquire",
            WaitReason::Join => "join",
        }
    }

    pub(crate) fn from_u8(b: u8) -> WaitReason {
        WaitReason::ALL
            .get(usize::from(b))
            .copied()
            .unwrap_or(WaitReason::Other)
    }
}

/// `park`'s layout (module docs, "Park info"): the reason above this many
/// bits of microseconds (2^56 µs is over 2,000 years of uptime).
const PARK_TIME_BITS: u32 = 56;

/// A monotonic clock in microseconds, cheap enough for every park: the
/// coarse clock where Linux has one (the tick, a few ms), else `Instant`.
pub fn coarse_now_us() -> u64 {
    #[cfg(target_os = "linux")]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec; the call only writes it.
        if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) } == 0 {
            return ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000;
        }
    }
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_micros() as u64
}

/// The status half of a G's state word (see the module docs for the table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    Idle = 0,
    Runnable = 1,
    Running = 2,
    Notified = 3,
    Parked = 4,
}

impl Status {
    fn from_word(w: u64) -> Status {
        match w & STATUS_MASK {
            0 => Status::Idle,
            1 => Status::Runnable,
            2 => Status::Running,
            3 => Status::Notified,
            4 => Status::Parked,
            s => unreachable!("corrupt G state word {w:#x} (status {s})"),
        }
    }
}

fn word(status: Status, gen: u64) -> u64 {
    (gen << STATUS_BITS) | status as u64
}

/// What a wake did to the G it aimed at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// The G was parked and is now `RUNNABLE`: the waker must enqueue it.
    Enqueue,
    /// The G was still running its step; its M will requeue it.
    Notified,
    /// The wake belongs to an older park (or the G is already readied): no-op.
    Stale,
}

/// The header of a goroutine. Fields are atomics or owner-only.
pub struct G {
    /// Status and generation; see the module docs. Every transition is a CAS
    /// or an owner store, paired as described at each site.
    state: AtomicU64,
    /// Goroutine id, written by the spawner while it owns the G; read racily
    /// (Relaxed) by stats and deadlock dumps, which only print it.
    id: AtomicU64,
    /// Owned by whoever owns the G (module docs); `None` while idle.
    body: UnsafeCell<Option<BoxBody>>,
    /// Why and since when the G waits (module docs, "Park info"). Written
    /// by the M that parks it, read by dumps and schedtrace (Relaxed).
    park: AtomicU64,
}

impl G {
    pub(crate) fn new() -> G {
        G {
            state: AtomicU64::new(word(Status::Idle, 0)),
            id: AtomicU64::new(0),
            body: UnsafeCell::new(None),
            park: AtomicU64::new(0),
        }
    }

    /// The running M, just before `commit_park`: why the G waits, from now.
    /// Relaxed: published with the park by `commit_park`'s Release; readers
    /// only print it.
    pub(crate) fn set_park_info(&self, reason: WaitReason) {
        let now = coarse_now_us() & ((1 << PARK_TIME_BITS) - 1);
        self.park
            .store(((reason as u64) << PARK_TIME_BITS) | now, Relaxed);
    }

    /// Why the G last parked, and since when ([`coarse_now_us`] time).
    pub fn park_info(&self) -> (WaitReason, u64) {
        let w = self.park.load(Relaxed);
        (
            WaitReason::from_u8((w >> PARK_TIME_BITS) as u8),
            w & ((1 << PARK_TIME_BITS) - 1),
        )
    }

    /// Spins until no scanner holds the G; returns the word then. Acquire:
    /// pairs with `unscan`'s Release, so what the scanner did is before us.
    fn wait_unscanned(&self) -> u64 {
        loop {
            let cur = self.state.load(Acquire);
            if cur & SCAN == 0 {
                return cur;
            }
            crate::loom::thread::yield_now();
        }
    }

    /// Any thread (a dump): borrow the body of a runnable or parked G
    /// (module docs, "Scanning"). Returns its status if the G is now held;
    /// the caller must call [`unscan`](Self::unscan) soon after, without
    /// blocking in between: its wakers spin meanwhile. None when the G is
    /// running, idle, or changed under us.
    pub(crate) fn try_scan(&self) -> Option<Status> {
        let cur = self.state.load(Acquire);
        if cur & SCAN != 0 {
            return None;
        }
        let status = Status::from_word(cur);
        if !matches!(status, Status::Runnable | Status::Parked) {
            return None;
        }
        // Acquire: pairs with the Release of the transition that made the
        // word (`commit_park`, a wake, `yield_now`), so we see the body as
        // its last owner left it.
        self.state
            .compare_exchange(cur, cur | SCAN, Acquire, Relaxed)
            .ok()
            .map(|_| status)
    }

    /// Ends a [`try_scan`](Self::try_scan). Release: pairs with the Acquire
    /// of whoever waited for the bit (`wait_unscanned`), so our reads of
    /// the body happen before its next owner's writes. A `fetch_and`, not a
    /// store: an M may have moved the word on meanwhile (`start_running`).
    pub(crate) fn unscan(&self) {
        let prev = self.state.fetch_and(!SCAN, Release);
        debug_assert!(
            prev & SCAN != 0,
            "unscan of an unscanned G; state = {prev:#x}"
        );
    }

    /// Owner only, during a scan: the body, to look at.
    ///
    /// # Safety
    /// The caller holds the scan ([`try_scan`](Self::try_scan) returned
    /// Some and [`unscan`](Self::unscan) has not run yet).
    pub(crate) unsafe fn scanned_body<R>(
        &self,
        f: impl FnOnce(Option<&dyn crate::api::Body>) -> R,
    ) -> R {
        // SAFETY: the scan makes us the body's only user (module docs).
        self.body.with_mut(|b| f(unsafe { (*b).as_deref() }))
    }

    pub fn id(&self) -> u64 {
        self.id.load(Relaxed)
    }

    pub fn status(&self) -> Status {
        Status::from_word(self.state.load(Acquire))
    }

    pub(crate) fn generation(&self) -> u64 {
        self.state.load(Acquire) >> STATUS_BITS
    }

    /// Spawner, which owns the idle G: give it a body and make it runnable.
    /// The G is published by the run-queue push that follows (a Release store
    /// of the queue tail, or the global queue's lock), so Relaxed is enough.
    pub(crate) fn prepare(&self, id: u64, body: BoxBody) {
        debug_assert_eq!(self.status(), Status::Idle, "spawning a live G");
        self.id.store(id, Relaxed);
        // SAFETY: an idle G is owned by the spawner alone (it just took it
        // off the free list or allocated it), so no one else reads `body`.
        self.body.with_mut(|b| unsafe { *b = Some(body) });
        let gen = self.generation();
        // Release: an interrupter that loads this life's word (Acquire) also
        // sees the id stored above, so it can tell this life from the last.
        self.state.store(word(Status::Runnable, gen), Release);
    }

    /// The M that popped this G from a run queue: `RUNNABLE → RUNNING` with a
    /// new generation, which makes every wake handed out before stale.
    /// Release: pairs with the Acquire of a waker's CAS, so a waker that sees
    /// the new generation also sees the G as owned by this M.
    /// An RMW, not a store: Acquire on it takes what an interrupt that
    /// touched the runnable G wrote first (module docs, "Interrupts").
    pub(crate) fn start_running(&self) -> u64 {
        // RUNNABLE(gen) + this = RUNNING(gen + 1).
        const STEP: u64 = (1 << STATUS_BITS) + Status::Running as u64 - Status::Runnable as u64;
        let prev = self.state.fetch_add(STEP, AcqRel);
        debug_assert_eq!(
            Status::from_word(prev),
            Status::Runnable,
            "running a G that is not runnable; state = {prev:#x}"
        );
        if prev & SCAN != 0 {
            // A dump holds the body (module docs, "Scanning"): the bit came
            // along into RUNNING; wait for it to clear before stepping.
            self.wait_unscanned();
        }
        (prev >> STATUS_BITS) + 1
    }

    /// The running M commits a park (`RUNNING → PARKED`). Returns false when a
    /// wake already arrived during the step (`NOTIFIED`): the G is then made
    /// `RUNNABLE` again and the caller must enqueue it.
    /// AcqRel: Release publishes everything the step wrote before the park to
    /// the waker that wins the G; Acquire (on failure too) sees what a
    /// notifying waker wrote before its wake (a channel's handed-off value).
    pub(crate) fn commit_park(&self, gen: u64) -> bool {
        match self.state.compare_exchange(
            word(Status::Running, gen),
            word(Status::Parked, gen),
            AcqRel,
            Acquire,
        ) {
            Ok(_) => true,
            Err(cur) => {
                debug_assert_eq!(
                    cur,
                    word(Status::Notified, gen),
                    "only a wake of this park may touch a running G"
                );
                // A swap: an interrupt may touch the notified word meanwhile
                // (module docs, "Interrupts").
                let prev = self.state.swap(word(Status::Runnable, gen), AcqRel);
                debug_assert_eq!(prev, word(Status::Notified, gen));
                false
            }
        }
    }

    /// The running M requeues a G that yielded (`RUNNING|NOTIFIED → RUNNABLE`).
    /// A swap, not a store: a waker may be moving `RUNNING → NOTIFIED` at the
    /// same moment, and either order leaves the G runnable exactly once.
    pub(crate) fn yield_now(&self, gen: u64) {
        let prev = self.state.swap(word(Status::Runnable, gen), AcqRel);
        debug_assert!(
            prev == word(Status::Running, gen) || prev == word(Status::Notified, gen),
            "yielding a G that is not running; state = {prev:#x}"
        );
    }

    /// The running M retires a finished G (`RUNNING|NOTIFIED → IDLE`). The
    /// generation moves on so that no wake from the finished life applies.
    pub(crate) fn finish(&self, gen: u64) {
        self.state.swap(word(Status::Idle, gen + 1), AcqRel);
    }

    /// Any thread: deliver the wake that park `gen` handed out.
    pub(crate) fn wake(&self, gen: u64) -> Wake {
        let mut cur = self.state.load(Acquire);
        loop {
            if cur >> STATUS_BITS != gen {
                return Wake::Stale;
            }
            if cur & SCAN != 0 {
                cur = self.wait_unscanned();
                continue;
            }
            let (next, outcome) = match Status::from_word(cur) {
                Status::Parked => (word(Status::Runnable, gen), Wake::Enqueue),
                Status::Running => (word(Status::Notified, gen), Wake::Notified),
                _ => return Wake::Stale,
            };
            // AcqRel: Acquire pairs with `commit_park`'s Release (we now own
            // the G and see its last step); Release publishes what the waker
            // wrote for the G (see `commit_park`).
            match self.state.compare_exchange_weak(cur, next, AcqRel, Acquire) {
                Ok(_) => return outcome,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Any thread: end whatever park G life `id` is in (a cancel). A parked
    /// G is readied (`Enqueue`: the caller enqueues it); a running one is
    /// notified, so the park its step is about to commit fails; a runnable
    /// or notified one is left as it is, with an RMW that publishes what the
    /// caller wrote before (module docs, "Interrupts"). `Stale` when the G
    /// finished or is another life now.
    pub(crate) fn interrupt(&self, id: u64) -> Wake {
        // Acquire: pairs with `prepare`'s Release (and the RMWs after it,
        // its release sequence), so the id read below is this life's.
        let mut cur = self.state.load(Acquire);
        loop {
            if self.id.load(Relaxed) != id {
                return Wake::Stale;
            }
            if cur & SCAN != 0 {
                cur = self.wait_unscanned();
                continue;
            }
            let gen = cur >> STATUS_BITS;
            let (next, outcome) = match Status::from_word(cur) {
                Status::Parked => (word(Status::Runnable, gen), Wake::Enqueue),
                Status::Running => (word(Status::Notified, gen), Wake::Notified),
                Status::Runnable | Status::Notified => (cur, Wake::Notified),
                Status::Idle => return Wake::Stale,
            };
            // AcqRel, as in `wake`. A success means the word never left
            // `cur`, so the id checked above was still current: each life's
            // words are distinct (the generation only grows).
            match self.state.compare_exchange_weak(cur, next, AcqRel, Acquire) {
                Ok(_) => return outcome,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Shutdown, with every M stopped: mark the G dead so that late wakes are
    /// stale, and hand back its body if it had one.
    pub(crate) fn kill(&self) -> Option<BoxBody> {
        let mut cur = self.wait_unscanned();
        loop {
            if matches!(Status::from_word(cur), Status::Running | Status::Notified) {
                // Still inside a step on an M that did not stop: it owns the
                // body (notified too: a wake or an interrupt during the step).
                return None;
            }
            // A CAS, not a store: a dump may scan the G meanwhile
            // (module docs, "Scanning"). Release as before: late wakers
            // that load the dead word see the G dead.
            let dead = word(Status::Idle, (cur >> STATUS_BITS) + 1);
            match self.state.compare_exchange(cur, dead, AcqRel, Acquire) {
                Ok(_) => break,
                Err(_) => cur = self.wait_unscanned(),
            }
        }
        // SAFETY: the caller has stopped every M that could own this G, and the
        // state is no longer one a waker can move to RUNNABLE, so nobody else
        // can reach the body.
        self.body.with_mut(|b| unsafe { (*b).take() })
    }

    /// Owner only: runs `f` on the body (to step it, or to take it when
    /// the G finishes). A closure rather than a `&mut` so that loom sees
    /// the whole access and can check that nobody else touches the body
    /// meanwhile.
    ///
    /// # Safety
    /// The caller must own the G (it is `RUNNING` on the caller's M).
    pub(crate) unsafe fn with_body<R>(&self, f: impl FnOnce(&mut Option<BoxBody>) -> R) -> R {
        // SAFETY: exclusive ownership is the caller's precondition.
        self.body.with_mut(|b| f(unsafe { &mut *b }))
    }
}

impl fmt::Debug for G {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self.state.load(Relaxed);
        f.debug_struct("G")
            .field("id", &self.id())
            .field("status", &Status::from_word(w))
            .field("gen", &(w >> STATUS_BITS))
            .finish()
    }
}

/// A pointer to a G, passed between run queues, Ms and wait lists. Copying it
/// does not copy ownership: the protocol in the module docs says who owns.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct GPtr(NonNull<G>);

// SAFETY: a G's fields are atomics or owner-only (`body`), and ownership moves
// with a happens-before edge (queue Release/Acquire, a lock, or the state CAS),
// so handing the pointer to another thread is sound.
unsafe impl Send for GPtr {}
// SAFETY: as above; shared access only reaches the atomics.
unsafe impl Sync for GPtr {}

impl GPtr {
    /// A G of its own, for the loom models (a scheduler's Gs live in its
    /// slabs: `in_slab`).
    #[cfg(loom)]
    pub(crate) fn alloc() -> GPtr {
        GPtr(NonNull::from(Box::leak(Box::new(G::new()))))
    }

    /// A G in one of its scheduler's slabs (`sched::gfree`, "Slabs"): the
    /// slab, freed only when the scheduler drops, keeps it where it is.
    pub(crate) fn in_slab(g: &G) -> GPtr {
        GPtr(NonNull::from(g))
    }

    /// # Safety
    /// `self` came from [`GPtr::alloc`], is freed once, and no copy is used
    /// afterwards.
    #[cfg(loom)]
    pub(crate) unsafe fn free(self) {
        // SAFETY: forwarded from the caller.
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }

    pub(crate) fn as_ptr(self) -> *mut G {
        self.0.as_ptr()
    }

    /// # Safety
    /// `p` is non-null and came from [`GPtr::as_ptr`].
    pub(crate) unsafe fn from_ptr(p: *mut G) -> GPtr {
        // SAFETY: forwarded from the caller.
        GPtr(unsafe { NonNull::new_unchecked(p) })
    }
}

impl std::ops::Deref for GPtr {
    type Target = G;
    fn deref(&self) -> &G {
        // SAFETY: Gs are freed only when their scheduler drops (module docs);
        // every GPtr is held by that scheduler or by something that keeps it
        // alive (a `Waker` holds an `Arc<Sched>`), so the G outlives the use.
        unsafe { self.0.as_ref() }
    }
}

impl fmt::Debug for GPtr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}
