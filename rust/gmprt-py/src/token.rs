//! Tokens: the awaitables every gmprt operation returns.
//!
//! `__await__` returns the token itself. Each `__next__` first *polls* the
//! operation (the fast path: a ready channel or socket costs no park). If it
//! must wait, `__next__` yields the token itself up the await chain to the
//! driver (`body.rs`), which *parks* it — registers the G's waker with
//! whatever it waits on — after `PyIter_Send` has returned: Go's `gopark`
//! discipline, so a wake can never find the G still running without the G's
//! state word knowing. Once woken, the driver sends `None` and `__next__`
//! polls again: a channel hand-off is complete by then, while a socket that
//! was only *maybe* ready may ask to wait again.
//!
//! A result of `None` is returned as a bare NULL (no StopIteration object,
//! 2.4× cheaper on 3.12+), any other value through StopIteration.
//!
//! # Token objects
//!
//! Every channel operation makes a token and frees it a few hundred
//! instructions later, so the Python object's life costs as much as the
//! operation. Tokens skip PyO3's generic paths for it: `token_dealloc`
//! drops the Rust value and keeps the object's memory on a short
//! per-thread free list, which [`Token::into_object`] reuses
//! (`PyObject_Init`, as CPython's own free lists do); `am_await` and
//! `am_send` are plain C slots. `install_am_send` installs the allocation
//! fast path only after checking that PyO3 laid the object out as the
//! Token alone behind the object header (no dict, weakref, GC or borrow
//! flag); otherwise PyO3's allocation stays in use.
//!
//! # Budget
//!
//! An await that is ready at once never suspends the coroutine, so a G on a
//! hot socket or a full channel could keep its P forever. Each step gets
//! [`BUDGET`] ready completions (tokio's coop budget); past that, a ready
//! token still yields once, and the G goes to the back of the run queue.

use std::cell::Cell;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering::*};
use std::time::{Duration, Instant};

