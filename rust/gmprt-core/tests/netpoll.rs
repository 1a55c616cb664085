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
    log: Arc<std::sync::Mutex<Vec<Instant>>>,
}

impl Body for Ordered {
    fn step(&mut self, cx: &mut Cx<'_>) -> Step {
        if !self.armed {
            self.armed = true;
            let h = cx.sched().netpoll().handle().expect("netpoller");
            h.add_timer(self.until, cx.waker()).expect("timer");
            return Step::Park;
        }
        self.log.lock().unwrap().push(self.until);
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
    // 128 Gs span 0.64 ms of deadlines here; 1 ms is the timer resolution.
    let tolerance = Duration::from_millis(1);
    let misplaced: Vec<_> = log
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
