//! idle: idle Ps and idle Ms. Starting an M for work (`wakep`, `startm`,
//! `newm`, `start_idle`), putting a P or an M to sleep (`pidleput`,
//! `stopm`), retiring an M idle past its keep-alive (`idle_wait`), handing a P to an M back from a blocking call
//! (`give_p_to_waiter`), and the spinning handshake that keeps the two
//! sides from losing a wakeup (Go's `wakep`, `startm`, `newm`, `stopm`,
//! `pidleput`, `resetspinning`).
//!
//! # Who touches what
//!
//! - `Locked::pidle`, `midle`, `pwait`: under `Sched::lock`, from any
//!   thread that readies work or releases a P. `npidle`, `nmidle` and
//!   `npwait` are their lengths, changed under the lock together with the
//!   list and read anywhere without it.
//! - `nmspinning`: any thread, SeqCst throughout (the handshake below).
//! - `mcount`, `live_ms`, `threads`: `newm`, on whichever thread starts the
//!   M; `mstart` (`worker.rs`) counts the M out when it exits, except that
//!   a retiring M leaves `mcount` under `Sched::lock` ("Retiring idle
//!   Ms").
//! - `thread_cap_hit`: set by a `newm` that could not create an M; sysmon
//!   reads and clears it (`sysmon::check_thread_cap`).
//! - `M::p` and `M::spinning`: the M's own thread (`stopm`,
//!   `give_p_to_waiter`, `reset_spinning`).
//!
//! # Invariants
//!
//! - An idle P is on `pidle`, or `pidleput` hands it straight to the
//!   longest waiter on `pwait` (whose G is mid-step and needs a P to
//!   finish it). `npidle == pidle.len()` whenever `Sched::lock` is free.
//! - A P travels to an M only through the M's note (`Handoff::Run`), even
//!   for a brand-new M, so a failed `newm` can take the P straight back.
//! - `nmspinning` counts spinning Ms, including one not yet running:
//!   `wakep` (and `handoffp`) raise it before starting the M, which
//!   inherits it through `Handoff::Run { spinning: true }`; a failed
//!   `newm` gives it back.
//!
//! # Retiring idle Ms
//!
//! Go never frees an M, and tokio keeps its workers; but each G blocked in
//! a call holds an M, so a burst of such Gs leaves as many idle threads
//! behind. An M on `midle` therefore sleeps with a deadline,
//! `Config::idle_keepalive` (`api::DEFAULT_IDLE_KEEPALIVE`, tokio's
//! blocking-pool figure), and when it passes with nothing handed over:
//!
//! 1. The M takes `Sched::lock` and looks for its own note on `midle`.
//! 2. *Not there:* someone popped it (`startm` with a P, `stop` with
//!    `Exit`) under the lock and wakes the note after dropping the lock.
//!    The handoff is in the slot or on its way, so the M sleeps again,
//!    without a deadline, and takes it: a P handed to a timing-out M is
//!    never lost (loom: `loom_tests::idle`).
//! 3. *There, and `mcount > procs`:* the M removes its note and counts
//!    itself out of `nmidle` and `mcount`, all under the lock, so no
//!    `startm` can pop it any more and `dead` never sees one count without
//!    the other; then its thread exits, removing (detaching) its own
//!    `JoinHandle` from `Sched::threads` so the thread's resources go with
//!    it.
//! 4. *There, and `mcount <= procs`:* it stays listed and sleeps without a
//!    deadline. `procs` threads are kept, as tokio keeps its workers, so
//!    the runtime keeps an M ready per P.
//!
//! `midle` is a stack (`startm` pops the last pushed), so the Ms reused are
//! the recently idle ones and the long-idle ones at the bottom age out.
//! Ms waiting on `pwait` are mid-step and sleep without a deadline.
//!
//! # Spinning handshake (Go's "Worker thread parking/unparking")
//!
//! The submitter's half is [`Sched::wakep`] below; the spinner's half is
//! the end of `find_runnable` (`worker.rs`), which cites this section.
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

use super::worker::M;
use super::{Locked, Sched, P};
use crate::loom::sync::atomic::{fence, Ordering::*};
use crate::loom::sync::Arc;
use crate::loom::{lock, thread};
use crate::park::{Handoff, Note};

