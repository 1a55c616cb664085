//! sched: Ps, Ms, `findRunnable`, and the wake/park protocol (Go's proc.go).
//!
//! One file per mechanism (tokio's `multi_thread/`), each with its own
//! `impl Sched` block and a note on what it owns and who touches which field:
//!
//! - `mod.rs` (here): the objects, [`Sched`] and its fields, construction,
//!   and the embedder's entry points (spawn, stop, join, reap, stats).
//! - `worker.rs`: the M loop: `mstart`, `schedule`, `findRunnable`,
//!   `execute`, `stealWork`.
//! - `idle.rs`: idle Ps and Ms: `wakep`, `startm`, `newm`, `stopm`,
//!   `pidleput`; the "Spinning handshake"; "Retiring idle Ms".
//! - `syscall.rs`: the P lent to sysmon for each step, `blocking`,
//!   `handoffp`, `exitsyscall`; "Lending the P".
//! - `globalq.rs`: the global run queue and `injectglist`.
//! - `gfree.rs`: the G free lists.
//! - `deadlock.rs`: `checkdead`, and the check for work stranded by a
//!   failed `newm`.
//! - `schedtrace.rs`: Go's schedtrace line, which sysmon prints.
//! - `traceback.rs`: every live G for a goroutine dump (`forEachG`), and
//!   the counts by state and wait reason that schedtrace prints.
//!
//! # Objects
//!
//! - **P** ([`P`]): one of `procs` scheduling contexts. Owns a local run queue
//!   (`runq::Local`), its schedtick and a G free-list cache. A `Box<P>` is held
//!   by exactly one M at a time or sits on the idle list, so the type system
//!   enforces "owner P only" for everything in it. Thieves reach its queue
//!   through `Sched::allp` (`runq::Stealer`). During a step the M lends its
//!   P to the P's slot, where sysmon can take it ("Lending the P",
//!   `syscall.rs`).
//! - **M** (`worker::M`): an OS thread. Lives on its thread's stack,
//!   reachable through the `CURRENT` thread-local so that code running
//!   inside a G step (a spawn, a wake) can use the M's P without locks.
//!   Made on demand (`newm`); one idle past `Config::idle_keepalive` while
//!   more Ms than Ps exist exits ("Retiring idle Ms", `idle.rs`).
//! - **G** ([`crate::g`]): stepped by the M that owns it.
//!
//! # `Sched::lock` (Go's `sched.lock`)
//!
//! Guards the global run queue, the idle P list, the idle M list and the
//! Ms back from a blocking call that wait for a P (`Locked::pwait`). The
//! counters beside it (`runq_size`, `npidle`, `nmidle`, `npwait`) are
//! written under the lock and read without it, so emptiness checks on hot
//! paths take no lock.
//!
//! # Spinning handshake
//!
//! How a submitter and an M that gives up its P avoid losing a wakeup
//! (Go's "Worker thread parking/unparking"): written up in `idle.rs`, with
//! `wakep`; the spinner's half is at the end of `find_runnable`
//! (`worker.rs`).
//!
//! # Lending the P
//!
//! How sysmon takes the P of a step that runs long, and how the M gets it
//! back or finds it gone (Go's `retake`, `exitsyscallfast` and
//! `exitsyscall0`): written up in `syscall.rs`.
//!
//! # Entry points, and who touches what here
//!
//! - `spawn`/`spawn_with`, `stop`, `stats`, `is_stopping`, `netpoll`:
//!   any thread. `spawn` from inside a step uses the M's P (borrowed back
//!   from its slot, "Lending the P"); from anywhere else the global queue
//!   and the global G free list.
//! - `join` and then `reap`: the thread that stopped the runtime.
//! - `stop` sets `stopping` (under `Sched::lock`, Release) and wakes
//!   every idle M, every M waiting for a P, the netpoller and sysmon.
//!   sysmon's sleep (`sysmon_sleep`) lives here beside it: the two share
//!   `sysmon_lock`, so the wakeup cannot fall between sysmon's check of
//!   `stopping` and its wait.
//! - `stats` reads every counter Relaxed: a snapshot for display, not a
//!   consistent cut.
//! - Each field of [`Sched`] says who writes it and under what; `P` is
//!   owner M only; `Locked` is behind `Sched::lock`.
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
//!   wait, like the whole idle path, runs detached ([`Hooks::detached`];
//!   Python: without the GIL).
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

