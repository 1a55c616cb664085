//! sched: Ps, Ms, `findRunnable`, and the wake/park protocol (Go's proc.go).
//!
//! # Objects
//!
//! - **P** ([`P`]): one of `procs` scheduling contexts. Owns a local run queue
//!   (`runq::Local`), its schedtick and a G free-list cache. A `Box<P>` is held
//!   by exactly one M at a time or sits on the idle list, so the type system
//!   enforces "owner P only" for everything in it. Thieves reach its queue
//!   through `Sched::allp` (`runq::Stealer`).
//! - **M** (`M`): an OS thread. Lives on its thread's stack, reachable through
//!   the `CURRENT` thread-local so that code running inside a G step (a spawn,
//!   a wake) can use the M's P without locks.
//! - **G** ([`crate::g`]): stepped by the M that owns it.
//!
//! # `Sched::lock` (Go's `sched.lock`)
//!
//! Guards the global run queue, the idle P list and the idle M list. The
//! counters beside it (`runq_size`, `npidle`) are written under the lock and
//! read without it, so emptiness checks on hot paths take no lock.
//!
//! # Spinning handshake (Go's "Worker thread parking/unparking")
//!
//! An M with a P but no work *spins* (looks for work to steal) before it
//! parks. At most half the busy Ps have a spinning M (`2 * nmspinning <
//! procs - npidle`), which bounds the CPU burnt looking.
//!
//! - A **submitter** (anything that readies a G) does: enqueue → SeqCst fence
//!   → if an idle P exists and `nmspinning == 0`, CAS `nmspinning` 0→1 and
//!   start an M on an idle P ([`Sched::wakep`]).
//! - A **spinner** that gives up does: put its P on the idle list → decrement
//!   `nmspinning` → SeqCst fence → re-check every queue; if something turned
//!   up, take an idle P back and spin again.
//!
//! The two fences are what make this sound: either the spinner's re-check
//! sees the new G, or the submitter sees `nmspinning` drop (and the idle P)
//! and wakes someone. Acquire/Release alone allows both sides to read stale
//! values (store buffering). An M that finds work while spinning stops
//! spinning and calls `wakep` itself ([`Sched::reset_spinning`]), so a burst
//! ramps Ms up one at a time instead of as a thundering herd.
//!
//! A non-spinning M that gives up its P does not re-check local queues (as in
//! Go): a G left in another P's queue is run by that P's own M. The global
//! queue is checked under the lock before the P is released, and injecting
//! into it takes the lock, so global work is never stranded.
//!
//! # Who polls the netpoller (Go's `findRunnable` steps 8 and 13)
//!
//! There is no netpoller thread: the Ms poll, and inject what they find
//! (`Sched::inject`, Go's `injectglist`). The netpoller's side (one poll at
//! a time, at most one blocker) is in the `netpoll` module docs.
//!
//! - **Step 8.** An M with a P whose local and global queues are empty
//!   polls without blocking, if some G waits on the netpoller (I/O or a
//!   timer) and nobody else polls. It runs the first G readied and queues
//!   the rest on its P.
//! - **Busy tick.** On every 61st schedtick (the global-queue fairness
//!   tick; tokio's `event_interval`) a P with local work polls without
//!   blocking and queues what it finds behind that work: a runtime that
//!   never runs dry still sees I/O and fires timers.
//! - **Step 13.** An M that gave up its P (after the spinning re-check)
//!   and is about to park blocks in the poll instead, if some G waits and
//!   no M blocks there yet, until an event, the next timer or a break. The
//!   wait goes through [`Hooks::blocking`] (Python: the GIL is released).
//!   Back, it takes an idle P if there is one, runs the first G and queues
//!   the rest (nothing readied: it looks for work again); with no idle P it
//!   puts them on the global queue (starting Ms on Ps that turn idle
//!   meanwhile) and parks.
//! - **sysmon** polls without blocking if nobody has for 10 ms (module
//!   docs of `sysmon`).
//! - **handoffp** of the last running P, with Gs waiting on the netpoller
//!   and nobody blocked in it, starts an M for the P (Go's rule): that M
//!   becomes the blocker.
//!
//! **Who wakes whom.** Work readied while an M blocks in the poll goes the
//! usual way: `wakep` starts a spinning M on an idle P, an idle M or a new
//! one. The blocker is not on the idle-M list and is not woken for it (it
//! takes no part in the spinning handshake: it has no P and is not
//! spinning). It is broken (the `mio::Waker`) only when a timer earlier
//! than its planned wake is added, when the runtime stops, and when
//! `newm` fails: the work it wanted an M for has no other taker, and the
//! blocker, back from the poll, takes the idle P and finds the work.
//!
//! **Why no wakeup is lost.**
//!
//! 1. *Gs wait on the netpoller, every M parks, nobody polls.* Every M
//!    passes step 13 before it parks. It parks without polling only if
//!    nothing waited when it looked (a G that parks on the netpoller later
//!    does so in a step on a running M, which passes step 13 itself before
//!    parking) or another M holds the blocker role (which keeps it until an
//!    event, a timer or a break, and then hands out what it found).
//! 2. *The blocker returns and every P is busy.* It puts the Gs on the
//!    global queue and parks; the busy Ms take them (the global queue is
//!    checked before any P is released, under the lock injectors take), and
//!    the first of those Ms to run dry becomes the next blocker.
//! 3. *Every M is inside a long step* (a blocking C call, a CPU hog): none
//!    reaches step 8 or 13. sysmon's 10 ms poll puts the readied Gs on the
//!    global queue, and its `retake` then hands a P to an M for them.
//! 4. *A P is handed off (a blocking call, a retake) while Gs wait and
//!    nobody polls:* the last-P rule above starts an M for it.
//! 5. *An M wants to block while a non-blocking poll is in progress:* it
//!    claims the blocker role first and then waits for the poll lock
//!    (microseconds), so it never gives up for that reason (`netpoll`).
//! 6. *Deadlock detection:* a blocker counts as idle in `dead` only
//!    together with zero waiters and timers, when nothing but a break can
//!    end its wait; a G waiting on I/O or a timer is never a deadlock.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::time::{Duration, Instant};

use crate::api::{BoxBody, Config, Cx, Hooks, Stats, Step, Stopped, Waker};
use crate::g::{GPtr, Wake};
use crate::loom::sync::atomic::{
    fence, AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::*,
};
use crate::loom::sync::{Arc, Condvar, Mutex};
use crate::loom::{lock, thread};
use crate::netpoll::{Netpoll, Polled};
use crate::park::{Handoff, Note};
use crate::runq::{self, Overflow as _};

/// Go's fairness tick: every 61st schedtick a P takes one G from the global
/// queue before its own (proc.go `schedtick%61`; 61 is prime so it does not
/// line up with other periods).
const GLOBAL_CHECK_INTERVAL: u32 = 61;