impl Sched {
    /// Go's `wakep` (1.19 form): start one more spinning M if a P is idle and
    /// nobody is spinning. The submitter half of the spinning handshake.
    pub(super) fn wakep(self: &Arc<Self>) {
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
    pub(super) fn startm(
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
            // Held across the spawn: the new M may retire before we get
            // back here, and it looks for its handle under this lock.
            let mut threads = lock(&self.threads);
            let spawned = thread::Builder::new()
                .name(format!("gmprt-m{}", self.mcount.load(Relaxed)))
                .spawn(move || sched.mstart(m_note));
            match spawned {
                Ok(h) => {
                    threads.push(h);
                    return;
                }
                Err(e) => {
                    drop(threads);
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
        // poller takes it (it returns, finds the idle P and the work;
        // `sched` module docs, "Who polls").
        self.netpoll.wake();
    }

    /// Starts up to `n` Ms on idle Ps, for Gs just put on the global queue
    /// (the tail of Go's `injectglist`).
    pub(super) fn start_idle(self: &Arc<Self>, n: usize) {
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

    /// Go's `pidleput`, except that an M waiting to finish a blocking call
    /// gets the P directly.
    pub(super) fn pidleput(&self, l: &mut Locked, p: Box<P>) {
        if let Some(note) = l.pwait.pop_front() {
            self.npwait.fetch_sub(1, Release);
            note.wakeup(Handoff::Run { p, spinning: false });
            return;
        }
        l.pidle.push(p);
        self.npidle.fetch_add(1, SeqCst);
    }

    /// Go's `stopm`: join the idle list and sleep until handed a P.
    pub(super) fn stopm(&self, m: &M) -> bool {
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
        self.park_idle_m(m)
    }

    /// The sleep of an M on `midle` ("Retiring idle Ms"): true when handed
    /// a P, false when told to exit or when it retired (`M::retired` says
    /// which; a retired M has already counted itself out of `mcount`).
    fn park_idle_m(&self, m: &M) -> bool {
        // The whole wait, the retirement decision included, runs detached
        // (`Hooks::detached`; Python: without the GIL), like every other
        // wait of an M.
        match self.idle_wait(m) {
            Some(h) => m.take_handoff(h),
            None => {
                m.retired.set(true);
                false
            }
        }
    }

    /// Waits on the M's note for a handoff; None if the M retired instead.
    fn idle_wait(&self, m: &M) -> Option<Handoff<Box<P>>> {
        if let Some(h) = m.note.sleep_timeout(self.idle_keepalive) {
            return Some(h);
        }
        let mut l = lock(&self.lock);
        let Some(i) = l.midle.iter().position(|n| Arc::ptr_eq(n, &m.note)) else {
            // Popped meanwhile (`startm`, `stop`): the popper wakes us after
            // dropping the lock, so the handoff is in the slot or on its
            // way. It may carry a P: take it.
            drop(l);
            return Some(m.note.sleep());
        };
        // SeqCst: `mcount` is read with SeqCst by `dead` (deadlock.rs).
        if self.mcount.load(SeqCst) <= self.procs {
            // Needed. While we stay listed no M is created (`startm` takes
            // a listed M before it calls `newm`), so `mcount` can only fall
            // and this answer cannot change: sleep without a deadline.
            drop(l);
            return Some(m.note.sleep());
        }
        // Retire: off the list and out of the count in one critical
        // section, so nobody can pop us any more, and `dead` (which wants
        // `nmidle + polling == mcount`) never sees one without the other.
        l.midle.remove(i);
        self.nmidle.fetch_sub(1, SeqCst);
        self.mcount.fetch_sub(1, SeqCst);
        None
    }

    /// Hands this M's P to the longest-waiting M back from a blocking call.
    /// False (P kept) if another M served it first.
    pub(super) fn give_p_to_waiter(&self, m: &M) -> bool {
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
    pub(super) fn reset_spinning(self: &Arc<Self>, m: &M) {
        m.spinning.set(false);
        let prev = self.nmspinning.fetch_sub(1, SeqCst);
        debug_assert!(prev > 0, "nmspinning underflow");
        self.wakep();
    }
}
