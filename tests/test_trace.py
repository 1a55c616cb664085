"""gmprt.trace: the execution tracer, the flight recorder, view and summary.

The trace files are parsed and checked for structure: every step slice has
a start and a length, every flow joins a ready event to a step of the G it
readied, G ids are those `go()` returned. Nothing here asserts a timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import gmprt
import gmprt.trace
import pytest
from helpers import http_get

SUBPROCESS_TIMEOUT = 60


async def _pong(a, b):
    async for v in a:
        await b.send(v)


def _blocker():
    time.sleep(0.02)  # a blocking call: sysmon hands the P off
    return 7


def _workload(rounds=200, procs=2):
    """Ping-pong, a sync G that blocks, a sleep; returns the G ids."""
    ids = []

    async def main():
        a, b = gmprt.Chan(), gmprt.Chan()
        g = gmprt.go(_pong, a, b)
        ids.append(g.id)
        blk = gmprt.go(_blocker)
        ids.append(blk.id)
        for i in range(rounds):
            await a.send(i)
            assert await b.recv() == i
        a.close()
        await g
        assert await blk == 7
        await gmprt.sleep(0.005)

    gmprt.run(main, procs=procs)
    return ids


def _steps(doc):
    return [e for e in doc["traceEvents"] if e["ph"] == "X" and e.get("cat") == "step"]


def test_record_writes_a_timeline_whose_flows_join_real_steps(tmp_path):
    path = tmp_path / "trace.json"
    with gmprt.trace.record(path):
        ids = _workload()
    doc = gmprt.trace.load(path)
    steps = _steps(doc)
    assert steps, "no step slices"
    for e in steps:
        assert e["dur"] >= 0 and e["ts"] >= 0
        assert e["name"].startswith(f"G {e['args']['g']}")
        assert e["args"]["end"] in ("yield", "done") or e["args"]["end"].startswith("park")
    stepped = {e["args"]["g"] for e in steps}
    assert set(ids) <= stepped
    names = {e["args"]["g"]: e["name"] for e in steps}
    assert "_pong" in names[ids[0]] and "_blocker" in names[ids[1]]
    # Parks say why, in Go's words: the pong G waits on its channels.
    pong_ends = {e["args"]["end"] for e in steps if e["args"]["g"] == ids[0]}
    assert pong_ends & {"park: chan receive", "park: chan send"}, pong_ends
    # Every G that finished has exactly one step that ended "done".
    done = [e["args"]["g"] for e in steps if e["args"]["end"] == "done"]
    assert sorted(done) == sorted(set(done))
    assert set(ids) <= set(done)
    # Flows: each start has one finish with its id, and the finish sits at
    # the start of a step of the readied G, on that step's track.
    starts = {e["id"]: e for e in doc["traceEvents"] if e["ph"] == "s"}
    finishes = {e["id"]: e for e in doc["traceEvents"] if e["ph"] == "f"}
    assert starts and starts.keys() == finishes.keys()
    at = {(e["tid"], e["ts"]): e for e in steps}
    for fid, f in finishes.items():
        step = at.get((f["tid"], f["ts"]))
        assert step is not None, f"flow {fid} ends at no step"
        assert f["bp"] == "e"
    # Ping-pong readies the partner every round: flows both ways.
    readies = [e for e in doc["traceEvents"] if e.get("cat") == "ready" and e["ph"] == "i"]
    assert sum(1 for e in readies if e["args"]["g"] == ids[0]) >= 100
    # Tracks are named threads; the Ms are among them.
    tracks = {
        e["args"]["name"]
        for e in doc["traceEvents"]
        if e["ph"] == "M" and e["name"] == "thread_name"
    }
    assert any(t.startswith("gmprt-m") for t in tracks), tracks
    assert doc["otherData"]["dropped_events"] == 0
    # P ownership: every step also sits on its P's track, named by its M.
    owned = [e for e in doc["traceEvents"] if e["ph"] == "X" and e.get("cat") == "p"]
    assert len(owned) == len(steps)
    assert {e["tid"] for e in owned} == {e["args"]["p"] for e in steps}


def test_spawns_and_handoffs_are_marked(tmp_path):
    path = tmp_path / "trace.json"
    with gmprt.trace.record(path):
        # One P: while the blocking G holds it, the others wait for it.
        ids = _workload(rounds=10, procs=1)
    doc = gmprt.trace.load(path)
    spawned = {e["args"]["g"] for e in doc["traceEvents"] if e.get("cat") == "spawn"}
    assert set(ids) <= spawned
    # The blocking G keeps the P for 20 ms while others wait: sysmon hands
    # the P to another M (once at least).
    handoffs = [e for e in doc["traceEvents"] if e.get("cat") == "handoff"]
    assert handoffs


def test_nothing_is_recorded_outside_a_recording(tmp_path):
    _workload(rounds=5)
    path = tmp_path / "trace.json"
    with gmprt.trace.record(path):
        pass
    doc = gmprt.trace.load(path)
    assert _steps(doc) == []


def test_an_unwritable_path_raises_oserror_at_record(tmp_path):
    with pytest.raises(OSError):
        with gmprt.trace.record(tmp_path / "no" / "such" / "dir" / "t.json"):
            pytest.fail("recording began")
    # And nothing is left recording.
    with gmprt.trace.record(tmp_path / "ok.json"):
        pass


def test_one_recording_at_a_time(tmp_path):
    with gmprt.trace.record(tmp_path / "a.json"):
        with pytest.raises(RuntimeError, match="already"):
            gmprt.trace.start(tmp_path / "b.json")
        with pytest.raises(RuntimeError, match="already"):
            gmprt.trace.flight_recorder(1)
    with pytest.raises(RuntimeError):
        gmprt.trace.stop()


def test_bad_arguments():
    with pytest.raises(ValueError):
        gmprt.trace.FlightRecorder(0)
    with pytest.raises(ValueError):
        gmprt.trace.FlightRecorder(-1.0)
    with pytest.raises(ValueError):
        gmprt.trace.flight_recorder(1, per_thread=0)


def test_the_ring_bounds_memory_and_counts_what_it_dropped(tmp_path):
    path = tmp_path / "trace.json"
    with gmprt.trace.record(path, per_thread=50):
        _workload(rounds=500)
    doc = gmprt.trace.load(path)
    per_track: dict[int, int] = {}
    for e in doc["traceEvents"]:
        if e["ph"] in ("X", "i") and e.get("cat") != "p":
            per_track[e["tid"]] = per_track.get(e["tid"], 0) + 1
    assert per_track and max(per_track.values()) <= 50
    assert doc["otherData"]["dropped_events"] > 0


def test_flight_recorder_keeps_only_the_last_window(tmp_path):
    window = 0.2
    with gmprt.trace.flight_recorder(window) as rec:
        stop = threading.Event()

        async def busy():
            for _ in range(100_000):  # bounded: ~100 s at most
                if stop.is_set():
                    return
                await gmprt.sleep(0.001)

        async def main():
            g = gmprt.go(busy)
            await gmprt.sleep(4 * window)
            path = tmp_path / "flight.json"
            n = rec.write(path)
            assert n == os.path.getsize(path)
            stop.set()
            await g
            return path

        path = gmprt.run(main)
    doc = gmprt.trace.load(path)
    ts = [e["ts"] for e in doc["traceEvents"] if e["ph"] in ("X", "i")]
    assert ts
    # Each ring drops what is older than the window as it pushes, so what is
    # kept spans at most the window plus the gap between two pushes.
    assert (max(ts) - min(ts)) / 1e6 < window + 0.15
    assert doc["otherData"]["window_s"] == pytest.approx(window)
    # Stopped: a new recording may start.
    with gmprt.trace.record(tmp_path / "after.json"):
        pass


def test_summary_and_view_from_the_command_line(tmp_path):
    path = tmp_path / "trace.json"
    with gmprt.trace.record(path):
        ids = _workload()
    s = gmprt.trace.summary(gmprt.trace.load(path))
    assert set(ids) <= set(s["gs"])
    pong = s["gs"][ids[0]]
    assert pong["steps"] >= 200 and pong["run_us"] > 0
    assert "waiting" in pong["wait_us"] or any(k for k in pong["wait_us"])
    assert s["latency_us"]["count"] > 0
    assert s["latency_us"]["p50"] <= s["latency_us"]["p99"] <= s["latency_us"]["max"]

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "gmprt.trace", *args],
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT,
        )

    r = cli("summary", str(path))
    assert r.returncode == 0, r.stderr
    assert "scheduling latency" in r.stdout and "_pong" in r.stdout
    assert "RuntimeWarning" not in r.stderr
    r = cli("summary", "--json", str(path))
    assert json.loads(r.stdout)["latency_us"]["count"] > 0
    png = tmp_path / "t.png"
    r = cli("view", str(path), "-o", str(png))
    assert r.returncode == 0, r.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_truncated_file_says_where_it_is_cut(tmp_path):
    path = tmp_path / "trace.json"
    with gmprt.trace.record(path):
        _workload(rounds=20)
    raw = path.read_bytes()
    cut = tmp_path / "cut.json"
    # Wherever the cut falls: inside a string (which JSON reports at its
    # opening quote: once a flaky "is damaged"), a number, between values.
    for i in range(1, 200):
        cut.write_bytes(raw[: len(raw) * i // 200])
        with pytest.raises(gmprt.trace.TraceFileError, match=r"is cut at byte \d+"):
            gmprt.trace.load(cut)
    cut.write_bytes(raw[: len(raw) // 2])
    r = subprocess.run(
        [sys.executable, "-m", "gmprt.trace", "view", str(cut)],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert r.returncode == 1 and "cut at byte" in r.stderr
    notrace = tmp_path / "x.json"
    notrace.write_text("[1, 2]")
    with pytest.raises(gmprt.trace.TraceFileError, match="not a trace"):
        gmprt.trace.load(notrace)


def test_tracing_while_gs_come_and_go_on_every_m(tmp_path):
    """Snapshots (the flight recorder's writes) taken while Ms create and
    finish Gs: every file parses and every slice is whole."""

    async def leaf(i):
        await gmprt.sleep(0)
        return i

    async def churn(n):
        for _ in range(n):
            gs = [gmprt.go(leaf, i) for i in range(20)]
            for g in gs:
                await g

    with gmprt.trace.flight_recorder(5, per_thread=10_000) as rec:

        async def main():
            workers = [gmprt.go(churn, 100) for _ in range(4)]
            paths = []
            for k in range(10):
                p = tmp_path / f"snap{k}.json"
                rec.write(p)
                paths.append(p)
                await gmprt.sleep(0.002)
            for w in workers:
                await w
            return paths

        paths = gmprt.run(main, procs=2)
    for p in paths:
        doc = gmprt.trace.load(p)
        for e in _steps(doc):
            assert e["dur"] >= 0 and "g" in e["args"]


def test_the_debug_endpoint_records_a_trace_on_request():
    stop = []

    async def ticker():
        for _ in range(100_000):  # bounded: ~200 s at most
            if stop:
                return
            await gmprt.sleep(0.002)

    async def main():
        t = gmprt.go(ticker)
        with gmprt.debug.serve() as srv:
            host, port = srv.address
            base = f"http://{host}:{port}/debug/gmprt/trace"
            ok = await gmprt.go(http_get, base + "?seconds=0.2")
            bad = await gmprt.go(http_get, base + "?seconds=abc")
            too_long = await gmprt.go(http_get, base + "?seconds=1000")
            with gmprt.trace.record(str(tmp) + "/busy.json"):
                busy = await gmprt.go(http_get, base + "?seconds=0.1")
        stop.append(True)
        await t
        return t.id, ok, bad, too_long, busy

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        tid, ok, bad, too_long, busy = gmprt.run(main)
    status, _, body = ok
    assert status == 200
    doc = json.loads(body)
    ticks = [e for e in _steps(doc) if e["args"]["g"] == tid]
    assert ticks, "the ticker's steps are in the trace"
    assert any(e["args"]["end"] == "park: sleep" for e in ticks)
    assert bad[0] == 400 and too_long[0] == 400
    assert busy[0] == 409


def test_the_overload_example_draws_its_timeline(tmp_path):
    example = os.path.join(os.path.dirname(__file__), "..", "examples", "trace_overload.py")
    out = tmp_path / "overload"
    r = subprocess.run(
        [sys.executable, example, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert r.returncode == 0, r.stderr
    doc = gmprt.trace.load(str(out) + ".json")
    ends = {e["args"]["end"] for e in _steps(doc)}
    assert "park: Semaphore.acquire" in ends and "park: sleep" in ends
    assert (tmp_path / "overload.png").read_bytes()[:4] == b"\x89PNG"


def test_trace_g_ids_are_the_dumps_g_ids(tmp_path):
    async def waiter(ch):
        try:
            await ch.recv()
        except gmprt.ChanClosed:
            pass

    async def main():
        ch = gmprt.Chan()
        ws = [gmprt.go(waiter, ch) for _ in range(5)]
        await gmprt.sleep(0.01)
        live = {g["id"]: g["name"] for g in gmprt.goroutines()}
        ch.close()
        for w in ws:
            await w
        return live

    path = tmp_path / "t.json"
    with gmprt.trace.record(path):
        live = gmprt.run(main)
    named = {e["args"]["g"]: e["name"] for e in _steps(gmprt.trace.load(path))}
    assert set(live) <= set(named)
    for gid, name in live.items():
        assert named[gid] == f"G {gid} {name}"
