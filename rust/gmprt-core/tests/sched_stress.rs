//! Stress tests of the scheduler with Rust-native Gs, through the public API
//! only. Every test does exact accounting (each G ran exactly the steps it
//! should, no more, no fewer), waits with deadlines (a lost wakeup fails the
//! test with a message instead of hanging it), then stops and joins the
//! runtime.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, AtomicUsize, Ordering::*};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use gmprt_core::{Body, Sched, Step, Waker};

mod common;
use common::{body, new_sched, wait_until, DEADLINE};

/// Waits for every G to have finished, then stops and joins the runtime.
#[track_caller]
fn finish(s: Arc<Sched>) {
    wait_until(&s, "live goroutines to reach 0", || {
        s.stats().goroutines == 0
    });
    s.stop();
    assert!(
        s.join(Duration::from_secs(10)),
        "an M did not exit; stats: {:?}",
        s.stats()
    );
}

/// One counter per G, indexed by G number.
fn counters<T: Default>(n: usize) -> Arc<Vec<T>> {
    Arc::new((0..n).map(|_| T::default()).collect())
}

/// Asserts every counter equals `want`, naming the first few that do not.
#[track_caller]
fn assert_all(what: &str, got: impl Iterator<Item = u32>, want: u32) {
    let bad: Vec<(usize, u32)> = got.enumerate().filter(|(_, n)| *n != want).collect();
    assert!(
        bad.is_empty(),
        "{what}: {} Gs off (want {want} each); first (G, count): {:?}",
        bad.len(),
        &bad[..bad.len().min(10)]
    );
}

fn assert_all_u8(what: &str, c: &[AtomicU8], want: u32) {
    assert_all(what, c.iter().map(|a| u32::from(a.load(Relaxed))), want);
}

fn assert_all_u32(what: &str, c: &[AtomicU32], want: u32) {
    assert_all(what, c.iter().map(|a| a.load(Relaxed)), want);
}

/// Busy-waits about `us` microseconds: a G that does a little work.
fn spin_for(us: u64) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_micros(us) {
        std::hint::spin_loop();
    }
}

/// 1M Gs spawned from a foreign thread (so through the global queue), each
/// run exactly once, for 1, 2, 4 and 8 Ps.
#[test]
fn million_gs_exactly_once() {
    const N: usize = 1_000_000;
    for procs in [1, 2, 4, 8] {
        let s = new_sched(procs);
        let seen = counters::<AtomicU8>(N);
        let done = Arc::new(AtomicUsize::new(0));
        let t = Instant::now();
        for i in 0..N {
            let (seen, done) = (seen.clone(), done.clone());
            s.spawn(body(move |_| {
                seen[i].fetch_add(1, Relaxed);
                done.fetch_add(1, Release);
                Step::Done
            }))
            .unwrap();
        }
        wait_until(&s, "1M Gs to run", || done.load(Acquire) >= N);
        let elapsed = t.elapsed();
        let stats = s.stats();
        finish(s);
        assert_eq!(done.load(Acquire), N, "procs={procs}: a G ran twice");
        assert_all_u8(&format!("procs={procs}"), &seen, 1);
        assert_eq!(stats.spawned, N as u64);
        eprintln!(
            "million_gs_exactly_once: procs={procs} in {elapsed:.2?}, steals={}",
            stats.steals
        );
    }
}

