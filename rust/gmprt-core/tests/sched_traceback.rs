//! Goroutine dumps (`Sched::for_each_g`) while other threads spawn, wake,
//! run and finish Gs: no crash, no torn entry (each body seen belongs to
//! the G life the view names), every G still runs exactly its steps.

use std::any::Any;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use gmprt_core::{Body, Cx, GState, Sched, Step, WaitReason, Waker};

mod common;
use common::{new_sched, wait_until, DEADLINE};

/// A G that alternates yields and parks for `left` steps, then ends.
struct Churn {
    /// The G id this body was spawned for: a dump that showed this body
    /// under another id would be a torn entry.
    me: u64,
    left: u32,
    parked: Arc<Mutex<Vec<Waker>>>,
    done: Arc<AtomicUsize>,
}

impl Body for Churn {
    fn step(&mut self, cx: &mut Cx<'_>) -> Step {
        assert_eq!(cx.id(), self.me, "a body stepped as another G");
        if self.left == 0 {
            self.done.fetch_add(1, Release);
            return Step::Done;
        }
        self.left -= 1;
        if self.left % 2 == 0 {
            cx.set_wait_reason(WaitReason::ChanReceive);
            self.parked.lock().unwrap().push(cx.waker());
            Step::Park
        } else {
            Step::Yield
        }
    }

    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
}

fn spawn_churn(s: &Arc<Sched>, parked: &Arc<Mutex<Vec<Waker>>>, done: &Arc<AtomicUsize>) {
    let (parked, done) = (parked.clone(), done.clone());
    s.spawn_with(move |g| {
        Box::new(Churn {
            me: g.id(),
            left: 6,
            parked,
            done,
        })
    })
    .expect("spawn");
}

#[test]
fn dump_while_gs_churn() {
    const N: usize = 100_000;
    const SPAWNERS: usize = 2;
    let s = new_sched(4);
    let parked = Arc::new(Mutex::new(Vec::<Waker>::new()));
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));

    let waker = {
        let (parked, stop) = (parked.clone(), stop.clone());
        thread::spawn(move || {
            while !stop.load(Acquire) {
                let batch = std::mem::take(&mut *parked.lock().unwrap());
                for w in batch {
                    w.wake();
                }
                thread::sleep(Duration::from_micros(50));
            }
        })
    };
    let dumper = {
        let (s, stop) = (s.clone(), stop.clone());
        thread::spawn(move || {
            let (mut dumps, mut held, mut waiting) = (0u64, 0u64, 0u64);
            while !stop.load(Acquire) {
                s.for_each_g(|v| {
                    if let Some(b) = v.body {
                        held += 1;
                        let c = b
                            .as_any()
                            .and_then(|a| a.downcast_ref::<Churn>())
                            .expect("a Churn body");
                        assert_eq!(c.me, v.id, "torn entry: G {} shows G {}'s body", v.id, c.me);
                        assert!(matches!(v.state, GState::Runnable | GState::Waiting));
                    }
                    if v.state == GState::Waiting {
                        waiting += 1;
                        assert_eq!(v.reason, WaitReason::ChanReceive);
                        assert!(v.wait_us < DEADLINE.as_micros() as u64, "{}", v.wait_us);
                    }
                });
                dumps += 1;
            }
            (dumps, held, waiting)
        })
    };
    let spawners: Vec<_> = (0..SPAWNERS)
        .map(|_| {
            let (s, parked, done) = (s.clone(), parked.clone(), done.clone());
            thread::spawn(move || {
                for _ in 0..N / SPAWNERS {
                    spawn_churn(&s, &parked, &done);
                }
            })
        })
        .collect();
    for t in spawners {
        t.join().unwrap();
    }
    let start = Instant::now();
    wait_until(&s, "every G to finish", || done.load(Acquire) == N);
    stop.store(true, Release);
    waker.join().unwrap();
    let (dumps, held, waiting) = dumper.join().unwrap();
    assert!(
        dumps > 0 && held > 0,
        "dumps={dumps} held={held} waiting={waiting}"
    );
    assert!(start.elapsed() < DEADLINE);
    wait_until(&s, "live goroutines to reach 0", || {
        s.stats().goroutines == 0
    });
    // A quiet runtime dumps nothing.
    let mut seen = 0;
    s.for_each_g(|_| seen += 1);
    assert_eq!(seen, 0);
    s.stop();
    assert!(s.join(Duration::from_secs(10)));
}

/// The counts schedtrace prints agree with a dump of parked Gs.
#[test]
fn counts_by_reason() {
    let s = new_sched(2);
    let parked = Arc::new(Mutex::new(Vec::<Waker>::new()));
    for i in 0..10u32 {
        let parked = parked.clone();
        let mut first = true;
        s.spawn(Box::new(common::FnBody(move |cx: &mut Cx<'_>| {
            if !first {
                return Step::Done;
            }
            first = false;
            cx.set_wait_reason(if i < 3 {
                WaitReason::Sleep
            } else {
                WaitReason::ChanSend
            });
            parked.lock().unwrap().push(cx.waker());
            Step::Park
        })))
        .unwrap();
    }
    wait_until(&s, "10 parked Gs", || s.g_counts().waiting == 10);
    let c = s.g_counts();
    assert_eq!(c.by_reason[WaitReason::Sleep as usize], 3);
    assert_eq!(c.by_reason[WaitReason::ChanSend as usize], 7);
    assert_eq!((c.runnable, c.running, c.syscall), (0, 0, 0));
    let mut n = 0;
    s.for_each_g(|v| {
        assert_eq!(v.state, GState::Waiting);
        assert!(v.body.is_some());
        n += 1;
    });
    assert_eq!(n, 10);
    for w in std::mem::take(&mut *parked.lock().unwrap()) {
        w.wake();
    }
    wait_until(&s, "every G to finish", || s.stats().goroutines == 0);
    s.stop();
    assert!(s.join(Duration::from_secs(10)));
}

/// Go's schedtrace head, then gmprt's fields and the scheddetail lines.
#[test]
fn schedtrace_line() {
    let s = new_sched(2);
    let parked = Arc::new(Mutex::new(Vec::<Waker>::new()));
    let p = parked.clone();
    let mut first = true;
    s.spawn(Box::new(common::FnBody(move |cx: &mut Cx<'_>| {
        if !first {
            return Step::Done;
        }
        first = false;
        cx.set_wait_reason(WaitReason::ChanReceive);
        p.lock().unwrap().push(cx.waker());
        Step::Park
    })))
    .unwrap();
    wait_until(&s, "a parked G", || s.g_counts().waiting == 1);
    let mut prev = gmprt_core::TraceDelta::default();
    let line = s.schedtrace(Duration::from_millis(1004), &mut prev, true);
    let head = line.lines().next().unwrap();
    assert!(
        head.starts_with("SCHED 1004ms: gomaxprocs=2 idleprocs="),
        "{head}"
    );
    assert!(head.contains(" runqueue=0 [0 0] gs: running=0 runnable=0 syscall=0 waiting=1 (chan receive=1) netpoll_waiters=0 timers=0 handoffs=+"), "{head}");
    assert!(line.contains("\n  P0: status=0 schedtick="), "{line}");
    assert!(line.contains("\n  P1: status=0 "), "{line}");
    assert!(line.contains("status=4(chan receive)"), "{line}");
    for w in std::mem::take(&mut *parked.lock().unwrap()) {
        w.wake();
    }
    wait_until(&s, "every G to finish", || s.stats().goroutines == 0);
    s.stop();
    assert!(s.join(Duration::from_secs(10)));
}
