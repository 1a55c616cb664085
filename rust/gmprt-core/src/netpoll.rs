//! netpoll: the netpoller and the timers (Go's netpoll_epoll.go + time.go).
//!
//! There is no netpoller thread. Whoever calls [`Netpoll::poll`] polls: it
//! waits in `epoll_wait` (mio), fires the expired timers and I/O deadlines,
//! and gets back everything that became ready as one [`Polled`] batch, which
//! it injects into the scheduler itself (Go's `netpoll` + `injectglist`).
//! The scheduler's Ms poll without blocking when they run out of local work
//! and every 61st schedtick, one M about to go idle blocks in the poll until
//! the next timer, and sysmon polls if nobody has for 10 ms (module docs of
//! `sched`, "Who polls"). A batch is plain Rust waiters of type `W`: polling
//! never touches Python.
//!
//! The netpoller sits below the scheduler: it never imports `sched`. It
//! stores waiters of any type `W: Ready`; `sched` implements [`Ready`] for
//! its `Waker` and injects [`Polled`] batches itself.
//!
//! # Who polls (Go's `lastpoll` and `pollingNet`)
//!
//! - **One poll at a time.** The `mio::Poll` sits in the `poller` mutex. A
//!   non-blocking poll (`timeout = Some(0)`) only `try_lock`s it and gives
//!   up if anyone else polls: the other poll will deliver the same events.
//! - **At most one blocking poller.** A blocking poll first claims the
//!   `blocked` flag (Go's `lastpoll.Swap(0)`); a second would-be blocker
//!   gets `None` and parks its M instead. While `blocked` is set,
//!   non-blocking polls give up at once. The claimed blocker then `lock`s
//!   the mutex, so a non-blocking poll that is already inside (microseconds)
//!   delays it but never makes it give up: a thread that wanted to block and
//!   found the poll busy is never left without a blocker.
//! - **A blocker needs a reason.** After claiming `blocked` it re-reads the
//!   counters and returns `None` if no G waits on I/O or a timer (nothing
//!   could end the wait but a break). The claim comes first, SeqCst, so a
//!   deadlock check that saw the counters reach zero also sees the blocker
//!   ([`Netpoll::blocked`], used by `Sched::dead`).
//! - **Breaking the blocker.** An adder whose timer is earlier than the
//!   blocker's planned wake time breaks the poll with the `mio::Waker`
//!   (below), and so do `Netpoll::stop` and [`Netpoll::wake`] (the
//!   scheduler uses it when work is stranded with no other M to run it).
//!
//! # Who owns what
//!
//! - [`Netpoll`] lives in `Sched` and creates the epoll instance lazily
//!   ([`Netpoll::handle`]); `Sched::stop` stops it ([`Netpoll::stop`]).
//! - `Inner` is shared (`Arc`) by the [`Netpoll`], every [`Handle`] and
//!   every [`Registration`]. Its locks: `poller` (the `mio::Poll` and its
//!   buffers, held for one poll), `timers` (the [`Timers`] heap and the
//!   blocker's planned wake time), `ios` (the slab mapping mio tokens to
//!   registrations), and one `waiters` lock per registration.
//! - **Lock order**: `poller` → `ios` → a registration's `waiters` →
//!   `timers`. Nothing here calls [`Ready::ready_all`] or drops the last
//!   reference to anything while holding a netpoll lock that a `ready_all`
//!   could need; a [`Polled`] batch is handed out after every netpoll lock
//!   is released, so the caller injects it holding none. No netpoll lock is
//!   taken under the scheduler's lock except by [`Netpoll::stop`] (which
//!   `Sched::stop` calls holding `sched.lock`, and which never takes
//!   `poller`: a blocker holds that for as long as it sleeps).
//!
//! # Registrations (Go's `pollDesc`, tokio's `ScheduledIo`)
//!
//! A file descriptor is registered once, for both directions, edge-triggered
//! (mio always is on Linux): each event says "something changed", never
//! "still ready", so every operation is retried until `WouldBlock`.
//!
//! - **Tokens carry a generation.** A registration's mio token is its slab
//!   index plus the slot's generation. A slot's generation moves on when it is
//!   freed, so an event still in flight for a deregistered fd (copied out of
//!   the kernel before the `EPOLL_CTL_DEL`) is recognised as stale and never
//!   wakes the G of a newer registration in the same slot.
//! - **Readiness with ticks.** `readiness` packs a tick (bumped by every
//!   event) above the ready bits. An operation reads it ([`ReadyEvent`]),
//!   tries the syscall, and on `WouldBlock` clears the bit *only if the tick
//!   has not moved* ([`Registration::clear_readiness`]): a clear can never
//!   erase an event that arrived after the read, so no edge is lost.
//! - **Parking** ([`Registration::park`]) re-checks readiness under the
//!   registration's `waiters` lock; the poller sets readiness *before* taking
//!   that lock to collect waiters. Either the parker sees the new bit (and
//!   does not park) or the poller sees the waiter (and wakes it).
//!
//! # Deadlines and timers
//!
//! A sleep is a timer whose payload is the G's waiter. An I/O deadline is a
//! timer whose payload *points at* the parked waiter (registration,
//! direction, wait id), like Go's `pollDesc` read/write timers: the waiter
//! itself stays in exactly one place. Whichever fires first (the event or the
//! timer) removes the waiter; an event that wins cancels the timer, so a
//! deadline that did not fire leaves nothing behind (the heap's lazy
//! cancellation and compaction bound the garbage, see `timer`).
//!
//! Timers fire inside [`Netpoll::poll`], whichever kind: a blocker sleeps
//! until the earliest deadline, and every poll pops what is due. An adder
//! whose deadline is earlier than the blocker's planned wake time breaks
//! the poll with the `mio::Waker` (de-duplicated: the planned time is
//! lowered at once, so later adders with later deadlines do not wake it
//! again; Go's `netpollWakeSig`). With no blocker there is nothing to break:
//! the planned time reads 0 and whoever polls next (an M going idle, a busy
//! P's 61st tick, sysmon) sees the new timer. Resolution is the epoll
//! timeout's, 1 ms, rounded up: a timer never fires early.
//!
//! # Counters
//!
//! [`Netpoll::waiters`] and [`Netpoll::timers`] count Gs parked on I/O and
//! armed timers. They are exact for deadlock detection: a wait counts from
//! the moment it is stored until it is cancelled, or, when it fires, until
//! its [`Polled`] batch is dropped, which the caller does *after* injecting
//! the batch (its Gs are then runnable), so there is no instant where a
//! woken G is neither counted here nor runnable.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, TryLockError};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};

