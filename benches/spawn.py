"""Spawn-and-join N trivial tasks: gmprt vs asyncio vs threading.

Each contender runs in its own process (so one's threads and memory cannot
skew another's), best of ``--repeat`` rounds, and the ratios come from the
same run:

    python benches/spawn.py [--n 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import time

from harness import in_subprocess

CONTENDERS = ["gmprt-procs1", "gmprt-procs2", "asyncio", "threading"]


def bench_gmprt(n: int, procs: int) -> float:
    import gmprt

    async def task() -> None:
        pass

    async def main() -> float:
        t0 = time.perf_counter()
        gs = [gmprt.go(task) for _ in range(n)]
        for g in gs:
            await g
        return time.perf_counter() - t0

    return gmprt.run(main, procs=procs)


def bench_asyncio(n: int) -> float:
    import asyncio

    async def task() -> None:
        pass

    async def main() -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*[asyncio.create_task(task()) for _ in range(n)])
        return time.perf_counter() - t0

    return asyncio.run(main())


def bench_threading(n: int) -> float:
    import threading

    def task() -> None:
        pass

    t0 = time.perf_counter()
    threads = [threading.Thread(target=task) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def run_one(name: str, n: int) -> float:
    """Seconds for n spawns in this process."""
    if name.startswith("gmprt-procs"):
        return bench_gmprt(n, int(name.removeprefix("gmprt-procs")))
    if name == "asyncio":
        return bench_asyncio(n)
    if name == "threading":
        return bench_threading(n)
    raise ValueError(name)


def best_of(name: str, n: int, repeat: int) -> float:
    """Best seconds over `repeat` rounds, in this process."""
    return min(run_one(name, n) for _ in range(repeat))


def measure(name: str, n: int, repeat: int) -> float:
    """Best µs per task over `repeat` rounds, in a fresh process."""
    return in_subprocess("spawn", "best_of", name, n, repeat) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--threading-n", type=int, default=10_000, help="threads are slow: fewer")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    res = {}
    for name in CONTENDERS:
        n = args.threading_n if name == "threading" else args.n
        res[name] = measure(name, n, args.repeat)
    best = min(res["gmprt-procs1"], res["gmprt-procs2"])
    print(f"spawn+join, µs per task (n={args.n}, threading n={args.threading_n})")
    for name, us in res.items():
        print(f"  {name:14} {us:8.2f} µs   gmprt is {us / best:5.1f}x faster")
    print(json.dumps({"spawn_us": res}))


if __name__ == "__main__":
    main()
