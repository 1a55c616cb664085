//! The runtime's services to the rest of the binding: which runtime is
//! running, and the event pipe its Ms, sysmon and signal handlers use to
//! wake the thread in `run()` (see `runtime`, "The main thread during
//! `run()`").
//!
//! This file sits below every other one that touches the runtime: G bodies
//! (`body`), handles (`handle`), tokens and the I/O pyclasses call down
//! into it, and only `runtime` (the entry points) installs a runtime here.
//! Nothing here imports a file above it.
//!
//! # Who owns what
//!
//! `CURRENT` holds the one running runtime (`RunState`), set by
//! [`install`] when `run()` starts and cleared by [`uninstall`] when it has
//! joined every thread. Ms read the scheduler from their own thread-local
//! first ([`sched`]), so the global lock is off the hot path.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering::*};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use gmprt_core::{Config, Hooks, Sched};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::lock::{lock, unpoison};

/// One `gmprt.run()`.
pub(crate) struct RunState {
    pub(crate) sched: Arc<Sched>,
    pub(crate) ev: Arc<Events>,
}

/// What Ms, sysmon and signal handlers tell the thread in `run()`. Each
/// writer records its event, then writes a byte to the pipe; the thread in
/// `run()` drains the pipe, then looks at every event.
pub(crate) struct Events {
    pub(crate) wake_w: OwnedFd,
    pub(crate) wake_r: OwnedFd,
    /// A KeyboardInterrupt or SystemExit that escaped a G.
    pub(crate) fatal: Mutex<Option<PyErr>>,
    /// The runtime cannot go on (thread limit); set without Python.
    pub(crate) broken: Mutex<Option<String>>,
    /// An M saw the deadlock condition; to be confirmed.
    pub(crate) deadlock: AtomicBool,
    /// Long steps seen by sysmon: (G id, thread ident, held, ran).
    pub(crate) long_steps: Mutex<Vec<(u64, u64, Duration, Duration)>>,
    /// Handles of failed Gs still referenced when they failed (`gmprt.G`
    /// objects, untyped: `handle` sits above this file).
    pub(crate) failed: Mutex<Vec<Py<PyAny>>>,
    /// The interpreter is exiting while this `run()` runs (in another
    /// thread): `run()` stops as it would for Ctrl-C ([`stop_for_exit`]).
    pub(crate) exiting: AtomicBool,
    /// `run()` stopped waiting for this runtime's Ms: one that would run
    /// Python again parks instead (`exit` module docs). Each M holds a
    /// clone for its life (`exit::enter_m`), a flag free of Python.
    pub(crate) abandoned: Arc<AtomicBool>,
    /// The thread in `run()` (the main thread, usually).
    run_thread: ThreadId,
    /// Calls waiting for the thread in `run()` ([`call_in_run_thread`]);
    /// `None` once `run()` no longer serves them ([`close_calls`]).
    calls: Mutex<Option<Vec<Arc<RunThreadCall>>>>,
}

/// One [`call_in_run_thread`]: the callable, then its outcome.
struct RunThreadCall {
    func: Py<PyAny>,
    outcome: Mutex<Option<PyResult<Py<PyAny>>>>,
    done: Condvar,
}

impl RunThreadCall {
    fn finish(&self, outcome: PyResult<Py<PyAny>>) {
        *lock(&self.outcome) = Some(outcome);
        self.done.notify_all();
    }
}

static CURRENT: Mutex<Option<Arc<RunState>>> = Mutex::new(None);

/// Notified (under `CURRENT`'s lock) when [`uninstall`] clears it.
static UNINSTALLED: Condvar = Condvar::new();

fn current() -> Option<Arc<RunState>> {
    lock(&CURRENT).clone()
}

/// The scheduler of the running runtime: from an M's thread-local when the
/// caller is an M (no lock), else from the global slot.
pub(crate) fn sched() -> Option<Arc<Sched>> {
    Sched::with_current_sched(Arc::clone).or_else(|| current().map(|rs| rs.sched.clone()))
}

impl Events {
    pub(crate) fn wake(&self) {
        let b = [1u8];
        // SAFETY: writing one byte from a live buffer to a pipe we own. A
        // full pipe (EAGAIN) already guarantees a pending wakeup.
        unsafe { libc::write(self.wake_w.as_raw_fd(), b.as_ptr().cast(), 1) };
    }

