//! The entry points: `gmprt.run()`, `gmprt.go()`, `gmprt.stats()`.
//!
//! The top of the binding: it starts a runtime (`rt::install`) with the M
//! hooks (`hooks`), spawns G bodies (`body`) with their handles (`handle`),
//! and no file imports it but `lib`.
//!
//! # The main thread during `run()`
//!
//! The thread that calls `run()` is not an M: it sleeps, detached, in
//! `poll()` on a pipe. Two things write to the pipe: the M that finishes the
//! main G (or meets a `KeyboardInterrupt`/`SystemExit` in any G), and
//! CPython's C-level signal handler, through `signal.set_wakeup_fd`. So
//! Ctrl-C wakes `run()` at once even while every M is parked in Rust, and an
//! idle runtime costs no periodic wakeups. Python-level signal handlers run
//! only on the main thread, which is why this thread checks them; for the
//! same reason Gs hand it the calls only it may make (`signal.signal`, from
//! `gmprt.aio`'s loop G: `rt::call_in_run_thread`), which it runs as it
//! wakes, until it begins the shutdown.
//!
//! # Shutdown
//!
//! When `main` returns (or raises), the Gs still alive are *cancelled*
//! (`cancel::begin_shutdown` + `Sched::interrupt_all`): `gmprt.Cancelled`
//! at their park points, so their `finally` blocks run while the runtime
//! still serves them, and may await cleanup under `gmprt.shield()`. `run()`
//! waits up to [`CANCEL_GRACE`] for them to end. Then it stops the
//! scheduler and ends the steps still in progress
//! (`exit::stop_running_steps`: a G running Python gets `gmprt.Shutdown`
//! at its next bytecode; one blocked in C gets `exit::STOP_WAIT`, 100 ms,
//! then is abandoned and its thread never runs Python again), joins the
//! threads, and closes what is still unfinished while attached on this
//! thread (a G that swallowed its `Cancelled` and kept waiting is reported
//! and abandoned there). Ctrl-C and a deadlock skip the cancel phase: the
//! user asked to stop now, and deadlocked Gs are listed as they sleep.

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::*;
use std::sync::Arc;
use std::time::Duration;

