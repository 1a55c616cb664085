//! Cancellation: cancel scopes, the cancel state of each task, and the one
//! check every park point makes (DESIGN §6).
//!
//! # Model
//!
//! A *task* is whatever runs Python and can wait: a G (coroutine or sync),
//! or a plain thread that uses gmprt. Each has a stack of [`Scope`]s, the
//! bottom one its *root*. A scope is cancelled once (its flag never clears)
//! — by `g.cancel()` (the root), a Group (its own scope), or its deadline
//! passing — and a task is *cancelled* while any scope on the walk from its
//! innermost scope outwards, up to the first shield, is: level-triggered,
//! like trio, so every park point raises [`Cancelled`] until the task leaves
//! the cancelled scope. The walk crosses tasks: the root of a Group's G has
//! the group's scope as its parent, so cancelling anything around the group
//! reaches its Gs. A G started by plain `go()` copies the deadline it was
//! started under (Go's context), not the link.
//!
//! # Waking a cancelled task ("the cancel handshake")
//!
//! The canceller stores the scope's flag, then sets `HINT` on every task
//! the scope reaches (its own, and through `linked` the tasks of scopes
//! nested in it) and *interrupts* each: a G through its core [`GRef`]
//! (gmprt-core `g`, "Interrupts": a parked G is readied, a running one's
//! park fails), a thread blocked in a `_blocking` call by unparking it. The
//! task clears `HINT` (an RMW) before it walks, so a cancel either sets it
//! after that swap (and its interrupt wakes the task again) or its flag is
//! seen by the walk. A task that finds itself cancelled sets `HINT` back:
//! level-triggered. Leaving a scope sets it too, since a shield, once left,
//! may uncover an older cancel.
//!
//! A G's `GRef` exists from its spawn on (gmprt-core `Sched::spawn_with`),
//! so a G cancelled before its first step is interrupted like any other:
//! the core orders the interrupt before the step (its `start_running`
//! RMW), and the step's check sees the cancel.
//!
//! # A G's task, made when first needed
//!
//! Most Gs are never cancelled and never enter a scope, so a G's task (two
//! allocations, ~300 bytes) is made only when something needs it: a
//! `cancel()`, a scope entered in the G, a `_blocking` call in a sync G
//! (which registers its thread), the shutdown, or a spawn that links the G
//! into a Group or gives it a deadline. Until then [`GCancel`] holds only
//! the `GRef`, and a park point's check is one load of its task slot and
//! one of the shutdown flag. Whoever makes the task (the G itself, or a
//! canceller on any thread) makes it through that slot's CAS, so there is
//! one; a canceller that makes it then cancels its root and interrupts the
//! G, whose next check finds the task (the core's interrupt orders the
//! slot's write before that check).
//!
//! # Shutdown
//!
//! When `main` returns, its M sets [`SHUTTING_DOWN`] and `run()` interrupts
//! every G: each G's root counts as cancelled *once* (`Scope::shut_down`),
//! so a `finally` block can still wait for its cleanup within the grace
//! `run()` gives (runtime.rs, "Shutdown"), and a G not started yet never
//! starts. Every other cancel is level-triggered.
//!
//! # Cost
//!
//! A park of a G without a task looks at its task slot and one global
//! (shutdown); with a task, at one word (`flags`) and the same global: zero
//! means no cancel and no deadline, and nothing else is read. A ready
//! operation never looks. A G pays for cancellation at spawn only its
//! `GRef` (an `Arc` count) until it needs a task.
//!
//! # Ownership
//!
//! `Task::top` is changed only by the task itself (scope enter/exit, on its
//! own thread or in its own G's steps); cancellers reach a task only
//! through a scope's `wake`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, Ordering::*};
use std::sync::{Arc, Mutex, Weak};
use std::thread::Thread;
use std::time::{Duration, Instant};

use gmprt_core::GRef;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use crate::errors::{Cancelled, Timeout};
use crate::lock::lock;
use crate::time::ParkedTimer;
use crate::token::with_current_cancel;

/// `Wake::flags`: some scope this task is in may have been cancelled.
const HINT: u8 = 1;
/// The task's innermost scope has a deadline somewhere on its walk.
const DEADLINE: u8 = 2;

/// Set while `run()` cancels every G because `main` returned: every G's root
/// scope counts as cancelled, once. Written by the M that finishes `main`
/// (and again by `run()`), before `run()` interrupts every G
/// (`Sched::interrupt_all`); read by the walk.
static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);

/// How a task is woken when a scope it is in is cancelled.
pub(crate) struct Wake {
    flags: AtomicU8,
    /// A G's core handle; None for a thread.
    gref: Option<GRef>,
    /// The thread while it blocks in a `_blocking` call.
    thread: Mutex<Option<Thread>>,
    /// Whether this task is a G (shutdown cancels those, not threads).
    is_g: bool,
}