use gmprt_core::WaitReason;
use gmprt_core::Waker;
use pyo3::exceptions::{PyRuntimeError, PyStopIteration, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;

use crate::cancel::GCancel;

/// tokio's coop budget per task poll.
const BUDGET: u32 = 128;

/// The outcome of polling an operation.
pub(crate) enum Poll {
    /// Done: the await evaluates to this (or raises).
    Ready(PyResult<Py<PyAny>>),
    /// Must wait: the token goes to the driver to be parked.
    Pending,
}

/// One kind of gmprt wait (join, sleep, channel op, socket readiness...).
/// Implementations are the only per-operation code the driver needs.
pub(crate) trait Wait: Send + Sync + 'static {
    /// Tries to complete without waiting. Called on every `__next__`, so
    /// also after each wake.
    fn poll(&self, py: Python<'_>) -> Poll;

    /// Driver only, right after the G yielded this token: register `waker`
    /// to be woken when `poll` may succeed. Return false if that is already
    /// the case (the G is resumed at once and polls again).
    fn park(&self, py: Python<'_>, waker: Waker) -> bool;

    /// Deadline-free description for deadlock reports ("chan receive").
    fn describe(&self) -> String;

    /// The core's kind of this wait, for schedtrace counts and the park
    /// info of dumps (`gmprt_core::g`, "Park info"). Stored on every park:
    /// keep it a constant.
    fn reason(&self) -> WaitReason {
        WaitReason::Other
    }

    /// For the leak check (`gmprt.goroutines(leaked=True)`): the channels
    /// this wait can only be ended through, or None when something else
    /// ends it too (a timeout, a socket, a timer: never "leaked").
    fn chans(&self, py: Python<'_>) -> Option<Vec<Py<PyAny>>> {
        let _ = py;
        None
    }

    /// Driver only: the G was cancelled while this wait was registered (or
    /// just before registering it). Withdraw it; return false if the
    /// operation completed meanwhile, so that it is delivered (the next
    /// `poll` returns it) and the cancel lands at the next park point
    /// instead: a cancelled wait never consumes or delivers a value.
    fn cancel(&self, py: Python<'_>) -> bool {
        let _ = py;
        true
    }
}

/// What a token does.
pub(crate) enum Op {
    /// `await gmprt.sleep(0)`: go to the back of the run queue once.
    Yield,
    /// Anything that may wait.
    Wait(Box<dyn Wait>),
}

// `Token::word`: the state in the low bits, the owner G's id above.
const FRESH: u64 = 0;
/// Yielded to the driver; polls again when resumed.
const WAITING: u64 = 1;
/// Ready, but yielded anyway because the budget ran out (result stashed).
const BUDGET_YIELD: u64 = 2;
const DONE: u64 = 3;
const STATE_MASK: u64 = 0b11;
const OWNER_SHIFT: u32 = 2;

/// A gmprt awaitable. Await it once, inside a G.
#[pyclass(frozen, module = "gmprt._gmprt", name = "Awaitable")]
pub struct Token {
    pub(crate) op: Op,
    /// The state (`FRESH` ... `DONE`) and, above [`OWNER_SHIFT`], the G
    /// that awaits it (0 until the first `__next__`): a second G awaiting
    /// the same token would take over its park and leave the first asleep
    /// forever, so it is refused. One word: a parked G keeps its token, so
    /// its size counts per G (issue 14; 48 bytes in all).
    word: AtomicU64,
    /// The ready result held over a budget yield (`Box::into_raw`, or
    /// null). Boxed: a `PyErr` is ~64 bytes, and this is the rare path.
    /// Only the owner G touches it, between two of its own resumptions;
    /// the atomic only makes the token `Sync`.
    stash: AtomicPtr<PyResult<Py<PyAny>>>,
}

const _: () = assert!(std::mem::size_of::<Token>() <= 32);

/// What the thread knows of the step it runs, set by the driver around
/// every step. One thread-local for all of it: in a shared library each
/// thread-local access is a call (`__tls_get_addr`), and the step's two
/// ends are the hottest path there is.
struct Stepping {
    /// The id of the G this thread is stepping, or 0: tokens use it to
    /// refuse to run outside a G.
    g: Cell<u64>,
    /// Ready completions left in the current step.
    budget: Cell<u32>,
    /// That G's cancel state (`cancel::current`), or null.
    cancel: Cell<*const GCancel>,
    /// Token objects freed on this thread, for reuse ("Token objects").
    free: Cell<*mut ffi::PyObject>,
    /// How many `free` holds (at most [`FREE_MAX`]).
    nfree: Cell<u32>,
    /// This thread's shared empty context, one strong reference, or null
    /// ("Borrowed contexts" in `body`).
    ctx: Cell<*mut ffi::PyObject>,
}

thread_local! {
    static STEPPING: Stepping = const {
        Stepping {
            g: Cell::new(0),
            budget: Cell::new(BUDGET),
            cancel: Cell::new(std::ptr::null()),
            free: Cell::new(std::ptr::null_mut()),
            nfree: Cell::new(0),
            ctx: Cell::new(std::ptr::null_mut()),
        }
    };
    /// The id of the G this thread is closing at shutdown, or 0.
    static CLOSING_G: Cell<u64> = const { Cell::new(0) };
    /// Awaits refused while closing that G, and when the first one was.
    static CLOSING_REFUSED: Cell<(u32, Option<Instant>)> = const { Cell::new((0, None)) };
}

/// How long a G being closed at shutdown may keep catching the refusal of
/// its awaits and awaiting again (`except BaseException:` in a loop) before
/// it is abandoned: whichever of the two limits comes first. Each refused
/// await raises at once, so such a loop would otherwise spin forever.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
const CLOSE_GRACE_AWAITS: u32 = 1000;

/// Marks the calling thread as closing G `id` (shutdown) until dropped, so
/// an await in its `finally` gets an error that says so.
pub(crate) struct Closing(u64);

impl Closing {
    pub(crate) fn enter(id: u64) -> Closing {
        CLOSING_REFUSED.with(|c| c.set((0, None)));
        Closing(CLOSING_G.with(|c| c.replace(id)))
    }

    /// Whether the G outlived its grace (see [`CLOSE_GRACE`]): its last
    /// await suspended it instead of raising, so `close()` gave up on it.
    pub(crate) fn abandoned(&self) -> bool {
        let (n, first) = CLOSING_REFUSED.with(Cell::get);
        first.is_some_and(|first| grace_used(n, first))
    }
}

/// Whether `n` refused awaits, the first at `first`, have used up the grace.
fn grace_used(n: u32, first: Instant) -> bool {
    n > CLOSE_GRACE_AWAITS || first.elapsed() >= CLOSE_GRACE
}

/// Counts one refused await of the G being closed; true once it has used
/// up its grace.
fn refuse_while_closing() -> bool {
    CLOSING_REFUSED.with(|c| {
        let (n, first) = c.get();
        let first = first.unwrap_or_else(Instant::now);
        let n = n.saturating_add(1);
        c.set((n, Some(first)));
        grace_used(n, first)
    })
}

impl Drop for Closing {
    fn drop(&mut self) {
        CLOSING_G.with(|c| c.set(self.0));
    }
}

/// After `fork()`, in the child: the calling thread steps and closes no G
/// (rt::after_fork_child).
pub(crate) fn after_fork_child() {
    STEPPING.with(|s| {
        s.g.set(0);
        s.cancel.set(std::ptr::null());
    });
    CLOSING_G.with(|c| c.set(0));
}

/// Marks the calling thread as stepping G `id`, whose cancel state is
/// `cancel`, until dropped, with a fresh budget.
pub(crate) struct InG(u64, *const GCancel);

impl InG {
    /// `cancel` must outlive the guard: the driver's handle holds it for
    /// the step the guard spans.
    pub(crate) fn enter(id: u64, cancel: &GCancel) -> InG {
        STEPPING.with(|s| {
            s.budget.set(BUDGET);
            InG(s.g.replace(id), s.cancel.replace(cancel))
        })
    }
}

impl Drop for InG {
    fn drop(&mut self) {
        STEPPING.with(|s| {
            s.g.set(self.0);
            s.cancel.set(self.1);
        });
    }
}

/// Whether the calling thread is stepping a G: an M inside a step, which
/// PyO3 counts attached for the whole step (`token_am_send`).
pub(crate) fn in_step() -> bool {
    stepping().g.get() != 0
}

/// The G the calling thread is stepping, if any.
pub(crate) fn current_g() -> Option<u64> {
    Some(STEPPING.with(|s| s.g.get())).filter(|&id| id != 0)
}

/// `f` of the cancel state of the G the calling thread steps, if it steps
/// one.
pub(crate) fn with_current_cancel<R>(f: impl FnOnce(&GCancel) -> R) -> Option<R> {
    let p = STEPPING.with(|s| s.cancel.get());
    // SAFETY: non-null only between `InG::enter` and its drop, while the
    // driver's handle keeps the `GCancel` alive (`InG::enter`).
    (!p.is_null()).then(|| f(unsafe { &*p }))
}

impl Stepping {
    /// Spends one ready completion of the step's budget; false once none
    /// is left.
    fn take_budget(&self) -> bool {
        let left = self.budget.get();
        self.budget.set(left.saturating_sub(1));
        left > 0
    }
}

/// The calling thread's [`Stepping`], for the hot path: one thread-local
/// lookup (`__tls_get_addr` in a shared library) for every field of it,
/// where each `STEPPING.with` pays one.
fn stepping() -> &'static Stepping {
    // SAFETY: a `const` thread-local without a destructor lives, at the
    // same address, as long as its thread, and the reference never leaves
    // the thread (`Stepping` is `!Sync`: its cells forbid sharing it), so
    // extending it to `'static` cannot outlive the storage.
    STEPPING.with(|s| unsafe { &*(s as *const Stepping) })
}

/// The calling thread's shared empty context slot ("Borrowed contexts" in
/// `body`): a strong reference, or null.
pub(crate) fn shared_ctx() -> &'static Cell<*mut ffi::PyObject> {
    &stepping().ctx
}

