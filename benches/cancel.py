"""Cancel: N tasks parked on a channel / queue, cancel every one, wait until
every one has finished; µs per cancel to completion.

The clock runs from the first cancel call to the moment the last task has
finished (its ``Cancelled`` raised at the park point, unwound and the task
ended), divided by N. Setting up the N parked tasks is not timed.

- ``gmprt``, ``gmprt-procs1``: N Gs each parked in ``await ch.recv()`` on one
  unbuffered ``gmprt.Chan``; ``g.cancel()`` on each, then ``await g`` on each
  (each raises ``gmprt.Cancelled``, caught). This is the fastest of the
  idiomatic ways measured (``python benches/cancel.py --ways`` compares it
  with a ``WaitGroup`` the Gs mark in ``finally``, and with polling
  ``gmprt.stats()``).
- ``gmprt-group``: the same N Gs started in one ``async with gmprt.Group()``;
  one ``grp.cancel()``, then leaving the block (which waits for them all).
- ``asyncio``, ``uvloop``: N tasks each parked in ``await q.get()`` on one
  ``asyncio.Queue``; ``t.cancel()`` on each, then
  ``asyncio.gather(*tasks, return_exceptions=True)``.
- ``threading``: threads cannot be cancelled. The honest stand-in is a
  cooperative cancel: N threads (fewer: an OS thread is big) each blocked in
  ``threading.Event.wait()`` on an event of its own; "cancel" sets each
  event, then each thread is joined. It measures waking and ending blocked
  threads, not cancelling them: a thread blocked anywhere else (a socket
  read, a lock) could not be stopped at all.

Each contender runs in a fresh process per round; the rounds interleave the
contenders and the figure is the median (a shared 2-core machine is noisy).

    python benches/cancel.py [--quick] [--n 100000] [--rounds 3] [--ways]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from harness import CONTENDERS, GMPRT, attempt, gmprt_procs, run_async, skip_reason

GMPRT_GROUP = "gmprt-group"
ORDER = [GMPRT, CONTENDERS[1], GMPRT_GROUP, "asyncio", "uvloop", "threading"]

HOW = {
    GMPRT: "g.cancel() on each, then await each",
    CONTENDERS[1]: "g.cancel() on each, then await each (procs=1)",
    GMPRT_GROUP: "one grp.cancel() of a Group holding all N, then leave the block",
    "asyncio": "t.cancel() on each, then gather(return_exceptions=True)",
    "uvloop": "t.cancel() on each, then gather(return_exceptions=True)",
    "threading": "not cancellable: Event.set() on each blocked thread, then join each",
}


# ---- one contender, in this process ----------------------------------------------


def cancel_gmprt(n: int, procs: int | None, way: str = "await") -> dict:
    """``way``: await (cancel each, await each), waitgroup (cancel each, one
    WaitGroup the Gs mark in ``finally``), poll (cancel each, poll
    gmprt.stats() until only main is left), group (one grp.cancel())."""
    import gmprt

    async def waiter(ch, ready):
        ready.done()
        await ch.recv()

    async def waiter_wg(ch, ready, fin):
        ready.done()
        try:
            await ch.recv()
        finally:
            fin.done()

    async def main() -> dict:
        ch, ready, fin = gmprt.Chan(), gmprt.WaitGroup(), gmprt.WaitGroup()
        ready.add(n)
        cancelled = 0
        if way == "group":
            async with gmprt.Group() as grp:
                gs = [grp.go(waiter, ch, ready) for _ in range(n)]
                await ready.wait()  # every G has run up to its park
                t0 = time.perf_counter()
                grp.cancel()
            dt = time.perf_counter() - t0
            cancelled = sum(g.cancelled() for g in gs)
        elif way == "waitgroup":
            fin.add(n)
            gs = [gmprt.go(waiter_wg, ch, ready, fin) for _ in range(n)]
            await ready.wait()
            t0 = time.perf_counter()
            for g in gs:
                g.cancel()
            await fin.wait()
            dt = time.perf_counter() - t0
            cancelled = n
        else:
            gs = [gmprt.go(waiter, ch, ready) for _ in range(n)]
            await ready.wait()
            t0 = time.perf_counter()
            for g in gs:
                g.cancel()
            if way == "poll":
                while gmprt.stats()["goroutines"] > 1:
                    await gmprt.sleep(0)
                cancelled = n
            else:
                for g in gs:
                    try:
                        await g
                    except gmprt.Cancelled:
                        cancelled += 1
            dt = time.perf_counter() - t0
        assert cancelled == n, (cancelled, n)
        left = gmprt.stats()["goroutines"]
        return {"us_per_cancel": dt / n * 1e6, "n": n, "way": way, "gs_left": left}

    return gmprt.run(main, procs=procs)


def cancel_asyncio(n: int, loop: str = "asyncio") -> dict:
    import asyncio

    async def waiter(q):
        await q.get()

    async def main() -> dict:
        q: asyncio.Queue = asyncio.Queue()
        tasks = [asyncio.create_task(waiter(q)) for _ in range(n)]
        await asyncio.sleep(0)  # every task has run up to its park
        t0 = time.perf_counter()
        for t in tasks:
            t.cancel()
        got = await asyncio.gather(*tasks, return_exceptions=True)
        dt = time.perf_counter() - t0
        cancelled = sum(isinstance(x, asyncio.CancelledError) for x in got)
        assert cancelled == n, (cancelled, n)
        return {"us_per_cancel": dt / n * 1e6, "n": n}

    return run_async(main, loop)


def cancel_threading(n: int) -> dict:
    import threading

    ready = threading.Semaphore(0)
    evs = [threading.Event() for _ in range(n)]

    def waiter(ev: threading.Event) -> None:
        ready.release()
        ev.wait()

    ts = [threading.Thread(target=waiter, args=(ev,)) for ev in evs]
    for t in ts:
        t.start()
    for _ in range(n):
        ready.acquire()  # every thread has run up to its wait
    time.sleep(0.05)
    t0 = time.perf_counter()
    for ev in evs:
        ev.set()
    for t in ts:
        t.join()
    dt = time.perf_counter() - t0
    return {"us_per_cancel": dt / n * 1e6, "n": n}


# ---- driver ------------------------------------------------------------------------


def _one(name: str, n: int, tn: int) -> dict:
    why = skip_reason(name, ("Chan",))
    if why:
        return {"skipped": why}
    if name == GMPRT_GROUP:
        return attempt("cancel", "cancel_gmprt", n, None, "group", timeout=300)
    if name.startswith(GMPRT):
        return attempt("cancel", "cancel_gmprt", n, gmprt_procs(name), "await", timeout=300)
    if name == "threading":
        return attempt("cancel", "cancel_threading", tn, timeout=300)
    return attempt("cancel", "cancel_asyncio", n, name, timeout=300)


def _median(rounds: list[dict]) -> dict:
    """The median round's figures, with every round's µs/cancel."""
    ok = [r for r in rounds if "us_per_cancel" in r]
    if not ok:
        return rounds[0]
    ok.sort(key=lambda r: r["us_per_cancel"])
    mid = dict(ok[len(ok) // 2])
    mid["us_per_cancel"] = statistics.median(r["us_per_cancel"] for r in ok)
    mid["rounds_us"] = [round(r["us_per_cancel"], 3) for r in rounds if "us_per_cancel" in r]
    failed = [r for r in rounds if "us_per_cancel" not in r]
    if failed:
        mid["failed_rounds"] = [r.get("failed") or r.get("skipped") for r in failed]
    return mid


def measure(n: int, tn: int, rounds: int) -> dict:
    by: dict[str, list[dict]] = {name: [] for name in ORDER}
    for _ in range(rounds):  # interleaved: each round runs every contender once
        for name in ORDER:
            if by[name] and "skipped" in by[name][0]:
                continue
            by[name].append(_one(name, n, tn))
    results = {}
    for name, rs in by.items():
        results[name] = _median(rs) if rs else {"skipped": "not run"}
        results[name]["how"] = HOW[name]
    params = {"n": n, "threading_n": tn, "rounds": rounds, "parked_on": "channel recv / Queue.get"}
    return {"params": params, "results": results}


def run(quick: bool = False, scenarios: object = None) -> dict:
    # --quick: one round (it checks the suite works, not speed).
    n, tn, rounds = (5_000, 500, 1) if quick else (100_000, 5_000, 3)
    return {"cancel": measure(n, tn, rounds)}


def ways(n: int, rounds: int) -> dict:
    """gmprt's ways to cancel N Gs and wait for them, interleaved rounds."""
    out: dict[str, list[float]] = {}
    for _ in range(rounds):
        for way in ("await", "waitgroup", "poll", "group"):
            r = attempt("cancel", "cancel_gmprt", n, None, way, timeout=300)
            out.setdefault(way, []).append(r.get("us_per_cancel", float("nan")))
    return {w: {"median": statistics.median(v), "rounds": v} for w, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--threading-n", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ways", action="store_true", help="compare gmprt's ways to wait")
    args = ap.parse_args()
    n = args.n or (5_000 if args.quick else 100_000)
    if args.ways:
        res = ways(n, args.rounds)
        print(f"gmprt: µs per cancel to completion, N = {n:,}, median of {args.rounds}")
        for w, v in res.items():
            print(f"  {w:10} {v['median']:7.2f}   rounds {[round(x, 2) for x in v['rounds']]}")
        print(json.dumps(res))
        return
    tn = args.threading_n or max(1, n // 20)
    res = measure(n, tn, args.rounds)["results"]
    best = res.get(GMPRT, {}).get("us_per_cancel")
    print(f"cancel to completion, µs per cancel (N = {n:,}, threading N = {tn:,})")
    for name, r in res.items():
        if "us_per_cancel" not in r:
            print(f"  {name:14} {r.get('skipped') or r.get('failed')}")
            continue
        ratio = f"   gmprt is {r['us_per_cancel'] / best:5.1f}x faster" if best else ""
        print(f"  {name:14} {r['us_per_cancel']:8.2f}{ratio}   {r['rounds_us']}")
    print(json.dumps({"cancel": res}))


if __name__ == "__main__":
    main()
