//! gmprt-loadgen: a closed-loop TCP echo load generator.
//!
//! `connections` TCP connections, spread over a few mio event-loop threads,
//! each keep exactly one message in flight: send `size` bytes, read back
//! exactly `size` bytes, compare every byte with what was sent, send the next
//! message. After `warmup` the run is measured for `duration`: messages
//! completed in the window, their round-trip latency, and every error
//! (connect failure, reset, early close, mismatched byte). A connection that
//! fails is closed and counted, not reopened. The CPU time this process
//! spends in the window is reported too, and, given the server's `pid`, the
//! server's (see [`cpu`]).
//!
//! It knows nothing of gmprt: the benchmarks drive every contender's server
//! with it alike.
//!
//! # The byte pattern
//!
//! All connections share one pseudo-random buffer of `size + WINDOW` bytes.
//! Message `k` of connection `i` is the `size`-byte slice starting at
//! `(i * 7919 + k * 104729) mod WINDOW` (`WINDOW` = 65,521, a prime), so the
//! messages in flight at any moment start at distinct offsets (for up to
//! `WINDOW` connections), and two consecutive messages of one connection
//! differ too. Bytes sent to another connection, stale bytes of an earlier
//! message, duplicated or dropped bytes all land where a different random
//! byte is expected and count as a mismatch. Checking is a `memcmp` per read.

use std::fmt::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

pub mod args;
pub mod cpu;
mod engine;
pub mod hist;

pub use hist::Histogram;

/// What to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// Server host name or address.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Concurrent connections, each with one message in flight.
    pub connections: usize,
    /// Message size in bytes.
    pub size: usize,
    /// Measured time.
    pub duration: Duration,
    /// Unmeasured load before the measurement.
    pub warmup: Duration,
    /// Event-loop threads (connections are spread round-robin).
    pub threads: usize,
    /// Connections not made by then count as connect errors.
    pub connect_timeout: Duration,
    /// Print JSON instead of text (used by the binary only).
    pub json: bool,
    /// Messages are lines: printable bytes ending in `\n` (`--lines`).
    pub lines: bool,
    /// Connect to this Unix socket instead of `host:port` (`--unix`).
    pub unix: Option<std::path::PathBuf>,
    /// The server's process: its CPU time over the window is reported
    /// (`--pid`).
    pub pid: Option<u32>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: "127.0.0.1".into(),
            port: 0,
            connections: 100,
            size: 1024,
            duration: Duration::from_secs(5),
            warmup: Duration::from_secs(1),
            threads: 1,
            connect_timeout: Duration::from_secs(10),
            json: false,
            lines: false,
            unix: None,
            pid: None,
        }
    }
}

/// Errors counted during a run, by kind. Each failed connection counts once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Errors {
    /// Connections that could not be made (refused, timed out, ...).
    pub connect: u64,
    /// Connections reset or aborted by the peer (ECONNRESET, EPIPE, ...).
    pub reset: u64,
    /// Connections the peer closed (EOF) while a message was in flight.
    pub closed: u64,
    /// Connections that received a byte other than the one sent.
    pub mismatch: u64,
    /// Any other I/O error.
    pub other: u64,
}

impl Errors {
    /// All errors.
    pub fn total(&self) -> u64 {
        self.connect + self.reset + self.closed + self.mismatch + self.other
    }

    pub(crate) fn add(&mut self, o: &Errors) {
        self.connect += o.connect;
        self.reset += o.reset;
        self.closed += o.closed;
        self.mismatch += o.mismatch;
        self.other += o.other;
    }
}

/// Latency figures in nanoseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Latency {
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

/// The outcome of a run.
#[derive(Clone, Debug)]
pub struct Report {
    /// The address connected to.
    pub addr: Target,
    /// Connections asked for.
    pub connections: usize,
    /// Connections that were made.
    pub connected: usize,
    /// Connections still alive when the measurement ended.
    pub alive_at_end: usize,
    pub size: usize,
    pub threads: usize,
    pub warmup: Duration,
    /// The measured window (as run; about `Config::duration`).
    pub elapsed: Duration,
    /// Messages completed (echo fully received and verified) in the window.
    pub messages: u64,
    pub msgs_per_s: f64,
    /// Payload MiB per second, each way.
    pub mib_per_s: f64,
    /// Round trip of the messages counted in `messages`.
    pub latency: Latency,
    /// The full latency histogram.
    pub histogram: Histogram,
    pub errors: Errors,
    /// A description of the first error seen, if any.
    pub first_error: Option<String>,
    /// The process whose CPU time was read (`--pid`).
    pub server_pid: Option<u32>,
    /// The server's user + system CPU time over the measured window, read
    /// from `/proc/PID/stat` as the window opened and as it closed (clock
    /// tick resolution, 10 ms on Linux). None without `--pid`, or when it
    /// could not be read (see `server_cpu_error`).
    pub server_cpu: Option<Duration>,
    /// Why `server_cpu` is missing although `--pid` was given.
    pub server_cpu_error: Option<String>,
    /// This process's (the load generator's) CPU time over the window.
    pub client_cpu: Duration,
}

/// Where the load goes: a TCP address, or a Unix socket path (`--unix`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Tcp(SocketAddr),
    Unix(std::path::PathBuf),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp(a) => write!(f, "{a}"),
            Target::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Resolves `host:port` to the first address.
pub fn resolve(host: &str, port: u16) -> std::io::Result<SocketAddr> {
    (host, port).to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{host}: no address found"),
        )
    })
}

