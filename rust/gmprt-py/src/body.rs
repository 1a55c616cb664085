//! The driver: a Python G body that the core's Ms step.
//!
//! A G starts as `fn, args, kwargs`. Its first step calls `fn` inside the G's
//! own `contextvars.Context`; if that returns a coroutine, later steps drive
//! it with `PyIter_Send`, otherwise the call *was* the G (a sync G) and its
//! return value is the result.
//!
//! When the coroutine yields a token, the driver — not the token — registers
//! the wait, then returns `Step::Park`; the core commits the park afterwards
//! (see `gmprt_core::g`). An asyncio future of a running `gmprt.aio` loop
//! is bridged to a token (`aio`); a yield of anything else is a foreign
//! awaitable: a `TypeError` naming the fix is thrown into the G.
//!
//! # Borrowed contexts
//!
//! Each G runs in its own copy of its creator's `contextvars` context, but
//! most are made where that context is empty, and a `Context` object is
//! 64 bytes of every parked G (issue 14). Such a G has no context of its
//! own (`PyBody::ctx` is None): its steps enter the M's *shared* empty
//! context instead, which is indistinguishable from a fresh copy while it
//! stays empty. After each such step the driver checks that it still is
//! and that nothing else holds it — a `contextvars.Token` from
//! `ContextVar.set` holds its context, and `reset` demands that very
//! object back; nothing else can reach the current context object from
//! Python, since `copy_context()` copies. If the step set a variable or
//! kept a token, the G *adopts* the shared context as its own (the token
//! stays valid: the object is the same) and the M makes a new shared one
//! when next needed. A step nested in a step on the same thread finds the
//! shared context entered (a reference above the slot's own) and gives its
//! G a fresh context of its own.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use gmprt_core::{Body, Cx, Step};
use pyo3::exceptions::{PyKeyboardInterrupt, PyStopIteration, PySystemExit, PyTypeError};
use pyo3::ffi;
use pyo3::panic::PanicException;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::aio;
use crate::cancel::{self, GCancel, Scope};
use crate::errors;
use crate::exit::{self, Shutdown};
use crate::handle::GHandle;
use crate::rt;
use crate::token::{self, Closing, InG, Op, Token};

/// A G's call not made yet, as the driver makes it ([`PyBody::call`]).
struct Call<'py> {
    func: Bound<'py, PyAny>,
    args: Bound<'py, PyTuple>,
    kwargs: Option<Bound<'py, PyDict>>,
}

/// Body flags (in `Origin`): `code` holds the arguments of a call not made yet
/// (else the coroutine).
const CALL: u8 = 1;
/// With `CALL`: `code` is `(args, kwargs)`, not `args`.
const KW: u8 = 2;
/// Its first step began.
const STARTED: u8 = 4;
/// `run()`'s main G.
const MAIN: u8 = 8;
/// The task's deadline timer may be armed (`Task::deadline_timer`; its
/// lock is skipped when not).
const TIMER_ARMED: u8 = 16;
/// The call is known to block (`Spawn::blocks`, `Body::blocks`).
const BLOCKS: u8 = 32;

/// Where a new G sits: the scope it starts in (a Group's) or the deadline
/// it inherits, who hears when it ends, and whether it is `run()`'s main.
pub(crate) struct Spawn {
    pub(crate) parent: Option<Arc<Scope>>,
    pub(crate) deadline: Option<Instant>,
    /// Called with the handle once the G finished (a Group's bookkeeping).
    pub(crate) on_done: Option<Py<PyAny>>,
    pub(crate) is_main: bool,
    /// The call is known to block (`gmprt.aio.to_g`): `Body::blocks`.
    pub(crate) blocks: bool,
}

/// A Python G's body. A parked G keeps it, so its size counts per G
/// (issue 14): one word for what it runs (`code`, read through
/// [`PyBody::call`] and [`PyBody::coro`]: the call's arguments until the
/// call, `fn` being the handle's, then the coroutine; None once finished)
/// and one for where it was made and the booleans ([`Origin`]).
pub(crate) struct PyBody {
    code: Option<Py<PyAny>>,
    /// The G's own context (`PyContext_CopyCurrent` at `go()`), entered
    /// around every step; None while it runs in its M's shared empty one
    /// ("Borrowed contexts").
    ctx: Option<Py<PyAny>>,
    handle: Py<GHandle>,
    /// The token of the current park: for deadlock reports, and to
    /// withdraw the wait if the G is cancelled meanwhile.
    parked_on: Option<Py<Token>>,
    /// Where `go()` was called, for dumps ("created by ..."), and the
    /// flags `CALL`, `KW`, `STARTED`, `MAIN`, `TIMER_ARMED`, `BLOCKS`.
    origin: Origin,
}

