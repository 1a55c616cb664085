//! trace: the execution tracer (Go's `runtime/trace`) and its flight
//! recorder (Go 1.25's `FlightRecorder`).
//!
//! The scheduler calls [`emit`] at each event worth a timeline: a G's step
//! (which M, which P, how it ended), a G readied and by whom, a spawn, a
//! steal, a P handed off, a netpoll poll. [`write_chrome`] turns what was
//! kept into Chrome trace-event JSON, which Perfetto and `chrome://tracing`
//! read: a track per thread, a slice per step, a flow arrow from the event
//! that readied a G to the step it then ran.
//!
//! # Cost
//!
//! Off (the default), an event is one Relaxed load of [`ENABLED`] and a
//! branch, at every site: nothing else runs, nothing is allocated. On, an
//! event is one clock read (`Instant`, the vDSO), a thread-local lookup and
//! a push under the thread's own buffer lock, which only the thread itself
//! and a snapshot take, so it is uncontended but for the instant a snapshot
//! copies the buffer.
//!
//! # Buffers and who owns them
//!
//! Each thread that emits has one [`Buf`]: a ring of at most
//! `Mode::per_thread` events ([`DEFAULT_PER_THREAD`] unless the embedder
//! says otherwise, 40 bytes each: 262,144 events are 10 MiB per thread).
//! The ring keeps the newest: when full, the oldest event goes and
//! `dropped` counts it, so memory is bounded whatever the load. With a
//! window (the flight recorder) events older than the window go as well.
//! The buffer's thread pushes; [`snapshot`] copies; the registry
//! (`TRACER.bufs`) holds every buffer of the current session so that a
//! snapshot reaches the buffers of threads that have exited.
//!
//! # Sessions
//!
//! [`start`] begins a session (a new number, fresh buffers, a new time
//! origin); [`stop`] ends it and returns what was kept. A thread's cached
//! buffer belongs to one session: the first event a thread emits in a new
//! session registers a fresh buffer, so nothing of an earlier session
//! leaks into a later one. [`ENABLED`] is stored after the session is set
//! up (Release) and read Relaxed at the sites, so an emit that sees it on
//! may still find the previous session: it checks `session` under the
//! registry lock before it registers, and events it pushed into a stale
//! buffer are simply not part of the new session.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::g::WaitReason;

/// Whether a session is recording. Relaxed at the emit sites (module docs,
/// "Sessions"); stored Release by `start` after the session is set up.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Events a thread keeps by default (module docs, "Buffers").
pub const DEFAULT_PER_THREAD: usize = 1 << 18;

/// One event. `ts` is nanoseconds since the session began; the meaning of
/// `a`, `b` and `c` depends on `kind` (each [`Kind`] says).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub ts: u64,
    pub kind: Kind,
    pub a: u64,
    pub b: u64,
    pub c: u32,
}

/// What happened. The fields each kind uses are named in its docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A G's step: `a` = G id, `b` = the step's length in ns (`ts` is its
    /// start), `c` = the P's id in the low 16 bits, how it ended
    /// ([`StepEnd`]) in the next 8, the park's wait reason above those.
    Step,
    /// `a` = the G made runnable; `b` = the G whose step readied it (0: no G,
    /// as for the netpoller, a timer or a foreign thread).
    Ready,
    /// `a` = the new G, `b` = the G that spawned it (0: none).
    Spawn,
    /// `a` = the thief's P, `b` = the victim's P, `c` = Gs taken.
    Steal,
    /// A P handed to another M while its G blocks (sysmon's retake, Go's
    /// handoffp): `a` = the P, `b` = the G whose step kept it.
    Handoff,
    /// A netpoll batch that readied Gs (a poll of sockets and timers, or a
    /// deregistration waking its waiters): `a` = how many; a
    /// [`Kind::Ready`] with no readier follows for each.
    Poll,
}

/// How a step ended, in [`Kind::Step`]'s `c`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum StepEnd {
    Yield = 0,
    Park = 1,
    Done = 2,
}