/// Runs the load described by `cfg` and reports what it measured. Fails only
/// when the host cannot be resolved, `cfg.pid` names no process, or a thread
/// cannot be started; errors on connections are counted in the report.
pub fn run(cfg: &Config) -> std::io::Result<Report> {
    let addr = match &cfg.unix {
        Some(p) => Target::Unix(p.clone()),
        None => Target::Tcp(resolve(&cfg.host, cfg.port).map_err(|e| {
            std::io::Error::new(e.kind(), format!("{}:{}: {e}", cfg.host, cfg.port))
        })?),
    };
    // A wrong pid shows now, before any load, not as a missing figure after.
    if let Some(pid) = cfg.pid {
        cpu::process_cpu(pid)?;
    }
    engine::run(cfg, addr)
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1_000.0
}

fn json_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("null".into(), |x| format!("{x:.digits$}"))
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Report {
    /// The server's CPU time per message counted in the window, in
    /// microseconds (None without a CPU figure or without messages).
    pub fn server_cpu_us_per_msg(&self) -> Option<f64> {
        let cpu = self.server_cpu?;
        (self.messages > 0).then(|| cpu.as_secs_f64() * 1e6 / self.messages as f64)
    }

    /// Human-readable summary.
    pub fn to_text(&self) -> String {
        let l = &self.latency;
        let e = &self.errors;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "gmprt-loadgen {}: {} connections ({} made, {} alive at end), {} B messages, \
             {} thread(s), {:.1} s warmup + {:.2} s measured",
            self.addr,
            self.connections,
            self.connected,
            self.alive_at_end,
            self.size,
            self.threads,
            self.warmup.as_secs_f64(),
            self.elapsed.as_secs_f64()
        );
        let _ = writeln!(
            s,
            "  messages  {}  ({:.0} msgs/s, {:.2} MiB/s each way)",
            self.messages, self.msgs_per_s, self.mib_per_s
        );
        let _ = writeln!(
            s,
            "  latency   min {:.1} µs  mean {:.1} µs  p50 {:.1} µs  p90 {:.1} µs  \
             p99 {:.1} µs  p99.9 {:.1} µs  max {:.1} µs",
            us(l.min),
            l.mean / 1_000.0,
            us(l.p50),
            us(l.p90),
            us(l.p99),
            us(l.p999),
            us(l.max)
        );
        let _ = writeln!(
            s,
            "  errors    {}  (connect {}, reset {}, closed {}, mismatch {}, other {})",
            e.total(),
            e.connect,
            e.reset,
            e.closed,
            e.mismatch,
            e.other
        );
        if let Some(first) = &self.first_error {
            let _ = writeln!(s, "  first error: {first}");
        }
        let window = self.elapsed.as_secs_f64();
        let _ = write!(
            s,
            "  cpu       client {:.3} s ({:.0}%)",
            self.client_cpu.as_secs_f64(),
            100.0 * self.client_cpu.as_secs_f64() / window
        );
        match (self.server_pid, self.server_cpu, &self.server_cpu_error) {
            (Some(pid), Some(cpu), _) => {
                let _ = write!(
                    s,
                    ", server (pid {pid}) {:.3} s ({:.0}%)",
                    cpu.as_secs_f64(),
                    100.0 * cpu.as_secs_f64() / window
                );
                if let Some(per) = self.server_cpu_us_per_msg() {
                    let _ = write!(s, ", {per:.3} µs/msg");
                }
            }
            (_, _, Some(e)) => {
                let _ = write!(s, ", server: not measured: {e}");
            }
            _ => {}
        }
        s.push('\n');
        s
    }

    /// One JSON object (latencies in microseconds).
    pub fn to_json(&self) -> String {
        let l = &self.latency;
        let e = &self.errors;
        format!(
            concat!(
                "{{\"addr\":{},\"connections\":{},\"connected\":{},\"alive_at_end\":{},",
                "\"size\":{},\"threads\":{},\"warmup_s\":{:.3},\"duration_s\":{:.6},",
                "\"messages\":{},\"msgs_per_s\":{:.1},\"mib_per_s\":{:.3},",
                "\"latency_us\":{{\"min\":{:.1},\"mean\":{:.1},\"p50\":{:.1},\"p90\":{:.1},",
                "\"p99\":{:.1},\"p999\":{:.1},\"max\":{:.1}}},",
                "\"errors\":{{\"total\":{},\"connect\":{},\"reset\":{},\"closed\":{},",
                "\"mismatch\":{},\"other\":{}}},\"first_error\":{},",
                "\"client_cpu_s\":{:.6},\"server_pid\":{},\"server_cpu_s\":{},",
                "\"server_cpu_us_per_msg\":{},\"server_cpu_error\":{}}}"
            ),
            json_str(&self.addr.to_string()),
            self.connections,
            self.connected,
            self.alive_at_end,
            self.size,
            self.threads,
            self.warmup.as_secs_f64(),
            self.elapsed.as_secs_f64(),
            self.messages,
            self.msgs_per_s,
            self.mib_per_s,
            us(l.min),
            l.mean / 1_000.0,
            us(l.p50),
            us(l.p90),
            us(l.p99),
            us(l.p999),
            us(l.max),
            e.total(),
            e.connect,
            e.reset,
            e.closed,
            e.mismatch,
            e.other,
            self.first_error.as_deref().map_or("null".into(), json_str),
            self.client_cpu.as_secs_f64(),
            self.server_pid.map_or("null".into(), |p| p.to_string()),
            json_opt(self.server_cpu.map(|d| d.as_secs_f64()), 3),
            json_opt(self.server_cpu_us_per_msg(), 4),
            self.server_cpu_error
                .as_deref()
                .map_or("null".into(), json_str),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escapes() {
        assert_eq!(json_str("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
    }
}
