//! The load generator against in-process std-thread servers: a correct echo
//! server, and servers that corrupt, cross-wire, close, stay silent or are
//! not there at all; and `--pid`'s CPU window against child processes.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use gmprt_loadgen::{run, Config, Report};

/// Starts `serve(conn)` on a thread per accepted connection; returns the port.
fn server(serve: fn(TcpStream)) -> u16 {
    let ln = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = ln.local_addr().unwrap().port();
    thread::spawn(move || {
        for conn in ln.incoming() {
            let Ok(conn) = conn else { continue };
            conn.set_nodelay(true).unwrap();
            thread::spawn(move || serve(conn));
        }
    });
    port
}

fn echo(mut conn: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if conn.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// Echoes, but flips one bit of the 3,000th byte of the stream.
fn corrupt(mut conn: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut pos = 0usize;
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if (pos..pos + n).contains(&3_000) {
                    buf[3_000 - pos] ^= 0x10;
                }
                pos += n;
                if conn.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

fn cfg(port: u16, connections: usize, size: usize, ms: u64) -> Config {
    Config {
        port,
        connections,
        size,
        duration: Duration::from_millis(ms),
        warmup: Duration::from_millis(100),
        threads: 2,
        connect_timeout: Duration::from_secs(5),
        ..Config::default()
    }
}

fn run_bounded(c: &Config) -> Report {
    let t0 = Instant::now();
    let r = run(c).unwrap();
    // The run ends on time whatever the server does.
    assert!(
        t0.elapsed() < c.warmup + c.duration + Duration::from_secs(3),
        "{:?}",
        t0.elapsed()
    );
    r
}

#[test]
fn echo_server_no_errors_and_sane_latency() {
    let port = server(echo);
    let r = run_bounded(&cfg(port, 50, 1000, 500));
    assert_eq!(r.errors.total(), 0, "{}", r.to_text());
    assert_eq!(r.connected, 50);
    assert_eq!(r.alive_at_end, 50);
    assert!(r.messages > 100, "{}", r.to_text());
    assert_eq!(r.histogram.count(), r.messages);
    let l = r.latency;
    assert!(l.min > 0);
    assert!(l.min <= l.p50 && l.p50 <= l.p90 && l.p90 <= l.p99);
    assert!(l.p99 <= l.p999 && l.p999 <= l.max);
    assert!(l.mean >= l.min as f64 && l.mean <= l.max as f64);
    // A round trip cannot outlast the run.
    assert!(l.max < 5_000_000_000);
    // Little's law, loosely: 50 in flight = rate * mean latency.
    let in_flight = r.msgs_per_s * l.mean / 1e9;
    assert!((5.0..=75.0).contains(&in_flight), "{in_flight}");
    assert!((r.mib_per_s - r.msgs_per_s * 1000.0 / 1048576.0).abs() < 1e-6);
    assert!(r.first_error.is_none());
}

#[test]
fn corrupted_byte_is_a_mismatch() {
    let port = server(corrupt);
    let r = run_bounded(&cfg(port, 10, 1024, 300));
    assert_eq!(r.errors.mismatch, 10, "{}", r.to_text());
    assert_eq!(r.errors.total(), 10);
    assert_eq!(r.alive_at_end, 0);
    let first = r.first_error.unwrap();
    // 3,000 = message 2, byte 952 of 1,024-byte messages.
    assert!(first.contains("message 2, byte 952"), "{first}");
}

#[test]
fn cross_wired_connections_are_caught() {
    // Pairs of connections, each getting the other's bytes.
    let ln = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = ln.local_addr().unwrap().port();
    thread::spawn(move || loop {
        let (Ok((a, _)), Ok((b, _))) = (ln.accept(), ln.accept()) else {
            return;
        };
        for (mut from, mut to) in [(a.try_clone().unwrap(), b.try_clone().unwrap()), (b, a)] {
            thread::spawn(move || {
                let _ = std::io::copy(&mut from, &mut to);
            });
        }
    });
    let mut c = cfg(port, 8, 512, 300);
    c.threads = 1;
    let r = run_bounded(&c);
    assert_eq!(r.errors.mismatch, 8, "{}", r.to_text());
    assert_eq!(r.messages, 0);
}

#[test]
fn closing_server_counts_closed_or_reset() {
    let port = server(drop);
    let r = run_bounded(&cfg(port, 20, 100, 300));
    assert_eq!(r.errors.closed + r.errors.reset, 20, "{}", r.to_text());
    assert_eq!(r.messages, 0);
}

#[test]
fn refused_connections_are_connect_errors() {
    let port = {
        let ln = TcpListener::bind("127.0.0.1:0").unwrap();
        ln.local_addr().unwrap().port()
    };
    let r = run_bounded(&cfg(port, 5, 100, 100));
    assert_eq!(r.errors.connect, 5, "{}", r.to_text());
    assert_eq!(r.connected, 0);
}

#[test]
fn silent_server_ends_on_time_with_no_messages() {
    let port = server(|conn| {
        thread::sleep(Duration::from_secs(3));
        drop(conn);
    });
    let r = run_bounded(&cfg(port, 4, 100, 300));
    assert_eq!(r.messages, 0);
    assert_eq!(r.errors.total(), 0);
    assert_eq!(r.alive_at_end, 4);
}

#[test]
fn large_messages_interleave_send_and_receive() {
    // 4 MiB each way per message is far beyond the socket buffers: the client
    // must read while it writes or both ends stall.
    let port = server(echo);
    let r = run_bounded(&cfg(port, 2, 4 << 20, 500));
    assert_eq!(r.errors.total(), 0, "{}", r.to_text());
    assert!(r.messages >= 2, "{}", r.to_text());
}

#[test]
fn one_byte_messages() {
    let port = server(echo);
    let r = run_bounded(&cfg(port, 3, 1, 200));
    assert_eq!(r.errors.total(), 0, "{}", r.to_text());
    assert!(r.messages > 10);
}

#[test]
fn binary_prints_json_and_sets_exit_status() {
    let port = server(echo);
    let out = Command::new(env!("CARGO_BIN_EXE_gmprt-loadgen"))
        .args(["--port", &port.to_string(), "-c", "4", "-s", "2k"])
        .args(["-d", "0.2", "--warmup", "0", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with('{') && text.trim_end().ends_with('}'),
        "{text}"
    );
    for key in [
        "\"msgs_per_s\":",
        "\"p99\":",
        "\"size\":2048",
        "\"connections\":4",
        "\"errors\":{\"total\":0",
        "\"first_error\":null",
        "\"server_pid\":null",
        "\"server_cpu_s\":null",
        "\"server_cpu_us_per_msg\":null",
        "\"client_cpu_s\":",
    ] {
        assert!(text.contains(key), "{key} missing in {text}");
    }

    // --pid of a live process (this one: the echo server runs in it).
    let me = std::process::id().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_gmprt-loadgen"))
        .args(["--port", &port.to_string(), "-c", "4", "-d", "0.2"])
        .args(["--warmup", "0", "--json", "--pid", &me])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(&format!("\"server_pid\":{me},")), "{text}");
    assert!(!text.contains("\"server_cpu_s\":null"), "{text}");
    assert!(!text.contains("\"server_cpu_us_per_msg\":null"), "{text}");
    assert!(text.contains("\"server_cpu_error\":null"), "{text}");

    // A pid with no process: a message and exit status 2, before any load.
    let out = Command::new(env!("CARGO_BIN_EXE_gmprt-loadgen"))
        .args(["--port", &port.to_string(), "--pid", "99999999"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--pid 99999999"), "{err}");

    let port = server(corrupt);
    let out = Command::new(env!("CARGO_BIN_EXE_gmprt-loadgen"))
        .args(["--port", &port.to_string(), "-c", "2", "-d", "0.2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("mismatch 2"));

    let out = Command::new(env!("CARGO_BIN_EXE_gmprt-loadgen"))
        .args(["-c", "2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// A child process that spins on one core until killed.
fn spinner() -> std::process::Child {
    Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn server_cpu_covers_the_measured_window_only() {
    // A single-threaded spinner can use at most the window's wall time;
    // counting the 1 s warm-up as well would give up to 1.5 s.
    let mut spin = spinner();
    let port = server(echo);
    let mut c = cfg(port, 4, 100, 500);
    c.warmup = Duration::from_secs(1);
    c.pid = Some(spin.id());
    let r = run_bounded(&c);
    spin.kill().unwrap();
    spin.wait().unwrap();
    let cpu = r.server_cpu.expect("a server CPU figure");
    assert!(r.server_cpu_error.is_none(), "{:?}", r.server_cpu_error);
    // Clock ticks are 10 ms: allow two, and the reading's own lateness.
    assert!(cpu <= c.duration + Duration::from_millis(30), "{cpu:?}");
    assert!(
        cpu >= Duration::from_millis(50),
        "{cpu:?}: the spinner hardly ran"
    );
    let per = r.server_cpu_us_per_msg().unwrap();
    let want = cpu.as_secs_f64() * 1e6 / r.messages as f64;
    assert!((per - want).abs() < 1e-9);
    assert!(r.to_text().contains(&format!("server (pid {})", spin.id())));
}

#[test]
fn server_gone_before_the_window_closes_is_reported_not_a_panic() {
    let mut short = Command::new("sleep").arg("0.3").spawn().unwrap();
    let pid = short.id();
    // Reaped at once, so no zombie keeps /proc/PID/stat readable.
    let reaper = thread::spawn(move || short.wait());
    let port = server(echo);
    let mut c = cfg(port, 2, 100, 800);
    c.pid = Some(pid);
    let r = run_bounded(&c);
    reaper.join().unwrap().unwrap();
    assert!(r.server_cpu.is_none());
    let e = r.server_cpu_error.clone().expect("an error");
    assert!(e.contains(&format!("--pid {pid}")), "{e}");
    assert!(r.to_json().contains("\"server_cpu_s\":null"));
    assert!(
        r.to_text().contains("server: not measured"),
        "{}",
        r.to_text()
    );
    assert_eq!(r.errors.total(), 0, "{}", r.to_text());
}
