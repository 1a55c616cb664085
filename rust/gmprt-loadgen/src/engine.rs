//! The event loops: one `mio::Poll` per thread, each owning a share of the
//! connections, edge-triggered.
//!
//! A thread first makes its connections (non-blocking connects, bounded by
//! the connect timeout), reports ready, and waits for the common start time
//! so every thread measures the same window. Then each connection runs its
//! message loop in [`drive`], called on every event for it: send what is
//! left of the message, read what has come back, verify it, and when the
//! whole message is back, record it and send the next.

use std::io::{self, ErrorKind, Read, Write};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest as MioInterest, Registry};

use crate::Target;
use mio::{Events, Interest, Poll, Token};

use crate::{cpu, Config, Errors, Histogram, Latency, Report};

/// Distinct message start offsets: a prime, so that `i * A + k * B` with
/// `A`, `B` prime to it visits every offset.
const WINDOW: usize = 65_521;
const CONN_STRIDE: u64 = 7_919;
const MSG_STRIDE: u64 = 104_729;
/// Largest single read.
const SCRATCH: usize = 64 * 1024;

/// The shared pseudo-random bytes every message is a slice of.
pub(crate) struct Pattern {
    bytes: Vec<u8>,
    size: usize,
    /// Line mode: every message is printable ASCII ending in its only
    /// `\n`, for servers that echo line by line (`readline`).
    lines: bool,
}

impl Pattern {
    pub(crate) fn new(size: usize, lines: bool) -> Pattern {
        let mut x: u64 = 0x6A09_E667_F3BC_C908;
        let mut bytes = Vec::with_capacity(size + WINDOW + 8);
        while bytes.len() < size + WINDOW {
            // splitmix64
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            bytes.extend_from_slice(&z.to_le_bytes());
        }
        bytes.truncate(size + WINDOW);
        if lines {
            // Printable bytes (32..=126, so never `\n`), and a `\n` closing
            // every size-aligned slice: `message` starts only at those.
            for b in bytes.iter_mut() {
                *b = b' ' + *b % 95;
            }
            for end in (size - 1..bytes.len()).step_by(size) {
                bytes[end] = b'\n';
            }
        }
        Pattern { bytes, size, lines }
    }

    /// Where message `msg` of connection `conn` starts.
    pub(crate) fn offset(conn: u64, msg: u64) -> usize {
        let w = WINDOW as u64;
        (((conn % w) * CONN_STRIDE + (msg % w) * MSG_STRIDE) % w) as usize
    }

    fn message(&self, off: usize) -> &[u8] {
        // In line mode a message starts where the previous line ended.
        let off = if self.lines {
            off - off % self.size
        } else {
            off
        };
        &self.bytes[off..off + self.size]
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Connecting,
    /// Connected, waiting for the start.
    Ready,
    Running,
    Dead,
}

struct Conn {
    /// Global connection number (selects the byte pattern).
    id: u64,
    stream: Option<Stream>,
    state: State,
    /// Message number on this connection.
    msg: u64,
    /// Offset of the current message in the pattern.
    off: usize,
    sent: usize,
    recvd: usize,
    started: Instant,
}

#[derive(Clone, Copy, Debug)]
struct Window {
    warm_end: Instant,
    end: Instant,
}

enum Fail {
    Connect(String),
    Reset(String),
    Closed(String),
    Mismatch(String),
    Other(String),
}

fn io_fail(id: u64, what: &str, e: io::Error) -> Fail {
    let text = format!("connection {id}: {what}: {e}");
    match e.kind() {
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            Fail::Reset(text)
        }
        _ => Fail::Other(text),
    }
}

#[derive(Default)]
struct ThreadResult {
    hist: Histogram,
    messages: u64,
    errors: Errors,
    first_error: Option<(Instant, String)>,
    connected: usize,
    alive: usize,
}

impl ThreadResult {
    fn fail(&mut self, c: &mut Conn, f: Fail) {
        c.stream = None; // closing the fd also removes it from the poll
        c.state = State::Dead;
        let text = match f {
            Fail::Connect(t) => {
                self.errors.connect += 1;
                t
            }
            Fail::Reset(t) => {
                self.errors.reset += 1;
                t
            }
            Fail::Closed(t) => {
                self.errors.closed += 1;
                t
            }
            Fail::Mismatch(t) => {
                self.errors.mismatch += 1;
                t
            }
            Fail::Other(t) => {
                self.errors.other += 1;
                t
            }
        };
        if self.first_error.is_none() {
            self.first_error = Some((Instant::now(), text));
        }
    }
}