impl Token {
    pub(crate) fn new(op: Op) -> Token {
        Token {
            op,
            word: AtomicU64::new(FRESH),
            stash: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    pub(crate) fn wait(w: impl Wait) -> Token {
        Token::new(Op::Wait(Box::new(w)))
    }

    /// What a G parked on this token waits on.
    /// [`Wait::chans`] of this token's wait.
    pub(crate) fn chans(&self, py: Python<'_>) -> Option<Vec<Py<PyAny>>> {
        match &self.op {
            Op::Yield => None,
            Op::Wait(w) => w.chans(py),
        }
    }

    pub(crate) fn describe(&self) -> String {
        match &self.op {
            Op::Yield => "yield".into(),
            Op::Wait(w) => w.describe(),
        }
    }

    /// Reported another way (a G that returned it unawaited): no
    /// "never awaited" warning when it is dropped.
    pub(crate) fn forget(&self) {
        self.word.store(DONE, Relaxed);
    }

    /// Driver: the token just yielded was ready; it only wants a turn.
    pub(crate) fn is_budget_yield(&self) -> bool {
        self.word.load(Acquire) & STATE_MASK == BUDGET_YIELD
    }
}

/// A token dropped without ever being awaited did nothing: warn, as Python
/// does for a coroutine (a forgotten `await ch.send(v)` sends nothing).
impl Drop for Token {
    fn drop(&mut self) {
        let stash = *self.stash.get_mut();
        if !stash.is_null() {
            // SAFETY: a non-null stash came from `Box::into_raw` (`stash`)
            // and nobody took it back; we are its last owner.
            drop(unsafe { Box::from_raw(stash) });
        }
        if *self.word.get_mut() & STATE_MASK != FRESH {
            return;
        }
        let what = self.describe();
        // Dealloc runs attached; try_attach refuses only during
        // finalization. The dealloc may run while an exception unwinds:
        // keep it intact.
        Python::try_attach(|py| {
            let unwinding = PyErr::take(py);
            let msg = std::ffi::CString::new(format!(
                "a gmprt awaitable ({what}) was never awaited: the operation did not happen \
                 (a missing `await`?)"
            ))
            .unwrap_or_default();
            let cat = py.get_type::<pyo3::exceptions::PyRuntimeWarning>();
            if let Err(e) = PyErr::warn(py, &cat, &msg, 1) {
                e.write_unraisable(py, None);
            }
            if let Some(u) = unwinding {
                u.restore(py);
            }
        });
    }
}

/// Turns a result into what `__next__` returns: `None` as a bare NULL, any
/// other value through StopIteration.
fn finish(py: Python<'_>, r: PyResult<Py<PyAny>>) -> PyResult<Option<Py<PyAny>>> {
    let v = r?;
    if v.is_none(py) {
        Ok(None)
    } else {
        Err(PyStopIteration::new_err((v,)))
    }
}

/// What one resumption of a token gives the awaiting coroutine.
enum Advance {
    /// Suspend: the token travels up to the driver.
    Yield(Py<PyAny>),
    /// The await is over with this value.
    Return(Py<PyAny>),
}

impl Token {
    /// `__next__` outside any G: refused, or, for a G being closed at
    /// shutdown, refused until its grace is used up.
    fn outside_g(slf: &Bound<'_, Self>) -> PyResult<Advance> {
        if crate::rt::forked_mid_step() {
            return Err(PyRuntimeError::new_err(
                "this is the child of an os.fork() inside a G, and the child waited on the \
                 parent's runtime, which has no threads here: in a forked child, exec, call \
                 os._exit(), or start its own gmprt.run()",
            ));
        }
        let closing = CLOSING_G.with(|c| c.get());
        if closing != 0 {
            if refuse_while_closing() {
                // Suspend instead of raising: `close()` then stops with
                // "coroutine ignored GeneratorExit" and the G is
                // abandoned (body.rs, `cancel`).
                return Ok(Advance::Yield(slf.clone().into_any().unbind()));
            }
            return Err(PyRuntimeError::new_err(format!(
                "G {closing} awaited while the runtime was closing it: gmprt.run()'s main \
                 returned, and a leftover G's finally block cannot wait for anything"
            )));
        }
        Err(PyRuntimeError::new_err(
            "a gmprt awaitable was awaited outside a gmprt G; gmprt operations \
             work only in code run by gmprt.run() or gmprt.go(), not under asyncio \
             or another event loop",
        ))
    }

    /// One resumption (`__next__` or `am_send`): poll, and either finish the
    /// await or yield the token to the driver.
    fn advance(slf: &Bound<'_, Self>, st: &Stepping) -> PyResult<Advance> {
        let py = slf.py();
        let tok = slf.get();
        // A token is awaited by the one G that made it; the atomic only
        // catches a token awaited twice.
        let word = tok.word.load(Acquire);
        let state = word & STATE_MASK;
        if state == DONE {
            return Err(PyRuntimeError::new_err(
                "this gmprt awaitable was already awaited",
            ));
        }
        let me = st.g.get();
        if me == 0 {
            // Refused below: it was not forgotten, so no "never awaited".
            tok.word.store(DONE, Release);
            return Token::outside_g(slf);
        }
        // The CAS only decides who owns the token (the G's own state
        // travels with its park, g.rs); once owned, the word tells the
        // owner from a thief. Relaxed on failure: we only read the owner.
        let owner = match word >> OWNER_SHIFT {
            0 => tok
                .word
                .compare_exchange(word, (me << OWNER_SHIFT) | state, Acquire, Relaxed)
                .map_or_else(|w| w >> OWNER_SHIFT, |_| me),
            o => o,
        };
        match owner {
            o if o == me => {}
            owner => {
                return Err(PyRuntimeError::new_err(format!(
                    "this gmprt awaitable ({}) is already awaited by G {owner}; each await \
                     needs its own (call the operation again in this G)",
                    tok.describe()
                )))
            }
        }
        // Only the owner moves the state on (a thief bails out above).
        let set = |st: u64| tok.word.store((me << OWNER_SHIFT) | st, Release);
        let yield_self = || {
            // A yield from asyncio code of a gmprt.aio loop would reach
            // asyncio's Task ("Task got bad yield"), not the driver.
            if crate::aio::is_loop_g(me) {
                set(DONE);
                return Err(PyTypeError::new_err(format!(
                    "asyncio code on a gmprt.aio loop awaited a gmprt awaitable ({}) that \
                     must wait; only a G can wait on one: run that code in a G and await \
                     the G (await gmprt.go(fn)), or use the asyncio way to wait",
                    tok.describe()
                )));
            }
            Ok(Advance::Yield(slf.clone().into_any().unbind()))
        };
        let done = |r: PyResult<Py<PyAny>>| r.map(Advance::Return);
        match (&tok.op, state) {
            (Op::Yield, FRESH) => {
                set(WAITING);
                yield_self()
            }
            (Op::Yield, _) => {
                set(DONE);
                Ok(Advance::Return(py.None()))
            }
            (Op::Wait(_), BUDGET_YIELD) => {
                set(DONE);
                let r = tok.stash.swap(std::ptr::null_mut(), Acquire);
                assert!(!r.is_null(), "budget yield without a result");
                // SAFETY: non-null: the `Box::into_raw` of the budget yield
                // below, taken back once (the swap left null).
                done(*unsafe { Box::from_raw(r) })
            }
            (Op::Wait(w), _) => match w.poll(py) {
                Poll::Ready(r) if state == WAITING || st.take_budget() => {
                    set(DONE);
                    done(r)
                }
                Poll::Ready(r) => {
                    let old = tok.stash.swap(Box::into_raw(Box::new(r)), Release);
                    debug_assert!(old.is_null(), "a second stashed result");
                    set(BUDGET_YIELD);
                    yield_self()
                }
                Poll::Pending => {
                    set(WAITING);
                    yield_self()
                }
            },
        }
    }
}

#[pymethods]
impl Token {
    fn __await__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// The iterator protocol, for Pythons (3.12+) whose `await` does not use
    /// `am_send`: a value comes back through StopIteration.
    fn __next__(slf: &Bound<'_, Self>) -> PyResult<Option<Py<PyAny>>> {
        let py = slf.py();
        match Token::advance(slf, stepping())? {
            Advance::Yield(v) => Ok(Some(v)),
            Advance::Return(v) => finish(py, Ok(v)),
        }
    }
}

/// `am_send` for tokens: what `await` calls on 3.10–3.11 (`PyIter_Send`),
/// and what the driver calls. It hands the await's value back directly,
/// with no StopIteration object and no PyO3 method trampoline.
///
/// # Safety
/// Installed as `Token`'s `am_send` slot: CPython calls it attached, with a
/// live `Token` as `slf` and a valid `out` pointer.
unsafe extern "C" fn token_am_send(
    slf: *mut ffi::PyObject,
    _arg: *mut ffi::PyObject,
    out: *mut *mut ffi::PyObject,
) -> ffi::PySendResult {
    let st = stepping();
    if st.g.get() != 0 {
        // The hot path: a G's own await, inside its step. Only an M steps
        // a G (`InG` is entered in `PyBody::step` only), and an M is
        // attached, PyO3 counting it, for the whole step (`PyBody::step`'s
        // SAFETY note): `attach` would only count it once more.
        // SAFETY: as just said, PyO3 counts this thread attached.
        let py = unsafe { Python::assume_attached() };
        // SAFETY: `slf` is a live Token and `out` valid (the slot's
        // contract, above).
        return unsafe { send_attached(py, slf, out, st) };
    }
    // CPython calls slots attached, but not always through PyO3: off an M
    // (a plain thread awaiting a token under asyncio, say) PyO3 does not
    // know it, and with the reference pool compiled out (`.cargo/
    // config.toml`) a `Py` dropped here would abort. `attach` costs one
    // thread-local increment when PyO3 already counts the thread attached.
    Python::attach(|py| {
        // SAFETY: `slf` is a live Token (this slot is only on Token's type),
        // and `out` is valid, per the slot's contract.
        unsafe { send_attached(py, slf, out, st) }
    })
}

/// [`token_am_send`]'s body, with PyO3 counting the thread attached.
///
/// # Safety
/// `slf` is a live `Token`; `out` is valid for a write.
unsafe fn send_attached(
    py: Python<'_>,
    slf: *mut ffi::PyObject,
    out: *mut *mut ffi::PyObject,
    st: &Stepping,
) -> ffi::PySendResult {
    // SAFETY: `slf` is a live Token (the caller's contract).
    let slf = unsafe { Bound::from_borrowed_ptr(py, slf).cast_into_unchecked::<Token>() };
    let advanced =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Token::advance(&slf, st)))
            .unwrap_or_else(|_| {
                Err(PyRuntimeError::new_err(
                    "gmprt internal error: a token panicked (please file a bug)",
                ))
            });
    let (status, value) = match advanced {
        Ok(Advance::Yield(v)) => (ffi::PySendResult::PYGEN_NEXT, v.into_ptr()),
        Ok(Advance::Return(v)) => (ffi::PySendResult::PYGEN_RETURN, v.into_ptr()),
        Err(e) => {
            e.restore(py);
            (ffi::PySendResult::PYGEN_ERROR, std::ptr::null_mut())
        }
    };
    // SAFETY: `out` is valid (the caller's contract).
    unsafe { *out = value };
    status
}

