//! loom model tests for the core's lock-free protocols.
//!
//! Built only with `RUSTFLAGS="--cfg loom"`, where every atomic, mutex,
//! condvar and thread in the crate comes from loom (see `crate::loom`) and
//! `runq::CAPACITY` is 4. Run them with
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
//!     cargo test -p gmprt-core --release --lib loom_tests
//! ```
//!
//! Models run through [`check`], which prints how many executions each one
//! explored (add `-- --nocapture`). Those given a preemption bound say why;
//! the rest are exhaustive. `LOOM_MAX_PREEMPTIONS` overrides every bound.
//!
//! Every model ends in exactly-once accounting: each G a run-queue model
//! allocated comes out exactly once across owner pops, steals and overflow;
//! each park in a state-word model has exactly one party that enqueues the
//! G; each G in a scheduler model runs each of its steps exactly once.

mod chan;
mod g;
mod idle;
mod netpoll;
mod runq;
mod sched;

use crate::g::GPtr;
use crate::loom::lock;
use crate::loom::sync::Mutex;

/// Explores every execution of `f`, up to `bound` preemptions per execution
/// when given (`LOOM_MAX_PREEMPTIONS`, if set, wins over it), and reports on
/// stderr how many executions that took (`--nocapture` shows it).
fn check(name: &str, bound: Option<usize>, f: impl Fn() + Sync + Send + 'static) {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    let mut b = ::loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = bound;
    }
    let bound = b.preemption_bound;
    // A std atomic: loom does not model it, it only counts executions.
    let runs = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    let start = std::time::Instant::now();
    b.check(move || {
        counter.fetch_add(1, Relaxed);
        f();
    });
    eprintln!(
        "loom model {name}: {} executions (preemption bound {bound:?}) in {:.1?}",
        runs.load(Relaxed),
        start.elapsed()
    );
}

/// `n` fresh idle Gs. Free them with [`free`] at the end of the model.
fn alloc(n: usize) -> Vec<GPtr> {
    (0..n).map(|_| GPtr::alloc()).collect()
}

/// Frees the Gs of one model execution.
fn free(gs: Vec<GPtr>) {
    for g in gs {
        // SAFETY: every G came from `GPtr::alloc` in `alloc`, appears once in
        // `gs`, and the model has joined every thread that held a copy, so no
        // copy is used after this.
        unsafe { g.free() };
    }
}

/// Asserts that `seen` holds every G of `all` exactly once and nothing else.
/// Failures name Gs by their index in `all`.
#[track_caller]
fn assert_exactly_once(all: &[GPtr], seen: &[GPtr]) {
    let idx: Vec<Option<usize>> = seen
        .iter()
        .map(|s| all.iter().position(|g| g == s))
        .collect();
    for i in 0..all.len() {
        let n = idx.iter().filter(|j| **j == Some(i)).count();
        assert_eq!(n, 1, "G #{i} seen {n} times; seen (as indices) = {idx:?}");
    }
    assert!(
        idx.iter().all(Option::is_some),
        "a G nobody allocated turned up: {idx:?}"
    );
}

/// The overflow sink for run-queue models: the global queue, as a `Vec`.
#[derive(Default)]
struct VecOverflow(Mutex<Vec<GPtr>>);

impl crate::runq::Overflow for VecOverflow {
    fn push_batch(&self, batch: &mut dyn Iterator<Item = GPtr>) {
        lock(&self.0).extend(batch);
    }
}

impl VecOverflow {
    fn take(&self) -> Vec<GPtr> {
        std::mem::take(&mut *lock(&self.0))
    }
}
