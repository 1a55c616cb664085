"""Channels: gmprt.Chan vs asyncio.Queue vs threading's queue.Queue.

- ``pingpong``: two tasks pass a value back and forth over two unbuffered
  channels (queues of size 1 for the others); µs per round trip.
- ``fanout``: a producer feeds K=8 workers over one channel, the workers
  feed a collector over another (capacity ``--cap`` each); items/s.
- ``parked``: RSS growth per task with N tasks all blocked on one channel
  (asyncio: on one Event; threading: on one threading.Event, at N = 10k
  at most, a parked thread costs an OS stack); bytes per task.

Each contender runs in its own process, and the ratios come from one run::

    python benches/chan.py [--quick] [--n 1000000] [--only pingpong,fanout,parked]

``run(quick, scenarios)`` gives benches/suite.py the three scenarios as
``ping_pong``, ``fan_out`` and ``parked_memory``, one entry per contender
(gmprt with default procs and procs=1, asyncio, uvloop, threading).
"""

from __future__ import annotations

import argparse
import gc
import json
import time

from harness import CONTENDERS, GMPRT, attempt, gmprt_procs, run_async, skip_reason

# ---- ping-pong ------------------------------------------------------------


def pingpong_gmprt(n: int, procs: int | None) -> dict:
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

    return {"us_per_rtt": run_async(main, loop) / n * 1e6}


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


def fanout_gmprt(n: int, cap: int, procs: int | None) -> dict:
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

    return {"items_per_s": n / run_async(main, loop)}


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


def _parked(before: int, after: int, n: int) -> dict:
    return {
        "bytes_per_task": (after - before) / n,
        "n": n,
        "rss_base_mib": before / 2**20,
        "rss_parked_mib": after / 2**20,
    }


def parked_gmprt(n: int, procs: int | None = None) -> dict:
    import gmprt

    async def waiter(ch, wg):
        wg.done()
        try:
            await ch.recv()
        except gmprt.ChanClosed:
            pass  # main closes the channel to end the Gs: not a failure

    async def main() -> dict:
        ch, wg = gmprt.Chan(), gmprt.WaitGroup()
        before = _rss()
        wg.add(n)
        for _ in range(n):
            gmprt.go(waiter, ch, wg)
        await wg.wait()  # every G has run up to its park
        after = _rss()
        ch.close()
        return _parked(before, after, n)

    return gmprt.run(main, procs=procs)


def parked_asyncio(n: int, loop: str = "asyncio") -> dict:
    import asyncio

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
        return _parked(before, after, n)

    return run_async(main, loop)


def parked_threading(n: int) -> dict:
    import threading

    ev = threading.Event()
    ready = threading.Semaphore(0)

    def waiter():
        ready.release()
        ev.wait()

    before = _rss()
    ts = [threading.Thread(target=waiter) for _ in range(n)]
    for t in ts:
        t.start()
    for _ in range(n):
        ready.acquire()  # every thread has run up to its wait
    time.sleep(0.05)
    after = _rss()
    ev.set()
    for t in ts:
        t.join()
    return _parked(before, after, n)


# ---- driver ---------------------------------------------------------------


SCENARIOS = {"pingpong": "ping_pong", "fanout": "fan_out", "parked": "parked_memory"}


def _one(kind: str, name: str, *args) -> dict:
    """One contender's run of `kind` (pingpong, fanout, parked) in a fresh process."""
    why = skip_reason(name, ("Chan",))
    if why:
        return {"skipped": why}
    if name.startswith(GMPRT):
        return attempt("chan", f"{kind}_gmprt", *args, gmprt_procs(name))
    if name == "threading":
        return attempt("chan", f"{kind}_threading", *args)
    return attempt("chan", f"{kind}_asyncio", *args, name)


def run(quick: bool = False, scenarios: object = None, n: int | None = None) -> dict:
    """The scenarios named in `scenarios` (the suite's names, or pingpong,
    fanout, parked; default all) for every contender, in the suite's shape:
    ``{scenario: {"params": ..., "results": {contender: figures}}}``."""
    want = {SCENARIOS.get(s, s) for s in (scenarios or SCENARIOS.values())}
    res: dict = {}
    if "ping_pong" in want:
        rt = 20_000 if quick else 200_000
        results = {
            name: _one("pingpong", name, rt // 4 if name == "threading" else rt)
            for name in CONTENDERS
        }
        params = {"round_trips": rt, "threading_round_trips": rt // 4, "queues": "capacity 1"}
        res["ping_pong"] = {"params": params, "results": results}
    if "fan_out" in want:
        items = n or (50_000 if quick else 1_000_000)
        cap = 128
        results = {
            name: _one("fanout", name, items // 10 if name == "threading" else items, cap)
            for name in CONTENDERS
        }
        params = {"items": items, "threading_items": items // 10, "workers": WORKERS}
        res["fan_out"] = {"params": params | {"capacity": cap}, "results": results}
    if "parked_memory" in want:
        counts = [10_000] if quick else [100_000, 1_000_000]
        tcounts = [1_000] if quick else [1_000, 10_000]
        results = {}
        for name in CONTENDERS:
            by_n = {
                str(c): _one("parked", name, c)
                for c in (tcounts if name == "threading" else counts)
            }
            skipped = next((r for r in by_n.values() if "skipped" in r), None)
            results[name] = skipped or {"by_n": by_n}
        res["parked_memory"] = {
            "params": {"n": counts, "threading_n": tcounts},
            "results": results,
        }
    return res


def _why(r: dict) -> str:
    return r.get("skipped") or r.get("failed") or "no figure"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int, default=None, help="fan-out items (default 1M)")
    ap.add_argument("--only", default="", help="comma-separated: pingpong,fanout,parked")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(","))) or None
    res = run(args.quick, only, args.n)

    def gbest(r: dict, key: str, pick) -> float | None:
        g = [v[key] for k, v in r.items() if k.startswith(GMPRT) and key in v]
        return pick(g) if g else None

    if "ping_pong" in res:
        r = res["ping_pong"]["results"]
        best = gbest(r, "us_per_rtt", min)
        print("ping-pong: µs per round trip (lower is better)")
        for name, v in r.items():
            if "us_per_rtt" not in v:
                print(f"  {name:14} {_why(v)}")
                continue
            ratio = f"   gmprt is {v['us_per_rtt'] / best:5.1f}x faster" if best else ""
            print(f"  {name:14} {v['us_per_rtt']:8.2f}{ratio}")
    if "fan_out" in res:
        r = res["fan_out"]["results"]
        best = gbest(r, "items_per_s", max)
        print(f"fan-out (producer -> {WORKERS} workers -> collector): items/s (higher is better)")
        for name, v in r.items():
            if "items_per_s" not in v:
                print(f"  {name:14} {_why(v)}")
                continue
            ratio = f"   gmprt is {best / v['items_per_s']:5.1f}x" if best else ""
            print(f"  {name:14} {v['items_per_s']:12.0f}{ratio}")
    if "parked_memory" in res:
        print("parked memory: RSS growth per blocked task, bytes (lower is better)")
        for name, v in res["parked_memory"]["results"].items():
            for count, f in v.get("by_n", {"": v}).items():
                label = f"{name}-{count}" if count else name
                shown = f"{f['bytes_per_task']:8.0f}" if "bytes_per_task" in f else _why(f)
                print(f"  {label:20} {shown}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
