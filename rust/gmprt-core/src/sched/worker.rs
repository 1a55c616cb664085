//! worker: the M loop (Go's `mstart`, `schedule`, `findRunnable`,
//! `execute`, `stealWork`, `runqput`, `ready`).
//!
//! An M is an OS thread running `mstart`. It sleeps on its note until
//! handed a P, then loops in `schedule`: find a G (`find_runnable`), run
//! one step of it (`execute`), and requeue, park or recycle it by what the
//! step returned. It leaves the loop when the runtime stops, or when it has
//! been idle past its keep-alive while more Ms than Ps exist ("Retiring
//! idle Ms", `idle.rs`).
//!
//! # Who touches what
//!
//! - [`M`]: lives on its thread's stack frame (`mstart`), and only that
//!   thread touches it, except `M::note`, which other threads wake
//!   (`park::Note`), and `M::slot`, which sysmon samples. `CURRENT` points
//!   at it for the M's whole life, so code inside a step (a spawn, a wake)
//!   finds the M and its P without a lock (`with_current`,
//!   `with_current_p`).
//! - `M::p`: the P between steps (the M's thread only). During a step the P
//!   is lent to its slot and `M::p` is empty ("Lending the P",
//!   `syscall.rs`).
//! - `P`: owner M only. Other Ms reach a P's queue only through its slot
//!   (`PSlot::q`, a `runq::Stealer`), to steal.
//! - A G popped from a run queue and made RUNNING belongs to this M until
//!   its step ends (the SAFETY comments in `execute`).
//!
//! # `find_runnable`'s order (Go's `findRunnable`)
//!
//! 1. Every 61st schedtick: a busy P polls the netpoller without blocking,
//!    then takes one G from the global queue (fairness).
//! 2. The local queue: runnext (at most 3 in a row), then the ring.
//! 3. A batch from the global queue.
//! 4. Go's step 8: a non-blocking netpoll, if some G waits on it.
//! 5. Stealing: 4 rounds over the other Ps in random order, runnext on the
//!    last; only if this M already spins or spinners are under half the
//!    busy Ps.
//! 6. Give up the P (the global queue is checked once more under the lock);
//!    a spinner then re-checks every queue ("Spinning handshake",
//!    `idle.rs`).
//! 7. Go's step 13: block in the netpoller if some G waits and nobody else
//!    blocks there ("Who polls the netpoller", `sched` module docs), else
//!    `stopm`.
//!
//! # A runnext G wakes no M
//!
//! `ready` into the calling M's own runnext slot, when that slot was empty
//! (nothing moved to the ring), skips `wakep`: tokio's LIFO slot rule, and
//! the reference notes' advice for gmprt. The readier is inside a step (or
//! between two), so this M takes the slot as soon as the step ends, and a
//! woken M could take it no sooner: thieves steal runnext only on their
//! last round (`steal_work`). Go wakes one anyway; here that cost a
//! spinning M, and the GIL it fought for, on every channel hand-off (the
//! ping-pong of `benches/chan.py`). If the step runs on instead of parking,
//! sysmon's retake hands the P, runnext included, to another M
//! (`handoffp` counts runnext as work). A G displaced from runnext to the
//! ring, a push that overflowed, and a ready with no P of ours still wake
//! one, as in Go.
//!
//! # Attached only to step
//!
//! An embedder's Gs may need the M attached to something only one thread
//! holds at a time (Python: the GIL). The M's whole loop runs inside
//! `Hooks::detached`; only steps of embedded Gs ([`Body::embedded`]) run
//! inside `Hooks::attached`, and the M stays attached for the next G
//! steps 1-4 below find at once (`find_ready`), if that one is embedded
//! too, so a run of Python steps attaches once. Anything else, a
//! Rust-native step, stealing, the idle path and every wait, runs
//! detached: an M woken from `epoll_wait`, or one running the netpoller's
//! Rust watcher Gs, no longer queues for the GIL behind the M running
//! Python (before: 0.2 futex waits per message in a `gmprt.aio` echo
//! server, each a GIL handoff).
//!
//! [`Body::embedded`]: crate::Body::embedded
//!
//! # Foreign unwinds
//!
//! A step runs embedder code, and the embedder's runtime may end the
//! thread with a *forced* unwind: CPython before 3.14 calls
//! `pthread_exit` in a thread that wants the GIL back once the interpreter
//! finalizes, and glibc implements `pthread_exit` by unwinding. Such an
//! unwind must never be caught: `catch_unwind` aborts the process on a
//! foreign exception (glibc prints "FATAL: exception not rethrown"), and
//! every destructor on the way would run with the embedder's state gone
//! (for Python, without the GIL). A Rust panic in a step is caught below
//! and the G treated as finished; a forced unwind is stopped before it
//! reaches that catch by [`ParkOnForcedUnwind`], which parks the thread
//! for good instead (the embedder wraps its own calls the same way, as
//! close to the foreign call as it can, so no destructor of its runs
//! either). A thread the embedder wanted gone stays asleep until the
//! process exits, which is what it asked for, minus the unwinding.

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::time::Duration;

