"""Record the overload scenario as a trace and draw its timeline.

    python examples/trace_overload.py [--out docs/trace-overload]

A flood of requests (one G each) calls a slow upstream (a 20 ms sleep)
through a gmprt.Semaphore of 8, while one sync G makes a blocking call
(time.sleep) that sysmon hands its P off around. Writes OUT.json (open it
in https://ui.perfetto.dev) and OUT.png (the README's picture), and prints
the summary: the queued requests show up as "Semaphore.acquire" waits.
"""

from __future__ import annotations

import argparse
import time

import gmprt
import gmprt.trace


async def upstream() -> None:
    await gmprt.sleep(0.02)


async def request(sem: gmprt.Semaphore, i: int) -> int:
    async with sem:
        await upstream()
    return i


def blocking_call() -> None:
    time.sleep(0.05)  # a C call that holds the thread, not the P


async def main(n: int) -> None:
    sem = gmprt.Semaphore(8)
    gs = []
    blocker = None
    for i in range(n):
        gs.append(gmprt.go(request, sem, i))
        if i == n // 4:
            blocker = gmprt.go(blocking_call)
        await gmprt.sleep(0.0005)  # requests arrive over time
    for g in gs:
        await g
    if blocker is not None:
        await blocker


def run(out: str, n: int = 120) -> None:
    with gmprt.trace.record(out + ".json"):
        gmprt.run(main, n, procs=2)
    doc = gmprt.trace.load(out + ".json")
    gmprt.trace.view(
        doc, out + ".png", title="overload: 120 requests, a 20 ms upstream, 8 at a time"
    )
    s = gmprt.trace.summary(doc)
    lat = s["latency_us"]
    print(
        f"{out}.json, {out}.png; scheduling latency p50 {lat['p50']:.1f} µs p99 {lat['p99']:.1f} µs"
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="trace-overload", help="path without extension")
    args = ap.parse_args()
    run(args.out)
