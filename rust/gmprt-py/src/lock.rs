//! Locks that ignore poisoning, the binding's one helper for it.
//!
//! The binding's mutexes guard plain data whose invariants hold between
//! statements (a G's outcome, a token's stash, the current runtime), and a
//! panic that poisoned one has already been reported where it happened; so
//! the data stays usable, and a poisoned lock must not turn one bug into a
//! cascade of panics on every M that touches it. (gmprt-core keeps the same
//! rule in its own `loom::lock`.)

use std::sync::{LockResult, Mutex, MutexGuard, PoisonError};

/// Locks `m`, poisoned or not.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    unpoison(m.lock())
}

/// The value of any lock operation (`lock`, a condvar `wait`, `get_mut`),
/// poisoned or not.
pub(crate) fn unpoison<T>(r: LockResult<T>) -> T {
    r.unwrap_or_else(PoisonError::into_inner)
}