use super::globalq::{GlobalOverflow, LOCAL_SHARE};
use super::{MSlot, Sched, P};
use crate::api::{BoxBody, Cx, Hooks, Step, Waker};
use crate::cpuclock::CpuClock;
use crate::g::{GPtr, WaitReason};
use crate::loom::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering::*};
use crate::loom::sync::Arc;
use crate::loom::{lock, thread};
use crate::netpoll::Polled;
use crate::park::{Handoff, Note};
use crate::runq::Overflow as _;
use crate::trace::{self, Kind, StepEnd};

/// Go's fairness tick: every 61st schedtick a P takes one G from the global
/// queue before its own (proc.go `schedtick%61`; 61 is prime so it does not
/// line up with other periods).
const GLOBAL_CHECK_INTERVAL: u32 = 61;

/// tokio's `MAX_LIFO_POLLS_PER_TICK`: after 3 runnext runs in a row the P
/// takes from its ring, so two Gs ping-ponging through runnext cannot starve
/// the rest of its queue (tokio#2349, #5712; Go#65178).
const MAX_RUNNEXT_STREAK: u32 = 3;

/// Go's `stealWork` makes 4 passes over the other Ps; runnext is stolen only
/// on the last.
const STEAL_ROUNDS: usize = 4;

/// An M (Go's `m`): one OS thread's scheduler state, on that thread's stack
/// (module docs, "Who touches what").
pub(super) struct M {
    pub(super) sched: Arc<Sched>,
    pub(super) note: Arc<Note<Box<P>>>,
    /// The P, held between steps.
    pub(super) p: RefCell<Option<Box<P>>>,
    /// During a step: the id of the P lent to its slot.
    pub(super) lent: Cell<Option<usize>>,
    pub(super) spinning: Cell<bool>,
    /// Set when the M leaves for want of work ("Retiring idle Ms",
    /// `idle.rs`): it has counted itself out of `mcount` already.
    pub(super) retired: Cell<bool>,
    /// xorshift32 state for the victim order (`next_rand`).
    rng: Cell<u32>,
    /// What sysmon sees of this M (registered in `Sched::allm`).
    pub(super) slot: Arc<MSlot>,
    /// The running step asked that its `Step::Yield` be Go's Gosched
    /// (`Sched::gosched`). Cleared as each step starts.
    pub(super) gosched: Cell<bool>,
}

// The M running on this thread, or null. Set by `mstart` for the M's whole
// life; the M lives on that function's stack frame.
#[cfg(not(loom))]
std::thread_local! {
    pub(super) static CURRENT: Cell<*const M> = const { Cell::new(ptr::null()) };
}
#[cfg(loom)]
loom::thread_local! {
    pub(super) static CURRENT: Cell<*const M> = Cell::new(ptr::null());
}

