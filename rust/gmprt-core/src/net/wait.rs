//! [`IoWait`]: one operation's park, from the attempt that would block to
//! the wake (Go's `pollDesc` wait, with its deadline).
//!
//! An operation (`Conn::poll_recv`, `Listener::poll_accept`, ...) that
//! would block records in its `IoWait` what to wait on and returns
//! `Pending`; the G then calls [`IoWait::park`] with its `Waker` and, if
//! that returns true, ends its step with `Step::Park`. The next poll, after
//! the wake, starts by forgetting the park: whoever woke the G (an event, a
//! deadline, a close) removed the waiter first, so there is nothing to
//! withdraw and no lock to take. A park that will not be woken (the G gives
//! up) is withdrawn by [`IoWait::cancel`] or the drop.

use crate::loom::sync::Arc;
use std::io;
use std::task::Poll;
use std::time::Instant;

use super::error::{deadline_exceeded, NetpollError};
use super::sock::Reg;
use crate::api::Waker;
use crate::netpoll::{Dir, Handle, WaitId};
use crate::timer::TimerKey;

/// The park side of one operation on a socket or fd, and its deadline.
///
/// Poll the operation, then `park` after each `Pending`; poll again only
/// once woken (or drop the `IoWait`, or [`cancel`](Self::cancel), to give
/// up).
#[derive(Default)]
pub struct IoWait {
    deadline: Option<Instant>,
    state: State,
}

#[derive(Default)]
enum State {
    #[default]
    Idle,
    /// The last poll would block on this.
    Blocked(On),
    /// Parked; whoever wakes the G removes the waiter first.
    Parked(Parked),
    /// A park failed in a way the next poll must report.
    Failed(io::Error),
}

enum On {
    /// Readiness of one direction of a registration.
    Io(Arc<Reg>, Dir),
    /// A timer (an accept backing off), already capped by the deadline.
    Timer(Handle<Waker>, Instant),
}

enum Parked {
    Io(Arc<Reg>, WaitId),
    Timer(Handle<Waker>, TimerKey),
}

impl IoWait {
    /// A wait that gives up at `deadline` (None: never) with a
    /// [`DeadlineExceeded`](super::DeadlineExceeded) error.
    pub fn new(deadline: Option<Instant>) -> IoWait {
        IoWait {
            deadline,
            state: State::Idle,
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// For the next operation (an `IoWait` may serve one after another).
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    /// Whether the deadline has passed.
    pub fn expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Right after a poll returned `Pending`: parks `w` on what it would
    /// block on, until that may be ready, the deadline passes or the socket
    /// is closed. False if it is already the case (nothing parked): poll
    /// again at once.
    pub fn park(&mut self, w: Waker) -> bool {
        let State::Blocked(on) = std::mem::take(&mut self.state) else {
            return false;
        };
        match on {
            On::Io(reg, dir) => match reg.park(dir, w, self.deadline) {
                Ok(id) => {
                    self.state = State::Parked(Parked::Io(reg, id));
                    true
                }
                Err(_) => false,
            },
            On::Timer(h, when) => match h.add_timer(when, w) {
                Ok(key) => {
                    self.state = State::Parked(Parked::Timer(h, key));
                    true
                }
                Err(_) => {
                    self.state = State::Failed(NetpollError::NoTimers.into_io());
                    false
                }
            },
        }
    }

    /// Withdraws a park that will not be woken (its G gives up waiting).
    pub fn cancel(&mut self) {
        match std::mem::take(&mut self.state) {
            State::Parked(Parked::Io(reg, id)) => {
                reg.cancel(id);
            }
            State::Parked(Parked::Timer(h, key)) => {
                h.cancel_timer(key);
            }
            _ => {}
        }
    }

    /// The start of every poll: the G was woken, or never parked.
    pub(crate) fn resume(&mut self) -> io::Result<()> {
        match std::mem::take(&mut self.state) {
            State::Failed(e) => Err(e),
            _ => Ok(()),
        }
    }

    /// The attempt would block on `dir` of `reg`: time out if the deadline
    /// has passed, else record it for [`park`](Self::park).
    pub(crate) fn block<T>(&mut self, reg: Arc<Reg>, dir: Dir) -> Poll<io::Result<T>> {
        if self.expired() {
            return Poll::Ready(Err(deadline_exceeded()));
        }
        self.state = State::Blocked(On::Io(reg, dir));
        Poll::Pending
    }

    /// Wait until `until` (or the deadline, if earlier) on a timer of `h`:
    /// time out if the deadline has passed.
    pub(crate) fn sleep<T>(&mut self, h: Handle<Waker>, until: Instant) -> Poll<io::Result<T>> {
        if self.expired() {
            return Poll::Ready(Err(deadline_exceeded()));
        }
        let when = self.deadline.map_or(until, |d| d.min(until));
        self.state = State::Blocked(On::Timer(h, when));
        Poll::Pending
    }
}

impl Drop for IoWait {
    fn drop(&mut self) {
        self.cancel();
    }
}
