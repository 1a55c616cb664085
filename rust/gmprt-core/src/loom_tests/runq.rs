//! Models of `runq`: the owner's push/pop (with runnext and overflow) racing
//! thieves. `CAPACITY` is 4 here, so a handful of Gs reaches every path:
//! wrap-around, a full ring, `push_slow`, and a thief's CAS losing to a pop.

use ::loom::thread;

use super::{alloc, assert_exactly_once, check, free, VecOverflow};
use crate::g::GPtr;
use crate::runq::{self, Local, Stealer, CAPACITY};

/// A thief P: steals once from `victim` into a fresh, empty queue of its own
/// (`steal_from` requires an empty ring) and drains it. Returns every G it got.
fn steal_and_drain(victim: &Stealer, steal_runnext: bool) -> Vec<GPtr> {
    let (mut mine, _) = runq::new();
    let mut got = Vec::new();
    if let Some((g, n)) = mine.steal_from(victim, steal_runnext) {
        assert!(
            (1..=CAPACITY / 2).contains(&n),
            "a steal takes at most half a ring, took {n}"
        );
        got.push(g);
        got.extend(drain(&mut mine));
        assert_eq!(got.len(), n as usize, "steal_from miscounted what it stole");
    }
    assert!(mine.is_empty());
    got
}

/// Pops until the queue is empty.
fn drain(q: &mut Local) -> Vec<GPtr> {
    let mut out = Vec::new();
    while let Some((g, _)) = q.pop(true) {
        out.push(g);
    }
    assert!(q.is_empty(), "pop returned None on a non-empty queue");
    out
}

/// Owner push/pop, runnext included, against one thief that does not take
/// runnext. Each round: two runnext pushes (the second kicks the first to the
/// ring), a tail push, then a pop, which must return the runnext G.
#[test]
fn owner_and_runnext_vs_stealer() {
    check("runq::owner_and_runnext_vs_stealer", None, || {
        let gs = alloc(6);
        let (mut local, stealer) = runq::new();
        let overflow = VecOverflow::default();
        let thief = thread::spawn(move || steal_and_drain(&stealer, false));

        let mut seen = Vec::new();
        for r in gs.chunks(3) {
            local.push(r[0], true, &overflow);
            local.push(r[1], true, &overflow);
            local.push(r[2], false, &overflow);
            // The thief never takes runnext, so the owner always gets it.
            let (g, inherit) = local.pop(true).expect("queue cannot be empty here");
            assert!(g == r[1] && inherit, "pop(true) must return runnext first");
            seen.push(g);
        }
        seen.extend(drain(&mut local));
        let stolen = thief.join().unwrap();
        assert!(!stolen.contains(&gs[1]) && !stolen.contains(&gs[4]));
        seen.extend(stolen);
        seen.extend(overflow.take());
        assert_exactly_once(&gs, &seen);
        drop(local);
        free(gs);
    });
}

/// `pop(false)` skips runnext while the ring has Gs, and takes it once the
/// ring is empty; a thief races it for the ring.
#[test]
fn pop_skipping_runnext_vs_stealer() {
    check("runq::pop_skipping_runnext_vs_stealer", None, || {
        let gs = alloc(4);
        let (mut local, stealer) = runq::new();
        let overflow = VecOverflow::default();
        local.push(gs[0], false, &overflow);
        local.push(gs[1], false, &overflow);
        local.push(gs[2], true, &overflow);
        let thief = thread::spawn(move || steal_and_drain(&stealer, false));

        let mut seen = Vec::new();
        let mut got_runnext = false;
        let mut pushed = false;
        while let Some((g, inherit)) = local.pop(false) {
            assert_eq!(inherit, g == gs[2], "inherit flags exactly the runnext G");
            if inherit {
                got_runnext = true;
            } else {
                assert!(!got_runnext, "pop(false) took runnext before the ring");
            }
            seen.push(g);
            if !inherit && !pushed {
                // Refill behind the pop, while the thief may be mid-steal.
                local.push(gs[3], false, &overflow);
                pushed = true;
            }
        }
        let stolen = thief.join().unwrap();
        assert!(got_runnext && !stolen.contains(&gs[2]));
        seen.extend(stolen);
        seen.extend(overflow.take());
        assert_exactly_once(&gs, &seen);
        drop(local);
        free(gs);
    });
}