// 40 bytes is a 48-byte malloc chunk; one more word would be 64.
const _: () = assert!(std::mem::size_of::<PyBody>() <= 40);

/// Where a G was created (the G that called `go()`, and the code and
/// instruction it was at, captured at `go()` for dumps: `traceback`), and
/// the body's flags, in one word: `creator << CREATOR_SHIFT | site <<
/// SITE_SHIFT | flags`. The code and instruction are a call *site*, an
/// index into a table every G made there shares ([`SITES`]): Gs come from
/// few places, and a per-G reference to the code object was a word of
/// every body. The line number is computed only when a dump prints it.
pub(crate) struct Origin(u64);

const FLAG_BITS: u32 = 8;
const SITE_SHIFT: u32 = FLAG_BITS;
const SITE_BITS: u32 = 20;
/// No site: created from no Python frame, or the table is full.
const SITE_NONE: u32 = (1 << SITE_BITS) - 1;
const CREATOR_SHIFT: u32 = SITE_SHIFT + SITE_BITS;

/// The call sites of `go()` ([`Origin`]): the code object (held, so its
/// address is never another's) and the instruction offset. Entries are
/// never removed; a program with more than [`SITE_NONE`] sites records
/// the rest as unknown. Locked only with `try_lock` (`with_sites`): never
/// a wait while attached, and a fork child whose parent forked mid-lookup
/// only loses origins instead of hanging.
#[derive(Default)]
struct Sites {
    by_key: std::collections::HashMap<(usize, i32), u32>,
    entries: Vec<(Py<PyAny>, i32)>,
}

static SITES: std::sync::Mutex<Option<Sites>> = std::sync::Mutex::new(None);

/// `f` of the site table, or None if it could not be had at once (a few
/// tries: with the GIL, the holder is never between two of them).
fn with_sites<R>(f: impl FnOnce(&mut Sites) -> R) -> Option<R> {
    for _ in 0..64 {
        match SITES.try_lock() {
            Ok(mut g) => return Some(f(g.get_or_insert_with(Sites::default))),
            Err(std::sync::TryLockError::Poisoned(p)) => {
                return Some(f(p.into_inner().get_or_insert_with(Sites::default)))
            }
            Err(std::sync::TryLockError::WouldBlock) => std::hint::spin_loop(),
        }
    }
    None
}

thread_local! {
    /// The last site this thread interned, `(code address, lasti, site)`:
    /// a loop that spawns from one place takes no lock.
    static LAST_SITE: std::cell::Cell<(usize, i32, u32)> =
        const { std::cell::Cell::new((0, 0, SITE_NONE)) };
}

/// The site of `code` at instruction `lasti`, made now if new.
fn site(code: &Bound<'_, PyAny>, lasti: i32) -> u32 {
    let key = (code.as_ptr() as usize, lasti);
    let (addr, at, site) = LAST_SITE.with(|c| c.get());
    if (addr, at) == key {
        return site;
    }
    let site = with_sites(|t| {
        if let Some(&s) = t.by_key.get(&key) {
            return s;
        }
        let Ok(s) = u32::try_from(t.entries.len()) else {
            return SITE_NONE;
        };
        if s >= SITE_NONE {
            return SITE_NONE;
        }
        t.entries.push((code.clone().unbind(), lasti));
        t.by_key.insert(key, s);
        s
    })
    .unwrap_or(SITE_NONE);
    if site != SITE_NONE {
        LAST_SITE.with(|c| c.set((key.0, key.1, site)));
    }
    site
}

impl Origin {
    /// The calling frame, at `go()`: `PyEval_GetFrame` (borrowed; it is
    /// the caller's, so it outlives this call), its code and its last
    /// instruction, as a site. No line-table walk here.
    fn here(py: Python<'_>, flags: u8) -> Origin {
        let creator = crate::token::current_g()
            .filter(|&c| c < 1 << (64 - CREATOR_SHIFT))
            .unwrap_or(0);
        // SAFETY: attached; the frame is borrowed and only read here.
        let frame = unsafe { ffi::PyEval_GetFrame() };
        let site = if frame.is_null() {
            SITE_NONE
        } else {
            // SAFETY: `frame` is a live frame (above); GetCode returns a
            // new strong reference, never NULL, and GetLasti only reads.
            let (code, lasti) = unsafe {
                let code = Bound::from_owned_ptr(py, ffi::PyFrame_GetCode(frame).cast());
                (code, ffi::PyFrame_GetLasti(frame))
            };
            site(&code, lasti)
        };
        Origin((creator << CREATOR_SHIFT) | (u64::from(site) << SITE_SHIFT) | u64::from(flags))
    }

