//! The harness the core's integration tests share: Gs from closures, a
//! scheduler with no hooks, and bounded waits (a lost wakeup fails the test
//! with a message instead of hanging it). Each test file uses what it needs.

#![allow(dead_code)]

use std::sync::mpsc::Receiver;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread;
use std::time::{Duration, Instant};

use gmprt_core::{Body, Config, Cx, NoHooks, Sched, Step};

/// How long any one wait may take before the test fails. Generous: each
/// file runs in a few seconds on 2 cores.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A G body from a closure.
pub struct FnBody<F>(pub F);

impl<F: FnMut(&mut Cx<'_>) -> Step + Send + 'static> Body for FnBody<F> {
    fn step(&mut self, cx: &mut Cx<'_>) -> Step {
        (self.0)(cx)
    }
}

/// A boxed G body from a closure.
pub fn body(f: impl FnMut(&mut Cx<'_>) -> Step + Send + 'static) -> Box<dyn Body> {
    Box::new(FnBody(f))
}

/// Spawns a G running `f` on `s`.
pub fn go(s: &Arc<Sched>, f: impl FnMut(&mut Cx<'_>) -> Step + Send + 'static) {
    s.spawn(body(f)).expect("spawn");
}

pub fn new_sched(procs: usize) -> Arc<Sched> {
    Sched::new(
        Config {
            procs,
            ..Config::default()
        },
        Box::new(NoHooks),
    )
}

/// Polls `done` until it holds; fails the test naming `what` after
/// [`DEADLINE`].
#[track_caller]
pub fn wait_until(s: &Sched, what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for {what}; stats: {:?}",
            s.stats()
        );
        thread::sleep(Duration::from_micros(200));
    }
}

/// In a G's step: the result of the poll expression `$poll`, or ends the
/// step parked on `$op` (an `IoWait`, `Dial` or `FdWait`), to poll again
/// once woken. (`#[macro_use] mod common;` brings it in.)
#[macro_export]
macro_rules! await_io {
    ($cx:expr, $poll:expr, $op:expr) => {
        loop {
            match $poll {
                std::task::Poll::Ready(r) => break r,
                std::task::Poll::Pending => {
                    if $op.park($cx.waker()) {
                        return gmprt_core::Step::Park;
                    }
                }
            }
        }
    };
}

/// The next message on `rx`; fails the test naming `what` after
/// [`DEADLINE`].
#[track_caller]
pub fn recv<T>(rx: &Receiver<T>, what: &str) -> T {
    rx.recv_timeout(DEADLINE)
        .unwrap_or_else(|e| panic!("no {what} within {DEADLINE:?}: {e}"))
}

/// Waits for every G to finish and nothing to be parked on the netpoller,
/// then stops and joins the runtime.
#[track_caller]
pub fn finish_io(s: Arc<Sched>) {
    wait_until(&s, "every G to finish", || s.stats().goroutines == 0);
    wait_until(&s, "no netpoll waiters", || s.netpoll().waiters() == 0);
    s.stop();
    assert!(s.join(Duration::from_secs(10)), "an M did not exit");
}

/// Taken shared by every socket test, and exclusively by those that change
/// the process's descriptor limit (which would starve the others of fds).
static FDS: RwLock<()> = RwLock::new(());

pub fn fds_shared() -> RwLockReadGuard<'static, ()> {
    FDS.read().unwrap_or_else(|p| p.into_inner())
}

pub fn fds_exclusive() -> RwLockWriteGuard<'static, ()> {
    FDS.write().unwrap_or_else(|p| p.into_inner())
}
