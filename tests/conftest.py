"""Shared fixtures for the gmprt test suite.

Every wait in these tests is bounded: joins take timeouts, polling loops
carry an iteration or deadline cap, and subprocesses run under a timeout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

# Generous upper bound for a child interpreter that must not hang.
SUBPROCESS_TIMEOUT = 60


@pytest.fixture(params=[1, 2], ids=lambda p: f"procs={p}")
def procs(request):
    """The number of Ps to run a runtime with."""
    return request.param


@pytest.fixture
def run_script():
    """Run a Python snippet in a fresh interpreter; return CompletedProcess.

    The snippet is dedented. Output is captured as text. The child gets the
    same interpreter (and so the same venv) as the test run.
    """

    def _run(code: str, timeout: float = SUBPROCESS_TIMEOUT, **kwargs):
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.setdefault("PYTHONFAULTHANDLER", "1")
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            **kwargs,
        )

    return _run
