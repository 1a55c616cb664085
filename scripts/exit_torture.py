#!/usr/bin/env python3
"""Exit and Ctrl-C torture: run each shape N times in fresh processes, count
how each process ended.

A shape is a G that is still inside its step when the program ends:

- ``busy``: a coroutine G in a pure-Python loop that never awaits;
- ``sleep``: a sync G in ``time.sleep(10)`` (blocked in C, GIL released);
- ``recv``: a sync G in ``ch.recv_blocking()`` (blocked in gmprt, in Rust);
- ``parked``: coroutine Gs parked on a channel and on timers.

Two ways to end: ``exit`` (main returns while the G runs; the interpreter
then exits) and ``sigint`` (the parent sends SIGINT once the G runs; the
child re-raises the ``KeyboardInterrupt`` from ``run()``, so Python exits
the way an uncaught Ctrl-C does). A clean run ends with rc 0 (exit) or
-SIGINT (sigint) and no "FATAL"/"Fatal Python error" on stderr; anything
else (SIGABRT, SIGSEGV, a hang, a fatal message) counts as a failure.

Latency: for ``sigint``, from the parent's ``kill()`` to ``run()`` raising in
the child (``time.monotonic`` is CLOCK_MONOTONIC, one clock for every
process); for ``exit``, from main's return to ``run()`` returning.

    python scripts/exit_torture.py --runs 500
    python scripts/exit_torture.py --runs 100 --shapes busy,sleep --modes sigint --procs 2
    PYTHONMALLOC=debug python scripts/exit_torture.py --runs 50   # the env is inherited

The tests (tests/test_shutdown.py) import ``child_code`` and ``run_once``
from here, so the shapes are defined once.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import os
import random
import selectors
import signal
import statistics
import subprocess
import sys
import textwrap
import time

# The four shapes; `fin` and `wake` (below) on request.
DEFAULT_SHAPES = ("busy", "sleep", "recv", "parked")

SHAPES = {
    "busy": """
        async def g():
            started.set()
            x = 0
            while True:
                x += 1
    """,
    "sleep": """
        def g():
            started.set()
            time.sleep(10)
    """,
    "recv": """
        ch = gmprt.Chan()
        def g():
            started.set()
            ch.recv_blocking()
    """,
    # Not in the four: a sync G whose C call returns after run()
    # gave up on it, while the interpreter finalizes (garbage left for the
    # final collection has a slow __del__, which keeps finalization going).
    # Its thread then wants the GIL back during finalization: CPython < 3.14
    # pthread_exit()s it there.
    "fin": """
        import gc
        class Slow:
            def __del__(self, sleep=time.sleep):
                sleep(0.5)
        def END():
            gc.disable()
            cycle = Slow()
            cycle.me = cycle
        def g():
            started.set()
            time.sleep(NAP)
            x = 0
            while True:
                x += 1
    """,
    # The same G, its call returning while the interpreter is still alive
    # (the main thread sleeps after run()): it must not resume after run()
    # has returned ("resumed"). On a stalled machine its call may return
    # before run() even interrupts it; resuming then is no fault.
    "wake": """
        AFTER = NAP + 0.2
        def g():
            started.set()
            time.sleep(NAP)
            print("resumed", time.monotonic(), flush=True)
            x = 0
            while True:
                x += 1
    """,
    "parked": """
        ch = gmprt.Chan()
        async def recv():
            await ch.recv()
        async def nap():
            await gmprt.sleep(3600)
        async def g():
            for _ in range(50):
                gmprt.go(recv)
                gmprt.go(nap)
            await gmprt.sleep(0.001)
            started.set()
            await ch.recv()
    """,
}

MODES = ("exit", "sigint")

_PRELUDE = """
import sys, threading, time
import gmprt
MODE, PROCS, NAP = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
AFTER = 0.0
END = None
started = threading.Event()
"""

_MAIN = """
async def main():
    gmprt.go(g)
    deadline = time.monotonic() + 20
    while not started.is_set():
        if time.monotonic() > deadline:
            raise SystemExit("the G never started")
        await gmprt.sleep(0.001)
    # Let the G get into its call (past `started.set()`).
    await gmprt.sleep(0.005)
    if MODE == "sigint":
        print("ready", flush=True)
        await gmprt.sleep(3600)
    print("main-returns", time.monotonic(), flush=True)

if MODE == "sigint":
    try:
        gmprt.run(main, procs=PROCS)
    except KeyboardInterrupt:
        print("raised", time.monotonic(), flush=True)
        raise
else:
    gmprt.run(main, procs=PROCS)
    print("returned", time.monotonic(), flush=True)
    time.sleep(AFTER)
    if END:
        END()
