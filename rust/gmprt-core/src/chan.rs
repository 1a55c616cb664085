//! chan: Go's channels and `select` (chan.go, select.go), generic over the
//! value type.
//!
//! # Invariants (chan.go's, restated)
//!
//! For a channel of capacity `cap`, under its lock:
//!
//! - `buf.len() <= cap`.
//! - At least one of `recvq` and `sendq` has no *live* entry, except for a
//!   select that waits to both send and receive on one unbuffered channel.
//!   (Dead entries, whose parker was won elsewhere, may sit anywhere: see
//!   `sudog`.)
//! - Buffered: `buf.len() > 0` implies `recvq` has no live entry, and
//!   `buf.len() < cap` implies `sendq` has no live entry.
//! - Unbuffered: `buf` is always empty.
//! - `closed` implies both queues have no live entry and no new entry is
//!   ever pushed.
//!
//! # Who owns which field
//!
//! - `cap`: immutable.
//! - `Inner` (`buf`, `closed`, `recvq`, `sendq`): the channel's lock. Values
//!   move in and out of `buf` only under it.
//! - A queued waiter's value slot: see `sudog` (its owner until published,
//!   then the one claimer that won its CAS, then its owner again).
//!
//! # The lock
//!
//! Held for a few pointer moves only: never while waking a waiter (wakes are
//! collected and delivered after unlocking, as Go does), never while calling
//! into an embedder (so the Python binding may take it while attached), and
//! never while dropping a `T` that the caller gave us: values that do not
//! go into the channel are handed back to the caller. Only a select takes
//! more than one channel lock, always in address order (Go's `lockorder`),
//! so two selects cannot deadlock each other.
//!
//! # Operations
//!
//! - send: closed → error; a live receiver waits → the value goes straight
//!   into its slot and it is woken (a G lands in the sender's runnext);
//!   buffer space → enqueue; otherwise park on `sendq`.
//! - receive: buffered value → take it, and move the first live blocked
//!   sender's value into the freed place; a live sender waits (unbuffered) →
//!   take its value; closed → "closed"; otherwise park on `recvq`.
//! - close: closed → error; otherwise every waiter is completed as
//!   "closed" (senders get their value back) and woken after unlocking.
//! - select: lock every channel in address order; pass 1 takes the first
//!   ready case in a uniformly random order; otherwise (non-blocking) report
//!   nothing, or (blocking) queue one entry per case, all sharing one
//!   parker, and unlock. The first party to win that parker's CAS completes
//!   exactly one case; the other entries are dead.

use std::collections::VecDeque;

use crate::loom::sync::{Mutex, MutexGuard};
use crate::sudog::{wake_all, Done, Notify, Op, WaitQ, Wake};

/// A channel of `T` (Go's `hchan`).
pub struct Chan<T> {
    cap: usize,
    inner: Mutex<Inner<T>>,
}

struct Inner<T> {
    buf: VecDeque<T>,
    closed: bool,
    recvq: WaitQ<T>,
    sendq: WaitQ<T>,
}

/// `try_send` could not send.
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// Nobody waits to receive and the buffer is full (or absent).
    Full(T),
    /// The channel is closed.
    Closed(T),
}

/// `try_recv` got nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TryRecvError {
    /// Nothing buffered and no sender waiting.
    Empty,
    /// Closed and drained.
    Closed,
}

/// `close` of a closed channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlreadyClosed;

/// A send that may have to wait.
#[derive(Debug)]
pub enum SendPark<T> {
    Sent,
    Closed(T),
    /// Queued: poll the operation until it is done. `Done::Ok(0)`: sent;
    /// `Done::Closed(0)`: closed while waiting (the value is in slot 0);
    /// `Done::Expired`: given up (the value is in slot 0).
    Parked(Op<T>),
}

/// A receive that may have to wait.
#[derive(Debug)]
pub enum RecvPark<T> {
    Received(T),
    Closed,
    /// Queued: `Done::Ok(0)`: the value is in slot 0; `Done::Closed(0)`:
    /// closed and drained; `Done::Expired`: given up.
    Parked(Op<T>),
}

/// One case of a select. A send case's value is taken when that case fires
/// and left in place otherwise.
pub enum Case<'a, T> {
    Recv(&'a Chan<T>),
    Send(&'a Chan<T>, Option<T>),
}

impl<T> Case<'_, T> {
    fn chan(&self) -> *const Chan<T> {
        match self {
            Case::Recv(c) | Case::Send(c, _) => *c,
        }
    }
}