/// Two thieves against the owner, who pops while they steal. (Preemption
/// bound 3, about 36 s in release: 4 runs for many minutes.)
#[test]
fn two_stealers() {
    check("runq::two_stealers", Some(3), || {
        let gs = alloc(5);
        let (mut local, stealer) = runq::new();
        let overflow = VecOverflow::default();
        for &g in &gs[..4] {
            local.push(g, false, &overflow);
        }
        let s1 = stealer.clone();
        let t1 = thread::spawn(move || steal_and_drain(&s1, false));
        let t2 = thread::spawn(move || steal_and_drain(&stealer, false));

        let mut seen = Vec::new();
        if let Some((g, _)) = local.pop(true) {
            seen.push(g);
        }
        local.push(gs[4], false, &overflow);
        seen.extend(drain(&mut local));
        seen.extend(t1.join().unwrap());
        seen.extend(t2.join().unwrap());
        seen.extend(overflow.take());
        assert_exactly_once(&gs, &seen);
        drop(local);
        free(gs);
    });
}

/// The owner pushes past `CAPACITY` (so `push_slow` moves half the ring plus
/// the new G to the overflow) while a thief steals; a `push_slow` whose CAS
/// loses to the thief must retry and find room. (Preemption bound 4, about
/// 7 s in release; 6 takes 37 s and finds nothing more.)
#[test]
fn steal_during_overflow() {
    check("runq::steal_during_overflow", Some(4), || {
        let n = CAPACITY as usize + 3;
        let gs = alloc(n);
        let (mut local, stealer) = runq::new();
        let overflow = VecOverflow::default();
        let thief = thread::spawn(move || steal_and_drain(&stealer, false));

        for &g in &gs {
            local.push(g, false, &overflow);
        }
        let mut seen = drain(&mut local);
        let stolen = thief.join().unwrap();
        let spilled = overflow.take();
        // Each spill is half a ring plus the pushed G.
        assert_eq!(spilled.len() % (CAPACITY as usize / 2 + 1), 0);
        seen.extend(stolen);
        seen.extend(spilled);
        assert_exactly_once(&gs, &seen);
        drop(local);
        free(gs);
    });
}

/// A thief allowed to take runnext (Go's last steal pass) against the owner
/// replacing runnext (which kicks the old G into the ring) and popping it.
/// The thief's runnext CAS can lose to the owner's swap and must then retry
/// and steal the kicked G from the ring instead.
#[test]
fn runnext_steal() {
    check("runq::runnext_steal", None, || {
        let gs = alloc(3);
        let (mut local, stealer) = runq::new();
        let overflow = VecOverflow::default();
        local.push(gs[0], true, &overflow);
        let thief = thread::spawn(move || steal_and_drain(&stealer, true));

        local.push(gs[1], true, &overflow);
        let mut seen = Vec::new();
        if let Some((g, inherit)) = local.pop(true) {
            assert_eq!(inherit, g == gs[1], "only gs[1] can still be in runnext");
            seen.push(g);
        }
        local.push(gs[2], false, &overflow);
        seen.extend(drain(&mut local));
        let stolen = thief.join().unwrap();
        assert!(stolen.len() <= 1, "runnext or a 1-G ring: one G at most");
        seen.extend(stolen);
        assert!(overflow.take().is_empty());
        assert_exactly_once(&gs, &seen);
        drop(local);
        free(gs);
    });
}

/// A thief steals from a victim that is itself being stolen from by a third
/// P, while the victim's owner pops (tokio's `chained_steal`): the middle
/// P's queue is both a destination and a victim.
#[test]
fn chained_steal() {
    check("runq::chained_steal", None, || {
        let gs = alloc(4);
        let (mut a, a_stealer) = runq::new();
        let overflow = VecOverflow::default();
        for &g in &gs {
            a.push(g, false, &overflow);
        }
        let (mut b, b_stealer) = runq::new();
        // B (this thread) steals from A; C steals from B meanwhile.
        let c = thread::spawn(move || steal_and_drain(&b_stealer, true));
        let a_pop = thread::spawn(move || {
            let got = drain(&mut a);
            drop(a);
            got
        });

        let mut seen = Vec::new();
        if let Some((g, _)) = b.steal_from(&a_stealer, false) {
            seen.push(g);
        }
        seen.extend(drain(&mut b));
        seen.extend(c.join().unwrap());
        seen.extend(a_pop.join().unwrap());
        assert!(overflow.take().is_empty());
        assert_exactly_once(&gs, &seen);
        drop(b);
        free(gs);
    });
}
