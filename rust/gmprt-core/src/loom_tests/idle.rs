//! Models of idle Ms: an M handed a P by a G that blocks (`Sched::blocking`
//! → `handoffp`), meeting that G's M back from its call.

use super::check;
use super::sched::{shutdown, FnBody, Tally};
use crate::{Config, Cx, NoHooks, Sched, Step};

/// One P and a G that blocks (`Sched::blocking`), so its M hands the P to a
/// second, spinning M: two Ms for one P. The G's M may come back from its
/// call before the new M looks for work and wait on `pwait`; the new M
/// then gives it the P at once and goes idle. After G0 ran, the main thread
/// spawns G1, whose `wakep` must start an M for it: a spinning count left
/// behind by an M gone idle would make `wakep` skip, and G1 would never run.
/// (Preemption bound 2, as the other scheduler models: see `sched.rs`.)
#[test]
fn blocking_g_hands_its_p_to_a_new_spinner() {
    check(
        "idle::blocking_g_hands_its_p_to_a_new_spinner",
        Some(2),
        || {
            let s = Sched::new(
                Config {
                    procs: 1,
                    max_threads: 3,
                    ..Config::default()
                },
                Box::new(NoHooks),
            );
            let tally = Tally::new(2);
            let t = tally.clone();
            s.spawn(Box::new(FnBody(move |cx: &mut Cx<'_>| {
                // Go's entersyscallblock: the P goes to another M meanwhile.
                cx.sched().blocking(|| ());
                t.ran(0);
                Step::Done
            })))
            .unwrap();
            tally.wait(|r| r[0] == 1);
            let t = tally.clone();
            s.spawn(Box::new(FnBody(move |_: &mut Cx<'_>| {
                t.ran(1);
                Step::Done
            })))
            .unwrap();
            tally.wait(|r| r[1] == 1);
            let threads = s.stats().threads;
            assert!(threads <= 3, "{threads} Ms for one P and two Gs");
            shutdown(s);
            assert_eq!(tally.snapshot(), [1, 1], "each G runs exactly once");
        },
    );
}
