//! schedtrace: Go's `GODEBUG=schedtrace=X,scheddetail=1` line (proc.go's
//! `schedtrace`), printed by sysmon every `Config::schedtrace`.
//!
//! ```text
//! SCHED 1004ms: gomaxprocs=2 idleprocs=1 threads=5 spinningthreads=0 idlethreads=2 runqueue=0 [3 0] gs: running=1 runnable=3 syscall=0 waiting=12 (chan receive=10 sleep=2) netpoll_waiters=1 timers=2 handoffs=+4 steals=+17
//! ```
//!
//! Go's fields first, in Go's order and spelling (tools that parse Go's
//! line parse this one's head); then gmprt's: live Gs by state and the
//! waiting ones by reason (from the Gs' state words and park info, `g`
//! module docs), the netpoller's waiters and timers, and the handoffs and
//! steals since the previous line.
//!
//! # Who touches what
//!
//! Everything here only reads: counters (Relaxed; a line is a sample, as
//! Go's is, which reads them without the scheduler lock), each P's queue
//! length, `allm` and `allgs` under their locks for the counts. Nothing
//! here touches the embedder (no body is looked at: the wait reason is the
//! core's), so sysmon may call it, and it writes to fd 2 with `write(2)`,
//! past any buffering of the embedder's (Python's `sys.stderr`).

use std::fmt::Write as _;
use std::time::Duration;

use super::Sched;
use crate::g::{Status, WaitReason};
use crate::loom::lock;
use crate::loom::sync::atomic::Ordering::*;

/// What the previous line saw, for the "since the last line" fields.
#[derive(Clone, Debug, Default)]
pub struct TraceDelta {
    handoffs: u64,
    steals: u64,
}

impl Sched {
    /// Go's schedtrace line (module docs), `uptime` after the runtime
    /// started, without a newline; with `detail`, Go's scheddetail lines
    /// after it (a P line each, an M line each, a G line each). Any thread.
    pub fn schedtrace(&self, uptime: Duration, prev: &mut TraceDelta, detail: bool) -> String {
        let mut s = String::with_capacity(256);
        let local: Vec<usize> = self.allp.iter().map(|p| p.q.len()).collect();
        let _ = write!(
            s,
            "SCHED {}ms: gomaxprocs={} idleprocs={} threads={} spinningthreads={} \
             idlethreads={} runqueue={} {:?}",
            uptime.as_millis(),
            self.procs,
            self.npidle.load(Relaxed),
            self.mcount.load(Relaxed),
            self.nmspinning.load(Relaxed),
            self.nmidle.load(Relaxed),
            self.runq_size.load(Relaxed),
            local,
        );
        // `{:?}` of a Vec prints "[3, 0]": Go prints "[3 0]".
        let open = s.rfind('[').unwrap_or(s.len());
        let tail = s[open..].replace(", ", " ");
        s.truncate(open);
        s.push_str(&tail);
        let c = self.g_counts();
        let _ = write!(
            s,
            " gs: running={} runnable={} syscall={} waiting={}",
            c.running, c.runnable, c.syscall, c.waiting
        );
        let reasons: Vec<String> = WaitReason::ALL
            .iter()
            .filter(|r| c.by_reason[**r as usize] > 0)
            .map(|r| format!("{}={}", r.as_str(), c.by_reason[*r as usize]))
            .collect();
        if !reasons.is_empty() {
            let _ = write!(s, " ({})", reasons.join(" "));
        }
        let (handoffs, steals) = (self.handoffs.load(Relaxed), self.steals.load(Relaxed));
        let _ = write!(
            s,
            " netpoll_waiters={} timers={} handoffs=+{} steals=+{}",
            self.netpoll.waiters(),
            self.netpoll.timers(),
            handoffs.wrapping_sub(prev.handoffs),
            steals.wrapping_sub(prev.steals),
        );
        prev.handoffs = handoffs;
        prev.steals = steals;
        if detail {
            self.scheddetail(&mut s);
        }
        s
    }

    /// Go's scheddetail lines, each on its own line after the header.
    fn scheddetail(&self, s: &mut String) {
        for (i, p) in self.allp.iter().enumerate() {
            // Lent: a step runs on it (Go's _Prunning); otherwise it is
            // between steps, idle or held by a scheduling M: not told
            // apart without the lock, so "idle or scheduling".
            // Relaxed: only the pointer's nullness is read, never the P
            // (the owner's Release store and sysmon's swaps pair elsewhere).
            let status = u8::from(!p.lent.load(Relaxed).is_null());
            let _ = write!(
                s,
                "\n  P{i}: status={status} schedtick={} runqsize={}",
                p.steps.load(Relaxed),
                p.q.len(),
            );
        }
        for (i, m) in lock(&self.allm).iter().enumerate() {
            // Acquire: pairs with the Release in `MSlot::bump`.
            let in_step = m.steps.load(Acquire) % 2 == 1;
            let curg = if in_step {
                m.g.load(Relaxed).to_string()
            } else {
                "-1".into()
            };
            let _ = write!(
                s,
                "\n  M{i}: curg={curg} blocked={} thread={:#x}",
                in_step && m.in_call.load(Relaxed),
                m.thread,
            );
        }
        for g in lock(&self.allgs).iter() {
            let (status, what) = match g.status() {
                Status::Idle => continue,
                Status::Runnable => (1, "runnable"),
                Status::Running | Status::Notified => (2, "running"),
                Status::Parked => (4, g.park_info().0.as_str()),
            };
            // Go's numbers: _Grunnable 1, _Grunning 2, _Gwaiting 4.
            let _ = write!(s, "\n  G{}: status={status}({what})", g.id());
        }
    }
}

/// Writes `line` and a newline to fd 2 with `write(2)`, retrying short
/// writes and EINTR; other errors drop the rest (nowhere to report them).
pub(crate) fn write_stderr(line: &str) {
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
    let mut off = 0;
    while off < buf.len() {
        // SAFETY: the pointer and length describe the live slice `buf[off..]`.
        let n = unsafe { libc::write(2, buf[off..].as_ptr().cast(), buf.len() - off) };
        if n > 0 {
            off += n as usize;
        } else if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
        {
            continue;
        } else {
            break;
        }
    }
}
