//! traceback: walking every live G for a goroutine dump (Go's `forEachG`
//! and the status half of `traceback.go`'s `goroutineheader`), and counting
//! them by state and wait reason for schedtrace.
//!
//! # Who touches what
//!
//! - `Sched::allgs`: every G ever allocated, pushed under its lock by
//!   `galloc` only, never shrunk while the scheduler lives (`gfree.rs`).
//!   A walk copies the list under the lock, then visits the copy: a G
//!   allocated afterwards is not in this dump, and since Gs are never
//!   freed before the `Sched` drops, every pointer in the copy stays valid
//!   whatever the other Ms do meanwhile (spawn, finish, reuse).
//! - A G's state word: read (Acquire) for its status; a runnable or parked
//!   G's body is borrowed with the scan bit (`g` module docs, "Scanning")
//!   for the embedder's closure, and given back right after.
//! - `MSlot::steps`/`g`/`in_call` (every M's): which G each M runs, on
//!   which thread, and whether it is inside a blocking call.
//!
//! # Consistency
//!
//! A dump is not a stop-the-world: each G is seen at one instant, not all
//! at the same one (Go stops the world for `SIGQUIT` dumps; a dump of a
//! live server here must not stall it). What each entry says is
//! consistent in itself: a scanned G cannot run, be woken or finish while
//! the closure looks at it, so its id, status, park info and body belong
//! to one life. A running G is reported from its M's slot and its status
//! word, read one after the other (it may have parked in between: the
//! entry then says running, its last state, never a torn mix of two
//! lives' bodies, since a running G's body is never read).

use std::collections::HashMap;

use super::Sched;
use crate::api::Body;
use crate::g::{coarse_now_us, Status, WaitReason};
use crate::loom::lock;
use crate::loom::sync::atomic::Ordering::*;

/// How often a walk retries a G whose state word moved between its load
/// and the scan CAS (a wake, a pop) before it reports the status it read.
const SCAN_TRIES: usize = 4;

/// A G's state as a dump names it (Go's `_Grunnable`, `_Grunning`,
/// `_Gsyscall`, `_Gwaiting`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GState {
    Runnable,
    Running,
    /// Running, with its M inside [`Sched::blocking`] (a sync G's blocking
    /// call).
    Syscall,
    Waiting,
}

impl GState {
    pub fn as_str(self) -> &'static str {
        match self {
            GState::Runnable => "runnable",
            GState::Running => "running",
            GState::Syscall => "syscall",
            GState::Waiting => "waiting",
        }
    }
}

/// One G as a dump sees it.
pub struct GView<'a> {
    pub id: u64,
    pub state: GState,
    /// Why it waits (`Waiting` only; `Other` otherwise).
    pub reason: WaitReason,
    /// For how long it has waited, in microseconds (`Waiting` only).
    pub wait_us: u64,
    /// The OS thread of the M that runs it (`pthread_self`, Python's
    /// `threading.get_ident()`), for a running G whose M was found.
    pub thread: Option<u64>,
    /// The body, held still for the closure (runnable and waiting Gs).
    pub body: Option<&'a dyn Body>,
}

/// Live Gs by state, and the waiting ones by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GCounts {
    pub runnable: usize,
    pub running: usize,
    pub syscall: usize,
    pub waiting: usize,
    /// Indexed by `WaitReason as usize`.
    pub by_reason: [usize; WaitReason::ALL.len()],
}

impl Sched {
    /// The Ms inside a step: G id → (thread, inside a blocking call).
    fn running_gs(&self) -> HashMap<u64, (u64, bool)> {
        lock(&self.allm)
            .iter()
            // Acquire: pairs with the Release in `MSlot::bump`; `g` is
            // published by it (see `MSlot::g`).
            .filter(|m| m.steps.load(Acquire) % 2 == 1)
            .map(|m| (m.g.load(Relaxed), (m.thread, m.in_call.load(Relaxed))))
            .collect()
    }

    /// Any thread: calls `f` once for every live G (Go's `forEachG`; see
    /// the module docs for what is consistent). A runnable or waiting G is
    /// held still while `f` runs (its body in [`GView::body`]): `f` must
    /// only look (read fields, take references) and return, not block or
    /// wait on anything, since the G's wakers spin until it does.
    pub fn for_each_g(&self, mut f: impl FnMut(&GView<'_>)) {
        let gs = lock(&self.allgs).snapshot();
        let running = self.running_gs();
        let now = coarse_now_us();
        for g in gs {
            let mut tries = 0;
            loop {
                let status = g.status();
                let view = |state| {
                    let (reason, since) = g.park_info();
                    let waiting = state == GState::Waiting;
                    GView {
                        id: g.id(),
                        state,
                        reason: if waiting { reason } else { WaitReason::Other },
                        wait_us: if waiting {
                            now.saturating_sub(since)
                        } else {
                            0
                        },
                        thread: None,
                        body: None,
                    }
                };
                match status {
                    Status::Idle => break,
                    Status::Running | Status::Notified => {
                        let id = g.id();
                        let (thread, in_call) = match running.get(&id) {
                            Some(&(t, c)) => (Some(t), c),
                            None => (None, false),
                        };
                        let state = if in_call {
                            GState::Syscall
                        } else {
                            GState::Running
                        };
                        f(&GView {
                            thread,
                            ..view(state)
                        });
                        break;
                    }
                    Status::Runnable | Status::Parked => {
                        let Some(held) = g.try_scan() else {
                            tries += 1;
                            if tries < SCAN_TRIES {
                                continue;
                            }
                            // Moving too fast to hold: report what it was.
                            let state = if status == Status::Parked {
                                GState::Waiting
                            } else {
                                GState::Runnable
                            };
                            f(&view(state));
                            break;
                        };
                        let state = if held == Status::Parked {
                            GState::Waiting
                        } else {
                            GState::Runnable
                        };
                        // SAFETY: `try_scan` succeeded and `unscan` runs
                        // right after: we hold the body.
                        unsafe {
                            g.scanned_body(|body| {
                                f(&GView {
                                    body,
                                    ..view(state)
                                })
                            })
                        };
                        g.unscan();
                        break;
                    }
                }
            }
        }
    }

    /// Any thread: live Gs by state and wait reason, from their state
    /// words alone (no body is touched: sysmon calls this for
    /// schedtrace). One pass over `allgs` under its lock.
    pub fn g_counts(&self) -> GCounts {
        let mut c = GCounts {
            syscall: lock(&self.allm)
                .iter()
                // Acquire: as in `running_gs`.
                .filter(|m| m.steps.load(Acquire) % 2 == 1 && m.in_call.load(Relaxed))
                .count(),
            ..GCounts::default()
        };
        for g in lock(&self.allgs).iter() {
            match g.status() {
                Status::Idle => {}
                Status::Runnable => c.runnable += 1,
                Status::Running | Status::Notified => c.running += 1,
                Status::Parked => {
                    c.waiting += 1;
                    c.by_reason[g.park_info().0 as usize] += 1;
                }
            }
        }
        // A G in a blocking call is running too; count it once, as syscall.
        c.running = c.running.saturating_sub(c.syscall);
        c
    }
}