/// Gs spawned from one G all land on its P (runnext, then its ring); with 4
/// Ps and Gs that each do a few microseconds of work, the other Ms must
/// steal them and run them on other threads. Rounds repeat (bounded by
/// [`DEADLINE`]) because on a loaded 2-core machine a woken M may not get a
/// CPU before one round's Gs are done.
#[test]
fn spawns_from_one_g_spread_by_stealing() {
    // Below runq capacity (256), so none overflow to the global queue: any
    // other P gets these Gs only by stealing.
    const PER_ROUND: usize = 200;
    let s = new_sched(4);
    let done = Arc::new(AtomicUsize::new(0));
    let threads = Arc::new(Mutex::new(HashSet::<ThreadId>::new()));
    let start = Instant::now();

    let mut rounds = 0;
    loop {
        let seen = counters::<AtomicU8>(PER_ROUND);
        let (seen2, done2, threads2) = (seen.clone(), done.clone(), threads.clone());
        s.spawn(body(move |cx| {
            for i in 0..PER_ROUND {
                let (seen, done, threads) = (seen2.clone(), done2.clone(), threads2.clone());
                cx.sched()
                    .spawn(body(move |_| {
                        spin_for(5);
                        seen[i].fetch_add(1, Relaxed);
                        threads.lock().unwrap().insert(thread::current().id());
                        done.fetch_add(1, Release);
                        Step::Done
                    }))
                    .unwrap();
            }
            Step::Done
        }))
        .unwrap();
        rounds += 1;
        let want = rounds * PER_ROUND;
        wait_until(&s, "a round of spawned Gs", || done.load(Acquire) >= want);
        assert_all_u8(&format!("round {rounds}"), &seen, 1);
        let spread = threads.lock().unwrap().len() > 1;
        if (s.stats().steals > 0 && spread) || start.elapsed() > DEADLINE {
            break;
        }
    }
    let stats = s.stats();
    finish(s);
    assert_eq!(done.load(Acquire), rounds * PER_ROUND);
    assert!(
        stats.steals > 0,
        "no steals after {rounds} rounds: {stats:?}"
    );
    let nthreads = threads.lock().unwrap().len();
    assert!(
        nthreads > 1,
        "all Gs ran on one M after {rounds} rounds: {stats:?}"
    );
    eprintln!(
        "spread: {rounds} round(s) in {:.1?}, steals={}, {nthreads} Ms ran Gs",
        start.elapsed(),
        stats.steals
    );
}

/// Each G spawns the next from inside its step (the new G goes to the
/// spawner's runnext), 100k links.
#[test]
fn chained_spawn_100k() {
    const N: usize = 100_000;

    fn link(i: usize, seen: Arc<Vec<AtomicU8>>) -> Box<dyn Body> {
        body(move |cx| {
            seen[i].fetch_add(1, Relaxed);
            if i + 1 < N {
                cx.sched().spawn(link(i + 1, seen.clone())).unwrap();
            }
            Step::Done
        })
    }

    for procs in [1, 4] {
        let s = new_sched(procs);
        let seen = counters::<AtomicU8>(N);
        s.spawn(link(0, seen.clone())).unwrap();
        wait_until(&s, "the last link", || seen[N - 1].load(Relaxed) > 0);
        let stats = s.stats();
        finish(s);
        assert_all_u8(&format!("procs={procs}"), &seen, 1);
        assert_eq!(stats.spawned, N as u64);
    }
}

/// Many Gs each yield `YIELDS` times, then finish: exactly `YIELDS + 1`
/// steps each. Half are spawned from a foreign thread, half from a G.
#[test]
fn yield_storm() {
    const N: usize = 10_000;
    const YIELDS: u32 = 50;
    let s = new_sched(4);
    let steps = counters::<AtomicU32>(N);
    let finished = Arc::new(AtomicUsize::new(0));

    let yielder = move |i: usize, steps: Arc<Vec<AtomicU32>>, finished: Arc<AtomicUsize>| {
        let mut left = YIELDS;
        body(move |_| {
            steps[i].fetch_add(1, Relaxed);
            if left == 0 {
                finished.fetch_add(1, Release);
                return Step::Done;
            }
            left -= 1;
            Step::Yield
        })
    };

    for i in 0..N / 2 {
        s.spawn(yielder(i, steps.clone(), finished.clone()))
            .unwrap();
    }
    let (steps2, finished2) = (steps.clone(), finished.clone());
    s.spawn(body(move |cx| {
        for i in N / 2..N {
            cx.sched()
                .spawn(yielder(i, steps2.clone(), finished2.clone()))
                .unwrap();
        }
        Step::Done
    }))
    .unwrap();

    wait_until(&s, "every yielder to finish", || {
        finished.load(Acquire) >= N
    });
    finish(s);
    assert_eq!(finished.load(Acquire), N);
    assert_all_u32("steps", &steps, YIELDS + 1);
}