impl Wake {
    fn new(gref: Option<GRef>) -> Wake {
        Wake {
            flags: AtomicU8::new(0),
            is_g: gref.is_some(),
            gref,
            thread: Mutex::new(None),
        }
    }

    /// Canceller side of the cancel handshake (module docs).
    fn interrupt(&self) {
        // Release: publishes the scope flag stored before to the task's
        // `check_slow` RMW (Acquire).
        self.flags.fetch_or(HINT, Release);
        if let Some(g) = &self.gref {
            g.interrupt();
        }
        if let Some(t) = lock(&self.thread).as_ref() {
            t.unpark();
        }
    }
}

/// What kind of scope, for messages and for what leaving it raises.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    /// A task's bottom scope (`g.cancel()`, shutdown).
    Root,
    /// `gmprt.timeout()`: expiry raises `gmprt.Timeout` at the scope.
    Timeout,
    /// `gmprt.move_on_after()`: expiry ends the block quietly.
    MoveOn,
    /// `gmprt.shield()`.
    Shield,
    /// A `gmprt.Group`'s own scope.
    Group,
}

/// One cancel scope (module docs).
pub(crate) struct Scope {
    kind: Kind,
    /// Set once, after `msg` (Release; the walk's Acquire load pairs).
    cancelled: AtomicBool,
    /// Set before `cancelled` when the deadline is what cancelled it.
    expired: AtomicBool,
    /// A G's root: the shutdown's `Cancelled` was raised in it (once; see
    /// `shut_down`).
    shutdown_delivered: AtomicBool,
    msg: Mutex<Option<String>>,
    deadline: Option<Instant>,
    /// The earliest deadline on the walk from here outwards (computed once:
    /// the scopes outside never change).
    eff_deadline: Option<Instant>,
    parent: Option<Arc<Scope>>,
    /// The task this scope is on (weak: the task holds its scopes; a
    /// cancel that finds the task gone has nobody to wake).
    task: Weak<Task>,
    /// That task is a G (shutdown cancels those, not threads).
    is_g: bool,
    /// Scopes whose parent is this one (same task or another), by address:
    /// a cancel reaches their tasks through here.
    linked: Mutex<HashMap<usize, Weak<Scope>>>,
}

impl Scope {
    fn new(
        kind: Kind,
        parent: Option<Arc<Scope>>,
        deadline: Option<Instant>,
        task: Weak<Task>,
        is_g: bool,
    ) -> Arc<Scope> {
        let outer = match (&parent, kind == Kind::Shield) {
            (Some(p), false) => p.eff_deadline,
            _ => None,
        };
        let eff_deadline = match (deadline, outer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let s = Arc::new(Scope {
            kind,
            cancelled: AtomicBool::new(false),
            expired: AtomicBool::new(false),
            shutdown_delivered: AtomicBool::new(false),
            msg: Mutex::new(None),
            deadline,
            eff_deadline,
            parent,
            task,
            is_g,
            linked: Mutex::new(HashMap::new()),
        });
        if let Some(p) = &s.parent {
            lock(&p.linked).insert(Arc::as_ptr(&s) as usize, Arc::downgrade(&s));
        }
        s
    }

    /// Leaves the scope tree (the scope was exited, or its task finished).
    fn detach(self: &Arc<Self>) {
        if let Some(p) = &self.parent {
            lock(&p.linked).remove(&(Arc::as_ptr(self) as usize));
        }
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Acquire)
    }

    /// Cancels the scope and wakes every task it reaches. False if it was
    /// already cancelled.
    pub(crate) fn cancel(&self, msg: String) -> bool {
        {
            let mut m = lock(&self.msg);
            if self.cancelled.load(Acquire) {
                return false;
            }
            *m = Some(msg);
            // Release: pairs with the walk's Acquire load (and `msg`).
            self.cancelled.store(true, Release);
        }
        self.wake_all();
        true
    }

    /// The deadline passed: cancel, remembering why.
    fn expire(&self) {
        self.expired.store(true, Release);
        self.cancel(match self.kind {
            Kind::Timeout => "the deadline of gmprt.timeout() passed".into(),
            Kind::MoveOn => "the deadline of gmprt.move_on_after() passed".into(),
            _ => "the deadline this G inherited passed (a gmprt.timeout() or \
                  move_on_after() around the go() that started it)"
                .into(),
        });
    }

    /// Interrupts this scope's task and, recursively, the tasks of scopes
    /// nested in it (a shield stops the descent: nothing under it can be
    /// cancelled by this scope).
    fn wake_all(&self) {
        if let Some(t) = self.task.upgrade() {
            t.wake.interrupt();
        }
        let linked: Vec<Arc<Scope>> = lock(&self.linked)
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        for s in linked {
            if s.kind != Kind::Shield {
                s.wake_all();
            }
        }
    }

