//! Models of idle Ms: an M handed a P by a G that blocks (`Sched::blocking`
//! → `handoffp`), and an idle M retiring after its keep-alive while a
//! `startm` hands it a P ("Retiring idle Ms", `sched/idle.rs`).
//!
//! Under loom an idle M's timed sleep (`Note::sleep_timeout`) times out at
//! once whenever its slot is empty, the earliest a real timeout could fire,
//! so the timeout's lock-and-look races every step of a handoff: the pop
//! under `Sched::lock`, the wakeup after it. A P handed to an M that then
//! exits would strand the G it was handed for, every thread would block,
//! and loom would report the deadlock.

use super::check;
use super::sched::{shutdown, FnBody, Tally};
use crate::{Config, Cx, NoHooks, Sched, Step};

/// One P and a G that blocks (`Sched::blocking`), so its M hands the P to a
/// second, spinning M: two Ms for one P, so once idle one of them may
/// retire (the other is kept: `mcount <= procs`). The G's M may come back
/// from its call before the new M looks for work and wait on `pwait`; the
/// new M then gives it the P at once and goes idle, and must not stay
/// counted as spinning. After G0 ran, the main thread spawns G1, whose
/// `wakep` pops whichever M is idle, possibly one timing out at that very
/// moment, or starts a third. G1 must run exactly once, and every M must
/// still exit at `stop`. Before the timed-out M looked itself up under the
/// lock (it exited when its sleep returned empty), loom found G1 stranded;
/// so it did with the spinning count left behind. (Preemption bound 2, as
/// the other scheduler models: see `sched.rs`.)
#[test]
fn idle_m_times_out_while_startm_hands_it_a_p() {
    check(
        "idle::idle_m_times_out_while_startm_hands_it_a_p",
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