/// Where a Token's Rust value sits in its Python object (0: the fast
/// allocation is not installed), and the Token type, set once by
/// `install_am_send` ("Token objects").
static TOKEN_OFFSET: AtomicUsize = AtomicUsize::new(0);
static TOKEN_TYPE: AtomicPtr<ffi::PyTypeObject> = AtomicPtr::new(std::ptr::null_mut());

/// Freed token objects a thread keeps (a few in flight per G are all a
/// hot loop needs; a retiring M leaks at most this many).
const FREE_MAX: u32 = 16;

impl Token {
    /// The Python object for this token: a recycled one when the calling
    /// thread has one ("Token objects"), else PyO3's.
    pub(crate) fn into_object(self, py: Python<'_>) -> PyResult<Py<Token>> {
        // Relaxed: set once at module init, before any token exists
        // (the import's own synchronisation publishes it).
        let off = TOKEN_OFFSET.load(Relaxed);
        let st = stepping();
        let obj = st.free.get();
        if off != 0 && !obj.is_null() {
            // SAFETY: `obj` is the memory of a Token object that
            // `token_dealloc` freed: its size is the type's basicsize, its
            // value area at `off` holds the next free object, and nobody
            // else can reach it (the list is this thread's). PyObject_Init
            // makes it a live object of the type again (type reference and
            // refcount 1), and the write fills the value area that the
            // layout check in `install_am_send` showed to be the Token
            // alone; we are attached (`py`).
            unsafe {
                let slot = obj.byte_add(off);
                st.free.set(*slot.cast::<*mut ffi::PyObject>());
                st.nfree.set(st.nfree.get() - 1);
                ffi::PyObject_Init(obj, TOKEN_TYPE.load(Relaxed));
                slot.cast::<Token>().write(self);
                return Ok(Bound::from_owned_ptr(py, obj)
                    .cast_into_unchecked::<Token>()
                    .unbind());
            }
        }
        Py::new(py, self)
    }
}