    fn message(&self) -> String {
        lock(&self.msg)
            .clone()
            .unwrap_or_else(|| "cancelled".to_string())
    }

    /// The exception a park point inside this cancelled scope raises.
    pub(crate) fn exception(&self) -> PyErr {
        if !self.is_cancelled() && self.kind == Kind::Root {
            return Cancelled::new_err(
                "gmprt.run()'s main returned: the Gs left are cancelled (their finally \
                 blocks may still wait for a 1 s grace)",
            );
        }
        Cancelled::new_err(self.message())
    }

    /// Whether `run()`'s shutdown cancels this scope (a G's root) now. Once
    /// per G, unlike every other cancel: asyncio's rule, so a `finally`
    /// block can still wait for its cleanup (the grace bounds it), and a G
    /// that catches the `Cancelled` and waits again does not spin inside
    /// one step, where nothing could stop it.
    fn shut_down(&self) -> bool {
        self.kind == Kind::Root
            && self.is_g
            && SHUTTING_DOWN.load(Acquire)
            // Relaxed: only the root's own task reads or writes it.
            && !self.shutdown_delivered.swap(true, Relaxed)
    }
}

/// A task (module docs): its scopes and how it is woken.
pub(crate) struct Task {
    wake: Wake,
    root: Arc<Scope>,
    /// The innermost scope; the task's own (module docs, "Ownership").
    top: Mutex<Arc<Scope>>,
    /// A G's deadline timer, armed by the G at a park while it has a
    /// deadline (one per park, whatever the number of scopes): it wakes
    /// the G to find the deadline passed. Only the G touches it.
    pub(crate) deadline_timer: ParkedTimer,
}

impl Task {
    /// One allocation for the task and its wake, one for its root scope.
    fn with_root(
        parent: Option<Arc<Scope>>,
        deadline: Option<Instant>,
        gref: Option<GRef>,
    ) -> Arc<Task> {
        Arc::new_cyclic(|me| {
            let wake = Wake::new(gref);
            let root = Scope::new(Kind::Root, parent, deadline, me.clone(), wake.is_g);
            if root.eff_deadline.is_some() {
                wake.flags.fetch_or(DEADLINE, Relaxed);
            }
            Task {
                wake,
                top: Mutex::new(root.clone()),
                root,
                deadline_timer: ParkedTimer::default(),
            }
        })
    }

    /// A G's task, started inside `parent` (a Group's scope: linked) or with
    /// a deadline copied from where `go()` was called.
    fn new_g(gref: GRef, parent: Option<Arc<Scope>>, deadline: Option<Instant>) -> Arc<Task> {
        let linked = parent.is_some();
        let task = Task::with_root(parent, deadline, Some(gref));
        if linked {
            // A scope it is linked into may have been cancelled already (a
            // Group that failed): no cancel will set `HINT` for it, so the
            // first step's check must walk (it never runs if so). A cancel
            // from now on finds the new root through `linked`.
            task.wake.flags.fetch_or(HINT, Relaxed);
        }
        task
    }

    fn new_thread() -> Arc<Task> {
        Task::with_root(None, None, None)
    }

    /// The park-point check: the scope that cancels this task now, if any.
    /// One load when nothing is cancelled and no deadline is set.
    ///
    /// Relaxed is enough for both loads: a cancel that this load misses is
    /// not lost, because the canceller's interrupt either fails the park
    /// this check precedes or readies the parked G, and the step after
    /// that acquires the flags through the G state word's RMW chain
    /// (gmprt-core `g`, "Interrupts"). `SHUTTING_DOWN` is followed by
    /// `interrupt_all` for the same reason.
    #[inline]
    pub(crate) fn check(&self) -> Option<Arc<Scope>> {
        let f = self.wake.flags.load(Relaxed);
        if f & (HINT | DEADLINE) == 0 && !SHUTTING_DOWN.load(Relaxed) {
            return None;
        }
        self.check_slow()
    }

    #[cold]
    fn check_slow(&self) -> Option<Arc<Scope>> {
        // AcqRel: Acquire pairs with the canceller's `HINT` RMW, so the walk
        // sees its flag; clearing first means a later cancel sets it anew.
        let f = self.wake.flags.fetch_and(!HINT, AcqRel);
        let now = (f & DEADLINE != 0).then(Instant::now);
        let mut s = lock(&self.top).clone();
        let found = loop {
            if s.is_cancelled() || s.shut_down() {
                break Some(s);
            }
            if let (Some(now), Some(d)) = (now, s.deadline) {
                if now >= d {
                    s.expire();
                    break Some(s);
                }
            }
            if s.kind == Kind::Shield {
                break None;
            }
            match &s.parent {
                Some(p) => s = p.clone(),
                None => break None,
            }
        };
        if found.is_some() {
            // Level-triggered: the next park point raises again.
            self.wake.flags.fetch_or(HINT, Relaxed);
        }
        found
    }

