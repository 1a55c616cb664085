"""asyncio timers on each loop: the cost of a timer, with 10,000 others
pending (a server with a timeout per connection).

Three operations, each timed on its own in a fresh process per contender
and round, the rounds interleaved, the median reported:

- ``call_later+cancel``: ``loop.call_later(d, cb).cancel()``, d random
  (a timeout set and cleared);
- ``timeout``: ``async with asyncio.timeout(10): await asyncio.sleep(0)``;
- ``fired``: ``loop.call_later(d, cb)`` for d up to 50 ms, until all ran
  (scheduled, fired, run): the process's CPU time, since the wall clock
  would count the 50 ms the timers span.

Wall time is noisy on a shared 2-core machine; for a decision, count
instructions instead (the same program under callgrind, one op at a time):

    PHASE=fired valgrind --tool=callgrind python benches/aio_timers.py --child gmprt.aio

    python benches/aio_timers.py [--quick] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time

CONTENDERS = ("asyncio", "uvloop", "gmprt.aio")
PHASES = ("call_later+cancel", "timeout", "fired")
PENDING = 10_000


def _noop() -> None:
    pass


async def _measure(n: int, phases: tuple[str, ...]) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    rnd = random.Random(1)
    keep = [loop.call_later(3600 + rnd.random(), _noop) for _ in range(PENDING)]
    out = {}
    if "call_later+cancel" in phases:
        t0 = time.perf_counter()
        for _ in range(n):
            loop.call_later(rnd.random() * 100, _noop).cancel()
        out["call_later+cancel"] = (time.perf_counter() - t0) / n * 1e6
    if "timeout" in phases:
        m = n // 4
        t0 = time.perf_counter()
        for _ in range(m):
            async with asyncio.timeout(10):
                await asyncio.sleep(0)
        out["timeout"] = (time.perf_counter() - t0) / m * 1e6
    if "fired" in phases:
        m = n // 4
        fired: list[int] = []
        # CPU time: the wall clock would count the 50 ms the timers span.
        t0 = time.process_time()
        for _ in range(m):
            loop.call_later(rnd.random() * 0.05, fired.append, 1)
        while len(fired) < m:
            await asyncio.sleep(0.005)
        out["fired"] = (time.process_time() - t0) / m * 1e6
    for h in keep:
        h.cancel()
    return out


def child(kind: str, n: int) -> dict[str, float]:
    phase = os.environ.get("PHASE")
    phases = (phase,) if phase else PHASES
    coro = _measure(n, phases)
    if kind == "gmprt.aio":
        import gmprt.aio

        return gmprt.aio.run(coro)
    if kind == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


def available(kind: str) -> bool:
    if kind != "uvloop":
        return True
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    n = 10_000 if args.quick else args.n
    if args.child:
        print(json.dumps(child(args.child, n)))
        return
    kinds = [k for k in CONTENDERS if available(k)]
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
    for _ in range(1 if args.quick else args.rounds):
        for kind in kinds:
            cmd = [sys.executable, __file__, "--child", kind, "--n", str(n)]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)
            runs[kind].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'µs per op, median':24}" + "".join(f"{p:>20}" for p in PHASES))
    for kind in kinds:
        cells = "".join(f"{statistics.median(r[p] for r in runs[kind]):20.2f}" for p in PHASES)
        print(f"{kind:24}{cells}")
    skipped = [k for k in CONTENDERS if k not in kinds]
    if skipped:
        print(f"not installed: {', '.join(skipped)}")


if __name__ == "__main__":
    main()
