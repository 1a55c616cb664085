"""Line echo: gmprt's ``conn.readline()`` against asyncio's and uvloop's
``StreamReader.readline()``; with ``--unix``, gmprt's echo over a Unix
socket against TCP.

Every server runs in a fresh process per round (benches/servers/
line_servers.py) and is driven by ``gmprt-loadgen --lines``: C connections,
one line of S bytes (S - 1 printable bytes and ``\\n``) in flight each,
every echoed byte checked. The headline figure is the **server's CPU time
per message**: its utime + stime over the measured window, which the
load generator reads from /proc/PID/stat (``--pid``), divided by the
messages echoed in the window. On a 2-core
machine the client shares the CPU with the server, so msgs/s mostly
measures the client; CPU per message does not. Each figure is the median
of ``--rounds`` interleaved rounds (min and max kept), each on a fresh
server that first gets a discarded warm-up run (see ``one_run``), after
one discarded warm-up round per contender.

    python benches/lines.py                 # C=100 x 100 B lines, 3 rounds of 3 s
    python benches/lines.py --quick         # 1 round of 0.5 s
    python benches/lines.py --unix          # also gmprt's echo over a Unix socket vs TCP
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import echo  # noqa: E402  (the server process plumbing and the load generator)

ROOT = Path(__file__).resolve().parents[1]
SERVERS = ROOT / "benches" / "servers" / "line_servers.py"
ECHO = ROOT / "examples" / "echo_server.py"
CONTENDERS = ["gmprt", "gmprt-procs1", "asyncio-streams", "uvloop-streams"]


def contender(name: str, unix: str | None = None) -> echo.Contender:
    argv = [sys.executable, str(SERVERS), name]
    if unix:
        argv += ["--unix", unix]
    skip = None
    if name.startswith("uvloop"):
        why = echo.probe("import uvloop")
        skip = "uvloop not installed" if why else None
    return echo.Contender(name, argv, skip=skip)


def one_run(
    loadgen: Path,
    c: echo.Contender,
    conns: int,
    size: int,
    secs: float,
    lines: bool,
    unix: str | None = None,
) -> dict[str, Any]:
    """One fresh server, a discarded load run, the measured run (echo.one_run):
    msgs/s, p99 and the server's CPU per message, or why not."""
    row = echo.one_run(
        loadgen, c, conns, size, secs, min(1.0, secs / 2), lines=lines, unix=unix
    )  # fmt: skip
    if "skipped" in row or "failed" in row:
        return {k: row[k] for k in ("skipped", "failed") if k in row}
    if row["errors"]:
        return {"failed": f"{row['errors']} errors: {row['first_error']}"}
    return {k: row[k] for k in ("msgs_per_s", "p99_us", "cpu_us_per_msg")}


def median_of(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ran = [r for r in rows if "cpu_us_per_msg" in r]
    if not ran:
        return rows[0] if rows else {"failed": "no round"}
    cpu = [r["cpu_us_per_msg"] for r in ran]
    return {
        "cpu_us_per_msg": round(statistics.median(cpu), 3),
        "cpu_min": round(min(cpu), 3),
        "cpu_max": round(max(cpu), 3),
        "msgs_per_s": round(statistics.median(r["msgs_per_s"] for r in ran)),
        "p99_us": round(statistics.median(r["p99_us"] for r in ran)),
        "rounds": len(ran),
    }


def bench(args: argparse.Namespace) -> dict[str, Any]:
    loadgen = echo.find_loadgen(args.loadgen)
    cases: dict[str, tuple[echo.Contender, bool]] = {
        n: (contender(n), True) for n in args.servers.split(",")
    }
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in cases}
    for c, lines in cases.values():  # warm-up round: page cache, CPU clocks
        one_run(loadgen, c, args.connections, args.size, min(args.duration, 0.5), lines)
    names = list(cases)
    for rnd in range(args.rounds):
        # Interleaved, and the order rotates, so a drift in the machine's
        # load falls on every contender alike.
        for n in names[rnd % len(names) :] + names[: rnd % len(names)]:
            c, lines = cases[n]
            runs[n].append(one_run(loadgen, c, args.connections, args.size, args.duration, lines))
    return {n: median_of(rs) | {"runs": rs} for n, rs in runs.items()}


def bench_unix(args: argparse.Namespace) -> dict[str, Any]:
    """gmprt's echo (``recv`` / ``sendall``) over TCP and over a Unix
    socket, same rounds and warm-ups as the line echo."""
    loadgen = echo.find_loadgen(args.loadgen)
    with tempfile.TemporaryDirectory(prefix="gmprt-unix-") as d:
        path = os.path.join(d, "echo.sock")
        cases = {
            "gmprt-tcp": (echo.Contender("gmprt-tcp", [sys.executable, str(ECHO)]), None),
            "gmprt-unix": (contender("gmprt", unix=path), path),
        }
        runs: dict[str, list[dict[str, Any]]] = {n: [] for n in cases}
        for rnd in range(args.rounds):
            for n in list(cases)[rnd % 2 :] + list(cases)[: rnd % 2]:
                c, unix = cases[n]
                r = one_run(loadgen, c, args.connections, 1024, args.duration, False, unix)
                runs[n].append(r)
    return {n: median_of(rs) | {"runs": rs} for n, rs in runs.items()}


def table(res: dict[str, Any], args: argparse.Namespace) -> str:
    head = (
        f"Line echo, C={args.connections} x {args.size} B lines, median of "
        f"{args.rounds} interleaved rounds (fresh server each)\n\n"
        "| server | server CPU µs/msg (min–max) | msgs/s | p99 µs |\n|---|---:|---:|---:|"
    )
    rows = []
    for n, r in res.items():
        if "cpu_us_per_msg" not in r:
            rows.append(f"| {n} | {r.get('skipped') or r.get('failed')} | | |")
            continue
        rows.append(
            f"| {n} | {r['cpu_us_per_msg']:.2f} ({r['cpu_min']:.2f}–{r['cpu_max']:.2f}) | "
            f"{r['msgs_per_s']:,} | {r['p99_us']:,} |"
        )
    out = head + "\n" + "\n".join(rows)
    g, a = res.get("gmprt", {}), res.get("asyncio-streams", {})
    if "cpu_us_per_msg" in g and "cpu_us_per_msg" in a:
        ratio = a["cpu_us_per_msg"] / g["cpu_us_per_msg"]
        out += f"\n\nasyncio streams / gmprt, CPU per line: {ratio:.2f}x (goal >= 2x)"
    return out


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one round of 0.5 s")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--connections", type=int, default=100)
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--servers", default=",".join(CONTENDERS))
    p.add_argument("--unix", action="store_true", help="also gmprt echo over Unix vs TCP")
    p.add_argument("--loadgen")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.duration = 1, 0.5
    return args


def run(quick: bool = False, scenarios: object = None) -> dict:
    """The suite's shape: ``{"lines": {"params", "results": {server: row}}}``."""
    args = parse(["--quick"] if quick else [])
    params = {k: getattr(args, k) for k in ("connections", "size", "rounds", "duration")}
    return {"lines": {"params": params, "results": bench(args)}}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    res = bench(args)
    print(table(res, args))
    if args.unix:
        u = bench_unix(args)
        res["unix"] = u
        print(f"\nEcho (recv/sendall), C={args.connections} x 1 KiB, TCP vs Unix socket:\n")
        for n, r in u.items():
            cpu = r.get("cpu_us_per_msg")
            print(
                f"  {n:12} {cpu} us/msg (min {r.get('cpu_min')}, max {r.get('cpu_max')}), "
                f"{r.get('msgs_per_s')} msgs/s"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