    /// The cancel `check` returned was not raised after all (the wait
    /// completed first): it lands at the next park point instead.
    pub(crate) fn postpone(&self, scope: &Scope) {
        scope.shutdown_delivered.store(false, Relaxed);
        self.wake.flags.fetch_or(HINT, Relaxed);
    }

    /// The earliest deadline this task's parks must wake up for.
    #[inline]
    pub(crate) fn deadline(&self) -> Option<Instant> {
        if self.wake.flags.load(Relaxed) & DEADLINE == 0 {
            return None;
        }
        lock(&self.top).eff_deadline
    }

    fn push(self: &Arc<Self>, kind: Kind, deadline: Option<Instant>) -> Arc<Scope> {
        let mut top = lock(&self.top);
        let s = Scope::new(
            kind,
            Some(top.clone()),
            deadline,
            Arc::downgrade(self),
            self.wake.is_g,
        );
        *top = s.clone();
        self.set_deadline_flag(s.eff_deadline.is_some());
        s
    }

    fn pop(&self, s: &Arc<Scope>) -> PyResult<()> {
        let mut top = lock(&self.top);
        if !Arc::ptr_eq(&top, s) {
            return Err(PyRuntimeError::new_err(
                "gmprt cancel scopes must be exited in the reverse order they were entered, \
                 in the G (or thread) that entered them",
            ));
        }
        let parent = s.parent.clone().expect("a pushed scope has a parent");
        self.set_deadline_flag(parent.eff_deadline.is_some());
        *top = parent;
        drop(top);
        s.detach();
        // Leaving a shield may uncover an older cancel (module docs).
        self.wake.flags.fetch_or(HINT, Relaxed);
        Ok(())
    }

    /// Relaxed, like the other writes the task makes to its own `flags`
    /// (`HINT` set back by the task, `DEADLINE`): only the task reads them
    /// back, on its own thread or in its own G's later steps (ordered by
    /// the G's state word); cancellers only ever set `HINT`, with an RMW.
    fn set_deadline_flag(&self, on: bool) {
        if on {
            self.wake.flags.fetch_or(DEADLINE, Relaxed);
        } else {
            self.wake.flags.fetch_and(!DEADLINE, Relaxed);
        }
    }

    /// The task finished: its root leaves the tree of the scope it was
    /// started in.
    pub(crate) fn finish(&self) {
        self.root.detach();
    }

    /// The innermost scope (for a G started inside it).
    pub(crate) fn top(&self) -> Arc<Scope> {
        lock(&self.top).clone()
    }

    /// Registers the calling thread to be unparked by a cancel while it
    /// blocks, until the guard drops. `what` says what a sync G waits on,
    /// for a deadlock report.
    pub(crate) fn blocking(self: &Arc<Self>, what: &str) -> Blocked {
        *lock(&self.wake.thread) = Some(std::thread::current());
        if self.wake.is_g {
            let line = match crate::token::current_g() {
                Some(id) => format!("G {id} [{what}, in a sync G]"),
                None => format!("a sync G [{what}]"),
            };
            BLOCKED_GS.with_registry(|r| {
                r.insert(Arc::as_ptr(self) as usize, (Arc::downgrade(self), line));
            });
        }
        Blocked(self.clone())
    }
}

/// A task blocked in a `_blocking` call (see [`Task::blocking`]).
pub(crate) struct Blocked(Arc<Task>);

impl Drop for Blocked {
    fn drop(&mut self) {
        *lock(&self.0.wake.thread) = None;
        if self.0.wake.is_g {
            BLOCKED_GS.with_registry(|r| {
                r.remove(&(Arc::as_ptr(&self.0) as usize));
            });
        }
    }
}

/// A G's cancel state: its core handle, and its task once made (module
/// docs, "A G's task, made when first needed"). Lives in the G's handle,
/// so its size counts per G: the task slot is one word ([`TaskSlot`]).
pub(crate) struct GCancel {
    gref: GRef,
    task: TaskSlot,
}

/// A `OnceLock<Arc<Task>>` in one word (the `OnceLock` is two): a pointer
/// from `Arc::into_raw`, null until set, set once by a CAS and freed on
/// drop. Whoever loses the race to make the task drops its own.
struct TaskSlot(AtomicPtr<Task>);

impl TaskSlot {
    fn new() -> TaskSlot {
        TaskSlot(AtomicPtr::new(std::ptr::null_mut()))
    }

    /// The task, if made. Acquire: pairs with the Release of the CAS in
    /// `get_or_init`, so the task's fields are seen as initialised.
    fn get(&self) -> Option<&Task> {
        let p = self.0.load(Acquire);
        // SAFETY: non-null `p` came from `Arc::into_raw` in `get_or_init`;
        // the slot holds that strong count until it drops, and `&self`
        // outlives the borrow.
        (!p.is_null()).then(|| unsafe { &*p })
    }

