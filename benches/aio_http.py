"""HTTP hello-world on asyncio frameworks, loaded by ``wrk``: uvicorn +
Starlette and aiohttp, each on asyncio's default loop, on uvloop and on
gmprt.aio.

Each round starts a fresh server process (``serve``: it binds 127.0.0.1:0,
prints its port and serves ``GET /`` → ``Hello, world!`` until killed),
runs one discarded ``wrk`` warm-up against it, then the measured
``wrk --latency`` run. On a 2-core machine wrk shares the CPU with the
server, so requests/s mostly measures the pair; the headline is the
**server's CPU time per request**: utime + stime of the server process from
``/proc/PID/stat`` over the measured run, divided by the requests wrk
completed. requests/s and p99 (wrk's latency distribution) are columns.
Figures are the median (min–max) of ``--rounds`` interleaved rounds, the
contenders' order rotating each round; nothing is pinned.

uvicorn runs as its users run it (``uvicorn.Server(Config(app,
loop=...)).run()``: ``--loop asyncio``, ``--loop uvloop``, ``--loop
gmprt.aio:new_event_loop``), with its default HTTP parser (httptools when
installed, else h11) and no access log; aiohttp's ``AppRunner`` runs under
``asyncio.Runner(loop_factory=...)``. Without ``wrk`` on PATH (Debian's
``wrk``; ``scripts/bench.sh`` installs it) the scenario is skipped with a
note.

    python benches/aio_http.py [--quick] [--rounds 3] [--duration 5]
        [--connections 50] [--only aiohttp]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

LOOPS = ["asyncio", "uvloop", "gmprt.aio"]
FRAMEWORKS = ["uvicorn+starlette", "aiohttp"]
BODY = b"Hello, world!"
WRK_MISSING = "wrk is not installed (Debian package wrk; scripts/bench.sh installs it)"


def contender(framework: str, loop: str) -> str:
    return f"{framework} / {loop}"


# -- the server process ---------------------------------------------------------------


def _loop_factory(loop: str) -> Any:
    if loop == "gmprt.aio":
        import gmprt.aio

        return gmprt.aio.new_event_loop
    if loop == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    import asyncio

    return asyncio.new_event_loop


def serve(framework: str, loop: str) -> None:
    """The server process: binds 127.0.0.1:0, prints the port, serves until
    it is killed."""
    # IPPROTO_TCP, as getaddrinfo gives `uvicorn --port`'s own bind: asyncio
    # sets TCP_NODELAY only on sockets whose proto says TCP (with proto 0
    # a response written in two pieces waits out Nagle + delayed ACK).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    sock.setblocking(False)
    port = sock.getsockname()[1]
    if framework == "aiohttp":
        _serve_aiohttp(sock, port, loop)
    else:
        _serve_uvicorn(sock, port, loop)


def _serve_uvicorn(sock: socket.socket, port: int, loop: str) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse(BODY)

    app = Starlette(routes=[Route("/", hello)])
    name = "gmprt.aio:new_event_loop" if loop == "gmprt.aio" else loop
    config = uvicorn.Config(app, loop=name, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    print(port, flush=True)
    server.run(sockets=[sock])


def _serve_aiohttp(sock: socket.socket, port: int, loop: str) -> None:
    import asyncio

    from aiohttp import web

    async def hello(request: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="text/plain")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/", hello)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        print(port, flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    with asyncio.Runner(loop_factory=_loop_factory(loop)) as runner:
        runner.run(main())


# -- the load side ----------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of process `pid` (all its threads), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> dict[str, Any]:
    """Requests, requests/s, latency percentiles (ms) and errors from the
    text ``wrk --latency`` prints."""
    fig: dict[str, Any] = {}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+),", out)
    if not m:
        raise ValueError(f"no request count in wrk's output:\n{out[-2000:]}")
    fig["requests"] = int(m.group(1))
    fig["seconds"] = round(_ms(m.group(2) + m.group(3)) / 1e3, 3)
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        fig["req_per_s"] = float(m.group(1))
    for q in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{q}(?:\.000)?%\s+([\d.]+\w+)", out, re.M)
        if m:
            fig[f"p{q}_ms"] = round(_ms(m.group(1)), 3)
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    fig["errors"] = errors
    return fig


def wrk(port: int, seconds: int, connections: int, timeout: float) -> str:
    r = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            f"http://127.0.0.1:{port}/",
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if r.returncode != 0:
        raise RuntimeError(f"wrk exited {r.returncode}: {(r.stderr or r.stdout)[-500:]}")
    return r.stdout


def missing(framework: str, loop: str) -> str | None:
    """Why this contender cannot run here; None when it can."""
    mods = ["aiohttp"] if framework == "aiohttp" else ["uvicorn", "starlette"]
    mods.append({"gmprt.aio": "gmprt.aio", "uvloop": "uvloop", "asyncio": "asyncio"}[loop])
    for mod in mods:
        try:
            __import__(mod)
        except ImportError:
            return f"{mod} is not installed"
    return None


def one(framework: str, loop: str, seconds: int, warmup: int, connections: int) -> dict[str, Any]:
    """One round: a fresh server, a discarded warm-up, the measured run."""
    why = missing(framework, loop)
    if why:
        return {"skipped": why}
    here = os.path.dirname(os.path.abspath(__file__))
    code = (
        f"import sys; sys.path.insert(0, {here!r}); "
        f"import aio_http as m; m.serve({framework!r}, {loop!r})"
    )
    srv = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert srv.stdout is not None
        # Bounded: a server that never prints its port is a failed row.
        if not select.select([srv.stdout], [], [], 60)[0]:
            return {"failed": "server did not print its port within 60 s"}
        line = srv.stdout.readline().strip()
        if not line.isdigit():
            return {"failed": f"server did not start (exit {srv.poll()})"}
        port = int(line)
        if warmup:
            wrk(port, warmup, connections, timeout=warmup + 60)
        if srv.poll() is not None:
            return {"failed": f"server exited {srv.returncode} during the warm-up"}
        cpu0 = cpu_seconds(srv.pid)
        t0 = time.monotonic()
        out = wrk(port, seconds, connections, timeout=seconds + 60)
        wall = time.monotonic() - t0
        cpu = cpu_seconds(srv.pid) - cpu0
        fig = parse_wrk(out)
        if fig["requests"] == 0:
            return fig | {"failed": "no request completed"}
        fig["server_cpu_s"] = round(cpu, 3)
        fig["server_cpu"] = round(cpu / wall, 3)
        fig["cpu_us_per_req"] = round(cpu / fig["requests"] * 1e6, 2)
        return fig
    except Exception as e:  # a contender that breaks is a row, not a crash
        return {"failed": f"{type(e).__name__}: {e}"}
    finally:
        srv.send_signal(signal.SIGKILL)
        try:
            _, err = srv.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            err = ""
        if err and err.strip():
            # The server's complaints (a traceback) say why a row failed.
            sys.stderr.write(f"[{framework} / {loop} server stderr]\n{err[-2000:]}\n")


def median_of(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Median (min, max) of the rounds that measured; else the first
    round's reason."""
    ran = [r for r in rows if "cpu_us_per_req" in r and "failed" not in r]
    if not ran:
        return dict(rows[0]) if rows else {"failed": "no round ran"}
    out: dict[str, Any] = {"rounds": len(ran)}
    for key, digits in (
        ("cpu_us_per_req", 2),
        ("req_per_s", 0),
        ("p50_ms", 3),
        ("p99_ms", 3),
        ("server_cpu", 3),
    ):
        vals = [r[key] for r in ran if key in r]
        if vals:
            out[key] = round(statistics.median(vals), digits)
            out[f"{key}_min"] = round(min(vals), digits)
            out[f"{key}_max"] = round(max(vals), digits)
    out["requests"] = sum(r["requests"] for r in ran)
    out["errors"] = sum(r.get("errors", 0) for r in ran)
    out["per_round"] = [r.get("cpu_us_per_req") for r in rows]
    failed = [r["failed"] for r in rows if "failed" in r]
    if failed:
        out["rounds_failed"] = failed
    return out


