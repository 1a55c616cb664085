//! gmprt-core: Go's G/M/P scheduler, with no Python in it.
//!
//! - [`g`]: the G header and its state word (park/wake without lost wakes).
//! - [`runq`]: a P's lock-free local run queue with Go's `runnext`.
//! - [`timer`]: a 4-ary timer heap with lazy, bounded cancellation.
//! - [`netpoll`]: the netpoller (mio) and the timers, polled by the Ms.
//! - [`api`]: the embedder's face: [`Body`], [`Step`], [`Cx`], [`Waker`],
//!   [`Hooks`], [`Config`], [`Stats`], [`Stopped`].
//! - [`sched`]: Ps, Ms, the global queue, `findRunnable`, spinning Ms,
//!   lending the P to sysmon; one file per mechanism under `sched/`.
//! - [`sysmon`]: the thread that retakes the P of a step that runs long.
//! - [`cpuclock`]: a thread's CPU time, so that a long step is reported
//!   only when its thread really ran.
//! - [`trace`]: the execution tracer and flight recorder (Chrome
//!   trace-event JSON), one Relaxed load per event while off.
//! - [`net`]: TCP listeners, connections, dialing and fd waits on the
//!   netpoller, for Gs of any embedder (Rust-native ones in `tests/net.rs`).
//! - [`chan`]: Go's channels and `select`; [`sync`]: `WaitGroup`,
//!   `Semaphore`, `Mutex`; both on [`sudog`]'s parkers and wait queues.
//! - [`net`]: TCP listeners, connections and dials, and waits on any fd,
//!   for Gs parked on the netpoller.
//!
//! The embedder supplies what a G runs ([`Body`]) and what an M does around
//! its life and its waits ([`Hooks`]); the Python bindings use those to step
//! coroutines on Ms attached to the interpreter.
//!
//! # Dependency order
//!
//! Each layer uses only the layers listed before it:
//!
//! 1. `g` and `loom` (the std/loom facade) at the bottom;
//! 2. `runq`, `timer`, `park`, `cpuclock`, `trace`;
//! 3. `netpoll` (on `timer`; it hands readied wakers back through its
//!    `Ready` trait and never calls the scheduler);
//! 4. `api` and `sched`, side by side: `api` is the face, `sched` the
//!    machinery, and `Cx`/`Waker` reach into `Sched` from `api`;
//! 5. `sysmon` (on `sched`), `net` (on `sched`, `netpoll` and `api`),
//!    `sudog` (on `api`'s `Waker`), `chan` and `sync` (on `sudog`);
//! 6. `lib`, re-exporting the face.
//!
//! Two edges go the other way. `g` names `api::BoxBody`, the type of the
//! body it stores, and calls none of it (the trait's `step` takes a `Cx`,
//! so the type cannot live lower without making the G generic). `sched`
//! starts the sysmon thread in `Sched::new`, whose loop is `Sched::sysmon`
//! in `sysmon`.

pub mod api;
pub mod chan;
pub mod cpuclock;
pub mod g;
mod loom;
#[cfg(all(test, loom))]
mod loom_tests;
pub mod net;
pub mod netpoll;
mod park;
pub mod runq;
pub mod sched;
pub mod sudog;
pub mod sync;
pub mod sysmon;
pub mod timer;
pub mod trace;

pub use api::{Body, Config, Cx, GRef, Hooks, NoHooks, Stats, Step, Stopped, Waker};
pub use chan::{Case, Chan, RecvPark, SelectPark, Selected, SendPark};
pub use g::{GPtr, Status, WaitReason, Wake};
pub use sched::schedtrace::TraceDelta;
pub use sched::traceback::{GCounts, GState, GView};
pub use sched::Sched;
pub use sudog::{Done, Notify, Op};