    fn get_or_init(&self, make: impl FnOnce() -> Arc<Task>) -> &Task {
        if let Some(t) = self.get() {
            return t;
        }
        let fresh = Arc::into_raw(make()).cast_mut();
        // AcqRel: Release publishes our task to later `get`s; Acquire (on
        // failure) sees the one that won.
        match self
            .0
            .compare_exchange(std::ptr::null_mut(), fresh, AcqRel, Acquire)
        {
            // SAFETY: we just stored `fresh`, a live `Arc::into_raw`
            // pointer the slot now owns.
            Ok(_) => unsafe { &*fresh },
            Err(won) => {
                // SAFETY: `fresh` was never shared: take its count back.
                drop(unsafe { Arc::from_raw(fresh) });
                // SAFETY: `won` is the slot's own `Arc::into_raw` pointer.
                unsafe { &*won }
            }
        }
    }

    /// A new strong reference to the task, made now if need be.
    fn arc(&self, make: impl FnOnce() -> Arc<Task>) -> Arc<Task> {
        let t: *const Task = self.get_or_init(make);
        // SAFETY: `t` came from `Arc::into_raw` and the slot still holds
        // its count (we borrow the slot), so adding one and wrapping it is
        // a new owned `Arc`.
        unsafe {
            Arc::increment_strong_count(t);
            Arc::from_raw(t)
        }
    }
}

// The slot's raw pointer hides `Task` from the auto traits: the handle
// that holds it is shared between threads, so the task must be too.
const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<Task>();
};

impl Drop for TaskSlot {
    fn drop(&mut self) {
        let p = *self.0.get_mut();
        if !p.is_null() {
            // SAFETY: the slot owns one strong count of `p` (`get_or_init`).
            drop(unsafe { Arc::from_raw(p) });
        }
    }
}

impl GCancel {
    /// The task is made now if the G starts inside `parent` (a Group's
    /// scope) or with a deadline; otherwise when first needed.
    pub(crate) fn new(
        gref: GRef,
        parent: Option<Arc<Scope>>,
        deadline: Option<Instant>,
    ) -> GCancel {
        let task = TaskSlot::new();
        if parent.is_some() || deadline.is_some() {
            task.get_or_init(|| Task::new_g(gref.clone(), parent, deadline));
        }
        GCancel { gref, task }
    }

    /// The G's id.
    pub(crate) fn id(&self) -> u64 {
        self.gref.id()
    }

    /// The G's task, made now if it has none.
    pub(crate) fn task(&self) -> &Task {
        self.task
            .get_or_init(|| Task::new_g(self.gref.clone(), None, None))
    }

    /// [`task`](Self::task), as a strong reference.
    pub(crate) fn task_arc(&self) -> Arc<Task> {
        self.task.arc(|| Task::new_g(self.gref.clone(), None, None))
    }

    /// The park-point check ([`Task::check`]). Without a task only the
    /// shutdown can cancel the G, and it makes the task to count its once.
    #[inline]
    pub(crate) fn check(&self) -> Option<Arc<Scope>> {
        match self.task.get() {
            Some(t) => t.check(),
            None if SHUTTING_DOWN.load(Relaxed) => self.task().check(),
            None => None,
        }
    }

    /// [`Task::deadline`]: a G without a task has none.
    #[inline]
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.task.get().and_then(|t| t.deadline())
    }

    /// [`Task::postpone`]. `check` returned a scope, so the task exists.
    pub(crate) fn postpone(&self, scope: &Scope) {
        self.task().postpone(scope);
    }

    /// `g.cancel()`: cancels the G's root scope and wakes the G.
    pub(crate) fn cancel(&self, msg: String) {
        self.task().root.cancel(msg);
    }

    /// The G finished ([`Task::finish`]).
    pub(crate) fn finish(&self) {
        if let Some(t) = self.task.get() {
            t.finish();
        }
    }
}

/// Sync Gs blocked in a `_blocking` call right now: the shutdown cancel
/// unparks them (a parked coroutine G is reached by `interrupt_all`). A
/// leaked map behind a pointer, so that a fork child can start a fresh one
/// instead of locking a mutex a vanished thread may hold.
/// Blocked sync Gs by task address: the task, and a line for a deadlock
/// report.
type BlockedGs = HashMap<usize, (Weak<Task>, String)>;

struct Registry(AtomicPtr<Mutex<BlockedGs>>);