/// Four plain threads spawn 100k Gs each, concurrently.
#[test]
fn spawn_from_foreign_threads() {
    const THREADS: usize = 4;
    const PER: usize = 100_000;
    let s = new_sched(4);
    let seen = counters::<AtomicU8>(THREADS * PER);
    let done = Arc::new(AtomicUsize::new(0));

    let spawners: Vec<_> = (0..THREADS)
        .map(|t| {
            let (s, seen, done) = (s.clone(), seen.clone(), done.clone());
            thread::spawn(move || {
                for i in t * PER..(t + 1) * PER {
                    let (seen, done) = (seen.clone(), done.clone());
                    s.spawn(body(move |_| {
                        seen[i].fetch_add(1, Relaxed);
                        done.fetch_add(1, Release);
                        Step::Done
                    }))
                    .unwrap();
                }
            })
        })
        .collect();
    for h in spawners {
        h.join().unwrap();
    }
    wait_until(&s, "400k Gs to run", || done.load(Acquire) >= THREADS * PER);
    let stats = s.stats();
    finish(s);
    assert_all_u8("foreign spawns", &seen, 1);
    assert_eq!(stats.spawned, (THREADS * PER) as u64);
}

/// `Sched::gosched` (Go's Gosched): a G that yields so runs behind the Gs
/// waiting in the global queue, even while its P's local queue never runs
/// dry. One P; two Gs yield to each other forever, one of them through
/// `gosched`; a foreign thread spawns a G (foreign spawns go to the global
/// queue) and counts the gosched G's steps until that G runs. A plain
/// yield would leave it to the 61st-tick check (about 30 of those steps);
/// `gmprt.aio`'s loop G yields so, or what an M blocked in the netpoller
/// readied would wait behind watchers that keep the local queue full.
#[test]
fn gosched_runs_behind_the_global_queue() {
    const ROUNDS: usize = 200;
    let s = new_sched(1);
    let stop = Arc::new(AtomicBool::new(false));
    let steps = Arc::new(AtomicUsize::new(0));
    {
        let (stop, steps) = (stop.clone(), steps.clone());
        s.spawn(body(move |cx| {
            if stop.load(Acquire) {
                return Step::Done;
            }
            steps.fetch_add(1, Relaxed);
            cx.sched().gosched();
            Step::Yield
        }))
        .unwrap();
    }
    {
        let stop = stop.clone();
        s.spawn(body(move |_| {
            if stop.load(Acquire) {
                Step::Done
            } else {
                Step::Yield
            }
        }))
        .unwrap();
    }
    let mut worst = 0;
    for _ in 0..ROUNDS {
        let ran_at = Arc::new(AtomicUsize::new(usize::MAX));
        let (r, st) = (ran_at.clone(), steps.clone());
        s.spawn(body(move |_| {
            r.store(st.load(Relaxed), Release);
            Step::Done
        }))
        .unwrap();
        // Read once the spawn is queued: this thread may be descheduled
        // meanwhile, which can only shrink the lag measured.
        let queued_at = steps.load(Relaxed);
        wait_until(&s, "the foreign spawn to run", || {
            ran_at.load(Acquire) != usize::MAX
        });
        worst = worst.max(ran_at.load(Acquire).saturating_sub(queued_at));
    }
    stop.store(true, Release);
    finish(s);
    // Queued between two of its steps, the G runs before the gosched G's
    // second step after that (one may already be under way).
    assert!(worst <= 2, "a global G waited {worst} gosched steps");
}

