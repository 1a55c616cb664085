//! `gmprt._gmprt.Poller`: the readiness of a `gmprt.aio` loop's fds,
//! without Python in the way.
//!
//! asyncio's selector loop asks "which of my fds are ready" once per
//! iteration. Here each watched (fd, direction) is a small Rust-native G
//! ([`WatchBody`]) parked in gmprt's netpoller. When its fd is ready it
//! *posts* it to the poller and wakes the loop G, then parks on its gate
//! until the loop has run the fd's callbacks ([`Poller::rearm`]); then it
//! waits again, so a callback that left data unread is told again, as
//! `select` would (level-triggered). The watchers of one fd share its
//! registration (`net::FdReg`: the fd itself, registered while watched and
//! removed by the unwatch that leaves it unwatched, before asyncio closes
//! it) and ask `poll(2)` only when the registration cannot tell; a socket
//! transport whose reads go through [`SockIO`], which knows when it
//! drained the socket, spares even that. The loop G parks on one token, [`Poller::wait`], which
//! completes when something was posted, [`Poller::wake`] was called (from
//! any thread: `call_soon_threadsafe`) or its timeout passed (a gmprt
//! timer).
//!
//! Locking: one mutex for the poller's state and one per watch; neither is
//! ever held across a call into Python or a wake (a wake may run the
//! scheduler), and the poller's is never taken under a watch's.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};
use std::task::Poll as TaskPoll;
use std::time::{Duration, Instant};

use gmprt_core::net::{FdReg, FdWatch};
use gmprt_core::netpoll::Dir;
use gmprt_core::{Cx, Step, Waker};
use pyo3::exceptions::{PyKeyboardInterrupt, PyRuntimeError, PySystemExit};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple, PyType};
use pyo3::{PyTraverseError, PyVisit};

use crate::cancel;
use crate::lock::lock;
use crate::rt;
use crate::time::ParkedTimer;
use crate::token::{Poll, Token, Wait};

/// What one `SockIO` read asks `recv` for: asyncio's
/// `_SelectorSocketTransport.max_size`.
const READ_MAX: usize = 256 * 1024;

thread_local! {
    /// The buffer of `SockIO` reads, one per M that runs a loop G.
    static READ_BUF: std::cell::RefCell<Option<Box<[u8]>>> =
        const { std::cell::RefCell::new(None) };
}

/// asyncio's event bits (`selectors.EVENT_READ` / `EVENT_WRITE`).
const READ: u8 = 1;
const WRITE: u8 = 2;

#[derive(Default)]
struct State {
    /// Posted by watchers since the loop last took them.
    ready: Vec<Arc<Watch>>,
    /// Handed to the loop by the last wait; their gates open on `rearm`.
    fired: Vec<Arc<Watch>>,
    /// `wake()` was called since the last wait completed.
    woken: bool,
    /// The loop G, while parked in `wait`.
    waker: Option<Waker>,
    watches: HashMap<(RawFd, u8), Arc<Watch>, BuildHasherDefault<FdHasher>>,
    /// The registration of each watched fd, shared by its watches.
    regs: HashMap<RawFd, Arc<FdReg>, BuildHasherDefault<FdHasher>>,
}

/// The watch map's hasher. Its keys are fds the kernel hands out (small,
/// dense, nobody's choice), so SipHash's resistance to chosen keys buys
/// nothing, and it cost ~200 instructions per echoed message (callgrind):
/// the key's bits times the golden ratio (Fibonacci hashing) index well.
#[derive(Default)]
struct FdHasher(u64);

impl Hasher for FdHasher {
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.0 = self.0.rotate_left(8) ^ u64::from(n);
    }

    fn write_i32(&mut self, n: i32) {
        self.0 = self.0.rotate_left(32) ^ u64::from(n as u32);
    }
}

struct Shared {
    st: Mutex<State>,
}

