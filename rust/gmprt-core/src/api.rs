//! api: the embedder's face of the scheduler. What a G runs ([`Body`], and
//! what its step ended in, [`Step`]), what the embedder runs around each M
//! ([`Hooks`]), the settings ([`Config`]), what one step sees of the runtime
//! ([`Cx`], [`Waker`]), and what the runtime reports ([`Stats`],
//! [`Stopped`]).
//!
//! These types sit beside `sched` rather than inside it so that the modules
//! below the scheduler can name them without importing it: `g` stores a G's
//! body as a `BoxBody` and calls none of it. `Cx` and `Waker` are the two
//! that reach into `Sched` (a wake readies its G through `Sched::ready`, a
//! netpoll batch goes through `Sched::inject`, `Cx::set_may_block` through
//! `Sched::set_may_block`); that coupling stays here, at the face, and
//! their fields are crate-visible only so that the scheduler can build a
//! `Cx` for each step and read a batch of `Waker`s.
//!
//! # Who calls what, on which thread
//!
//! - [`Body`]: owned by its G (`g` module docs). `step` runs on the one M
//!   that owns the G, never on two at once; `describe` only while the G is
//!   not running; `cancel` on the thread that stops the runtime, after
//!   every M has stopped.
//! - [`Cx`]: lives for one step, on that step's M.
//! - [`Waker`], [`GRef`]: any thread, any number of clones.
//! - [`Hooks`]: each method names its caller. `m_main` and `blocking` run
//!   on the M; `long_step` on sysmon and `deadlock` on an M under the
//!   scheduler lock, so they (and `fatal`, from any thread) must only
//!   signal.
//!
//! # Invariants
//!
//! - A `Waker` readies one park of one G: `gen` is the G's running
//!   generation in the step that made it, and `g::G::wake` compares the
//!   two, so a wake after the G moved on is `Stale` and, among clones, only
//!   the first wake of a park readies the G.
//! - A `Waker` holds an `Arc<Sched>`, and a G's memory is freed only when
//!   its `Sched` drops (`g` module docs): the G a waker points at outlives
//!   it.

use std::time::Duration;

use crate::g::{GPtr, WaitReason, Wake};
use crate::loom::sync::Arc;
use crate::netpoll::Ready;
use crate::sched::Sched;

/// Go's `sched.maxmcount` default.
pub const DEFAULT_MAX_THREADS: usize = 10_000;

/// How long an idle M beyond the `procs` the runtime keeps waits to be
/// handed a P before its thread exits (tokio's blocking pool keeps idle
/// threads 10 s; Go never frees an M). A burst of Gs blocked in calls
/// makes one M each; afterwards they would otherwise stay until the
/// runtime stops (389 threads after 1,000 sync Gs blocking 50 ms). The
/// cost weighed: a new M costs tens of microseconds (a thread and, in
/// Python, a thread state), so re-creating one every 10 s costs a few
/// parts per million of a core, while blocking calls that recur within
/// the keep-alive find their threads still there.
pub const DEFAULT_IDLE_KEEPALIVE: Duration = Duration::from_secs(10);

/// What a G runs, boxed: the G header stores it (`g`), `Sched::spawn` takes
/// it and `Sched::reap` hands it back. The core is generic over it: the
/// bindings supply a Python coroutine stepper; tests supply Rust closures.
pub(crate) type BoxBody = Box<dyn Body>;

/// What one step of a G ended in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Still runnable: requeue at the tail of the local queue (Go's `goyield`).
    Yield,
    /// Waiting: the body registered a [`Waker`] during the step (the driver
    /// registers, Go's `gopark` discipline); the M now commits the park.
    Park,
    /// Finished: the G is recycled.
    Done,
}

/// What a G runs. The bindings step a Python coroutine; tests use closures.
pub trait Body: Send + 'static {
    /// Runs the G until it yields, parks or finishes.
    fn step(&mut self, cx: &mut Cx<'_>) -> Step;

    /// The runtime stopped while this G was unfinished: release it (a Python
    /// coroutine is closed here, running its `finally` blocks). Called on the
    /// thread that stops the runtime, after every M has stopped.
    fn cancel(self: Box<Self>) {}

    /// What the G waits on while parked ("chan receive"), for deadlock
    /// reports. Called only while the G is not running.
    fn describe(&self) -> String {
        String::new()
    }

    /// Whether its steps run the embedder's code (Python): they run inside
    /// [`Hooks::attached`]. A Rust-native body that never touches the
    /// embedder says false, and its steps run detached, beside an M
    /// running embedded ones.
    fn embedded(&self) -> bool {
        true
    }

    /// Whether the next step may block in a system call (a plain function
    /// run as a G). sysmon then retakes the P as soon as work waits, as Go
    /// does for a syscall, instead of after `sysmon::FORCE_PREEMPT`.
    fn may_block(&self) -> bool {
        false
    }

    /// Whether the next step is known to block (a call the embedder was
    /// told will wait in C: Go's `entersyscallblock`). Its M hands the P
    /// off before the step runs, instead of leaving it to sysmon, which
    /// may be in its 10 ms back-off and only retakes once work waits
    /// (work that, with one P, nobody may be polling the netpoller for).
    fn blocks(&self) -> bool {
        false
    }

    /// The body as `Any`, so that the embedder can look at its own type in
    /// a goroutine dump ([`Sched::for_each_g`]). Called while the G is held
    /// for the dump (`g` module docs, "Scanning"), on the dumping thread:
    /// only look; do not block.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
}

