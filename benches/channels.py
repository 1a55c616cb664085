"""Channels and parked tasks: gmprt.Chan vs asyncio.Queue/Event (and uvloop)
vs threading's queue.Queue/Event.

- ``ping_pong``: two tasks pass a value back and forth over two unbuffered
  channels (asyncio.Queue, queue.Queue); µs per round trip.
- ``fan_out``: a producer sends N items to K = 8 workers over one channel of
  capacity 128; each worker forwards ``item * 2`` to a collector over another;
  items per second through the whole pipeline.
- ``parked_memory``: N tasks all blocked on one channel (gmprt: ``recv`` on an
  unbuffered Chan, a WaitGroup telling main when all have parked; asyncio:
  ``Event.wait``; threading: ``Event.wait``); RSS
  growth per task (psutil), from a baseline taken once the runtime or loop is
  up to a reading taken once every task has parked. No handle is kept: the
  figure is what a parked task costs the process.

Each contender runs in its own process; gmprt's runs need ``gmprt.Chan`` and
are skipped, with a note, while it is missing::

    python benches/channels.py [--quick]
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import time

from harness import CONTENDERS, GMPRT, attempt, gmprt_procs, rss, run_async, skip_reason

SCENARIOS = ("ping_pong", "fan_out", "parked_memory")
WORKERS = 8
CAPACITY = 128


def _count(counter: itertools.count) -> int:  # asyncio and threading
    """How far an itertools.count has got (next() on one is atomic under the GIL)."""
    return int(repr(counter)[6:-1])


# ---- ping-pong ------------------------------------------------------------------


def ping_pong_gmprt(n: int, procs: int | None) -> float:
    import gmprt

    async def ponger(ping, pong) -> None:
        async for v in ping:
            await pong.send(v)

    async def main() -> float:
        ping, pong = gmprt.Chan(), gmprt.Chan()
        g = gmprt.go(ponger, ping, pong)
        t0 = time.perf_counter()
        for i in range(n):
            await ping.send(i)
            await pong.recv()
        elapsed = time.perf_counter() - t0
        ping.close()
        await g
        return elapsed

    return gmprt.run(main, procs=procs)


def ping_pong_asyncio(n: int, loop: str = "asyncio") -> float:
    import asyncio

    async def ponger(ping: asyncio.Queue, pong: asyncio.Queue) -> None:
        while (v := await ping.get()) is not None:
            await pong.put(v)

    async def main() -> float:
        ping, pong = asyncio.Queue(), asyncio.Queue()
        t = asyncio.create_task(ponger(ping, pong))
        t0 = time.perf_counter()
        for i in range(n):
            await ping.put(i)
            await pong.get()
        elapsed = time.perf_counter() - t0
        await ping.put(None)
        await t
        return elapsed

    return run_async(main, loop)


def ping_pong_threading(n: int) -> float:
    import queue
    import threading

    ping: queue.Queue = queue.Queue()
    pong: queue.Queue = queue.Queue()

    def ponger() -> None:
        while (v := ping.get()) is not None:
            pong.put(v)

    t = threading.Thread(target=ponger)
    t.start()
    t0 = time.perf_counter()
    for i in range(n):
        ping.put(i)
        pong.get()
    elapsed = time.perf_counter() - t0
    ping.put(None)
    t.join()
    return elapsed


def ping_pong(name: str, n: int, repeat: int) -> dict:
    """Best µs per round trip over `repeat` rounds, in this process."""
    if name.startswith(GMPRT):
        one = lambda: ping_pong_gmprt(n, gmprt_procs(name))  # noqa: E731
    elif name == "threading":
        one = lambda: ping_pong_threading(n)  # noqa: E731
    else:
        one = lambda: ping_pong_asyncio(n, name)  # noqa: E731
    best = min(one() for _ in range(repeat))
    return {"us_per_round_trip": best / n * 1e6, "n": n, "repeat": repeat}


# ---- fan-out ----------------------------------------------------------------------


def fan_out_gmprt(n: int, procs: int | None) -> float:
    import gmprt

    async def producer(src) -> None:
        for i in range(n):
            await src.send(i)
        src.close()

    async def worker(src, out) -> None:
        async for v in src:
            await out.send(v * 2)
        await out.send(None)

    async def main() -> float:
        src, out = gmprt.Chan(CAPACITY), gmprt.Chan(CAPACITY)
        t0 = time.perf_counter()
        gmprt.go(producer, src)
        for _ in range(WORKERS):
            gmprt.go(worker, src, out)
        got = done = 0
        while done < WORKERS:
            if await out.recv() is None:
                done += 1
            else:
                got += 1
        assert got == n, got
        return time.perf_counter() - t0

    return gmprt.run(main, procs=procs)


def fan_out_asyncio(n: int, loop: str = "asyncio") -> float:
    import asyncio

    async def producer(src: asyncio.Queue) -> None:
        for i in range(n):
            await src.put(i)
        for _ in range(WORKERS):
            await src.put(None)

    async def worker(src: asyncio.Queue, out: asyncio.Queue) -> None:
        while (v := await src.get()) is not None:
            await out.put(v * 2)
        await out.put(None)

    async def main() -> float:
        src, out = asyncio.Queue(CAPACITY), asyncio.Queue(CAPACITY)
        t0 = time.perf_counter()
        tasks = [asyncio.create_task(producer(src))]
        tasks += [asyncio.create_task(worker(src, out)) for _ in range(WORKERS)]
        got = done = 0
        while done < WORKERS:
            if await out.get() is None:
                done += 1
            else:
                got += 1
        assert got == n, got
        elapsed = time.perf_counter() - t0
        await asyncio.gather(*tasks)
        return elapsed

    return run_async(main, loop)


def fan_out_threading(n: int) -> float:
    import queue
    import threading

    src: queue.Queue = queue.Queue(CAPACITY)
    out: queue.Queue = queue.Queue(CAPACITY)

    def producer() -> None:
        for i in range(n):
            src.put(i)
        for _ in range(WORKERS):
            src.put(None)

    def worker() -> None:
        while (v := src.get()) is not None:
            out.put(v * 2)
        out.put(None)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=producer)]
    threads += [threading.Thread(target=worker) for _ in range(WORKERS)]
    for t in threads:
        t.start()
    got = done = 0
    while done < WORKERS:
        if out.get() is None:
            done += 1
        else:
            got += 1
    assert got == n, got
    elapsed = time.perf_counter() - t0
    for t in threads:
        t.join()
    return elapsed


def fan_out(name: str, n: int, repeat: int) -> dict:
    """Best items/s over `repeat` rounds, in this process."""
    if name.startswith(GMPRT):
        one = lambda: fan_out_gmprt(n, gmprt_procs(name))  # noqa: E731
    elif name == "threading":
        one = lambda: fan_out_threading(n)  # noqa: E731
    else:
        one = lambda: fan_out_asyncio(n, name)  # noqa: E731
    best = min(one() for _ in range(repeat))
    return {"items_per_s": n / best, "elapsed_s": best, "n": n, "repeat": repeat}


# ---- parked memory ----------------------------------------------------------------


def _settle(base: int, parked: int) -> dict:
    gc.collect()
    after = rss()
    return {
        "n": parked,
        "rss_base_mib": base / 2**20,
        "rss_parked_mib": after / 2**20,
        "bytes_per_task": (after - base) / parked,
    }


def parked_gmprt(n: int, procs: int | None) -> dict:
    import gmprt

    async def task(ch, parked, finished) -> None:
        parked.done()
        try:
            await ch.recv()
        except gmprt.ChanClosed:
            pass
        finished.done()

    async def main() -> dict:
        ch = gmprt.Chan()
        parked, finished = gmprt.WaitGroup(), gmprt.WaitGroup()
        parked.add(n)
        finished.add(n)
        await gmprt.sleep(0)
        gc.collect()
        base = rss()
        for i in range(n):
            gmprt.go(task, ch, parked, finished)
            if i % 10_000 == 9_999:
                await gmprt.sleep(0)  # not one 1M-spawn step
        await parked.wait()
        out = _settle(base, n)
        ch.close()
        await finished.wait()
        return out

    return gmprt.run(main, procs=procs)


def parked_asyncio(n: int, loop: str = "asyncio") -> dict:
    import asyncio

    parked = itertools.count()

    async def task(ev: asyncio.Event) -> None:
        next(parked)
        await ev.wait()

    async def main() -> dict:
        ev = asyncio.Event()
        await asyncio.sleep(0)
        gc.collect()
        base = rss()
        # No references kept: each task is held by the event it waits on.
        for i in range(n):
            asyncio.create_task(task(ev))
            if i % 10_000 == 9_999:
                await asyncio.sleep(0)
        while _count(parked) < n:
            await asyncio.sleep(0)
        out = _settle(base, n)
        ev.set()
        while len(asyncio.all_tasks()) > 1:
            await asyncio.sleep(0)
        return out

    return run_async(main, loop)


def parked_threading(n: int) -> dict:
    import threading

    parked = itertools.count()
    ev = threading.Event()

    def task() -> None:
        next(parked)
        ev.wait()

    gc.collect()
    base = rss()
    threads = [threading.Thread(target=task) for _ in range(n)]
    for t in threads:
        t.start()
    while _count(parked) < n:
        time.sleep(0.001)
    time.sleep(0.05)  # let the last ones reach ev.wait()
    out = _settle(base, n)
    ev.set()
    for t in threads:
        t.join()
    return out


def parked_memory(name: str, n: int) -> dict:
    if name.startswith(GMPRT):
        return parked_gmprt(n, gmprt_procs(name))
    if name == "threading":
        return parked_threading(n)
    return parked_asyncio(n, name)


# ---- driver -------------------------------------------------------------------


def run(quick: bool = False, scenarios: object = None) -> dict:
    """Every scenario (or those named in `scenarios`) and contender, each in its
    own process."""
    want = set(scenarios or SCENARIOS)
    res: dict = {}
    repeat = 1 if quick else 3
    if "ping_pong" in want:
        n, tn = (5_000, 1_000) if quick else (100_000, 20_000)
        results = {}
        for name in CONTENDERS:
            why = skip_reason(name, ("Chan",))
            m = tn if name == "threading" else n
            results[name] = (
                {"skipped": why} if why else attempt("channels", "ping_pong", name, m, repeat)
            )
        res["ping_pong"] = {
            "params": {"round_trips": n, "threading_round_trips": tn, "repeat": repeat},
            "results": results,
        }
    if "fan_out" in want:
        n, tn = (20_000, 5_000) if quick else (1_000_000, 100_000)
        results = {}
        for name in CONTENDERS:
            why = skip_reason(name, ("Chan",))
            m = tn if name == "threading" else n
            results[name] = (
                {"skipped": why}
                if why
                else attempt("channels", "fan_out", name, m, 1 if quick else 2)
            )
        res["fan_out"] = {
            "params": {
                "items": n,
                "threading_items": tn,
                "workers": WORKERS,
                "capacity": CAPACITY,
                "repeat": 1 if quick else 2,
            },
            "results": results,
        }
    if "parked_memory" in want:
        ns, tns = (
            ([10_000, 50_000], [200, 1_000]) if quick else ([100_000, 1_000_000], [1_000, 10_000])
        )
        results = {}
        for name in CONTENDERS:
            why = skip_reason(name, ("Chan",))
            if why:
                results[name] = {"skipped": why}
                continue
            per_n = {}
            for m in tns if name == "threading" else ns:
                per_n[str(m)] = attempt("channels", "parked_memory", name, m)
            results[name] = {"by_n": per_n}
        res["parked_memory"] = {
            "params": {"n": ns, "threading_n": tns},
            "results": results,
        }
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", nargs="*", choices=SCENARIOS)
    args = ap.parse_args()
    res = run(args.quick, args.only)
    for scenario, body in res.items():
        print(scenario)
        for name, r in body["results"].items():
            print(f"  {name:14} {json.dumps(r)}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