/// The case a select completed.
#[derive(Debug, PartialEq, Eq)]
pub enum Selected<T> {
    /// Receive case `.0` got a value, or `None`: closed and drained.
    Recv(usize, Option<T>),
    /// Send case `.0` sent its value.
    Sent(usize),
    /// Send case `.0` found its channel closed (its value was not sent).
    SendClosed(usize),
}

/// A select that may have to wait.
#[derive(Debug)]
pub enum SelectPark<T> {
    Selected(Selected<T>),
    /// Queued on every case: see [`select_done`].
    Parked(Op<T>),
}

impl<T> Inner<T> {
    /// Go's `send` + buffer put, lock held, channel not closed. Err gives
    /// the value back: the caller must wait.
    fn send(&mut self, cap: usize, v: T) -> Result<Option<Wake<T>>, T> {
        debug_assert!(!self.closed);
        if let Some(r) = self.recvq.claim() {
            r.put(v);
            return Ok(Some(r.finish(false)));
        }
        if self.buf.len() < cap {
            self.buf.push_back(v);
            return Ok(None);
        }
        Err(v)
    }

    /// Go's `recv`, lock held. `Some((None, _))`: closed and drained; None:
    /// the caller must wait.
    #[allow(clippy::type_complexity)]
    fn recv(&mut self) -> Option<(Option<T>, Option<Wake<T>>)> {
        if let Some(v) = self.buf.pop_front() {
            // A full buffer with a blocked sender: its value takes the place
            // just freed, at the tail (FIFO holds).
            let w = self.sendq.claim().map(|s| {
                self.buf
                    .push_back(s.take().expect("a blocked sender without a value"));
                s.finish(false)
            });
            return Some((Some(v), w));
        }
        if let Some(s) = self.sendq.claim() {
            let v = s.take().expect("a blocked sender without a value");
            return Some((Some(v), Some(s.finish(false))));
        }
        if self.closed {
            return Some((None, None));
        }
        None
    }
}

fn deliver<T>(w: Option<Wake<T>>) {
    if let Some(w) = w {
        w.wake();
    }
}

