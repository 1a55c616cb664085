"""The typed example program runs (scripts/test.sh also checks it with
``mypy --strict``; issue 10, item 12)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "typed"))

import user_program  # noqa: E402


def test_typed_example_program_runs():
    assert user_program.run_both() == ((0, 30, ["item 0", "item 1", "item 2"]), "sync")


def test_typed_trace_calls_run(tmp_path):
    written, p99 = user_program.traced(str(tmp_path / "t.json"))
    assert written > 0 and p99 >= 0


def test_typed_asyncio_program_runs():
    assert user_program.run_aio() == (6, "from asyncio", 7)