    fn flags(&self) -> u8 {
        self.0 as u8
    }

    fn set(&mut self, flags: u8) {
        self.0 |= u64::from(flags);
    }

    fn clear(&mut self, flags: u8) {
        self.0 &= !u64::from(flags);
    }

    /// The creator G's id (None: created from a thread that is not a G),
    /// the code object, and the line (`PyCode_Addr2Line`). Called while a
    /// dump holds the G: a reference increment and a line-table read.
    pub(crate) fn get(&self, py: Python<'_>) -> (Option<u64>, Option<Py<PyAny>>, Option<i32>) {
        let creator = Some(self.0 >> CREATOR_SHIFT).filter(|&c| c != 0);
        let site = ((self.0 >> SITE_SHIFT) as u32) & SITE_NONE;
        let found = (site != SITE_NONE)
            .then(|| {
                with_sites(|t| {
                    t.entries
                        .get(site as usize)
                        .map(|(c, l)| (c.clone_ref(py), *l))
                })
                .flatten()
            })
            .flatten();
        let Some((code, lasti)) = found else {
            return (creator, None, None);
        };
        // SAFETY: attached; the code object is alive (we hold it) and
        // Addr2Line only reads its line table.
        let line =
            (lasti >= 0).then(|| unsafe { ffi::PyCode_Addr2Line(code.as_ptr().cast(), lasti) });
        (creator, Some(code), line)
    }
}

/// What a dump keeps of a body it held still (`traceback`): references
/// only, taken with the G held, looked at after it is let go.
pub(crate) struct Snap {
    pub(crate) handle: Py<GHandle>,
    /// The coroutine, once the G's first step made one.
    pub(crate) coro: Option<Py<PyAny>>,
    /// The token it is parked on.
    pub(crate) token: Option<Py<Token>>,
    pub(crate) creator: Option<u64>,
    pub(crate) origin_code: Option<Py<PyAny>>,
    pub(crate) origin_line: Option<i32>,
}

