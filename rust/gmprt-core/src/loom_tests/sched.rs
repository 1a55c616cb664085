//! Models of the whole scheduler (`Sched` with 2 Ps, its Ms as loom threads):
//! a G readied while the last spinning M gives up its P and goes to sleep
//! must still run ("Spinning handshake", `sched/idle.rs`).
//!
//! The model's main thread waits on a loom `Condvar` for the Gs to run. If the
//! wakeup were lost, every thread would end up blocked (the Ms asleep on
//! their notes, main on the condvar) and loom would report a deadlock.

use std::time::Duration;

use ::loom::sync::Condvar;

use super::check;
use crate::loom::lock;
use crate::loom::sync::{Arc, Mutex};
use crate::{Body, Config, Cx, NoHooks, Sched, Step, Waker};

/// How many times each G of a model ran a step, with a condvar to wait on.
pub(super) struct Tally {
    runs: Mutex<Vec<u32>>,
    cv: Condvar,
}

impl Tally {
    pub(super) fn new(n: usize) -> Arc<Tally> {
        Arc::new(Tally {
            runs: Mutex::new(vec![0; n]),
            cv: Condvar::new(),
        })
    }

    pub(super) fn ran(&self, i: usize) {
        lock(&self.runs)[i] += 1;
        self.cv.notify_all();
    }

    /// Blocks until `done` holds for the step counts.
    pub(super) fn wait(&self, done: impl Fn(&[u32]) -> bool) {
        let mut runs = lock(&self.runs);
        while !done(&runs) {
            runs = self.cv.wait(runs).unwrap();
        }
    }

    pub(super) fn snapshot(&self) -> Vec<u32> {
        lock(&self.runs).clone()
    }
}

pub(super) struct FnBody<F>(pub(super) F);
impl<F: FnMut(&mut Cx<'_>) -> Step + Send + 'static> Body for FnBody<F> {
    fn step(&mut self, cx: &mut Cx<'_>) -> Step {
        (self.0)(cx)
    }
}

/// Two Ps. `max_threads` above `procs` because an M that has released its P
/// but not yet joined the idle list can make `wakep` start one more M (at
/// most 4 Ms in these models, which with the main thread is loom's limit).
fn two_procs(max_threads: usize) -> Arc<Sched> {
    Sched::new(
        Config {
            procs: 2,
            max_threads,
            ..Config::default()
        },
        Box::new(NoHooks),
    )
}

pub(super) fn shutdown(s: Arc<Sched>) {
    s.stop();
    assert!(s.join(Duration::from_secs(10)), "an M did not exit");
    assert_eq!(s.stats().goroutines, 0);
}

/// Spawns G0 from a foreign thread, waits for it to run, then spawns G1
/// while G0's M (and the M it started) look for work, give up their Ps and
/// go to sleep. G1 must run.
fn spawn_after_first_ran(max_threads: usize) {
    let s = two_procs(max_threads);
    let tally = Tally::new(2);
    for i in 0..2 {
        let t = tally.clone();
        s.spawn(Box::new(FnBody(move |_: &mut Cx<'_>| {
            t.ran(i);
            Step::Done
        })))
        .unwrap();
        tally.wait(|r| r[i] == 1);
    }
    shutdown(s);
    assert_eq!(tally.snapshot(), [1, 1], "each G runs exactly once");
}

/// G0 runs; right after it, its M finds nothing, gives up its P and parks.
/// The main thread spawns G1 at the same time (global queue, then `wakep`).
/// Either the last spinner's re-check sees G1 or `wakep` sees the idle P and
/// no spinner. (Preemption bound 2, about 30 s in release: 3 did not finish
/// in 6 minutes.)
#[test]
fn spawn_while_last_spinner_parks() {
    check("sched::spawn_while_last_spinner_parks", Some(2), || {
        spawn_after_first_ran(4)
    });
}