mod deadlock;
mod gfree;
mod globalq;
mod idle;
pub mod schedtrace;
mod syscall;
pub mod traceback;
mod worker;

pub(crate) use syscall::{MSlot, PSlot};

use std::collections::VecDeque;
use std::ptr;
use std::time::{Duration, Instant};

use crate::api::{BoxBody, Config, GRef, Hooks, Stats, Stopped, Waker};
use crate::g::GPtr;
use crate::loom::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::*};
use crate::loom::sync::{Arc, Condvar, Mutex};
use crate::loom::{lock, thread, unpoison};
use crate::netpoll::Netpoll;
use crate::park::{Handoff, Note};
use crate::runq::{self, Overflow as _};

use globalq::GlobalOverflow;
pub use worker::ParkOnForcedUnwind;
use worker::CURRENT;

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

/// One runtime: Ps, Ms, the global queue.
pub struct Sched {
    procs: usize,
    max_threads: usize,
    /// `Config::idle_keepalive` ("Retiring idle Ms", `idle.rs`).
    idle_keepalive: Duration,
    /// When the runtime was made: schedtrace's "SCHED <ms>ms".
    started: Instant,
    /// `Config::schedtrace` and `Config::scheddetail`, for sysmon.
    pub(crate) schedtrace: Option<Duration>,
    pub(crate) scheddetail: bool,
    /// Every P's shared part. Indexed by `P::id`.
    pub(crate) allp: Box<[PSlot]>,
    lock: Mutex<Locked>,
    /// Global queue length. Written under `lock` (Release); read anywhere
    /// (Acquire) as a lock-free emptiness hint.
    runq_size: AtomicUsize,
    /// Idle Ps. Changed under `lock` (SeqCst: it is read by the spinning
    /// handshake on the submitter side, see "Spinning handshake" in
    /// `idle.rs`).
    npidle: AtomicUsize,
    /// Spinning Ms. SeqCst throughout: the spinning handshake.
    nmspinning: AtomicUsize,
    /// Ms created and not yet exited (an M retiring for want of work counts
    /// itself out under `lock`, as it leaves `midle`: "Retiring idle Ms",
    /// `idle.rs`); Ms on the idle list.
    mcount: AtomicUsize,
    nmidle: AtomicUsize,
    /// Live Gs (spawned, not finished).
    ngs: AtomicUsize,
    next_gid: AtomicU64,
    /// Set once under `lock`; Ms exit at their next schedule.
    stopping: AtomicBool,
    hooks: Box<dyn Hooks>,
    /// Every G ever allocated, in the slabs that hold them, freed when the
    /// scheduler drops (Go's `allgs`; `gfree` module docs, "Slabs").
    allgs: Mutex<gfree::AllGs>,
    gfree: Mutex<Vec<GPtr>>,
    steals: AtomicU64,
    handoffs: AtomicU64,
    /// The G whose long steps sysmon judges by the wall clock
    /// ([`Sched::set_watched_g`]); 0 for none. Relaxed both ways: sysmon
    /// only compares it with the id it samples for a report.
    pub(crate) watched_g: AtomicU64,
    spawned: AtomicU64,
    /// The Ms' threads, joined at shutdown. `newm` pushes under this lock
    /// around the spawn, so a retiring M (which removes and detaches its
    /// own handle here) always finds it.
    threads: Mutex<Vec<thread::JoinHandle<()>>>,
    netpoll: Netpoll<Waker>,
    /// `Locked::pwait.len()`, for the lock-free check between steps.
    npwait: AtomicUsize,
    /// Threads inside `blocking` (Ms and foreign threads alike).
    nblocking: AtomicUsize,
    /// Ms inside `blocking_asleep`: asleep on a runtime primitive.
    nasleep: AtomicUsize,
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
            idle_keepalive: config.idle_keepalive,
            started: Instant::now(),
            schedtrace: config.schedtrace.filter(|d| !d.is_zero()),
            scheddetail: config.scheddetail,
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
            allgs: Mutex::new(gfree::AllGs::new()),
            gfree: Mutex::new(Vec::new()),
            steals: AtomicU64::new(0),
            handoffs: AtomicU64::new(0),
            watched_g: AtomicU64::new(0),
            spawned: AtomicU64::new(0),
            threads: Mutex::new(Vec::new()),
            netpoll: Netpoll::new(),
            npwait: AtomicUsize::new(0),
            nblocking: AtomicUsize::new(0),
            nasleep: AtomicUsize::new(0),
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

