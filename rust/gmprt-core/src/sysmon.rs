//! sysmon: the thread that keeps one stuck G from stalling the runtime
//! (Go's `sysmon` and `retake`, proc.go).
//!
//! A Python coroutine cannot be preempted and a C call cannot be
//! interrupted, so a G whose step runs long (a blocking C call, a CPU-bound
//! loop) holds its P for as long as it likes. sysmon treats such a step the
//! way Go treats a syscall: after [`FORCE_PREEMPT`] with other work waiting
//! (after [`SYSCALL_RETAKE`] for a step that may block, a plain function),
//! it takes the P (it was lent to its slot at the start of the step, see
//! "Lending the P" in `sched/syscall.rs`) and hands it to another M. The
//! step's M finds the P gone when the step returns and goes idle (Go's
//! exitsyscall slow path).
//!
//! sysmon has no P, holds no lock while it sleeps, and never touches the
//! embedder's world (Python): what it reports goes through [`Hooks`], whose
//! sysmon-side methods must only signal.
//!
//! # Sampling
//!
//! Like Go's `sysmontick`, sysmon remembers each P's step count and when it
//! first saw it. A count unchanged for 10 ms with the P still lent means one
//! step has run at least that long. Steps themselves pay for no clock read.
//!
//! # Netpoll
//!
//! Go's first sysmon rule: if nobody has polled the netpoller for
//! [`NETPOLL_STALE`] while some G waits on it, poll without blocking and
//! inject what is ready into the global queue (starting Ms on idle Ps).
//! This keeps timers firing and I/O arriving when every M is inside a long
//! step (a blocking C call, a CPU hog): the injected Gs then make `retake`
//! hand the P to an M that runs them. The poll and the injection are plain
//! Rust (wakers and queues), so sysmon still never touches Python.
//!
//! # Long steps
//!
//! A coroutine step that runs past [`LONG_STEP`] is reported once
//! ([`Hooks::long_step`]), but only when the M's own thread ran it: its
//! CPU time (`cpuclock`) over the step must reach [`LONG_STEP`]. Wall time
//! alone blames the innocent: an M whose G only yields can sit inside a
//! step for 100 ms waiting for the GIL while a foreign Python thread holds
//! it in a C call, or for a CPU on a loaded machine. The clock is read
//! from sysmon, so steps pay nothing: first when a step is seen on a
//! second look (the base; shorter steps never cost a read), then on each
//! look once the step has lasted [`LONG_STEP`]. A step blocked in a C call
//! inside a coroutine (`time.sleep`) uses no CPU and is not reported
//! either: from outside it is indistinguishable from a wait for the GIL,
//! and sysmon still hands its P to another M when work waits. Where the
//! platform has no thread CPU clock, wall time is used, as before.
//!
//! One G per runtime may be *watched* ([`Sched::set_watched_g`]): an event
//! loop's G, whose step runs the loop's callbacks one after another. A
//! callback blocked in `time.sleep` stalls every task of the loop, and no
//! handoff helps (the tasks are not Gs), so its steps are judged by wall
//! time: reported once past [`LONG_STEP`], whatever the thread was doing
//! (a wait for the GIL stalls the loop just the same).
//!
//! # Pace
//!
//! 20 µs between looks, doubling after 50 idle looks up to 10 ms (Go's
//! numbers). While a P is lent and work waits behind it, the pace is capped
//! at 1 ms (50 µs for a step that may block), so the retake comes about
//! 10 ms after the step started rather than up to 20.
//!
//! # Schedtrace
//!
//! With `Config::schedtrace` set, sysmon prints Go's schedtrace line
//! (`sched/schedtrace.rs`) to fd 2 every interval, and never sleeps past
//! the next one (Go stops deep-sleeping while schedtrace is on). The line
//! is made from counters and state words alone, so sysmon still never
//! touches Python.
//!
//! [`Hooks`]: crate::Hooks

use std::time::{Duration, Instant};