/// tokio's `MAX_LIFO_POLLS_PER_TICK`: after 3 runnext runs in a row the P
/// takes from its ring, so two Gs ping-ponging through runnext cannot starve
/// the rest of its queue (tokio#2349, #5712; Go#65178).
const MAX_RUNNEXT_STREAK: u32 = 3;

/// How far a netpoll batch fills a P's local queue (half the ring, like a
/// global batch); see `Sched::inject`.
const LOCAL_SHARE: usize = runq::CAPACITY as usize / 2;

/// Go's `stealWork` makes 4 passes over the other Ps; runnext is stolen only
/// on the last.
const STEAL_ROUNDS: usize = 4;

/// Go's per-P free-list cache: at 64 idle Gs, move 32 to the global list.
const GFREE_LOCAL_MAX: usize = 64;
const GFREE_BATCH: usize = 32;

/// A scheduling context (Go's `p`). Owner M only: see the module docs.
pub struct P {
    id: usize,
    runq: runq::Local,
    /// Incremented per G run that does not inherit its slice.
    schedtick: u32,
    /// Consecutive runnext runs (capped by `MAX_RUNNEXT_STREAK`).
    runnext_streak: u32,
    /// The schedtick of this P's last busy-tick netpoll, so a tick that
    /// lasts several `findRunnable`s (runnext inherits it) polls once.
    polled_at: u32,
    gfree: Vec<GPtr>,
    /// Reused buffer for global-queue batches.
    batch: Vec<GPtr>,
}

struct Locked {
    runq: VecDeque<GPtr>,
    // A P moves between Ms and this list as one pointer.
    #[allow(clippy::vec_box)]
    pidle: Vec<Box<P>>,
    midle: Vec<Arc<Note<Box<P>>>>,
    /// Ms back from a blocking call, waiting for any P (Go's exitsyscall
    /// slow path). Served before the idle list: their G is mid-step.
    pwait: VecDeque<Arc<Note<Box<P>>>>,
}

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
    /// published by the Release store of `steps`.
    pub(crate) g: AtomicU64,
    pub(crate) may_block: AtomicBool,
    /// `pthread_self`, which Python reports as `threading.get_ident()`.
    pub(crate) thread: u64,
}

impl MSlot {
    fn bump(&self) {
        self.steps
            .store(self.steps.load(Relaxed).wrapping_add(1), Release);
    }
}

/// One runtime: Ps, Ms, the global queue.
pub struct Sched {
    procs: usize,
    max_threads: usize,
    /// Every P's shared part. Indexed by `P::id`.
    pub(crate) allp: Box<[PSlot]>,
    lock: Mutex<Locked>,
    /// Global queue length. Written under `lock` (Release); read anywhere
    /// (Acquire) as a lock-free emptiness hint.
    runq_size: AtomicUsize,
    /// Idle Ps. Changed under `lock` (SeqCst: it is read by the spinning
    /// handshake on the submitter side, see the module docs).
    npidle: AtomicUsize,
    /// Spinning Ms. SeqCst throughout: the spinning handshake.
    nmspinning: AtomicUsize,
    /// Ms created and not yet exited; Ms on the idle list.
    mcount: AtomicUsize,
    nmidle: AtomicUsize,
    /// Live Gs (spawned, not finished).
    ngs: AtomicUsize,
    next_gid: AtomicU64,
    /// Set once under `lock`; Ms exit at their next schedule.
    stopping: AtomicBool,
    hooks: Box<dyn Hooks>,
    /// Every G ever allocated, freed when the scheduler drops (Go's `allgs`).
    allgs: Mutex<Vec<GPtr>>,
    gfree: Mutex<Vec<GPtr>>,
    steals: AtomicU64,
    handoffs: AtomicU64,
    spawned: AtomicU64,
    threads: Mutex<Vec<thread::JoinHandle<()>>>,
    netpoll: Netpoll<Waker>,
    /// `Locked::pwait.len()`, for the lock-free check between steps.
    npwait: AtomicUsize,
    /// Threads inside `blocking` (Ms and foreign threads alike).
    nblocking: AtomicUsize,
    /// Set when `newm` could not create an M (cap or OS refusal): why.
    pub(crate) thread_cap_hit: Mutex<Option<String>>,
    /// Every live M's sysmon-visible part.
    pub(crate) allm: Mutex<Vec<Arc<MSlot>>>,
    /// sysmon sleeps on this; `stop` wakes it.
    sysmon_lock: Mutex<()>,
    sysmon_wake: Condvar,
    sysmon_thread: Mutex<Option<thread::JoinHandle<()>>>,
    /// Ms still running (for a bounded join at shutdown).
    live_ms: Mutex<usize>,
    ms_exited: Condvar,
}

struct M {
    sched: Arc<Sched>,
    note: Arc<Note<Box<P>>>,
    /// The P, held between steps.
    p: RefCell<Option<Box<P>>>,
    /// During a step: the id of the P lent to its slot.
    lent: Cell<Option<usize>>,
    spinning: Cell<bool>,
    rng: Cell<u32>,
    /// What sysmon sees of this M (registered in `Sched::allm`).
    slot: Arc<MSlot>,
}

// The M running on this thread, or null. Set by `mstart` for the M's whole
// life; the M lives on that function's stack frame.
#[cfg(not(loom))]
std::thread_local! {
    static CURRENT: Cell<*const M> = const { Cell::new(ptr::null()) };
}
#[cfg(loom)]
loom::thread_local! {
    static CURRENT: Cell<*const M> = Cell::new(ptr::null());
}

/// Pushes a P's overflow to the global queue in one lock.
struct GlobalOverflow<'a>(&'a Sched);

impl runq::Overflow for GlobalOverflow<'_> {
    fn push_batch(&self, batch: &mut dyn Iterator<Item = GPtr>) {
        let mut l = lock(&self.0.lock);
        l.runq.extend(batch);
        // Release: pairs with the Acquire emptiness checks in findRunnable.
        self.0.runq_size.store(l.runq.len(), Release);
    }
}

