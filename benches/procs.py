"""procs=1 vs procs=2 on Python-bound work, to choose the default `procs`.

Two workloads, each in a fresh process, best of ``--repeat``:
- ``yield``: 1,000 Gs each doing 200 rounds of a little Python arithmetic
  and ``await gmprt.sleep(0)`` (scheduler-heavy);
- ``compute``: 100 Gs each summing squares of 200k ints (GIL-bound).

    python benches/procs.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def work(kind: str, procs: int) -> float:
    import gmprt

    async def yielder() -> int:
        acc = 0
        for i in range(200):
            acc += i * i
            await gmprt.sleep(0)
        return acc

    def compute() -> int:
        return sum(i * i for i in range(200_000))

    async def main() -> float:
        fn, n = (yielder, 1000) if kind == "yield" else (compute, 100)
        t0 = time.perf_counter()
        gs = [gmprt.go(fn) for _ in range(n)]
        for g in gs:
            await g
        return time.perf_counter() - t0

    return gmprt.run(main, procs=procs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    out = {}
    for kind in ("yield", "compute"):
        for procs in (1, 2):
            code = (
                "import json, sys; sys.path.insert(0, 'benches'); import procs; "
                f"print(json.dumps([procs.work({kind!r}, {procs}) for _ in range({args.repeat})]))"
            )
            r = subprocess.run(
                [sys.executable, "-c", code],
                capture_output=True,
                text=True,
                timeout=600,
                check=True,
            )
            out[f"{kind}-procs{procs}"] = min(json.loads(r.stdout.strip().splitlines()[-1]))
    for kind in ("yield", "compute"):
        one, two = out[f"{kind}-procs1"], out[f"{kind}-procs2"]
        ratio = two / one
        print(f"{kind:8} procs=1 {one:.3f} s   procs=2 {two:.3f} s   procs=2/procs=1 = {ratio:.2f}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
