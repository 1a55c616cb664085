//! Models of a cancel racing the completion of a parked channel operation
//! (gmprt's cancellation, DESIGN §6): the canceller interrupts the G, and
//! the G, on waking, gives its operation up with `Op::cancel` — the same
//! one CAS out of `PENDING` a claimer (a sender, a receiver, a select's
//! other case) makes (`sudog`, "Parker"). Whatever the interleaving, the
//! operation resolves to exactly one of "done" and "cancelled", and every
//! value ends in exactly one place.
//!
//! The owner here is a thread (`Notify::Thread`): what the G state word
//! adds (the interrupt reaching a G that is about to park) is modelled in
//! `g` ("interrupt_vs_park"); these models are about the operation.

use ::loom::thread;

use super::check;

use crate::chan::{
    select_done, select_or_park, Case, Chan, RecvPark, SelectPark, Selected, SendPark,
    TryRecvError, TrySendError,
};
use crate::loom::sync::Arc;
use crate::sudog::{Done, Notify};

/// A receive parked on an unbuffered channel is cancelled while a sender
/// hands it a value: either the receive got the value (and the cancel
/// reports that) or the sender got its value back. Never both, never lost.
#[test]
fn cancel_vs_send_handoff() {
    check("chan::cancel_vs_send_handoff", None, || {
        let ch = Arc::new(Chan::<u32>::new(0));
        let RecvPark::Parked(mut op) = ch.recv_or_park(Notify::current_thread()) else {
            panic!("nothing to receive yet");
        };
        let c = ch.clone();
        let sender = thread::spawn(move || c.try_send(7));

        let done = op.cancel();
        let sent = sender.join().unwrap();
        match done {
            Done::Ok(0) => {
                assert!(sent.is_ok(), "the receive won, so the send completed");
                assert_eq!(op.take(0), Some(7));
            }
            Done::Expired => {
                assert!(
                    matches!(sent, Err(TrySendError::Full(7))),
                    "the cancel won: the sender keeps its value: {sent:?}"
                );
                assert_eq!(op.take(0), None, "a cancelled receive holds nothing");
            }
            d => panic!("unexpected {d:?}"),
        }
        assert!(matches!(ch.try_recv(), Err(TryRecvError::Empty)));
    });
}

/// A send parked on an unbuffered channel is cancelled while a receiver
/// takes from it: the value is received, or comes back to the owner.
#[test]
fn cancel_vs_recv_handoff() {
    check("chan::cancel_vs_recv_handoff", None, || {
        let ch = Arc::new(Chan::<u32>::new(0));
        let SendPark::Parked(mut op) = ch.send_or_park(9, Notify::current_thread()) else {
            panic!("nobody receives yet");
        };
        let c = ch.clone();
        let receiver = thread::spawn(move || c.try_recv());

        let done = op.cancel();
        let got = receiver.join().unwrap();
        let back = op.take_all();
        match done {
            Done::Ok(0) => {
                assert_eq!(got, Ok(9));
                assert!(back.is_empty(), "sent, so nothing comes back");
            }
            Done::Expired => {
                assert_eq!(got, Err(TryRecvError::Empty));
                assert_eq!(back, vec![9], "a cancelled send gives its value back");
            }
            d => panic!("unexpected {d:?}"),
        }
    });
}

/// A select over two receives is cancelled while both channels get a
/// sender: at most one case wins, the cancel reports it if so, and every
/// sender whose case did not win keeps its value.
#[test]
fn cancel_vs_select_win() {
    check("chan::cancel_vs_select_win", Some(3), || {
        let a = Arc::new(Chan::<u32>::new(0));
        let b = Arc::new(Chan::<u32>::new(0));
        let mut cases = [Case::Recv(&*a), Case::Recv(&*b)];
        let SelectPark::Parked(mut op) = select_or_park(&mut cases, Notify::current_thread())
        else {
            panic!("nothing ready yet");
        };
        let (ca, cb) = (a.clone(), b.clone());
        let sa = thread::spawn(move || ca.try_send(1));
        let sb = thread::spawn(move || cb.try_send(2));

        let done = op.cancel();
        let (ra, rb) = (sa.join().unwrap(), sb.join().unwrap());
        let delivered = usize::from(ra.is_ok()) + usize::from(rb.is_ok());
        match select_done(&mut op, done, |_| false) {
            Ok(Selected::Recv(i, v)) => {
                assert_eq!(delivered, 1, "one case won: {ra:?} {rb:?}");
                assert_eq!(v, Some([1, 2][i]));
                assert!([&ra, &rb][i].is_ok());
            }
            Err(Done::Expired) => assert_eq!(delivered, 0, "cancelled: {ra:?} {rb:?}"),
            r => panic!("unexpected {r:?}"),
        }
    });
}

/// A parked G gets three wakes at once: its operation completing, its
/// timeout timer firing, and a cancel's interrupt. Exactly one of them
/// readies it (or the M, if the G was still committing its park).
/// (Preemption bound 2: exhaustive is 3.9M executions, ~8 min.)
#[test]
fn cancel_vs_timer_fire() {
    use crate::g::{GPtr, Status, Wake};
    use crate::{Body, Cx, Step};
    struct Nop;
    impl Body for Nop {
        fn step(&mut self, _cx: &mut Cx<'_>) -> Step {
            Step::Done
        }
    }
    check("chan::cancel_vs_timer_fire", Some(2), || {
        let g = GPtr::alloc();
        g.prepare(1, Box::new(Nop));
        let gen = g.start_running();
        let completion = thread::spawn(move || g.wake(gen));
        let timer = thread::spawn(move || g.wake(gen));
        let cancel = thread::spawn(move || g.interrupt(1));

        let parked = g.commit_park(gen);
        let ws = [
            completion.join().unwrap(),
            timer.join().unwrap(),
            cancel.join().unwrap(),
        ];
        let enqueues = ws.iter().filter(|w| **w == Wake::Enqueue).count();
        assert_eq!(
            enqueues + usize::from(!parked),
            1,
            "wakes = {ws:?}, parked = {parked}"
        );
        assert_eq!(g.status(), Status::Runnable);
        // SAFETY: allocated above; every thread holding a copy is joined.
        unsafe { g.free() };
    });
}