impl Sched {
    pub fn new(config: Config, hooks: Box<dyn Hooks>) -> Arc<Sched> {
        assert!(
            config.procs >= 1,
            "procs must be at least 1, got {}",
            config.procs
        );
        let mut pidle = Vec::with_capacity(config.procs);
        let mut allp = Vec::with_capacity(config.procs);
        for id in 0..config.procs {
            let (local, stealer) = runq::new();
            allp.push(PSlot {
                q: stealer,
                lent: AtomicPtr::new(ptr::null_mut()),
                steps: AtomicU64::new(0),
                may_block: AtomicBool::new(false),
            });
            pidle.push(Box::new(P {
                id,
                runq: local,
                schedtick: 0,
                runnext_streak: 0,
                polled_at: u32::MAX,
                gfree: Vec::new(),
                batch: Vec::with_capacity(runq::CAPACITY as usize / 2),
            }));
        }
        // Hand out P0 first, like Go's pidle order.
        pidle.reverse();
        let sched = Arc::new(Sched {
            procs: config.procs,
            max_threads: config.max_threads.max(1),
            allp: allp.into_boxed_slice(),
            lock: Mutex::new(Locked {
                runq: VecDeque::new(),
                pidle,
                midle: Vec::new(),
                pwait: VecDeque::new(),
            }),
            runq_size: AtomicUsize::new(0),
            npidle: AtomicUsize::new(config.procs),
            nmspinning: AtomicUsize::new(0),
            mcount: AtomicUsize::new(0),
            nmidle: AtomicUsize::new(0),
            ngs: AtomicUsize::new(0),
            next_gid: AtomicU64::new(1),
            stopping: AtomicBool::new(false),
            hooks,
            allgs: Mutex::new(Vec::new()),
            gfree: Mutex::new(Vec::new()),
            steals: AtomicU64::new(0),
            handoffs: AtomicU64::new(0),
            spawned: AtomicU64::new(0),
            threads: Mutex::new(Vec::new()),
            netpoll: Netpoll::new(),
            npwait: AtomicUsize::new(0),
            nblocking: AtomicUsize::new(0),
            allm: Mutex::new(Vec::new()),
            thread_cap_hit: Mutex::new(None),
            sysmon_lock: Mutex::new(()),
            sysmon_wake: Condvar::new(),
            sysmon_thread: Mutex::new(None),
            live_ms: Mutex::new(0),
            ms_exited: Condvar::new(),
        });
        // Loom models run the scheduler without sysmon: its timed sleeps
        // have no meaning under the model checker.
        #[cfg(not(loom))]
        {
            let s = sched.clone();
            let h = std::thread::Builder::new()
                .name("gmprt-sysmon".into())
                .spawn(move || s.sysmon())
                .expect("cannot start the sysmon thread");
            *lock(&sched.sysmon_thread) = Some(h);
        }
        sched
    }

    pub fn procs(&self) -> usize {
        self.procs
    }

    /// Any thread: start a G running `body`. From inside a G of this runtime
    /// the new G goes to the current P's runnext (Go's `newproc`); from
    /// anywhere else, to the global queue.
    pub fn spawn(self: &Arc<Self>, body: BoxBody) -> Result<u64, Stopped> {
        self.spawn_with(|_| body)
    }

    /// [`spawn`](Self::spawn), building the body from the new G's id (so the
    /// body can carry it before the G first runs).
    pub fn spawn_with(self: &Arc<Self>, body: impl FnOnce(u64) -> BoxBody) -> Result<u64, Stopped> {
        if self.stopping.load(Acquire) {
            return Err(Stopped);
        }
        let id = self.next_gid.fetch_add(1, Relaxed);
        let body = body(id);
        self.ngs.fetch_add(1, Relaxed);
        self.spawned.fetch_add(1, Relaxed);
        // One borrow of the P for the G and its enqueue (Go's newproc +
        // runqput(next=true)): inside a step the P is lent, and each borrow
        // is a pair of atomic swaps.
        let overflow = GlobalOverflow(self);
        let mut body = Some(body);
        let local = self.with_current_p(|p| {
            let g = self.gfget(p);
            g.prepare(id, body.take().expect("body used twice"));
            p.runq.push(g, true, &overflow);
        });
        if local.is_none() {
            let g = self.gfget_global();
            g.prepare(id, body.take().expect("body used twice"));
            overflow.push_batch(&mut std::iter::once(g));
        }
        self.wakep();
        Ok(id)
    }

    /// Runs `f` with the runtime of the calling M, if the caller is an M.
    pub fn with_current_sched<R>(f: impl FnOnce(&Arc<Sched>) -> R) -> Option<R> {
        let m = CURRENT.with(|c| c.get());
        if m.is_null() {
            return None;
        }
        // SAFETY: as in `with_current`: the M outlives this call.
        Some(f(unsafe { &(*m).sched }))
    }

    /// Whether the calling thread is an M of this runtime (inside a G step or
    /// the scheduler loop).
    pub fn on_m(&self) -> bool {
        self.with_current(|_| ()).is_some()
    }

    fn with_current<R>(&self, f: impl FnOnce(&M) -> R) -> Option<R> {
        let m = CURRENT.with(|c| c.get());
        if m.is_null() {
            return None;
        }
        // SAFETY: CURRENT is non-null only while `mstart` runs on this thread,
        // and it points at the M on that frame, which outlives this call.
        let m = unsafe { &*m };
        if !ptr::eq(Arc::as_ptr(&m.sched), self) {
            return None;
        }
        Some(f(m))
    }

    /// Runs `f` with the calling M's P, if the caller is an M of this runtime
    /// holding one and the P is not already borrowed by the scheduler loop.
    ///
    /// Inside a step the P is lent to its slot; it is borrowed back for `f`
    /// (sysmon sees null meanwhile and leaves it alone) and lent again. If
    /// sysmon took it, there is no P: None.
    fn with_current_p<R>(&self, f: impl FnOnce(&mut P) -> R) -> Option<R> {
        self.with_current(|m| {
            if let Ok(mut held) = m.p.try_borrow_mut() {
                if let Some(p) = held.as_deref_mut() {
                    return Some(f(p));
                }
            }
            let slot = &self.allp[m.lent.get()?];
            // Acquire: pairs with the Release that lent it (ours).
            let raw = slot.lent.swap(ptr::null_mut(), Acquire);
            if raw.is_null() {
                return None;
            }
            // SAFETY: swapping a non-null pointer out of `lent` makes us its
            // owner ("Lending the P"), until we store it back below.
            let r = f(unsafe { &mut *raw });
            // Release: publishes our changes to the P to whoever takes it.
            slot.lent.store(raw, Release);
            Some(r)
        })
        .flatten()
    }