impl Sched {
    /// The body of an M thread (Go's `mstart`).
    pub(super) fn mstart(self: Arc<Self>, note: Arc<Note<Box<P>>>) {
        let hooks: &dyn Hooks = &*self.hooks;
        let sched = self.clone();
        let mut retired = false;
        hooks.m_main(&mut || {
            let m = M {
                sched: sched.clone(),
                note: note.clone(),
                p: RefCell::new(None),
                lent: Cell::new(None),
                spinning: Cell::new(false),
                retired: Cell::new(false),
                rng: Cell::new(0x9E37_79B9 ^ sched.mcount.load(Relaxed) as u32),
                gosched: Cell::new(false),
                slot: Arc::new(MSlot {
                    steps: AtomicU64::new(0),
                    g: AtomicU64::new(0),
                    may_block: AtomicBool::new(false),
                    in_call: AtomicBool::new(false),
                    thread: thread_id(),
                    cpu: CpuClock::current(),
                }),
            };
            CURRENT.with(|c| c.set(&m));
            lock(&sched.allm).push(m.slot.clone());
            hooks.detached(&mut || {
                if sched.park_m(&m) {
                    sched.schedule(&m);
                }
            });
            lock(&sched.allm).retain(|s| !Arc::ptr_eq(s, &m.slot));
            CURRENT.with(|c| c.set(ptr::null()));
            retired = m.retired.get();
        });
        if retired {
            // Nobody will join us: drop (detach) our own handle so the
            // thread's resources are freed when it ends. Before `live_ms`
            // drops below, so `join` never finds a retired M's handle.
            let me = thread::current().id();
            let mut threads = lock(&self.threads);
            if let Some(i) = threads.iter().position(|h| h.thread().id() == me) {
                drop(threads.swap_remove(i));
            }
        } else {
            self.mcount.fetch_sub(1, SeqCst);
        }
        let mut live = lock(&self.live_ms);
        *live -= 1;
        drop(live);
        self.ms_exited.notify_all();
    }

    /// Sleeps on the M's note until handed a P (true) or told to exit.
    pub(super) fn park_m(&self, m: &M) -> bool {
        m.take_handoff(m.note.sleep())
    }

    /// Go's `schedule`: find a G, run it, forever (until stop, or until the
    /// M retires).
    fn schedule(self: &Arc<Self>, m: &M) {
        // A Rust-native G the attached loop below found: it runs here next,
        // detached (the loop found it with the P in hand, so the checks
        // before `find_runnable` hold for it).
        let mut next: Option<(GPtr, bool)> = None;
        loop {
            let (g, inherit) = match next.take() {
                Some(found) => found,
                None => {
                    // A P-less M (sysmon took its P during the last step)
                    // goes idle.
                    if m.p.borrow().is_none() && !self.stopm(m) {
                        return;
                    }
                    // An M back from a blocking call is mid-step and cannot
                    // hand its G to anyone: it needs a P. Between two steps
                    // we can give ours. Acquire: pairs with the Release
                    // increment in `exitsyscall`.
                    if self.npwait.load(Acquire) > 0 && self.give_p_to_waiter(m) {
                        // A new M started spinning (`handoffp`) can meet the
                        // waiter at once. Going idle still counted in
                        // `nmspinning` would make every later `wakep` skip,
                        // stranding the next G (loom: `loom_tests::idle`):
                        // stop spinning and pass the role on, as a spinner
                        // that found work does.
                        if m.spinning.get() {
                            self.reset_spinning(m);
                        }
                        if !self.stopm(m) {
                            return;
                        }
                    }
                    let Some(found) = self.find_runnable(m) else {
                        return;
                    };
                    if m.spinning.get() {
                        self.reset_spinning(m);
                    }
                    found
                }
            };
            if !embedded(g) {
                self.execute(m, g, inherit);
                continue;
            }
            // "Attached only to step": attach for this G and keep it for
            // embedded Gs at hand, the P's own or the global queue's;
            // anything that would steal or wait runs detached again.
            self.hooks.attached(&mut || {
                let (mut g, mut inherit) = (g, inherit);
                loop {
                    self.execute(m, g, inherit);
                    // Acquire: as above.
                    if m.p.borrow().is_none() || self.npwait.load(Acquire) > 0 {
                        return;
                    }
                    match self.find_ready_now(m) {
                        Some((g2, i2)) if embedded(g2) => (g, inherit) = (g2, i2),
                        other => {
                            next = other;
                            return;
                        }
                    }
                }
            });
        }
    }

    /// `find_runnable` up to the point where it would steal or wait (steps
    /// 1-4 of its order), for an attached M: None when that is all it
    /// found, or the runtime stops.
    fn find_ready_now(self: &Arc<Self>, m: &M) -> Option<(GPtr, bool)> {
        if self.stopping.load(Acquire) {
            return None;
        }
        let mut slot = m.p.borrow_mut();
        self.find_ready(slot.as_mut()?)
    }

