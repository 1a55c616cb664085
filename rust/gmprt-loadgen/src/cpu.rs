//! CPU time of the server (`--pid`, from `/proc/PID/stat`) and of this
//! process (`getrusage`), read at the edges of the measured window.
//!
//! On a small machine the load generator shares the CPU with the server, so
//! msgs/s mostly measures the client; the server's CPU time per message does
//! not. Reading it here, at the very instants the window opens and closes,
//! leaves out the connects, the warm-up and the teardown that a reading from
//! outside the load generator's process would include.

use std::io;
use std::time::Duration;

/// utime + stime, in clock ticks, from the text of a `/proc/PID/stat` file.
///
/// The second field (the command name, in parentheses) may itself hold
/// spaces and parentheses, so the fields are counted from after the last
/// `)`: field 3 (the state) is the first there, utime (14) and stime (15)
/// the 12th and 13th.
pub fn parse_stat_ticks(stat: &str) -> Result<u64, String> {
    let (_, rest) = stat
        .rsplit_once(')')
        .ok_or_else(|| "no ')' after the command name".to_string())?;
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let mut tick = |name: &str| -> Result<u64, String> {
        let v = fields
            .next()
            .ok_or_else(|| format!("too few fields: no {name}"))?;
        v.parse::<u64>()
            .map_err(|_| format!("{name}: expected a tick count, got {v:?}"))
    };
    let utime = tick("utime")?;
    let stime = tick("stime")?;
    Ok(utime + stime)
}

fn ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    // Linux has reported 100 to user space on every architecture for
    // decades; a failed call (-1) is not worth failing the run for.
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// CPU time (user + system, every thread) used so far by process `pid`.
/// A process that has gone (or a `pid` that never was) is an error that
/// names it.
pub fn process_cpu(pid: u32) -> io::Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("--pid {pid}: cannot read {path}: {e}")))?;
    let ticks = parse_stat_ticks(&text).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("--pid {pid}: {path}: {e}"),
        )
    })?;
    let hz = ticks_per_second();
    Ok(Duration::from_secs(ticks / hz) + Duration::from_nanos((ticks % hz) * 1_000_000_000 / hz))
}

/// CPU time (user + system, every thread) used so far by this process.
pub fn own_cpu() -> Duration {
    // SAFETY: all-zero bytes are a valid rusage (integers and timevals).
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage for getrusage to fill.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    // A real line's shape: pid (comm) state ppid pgrp session tty tpgid
    // flags minflt cminflt majflt cmajflt utime stime cutime cstime ...
    fn line(comm: &str, utime: u64, stime: u64) -> String {
        format!("4242 ({comm}) S 1 4242 4242 0 -1 4194560 1000 0 0 0 {utime} {stime} 7 9 20 0 3 0")
    }

    #[test]
    fn plain_command_name() {
        assert_eq!(parse_stat_ticks(&line("python3", 150, 25)).unwrap(), 175);
    }

    #[test]
    fn command_name_with_spaces_and_parentheses() {
        // The comm of a process may be anything a program sets: here "a) b".
        assert_eq!(parse_stat_ticks(&line("a) b", 3, 4)).unwrap(), 7);
        assert_eq!(parse_stat_ticks(&line("(a) b)", 10, 0)).unwrap(), 10);
        assert_eq!(
            parse_stat_ticks(&line(") 1 2 3 4 5 6 7 8 9 10 11 12", 1, 2)).unwrap(),
            3
        );
    }

    #[test]
    fn malformed_text_is_an_error() {
        assert!(parse_stat_ticks("").is_err());
        assert!(parse_stat_ticks("4242 python3 S 1").is_err());
        assert!(parse_stat_ticks("4242 (x) S 1 2 3")
            .unwrap_err()
            .contains("utime"));
        let bad = line("x", 1, 2).replace(" 1 2 7 9", " 1 -2 7 9");
        assert!(parse_stat_ticks(&bad).unwrap_err().contains("stime"));
    }

    #[test]
    fn this_process_reads_back() {
        let pid = std::process::id();
        // Burn a little CPU so the tick count moves off zero.
        let t0 = std::time::Instant::now();
        let mut x = 0u64;
        while t0.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let a = process_cpu(pid).unwrap();
        assert!(a > Duration::ZERO && a <= own_cpu() + Duration::from_millis(20));
    }

    #[test]
    fn missing_process_is_an_error_naming_it() {
        // Above the kernel's largest pid_max (2^22): never a live process.
        let e = process_cpu(99_999_999).unwrap_err();
        assert!(e.to_string().contains("--pid 99999999"), "{e}");
    }
}