use crate::loom::sync::atomic::Ordering::*;
use crate::loom::sync::Arc;
use crate::sched::schedtrace::{write_stderr, TraceDelta};
use crate::sched::{MSlot, Sched};

/// Go's `forcePreemptNS`: a step longer than this, with work waiting, loses
/// its P.
pub const FORCE_PREEMPT: Duration = Duration::from_millis(10);

/// Go's rule for a P in a syscall: retake it once seen in the same step on
/// two looks, if work waits. For steps that may block (`Body::may_block`).
pub const SYSCALL_RETAKE: Duration = Duration::from_micros(20);

/// A step whose thread has run this long (CPU time) is reported once
/// (asyncio's debug mode warns at 100 ms too); module docs, "Long steps".
pub const LONG_STEP: Duration = Duration::from_millis(100);

/// How long runnable work may wait for an M after a failed `newm` before
/// the runtime is declared stuck.
pub const STRANDED: Duration = Duration::from_millis(100);

/// Go's sysmon: poll the netpoller if nobody has for this long.
pub const NETPOLL_STALE: Duration = Duration::from_millis(10);

const MIN_DELAY: Duration = Duration::from_micros(20);
const MAX_DELAY: Duration = Duration::from_millis(10);
/// The pace while a step holds a P with work waiting behind it.
const BUSY_DELAY: Duration = Duration::from_millis(1);
/// The same, for a step that may block: a blocked P is retaken at once.
const SYSCALL_DELAY: Duration = Duration::from_micros(50);
/// Go: start doubling the sleep after 50 looks that found nothing to do.
const IDLE_LOOKS_BEFORE_BACKOFF: u32 = 50;

/// What sysmon last saw of one P or M: a step count and when it first saw
/// that count.
#[derive(Clone, Copy)]
struct Tick {
    steps: u64,
    since: Instant,
    reported: bool,
}

impl Tick {
    fn new(steps: u64, now: Instant) -> Tick {
        Tick {
            steps,
            since: now,
            reported: false,
        }
    }

    /// Records a sample; returns how long the count has stood still.
    fn sample(&mut self, steps: u64, now: Instant) -> Duration {
        if steps != self.steps {
            *self = Tick::new(steps, now);
        }
        now.saturating_duration_since(self.since)
    }
}

/// What sysmon last saw of one M: its step count and when first seen, and
/// its thread's CPU time at the second look at that step (module docs,
/// "Long steps").
struct MTick {
    slot: Arc<MSlot>,
    tick: Tick,
    cpu_base: Option<Duration>,
}

/// An M still inside a step at shutdown, and whether its thread is busy on
/// the CPU or blocked: for the report that its thread is left behind.
#[derive(Clone, Debug)]
pub struct StuckStep {
    /// The G of the step.
    pub g: u64,
    /// Its thread (`pthread_self`, Python's `threading.get_ident()`).
    pub thread: u64,
    /// CPU time the thread used over `window`; None where there is no
    /// thread CPU clock.
    pub cpu: Option<Duration>,
    /// How long it was watched.
    pub window: Duration,
}

impl StuckStep {
    /// Whether the thread ran (a Python loop, or C computing) rather than
    /// waited (blocked in a call) while watched; None if unknown. Running
    /// means using at least a tenth of the window: a blocked thread uses
    /// next to none, a running one most of it even on a loaded machine.
    pub fn running(&self) -> Option<bool> {
        self.cpu.map(|cpu| cpu * 10 >= self.window)
    }
}