impl<T: Send> Chan<T> {
    /// A channel with room for `cap` buffered values (0: unbuffered).
    pub fn new(cap: usize) -> Chan<T> {
        Chan {
            cap,
            inner: Mutex::new(Inner {
                buf: VecDeque::with_capacity(cap.min(1024)),
                closed: false,
                recvq: WaitQ::new(),
                sendq: WaitQ::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        crate::loom::lock(&self.inner)
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Values in the buffer now (Go's `len(ch)`).
    pub fn len(&self) -> usize {
        self.lock().buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Blocked senders and receivers now, for descriptions.
    pub fn waiting(&self) -> (usize, usize) {
        let l = self.lock();
        (l.sendq.waiting(), l.recvq.waiting())
    }

    /// Sends without waiting.
    pub fn try_send(&self, v: T) -> Result<(), TrySendError<T>> {
        let mut l = self.lock();
        if l.closed {
            return Err(TrySendError::Closed(v));
        }
        match l.send(self.cap, v) {
            Ok(w) => {
                drop(l);
                deliver(w);
                Ok(())
            }
            Err(v) => Err(TrySendError::Full(v)),
        }
    }

    /// Receives without waiting.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        let mut l = self.lock();
        match l.recv() {
            Some((Some(v), w)) => {
                drop(l);
                deliver(w);
                Ok(v)
            }
            Some((None, _)) => Err(TryRecvError::Closed),
            None => Err(TryRecvError::Empty),
        }
    }

    /// Sends, or queues the send to be completed later and returns its
    /// [`Op`]; `notify` is how the waiter will be woken.
    pub fn send_or_park(&self, v: T, notify: Notify) -> SendPark<T> {
        let mut l = self.lock();
        if l.closed {
            return SendPark::Closed(v);
        }
        match l.send(self.cap, v) {
            Ok(w) => {
                drop(l);
                deliver(w);
                SendPark::Sent
            }
            Err(v) => {
                let mut v = Some(v);
                let op = Op::new(notify, 1, |_| v.take());
                l.sendq.push(op.entry(0));
                SendPark::Parked(op)
            }
        }
    }

    /// Receives, or queues the receive (see [`Chan::send_or_park`]).
    pub fn recv_or_park(&self, notify: Notify) -> RecvPark<T> {
        let mut l = self.lock();
        match l.recv() {
            Some((Some(v), w)) => {
                drop(l);
                deliver(w);
                RecvPark::Received(v)
            }
            Some((None, _)) => RecvPark::Closed,
            None => {
                let op = Op::new(notify, 1, |_| None);
                l.recvq.push(op.entry(0));
                RecvPark::Parked(op)
            }
        }
    }

    /// Closes the channel: every blocked receiver gets "closed", every
    /// blocked sender its value back with "closed"; buffered values can
    /// still be received.
    pub fn close(&self) -> Result<(), AlreadyClosed> {
        let mut l = self.lock();
        if l.closed {
            return Err(AlreadyClosed);
        }
        l.closed = true;
        let mut wakes: Vec<Wake<T>> = Vec::new();
        for r in l.recvq.claim_all() {
            wakes.push(r.finish(true));
        }
        for s in l.sendq.claim_all() {
            wakes.push(s.finish(true));
        }
        drop(l);
        wake_all(wakes);
        Ok(())
    }
}

impl<T> std::fmt::Debug for Chan<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chan")
            .field("cap", &self.cap)
            .finish_non_exhaustive()
    }
}

/// How a finished blocking single send ended.
pub fn send_done<T>(d: Done) -> Result<(), Done> {
    match d {
        Done::Ok(_) => Ok(()),
        other => Err(other),
    }
}

/// The channels of `cases`, each once, in address order, locked in that
/// order (Go's `sellock`), with each case's index into the guards.
#[allow(clippy::type_complexity)]
fn sellock<'a, T: Send>(cases: &[Case<'a, T>]) -> (Vec<MutexGuard<'a, Inner<T>>>, Vec<usize>) {
    let mut order: Vec<&'a Chan<T>> = cases
        .iter()
        .map(|c| match c {
            Case::Recv(ch) | Case::Send(ch, _) => *ch,
        })
        .collect();
    order.sort_by_key(|c| *c as *const Chan<T>);
    order.dedup_by_key(|c| *c as *const Chan<T>);
    let at: Vec<usize> = cases
        .iter()
        .map(|c| {
            order
                .binary_search_by_key(&c.chan(), |o| *o as *const Chan<T>)
                .expect("every case's channel is in the lock order")
        })
        .collect();
    let guards = order.into_iter().map(Chan::lock).collect();
    (guards, at)
}

/// Pass 1 under every lock: the first ready case in random order.
fn pass1<T: Send>(
    cases: &mut [Case<'_, T>],
    guards: &mut [MutexGuard<'_, Inner<T>>],
    at: &[usize],
) -> Option<(Selected<T>, Option<Wake<T>>)> {
    for i in poll_order(cases.len()) {
        let l = &mut *guards[at[i]];
        match &mut cases[i] {
            Case::Recv(_) => {
                if let Some((v, w)) = l.recv() {
                    return Some((Selected::Recv(i, v), w));
                }
            }
            Case::Send(ch, slot) => {
                if l.closed {
                    return Some((Selected::SendClosed(i), None));
                }
                let v = slot.take().expect("a send case without a value");
                match l.send(ch.cap, v) {
                    Ok(w) => return Some((Selected::Sent(i), w)),
                    Err(v) => *slot = Some(v),
                }
            }
        }
    }
    None
}

/// A non-blocking select (Go's select with a `default` case): the case that
/// fired, or None when none was ready.
pub fn select_try<T: Send>(cases: &mut [Case<'_, T>]) -> Option<Selected<T>> {
    let (mut guards, at) = sellock(cases);
    let r = pass1(cases, &mut guards, &at);
    drop(guards);
    r.map(|(s, w)| {
        deliver(w);
        s
    })
}

/// A blocking select: fires a ready case, or queues one entry per case (the
/// send values move into the operation) and returns the operation. With no
/// cases the operation can only expire (a timeout) or wait forever.
pub fn select_or_park<T: Send>(cases: &mut [Case<'_, T>], notify: Notify) -> SelectPark<T> {
    let (mut guards, at) = sellock(cases);
    if let Some((s, w)) = pass1(cases, &mut guards, &at) {
        drop(guards);
        deliver(w);
        return SelectPark::Selected(s);
    }
    let op = Op::new(notify, cases.len(), |i| match &mut cases[i] {
        Case::Send(_, v) => v.take(),
        Case::Recv(_) => None,
    });
    for (i, c) in cases.iter().enumerate() {
        let l = &mut *guards[at[i]];
        match c {
            Case::Recv(_) => l.recvq.push(op.entry(i)),
            Case::Send(..) => l.sendq.push(op.entry(i)),
        }
    }
    drop(guards);
    SelectPark::Parked(op)
}

/// Reads a finished select's outcome: `is_send(i)` says which cases send.
/// Err(Expired) when it timed out or was cancelled. Either way the values of
/// unsent send cases remain in the operation: take them with
/// [`Op::take_all`].
pub fn select_done<T>(
    op: &mut Op<T>,
    done: Done,
    is_send: impl Fn(usize) -> bool,
) -> Result<Selected<T>, Done> {
    match done {
        Done::Ok(i) if is_send(i) => Ok(Selected::Sent(i)),
        Done::Ok(i) => Ok(Selected::Recv(i, op.take(i))),
        Done::Closed(i) if is_send(i) => Ok(Selected::SendClosed(i)),
        Done::Closed(i) => Ok(Selected::Recv(i, None)),
        Done::Expired => Err(Done::Expired),
    }
}

/// Go's `pollorder`: a uniformly random permutation of `0..n` (fixed order
/// under loom, whose executions must be deterministic).
fn poll_order(n: usize) -> Vec<usize> {
    #[cfg_attr(loom, allow(unused_mut))]
    let mut order: Vec<usize> = (0..n).collect();
    #[cfg(not(loom))]
    for i in (1..n).rev() {
        let j = (rand() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// xorshift64* per thread: cheap, and good enough to pick select cases
/// uniformly (Go uses its per-M fastrand the same way).
#[cfg(not(loom))]
fn rand() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = const { Cell::new(0) };
    }
    STATE.with(|s| {
        let mut x = s.get();
        if x == 0 {
            // Seed from the clock and this thread's stack address.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            x = (t ^ (&x as *const u64 as u64).rotate_left(32)) | 1;
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11
    })
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::loom::sync::Arc;
    use loom::thread;

    /// A select parked on two channels; two threads each send on one of
    /// them without waiting. Exactly one send lands, and it is the case the
    /// select reports (Go's `selectDone` CAS).
    #[test]
    fn select_done_vs_two_senders() {
        loom::model(|| {
            let a: Arc<Chan<u32>> = Arc::new(Chan::new(0));
            let b: Arc<Chan<u32>> = Arc::new(Chan::new(0));
            let mut cases = [Case::Recv(&*a), Case::Recv(&*b)];
            let SelectPark::Parked(mut op) = select_or_park(&mut cases, Notify::current_thread())
            else {
                panic!("nothing is ready")
            };
            let ta = {
                let a = a.clone();
                thread::spawn(move || a.try_send(1).is_ok())
            };
            let tb = {
                let b = b.clone();
                thread::spawn(move || b.try_send(2).is_ok())
            };
            op.wait();
            let sent = (ta.join().unwrap(), tb.join().unwrap());
            let d = op.done().unwrap();
            match select_done(&mut op, d, |_| false) {
                Ok(Selected::Recv(0, Some(1))) => assert_eq!(sent, (true, false)),
                Ok(Selected::Recv(1, Some(2))) => assert_eq!(sent, (false, true)),
                other => panic!("unexpected {other:?}"),
            }
        });
    }

    /// A receiver that gives up (a timeout) races a sender: either the
    /// cancel wins and the send finds nobody, or the send wins and the
    /// receiver gets the value. Never both, never neither.
    #[test]
    fn cancel_vs_send() {
        loom::model(|| {
            let ch: Arc<Chan<u32>> = Arc::new(Chan::new(0));
            let RecvPark::Parked(mut op) = ch.recv_or_park(Notify::current_thread()) else {
                panic!("nothing is ready")
            };
            let t = {
                let ch = ch.clone();
                thread::spawn(move || ch.try_send(7).is_ok())
            };
            let d = op.cancel();
            let sent = t.join().unwrap();
            match d {
                Done::Expired => assert!(!sent),
                Done::Ok(0) => {
                    assert!(sent);
                    assert_eq!(op.take(0), Some(7));
                }
                other => panic!("unexpected {other:?}"),
            }
        });
    }

    /// `close` races a parked sender being received: the sender is
    /// completed exactly once, either as received or as closed (with its
    /// value back), and a receiver after the close sees "closed".
    #[test]
    fn close_vs_recv_of_parked_sender() {
        loom::model(|| {
            let ch: Arc<Chan<u32>> = Arc::new(Chan::new(0));
            let SendPark::Parked(mut op) = ch.send_or_park(3, Notify::current_thread()) else {
                panic!("nobody receives")
            };
            let r = {
                let ch = ch.clone();
                thread::spawn(move || ch.try_recv())
            };
            let c = {
                let ch = ch.clone();
                thread::spawn(move || ch.close())
            };
            op.wait();
            let got = r.join().unwrap();
            assert_eq!(c.join().unwrap(), Ok(()));
            match op.done().unwrap() {
                Done::Ok(0) => assert_eq!(got, Ok(3)),
                Done::Closed(0) => {
                    assert_eq!(op.take(0), Some(3));
                    assert!(got.is_err());
                }
                other => panic!("unexpected {other:?}"),
            }
        });
    }
}
