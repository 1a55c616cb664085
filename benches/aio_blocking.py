"""The blocking handler on asyncio code: an aiohttp server where 1 request
in 100 calls ``time.sleep(0.2)``, handled by ``gmprt.aio.to_g`` on the gmprt
loop, by ``asyncio.to_thread`` on asyncio's loop (and uvloop's), or by
nothing (the call blocks the loop): the latency of the other 99.

Each server runs in a fresh process (``serve``); the client is an aiohttp
client in this process on asyncio's loop: ``--n`` requests with
``--concurrency`` in flight, every 100th to ``/block``. The figures are
the other requests' p50, p99 and max latency. On a 2-core machine the
client shares the CPU, so what compares is the tail: a blocked loop makes
every request in flight wait out the 200 ms.

    python benches/aio_blocking.py [--quick] [--n 2000] [--concurrency 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import subprocess
import sys
import time
from typing import Any

from harness import percentile

# contender -> (loop, how the handler runs the blocking call)
CONTENDERS = {
    "gmprt.aio + to_g": ("gmprt", "to_g"),
    "gmprt.aio, blocking": ("gmprt", "inline"),
    "asyncio + to_thread": ("asyncio", "to_thread"),
    "asyncio, blocking": ("asyncio", "inline"),
    "uvloop + to_thread": ("uvloop", "to_thread"),
}
BLOCK_S = 0.2
EVERY = 100


def serve(loop: str, how: str) -> None:
    """The server process: prints its port, serves until stdin closes."""
    from aiohttp import web

    async def fast(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def block(request: web.Request) -> web.Response:
        if how == "to_g":
            import gmprt.aio

            await gmprt.aio.to_g(time.sleep, BLOCK_S)
        elif how == "to_thread":
            await asyncio.to_thread(time.sleep, BLOCK_S)
        else:
            time.sleep(BLOCK_S)
        return web.Response(text="slow")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/fast", fast)
        app.router.add_get("/block", block)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(port, flush=True)
        # Serve until the parent closes our stdin.
        loop_ = asyncio.get_running_loop()
        done = asyncio.Event()
        loop_.add_reader(sys.stdin.fileno(), done.set)
        await done.wait()
        await runner.cleanup()

    if loop == "gmprt":
        import gmprt.aio

        gmprt.aio.run(main())
    elif loop == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


async def drive(port: int, n: int, concurrency: int) -> dict[str, Any]:
    import aiohttp

    fast_ms: list[float] = []
    slow_ms: list[float] = []
    nxt = iter(range(n))
    t0 = time.perf_counter()
    async with aiohttp.ClientSession() as s:

        async def worker() -> None:
            for i in nxt:
                path = "/block" if i % EVERY == EVERY // 2 else "/fast"
                t = time.perf_counter()
                async with s.get(f"http://127.0.0.1:{port}{path}") as r:
                    await r.read()
                    assert r.status == 200
                (slow_ms if path == "/block" else fast_ms).append((time.perf_counter() - t) * 1e3)

        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), 600)
    fast_ms.sort()
    return {
        "requests": n,
        "blocking": len(slow_ms),
        "p50_ms": percentile(fast_ms, 50),
        "p99_ms": percentile(fast_ms, 99),
        "max_ms": fast_ms[-1],
        "seconds": time.perf_counter() - t0,
    }


def one(name: str, n: int, concurrency: int) -> dict[str, Any]:
    loop, how = CONTENDERS[name]
    mods = {"gmprt": "gmprt", "uvloop": "uvloop", "asyncio": "asyncio"}
    for mod in (mods[loop], "aiohttp"):
        try:
            __import__(mod)
        except ImportError:
            return {"skipped": f"{mod} is not installed"}
    here = os.path.dirname(os.path.abspath(__file__))
    code = (
        f"import sys; sys.path.insert(0, {here!r}); "
        f"import aio_blocking as m; m.serve({loop!r}, {how!r})"
    )
    srv = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
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
        return asyncio.run(drive(int(line), n, concurrency))
    except Exception as e:  # a contender that breaks is a row, not a crash
        return {"failed": f"{type(e).__name__}: {e}"}
    finally:
        if srv.stdin:
            srv.stdin.close()
        try:
            srv.wait(timeout=10)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait()


def run(quick: bool = False, scenarios: object = None) -> dict:
    n = 500 if quick else 2000
    concurrency = 20
    results = {name: one(name, n, concurrency) for name in CONTENDERS}
    params = {
        "requests": n,
        "concurrency": concurrency,
        "blocking": f"1 in {EVERY} calls time.sleep({BLOCK_S})",
    }
    return {"aio_blocking": {"params": params, "results": results}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    res = run(args.quick)
    for name, r in res["aio_blocking"]["results"].items():
        if "p99_ms" in r:
            print(
                f"{name:22} p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  "
                f"max {r['max_ms']:7.2f} ms  ({r['seconds']:.1f} s)"
            )
        else:
            print(f"{name:22} {r.get('skipped') or r.get('failed')}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
