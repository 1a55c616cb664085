//! Models of the G state word (`g.rs`): a wake racing the step that is about
//! to park, stale wakes from an older park, and concurrent wakers.
//!
//! "Responsible" below means "must put the G on a run queue": a waker whose
//! `wake` returned `Wake::Enqueue`, or the M whose `commit_park` returned false.
//! Exactly one party is responsible for each readying, never both (the G
//! would run on two Ms) and never neither (a lost wake).

use ::loom::cell::UnsafeCell;
use ::loom::thread;

use super::check;

use crate::g::{GPtr, Status, Wake};
use crate::{Body, Cx, Step};

struct Nop;
impl Body for Nop {
    fn step(&mut self, _cx: &mut Cx<'_>) -> Step {
        Step::Done
    }
}

/// A fresh G, made runnable and then running on the calling thread (as an M
/// that popped it would). Returns the G and its running generation.
fn running_g() -> (GPtr, u64) {
    let g = GPtr::alloc();
    g.prepare(1, Box::new(Nop));
    let gen = g.start_running();
    (g, gen)
}

fn free_g(g: GPtr) {
    // SAFETY: `g` came from `GPtr::alloc` in `running_g`, and every thread
    // that held a copy has been joined.
    unsafe { g.free() };
}

/// A value owned by whoever owns the G: stands in for the G's stack (written
/// by its step) or a value handed to it by a waker (a channel send). loom
/// flags a data race if the state word's orderings do not order the accesses.
/// (loom's own Arc: `UnsafeCell` is not `Sync`, and loom threads do not
/// need it to be.)
#[derive(Clone)]
struct Slot(::loom::sync::Arc<UnsafeCell<u32>>);

impl Slot {
    fn new() -> Slot {
        Slot(::loom::sync::Arc::new(UnsafeCell::new(0)))
    }
    fn set(&self, v: u32) {
        // SAFETY: the models call this only while they own the G (or before
        // publishing it), which is the protocol under test; loom checks it.
        self.0.with_mut(|p| unsafe { *p = v });
    }
    fn get(&self) -> u32 {
        // SAFETY: as in `set`.
        self.0.with(|p| unsafe { *p })
    }
}

/// A waker calls `wake(gen)` while the owner runs `commit_park(gen)` (the
/// driver registered the wait during the step, Go's `gopark(unlockf)`).
/// Exactly one of them is responsible for the G, and what each side wrote
/// before is visible to the side that ends up owning the G.
#[test]
fn wake_while_running() {
    check("g::wake_while_running", None, || {
        let (g, gen) = running_g();
        let stack = Slot::new();
        let handoff = Slot::new();

        let (st, ho) = (stack.clone(), handoff.clone());
        let waker = thread::spawn(move || {
            ho.set(7); // the value sent to the parked G
            let w = g.wake(gen);
            if w == Wake::Enqueue {
                // We won a parked G: its last step's writes are visible.
                assert_eq!(st.get(), 1);
            }
            w
        });

        stack.set(1); // the step's last write before the park
        let parked = g.commit_park(gen);
        if !parked {
            // Woken during the step: this M requeues it and must see the
            // value the waker wrote before its wake.
            assert_eq!(handoff.get(), 7);
        }
        let w = waker.join().unwrap();

        assert_ne!(w, Wake::Stale, "a wake of the current park is never stale");
        let responsible = [w == Wake::Enqueue, !parked];
        assert_eq!(
            responsible.iter().filter(|r| **r).count(),
            1,
            "wake = {w:?}, commit_park = {parked}"
        );
        assert_eq!(w == Wake::Notified, !parked);
        assert_eq!(g.status(), Status::Runnable);
        assert_eq!(g.generation(), gen);
        free_g(g);
    });
}

/// The owner parks while two wakers race on the same park: one waker wins
/// (`Enqueue` or `Notified`), the other is stale, and exactly one party is
/// responsible for the G.
#[test]
fn two_wakers_and_park() {
    check("g::two_wakers_and_park", None, || {
        let (g, gen) = running_g();
        let w1 = thread::spawn(move || g.wake(gen));
        let w2 = thread::spawn(move || g.wake(gen));
        let parked = g.commit_park(gen);
        let ws = [w1.join().unwrap(), w2.join().unwrap()];

        assert_eq!(
            ws.iter().filter(|w| **w != Wake::Stale).count(),
            1,
            "{ws:?}"
        );
        let enqueues = ws.iter().filter(|w| **w == Wake::Enqueue).count();
        assert_eq!(
            enqueues + usize::from(!parked),
            1,
            "wakes = {ws:?}, parked = {parked}"
        );
        assert_eq!(g.status(), Status::Runnable);
        free_g(g);
    });
}

/// Two wakers of an already parked G: exactly one gets `Enqueue`.
#[test]
fn two_wakers_of_parked_g() {
    check("g::two_wakers_of_parked_g", None, || {
        let (g, gen) = running_g();
        assert!(g.commit_park(gen));
        let w1 = thread::spawn(move || g.wake(gen));
        let w2 = thread::spawn(move || g.wake(gen));
        let ws = [w1.join().unwrap(), w2.join().unwrap()];
        let winners: Vec<_> = ws.iter().filter(|w| **w == Wake::Enqueue).collect();
        assert_eq!(winners.len(), 1, "{ws:?}");
        assert!(ws.contains(&Wake::Stale), "{ws:?}");
        assert_eq!(g.status(), Status::Runnable);
        free_g(g);
    });
}

