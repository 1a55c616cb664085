//! Idle Ms: none stays counted as spinning, so work readied later still
//! wakes one; those beyond `procs` exit after `Config::idle_keepalive`
//! ("Retiring idle Ms", `sched/idle.rs`), and no G is lost or run twice
//! while Ms time out as new work hands them Ps.

mod common;

use std::sync::atomic::{AtomicU32, Ordering::*};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{go, new_sched, wait_until};
use gmprt_core::{Config, NoHooks, Sched, Step};

fn sched(procs: usize, keepalive: Duration) -> Arc<Sched> {
    Sched::new(
        Config {
            procs,
            idle_keepalive: keepalive,
            ..Config::default()
        },
        Box::new(NoHooks),
    )
}

fn finish(s: Arc<Sched>) {
    s.stop();
    assert!(s.join(common::DEADLINE), "an M did not exit");
}

/// Gs whose blocking call returns at once: each hands its P to a new
/// spinning M (`handoffp`), which may find the G's M already waiting for
/// the P and give it straight back. That M must stop spinning as it goes
/// idle: a leaked `nmspinning` makes every later `wakep` skip. Once all is
/// idle the count must read 0, and a G spawned afterwards from a foreign
/// thread must run.
#[test]
fn no_idle_m_stays_spinning_after_blocking_calls() {
    for procs in [1, 2] {
        let s = new_sched(procs);
        let done = Arc::new(AtomicU32::new(0));
        const N: u32 = 2000;
        for _ in 0..N {
            let done = done.clone();
            go(&s, move |cx| {
                cx.sched().blocking(|| ());
                done.fetch_add(1, Release);
                Step::Done
            });
        }
        // Acquire: pairs with each G's Release increment.
        wait_until(&s, "every G", || done.load(Acquire) == N);
        wait_until(&s, "the spinning count to drop to 0", || {
            let st = s.stats();
            st.spinning == 0 && st.idle_procs == procs
        });
        for round in 0..100 {
            let before = done.load(Acquire);
            let d = done.clone();
            go(&s, move |_| {
                d.fetch_add(1, Release);
                Step::Done
            });
            wait_until(&s, &format!("the G of round {round}"), || {
                done.load(Acquire) == before + 1
            });
            thread::sleep(Duration::from_micros(200));
        }
        finish(s);
    }
}

/// Spawns `n` Gs that each block in a call for `block` (Go's
/// `entersyscallblock`: each hands its P to another M, so the burst needs
/// about one M per G), waits for them all and returns the most Ms seen.
fn burst(s: &Arc<Sched>, n: usize, block: Duration, runs: &Arc<Vec<AtomicU32>>) -> usize {
    let done = Arc::new(AtomicU32::new(0));
    for i in 0..n {
        let (done, runs) = (done.clone(), runs.clone());
        go(s, move |cx| {
            cx.sched().blocking(|| thread::sleep(block));
            runs[i].fetch_add(1, Relaxed);
            done.fetch_add(1, Release);
            Step::Done
        });
    }
    let peak = std::cell::Cell::new(0);
    wait_until(s, "the burst to finish", || {
        peak.set(peak.get().max(s.stats().threads));
        // Acquire: pairs with each G's Release increment.
        done.load(Acquire) as usize == n
    });
    peak.get()
}

/// The shape, scaled down: a burst of Gs blocked in calls leaves an
/// M each; once idle past the keep-alive they exit until `procs` remain,
/// and a second burst gets new ones and still runs every G once. Before
/// idle Ms retired, the thread count stayed at the burst's peak (about 60
/// for 64 Gs) until `stop`.
#[test]
fn idle_ms_beyond_procs_exit_after_the_keepalive() {
    for procs in [1, 2] {
        let s = sched(procs, Duration::from_millis(50));
        let n = 64;
        let runs: Arc<Vec<AtomicU32>> = Arc::new((0..2 * n).map(|_| AtomicU32::new(0)).collect());
        let peak = burst(&s, n, Duration::from_millis(20), &runs);
        assert!(peak > 4 * procs, "the burst made only {peak} Ms");
        wait_until(&s, "the idle Ms to retire", || s.stats().threads <= procs);
        let st = s.stats();
        assert!(st.idle_threads <= st.threads, "{st:?}");

        // The Ms left still serve, and new ones are made for a new burst.
        let runs2 = Arc::new((0..n).map(|_| AtomicU32::new(0)).collect::<Vec<_>>());
        burst(&s, n, Duration::from_millis(5), &runs2);
        wait_until(&s, "the idle Ms to retire again", || {
            s.stats().threads <= procs
        });
        finish(s);
        for (i, r) in runs.iter().take(n).chain(runs2.iter()).enumerate() {
            assert_eq!(r.load(Relaxed), 1, "G #{i} ran {} times", r.load(Relaxed));
        }
    }
}

/// With `procs` Ms or fewer nobody retires, however long they idle.
#[test]
fn procs_ms_stay_however_long_they_idle() {
    let s = sched(2, Duration::ZERO);
    let done = Arc::new(AtomicU32::new(0));
    for _ in 0..2 {
        let done = done.clone();
        go(&s, move |_| {
            done.fetch_add(1, Release);
            Step::Done
        });
    }
    wait_until(&s, "both Gs", || done.load(Acquire) == 2);
    let threads = s.stats().threads;
    thread::sleep(Duration::from_millis(50));
    assert_eq!(s.stats().threads, threads, "an M needed for a P retired");
    finish(s);
}

/// Ms retire as fast as they go idle (keep-alive 0 and 1 ms) while rounds
/// of blocking and yielding Gs keep handing Ps to Ms, so timeouts race
/// `startm`'s handoffs thousands of times: every G runs every step exactly
/// once and the runtime never strands one.
#[test]
fn timeouts_race_handoffs_exactly_once() {
    for (procs, keepalive_us) in [(1, 0), (2, 0), (2, 1000), (4, 0)] {
        let s = sched(procs, Duration::from_micros(keepalive_us));
        const ROUNDS: usize = 200;
        const PER_ROUND: usize = 8;
        const YIELDS: u32 = 3;
        let steps: Arc<Vec<AtomicU32>> =
            Arc::new((0..ROUNDS * PER_ROUND).map(|_| AtomicU32::new(0)).collect());
        let done = Arc::new(AtomicU32::new(0));
        for round in 0..ROUNDS {
            for k in 0..PER_ROUND {
                let i = round * PER_ROUND + k;
                let (steps, done) = (steps.clone(), done.clone());
                go(&s, move |cx| {
                    let n = steps[i].fetch_add(1, Relaxed) + 1;
                    if k % 2 == 0 && n == 1 {
                        cx.sched()
                            .blocking(|| thread::sleep(Duration::from_micros(50)));
                    }
                    if n <= YIELDS {
                        return Step::Yield;
                    }
                    done.fetch_add(1, Release);
                    Step::Done
                });
            }
            // Let the Ms run dry and time out before the next round, every
            // few rounds at a different pace.
            thread::sleep(Duration::from_micros(100 * (round % 7) as u64));
        }
        let total = (ROUNDS * PER_ROUND) as u32;
        wait_until(&s, "every G", || done.load(Acquire) == total);
        wait_until(&s, "the idle Ms to retire", || s.stats().threads <= procs);
        finish(s);
        for (i, c) in steps.iter().enumerate() {
            assert_eq!(
                c.load(Relaxed),
                YIELDS + 1,
                "procs {procs}, keep-alive {keepalive_us} µs: G #{i}"
            );
        }
    }
}