/// What one `send`/`throw` into a coroutine gave.
enum Sent<'py> {
    Yielded(Bound<'py, PyAny>),
    Returned(Bound<'py, PyAny>),
    Raised(PyErr),
}

impl PyBody {
    pub(crate) fn new(
        py: Python<'_>,
        func: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        kwargs: Option<Bound<'_, PyDict>>,
        handle: Py<GHandle>,
        how: Spawn,
    ) -> PyResult<PyBody> {
        // SAFETY: we are attached; CopyCurrent returns a new reference or
        // NULL with an exception set, which from_owned_ptr_or_err handles.
        let ctx = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyContext_CopyCurrent())? };
        // An empty copy is only kept if a step makes it non-empty
        // ("Borrowed contexts"); it goes back to CPython's context free list.
        // SAFETY: a length query on a live Context, which cannot fail.
        let ctx = (unsafe { ffi::PyObject_Length(ctx.as_ptr()) } != 0).then(|| ctx.unbind());
        // A coroutine object passed directly is driven as it is.
        // SAFETY: a type check on a live object.
        // The handle keeps `func` (for names) and the call takes it from
        // there.
        let (code, mut flags) = if unsafe { ffi::PyCoro_CheckExact(func.as_ptr()) } != 0 {
            (func.unbind(), 0)
        } else {
            match kwargs {
                Some(kw) => (
                    PyTuple::new(py, [args.into_any(), kw.into_any()])?
                        .into_any()
                        .unbind(),
                    CALL | KW,
                ),
                None => (args.into_any().unbind(), CALL),
            }
        };
        if how.is_main {
            flags |= MAIN;
        }
        if how.blocks {
            flags |= BLOCKS;
        }
        Ok(PyBody {
            code: Some(code),
            ctx,
            handle,
            parked_on: None,
            origin: Origin::here(py, flags),
        })
    }

    /// The context a step enters, and whether it is the M's shared one
    /// ("Borrowed contexts").
    fn step_ctx<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyAny>, bool)> {
        if let Some(ctx) = &self.ctx {
            return Ok((ctx.bind(py).clone(), false));
        }
        let slot = token::shared_ctx();
        let p = slot.get();
        // SAFETY: a non-null slot holds a strong reference to a Context.
        if !p.is_null() && unsafe { ffi::Py_REFCNT(p) } == 1 {
            // SAFETY: as above; the Bound takes a reference of its own.
            return Ok((unsafe { Bound::from_borrowed_ptr(py, p) }, true));
        }
        let fresh = new_ctx(py)?;
        if !p.is_null() {
            // Entered further up this thread's stack: a nested step. This
            // G gets a context of its own (`after_step` keeps it).
            return Ok((fresh, false));
        }
        slot.set(fresh.clone().into_ptr());
        Ok((fresh, true))
    }

    /// After a step in `ctx`: a fresh context given to a G without one is
    /// kept, and the M's shared one is adopted if the step set a variable
    /// in it or something (a `contextvars.Token`) still holds it
    /// ("Borrowed contexts").
    fn after_step(&mut self, py: Python<'_>, ctx: Bound<'_, PyAny>, shared: bool) {
        if !shared {
            if self.ctx.is_none() {
                self.ctx = Some(ctx.unbind());
            }
            return;
        }
        let p = ctx.as_ptr();
        // SAFETY: `ctx` is a live Context; the two references are the
        // slot's and `ctx`'s own. Its length cannot fail.
        if unsafe { ffi::Py_REFCNT(p) == 2 && ffi::PyObject_Length(p) == 0 } {
            return;
        }
        // The slot's reference becomes the G's (the slot then holds none).
        token::shared_ctx().set(std::ptr::null_mut());
        // SAFETY: the slot held a strong reference to `p`, now ours.
        self.ctx = Some(unsafe { Bound::from_owned_ptr(py, p) }.unbind());
    }

    /// The G's own context, or a fresh empty one for a G without (closing
    /// it at shutdown: the rare path, off the shared one).
    fn own_ctx<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match &self.ctx {
            Some(ctx) => Ok(ctx.bind(py).clone()),
            None => new_ctx(py),
        }
    }

    /// The call the G starts with, until it is made (None after, and for
    /// a G given a coroutine object).
    fn call<'py>(&self, py: Python<'py>) -> Option<Call<'py>> {
        let c = self.code.as_ref()?.bind(py);
        if self.origin.flags() & CALL == 0 {
            return None;
        }
        // `new` packed these: an args tuple, or (args, kwargs).
        let (args, kwargs) = if self.origin.flags() & KW != 0 {
            let pair = c.cast::<PyTuple>().expect("call arguments are a pair");
            let args = pair.get_item(0).and_then(|a| Ok(a.cast_into::<PyTuple>()?));
            let kw = pair.get_item(1).and_then(|k| Ok(k.cast_into::<PyDict>()?));
            (
                args.expect("call arguments start with a tuple"),
                Some(kw.expect("call arguments end with a dict")),
            )
        } else {
            (
                c.cast::<PyTuple>()
                    .expect("call arguments are a tuple")
                    .clone(),
                None,
            )
        };
        let func = self.handle.get().func().bind(py).clone();
        Some(Call { func, args, kwargs })
    }

    /// The call returned a coroutine: drive it from now on.
    fn set_coro(&mut self, coro: Py<PyAny>) {
        self.code = Some(coro);
        self.origin.clear(CALL | KW);
    }

    /// The coroutine being driven, if the G has one.
    fn coro(&self) -> Option<&Py<PyAny>> {
        self.code
            .as_ref()
            .filter(|_| self.origin.flags() & CALL == 0)
    }

    /// A dump's look at this body, held still by the core's scan
    /// (`Sched::for_each_g`): reference increments and a line-table read,
    /// nothing that runs Python code or could wait.
    pub(crate) fn snapshot(&self, py: Python<'_>) -> Snap {
        let (creator, origin_code, origin_line) = self.origin.get(py);
        Snap {
            handle: self.handle.clone_ref(py),
            coro: self.coro().map(|c| c.clone_ref(py)),
            token: self.parked_on.as_ref().map(|t| t.clone_ref(py)),
            creator,
            origin_code,
            origin_line,
        }
    }

    /// Runs the G until it parks, yields or finishes. Attached, in the G's
    /// context.
    fn drive(&mut self, py: Python<'_>, cx: &mut Cx<'_>) -> Step {
        let mut throw: Option<PyErr> = None;
        // A Cancelled was thrown into the G in this step. If it caught it
        // and reaches another park point, the step ends there (the next
        // throws again): a G that swallows every Cancelled in a loop must
        // not keep its M for ever, one throw after another.
        let mut thrown = false;
        let cancel = self.cancel();
        if self.origin.flags() & STARTED == 0 {
            self.origin.set(STARTED);
            // Cancelled before it ever ran: it never runs (asyncio's rule).
            if let Some(scope) = cancel.check() {
                if let Some(coro) = self.coro() {
                    // Closing an unstarted coroutine is silent; dropping
                    // it would warn that it was never awaited.
                    let _ = coro.bind(py).call_method0(pyo3::intern!(py, "close"));
                }
                return self.finish(py, Err(scope.exception()));
            }
        } else if let Some(tok) = self.parked_on.take().map(|t| t.into_bound(py)) {
            self.disarm();
            if let Some(scope) = cancel.check() {
                let withdrawn = match &tok.get().op {
                    Op::Wait(w) => w.cancel(py),
                    // A `sleep(0)` whose Cancelled the last step held back.
                    Op::Yield => true,
                };
                if withdrawn {
                    throw = Some(scope.exception());
                    thrown = true;
                } else {
                    cancel.postpone(&scope);
                }
            }
        }
        loop {
            // The hot path (a coroutine's next step) borrows the coroutine;
            // a call, once per G, takes its parts out.
            let sent = match self.coro() {
                Some(coro) => match throw.take() {
                    Some(e) => throw_into(py, coro.bind(py), e),
                    None => send(py, coro.bind(py)),
                },
                None => {
                    let Call { func, args, kwargs } = self.call(py).expect("stepping a finished G");
                    {
                        let r = exit::call(&func, &args, kwargs.as_ref());
                        match r {
                            // SAFETY: a type check on a live object.
                            Ok(v) if unsafe { ffi::PyCoro_CheckExact(v.as_ptr()) } != 0 => {
                                // A coroutine G after all: sysmon gives it the
                                // coroutine rules (retake at 10 ms, reported).
                                cx.set_may_block(false);
                                self.set_coro(v.unbind());
                                continue;
                            }
                            Ok(v) => match misuse(&v) {
                                Some(what) => Sent::Raised(PyTypeError::new_err(format!(
                                "gmprt.go() called {} as a plain function and it returned {what}, \
                                 which nothing will ever run: pass an async function that \
                                 awaits it (async def f(): await ...)",
                                rt::describe(&func)
                            ))),
                                None => Sent::Returned(v),
                            },
                            Err(e) => Sent::Raised(e),
                        }
                    }
                }
            };
            match sent {
                Sent::Returned(v) => return self.finish(py, Ok(v.unbind())),
                Sent::Raised(e) => return self.finish(py, Err(e)),
                Sent::Yielded(obj) => {
                    // An asyncio future of a running gmprt loop parks the G
                    // on the future's done callback (`aio`).
                    let obj = if obj.is_none() || obj.cast_exact::<Token>().is_ok() {
                        obj
                    } else {
                        match aio::bridge(py, &obj) {
                            Ok(Some(tok)) => tok.into_any(),
                            Ok(None) => obj,
                            Err(e) => {
                                throw = Some(e);
                                continue;
                            }
                        }
                    };
                    if let Ok(tok) = obj.cast_exact::<Token>() {
                        let t = tok.get();
                        match &t.op {
                            Op::Wait(w) if !t.is_budget_yield() => {
                                // A park point: a cancelled G raises here
                                // (level-triggered: every time).
                                if let Some(scope) = cancel.check() {
                                    if thrown {
                                        self.parked_on = Some(tok.clone().unbind());
                                        return Step::Yield;
                                    }
                                    if w.cancel(py) {
                                        throw = Some(scope.exception());
                                        thrown = true;
                                    } else {
                                        cancel.postpone(&scope);
                                    }
                                    continue;
                                }
                                if let Some(d) = cancel.deadline() {
                                    // Fails only while the runtime stops.
                                    let armed =
                                        cancel.task().deadline_timer.arm(d, cx.waker()).is_ok();
                                    self.origin.clear(TIMER_ARMED);
                                    if armed {
                                        self.origin.set(TIMER_ARMED);
                                    }
                                }
                                if w.park(py, cx.waker()) {
                                    self.parked_on = Some(tok.clone().unbind());
                                    cx.set_wait_reason(w.reason());
                                    return Step::Park;
                                }
                                self.disarm();
                                // Ready meanwhile: resume now.
                                continue;
                            }
                            Op::Yield => {
                                // `sleep(0)` is a park point too.
                                if let Some(scope) = cancel.check() {
                                    if thrown {
                                        self.parked_on = Some(tok.clone().unbind());
                                        return Step::Yield;
                                    }
                                    throw = Some(scope.exception());
                                    thrown = true;
                                    continue;
                                }
                                return Step::Yield;
                            }
                            // A budget yield holds a completed result: the
                            // cancel lands at the next park point.
                            _ => return Step::Yield,
                        }
                    }
                    if obj.is_none() {
                        // A bare `yield` (asyncio.sleep(0) and other
                        // generator-based coroutines): a plain yield.
                        return Step::Yield;
                    }
                    throw = Some(foreign_awaitable(&obj));
                }
            }
        }
    }

    fn finish(&mut self, py: Python<'_>, result: PyResult<Py<PyAny>>) -> Step {
        // Looked at below and by the handle: an error made in Rust (a G
        // cancelled before it ran) must not cost a GIL switch.
        let result = result.map_err(|e| errors::made(py, e));
        self.code = None;
        self.disarm();
        self.handle.get().cancel.finish();
        let fatal = match &result {
            Err(e) => {
                e.is_instance_of::<PyKeyboardInterrupt>(py) || e.is_instance_of::<PySystemExit>(py)
            }
            Ok(_) => false,
        };
        if let (true, Err(e)) = (fatal, &result) {
            rt::fatal(e.clone_ref(py));
        }
        // `run()` raised a Shutdown to end the step (`exit`): its doing,
        // no report. (A Group observes its Gs' outcomes: the handle knows.)
        let shutdown = matches!(&result, Err(e) if e.is_instance_of::<Shutdown>(py));
        let on_done = GHandle::complete(self.handle.bind(py), result, fatal || shutdown);
        self.done_callback(py, on_done);
        if self.origin.flags() & MAIN != 0 {
            // From now on every G is cancelled at its next park point, and
            // one not started yet never starts (runtime.rs, "Shutdown").
            cancel::begin_shutdown();
            rt::main_done();
        }
        Step::Done
    }

    /// The G's cancel state, borrowed apart from `self` (the driver
    /// mutates the body while it checks).
    fn cancel<'a>(&self) -> &'a GCancel {
        let h: *const GHandle = self.handle.get();
        // SAFETY: the body holds a strong reference to its handle for its
        // whole life and never replaces it, so the handle (and the
        // `GCancel` in it, which lives in the Python object, not in the
        // body) outlives every step that borrows it.
        unsafe { &(*h).cancel }
    }

    fn disarm(&mut self) {
        if self.origin.flags() & TIMER_ARMED != 0 {
            self.origin.clear(TIMER_ARMED);
            self.handle.get().cancel.task().deadline_timer.cancel();
        }
    }

    /// The G forked (`os.fork()` inside it) and this is the child, whose
    /// step just ended: the runtime the step would go back to has no
    /// threads here (only the forking thread survives a fork), so nothing
    /// could ever resume the G or run another. The child process ends
    /// instead, with the G's outcome as its status (0 if it returned);
    /// waiting on the parent's runtime is reported first.
    fn exit_forked_child(&self, py: Python<'_>, step: Step) -> ! {
        let code = match step {
            Step::Done if self.handle.get().error(py).is_none() => 0,
            Step::Done => {
                if let Some(e) = self.handle.get().error(py) {
                    e.print(py);
                }
                1
            }
            _ => {
                let msg = format!(
                    "gmprt: the child of an os.fork() inside G {} waited on the parent's \
                     runtime, which has no threads in the child; the child exits. In a \
                     forked child, exec, call os._exit(), or start its own gmprt.run()\n",
                    self.handle.get().id()
                );
                let _ = py
                    .import("sys")
                    .and_then(|s| s.getattr("stderr")?.call_method1("write", (msg,)));
                1
            }
        };
        for stream in ["stdout", "stderr"] {
            let _ = py
                .import("sys")
                .and_then(|s| s.getattr(stream)?.call_method0("flush"));
        }
        // SAFETY: `_exit` ends the process at once; nothing after it runs,
        // and skipping atexit is what a fork child must do (the parent's
        // handlers are not the child's to run).
        unsafe { libc::_exit(code) }
    }

    /// Tells whoever asked (a Group) that the G finished; they observe its
    /// outcome, so it is never reported as unobserved.
    fn done_callback(&self, py: Python<'_>, on_done: Option<Py<PyAny>>) {
        if let Some(cb) = on_done {
            self.handle.get().observe();
            if let Err(e) = cb.call1(py, (self.handle.clone_ref(py),)) {
                e.write_unraisable(py, Some(cb.bind(py)));
            }
        }
    }
}