/// BUG, reported rather than fixed: the same model with `max_threads ==
/// procs` deadlocks (G1 never runs). Interleaving loom finds:
///
/// 1. main spawns G0; `wakep` starts M1 (spinning) on P0.
/// 2. M1 takes G0, `reset_spinning` → `wakep` starts M2 (spinning) on P1;
///    M1 runs G0.
/// 3. M1 finds nothing and releases P0 (`pidleput` in `find_runnable`); M2
///    finds nothing, releases P1, drops `nmspinning` to 0 and re-checks:
///    nothing yet. Neither has reached `stopm`, so `midle` is empty.
/// 4. main spawns G1 into the global queue; `wakep` sees an idle P and no
///    spinner, takes P0, finds no idle M, and `newm` fails at the thread cap:
///    it used to call `Hooks::fatal` at once, and it puts P0 back on the
///    idle list.
/// 5. M1 and M2 run `stopm`. Before the fix they slept, and nobody looked
///    at the global queue again: G1 was stranded.
///
/// Two Ms exist and both are about to be idle, so the cap was hit
/// spuriously and G1 was lost. Fixed: `stopm` now re-checks, under the lock,
/// for global work (or an idle P left with local work) that arrived while
/// no idle M was listed, and a failed `newm` is no longer fatal by itself
/// (sysmon decides, only if work stays stranded).
#[test]
fn issue_spawn_at_thread_cap() {
    check("sched::spawn_at_thread_cap", Some(2), || {
        spawn_after_first_ran(2)
    });
}

/// Spawns G0 of the wake models: its first step registers its waker in
/// `slot` (before the park commits: the driver's job) and parks, its
/// second finishes; each counts itself in `tally[0]`.
fn spawn_park_once(s: &Arc<Sched>, tally: &Arc<Tally>, slot: &Arc<Mutex<Option<Waker>>>) {
    let (t, sl) = (tally.clone(), slot.clone());
    let mut parked = false;
    s.spawn(Box::new(FnBody(move |cx: &mut Cx<'_>| {
        if parked {
            t.ran(0);
            return Step::Done;
        }
        parked = true;
        *lock(&sl) = Some(cx.waker());
        t.ran(0);
        Step::Park
    })))
    .unwrap();
}

/// A G registers its waker and parks; the main thread wakes it at once, so
/// the wake races the M's `commit_park` (landing as `NOTIFIED` or readying a
/// parked G) and then the M's give-up-and-sleep path. The G must run its
/// second step exactly once, and a second wake of the same park is stale.
/// (Preemption bound 2, about 40 s in release.)
#[test]
fn wake_while_last_spinner_parks() {
    check("sched::wake_while_last_spinner_parks", Some(2), || {
        let s = two_procs(4);
        let tally = Tally::new(1);
        let slot: Arc<Mutex<Option<Waker>>> = Arc::new(Mutex::new(None));

        spawn_park_once(&s, &tally, &slot);

        tally.wait(|r| r[0] == 1);
        let waker = lock(&slot).take().expect("the G registered its waker");
        assert!(waker.wake(), "the first wake of a park readies the G");
        assert!(!waker.wake(), "a second wake of the same park is stale");
        drop(waker);
        tally.wait(|r| r[0] == 2);
        shutdown(s);
        assert_eq!(tally.snapshot(), [2], "two steps, each exactly once");
    });
}

/// G1 wakes the parked G0 from inside its own step, as a channel hand-off
/// does: G0 lands in the runnext slot of G1's M and `ready` wakes no M ("A
/// runnext G wakes no M", `sched/worker.rs`); or, if G0's M has not
/// committed the park yet, that M requeues G0 itself. G1 then finishes
/// while the other M spins, gives up its P and sleeps. G0 must run its
/// second step, exactly once, with nobody woken for it. (Preemption bound
/// 2, like the models above: about 35 s in release.)
#[test]
fn runnext_handoff_wakes_no_m() {
    check("sched::runnext_handoff_wakes_no_m", Some(2), || {
        let s = two_procs(4);
        let tally = Tally::new(2);
        let slot: Arc<Mutex<Option<Waker>>> = Arc::new(Mutex::new(None));

        spawn_park_once(&s, &tally, &slot);
        tally.wait(|r| r[0] == 1);

        let (t, sl) = (tally.clone(), slot.clone());
        s.spawn(Box::new(FnBody(move |_cx: &mut Cx<'_>| {
            let waker = lock(&sl).take().expect("G0 registered its waker");
            assert!(waker.wake(), "the first wake of a park readies the G");
            t.ran(1);
            Step::Done
        })))
        .unwrap();

        tally.wait(|r| r[0] == 2 && r[1] == 1);
        shutdown(s);
        assert_eq!(tally.snapshot(), [2, 1], "each step exactly once");
    });
}