/// Per-M hooks supplied by the embedder (the Python binding gives each M a
/// thread state for its whole life and holds the GIL only while it steps
/// Python Gs: `detached`, `attached`).
pub trait Hooks: Send + Sync + 'static {
    /// Runs an M's whole life; must call `run` exactly once.
    fn m_main(&self, run: &mut dyn FnMut()) {
        run()
    }

    /// Runs the M's scheduling loop, inside `m_main`: everything an M does
    /// but step embedded Gs ([`Body::embedded`]) — finding work, its
    /// waits, steps of Rust-native Gs — runs in here, so the embedder can
    /// release what `m_main` holds (Python: the GIL) for all of it.
    fn detached(&self, run: &mut dyn FnMut()) {
        run()
    }

    /// Wraps a wait an M makes inside a step: a G back from a blocking call
    /// waiting for a P (`exitsyscall`). Waits between steps run inside
    /// `detached` already.
    fn blocking(&self, wait: &mut dyn FnMut()) {
        wait()
    }

    /// Runs steps of embedded Gs, inside `detached`: take back what
    /// `detached` released. The M keeps it for the next G it finds at
    /// once, if that one is embedded too (module docs of `sched::worker`,
    /// "Attached only to step").
    fn attached(&self, steps: &mut dyn FnMut()) {
        steps()
    }

    /// sysmon saw one step of G `g`, on the OS thread `thread`, last for
    /// `held` while that thread ran for `ran` of it (its CPU time, at least
    /// `sysmon::LONG_STEP`; once per step). A step whose thread only waited
    /// (for the GIL, a CPU, or in a blocking call) is not reported: see
    /// "Long steps" in `sysmon`. Called on the sysmon thread: signal only,
    /// do not block or call into Python.
    fn long_step(&self, g: u64, thread: u64, held: Duration, ran: Duration) {
        let _ = (g, thread, held, ran);
    }

    /// The runtime cannot go on (the thread limit was hit). Any thread;
    /// signal only.
    fn fatal(&self, msg: String) {
        eprintln!("gmprt: fatal: {msg}");
    }

    /// Every M went idle with Gs still parked and nothing that could wake
    /// them: call [`Sched::confirm_deadlock`] (off this thread) to be sure.
    /// Called on an M, under the scheduler lock: signal only.
    fn deadlock(&self) {}
}

/// Hooks that do nothing: Rust-native Gs.
pub struct NoHooks;
impl Hooks for NoHooks {}

/// Scheduler settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// GOMAXPROCS: how many Ps.
    pub procs: usize,
    /// Cap on OS threads (Ms), Go's `debug.SetMaxThreads`.
    pub max_threads: usize,
    /// How long an idle M waits for work before it exits, while more Ms
    /// than `procs` exist ([`DEFAULT_IDLE_KEEPALIVE`]; `sched/idle.rs`,
    /// "Retiring idle Ms").
    pub idle_keepalive: Duration,
    /// Go's `GODEBUG=schedtrace`: sysmon prints the schedtrace line to
    /// stderr this often (`sched/schedtrace.rs`). None: never.
    pub schedtrace: Option<Duration>,
    /// Go's `scheddetail=1`: each schedtrace line is followed by a line
    /// per P, M and G.
    pub scheddetail: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            procs: 1,
            max_threads: DEFAULT_MAX_THREADS,
            idle_keepalive: DEFAULT_IDLE_KEEPALIVE,
            schedtrace: None,
            scheddetail: false,
        }
    }
}

/// The step's view of the runtime.
pub struct Cx<'a> {
    pub(crate) sched: &'a Arc<Sched>,
    pub(crate) g: GPtr,
    /// The G's running generation for this step (`G::start_running`).
    pub(crate) gen: u64,
    /// Why the park this step ends in waits ([`Cx::set_wait_reason`]).
    pub(crate) reason: WaitReason,
}