/// `PyIter_Send(coro, None)`: a return hands the value back without a
/// StopIteration object.
fn send<'py>(py: Python<'py>, coro: &Bound<'py, PyAny>) -> Sent<'py> {
    let mut out: *mut ffi::PyObject = std::ptr::null_mut();
    // SAFETY: attached; `coro` is live; `out` receives a new reference (or
    // NULL with an exception set on PYGEN_ERROR).
    let r = unsafe { exit::iter_send(py, coro.as_ptr(), &mut out) };
    if r == ffi::PySendResult::PYGEN_ERROR {
        return Sent::Raised(PyErr::fetch(py));
    }
    // SAFETY: PYGEN_NEXT and PYGEN_RETURN leave a new, non-null reference
    // in `out`.
    let v = unsafe { Bound::from_owned_ptr(py, out) };
    if r == ffi::PySendResult::PYGEN_NEXT {
        Sent::Yielded(v)
    } else {
        Sent::Returned(v)
    }
}

/// `coro.throw(exc)`. There is no public C call for it.
fn throw_into<'py>(py: Python<'py>, coro: &Bound<'py, PyAny>, e: PyErr) -> Sent<'py> {
    let e = errors::made(py, e);
    match exit::call_method1(
        coro,
        pyo3::intern!(py, "throw"),
        e.into_value(py).into_bound(py).into_any(),
    ) {
        Ok(v) => Sent::Yielded(v),
        Err(e) if e.is_instance_of::<PyStopIteration>(py) => {
            let v = e.value(py).getattr(pyo3::intern!(py, "value"));
            Sent::Returned(v.unwrap_or_else(|_| py.None().into_bound(py)))
        }
        Err(e) => Sent::Raised(e),
    }
}