/// How a session keeps events.
#[derive(Clone, Copy, Debug)]
pub struct Mode {
    /// Ring size per thread (module docs, "Buffers").
    pub per_thread: usize,
    /// Keep only events this recent (the flight recorder); None keeps all
    /// that fit.
    pub window: Option<Duration>,
}

impl Default for Mode {
    fn default() -> Mode {
        Mode {
            per_thread: DEFAULT_PER_THREAD,
            window: None,
        }
    }
}

/// One thread's events (module docs, "Buffers").
struct Buf {
    /// A small number naming the thread's track, unique in the session.
    track: u32,
    name: String,
    ring: Mutex<Ring>,
}

struct Ring {
    events: VecDeque<Event>,
    dropped: u64,
}

struct Session {
    number: u64,
    epoch: Instant,
    mode: Mode,
    bufs: Vec<Arc<Buf>>,
    /// G names the embedder gave ([`name_g`]).
    names: HashMap<u64, Box<str>>,
}

struct Tracer {
    /// Bumped by each `start`; a thread's cached buffer is of one number.
    session: AtomicU64,
    state: Mutex<Option<Session>>,
}

fn tracer() -> &'static Tracer {
    static T: OnceLock<Tracer> = OnceLock::new();
    T.get_or_init(|| Tracer {
        session: AtomicU64::new(0),
        state: Mutex::new(None),
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a trace lock leaves plain data behind.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A thread's cached buffer: its session's number, the buffer, and the
/// session's time origin and mode.
struct Local {
    session: u64,
    buf: Arc<Buf>,
    epoch: Instant,
    mode: Mode,
}

thread_local! {
    static LOCAL: RefCell<Option<Local>> = const { RefCell::new(None) };
}

/// Whether a session records: the one check every site makes first.
#[inline(always)]
pub fn enabled() -> bool {
    ENABLED.load(Relaxed)
}

/// Records an event of this thread, if a session records. The sites call
/// it unconditionally; when off it costs one Relaxed load and a branch.
#[inline(always)]
pub fn emit(kind: Kind, a: u64, b: u64, c: u32) {
    if enabled() {
        emit_slow(kind, a, b, c, None);
    }
}

/// [`emit`] for an event that began at `start` (a step): its `b` is the
/// length, measured now.
#[inline(always)]
pub fn emit_since(kind: Kind, start: Option<Instant>, a: u64, c: u32) {
    if let Some(start) = start {
        if enabled() {
            emit_slow(kind, a, 0, c, Some(start));
        }
    }
}

/// The start of a span for [`emit_since`]: a clock read only when on.
#[inline(always)]
pub fn span_start() -> Option<Instant> {
    enabled().then(Instant::now)
}

#[cold]
#[inline(never)]
fn emit_slow(kind: Kind, a: u64, b: u64, c: u32, start: Option<Instant>) {
    let now = Instant::now();
    // Acquire: pairs with `start`'s AcqRel increment, so a number that is
    // new to this thread comes with its session (checked again under the
    // registry lock in `register`).
    let session = tracer().session.load(Acquire);
    // A thread-local that is being destroyed (an event from a TLS
    // destructor) is skipped, not a panic.
    let _ = LOCAL.try_with(|l| {
        let mut l = l.borrow_mut();
        if l.as_ref().is_none_or(|l| l.session != session) {
            *l = register(session);
        }
        let Some(Local {
            buf, epoch, mode, ..
        }) = l.as_ref()
        else {
            return;
        };
        let (ts, b) = match start {
            Some(s) => (
                nanos(s.saturating_duration_since(*epoch)),
                nanos(now.saturating_duration_since(s)),
            ),
            None => (nanos(now.saturating_duration_since(*epoch)), b),
        };
        let mut ring = lock(&buf.ring);
        if ring.events.len() >= mode.per_thread {
            ring.events.pop_front();
            ring.dropped += 1;
        }
        if let Some(w) = mode.window {
            let horizon = nanos(now.saturating_duration_since(*epoch)).saturating_sub(nanos(w));
            while ring.events.front().is_some_and(|e| e.ts < horizon) {
                ring.events.pop_front();
            }
        }
        ring.events.push_back(Event { ts, kind, a, b, c });
    });
}

/// A fresh buffer for this thread in session `number`, if that session
/// still records.
fn register(number: u64) -> Option<Local> {
    let mut st = lock(&tracer().state);
    let s = st.as_mut().filter(|s| s.number == number)?;
    let cur = std::thread::current();
    let track = s.bufs.len() as u32 + 1;
    let name = match cur.name() {
        Some(n) => n.to_string(),
        None => format!("thread {track}"),
    };
    let buf = Arc::new(Buf {
        track,
        name,
        // The whole ring up front: growing it by doubling would copy it
        // each time, inside some G's step. The memory is mapped lazily, so
        // a thread that emits little touches little.
        ring: Mutex::new(Ring {
            events: VecDeque::with_capacity(s.mode.per_thread),
            dropped: 0,
        }),
    });
    s.bufs.push(buf.clone());
    Some(Local {
        session: number,
        buf,
        epoch: s.epoch,
        mode: s.mode,
    })
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Why a session could not start.
#[derive(Debug, PartialEq, Eq)]
pub struct AlreadyTracing;

impl std::fmt::Display for AlreadyTracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a trace is already being recorded (one at a time, as in Go)")
    }
}

impl std::error::Error for AlreadyTracing {}

/// Starts a session. One at a time: Go's `trace.Start` refuses a second.
pub fn start(mode: Mode) -> Result<(), AlreadyTracing> {
    let t = tracer();
    let mut st = lock(&t.state);
    if st.is_some() {
        return Err(AlreadyTracing);
    }
    let number = t.session.fetch_add(1, AcqRel) + 1;
    *st = Some(Session {
        number,
        epoch: Instant::now(),
        mode: Mode {
            per_thread: mode.per_thread.max(1),
            window: mode.window,
        },
        bufs: Vec::new(),
        names: HashMap::new(),
    });
    // Release: an emit that sees this also sees the session (module docs).
    ENABLED.store(true, Release);
    Ok(())
}

/// Ends the session and returns what it kept (None if none recorded).
pub fn stop() -> Option<Snapshot> {
    let t = tracer();
    let mut st = lock(&t.state);
    // Relaxed: an emit that still sees `true` finds no session (or a stale
    // buffer) under the locks, which is all "off" needs to mean.
    ENABLED.store(false, Relaxed);
    let s = st.take()?;
    Some(copy(&s))
}

/// What the session has kept so far, leaving it recording (the flight
/// recorder's `write`). None if no session records.
pub fn snapshot() -> Option<Snapshot> {
    lock(&tracer().state).as_ref().map(copy)
}

/// Names G `g` in the session's output (the embedder's function name).
/// A no-op when no session records.
pub fn name_g(g: u64, name: &str) {
    if !enabled() {
        return;
    }
    if let Some(s) = lock(&tracer().state).as_mut() {
        s.names.entry(g).or_insert_with(|| name.into());
    }
}

fn copy(s: &Session) -> Snapshot {
    // A ring applies the window as its thread pushes; a thread that went
    // quiet still holds old events, so the window is applied here too.
    let horizon = s
        .mode
        .window
        .map_or(0, |w| nanos(s.epoch.elapsed()).saturating_sub(nanos(w)));
    let tracks = s
        .bufs
        .iter()
        .map(|b| {
            let ring = lock(&b.ring);
            Track {
                id: b.track,
                name: b.name.clone(),
                events: ring
                    .events
                    .iter()
                    .filter(|e| e.ts >= horizon)
                    .copied()
                    .collect(),
                dropped: ring.dropped,
            }
        })
        .collect();
    Snapshot {
        tracks,
        names: s.names.clone(),
        window: s.mode.window,
    }
}

/// One thread's events, oldest first.
#[derive(Clone, Debug)]
pub struct Track {
    pub id: u32,
    pub name: String,
    pub events: Vec<Event>,
    /// Events the ring let go when full (not counting the window's).
    pub dropped: u64,
}

/// A session's events: what [`write_chrome`] writes.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub tracks: Vec<Track>,
    pub names: HashMap<u64, Box<str>>,
    pub window: Option<Duration>,
}

