//! Channels, select, WaitGroup, Semaphore and Mutex driven by Rust-native Gs
//! (and plain threads), with exactly-once accounting.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering::*};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gmprt_core::chan::{select_done, select_or_park, select_try, RecvPark, SendPark};
use gmprt_core::sync::{Mutex, Semaphore, WaitGroup};
use gmprt_core::{
    Body, Case, Chan, Config, Cx, Done, NoHooks, Notify, Op, Sched, SelectPark, Selected, Step,
};

/// A G body from a closure: the closure keeps its own state between steps.
struct Fsm<F>(F);
impl<F: FnMut(&mut Cx<'_>) -> Step + Send + 'static> Body for Fsm<F> {
    fn step(&mut self, cx: &mut Cx<'_>) -> Step {
        (self.0)(cx)
    }
}

fn spawn(s: &Arc<Sched>, f: impl FnMut(&mut Cx<'_>) -> Step + Send + 'static) {
    s.spawn(Box::new(Fsm(f))).expect("runtime is running");
}

fn sched(procs: usize) -> Arc<Sched> {
    Sched::new(
        Config {
            procs,
            ..Config::default()
        },
        Box::new(NoHooks),
    )
}

fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn stop(s: Arc<Sched>) {
    s.stop();
    assert!(s.join(Duration::from_secs(5)), "Ms did not exit");
}

/// A producer G: sends `lo..hi` on `ch`, then `wg.add(-1)`.
fn producer(
    ch: Arc<Chan<u64>>,
    wg: Arc<WaitGroup>,
    lo: u64,
    hi: u64,
) -> impl FnMut(&mut Cx<'_>) -> Step {
    let mut next = lo;
    let mut op: Option<Op<u64>> = None;
    move |cx| loop {
        if let Some(o) = op.take() {
            let d = o.done().expect("woken before the send completed");
            assert_eq!(d, Done::Ok(0), "send did not complete");
            next += 1;
        }
        if next == hi {
            wg.add(-1).unwrap();
            return Step::Done;
        }
        match ch.send_or_park(next, Notify::G(cx.waker())) {
            SendPark::Sent => next += 1,
            SendPark::Closed(_) => panic!("send on closed channel"),
            SendPark::Parked(o) => {
                op = Some(o);
                return Step::Park;
            }
        }
    }
}

/// A consumer G: receives until closed, counting each value in `seen`.
fn consumer(
    ch: Arc<Chan<u64>>,
    seen: Arc<Vec<AtomicU8>>,
    done: Arc<AtomicUsize>,
) -> impl FnMut(&mut Cx<'_>) -> Step {
    let mut op: Option<Op<u64>> = None;
    move |cx| loop {
        let got = match op.take() {
            Some(mut o) => match o.done().expect("woken before the receive completed") {
                Done::Ok(0) => Some(o.take(0).expect("no value")),
                Done::Closed(0) => None,
                d => panic!("unexpected {d:?}"),
            },
            None => match ch.recv_or_park(Notify::G(cx.waker())) {
                RecvPark::Received(v) => Some(v),
                RecvPark::Closed => None,
                RecvPark::Parked(o) => {
                    op = Some(o);
                    return Step::Park;
                }
            },
        };
        match got {
            Some(v) => {
                seen[v as usize].fetch_add(1, Relaxed);
            }
            None => {
                done.fetch_add(1, Relaxed);
                return Step::Done;
            }
        }
    }
}

/// A G that waits for `wg`, then closes `ch`.
fn closer(ch: Arc<Chan<u64>>, wg: Arc<WaitGroup>) -> impl FnMut(&mut Cx<'_>) -> Step {
    let mut op: Option<Op<()>> = None;
    move |cx| {
        if let Some(o) = &op {
            assert_eq!(o.done(), Some(Done::Ok(0)));
        } else if let Some(o) = wg.wait_or_park(Notify::G(cx.waker())) {
            op = Some(o);
            return Step::Park;
        }
        ch.close().unwrap();
        Step::Done
    }
}

fn mpmc(procs: usize, cap: usize, n: u64) {
    let s = sched(procs);
    let ch = Arc::new(Chan::new(cap));
    let wg = Arc::new(WaitGroup::new());
    let seen: Arc<Vec<AtomicU8>> = Arc::new((0..n).map(|_| AtomicU8::new(0)).collect());
    let done = Arc::new(AtomicUsize::new(0));
    let (np, nc) = (8u64, 8);
    wg.add(np as i64).unwrap();
    spawn(&s, closer(ch.clone(), wg.clone()));
    for c in 0..nc {
        let _ = c;
        spawn(&s, consumer(ch.clone(), seen.clone(), done.clone()));
    }
    for p in 0..np {
        spawn(
            &s,
            producer(ch.clone(), wg.clone(), p * n / np, (p + 1) * n / np),
        );
    }
    wait_for("consumers", 60, || done.load(Relaxed) == nc);
    let bad = seen.iter().enumerate().find(|(_, c)| c.load(Relaxed) != 1);
    assert!(
        bad.is_none(),
        "value {:?} not delivered exactly once",
        bad.map(|(i, c)| (i, c.load(Relaxed)))
    );
    assert_eq!(s.stats().goroutines, 0);
    stop(s);
}

#[test]
fn mpmc_exactly_once_unbuffered() {
    for procs in [1, 2, 4] {
        mpmc(procs, 0, 1_000_000);
    }
}

#[test]
fn mpmc_exactly_once_buffered() {
    for procs in [1, 2, 4] {
        mpmc(procs, 64, 1_000_000);
    }
}

#[test]
fn buffered_is_fifo_and_drains_after_close() {
    let ch = Chan::new(3);
    for v in 0..3 {
        ch.try_send(v).unwrap();
    }
    assert!(matches!(
        ch.try_send(9),
        Err(gmprt_core::chan::TrySendError::Full(9))
    ));
    assert_eq!(ch.len(), 3);
    ch.close().unwrap();
    assert_eq!(ch.close(), Err(gmprt_core::chan::AlreadyClosed));
    assert!(matches!(
        ch.try_send(9),
        Err(gmprt_core::chan::TrySendError::Closed(9))
    ));
    let got: Vec<i32> = (0..3).map(|_| ch.try_recv().unwrap()).collect();
    assert_eq!(got, vec![0, 1, 2]);
    assert_eq!(ch.try_recv(), Err(gmprt_core::chan::TryRecvError::Closed));
}

#[test]
fn blocked_sender_moves_into_the_buffer() {
    let ch = Chan::new(1);
    ch.try_send(1).unwrap();
    let SendPark::Parked(mut op) = ch.send_or_park(2, Notify::current_thread()) else {
        panic!("a full buffer must park the sender")
    };
    assert_eq!(ch.try_recv(), Ok(1));
    assert_eq!(
        op.done(),
        Some(Done::Ok(0)),
        "the sender's value moved into the buffer"
    );
    assert_eq!(op.take_all(), Vec::<i32>::new());
    assert_eq!(ch.len(), 1);
    assert_eq!(ch.try_recv(), Ok(2));
}

#[test]
fn close_wakes_parked_senders_and_receivers() {
    let tx: Chan<u32> = Chan::new(0);
    let mut ops = Vec::new();
    for v in 0..4 {
        match tx.send_or_park(v, Notify::current_thread()) {
            SendPark::Parked(op) => ops.push(op),
            _ => panic!("nobody receives: must park"),
        }
    }
    let rx: Chan<u32> = Chan::new(0);
    let mut rops = Vec::new();
    for _ in 0..4 {
        match rx.recv_or_park(Notify::current_thread()) {
            RecvPark::Parked(op) => rops.push(op),
            _ => panic!("nobody sends: must park"),
        }
    }
    tx.close().unwrap();
    rx.close().unwrap();
    for (v, mut op) in ops.into_iter().enumerate() {
        assert_eq!(op.done(), Some(Done::Closed(0)));
        assert_eq!(
            op.take_all(),
            vec![v as u32],
            "the sender gets its value back"
        );
    }
    for op in rops {
        assert_eq!(op.done(), Some(Done::Closed(0)));
    }
}

#[test]
fn select_fires_one_ready_case_uniformly() {
    let chans: Vec<Chan<u32>> = (0..3).map(|_| Chan::new(1)).collect();
    let mut hits = [0u32; 3];
    let n = 30_000;
    for _ in 0..n {
        for c in &chans {
            let _ = c.try_send(1);
        }
        let mut cases: Vec<Case<'_, u32>> = chans.iter().map(Case::Recv).collect();
        match select_try(&mut cases) {
            Some(Selected::Recv(i, Some(1))) => hits[i] += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    for h in hits {
        let share = f64::from(h) / f64::from(n);
        assert!(
            (share - 1.0 / 3.0).abs() < 0.03,
            "share {share} in {hits:?}"
        );
    }
}

#[test]
fn select_send_and_default() {
    let a: Chan<u32> = Chan::new(0);
    let b: Chan<u32> = Chan::new(1);
    // Nothing ready: a non-blocking select reports none and keeps the value.
    let mut cases = [Case::Recv(&a), Case::Send(&a, Some(5))];
    assert_eq!(select_try(&mut cases), None);
    assert!(matches!(cases[1], Case::Send(_, Some(5))));
    // A buffered send case is ready.
    let mut cases = [Case::Recv(&a), Case::Send(&b, Some(6))];
    assert_eq!(select_try(&mut cases), Some(Selected::Sent(1)));
    assert_eq!(b.try_recv(), Ok(6));
    b.close().unwrap();
    let mut cases = [Case::Send(&b, Some(7))];
    assert_eq!(select_try(&mut cases), Some(Selected::SendClosed(0)));
    let mut cases = [Case::Recv(&a), Case::Recv(&b)];
    assert_eq!(select_try(&mut cases), Some(Selected::Recv(1, None)));
}

#[test]
fn parked_select_is_won_by_exactly_one_case() {
    for _ in 0..200 {
        let a: Arc<Chan<u32>> = Arc::new(Chan::new(0));
        let b: Arc<Chan<u32>> = Arc::new(Chan::new(0));
        let mut cases = [Case::Recv(&*a), Case::Recv(&*b)];
        let SelectPark::Parked(mut op) = select_or_park(&mut cases, Notify::current_thread())
        else {
            panic!("nothing is ready")
        };
        // Two threads race to send, one on each channel, without waiting.
        let racers: Vec<_> = [(a.clone(), 1), (b.clone(), 2)]
            .into_iter()
            .map(|(ch, v)| std::thread::spawn(move || ch.try_send(v).is_ok()))
            .collect();
        let sent: Vec<bool> = racers.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(op.wait(Some(Instant::now() + Duration::from_secs(5))));
        let d = op.done().unwrap();
        let got = select_done(&mut op, d, |_| false).unwrap();
        assert_eq!(
            sent.iter().filter(|s| **s).count(),
            1,
            "exactly one send lands"
        );
        match got {
            Selected::Recv(0, Some(1)) => assert_eq!(sent, [true, false]),
            Selected::Recv(1, Some(2)) => assert_eq!(sent, [false, true]),
            other => panic!("unexpected {other:?}"),
        }
        // The losing case's entry is dead: a receiver finds nobody.
        assert_eq!(a.waiting(), (0, 0));
        assert_eq!(b.waiting(), (0, 0));
    }
}

#[test]
fn select_expires_with_its_values_back() {
    let a: Chan<String> = Chan::new(0);
    let mut cases = [Case::Send(&a, Some("x".to_string())), Case::Recv(&a)];
    let SelectPark::Parked(mut op) = select_or_park(&mut cases, Notify::current_thread()) else {
        panic!("nothing is ready")
    };
    // The owner's timeout passes: it gives up.
    assert!(!op.wait(Some(Instant::now() + Duration::from_millis(20))));
    assert_eq!(op.cancel(), Done::Expired);
    assert_eq!(op.done(), Some(Done::Expired));
    assert_eq!(op.take_all(), vec!["x".to_string()]);
    // Both dead entries are skipped.
    assert_eq!(a.try_recv(), Err(gmprt_core::chan::TryRecvError::Empty));
    assert!(a.try_send("y".into()).is_err());
}

#[test]
fn threads_and_gs_share_a_channel() {
    // Foreign threads send with thread parking; Gs receive.
    let s = sched(2);
    let ch: Arc<Chan<u64>> = Arc::new(Chan::new(0));
    let n = 20_000u64;
    let seen: Arc<Vec<AtomicU8>> = Arc::new((0..n).map(|_| AtomicU8::new(0)).collect());
    let done = Arc::new(AtomicUsize::new(0));
    for _ in 0..4 {
        spawn(&s, consumer(ch.clone(), seen.clone(), done.clone()));
    }
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let ch = ch.clone();
            std::thread::spawn(move || {
                for v in (t * n / 4)..((t + 1) * n / 4) {
                    match ch.send_or_park(v, Notify::current_thread()) {
                        SendPark::Sent => {}
                        SendPark::Parked(op) => {
                            assert!(op.wait(Some(Instant::now() + Duration::from_secs(30))));
                            assert_eq!(op.done(), Some(Done::Ok(0)));
                        }
                        SendPark::Closed(_) => panic!("closed"),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    ch.close().unwrap();
    wait_for("consumers", 30, || done.load(Relaxed) == 4);
    assert!(seen.iter().all(|c| c.load(Relaxed) == 1));
    stop(s);
}

#[test]
fn semaphore_bounds_concurrency_and_is_fifo() {
    let s = sched(4);
    let sem = Arc::new(Semaphore::new(3));
    let inside = Arc::new(AtomicUsize::new(0));
    let max_inside = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let ngs = 200;
    for _ in 0..ngs {
        let (sem, inside, max_inside, finished) = (
            sem.clone(),
            inside.clone(),
            max_inside.clone(),
            finished.clone(),
        );
        let mut st = 0; // 0: acquire, 1: parked, 2: holding a permit
        let mut op: Option<Op<()>> = None;
        spawn(&s, move |cx| loop {
            match st {
                0 => match sem.acquire_or_park(Notify::G(cx.waker())) {
                    None => st = 2,
                    Some(o) => {
                        st = 1;
                        op = Some(o);
                        return Step::Park;
                    }
                },
                1 => {
                    assert_eq!(op.take().and_then(|o| o.done()), Some(Done::Ok(0)));
                    st = 2;
                }
                _ => {
                    let now = inside.fetch_add(1, SeqCst) + 1;
                    max_inside.fetch_max(now, SeqCst);
                    assert!(now <= 3, "{now} holders of 3 permits");
                    inside.fetch_sub(1, SeqCst);
                    sem.release().unwrap();
                    finished.fetch_add(1, SeqCst);
                    return Step::Done;
                }
            }
        });
    }
    wait_for("semaphore users", 30, || finished.load(SeqCst) == ngs);
    assert_eq!(sem.available(), 3);
    assert!(sem.release().is_err(), "a fourth release is an error");
    stop(s);
}

#[test]
fn mutex_excludes() {
    let mu = Arc::new(Mutex::new());
    let counter = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (mu, counter) = (mu.clone(), counter.clone());
            std::thread::spawn(move || {
                for _ in 0..2_000 {
                    if let Some(op) = mu.lock_or_park(Notify::current_thread()) {
                        assert!(op.wait(Some(Instant::now() + Duration::from_secs(30))));
                        assert_eq!(op.done(), Some(Done::Ok(0)));
                    }
                    // A non-atomic read-modify-write, protected by the mutex.
                    let v = counter.load(Relaxed);
                    std::hint::spin_loop();
                    counter.store(v + 1, Relaxed);
                    mu.unlock().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(counter.load(Relaxed), 8_000);
    assert!(!mu.is_locked());
    assert!(mu.unlock().is_err());
}

#[test]
fn cancel_loses_to_a_completed_acquire() {
    let sem = Semaphore::new(1);
    assert!(sem.try_acquire());
    let mut op = sem
        .acquire_or_park(Notify::current_thread())
        .expect("must queue");
    sem.release().unwrap();
    // The permit was handed over before we gave up: we own it now.
    assert_eq!(op.cancel(), Done::Ok(0));
    assert_eq!(sem.available(), 0);
    sem.release().unwrap();
    // A cancel that wins leaves the permit to the next one.
    assert!(sem.try_acquire());
    let mut op = sem
        .acquire_or_park(Notify::current_thread())
        .expect("must queue");
    assert_eq!(op.cancel(), Done::Expired);
    sem.release().unwrap();
    assert_eq!(sem.available(), 1);
}

#[test]
fn waitgroup_rejects_negative() {
    let wg = WaitGroup::new();
    wg.add(2).unwrap();
    assert!(wg.add(-3).is_err());
    assert_eq!(wg.count(), 2);
    let op = wg
        .wait_or_park(Notify::current_thread())
        .expect("count is 2");
    wg.add(-1).unwrap();
    assert_eq!(op.done(), None);
    wg.add(-1).unwrap();
    assert_eq!(op.done(), Some(Done::Ok(0)));
    assert!(wg.wait_or_park(Notify::current_thread()).is_none());
}

/// Producers select-send each value on either of two channels; consumers
/// select-receive from both. Every parked select is completed through
/// exactly one case, so every value arrives exactly once.
#[test]
fn select_mpmc_exactly_once() {
    for procs in [1, 2, 4] {
        let s = sched(procs);
        let chans: Arc<[Chan<u64>; 2]> = Arc::new([Chan::new(0), Chan::new(4)]);
        let n = 200_000u64;
        let seen: Arc<Vec<AtomicU8>> = Arc::new((0..n).map(|_| AtomicU8::new(0)).collect());
        let received = Arc::new(AtomicUsize::new(0));
        let sent = Arc::new(AtomicUsize::new(0));
        for p in 0..4u64 {
            let (chans, sent) = (chans.clone(), sent.clone());
            let (mut next, hi) = (p * n / 4, (p + 1) * n / 4);
            let mut op: Option<Op<u64>> = None;
            spawn(&s, move |cx| loop {
                if let Some(mut o) = op.take() {
                    let d = o.done().expect("woken early");
                    let r = select_done(&mut o, d, |_| true);
                    assert!(matches!(r, Ok(Selected::Sent(_))), "{r:?}");
                    // The other case's copy was not sent: it comes back.
                    assert_eq!(o.take_all(), vec![next]);
                    next += 1;
                }
                if next == hi {
                    sent.fetch_add(1, SeqCst);
                    return Step::Done;
                }
                let mut cases = [
                    Case::Send(&chans[0], Some(next)),
                    Case::Send(&chans[1], Some(next)),
                ];
                match select_or_park(&mut cases, Notify::G(cx.waker())) {
                    SelectPark::Selected(Selected::Sent(_)) => next += 1,
                    SelectPark::Selected(other) => panic!("unexpected {other:?}"),
                    SelectPark::Parked(o) => {
                        op = Some(o);
                        return Step::Park;
                    }
                }
            });
        }
        for _ in 0..4 {
            let (chans, seen, received) = (chans.clone(), seen.clone(), received.clone());
            let mut op: Option<Op<u64>> = None;
            spawn(&s, move |cx| loop {
                let got = match op.take() {
                    Some(mut o) => {
                        let d = o.done().expect("woken early");
                        select_done(&mut o, d, |_| false).expect("no timeout")
                    }
                    None => {
                        let mut cases = [Case::Recv(&chans[0]), Case::Recv(&chans[1])];
                        match select_or_park(&mut cases, Notify::G(cx.waker())) {
                            SelectPark::Selected(sel) => sel,
                            SelectPark::Parked(o) => {
                                op = Some(o);
                                return Step::Park;
                            }
                        }
                    }
                };
                match got {
                    Selected::Recv(_, Some(v)) => {
                        seen[v as usize].fetch_add(1, Relaxed);
                        received.fetch_add(1, SeqCst);
                    }
                    Selected::Recv(_, None) => return Step::Done,
                    other => panic!("unexpected {other:?}"),
                }
            });
        }
        wait_for("all values", 60, || received.load(SeqCst) == n as usize);
        assert_eq!(sent.load(SeqCst), 4);
        for c in chans.iter() {
            c.close().unwrap();
        }
        wait_for("consumers to finish", 10, || s.stats().goroutines == 0);
        assert!(seen.iter().all(|c| c.load(Relaxed) == 1));
        stop(s);
    }
}

/// `spawn_with` hands out the new G's `GRef` before the G is queued: a
/// flag written before an interrupt through it is seen by the G, whether
/// the interrupt lands before the first step (the step sees the flag),
/// during it (its park fails) or while it is parked (it is readied); and
/// an interrupt after the G ended does nothing. Looped so that each order
/// happens.
#[test]
fn spawn_with_gref_interrupts_from_before_the_first_step() {
    for procs in [1, 2] {
        let s = sched(procs);
        for _ in 0..2_000 {
            let cancelled = Arc::new(AtomicU8::new(0));
            let done = Arc::new(AtomicU8::new(0));
            let (c, d) = (cancelled.clone(), done.clone());
            let mut gref = None;
            s.spawn_with(|g| {
                gref = Some(g);
                Box::new(Fsm(move |_cx: &mut Cx<'_>| {
                    // Relaxed: the interrupt's RMW orders the store.
                    if c.load(Relaxed) == 1 {
                        d.store(1, SeqCst);
                        Step::Done
                    } else {
                        Step::Park
                    }
                }))
            })
            .expect("runtime is running");
            let gref = gref.expect("spawn_with called the builder");
            cancelled.store(1, Relaxed);
            gref.interrupt();
            wait_for("the interrupted G to finish", 10, || done.load(SeqCst) == 1);
            wait_for("the G to be freed", 10, || !gref.interrupt());
        }
        stop(s);
    }
}
