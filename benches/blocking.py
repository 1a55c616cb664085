"""A task that blocks or hogs the CPU, while others tick: gmprt vs asyncio
(and uvloop) vs threading.

- ``blocking``: 100 tasks tick every 5 ms while another calls
  ``time.sleep(0.2)`` ten times (a blocking C call that releases the GIL).
- ``cpu_hog``: 10 tasks tick every 5 ms while another loops in pure Python
  for 1 s (it holds the GIL).
- ``parallel_c``: 1,000 tasks each hash a 1 MiB buffer with
  ``hashlib.sha256`` (which releases the GIL); total time.

Tick delay = how late each tick woke after its intended time. asyncio and
uvloop run the stuck task on their loop, as a user would who did not know
better: what the ticks see then is the result. Each contender runs in its own
process; gmprt's tick scenarios need timed ``gmprt.sleep`` and say so when it
is missing::

    python benches/blocking.py [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time

from harness import (
    CONTENDERS,
    GMPRT,
    attempt,
    gmprt_procs,
    percentile,
    quantiles,
    run_async,
    skip_reason,
)

TICK = 0.005


def _summary(delays: list[float], elapsed: float, tickers: int) -> dict:
    ms = [d * 1000 for d in delays]
    return {
        "ticks": len(ms),
        # What the tickers would have done had nothing been stuck: a stalled
        # ticker records one late tick where it should have made many.
        "expected_ticks": round(tickers * elapsed / TICK),
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms, default=0.0),
        "elapsed_s": elapsed,
        "cdf_ms": quantiles(ms),
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


def ticks_gmprt(
    kind: str, tickers: int, rounds: int, procs: int | None, hog_s: float = 1.0
) -> dict:
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
            await gmprt.go(_hog, hog_s)
        elapsed = time.perf_counter() - t0
        stop.append(1)
        for t in ts:
            await t
        return elapsed

    elapsed = gmprt.run(main, procs=procs)
    return _summary(delays, elapsed, tickers)


def ticks_asyncio(
    kind: str, tickers: int, rounds: int, loop: str = "asyncio", hog_s: float = 1.0
) -> dict:
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
            _hog(hog_s)

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

    elapsed = run_async(main, loop)
    return _summary(delays, elapsed, tickers)


def ticks_threading(kind: str, tickers: int, rounds: int, hog_s: float = 1.0) -> dict:
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
        _hog(hog_s)
    elapsed = time.perf_counter() - t0
    stop.set()
    for t in ts:
        t.join()
    return _summary(delays, elapsed, tickers)


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


def parallel_asyncio(n: int, loop: str = "asyncio") -> dict:
    import asyncio

    buf = b"x" * (1 << 20)

    async def task() -> bytes:
        return _hash(buf)

    async def main() -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*[asyncio.create_task(task()) for _ in range(n)])
        return time.perf_counter() - t0

    return {"elapsed_s": run_async(main, loop)}


def parallel_threading(n: int, workers: int) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    buf = b"x" * (1 << 20)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(_hash, [buf] * n))
    return {"elapsed_s": time.perf_counter() - t0}


# ---- driver ---------------------------------------------------------------

SCENARIOS = ("blocking", "cpu_hog", "parallel_c")


def _ticks(kind: str, name: str, tickers: int, rounds: int, hog_s: float) -> dict:
    why = skip_reason(name, ("sleep",))
    if why:
        return {"skipped": why}
    if name.startswith(GMPRT):
        procs = gmprt_procs(name)
        return attempt("blocking", "ticks_gmprt", kind, tickers, rounds, procs, hog_s)
    if name == "threading":
        return attempt("blocking", "ticks_threading", kind, tickers, rounds, hog_s)
    return attempt("blocking", "ticks_asyncio", kind, tickers, rounds, name, hog_s)


def _parallel(name: str, n: int) -> dict:
    why = skip_reason(name)
    if why:
        return {"skipped": why}
    if name.startswith(GMPRT):
        return attempt("blocking", "parallel_gmprt", n, gmprt_procs(name))
    if name.startswith("threading-"):
        return attempt("blocking", "parallel_threading", n, int(name.removeprefix("threading-")))
    return attempt("blocking", "parallel_asyncio", n, name)


def run(quick: bool = False, scenarios: object = None) -> dict:
    """Every scenario (or those named in `scenarios`) and contender, each in its
    own process."""
    want = set(scenarios or SCENARIOS)
    tickers_block, tickers_hog = (20, 5) if quick else (100, 10)
    rounds = 2 if quick else 10
    hog_s = 0.3 if quick else 1.0
    n_hash = 100 if quick else 1000
    cores = os.cpu_count() or 1
    res: dict = {}
    for kind, tickers in (("blocking", tickers_block), ("cpu_hog", tickers_hog)):
        if kind not in want:
            continue
        params = {"tickers": tickers, "tick_ms": TICK * 1000}
        if kind == "blocking":
            params |= {"calls": rounds, "call": "time.sleep(0.2)"}
        else:
            params |= {"hog_s": hog_s}
        results = {name: _ticks(kind, name, tickers, rounds, hog_s) for name in CONTENDERS}
        res[kind] = {"params": params, "results": results}
    if "parallel_c" in want:
        names = [GMPRT, "gmprt-procs1"]
        if cores > 1:
            names.append(f"gmprt-procs{cores}")
        names += ["asyncio", "uvloop", f"threading-{cores}"]
        res["parallel_c"] = {
            "params": {"tasks": n_hash, "buffer": "1 MiB", "hash": "sha256", "cores": cores},
            "results": {name: _parallel(name, n_hash) for name in names},
        }
    return res


def _show(name: str, r: dict, fmt) -> str:
    if "skipped" in r or "failed" in r:
        return f"  {name:14} {r.get('skipped') or r.get('failed')}"
    return f"  {name:14} {fmt(r)}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    res = run(args.quick)
    for kind in ("blocking", "cpu_hog"):
        print(f"{kind}: tick delay (ms)")
        for name, r in res[kind]["results"].items():
            print(
                _show(
                    name,
                    r,
                    lambda r: (
                        f"p50 {r['p50_ms']:8.2f}  p99 {r['p99_ms']:8.2f}  "
                        f"max {r['max_ms']:8.2f}  ticks {r['ticks']}"
                    ),
                )
            )
    print("parallel_c: total seconds")
    for name, r in res["parallel_c"]["results"].items():
        print(_show(name, r, lambda r: f"{r['elapsed_s']:.3f}"))
    for kind in ("blocking", "cpu_hog"):
        for r in res[kind]["results"].values():
            r.pop("cdf_ms", None)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
