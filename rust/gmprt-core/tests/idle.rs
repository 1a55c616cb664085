//! Idle Ms: none stays counted as spinning, so work readied later still
//! wakes one.

mod common;

use std::sync::atomic::{AtomicU32, Ordering::*};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{go, new_sched, wait_until};
use gmprt_core::{Sched, Step};

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
