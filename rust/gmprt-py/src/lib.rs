//! gmprt._gmprt: the Python face of gmprt-core.
//!
//! Thin by design: the scheduler, the netpoller and the sockets live in
//! gmprt-core and know nothing of Python; this crate converts arguments
//! and results, steps Python Gs and maps errors. Files, bottom up (each
//! uses only files listed before it):
//!
//! 1. `lock` (the one poison-ignoring lock helper), `errors` (the
//!    exceptions) and `malloc` (one malloc arena for the process, set at
//!    import);
//! 2. `rt`: which runtime is running, its event pipe, and the services Gs
//!    need from it (`sched`, `block_in_g`, `main_done`, `fatal`, reports);
//!    `cancel`: cancel scopes and the check every park point makes;
//!    on it, `exit`: ending steps still running when `run()` ends, and
//!    keeping threads out of a finalizing interpreter (`gmprt.Shutdown`,
//!    the atexit hook, the guarded calls a G step makes into Python);
//! 3. `token`: the awaitable protocol (Go's gopark discipline);
//!    on it, `aio`: the bridge to `gmprt.aio`'s asyncio loop (asyncio
//!    futures awaited in Gs, `await g` in asyncio code);
//! 4. `time` (`sleep` and deadlines), `handle` (`gmprt.G`), `body` (a
//!    Python G's body: steps a coroutine or calls a function);
//! 5. `parked` (await or block on one core operation), and on it `chan`
//!    (`gmprt.Chan`, `select`) and `sync` (WaitGroup, Mutex, Semaphore);
//!    `net` (`gmprt.net` and the fd waits, over gmprt-core's `net`);
//!    `aio_poll` (the readiness of a `gmprt.aio` loop's fds: Rust watcher
//!    Gs on the netpoller, one wait for the loop G), `aio_timer` (its
//!    timers' heap) and `aio_ready` (its `call_soon`);
//! 6. `hooks` (the M hooks), `traceback` (the goroutine dump's walk),
//!    `trace` (the tracer's switch and output) and `runtime` (`run()`,
//!    `go()`, `stats()`);
//! 7. `lib`, registering everything on the module.
//!
//! Built without PyO3's reference pool (`.cargo/config.toml`): a `Py` is
//! only ever dropped by a thread PyO3 counts attached (an M while it steps
//! Python Gs, `hooks`; the `am_send` slot attaches explicitly), so no call pays
//! the pool's mutex. The shipped wheel leaks a `Py` dropped detached;
//! the one `scripts/test.sh` tests aborts.

mod aio;
mod aio_poll;
mod aio_ready;
mod aio_timer;
mod body;
mod cancel;
mod chan;
mod errors;
mod exit;
mod handle;
mod hooks;
mod lock;
mod malloc;
mod net;
mod parked;
mod rt;
mod runtime;
mod sync;
mod time;
mod token;
mod trace;
mod traceback;

use pyo3::prelude::*;

use errors::{Cancelled, ChanClosed, ChanEmpty, Deadlock, Timeout};
use token::Token;

#[pymodule(gil_used = false)]
fn _gmprt(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    malloc::one_arena();
    m.add_function(wrap_pyfunction!(runtime::run, m)?)?;
    m.add_function(wrap_pyfunction!(runtime::go, m)?)?;
    m.add_function(wrap_pyfunction!(runtime::_go_linked, m)?)?;
    m.add_function(wrap_pyfunction!(runtime::_go_blocking, m)?)?;
    m.add_function(wrap_pyfunction!(cancel::timeout, m)?)?;
    m.add_function(wrap_pyfunction!(cancel::move_on_after, m)?)?;
    m.add_function(wrap_pyfunction!(cancel::shield, m)?)?;
    m.add_function(wrap_pyfunction!(cancel::deadline, m)?)?;
    m.add_function(wrap_pyfunction!(cancel::_group_scope, m)?)?;
    m.add_class::<cancel::CancelScope>()?;
    m.add("Cancelled", py.get_type::<Cancelled>())?;
    m.add_function(wrap_pyfunction!(runtime::stats, m)?)?;
    m.add_function(wrap_pyfunction!(trace::_trace_start, m)?)?;
    m.add_function(wrap_pyfunction!(trace::_trace_stop, m)?)?;
    m.add_function(wrap_pyfunction!(trace::_trace_snapshot, m)?)?;
    m.add_function(wrap_pyfunction!(trace::_trace_enabled, m)?)?;
    m.add_function(wrap_pyfunction!(traceback::_goroutines, m)?)?;
    m.add_function(wrap_pyfunction!(traceback::_set_traceback, m)?)?;
    m.add_function(wrap_pyfunction!(traceback::_schedtrace, m)?)?;
    m.add_function(wrap_pyfunction!(time::sleep, m)?)?;
    m.add_function(wrap_pyfunction!(time::_gosched, m)?)?;
    net::register(m)?;
    m.add_class::<handle::GHandle>()?;
    m.add_class::<Token>()?;
    token::install_am_send(py);
    m.add("Deadlock", py.get_type::<Deadlock>())?;
    m.add("Timeout", py.get_type::<Timeout>())?;
    m.add("ChanClosed", py.get_type::<ChanClosed>())?;
    m.add("ChanEmpty", py.get_type::<ChanEmpty>())?;
    m.add_class::<exit::Shutdown>()?;
    m.add_class::<chan::PyChan>()?;
    chan::install_fast_methods(py)?;
    m.add_class::<chan::RecvCase>()?;
    m.add_class::<chan::SendCase>()?;
    m.add_class::<chan::ClosedType>()?;
    m.add("CLOSED", chan::closed_sentinel(py)?.clone_ref(py))?;
    m.add_function(wrap_pyfunction!(chan::select, m)?)?;
    m.add_function(wrap_pyfunction!(chan::select_blocking, m)?)?;
    m.add_class::<sync::PyWaitGroup>()?;
    m.add_class::<sync::PyMutex>()?;
    m.add_class::<sync::PySemaphore>()?;
    m.add_function(wrap_pyfunction!(aio::_set_aio_hooks, m)?)?;
    m.add_function(wrap_pyfunction!(aio::_current_g, m)?)?;
    m.add_function(wrap_pyfunction!(aio::_watch_loop_g, m)?)?;
    m.add_function(wrap_pyfunction!(aio::_set_aio_loop_g, m)?)?;
    m.add_function(wrap_pyfunction!(aio::_in_runtime, m)?)?;
    m.add_function(wrap_pyfunction!(aio::_call_in_run_thread, m)?)?;
    m.add_function(wrap_pyfunction!(aio::_future_wait, m)?)?;
    m.add_class::<aio::FutureWake>()?;
    m.add_class::<aio_poll::Poller>()?;
    m.add_class::<aio_poll::SockIO>()?;
    m.add_class::<aio_timer::TimerHeap>()?;
    m.add_class::<aio_ready::CallSoon>()?;
    // After a fork, the child starts afresh (runtime::after_fork_child).
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item(
        "after_in_child",
        wrap_pyfunction!(runtime::after_fork_child, m)?,
    )?;
    py.import("os")?
        .call_method("register_at_fork", (), Some(&kwargs))?;
    // Before the interpreter finalizes, a run() still running in another
    // thread is stopped (`exit`, "Interpreter exit").
    py.import("atexit")?
        .call_method1("register", (wrap_pyfunction!(exit::at_exit, m)?,))?;
    Ok(())
}