impl Registry {
    fn with_registry<R>(&self, f: impl FnOnce(&mut BlockedGs) -> R) -> R {
        let mut p = self.0.load(Acquire);
        if p.is_null() {
            let fresh = Box::into_raw(Box::default());
            // AcqRel: publish our map, or take the one that won.
            p = match self
                .0
                .compare_exchange(std::ptr::null_mut(), fresh, AcqRel, Acquire)
            {
                Ok(_) => fresh,
                Err(won) => {
                    // SAFETY: `fresh` was never shared.
                    drop(unsafe { Box::from_raw(fresh) });
                    won
                }
            };
        }
        // SAFETY: maps are leaked, never freed: `p` stays valid.
        f(&mut lock(unsafe { &*p }))
    }

    /// Fork child: start afresh (the old map is leaked, as all of them are).
    fn reset(&self) {
        self.0.store(std::ptr::null_mut(), Release);
    }
}

static BLOCKED_GS: Registry = Registry(AtomicPtr::new(std::ptr::null_mut()));

/// `run()`, when `main` returned with Gs left: every G's root counts as
/// cancelled from now on. The caller interrupts every G next.
/// Whether `main` has returned and the runtime is shutting down (Gs of
/// the binding's own that hold no Python, `aio_poll`'s watchers, end then).
pub(crate) fn shutting_down() -> bool {
    SHUTTING_DOWN.load(Acquire)
}

pub(crate) fn begin_shutdown() {
    SHUTTING_DOWN.store(true, Release);
    let blocked: Vec<Arc<Task>> =
        BLOCKED_GS.with_registry(|r| r.values().filter_map(|(t, _)| t.upgrade()).collect());
    for t in blocked {
        t.wake.interrupt();
    }
}

/// What each sync G blocked in a `_blocking` call waits on (a deadlock
/// report: their Ms hold their bodies, so `Sched::reap` cannot list them).
pub(crate) fn blocked_sync_gs() -> Vec<String> {
    let mut lines: Vec<String> =
        BLOCKED_GS.with_registry(|r| r.values().map(|(_, l)| l.clone()).collect());
    lines.sort();
    lines
}

/// `run()` returned: new runtimes start with nothing cancelled.
pub(crate) fn end_shutdown() {
    SHUTTING_DOWN.store(false, Release);
}

thread_local! {
    /// The thread's own task, made on first use.
    static THREAD_TASK: std::cell::RefCell<Option<Arc<Task>>> = const { std::cell::RefCell::new(None) };
}

/// The calling thread's task: the G it steps (made now if it has none),
/// or its own.
pub(crate) fn current() -> Arc<Task> {
    if let Some(t) = with_current_cancel(GCancel::task_arc) {
        return t;
    }
    THREAD_TASK.with(|c| c.borrow_mut().get_or_insert_with(Task::new_thread).clone())
}

/// The calling G's or thread's effective deadline (None: no limit), which
/// a G it starts with `go()` inherits; makes no task.
pub(crate) fn current_deadline() -> Option<Instant> {
    if let Some(d) = with_current_cancel(GCancel::deadline) {
        return d;
    }
    THREAD_TASK.with(|c| c.borrow().as_ref().and_then(|t| t.deadline()))
}

/// A scope is exited by the task that entered it, on its own thread or in
/// its own G (`Task::top` is the task's own: module docs, "Ownership").
fn check_owner(task: &Arc<Task>) -> PyResult<()> {
    if Arc::ptr_eq(task, &current()) {
        return Ok(());
    }
    Err(PyRuntimeError::new_err(
        "gmprt cancel scopes must be exited in the reverse order they were entered, \
         in the G (or thread) that entered them",
    ))
}

/// After `fork()`, in the child: no task of the parent's threads exists.
pub(crate) fn after_fork_child() {
    THREAD_TASK.with(|c| *c.borrow_mut() = None);
    SHUTTING_DOWN.store(false, Relaxed);
    BLOCKED_GS.reset();
}

/// A number of seconds for a timeout or a scope: `math.inf` (or anything
/// too long for a deadline) is no limit. The one parser every gmprt
/// timeout goes through; `what` names the argument in errors.
pub(crate) fn seconds(s: f64, what: &str) -> PyResult<Option<Duration>> {
    if s.is_nan() || s < 0.0 {
        return Err(PyValueError::new_err(format!(
            "{what} must be a number of seconds >= 0 (math.inf or None for no limit), got {s}"
        )));
    }
    // Infinite, or too long for a Duration or an Instant: no limit.
    Ok(Duration::try_from_secs_f64(s)
        .ok()
        .filter(|d| Instant::now().checked_add(*d).is_some()))
}

/// The instant `d` from now (None: no limit).
pub(crate) fn deadline_in(d: Option<Duration>) -> Option<Instant> {
    d.and_then(|d| Instant::now().checked_add(d))
}