/// Runs connection `c` as far as it goes without blocking. `batch` is when
/// the poll that led here returned: a message whose echo is already complete
/// by the first read arrived no later than that.
fn drive(
    c: &mut Conn,
    pattern: &Pattern,
    scratch: &mut [u8],
    res: &mut ThreadResult,
    win: &Window,
    batch: Instant,
) -> Result<(), Fail> {
    let size = pattern.size;
    let Some(stream) = c.stream.as_mut() else {
        return Ok(());
    };
    let mut fresh_message = false;
    loop {
        let msg = pattern.message(c.off);
        while c.sent < size {
            match stream.write(&msg[c.sent..]) {
                Ok(0) => {
                    return Err(Fail::Other(format!(
                        "connection {}: write returned 0",
                        c.id
                    )))
                }
                Ok(n) => c.sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_fail(c.id, "send", e)),
            }
        }
        if fresh_message && c.sent == size {
            // The echo cannot be complete yet in the common case; its
            // arrival raises a readable edge (epoll and kqueue signal every
            // arrival), so skip a read that would only say WouldBlock.
            return Ok(());
        }
        while c.recvd < size {
            let want = (size - c.recvd).min(scratch.len());
            match stream.read(&mut scratch[..want]) {
                Ok(0) => {
                    return Err(Fail::Closed(format!(
                        "connection {}: peer closed the connection with {} of {} bytes of \
                         message {} echoed",
                        c.id, c.recvd, size, c.msg
                    )))
                }
                Ok(n) => {
                    let expect = &msg[c.recvd..c.recvd + n];
                    let got = &scratch[..n];
                    if got != expect {
                        let i = got
                            .iter()
                            .zip(expect)
                            .position(|(a, b)| a != b)
                            .unwrap_or(0);
                        return Err(Fail::Mismatch(format!(
                            "connection {}: message {}, byte {}: expected {:#04x}, got {:#04x}",
                            c.id,
                            c.msg,
                            c.recvd + i,
                            expect[i],
                            got[i]
                        )));
                    }
                    if c.recvd + n > c.sent {
                        return Err(Fail::Mismatch(format!(
                            "connection {}: message {}: echo ran ahead of the bytes sent",
                            c.id, c.msg
                        )));
                    }
                    c.recvd += n;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_fail(c.id, "recv", e)),
            }
        }
        if c.recvd < size {
            return Ok(());
        }
        let done = if fresh_message {
            Instant::now()
        } else {
            batch.max(c.started)
        };
        if done >= win.warm_end && done < win.end {
            res.hist
                .record(done.duration_since(c.started).as_nanos() as u64);
            res.messages += 1;
        }
        if done >= win.end {
            return Ok(());
        }
        c.msg += 1;
        c.off = Pattern::offset(c.id, c.msg);
        c.sent = 0;
        c.recvd = 0;
        c.started = Instant::now();
        fresh_message = true;
    }
}

/// A connection's socket: TCP, or a Unix stream (`--unix`), dispatched by
/// a match per call (the syscall dwarfs it).
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn connect(to: &Target) -> io::Result<Stream> {
        match to {
            Target::Tcp(a) => TcpStream::connect(*a).map(Stream::Tcp),
            Target::Unix(p) => UnixStream::connect(p).map(Stream::Unix),
        }
    }

    fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            Stream::Tcp(s) => s.take_error(),
            Stream::Unix(s) => s.take_error(),
        }
    }

    /// Ok once connected (mio's recipe: a peer address exists).
    fn peer_check(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.peer_addr().map(drop),
            Stream::Unix(s) => s.peer_addr().map(drop),
        }
    }

    fn set_nodelay(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_nodelay(true),
            Stream::Unix(_) => Ok(()),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for Stream {
    fn register(&mut self, r: &Registry, t: Token, i: MioInterest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.register(r, t, i),
            Stream::Unix(s) => s.register(r, t, i),
        }
    }

    fn reregister(&mut self, r: &Registry, t: Token, i: MioInterest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.reregister(r, t, i),
            Stream::Unix(s) => s.reregister(r, t, i),
        }
    }

    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.deregister(r),
            Stream::Unix(s) => s.deregister(r),
        }
    }
}

fn connect_check(c: &mut Conn) -> Result<bool, Fail> {
    let Some(s) = c.stream.as_mut() else {
        return Ok(false);
    };
    match s.take_error() {
        Ok(Some(e)) | Err(e) => return Err(Fail::Connect(format!("connection {}: {e}", c.id))),
        Ok(None) => {}
    }
    match s.peer_check() {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotConnected => return Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => return Ok(false),
        Err(e) => return Err(Fail::Connect(format!("connection {}: {e}", c.id))),
    }
    s.set_nodelay()
        .map_err(|e| io_fail(c.id, "TCP_NODELAY", e))?;
    Ok(true)
}

struct Worker {
    ids: Vec<u64>,
    addr: Target,
    connect_timeout: Duration,
    pattern: Arc<Pattern>,
    ready: mpsc::Sender<()>,
    go: mpsc::Receiver<Window>,
}

