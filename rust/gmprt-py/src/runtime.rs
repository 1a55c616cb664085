//! `gmprt.run()` and the state of the one runtime that is running.
//!
//! # The main thread during `run()`
//!
//! The thread that calls `run()` is not an M: it sleeps, detached, in
//! `poll()` on a pipe. Two things write to the pipe: the M that finishes the
//! main G (or meets a `KeyboardInterrupt`/`SystemExit` in any G), and
//! CPython's C-level signal handler, through `signal.set_wakeup_fd`. So
//! Ctrl-C wakes `run()` at once even while every M is parked in Rust, and an
//! idle runtime costs no periodic wakeups. Python-level signal handlers run
//! only on the main thread, which is why this thread checks them.
//!
//! # Shutdown
//!
//! `run()` stops the scheduler, waits (detached, bounded) for every M to
//! finish its current step and exit, joins the threads, then closes every
//! unfinished G while attached on this thread, so their `finally` blocks run
//! with the interpreter intact. A sync G stuck in a blocking call cannot be
//! joined; its thread is left to finish alone (daemon semantics).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering::*};

use gmprt_core::api::DEFAULT_MAX_THREADS;
use gmprt_core::{Config, Hooks, Sched};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use crate::body::PyBody;
use crate::handle::GHandle;
use crate::Deadlock;

/// How long `run()` waits for Ms to finish their current step at shutdown.
const JOIN_TIMEOUT: Duration = Duration::from_secs(2);

/// One `gmprt.run()`.
pub(crate) struct RunState {
    pub(crate) sched: Arc<Sched>,
    ev: Arc<Events>,
}