/// A cancel scope as a context manager: `gmprt.timeout()`,
/// `gmprt.move_on_after()`, `gmprt.shield()`.
///
/// ``with`` it in a coroutine G, a sync G or a plain thread. Inside, every
/// gmprt wait (``await``, or a ``_blocking`` call) is bounded by the
/// scope's deadline, and Gs started inside inherit it. When the deadline
/// passes, the wait in progress (or the next one) raises
/// :class:`gmprt.Cancelled`, which the scope itself catches: a ``timeout``
/// then raises :class:`gmprt.Timeout`, a ``move_on_after`` ends the block
/// quietly with ``expired`` set. ``cancel()`` cancels the scope by hand
/// (the block ends quietly).
#[pyclass(frozen, module = "gmprt", name = "CancelScope")]
pub struct CancelScope {
    kind: Kind,
    /// Fixed when the scope object is made (trio's rule).
    deadline: Option<Instant>,
    seconds: Option<f64>,
    entered: Mutex<Option<(Arc<Task>, Arc<Scope>)>>,
    /// The block was cut short by the deadline.
    caught_expiry: AtomicBool,
    /// `cancel()` before `__enter__`.
    early_cancel: AtomicBool,
}

impl CancelScope {
    /// The scope of an entered `CancelScope` (a Group's, for `_go_linked`).
    pub(crate) fn entered_scope(&self) -> PyResult<Arc<Scope>> {
        match &*lock(&self.entered) {
            Some((_, s)) => Ok(s.clone()),
            None => Err(PyRuntimeError::new_err(
                "Group.go() outside the group's block: use `async with gmprt.Group() as grp:` \
                 (or `with` in synchronous code) and call grp.go() inside it",
            )),
        }
    }

    fn bare(kind: Kind) -> CancelScope {
        CancelScope {
            kind,
            deadline: None,
            seconds: None,
            entered: Mutex::new(None),
            caught_expiry: AtomicBool::new(false),
            early_cancel: AtomicBool::new(false),
        }
    }

    fn make(kind: Kind, seconds: Option<f64>) -> PyResult<CancelScope> {
        let what = if kind == Kind::Timeout {
            "gmprt.timeout()'s seconds"
        } else {
            "gmprt.move_on_after()'s seconds"
        };
        let deadline = match seconds {
            Some(s) => deadline_in(self::seconds(s, what)?),
            None => None,
        };
        Ok(CancelScope {
            kind,
            deadline,
            seconds,
            entered: Mutex::new(None),
            caught_expiry: AtomicBool::new(false),
            early_cancel: AtomicBool::new(false),
        })
    }
}

#[pymethods]
impl CancelScope {
    fn __enter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        let me = slf.get();
        let mut entered = lock(&me.entered);
        if entered.is_some() {
            return Err(PyRuntimeError::new_err(
                "this gmprt cancel scope was already entered; make a new one per with block",
            ));
        }
        let task = current();
        let s = task.push(me.kind, me.deadline);
        if me.early_cancel.load(Acquire) {
            s.cancel("the scope was cancelled by its cancel() method".into());
        }
        *entered = Some((task, s));
        drop(entered);
        Ok(slf)
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _ty: Option<&Bound<'_, PyAny>>,
        exc: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let Some((task, s)) = lock(&self.entered).clone() else {
            return Err(PyRuntimeError::new_err(
                "exiting a gmprt cancel scope never entered",
            ));
        };
        check_owner(&task)?;
        task.pop(&s)?;
        let cancelled_here =
            exc.is_some_and(|e| e.is_instance_of::<Cancelled>()) && s.is_cancelled();
        if !cancelled_here {
            return Ok(false);
        }
        let expired = s.expired.load(Acquire);
        self.caught_expiry.store(expired, Release);
        if expired && self.kind == Kind::Timeout {
            let secs = self.seconds.unwrap_or_default();
            let e = Timeout::new_err(format!(
                "the block under gmprt.timeout({secs}) did not finish in {secs} s"
            ));
            if let Some(cause) = exc {
                e.set_cause(py, Some(PyErr::from_value(cause.clone())));
            }
            return Err(e);
        }
        Ok(true)
    }

    /// Whether the block was cut short because the deadline passed.
    #[getter]
    fn expired(&self) -> bool {
        self.caught_expiry.load(Acquire)
    }

    /// Whether the scope has been cancelled (by its deadline or by hand).
    #[getter]
    fn cancelled(&self) -> bool {
        match &*lock(&self.entered) {
            Some((_, s)) => s.is_cancelled(),
            None => self.early_cancel.load(Acquire),
        }
    }

    /// The scope's deadline on the :func:`time.monotonic` clock, or
    /// ``math.inf``.
    #[getter]
    fn deadline(&self, py: Python<'_>) -> PyResult<f64> {
        monotonic(py, self.deadline)
    }

    /// Cancels the scope: the block's current or next wait raises
    /// ``Cancelled``, which the scope catches (the block ends quietly).
    /// Works from any thread.
    fn cancel(&self) {
        match &*lock(&self.entered) {
            Some((_, s)) => {
                s.cancel("the scope was cancelled by its cancel() method".into());
            }
            None => self.early_cancel.store(true, Release),
        }
    }

    fn __repr__(&self) -> String {
        let what = match self.kind {
            Kind::Timeout => "timeout",
            Kind::MoveOn => "move_on_after",
            _ => "shield",
        };
        match self.seconds {
            Some(s) => format!("<gmprt.{what}({s})>"),
            None => format!("<gmprt.{what}()>"),
        }
    }

    /// A Group leaves its scope (no exception handling: the Group decides).
    /// Returns the `Cancelled` that a scope around the group raises now (it
    /// was cancelled, or its deadline passed, maybe while the group waited
    /// for its Gs), or None.
    fn _leave(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let Some((task, s)) = lock(&self.entered).clone() else {
            return Err(PyRuntimeError::new_err(
                "leaving a gmprt cancel scope never entered",
            ));
        };
        check_owner(&task)?;
        task.pop(&s)?;
        Ok(task.check().map(|outer| {
            crate::errors::made(py, outer.exception())
                .into_value(py)
                .into_any()
        }))
    }
}