/// `tp_dealloc` for tokens ("Token objects"): drops the Token, then keeps
/// the memory on the thread's free list (or frees it when that is full).
///
/// # Safety
/// Installed as `Token`'s `tp_dealloc` by `install_am_send`, with
/// `TOKEN_OFFSET` set: CPython calls it attached, once, with a Token object
/// whose refcount reached zero.
unsafe extern "C" fn token_dealloc(obj: *mut ffi::PyObject) {
    let off = TOKEN_OFFSET.load(Relaxed);
    let st = stepping();
    // SAFETY: the value at `off` is a live Token (the layout check in
    // `install_am_send`), dropped once here as PyO3's dealloc would.
    let drop_value = || unsafe { std::ptr::drop_in_place(obj.byte_add(off).cast::<Token>()) };
    let dropped = if st.g.get() != 0 {
        // On an M inside a step PyO3 counts the thread attached
        // (`token_am_send`), which the `Py`s the token drops need.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(drop_value))
    } else {
        Python::attach(|_| std::panic::catch_unwind(std::panic::AssertUnwindSafe(drop_value)))
    };
    if dropped.is_err() {
        Python::attach(|py| {
            pyo3::panic::PanicException::new_err("gmprt internal error: a token's drop panicked")
                .write_unraisable(py, None)
        });
    }
    // SAFETY: attached; `obj` is a dead object of a heap type whose
    // reference it held (dropped here, as PyO3's dealloc does). Its memory
    // is ours: onto the free list (its value area now holds the next
    // pointer), or back to the type's `tp_free`.
    unsafe {
        let tp = ffi::Py_TYPE(obj);
        if st.nfree.get() < FREE_MAX && tp == TOKEN_TYPE.load(Relaxed) {
            *obj.byte_add(off).cast::<*mut ffi::PyObject>() = st.free.get();
            st.free.set(obj);
            st.nfree.set(st.nfree.get() + 1);
        } else if let Some(free) = (*tp).tp_free {
            free(obj.cast());
        }
        ffi::Py_DECREF(tp.cast());
    }
}

