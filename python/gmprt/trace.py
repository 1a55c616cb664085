"""Execution traces: a timeline of every G step on every thread.

Record a program (or part of it) into a Chrome trace-event JSON file, which
Perfetto (https://ui.perfetto.dev) and ``chrome://tracing`` open::

    with gmprt.trace.record("trace.json"):
        gmprt.run(main)

The file has a track per thread (each M, sysmon, the thread in ``run()``), a
slice per G step (the G's id and function, its P, and how the step ended:
yield, park and why, done), a track per P showing which thread held it for
each step (the "gmprt Ps" process), instants for Gs readied, spawned, stolen and
handed off and for netpoll polls, and a flow arrow from each event that
readied a G to the step the G then ran. Go's ``runtime/trace``, as JSON.

The flight recorder keeps only the last few seconds, in memory, and writes
them when asked, as Go 1.25's ``FlightRecorder`` does: keep one running in a
server and write it when a request is slow::

    rec = gmprt.trace.flight_recorder(seconds=10)
    ...
    rec.write("slow-request.json")

From the shell::

    python -m gmprt.trace view trace.json -o trace.png   # the timeline, as a picture
    python -m gmprt.trace summary trace.json             # run, wait, scheduling latency

Cost: while nothing records, each event site in the scheduler is one relaxed
load and a branch. While recording, an event is a clock read and a push onto
its thread's ring. Memory is bounded: each thread keeps at most
``per_thread`` events (40 bytes each; the default 262,144 is 10 MiB per
thread) and drops the oldest beyond that (the file says how many in
``otherData.dropped_events``). One recording at a time, process-wide.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import sys
import zlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import IO, Any

from . import _gmprt

__all__ = [
    "DEFAULT_PER_THREAD",
    "EVENT_BYTES",
    "FlightRecorder",
    "TraceFileError",
    "flight_recorder",
    "load",
    "main",
    "record",
    "start",
    "stop",
    "summary",
    "view",
]

#: Events each thread keeps by default (the ring's size).
DEFAULT_PER_THREAD = 1 << 18
#: Bytes one kept event takes.
EVENT_BYTES = 40

_out: IO[bytes] | None = None


def _open(path: str | os.PathLike[str]) -> IO[bytes]:
    # Opened before anything records, so a path that cannot be written
    # fails at the call, not at the end of a long run.
    return open(path, "wb")


def start(path: str | os.PathLike[str], *, per_thread: int = DEFAULT_PER_THREAD) -> None:
    """Start recording into ``path``; :func:`stop` writes the file.

    Raises:
        OSError: ``path`` cannot be written (raised here, before recording).
        RuntimeError: a recording (or a flight recorder) is already running.
        ValueError: ``per_thread`` below 1.
    """
    global _out
    if _gmprt._trace_enabled():
        raise RuntimeError("a trace is already being recorded (one at a time, as in Go)")
    f = _open(path)
    try:
        _gmprt._trace_start(per_thread)
    except BaseException:
        f.close()
        raise
    _out = f


def stop() -> None:
    """Stop the recording :func:`start` began and write its file.

    Raises:
        RuntimeError: nothing is being recorded by :func:`start`.
    """
    global _out
    f, _out = _out, None
    if f is None:
        raise RuntimeError("gmprt.trace.stop() without gmprt.trace.start()")
    with f:
        data = _gmprt._trace_stop()
        if data is not None:
            f.write(data)


@contextmanager
def record(path: str | os.PathLike[str], *, per_thread: int = DEFAULT_PER_THREAD) -> Iterator[None]:
    """Record everything gmprt does inside the ``with`` block into ``path``.

    ``path`` is opened at once: an unwritable path raises ``OSError`` here.
    The file is written when the block ends, whether or not it raised.
    """
    start(path, per_thread=per_thread)
    try:
        yield
    finally:
        stop()


class FlightRecorder:
    """Keeps the last ``seconds`` of events in memory; :meth:`write` saves
    them. Go 1.25's ``runtime/trace.FlightRecorder``.

    Memory is bounded by ``per_thread`` events per thread whatever the
    window; a busy program may keep less than ``seconds`` because of it.
    """

    def __init__(self, seconds: float = 10.0, *, per_thread: int = DEFAULT_PER_THREAD) -> None:
        if not seconds > 0:
            raise ValueError(f"seconds must be positive, got {seconds!r}")
        self.seconds = float(seconds)
        self.per_thread = per_thread
        self._running = False

    def start(self) -> FlightRecorder:
        """Begin keeping events. Raises ``RuntimeError`` if anything records."""
        if self._running:
            raise RuntimeError("this flight recorder is already running")
        _gmprt._trace_start(self.per_thread, self.seconds)
        self._running = True
        return self

    def write(self, path: str | os.PathLike[str]) -> int:
        """Write the events kept now (the last ``seconds``) to ``path`` as
        trace JSON and go on recording. Returns the bytes written."""
        if not self._running:
            raise RuntimeError("the flight recorder is not running")
        with _open(path) as f:
            data = _gmprt._trace_snapshot() or b""
            f.write(data)
        return len(data)

    def stop(self) -> None:
        """Stop keeping events and free them."""
        if self._running:
            self._running = False
            _gmprt._trace_stop()

    def __enter__(self) -> FlightRecorder:
        return self if self._running else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def flight_recorder(
    seconds: float = 10.0, *, per_thread: int = DEFAULT_PER_THREAD
) -> FlightRecorder:
    """Start a :class:`FlightRecorder` keeping the last ``seconds``."""
    return FlightRecorder(seconds, per_thread=per_thread).start()


# -- reading a trace ----------------------------------------------------------


class TraceFileError(ValueError):
    """A trace file that is not trace JSON, or is cut short."""


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The trace in ``path``, parsed. A file cut short (a program killed
    while writing, a partial copy) raises :class:`TraceFileError` saying
    where it ends."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as e:
        # A cut inside a string is reported at the string's opening quote.
        if e.pos >= len(raw.rstrip()) - 1 or e.msg.startswith("Unterminated string"):
            raise TraceFileError(
                f"{os.fspath(path)} is cut at byte {len(raw)} (its end; the JSON "
                f"stops inside {'a string' if e.msg.startswith('Unterminated') else 'a value'} "
                f"begun at line {e.lineno}, column {e.colno})"
            ) from None
        raise TraceFileError(
            f"{os.fspath(path)} is damaged at byte {e.pos} of {len(raw)} "
            f"(line {e.lineno}, column {e.colno}): {e.msg}"
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list):
        raise TraceFileError(f"{os.fspath(path)} is not a trace: no traceEvents list")
    return doc


def _percentile(sorted_xs: Sequence[float], q: float) -> float:
    if not sorted_xs:
        return 0.0
    i = min(len(sorted_xs) - 1, max(0, round(q * (len(sorted_xs) - 1))))
    return sorted_xs[i]


def summary(doc: dict[str, Any]) -> dict[str, Any]:
    """Per-G run time, wait time by reason, and scheduling latency (from a
    G being readied to its next step starting), in microseconds.

    Returns ``{"gs": {id: {"name", "steps", "run_us", "wait_us": {reason:
    us}}}, "latency_us": {"count", "p50", "p90", "p99", "max"},
    "dropped_events": n}``.
    """
    steps: dict[int, list[tuple[float, float, str, str]]] = defaultdict(list)
    readies: list[tuple[int, float]] = []
    for e in doc["traceEvents"]:
        ph, args = e.get("ph"), e.get("args") or {}
        if ph == "X" and e.get("cat") == "step":
            steps[args["g"]].append((e["ts"], e.get("dur", 0.0), args.get("end", ""), e["name"]))
        elif ph == "i" and e.get("cat") == "ready":
            readies.append((args["g"], e["ts"]))
    gs: dict[int, dict[str, Any]] = {}
    for g, ss in steps.items():
        ss.sort()
        wait: dict[str, float] = defaultdict(float)
        for (ts, dur, end, _), (nts, _, _, _) in zip(ss, ss[1:], strict=False):
            reason = end.removeprefix("park: ") if end.startswith("park") else "runnable"
            wait[reason] += max(0.0, nts - (ts + dur))
        gs[g] = {
            "name": ss[0][3],
            "steps": len(ss),
            "run_us": sum(s[1] for s in ss),
            "wait_us": dict(wait),
        }
    lat: list[float] = []
    starts = {g: [s[0] for s in ss] for g, ss in steps.items()}
    for g, ts in readies:
        st = starts.get(g)
        if not st:
            continue
        i = bisect.bisect_left(st, ts)
        if i < len(st):
            lat.append(st[i] - ts)
    lat.sort()
    return {
        "gs": gs,
        "latency_us": {
            "count": len(lat),
            "p50": _percentile(lat, 0.50),
            "p90": _percentile(lat, 0.90),
            "p99": _percentile(lat, 0.99),
            "max": lat[-1] if lat else 0.0,
        },
        "dropped_events": (doc.get("otherData") or {}).get("dropped_events", 0),
    }


def _format_summary(s: dict[str, Any], top: int) -> str:
    lines = []
    lat = s["latency_us"]
    lines.append(
        f"scheduling latency (ready -> running), {lat['count']} readies: "
        f"p50 {lat['p50']:.1f} µs  p90 {lat['p90']:.1f} µs  p99 {lat['p99']:.1f} µs  "
        f"max {lat['max']:.1f} µs"
    )
    if s["dropped_events"]:
        lines.append(f"({s['dropped_events']} events were dropped: the rings were full)")
    lines.append("")
    lines.append(f"{'G':>8}  {'steps':>7}  {'run ms':>9}  wait ms by reason  name")
    ranked = sorted(s["gs"].items(), key=lambda kv: -kv[1]["run_us"])
    for g, r in ranked[:top]:
        waits = ", ".join(
            f"{k} {v / 1e3:.2f}" for k, v in sorted(r["wait_us"].items(), key=lambda kv: -kv[1])
        )
        lines.append(
            f"{g:>8}  {r['steps']:>7}  {r['run_us'] / 1e3:>9.3f}  {waits or '-'}  {r['name']}"
        )
    if len(ranked) > top:
        lines.append(f"... and {len(ranked) - top} more Gs")
    return "\n".join(lines)


def _colour(g: int) -> tuple[float, float, float, float]:
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    return cmap((zlib.crc32(str(g).encode()) % 20) / 20)


def view(doc: dict[str, Any], out: str | os.PathLike[str], *, title: str | None = None) -> None:
    """Draw the timeline of ``doc`` into the PNG ``out``: one row per thread,
    a bar per G step coloured by G, a mark where a step ended in a park
    (coloured by the reason)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names: dict[int, str] = {}
    bars: dict[int, list[tuple[float, float, int]]] = defaultdict(list)
    parks: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for e in doc["traceEvents"]:
        ph, args = e.get("ph"), e.get("args") or {}
        if ph == "M" and e.get("name") == "thread_name" and e.get("pid") == 1:
            names[e["tid"]] = args.get("name", f"thread {e['tid']}")
        elif ph == "X" and e.get("cat") == "step":
            bars[e["tid"]].append((e["ts"], e.get("dur", 0.0), args["g"]))
            end = args.get("end", "")
            if end.startswith("park"):
                parks[end.removeprefix("park: ")].append((e["ts"] + e.get("dur", 0.0), e["tid"]))
    tids = sorted(set(bars) | {t for t in names if t})
    if not tids:
        raise TraceFileError("the trace holds no G steps to draw")
    t0 = min((b[0] for bs in bars.values() for b in bs), default=0.0)
    row = {t: i for i, t in enumerate(tids)}
    fig, ax = plt.subplots(figsize=(14, 1.2 + 0.45 * len(tids)))
    for t, bs in bars.items():
        ax.broken_barh(
            [((ts - t0) / 1e3, max(dur / 1e3, 1e-4)) for ts, dur, _ in bs],
            (row[t] - 0.35, 0.7),
            facecolors=[_colour(g) for _, _, g in bs],
            linewidth=0,
        )
    markers = "v^<>sdo*"
    for i, (reason, pts) in enumerate(sorted(parks.items())):
        ax.scatter(
            [(ts - t0) / 1e3 for ts, _ in pts],
            [row[t] + 0.42 for _, t in pts],
            s=9,
            marker=markers[i % len(markers)],
            label=f"park: {reason}",
            zorder=3,
        )
    ax.set_yticks(range(len(tids)), [names.get(t, f"thread {t}") for t in tids])
    ax.set_ylim(-0.7, len(tids) - 0.3)
    ax.invert_yaxis()
    ax.set_xlabel("ms since the first step")
    ax.set_title(title or "gmprt trace: G steps per thread (colour = G)")
    if parks:
        ax.legend(loc="upper right", fontsize=7, markerscale=1.5)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m gmprt.trace {view,summary} TRACE``."""
    ap = argparse.ArgumentParser(prog="python -m gmprt.trace", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("view", help="draw the timeline as a PNG")
    v.add_argument("trace")
    v.add_argument("-o", "--output", help="PNG path (default: TRACE with .png)")
    s = sub.add_parser("summary", help="per-G run and wait time, scheduling latency")
    s.add_argument("trace")
    s.add_argument("--top", type=int, default=30, help="Gs shown (default 30)")
    s.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    try:
        doc = load(args.trace)
        if args.cmd == "view":
            out = args.output or os.path.splitext(args.trace)[0] + ".png"
            view(doc, out, title=f"gmprt trace: {os.path.basename(args.trace)}")
            print(out)
        else:
            s_ = summary(doc)
            print(json.dumps(s_, indent=1) if args.json else _format_summary(s_, args.top))
    except (OSError, TraceFileError) as e:
        print(f"gmprt.trace: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
