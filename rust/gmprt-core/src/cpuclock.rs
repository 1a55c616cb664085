//! cpuclock: how long a thread has actually run (its CPU time), readable
//! from any thread of the process.
//!
//! Wall time says how long a step has lasted, not whether its thread ran:
//! a thread waiting for the GIL that another thread holds, or for a CPU on
//! a busy machine, looks from outside exactly like one computing. sysmon
//! reads an M's CPU clock to report a long step only when that M's own
//! thread ran it ("Long steps", `sysmon`), and the shutdown report tells a
//! thread busy on the CPU from one blocked in a call.
//!
//! Linux: `pthread_getcpuclockid` on the thread itself, then
//! `clock_gettime` on that clock from anywhere. Elsewhere there is no clock
//! ([`CpuClock::current`] is None) and callers fall back to wall time.

use std::time::Duration;

/// A thread's CPU-time clock. Copy it freely; reading it after its thread
/// has exited fails (None), it never reads another process's thread.
#[derive(Clone, Copy, Debug)]
pub struct CpuClock {
    #[cfg(target_os = "linux")]
    id: libc::clockid_t,
}

impl CpuClock {
    /// The calling thread's clock, or None where the platform has none.
    pub fn current() -> Option<CpuClock> {
        #[cfg(target_os = "linux")]
        {
            let mut id: libc::clockid_t = 0;
            // SAFETY: `pthread_self()` names the calling thread, alive for
            // the whole call; `id` is a valid, writable clockid_t.
            let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut id) };
            (rc == 0).then_some(CpuClock { id })
        }
        #[cfg(not(target_os = "linux"))]
        {
            None
        }
    }

    /// The CPU time the thread has used since it started; None if the clock
    /// cannot be read (the thread has exited).
    pub fn now(self) -> Option<Duration> {
        #[cfg(target_os = "linux")]
        {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: `ts` is a valid, writable timespec. A clock whose
            // thread has exited makes the call fail (EINVAL); the kernel
            // resolves a thread CPU clock only within this process, so a
            // recycled thread id can at worst name another of our threads.
            let rc = unsafe { libc::clock_gettime(self.id, &mut ts) };
            if rc != 0 {
                return None;
            }
            let secs = u64::try_from(ts.tv_sec).ok()?;
            let nanos = u32::try_from(ts.tv_nsec).ok()?;
            Some(Duration::new(secs, nanos))
        }
        #[cfg(not(target_os = "linux"))]
        {
            None
        }
    }
}

#[cfg(all(test, target_os = "linux", not(loom)))]
mod tests {
    use super::CpuClock;
    use std::sync::mpsc::channel;
    use std::time::{Duration, Instant};

    /// Another thread reads a thread's clock: little while it sleeps, at
    /// least what it computed once it has.
    #[test]
    fn counts_running_not_sleeping() {
        let (clock_tx, clock_rx) = channel();
        let (done_tx, done_rx) = channel();
        let (exit_tx, exit_rx) = channel::<()>();
        let h = std::thread::spawn(move || {
            let clock = CpuClock::current().expect("a CPU clock on Linux");
            clock_tx.send(clock).unwrap();
            std::thread::sleep(Duration::from_millis(100));
            let start = clock.now().unwrap();
            // Bounded: give up after 5 s of wall time.
            let deadline = Instant::now() + Duration::from_secs(5);
            while clock.now().unwrap() - start < Duration::from_millis(30)
                && Instant::now() < deadline
            {
                std::hint::spin_loop();
            }
            done_tx.send(start).unwrap();
            // Stay alive until read, so the clock still names this thread.
            let _ = exit_rx.recv_timeout(Duration::from_secs(10));
        });
        let clock = clock_rx.recv().unwrap();
        let asleep = clock.now().expect("a live thread's clock reads");
        let start = done_rx.recv().unwrap();
        let worked = clock.now().expect("a live thread's clock reads") - start;
        exit_tx.send(()).unwrap();
        h.join().unwrap();
        assert!(
            asleep < Duration::from_millis(50),
            "{asleep:?} before any work"
        );
        assert!(
            worked >= Duration::from_millis(30),
            "{worked:?} after 30 ms of work"
        );
    }
}