use crate::timer::{TimerKey, Timers};

/// What the netpoller wakes. Implemented by `sched::Waker`.
pub trait Ready: Send + 'static {
    /// Readies every waiter in `batch` (they come from one runtime).
    fn ready_all(batch: Vec<Self>)
    where
        Self: Sized;
}

/// Events per `epoll_wait`. Go uses 128, tokio 1024; the batch goes to the
/// global queue in one lock, so a larger batch costs nothing extra.
const EVENTS: usize = 1024;

/// The token of the `mio::Waker`. Registration tokens never reach it: their
/// generation is masked to 31 bits.
const WAKE_TOKEN: Token = Token(usize::MAX);
const GEN_MASK: u32 = 0x7fff_ffff;

const _: () = assert!(
    usize::BITS == 64,
    "netpoll tokens pack 32-bit index + generation"
);

/// Ready bits in `IoShared::readiness`; the tick sits above them.
const READABLE: usize = 1;
const WRITABLE: usize = 2;
const READY_MASK: usize = READABLE | WRITABLE;
const TICK_SHIFT: u32 = 2;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Saturating decrement of a counter (module docs, "Counters"): after
/// [`Netpoll::stop`] zeroes it, the poller's late decrements must not wrap
/// it. SeqCst like every counter update: the deadlock check reads them in
/// one SeqCst snapshot with the scheduler's own counters.
fn sub(n: &AtomicUsize, k: usize) {
    if k > 0 {
        let _ = n.fetch_update(SeqCst, SeqCst, |v| Some(v.saturating_sub(k)));
    }
}

/// Which half of a registration an operation waits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Read,
    Write,
}

impl Dir {
    fn bit(self) -> usize {
        match self {
            Dir::Read => READABLE,
            Dir::Write => WRITABLE,
        }
    }
}

/// A readiness snapshot: pass it back to [`Registration::clear_readiness`]
/// after a `WouldBlock`.
#[derive(Clone, Copy, Debug)]
pub struct ReadyEvent {
    tick: usize,
    bit: usize,
    /// The direction may be ready: try the syscall.
    pub ready: bool,
}

/// Identifies one park on a registration (for [`Registration::cancel`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitId {
    dir: Dir,
    id: u64,
}

/// The runtime stopped: nothing can be parked or registered any more.
fn stopped_err() -> io::Error {
    io::Error::other("the gmprt netpoller has stopped (the runtime is stopping)")
}

/// One runtime's netpoller and timers.
pub struct Netpoll<W: Ready> {
    inner: OnceLock<Arc<Inner<W>>>,
    /// Serialises the lazy start with `stop`; true once stopped.
    stopped: Mutex<bool>,
}

impl<W: Ready> Netpoll<W> {
    pub(crate) fn new() -> Netpoll<W> {
        Netpoll {
            inner: OnceLock::new(),
            stopped: Mutex::new(false),
        }
    }

    /// Gs parked on a file descriptor now (deadlock detection: a G waiting
    /// on I/O can be woken from outside). See "Counters" in the module docs.
    pub fn waiters(&self) -> usize {
        self.inner.get().map_or(0, |i| i.nwaiters.load(SeqCst))
    }

    /// Armed timers now (sleeps and I/O deadlines).
    pub fn timers(&self) -> usize {
        self.inner.get().map_or(0, |i| i.ntimers.load(SeqCst))
    }

    /// Whether some G waits on the netpoller (I/O or a timer): only then is
    /// a poll worth making (Go's `netpollAnyWaiters`, plus our timers).
    pub fn pending(&self) -> bool {
        self.inner.get().is_some_and(|i| i.pending())
    }

    /// Whether a thread has claimed the blocking poll (Go's `lastpoll ==
    /// 0`). SeqCst: read with the counters in one deadlock snapshot (module
    /// docs, "Who polls").
    pub fn blocked(&self) -> bool {
        self.inner.get().is_some_and(|i| i.blocked.load(SeqCst))
    }

    /// How long since the last poll ended; None while a blocker polls (or
    /// before the netpoller exists). sysmon polls when this passes 10 ms.
    pub fn since_last_poll(&self) -> Option<Duration> {
        let i = self.inner.get()?;
        if i.blocked.load(SeqCst) {
            return None;
        }
        // Relaxed: a staleness hint; a wrong guess costs one extra poll.
        let last = i.last_poll.load(Relaxed);
        Some(Duration::from_nanos(i.now().saturating_sub(last)))
    }