/// What Ms, sysmon and signal handlers tell the thread in `run()`. Each
/// writer records its event, then writes a byte to the pipe; the thread in
/// `run()` drains the pipe, then looks at every event.
struct Events {
    wake_w: OwnedFd,
    wake_r: OwnedFd,
    /// A KeyboardInterrupt or SystemExit that escaped a G.
    fatal: Mutex<Option<PyErr>>,
    /// The runtime cannot go on (thread limit); set without Python.
    broken: Mutex<Option<String>>,
    /// An M saw the deadlock condition; to be confirmed.
    deadlock: AtomicBool,
    /// Long steps seen by sysmon: (G id, thread ident, held).
    long_steps: Mutex<Vec<(u64, u64, Duration)>>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

static CURRENT: Mutex<Option<Arc<RunState>>> = Mutex::new(None);

fn current() -> Option<Arc<RunState>> {
    CURRENT.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// The scheduler of the running runtime: from an M's thread-local when the
/// caller is an M (no lock), else from the global slot.
pub(crate) fn sched() -> Option<Arc<Sched>> {
    Sched::with_current_sched(Arc::clone).or_else(|| current().map(|rs| rs.sched.clone()))
}

impl Events {
    fn wake(&self) {
        let b = [1u8];
        // SAFETY: writing one byte from a live buffer to a pipe we own. A
        // full pipe (EAGAIN) already guarantees a pending wakeup.
        unsafe { libc::write(self.wake_w.as_raw_fd(), b.as_ptr().cast(), 1) };
    }

    /// Detached: sleep until the pipe has data, then drain it.
    fn wait(&self) {
        let mut pfd = libc::pollfd {
            fd: self.wake_r.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; EINTR just returns early, and the caller
        // loops.
        unsafe { libc::poll(&mut pfd, 1, -1) };
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

/// Called by the M that finishes the main G. Stops the scheduler at once
/// (this M's next schedule sees it), like a Go program whose main returned:
/// no other G starts a new step after main is done.
pub(crate) fn main_done() {
    if let Some(rs) = current() {
        rs.sched.stop();
        rs.ev.wake();
    }
}

/// A KeyboardInterrupt/SystemExit escaped a G: stop the runtime with it.
pub(crate) fn fatal(e: PyErr) {
    if let Some(rs) = current() {
        locked(&rs.ev.fatal).get_or_insert(e);
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
pub(crate) fn block_in_g<F: FnOnce() + Send>(py: Python<'_>, f: F) {
    // Off an M (a foreign thread), `blocking` only counts the wait, so the
    // deadlock check knows a thread that may still wake Gs is alive.
    match sched() {
        Some(s) => s.blocking(|| py.detach(f)),
        None => py.detach(f),
    }
}

/// Each M is attached to the interpreter for its whole life and detached
/// around every wait (`pyo3-engineering.md` §2: ~60 ns, against ~10 µs for a
/// fresh attach per step on 3.11+). The sysmon-side hooks only record and
/// signal; the thread in `run()` does the Python part.
struct PyHooks {
    ev: Arc<Events>,
}

/// Lets a closure that runs synchronously on this very thread cross
/// `Python::detach`'s `Send` bound.
struct OnThisThread<F>(F);
// SAFETY: `detach` runs its closure on the calling thread before returning;
// the wrapped closure never reaches another thread.
unsafe impl<F> Send for OnThisThread<F> {}
impl<F: FnOnce()> OnThisThread<F> {
    fn call(self) {
        (self.0)()
    }
}

impl Hooks for PyHooks {
    fn m_main(&self, run: &mut dyn FnMut()) {
        // None only while the interpreter finalizes: then the M must not run
        // Python at all, and it exits at once.
        let _ = Python::try_attach(|_py| run());
    }

    fn blocking(&self, wait: &mut dyn FnMut()) {
        let wait = OnThisThread(wait);
        Python::attach(|py| py.detach(move || wait.call()));
    }

    fn long_step(&self, g: u64, thread: u64, held: Duration) {
        locked(&self.ev.long_steps).push((g, thread, held));
        self.ev.wake();
    }

    fn fatal(&self, msg: String) {
        locked(&self.ev.broken).get_or_insert(msg);
        self.ev.wake();
    }

    fn deadlock(&self) {
        self.ev.deadlock.store(true, Release);
        self.ev.wake();
    }
}

/// The default `procs`. On a GIL build only one M runs Python at a time, so
/// more Ps only add GIL handoffs; measured in benches/procs.py (README).
fn default_procs(py: Python<'_>) -> usize {
    let gil_enabled = py
        .import("sys")
        .and_then(|s| s.getattr("_is_gil_enabled"))
        .and_then(|f| f.call0())
        .and_then(|v| v.extract::<bool>())
        .unwrap_or(true);
    if gil_enabled {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

fn check_spawnable(f: &Bound<'_, PyAny>, who: &str) -> PyResult<()> {
    // SAFETY: a type check on a live object.
    let is_coro = unsafe { pyo3::ffi::PyCoro_CheckExact(f.as_ptr()) } != 0;
    if f.is_callable() || is_coro {
        return Ok(());
    }
    Err(PyTypeError::new_err(format!(
        "{who} needs a callable (an async or plain function) or a coroutine, got {}",
        f.get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default()
    )))
}

/// A function's name for reports (`__qualname__`).
pub(crate) fn describe(f: &Bound<'_, PyAny>) -> String {
    f.getattr("__qualname__")
        .or_else(|_| f.getattr("__name__"))
        .and_then(|n| n.extract::<String>())
        .unwrap_or_else(|_| "<G>".into())
}

fn new_g(
    py: Python<'_>,
    sched: &Arc<Sched>,
    f: Bound<'_, PyAny>,
    args: Bound<'_, PyTuple>,
    kwargs: Option<Bound<'_, PyDict>>,
    is_main: bool,
) -> PyResult<Py<GHandle>> {
    let func = f.clone().unbind();
    let mut out: PyResult<Py<GHandle>> = Err(PyRuntimeError::new_err("unreachable"));
    let spawned = sched.spawn_with(|id| {
        let made = Py::new(py, GHandle::new(id, func)).and_then(|h| {
            let body = PyBody::new(py, f, args, kwargs, h.clone_ref(py), is_main)?;
            Ok((h, body))
        });
        match made {
            Ok((h, body)) => {
                out = Ok(h);
                Box::new(body)
            }
            Err(e) => {
                out = Err(e);
                Box::new(Noop)
            }
        }
    });
    spawned.map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    out
}

/// Stands in for a body that could not be built (its error reaches the
/// caller of `go()`); finishes at once.
struct Noop;
impl gmprt_core::Body for Noop {
    fn step(&mut self, _cx: &mut gmprt_core::Cx<'_>) -> gmprt_core::Step {
        gmprt_core::Step::Done
    }
}

/// Start a G running ``fn(*args, **kwargs)`` and return its handle.
///
/// ``fn`` may be an ``async def`` function (a coroutine G, stepped by the
/// scheduler) or a plain function (a sync G, called once on an M; if it
/// blocks in C, its P goes to another M). Callable from inside a G or from
/// any thread while ``gmprt.run()`` is running. The new G runs in a copy of
/// the caller's ``contextvars`` context.
///
/// Raises:
///     TypeError: ``fn`` is not callable.
///     RuntimeError: no runtime is running.
#[pyfunction]
#[pyo3(signature = (fn_, /, *args, **kwargs))]
pub(crate) fn go(
    py: Python<'_>,
    fn_: Bound<'_, PyAny>,
    args: Bound<'_, PyTuple>,
    kwargs: Option<Bound<'_, PyDict>>,
) -> PyResult<Py<GHandle>> {
    check_spawnable(&fn_, "gmprt.go()")?;
    let sched = sched().ok_or_else(|| {
        PyRuntimeError::new_err(
            "gmprt.go() needs a running runtime: call it from inside gmprt.run(main) \
             (in a G, or from any thread while run() is running)",
        )
    })?;
    new_g(py, &sched, fn_, args, kwargs, false)
}

/// Run ``main(*args)`` as the first G of a new runtime and return its
/// result (or raise its exception).
///
/// When ``main`` returns, the Gs still alive are closed (their ``finally``
/// blocks run), every thread of the runtime is joined, and ``run()``
/// returns; it can be called again afterwards. Ctrl-C raises
/// ``KeyboardInterrupt`` from ``run()`` promptly, whatever the Gs are doing.
///
/// Args:
///     main: an async or plain function.
///     max_threads: cap on the runtime's OS threads (Go's
///         ``debug.SetMaxThreads``; default 10,000). Each G blocked in a
///         C call holds one; hitting the cap makes ``run()`` raise
///         ``RuntimeError``.
///     procs: how many Ps (Go's GOMAXPROCS). Default: 1 on GIL builds of
///         CPython (only one thread runs Python at a time, so more Ps only
///         add GIL handoffs; other Ms still take over from a G blocked in
///         C), the number of CPUs on free-threaded builds.
///
/// Raises:
///     RuntimeError: a runtime is already running, or the thread cap was hit.
///     Deadlock: every G is asleep and nothing can wake one.
///     ValueError: ``procs < 1``.
#[pyfunction]
#[pyo3(signature = (main, /, *args, procs=None, max_threads=None))]
pub(crate) fn run(
    py: Python<'_>,
    main: Bound<'_, PyAny>,
    args: Bound<'_, PyTuple>,
    procs: Option<i64>,
    max_threads: Option<usize>,
) -> PyResult<Py<PyAny>> {
    if max_threads == Some(0) {
        return Err(PyValueError::new_err("max_threads must be >= 1, got 0"));
    }
    let procs = match procs {
        None => default_procs(py),
        Some(n) if n >= 1 => n as usize,
        Some(n) => {
            return Err(PyValueError::new_err(format!(
                "procs must be >= 1, got {n}"
            )))
        }
    };
    check_spawnable(&main, "gmprt.run()")?;
    // As Go does at start: servers should not hit an arbitrary 1024 fds.
    gmprt_core::net::raise_nofile_limit();
    let rs = {
        let mut cur = CURRENT.lock().unwrap_or_else(|p| p.into_inner());
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
        });
        let config = Config {
            procs,
            max_threads: max_threads.unwrap_or(DEFAULT_MAX_THREADS),
        };
        let sched = Sched::new(config, Box::new(PyHooks { ev: ev.clone() }));
        let rs = Arc::new(RunState { sched, ev });
        *cur = Some(rs.clone());
        rs
    };
    let signals = WakeupFd::install(py, rs.ev.wake_w.as_raw_fd());
    let interval = SwitchInterval::lower(py);
    let result = run_main(py, &rs, main, args);
    let leftovers = shutdown(py, &rs);
    drop(interval);
    drop(signals);
    let result = match result {
        Err(Stop::Deadlock) => Err(Deadlock::new_err(deadlock_report(&leftovers))),
        Err(Stop::Err(e)) => Err(e),
        Ok(v) => Ok(v),
    };
    *CURRENT.lock().unwrap_or_else(|p| p.into_inner()) = None;
    result
}

/// Why `run_main` ended without a result.
enum Stop {
    Err(PyErr),
    Deadlock,
}

impl From<PyErr> for Stop {
    fn from(e: PyErr) -> Stop {
        Stop::Err(e)
    }
}

/// How long the deadlock condition must hold, with no G running meanwhile,
/// before `run()` reports it.
const DEADLOCK_SETTLE: Duration = Duration::from_millis(20);

fn run_main(
    py: Python<'_>,
    rs: &Arc<RunState>,
    main: Bound<'_, PyAny>,
    args: Bound<'_, PyTuple>,
) -> Result<Py<PyAny>, Stop> {
    let handle = new_g(py, &rs.sched, main, args, None, true)?;
    let ev = &rs.ev;
    loop {
        let waiter = ev.clone();
        py.detach(move || waiter.wait());
        py.check_signals()?;
        if let Some(e) = locked(&ev.fatal).take() {
            return Err(e.into());
        }
        if let Some(msg) = locked(&ev.broken).take() {
            return Err(PyRuntimeError::new_err(msg).into());
        }
        let long_steps = std::mem::take(&mut *locked(&ev.long_steps));
        for (g, thread, held) in long_steps {
            report_long_step(py, g, thread, held);
        }
        if handle.get().is_done(py) {
            return Ok(handle.get().outcome(py)?);
        }
        if ev.deadlock.swap(false, Acquire) {
            let sched = rs.sched.clone();
            if py.detach(move || sched.confirm_deadlock(DEADLOCK_SETTLE)) {
                return Err(Stop::Deadlock);
            }
        }
    }
}

/// Prints where a G that held its P too long is now, from the thread in
/// `run()` (the G's own thread may be stuck in C).
fn report_long_step(py: Python<'_>, g: u64, thread: u64, held: Duration) {
    let printed = (|| -> PyResult<()> {
        let sys = py.import("sys")?;
        let frames = sys.call_method0("_current_frames")?;
        let stack = match frames.get_item(thread) {
            Ok(frame) => py
                .import("traceback")?
                .call_method1("format_stack", (frame,))?
                .extract::<Vec<String>>()?
                .concat(),
            Err(_) => "  (no Python frame)\n".to_string(),
        };
        let msg = format!(
            "gmprt: G {g} has held its P for {} ms in one step (a blocking call or a long \
             computation; its P went to another M). It is at:\n{stack}",
            held.as_millis(),
        );
        sys.getattr("stderr")?.call_method1("write", (msg,))?;
        Ok(())
    })();
    if let Err(e) = printed {
        e.print(py);
    }
}

fn deadlock_report(parked: &[String]) -> String {
    let mut msg = String::from("all goroutines are asleep - deadlock!\n");
    for line in parked {
        msg.push_str("\n  ");
        msg.push_str(line);
    }
    msg
}

/// Stops the runtime, joins its threads and closes every unfinished G;
/// returns a line per closed G ("G 3 (worker) [chan receive]").
fn shutdown(py: Python<'_>, rs: &RunState) -> Vec<String> {
    rs.sched.stop();
    let sched = rs.sched.clone();
    let joined = py.detach(move || sched.join(JOIN_TIMEOUT));
    if !joined {
        let msg =
            "gmprt: a G is still inside a blocking call; its thread is left to finish alone\n";
        let _ = py
            .import("sys")
            .and_then(|s| s.getattr("stderr")?.call_method1("write", (msg,)));
    }
    let mut lines = Vec::new();
    for (id, body) in rs.sched.reap() {
        lines.push(format!("G {id} {}", body.describe()));
        body.cancel();
    }
    lines
}

/// Lowers CPython's GIL switch interval for the life of `run()`: an M that
/// takes over a P from a G hogging the GIL gets the GIL after this long.
/// Restored afterwards.
struct SwitchInterval<'py> {
    py: Python<'py>,
    previous: Option<f64>,
}

/// The interval while a runtime runs (CPython's default is 5 ms).
const SWITCH_INTERVAL: f64 = 0.001;

impl<'py> SwitchInterval<'py> {
    fn lower(py: Python<'py>) -> SwitchInterval<'py> {
        let previous = (|| -> PyResult<f64> {
            let sys = py.import("sys")?;
            let prev: f64 = sys.call_method0("getswitchinterval")?.extract()?;
            if prev > SWITCH_INTERVAL {
                sys.call_method1("setswitchinterval", (SWITCH_INTERVAL,))?;
            }
            Ok(prev)
        })()
        .ok();
        SwitchInterval { py, previous }
    }
}

impl Drop for SwitchInterval<'_> {
    fn drop(&mut self) {
        if let Some(prev) = self.previous {
            let _ = self
                .py
                .import("sys")
                .and_then(|s| s.call_method1("setswitchinterval", (prev,)));
        }
    }
}

/// `signal.set_wakeup_fd(fd)` for the life of `run()`, restored after. Only
/// the main thread may set it; elsewhere signals are not ours to see.
struct WakeupFd<'py> {
    py: Python<'py>,
    previous: Option<Bound<'py, PyAny>>,
}

impl<'py> WakeupFd<'py> {
    fn install(py: Python<'py>, fd: i32) -> WakeupFd<'py> {
        let previous = (|| -> PyResult<Bound<'py, PyAny>> {
            let kwargs = PyDict::new(py);
            kwargs.set_item("warn_on_full_buffer", false)?;
            py.import("signal")?
                .getattr("set_wakeup_fd")?
                .call((fd,), Some(&kwargs))
        })()
        .ok();
        WakeupFd { py, previous }
    }
}

impl Drop for WakeupFd<'_> {
    fn drop(&mut self) {
        if let Some(prev) = self.previous.take() {
            let _ = self
                .py
                .import("signal")
                .and_then(|s| s.getattr("set_wakeup_fd")?.call1((prev,)));
        }
    }
}

/// Counters of the running runtime (zeros when none runs).
///
/// Keys: ``goroutines`` (live Gs), ``procs``, ``threads`` (Ms),
/// ``idle_threads``, ``idle_procs``, ``spinning``, ``global_runq``,
/// ``local_runq`` (a list, one per P), ``steals`` (Gs stolen), ``handoffs``
/// (Ps handed to another M around a blocking call), ``spawned``,
/// ``netpoll_waiters``, ``timers``.
#[pyfunction]
pub(crate) fn stats(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let s = sched().map(|s| s.stats()).unwrap_or_default();
    let d = PyDict::new(py);
    d.set_item("goroutines", s.goroutines)?;
    d.set_item("procs", s.procs)?;
    d.set_item("threads", s.threads)?;
    d.set_item("idle_threads", s.idle_threads)?;
    d.set_item("idle_procs", s.idle_procs)?;
    d.set_item("spinning", s.spinning)?;
    d.set_item("global_runq", s.global_runq)?;
    d.set_item("local_runq", PyList::new(py, &s.local_runq)?)?;
    d.set_item("steals", s.steals)?;
    d.set_item("handoffs", s.handoffs)?;
    d.set_item("spawned", s.spawned)?;
    d.set_item("netpoll_waiters", s.netpoll_waiters)?;
    d.set_item("timers", s.timers)?;
    Ok(d)
}