impl Sched {
    /// The Ms of this runtime still inside a step (the stuck ones, after a
    /// `join` that timed out), watched for `window` to see whether each
    /// thread runs or waits. Sleeps `window` when there is any. Any thread.
    pub fn stuck_steps(&self, window: Duration) -> Vec<StuckStep> {
        let ms: Vec<(Arc<MSlot>, u64, Option<Duration>)> = crate::loom::lock(&self.allm)
            .iter()
            .filter_map(|m| {
                // Acquire: pairs with the Release in `MSlot::bump`.
                let steps = m.steps.load(Acquire);
                // Odd: inside a step.
                (steps % 2 == 1).then(|| (m.clone(), steps, m.cpu.and_then(|c| c.now())))
            })
            .collect();
        if ms.is_empty() {
            return Vec::new();
        }
        std::thread::sleep(window);
        ms.into_iter()
            // The same step still: one that ended meanwhile is not stuck.
            .filter(|(m, steps, _)| m.steps.load(Acquire) == *steps)
            .map(|(m, _, before)| StuckStep {
                g: m.g.load(Relaxed),
                thread: m.thread,
                cpu: before
                    .zip(m.cpu.and_then(|c| c.now()))
                    .map(|(b, a)| a.saturating_sub(b)),
                window,
            })
            .collect()
    }

    /// The sysmon thread's body. Exits when the runtime stops.
    pub(crate) fn sysmon(self: Arc<Self>) {
        let mut pticks = vec![Tick::new(0, Instant::now()); self.allp.len()];
        let mut mticks: Vec<MTick> = Vec::new();
        let mut stranded_since = None;
        let mut delay = MIN_DELAY;
        let mut idle_looks = 0u32;
        // Go's schedtrace: the next line's time, and what the last saw.
        let mut trace = self
            .schedtrace
            .map(|every| (Instant::now() + every, every, TraceDelta::default()));
        while self.sysmon_sleep(delay) {
            self.poll_if_stale();
            let now = Instant::now();
            let (retook, next_look) = self.retake(now, &mut pticks);
            self.report_long_steps(now, &mut mticks);
            self.check_thread_cap(now, &mut stranded_since);
            if retook {
                idle_looks = 0;
                delay = MIN_DELAY;
            } else {
                idle_looks += 1;
                if idle_looks > IDLE_LOOKS_BEFORE_BACKOFF {
                    delay = (delay * 2).min(MAX_DELAY);
                }
            }
            delay = delay.min(next_look);
            if let Some((next, every, prev)) = &mut trace {
                let now = Instant::now();
                if now >= *next {
                    write_stderr(&self.schedtrace(self.uptime(), prev, self.scheddetail));
                    *next += *every;
                    if *next <= now {
                        // Fell behind (a long line): skip, do not burst.
                        *next = now + *every;
                    }
                }
                // Go stops deep-sleeping while schedtrace is on.
                delay = delay.min(next.saturating_duration_since(now).max(MIN_DELAY));
            }
        }
    }

    /// The netpoll rule (module docs, "Netpoll"). Before `retake`, so the
    /// Gs it readies count as work waiting behind a stuck P this very look.
    fn poll_if_stale(self: &Arc<Self>) {
        let np = self.netpoll();
        if !np.pending() || np.since_last_poll().is_none_or(|d| d < NETPOLL_STALE) {
            return;
        }
        if let Some(mut polled) = np.poll(Some(Duration::ZERO)) {
            self.inject(polled.take(), None, false);
        }
    }

    /// Go's `retake`, for Ps whose M is in a step. Returns whether a P was
    /// retaken, and the longest sysmon may sleep before it must look again:
    /// a step with work waiting behind it is due for a retake soon.
    fn retake(self: &Arc<Self>, now: Instant, ticks: &mut [Tick]) -> (bool, Duration) {
        let mut retook = false;
        let mut next_look = MAX_DELAY;
        for (slot, tick) in self.allp.iter().zip(ticks.iter_mut()) {
            // Acquire: pairs with the Release store in `lend_p`.
            let held = tick.sample(slot.steps.load(Acquire), now);
            // Null: between steps, or borrowed for a moment inside one. This
            // is best-effort (Go's retake is too): we look again next tick.
            if slot.lent.load(Relaxed).is_null() {
                continue;
            }
            if slot.q.is_empty() && self.global_runq_len() == 0 {
                continue;
            }
            let (limit, pace) = if slot.may_block.load(Relaxed) {
                (SYSCALL_RETAKE, SYSCALL_DELAY)
            } else {
                (FORCE_PREEMPT, BUSY_DELAY)
            };
            next_look = next_look.min(pace);
            if held < limit {
                continue;
            }
            if let Some(p) = self.take_lent(slot) {
                self.handoffp(p);
                retook = true;
            }
        }
        (retook, next_look)
    }