    /// Go's `findRunnable`. Returns None only when the runtime stops or the
    /// M retired in `stopm`.
    fn find_runnable(self: &Arc<Self>, m: &M) -> Option<(GPtr, bool)> {
        loop {
            if self.stopping.load(Acquire) {
                return None;
            }
            let mut slot = m.p.borrow_mut();
            let p = slot.as_mut().expect("findRunnable without a P");
            if let Some(found) = self.find_ready(p) {
                return Some(found);
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
            // under the lock that injectors take ("Spinning handshake",
            // idle.rs).
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
                // The spinner half of the spinning handshake (idle.rs).
                m.spinning.set(false);
                let prev = self.nmspinning.fetch_sub(1, SeqCst);
                debug_assert!(prev > 0, "nmspinning underflow");
                // SeqCst fence: our decrement before the re-check below;
                // pairs with the fence in `wakep` (idle.rs, "Spinning
                // handshake").
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

    /// Steps 1-4 of `find_runnable`'s order, with the P in hand: what this
    /// M can run without stealing or waiting.
    fn find_ready(self: &Arc<Self>, p: &mut P) -> Option<(GPtr, bool)> {
        if p.schedtick % GLOBAL_CHECK_INTERVAL == 0 {
            // tokio's `event_interval`: a busy P polls on the same tick,
            // so a runtime that never runs out of work still sees I/O and
            // fires timers (`sched` module docs, "Who polls"). An idle P
            // polls below anyway.
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
        None
    }

    /// An M without a P, about to go idle: block in the netpoller until an
    /// event, the next timer or a break (Go's step 13). None, at once, when
    /// nobody waits on the netpoller or another M already blocks in it. Like
    /// every wait of an M, it runs detached (`Hooks::detached`).
    fn block_in_netpoll(&self) -> Option<Polled<'_, Waker>> {
        if !self.netpoll.pending() || self.netpoll.blocked() {
            return None;
        }
        self.netpoll.poll(None)
    }

    /// Any queue non-empty (Go's `checkRunqsNoP` plus the global check).
    fn work_anywhere(&self) -> bool {
        self.runq_size.load(Acquire) > 0 || self.allp.iter().any(|s| !s.q.is_empty())
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
                    trace::emit(Kind::Steal, p.id as u64, victim as u64, stolen);
                    return Some(g);
                }
            }
        }
        None
    }

    /// Go's `execute` + the tail of `park_m`/`goyield`/`goexit`.
    fn execute(self: &Arc<Self>, m: &M, g: GPtr, inherit: bool) {
        let mut p = m.p.borrow_mut().take().expect("execute without a P");
        if !inherit {
            p.schedtick = p.schedtick.wrapping_add(1);
        }
        let gen = g.start_running();
        let pid = p.id;
        let traced = trace::span_start();
        let run = |body: &mut Option<BoxBody>| {
            let body = body.as_mut().expect("runnable G without a body");
            m.slot.bump(); // odd: in a step
            m.gosched.set(false);
            self.lend_p(m, p, g.id(), body.may_block());
            if body.blocks() {
                // Go's entersyscallblock: give the P away now, as sysmon's
                // retake would; the step's end then finds it gone.
                if let Some(p) = self.take_lent(&self.allp[pid]) {
                    self.handoffp(p);
                }
            }
            let mut cx = Cx {
                sched: self,
                g,
                gen,
                reason: WaitReason::Other,
            };
            // Only a Rust panic may reach this catch; a forced unwind parks
            // the thread at the guard first ("Foreign unwinds").
            let step = catch_unwind(AssertUnwindSafe(|| {
                let guard = ParkOnForcedUnwind::arm();
                let step = body.step(&mut cx);
                guard.disarm();
                step
            }))
            .unwrap_or_else(|_| {
                eprintln!("gmprt: G {} panicked; it is treated as finished", g.id());
                Step::Done
            });
            if step == Step::Park {
                // Before `commit_park`, whose Release publishes it.
                g.set_park_info(cx.reason);
            }
            (step, cx.reason)
        };
        // SAFETY: we popped `g` from a run queue and made it RUNNING: this M
        // owns it until it yields, parks or finishes below.
        let (step, reason) = unsafe { g.with_body(run) };
        if traced.is_some() {
            let end = match step {
                Step::Yield => StepEnd::Yield,
                Step::Park => StepEnd::Park,
                Step::Done => StepEnd::Done,
            };
            trace::emit_since(Kind::Step, traced, g.id(), trace::step_c(pid, end, reason));
        }
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
                // Go's goyield (local tail), unless Gs wait in the global
                // queue and the step asked for Gosched (`Sched::gosched`) or
                // the yielder would be alone in its local queue: then
                // Gosched (global tail), or a G yielding in a loop would run
                // again at once and the global queue would get one G per 61
                // ticks. With the global queue empty the two tails are the
                // same place in line, and the local one takes no lock. (A
                // stale `runq_size` only picks the other tail: globalq.rs's
                // invariants.)
                let alone = m.p.borrow().as_ref().is_none_or(|p| p.runq.is_empty());
                let gosched = m.gosched.replace(false);
                if retaken || ((gosched || alone) && self.runq_size.load(Acquire) > 0) {
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
                let body = unsafe { g.with_body(Option::take) };
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
            Some(p) => {
                p.runq.push(g, next, &overflow);
            }
            None => overflow.push_batch(&mut std::iter::once(g)),
        }
    }