    /// Detached: sleep until the pipe has data (or `timeout` passes), then
    /// drain it.
    pub(crate) fn wait(&self, timeout: Option<Duration>) {
        let ms = timeout.map_or(-1, |d| i32::try_from(d.as_millis()).unwrap_or(i32::MAX));
        let mut pfd = libc::pollfd {
            fd: self.wake_r.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; EINTR just returns early, and the caller
        // loops.
        unsafe { libc::poll(&mut pfd, 1, ms) };
        let mut buf = [0u8; 64];
        // SAFETY: reading into a live buffer from our non-blocking pipe.
        while unsafe { libc::read(self.wake_r.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0
        {
        }
    }
}

fn pipe() -> PyResult<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two fds on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Starts a runtime and makes it the current one; `hooks` builds the M
/// hooks around the runtime's event pipe. Fails if one is running already.
pub(crate) fn install(
    config: Config,
    hooks: impl FnOnce(Arc<Events>) -> Box<dyn Hooks>,
) -> PyResult<Arc<RunState>> {
    let mut cur = lock(&CURRENT);
    if cur.is_some() {
        return Err(PyRuntimeError::new_err(
            "gmprt.run() was called while a gmprt runtime is already running; \
             start more Gs with gmprt.go() instead",
        ));
    }
    let (wake_r, wake_w) = pipe()?;
    let ev = Arc::new(Events {
        wake_w,
        wake_r,
        fatal: Mutex::new(None),
        broken: Mutex::new(None),
        deadlock: AtomicBool::new(false),
        long_steps: Mutex::new(Vec::new()),
        failed: Mutex::new(Vec::new()),
        exiting: AtomicBool::new(false),
        abandoned: Arc::new(AtomicBool::new(false)),
        run_thread: std::thread::current().id(),
        calls: Mutex::new(Some(Vec::new())),
    });
    let sched = Sched::new(config, hooks(ev.clone()));
    let rs = Arc::new(RunState { sched, ev });
    *cur = Some(rs.clone());
    Ok(rs)
}

/// `run()` is over (every thread joined): no runtime is current.
pub(crate) fn uninstall() {
    *lock(&CURRENT) = None;
    UNINSTALLED.notify_all();
}

/// At interpreter exit (the atexit hook, `exit::at_exit`), with a `run()`
/// still running in another thread: stop it as Ctrl-C would and wait,
/// detached, up to `wait` for that `run()` to return, so its shutdown
/// (which runs Python: interrupting steps, closing Gs) ends before the
/// interpreter finalizes. Nothing to do when no runtime runs.
pub(crate) fn stop_for_exit(py: Python<'_>, wait: Duration) {
    let Some(rs) = current() else {
        return;
    };
    rs.ev.exiting.store(true, Release);
    rs.ev.wake();
    // The address only: the closure runs detached, and the last reference
    // to a runtime (its Events hold Python objects) is dropped attached.
    let target = Arc::as_ptr(&rs) as usize;
    py.detach(move || {
        let deadline = Instant::now() + wait;
        let mut cur = lock(&CURRENT);
        while cur
            .as_ref()
            .is_some_and(|c| Arc::as_ptr(c) as usize == target)
        {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            cur = unpoison(UNINSTALLED.wait_timeout(cur, left)).0;
        }
    });
}

/// `func()` on the thread in `run()` (which is the main thread when `run()`
/// was called there), for what only that thread may do: Python lets only
/// the main thread set signal handlers, and a G runs on an M. The caller
/// (a G, any thread) blocks, detached, until that thread has called it, and
/// gets its result or its exception. Called on the thread in `run()`
/// itself, it is a plain call.
///
/// Errors: `RuntimeError` when no runtime runs, or when `run()` is past
/// serving calls (shutting down: [`close_calls`]).
pub(crate) fn call_in_run_thread(py: Python<'_>, func: Py<PyAny>) -> PyResult<Py<PyAny>> {
    let Some(rs) = current() else {
        return Err(PyRuntimeError::new_err("no gmprt runtime is running"));
    };
    if std::thread::current().id() == rs.ev.run_thread {
        return func.call0(py);
    }
    let call = Arc::new(RunThreadCall {
        func,
        outcome: Mutex::new(None),
        done: Condvar::new(),
    });
    match lock(&rs.ev.calls).as_mut() {
        Some(q) => q.push(call.clone()),
        None => return Err(shutting_down()),
    }
    rs.ev.wake();
    py.detach(|| {
        let mut out = lock(&call.outcome);
        while out.is_none() {
            out = unpoison(call.done.wait(out));
        }
    });
    let outcome = lock(&call.outcome).take();
    // `rs` and the call (Python objects inside) are dropped attached.
    outcome.unwrap_or_else(|| Err(shutting_down()))
}

fn shutting_down() -> PyErr {
    PyRuntimeError::new_err("gmprt.run() is shutting down: its thread no longer runs calls for Gs")
}

/// On the thread in `run()`: runs the calls Gs handed to it
/// ([`call_in_run_thread`]), in order.
pub(crate) fn serve_calls(py: Python<'_>, ev: &Events) {
    loop {
        let batch = match lock(&ev.calls).as_mut() {
            Some(q) if !q.is_empty() => std::mem::take(q),
            _ => return,
        };
        for call in batch {
            let outcome = call.func.call0(py);
            call.finish(outcome);
        }
    }
}

/// On the thread in `run()`, before it stops the runtime: runs the calls
/// already handed over, then refuses new ones, so no caller waits for a
/// thread that no longer looks.
pub(crate) fn close_calls(py: Python<'_>, ev: &Events) {
    serve_calls(py, ev);
    let left = lock(&ev.calls).take().unwrap_or_default();
    for call in left {
        call.finish(Err(shutting_down()));
    }
}

/// Called by the M that finishes the main G: wakes `run()`, which cancels
/// the Gs left and gives them a grace to end before it stops the
/// scheduler (runtime.rs, "Shutdown"). The scheduler keeps running
/// meanwhile, so their `finally` blocks can still wait for things.
pub(crate) fn main_done() {
    if let Some(rs) = current() {
        rs.ev.wake();
    }
}

/// A G failed while someone still held its handle: if nobody has looked
/// by the end of `run()`, `run()` reports it (`take_failed`).
pub(crate) fn note_failed(handle: Py<PyAny>) {
    if let Some(rs) = current() {
        lock(&rs.ev.failed).push(handle);
    }
}

/// The handles `note_failed` collected in the current runtime.
pub(crate) fn take_failed(rs: &RunState) -> Vec<Py<PyAny>> {
    std::mem::take(&mut *lock(&rs.ev.failed))
}

/// A KeyboardInterrupt/SystemExit escaped a G: stop the runtime with it.
pub(crate) fn fatal(e: PyErr) {
    if let Some(rs) = current() {
        lock(&rs.ev.fatal).get_or_insert(e);
        rs.ev.wake();
    }
}

/// Prints an exception nobody awaited or joined, like `threading.excepthook`.
pub(crate) fn report_unobserved(py: Python<'_>, id: u64, name: &str, e: PyErr) {
    let msg = format!("Exception in gmprt G {id} ({name}), never awaited or joined:\n");
    let printed = (|| -> PyResult<()> {
        let sys = py.import("sys")?;
        let stderr = sys.getattr("stderr")?;
        stderr.call_method1("write", (msg,))?;
        let tb = py.import("traceback")?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("file", &stderr)?;
        let value = e.value(py);
        tb.call_method(
            "print_exception",
            (value.get_type(), value, e.traceback(py)),
            Some(&kwargs),
        )?;
        Ok(())
    })();
    if printed.is_err() {
        e.print(py);
    }
}

/// Runs a blocking wait from synchronous code. On an M the P is handed off
/// for the duration (Go's entersyscallblock); the GIL is released either way.
pub(crate) fn block_in_g<R: Send, F: FnOnce() -> R + Send>(py: Python<'_>, f: F) -> R {
    // Off an M (a foreign thread), `blocking` only counts the wait, so the
    // deadlock check knows a thread that may still wake Gs is alive.
    match sched() {
        Some(s) => {
            let mut out = None;
            s.blocking(|| out = Some(py.detach(f)));
            out.expect("blocking ran its wait")
        }
        None => py.detach(f),
    }
}

/// [`block_in_g`] for a wait with no deadline on a gmprt primitive: the
/// deadlock check counts the M as asleep (`Sched::blocking_asleep`), as it
/// would a coroutine G parked on the same thing.
pub(crate) fn block_asleep<R: Send, F: FnOnce() -> R + Send>(py: Python<'_>, f: F) -> R {
    match sched() {
        Some(s) => {
            let mut out = None;
            s.blocking_asleep(|| out = Some(py.detach(f)));
            out.expect("blocking ran its wait")
        }
        None => py.detach(f),
    }
}

/// A function's name for reports (`__qualname__`).
pub(crate) fn describe(f: &Bound<'_, PyAny>) -> String {
    f.getattr("__qualname__")
        .or_else(|_| f.getattr("__name__"))
        .and_then(|n| n.extract::<String>())
        .unwrap_or_else(|_| "<G>".into())
}

thread_local! {
    /// Set in a fork child on the thread that forked: it is in the middle
    /// of a step of a G of a runtime that does not exist in the child.
    static FORKED_MID_STEP: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the calling thread is a fork child's, still inside the step of
/// a G of the parent's runtime (see `body.rs`, `exit_forked_child`).
pub(crate) fn forked_mid_step() -> bool {
    FORKED_MID_STEP.with(std::cell::Cell::get)
}

/// After `fork()`, in the child: no runtime is current. The parent's has no
/// threads in the child; it is forgotten, never dropped (dropping would
/// stop and join threads that do not exist, under locks they may have
/// held).
/// The thread that forked may be inside a G's step (`FORKED_MID_STEP`).
pub(crate) fn forget_after_fork() {
    if crate::token::current_g().is_some() {
        FORKED_MID_STEP.with(|f| f.set(true));
    }
    // try_lock: a thread of the parent may have held it at the fork, and
    // that thread is gone; then the slot stays (run() will say a runtime
    // is running) rather than deadlocking the child.
    if let Ok(mut cur) = CURRENT.try_lock() {
        if let Some(rs) = cur.take() {
            std::mem::forget(rs);
        }
    }
}