    /// Marks G `g` (0: none) as one whose step must not hold its P long
    /// even while its thread sleeps: an event loop's G, where one blocked
    /// callback stalls every task the loop serves. sysmon reports its
    /// steps past `LONG_STEP` by wall time, not by the thread's CPU time
    /// (core `sysmon`, "Long steps"). One G per runtime; the last call wins.
    pub fn set_watched_g(&self, g: u64) {
        self.watched_g.store(g, Relaxed);
    }

    /// The G [`set_watched_g`](Self::set_watched_g) marked, or 0.
    pub fn watched_g(&self) -> u64 {
        self.watched_g.load(Relaxed)
    }

    pub fn procs(&self) -> usize {
        self.procs
    }

    /// How long ago the runtime was made (schedtrace's uptime).
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Any thread: start a G running `body`. From inside a G of this runtime
    /// the new G goes to the current P's runnext (Go's `newproc`); from
    /// anywhere else, to the global queue.
    pub fn spawn(self: &Arc<Self>, body: BoxBody) -> Result<u64, Stopped> {
        if self.stopping.load(Acquire) {
            return Err(Stopped);
        }
        let id = self.next_gid.fetch_add(1, Relaxed);
        self.enqueue_new(None, id, body);
        Ok(id)
    }

    /// [`spawn`](Self::spawn), building the body from a [`GRef`] to the new
    /// G, so that the body (and whoever it hands the `GRef` to) can
    /// interrupt it from before its first step on. The `GRef` is not stale
    /// for anyone the caller publishes it to after this returns.
    pub fn spawn_with(
        self: &Arc<Self>,
        body: impl FnOnce(GRef) -> BoxBody,
    ) -> Result<u64, Stopped> {
        if self.stopping.load(Acquire) {
            return Err(Stopped);
        }
        let id = self.next_gid.fetch_add(1, Relaxed);
        // The G first, in a borrow of its own: building the body may run
        // the embedder's code, which may spawn (and borrow the P) itself.
        let g = self
            .with_current_p(|p| self.gfget(p))
            .unwrap_or_else(|| self.gfget_global());
        let body = body(GRef::new(self.clone(), g, id));
        self.enqueue_new(Some(g), id, body);
        Ok(id)
    }

    /// Prepares a new G (`g`, or one from the free list) for `body` and
    /// queues it.
    fn enqueue_new(self: &Arc<Self>, g: Option<GPtr>, id: u64, body: BoxBody) {
        if crate::trace::enabled() {
            // Relaxed: this M's own store in `lend_p`; the spawning G.
            let by = self.with_current(|m| m.slot.g.load(Relaxed)).unwrap_or(0);
            crate::trace::emit(crate::trace::Kind::Spawn, id, by, 0);
        }
        self.ngs.fetch_add(1, Relaxed);
        self.spawned.fetch_add(1, Relaxed);
        // One borrow of the P for the G and its enqueue (Go's newproc +
        // runqput(next=true)): inside a step the P is lent, and each borrow
        // is a pair of atomic swaps.
        let overflow = GlobalOverflow(self);
        let mut body = Some(body);
        let local = self.with_current_p(|p| {
            let g = g.unwrap_or_else(|| self.gfget(p));
            g.prepare(id, body.take().expect("body used twice"));
            p.runq.push(g, true, &overflow);
        });
        if local.is_none() {
            let g = g.unwrap_or_else(|| self.gfget_global());
            g.prepare(id, body.take().expect("body used twice"));
            overflow.push_batch(&mut std::iter::once(g));
        }
        self.wakep();
    }