    /// Polls: waits for I/O for up to `timeout` (`None`: until an event or
    /// the next timer; `Some(ZERO)`: not at all), fires the expired timers
    /// and I/O deadlines, and returns every waiter that became ready. The
    /// caller readies them and then drops the batch (module docs,
    /// "Counters").
    ///
    /// None, without waiting, when another thread polls (a non-blocking poll
    /// gives way to any poll, a blocking one to another blocker), when a
    /// blocking poll would have nothing to wait for (no waiter, no timer),
    /// or when the netpoller does not run. A non-blocking poll is made
    /// whatever [`pending`](Self::pending) says (it still records readiness
    /// for registrations nobody waits on); callers on hot paths check it
    /// first. See "Who polls" in the module docs.
    pub fn poll(&self, timeout: Option<Duration>) -> Option<Polled<'_, W>> {
        let inner = self.inner.get()?;
        if timeout == Some(Duration::ZERO) {
            // Relaxed: only a hint to skip a poll a blocker would make
            // anyway; the `try_lock` below is what keeps polls one at a time.
            if inner.blocked.load(Relaxed) {
                return None;
            }
            let st = match inner.poller.try_lock() {
                Ok(st) => st,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => return None,
            };
            return inner.poll(st, timeout);
        }
        if !inner.pending() {
            return None;
        }
        // SeqCst swap: the claim is ordered before the `pending` re-read
        // below, against the counters' SeqCst decrements (module docs, "Who
        // polls": a deadlock check that saw zero also sees the claim).
        if inner.blocked.swap(true, SeqCst) {
            return None;
        }
        let polled = if inner.pending() {
            inner.poll(lock(&inner.poller), timeout)
        } else {
            None
        };
        // SeqCst: pairs with the claim; the batch still holds its counts.
        inner.blocked.store(false, SeqCst);
        polled
    }

    /// Breaks a blocking poll, if one is in progress (Go's `netpollBreak`).
    pub fn wake(&self) {
        if let Some(i) = self.inner.get() {
            if i.blocked.load(SeqCst) {
                i.wake_poller();
            }
        }
    }

    /// A handle to the netpoller, creating its epoll instance on first use.
    /// Fails once the netpoller stopped, or if the OS refuses an epoll fd.
    pub fn handle(&self) -> io::Result<Handle<W>> {
        if let Some(i) = self.inner.get() {
            // Acquire: pairs with the Release store in `Inner::stop`.
            if i.stopped.load(Acquire) {
                return Err(stopped_err());
            }
            return Ok(Handle(i.clone()));
        }
        let stopped = lock(&self.stopped);
        if *stopped {
            return Err(stopped_err());
        }
        if let Some(i) = self.inner.get() {
            return Ok(Handle(i.clone()));
        }
        let inner = Inner::start()?;
        let _ = self.inner.set(inner.clone());
        drop(stopped);
        Ok(Handle(inner))
    }

    /// Whether `reg` belongs to this netpoller (and it still runs).
    pub fn owns(&self, reg: &Registration<W>) -> bool {
        self.inner
            .get()
            .is_some_and(|i| Arc::ptr_eq(i, &reg.inner) && !i.stopped.load(Acquire))
    }

    /// Stops the netpoller, breaking a blocking poll, and drops every waiter
    /// and timer (their Gs are never woken; the runtime is stopping). Later
    /// registrations and timers are refused, and every existing registration
    /// reads as closed.
    pub(crate) fn stop(&self) {
        let mut stopped = lock(&self.stopped);
        *stopped = true;
        drop(stopped);
        if let Some(i) = self.inner.get() {
            i.stop();
        }
    }
}

impl<W: Ready> Drop for Netpoll<W> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A cloneable handle to a running netpoller: timers and registrations.
pub struct Handle<W: Ready>(Arc<Inner<W>>);

impl<W: Ready> Clone for Handle<W> {
    fn clone(&self) -> Self {
        Handle(self.0.clone())
    }
}

impl<W: Ready> Handle<W> {
    /// Arms a timer that readies `w` at `when` (at the earliest; within about
    /// a millisecond after). Gives `w` back if the netpoller stopped.
    pub fn add_timer(&self, when: Instant, w: W) -> Result<TimerKey, W> {
        let (key, wake) = match self.0.add_timer(when, Fire::Wake(w)) {
            Ok(kw) => kw,
            Err(Fire::Wake(w)) => return Err(w),
            Err(Fire::Io(..)) => unreachable!("add_timer returned another payload"),
        };
        if wake {
            self.0.wake_poller();
        }
        Ok(key)
    }

    /// Disarms a timer from [`add_timer`](Self::add_timer). True if it was
    /// still armed (its waiter is dropped, never woken).
    pub fn cancel_timer(&self, key: TimerKey) -> bool {
        self.0.cancel_timer(key)
    }

    /// Registers `fd` for both directions. `ready` is the initial readiness
    /// of both: true makes the first operation try its syscall (right for a
    /// fresh socket), false makes it wait for the first event (right when the
    /// caller just saw the fd not ready; epoll reports the state at
    /// registration as an event, so nothing is missed).
    ///
    /// The caller keeps `fd` open until it drops or
    /// [`deregisters`](Registration::deregister) the registration.
    pub fn register(&self, fd: RawFd, ready: bool) -> io::Result<Registration<W>> {
        let inner = &self.0;
        let io = {
            let mut ios = lock(&inner.ios);
            if inner.stopped.load(Acquire) {
                return Err(stopped_err());
            }
            ios.insert(ready)
        };
        let r = inner.registry.register(
            &mut SourceFd(&fd),
            Token(io.token),
            Interest::READABLE | Interest::WRITABLE,
        );
        if let Err(e) = r {
            lock(&inner.ios).remove(io.token);
            return Err(e);
        }
        Ok(Registration {
            inner: inner.clone(),
            io,
            fd,
            registered: AtomicBool::new(true),
        })
    }

    /// Whether the netpoller has stopped.
    pub fn is_stopped(&self) -> bool {
        self.0.stopped.load(Acquire)
    }
}

/// What one [`Netpoll::poll`] readied. Take the waiters out
/// ([`take`](Self::take)), ready them, then drop the batch: only the drop
/// uncounts them (module docs, "Counters").
#[must_use = "ready the waiters, then drop the batch"]
pub struct Polled<'a, W: Ready> {
    ready: Vec<W>,
    /// Waiters and timers this batch took off the counters' books.
    io: usize,
    timers: usize,
    inner: &'a Inner<W>,
}

impl<W: Ready> Polled<'_, W> {
    /// The waiters to ready, in the order they became ready (timers in
    /// deadline order, after the I/O events).
    pub fn take(&mut self) -> Vec<W> {
        std::mem::take(&mut self.ready)
    }

    pub fn is_empty(&self) -> bool {
        self.ready.is_empty()
    }
}

impl<W: Ready> Drop for Polled<'_, W> {
    fn drop(&mut self) {
        // Any waiters not taken are dropped unreadied first (the runtime is
        // stopping); then, and only then, the counts go.
        drop(std::mem::take(&mut self.ready));
        sub(&self.inner.nwaiters, self.io);
        sub(&self.inner.ntimers, self.timers);
    }
}

/// What a timer does when it fires.
enum Fire<W> {
    /// A sleep: ready the waiter.
    Wake(W),
    /// An I/O deadline: ready the waiter parked as `id` on `io`, if it is
    /// still parked.
    Io(Arc<IoShared<W>>, WaitId),
}