/// A wake from an older park (the G was woken, ran again and is parking
/// anew) is a no-op however it interleaves with the new park, and leaves the
/// new park's wake working.
#[test]
fn stale_wake_is_noop() {
    check("g::stale_wake_is_noop", None, || {
        let (g, gen1) = running_g();
        assert!(g.commit_park(gen1));
        assert_eq!(g.wake(gen1), Wake::Enqueue);
        let gen2 = g.start_running();
        assert_ne!(gen1, gen2);

        let stale = thread::spawn(move || g.wake(gen1));
        let parked = g.commit_park(gen2);
        assert_eq!(stale.join().unwrap(), Wake::Stale);
        assert!(parked, "a stale wake must not notify the new park");
        assert_eq!(g.status(), Status::Parked);
        assert_eq!(g.generation(), gen2);
        assert_eq!(g.wake(gen1), Wake::Stale);
        assert_eq!(g.wake(gen2), Wake::Enqueue);
        assert_eq!(
            g.wake(gen2),
            Wake::Stale,
            "a second wake of one park is stale"
        );
        free_g(g);
    });
}

/// A wake racing a yield or a finish never asks the waker to enqueue: the M
/// requeues a yielding G itself, and a finished G must not run again.
#[test]
fn wake_vs_yield_and_finish() {
    check("g::wake_vs_yield_and_finish", None, || {
        let (g, gen1) = running_g();
        let waker = thread::spawn(move || [g.wake(gen1), g.wake(gen1)]);

        // Yield: the M requeues, then runs it again and finishes it.
        g.yield_now(gen1);
        assert_eq!(g.status(), Status::Runnable);
        let gen2 = g.start_running();
        let late = thread::spawn(move || g.wake(gen2));
        g.finish(gen2);

        let ws = waker.join().unwrap();
        let late = late.join().unwrap();
        assert!(!ws.contains(&Wake::Enqueue), "{ws:?}");
        assert!(
            ws[1] == Wake::Stale,
            "only the first wake can notify: {ws:?}"
        );
        assert_ne!(late, Wake::Enqueue);
        assert_eq!(g.status(), Status::Idle);
        assert_eq!(g.wake(gen2), Wake::Stale);
        free_g(g);
    });
}

/// A cancel request (here a Relaxed flag, the weakest a binding could use)
/// written before an interrupt reaches a G whose step is about to park: the
/// step either sees the request (and does not park), or its park fails, or
/// the interrupt readies the parked G — and the step after the wake sees the
/// request. Never a G asleep with the request unseen ("Interrupts" in `g`).
#[test]
fn interrupt_vs_park() {
    use ::loom::sync::atomic::{AtomicBool, Ordering::Relaxed};
    use ::loom::sync::Arc;
    check("g::interrupt_vs_park", None, || {
        let (g, gen) = running_g();
        let req = Arc::new(AtomicBool::new(false));
        let r = req.clone();
        let canceller = thread::spawn(move || {
            r.store(true, Relaxed);
            g.interrupt(1)
        });

        let saw = req.load(Relaxed);
        let parked = if saw {
            g.yield_now(gen); // cancelled: raise instead of parking
            false
        } else {
            g.commit_park(gen)
        };
        let w = canceller.join().unwrap();

        assert_ne!(w, Wake::Stale, "the G is alive");
        // Exactly one party readies the G: the canceller for a committed
        // park, the M otherwise.
        assert_eq!(parked, w == Wake::Enqueue, "saw = {saw}, wake = {w:?}");
        assert_eq!(g.status(), Status::Runnable);
        let _gen2 = g.start_running();
        assert!(req.load(Relaxed), "the step after an interrupt sees why");
        free_g(g);
    });
}

/// The interrupt lands while the G is still in a run queue: the step that
/// starts afterwards sees the request, and a step that started first has
/// its park undone.
#[test]
fn interrupt_vs_start() {
    use ::loom::sync::atomic::{AtomicBool, Ordering::Relaxed};
    use ::loom::sync::Arc;
    check("g::interrupt_vs_start", None, || {
        let g = GPtr::alloc();
        g.prepare(1, Box::new(Nop));
        let req = Arc::new(AtomicBool::new(false));
        let r = req.clone();
        let canceller = thread::spawn(move || {
            r.store(true, Relaxed);
            g.interrupt(1)
        });

        let gen = g.start_running();
        let saw = req.load(Relaxed);
        let parked = !saw && g.commit_park(gen);
        if saw {
            g.yield_now(gen);
        }
        let w = canceller.join().unwrap();

        assert_eq!(parked, w == Wake::Enqueue, "saw = {saw}, wake = {w:?}");
        assert_eq!(g.status(), Status::Runnable);
        g.start_running();
        assert!(req.load(Relaxed));
        free_g(g);
    });
}

/// An interrupt aimed at a life of a G that already finished never readies
/// the next life parked in the same memory (a `GRef` outliving its G).
#[test]
fn interrupt_of_old_life() {
    check("g::interrupt_of_old_life", None, || {
        let (g, gen1) = running_g();
        let canceller = thread::spawn(move || g.interrupt(1));

        g.finish(gen1);
        g.prepare(2, Box::new(Nop));
        let gen2 = g.start_running();
        let parked = g.commit_park(gen2);
        let w = canceller.join().unwrap();

        assert!(parked, "life 2's park is never undone by life 1's cancel");
        assert_ne!(w, Wake::Enqueue, "{w:?}");
        assert_eq!(g.status(), Status::Parked);
        free_g(g);
    });
}