def http_impl() -> str:
    try:
        import httptools  # noqa: F401

        return "httptools"
    except ImportError:
        return "h11"


def run(
    quick: bool = False,
    scenarios: object = None,
    *,
    rounds: int | None = None,
    seconds: int | None = None,
    connections: int = 50,
    frameworks: list[str] | None = None,
    show: bool = False,
) -> dict[str, Any]:
    rounds = rounds or (1 if quick else 3)
    seconds = seconds or (1 if quick else 5)
    warmup = 1 if quick else 2
    frameworks = frameworks or FRAMEWORKS
    names = [(f, lp) for f in frameworks for lp in LOOPS]
    params = {
        "client": f"wrk -t1 -c{connections} -d{seconds}s --latency",
        "rounds": rounds,
        "warmup_s": warmup,
        "uvicorn_http": http_impl(),
    }
    if shutil.which("wrk") is None:
        return {
            "aio_http": {
                "params": params,
                "skipped": WRK_MISSING,
                "results": {contender(f, lp): {"skipped": WRK_MISSING} for f, lp in names},
            }
        }
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {n: [] for n in names}
    for rnd in range(rounds):
        k = rnd % len(names)
        for n in names[k:] + names[:k]:
            if runs[n] and "skipped" in runs[n][0]:
                continue
            row = one(*n, seconds, warmup, connections)
            runs[n].append(row)
            if show:
                print(f"round {rnd + 1} {contender(*n):30} {line(row)}", flush=True)
    results = {contender(*n): median_of(rows) for n, rows in runs.items()}
    return {"aio_http": {"params": params, "results": results}}


def line(r: dict[str, Any]) -> str:
    if "cpu_us_per_req" not in r:
        return str(r.get("skipped") or r.get("failed"))
    return (
        f"{r['cpu_us_per_req']:7.1f} µs/req  {r['req_per_s']:8.0f} req/s  "
        f"p99 {r.get('p99_ms', 0):6.2f} ms  server CPU {r['server_cpu']:.0%}"
        + (f"  {r['errors']} errors" if r.get("errors") else "")
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--duration", type=int, help="seconds per measured wrk run")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--only", nargs="+", choices=FRAMEWORKS)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    res = run(
        args.quick,
        rounds=args.rounds,
        seconds=args.duration,
        connections=args.connections,
        frameworks=args.only,
        show=True,
    )
    sc = res["aio_http"]
    if "skipped" in sc:
        print(f"skipped: {sc['skipped']}")
    print(f"\nmedian of {sc['params']['rounds']} rounds, {sc['params']['client']}:")
    for name, r in sc["results"].items():
        print(f"{name:30} {line(r)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
