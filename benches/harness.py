"""Shared plumbing for the benchmarks: run one contender in a fresh process,
say which contenders can run here, and summarise samples.

Every scenario module exposes plain functions that run one contender in the
current process and return JSON-able figures; ``in_subprocess`` calls such a
function in a new interpreter, so one contender's threads, memory and GIL
settings cannot skew another's. Each module also exposes
``run(quick: bool = False, scenarios=None) -> dict`` for ``benches/suite.py``,
returning ``{scenario: {"params": {...}, "results": {contender: figures}}}``
where a contender that could not run has ``{"skipped": why}`` or
``{"failed": what happened}`` instead of figures.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from collections.abc import Callable, Coroutine
from typing import Any

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH_DIR)
_MARK = "@@RESULT@@"

# The contenders of the task scenarios, in report order. "gmprt" runs with the
# runtime's default procs, "gmprt-procsN" with N Ps; uvloop runs the asyncio
# code on uvloop's loop.
GMPRT = "gmprt"
GMPRT_1 = "gmprt-procs1"
CONTENDERS = [GMPRT, GMPRT_1, "asyncio", "uvloop", "threading"]


def in_subprocess(module: str, func: str, *args: Any, timeout: float = 900) -> Any:
    """``module.func(*args)`` in a fresh interpreter; its JSON result."""
    code = (
        f"import json, sys; sys.path.insert(0, {BENCH_DIR!r}); "
        f"import {module} as m; "
        f"print({_MARK!r} + json.dumps(m.{func}(*{args!r})), flush=True)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(_MARK):
            return json.loads(line[len(_MARK) :])
    raise RuntimeError(
        f"{module}.{func}{args!r} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
    )


def attempt(module: str, func: str, *args: Any, timeout: float = 900) -> dict:
    """Like ``in_subprocess``, but a crash or a timeout becomes ``{"failed": ...}``."""
    try:
        out = in_subprocess(module, func, *args, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"failed": f"did not finish within {timeout:.0f} s"}
    except RuntimeError as e:
        lines = [ln for ln in str(e).splitlines() if ln.strip()]
        return {"failed": lines[-1] if lines else str(e), "detail": str(e)[-2000:]}
    return out if isinstance(out, dict) else {"value": out}


def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank; 0.0 for no samples."""
    if not samples:
        return 0.0
    s = sorted(samples)
    k = max(0, min(len(s) - 1, round(q / 100 * len(s)) - 1))
    return s[k]


def quantiles(samples: list[float], points: int = 101) -> list[float]:
    """``points`` evenly spaced quantiles (0 %, ..., 100 %): a compact CDF."""
    if not samples:
        return []
    s = sorted(samples)
    n = len(s) - 1
    return [s[round(i * n / (points - 1))] for i in range(points)]


# ---- what can run here ---------------------------------------------------------

_PROBES = {
    # feature: (code that fails without it, why it is missing)
    "net": (
        "import gmprt\nfrom gmprt import net\nnet.listen, net.dial",
        "gmprt.net is not available (it arrives with the netpoll branch)",
    ),
    "sleep": (
        "import gmprt\nasync def m():\n    await gmprt.sleep(0.001)\ngmprt.run(m)",
        "timed gmprt.sleep is not available (it arrives with the netpoll branch)",
    ),
    "Chan": (
        "import gmprt\ngmprt.Chan",
        "gmprt.Chan is not available (it arrives with the chan branch)",
    ),
    "Semaphore": (
        "import gmprt\ngmprt.Semaphore",
        "gmprt.Semaphore is not available (it arrives with the chan branch)",
    ),
    "uvloop": ("import uvloop", "uvloop is not installed"),
}


@functools.cache
def missing(feature: str) -> str | None:
    """Why ``feature`` (a key of _PROBES, or "" for gmprt itself) cannot be used
    here, probed in a fresh interpreter; None when it can."""
    if not feature:
        code, why = "import gmprt", "gmprt is not installed"
    else:
        code, why = _PROBES[feature]
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    if r.returncode == 0:
        return None
    return why


def gmprt_available(feature: str = "") -> bool:
    """Whether gmprt (and ``feature``: "net", "sleep", "Chan", "Semaphore") works here."""
    return missing("") is None and (not feature or missing(feature) is None)


def skip_reason(contender: str, needs: tuple[str, ...] = ()) -> str | None:
    """Why `contender` cannot run a scenario that needs gmprt `needs`; None if it can."""
    if contender.startswith(GMPRT):
        for feature in ("", *needs):
            why = missing(feature)
            if why:
                return why
    if contender.startswith("uvloop"):
        return missing("uvloop")
    return None


def gmprt_procs(contender: str) -> int | None:
    """procs for a gmprt contender name: None for the default, N for gmprt-procsN."""
    if contender == GMPRT:
        return None
    return int(contender.removeprefix("gmprt-procs"))


def run_async(main: Callable[[], Coroutine[Any, Any, Any]], loop: str = "asyncio") -> Any:
    """``main()`` on a fresh asyncio loop, or on uvloop's when loop == "uvloop"."""
    import asyncio

    if loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main())
    return asyncio.run(main())


def rss() -> int:
    """This process's resident set size, bytes."""
    import psutil

    return psutil.Process().memory_info().rss