    /// Lends the M's P to its slot for the coming step.
    fn lend_p(&self, m: &M, p: Box<P>, g: u64, may_block: bool) {
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
    fn reclaim_p(&self, m: &M) -> Option<Box<P>> {
        let slot = &self.allp[m.lent.take()?];
        // Acquire: pairs with the Release of `lend_p` or `with_current_p`.
        let raw = slot.lent.swap(ptr::null_mut(), Acquire);
        // SAFETY: a non-null pointer swapped out of `lent` is ours to own;
        // it came from Box::into_raw in `lend_p`.
        (!raw.is_null()).then(|| unsafe { Box::from_raw(raw) })
    }

    /// [`Cx::set_may_block`]: the running step's `may_block` changed; tell
    /// sysmon through the M's slot and, while it is lent, the P's.
    pub(crate) fn set_may_block(&self, may_block: bool) {
        self.with_current(|m| {
            m.slot.may_block.store(may_block, Relaxed);
            if let Some(id) = m.lent.get() {
                self.allp[id].may_block.store(may_block, Relaxed);
            }
        });
    }

    /// Go's `ready`: make `g` (already `RUNNABLE`) run. Local runnext when
    /// called on an M of ours with a P, else the global queue; then `wakep`.
    pub(crate) fn ready(self: &Arc<Self>, g: GPtr, next: bool) {
        let overflow = GlobalOverflow(self);
        let local = self
            .with_current_p(|p| p.runq.push(g, next, &overflow))
            .is_some();
        if !local {
            overflow.push_batch(&mut std::iter::once(g));
        }
        self.wakep();
    }

    /// Go's `injectglist`: readies what one netpoll batch (or a
    /// deregistration) woke. Gs whose wake is stale are skipped.
    ///
    /// - Without a P (`p` None: sysmon, a poller that found no idle P, any
    ///   thread): every G goes to the global queue under one lock, then one M
    ///   is started per G on idle Ps, while there are idle Ps.
    /// - With the caller's P: as many Gs as there are idle Ps go to the
    ///   global queue, with an M started for each; the rest go to `p`'s
    ///   local queue, up to half its ring like a global batch (the rest to
    ///   the global queue, keeping their order; all of them if the global
    ///   queue holds older work); then `wakep`.
    /// - `run_one` (with a P): the first G is returned, not queued, for the
    ///   caller to run at once (Go's steps 8 and 13).
    pub(crate) fn inject(
        self: &Arc<Self>,
        batch: Vec<Waker>,
        p: Option<&mut P>,
        run_one: bool,
    ) -> Option<GPtr> {
        debug_assert!(!run_one || p.is_some(), "run_one without a P");
        let mut gs = Vec::with_capacity(batch.len());
        for w in &batch {
            debug_assert!(Arc::ptr_eq(&w.sched, self), "a batch spans runtimes");
            if w.g.wake(w.gen) == Wake::Enqueue {
                gs.push(w.g);
            }
        }
        drop(batch);
        let mut gs = gs.into_iter();
        let first = if run_one { gs.next() } else { None };
        let n = gs.len();
        if n == 0 {
            return first;
        }
        let overflow = GlobalOverflow(self);
        match p {
            None => {
                overflow.push_batch(&mut gs);
                self.start_idle(n);
            }
            Some(p) => {
                // SeqCst: a P idle now gets its share through the global
                // queue; one released later checks that queue under the lock.
                let share = self.npidle.load(SeqCst).min(n);
                if share > 0 {
                    overflow.push_batch(&mut gs.by_ref().take(share));
                    self.start_idle(share);
                }
                // Readied Gs run in the order they were readied: behind
                // older work in the global queue if there is some, else on
                // the local queue, filled to half the ring like a global
                // batch (so the 61st-tick global check runs a G at most half
                // a ring ahead of its turn).
                let free = if self.runq_size.load(Acquire) > 0 {
                    0
                } else {
                    LOCAL_SHARE.saturating_sub(p.runq.len())
                };
                for g in gs.by_ref().take(free) {
                    p.runq.push(g, false, &overflow);
                }
                if gs.len() > 0 {
                    overflow.push_batch(&mut gs);
                }
                self.wakep();
            }
        }
        first
    }

    /// Starts up to `n` Ms on idle Ps, for Gs just put on the global queue
    /// (the tail of Go's `injectglist`).
    fn start_idle(self: &Arc<Self>, n: usize) {
        for _ in 0..n {
            if self.npidle.load(SeqCst) == 0 {
                break;
            }
            let mut l = lock(&self.lock);
            let Some(p) = l.pidle.pop() else { break };
            self.npidle.fetch_sub(1, SeqCst);
            self.startm(l, p, false);
        }
    }

    /// Go's `wakep` (1.19 form): start one more spinning M if a P is idle and
    /// nobody is spinning. The submitter half of the spinning handshake.
    fn wakep(self: &Arc<Self>) {
        // SeqCst fence: orders the caller's enqueue before the loads below;
        // pairs with the fence in `find_runnable` after a spinner drops
        // `nmspinning` (module docs, "Spinning handshake").
        fence(SeqCst);
        if self.npidle.load(SeqCst) == 0 || self.nmspinning.load(SeqCst) != 0 {
            return;
        }
        if self
            .nmspinning
            .compare_exchange(0, 1, SeqCst, SeqCst)
            .is_err()
        {
            return;
        }
        let mut l = lock(&self.lock);
        let Some(p) = l.pidle.pop() else {
            drop(l);
            self.nmspinning.fetch_sub(1, SeqCst);
            return;
        };
        self.npidle.fetch_sub(1, SeqCst);
        self.startm(l, p, true);
    }

    /// Go's `startm`: run `p` on an idle M, or a new one. Consumes the lock
    /// guard so the idle-M pop happens under the same lock as the caller's
    /// idle-P pop.
    fn startm(
        self: &Arc<Self>,
        mut l: crate::loom::sync::MutexGuard<'_, Locked>,
        p: Box<P>,
        spinning: bool,
    ) {
        if let Some(note) = l.midle.pop() {
            self.nmidle.fetch_sub(1, SeqCst);
            drop(l);
            note.wakeup(Handoff::Run { p, spinning });
            return;
        }
        drop(l);
        self.newm(p, spinning);
    }

    /// Go's `newm`: a new OS thread for `p`. The P is handed over through
    /// the new M's note, the same way every later P reaches it, so a failed
    /// spawn can take it straight back.
    fn newm(self: &Arc<Self>, p: Box<P>, spinning: bool) {
        let note = Arc::new(Note::new());
        note.wakeup(Handoff::Run { p, spinning });
        let under_cap = self
            .mcount
            .fetch_update(SeqCst, SeqCst, |n| (n < self.max_threads).then_some(n + 1))
            .is_ok();
        let failure = if under_cap {
            *lock(&self.live_ms) += 1;
            let sched = self.clone();
            let m_note = note.clone();
            let spawned = thread::Builder::new()
                .name(format!("gmprt-m{}", self.mcount.load(Relaxed)))
                .spawn(move || sched.mstart(m_note));
            match spawned {
                Ok(h) => {
                    lock(&self.threads).push(h);
                    return;
                }
                Err(e) => {
                    self.mcount.fetch_sub(1, SeqCst);
                    *lock(&self.live_ms) -= 1;
                    format!("cannot create an OS thread: {e}")
                }
            }
        } else {
            format!("thread limit of {} reached", self.max_threads)
        };
        // Not fatal yet: an M about to go idle (P released, not yet in
        // `stopm`) will pick the work up. sysmon declares the runtime stuck
        // only if work stays stranded (`sysmon::check_thread_cap`).
        *lock(&self.thread_cap_hit) = Some(failure);
        let Some(Handoff::Run { p, spinning }) = note.take() else {
            unreachable!("a note nobody sleeps on lost its handoff")
        };
        if spinning {
            self.nmspinning.fetch_sub(1, SeqCst);
        }
        let mut l = lock(&self.lock);
        self.pidleput(&mut l, p);
        drop(l);
        // The work that wanted an M may have no other taker: a blocked
        // poller takes it (it returns, finds the idle P and the work; module
        // docs, "Who polls").
        self.netpoll.wake();
    }

    /// Go's `pidleput`, except that an M waiting to finish a blocking call
    /// gets the P directly.
    fn pidleput(&self, l: &mut Locked, p: Box<P>) {
        if let Some(note) = l.pwait.pop_front() {
            self.npwait.fetch_sub(1, Release);
            note.wakeup(Handoff::Run { p, spinning: false });
            return;
        }
        l.pidle.push(p);
        self.npidle.fetch_add(1, SeqCst);
    }

    /// Go's `entersyscallblock` … `exitsyscall` around `f`: the calling M
    /// hands its P to another M for the duration (so the other Gs keep
    /// running), then waits for a P to finish its step. Off an M, just `f()`.
    ///
    /// Counted as a blocking call for deadlock detection either way: a
    /// thread blocked here may wake Gs when it returns.
    pub fn blocking<R>(&self, f: impl FnOnce() -> R) -> R {
        self.nblocking.fetch_add(1, SeqCst);
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
        let r = f();
        if let Some((sched, g)) = on_m.flatten() {
            sched.exitsyscall(g);
        }
        self.nblocking.fetch_sub(1, SeqCst);
        r
    }

    /// Go's `handoffp`: give a P whose M is about to block to another M if
    /// there is work for it, otherwise to the idle list.
    pub(crate) fn handoffp(self: &Arc<Self>, p: Box<P>) {
        self.handoffs.fetch_add(1, Relaxed);
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
            if self.park_m(m) {
                let p = m.p.borrow_mut().take().expect("woken without a P");
                self.lend_p(m, p, g, may_block);
            }
        });
    }

    /// The body of an M thread (Go's `mstart`).
    fn mstart(self: Arc<Self>, note: Arc<Note<Box<P>>>) {
        let hooks: &dyn Hooks = &*self.hooks;
        let sched = self.clone();
        hooks.m_main(&mut || {
            let m = M {
                sched: sched.clone(),
                note: note.clone(),
                p: RefCell::new(None),
                lent: Cell::new(None),
                spinning: Cell::new(false),
                rng: Cell::new(0x9E37_79B9 ^ sched.mcount.load(Relaxed) as u32),
                slot: Arc::new(MSlot {
                    steps: AtomicU64::new(0),
                    g: AtomicU64::new(0),
                    may_block: AtomicBool::new(false),
                    thread: thread_id(),
                }),
            };
            CURRENT.with(|c| c.set(&m));
            lock(&sched.allm).push(m.slot.clone());
            if sched.park_m(&m) {
                sched.schedule(&m);
            }
            lock(&sched.allm).retain(|s| !Arc::ptr_eq(s, &m.slot));
            CURRENT.with(|c| c.set(ptr::null()));
        });
        self.mcount.fetch_sub(1, SeqCst);
        let mut live = lock(&self.live_ms);
        *live -= 1;
        drop(live);
        self.ms_exited.notify_all();
    }

    /// Sleeps on the M's note until handed a P (true) or told to exit.
    fn park_m(&self, m: &M) -> bool {
        let mut handoff = None;
        self.hooks.blocking(&mut || handoff = Some(m.note.sleep()));
        match handoff.expect("note sleep returned nothing") {
            Handoff::Run { p, spinning } => {
                *m.p.borrow_mut() = Some(p);
                m.spinning.set(spinning);
                true
            }
            Handoff::Exit => false,
        }
    }

    /// Go's `schedule`: find a G, run it, forever (until stop).
    fn schedule(self: &Arc<Self>, m: &M) {
        loop {
            // A P-less M (sysmon took its P during the last step) goes idle.
            if m.p.borrow().is_none() && !self.stopm(m) {
                return;
            }
            // An M back from a blocking call is mid-step and cannot hand its
            // G to anyone: it needs a P. Between two steps we can give ours.
            // Acquire: pairs with the Release increment in `exitsyscall`.
            if self.npwait.load(Acquire) > 0 && self.give_p_to_waiter(m) && !self.stopm(m) {
                return;
            }
            let Some((g, inherit)) = self.find_runnable(m) else {
                return;
            };
            if m.spinning.get() {
                self.reset_spinning(m);
            }
            self.execute(m, g, inherit);
        }
    }

    /// Hands this M's P to the longest-waiting M back from a blocking call.
    /// False (P kept) if another M served it first.
    fn give_p_to_waiter(&self, m: &M) -> bool {
        let mut l = lock(&self.lock);
        let Some(note) = l.pwait.pop_front() else {
            return false;
        };
        self.npwait.fetch_sub(1, Release);
        drop(l);
        let p = m.p.borrow_mut().take().expect("schedule without a P");
        note.wakeup(Handoff::Run { p, spinning: false });
        true
    }

    /// Go's `resetspinning`: a spinner found work; stop spinning and pass the
    /// searcher role on, so a burst ramps up one M at a time.
    fn reset_spinning(self: &Arc<Self>, m: &M) {
        m.spinning.set(false);
        let prev = self.nmspinning.fetch_sub(1, SeqCst);
        debug_assert!(prev > 0, "nmspinning underflow");
        self.wakep();
    }

    /// Go's `findRunnable`. Returns None only when the runtime stops.
    fn find_runnable(self: &Arc<Self>, m: &M) -> Option<(GPtr, bool)> {
        loop {
            if self.stopping.load(Acquire) {
                return None;
            }
            let mut slot = m.p.borrow_mut();
            let p = slot.as_mut().expect("findRunnable without a P");

            if p.schedtick % GLOBAL_CHECK_INTERVAL == 0 {
                // tokio's `event_interval`: a busy P polls on the same tick,
                // so a runtime that never runs out of work still sees I/O and
                // fires timers (module docs, "Who polls"). An idle P polls
                // below anyway.
                if p.polled_at != p.schedtick && !p.runq.is_empty() && self.netpoll.pending() {
                    p.polled_at = p.schedtick;
                    if let Some(mut polled) = self.netpoll.poll(Some(Duration::ZERO)) {
                        let readied = !polled.is_empty();
                        self.inject(polled.take(), Some(p), false);
                        drop(polled);
                        // They went behind older work in the global queue,
                        // which a P that never runs dry drains one G per 61
                        // ticks: take a batch, so readied Gs keep moving.
                        let room = LOCAL_SHARE.saturating_sub(p.runq.len());
                        if readied && room > 0 && self.runq_size.load(Acquire) > 0 {
                            if let Some(g) = self.globrunqget(p, room) {
                                return Some((g, false));
                            }
                        }
                    }
                }
                // Fairness: without this, two Gs respawning each other could
                // keep the global queue waiting forever.
                if self.runq_size.load(Acquire) > 0 {
                    if let Some(g) = self.globrunqget(p, 1) {
                        return Some((g, false));
                    }
                }
            }
            if let Some((g, inherit)) = p.runq.pop(p.runnext_streak < MAX_RUNNEXT_STREAK) {
                p.runnext_streak = if inherit { p.runnext_streak + 1 } else { 0 };
                return Some((g, inherit));
            }
            if self.runq_size.load(Acquire) > 0 {
                if let Some(g) = self.globrunqget(p, 0) {
                    return Some((g, false));
                }
            }
            // Go's step 8: a non-blocking poll, if some G waits on the
            // netpoller and nobody else polls. Run one, queue the rest.
            if self.netpoll.pending() {
                if let Some(mut polled) = self.netpoll.poll(Some(Duration::ZERO)) {
                    let g = self.inject(polled.take(), Some(p), true);
                    drop(polled);
                    if let Some(g) = g {
                        return Some((g, false));
                    }
                }
            }

            // Steal, if this M is already spinning or spinning Ms are under
            // half the busy Ps (SeqCst: part of the spinning handshake).
            let busy = self.procs - self.npidle.load(SeqCst);
            if m.spinning.get() || 2 * self.nmspinning.load(SeqCst) < busy {
                if !m.spinning.get() {
                    m.spinning.set(true);
                    self.nmspinning.fetch_add(1, SeqCst);
                }
                if let Some(g) = self.steal_work(m, p) {
                    return Some((g, false));
                }
            }

            // Nothing anywhere: give up the P. The global queue is checked
            // under the lock that injectors take (module docs).
            let mut l = lock(&self.lock);
            if self.stopping.load(Acquire) {
                return None;
            }
            if !l.runq.is_empty() {
                let g = self.globrunqget_locked(&mut l, p, 0);
                drop(l);
                self.runqput_batch(p);
                return g.map(|g| (g, false));
            }
            self.pidleput(&mut l, slot.take().expect("P vanished"));
            drop(l);
            drop(slot);

            if m.spinning.get() {
                // The spinner half of the spinning handshake.
                m.spinning.set(false);
                let prev = self.nmspinning.fetch_sub(1, SeqCst);
                debug_assert!(prev > 0, "nmspinning underflow");
                // SeqCst fence: our decrement before the re-check below;
                // pairs with the fence in `wakep` (module docs).
                fence(SeqCst);
                if self.work_anywhere() {
                    let mut l = lock(&self.lock);
                    if let Some(p) = l.pidle.pop() {
                        self.npidle.fetch_sub(1, SeqCst);
                        drop(l);
                        *m.p.borrow_mut() = Some(p);
                        m.spinning.set(true);
                        self.nmspinning.fetch_add(1, SeqCst);
                        continue;
                    }
                }
            }

            // Go's step 13: become the one blocking poller, if some G waits
            // on the netpoller and nobody else blocks in it.
            if let Some(mut polled) = self.block_in_netpoll() {
                let mut l = lock(&self.lock);
                if self.stopping.load(Acquire) {
                    return None;
                }
                let p = l.pidle.pop();
                if p.is_some() {
                    self.npidle.fetch_sub(1, SeqCst);
                }
                drop(l);
                match p {
                    Some(mut p) => {
                        let g = self.inject(polled.take(), Some(&mut p), true);
                        drop(polled);
                        *m.p.borrow_mut() = Some(p);
                        if let Some(g) = g {
                            return Some((g, false));
                        }
                        // Broken by a new timer, or work waits: look again.
                        continue;
                    }
                    // Every P is busy: their Ms run what we found.
                    None => {
                        self.inject(polled.take(), None, false);
                        drop(polled);
                    }
                }
            }
            if !self.stopm(m) {
                return None;
            }
        }
    }

    /// An M without a P, about to go idle: block in the netpoller until an
    /// event, the next timer or a break (Go's step 13). None, at once, when
    /// nobody waits on the netpoller or another M already blocks in it. The
    /// wait goes through `Hooks::blocking` (Python: the GIL is released).
    fn block_in_netpoll(&self) -> Option<Polled<'_, Waker>> {
        if !self.netpoll.pending() || self.netpoll.blocked() {
            return None;
        }
        let mut polled = None;
        self.hooks
            .blocking(&mut || polled = self.netpoll.poll(None));
        polled
    }

    /// Any queue non-empty (Go's `checkRunqsNoP` plus the global check).
    fn work_anywhere(&self) -> bool {
        self.runq_size.load(Acquire) > 0 || self.allp.iter().any(|s| !s.q.is_empty())
    }

    /// Go's `stopm`: join the idle list and sleep until handed a P.
    fn stopm(&self, m: &M) -> bool {
        let mut l = lock(&self.lock);
        if self.stopping.load(Acquire) {
            return false;
        }
        // Work that arrived after we released our P, while no idle M was
        // listed to take it (a `wakep` or `handoffp` then tried to start a
        // new M, and may have hit the thread cap, leaving a P idle with
        // work): take it ourselves.
        let with_work = l.pidle.iter().position(|p| !p.runq.is_empty());
        let any = (!l.runq.is_empty() && !l.pidle.is_empty()).then(|| l.pidle.len() - 1);
        if let Some(i) = with_work.or(any) {
            let p = l.pidle.swap_remove(i);
            self.npidle.fetch_sub(1, SeqCst);
            drop(l);
            *m.p.borrow_mut() = Some(p);
            return true;
        }
        l.midle.push(m.note.clone());
        self.nmidle.fetch_add(1, SeqCst);
        // Go calls checkdead from mput, as here.
        if self.dead() {
            self.hooks.deadlock();
        }
        drop(l);
        self.park_m(m)
    }

    /// Go's `stealWork`: 4 passes over the other Ps in random order; runnext
    /// only on the last pass.
    fn steal_work(&self, m: &M, p: &mut P) -> Option<GPtr> {
        let n = self.procs;
        if n == 1 {
            return None;
        }
        for round in 0..STEAL_ROUNDS {
            let last = round == STEAL_ROUNDS - 1;
            // A random start and a stride coprime with n visit every P once
            // (Go's `randomOrder`).
            let start = m.next_rand() as usize % n;
            let stride = coprime_stride(n, m.next_rand() as usize);
            for k in 0..n {
                let victim = (start + k * stride) % n;
                if victim == p.id {
                    continue;
                }
                if let Some((g, stolen)) = p.runq.steal_from(&self.allp[victim].q, last) {
                    self.steals.fetch_add(u64::from(stolen), Relaxed);
                    return Some(g);
                }
            }
        }
        None
    }

    /// Takes a batch from the global queue: one G to run now, the rest into
    /// the P's local queue. `max = 0` means Go's batch size.
    fn globrunqget(&self, p: &mut P, max: usize) -> Option<GPtr> {
        let mut l = lock(&self.lock);
        let g = self.globrunqget_locked(&mut l, p, max);
        drop(l);
        self.runqput_batch(p);
        g
    }

    /// Go's `globrunqgetbatch`: `min(len, len/procs + 1, CAPACITY/2)`. The
    /// batch is parked in `p.batch` and pushed after the lock is dropped
    /// (a local push may overflow into the global queue, which takes it).
    fn globrunqget_locked(&self, l: &mut Locked, p: &mut P, max: usize) -> Option<GPtr> {
        let size = l.runq.len();
        let mut n = size
            .min(size / self.procs + 1)
            .min(runq::CAPACITY as usize / 2);
        if max > 0 {
            n = n.min(max);
        }
        let g = l.runq.pop_front();
        p.batch.extend(l.runq.drain(..n.saturating_sub(1)));
        // Release: pairs with the Acquire emptiness checks.
        self.runq_size.store(l.runq.len(), Release);
        g
    }

    fn runqput_batch(&self, p: &mut P) {
        let overflow = GlobalOverflow(self);
        for g in p.batch.drain(..) {
            p.runq.push(g, false, &overflow);
        }
    }

    /// Go's `execute` + the tail of `park_m`/`goyield`/`goexit`.
    fn execute(self: &Arc<Self>, m: &M, g: GPtr, inherit: bool) {
        let mut p = m.p.borrow_mut().take().expect("execute without a P");
        if !inherit {
            p.schedtick = p.schedtick.wrapping_add(1);
        }
        let gen = g.start_running();
        // SAFETY: we popped `g` from a run queue and made it RUNNING: this M
        // owns it until it yields, parks or finishes below.
        let body = unsafe { g.body_mut() }
            .as_mut()
            .expect("runnable G without a body");
        m.slot.bump(); // odd: in a step
        self.lend_p(m, p, g.id(), body.may_block());
        let mut cx = Cx {
            sched: self,
            g,
            gen,
        };
        let step = catch_unwind(AssertUnwindSafe(|| body.step(&mut cx))).unwrap_or_else(|_| {
            eprintln!("gmprt: G {} panicked; it is treated as finished", g.id());
            Step::Done
        });
        // Fast path: the P is still lent to us (Go's exitsyscallfast).
        // Otherwise sysmon handed it to another M meanwhile; this M finishes
        // the step's bookkeeping without a P and then goes idle.
        let p = self.reclaim_p(m);
        m.slot.bump(); // even: between steps
        let retaken = p.is_none();
        *m.p.borrow_mut() = p;
        match step {
            Step::Yield => {
                g.yield_now(gen);
                // Go's goyield (local tail), unless the yielder would be
                // alone in its local queue while Gs wait in the global one:
                // then Gosched (global tail), or a G yielding in a loop would
                // run again at once and the global queue would get one G
                // per 61 ticks.
                let alone = m.p.borrow().as_ref().is_none_or(|p| p.runq.is_empty());
                if retaken || (alone && self.runq_size.load(Acquire) > 0) {
                    GlobalOverflow(self).push_batch(&mut std::iter::once(g));
                    self.wakep();
                } else {
                    self.runqput_current(m, g, false);
                }
            }
            Step::Park => {
                if !g.commit_park(gen) {
                    // Woken during its own step: ready it like any waker would.
                    self.runqput_current(m, g, true);
                    self.wakep();
                }
            }
            Step::Done => {
                // SAFETY: still the owner (the G is RUNNING or NOTIFIED).
                let body = unsafe { g.body_mut() }.take();
                drop(body);
                g.finish(gen);
                self.ngs.fetch_sub(1, Relaxed);
                match m.p.borrow_mut().as_mut() {
                    Some(p) => self.gfput(p, g),
                    None => lock(&self.gfree).push(g),
                }
            }
        }
    }

    /// Requeues a G on the M's P, or the global queue if it has none.
    fn runqput_current(&self, m: &M, g: GPtr, next: bool) {
        let overflow = GlobalOverflow(self);
        match m.p.borrow_mut().as_mut() {
            Some(p) => p.runq.push(g, next, &overflow),
            None => overflow.push_batch(&mut std::iter::once(g)),
        }
    }

    /// Go's `gfget`: a recycled G from the P's cache, refilled from the global
    /// free list, or a new one.
    fn gfget(&self, p: &mut P) -> GPtr {
        if p.gfree.is_empty() {
            let mut global = lock(&self.gfree);
            let take = global.len().min(GFREE_BATCH);
            let at = global.len() - take;
            p.gfree.extend(global.drain(at..));
        }
        p.gfree.pop().unwrap_or_else(|| self.galloc())
    }

    fn gfget_global(&self) -> GPtr {
        let g = lock(&self.gfree).pop();
        g.unwrap_or_else(|| self.galloc())
    }

    fn galloc(&self) -> GPtr {
        let g = GPtr::alloc();
        lock(&self.allgs).push(g);
        g
    }

    /// Go's `gfput`.
    fn gfput(&self, p: &mut P, g: GPtr) {
        p.gfree.push(g);
        if p.gfree.len() >= GFREE_LOCAL_MAX {
            let at = p.gfree.len() - GFREE_BATCH;
            lock(&self.gfree).extend(p.gfree.drain(at..));
        }
    }

    /// Stop the runtime: no new Gs; idle Ms exit now, running Ms after their
    /// current step. Any thread.
    pub fn stop(&self) {
        let mut l = lock(&self.lock);
        self.stopping.store(true, Release);
        let l = &mut *l;
        self.npwait.store(0, Relaxed);
        let idle: Vec<_> = l.midle.drain(..).chain(l.pwait.drain(..)).collect();
        self.nmidle.store(0, Relaxed);
        for note in idle {
            note.wakeup(Handoff::Exit);
        }
        self.netpoll.stop();
        // Under sysmon's lock, so the wakeup cannot fall between its
        // stopping check and its wait.
        let _s = lock(&self.sysmon_lock);
        self.sysmon_wake.notify_all();
    }

    pub(crate) fn hooks(&self) -> &dyn Hooks {
        &*self.hooks
    }

    pub(crate) fn global_runq_len(&self) -> usize {
        self.runq_size.load(Acquire)
    }

    /// sysmon: take a P lent to its slot, if it still is.
    pub(crate) fn take_lent(&self, slot: &PSlot) -> Option<Box<P>> {
        // Acquire: pairs with the Release in `lend_p`/`with_current_p`.
        let raw = slot.lent.swap(ptr::null_mut(), Acquire);
        // SAFETY: a non-null pointer swapped out of `lent` is owned by the
        // swapper; it came from Box::into_raw in `lend_p`.
        (!raw.is_null()).then(|| unsafe { Box::from_raw(raw) })
    }

    /// sysmon: sleep `d`, or less if the runtime stops. False once stopping.
    pub(crate) fn sysmon_sleep(&self, d: Duration) -> bool {
        let guard = lock(&self.sysmon_lock);
        if self.stopping.load(Acquire) {
            return false;
        }
        drop(match self.sysmon_wake.wait_timeout(guard, d) {
            Ok((g, _)) => g,
            Err(p) => p.into_inner().0,
        });
        !self.stopping.load(Acquire)
    }

    /// Work is queued and a P is idle, yet no M is idle to run it: what a
    /// failed `newm` leaves behind if no M comes back.
    pub(crate) fn work_stranded(&self) -> bool {
        let l = lock(&self.lock);
        let queued = !l.runq.is_empty() || l.pidle.iter().any(|p| !p.runq.is_empty());
        queued && !l.pidle.is_empty() && l.midle.is_empty()
    }

    /// Go's `checkdead` condition: every M idle, nobody in a blocking call,
    /// every P idle with empty queues, Gs alive, and no G waiting on the
    /// netpoller or a timer (those can be woken from outside).
    fn dead(&self) -> bool {
        // An M blocked in the netpoller counts as idle only because the
        // counters must read zero too: with no waiter and no timer only a
        // break can end its wait (module docs, "Who polls").
        let polling = usize::from(self.netpoll.blocked());
        self.ngs.load(SeqCst) > 0
            && self.nmidle.load(SeqCst) + polling == self.mcount.load(SeqCst)
            && self.nblocking.load(SeqCst) == 0
            && self.npwait.load(SeqCst) == 0
            && self.npidle.load(SeqCst) == self.procs
            && self.runq_size.load(SeqCst) == 0
            && self.allp.iter().all(|s| s.q.is_empty())
            && self.netpoll.waiters() == 0
            && self.netpoll.timers() == 0
    }

    /// After [`Hooks::deadlock`]: whether the runtime really is deadlocked.
    /// Looks twice, `settle` apart, and requires that no G ran and none was
    /// spawned in between: a foreign thread can be between `spawn`'s count
    /// and its enqueue when an M checks, and must not cause a false report.
    pub fn confirm_deadlock(&self, settle: Duration) -> bool {
        let progress = || {
            let steps: u64 = self.allp.iter().map(|s| s.steps.load(SeqCst)).sum();
            (steps, self.spawned.load(SeqCst))
        };
        let before = progress();
        if !self.dead() {
            return false;
        }
        std::thread::sleep(settle);
        let _l = lock(&self.lock);
        self.dead() && progress() == before && !self.stopping.load(Acquire)
    }

    /// This runtime's netpoller and timers.
    pub fn netpoll(&self) -> &Netpoll<Waker> {
        &self.netpoll
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Acquire)
    }

    /// After [`stop`](Self::stop): wait up to `timeout` for every M to exit and
    /// join them. Returns false if some M is still inside a step (a G blocked
    /// in a call that never returns); that thread is left to finish alone.
    pub fn join(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut live = lock(&self.live_ms);
        while *live > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            live = match self.ms_exited.wait_timeout(live, left) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        drop(live);
        for h in lock(&self.threads).drain(..) {
            let _ = h.join();
        }
        if let Some(h) = lock(&self.sysmon_thread).take() {
            let _ = h.join();
        }
        true
    }

    /// After [`join`](Self::join): take every unfinished G's body, leaving the
    /// Gs dead (late wakes are stale). The caller cancels the bodies; for
    /// Python that must happen while attached.
    pub fn reap(&self) -> Vec<(u64, BoxBody)> {
        debug_assert!(self.is_stopping(), "reap on a running scheduler");
        let gs = lock(&self.allgs).clone();
        let bodies: Vec<(u64, BoxBody)> = gs
            .iter()
            .filter_map(|g| g.kill().map(|b| (g.id(), b)))
            .collect();
        self.ngs
            .fetch_sub(bodies.len().min(self.ngs.load(Relaxed)), Relaxed);
        bodies
    }

    pub fn stats(&self) -> Stats {
        Stats {
            goroutines: self.ngs.load(Relaxed),
            procs: self.procs,
            threads: self.mcount.load(Relaxed),
            idle_threads: self.nmidle.load(Relaxed),
            idle_procs: self.npidle.load(Relaxed),
            spinning: self.nmspinning.load(Relaxed),
            global_runq: self.runq_size.load(Relaxed),
            local_runq: self.allp.iter().map(|s| s.q.len()).collect(),
            steals: self.steals.load(Relaxed),
            handoffs: self.handoffs.load(Relaxed),
            spawned: self.spawned.load(Relaxed),
            netpoll_waiters: self.netpoll.waiters(),
            timers: self.netpoll.timers(),
        }
    }
}

