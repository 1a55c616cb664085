"""What the execution tracer costs: ping-pong and spawn+join with no
recording running and with ``gmprt.trace.record`` on.

- ``off``: the build as shipped, nothing recording (every event site is one
  relaxed load and a branch);
- ``on``: the same work inside ``gmprt.trace.record(path)`` with the
  default ring (262,144 events per thread; older events are dropped once a
  ring is full, so memory stays bounded however long the run), the file
  written to a temporary directory after the clock stops.

Each figure is the median of interleaved rounds, a fresh process each; the
goal is judged on on ÷ off. Whether "off" costs anything against a build
with no tracing code at all needs two wheels:
``benches/compare_wheels.py`` (wall and CPU time) or callgrind's
instruction counts.

    python benches/tracing.py [--quick] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

from harness import attempt, skip_reason

KINDS = ("ping_pong", "spawn")


def run_one(kind: str, n: int, traced: bool) -> dict:
    """One figure in this process: µs per round trip or per G."""
    import gmprt
    import gmprt.trace

    async def pong(a, b):
        async for v in a:
            await b.send(v)

    async def task():
        pass

    async def main() -> float:
        if kind == "ping_pong":
            a, b = gmprt.Chan(), gmprt.Chan()
            g = gmprt.go(pong, a, b)
            t0 = time.perf_counter()
            for i in range(n):
                await a.send(i)
                await b.recv()
            dt = time.perf_counter() - t0
            a.close()
            await g
            return dt
        t0 = time.perf_counter()
        gs = [gmprt.go(task) for _ in range(n)]
        for g in gs:
            await g
        return time.perf_counter() - t0

    best = float("inf")
    with tempfile.TemporaryDirectory(prefix="gmprt-trace-bench-") as d:
        for r in range(3):
            if traced:
                path = os.path.join(d, f"t{r}.json")
                with gmprt.trace.record(path):
                    dt = gmprt.run(main)
                size = os.path.getsize(path)
            else:
                dt = gmprt.run(main)
                size = 0
            best = min(best, dt)
    return {"us": best / n * 1e6, "n": n, "file_bytes": size}


def run(quick: bool = False, scenarios: object = None, rounds: int | None = None) -> dict:
    rounds = rounds or (1 if quick else 3)
    n = {"ping_pong": 20_000 if quick else 200_000, "spawn": 20_000 if quick else 100_000}
    why = skip_reason("gmprt")
    results: dict[str, dict] = {}
    for kind in KINDS:
        if why:
            results[kind] = {"skipped": why}
            continue
        runs: dict[str, list[dict]] = {"off": [], "on": []}
        for r in range(rounds):
            order = ("off", "on") if r % 2 == 0 else ("on", "off")
            for mode in order:
                runs[mode].append(attempt("tracing", "run_one", kind, n[kind], mode == "on"))
        fig: dict = {"n": n[kind]}
        for mode, rs in runs.items():
            ok = [x["us"] for x in rs if "us" in x]
            if not ok:
                fig[mode] = {"failed": next((x["failed"] for x in rs if "failed" in x), "?")}
                continue
            fig[mode] = {
                "us": statistics.median(ok),
                "rounds_us": ok,
                "file_bytes": max(x.get("file_bytes", 0) for x in rs),
            }
        if "us" in fig.get("off", {}) and "us" in fig.get("on", {}):
            fig["on_over_off"] = fig["on"]["us"] / fig["off"]["us"]
        results[kind] = fig
    return {"tracing": {"params": {"rounds": rounds, "ring": 1 << 18}, "results": results}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int)
    args = ap.parse_args()
    res = run(args.quick, rounds=args.rounds)
    for kind, fig in res["tracing"]["results"].items():
        nan = float("nan")
        off, on = fig.get("off", {}).get("us", nan), fig.get("on", {}).get("us", nan)
        ratio = fig.get("on_over_off", nan)
        print(f"{kind:10} off {off:.3f} µs  on {on:.3f} µs  on/off {ratio:.2f}×")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
