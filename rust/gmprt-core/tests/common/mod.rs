//! The harness the core's integration tests share: Gs from closures, a
//! scheduler with no hooks, and bounded waits (a lost wakeup fails the test
//! with a message instead of hanging it). Each test file uses what it needs.

#![allow(dead_code)]

use std::sync::Arc;
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