impl Drop for Sched {
    fn drop(&mut self) {
        // Every M holds an Arc, so none runs now; every Waker holds one, so
        // no GPtr outlives this. Free each G exactly once (allgs has no
        // duplicates: galloc is the only push).
        for slot in self.allp.iter() {
            let raw = slot.lent.swap(ptr::null_mut(), Acquire);
            if !raw.is_null() {
                // SAFETY: a lent P is owned by its slot; nobody else runs now.
                drop(unsafe { Box::from_raw(raw) });
            }
        }
        let gs = std::mem::take(&mut *lock(&self.allgs));
        for g in gs {
            // SAFETY: see above; the queues and free lists that also hold
            // these pointers are dropped with `self` without reading them.
            unsafe { g.free() };
        }
    }
}

impl M {
    /// xorshift32 (Marsaglia), for victim order only.
    fn next_rand(&self) -> u32 {
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.rng.set(x);
        x
    }
}

/// A stride in `1..n` coprime with `n`, chosen by `r`.
fn coprime_stride(n: usize, r: usize) -> usize {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let mut s = 1 + r % (n - 1).max(1);
    while gcd(s, n) != 1 {
        s = s % (n - 1) + 1;
    }
    s
}

/// The calling thread's `pthread_self()`, which CPython reports as
/// `threading.get_ident()`.
fn thread_id() -> u64 {
    #[cfg(unix)]
    {
        // SAFETY: pthread_self has no preconditions.
        (unsafe { libc::pthread_self() }) as u64
    }
    #[cfg(not(unix))]
    {
        0
    }
}
