"""Channels: gmprt.Chan vs asyncio.Queue vs threading's queue.Queue.

- ``pingpong``: two tasks pass a value back and forth over two unbuffered
  channels (queues of size 1 for the others); µs per round trip.
- ``fanout``: a producer feeds K=8 workers over one channel, the workers
  feed a collector over another (capacity ``--cap`` each); items/s.
- ``parked``: RSS growth per task with N tasks all blocked on one channel
  (asyncio: on one Event; threading is left out, a parked thread costs an
  OS stack); bytes per task.

Each contender runs in its own process, and the ratios come from one run::

    python benches/chan.py [--quick] [--n 1000000] [--only pingpong,fanout,parked]
"""

from __future__ import annotations

import argparse
import gc
import json
import time

from harness import gmprt_available, in_subprocess

# ---- ping-pong ------------------------------------------------------------


def pingpong_gmprt(n: int, procs: int) -> dict:
    import gmprt

    async def ponger(a, b):
        for _ in range(n):
            await b.send(await a.recv())

    async def main() -> float:
        a, b = gmprt.Chan(), gmprt.Chan()
        g = gmprt.go(ponger, a, b)
        t0 = time.perf_counter()
        for i in range(n):
            await a.send(i)
            await b.recv()
        dt = time.perf_counter() - t0
        await g
        return dt

    return {"us_per_rtt": gmprt.run(main, procs=procs) / n * 1e6}


def pingpong_asyncio(n: int, loop: str = "asyncio") -> dict:
    import asyncio

    if loop == "uvloop":
        import uvloop

        uvloop.install()

    async def ponger(a, b):
        for _ in range(n):
            await b.put(await a.get())

    async def main() -> float:
        a, b = asyncio.Queue(1), asyncio.Queue(1)
        t = asyncio.create_task(ponger(a, b))
        t0 = time.perf_counter()
        for i in range(n):
            await a.put(i)
            await b.get()
        dt = time.perf_counter() - t0
        await t
        return dt

    return {"us_per_rtt": asyncio.run(main()) / n * 1e6}


def pingpong_threading(n: int) -> dict:
    import queue
    import threading

    a, b = queue.Queue(1), queue.Queue(1)

    def ponger():
        for _ in range(n):
            b.put(a.get())

    t = threading.Thread(target=ponger)
    t.start()
    t0 = time.perf_counter()
    for i in range(n):
        a.put(i)
        b.get()
    dt = time.perf_counter() - t0
    t.join()
    return {"us_per_rtt": dt / n * 1e6}


# ---- fan-out --------------------------------------------------------------

WORKERS = 8


def fanout_gmprt(n: int, cap: int, procs: int) -> dict:
    import gmprt

    async def producer(jobs):
        for i in range(n):
            await jobs.send(i)
        jobs.close()

    async def worker(jobs, results, wg):
        async for v in jobs:
            await results.send(v * 2)
        wg.done()

    async def closer(results, wg):
        await wg.wait()
        results.close()

    async def main() -> float:
        jobs, results = gmprt.Chan(cap), gmprt.Chan(cap)
        wg = gmprt.WaitGroup()
        wg.add(WORKERS)
        t0 = time.perf_counter()
        gmprt.go(producer, jobs)
        for _ in range(WORKERS):
            gmprt.go(worker, jobs, results, wg)
        gmprt.go(closer, results, wg)
        total = 0
        async for v in results:
            total += v
        dt = time.perf_counter() - t0
        assert total == n * (n - 1), total
        return dt

    return {"items_per_s": n / gmprt.run(main, procs=procs)}


def fanout_asyncio(n: int, cap: int, loop: str = "asyncio") -> dict:
    import asyncio

    if loop == "uvloop":
        import uvloop

        uvloop.install()
    done = object()

    async def producer(jobs):
        for i in range(n):
            await jobs.put(i)
        for _ in range(WORKERS):
            await jobs.put(done)

    async def worker(jobs, results):
        while (v := await jobs.get()) is not done:
            await results.put(v * 2)
        await results.put(done)

    async def main() -> float:
        jobs, results = asyncio.Queue(cap), asyncio.Queue(cap)
        t0 = time.perf_counter()
        tasks = [asyncio.create_task(producer(jobs))]
        tasks += [asyncio.create_task(worker(jobs, results)) for _ in range(WORKERS)]
        total, finished = 0, 0
        while finished < WORKERS:
            v = await results.get()
            if v is done:
                finished += 1
            else:
                total += v
        dt = time.perf_counter() - t0
        await asyncio.gather(*tasks)
        assert total == n * (n - 1), total
        return dt

    return {"items_per_s": n / asyncio.run(main())}