struct TimerState<W> {
    heap: Timers<Fire<W>>,
    /// When the blocker will next look at the timers, in clock nanoseconds:
    /// `u64::MAX` while it sleeps with no timeout, 0 while nobody blocks
    /// (whoever polls next recomputes, so adders need not wake anyone).
    poll_until: u64,
}

/// The `mio::Poll` and the buffers of one poll; held for the whole poll.
struct PollState<W> {
    poll: Poll,
    events: Events,
    cancel: Vec<TimerKey>,
    deadlines: Vec<(Arc<IoShared<W>>, WaitId)>,
}

struct Inner<W> {
    registry: Registry,
    waker: mio::Waker,
    /// Clock origin for timer nanoseconds.
    base: Instant,
    /// See "Who polls" in the module docs.
    poller: Mutex<PollState<W>>,
    /// A thread claimed the blocking poll (Go's `lastpoll == 0`). SeqCst
    /// throughout: it is part of the deadlock snapshot.
    blocked: AtomicBool,
    /// When the last poll ended, in clock nanoseconds (sysmon's 10 ms rule).
    /// Relaxed: a hint.
    last_poll: AtomicU64,
    timers: Mutex<TimerState<W>>,
    ios: Mutex<Slab<W>>,
    /// See "Counters" in the module docs. SeqCst throughout (see `sub`):
    /// a decrement after `ready_all` must not be seen before the run-queue
    /// push that `ready_all` made.
    nwaiters: AtomicUsize,
    ntimers: AtomicUsize,
    /// Set once by `stop` (Release); read with Acquire by the poller and by
    /// everyone refusing new work.
    stopped: AtomicBool,
}

impl<W: Ready> Inner<W> {
    fn start() -> io::Result<Arc<Inner<W>>> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = mio::Waker::new(poll.registry(), WAKE_TOKEN)?;
        Ok(Arc::new(Inner {
            registry,
            waker,
            base: Instant::now(),
            poller: Mutex::new(PollState {
                poll,
                events: Events::with_capacity(EVENTS),
                cancel: Vec::new(),
                deadlines: Vec::new(),
            }),
            blocked: AtomicBool::new(false),
            last_poll: AtomicU64::new(0),
            timers: Mutex::new(TimerState {
                heap: Timers::new(),
                poll_until: 0,
            }),
            ios: Mutex::new(Slab::new()),
            nwaiters: AtomicUsize::new(0),
            ntimers: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
        }))
    }

    /// Some G waits on I/O or a timer. SeqCst: see "Who polls".
    fn pending(&self) -> bool {
        self.nwaiters.load(SeqCst) > 0 || self.ntimers.load(SeqCst) > 0
    }

    /// Nanoseconds on the timer clock.
    fn at(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    fn now(&self) -> u64 {
        self.at(Instant::now())
    }

    /// Arms a timer. Returns whether the poller must be woken (call
    /// `wake_poller` after releasing every lock). Gives the payload back if
    /// stopped.
    fn add_timer(&self, when: Instant, fire: Fire<W>) -> Result<(TimerKey, bool), Fire<W>> {
        let when = self.at(when);
        let mut t = lock(&self.timers);
        if self.stopped.load(Acquire) {
            return Err(fire);
        }
        let key = t.heap.add(when, fire);
        self.ntimers.fetch_add(1, SeqCst);
        let wake = when < t.poll_until;
        if wake {
            t.poll_until = when;
        }
        Ok((key, wake))
    }

    fn cancel_timer(&self, key: TimerKey) -> bool {
        let fire = lock(&self.timers).heap.cancel(key);
        let found = fire.is_some();
        if found {
            sub(&self.ntimers, 1);
        }
        // The payload (a waiter, or a registration reference) drops here,
        // outside the lock.
        drop(fire);
        found
    }

    fn wake_poller(&self) {
        if let Err(e) = self.waker.wake() {
            eprintln!("gmprt: cannot wake the netpoller: {e}");
        }
    }

    /// One poll, holding the `poller` lock `st` (see [`Netpoll::poll`]).
    /// A blocking poll (`timeout != Some(0)`) plans its wake time for the
    /// adders; a non-blocking one leaves it at 0.
    fn poll(
        &self,
        mut st: MutexGuard<'_, PollState<W>>,
        timeout: Option<Duration>,
    ) -> Option<Polled<'_, W>> {
        let st = &mut *st;
        let blocking = timeout != Some(Duration::ZERO);
        let timeout = if blocking {
            let mut t = lock(&self.timers);
            // Under `timers`, which `stop` takes to set the flag: either we
            // see it here, or its wake reaches the poll below.
            if self.stopped.load(Acquire) {
                return None;
            }
            let now = self.now();
            let limit =
                timeout.map(|d| now.saturating_add(d.as_nanos().try_into().unwrap_or(u64::MAX)));
            let until = match (t.heap.next_when(), limit) {
                (None, None) => u64::MAX,
                (w, l) => w.unwrap_or(u64::MAX).min(l.unwrap_or(u64::MAX)),
            };
            t.poll_until = until;
            // mio rounds up to whole milliseconds: never early.
            (until != u64::MAX).then(|| Duration::from_nanos(until.saturating_sub(now)))
        } else {
            timeout
        };
        if let Err(e) = st.poll.poll(&mut st.events, timeout) {
            if e.kind() != io::ErrorKind::Interrupted {
                eprintln!("gmprt: netpoll: epoll_wait failed: {e}");
                if blocking {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        if self.stopped.load(Acquire) {
            if blocking {
                lock(&self.timers).poll_until = 0;
            }
            return None;
        }
        let mut batch = Vec::new();
        let mut woken_io = 0;
        if !st.events.is_empty() {
            let ios = lock(&self.ios);
            for ev in st.events.iter() {
                if ev.token() == WAKE_TOKEN {
                    continue;
                }
                // A stale token (generation moved on) finds nothing.
                let Some(io) = ios.get(ev.token().0) else {
                    continue;
                };
                let mut bits = 0;
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    bits |= READABLE;
                }
                if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
                    bits |= WRITABLE;
                }
                woken_io += io.fire(bits, &mut batch, &mut st.cancel);
            }
        }
        let mut woken_timers = 0;
        {
            let mut t = lock(&self.timers);
            for k in st.cancel.drain(..) {
                if t.heap.cancel(k).is_some() {
                    sub(&self.ntimers, 1);
                }
            }
            let now = self.now();
            while let Some(f) = t.heap.pop_due(now) {
                woken_timers += 1;
                match f {
                    Fire::Wake(w) => batch.push(w),
                    Fire::Io(io, id) => st.deadlines.push((io, id)),
                }
            }
            if blocking {
                t.poll_until = 0;
            }
            // Relaxed: a hint for sysmon (`since_last_poll`).
            self.last_poll.store(now, Relaxed);
        }
        for (io, id) in st.deadlines.drain(..) {
            if let Some(waiter) = io.take(id) {
                batch.push(waiter.w);
                woken_io += 1;
            }
        }
        Some(Polled {
            ready: batch,
            io: woken_io,
            timers: woken_timers,
            inner: self,
        })
    }

    fn stop(&self) {
        let timers = {
            // Under `timers`, so no adder slips in after the drain.
            let mut t = lock(&self.timers);
            // Release: pairs with the Acquire loads refusing new work.
            self.stopped.store(true, Release);
            self.ntimers.store(0, SeqCst);
            t.heap.drain()
        };
        self.wake_poller();
        let ios = lock(&self.ios).drain();
        let mut dropped = Vec::new();
        for io in &ios {
            let mut ws = lock(&io.waiters);
            ws.closed = true;
            dropped.append(&mut ws.read);
            dropped.append(&mut ws.write);
        }
        self.nwaiters.store(0, SeqCst);
        drop(timers);
        drop(dropped);
        drop(ios);
    }
}

