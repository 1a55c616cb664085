"""Two gmprt builds, same work, one run: do the hot paths pay for a change?

Each build is a Python with its own gmprt installed (a venv per wheel). The
scenarios are this checkout's, run by each Python in a fresh process per
round; rounds interleave the two builds (and alternate which goes first), and
each figure is the median of its rounds, so a slow spell of a shared machine
hits both alike:

- ``spawn``: N trivial Gs started and awaited (benches/spawn.py), µs per G;
- ``ping_pong``: round trips over two unbuffered channels (benches/chan.py),
  µs per round trip;
  each round is a fresh process doing three runs, best kept, timed by the
  wall clock and by the process's CPU time (which other processes' load
  moves much less);
- ``echo`` (``aio_echo``: benches/servers/echo_servers.py's gmprt.aio-protocol
  server instead): examples/echo_server.py run by each Python under gmprt-loadgen
  (benches/echo.py's runner), C connections × 1 KiB closed loop; msgs/s and
  server CPU per message (µs; the server's utime+stime over the loadgen's
  run ÷ messages, so it counts the warm-up too).

    python benches/compare_wheels.py --before /tmp/venv-before/bin/python \\
        --after .venv/bin/python [--rounds 5] [--only spawn ping_pong echo] [--quick]

Prints a table (median per build, every round, after ÷ before) and, with
``--json PATH``, every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
_MARK = "@@RESULT@@"
if str(BENCH_DIR) not in sys.path:  # echo, spawn, chan, as a script or imported
    sys.path.insert(0, str(BENCH_DIR))

SCENARIOS = ("spawn", "ping_pong", "echo", "aio_echo")
UNITS = {
    "spawn": "µs/G",
    "ping_pong": "µs/round trip",
    "echo": "server µs/msg",
    "aio_echo": "server µs/msg",
}


def in_python(python: str, module: str, call: str, timeout: float = 600) -> dict[str, Any]:
    """``module.call`` evaluated by `python` in a fresh process; its JSON result."""
    code = (
        f"import json, sys; sys.path.insert(0, {str(BENCH_DIR)!r}); import {module} as m; "
        f"print({_MARK!r} + json.dumps(m.{call}), flush=True)"
    )
    p = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, timeout=timeout, cwd="/"
    )
    for line in reversed(p.stdout.splitlines()):
        if line.startswith(_MARK):
            return json.loads(line[len(_MARK) :])
    return {"failed": (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]}


def gmprt_version(python: str) -> str:
    code = "import gmprt, os; print(os.path.dirname(gmprt.__file__))"
    p = subprocess.run([python, "-c", code], capture_output=True, text=True, cwd="/")
    return p.stdout.strip() or p.stderr.strip()[-200:]


def echo_once(
    python: str, conns: int, duration: float, warmup: float, aio: bool = False
) -> dict[str, Any]:
    import echo

    if aio:
        argv = [python, str(BENCH_DIR / "servers" / "echo_servers.py"), "gmprt.aio-protocol"]
        c = echo.Contender("gmprt.aio-protocol", argv)
    else:
        c = echo.Contender("gmprt", [python, str(echo.GMPRT_SERVER)])
    row = echo.one_run(_loadgen(), c, conns, 1024, duration, warmup)
    if "cpu_us_per_msg" not in row or "failed" in row:
        return {"failed": row.get("failed", "no figure")}
    return {
        "value": row["cpu_us_per_msg"],
        "msgs_per_s": row["msgs_per_s"],
        "p99_us": row["p99_us"],
        "errors": row["errors"],
    }


_LOADGEN: list[Path] = []


def _loadgen() -> Path:
    if not _LOADGEN:
        import echo

        _LOADGEN.append(echo.find_loadgen(None))
    return _LOADGEN[0]


def timed(kind: str, n: int, repeat: int) -> dict[str, float]:
    """In the child: `repeat` runs of spawn (µs per G) or ping-pong (µs per
    round trip) with gmprt's default procs; the best wall-clock figure and
    the best CPU-time figure (this process's, every thread's: under load
    from other processes it moves much less than the wall clock)."""
    import chan
    import spawn

    walls, cpus = [], []
    for _ in range(repeat):
        c0 = time.process_time()
        if kind == "spawn":
            wall = spawn.bench_gmprt(n, None) / n * 1e6
        else:
            wall = chan.pingpong_gmprt(n, None)["us_per_rtt"]
        cpus.append((time.process_time() - c0) / n * 1e6)
        walls.append(wall)
    return {"value": min(walls), "cpu": min(cpus), "n": n, "repeat": repeat}


def one(scenario: str, python: str, quick: bool) -> dict[str, Any]:
    if scenario in ("spawn", "ping_pong"):
        n = {"spawn": 100_000, "ping_pong": 200_000}[scenario] // (5 if quick else 1)
        return in_python(python, "compare_wheels", f"timed({scenario!r}, {n}, 3)")
    if scenario in ("echo", "aio_echo"):
        aio = scenario == "aio_echo"
        return echo_once(python, 100, 1.0 if quick else 3.0, 0.25 if quick else 1.0, aio)
    raise ValueError(scenario)


def compare(builds: dict[str, str], scenarios: list[str], rounds: int, quick: bool) -> dict:
    names = list(builds)
    res: dict[str, Any] = {}
    for sc in scenarios:
        by: dict[str, list[dict[str, Any]]] = {b: [] for b in names}
        for i in range(rounds):
            order = names if i % 2 == 0 else names[::-1]
            for b in order:
                r = one(sc, builds[b], quick)
                by[b].append(r)
                shown = f"{r['value']:.3f}" if "value" in r else r.get("failed")
                if "cpu" in r:
                    shown += f"  (CPU {r['cpu']:.3f})"
                print(f"  {sc:10} round {i + 1}/{rounds} {b:7} {shown}", flush=True)
        entry: dict[str, Any] = {"unit": UNITS[sc]}
        for b, rs in by.items():
            vals = [r["value"] for r in rs if "value" in r]
            entry[b] = {
                "median": statistics.median(vals) if vals else None,
                "rounds": [round(v, 4) for v in vals],
                "failed": [r["failed"] for r in rs if "failed" in r],
            }
            cpus = [r["cpu"] for r in rs if "cpu" in r]
            if cpus:
                entry[b]["cpu_median"] = statistics.median(cpus)
                entry[b]["cpu_rounds"] = [round(v, 4) for v in cpus]
            if sc == "echo":
                entry[b]["msgs_per_s"] = [r.get("msgs_per_s") for r in rs]
        a, z = entry[names[0]]["median"], entry[names[-1]]["median"]
        entry["ratio"] = z / a if a and z else None
        a, z = entry[names[0]].get("cpu_median"), entry[names[-1]].get("cpu_median")
        entry["cpu_ratio"] = z / a if a and z else None
        res[sc] = entry
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="the Python with the 'before' gmprt")
    ap.add_argument("--after", required=True, help="the Python with the 'after' gmprt")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", nargs="+", default=["spawn", "ping_pong"], choices=SCENARIOS)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    # Absolute, not resolved: a venv's python is a symlink to the base one.
    builds = {"before": os.path.abspath(args.before), "after": os.path.abspath(args.after)}
    for b, py in builds.items():
        print(f"{b}: {py} -> {gmprt_version(py)}", flush=True)
    res = compare(builds, args.only, args.rounds, args.quick)
    print(f"\nmedian of {args.rounds} interleaved rounds, fresh process each")
    print(f"{'scenario':10} {'unit':14} {'before':>9} {'after':>9} {'after/before':>13}")
    for sc, e in res.items():
        b, a = e["before"]["median"], e["after"]["median"]
        ratio = f"{e['ratio']:.3f}" if e["ratio"] else "—"
        fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
        print(f"{sc:10} {e['unit']:14} {fmt(b):>9} {fmt(a):>9} {ratio:>13}")
        if e.get("cpu_ratio"):
            b, a = e["before"]["cpu_median"], e["after"]["cpu_median"]
            label = "CPU " + e["unit"]
            print(f"{'':10} {label:14} {fmt(b):>9} {fmt(a):>9} {e['cpu_ratio']:>13.3f}")
        for build in ("before", "after"):
            print(f"{'':25} {build:7} rounds {e[build]['rounds']}")
    if args.json:
        args.json.write_text(json.dumps({"builds": builds, "results": res}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