use gmprt_core::api::{DEFAULT_IDLE_KEEPALIVE, DEFAULT_MAX_THREADS};
use gmprt_core::{Config, Sched};
use pyo3::exceptions::{
    PyKeyboardInterrupt, PyRuntimeError, PySystemExit, PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use crate::body::{PyBody, Spawn};
use crate::cancel::{self, GCancel};
use crate::errors::{int_arg, Cancelled, Deadlock};
use crate::exit;
use crate::handle::GHandle;
use crate::hooks::PyHooks;
use crate::lock::lock;
use crate::rt::{self, sched, RunState};
use crate::traceback;

/// The most Ps `run()` accepts: Go's old `_MaxGomaxprocs`. Each P is
/// allocated up front, so an absurd `procs` would abort on allocation.
const MAX_PROCS: i64 = 1024;

/// The most threads `max_threads` may allow: far above what Linux lets one
/// process start by default, so it only rejects typos and overflows.
const MAX_THREADS: i64 = 1_000_000;

/// How long the Gs left when `main` returns have to end once cancelled
/// (their `finally` blocks run meanwhile). Long enough for cleanup that
/// awaits a socket or two; short enough that a G that will not end cannot
/// hold up the program noticeably.
const CANCEL_GRACE: Duration = Duration::from_secs(1);

/// How long the cancelled Gs may go without a step ending, with none
/// queued and no timer armed, before `run()` stops waiting for them
/// (`cancel_leftovers`).
const CANCEL_STALL: Duration = Duration::from_millis(20);

/// How often `run()` looks whether the cancelled Gs have all ended.
const CANCEL_POLL: Duration = Duration::from_millis(2);

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

/// `async def` with `yield` in it (`CO_ASYNC_GENERATOR` in its code flags).
fn is_async_gen_function(f: &Bound<'_, PyAny>) -> bool {
    const CO_ASYNC_GENERATOR: i64 = 0x200;
    f.getattr(pyo3::intern!(f.py(), "__code__"))
        .and_then(|c| c.getattr(pyo3::intern!(f.py(), "co_flags")))
        .and_then(|fl| fl.extract::<i64>())
        .is_ok_and(|fl| fl & CO_ASYNC_GENERATOR != 0)
}

fn new_g(
    py: Python<'_>,
    sched: &Arc<Sched>,
    f: Bound<'_, PyAny>,
    args: Bound<'_, PyTuple>,
    kwargs: Option<Bound<'_, PyDict>>,
    mut how: Spawn,
) -> PyResult<Py<GHandle>> {
    let func = f.clone().unbind();
    let mut out: PyResult<Py<GHandle>> = Err(PyRuntimeError::new_err("unreachable"));
    let coro = f.clone();
    let spawned = sched.spawn_with(|gref| {
        let cancel = GCancel::new(gref, how.parent.take(), how.deadline);
        let made = Py::new(py, GHandle::new(func, cancel, how.on_done.take())).and_then(|h| {
            let body = PyBody::new(py, f, args, kwargs, h.clone_ref(py), how)?;
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
    if let Err(e) = spawned {
        // A coroutine object that will never run: close it, or Python
        // warns that it was never awaited (a G calling go() while the
        // runtime stops is shutting down, not forgetting an await).
        // SAFETY: a type check on a live object.
        if unsafe { pyo3::ffi::PyCoro_CheckExact(coro.as_ptr()) } != 0 {
            let _ = coro.call_method0("close");
        }
        // Inside a G the runtime is cancelling, that is what it is.
        if crate::token::current_g().is_some() {
            return Err(Cancelled::new_err(format!(
                "gmprt.go() in a G while the runtime stops: {e}"
            )));
        }
        return Err(PyRuntimeError::new_err(e.to_string()));
    }
    // The trace names Gs by function; the name is computed only while a
    // recording runs.
    if gmprt_core::trace::enabled() {
        if let Ok(h) = &out {
            let h = h.get();
            gmprt_core::trace::name_g(h.id(), &h.name(py));
        }
    }
    out
}

/// Stands in for a body that could not be built (its error reaches the
/// caller of `go()`); finishes at once.
struct Noop;
impl gmprt_core::Body for Noop {
    fn step(&mut self, _cx: &mut gmprt_core::Cx<'_>) -> gmprt_core::Step {
        gmprt_core::Step::Done
    }

    fn embedded(&self) -> bool {
        false
    }
}

/// Start a G running ``fn(*args, **kwargs)`` and return its handle.
///
/// ``fn`` may be an ``async def`` function (a coroutine G, stepped by the
/// scheduler) or a plain function (a sync G, called once on an M; if it
/// blocks in C, its P goes to another M). Callable from inside a G or from
/// any thread while ``gmprt.run()`` is running. The new G runs in a copy of
/// the caller's ``contextvars`` context, and inherits the caller's
/// deadline (``gmprt.timeout()`` scopes around the call): past it, the new
/// G is cancelled too, as a Go context bounds the goroutines a request
/// starts. It does not inherit cancellation otherwise: use a
/// :class:`gmprt.Group` for Gs that must end with their parent.
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
    spawn_top(py, "gmprt.go()", fn_, args, kwargs, false)
}

/// `go` and `_go_blocking`: a G in no Group, with the caller's deadline.
fn spawn_top(
    py: Python<'_>,
    who: &str,
    fn_: Bound<'_, PyAny>,
    args: Bound<'_, PyTuple>,
    kwargs: Option<Bound<'_, PyDict>>,
    blocks: bool,
) -> PyResult<Py<GHandle>> {
    check_spawnable(&fn_, who)?;
    let sched = sched().ok_or_else(|| {
        PyRuntimeError::new_err(format!(
            "{who} needs a running runtime: call it from inside gmprt.run(main) \
             (in a G, or from any thread while run() is running)"
        ))
    })?;
    let how = Spawn {
        parent: None,
        deadline: cancel::current_deadline(),
        on_done: None,
        is_main: false,
        blocks,
    };
    new_g(py, &sched, fn_, args, kwargs, how)
}

/// ``go`` for a plain function known to block (``gmprt.aio.to_g``): its M
/// hands its P to another M before calling it (`Body::blocks`), so the
/// loop G on that P runs on at once rather than when sysmon next looks.
#[pyfunction]
#[pyo3(signature = (fn_, /, *args, **kwargs))]
pub(crate) fn _go_blocking(
    py: Python<'_>,
    fn_: Bound<'_, PyAny>,
    args: Bound<'_, PyTuple>,
    kwargs: Option<Bound<'_, PyDict>>,
) -> PyResult<Py<GHandle>> {
    spawn_top(py, "gmprt.aio.to_g()", fn_, args, kwargs, true)
}

/// A Group's ``go``: the new G's root scope lives inside ``scope`` (the
/// caller's innermost scope if None), so a cancel of the group, or of
/// anything around it, reaches the G; ``on_done(g)`` is called when it
/// finishes.
#[pyfunction]
#[pyo3(signature = (scope, on_done, fn_, /, *args, **kwargs))]
pub(crate) fn _go_linked(
    py: Python<'_>,
    scope: Option<&Bound<'_, cancel::CancelScope>>,
    on_done: Py<PyAny>,
    fn_: Bound<'_, PyAny>,
    args: Bound<'_, PyTuple>,
    kwargs: Option<Bound<'_, PyDict>>,
) -> PyResult<Py<GHandle>> {
    check_spawnable(&fn_, "Group.go()")?;
    let sched = sched().ok_or_else(|| {
        PyRuntimeError::new_err("Group.go() needs a running runtime (inside gmprt.run())")
    })?;
    let parent = match scope {
        Some(s) => s.get().entered_scope()?,
        None => cancel::current().top(),
    };
    let how = Spawn {
        parent: Some(parent),
        deadline: None,
        on_done: Some(on_done),
        is_main: false,
        blocks: false,
    };
    new_g(py, &sched, fn_, args, kwargs, how)
}

/// Run ``main(*args)`` as the first G of a new runtime and return its
/// result (or raise its exception).
///
/// When ``main`` returns, the Gs still alive are cancelled
/// (:class:`gmprt.Cancelled` at their park point; their ``finally`` blocks
/// run, and may await) and get up to 1 s to end, while their steps keep
/// ending or one is due (queued, or on an armed timer); what is left is
/// closed, every thread of the runtime is joined, and ``run()`` returns;
/// it can be called again afterwards. Ctrl-C raises
/// ``KeyboardInterrupt`` from ``run()`` without that grace. A G still
/// running Python then gets ``gmprt.Shutdown`` raised at its next
/// bytecode; one blocked in a C call gets 100 ms to return, then is
/// abandoned (its thread never runs Python again, its ``finally`` blocks
/// do not run), so after the grace ``run()`` returns within about 100 ms
/// whatever the Gs are doing.
///
/// Args:
///     main: an async or plain function.
///     max_threads: cap on the runtime's OS threads (Go's
///         ``debug.SetMaxThreads``; default 10,000). Each G blocked in a
///         C call holds one; hitting the cap makes ``run()`` raise
///         ``RuntimeError``. Idle threads beyond ``procs`` exit after
///         10 s without work.
///     procs: how many Ps (Go's GOMAXPROCS). Default: 1 on GIL builds of
///         CPython (only one thread runs Python at a time, so more Ps only
///         add GIL handoffs; other Ms still take over from a G blocked in
///         C), the number of CPUs on free-threaded builds.
///     schedtrace: print Go's schedtrace line to stderr every this many
///         milliseconds (``SCHED 1004ms: gomaxprocs=1 idleprocs=0
///         threads=3 ...``, then gmprt's fields: Gs by state and wait
///         reason, netpoll waiters, timers, handoffs and steals since the
///         last line). Default: the ``GMPRT_SCHEDTRACE`` environment
///         variable (milliseconds; an invalid value warns once and is
///         ignored); 0 is off. ``GMPRT_SCHEDDETAIL=1`` adds a line per P,
///         M and G, as Go's ``scheddetail`` does. Printed by the runtime's
///         monitor thread, which never touches Python.
///
/// Raises:
///     RuntimeError: a runtime is already running, or the thread cap was hit.
///     Deadlock: every G is asleep and nothing can wake one.
///     ValueError: ``procs`` outside 1 to 1024, ``max_threads`` outside
///         1 to 1,000,000, or ``schedtrace`` outside 0 to 3,600,000.
#[pyfunction]
#[pyo3(signature = (main, /, *args, procs=None, max_threads=None, schedtrace=None))]
pub(crate) fn run(
    py: Python<'_>,
    main: Bound<'_, PyAny>,
    args: Bound<'_, PyTuple>,
    procs: Option<Bound<'_, PyAny>>,
    max_threads: Option<Bound<'_, PyAny>>,
    schedtrace: Option<Bound<'_, PyAny>>,
) -> PyResult<Py<PyAny>> {
    let procs = match procs {
        None => default_procs(py),
        Some(n) => int_arg(&n, "procs", 1, MAX_PROCS)? as usize,
    };
    let max_threads = match max_threads {
        None => DEFAULT_MAX_THREADS,
        Some(n) => int_arg(&n, "max_threads", 1, MAX_THREADS)? as usize,
    };
    let (schedtrace, scheddetail) = schedtrace_config(py, schedtrace)?;
    check_spawnable(&main, "gmprt.run()")?;
    // go() finds the same misuse when it calls the function (body.rs,
    // `misuse`), off the spawn path; run() says so before starting anything.
    if is_async_gen_function(&main) {
        return Err(PyTypeError::new_err(format!(
            "gmprt.run() got an async generator function ({}): a G runs a coroutine or a plain \
             function; iterate the generator with async for inside an async function",
            rt::describe(&main)
        )));
    }
    // As Go does at start: servers should not hit an arbitrary 1024 fds.
    gmprt_core::net::raise_nofile_limit();
    let config = Config {
        procs,
        max_threads,
        idle_keepalive: idle_keepalive()?,
        schedtrace,
        scheddetail,
    };
    let rs = rt::install(config, |ev| Box::new(PyHooks::new(ev)))?;
    let signals = WakeupFd::install(py, rs.ev.wake_w.as_raw_fd());
    let sigquit = traceback::SigQuit::install(py);
    let interval = SwitchInterval::lower(py);
    let result = run_main(py, &rs, main, args);
    let mut result = result;
    if result.is_ok() || matches!(&result, Err(Stop::Err(e)) if !is_fatal(py, e)) {
        if let Some(interrupted) = cancel_leftovers(py, &rs) {
            result = Err(Stop::Err(interrupted));
        }
    }
    // Each G's stack for the deadlock report, while they still sleep.
    let stacks = match &result {
        Err(Stop::Deadlock) => traceback::stacks(py),
        _ => Vec::new(),
    };
    // Gs waiting on `_call_in_run_thread` get their answer, or an error.
    rt::close_calls(py, &rs.ev);
    // Sync Gs asleep in a `_blocking` call: listed for a deadlock report,
    // then woken with Cancelled so that their Ms can be joined.
    let asleep = cancel::blocked_sync_gs();
    cancel::begin_shutdown();
    let mut leftovers = shutdown(py, &rs);
    leftovers.extend(asleep);
    cancel::end_shutdown();
    for h in rt::take_failed(&rs) {
        if let Ok(h) = h.bind(py).cast::<GHandle>() {
            h.get().report_if_unobserved(py);
        }
    }
    drop(interval);
    drop(sigquit);
    drop(signals);
    let result = match result {
        Err(Stop::Deadlock) => Err(Deadlock::new_err(deadlock_report(&leftovers, &stacks))),
        Err(Stop::Err(e)) => Err(e),
        Ok(v) => Ok(v),
    };
    rt::uninstall();
    result
}

/// `GMPRT_IDLE_KEEPALIVE_MS`, a test knob (README): how long an idle M
/// beyond `procs` waits for work before its thread exits, instead of
/// `gmprt_core::api::DEFAULT_IDLE_KEEPALIVE`. Read by each `run()`.
fn idle_keepalive() -> PyResult<Duration> {
    const VAR: &str = "GMPRT_IDLE_KEEPALIVE_MS";
    let Some(v) = std::env::var_os(VAR) else {
        return Ok(DEFAULT_IDLE_KEEPALIVE);
    };
    v.to_str()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_millis)
        .ok_or_else(|| {
            PyValueError::new_err(format!(
                "{VAR} must be a whole number of milliseconds (0 or more), got {v:?}"
            ))
        })
}

/// The most `schedtrace` may be, in ms: an hour.
const MAX_SCHEDTRACE_MS: i64 = 3_600_000;

/// Set once `GMPRT_SCHEDTRACE` was found invalid and said so.
static SCHEDTRACE_WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `run(schedtrace=)`, else `GMPRT_SCHEDTRACE` (ms; invalid: a
/// `RuntimeWarning`, once per process, and off), and `GMPRT_SCHEDDETAIL=1`.
fn schedtrace_config(
    py: Python<'_>,
    arg: Option<Bound<'_, PyAny>>,
) -> PyResult<(Option<Duration>, bool)> {
    let ms = match arg {
        Some(n) => Some(int_arg(&n, "schedtrace", 0, MAX_SCHEDTRACE_MS)? as u64),
        None => match std::env::var_os("GMPRT_SCHEDTRACE") {
            None => None,
            Some(v) => {
                let parsed = v
                    .to_str()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .filter(|&ms| ms <= MAX_SCHEDTRACE_MS as u64);
                // Relaxed: a once-flag that guards no other data.
                if parsed.is_none() && !SCHEDTRACE_WARNED.swap(true, Relaxed) {
                    let msg = std::ffi::CString::new(format!(
                        "GMPRT_SCHEDTRACE must be a whole number of milliseconds \
                         (0 to {MAX_SCHEDTRACE_MS}), got {v:?}: ignored"
                    ))
                    .unwrap_or_default();
                    PyErr::warn(
                        py,
                        &py.get_type::<pyo3::exceptions::PyRuntimeWarning>(),
                        &msg,
                        1,
                    )?;
                }
                parsed
            }
        },
    };
    let every = ms.filter(|&ms| ms > 0).map(Duration::from_millis);
    let detail = std::env::var("GMPRT_SCHEDDETAIL").is_ok_and(|v| v.trim() == "1");
    Ok((every, every.is_some() && detail))
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

/// Exceptions that stop the runtime wherever they are raised.
fn is_fatal(py: Python<'_>, e: &PyErr) -> bool {
    e.is_instance_of::<PyKeyboardInterrupt>(py) || e.is_instance_of::<PySystemExit>(py)
}

/// How often `run()` re-checks a deadlock it did not report because another
/// Python thread was alive.
const DEADLOCK_RECHECK: Duration = Duration::from_millis(50);

/// Whether a Python thread other than the caller is alive: any thread may
/// use gmprt's channels and locks (`send_blocking`, `try_send`, `close`,
/// `done`, `unlock`, ...), so while one lives, Gs that wait on them are not
/// deadlocked; Go has no such threads, which is why its rule can be
/// stricter. Threads that only ever appeared to `threading` as dummies (the
/// runtime's own Ms, C threads) do not count.
fn other_threads_alive(py: Python<'_>) -> bool {
    let count = || -> PyResult<bool> {
        let threading = py.import("threading")?;
        let me = threading.call_method0("current_thread")?;
        let dummy = threading.getattr("_DummyThread")?;
        for t in threading.call_method0("enumerate")?.try_iter()? {
            let t = t?;
            if !t.is(&me) && !t.is_instance(&dummy)? && t.call_method0("is_alive")?.is_truthy()? {
                return Ok(true);
            }
        }
        Ok(false)
    };
    // If threading cannot be asked, err on the side of reporting.
    count().unwrap_or(false)
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
    let how = Spawn {
        parent: None,
        deadline: None,
        on_done: None,
        is_main: true,
        blocks: false,
    };
    let handle = new_g(py, &rs.sched, main, args, None, how)?;
    let ev = &rs.ev;
    // Set while the deadlock condition holds but a plain Python thread is
    // alive that may still wake a G: look again every `DEADLOCK_RECHECK`.
    let mut suspected = false;
    loop {
        // Before every wait too: a SIGINT that landed before the wakeup fd
        // was installed (right at start) wrote no byte to the pipe, and only
        // this check sees it.
        py.check_signals()?;
        let waiter = ev.clone();
        let timeout = suspected.then_some(DEADLOCK_RECHECK);
        py.detach(move || waiter.wait(timeout));
        py.check_signals()?;
        rt::serve_calls(py, ev);
        if let Some(e) = lock(&ev.fatal).take() {
            return Err(e.into());
        }
        if ev.exiting.load(Acquire) {
            // The interpreter exits while this run() runs in another thread
            // (`exit::at_exit`). SystemExit ends a thread silently.
            return Err(PySystemExit::new_err("gmprt.run(): the interpreter is exiting").into());
        }
        if let Some(msg) = lock(&ev.broken).take() {
            return Err(PyRuntimeError::new_err(msg).into());
        }
        let long_steps = std::mem::take(&mut *lock(&ev.long_steps));
        for (g, thread, held, ran) in long_steps {
            report_long_step(py, g, thread, held, ran)?;
        }
        if handle.get().is_done(py) {
            return Ok(handle.get().outcome(py)?);
        }
        if ev.deadlock.swap(false, Acquire) || suspected {
            let sched = rs.sched.clone();
            suspected = py.detach(move || sched.confirm_deadlock(DEADLOCK_SETTLE));
            if suspected && !other_threads_alive(py) {
                return Err(Stop::Deadlock);
            }
        }
    }
}

/// The Python stack of OS thread `thread` (`threading.get_ident()`), from
/// another thread: `sys._current_frames`.
fn python_stack(py: Python<'_>, thread: u64) -> PyResult<String> {
    let frames = py.import("sys")?.call_method0("_current_frames")?;
    Ok(match frames.get_item(thread) {
        Ok(frame) => py
            .import("traceback")?
            .call_method1("format_stack", (frame,))?
            .extract::<Vec<String>>()?
            .concat(),
        Err(_) => "  (no Python frame)\n".to_string(),
    })
}

/// Prints where a G whose step ran too long is now, from the thread in
/// `run()`. sysmon reports only a step whose own thread was on the CPU
/// for `ran` of its `held` (core `sysmon`, "Long steps").
///
/// A `KeyboardInterrupt` (or `SystemExit`) raised while printing, as a
/// Ctrl-C landing in the `traceback` import, is the user's and leaves
/// `run()`; any other failure to print is itself printed.
fn report_long_step(
    py: Python<'_>,
    g: u64,
    thread: u64,
    held: Duration,
    ran: Duration,
) -> PyResult<()> {
    let printed = (|| -> PyResult<()> {
        let stack = python_stack(py, thread)?;
        let msg = if crate::aio::is_watched(g) {
            format!(
                "gmprt.aio: the asyncio loop (G {g}) has been blocked for {} ms in one \
                 iteration by a callback or task step: nothing else on the loop runs meanwhile \
                 (move blocking work to `await gmprt.aio.to_g(fn, ...)`). It is at:\n{stack}",
                held.as_millis(),
            )
        } else {
            format!(
                "gmprt: G {g} has held its P for {} ms in one step, its thread running for {} \
                 ms of it (a long computation in Python or in C; its P goes to another M when \
                 work waits). It is at:\n{stack}",
                held.as_millis(),
                ran.as_millis(),
            )
        };
        py.import("sys")?
            .getattr("stderr")?
            .call_method1("write", (msg,))?;
        Ok(())
    })();
    match printed {
        Err(e) if is_fatal(py, &e) => Err(e),
        Err(e) => {
            e.print(py);
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}

/// Go's report: the header, then each G ("G 3 (worker) [chan receive]",
/// as `shutdown` and `cancel::blocked_sync_gs` word it) with its stack
/// from the dump taken before the Gs were closed.
fn deadlock_report(parked: &[String], stacks: &[(u64, String)]) -> String {
    let mut msg = String::from("all goroutines are asleep - deadlock!\n");
    for line in parked {
        msg.push_str("\n  ");
        msg.push_str(line);
        let id = line
            .strip_prefix("G ")
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse::<u64>().ok());
        if let Some((_, stack)) = stacks.iter().find(|(g, _)| Some(*g) == id) {
            msg.push('\n');
            msg.push_str(stack);
        }
    }
    msg
}

/// `main` ended with Gs still alive: cancel them all and give them
/// [`CANCEL_GRACE`] to end. A Ctrl-C meanwhile cuts it short (the
/// `KeyboardInterrupt` is returned, to leave `run()`).
fn cancel_leftovers(py: Python<'_>, rs: &RunState) -> Option<PyErr> {
    if rs.sched.stats().goroutines == 0 {
        return None;
    }
    // The main G's M already began the shutdown (body.rs); wake them all.
    cancel::begin_shutdown();
    rs.sched.interrupt_all();
    let start = std::time::Instant::now();
    // Most cancelled Gs end within microseconds: look again soon, then
    // less and less often.
    let mut nap = Duration::from_micros(20);
    let mut progress = (rs.sched.steps(), start);
    while rs.sched.stats().goroutines > 0 && start.elapsed() < CANCEL_GRACE {
        // A G spawned meanwhile (by a finally block) is cancelled when it
        // first runs; this only waits.
        py.detach(|| std::thread::sleep(nap));
        nap = (nap * 2).min(CANCEL_POLL);
        if let Err(e) = py.check_signals() {
            return Some(e);
        }
        rt::serve_calls(py, &rs.ev);
        // No step ended for a while: what is left is inside one step (a
        // Python loop, a C call) that a cancel cannot reach; waiting out
        // the grace would not help, `exit::stop_running_steps` does. Unless
        // a G is queued to run or a timer is armed: then a step will end
        // (a cleanup's `sleep`), and on a loaded machine that can take
        // longer than the stall; the grace still bounds the wait.
        let steps = rs.sched.steps();
        if steps != progress.0 {
            progress = (steps, std::time::Instant::now());
        } else if progress.1.elapsed() >= CANCEL_STALL && !may_step(rs) {
            break;
        }
    }
    None
}

/// Whether a step will begin without help: a G waits in a run queue, or
/// a timer that wakes one is armed (`cancel_leftovers`).
fn may_step(rs: &RunState) -> bool {
    let st = rs.sched.stats();
    st.timers > 0 || st.global_runq > 0 || st.local_runq.iter().any(|&n| n > 0)
}

/// Stops the runtime, ends the steps still running (`exit`), joins its
/// threads and closes every unfinished G; returns a line per closed G
/// ("G 3 (worker) [chan receive]").
fn shutdown(py: Python<'_>, rs: &RunState) -> Vec<String> {
    exit::stop_running_steps(py, rs, exit::STOP_WAIT);
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

/// `os.register_at_fork(after_in_child=...)`: the child of a fork gets a
/// fresh runtime (DESIGN §3), so a child forked inside a G (or by
/// multiprocessing's fork start method) can call `gmprt.run()`. This thread
/// forgets the parent's runtime, that it was an M, and the G it stepped.
#[pyfunction]
pub(crate) fn after_fork_child() {
    rt::forget_after_fork();
    Sched::after_fork_child();
    crate::token::after_fork_child();
    crate::cancel::after_fork_child();
}