/// The slab of registrations, indexed by the low half of a token.
struct Slab<W> {
    entries: Vec<SlabEntry<W>>,
    free: Vec<u32>,
}

struct SlabEntry<W> {
    gen: u32,
    io: Option<Arc<IoShared<W>>>,
}

impl<W> Slab<W> {
    fn new() -> Slab<W> {
        Slab {
            entries: Vec::new(),
            free: Vec::new(),
        }
    }

    fn token(index: u32, gen: u32) -> usize {
        ((gen as usize) << 32) | index as usize
    }

    fn insert(&mut self, ready: bool) -> Arc<IoShared<W>> {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                let i = u32::try_from(self.entries.len()).expect("more than 2^32 registrations");
                self.entries.push(SlabEntry { gen: 0, io: None });
                i
            }
        };
        let e = &mut self.entries[index as usize];
        let io = Arc::new(IoShared::new(Self::token(index, e.gen), ready));
        e.io = Some(io.clone());
        io
    }

    fn get(&self, token: usize) -> Option<&Arc<IoShared<W>>> {
        let e = self.entries.get(token as u32 as usize)?;
        if Self::token(token as u32, e.gen) != token {
            return None;
        }
        e.io.as_ref()
    }

    /// Frees the slot of `token`, moving its generation on so that events
    /// still in flight for it are recognised as stale.
    fn remove(&mut self, token: usize) -> Option<Arc<IoShared<W>>> {
        let index = token as u32;
        let e = self.entries.get_mut(index as usize)?;
        if Self::token(index, e.gen) != token {
            return None;
        }
        let io = e.io.take()?;
        e.gen = (e.gen + 1) & GEN_MASK;
        self.free.push(index);
        Some(io)
    }

    fn drain(&mut self) -> Vec<Arc<IoShared<W>>> {
        let mut out = Vec::new();
        for (i, e) in self.entries.iter_mut().enumerate() {
            if let Some(io) = e.io.take() {
                e.gen = (e.gen + 1) & GEN_MASK;
                self.free.push(i as u32);
                out.push(io);
            }
        }
        out
    }
}

struct Waiter<W> {
    id: u64,
    w: W,
    /// The deadline timer armed with this park, if any.
    timer: Option<TimerKey>,
}

struct Waiters<W> {
    read: Vec<Waiter<W>>,
    write: Vec<Waiter<W>>,
    next_id: u64,
    /// Deregistered (or the netpoller stopped): nobody parks any more.
    closed: bool,
}

impl<W> Waiters<W> {
    fn list(&mut self, dir: Dir) -> &mut Vec<Waiter<W>> {
        match dir {
            Dir::Read => &mut self.read,
            Dir::Write => &mut self.write,
        }
    }
}

/// The shared half of a registration (tokio's `ScheduledIo`).
struct IoShared<W> {
    token: usize,
    /// `tick << TICK_SHIFT | ready bits` (module docs, "Readiness with
    /// ticks"). Set by the poller (AcqRel RMW), cleared by operations (CAS
    /// that fails if the tick moved), read with Acquire.
    readiness: AtomicUsize,
    waiters: Mutex<Waiters<W>>,
}

impl<W> IoShared<W> {
    fn new(token: usize, ready: bool) -> IoShared<W> {
        IoShared {
            token,
            readiness: AtomicUsize::new(if ready { READY_MASK } else { 0 }),
            waiters: Mutex::new(Waiters {
                read: Vec::new(),
                write: Vec::new(),
                next_id: 0,
                closed: false,
            }),
        }
    }

    /// The poller: record an event and take the waiters it readies. Returns
    /// how many it took. Readiness is set *before* taking `waiters` (module
    /// docs, "Parking").
    fn fire(&self, bits: usize, batch: &mut Vec<W>, cancel: &mut Vec<TimerKey>) -> usize {
        // AcqRel: Release publishes the event to operations' Acquire loads;
        // Acquire orders us after the last clear.
        let _ = self.readiness.fetch_update(AcqRel, Acquire, |cur| {
            let tick = (cur >> TICK_SHIFT).wrapping_add(1);
            Some((tick << TICK_SHIFT) | (cur & READY_MASK) | bits)
        });
        let mut ws = lock(&self.waiters);
        let mut n = 0;
        for dir in [Dir::Read, Dir::Write] {
            if bits & dir.bit() == 0 {
                continue;
            }
            for waiter in ws.list(dir).drain(..) {
                batch.push(waiter.w);
                cancel.extend(waiter.timer);
                n += 1;
            }
        }
        n
    }