fn foreign_awaitable(obj: &Bound<'_, PyAny>) -> PyErr {
    let what = obj
        .get_type()
        .fully_qualified_name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "an unknown object".into());
    PyTypeError::new_err(format!(
        "a gmprt G awaited a {what}, which belongs to another event loop (asyncio?); \
         gmprt drives only its own awaitables and the futures of a running gmprt.aio loop: \
         run the asyncio code on gmprt's loop (gmprt.aio.run(main()), or \
         asyncio.Runner(loop_factory=gmprt.aio.new_event_loop)), or use gmprt.sleep, \
         gmprt.Chan, gmprt.net and `await g` instead"
    ))
}

/// A new empty `contextvars.Context`.
fn new_ctx(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    // SAFETY: attached; a new reference, or NULL with an exception set.
    unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyContext_New()) }
}

/// Enters `ctx` until [`Entered::exit`] (`PyContext_Enter`/`Exit`).
///
/// Exit is explicit, so that a drop without it is an unwind. A Rust panic
/// unwinds attached (the GIL held) and exits the context. Any other unwind
/// is CPython ending the thread during finalization (`pthread_exit` in
/// `take_gil`, `exit` module docs) without the GIL: calling
/// `PyContext_Exit` then is what crashed, so the drop parks the thread
/// instead, as the guards in `exit` do closer to the call.
struct Entered<'py> {
    ctx: Bound<'py, PyAny>,
    exited: bool,
}

