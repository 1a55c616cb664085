//! deadlock: Go's `checkdead` (every M idle with Gs alive and nothing that
//! could wake them), and the check sysmon makes after a failed `newm` for
//! work that no M is left to run.
//!
//! # Who calls what
//!
//! - `dead`: an M in `stopm`, under `Sched::lock`, as it joins the idle
//!   list (Go calls `checkdead` from `mput`); it then signals the embedder
//!   ([`Hooks::deadlock`](crate::Hooks::deadlock)). Also `confirm_deadlock`.
//! - `confirm_deadlock`: the embedder, off the M, after that signal.
//! - `work_stranded`: sysmon (`sysmon::check_thread_cap`).
//!
//! # Why two looks
//!
//! `dead` reads counters that other threads change without the scheduler
//! lock (`ngs` in `spawn` and at a G's end, the netpoller's waiters and
//! timers), one load after another, so one reading is a snapshot that can
//! be wrong: a foreign thread may be between `spawn`'s count and its
//! enqueue. `confirm_deadlock` therefore looks twice, a settle time apart,
//! and also requires that no step ran and no G was spawned in between.
//! Nothing here writes scheduler state.

use std::time::Duration;

use super::Sched;
use crate::loom::lock;
use crate::loom::sync::atomic::Ordering::*;

impl Sched {
    /// Go's `checkdead` condition: every M idle (or asleep on a runtime
    /// primitive), nobody in a blocking call,
    /// every P idle with empty queues, Gs alive, and no G waiting on the
    /// netpoller or a timer (those can be woken from outside).
    pub(super) fn dead(&self) -> bool {
        // An M blocked in the netpoller counts as idle only because the
        // counters must read zero too: with no waiter and no timer only a
        // break can end its wait (`sched` module docs, "Who polls").
        let polling = usize::from(self.netpoll.blocked());
        // An M asleep in a sync G's wait on a runtime primitive with no
        // deadline is as stuck as a parked G (`Sched::blocking_asleep`).
        let asleep = self.nasleep.load(SeqCst);
        self.ngs.load(SeqCst) > 0
            && self.nmidle.load(SeqCst) + polling + asleep == self.mcount.load(SeqCst)
            && self.nblocking.load(SeqCst) == 0
            && self.npwait.load(SeqCst) == 0
            && self.npidle.load(SeqCst) == self.procs
            && self.runq_size.load(SeqCst) == 0
            && self.allp.iter().all(|s| s.q.is_empty())
            && self.netpoll.waiters() == 0
            && self.netpoll.timers() == 0
    }

    /// After [`Hooks::deadlock`](crate::Hooks::deadlock): whether the runtime really is deadlocked.
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

    /// Work is queued and a P is idle, yet no M is idle to run it: what a
    /// failed `newm` leaves behind if no M comes back.
    pub(crate) fn work_stranded(&self) -> bool {
        let l = lock(&self.lock);
        let queued = !l.runq.is_empty() || l.pidle.iter().any(|p| !p.runq.is_empty());
        queued && !l.pidle.is_empty() && l.midle.is_empty()
    }
}
