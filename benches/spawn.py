"""Spawn-and-join N trivial tasks: gmprt vs asyncio (and uvloop) vs threading.

Each contender runs in its own process (so one's threads and memory cannot
skew another's), best of ``--repeat`` rounds, and the ratios come from the
same run:

    python benches/spawn.py [--n 100000] [--threading-n 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import time

from harness import CONTENDERS, GMPRT, attempt, gmprt_procs, run_async, skip_reason


def bench_gmprt(n: int, procs: int | None) -> float:
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


def bench_asyncio(n: int, loop: str = "asyncio") -> float:
    import asyncio

    async def task() -> None:
        pass

    async def main() -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*[asyncio.create_task(task()) for _ in range(n)])
        return time.perf_counter() - t0

    return run_async(main, loop)


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
    if name.startswith(GMPRT):
        return bench_gmprt(n, gmprt_procs(name))
    if name in ("asyncio", "uvloop"):
        return bench_asyncio(n, name)
    if name == "threading":
        return bench_threading(n)
    raise ValueError(name)


def best_of(name: str, n: int, repeat: int) -> dict:
    """Best µs per task over `repeat` rounds, in this process."""
    best = min(run_one(name, n) for _ in range(repeat))
    return {"us_per_task": best / n * 1e6, "n": n, "repeat": repeat}


def run(quick: bool = False, scenarios: object = None) -> dict:
    """The spawn scenario for every contender, each in a fresh process."""
    n, tn, repeat = (10_000, 1_000, 1) if quick else (100_000, 10_000, 3)
    return {"spawn": measure(n, tn, repeat)}


def measure(n: int, threading_n: int, repeat: int) -> dict:
    res = {}
    for name in CONTENDERS:
        why = skip_reason(name)
        if why:
            res[name] = {"skipped": why}
            continue
        res[name] = attempt(
            "spawn", "best_of", name, threading_n if name == "threading" else n, repeat
        )
    params = {"n": n, "threading_n": threading_n, "repeat": repeat}
    return {"params": params, "results": res}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--threading-n", type=int, default=10_000, help="threads are slow: fewer")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    res = measure(args.n, args.threading_n, args.repeat)["results"]
    figs = [r["us_per_task"] for k, r in res.items() if k.startswith(GMPRT) and "us_per_task" in r]
    best = min(figs) if figs else None
    print(f"spawn+join, µs per task (n={args.n}, threading n={args.threading_n})")
    for name, r in res.items():
        if "us_per_task" not in r:
            print(f"  {name:14} {r.get('skipped') or r.get('failed')}")
            continue
        us = r["us_per_task"]
        ratio = f"   gmprt is {us / best:5.1f}x faster" if best else ""
        print(f"  {name:14} {us:8.2f} µs{ratio}")
    print(json.dumps({"spawn": res}))


if __name__ == "__main__":
    main()