impl Worker {
    fn run(self) -> ThreadResult {
        let mut res = ThreadResult::default();
        let mut poll = match Poll::new() {
            Ok(p) => p,
            Err(e) => {
                // Nothing can run on this thread: every connection fails.
                for &id in &self.ids {
                    res.errors.connect += 1;
                    res.first_error
                        .get_or_insert((Instant::now(), format!("connection {id}: poll: {e}")));
                }
                let _ = self.ready.send(());
                return res;
            }
        };
        let now = Instant::now();
        let mut conns: Vec<Conn> = Vec::with_capacity(self.ids.len());
        let mut pending = 0usize;
        for (idx, &id) in self.ids.iter().enumerate() {
            let mut c = Conn {
                id,
                stream: None,
                state: State::Connecting,
                msg: 0,
                off: Pattern::offset(id, 0),
                sent: 0,
                recvd: 0,
                started: now,
            };
            let made = Stream::connect(&self.addr).and_then(|mut s| {
                poll.registry().register(
                    &mut s,
                    Token(idx),
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                Ok(s)
            });
            match made {
                Ok(s) => {
                    c.stream = Some(s);
                    pending += 1;
                }
                Err(e) => res.fail(&mut c, Fail::Connect(format!("connection {id}: {e}"))),
            }
            conns.push(c);
        }

        let mut events = Events::with_capacity(1024);
        let deadline = now + self.connect_timeout;
        while pending > 0 {
            let now = Instant::now();
            if now >= deadline {
                for c in conns.iter_mut().filter(|c| c.state == State::Connecting) {
                    let text = format!("connection {}: connect timed out", c.id);
                    res.fail(c, Fail::Connect(text));
                }
                break;
            }
            if let Err(e) = poll.poll(&mut events, Some(deadline - now)) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                for c in conns.iter_mut().filter(|c| c.state == State::Connecting) {
                    let text = format!("connection {}: poll: {e}", c.id);
                    res.fail(c, Fail::Connect(text));
                }
                break;
            }
            for ev in events.iter() {
                let c = &mut conns[ev.token().0];
                if c.state != State::Connecting {
                    continue;
                }
                match connect_check(c) {
                    Ok(false) => {}
                    Ok(true) => {
                        c.state = State::Ready;
                        res.connected += 1;
                        pending -= 1;
                    }
                    Err(f) => {
                        res.fail(c, f);
                        pending -= 1;
                    }
                }
            }
        }

        let _ = self.ready.send(());
        drop(self.ready);
        let Ok(win) = self.go.recv() else {
            return res;
        };

        let pattern = &*self.pattern;
        let mut scratch = vec![0u8; SCRATCH.min(pattern.size.max(1))];
        for c in conns.iter_mut().filter(|c| c.state == State::Ready) {
            c.state = State::Running;
            c.started = Instant::now();
            if let Err(f) = drive(c, pattern, &mut scratch, &mut res, &win, c.started) {
                res.fail(c, f);
            }
        }
        loop {
            let now = Instant::now();
            if now >= win.end || conns.iter().all(|c| c.state != State::Running) {
                break;
            }
            if let Err(e) = poll.poll(&mut events, Some(win.end - now)) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                for c in conns.iter_mut().filter(|c| c.state == State::Running) {
                    let text = format!("connection {}: poll: {e}", c.id);
                    res.fail(c, Fail::Other(text));
                }
                break;
            }
            let batch = Instant::now();
            for ev in events.iter() {
                let c = &mut conns[ev.token().0];
                if c.state != State::Running {
                    continue;
                }
                if let Err(f) = drive(c, pattern, &mut scratch, &mut res, &win, batch) {
                    res.fail(c, f);
                }
            }
        }
        res.alive = conns.iter().filter(|c| c.state == State::Running).count();
        res
    }
}

/// Sleeps until `t`, or until every worker has finished (all its
/// connections failed: the window has nothing more to measure).
fn sleep_until(t: Instant, workers: &[JoinHandle<ThreadResult>]) {
    loop {
        let now = Instant::now();
        if now >= t || workers.iter().all(JoinHandle::is_finished) {
            return;
        }
        // Short naps so a run whose connections all failed ends soon;
        // the last one ends at `t` itself.
        thread::sleep((t - now).min(Duration::from_millis(20)));
    }
}

/// The CPU clocks at one edge of the window.
struct CpuMark {
    client: Duration,
    server: Option<io::Result<Duration>>,
}

fn cpu_mark(pid: Option<u32>) -> CpuMark {
    CpuMark {
        client: cpu::own_cpu(),
        server: pid.map(cpu::process_cpu),
    }
}