/// `instant` on the :func:`time.monotonic` clock, or inf.
fn monotonic(py: Python<'_>, instant: Option<Instant>) -> PyResult<f64> {
    let Some(at) = instant else {
        return Ok(f64::INFINITY);
    };
    let mono: f64 = py.import("time")?.call_method0("monotonic")?.extract()?;
    let now = Instant::now();
    Ok(if at >= now {
        mono + (at - now).as_secs_f64()
    } else {
        mono - (now - at).as_secs_f64()
    })
}

/// Bound the block with a deadline ``seconds`` from now; when it passes,
/// raise :class:`gmprt.Timeout` from the scope.
///
/// ``with gmprt.timeout(1.0): await upstream()`` — in coroutine Gs, sync Gs
/// and threads. Nested scopes: the earliest deadline wins, and the
/// exception surfaces at the scope whose deadline passed. Gs started inside
/// (``go()``, a Group) inherit the deadline. ``math.inf`` or ``None``: no
/// limit.
///
/// Raises:
///     ValueError: ``seconds`` is negative or NaN.
#[pyfunction]
pub(crate) fn timeout(seconds: Option<f64>) -> PyResult<CancelScope> {
    CancelScope::make(Kind::Timeout, seconds)
}

/// Like :func:`gmprt.timeout`, but when the deadline passes the block just
/// ends (quietly) and the scope's ``expired`` is ``True``::
///
///     with gmprt.move_on_after(0.5) as scope:
///         v = await ch.recv()
///     if scope.expired:
///         v = default
#[pyfunction]
pub(crate) fn move_on_after(seconds: Option<f64>) -> PyResult<CancelScope> {
    CancelScope::make(Kind::MoveOn, seconds)
}

/// Protect the block from cancellation: inside it, cancels and deadlines
/// of the scopes around it (and ``g.cancel()``) are held back until the
/// block ends. For cleanup that must await::
///
///     finally:
///         with gmprt.shield():
///             await conn.sendall(b"bye")
#[pyfunction]
pub(crate) fn shield() -> CancelScope {
    CancelScope::bare(Kind::Shield)
}

/// The calling G's (or thread's) effective deadline, on the
/// :func:`time.monotonic` clock: the earliest of its scopes' deadlines and
/// the one it inherited when it was started; ``math.inf`` if none.
#[pyfunction]
pub(crate) fn deadline(py: Python<'_>) -> PyResult<f64> {
    monotonic(py, current_deadline())
}

/// A Group's own scope (entered by the Group, `_leave` to exit).
#[pyfunction]
pub(crate) fn _group_scope() -> CancelScope {
    CancelScope::bare(Kind::Group)
}

/// How a blocking wait ([`wait_until`]) ended.
pub(crate) enum Until {
    Done,
    TimedOut,
    Cancelled(Arc<Scope>),
}

/// The blocking side of every `_blocking` call and `g.join()`: parks the
/// calling thread until `done()`, `deadline` (the call's own `timeout=`),
/// or a cancel of `task` (including its scopes' deadlines: the earlier
/// wins). Whoever completes the operation unparks the thread; so does a
/// cancel (`Task::blocking`). Runs detached (no GIL): nothing here is
/// Python.
pub(crate) fn wait_until(
    task: &Arc<Task>,
    what: &str,
    deadline: Option<Instant>,
    done: impl Fn() -> bool,
) -> Until {
    let _registered = task.blocking(what);
    loop {
        if done() {
            return Until::Done;
        }
        if let Some(s) = task.check() {
            return Until::Cancelled(s);
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return Until::TimedOut;
        }
        let wake_at = match (deadline, task.deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match wake_at {
            None => std::thread::park(),
            // Past a scope's deadline: the check above expires it next.
            Some(at) => std::thread::park_timeout(at.saturating_duration_since(now)),
        }
    }
}
