//! gmprt-core: Go's G/M/P scheduler, with no Python in it.
//!
//! - [`g`]: the G header and its state word (park/wake without lost wakes).
//! - [`runq`]: a P's lock-free local run queue with Go's `runnext`.
//! - [`timer`]: a 4-ary timer heap with lazy, bounded cancellation.
//! - [`netpoll`]: the netpoller (mio) and the timers, polled by the Ms.
//! - [`sched`]: Ps, Ms, the global queue, `findRunnable`, spinning Ms.
//! - [`chan`]: Go's channels and `select`; [`sync`]: `WaitGroup`,
//!   `Semaphore`, `Mutex`; both on [`sudog`]'s parkers and wait queues.
//! - [`net`]: TCP listeners, connections and dials, and waits on any fd,
//!   for Gs parked on the netpoller.
//!
//! The embedder supplies what a G runs ([`Body`]) and what an M does around
//! its life and its waits ([`Hooks`]); the Python bindings use those to step
//! coroutines on Ms attached to the interpreter.

pub mod chan;
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

pub use chan::{Case, Chan, RecvPark, SelectPark, Selected, SendPark};
pub use g::{GPtr, Status, Wake};
pub use sched::{Body, Config, Cx, Hooks, NoHooks, Sched, Stats, Step, Stopped, Waker};
pub use sudog::{Done, Notify, Op};
