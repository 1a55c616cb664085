//! The netpoller and timers driving real Gs through the scheduler.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering::*};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gmprt_core::netpoll::{Dir, Registration};
use gmprt_core::{Body, Config, Cx, NoHooks, Sched, Step, Waker};

fn wait_for(limit: Duration, cond: impl Fn() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    cond()
}

#[derive(Default)]
struct Counts {
    done: AtomicUsize,
    early: AtomicUsize,
}

/// Sleeps until `until` on a timer, once.
struct Sleeper {
    until: Instant,
    armed: bool,
    counts: Arc<Counts>,
}

impl Body for Sleeper {
    fn step(&mut self, cx: &mut Cx<'_>) -> Step {
        if !self.armed {
            self.armed = true;
            let h = cx.sched().netpoll().handle().expect("netpoller");
            h.add_timer(self.until, cx.waker()).expect("timer");
            return Step::Park;
        }
        if Instant::now() < self.until {
            self.counts.early.fetch_add(1, Relaxed);
        }
        self.counts.done.fetch_add(1, Relaxed);
        Step::Done
    }
}

/// A million Gs asleep at once all wake, none early, and the counters
/// return to zero. (100k in debug builds, which are 20× slower.)
#[test]
fn a_million_sleeping_gs() {
    let n: u32 = if cfg!(debug_assertions) {
        100_000
    } else {
        1_000_000
    };
    let s = Sched::new(
        Config {
            procs: 2,
            ..Config::default()
        },
        Box::new(NoHooks),
    );
    let counts = Arc::new(Counts::default());
    let start = Instant::now() + Duration::from_millis(200);
    for i in 0..n {
        let until =
            start + Duration::from_micros(u64::from(i.wrapping_mul(2_654_435_761) % 1_000_000));
        s.spawn(Box::new(Sleeper {
            until,
            armed: false,
            counts: counts.clone(),
        }))
        .unwrap();
    }
    let all = wait_for(Duration::from_secs(60), || {
        counts.done.load(Relaxed) == n as usize
    });
    eprintln!("{n} sleepers: {:?}", s.stats());
    assert!(all, "only {} of {n} woke", counts.done.load(Relaxed));
    assert_eq!(counts.early.load(Relaxed), 0, "some woke early");
    assert!(wait_for(Duration::from_secs(5), || s.netpoll().timers() == 0));
    assert_eq!(s.netpoll().waiters(), 0);
    s.stop();
    assert!(s.join(Duration::from_secs(5)));
}

/// Echoes bytes on one end of a socketpair, parking on the netpoller when
/// the socket would block, until EOF.
struct Echo {
    // Declared before `sock`: deregister before the fd closes.
    reg: Option<Registration<Waker>>,
    sock: UnixStream,
    pending: Vec<u8>,
    done: Arc<AtomicUsize>,
}

impl Body for Echo {
    fn step(&mut self, cx: &mut Cx<'_>) -> Step {
        let reg = self.reg.get_or_insert_with(|| {
            let h = cx.sched().netpoll().handle().expect("netpoller");
            h.register(self.sock.as_raw_fd(), true).expect("register")
        });
        let mut buf = [0u8; 4096];
        loop {
            if !self.pending.is_empty() {
                let ev = reg.readiness(Dir::Write);
                match (&self.sock).write(&self.pending) {
                    Ok(k) => {
                        self.pending.drain(..k);
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        reg.clear_readiness(ev);
                        if reg.park(Dir::Write, cx.waker(), None).is_ok() {
                            return Step::Park;
                        }
                        continue;
                    }
                    Err(e) => panic!("write: {e}"),
                }
            }
            let ev = reg.readiness(Dir::Read);
            match (&self.sock).read(&mut buf) {
                Ok(0) => {
                    self.done.fetch_add(1, Relaxed);
                    return Step::Done;
                }
                Ok(k) => self.pending.extend_from_slice(&buf[..k]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    reg.clear_readiness(ev);
                    if reg.park(Dir::Read, cx.waker(), None).is_ok() {
                        return Step::Park;
                    }
                }
                Err(e) => panic!("read: {e}"),
            }
        }
    }
}

