"""A task that blocks or hogs the CPU, while others tick: gmprt vs asyncio
vs threading.

- ``blocking``: 100 tasks tick every 5 ms while another calls
  ``time.sleep(0.2)`` ten times (a blocking C call that releases the GIL).
- ``cpu_hog``: 10 tasks tick every 5 ms while another loops in pure Python
  for 1 s (it holds the GIL).
- ``parallel_c``: 1,000 tasks each hash a 1 MiB buffer with
  ``hashlib.sha256`` (which releases the GIL); total time.

Tick delay = how late each tick woke after its intended time. Each contender
runs in its own process::

    python benches/blocking.py [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time

from harness import in_subprocess, percentile

TICK = 0.005


def _summary(delays: list[float], elapsed: float) -> dict:
    ms = [d * 1000 for d in delays]
    return {
        "ticks": len(ms),
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms, default=0.0),
        "elapsed_s": elapsed,
    }


# ---- the stuck task, shared by every contender ---------------------------


def _block(rounds: int) -> None:
    for _ in range(rounds):
        time.sleep(0.2)


def _hog(seconds: float) -> int:
    n = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        n += 1
    return n


# ---- tick scenarios -------------------------------------------------------


def ticks_gmprt(kind: str, tickers: int, rounds: int, procs: int | None) -> dict:
    import gmprt

    delays: list[float] = []
    stop: list[int] = []

    async def ticker() -> None:
        due = time.perf_counter() + TICK
        while not stop:
            await gmprt.sleep(max(0.0, due - time.perf_counter()))
            delays.append(time.perf_counter() - due)
            due += TICK

    async def main() -> float:
        ts = [gmprt.go(ticker) for _ in range(tickers)]
        await gmprt.sleep(0.05)
        delays.clear()
        t0 = time.perf_counter()
        if kind == "blocking":
            await gmprt.go(_block, rounds)
        else:
            await gmprt.go(_hog, 1.0)
        elapsed = time.perf_counter() - t0
        stop.append(1)
        for t in ts:
            await t
        return elapsed

    elapsed = gmprt.run(main, procs=procs)
    return _summary(delays, elapsed)


def ticks_asyncio(kind: str, tickers: int, rounds: int) -> dict:
    import asyncio

    delays: list[float] = []
    stop: list[int] = []

    async def ticker() -> None:
        due = time.perf_counter() + TICK
        while not stop:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            delays.append(time.perf_counter() - due)
            due += TICK

    async def stuck() -> None:
        # asyncio has no way around it: the blocking call runs on the loop.
        if kind == "blocking":
            _block(rounds)
        else:
            _hog(1.0)

    async def main() -> float:
        ts = [asyncio.create_task(ticker()) for _ in range(tickers)]
        await asyncio.sleep(0.05)
        delays.clear()
        t0 = time.perf_counter()
        await asyncio.create_task(stuck())
        elapsed = time.perf_counter() - t0
        stop.append(1)
        await asyncio.gather(*ts)
        return elapsed

    elapsed = asyncio.run(main())
    return _summary(delays, elapsed)


def ticks_threading(kind: str, tickers: int, rounds: int) -> dict:
    import threading

    delays: list[float] = []
    stop = threading.Event()

    def ticker() -> None:
        due = time.perf_counter() + TICK
        while not stop.is_set():
            time.sleep(max(0.0, due - time.perf_counter()))
            delays.append(time.perf_counter() - due)
            due += TICK

    ts = [threading.Thread(target=ticker) for _ in range(tickers)]
    for t in ts:
        t.start()
    time.sleep(0.05)
    delays.clear()
    t0 = time.perf_counter()
    if kind == "blocking":
        _block(rounds)
    else:
        _hog(1.0)
    elapsed = time.perf_counter() - t0
    stop.set()
    for t in ts:
        t.join()
    return _summary(delays, elapsed)


# ---- parallel C work ------------------------------------------------------


def _hash(buf: bytes) -> bytes:
    return hashlib.sha256(buf).digest()


def parallel_gmprt(n: int, procs: int) -> dict:
    import gmprt

    buf = b"x" * (1 << 20)

    async def main() -> float:
        t0 = time.perf_counter()
        gs = [gmprt.go(_hash, buf) for _ in range(n)]
        for g in gs:
            await g
        return time.perf_counter() - t0

    return {"elapsed_s": gmprt.run(main, procs=procs)}


def parallel_asyncio(n: int) -> dict:
    import asyncio

    buf = b"x" * (1 << 20)

    async def task() -> bytes:
        return _hash(buf)

    async def main() -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*[asyncio.create_task(task()) for _ in range(n)])
        return time.perf_counter() - t0

    return {"elapsed_s": asyncio.run(main())}


def parallel_threading(n: int, workers: int) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    buf = b"x" * (1 << 20)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(_hash, [buf] * n))
    return {"elapsed_s": time.perf_counter() - t0}


# ---- driver ---------------------------------------------------------------


def run(quick: bool = False) -> dict:
    """Every scenario and contender, each in its own process."""
    tickers_block, tickers_hog = (20, 5) if quick else (100, 10)
    rounds = 2 if quick else 10
    n_hash = 100 if quick else 1000
    res: dict = {"blocking": {}, "cpu_hog": {}, "parallel_c": {}}
    for kind, tickers in (("blocking", tickers_block), ("cpu_hog", tickers_hog)):
        r = res[kind]
        r["gmprt-procs1"] = in_subprocess("blocking", "ticks_gmprt", kind, tickers, rounds, 1)
        r["gmprt-procs2"] = in_subprocess("blocking", "ticks_gmprt", kind, tickers, rounds, 2)
        r["asyncio"] = in_subprocess("blocking", "ticks_asyncio", kind, tickers, rounds)
        r["threading"] = in_subprocess("blocking", "ticks_threading", kind, tickers, rounds)
    p = res["parallel_c"]
    p["gmprt-procs1"] = in_subprocess("blocking", "parallel_gmprt", n_hash, 1)
    p["gmprt-procs2"] = in_subprocess("blocking", "parallel_gmprt", n_hash, 2)
    p["asyncio"] = in_subprocess("blocking", "parallel_asyncio", n_hash)
    p["threading-2"] = in_subprocess("blocking", "parallel_threading", n_hash, 2)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    res = run(args.quick)
    for kind in ("blocking", "cpu_hog"):
        print(f"{kind}: tick delay (ms)")
        for name, r in res[kind].items():
            print(
                f"  {name:14} p50 {r['p50_ms']:8.2f}  p99 {r['p99_ms']:8.2f}  "
                f"max {r['max_ms']:8.2f}  ticks {r['ticks']}"
            )
    print("parallel_c: total seconds")
    for name, r in res["parallel_c"].items():
        print(f"  {name:14} {r['elapsed_s']:.3f}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
