//! The one place that names `std::sync`: everything concurrent in the core
//! imports from here, so `RUSTFLAGS="--cfg loom"` swaps the whole runtime onto
//! loom's model-checked primitives without touching a call site.
//!
//! Loom builds also shrink the constants that size state spaces (see
//! `runq::CAPACITY`), the way tokio's queue drops to 4 slots under loom.

#[cfg(not(loom))]
mod imp {
    pub(crate) mod sync {
        pub(crate) use std::sync::{
            Arc, Condvar, Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard, TryLockError,
        };
        pub(crate) mod atomic {
            pub(crate) use std::sync::atomic::{
                fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
            };
        }
    }
    pub(crate) mod thread {
        pub(crate) use std::thread::{current, park, yield_now, Builder, JoinHandle, Thread};
    }
    pub(crate) mod cell {
        /// `std::cell::UnsafeCell` with loom's closure API, so call sites are
        /// the same under both.
        #[derive(Debug)]
        pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

        impl<T> UnsafeCell<T> {
            pub(crate) const fn new(v: T) -> UnsafeCell<T> {
                UnsafeCell(std::cell::UnsafeCell::new(v))
            }

            pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
                f(self.0.get())
            }
        }
    }
}

#[cfg(loom)]
mod imp {
    pub(crate) mod sync {
        // std's Arc, not loom's: the scheduler takes `self: &Arc<Self>`,
        // and only std's Arc may be a method receiver on stable Rust. No
        // modelled protocol depends on reference counts.
        pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard};
        pub(crate) use std::sync::Arc;
        // loom's `try_lock` returns std's `TryLockResult`.
        pub(crate) use std::sync::TryLockError;
        // loom has no `OnceLock`. The one user, the netpoller's lazy start
        // (`Netpoll::handle`), is serialised by a loom mutex anyway, and
        // the models start the netpoller before they spawn a thread.
        pub(crate) use std::sync::OnceLock;
        pub(crate) mod atomic {
            pub(crate) use loom::sync::atomic::{
                fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
            };
        }
    }
    pub(crate) mod thread {
        pub(crate) use loom::thread::{current, park, yield_now, Builder, JoinHandle, Thread};
    }
    pub(crate) mod cell {
        pub(crate) use loom::cell::UnsafeCell;
    }
}

pub(crate) use imp::*;

/// Locks a mutex, treating poisoning as a bug elsewhere already reported:
/// the runtime's locks guard plain data whose invariants hold between
/// statements, so the data stays usable after a panicking holder.
pub(crate) fn lock<T>(m: &sync::Mutex<T>) -> sync::MutexGuard<'_, T> {
    unpoison(m.lock())
}

/// The value of any lock operation (a condvar wait, a read or write lock),
/// poisoned or not; see [`lock`].
pub(crate) fn unpoison<T>(r: std::sync::LockResult<T>) -> T {
    r.unwrap_or_else(std::sync::PoisonError::into_inner)
}