/// `am_await` (and `tp_iter`) for tokens: the token itself, a new
/// reference. PyO3's `__await__` does the same through a method trampoline
/// (panic guard, attach count) that costs more than the await itself.
///
/// # Safety
/// Installed as `Token`'s `am_await`/`tp_iter` slot: CPython calls it
/// attached, with a live object as `slf`.
unsafe extern "C" fn token_am_await(slf: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: `slf` is live and we are attached (the slot's contract).
    unsafe { ffi::Py_INCREF(slf) };
    slf
}

/// Adds `am_send` to the `Token` type (PyO3 has no attribute for it),
/// replaces PyO3's `am_await`/`tp_iter` with [`token_am_await`], and, if
/// PyO3's layout is the one it expects, its `tp_dealloc` with
/// [`token_dealloc`] ("Token objects").
pub(crate) fn install_am_send(py: Python<'_>) {
    let tp = py.get_type::<Token>();
    let raw = tp.as_type_ptr();
    // Where PyO3 put the Token in its object: measured on a probe.
    let offset = Py::new(py, Token::new(Op::Yield)).ok().map(|probe| {
        probe.get().forget();
        (probe.get() as *const Token as usize) - (probe.as_ptr() as usize)
    });
    // SAFETY: reads of the type object's fields, attached.
    let layout_ok = offset.is_some_and(|off| unsafe {
        off >= std::mem::size_of::<ffi::PyObject>()
            && usize::try_from((*raw).tp_basicsize) == Ok(off + std::mem::size_of::<Token>())
            && (*raw).tp_itemsize == 0
            && (*raw).tp_dictoffset == 0
            && (*raw).tp_weaklistoffset == 0
            && (*raw).tp_flags & ffi::Py_TPFLAGS_HAVE_GC == 0
            && (*raw).tp_free.is_some()
    });
    // SAFETY: `Token` is a heap type PyO3 created with an `__await__`, so
    // `tp_as_async` points at the type's own, writable `PyAsyncMethods`;
    // nobody has used the type yet (module init), and PyType_Modified
    // invalidates any cached lookups all the same.
    unsafe {
        let am = (*raw).tp_as_async;
        assert!(!am.is_null(), "Token has no async slots");
        (*am).am_send = Some(token_am_send);
        (*am).am_await = Some(token_am_await);
        (*raw).tp_iter = Some(token_am_await);
        if let (true, Some(off)) = (layout_ok, offset) {
            TOKEN_TYPE.store(raw, Relaxed);
            TOKEN_OFFSET.store(off, Relaxed);
            (*raw).tp_dealloc = Some(token_dealloc);
        }
        ffi::PyType_Modified(raw);
    }
}