impl<'py> Entered<'py> {
    fn enter(py: Python<'py>, ctx: Bound<'py, PyAny>) -> PyResult<Entered<'py>> {
        // SAFETY: attached (we hold `py`); ctx is a Context object.
        if unsafe { ffi::PyContext_Enter(ctx.as_ptr()) } < 0 {
            return Err(PyErr::fetch(py));
        }
        Ok(Entered { ctx, exited: false })
    }

    /// Exits; the context, for the borrowed-context check.
    fn exit(mut self) -> Bound<'py, PyAny> {
        self.exit_attached();
        self.ctx.clone()
    }

    fn exit_attached(&mut self) {
        self.exited = true;
        // SAFETY: attached (the guard's `'py`; callers), and we entered this
        // context in `enter`. Exit fails only if the context is not the
        // current one, which a G body cannot change (Context.run restores
        // it).
        unsafe { ffi::PyContext_Exit(self.ctx.as_ptr()) };
    }
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        if self.exited {
            return;
        }
        if !std::thread::panicking() {
            // A forced unwind, without the GIL (type docs): stop here.
            loop {
                std::thread::park();
            }
        }
        // A Rust panic, attached (type docs).
        self.exit_attached();
    }
}

impl Body for PyBody {
    fn step(&mut self, cx: &mut Cx<'_>) -> Step {
        // SAFETY: only Ms step bodies, and an M steps an embedded body (as
        // this one is) only inside `PyHooks::attached`, a `Python::attach`,
        // so PyO3 already counts the thread attached and a `Py` dropped in
        // the step decrefs at once.
        let py = unsafe { Python::assume_attached() };
        let _in_g = InG::enter(cx.id(), self.cancel());
        let entered = self
            .step_ctx(py)
            .and_then(|(ctx, shared)| Ok((Entered::enter(py, ctx)?, shared)));
        let step = match entered {
            Ok((ctx, shared)) => {
                // A panic in the binding's own code (a bug: no input may
                // cause one) must not leave the G's handle unfinished, or
                // whoever awaits it, and `run()` for the main G, would wait
                // forever. It becomes the G's exception instead.
                let step = match catch_unwind(AssertUnwindSafe(|| self.drive(py, cx))) {
                    Ok(step) => step,
                    Err(payload) => {
                        let what = panic_message(&payload);
                        self.parked_on = None;
                        let e = PanicException::new_err(format!(
                            "gmprt internal error in G {}: {what} (please file a bug)",
                            cx.id()
                        ));
                        self.finish(py, Err(e))
                    }
                };
                let ctx = ctx.exit();
                self.after_step(py, ctx, shared);
                step
            }
            Err(e) => self.finish(py, Err(e)),
        };
        if rt::forked_mid_step() {
            self.exit_forked_child(py, step);
        }
        step
    }