impl Snapshot {
    /// The name of G `g`: the embedder's, or Go's "G n".
    pub fn g_name(&self, g: u64) -> String {
        match self.names.get(&g) {
            Some(n) => format!("G {g} {n}"),
            None => format!("G {g}"),
        }
    }
}

/// Splits a [`Kind::Step`] event's `c` (see there).
pub fn step_parts(c: u32) -> (u32, StepEnd, WaitReason) {
    let end = match (c >> 16) & 0xff {
        0 => StepEnd::Yield,
        1 => StepEnd::Park,
        _ => StepEnd::Done,
    };
    (c & 0xffff, end, WaitReason::from_u8((c >> 24) as u8))
}

/// Packs a [`Kind::Step`] event's `c`.
pub fn step_c(p: usize, end: StepEnd, reason: WaitReason) -> u32 {
    (p.min(0xffff) as u32) | (u32::from(end as u8) << 16) | (u32::from(reason as u8) << 24)
}

/// Writes `snap` as Chrome trace-event JSON (the "JSON Object Format":
/// `{"traceEvents": [...]}`), timestamps in microseconds; a park's reason
/// in Go's words ([`WaitReason::as_str`]).
///
/// - a thread-name metadata event per track;
/// - a complete event (`"ph":"X"`, `"cat":"step"`) per step, named by its
///   G, with the P, how it ended and why it waits in `args`;
/// - P ownership: a second process ("gmprt Ps") with a track per P and a
///   slice (`"cat":"p"`) per step it ran, named by the thread holding it;
/// - an instant event per ready, spawn, steal, handoff and poll;
/// - a flow (`"ph":"s"` at the readying event, `"ph":"f"` bound to the
///   readied G's next step) from each ready to the step it led to.
pub fn write_chrome(snap: &Snapshot, out: &mut dyn Write) -> io::Result<()> {
    // Each G's steps, in time order, to join a ready to the step after it.
    let mut steps: HashMap<u64, Vec<(u64, u32)>> = HashMap::new();
    for t in &snap.tracks {
        for e in t.events.iter().filter(|e| e.kind == Kind::Step) {
            steps.entry(e.a).or_default().push((e.ts, t.id));
        }
    }
    for v in steps.values_mut() {
        v.sort_unstable();
    }
    let us = |ns: u64| ns as f64 / 1e3;
    let mut first = true;
    let mut sep = |out: &mut dyn Write| -> io::Result<()> {
        if first {
            first = false;
            Ok(())
        } else {
            out.write_all(b",\n")
        }
    };
    out.write_all(b"{\"traceEvents\":[\n")?;
    sep(out)?;
    write!(
        out,
        r#"{{"ph":"M","pid":1,"tid":0,"name":"process_name","args":{{"name":"gmprt"}}}}"#
    )?;
    let mut flow = 0u64;
    for t in &snap.tracks {
        sep(out)?;
        write!(
            out,
            r#"{{"ph":"M","pid":1,"tid":{},"name":"thread_name","args":{{"name":{}}}}}"#,
            t.id,
            json_str(&t.name)
        )?;
        for e in &t.events {
            sep(out)?;
            let (tid, ts) = (t.id, us(e.ts));
            match e.kind {
                Kind::Step => {
                    let (p, end, why) = step_parts(e.c);
                    let ended = match end {
                        StepEnd::Yield => "yield".to_string(),
                        StepEnd::Park => format!("park: {}", why.as_str()),
                        StepEnd::Done => "done".to_string(),
                    };
                    write!(
                        out,
                        r#"{{"ph":"X","pid":1,"tid":{tid},"ts":{ts:.3},"dur":{:.3},"name":{},"cat":"step","args":{{"g":{},"p":{p},"end":{}}}}}"#,
                        us(e.b),
                        json_str(&snap.g_name(e.a)),
                        e.a,
                        json_str(&ended)
                    )?;
                }
                Kind::Ready => {
                    write!(
                        out,
                        r#"{{"ph":"i","s":"t","pid":1,"tid":{tid},"ts":{ts:.3},"name":"ready G {}","cat":"ready","args":{{"g":{},"by":{}}}}}"#,
                        e.a, e.a, e.b
                    )?;
                    let next = steps.get(&e.a).and_then(|v| {
                        let i = v.partition_point(|&(s, _)| s < e.ts);
                        v.get(i).copied()
                    });
                    if let Some((start, to)) = next {
                        flow += 1;
                        sep(out)?;
                        write!(
                            out,
                            r#"{{"ph":"s","pid":1,"tid":{tid},"ts":{ts:.3},"id":{flow},"name":"ready","cat":"ready"}}"#
                        )?;
                        sep(out)?;
                        write!(
                            out,
                            r#"{{"ph":"f","bp":"e","pid":1,"tid":{to},"ts":{:.3},"id":{flow},"name":"ready","cat":"ready"}}"#,
                            us(start)
                        )?;
                    }
                }
                Kind::Spawn => write!(
                    out,
                    r#"{{"ph":"i","s":"t","pid":1,"tid":{tid},"ts":{ts:.3},"name":"spawn G {}","cat":"spawn","args":{{"g":{},"by":{}}}}}"#,
                    e.a, e.a, e.b
                )?,
                Kind::Steal => write!(
                    out,
                    r#"{{"ph":"i","s":"t","pid":1,"tid":{tid},"ts":{ts:.3},"name":"steal","cat":"steal","args":{{"p":{},"from_p":{},"gs":{}}}}}"#,
                    e.a, e.b, e.c
                )?,
                Kind::Handoff => write!(
                    out,
                    r#"{{"ph":"i","s":"t","pid":1,"tid":{tid},"ts":{ts:.3},"name":"handoff P {}","cat":"handoff","args":{{"p":{},"g":{}}}}}"#,
                    e.a, e.a, e.b
                )?,
                Kind::Poll => write!(
                    out,
                    r#"{{"ph":"i","s":"t","pid":1,"tid":{tid},"ts":{ts:.3},"name":"netpoll","cat":"netpoll","args":{{"ready":{}}}}}"#,
                    e.a
                )?,
            }
        }
    }
    // P ownership: a second process with a track per P, a slice per step
    // the P ran, named by the thread that held it (sysmon's handoffs show
    // as the P's slices moving from one thread to another).
    let mut ps: Vec<usize> = Vec::new();
    for t in &snap.tracks {
        for e in t.events.iter().filter(|e| e.kind == Kind::Step) {
            let (p, _, _) = step_parts(e.c);
            let p = p as usize;
            if !ps.contains(&p) {
                ps.push(p);
                sep(out)?;
                write!(
                    out,
                    r#"{{"ph":"M","pid":2,"tid":{p},"name":"thread_name","args":{{"name":"P {p}"}}}}"#
                )?;
            }
            sep(out)?;
            write!(
                out,
                r#"{{"ph":"X","pid":2,"tid":{p},"ts":{:.3},"dur":{:.3},"name":{},"cat":"p","args":{{"held_by":{}}}}}"#,
                us(e.ts),
                us(e.b),
                json_str(&t.name),
                json_str(&snap.g_name(e.a))
            )?;
        }
    }
    if !ps.is_empty() {
        sep(out)?;
        write!(
            out,
            r#"{{"ph":"M","pid":2,"tid":0,"name":"process_name","args":{{"name":"gmprt Ps"}}}}"#
        )?;
    }
    let dropped: u64 = snap.tracks.iter().map(|t| t.dropped).sum();
    write!(
        out,
        "\n],\"displayTimeUnit\":\"ns\",\"otherData\":{{\"producer\":\"gmprt\",\"dropped_events\":{dropped},\"window_s\":{}}}}}\n",
        snap.window
            .map_or("null".to_string(), |w| format!("{:.3}", w.as_secs_f64()))
    )
}