"""


def child_code(shape: str) -> str:
    """The program a child runs for `shape` (argv: mode, procs, nap)."""
    return _PRELUDE + textwrap.dedent(SHAPES[shape]) + _MAIN


def _read_line(proc, deadline):
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                return None
            return proc.stdout.readline()
    finally:
        sel.close()


def _stamp(out: str, tag: str):
    for line in out.splitlines():
        if line.startswith(tag + " "):
            return float(line.split()[1])
    return None


def run_once(shape, mode, procs, timeout=30.0, jitter=0.0, env=None, nap=0.25):
    """Runs one child; returns (verdict, latency_s or None, rc, stderr).

    verdict: "ok", or what went wrong: "rc=-6", "rc=-11", "hang", "fatal",
    "resumed" (an abandoned G ran again after run() returned), "no-ready" (the child never got
    its G running). `nap`: how long the `fin` and `wake` Gs sleep in C.
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", child_code(shape), mode, str(procs), str(nap)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    t_kill = None
    try:
        if mode == "sigint":
            line = _read_line(proc, time.monotonic() + timeout)
            if not line or line.strip() != "ready":
                proc.kill()
                out, err = proc.communicate(timeout=10)
                return "no-ready", None, proc.returncode, (line or "") + out + err
            if jitter:
                time.sleep(random.uniform(0, jitter))
            t_kill = time.monotonic()
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        return "hang", None, None, err
    rc = proc.returncode
    if mode == "sigint":
        raised = _stamp(out, "raised")
        latency = raised - t_kill if raised is not None and t_kill is not None else None
        expected = -signal.SIGINT
    else:
        start, end = _stamp(out, "main-returns"), _stamp(out, "returned")
        latency = end - start if start is not None and end is not None else None
        expected = 0
    if rc != expected:
        return f"rc={rc}", latency, rc, err
    if "FATAL" in err or "Fatal Python error" in err:
        return "fatal", latency, rc, err
    resumed, returned = _stamp(out, "resumed"), _stamp(out, "returned")
    if resumed is not None and (returned is None or resumed >= returned):
        return "resumed", latency, rc, err
    if latency is None:
        return "no-stamp", latency, rc, err
    return "ok", latency, rc, err


def _fmt_ms(xs):
    if not xs:
        return "-"
    xs = sorted(xs)
    p99 = xs[min(len(xs) - 1, int(len(xs) * 0.99))]
    return (
        f"median {statistics.median(xs) * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms, "
        f"max {xs[-1] * 1e3:.1f} ms"
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=100, help="runs per shape and mode")
    ap.add_argument(
        "--shapes",
        default=",".join(DEFAULT_SHAPES),
        help=f"comma-separated, of {','.join(SHAPES)}",
    )
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated: exit,sigint")
    ap.add_argument("--procs", type=int, default=1, help="procs= for run()")
    ap.add_argument("--jobs", type=int, default=2, help="children at a time")
    ap.add_argument("--jitter", type=float, default=0.02, help="random delay before SIGINT (s)")
    ap.add_argument("--timeout", type=float, default=30.0, help="per child (s)")
    ap.add_argument("--show", type=int, default=1, help="stderr samples to print per failure kind")
    ap.add_argument(
        "--nap",
        type=float,
        default=0.25,
        help="seconds the fin/wake Gs sleep in C: past run()'s wait for them",
    )
    args = ap.parse_args(argv)

    env = dict(os.environ)
    env.setdefault("PYTHONFAULTHANDLER", "1")
    bad_total = 0
    for mode in args.modes.split(","):
        for shape in args.shapes.split(","):
            counts = collections.Counter()
            lat = []
            samples = collections.defaultdict(list)
            t0 = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(args.jobs) as ex:
                futs = [
                    ex.submit(
                        run_once, shape, mode, args.procs, args.timeout, args.jitter, env, args.nap
                    )
                    for _ in range(args.runs)
                ]
                for f in concurrent.futures.as_completed(futs):
                    verdict, latency, _rc, err = f.result()
                    counts[verdict] += 1
                    if latency is not None:
                        lat.append(latency)
                    if verdict != "ok" and len(samples[verdict]) < args.show:
                        samples[verdict].append(err)
            bad = args.runs - counts["ok"]
            bad_total += bad
            kinds = ", ".join(f"{k}: {n}" for k, n in sorted(counts.items()))
            print(
                f"{mode:6} {shape:6} procs={args.procs} runs={args.runs} bad={bad} "
                f"({kinds}); run() latency {_fmt_ms(lat)}; {time.monotonic() - t0:.0f} s",
                flush=True,
            )
            for kind, errs in samples.items():
                for err in errs:
                    tail = "\n".join(err.strip().splitlines()[-15:])
                    print(f"  --- {kind} stderr tail:\n{textwrap.indent(tail, '  ')}")
    return 1 if bad_total else 0


if __name__ == "__main__":
    sys.exit(main())