    /// Any thread: interrupt every live G (`g::G::interrupt`), so each one
    /// parked wakes and each one running fails its next park. The embedder
    /// writes why first (a shutdown that cancels every G).
    pub fn interrupt_all(self: &Arc<Self>) {
        let gs = lock(&self.allgs).snapshot();
        for g in gs {
            if g.interrupt(g.id()) == crate::g::Wake::Enqueue {
                self.ready(g, false);
            }
        }
    }

    /// After `fork()`, in the child: the calling thread forgets that it
    /// was an M. The child has none of the parent's other threads, so the
    /// parent's runtime can never run there; it is left alone (never
    /// stopped or freed: its locks may have been held by threads that do
    /// not exist in the child), and the embedder starts a fresh one.
    pub fn after_fork_child() {
        worker::forget_current_m();
    }

    /// Runs `f` with the runtime of the calling M, if the caller is an M.
    pub fn with_current_sched<R>(f: impl FnOnce(&Arc<Sched>) -> R) -> Option<R> {
        let m = CURRENT.with(|c| c.get());
        if m.is_null() {
            return None;
        }
        // SAFETY: as in `with_current` (worker.rs): the M outlives this call.
        Some(f(unsafe { &(*m).sched }))
    }

    /// Whether the calling thread is an M of this runtime (inside a G step or
    /// the scheduler loop).
    pub fn on_m(&self) -> bool {
        self.with_current(|_| ()).is_some()
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

    /// sysmon: sleep `d`, or less if the runtime stops. False once stopping.
    pub(crate) fn sysmon_sleep(&self, d: Duration) -> bool {
        let guard = lock(&self.sysmon_lock);
        if self.stopping.load(Acquire) {
            return false;
        }
        drop(unpoison(self.sysmon_wake.wait_timeout(guard, d)).0);
        !self.stopping.load(Acquire)
    }

    pub(crate) fn hooks(&self) -> &dyn Hooks {
        &*self.hooks
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
            live = unpoison(self.ms_exited.wait_timeout(live, left)).0;
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
        let gs = lock(&self.allgs).snapshot();
        let bodies: Vec<(u64, BoxBody)> = gs
            .iter()
            .filter_map(|g| g.kill().map(|b| (g.id(), b)))
            .collect();
        self.ngs
            .fetch_sub(bodies.len().min(self.ngs.load(Relaxed)), Relaxed);
        bodies
    }

    /// Steps run so far, all Ps together: a progress count (the embedder's
    /// shutdown tells Gs that are ending from ones stuck in one step).
    pub fn steps(&self) -> u64 {
        self.allp.iter().map(|s| s.steps.load(Relaxed)).sum()
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
        // no GPtr outlives this. Free each G exactly once, with the slabs
        // that hold them (galloc is the only way a G is made).
        for slot in self.allp.iter() {
            let raw = slot.lent.swap(ptr::null_mut(), Acquire);
            if !raw.is_null() {
                // SAFETY: a lent P is owned by its slot; nobody else runs now.
                drop(unsafe { Box::from_raw(raw) });
            }
        }
        // The queues and free lists that also hold pointers to these Gs
        // are dropped with `self` without reading them.
        drop(std::mem::replace(
            &mut *lock(&self.allgs),
            gfree::AllGs::new(),
        ));
    }
}