    /// Owner M: pushes the global batch parked in `p.batch` onto the local
    /// queue, once `Sched::lock` is dropped (`globrunqget_locked`).
    pub(super) fn runqput_batch(&self, p: &mut P) {
        let overflow = GlobalOverflow(self);
        for g in p.batch.drain(..) {
            p.runq.push(g, false, &overflow);
        }
    }

    /// Go's `ready`: make `g` (already `RUNNABLE`) run. Local runnext when
    /// called on an M of ours with a P, else the global queue; then `wakep`,
    /// unless `g` went into this M's empty runnext ("A runnext G wakes no
    /// M", module docs).
    pub(crate) fn ready(self: &Arc<Self>, g: GPtr, next: bool) {
        if trace::enabled() {
            // Relaxed: this M's own store in `lend_p`; the G it last ran.
            let by = self.with_current(|m| m.slot.g.load(Relaxed)).unwrap_or(0);
            trace::emit(Kind::Ready, g.id(), by, 0);
        }
        let overflow = GlobalOverflow(self);
        match self.with_current_p(|p| p.runq.push(g, next, &overflow)) {
            // Only runnext changed: this M runs `g` as soon as the current
            // step ends, and no other M could take it sooner.
            Some(false) => {}
            Some(true) => self.wakep(),
            None => {
                overflow.push_batch(&mut std::iter::once(g));
                self.wakep();
            }
        }
    }

    /// From inside a G's step: if the step ends in [`Step::Yield`] while Gs
    /// wait in the global queue, the G goes to its tail (Go's `Gosched`),
    /// not to its P's local one (`goyield`). It then runs behind the Gs readied
    /// meanwhile by an M without a P, which wait there: what an M blocked
    /// in the netpoller found. A G that batches what other Gs report (an
    /// event loop taking what its fds' watchers posted) yields so, or a P
    /// kept busy by its local Gs would leave those to the 61st-tick check.
    /// No effect outside a step of this runtime.
    pub fn gosched(&self) {
        self.with_current(|m| m.gosched.set(true));
    }

