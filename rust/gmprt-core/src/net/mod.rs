//! net: TCP and Unix stream listeners and connections, UDP sockets
//! ([`PacketConn`], `udp`) on the netpoller, and waits on any file
//! descriptor (Go's `net` over `internal/poll`).
//!
//! # Kinds and addresses
//!
//! A [`Conn`] or [`Listener`] is TCP or a Unix stream socket (a filesystem
//! path or a Linux abstract name), bound or dialed here or adopted from a
//! descriptor made elsewhere (`from_fd`, after checking its kind). Both
//! kinds take the same I/O path below, on the fd; the kind only decides how
//! the socket is made, accepted and named ([`Addr`]). A Unix listener that
//! bound a path removes its socket file on close, only if the file is
//! still the one it bound (`listener`); a Unix dial retries while the
//! listener's backlog is full (`dial`).
//!
//! # The I/O path
//!
//! Every operation is a nonblocking attempt, `poll_*`, that returns
//! `std::task::Poll`: it does the syscall right away (`recv` into the
//! caller's buffer, `send` straight from the caller's bytes) and is
//! `Ready` with its result, an error included, unless the socket would
//! block. Then it clears the registration's readiness, with the tick it
//! read *before* the syscall so a newer event survives (netpoll module
//! docs, "Readiness with ticks"), records what to wait on in the caller's
//! [`IoWait`] and returns `Pending`. The G parks with [`IoWait::park`] and
//! its [`Waker`](crate::Waker), then returns `Step::Park`; whichever M
//! polls the netpoller wakes it, and its next step polls again. Edge
//! triggering means a wake is only "maybe ready": the next attempt may ask
//! to wait again.
//!
//! ```text
//! step:  poll_recv ─ Ready(n) ──────────────► use the bytes
//!           │
//!           └ Pending ─ wait.park(cx.waker()) ─ true ─► Step::Park
//!                               │                         (woken: step again)
//!                               └ false: poll again now
//! ```
//!
//! The hot path allocates nothing (a reused receive `Vec` keeps its
//! capacity), copies nothing the kernel does not, dispatches statically,
//! and takes no lock but the socket's (shared), its registration slot's
//! and, for an accept, the listener's backoff state.
//!
//! # Ownership
//!
//! A [`Conn`], [`Listener`] or [`PacketConn`] owns one socket (`sock`); an
//! adopted one owns the descriptor it was given (the caller dups first to
//! keep its own). Its `RwLock` is taken shared for every syscall (so one G
//! can receive while another sends) and exclusively by `close`, so the fd
//! is never closed, and its number reused, under a syscall in flight.
//! Nothing here calls out (into Python or anything else) while holding it.
//!
//! A socket is registered with the netpoller lazily, on its first
//! operation, by the runtime that performs it: a listener made before its
//! runtime started, or a connection carried from one runtime to the next,
//! is simply registered again. Registrations are removed before the fd is
//! closed, which wakes the Gs parked on it; their next poll finds it
//! closed.
//!
//! # Deadlines
//!
//! Each operation's [`IoWait`] carries its deadline (an `Instant`; None:
//! none). A deadline is checked only when the attempt would block, so a
//! ready operation never looks at the clock, and a park arms it as a timer
//! on the netpoller (netpoll module docs, "Deadlines and timers"). When it
//! passes the operation returns a [`DeadlineExceeded`] error (kind
//! `TimedOut`) and the socket stays usable. `poll_send_all` applies one
//! deadline to the whole send and a [`Dial`] to all the addresses it tries.
//!
//! # Buffered reads
//!
//! [`ReadBuf`] (`bufread`) is the bounded buffer a connection's
//! `readline` / `readuntil` / `readexactly` fill through `poll_recv`.
//!
//! # Errors
//!
//! All `io::Error`: the kernel's, with errno, plus three of our own that
//! say which ([`is_closed`], [`is_timeout`], [`NetpollError`]); see
//! `error`.

mod addr;
mod bufread;
mod conn;
mod dial;
mod error;
mod fdwait;
mod kind;
mod listener;
mod nofile;
mod sock;
mod udp;
mod wait;

pub use addr::{unix_path, Addr, UnixAddr};
pub use bufread::{ReadBuf, Until, CHUNK};
pub use conn::{Conn, RECV_MAX};
pub use dial::{literal, resolve, Dial};
pub use error::{is_closed, is_timeout, Closed, DeadlineExceeded, NetpollError};
pub use fdwait::{FdReg, FdWait, FdWatch};
pub use listener::Listener;
pub use nofile::raise_nofile_limit;
pub use udp::{PacketConn, DATAGRAM_MAX};
pub use wait::IoWait;
