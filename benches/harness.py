"""Shared plumbing for the benchmarks: run one contender in a fresh process,
and summarise samples.

Every scenario module exposes plain functions that run one contender in the
current process and return JSON-able figures; ``in_subprocess`` calls such a
function in a new interpreter, so one contender's threads, memory and GIL
settings cannot skew another's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
_MARK = "@@RESULT@@"


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


def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank; 0.0 for no samples."""
    if not samples:
        return 0.0
    s = sorted(samples)
    k = max(0, min(len(s) - 1, round(q / 100 * len(s)) - 1))
    return s[k]


def gmprt_available(feature: str = "") -> bool:
    """Whether gmprt (and ``gmprt.<feature>`` if given) can be imported."""
    try:
        import gmprt
    except ImportError:
        return False
    return not feature or hasattr(gmprt, feature)
