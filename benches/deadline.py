"""Deadline: the overload story with a per-request deadline. The handler
waits on a slow upstream (10 s) under a 1 s deadline while a client floods
requests at a fixed rate; the same server without the deadline is the
comparison.

The server (benches/servers/overload_servers.py, one process each) reads a
request line, holds K KiB of state, waits on the upstream (a sleep standing
in for it) and replies ``OK`` — or, once the deadline passes,
``ERR timeout: ...``:

- gmprt: ``with gmprt.timeout(D):`` around ``await gmprt.sleep(U)``;
- asyncio, uvloop: ``async with asyncio.timeout(D):`` around ``asyncio.sleep``;
- threading: threads cannot be cancelled; the deadline becomes a timeout on
  the blocking call itself (``threading.Event().wait(D)`` in place of the
  upstream), which is all a thread-per-request server can do, and only where
  every blocking call takes a timeout.

The flood (``benches/overload.py --client``): R new connections per second
for F seconds, one request each; a client gives up after T seconds (T is
above the deadline, below the upstream). Reported over time, for each server
with and without the deadline: tasks alive in the server
(``gmprt.stats()["goroutines"]``, ``len(asyncio.all_tasks())``,
``threading.active_count()``, sampled by the server every 50 ms) and its RSS
(psutil on the server's pid, every 50 ms); and what the clients saw: replies
``ERR timeout``, ``OK``, gave up waiting (no reply within T), other.

Goal (BENCHMARKS.md): with the deadline, tasks alive and RSS stay flat —
bounded by rate × deadline — and every late request is answered with a
timeout error. Without it, tasks alive grow for the whole flood (toward
rate × upstream) and the clients give up with nothing.

    python benches/deadline.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import skip_reason
from overload import _start, _stop

ROOT = Path(__file__).resolve().parents[1]
SERVERS = ROOT / "benches" / "servers" / "overload_servers.py"
OVERLOAD = ROOT / "benches" / "overload.py"
CONTENDERS = ["gmprt", "asyncio", "uvloop", "threading"]
QUICK_CONTENDERS = ["gmprt", "asyncio"]
SAMPLE_S = 0.05
MODES = ("deadline", "no_deadline")


def config(quick: bool) -> dict[str, Any]:
    if quick:
        return {
            "rate": 400,
            "flood_s": 0.6,
            "deadline_s": 0.15,
            "upstream_s": 1.5,
            "client_timeout_s": 0.4,
            "state_kib": 64,
        }
    return {
        "rate": 500,
        "flood_s": 6.0,
        "deadline_s": 1.0,
        "upstream_s": 10.0,
        "client_timeout_s": 3.0,
        "state_kib": 64,
    }


def bounds(cfg: dict[str, Any]) -> dict[str, float]:
    """What 'bounded by rate × deadline' allows: tasks alive and RSS growth
    (2 × rate × deadline in flight, for accept lag on a busy machine, plus
    the server's own few tasks; each holding its state plus 64 KiB)."""
    inflight = 2 * cfg["rate"] * cfg["deadline_s"]
    return {
        "tasks": round(inflight + 16),
        "rss_mib": round(inflight * (cfg["state_kib"] + 64) / 1024 + 16, 1),
    }


def _series_at(series: list[list[float]], t: float, col: int) -> float | None:
    """The last sample at or before time t."""
    got = None
    for row in series:
        if row[0] > t:
            break
        got = row[col]
    return got


def run_one(kind: str, deadline: float, cfg: dict[str, Any], host: str = "127.0.0.1") -> dict:
    import psutil

    fd, samples = tempfile.mkstemp(prefix="gmprt-deadline-", suffix=".txt")
    os.close(fd)
    argv = [sys.executable, str(SERVERS), kind, "--host", host, "--port", "0"]
    argv += ["--upstream", str(cfg["upstream_s"]), "--deadline", str(deadline)]
    argv += ["--state-kib", str(cfg["state_kib"]), "--samples", samples]
    try:
        try:
            proc, port, err = _start(argv)
        except RuntimeError as e:
            return {"failed": f"server: {e}"}
        try:
            ps = psutil.Process(proc.pid)
            time.sleep(0.15)
            base = ps.memory_info().rss
            client = subprocess.Popen(
                [sys.executable, str(OVERLOAD), "--client", host, str(port)]
                + [str(cfg[k]) for k in ("rate", "flood_s", "client_timeout_s")],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            t0 = time.monotonic()
            series: list[list[float]] = []
            while True:
                try:
                    series.append(
                        [
                            round(time.monotonic() - t0, 3),
                            round(ps.memory_info().rss / 2**20, 2),
                            ps.num_threads(),
                        ]
                    )
                except psutil.Error:
                    break
                if client.poll() is not None:
                    break
                time.sleep(SAMPLE_S)
            out, cerr = client.communicate(timeout=60)
            if client.returncode != 0:
                return {"failed": f"client exit {client.returncode}: {cerr.strip()[-1500:]}"}
            seen = json.loads(out.strip().splitlines()[-1])
            alive = proc.poll() is None
            # Time 0 is the flood's first connection, not the client's start.
            shift = seen.get("start_monotonic", t0) - t0
            series = [[round(r[0] - shift, 3), *r[1:]] for r in series]
            t0 += shift
        finally:
            rc = _stop(proc)
            err.seek(0)
            server_err = err.read().decode(errors="replace")
            err.close()
        tasks: list[list[float]] = []
        with open(samples) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2:
                    t = round(float(parts[0]) - t0, 3)
                    if t >= -0.05:
                        tasks.append([max(t, 0.0), int(parts[1])])
    finally:
        os.unlink(samples)
    base_mib = base / 2**20
    half = cfg["flood_s"] / 2
    first = [r[1] for r in series if r[0] <= half]
    second = [r[1] for r in series if half < r[0] <= cfg["flood_s"]]
    peak = max((r[1] for r in series), default=base_mib)
    row: dict[str, Any] = {
        "deadline_s": deadline,
        "rss_base_mib": round(base_mib, 2),
        "rss_peak_mib": peak,
        "rss_growth_mib": round(peak - base_mib, 2),
        # How much RSS still grew in the flood's second half: ~0 when flat.
        "rss_late_growth_mib": round(max(second, default=0) - max(first, default=0), 2)
        if first and second
        else None,
        "tasks_peak": max((r[1] for r in tasks), default=None),
        "tasks_at_flood_end": _series_at(tasks, cfg["flood_s"], 1),
        "tasks_at_half": _series_at(tasks, half, 1),
        "threads_peak": max((r[2] for r in series), default=0),
        "series": series,
        "tasks_series": tasks,
        "client": seen,
        "server_alive": alive,
        "server_exit": rc,
    }
    if not alive:
        row["server_stderr"] = server_err[-1500:]
    return row


def judge(row: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    """Whether a deadline run met the goal: tasks and RSS within the bound,
    every request answered with an ``ERR timeout`` (or an ``OK``)."""
    b = bounds(cfg)
    out = row["client"]["outcomes"]
    unclear = sum(v for k, v in out.items() if k not in ("ok", "timeout_error"))
    return {
        "tasks_bounded": row["tasks_peak"] is not None and row["tasks_peak"] <= b["tasks"],
        "rss_bounded": row["rss_growth_mib"] <= b["rss_mib"],
        "all_answered": unclear == 0,
        "unclear": unclear,
    }


def run(quick: bool = False, scenarios: object = None) -> dict:
    cfg = config(quick)
    results: dict[str, Any] = {}
    for kind in QUICK_CONTENDERS if quick else CONTENDERS:
        why = skip_reason(kind, ("net", "sleep"))
        if kind == "gmprt" and not why and not _has_timeout():
            why = "gmprt.timeout is not available (it arrives with cancellation)"
        if why:
            results[kind] = {"skipped": why}
            continue
        results[kind] = {
            "deadline": run_one(kind, cfg["deadline_s"], cfg),
            "no_deadline": run_one(kind, 0.0, cfg),
        }
        d = results[kind]["deadline"]
        if "client" in d:
            d["verdict"] = judge(d, cfg)
    params = cfg | {"requests": round(cfg["rate"] * cfg["flood_s"])}
    b = bounds(cfg)
    params["tasks_bound"] = b["tasks"]
    params["rss_bound_mib"] = b["rss_mib"]
    if quick:
        params["contenders"] = "gmprt and asyncio only with --quick"
    return {"deadline": {"params": params, "results": results}}


def _has_timeout() -> bool:
    r = subprocess.run(
        [sys.executable, "-c", "import gmprt; gmprt.timeout, gmprt.Timeout"],
        capture_output=True,
        timeout=60,
        cwd=ROOT,
    )
    return r.returncode == 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    res = run(args.quick)["deadline"]
    p = res["params"]
    print(
        f"{p['requests']:,} requests at {p['rate']}/s, deadline {p['deadline_s']:g} s, "
        f"upstream {p['upstream_s']:g} s; bound: {p['tasks_bound']} tasks, "
        f"+{p['rss_bound_mib']} MiB"
    )
    for kind, r in res["results"].items():
        if "skipped" in r:
            print(f"{kind:10} skipped: {r['skipped']}")
            continue
        for mode in MODES:
            x = r[mode]
            if "failed" in x:
                print(f"{kind:10} {mode:12} FAILED: {x['failed']}")
                continue
            c = x["client"]
            print(
                f"{kind:10} {mode:12} tasks peak {x['tasks_peak']!s:>6}  "
                f"RSS +{x['rss_growth_mib']:6.1f} MiB (2nd half +{x['rss_late_growth_mib']})  "
                f"{c['outcomes']}  timeout reply p50 {c['timeout_p50_ms']:.0f} ms"
            )
    for r in res["results"].values():
        for x in r.values():
            if isinstance(x, dict):
                x.pop("series", None)
                x.pop("tasks_series", None)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