#[test]
fn gs_park_on_sockets() {
    let s = Sched::new(
        Config {
            procs: 2,
            ..Config::default()
        },
        Box::new(NoHooks),
    );
    let done = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..64 {
        let (a, b) = UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        s.spawn(Box::new(Echo {
            reg: None,
            sock: b,
            pending: Vec::new(),
            done: done.clone(),
        }))
        .unwrap();
        a.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        clients.push(a);
    }
    let msg: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let threads: Vec<_> = clients
        .into_iter()
        .map(|mut a| {
            let msg = msg.clone();
            std::thread::spawn(move || {
                let mut w = a.try_clone().unwrap();
                let m2 = msg.clone();
                let writer = std::thread::spawn(move || {
                    w.write_all(&m2).unwrap();
                    w.shutdown(std::net::Shutdown::Write).unwrap();
                });
                let mut got = Vec::new();
                a.read_to_end(&mut got).unwrap();
                writer.join().unwrap();
                assert!(got == msg, "echo mismatch");
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(wait_for(Duration::from_secs(10), || done.load(Relaxed) == 64));
    assert!(wait_for(Duration::from_secs(5), || s.netpoll().waiters() == 0));
    s.stop();
    assert!(s.join(Duration::from_secs(5)));
}

/// Records its deadline in wake order.
struct Ordered {
    until: Instant,
    armed: bool,
    /// (deadline, when the G ran) per wake.
    log: Arc<std::sync::Mutex<Vec<(Instant, Instant)>>>,
}

impl Body for Ordered {
    fn step(&mut self, cx: &mut Cx<'_>) -> Step {
        if !self.armed {
            self.armed = true;
            let h = cx.sched().netpoll().handle().expect("netpoller");
            h.add_timer(self.until, cx.waker()).expect("timer");
            return Step::Park;
        }
        self.log.lock().unwrap().push((self.until, Instant::now()));
        Step::Done
    }
}

/// With one P, Gs run in the order their timers fired: deadline order, up
/// to the scheduler's fairness (every 61st tick a P takes one G from the
/// global queue ahead of its local queue, which holds at most 128 of a
/// batch) and sysmon handoffs (a step the OS stalls finishes late).
#[test]
fn sleepers_wake_in_deadline_order() {
    let n: u32 = 100_000;
    let s = Sched::new(
        Config {
            procs: 1,
            ..Config::default()
        },
        Box::new(NoHooks),
    );
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let start = Instant::now() + Duration::from_millis(300);
    let mut want = Vec::new();
    for i in 0..n {
        let until =
            start + Duration::from_micros(u64::from(i.wrapping_mul(2_654_435_761) % 500_000));
        want.push(until);
        s.spawn(Box::new(Ordered {
            until,
            armed: false,
            log: log.clone(),
        }))
        .unwrap();
    }
    assert!(wait_for(Duration::from_secs(60), || log
        .lock()
        .unwrap()
        .len()
        == n as usize));
    want.sort();
    let log = log.lock().unwrap();
    assert!(
        log.iter().all(|&(until, ran)| ran >= until),
        "a sleeper woke early"
    );
    // 128 Gs span 0.64 ms of deadlines here; 1 ms is the timer resolution.
    // A poll the OS delayed by d (a loaded machine) returns d's worth of
    // timers in one batch, whose tail the fairness rule may reorder: order
    // holds within the worst lateness seen.
    let late = log
        .iter()
        .map(|&(until, ran)| ran - until)
        .max()
        .unwrap_or_default();
    let tolerance = Duration::from_millis(1).max(late);
    let misplaced: Vec<_> = log
        .iter()
        .map(|&(until, _)| until)
        .collect::<Vec<_>>()
        .iter()
        .zip(&want)
        .enumerate()
        .filter(|(_, (&got, &want))| got.max(want) - got.min(want) > tolerance)
        .map(|(k, _)| k)
        .collect();
    let handoffs = s.stats().handoffs as usize;
    assert!(
        misplaced.len() <= handoffs,
        "{} misplaced beyond {tolerance:?} (handoffs {handoffs}): {:?}",
        misplaced.len(),
        &misplaced[..misplaced.len().min(20)]
    );
    s.stop();
    assert!(s.join(Duration::from_secs(5)));
}

/// Spins for `step` per step and yields, until `stop`: a P running these
/// never runs out of local work.
struct Busy {
    step: Duration,
    stop: Arc<std::sync::atomic::AtomicBool>,
    steps: Arc<AtomicUsize>,
}

impl Body for Busy {
    fn step(&mut self, _cx: &mut Cx<'_>) -> Step {
        let t0 = Instant::now();
        while t0.elapsed() < self.step {
            std::hint::spin_loop();
        }
        self.steps.fetch_add(1, Relaxed);
        if self.stop.load(Relaxed) {
            Step::Done
        } else {
            Step::Yield
        }
    }
}

/// Sleeps `period`, `rounds` times, recording how late each wake-up came.
struct Ticker {
    period: Duration,
    rounds: u32,
    due: Option<Instant>,
    late: Arc<std::sync::Mutex<Vec<Duration>>>,
}

impl Body for Ticker {
    fn step(&mut self, cx: &mut Cx<'_>) -> Step {
        let now = Instant::now();
        if let Some(due) = self.due {
            assert!(now >= due, "a timer fired early");
            self.late.lock().unwrap().push(now - due);
        }
        if self.rounds == 0 {
            return Step::Done;
        }
        self.rounds -= 1;
        let due = now + self.period;
        self.due = Some(due);
        let h = cx.sched().netpoll().handle().expect("netpoller");
        h.add_timer(due, cx.waker()).expect("timer");
        Step::Park
    }
}

fn percentile(v: &mut [Duration], p: usize) -> Duration {
    v.sort();
    v.get((v.len() * p / 100).min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

/// Every P is busy with Gs that never let its local queue run dry, so no M
/// ever reaches the idle-time polls (findRunnable steps 8 and 13): timers
/// still fire and I/O still arrives within a bound, because a busy P polls
/// on every 61st schedtick and queues what it finds beside its own work.
#[test]
fn timers_and_io_under_full_load() {
    let procs = 2;
    let s = Sched::new(
        Config {
            procs,
            ..Config::default()
        },
        Box::new(NoHooks),
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy_steps = Arc::new(AtomicUsize::new(0));
    for _ in 0..4 * procs {
        s.spawn(Box::new(Busy {
            step: Duration::from_micros(50),
            stop: stop.clone(),
            steps: busy_steps.clone(),
        }))
        .unwrap();
    }
    let late = Arc::new(std::sync::Mutex::new(Vec::new()));
    for _ in 0..100 {
        s.spawn(Box::new(Ticker {
            period: Duration::from_millis(2),
            rounds: 100,
            due: None,
            late: late.clone(),
        }))
        .unwrap();
    }
    // Echo ping-pong over socketpairs: round trips through the netpoller.
    let done = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (mut a, b) = UnixStream::pair().unwrap();
            b.set_nonblocking(true).unwrap();
            s.spawn(Box::new(Echo {
                reg: None,
                sock: b,
                pending: Vec::new(),
                done: done.clone(),
            }))
            .unwrap();
            std::thread::spawn(move || {
                a.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut rtts = Vec::new();
                let mut buf = [0u8; 64];
                for i in 0..100u8 {
                    let t0 = Instant::now();
                    a.write_all(&[i; 64]).unwrap();
                    a.read_exact(&mut buf).unwrap();
                    rtts.push(t0.elapsed());
                    assert_eq!(buf, [i; 64]);
                    std::thread::sleep(Duration::from_millis(1));
                }
                rtts
            })
        })
        .collect();
    let mut idle_samples = Vec::new();
    while late.lock().unwrap().len() < 100 * 100 {
        idle_samples.push(s.stats().idle_procs);
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut rtts: Vec<Duration> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    stop.store(true, Relaxed);
    let mut late = std::mem::take(&mut *late.lock().unwrap());
    let (t50, t99, tmax) = (
        percentile(&mut late, 50),
        percentile(&mut late, 99),
        percentile(&mut late, 100),
    );
    let (r50, r99, rmax) = (
        percentile(&mut rtts, 50),
        percentile(&mut rtts, 99),
        percentile(&mut rtts, 100),
    );
    let busy_share = idle_samples.iter().filter(|&&n| n == 0).count() * 100 / idle_samples.len();
    eprintln!(
        "full load ({} busy steps, every P busy in {busy_share}% of samples): timer lateness \
         p50 {t50:?} p99 {t99:?} max {tmax:?}; echo rtt p50 {r50:?} p99 {r99:?} max {rmax:?}; {:?}",
        busy_steps.load(Relaxed),
        s.stats()
    );
    // Medians that only a runtime which polls while every P is busy meets
    // (the dedicated-poller design measured timer p99 175 ms and echo p50
    // 164 ms here; this one a few ms), with room for a shared CI machine.
    assert!(t50 < Duration::from_millis(50), "timer p50 {t50:?}");
    // The round trip includes the client threads' own wake-ups, which share
    // the CPUs with Ms spinning at 100%.
    assert!(r50 < Duration::from_millis(50), "echo p50 {r50:?}");
    assert!(tmax < Duration::from_secs(2), "timer max {tmax:?}");
    if busy_share < 90 {
        // Another process took the CPUs: the premise (every P busy) did not
        // hold, though the bounds above did.
        eprintln!("note: the Ps were busy in only {busy_share}% of samples");
    }
    assert!(wait_for(Duration::from_secs(10), || s.stats().goroutines == 0));
    s.stop();
    assert!(s.join(Duration::from_secs(5)));
}

/// Spins `spin` in one step, never yielding.
struct Hog {
    spin: Duration,
    done: Arc<AtomicUsize>,
}

impl Body for Hog {
    fn step(&mut self, _cx: &mut Cx<'_>) -> Step {
        let t0 = Instant::now();
        while t0.elapsed() < self.spin {
            std::hint::spin_loop();
        }
        self.done.fetch_add(1, Relaxed);
        Step::Done
    }
}

/// One P, held by a G in one long step (a CPU hog that never yields, as a
/// Python coroutine stuck in a loop would be): no M polls at all. sysmon
/// polls once nobody has for 10 ms, which readies the sleepers, and then
/// retakes the P for them, so timers still fire within a bound.
#[test]
fn timers_fire_while_a_long_step_holds_the_only_p() {
    let s = Sched::new(
        Config {
            procs: 1,
            ..Config::default()
        },
        Box::new(NoHooks),
    );
    let late = Arc::new(std::sync::Mutex::new(Vec::new()));
    for _ in 0..10 {
        s.spawn(Box::new(Ticker {
            period: Duration::from_millis(5),
            rounds: 60,
            due: None,
            late: late.clone(),
        }))
        .unwrap();
    }
    std::thread::sleep(Duration::from_millis(20));
    let hog_done = Arc::new(AtomicUsize::new(0));
    s.spawn(Box::new(Hog {
        spin: Duration::from_millis(250),
        done: hog_done.clone(),
    }))
    .unwrap();
    assert!(wait_for(Duration::from_secs(10), || late
        .lock()
        .unwrap()
        .len()
        == 600));
    assert_eq!(hog_done.load(Relaxed), 1);
    let mut late = std::mem::take(&mut *late.lock().unwrap());
    let (t50, t99, tmax) = (
        percentile(&mut late, 50),
        percentile(&mut late, 99),
        percentile(&mut late, 100),
    );
    eprintln!(
        "long step: timer lateness p50 {t50:?} p99 {t99:?} max {tmax:?}; {:?}",
        s.stats()
    );
    // sysmon: at most ~10 ms stale + its pace + the 10 ms retake; a few ms
    // expected. Without the retake most ticks would wait out the 250 ms
    // hog; the bound leaves room for a loaded CI machine.
    assert!(t99 < Duration::from_millis(150), "timer p99 {t99:?}");
    assert!(s.stats().handoffs >= 1, "the hog's P was never retaken");
    s.stop();
    assert!(s.join(Duration::from_secs(5)));
}
