//! sysmon's long-step report names a G only when the G's own thread ran
//! the step that long (its CPU time), not when the thread waited ("Long
//! steps", `sysmon`).

mod common;

use std::sync::atomic::{AtomicBool, Ordering::*};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{body, wait_until};
use gmprt_core::cpuclock::CpuClock;
use gmprt_core::sysmon::LONG_STEP;
use gmprt_core::{Config, Hooks, Sched, Step};

/// Records every long-step report: (G, held, ran).
#[derive(Default)]
struct Reports(Mutex<Vec<(u64, Duration, Duration)>>);

struct Recording(Arc<Reports>);

impl Hooks for Recording {
    fn long_step(&self, g: u64, _thread: u64, held: Duration, ran: Duration) {
        self.0 .0.lock().unwrap().push((g, held, ran));
    }
}

fn sched() -> (Arc<Sched>, Arc<Reports>) {
    let reports = Arc::new(Reports::default());
    let s = Sched::new(
        Config {
            procs: 1,
            ..Config::default()
        },
        Box::new(Recording(reports.clone())),
    );
    (s, reports)
}

/// Runs one G whose single step is `f`, waits for it, stops the runtime.
fn run_one(s: &Arc<Sched>, f: impl FnOnce() + Send + 'static) -> u64 {
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let mut f = Some(f);
    let id = s
        .spawn(body(move |_| {
            (f.take().expect("one step"))();
            d.store(true, Release);
            Step::Done
        }))
        .expect("spawn");
    // Acquire: pairs with the G's Release store.
    wait_until(s, "the G", || done.load(Acquire));
    id
}

fn finish(s: Arc<Sched>) {
    s.stop();
    assert!(s.join(common::DEADLINE), "an M did not exit");
}

/// A step that waits (here sleeping, like a thread waiting for the GIL
/// another thread holds) lasts three times `LONG_STEP` without running:
/// not reported. Before, any step past `LONG_STEP` of wall time was.
#[test]
fn a_step_whose_thread_waits_is_not_reported() {
    if CpuClock::current().is_none() {
        return; // no thread CPU clock: sysmon falls back to wall time
    }
    let (s, reports) = sched();
    run_one(&s, || thread::sleep(LONG_STEP * 3));
    finish(s);
    assert_eq!(
        *reports.0.lock().unwrap(),
        [],
        "a waiting step was reported"
    );
}

/// A step that computes until it is reported (bounded) is reported once,
/// naming its G, with at least `LONG_STEP` of CPU time.
#[test]
fn a_step_whose_thread_runs_is_reported_once() {
    let (s, reports) = sched();
    let r = reports.clone();
    let id = run_one(&s, move || {
        let deadline = Instant::now() + common::DEADLINE;
        while r.0.lock().unwrap().is_empty() && Instant::now() < deadline {
            for _ in 0..10_000 {
                std::hint::spin_loop();
            }
        }
        // Keep running a while after the report: still reported once.
        let more = Instant::now() + LONG_STEP;
        while Instant::now() < more {
            std::hint::spin_loop();
        }
    });
    finish(s);
    let got = reports.0.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    let (g, held, ran) = got[0];
    assert_eq!(g, id);
    assert!(ran >= LONG_STEP && held >= ran, "{got:?}");
}

/// At shutdown, a step still running on the CPU and one blocked in a call
/// are told apart (`Sched::stuck_steps`), each naming its G.
#[test]
fn stuck_steps_tell_running_from_blocked() {
    if CpuClock::current().is_none() {
        return; // no thread CPU clock: nothing to tell them apart by
    }
    let s = Sched::new(
        Config {
            procs: 2,
            ..Config::default()
        },
        Box::new(gmprt_core::NoHooks),
    );
    let release = Arc::new(AtomicBool::new(false));
    let started = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut ids = Vec::new();
    for spin in [true, false] {
        let (release, started) = (release.clone(), started.clone());
        let deadline = Instant::now() + common::DEADLINE;
        let id = s
            .spawn(body(move |_| {
                started.fetch_add(1, Release);
                // Bounded either way by the test's deadline.
                while !release.load(Acquire) && Instant::now() < deadline {
                    if spin {
                        std::hint::spin_loop();
                    } else {
                        thread::sleep(Duration::from_millis(1));
                    }
                }
                Step::Done
            }))
            .unwrap();
        ids.push(id);
    }
    // Acquire: pairs with each G's Release increment.
    wait_until(&s, "both Gs to start", || started.load(Acquire) == 2);
    s.stop();
    assert!(
        !s.join(Duration::from_millis(50)),
        "the Gs cannot have ended"
    );
    let stuck = s.stuck_steps(Duration::from_millis(100));
    // Release: pairs with the Gs' Acquire loads.
    release.store(true, Release);
    assert!(s.join(common::DEADLINE), "an M did not exit");
    let running = |g| {
        stuck
            .iter()
            .find(|st| st.g == g)
            .and_then(|st| st.running())
    };
    assert_eq!(running(ids[0]), Some(true), "the spinner: {stuck:?}");
    assert_eq!(running(ids[1]), Some(false), "the sleeper: {stuck:?}");
}