/// Gs park `PARKS` times each, registering their waker in a shared list
/// during the step; two plain threads drain the list and wake them. A wake
/// may land after the park committed or while the step is still running.
/// Every first wake of a park returns true, every second one false, and
/// each G runs exactly `PARKS + 1` steps.
#[test]
fn park_and_wake_from_other_threads() {
    const N: usize = 20_000;
    const PARKS: u32 = 3;
    let s = new_sched(4);
    let steps = counters::<AtomicU32>(N);
    let finished = Arc::new(AtomicUsize::new(0));
    let waiting: Arc<Mutex<Vec<Waker>>> = Arc::new(Mutex::new(Vec::new()));
    let stop_wakers = Arc::new(AtomicBool::new(false));
    let wakes = Arc::new(AtomicUsize::new(0));

    let wakers: Vec<_> = (0..2)
        .map(|_| {
            let (waiting, stop, wakes) = (waiting.clone(), stop_wakers.clone(), wakes.clone());
            thread::spawn(move || {
                let start = Instant::now();
                while !stop.load(Acquire) {
                    assert!(
                        start.elapsed() < DEADLINE,
                        "waker thread ran past the deadline"
                    );
                    let batch = std::mem::take(&mut *waiting.lock().unwrap());
                    if batch.is_empty() {
                        thread::yield_now();
                        continue;
                    }
                    for w in batch {
                        assert!(w.wake(), "the first wake of a park must ready the G");
                        assert!(!w.wake(), "a second wake of one park must be stale");
                        wakes.fetch_add(1, Relaxed);
                    }
                }
            })
        })
        .collect();

    for i in 0..N {
        let (steps, finished, waiting) = (steps.clone(), finished.clone(), waiting.clone());
        let mut parks = 0;
        s.spawn(body(move |cx| {
            steps[i].fetch_add(1, Relaxed);
            if parks == PARKS {
                finished.fetch_add(1, Release);
                return Step::Done;
            }
            parks += 1;
            // Register before returning Park (the driver's job): a waker
            // thread may wake us before the M commits the park.
            waiting.lock().unwrap().push(cx.waker());
            Step::Park
        }))
        .unwrap();
    }

    wait_until(&s, "every parker to finish", || finished.load(Acquire) >= N);
    stop_wakers.store(true, Release);
    for h in wakers {
        h.join().unwrap();
    }
    finish(s);
    assert_all_u32("steps", &steps, PARKS + 1);
    assert_eq!(wakes.load(Relaxed), N * PARKS as usize, "one wake per park");
}

/// The wake always arrives while the G is still inside its step: the step
/// hands its waker to a plain thread and waits (bounded) until that thread
/// has woken it, then returns Park. The M's commit must fail and requeue
/// the G itself, exactly once.
#[test]
fn wake_during_step_from_other_thread() {
    const N: usize = 2_000;
    const PARKS: u32 = 3;
    let s = new_sched(4);
    let steps = counters::<AtomicU32>(N);
    let finished = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel::<(Waker, Arc<AtomicBool>)>();

    let waker_thread = thread::spawn(move || {
        let mut n = 0usize;
        // Ends when every sender (one per G body) is gone.
        for (w, woken) in rx {
            assert!(w.wake(), "a wake during the step must be accepted");
            woken.store(true, Release);
            assert!(!w.wake(), "a second wake of one park must be stale");
            n += 1;
        }
        n
    });

    for i in 0..N {
        let (steps, finished, tx) = (steps.clone(), finished.clone(), tx.clone());
        let mut parks = 0;
        s.spawn(body(move |cx| {
            steps[i].fetch_add(1, Relaxed);
            if parks == PARKS {
                finished.fetch_add(1, Release);
                return Step::Done;
            }
            parks += 1;
            let woken = Arc::new(AtomicBool::new(false));
            tx.send((cx.waker(), woken.clone())).unwrap();
            let start = Instant::now();
            while !woken.load(Acquire) {
                // A panic here is caught by the M and finishes the G, which
                // then fails the step accounting below.
                assert!(
                    start.elapsed() < DEADLINE,
                    "G {i}: the waker thread never woke it"
                );
                thread::yield_now();
            }
            Step::Park
        }))
        .unwrap();
    }
    drop(tx);

    wait_until(&s, "every G woken during its steps to finish", || {
        finished.load(Acquire) >= N
    });
    finish(s);
    assert_eq!(waker_thread.join().unwrap(), N * PARKS as usize);
    assert_all_u32("steps", &steps, PARKS + 1);
}