pub(crate) fn run(cfg: &Config, addr: Target) -> io::Result<Report> {
    let threads = cfg.threads.clamp(1, cfg.connections.max(1));
    let pattern = Arc::new(Pattern::new(cfg.size, cfg.lines));
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut gos = Vec::with_capacity(threads);
    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        let ids: Vec<u64> = (t..cfg.connections)
            .step_by(threads)
            .map(|i| i as u64)
            .collect();
        let (go_tx, go_rx) = mpsc::channel();
        gos.push(go_tx);
        let w = Worker {
            ids,
            addr: addr.clone(),
            connect_timeout: cfg.connect_timeout,
            pattern: pattern.clone(),
            ready: ready_tx.clone(),
            go: go_rx,
        };
        handles.push(
            thread::Builder::new()
                .name(format!("loadgen-{t}"))
                .spawn(move || w.run())?,
        );
    }
    drop(ready_tx);
    // Every worker reports once (or drops its sender by dying).
    for _ in 0..threads {
        if ready_rx.recv().is_err() {
            break;
        }
    }
    let start = Instant::now();
    let win = Window {
        warm_end: start + cfg.warmup,
        end: start + cfg.warmup + cfg.duration,
    };
    for g in &gos {
        let _ = g.send(win);
    }
    // The workers count a message when its echo completes inside the
    // window; this thread reads the CPU clocks as the window opens and
    // closes, so the CPU figures cover the same span.
    sleep_until(win.warm_end, &handles);
    let open = cpu_mark(cfg.pid);
    sleep_until(win.end, &handles);
    let close = cpu_mark(cfg.pid);
    let (server_cpu, server_cpu_error) = match (open.server, close.server) {
        (Some(Ok(a)), Some(Ok(b))) => (Some(b.saturating_sub(a)), None),
        (Some(Err(e)), _) | (_, Some(Err(e))) => (None, Some(e.to_string())),
        _ => (None, None),
    };

    let mut hist = Histogram::new();
    let mut messages = 0;
    let mut errors = Errors::default();
    let mut first: Option<(Instant, String)> = None;
    let mut connected = 0;
    let mut alive = 0;
    for h in handles {
        let r = h
            .join()
            .map_err(|_| io::Error::other("a load generator thread panicked"))?;
        hist.merge(&r.hist);
        messages += r.messages;
        errors.add(&r.errors);
        connected += r.connected;
        alive += r.alive;
        if let Some((t, text)) = r.first_error {
            if first.as_ref().is_none_or(|(ft, _)| t < *ft) {
                first = Some((t, text));
            }
        }
    }
    let secs = cfg.duration.as_secs_f64();
    let msgs_per_s = messages as f64 / secs;
    Ok(Report {
        addr,
        connections: cfg.connections,
        connected,
        alive_at_end: alive,
        size: cfg.size,
        threads,
        warmup: cfg.warmup,
        elapsed: cfg.duration,
        messages,
        msgs_per_s,
        mib_per_s: msgs_per_s * cfg.size as f64 / (1024.0 * 1024.0),
        latency: Latency {
            min: hist.min(),
            mean: hist.mean(),
            p50: hist.percentile(50.0),
            p90: hist.percentile(90.0),
            p99: hist.percentile(99.0),
            p999: hist.percentile(99.9),
            max: hist.max(),
        },
        histogram: hist,
        errors,
        first_error: first.map(|(_, t)| t),
        server_pid: cfg.pid,
        server_cpu,
        server_cpu_error,
        client_cpu: close.client.saturating_sub(open.client),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_of_concurrent_messages_are_distinct() {
        // For any one message number, 1,000 connections start at 1,000
        // distinct offsets; consecutive messages of a connection differ.
        for msg in [0u64, 1, 7, 65_520, 65_521, 1 << 40] {
            let mut seen = std::collections::HashSet::new();
            for conn in 0..1_000u64 {
                assert!(seen.insert(Pattern::offset(conn, msg)));
            }
        }
        for conn in 0..100u64 {
            for msg in 0..100u64 {
                assert_ne!(Pattern::offset(conn, msg), Pattern::offset(conn, msg + 1));
            }
        }
    }

    #[test]
    fn pattern_is_not_periodic() {
        let p = Pattern::new(1024, false);
        let a = p.message(Pattern::offset(0, 0));
        let b = p.message(Pattern::offset(1, 0));
        let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
        // Random bytes agree about 1 time in 256.
        assert!(same < 30, "{same} equal bytes");
    }

    #[test]
    fn line_mode_messages_are_lines() {
        let p = Pattern::new(100, true);
        for conn in 0..50u64 {
            for msg in 0..50u64 {
                let m = p.message(Pattern::offset(conn, msg));
                assert_eq!(m.len(), 100);
                assert_eq!(m[99], b'\n');
                assert!(m[..99].iter().all(|&b| (32..=126).contains(&b)));
            }
        }
    }
}