impl Cx<'_> {
    /// The wake for the park this step is about to commit. Register it with
    /// whatever the G waits on, then return [`Step::Park`].
    pub fn waker(&self) -> Waker {
        Waker {
            sched: self.sched.clone(),
            g: self.g,
            gen: self.gen,
        }
    }

    /// A handle to this life of the running G, for cancelling it later
    /// from anywhere ([`GRef::interrupt`]).
    pub fn gref(&self) -> GRef {
        GRef::new(self.sched.clone(), self.g, self.g.id())
    }

    /// The running G's id.
    pub fn id(&self) -> u64 {
        self.g.id()
    }

    pub fn sched(&self) -> &Arc<Sched> {
        self.sched
    }

    /// Says why the park this step is about to commit waits, for dumps and
    /// schedtrace (`g` module docs, "Park info"). Unset: `Other`.
    pub fn set_wait_reason(&mut self, reason: WaitReason) {
        self.reason = reason;
    }

    /// Corrects [`Body::may_block`] for the rest of this step, once the
    /// body knows (a call turned out to return a coroutine).
    pub fn set_may_block(&self, may_block: bool) {
        self.sched.set_may_block(may_block);
    }
}

/// Readies one park of one G. Holding it keeps the scheduler's memory alive,
/// so a wake after the G moved on (or after the runtime stopped) is a no-op.
/// Clones wake the same park: the first wake readies the G and the others
/// are stale (a channel operation and its timeout timer).
#[derive(Clone)]
pub struct Waker {
    pub(crate) sched: Arc<Sched>,
    pub(crate) g: GPtr,
    /// The generation of the park this wakes (module docs, "Invariants").
    pub(crate) gen: u64,
}

impl Waker {
    /// Any thread. Returns true when this call readied the G (the first wake
    /// of its current park); false when the wake is stale.
    pub fn wake(&self) -> bool {
        match self.g.wake(self.gen) {
            Wake::Enqueue => {
                self.sched.ready(self.g, true);
                true
            }
            Wake::Notified => true,
            Wake::Stale => false,
        }
    }

    /// Whether a wake would still apply (the G has not moved past this park).
    pub fn is_current(&self) -> bool {
        self.g.generation() == self.gen
    }

    pub fn g_id(&self) -> u64 {
        self.g.id()
    }
}

impl std::fmt::Debug for Waker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waker")
            .field("g", &self.g)
            .field("gen", &self.gen)
            .finish()
    }
}

impl Ready for Waker {
    /// Go's `injectglist` without a P (a deregistration wakes its waiters
    /// from any thread): see [`Sched::inject`].
    fn ready_all(batch: Vec<Waker>) {
        let Some(sched) = batch.first().map(|w| w.sched.clone()) else {
            return;
        };
        sched.inject(batch, None, false);
    }
}

/// One life of one G, to interrupt it from any thread (a cancel): unlike a
/// [`Waker`], it is not tied to one park. Holds the scheduler's memory alive
/// like a `Waker`, so a `GRef` that outlives its G (or its runtime) is
/// harmless: the interrupt finds another life, or none, and does nothing.
#[derive(Clone)]
pub struct GRef {
    sched: Arc<Sched>,
    g: GPtr,
    id: u64,
}

impl GRef {
    pub(crate) fn new(sched: Arc<Sched>, g: GPtr, id: u64) -> GRef {
        GRef { sched, g, id }
    }

    /// Any thread: end the park the G is in, or make the park its running
    /// step is about to commit end at once (`g::G::interrupt`). Whatever the
    /// caller wrote before is visible to the G's next step. The G must then
    /// find out *why* it woke: the core only guarantees that it does.
    /// Returns whether the G was still alive.
    pub fn interrupt(&self) -> bool {
        match self.g.interrupt(self.id) {
            Wake::Enqueue => {
                self.sched.ready(self.g, true);
                true
            }
            Wake::Notified => true,
            Wake::Stale => false,
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }
}

impl std::fmt::Debug for GRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GRef").field("id", &self.id).finish()
    }
}

/// Spawning into a runtime that is stopping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the gmprt runtime is not running (it has stopped or is stopping)")
    }
}
impl std::error::Error for Stopped {}

/// A counters snapshot for `gmprt.stats()`.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub goroutines: usize,
    pub procs: usize,
    pub threads: usize,
    pub idle_threads: usize,
    pub idle_procs: usize,
    pub spinning: usize,
    pub global_runq: usize,
    pub local_runq: Vec<usize>,
    pub steals: u64,
    pub handoffs: u64,
    pub spawned: u64,
    pub netpoll_waiters: usize,
    pub timers: usize,
}