    /// Runs `f` with the calling thread's M, if it is an M of this runtime.
    /// Any thread (None off an M).
    pub(super) fn with_current<R>(&self, f: impl FnOnce(&M) -> R) -> Option<R> {
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
    pub(super) fn with_current_p<R>(&self, f: impl FnOnce(&mut P) -> R) -> Option<R> {
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
}

/// Whether `g`'s steps run embedder code (`Body::embedded`).
fn embedded(g: GPtr) -> bool {
    // SAFETY: popped from a run queue by this M, which owns it until the
    // step it is about to run ends.
    unsafe { g.with_body(|b| b.as_ref().is_none_or(|b| b.embedded())) }
}

/// Parks the calling thread for good if an unwind that is not a Rust panic
/// (a forced unwind: `pthread_exit`, thread cancellation) passes through
/// it; see the module docs, "Foreign unwinds". Arm it around a call that
/// may end in one, and disarm it when the call returns.
///
/// `std::thread::panicking()` tells the two kinds apart: it counts Rust
/// panics only. A Rust panic unwinds on past the guard, to whatever
/// catches it.
#[must_use = "the guard protects only while it lives: disarm it after the call"]
pub struct ParkOnForcedUnwind(());

impl ParkOnForcedUnwind {
    #[inline]
    pub fn arm() -> ParkOnForcedUnwind {
        ParkOnForcedUnwind(())
    }

    /// The call returned: forget the guard (its drop is the unwind path).
    #[inline]
    pub fn disarm(self) {
        std::mem::forget(self);
    }
}

impl Drop for ParkOnForcedUnwind {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        // Reached only by a forced unwind. Catching it aborts, and letting
        // it go on runs destructors that need what the unwind tore down;
        // the thread was meant to end, so it ends here, asleep.
        loop {
            std::thread::park();
        }
    }
}

impl Sched {
    /// The steps in progress now, as `(G id, thread)`: one per M inside
    /// `Body::step`, with the M's OS thread (`pthread_self`, which Python
    /// reports as `threading.get_ident()`). Any thread; a snapshot (a step
    /// may end right after).
    pub fn running_steps(&self) -> Vec<(u64, u64)> {
        lock(&self.allm)
            .iter()
            // Acquire: pairs with the Release in `MSlot::bump`; `g` is
            // published by it (see `MSlot::g`).
            .filter(|m| m.steps.load(Acquire) % 2 == 1)
            .map(|m| (m.g.load(Relaxed), m.thread))
            .collect()
    }
}

impl M {
    /// Takes what the M was woken with: true to run with the P, false to
    /// exit.
    pub(super) fn take_handoff(&self, h: Handoff<Box<P>>) -> bool {
        // An idle M is never counted in `nmspinning`: overwriting the flag
        // here would leak the count.
        debug_assert!(!self.spinning.get(), "an idle M still spinning");
        match h {
            Handoff::Run { p, spinning } => {
                *self.p.borrow_mut() = Some(p);
                self.spinning.set(spinning);
                true
            }
            Handoff::Exit => false,
        }
    }

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

/// After `fork()`, in the child: the calling thread is no M any more (see
/// [`Sched::after_fork_child`]).
pub(super) fn forget_current_m() {
    CURRENT.with(|c| c.set(ptr::null()));
}

#[cfg(all(test, not(loom), target_os = "linux"))]
mod tests {
    use super::ParkOnForcedUnwind;
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    use std::sync::Arc;
    use std::time::Duration;

    extern "C-unwind" {
        // libc declares it "C"; glibc's pthread_exit is a forced unwind,
        // which only a "C-unwind" call may let out.
        fn pthread_exit(retval: *mut std::ffi::c_void);
    }

    #[test]
    fn a_rust_panic_passes_the_guard() {
        let r = catch_unwind(AssertUnwindSafe(|| {
            let guard = ParkOnForcedUnwind::arm();
            if std::hint::black_box(true) {
                panic!("boom");
            }
            guard.disarm();
        }));
        assert!(r.is_err());
    }

    #[test]
    fn a_forced_unwind_parks_the_thread_instead_of_reaching_the_catch() {
        // Without the guard, std's catch_unwind (around every thread's
        // main) meets the forced unwind and the process aborts ("FATAL:
        // exception not rethrown"); with it the thread sleeps for good
        // and no destructor outside the guard runs.
        struct Outer(Arc<AtomicBool>);
        impl Drop for Outer {
            fn drop(&mut self) {
                self.0.store(true, SeqCst);
            }
        }
        let outer_dropped = Arc::new(AtomicBool::new(false));
        let flag = outer_dropped.clone();
        let h = std::thread::spawn(move || {
            let _outer = Outer(flag);
            let guard = ParkOnForcedUnwind::arm();
            // SAFETY: ends this thread by a forced unwind, which the guard
            // stops; nothing on this thread's stack is used afterwards.
            unsafe { pthread_exit(std::ptr::null_mut()) };
            guard.disarm();
        });
        std::thread::sleep(Duration::from_millis(200));
        assert!(!h.is_finished(), "the thread should sleep in the guard");
        assert!(
            !outer_dropped.load(SeqCst),
            "the unwind went past the guard"
        );
        // The parked thread is left behind; the test process exits anyway.
        std::mem::forget(h);
    }
}