impl Shared {
    fn post(&self, w: &Arc<Watch>) {
        let waker = {
            let mut st = lock(&self.st);
            st.ready.push(w.clone());
            st.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Deregisters ``fd`` if neither of its directions is watched any
    /// more (out of the lock: it wakes the watchers parked on it).
    fn release(&self, fd: RawFd) {
        let reg = {
            let mut st = lock(&self.st);
            if st.watches.contains_key(&(fd, READ)) || st.watches.contains_key(&(fd, WRITE)) {
                return;
            }
            st.regs.remove(&fd)
        };
        if let Some(r) = reg {
            r.deregister();
        }
    }

    /// The read callback of ``fd``'s reader drained it (`FdWatch::drained`):
    /// its watcher need not ask ``poll(2)`` after the callbacks, and trusts
    /// readiness from then on (the reader handles ``EAGAIN``).
    fn drained(&self, fd: RawFd, would_block: bool) {
        let w = lock(&self.st).watches.get(&(fd, READ)).cloned();
        if let Some(w) = w {
            let mut st = lock(&w.st);
            st.drained = Some(would_block);
            st.trusted = true;
        }
    }
}

/// One watched (fd, direction), shared by its watcher G and the poller.
struct Watch {
    fd: RawFd,
    event: u8,
    reg: Arc<FdReg>,
    st: Mutex<WatchState>,
}

#[derive(Default)]
struct WatchState {
    /// The loop ran the callbacks of the last post: wait again.
    open: bool,
    /// The callbacks of the last post drained the fd (a `SockIO` read):
    /// `Some(would_block)`, see `FdWatch::drained`.
    drained: Option<bool>,
    /// The fd's owner handles `EAGAIN` and reports when it drained the fd:
    /// readiness needs no `poll(2)` to confirm it.
    trusted: bool,
    cancelled: bool,
    /// The watcher G, while parked (on the fd or on the gate).
    waker: Option<Waker>,
}

impl Watch {
    /// Opens the gate, or ends the watcher (`cancel`); wakes it if parked.
    fn signal(&self, cancel: bool) {
        let waker = {
            let mut st = lock(&self.st);
            if cancel {
                st.cancelled = true;
            } else {
                st.open = true;
            }
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

enum Phase {
    /// Waiting for the fd (`wait.is_some()` once polled).
    Fd,
    /// Posted; waiting for the loop to open the gate.
    Gate,
}

/// A watcher: a G with no Python (module docs).
struct WatchBody {
    w: Arc<Watch>,
    poller: Arc<Shared>,
    wait: Option<FdWatch>,
    phase: Phase,
}

impl gmprt_core::Body for WatchBody {
    fn step(&mut self, cx: &mut Cx<'_>) -> Step {
        loop {
            let (drained, confirm) = {
                let mut st = lock(&self.w.st);
                // The runtime is stopping (`run()` interrupts every G): a
                // watcher has nothing to clean up.
                if st.cancelled || cancel::shutting_down() {
                    st.waker = None;
                    return Step::Done;
                }
                if let Phase::Gate = self.phase {
                    if !st.open {
                        st.waker = Some(cx.waker());
                        return Step::Park;
                    }
                    st.open = false;
                    self.phase = Phase::Fd;
                }
                (st.drained.take(), !st.trusted)
            };
            let Some(sched) = rt::sched() else {
                return Step::Done;
            };
            let dir = if self.w.event == READ {
                Dir::Read
            } else {
                Dir::Write
            };
            let w = self
                .wait
                .get_or_insert_with(|| FdWatch::new(self.w.reg.clone(), dir));
            if let Some(would_block) = drained {
                w.drained(would_block);
            }
            match w.poll(&sched, confirm) {
                TaskPoll::Ready(r) => {
                    // Ready, or not an open fd any more (readable, as for
                    // select: the callback meets the error).
                    self.poller.post(&self.w);
                    if r.is_err() {
                        self.wait = None;
                        return Step::Done;
                    }
                    self.phase = Phase::Gate;
                }
                TaskPoll::Pending => {
                    // A cancel must reach the G parked on the fd too.
                    lock(&self.w.st).waker = Some(cx.waker());
                    if w.park(cx.waker()) {
                        return Step::Park;
                    }
                }
            }
        }
    }

    fn embedded(&self) -> bool {
        false
    }

    fn describe(&self) -> String {
        let what = if self.w.event == READ {
            "reader"
        } else {
            "writer"
        };
        format!("(gmprt.aio {what} of fd {}) [netpoll]", self.w.fd)
    }
}

/// The readiness of one `gmprt.aio` loop's fds (module docs). Private to
/// ``gmprt.aio``.
#[pyclass(frozen, module = "gmprt._gmprt")]
pub(crate) struct Poller {
    shared: Arc<Shared>,
}

#[pymethods]
impl Poller {
    #[new]
    fn new() -> Poller {
        Poller {
            shared: Arc::new(Shared {
                st: Mutex::new(State::default()),
            }),
        }
    }

    /// Start watching ``events`` (asyncio's bits) of ``fd`` that are not
    /// watched yet: one watcher G each, in the running runtime.
    fn watch(&self, fd: RawFd, events: u8) -> PyResult<()> {
        let sched = rt::sched()
            .ok_or_else(|| PyRuntimeError::new_err("gmprt.aio: no gmprt runtime is running"))?;
        for ev in [READ, WRITE] {
            if events & ev == 0 {
                continue;
            }
            let w = {
                let mut st = lock(&self.shared.st);
                if st.watches.contains_key(&(fd, ev)) {
                    continue;
                }
                let reg = st
                    .regs
                    .entry(fd)
                    .or_insert_with(|| Arc::new(FdReg::new(fd)))
                    .clone();
                let w = Arc::new(Watch {
                    fd,
                    event: ev,
                    reg,
                    st: Mutex::new(WatchState::default()),
                });
                st.watches.insert((fd, ev), w.clone());
                w
            };
            let body = WatchBody {
                w: w.clone(),
                poller: self.shared.clone(),
                wait: None,
                phase: Phase::Fd,
            };
            if sched.spawn(Box::new(body)).is_err() {
                lock(&self.shared.st).watches.remove(&(fd, ev));
                self.shared.release(fd);
                return Err(PyRuntimeError::new_err(
                    "gmprt.aio: the gmprt runtime is stopping",
                ));
            }
        }
        Ok(())
    }

    /// Stop watching ``events`` of ``fd``. Once neither direction is
    /// watched the fd is deregistered, now: asyncio may close it next.
    fn unwatch(&self, fd: RawFd, events: u8) {
        for ev in [READ, WRITE] {
            if events & ev == 0 {
                continue;
            }
            let w = lock(&self.shared.st).watches.remove(&(fd, ev));
            if let Some(w) = w {
                w.signal(true);
            }
        }
        self.shared.release(fd);
    }

    /// Stop every watcher (the loop G stops; its runtime may end).
    fn stop(&self) {
        let (ws, regs): (Vec<Arc<Watch>>, Vec<Arc<FdReg>>) = {
            let mut st = lock(&self.shared.st);
            st.ready.clear();
            st.fired.clear();
            (
                st.watches.drain().map(|(_, w)| w).collect(),
                st.regs.drain().map(|(_, r)| r).collect(),
            )
        };
        for w in ws {
            w.signal(true);
        }
        for r in regs {
            r.deregister();
        }
    }

    /// The loop ran the callbacks of what the last wait returned: those
    /// watchers wait on their fds again.
    fn rearm(&self) {
        let fired = std::mem::take(&mut lock(&self.shared.st).fired);
        for w in fired {
            w.signal(false);
        }
    }

    /// asyncio's ``_process_events`` for what the loop G's waits returned
    /// (``pairs``: ``(fd, event)``, an fd possibly twice): for each fd
    /// still registered in ``keys`` (fd -> ``SelectorKey``), in the order
    /// first posted, its reader then its writer handle is appended to the
    /// loop's ``ready`` deque, or, if cancelled, removed from the loop
    /// (``loop._remove_reader``/``_remove_writer``), as asyncio does.
    fn process(
        &self,
        py: Python<'_>,
        event_loop: &Bound<'_, PyAny>,
        keys: &Bound<'_, PyDict>,
        ready: &Bound<'_, PyAny>,
        pairs: &Bound<'_, PyList>,
    ) -> PyResult<()> {
        // Merge per fd, keeping the first-posted order (a select returns
        // each fd once with both bits).
        let mut merged: Vec<(RawFd, u8)> = Vec::with_capacity(pairs.len());
        for item in pairs.iter() {
            merged.push(item.extract()?);
        }
        // An fd is posted at most once per direction: a duplicate is rare,
        // and found by sorting a copy rather than hashing every fd.
        let mut sorted: Vec<RawFd> = merged.iter().map(|&(fd, _)| fd).collect();
        sorted.sort_unstable();
        if sorted.windows(2).any(|w| w[0] == w[1]) {
            let mut first: Vec<(RawFd, u8)> = Vec::with_capacity(merged.len());
            for (fd, ev) in merged {
                match first.iter_mut().find(|(f, _)| *f == fd) {
                    Some(slot) => slot.1 |= ev,
                    None => first.push((fd, ev)),
                }
            }
            merged = first;
        }
        let append = ready.getattr(intern!(py, "append"))?;
        for (fd, mask) in merged {
            let Some(key) = keys.get_item(fd)? else {
                continue;
            };
            // SelectorKey is a namedtuple: (fileobj, fd, events, data).
            let key = key.cast_into::<PyTuple>()?;
            let events: u8 = key.get_item(2)?.extract()?;
            let mask = mask & events;
            if mask == 0 {
                continue;
            }
            let fileobj = key.get_item(0)?;
            let data = key.get_item(3)?;
            let (reader, writer): (Bound<'_, PyAny>, Bound<'_, PyAny>) = data.extract()?;
            for (bit, handle, remove) in [
                (READ, reader, intern!(py, "_remove_reader")),
                (WRITE, writer, intern!(py, "_remove_writer")),
            ] {
                if mask & bit == 0 || handle.is_none() {
                    continue;
                }
                if handle.getattr(intern!(py, "_cancelled"))?.is_truthy()? {
                    event_loop.call_method1(remove, (&fileobj,))?;
                } else {
                    append.call1((handle,))?;
                }
            }
        }
        Ok(())
    }

    /// The callback loop of asyncio's ``_run_once``: run the first
    /// ``ntodo`` handles of ``ready`` (a deque), skipping cancelled ones.
    /// A handle of exactly ``handle_types`` runs as its ``_run`` would
    /// (``_context.run(_callback, *_args)``), without that Python frame;
    /// when the callback raises, ``failed(handle, exc)`` reports it as
    /// ``_run`` does; ``SystemExit`` and ``KeyboardInterrupt`` propagate.
    /// Any other handle type gets its own ``_run()``.
    fn run_ready(
        &self,
        py: Python<'_>,
        ready: &Bound<'_, PyAny>,
        ntodo: usize,
        handle_types: (Bound<'_, PyType>, Bound<'_, PyType>),
        failed: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let popleft = ready.getattr(intern!(py, "popleft"))?;
        for _ in 0..ntodo {
            let h = popleft.call0()?;
            if h.getattr(intern!(py, "_cancelled"))?.is_truthy()? {
                continue;
            }
            let ty = h.get_type();
            if !ty.is(&handle_types.0) && !ty.is(&handle_types.1) {
                h.call_method0(intern!(py, "_run"))?;
                continue;
            }
            let ctx = h.getattr(intern!(py, "_context"))?;
            let cb = h.getattr(intern!(py, "_callback"))?;
            let args = h.getattr(intern!(py, "_args"))?.cast_into::<PyTuple>()?;
            let run = intern!(py, "run");
            // Up to two arguments (every reader, writer and task step), a
            // Rust tuple: pyo3 makes that a vectorcall of the method, with
            // no argument tuple or bound method built.
            let called = match args.len() {
                0 => ctx.call_method1(run, (cb,)),
                1 => ctx.call_method1(run, (cb, args.get_item(0)?)),
                2 => ctx.call_method1(run, (cb, args.get_item(0)?, args.get_item(1)?)),
                _ => {
                    let mut call = Vec::with_capacity(args.len() + 1);
                    call.push(cb);
                    call.extend(args.iter());
                    ctx.call_method1(run, PyTuple::new(py, call)?)
                }
            };
            if let Err(e) = called {
                if e.is_instance_of::<PySystemExit>(py)
                    || e.is_instance_of::<PyKeyboardInterrupt>(py)
                {
                    return Err(e);
                }
                failed.call1((h, e.into_value(py)))?;
            }
        }
        Ok(())
    }

    /// A non-blocking poll of the netpoller, readying the Gs it finds
    /// (watchers among them). A loop busy with its own callbacks calls it
    /// each iteration, as asyncio's loop calls `epoll_wait(0)`: a busy P
    /// polls only every 61st schedtick, and readiness must not wait for
    /// that. Nothing happens when another M polls, or nothing waits.
    fn poll_io(&self, py: Python<'_>) {
        let Some(sched) = rt::sched() else {
            return;
        };
        let np = sched.netpoll();
        if !np.pending() {
            return;
        }
        // Detached: no Python in here, and a wake may run the scheduler.
        py.detach(|| {
            if let Some(mut polled) = np.poll(Some(Duration::ZERO)) {
                for w in polled.take() {
                    w.wake();
                }
            }
        });
    }

    /// Wake the loop G's wait (any thread; `call_soon_threadsafe`).
    fn wake(&self) {
        let waker = {
            let mut st = lock(&self.shared.st);
            st.woken = true;
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// ``await poller.wait(timeout)``: park the loop G until a watched fd
    /// is ready, :meth:`wake` is called or ``timeout`` seconds pass (None:
    /// no limit); returns the ready ``(fd, event)`` pairs.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, timeout: Option<f64>) -> PyResult<Token> {
        let until = match timeout {
            None => None,
            Some(t) if t.is_finite() && t >= 0.0 => {
                Some(Instant::now() + Duration::from_secs_f64(t.min(1e9)))
            }
            Some(t) if t.is_nan() || t < 0.0 => {
                return Err(PyRuntimeError::new_err(format!("bad wait timeout {t}")))
            }
            Some(_) => None,
        };
        let tok = Token::wait(PollWait {
            shared: self.shared.clone(),
            until,
            timer: ParkedTimer::default(),
        });
        Ok(tok)
    }
}

/// The loop G's wait (`Poller::wait`).
struct PollWait {
    shared: Arc<Shared>,
    until: Option<Instant>,
    timer: ParkedTimer,
}

impl Wait for PollWait {
    fn poll(&self, py: Python<'_>) -> Poll {
        self.timer.cancel();
        let taken = {
            let mut st = lock(&self.shared.st);
            st.waker = None;
            let due = self.until.is_some_and(|u| Instant::now() >= u);
            if st.ready.is_empty() && !st.woken && !due {
                None
            } else {
                st.woken = false;
                let ready = std::mem::take(&mut st.ready);
                // A post of a watch unwatched meanwhile is stale.
                let live: Vec<Arc<Watch>> = ready
                    .into_iter()
                    .filter(|w| {
                        st.watches
                            .get(&(w.fd, w.event))
                            .is_some_and(|cur| Arc::ptr_eq(cur, w))
                    })
                    .collect();
                st.fired.extend(live.iter().cloned());
                Some(live)
            }
        };
        // Python objects are made with the lock released (module docs).
        match taken {
            None => Poll::Pending,
            Some(live) => {
                let pairs: Vec<(RawFd, u8)> = live.iter().map(|w| (w.fd, w.event)).collect();
                Poll::Ready(PyList::new(py, pairs).map(|l| l.into_any().unbind()))
            }
        }
    }

    fn park(&self, _py: Python<'_>, waker: Waker) -> bool {
        if let Some(u) = self.until {
            // Fails only while the runtime stops.
            let _ = self.timer.arm(u, waker.clone());
        }
        let mut st = lock(&self.shared.st);
        if !st.ready.is_empty() || st.woken {
            drop(st);
            self.timer.cancel();
            return false;
        }
        st.waker = Some(waker);
        true
    }

    fn describe(&self) -> String {
        "gmprt.aio loop wait".into()
    }

    fn cancel(&self, _py: Python<'_>) -> bool {
        lock(&self.shared.st).waker = None;
        self.timer.cancel();
        true
    }
}
/// A ``gmprt.aio`` socket transport's read callback (asyncio's
/// ``_read_ready__data_received``): one ``recv`` into a per-thread
/// buffer, the bytes of what came handed to the protocol, and the
/// watcher told when the socket was drained. asyncio's own ``recv``
/// allocates ``max_size`` and shrinks it, which costs an ``mmap`` and
/// an ``munmap`` per read in a fresh process (issue 14's note); the
/// copy of what arrived is cheaper.
fn read(
    shared: &Shared,
    py: Python<'_>,
    transport: &Bound<'_, PyAny>,
    fd: RawFd,
    data_received: &Bound<'_, PyAny>,
) -> PyResult<()> {
    if transport.getattr(intern!(py, "_conn_lost"))?.is_truthy()? {
        return Ok(());
    }
    let got = READ_BUF.with_borrow_mut(|buf| {
        let buf = buf.get_or_insert_with(|| vec![0u8; READ_MAX].into_boxed_slice());
        loop {
            // SAFETY: `buf` is a live, writable buffer of `buf.len()`
            // bytes; recv writes at most that many. A bad fd is an
            // error, nothing worse.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n >= 0 {
                let n = n as usize;
                break Ok(Some((PyBytes::new(py, &buf[..n]), n < buf.len())));
            }
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::Interrupted => continue,
                std::io::ErrorKind::WouldBlock => break Ok(None),
                _ => break Err(e),
            }
        }
    });
    let (data, drained) = match got {
        Ok(Some(got)) => got,
        Ok(None) => {
            shared.drained(fd, true);
            return Ok(());
        }
        Err(e) => {
            let exc = PyErr::from(e).into_value(py);
            transport.call_method1(
                intern!(py, "_fatal_error"),
                (exc, "Fatal read error on socket transport"),
            )?;
            return Ok(());
        }
    };
    if data.as_bytes().is_empty() {
        transport.call_method0(intern!(py, "_read_ready__on_eof"))?;
        return Ok(());
    }
    if drained {
        shared.drained(fd, false);
    }
    if let Err(e) = data_received.call1((data,)) {
        if e.is_instance_of::<PySystemExit>(py) || e.is_instance_of::<PyKeyboardInterrupt>(py) {
            return Err(e);
        }
        transport.call_method1(
            intern!(py, "_fatal_error"),
            (
                e.into_value(py),
                "Fatal error: protocol.data_received() call failed.",
            ),
        )?;
    }
    Ok(())
}

/// A ``gmprt.aio`` socket transport's ``write`` fast path: when the
/// transport is open with nothing buffered and ``data`` is ``bytes``,
/// one ``send``; returns None when it all went, else what asyncio's own
/// ``write`` must still take (all of ``data``, or what ``send`` left):
/// buffering, the writer, errors and every rule of ``write`` stay
/// asyncio's.
fn write<'py>(
    py: Python<'py>,
    transport: &Bound<'py, PyAny>,
    fd: RawFd,
    data: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let Ok(bytes) = data.cast_exact::<PyBytes>() else {
        return Ok(Some(data.clone()));
    };
    let buf = bytes.as_bytes();
    let fast = !buf.is_empty()
        && !transport.getattr(intern!(py, "_eof"))?.is_truthy()?
        && transport.getattr(intern!(py, "_empty_waiter"))?.is_none()
        && !transport.getattr(intern!(py, "_conn_lost"))?.is_truthy()?
        && !transport.getattr(intern!(py, "_buffer"))?.is_truthy()?;
    if !fast {
        return Ok(Some(data.clone()));
    }
    let n = loop {
        // SAFETY: `buf` is the live contents of `bytes`, which we hold;
        // send only reads them. MSG_NOSIGNAL: a closed peer is an
        // EPIPE error (asyncio's path reports it), not a SIGPIPE.
        let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
        if n >= 0 {
            break n as usize;
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            // Would block, or an error: asyncio's write retries and
            // buffers, or reports it.
            return Ok(Some(data.clone()));
        }
    };
    if n == buf.len() {
        return Ok(None);
    }
    Ok(Some(PyBytes::new(py, &buf[n..]).into_any()))
}

/// A ``gmprt.aio`` socket transport's hot paths, with no Python frame on
/// the way: the transport sets this object as its ``_read_ready`` (the
/// callback of its reader handle, which asyncio's socket transport has
/// call ``_read_ready_cb``) and its ``write`` method as ``write``, both
/// instance attributes that shadow asyncio's methods. Private to
/// ``gmprt.aio``.
///
/// The transport holds it and it holds the transport: a cycle the
/// collector sees (``__traverse__``), as asyncio's transports already make
/// with their protocols.
#[pyclass(module = "gmprt._gmprt")]
pub(crate) struct SockIO {
    shared: Arc<Shared>,
    fd: RawFd,
    transport: Option<Py<PyAny>>,
    /// asyncio's own ``_SelectorSocketTransport.write``, for what the fast
    /// path leaves.
    base_write: Option<Py<PyAny>>,
    /// The protocol's bound ``data_received``, looked up once per
    /// protocol as uvloop does; None for a ``BufferedProtocol``, whose
    /// reads go asyncio's way (``_read_ready__get_buffer``). Kept by the
    /// transport's ``set_protocol`` (`SockIO::set_protocol`).
    data_received: Option<Py<PyAny>>,
}

#[pymethods]
impl SockIO {
    #[new]
    fn new(
        poller: &Bound<'_, Poller>,
        transport: Py<PyAny>,
        fd: RawFd,
        base_write: Py<PyAny>,
    ) -> SockIO {
        SockIO {
            shared: poller.get().shared.clone(),
            fd,
            transport: Some(transport),
            base_write: Some(base_write),
            data_received: None,
        }
    }

    /// The transport's protocol is now ``protocol``.
    fn set_protocol(&mut self, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = protocol.py();
        let buffered = py
            .import(intern!(py, "asyncio"))?
            .getattr(intern!(py, "BufferedProtocol"))?;
        self.data_received = if protocol.is_instance(&buffered)? {
            None
        } else {
            Some(protocol.getattr(intern!(py, "data_received"))?.unbind())
        };
        Ok(())
    }

    /// asyncio's ``_read_ready``: the reader handle's callback.
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        let Some(t) = &self.transport else {
            return Ok(());
        };
        let t = t.bind(py);
        match &self.data_received {
            Some(dr) => read(&self.shared, py, t, self.fd, dr.bind(py)),
            None => {
                t.call_method0(intern!(py, "_read_ready__get_buffer"))?;
                Ok(())
            }
        }
    }

    /// asyncio's ``_read_ready__data_received``.
    fn read(&self, py: Python<'_>) -> PyResult<()> {
        match (&self.transport, &self.data_received) {
            (Some(t), Some(dr)) => read(&self.shared, py, t.bind(py), self.fd, dr.bind(py)),
            _ => Ok(()),
        }
    }

    /// The transport's ``write(data)``.
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let (Some(t), Some(base)) = (&self.transport, &self.base_write) else {
            return Ok(());
        };
        let t = t.bind(py);
        if let Some(rest) = write(py, t, self.fd, data)? {
            base.call1(py, (t, rest))?;
        }
        Ok(())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.transport)?;
        visit.call(&self.base_write)?;
        visit.call(&self.data_received)
    }

    fn __clear__(&mut self) {
        self.transport = None;
        self.base_write = None;
        self.data_received = None;
    }
}