    /// Removes the waiter parked as `id`, if it is still parked.
    fn take(&self, id: WaitId) -> Option<Waiter<W>> {
        let mut ws = lock(&self.waiters);
        let list = ws.list(id.dir);
        let pos = list.iter().position(|x| x.id == id.id)?;
        Some(list.remove(pos))
    }
}

/// A file descriptor registered with the netpoller. Dropping it
/// deregisters the fd, which must still be open then.
pub struct Registration<W: Ready> {
    inner: Arc<Inner<W>>,
    io: Arc<IoShared<W>>,
    fd: RawFd,
    /// Cleared by the first `deregister`.
    registered: AtomicBool,
}

impl<W: Ready> Registration<W> {
    /// Any thread: the readiness of `dir` now.
    pub fn readiness(&self, dir: Dir) -> ReadyEvent {
        // Acquire: pairs with the poller's AcqRel `fire`.
        let cur = self.io.readiness.load(Acquire);
        ReadyEvent {
            tick: cur >> TICK_SHIFT,
            bit: dir.bit(),
            ready: cur & dir.bit() != 0,
        }
    }

    /// After a `WouldBlock`: mark the direction not ready, unless an event
    /// arrived since `ev` was read (then the next try may succeed).
    pub fn clear_readiness(&self, ev: ReadyEvent) {
        let mut cur = self.io.readiness.load(Acquire);
        loop {
            if cur >> TICK_SHIFT != ev.tick || cur & ev.bit == 0 {
                return;
            }
            // AcqRel CAS: fails if `fire` moved the tick meanwhile (pairs
            // with its RMW), so a newer event is never erased.
            match self
                .io
                .readiness
                .compare_exchange_weak(cur, cur & !ev.bit, AcqRel, Acquire)
            {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Parks `w` until `dir` becomes ready or `deadline` passes (whichever
    /// first readies `w`, once). Gives `w` back without parking when the
    /// direction is ready already, the deadline has passed, or the
    /// registration is closed: the caller then retries its operation (which
    /// reports the timeout or the closed fd).
    pub fn park(&self, dir: Dir, w: W, deadline: Option<Instant>) -> Result<WaitId, W> {
        let mut ws = lock(&self.io.waiters);
        if ws.closed || self.readiness(dir).ready {
            return Err(w);
        }
        let id = WaitId {
            dir,
            id: ws.next_id,
        };
        let mut wake = false;
        let timer = match deadline {
            None => None,
            Some(d) if d <= Instant::now() => return Err(w),
            // Armed under `waiters` (lock order: waiters → timers): the
            // deadline cannot fire before the waiter it points at is stored.
            Some(d) => match self.inner.add_timer(d, Fire::Io(self.io.clone(), id)) {
                Ok((key, must_wake)) => {
                    wake = must_wake;
                    Some(key)
                }
                Err(_) => return Err(w),
            },
        };
        ws.next_id += 1;
        ws.list(dir).push(Waiter {
            id: id.id,
            w,
            timer,
        });
        self.inner.nwaiters.fetch_add(1, SeqCst);
        drop(ws);
        if wake {
            self.inner.wake_poller();
        }
        Ok(id)
    }

    /// Withdraws a park that was not woken (its G gave up waiting): drops
    /// the waiter and its deadline. False if it was already woken.
    pub fn cancel(&self, id: WaitId) -> bool {
        let Some(waiter) = self.io.take(id) else {
            return false;
        };
        sub(&self.inner.nwaiters, 1);
        if let Some(k) = waiter.timer {
            self.inner.cancel_timer(k);
        }
        true
    }

    /// Closed: deregistered, or its netpoller stopped.
    pub fn is_closed(&self) -> bool {
        lock(&self.io.waiters).closed
    }

    /// Removes the fd from the poll set and wakes every G parked on it (their
    /// operations then find the fd closed). Idempotent. Call it before
    /// closing the fd: a closed fd number can be reused by a new
    /// registration, which the `EPOLL_CTL_DEL` would then remove.
    pub fn deregister(&self) {
        // AcqRel swap: exactly one caller (an explicit deregister or the
        // drop) goes on; pairs with the same swap in any other caller.
        if !self.registered.swap(false, AcqRel) {
            return;
        }
        // Errors only mean the netpoller's epoll fd already forgot the fd.
        let _ = self.inner.registry.deregister(&mut SourceFd(&self.fd));
        let removed = lock(&self.inner.ios).remove(self.io.token);
        let mut batch = Vec::new();
        let mut cancel = Vec::new();
        {
            let mut guard = lock(&self.io.waiters);
            let ws = &mut *guard;
            ws.closed = true;
            for waiter in ws.read.drain(..).chain(ws.write.drain(..)) {
                batch.push(waiter.w);
                cancel.extend(waiter.timer);
            }
        }
        for k in cancel {
            self.inner.cancel_timer(k);
        }
        let n = batch.len();
        if n > 0 {
            W::ready_all(batch);
            sub(&self.inner.nwaiters, n);
        }
        drop(removed);
    }

    /// The registered fd.
    pub fn fd(&self) -> RawFd {
        self.fd
    }
}

impl<W: Ready> Drop for Registration<W> {
    fn drop(&mut self) {
        self.deregister();
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, as Go's runtime does
/// at start (os_linux.go, Go 1.19+): a server should not run out of fds at
/// an arbitrary 1024. Best effort; returns the soft limit now in force.
pub fn raise_nofile_limit() -> Option<libc::rlim_t> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return None;
    }
    if rl.rlim_cur < rl.rlim_max {
        let want = libc::rlimit {
            rlim_cur: rl.rlim_max,
            rlim_max: rl.rlim_max,
        };
        // SAFETY: setrlimit reads one rlimit struct we own. It fails (and
        // changes nothing) if the hard limit is above the kernel's nr_open.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            rl.rlim_cur = rl.rlim_max;
        }
    }
    Some(rl.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::sync::mpsc;

    /// A waiter that reports its id on a channel when readied.
    #[derive(Debug)]
    struct W(u32, mpsc::Sender<u32>);
    impl Ready for W {
        fn ready_all(batch: Vec<W>) {
            for w in batch {
                let _ = w.1.send(w.0);
            }
        }
    }

    const LONG: Duration = Duration::from_secs(10);

    /// Runs `test` on a fresh netpoller that another thread polls the way
    /// the scheduler's Ms do: one blocking poll after another, readying each
    /// batch before dropping it. Stops the netpoller afterwards.
    fn driven(test: impl FnOnce(&Netpoll<W>)) {
        /// Ends the driver even when `test` panics: `thread::scope` joins
        /// it before the panic propagates, and it may block for an hour.
        struct Finish<'a>(&'a Netpoll<W>, &'a AtomicBool);
        impl Drop for Finish<'_> {
            fn drop(&mut self) {
                // Release: pairs with the driver's Acquire load.
                self.1.store(true, Release);
                self.0.stop();
            }
        }
        let np = Netpoll::<W>::new();
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !done.load(Acquire) {
                    match np.poll(None) {
                        Some(mut b) => W::ready_all(b.take()),
                        // Nothing to wait for (or not started, or stopped).
                        None => std::thread::sleep(Duration::from_millis(1)),
                    }
                }
            });
            let _finish = Finish(&np, &done);
            test(&np);
        });
    }

    fn wait_for(cond: impl Fn() -> bool) -> bool {
        let end = Instant::now() + LONG;
        while Instant::now() < end {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }

    #[test]
    fn timers_fire_in_order_and_never_early() {
        driven(|np| {
            let h = np.handle().unwrap();
            let (tx, rx) = mpsc::channel();
            let start = Instant::now();
            let mut whens = Vec::new();
            for i in 0..200u32 {
                let when = start
                    + Duration::from_millis(50)
                    + Duration::from_micros(u64::from(i * 7919 % 200) * 250);
                whens.push(when);
                h.add_timer(when, W(i, tx.clone())).unwrap();
            }
            assert_eq!(np.timers(), 200);
            let mut last = Instant::now() - LONG;
            let mut last_when = start;
            for _ in 0..200 {
                let i = rx.recv_timeout(LONG).expect("a timer did not fire");
                let now = Instant::now();
                let when = whens[i as usize];
                assert!(now >= when, "timer {i} fired early");
                assert!(when >= last_when, "timer {i} out of order");
                assert!(now >= last);
                last = now;
                last_when = when;
            }
            assert!(wait_for(|| np.timers() == 0));
            np.stop();
        });
    }

    #[test]
    fn an_earlier_timer_breaks_a_long_poll() {
        driven(|np| {
            let h = np.handle().unwrap();
            let (tx, rx) = mpsc::channel();
            h.add_timer(Instant::now() + Duration::from_secs(3600), W(0, tx.clone()))
                .unwrap();
            std::thread::sleep(Duration::from_millis(20));
            h.add_timer(Instant::now() + Duration::from_millis(5), W(1, tx))
                .unwrap();
            assert_eq!(rx.recv_timeout(LONG), Ok(1));
            // The fired timer is uncounted once its batch drops, just after
            // it was readied.
            assert!(wait_for(|| np.timers() == 1));
            np.stop();
            assert_eq!(np.timers(), 0);
            assert!(
                np.handle().is_err(),
                "a stopped netpoller hands out no handle"
            );
        });
    }

    #[test]
    fn cancelled_timers_never_fire() {
        driven(|np| {
            let h = np.handle().unwrap();
            let (tx, rx) = mpsc::channel();
            let soon = Instant::now() + Duration::from_millis(10);
            let k = h.add_timer(soon, W(0, tx.clone())).unwrap();
            h.add_timer(soon + Duration::from_millis(5), W(1, tx))
                .unwrap();
            assert!(h.cancel_timer(k));
            assert!(!h.cancel_timer(k));
            assert_eq!(rx.recv_timeout(LONG), Ok(1));
            assert!(rx.recv_timeout(Duration::from_millis(30)).is_err());
            assert!(wait_for(|| np.timers() == 0));
        });
    }

    #[test]
    fn io_wakes_a_parked_waiter_and_ticks_protect_events() {
        driven(|np| {
            let h = np.handle().unwrap();
            let (mut a, b) = UnixStream::pair().unwrap();
            b.set_nonblocking(true).unwrap();
            let reg = h.register(b.as_raw_fd(), true).unwrap();
            let (tx, rx) = mpsc::channel();

            // A read that would block clears readiness; parking then waits.
            let ev = reg.readiness(Dir::Read);
            assert!(ev.ready);
            assert_eq!(
                (&b).read(&mut [0; 8]).unwrap_err().kind(),
                io::ErrorKind::WouldBlock
            );
            reg.clear_readiness(ev);
            assert!(!reg.readiness(Dir::Read).ready);
            let id = reg.park(Dir::Read, W(7, tx.clone()), None).unwrap();
            assert_eq!(np.waiters(), 1);
            a.write_all(b"x").unwrap();
            assert_eq!(rx.recv_timeout(LONG), Ok(7));
            assert!(wait_for(|| np.waiters() == 0));
            assert!(!reg.cancel(id), "already woken");

            // A stale clear (read before the event) must not erase it.
            let stale = reg.readiness(Dir::Read);
            a.write_all(b"y").unwrap();
            // Nobody waits, so the driver does not block in a poll: poll
            // without blocking to record the event.
            assert!(wait_for(|| {
                drop(np.poll(Some(Duration::ZERO)));
                reg.readiness(Dir::Read).tick != stale.tick
            }));
            reg.clear_readiness(stale);
            assert!(
                reg.readiness(Dir::Read).ready,
                "a stale clear erased an event"
            );
            // ... so parking now returns at once.
            assert!(reg.park(Dir::Read, W(8, tx), None).is_err());
            assert_eq!(np.waiters(), 0);
            drop(reg);
            np.stop();
        });
    }

    #[test]
    fn deadline_fires_and_io_cancels_the_deadline() {
        driven(|np| {
            let h = np.handle().unwrap();
            let (mut a, b) = UnixStream::pair().unwrap();
            let reg = h.register(b.as_raw_fd(), false).unwrap();
            let (tx, rx) = mpsc::channel();

            let t0 = Instant::now();
            let d = t0 + Duration::from_millis(20);
            reg.park(Dir::Read, W(1, tx.clone()), Some(d)).unwrap();
            assert_eq!((np.waiters(), np.timers()), (1, 1));
            assert_eq!(rx.recv_timeout(LONG), Ok(1));
            assert!(Instant::now() >= d, "deadline fired early");
            assert!(wait_for(|| (np.waiters(), np.timers()) == (0, 0)));

            // The event wins: the deadline's timer goes with the waiter.
            reg.park(Dir::Read, W(2, tx.clone()), Some(Instant::now() + LONG))
                .unwrap();
            assert_eq!((np.waiters(), np.timers()), (1, 1));
            a.write_all(b"x").unwrap();
            assert_eq!(rx.recv_timeout(LONG), Ok(2));
            assert!(wait_for(|| (np.waiters(), np.timers()) == (0, 0)));

            // A cancelled park drops both.
            let ev = reg.readiness(Dir::Write);
            reg.clear_readiness(ev);
            let id = reg
                .park(Dir::Write, W(3, tx), Some(Instant::now() + LONG))
                .unwrap();
            assert!(reg.cancel(id));
            assert_eq!((np.waiters(), np.timers()), (0, 0));
            np.stop();
        });
    }

    #[test]
    fn deregister_wakes_waiters_and_recycles_tokens_with_a_new_generation() {
        driven(|np| {
            let h = np.handle().unwrap();
            let (_a, b) = UnixStream::pair().unwrap();
            let reg = h.register(b.as_raw_fd(), false).unwrap();
            let (tx, rx) = mpsc::channel();
            reg.park(Dir::Read, W(1, tx.clone()), Some(Instant::now() + LONG))
                .unwrap();
            let old = reg.io.token;
            reg.deregister();
            assert_eq!(rx.recv_timeout(LONG), Ok(1));
            assert!(reg.is_closed());
            assert!(reg.park(Dir::Read, W(2, tx), None).is_err());
            assert_eq!((np.waiters(), np.timers()), (0, 0));
            let reg2 = h.register(b.as_raw_fd(), false).unwrap();
            assert_eq!(reg2.io.token as u32, old as u32, "slot reused");
            assert_ne!(reg2.io.token, old, "with a new generation");
            let ios = lock(&h.0.ios);
            assert!(ios.get(old).is_none(), "a stale token finds nothing");
            assert!(ios.get(reg2.io.token).is_some());
        });
    }

    #[test]
    fn stop_drops_everything() {
        driven(|np| {
            let h = np.handle().unwrap();
            let (_a, b) = UnixStream::pair().unwrap();
            let reg = h.register(b.as_raw_fd(), false).unwrap();
            let (tx, rx) = mpsc::channel();
            reg.park(Dir::Read, W(1, tx.clone()), None).unwrap();
            h.add_timer(Instant::now() + LONG, W(2, tx.clone()))
                .unwrap();
            np.stop();
            assert_eq!((np.waiters(), np.timers()), (0, 0));
            assert!(reg.is_closed());
            assert!(h.is_stopped());
            assert!(h.add_timer(Instant::now(), W(3, tx.clone())).is_err());
            assert!(h.register(b.as_raw_fd(), true).is_err());
            drop(tx);
            // Every sender is gone: nothing was woken, everything was dropped.
            assert_eq!(
                rx.recv_timeout(LONG),
                Err(mpsc::RecvTimeoutError::Disconnected)
            );
        });
    }

    #[test]
    fn one_blocker_at_a_time_and_counts_held_until_the_batch_drops() {
        let np = Netpoll::<W>::new();
        assert!(np.poll(None).is_none(), "no netpoller yet");
        let h = np.handle().unwrap();
        let (tx, rx) = mpsc::channel();
        assert!(np.poll(None).is_none(), "nothing to wait for: no block");
        assert!(!np.blocked());
        h.add_timer(Instant::now() + Duration::from_secs(3600), W(0, tx.clone()))
            .unwrap();
        std::thread::scope(|s| {
            let blocker = s.spawn(|| {
                let t0 = Instant::now();
                // The break itself returns an empty batch (the new timer is
                // not due yet); the next poll sleeps until it is.
                let mut b = loop {
                    let b = np.poll(None).expect("the blocker polls");
                    if !b.is_empty() {
                        break b;
                    }
                };
                let ids: Vec<u32> = b.take().into_iter().map(|w| w.0).collect();
                // Fired, yet still counted until the batch drops.
                let counted = np.timers();
                drop(b);
                (ids, counted, np.timers(), t0.elapsed())
            });
            assert!(wait_for(|| np.blocked()));
            assert!(np.poll(None).is_none(), "a second blocker");
            assert!(
                np.poll(Some(Duration::ZERO)).is_none(),
                "a non-blocking poll beside a blocker"
            );
            assert_eq!(np.since_last_poll(), None);
            h.add_timer(Instant::now() + Duration::from_millis(5), W(1, tx))
                .unwrap();
            let (ids, counted, after, took) = blocker.join().unwrap();
            assert_eq!(ids, vec![1]);
            assert_eq!((counted, after), (2, 1));
            assert!(took < LONG, "the earlier timer did not break the poll");

            // `wake` breaks a blocker with nothing due: an empty batch.
            let blocker = s.spawn(|| np.poll(None).map(|b| b.is_empty()));
            assert!(wait_for(|| np.blocked()));
            np.wake();
            assert_eq!(blocker.join().unwrap(), Some(true));
        });
        assert!(!np.blocked());
        assert!(np.since_last_poll().is_some_and(|d| d < LONG));
        assert!(rx.try_recv().is_err(), "nothing was readied by the test");
        np.stop();
        assert!(np.poll(Some(Duration::ZERO)).is_none(), "stopped");
    }

    #[test]
    fn nofile_limit_is_raised_to_the_hard_limit() {
        let soft = raise_nofile_limit().unwrap();
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit struct we own.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) }, 0);
        assert_eq!(rl.rlim_cur, soft);
    }
}
