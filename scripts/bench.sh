#!/usr/bin/env bash
# Builds the release wheel and the load generator, then runs the whole
# benchmark suite (benches/suite.py): every scenario of BENCHMARKS.md, gmprt
# against asyncio, uvloop and threading, each contender in its own process,
# in one run. Results land in benches/results/. Arguments go to suite.py
# (--quick, --only SCENARIO..., --readme).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q "maturin>=1.9.4,<2" psutil matplotlib pytest-benchmark
python -m pip install -q uvloop || echo "uvloop did not install: the suite runs without it"
rm -rf dist
maturin build -q --release -o dist
python -m pip install -q --force-reinstall --no-deps dist/gmprt-*.whl
cargo build -q --release -p gmprt-loadgen

python benches/suite.py "$@"