/// `s` as a JSON string literal.
fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for ch in s.chars() {
        match ch {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    // Sessions are process-wide: the tests that start one take turns.
    static SERIAL: Mutex<()> = Mutex::new(());

    #[test]
    fn off_records_nothing_and_on_keeps_every_thread() {
        let _s = lock(&SERIAL);
        emit(Kind::Spawn, 1, 0, 0);
        assert!(snapshot().is_none());
        start(Mode::default()).unwrap();
        assert_eq!(start(Mode::default()), Err(AlreadyTracing));
        let t0 = span_start();
        emit(Kind::Spawn, 7, 1, 0);
        emit_since(
            Kind::Step,
            t0,
            7,
            step_c(0, StepEnd::Park, WaitReason::Select),
        );
        std::thread::Builder::new()
            .name("other".into())
            .spawn(|| emit(Kind::Ready, 7, 0, 0))
            .unwrap()
            .join()
            .unwrap();
        name_g(7, "handle");
        let snap = stop().unwrap();
        assert!(!enabled());
        // Other tests of this binary may run Gs meanwhile: look at ours.
        let me = std::thread::current().name().map(str::to_string);
        let ours = |t: &&Track| Some(&t.name) == me.as_ref() || t.name == "other";
        let all: Vec<Event> = snap
            .tracks
            .iter()
            .filter(ours)
            .flat_map(|t| t.events.clone())
            .collect();
        assert_eq!(all.len(), 3, "{snap:?}");
        assert!(snap.tracks.iter().any(|t| t.name == "other"));
        let step = all.iter().find(|e| e.kind == Kind::Step).unwrap();
        assert_eq!(step_parts(step.c), (0, StepEnd::Park, WaitReason::Select));
        assert_eq!(snap.g_name(7), "G 7 handle");
        // A new session starts empty: this thread's buffer is a new one.
        start(Mode::default()).unwrap();
        emit(Kind::Spawn, 8, 0, 0);
        let snap = stop().unwrap();
        let mine: Vec<&Track> = snap.tracks.iter().filter(ours).collect();
        assert_eq!(mine.len(), 1);
        assert_eq!(mine[0].events.len(), 1);
    }

    #[test]
    fn the_ring_keeps_the_newest_and_counts_the_rest() {
        let _s = lock(&SERIAL);
        start(Mode {
            per_thread: 4,
            window: None,
        })
        .unwrap();
        for g in 0..10 {
            emit(Kind::Spawn, g, 0, 0);
        }
        let snap = stop().unwrap();
        let me = std::thread::current().name().map(str::to_string);
        let t = snap
            .tracks
            .iter()
            .find(|t| Some(&t.name) == me.as_ref())
            .unwrap();
        assert_eq!(
            t.events.iter().map(|e| e.a).collect::<Vec<_>>(),
            [6, 7, 8, 9]
        );
        assert_eq!(t.dropped, 6);
    }

    #[test]
    fn chrome_json_joins_a_ready_to_the_next_step() {
        let snap = Snapshot {
            tracks: vec![
                Track {
                    id: 1,
                    name: "gmprt-m1".into(),
                    events: vec![
                        Event {
                            ts: 1_000,
                            kind: Kind::Ready,
                            a: 2,
                            b: 1,
                            c: 0,
                        },
                        Event {
                            ts: 500,
                            kind: Kind::Step,
                            a: 1,
                            b: 900,
                            c: step_c(0, StepEnd::Park, WaitReason::ChanReceive),
                        },
                    ],
                    dropped: 0,
                },
                Track {
                    id: 2,
                    name: "gmprt-m2 \"x\"".into(),
                    events: vec![Event {
                        ts: 2_000,
                        kind: Kind::Step,
                        a: 2,
                        b: 10,
                        c: step_c(1, StepEnd::Done, WaitReason::Other),
                    }],
                    dropped: 0,
                },
            ],
            names: HashMap::from([(2, "worker".into())]),
            window: None,
        };
        let mut out = Vec::new();
        write_chrome(&snap, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(r#""ph":"s","pid":1,"tid":1,"ts":1.000,"id":1"#),
            "{text}"
        );
        assert!(
            text.contains(r#""ph":"f","bp":"e","pid":1,"tid":2,"ts":2.000,"id":1"#),
            "{text}"
        );
        assert!(text.contains(r#""end":"park: chan receive""#));
        assert!(text.contains(r#""name":"G 2 worker""#));
        assert!(text.contains(r#""pid":2,"tid":1,"name":"thread_name","args":{"name":"P 1"}"#));
        assert!(text.contains(r#"gmprt-m2 \"x\""#));
    }
}