/// A G wakes itself inside its step before returning Park (a channel that
/// was already ready): the park must turn into a requeue, never a hang.
/// Mixed with Gs that wake each other on the Ms (local runnext readying).
#[test]
fn wake_self_and_peers_on_ms() {
    const N: usize = 20_000;
    const PARKS: u32 = 5;
    let s = new_sched(4);
    let steps = counters::<AtomicU32>(N);
    let finished = Arc::new(AtomicUsize::new(0));
    // Parked Gs waiting for a peer G (not a plain thread) to wake them.
    let parked: Arc<Mutex<Vec<Waker>>> = Arc::new(Mutex::new(Vec::new()));

    for i in 0..N {
        let (steps, finished, parked) = (steps.clone(), finished.clone(), parked.clone());
        let mut parks = 0;
        s.spawn(body(move |cx| {
            steps[i].fetch_add(1, Relaxed);
            // Wake one peer, if any is waiting: this readies it onto our P.
            let peer = parked.lock().unwrap().pop();
            if let Some(w) = peer {
                assert!(w.wake(), "a registered park's first wake readies it");
                assert!(!w.wake(), "a second wake of one park must be stale");
            }
            if parks == PARKS {
                finished.fetch_add(1, Release);
                return Step::Done;
            }
            parks += 1;
            if i % 2 == 0 {
                let w = cx.waker();
                assert!(w.wake(), "a self-wake during the step is accepted");
                assert!(!w.wake(), "a second self-wake is stale");
            } else {
                parked.lock().unwrap().push(cx.waker());
            }
            Step::Park
        }))
        .unwrap();
    }

    // Peers wake each other while Gs keep running; the last few parked Gs
    // have nobody left to wake them, so this thread wakes what remains.
    let start = Instant::now();
    while finished.load(Acquire) < N {
        assert!(
            start.elapsed() < DEADLINE,
            "timed out; stats: {:?}",
            s.stats()
        );
        let rest = std::mem::take(&mut *parked.lock().unwrap());
        for w in rest {
            assert!(w.wake());
        }
        thread::sleep(Duration::from_micros(200));
    }
    finish(s);
    assert_all_u32("steps", &steps, PARKS + 1);
}

/// Many short-lived runtimes, half stopped while their Gs are still running:
/// `join` returns, and every G either finished or is reaped, never both and
/// never neither.
#[test]
fn stop_while_busy_then_reap() {
    const ROUNDS: usize = 200;
    const N: usize = 100;
    for round in 0..ROUNDS {
        let s = new_sched(1 + round % 4);
        let finished = Arc::new(AtomicUsize::new(0));
        for _ in 0..N {
            let finished = finished.clone();
            let mut yields = 3;
            s.spawn(body(move |_| {
                if yields == 0 {
                    finished.fetch_add(1, Relaxed);
                    return Step::Done;
                }
                yields -= 1;
                Step::Yield
            }))
            .unwrap();
        }
        if round % 2 == 0 {
            wait_until(&s, "all Gs to finish", || finished.load(Relaxed) == N);
        }
        s.stop();
        assert!(
            s.join(Duration::from_secs(10)),
            "round {round}: an M did not exit"
        );
        let reaped = s.reap().len();
        assert_eq!(
            finished.load(Relaxed) + reaped,
            N,
            "round {round}: finished + reaped must count every G once"
        );
    }
}

/// Spawning into a stopped runtime is refused, and a wake that outlives the
/// runtime is a no-op.
#[test]
fn stop_refuses_spawns_and_late_wakes_are_stale() {
    let s = new_sched(2);
    let slot: Arc<Mutex<Option<Waker>>> = Arc::new(Mutex::new(None));
    let slot2 = slot.clone();
    s.spawn(body(move |cx| {
        *slot2.lock().unwrap() = Some(cx.waker());
        Step::Park
    }))
    .unwrap();
    wait_until(&s, "the G to park", || slot.lock().unwrap().is_some());
    s.stop();
    assert!(s.join(Duration::from_secs(10)));
    assert!(
        s.spawn(body(|_| Step::Done)).is_err(),
        "spawn after stop must fail"
    );
    // The parked G is reaped (its body dropped), and its old wake is stale.
    let reaped = s.reap();
    assert_eq!(reaped.len(), 1);
    drop(reaped);
    let w = slot.lock().unwrap().take().unwrap();
    assert!(!w.wake(), "a wake after the runtime stopped must be stale");
}