    /// A G not yet called may be a plain function that blocks in C.
    fn may_block(&self) -> bool {
        self.code.is_some() && self.origin.flags() & CALL != 0
    }

    fn blocks(&self) -> bool {
        self.origin.flags() & BLOCKS != 0 && self.may_block()
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn describe(&self) -> String {
        let reason = match &self.parked_on {
            Some(tok) => tok.get().describe(),
            None => "runnable".into(),
        };
        // Called attached (at shutdown, on the thread in `run()`).
        let name = Python::attach(|py| self.handle.get().name(py));
        format!("({name}) [{reason}]")
    }

    fn cancel(self: Box<Self>) {
        Python::attach(|py| {
            let this = *self;
            if let Some(coro) = this.coro() {
                let closing = Closing::enter(this.handle.get().id());
                let ctx = this.own_ctx(py).and_then(|c| Entered::enter(py, c));
                let closed = coro.bind(py).call_method0(pyo3::intern!(py, "close"));
                if closing.abandoned() {
                    report_abandoned(py, this.handle.get().id(), &this.handle.get().name(py));
                    // Never finalized: a collected coroutine is closed again,
                    // and this one would spin again, wherever that happened.
                    std::mem::forget(coro.clone_ref(py));
                } else if let Err(e) = closed {
                    e.write_unraisable(py, Some(coro.bind(py)));
                }
                if let Ok(ctx) = ctx {
                    ctx.exit();
                }
            }
            let on_done = this.handle.get().closed(py);
            this.handle.get().cancel.finish();
            this.done_callback(py, on_done);
            drop(this);
        })
    }
}

/// The text of a panic payload (`panic!` gives a `&str` or a `String`).
fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic".to_string()
    }
}

/// Says which G was abandoned at shutdown, and why.
fn report_abandoned(py: Python<'_>, id: u64, name: &str) {
    let msg = format!(
        "gmprt: G {id} ({name}) kept awaiting while gmprt.run() closed it at shutdown \
         (it catches the error each await raises and awaits again); abandoned after \
         its grace, its finally blocks unfinished\n"
    );
    let _ = py
        .import("sys")
        .and_then(|s| s.getattr("stderr")?.call_method1("write", (msg,)));
}

/// What is wrong with a sync G's result that only an await could use: a
/// gmprt awaitable (`go(ch.send, v)`, `go(gmprt.sleep, 1)`) or an async
/// generator (`go(agen_fn)`). None for an ordinary result.
fn misuse(v: &Bound<'_, PyAny>) -> Option<String> {
    if let Ok(tok) = v.cast_exact::<Token>() {
        tok.get().forget();
        return Some(format!(
            "an unawaited gmprt awaitable ({})",
            tok.get().describe()
        ));
    }
    // SAFETY: a type check on a live object, like the coroutine check in
    // `drive`.
    let agen = unsafe { ffi::PyAsyncGen_CheckExact(v.as_ptr()) } != 0;
    agen.then(|| "an async generator (iterate it with async for)".to_string())
}