def fanout_threading(n: int, cap: int) -> dict:
    import queue
    import threading

    done = object()
    jobs, results = queue.Queue(cap), queue.Queue(cap)

    def producer():
        for i in range(n):
            jobs.put(i)
        for _ in range(WORKERS):
            jobs.put(done)

    def worker():
        while (v := jobs.get()) is not done:
            results.put(v * 2)
        results.put(done)

    t0 = time.perf_counter()
    ts = [threading.Thread(target=producer)]
    ts += [threading.Thread(target=worker) for _ in range(WORKERS)]
    for t in ts:
        t.start()
    total, finished = 0, 0
    while finished < WORKERS:
        v = results.get()
        if v is done:
            finished += 1
        else:
            total += v
    dt = time.perf_counter() - t0
    for t in ts:
        t.join()
    assert total == n * (n - 1), total
    return {"items_per_s": n / dt}


# ---- parked memory --------------------------------------------------------


def _rss() -> int:
    import psutil

    gc.collect()
    return psutil.Process().memory_info().rss


def parked_gmprt(n: int) -> dict:
    import gmprt

    async def waiter(ch, wg):
        wg.done()
        await ch.recv()

    async def main() -> dict:
        ch, wg = gmprt.Chan(), gmprt.WaitGroup()
        before = _rss()
        wg.add(n)
        for _ in range(n):
            gmprt.go(waiter, ch, wg)
        await wg.wait()  # every G has run up to its park
        after = _rss()
        ch.close()
        return {"bytes_per_task": (after - before) / n, "n": n}

    return gmprt.run(main)


def parked_asyncio(n: int, loop: str = "asyncio") -> dict:
    import asyncio

    if loop == "uvloop":
        import uvloop

        uvloop.install()

    async def waiter(ev):
        await ev.wait()

    async def main() -> dict:
        ev = asyncio.Event()
        before = _rss()
        tasks = [asyncio.create_task(waiter(ev)) for _ in range(n)]
        await asyncio.sleep(0)  # every task has run up to its park
        after = _rss()
        ev.set()
        await asyncio.gather(*tasks)
        return {"bytes_per_task": (after - before) / n, "n": n}

    return asyncio.run(main())


# ---- driver ---------------------------------------------------------------


def _loops() -> list[str]:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return ["asyncio"]
    return ["asyncio", "uvloop"]


def run(quick: bool = False, n: int | None = None, only: set[str] | None = None) -> dict:
    res: dict = {}
    want = only or {"pingpong", "fanout", "parked"}
    have_gmprt = gmprt_available("Chan")
    if "pingpong" in want:
        rt = 20_000 if quick else 200_000
        r = res["pingpong"] = {}
        if have_gmprt:
            r["gmprt-procs1"] = in_subprocess("chan", "pingpong_gmprt", rt, 1)
            r["gmprt-procs2"] = in_subprocess("chan", "pingpong_gmprt", rt, 2)
        for loop in _loops():
            r[loop] = in_subprocess("chan", "pingpong_asyncio", rt, loop)
        r["threading"] = in_subprocess("chan", "pingpong_threading", rt // 4)
    if "fanout" in want:
        items = n or (50_000 if quick else 1_000_000)
        cap = 128
        r = res["fanout"] = {}
        if have_gmprt:
            r["gmprt-procs1"] = in_subprocess("chan", "fanout_gmprt", items, cap, 1)
            r["gmprt-procs2"] = in_subprocess("chan", "fanout_gmprt", items, cap, 2)
        for loop in _loops():
            r[loop] = in_subprocess("chan", "fanout_asyncio", items, cap, loop)
        r["threading"] = in_subprocess("chan", "fanout_threading", items // 10, cap)
    if "parked" in want:
        r = res["parked"] = {}
        for count in [10_000] if quick else [100_000, 1_000_000]:
            if have_gmprt:
                r[f"gmprt-{count}"] = in_subprocess("chan", "parked_gmprt", count)
            for loop in _loops():
                r[f"{loop}-{count}"] = in_subprocess("chan", "parked_asyncio", count, loop)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int, default=None, help="fan-out items (default 1M)")
    ap.add_argument("--only", default="", help="comma-separated: pingpong,fanout,parked")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(","))) or None
    res = run(args.quick, args.n, only)
    if "pingpong" in res:
        r = res["pingpong"]
        best = min(v["us_per_rtt"] for k, v in r.items() if k.startswith("gmprt")) if any(
            k.startswith("gmprt") for k in r
        ) else None
        print("ping-pong: µs per round trip (lower is better)")
        for name, v in r.items():
            ratio = f"   gmprt is {v['us_per_rtt'] / best:5.1f}x faster" if best else ""
            print(f"  {name:14} {v['us_per_rtt']:8.2f}{ratio}")
    if "fanout" in res:
        r = res["fanout"]
        gm = [v["items_per_s"] for k, v in r.items() if k.startswith("gmprt")]
        print(f"fan-out (producer -> {WORKERS} workers -> collector): items/s (higher is better)")
        for name, v in r.items():
            ratio = f"   gmprt is {max(gm) / v['items_per_s']:5.1f}x" if gm else ""
            print(f"  {name:14} {v['items_per_s']:12.0f}{ratio}")
    if "parked" in res:
        print("parked memory: RSS growth per blocked task, bytes (lower is better)")
        for name, v in res["parked"].items():
            print(f"  {name:20} {v['bytes_per_task']:8.0f}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