    /// After `newm` failed (the thread cap, or the OS refused a thread): if
    /// work then stays stranded — queued, with an idle P and no M to run it
    /// — for [`STRANDED`], the runtime cannot go on. Go throws "thread
    /// exhaustion" at once; we first give Ms that were about to go idle the
    /// time to pick the work up.
    fn check_thread_cap(&self, now: Instant, since: &mut Option<Instant>) {
        let Some(why) = crate::loom::lock(&self.thread_cap_hit).clone() else {
            return;
        };
        if !self.work_stranded() {
            *since = None;
            return;
        }
        let first = *since.get_or_insert(now);
        if now.saturating_duration_since(first) >= STRANDED {
            *crate::loom::lock(&self.thread_cap_hit) = None;
            *since = None;
            self.hooks().fatal(format!(
                "{why}: Gs are runnable but every M is blocked (each G blocked in a call \
                 holds an OS thread; raise max_threads or block fewer Gs at once)"
            ));
        }
    }

    /// Reports, once per step, a step of a coroutine G whose thread has run
    /// it for [`LONG_STEP`] of CPU time (module docs, "Long steps"),
    /// whether or not its P was retaken meanwhile. Steps that may block
    /// (plain functions run as Gs) are expected to, and are not reported.
    fn report_long_steps(&self, now: Instant, mticks: &mut Vec<MTick>) {
        let allm = crate::loom::lock(&self.allm).clone();
        mticks.retain(|t| allm.iter().any(|a| Arc::ptr_eq(a, &t.slot)));
        for m in allm {
            let i = match mticks.iter().position(|t| Arc::ptr_eq(&t.slot, &m)) {
                Some(i) => i,
                None => {
                    mticks.push(MTick {
                        slot: m.clone(),
                        tick: Tick::new(u64::MAX, now),
                        cpu_base: None,
                    });
                    mticks.len() - 1
                }
            };
            let t = &mut mticks[i];
            // Acquire: pairs with the Release in `MSlot::bump`.
            let steps = m.steps.load(Acquire);
            let first_look = steps != t.tick.steps;
            let held = t.tick.sample(steps, now);
            if first_look {
                t.cpu_base = None;
            }
            let in_step = steps % 2 == 1;
            if !in_step || t.tick.reported || m.may_block.load(Relaxed) {
                continue;
            }
            let watched = self.watched_g.load(Relaxed);
            let ran = match m.cpu {
                // No CPU clock here: wall time, the best there is.
                None => held,
                // The watched G (an event loop's): a step that blocks it is
                // a stall whether or not its thread runs.
                Some(_) if watched != 0 && m.g.load(Relaxed) == watched => held,
                // A step seen once may end before the next look: the
                // clock is read only for steps that outlast a look.
                Some(_) if first_look => continue,
                Some(clock) => {
                    let base = match t.cpu_base {
                        Some(b) => b,
                        None => {
                            t.cpu_base = clock.now();
                            continue;
                        }
                    };
                    // The CPU time cannot exceed the wall time since the
                    // base: no need to read it before that is long enough.
                    if held < LONG_STEP {
                        continue;
                    }
                    let Some(cpu) = clock.now() else { continue };
                    cpu.saturating_sub(base)
                }
            };
            if ran < LONG_STEP {
                continue;
            }
            t.tick.reported = true;
            self.hooks()
                .long_step(m.g.load(Relaxed), m.thread, held, ran);
        }
    }
}
