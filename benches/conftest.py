"""pytest configuration for the micro-benchmarks in benches/.

``pytest benches/ --benchmark-only`` measures them (pytest-benchmark); plain
``pytest benches/`` runs each once, as a quick check that they still work
(``--benchmark-enable`` measures them in a plain run too).
"""

from __future__ import annotations

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    opt = config.option
    if hasattr(opt, "benchmark_disable") and not (opt.benchmark_only or opt.benchmark_enable):
        opt.benchmark_disable = True
